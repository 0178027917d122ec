//! `POST /v1/classify`: the request checked and its spec resolved, the texts embedded
//! through the inference queue, then scored and shaped by the classification service
//! (`crate::classify`), which the CLI's local `classify` shares.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::{Extension, Json};

use super::spec::{resolve, Resolved};
use super::{ApiError, ApiJson, AppState};
use crate::classify::{self};
use crate::db::Account;
use crate::engine::LabelScorer;
use crate::wire::{ClassifyRequest, ClassifyResponse};

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
    let Resolved { spec, saved } = resolve(
        &request.spec_fields(),
        request.classifier.as_deref(),
        None,
        &state,
        &account,
    )
    .await?;
    let engine = state.engine()?;
    let queue = state.queue()?;
    let (labels, classifier): (Arc<dyn LabelScorer>, _) = match saved {
        Some(saved) => (saved.scorer(), Some(saved.reference())),
        None => {
            let (engine, set) = (engine.clone(), spec.labels.clone());
            let labels = tokio::task::spawn_blocking(move || engine.label_vectors(&set))
                .await
                .map_err(ApiError::internal)??;
            (Arc::new(labels), None)
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
        labels.as_ref(),
        classifier,
        &embeddings,
        started,
    )))
}
