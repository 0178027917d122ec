//! `POST /v1/classify`: validate, run the engine, shape the answer. The same
//! [`run`] serves the `zeroshot classify` CLI, so both print identical JSON.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::State;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::spec::{Resolved, SpecFields};
use super::{ApiError, ApiJson, AppState};
use crate::db::Account;
use crate::engine::{Classification, Engine, Mode};

/// Most texts in one `texts` request.
pub const MAX_TEXTS: usize = 64;
/// The request body. Unknown fields are refused so typos do not pass silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest {
    pub text: Option<String>,
    pub texts: Option<Vec<String>>,
    pub labels: Option<Vec<String>>,
    pub classifier: Option<String>,
    pub descriptions: Option<BTreeMap<String, String>>,
    pub examples: Option<BTreeMap<String, Vec<String>>>,
    pub source_type: Option<String>,
    pub mode: Option<Mode>,
    pub threshold: Option<f32>,
}

/// One text's answer: the classification plus request-level context.
#[derive(Debug, Serialize)]
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
#[derive(Debug, Serialize)]
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
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ClassifyResponse {
    Single(SingleResponse),
    Multi(MultiResponse),
}

impl ClassifyRequest {
    /// The fields that define the classification.
    pub fn spec_fields(&self) -> SpecFields<'_> {
        SpecFields {
            labels: &self.labels,
            classifier: &self.classifier,
            descriptions: &self.descriptions,
            examples: &self.examples,
            source_type: &self.source_type,
            mode: self.mode,
            threshold: self.threshold,
        }
    }
}

/// The handler: the engine runs on the blocking pool, off the async workers.
pub async fn handle(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    ApiJson(request): ApiJson<ClassifyRequest>,
) -> Result<Json<ClassifyResponse>, ApiError> {
    let started = Instant::now();
    texts_of(&request)?;
    let resolved = request.spec_fields().resolve(&state, &account).await?;
    let engine = state.engine()?;
    let response = tokio::task::spawn_blocking(move || run(&engine, &request, resolved, started))
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(response))
}

/// Classifies a request's text(s) with its resolved spec; `started` is when the
/// request arrived, for `latency_ms`.
pub fn run(
    engine: &Engine,
    request: &ClassifyRequest,
    resolved: Resolved,
    started: Instant,
) -> Result<ClassifyResponse, ApiError> {
    let (texts, single) = texts_of(request)?;
    let Resolved { spec, saved } = resolved;
    let (labels, classifier) = match saved {
        Some(saved) => (
            saved.vectors,
            Some(format!("{}@v{}", saved.name, saved.version)),
        ),
        None => (engine.label_vectors(&spec.labels)?, None),
    };
    let mode = spec.mode;
    let mut results = engine.classify(&texts, &labels, mode, spec.threshold)?;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let model = engine.model_name().to_string();
    Ok(if single {
        ClassifyResponse::Single(SingleResponse {
            result: results.remove(0),
            mode,
            classifier,
            latency_ms,
            model,
        })
    } else {
        ClassifyResponse::Multi(MultiResponse {
            tokens: results.iter().map(|r| r.tokens).sum(),
            results,
            mode,
            classifier,
            latency_ms,
            model,
        })
    })
}

/// The texts to classify, and whether the caller sent a single `text`.
fn texts_of(request: &ClassifyRequest) -> Result<(Vec<&str>, bool), ApiError> {
    match (&request.text, &request.texts) {
        (Some(_), Some(_)) => Err(
            ApiError::invalid_request("send either text or texts, not both").with_param("texts"),
        ),
        (None, None) => Err(ApiError::validation("text", "text (or texts) is required")),
        (Some(text), None) => {
            if text.trim().is_empty() {
                return Err(ApiError::validation("text", "text is empty"));
            }
            Ok((vec![text.as_str()], true))
        }
        (None, Some(texts)) => {
            if texts.is_empty() {
                return Err(ApiError::validation("texts", "texts is empty"));
            }
            if texts.len() > MAX_TEXTS {
                return Err(ApiError::validation(
                    "texts",
                    format!(
                        "at most {MAX_TEXTS} texts per request, got {} (use /v1/batch)",
                        texts.len()
                    ),
                ));
            }
            if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
                return Err(ApiError::validation(format!("texts[{i}]"), "text is empty"));
            }
            Ok((texts.iter().map(String::as_str).collect(), false))
        }
    }
}
