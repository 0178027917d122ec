//! `GET /v1/models`: the model this instance serves and its limits, so a client can
//! size texts and label sets without reading the server's flags.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::{ApiError, AppState};
use crate::engine::Pooling;

/// One loaded model.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelInfo {
    /// The name responses report and `--model` takes.
    pub name: String,
    pub description: String,
    /// Tokens of a text the model reads (special tokens included); longer texts are
    /// cut and answered with `truncated: true`.
    pub max_tokens: usize,
    /// Length of the sentence vectors.
    pub dimensions: usize,
    /// Prepended to every text before tokenization.
    pub text_prefix: String,
    /// Prepended to every label sentence before tokenization.
    pub label_prefix: String,
    pub pooling: Pooling,
}

/// `{"data": [...]}`: one model per instance.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelList {
    pub data: Vec<ModelInfo>,
}

/// The model this instance serves, with its limits.
#[utoipa::path(get, path = "/models", operation_id = "list_models", tag = "models",
    responses((status = 200, description = "One model per instance", body = ModelList)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<ModelList>, ApiError> {
    let engine = state.engine()?;
    let manifest = engine.encoder().manifest();
    Ok(Json(ModelList {
        data: vec![ModelInfo {
            name: manifest.name.clone(),
            description: manifest.description.clone(),
            max_tokens: manifest.max_tokens,
            dimensions: engine.dimensions(),
            text_prefix: manifest.text_prefix.clone(),
            label_prefix: manifest.label_prefix.clone(),
            pooling: manifest.pooling,
        }],
    }))
}
