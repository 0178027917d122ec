//! `/v1/classifiers`: saved, versioned classifiers of the caller's account.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::{ApiError, ApiJson, AppState};
use crate::classifiers::{self, Definition};
use crate::db::Account;

/// `POST /v1/classifiers`: version 1 of a new name (409 if the name exists).
pub async fn create(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    ApiJson(definition): ApiJson<Definition>,
) -> Result<impl IntoResponse, ApiError> {
    let name = definition
        .name
        .clone()
        .ok_or_else(|| ApiError::validation("name", "name is required"))?;
    let engine = state.engine()?;
    let saved =
        classifiers::save(&state.db, &engine, &account.id, &name, &definition, false).await?;
    Ok((StatusCode::CREATED, Json(saved.view())))
}

/// `PUT /v1/classifiers/{name}`: a new immutable version; earlier versions stay.
pub async fn update(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(name): Path<String>,
    ApiJson(definition): ApiJson<Definition>,
) -> Result<Json<Value>, ApiError> {
    let engine = state.engine()?;
    let saved =
        classifiers::save(&state.db, &engine, &account.id, &name, &definition, true).await?;
    Ok(Json(saved.view()))
}

/// `GET /v1/classifiers`: the latest version of each.
pub async fn list(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
) -> Result<Json<Value>, ApiError> {
    let data = state
        .db
        .list_classifiers(&account.id)
        .await?
        .iter()
        .map(classifiers::describe_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({ "data": data })))
}

/// `GET /v1/classifiers/{name}` (latest) or `/{name}@{version}`.
pub async fn get(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(reference): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (name, version) = classifiers::parse_reference(&reference)?;
    let row = state
        .db
        .classifier(&account.id, &name, version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no classifier {reference:?}")))?;
    Ok(Json(classifiers::describe_row(&row)?))
}

/// `DELETE /v1/classifiers/{name}`: every version; 409 while a pending or processing
/// batch job uses it.
pub async fn delete(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    classifiers::check_name(&name)?;
    state.db.delete_classifier(&account.id, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
