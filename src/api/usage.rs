//! `GET /v1/usage`: the caller's texts and tokens per UTC day, for `/v1/classify` and
//! for batch jobs, with the account's limits. The CLI's `zeroshot usage` reads the
//! same types.

use axum::extract::{Query, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, AppState};
use crate::clock::Day;
use crate::db::usage::{Source, UsageRow};
use crate::db::{Account, Limits};

/// Longest range one call covers, in days.
pub const MAX_DAYS: i64 = 366;

/// `GET /v1/usage?from=&to=` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// First day, `YYYY-MM-DD` UTC (default: the first of `to`'s month).
    #[param(value_type = Option<String>, format = Date)]
    pub from: Option<String>,
    /// Last day, included, `YYYY-MM-DD` UTC (default: today). At most 366 days after `from`.
    #[param(value_type = Option<String>, format = Date)]
    pub to: Option<String>,
}

/// `/v1/classify` calls that succeeded (failed calls count nothing).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClassifyUsage {
    pub requests: i64,
    pub texts: i64,
    pub tokens: i64,
}

/// Batch lines scored (error rows count nothing), counted as their checkpoints commit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchUsage {
    pub texts: i64,
    pub tokens: i64,
}

/// Classify and batch usage over a day or a range.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub classify: ClassifyUsage,
    pub batch: BatchUsage,
    /// Classify and batch tokens together.
    pub tokens: i64,
}

impl Usage {
    fn add(&mut self, row: &UsageRow) {
        if row.source == Source::Classify {
            self.classify.requests += row.requests;
            self.classify.texts += row.texts;
            self.classify.tokens += row.tokens;
        } else {
            self.batch.texts += row.texts;
            self.batch.tokens += row.tokens;
        }
        self.tokens += row.tokens;
    }
}

/// One day with usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DayUsage {
    /// `YYYY-MM-DD`, UTC.
    pub date: String,
    #[serde(flatten)]
    pub usage: Usage,
}

/// The account's limits (null: none) and where it stands this month.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AccountLimits {
    /// `/v1/classify` requests per second, per server instance.
    pub rps_limit: Option<i64>,
    /// Tokens per UTC calendar month, classify and batch together.
    pub monthly_token_quota: Option<i64>,
    /// Tokens used since the first of this UTC month.
    pub month_to_date_tokens: i64,
}

/// Usage per day over `from`..=`to`. Days without usage are left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    /// `YYYY-MM-DD`, UTC, as applied (defaults filled in).
    pub from: String,
    pub to: String,
    /// Days with usage, oldest first.
    pub data: Vec<DayUsage>,
    pub total: Usage,
    pub limits: AccountLimits,
}

/// The caller's usage per UTC day, classify and batch apart, with its limits.
#[utoipa::path(get, path = "/usage", operation_id = "get_usage", tag = "usage",
    params(UsageQuery),
    responses((status = 200, description = "Usage per day with usage, and totals", body = UsageReport)))]
pub async fn get(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UsageReport>, ApiError> {
    let Query(query) = query.map_err(|err| ApiError::invalid_request(err.body_text()))?;
    let (from, to) = range(&query, Day::today())?;
    // This process's classify usage first, so the report counts every call it answered.
    state.usage.write(&state.db).await?;
    let rows = state.db.usage(&account.id, from, to).await?;
    let month_to_date_tokens = super::quota::month_to_date(&state, &account).await?;
    Ok(Json(report(
        from,
        to,
        &rows,
        &account.limits,
        month_to_date_tokens,
    )))
}

/// The days asked for: `to` defaults to today, `from` to the first of `to`'s month.
fn range(query: &UsageQuery, today: Day) -> Result<(Day, Day), ApiError> {
    let day = |field: &str, value: &Option<String>| -> Result<Option<Day>, ApiError> {
        value
            .as_deref()
            .map(|text| {
                Day::parse(text).ok_or_else(|| {
                    ApiError::validation(
                        field,
                        format!("{field} must be a date YYYY-MM-DD, got {text:?}"),
                    )
                })
            })
            .transpose()
    };
    let to = day("to", &query.to)?.unwrap_or(today);
    let from = day("from", &query.from)?.unwrap_or_else(|| to.first_of_month());
    if from > to {
        return Err(ApiError::validation(
            "from",
            format!("from ({from}) is after to ({to})"),
        ));
    }
    if to.days_since(from) >= MAX_DAYS {
        return Err(ApiError::validation(
            "to",
            format!("at most {MAX_DAYS} days per call ({from} to {to} is longer)"),
        ));
    }
    Ok((from, to))
}

/// Rows (by day, then source) as days and totals.
fn report(
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
        data.last_mut().expect("pushed above").usage.add(row);
        total.add(row);
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
