//! `GET /v1/usage`: the caller's texts and tokens per UTC day, for `/v1/classify` and
//! for batch jobs, with the account's limits (the answer's types are in `wire`, the
//! report is made by [`crate::usage::report`]).

use axum::extract::{Query, State};
use axum::{Extension, Json};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{ApiError, AppState};
use crate::clock::Day;
use crate::db::Account;
use crate::usage;
use crate::wire::UsageReport;

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
    Ok(Json(usage::report(
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
