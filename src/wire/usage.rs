//! Usage as `GET /v1/usage` answers it and the CLI's `zeroshot usage` reads it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
