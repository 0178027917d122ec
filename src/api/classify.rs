//! `POST /v1/classify`: validate, embed (through the inference queue), score, shape
//! the answer. The CLI's [`run`] shares the validation and shaping, so both print
//! identical JSON.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::State;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::spec::{Resolved, SpecFields};
use super::{ApiError, ApiJson, AppState};
use crate::db::Account;
use crate::engine::text::{self, TextError};
use crate::engine::{Classification, ClassificationSpec, Embedding, Engine, LabelVectors, Mode};

/// Most texts in one `texts` request.
pub const MAX_TEXTS: usize = 64;
/// The request body: `text` or `texts`, and `labels` or a saved `classifier`. Unknown
/// fields are refused so typos do not pass silently.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest {
    /// One text; texts longer than the model's `max_tokens` are cut (`truncated: true`).
    #[schema(min_length = 1, pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$")]
    pub text: Option<String>,
    /// Up to 64 texts, answered in order.
    #[schema(value_type = Option<Vec<crate::api::openapi::Text>>, min_items = 1, max_items = 64)]
    pub texts: Option<Vec<String>>,
    /// 1-200 distinct label names of up to 100 characters.
    #[schema(value_type = Option<std::collections::BTreeSet<crate::api::openapi::LabelName>>, min_items = 1, max_items = 200)]
    pub labels: Option<Vec<String>>,
    /// A saved classifier instead of labels: `name` (latest), `name@N` or `name@vN`.
    #[schema(pattern = "^[a-z0-9_-]{1,64}(@v?[1-9][0-9]{0,17})?$")]
    pub classifier: Option<String>,
    /// A sentence per label (up to 1,000 characters) saying what it covers.
    #[schema(value_type = Option<BTreeMap<String, crate::api::openapi::LabelDescription>>)]
    pub descriptions: Option<BTreeMap<String, String>>,
    /// Up to 64 example texts per label.
    #[schema(value_type = Option<BTreeMap<String, crate::api::openapi::LabelExamples>>)]
    pub examples: Option<BTreeMap<String, Vec<String>>>,
    /// What the texts are (`support ticket`, `news headline`), up to 64 characters.
    #[schema(max_length = 64, pattern = r"^[^\u0000]*$")]
    pub source_type: Option<String>,
    pub mode: Option<Mode>,
    /// Multi mode: labels at or above it are returned (default 0.3).
    #[schema(minimum = 0.0, maximum = 1.0)]
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
            adapt: None,
        }
    }
}

/// Classifies one text or up to 64 against inline labels or a saved classifier.
#[utoipa::path(post, path = "/classify", operation_id = "classify", tag = "classify",
    request_body = ClassifyRequest,
    responses(
        (status = 200, description = "Every label's score, most probable first", body = ClassifyResponse),
        (status = 404, description = "The saved classifier does not exist", body = super::ErrorBody),
    ))]
pub async fn handle(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    ApiJson(request): ApiJson<ClassifyRequest>,
) -> Result<Json<ClassifyResponse>, ApiError> {
    // The texts join the inference queue's next engine call; label vectors not saved
    // or cached are computed on the blocking pool.
    let started = Instant::now();
    super::quota::admit_classify(&state, &account).await?;
    let texts: Vec<String> = texts_of(&request)?
        .0
        .into_iter()
        .map(str::to_string)
        .collect();
    let Resolved { spec, saved } = request.spec_fields().resolve(&state, &account).await?;
    let engine = state.engine()?;
    let queue = state.queue()?;
    let (labels, classifier) = match saved {
        Some(saved) => (
            saved.vectors,
            Some(format!("{}@v{}", saved.name, saved.version)),
        ),
        None => {
            let (engine, set) = (engine.clone(), spec.labels.clone());
            let labels = tokio::task::spawn_blocking(move || engine.label_vectors(&set))
                .await
                .map_err(ApiError::internal)??;
            (labels, None)
        }
    };
    let embeddings = queue.embed(texts).await?;
    let tokens = embeddings.iter().map(|e| e.tokens as i64).sum();
    state
        .db
        .add_classify_usage(&account.id, embeddings.len() as i64, tokens);
    Ok(Json(respond(
        &engine,
        &request,
        &spec,
        &labels,
        classifier,
        &embeddings,
        started,
    )))
}

/// Classifies a request in the calling thread, without the inference queue (the CLI).
pub fn run(engine: &Engine, request: &ClassifyRequest) -> Result<ClassifyResponse, ApiError> {
    let started = Instant::now();
    let (texts, _) = texts_of(request)?;
    let spec = request.spec_fields().inline()?;
    let labels = engine.label_vectors(&spec.labels)?;
    let embeddings = engine.embed_texts(&texts)?;
    Ok(respond(
        engine,
        request,
        &spec,
        &labels,
        None,
        &embeddings,
        started,
    ))
}

/// Scores embedded texts and shapes the answer; `started` is when the request
/// arrived, for `latency_ms`.
fn respond(
    engine: &Engine,
    request: &ClassifyRequest,
    spec: &ClassificationSpec,
    labels: &LabelVectors,
    classifier: Option<String>,
    embeddings: &[Embedding],
    started: Instant,
) -> ClassifyResponse {
    let mode = spec.mode;
    let mut results: Vec<Classification> = embeddings
        .iter()
        .map(|embedding| engine.score(embedding, labels, mode, spec.threshold))
        .collect();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let model = engine.model_name().to_string();
    if request.text.is_some() {
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
    }
}

/// The texts to classify, and whether the caller sent a single `text`.
fn texts_of(request: &ClassifyRequest) -> Result<(Vec<&str>, bool), ApiError> {
    match (&request.text, &request.texts) {
        (Some(_), Some(_)) => Err(
            ApiError::invalid_request("send either text or texts, not both").with_param("texts"),
        ),
        (None, None) => Err(ApiError::validation("text", "text (or texts) is required")),
        (Some(text), None) => {
            check_text("text", text)?;
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
            for (i, text) in texts.iter().enumerate() {
                check_text(&format!("texts[{i}]"), text)?;
            }
            Ok((texts.iter().map(String::as_str).collect(), false))
        }
    }
}

/// A blank text is a 422 like any unacceptable value; a NUL is a 400, as a lone
/// surrogate (which never parses) is: both mean the client sent no real text.
fn check_text(param: &str, text: &str) -> Result<(), ApiError> {
    text::check(text).map_err(|err| match err {
        TextError::Blank => ApiError::validation(param, err.to_string()),
        TextError::Nul | TextError::LoneSurrogate => {
            ApiError::invalid_request(err.to_string()).with_param(param)
        }
    })
}
