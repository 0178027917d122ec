//! The rows of a job's results: one per input line, in input order, NDJSON. A line that
//! failed is a row of the errors object too.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// One results row, as written. Probabilities are widened to f64, as the rows have
/// always carried them.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ResultRow<'a> {
    Scored(ScoredRow<'a>),
    Failed(FailedRow<'a>),
}

/// A line scored: the same fields as a `/v1/classify` answer for one text.
#[derive(Debug, Serialize)]
pub struct ScoredRow<'a> {
    /// 1-based line number in the input, blank lines included.
    pub line: i64,
    /// The line's `id` (or `custom_id`), as the caller wrote it; null when it had none.
    pub id: &'a Value,
    pub label: &'a str,
    pub confidence: f64,
    pub labels: &'a [String],
    /// Every label's probability, by label.
    pub scores: BTreeMap<&'a str, f64>,
    pub tokens: usize,
    pub truncated: bool,
}

/// A line that could not be scored.
#[derive(Debug, Serialize)]
pub struct FailedRow<'a> {
    pub line: i64,
    pub id: &'a Value,
    pub error: RowError<'a>,
}

/// Why a line failed: a stable code (`invalid_json`, `empty_text`, ...) and a message.
#[derive(Debug, Serialize)]
pub struct RowError<'a> {
    pub code: &'a str,
    pub message: &'a str,
}
