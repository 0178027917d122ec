//! `/v1/classify` usage counted in memory and written to the database about once a
//! second: one upsert per account and day instead of one per call, which kept SQLite's
//! single writer from capping `/v1/classify` throughput. The server keeps one
//! [`PendingUsage`]; quotas and usage reports add what it holds. [`report`] makes
//! `GET /v1/usage`'s answer of the stored rows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::{now_ms, Day};
use crate::db::usage::{Counts, Source, UsageRow};
use crate::db::{Db, DbError, Limits};
use crate::wire::{AccountLimits, DayUsage, Usage, UsageReport};

/// Classify usage not written yet, shared by every clone.
#[derive(Debug, Clone, Default)]
pub struct PendingUsage {
    counts: Arc<Mutex<HashMap<(String, Day), Counts>>>,
}

impl PendingUsage {
    /// Counts one successful `/v1/classify` call of `texts` texts and `tokens` tokens,
    /// today; written with the next [`PendingUsage::write`].
    pub fn add(&self, account_id: &str, texts: i64, tokens: i64) {
        let counts = Counts {
            requests: 1,
            texts,
            tokens,
        };
        self.merge(HashMap::from([(
            (account_id.to_string(), Day::today()),
            counts,
        )]));
    }

    fn merge(&self, more: HashMap<(String, Day), Counts>) {
        let mut counts = self.counts.lock().expect("usage lock");
        for (key, more) in more {
            *counts.entry(key).or_default() += more;
        }
    }

    /// Tokens counted for an account from `from` on and not written yet.
    pub fn tokens_since(&self, account_id: &str, from: Day) -> i64 {
        let counts = self.counts.lock().expect("usage lock");
        counts
            .iter()
            .filter(|((account, day), _)| account == account_id && *day >= from)
            .map(|(_, counts)| counts.tokens)
            .sum()
    }

    /// Writes what is counted, in one transaction; kept for the next call if that fails.
    pub async fn write(&self, db: &Db) -> Result<(), DbError> {
        let taken = std::mem::take(&mut *self.counts.lock().expect("usage lock"));
        if taken.is_empty() {
            return Ok(());
        }
        let written = db.add_classify_usage(&taken).await;
        if written.is_err() {
            self.merge(taken);
        }
        written
    }

    /// Writes what is counted every `period`, for ever (the server runs it, and writes
    /// once more when it stops).
    pub async fn write_every(self, db: Db, period: Duration) {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            // Counts not written stay in memory for the next tick. The outage is logged
            // once, and ended by the loops that reach the database every second (a tick
            // with nothing to write proves nothing).
            if let Err(err) = self.write(&db).await {
                crate::outage::fault(&err.into());
            }
        }
    }
}

/// Tokens an account used since the start of this UTC month: as written, plus what
/// `pending` holds.
pub async fn month_to_date(
    db: &Db,
    pending: &PendingUsage,
    account_id: &str,
) -> Result<i64, DbError> {
    let first = Day::today().first_of_month();
    let written = db.tokens_since(account_id, first).await?;
    Ok(written + pending.tokens_since(account_id, first))
}

/// Whole seconds (rounded up) until the next UTC month starts, when quotas reset.
pub fn seconds_to_next_month() -> u64 {
    let next = Day::today().first_of_next_month().start_ms();
    ((next - now_ms()).max(0) as u64).div_ceil(1000)
}

/// Rows (by day, then source) as days and totals.
pub fn report(
    from: Day,
    to: Day,
    rows: &[UsageRow],
    limits: &Limits,
    month_to_date_tokens: i64,
) -> UsageReport {
    let mut data: Vec<DayUsage> = Vec::new();
    let mut total = Usage::default();
    for row in rows {
        if data.last().is_none_or(|last| last.date != row.day) {
            data.push(DayUsage {
                date: row.day.clone(),
                usage: Usage::default(),
            });
        }
        add(&mut data.last_mut().expect("pushed above").usage, row);
        add(&mut total, row);
    }
    UsageReport {
        from: from.to_string(),
        to: to.to_string(),
        data,
        total,
        limits: AccountLimits {
            rps_limit: limits.rps_limit,
            monthly_token_quota: limits.monthly_token_quota,
            month_to_date_tokens,
        },
    }
}

/// Adds a row's counts to `usage` (classify or batch, by the row's source).
fn add(usage: &mut Usage, row: &UsageRow) {
    if row.source == Source::Classify {
        usage.classify.requests += row.requests;
        usage.classify.texts += row.texts;
        usage.classify.tokens += row.tokens;
    } else {
        usage.batch.texts += row.texts;
        usage.batch.tokens += row.tokens;
    }
    usage.tokens += row.tokens;
}
