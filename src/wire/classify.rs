//! `/v1/classify`'s request (the CLI's client sends the same) and answers (the CLI's
//! local `classify` prints the same).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::spec::with_spec_fields;
use crate::engine::{Classification, Mode};

with_spec_fields! {
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
        /// A saved classifier instead of labels: `name` (latest), `name@N` or `name@vN`.
        #[schema(pattern = "^[a-z0-9_-]{1,64}(@v?[1-9][0-9]{0,17})?$")]
        #[serde(skip_serializing_if = "Option::is_none")]
        pub classifier: Option<String>,
    }
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
