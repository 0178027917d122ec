//! `POST /v1/classify`: the request checked and its spec resolved, the texts embedded
//! through the inference queue, then scored and shaped by the classification service
//! (`crate::classify`), which the CLI's local `classify` shares.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use utoipa::ToSchema;

use super::spec::{resolve, Resolved};
use super::{ApiError, ApiJson, AppState};
use crate::classify::{self, SpecFields};
use crate::db::Account;
use crate::engine::Mode;
use crate::wire::ClassifyResponse;

/// The request body: `text` or `texts`, and `labels` or a saved `classifier`. Unknown
/// fields are refused so typos do not pass silently.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest {
    /// One text; texts longer than the model's `max_tokens` are cut (`truncated: true`).
    #[schema(min_length = 1, pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$")]
    pub text: Option<String>,
    /// Up to 64 texts, answered in order.
    #[schema(value_type = Option<Vec<crate::wire::schema::Text>>, min_items = 1, max_items = 64)]
    pub texts: Option<Vec<String>>,
    /// 1-200 distinct label names of up to 100 characters.
    #[schema(value_type = Option<std::collections::BTreeSet<crate::wire::schema::LabelName>>, min_items = 1, max_items = 200)]
    pub labels: Option<Vec<String>>,
    /// A saved classifier instead of labels: `name` (latest), `name@N` or `name@vN`.
    #[schema(pattern = "^[a-z0-9_-]{1,64}(@v?[1-9][0-9]{0,17})?$")]
    pub classifier: Option<String>,
    /// A sentence per label (up to 1,000 characters) saying what it covers.
    #[schema(value_type = Option<BTreeMap<String, crate::wire::schema::LabelDescription>>)]
    pub descriptions: Option<BTreeMap<String, String>>,
    /// Up to 64 example texts per label.
    #[schema(value_type = Option<BTreeMap<String, crate::wire::schema::LabelExamples>>)]
    pub examples: Option<BTreeMap<String, Vec<String>>>,
    /// What the texts are (`support ticket`, `news headline`), up to 64 characters.
    #[schema(max_length = 64, pattern = r"^[^\u0000]*$")]
    pub source_type: Option<String>,
    pub mode: Option<Mode>,
    /// Multi mode: labels at or above it are returned (default 0.3).
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub threshold: Option<f32>,
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
    let texts: Vec<String> = classify::texts(request.text.as_ref(), request.texts.as_ref())?
        .into_iter()
        .map(str::to_string)
        .collect();
    let Resolved { spec, saved } = resolve(&request.spec_fields(), &state, &account).await?;
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
        .usage
        .add(&account.id, embeddings.len() as i64, tokens);
    Ok(Json(classify::respond(
        &engine,
        request.text.is_some(),
        &spec,
        &labels,
        classifier,
        &embeddings,
        started,
    )))
}
