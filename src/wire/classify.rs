//! `/v1/classify`'s request (the CLI's client sends the same) and answers (the CLI's
//! local `classify` prints the same).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::engine::{Classification, Mode};

/// The request body: `text` or `texts`, and `labels` or a saved `classifier`. Unknown
/// fields are refused so typos do not pass silently.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest {
    /// One text; texts longer than the model's `max_tokens` are cut (`truncated: true`).
    #[schema(min_length = 1, pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Up to 64 texts, answered in order.
    #[schema(value_type = Option<Vec<crate::wire::schema::Text>>, min_items = 1, max_items = 64)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub texts: Option<Vec<String>>,
    /// 1-200 distinct label names of up to 100 characters.
    #[schema(value_type = Option<std::collections::BTreeSet<crate::wire::schema::LabelName>>, min_items = 1, max_items = 200)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// A saved classifier instead of labels: `name` (latest), `name@N` or `name@vN`.
    #[schema(pattern = "^[a-z0-9_-]{1,64}(@v?[1-9][0-9]{0,17})?$")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classifier: Option<String>,
    /// A sentence per label (up to 1,000 characters) saying what it covers.
    #[schema(value_type = Option<BTreeMap<String, crate::wire::schema::LabelDescription>>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub descriptions: Option<BTreeMap<String, String>>,
    /// Up to 64 example texts per label.
    #[schema(value_type = Option<BTreeMap<String, crate::wire::schema::LabelExamples>>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub examples: Option<BTreeMap<String, Vec<String>>>,
    /// What the texts are (`support ticket`, `news headline`), up to 64 characters.
    #[schema(max_length = 64, pattern = r"^[^\u0000]*$")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Multi mode: labels at or above it are returned (default 0.3).
    #[schema(minimum = 0.0, maximum = 1.0)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
}

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
