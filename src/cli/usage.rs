//! The CLI's usage and quota commands: `zeroshot usage` (a client of the server, with
//! the account's API key) prints usage per day as a table or the server's JSON;
//! `zeroshot accounts` (on the database, like `zeroshot keys`) shows and sets an
//! account's limits.

use anyhow::Context;
use serde::Serialize;

use super::args::{AccountsCommand, ServerArgs, UsageArgs};
use super::client::Client;
use super::remote::RemoteError;
use crate::clock::Day;
use crate::db::{Account, Db};
use crate::wire::{AccountLimits, Usage, UsageReport};

/// `zeroshot usage`: `GET /v1/usage`, as a table (or `--json`) on stdout.
pub async fn report(server: &ServerArgs, args: &UsageArgs) -> Result<(), RemoteError> {
    let client = Client::new(&server.url, server.api_key.as_deref())?;
    let answer = client
        .usage(args.from.as_deref(), args.to.as_deref())
        .await?;
    if args.json {
        println!("{}", answer.pretty());
    } else {
        print!("{}", table(&answer.value));
    }
    Ok(())
}

/// Column widths: date; classify requests, texts, tokens; batch texts, tokens; all tokens.
const WIDTHS: [usize; 7] = [10, 10, 12, 14, 12, 14, 14];

/// The report as a person reads it: a row per day, totals, then the limits.
pub fn table(report: &UsageReport) -> String {
    let mut out = format!("usage from {} to {} (UTC days)\n\n", report.from, report.to);
    out.push_str(&table_row([
        String::new(),
        "classify:".into(),
        String::new(),
        String::new(),
        "batch:".into(),
        String::new(),
        String::new(),
    ]));
    out.push_str(&table_row(
        [
            "date",
            "requests",
            "texts",
            "tokens",
            "texts",
            "tokens",
            "all tokens",
        ]
        .map(str::to_string),
    ));
    for day in &report.data {
        out.push_str(&usage_row(&day.date, &day.usage));
    }
    if report.data.is_empty() {
        out.push_str("(no usage on these days)\n");
    }
    out.push_str(&usage_row("total", &report.total));
    out.push_str(&limits_line(&report.limits));
    out
}

/// One line of the table: the first cell left-aligned, the others right-aligned, each
/// in its column of [`WIDTHS`].
fn table_row(cells: [String; 7]) -> String {
    let mut line = format!("{:<width$}", cells[0], width = WIDTHS[0]);
    for (cell, width) in cells.iter().zip(WIDTHS).skip(1) {
        line.push_str(&format!("  {cell:>width$}"));
    }
    line.trim_end().to_string() + "\n"
}

/// The row of `usage` under `label` (a date, or the total).
fn usage_row(label: &str, usage: &Usage) -> String {
    table_row([
        label.to_string(),
        thousands(usage.classify.requests),
        thousands(usage.classify.texts),
        thousands(usage.classify.tokens),
        thousands(usage.batch.texts),
        thousands(usage.batch.tokens),
        thousands(usage.tokens),
    ])
}

/// The line under the table: the rate limit, the monthly quota and its use.
fn limits_line(limits: &AccountLimits) -> String {
    let rps = limits
        .rps_limit
        .map_or("none".to_string(), |rps| format!("{rps} requests/s"));
    let quota = limits
        .monthly_token_quota
        .map_or("none".to_string(), |quota| {
            format!("{} tokens", thousands(quota))
        });
    format!(
        "\nlimits: /v1/classify rate {rps}; monthly quota {quota}; used this month {} tokens\n",
        thousands(limits.month_to_date_tokens)
    )
}

/// `1234567` as `1,234,567`.
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

/// An account as `zeroshot accounts` prints it.
#[derive(Debug, Serialize)]
struct AccountView {
    #[serde(flatten)]
    account: Account,
    /// Tokens used since the first of this UTC month.
    month_to_date_tokens: i64,
}

/// `zeroshot accounts ...`: prints the account, with its limits, as JSON.
pub async fn accounts(db: &Db, command: AccountsCommand) -> anyhow::Result<()> {
    let name = match &command {
        AccountsCommand::Show { account, .. } | AccountsCommand::Limits { account, .. } => account,
    };
    let mut account = db
        .account_by_name(name)
        .await?
        .with_context(|| format!("no account {name:?}"))?;
    if let AccountsCommand::Limits {
        rps,
        no_rps,
        monthly_tokens,
        no_monthly_tokens,
        ..
    } = command
    {
        let limits = &mut account.limits;
        if rps.is_some() || no_rps {
            limits.rps_limit = rps;
        }
        if monthly_tokens.is_some() || no_monthly_tokens {
            limits.monthly_token_quota = monthly_tokens;
        }
        db.set_limits(&account.id, limits).await?;
    }
    let month_to_date_tokens = db
        .tokens_since(&account.id, Day::today().first_of_month())
        .await?;
    let view = AccountView {
        account,
        month_to_date_tokens,
    };
    println!("{}", serde_json::to_string_pretty(&view)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_are_grouped() {
        for (n, text) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (1_234_567, "1,234,567"),
            (-45_000, "-45,000"),
        ] {
            assert_eq!(super::thousands(n), text);
        }
    }
}
