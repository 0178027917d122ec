//! `/v1/classifiers`: saved, versioned classifiers of the caller's account.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, ApiJson, AppState};
use crate::classifiers::learn::{self, AdaptRequest, TeachRequest};
use crate::classifiers::{self, ClassifierView, Definition};
use crate::db::Account;

/// `{"data": [...]}`: the latest version of each saved classifier.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClassifierList {
    pub data: Vec<ClassifierView>,
}

/// Saves version 1 of a new name; the label vectors are computed now, once.
#[utoipa::path(post, path = "/classifiers", operation_id = "create_classifier", tag = "classifiers",
    request_body = Definition,
    responses(
        (status = 201, description = "Saved as version 1", body = ClassifierView,
            links(
                ("GetClassifier" = (operation_id = "get_classifier", parameters(("name" = "$response.body#/name")))),
                ("UpdateClassifier" = (operation_id = "update_classifier", parameters(("name" = "$response.body#/name")))),
                ("DeleteClassifier" = (operation_id = "delete_classifier", parameters(("name" = "$response.body#/name")))),
            )),
        (status = 409, description = "The name exists; PUT a new version", body = super::ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    ApiJson(definition): ApiJson<Definition>,
) -> Result<(StatusCode, Json<ClassifierView>), ApiError> {
    let name = definition
        .name
        .clone()
        .ok_or_else(|| ApiError::validation("name", "name is required"))?;
    let engine = state.engine()?;
    let saved =
        classifiers::save(&state.db, &engine, &account.id, &name, &definition, false).await?;
    Ok((StatusCode::CREATED, Json(saved.view())))
}

/// Saves a new immutable version; earlier versions stay usable as `name@vN`.
#[utoipa::path(put, path = "/classifiers/{name}", operation_id = "update_classifier", tag = "classifiers",
    params(("name" = String, Path, description = "Classifier name", pattern = "^[a-z0-9_-]{1,64}$")),
    request_body = Definition,
    responses(
        (status = 200, description = "Saved as the next version", body = ClassifierView),
        (status = 404, description = "No classifier of that name", body = super::ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(name): Path<String>,
    ApiJson(definition): ApiJson<Definition>,
) -> Result<Json<ClassifierView>, ApiError> {
    let engine = state.engine()?;
    let saved =
        classifiers::save(&state.db, &engine, &account.id, &name, &definition, true).await?;
    Ok(Json(saved.view()))
}

/// The latest version of each of the account's classifiers.
#[utoipa::path(get, path = "/classifiers", operation_id = "list_classifiers", tag = "classifiers",
    responses((status = 200, description = "Latest versions, by name", body = ClassifierList)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
) -> Result<Json<ClassifierList>, ApiError> {
    let data = state
        .db
        .list_classifiers(&account.id)
        .await?
        .iter()
        .map(classifiers::describe_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(ClassifierList { data }))
}

/// One version: `name` (the latest), `name@N` or `name@vN`.
#[utoipa::path(get, path = "/classifiers/{name}", operation_id = "get_classifier", tag = "classifiers",
    params(("name" = String, Path, description = "`name`, `name@N` or `name@vN`",
        pattern = "^[a-z0-9_-]{1,64}(@v?[1-9][0-9]{0,17})?$")),
    responses(
        (status = 200, description = "The version", body = ClassifierView),
        (status = 404, description = "No such classifier or version", body = super::ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(reference): Path<String>,
) -> Result<Json<ClassifierView>, ApiError> {
    let (name, version) = classifiers::parse_reference(&reference)?;
    let row = state
        .db
        .classifier(&account.id, &name, version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no classifier {reference:?}")))?;
    Ok(Json(classifiers::describe_row(&row)?))
}

/// Deletes every version; 409 while a pending or processing batch job uses it.
#[utoipa::path(delete, path = "/classifiers/{name}", operation_id = "delete_classifier", tag = "classifiers",
    params(("name" = String, Path, description = "Classifier name", pattern = "^[a-z0-9_-]{1,64}$")),
    responses(
        (status = 204, description = "Deleted, every version"),
        (status = 404, description = "No classifier of that name", body = super::ErrorBody),
        (status = 409, description = "A pending or processing batch job uses it", body = super::ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    classifiers::check_name(&name)?;
    state.db.delete_classifier(&account.id, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `{"data": [...]}`: every version of one classifier, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionList {
    pub data: Vec<ClassifierView>,
}

/// Every version of a classifier, newest first, each with how it was made.
#[utoipa::path(get, path = "/classifiers/{name}/versions", operation_id = "list_classifier_versions", tag = "classifiers",
    params(("name" = String, Path, description = "Classifier name", pattern = "^[a-z0-9_-]{1,64}$")),
    responses(
        (status = 200, description = "Every version, newest first", body = VersionList),
        (status = 404, description = "No classifier of that name", body = super::ErrorBody),
    ))]
pub async fn versions(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(name): Path<String>,
) -> Result<Json<VersionList>, ApiError> {
    classifiers::check_name(&name)?;
    let rows = state.db.classifier_versions(&account.id, &name).await?;
    if rows.is_empty() {
        return Err(ApiError::not_found(format!("no classifier {name:?}")));
    }
    let data = rows
        .iter()
        .map(classifiers::describe_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(VersionList { data }))
}

/// Adapts the latest version to unlabeled texts (or a completed batch job's) and
/// saves the result as the next version; refused by the guard rails, it saves nothing.
#[utoipa::path(post, path = "/classifiers/{name}/adapt", operation_id = "adapt_classifier", tag = "classifiers",
    params(("name" = String, Path, description = "Classifier name", pattern = "^[a-z0-9_-]{1,64}$")),
    request_body = AdaptRequest,
    responses(
        (status = 201, description = "Saved as the next version; `adapted_from` says what adaptation did", body = ClassifierView),
        (status = 404, description = "No classifier of that name, or no such batch job", body = super::ErrorBody),
        (status = 409, description = "The batch job has not completed", body = super::ErrorBody),
        (status = 422, description = "Refused (the guard rails' reason), or the texts or job are unacceptable; nothing saved", body = super::ErrorBody),
    ))]
pub async fn adapt(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<AdaptRequest>,
) -> Result<(StatusCode, Json<ClassifierView>), ApiError> {
    classifiers::check_name(&name)?;
    let engine = state.engine()?;
    let saved = learn::adapt(&state.db, &engine, &account.id, &name, request).await?;
    Ok((StatusCode::CREATED, Json(saved.view())))
}

/// Teaches the latest version examples (corrections) and takes away the ones named in
/// `remove`, saving the next version with the examples' head refitted; when nothing
/// changes (every example known), the latest version is returned as it is.
#[utoipa::path(post, path = "/classifiers/{name}/examples", operation_id = "teach_classifier", tag = "classifiers",
    params(("name" = String, Path, description = "Classifier name", pattern = "^[a-z0-9_-]{1,64}$")),
    request_body = TeachRequest,
    responses(
        (status = 200, description = "The new version (or the latest, when nothing changed)", body = ClassifierView),
        (status = 400, description = "Examples for a label the classifier does not have", body = super::ErrorBody),
        (status = 404, description = "No classifier of that name", body = super::ErrorBody),
        (status = 422, description = "An example is unacceptable, or a label would hold too many", body = super::ErrorBody),
    ))]
pub async fn teach(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<TeachRequest>,
) -> Result<Json<ClassifierView>, ApiError> {
    classifiers::check_name(&name)?;
    let engine = state.engine()?;
    let saved = learn::teach(&state.db, &engine, &account.id, &name, request).await?;
    Ok(Json(saved.view()))
}
