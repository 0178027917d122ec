//! `/v1/classify`'s answers (the CLI's local `classify` prints the same).

use serde::Serialize;
use utoipa::ToSchema;

use crate::engine::{Classification, Mode};

/// One text's answer: the classification plus request-level context.
#[derive(Debug, Serialize, ToSchema)]
pub struct SingleResponse {
    #[serde(flatten)]
    pub result: Classification,
    pub mode: Mode,
    /// The saved classifier used, as `name@vN`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classifier: Option<String>,
    pub latency_ms: f64,
    pub model: String,
}

/// A `texts` answer: results in input order plus totals.
#[derive(Debug, Serialize, ToSchema)]
pub struct MultiResponse {
    pub results: Vec<Classification>,
    pub mode: Mode,
    /// The saved classifier used, as `name@vN`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classifier: Option<String>,
    /// Tokens over all texts.
    pub tokens: usize,
    pub latency_ms: f64,
    pub model: String,
}

/// `text` gets a [`SingleResponse`], `texts` a [`MultiResponse`].
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ClassifyResponse {
    Single(SingleResponse),
    Multi(MultiResponse),
}
