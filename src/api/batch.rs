//! `/v1/batch`: create a job (with a signed upload form, or its items inline), start
//! it, watch it, fetch its results, delete it. All scoped to the caller's account: another account's job
//! is a 404.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use utoipa::IntoParams;

use super::inline::check_items;
use super::spec::{resolve, Resolved};
use super::{ApiError, ApiJson, AppState, ErrorBody};
use crate::batch::jobs::NewJobRequest;
use crate::db::Account;
use crate::webhooks::{self, address::check_url};
use crate::wire::{CreateRequest, CreatedJob, Job, JobList, ResultsLink};

/// Creates a pending job and the form that uploads its input, or a job whose input
/// is the request's `items` (started at once with `"start": true`).
#[utoipa::path(post, path = "/batch", operation_id = "create_batch", tag = "batch",
    request_body = CreateRequest,
    responses(
        (status = 201, description = "Created; upload the file, then start it (with `items`: \
            start it, or it is processing already with `start`)", body = CreatedJob,
            links(
                ("GetBatch" = (operation_id = "get_batch", parameters(("id" = "$response.body#/job_id")))),
                ("StartBatch" = (operation_id = "start_batch", parameters(("id" = "$response.body#/job_id")))),
                ("GetBatchResults" = (operation_id = "get_batch_results", parameters(("id" = "$response.body#/job_id")))),
                ("DeleteBatch" = (operation_id = "delete_batch", parameters(("id" = "$response.body#/job_id")))),
                ("CancelBatch" = (operation_id = "cancel_batch", parameters(("id" = "$response.body#/job_id")))),
            )),
        (status = 404, description = "The saved classifier does not exist", body = ErrorBody),
        (status = 409, description = "A request with this Idempotency-Key is still running, \
            or `start` and another job of the account is processing (nothing was created)", body = ErrorBody),
        (status = 413, description = "The body is larger than 64 MiB (or `--max-body-bytes`, if larger)", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    ApiJson(request): ApiJson<CreateRequest>,
) -> Result<(StatusCode, Json<CreatedJob>), ApiError> {
    // A saved classifier is resolved and pinned now: later versions do not change the job.
    let Resolved { spec, saved } = resolve(
        &request.spec_fields(),
        request.classifier.as_deref(),
        request.adapt,
        &state,
        &account,
    )
    .await?;
    let new = NewJobRequest {
        spec,
        classifier: saved.map(|saved| (saved.name, saved.version)),
        metadata: request.metadata.unwrap_or_default(),
        items: request.items,
        start: request.start == Some(true),
        webhook_url: request.webhook_url,
        save_adapted: request.save_adapted == Some(true),
    };
    new.check()?;
    if let Some(items) = &new.items {
        check_items(items)?;
    }
    if let Some(url) = &new.webhook_url {
        check_url(url, state.webhooks.allow_private)
            .map_err(|err| ApiError::validation("webhook_url", err.to_string()))?;
        // Made now, so it can be read before the first event is signed with it.
        webhooks::secret(&state.db, &account.id).await?;
    }
    let created = state.jobs().create(&account, new).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Starts a pending job whose file was uploaded, or resumes a failed one.
#[utoipa::path(post, path = "/batch/{id}/start", operation_id = "start_batch", tag = "batch",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 202, description = "Processing", body = Job),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "Not pending or failed, or another job of the account is processing", body = ErrorBody),
        (status = 410, description = "Retention deleted its input (`expired`)", body = ErrorBody),
        (status = 422, description = "No file was uploaded for it", body = ErrorBody),
    ))]
pub async fn start(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    let job = state.jobs().start(&account, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// One job's status and progress.
#[utoipa::path(get, path = "/batch/{id}", operation_id = "get_batch", tag = "batch",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 404, description = "No such job", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(state.jobs().show(&account, &id).await?))
}

/// Time-limited download URLs for a job's results and its error rows: once it is
/// completed, or once it is cancelled (the rows scored before that).
#[utoipa::path(get, path = "/batch/{id}/results", operation_id = "get_batch_results", tag = "batch",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "Where to download the results", body = ResultsLink),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job has no results yet (or never will: failed, or cancelled before it started)", body = ErrorBody),
        (status = 410, description = "Retention deleted the results (`expired`); the message says when", body = ErrorBody),
    ))]
pub async fn results(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<String>,
) -> Result<Json<ResultsLink>, ApiError> {
    Ok(Json(state.jobs().results(&account, &id).await?))
}

/// Stops a job: a pending one is cancelled at once; a processing one is `cancelling`
/// until the worker holding it (on any instance) reaches its next chunk, then
/// `cancelled`, with the rows scored before that downloadable. Asking again is harmless.
#[utoipa::path(post, path = "/batch/{id}/cancel", operation_id = "cancel_batch", tag = "batch",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 202, description = "Cancelled, or cancelling until its next chunk", body = Job),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job already ended (completed or failed)", body = ErrorBody),
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    let job = state.jobs().cancel(&account, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// Deletes a job that is not processing, with its input and results.
#[utoipa::path(delete, path = "/batch/{id}", operation_id = "delete_batch", tag = "batch",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 204, description = "Deleted with its input and results"),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is processing or cancelling", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.jobs().delete(&account, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/batch?limit=&after=` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Jobs per page, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page: `<created_at>:<job id>`.
    #[param(pattern = "^[+-]?[0-9]{1,18}:")]
    pub after: Option<String>,
}

/// The account's jobs, newest first.
#[utoipa::path(get, path = "/batch", operation_id = "list_batches", tag = "batch",
    params(ListQuery),
    responses((status = 200, description = "A page of jobs", body = JobList)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobList>, ApiError> {
    let Query(query) = query.map_err(|err| ApiError::invalid_request(err.body_text()))?;
    let limit = query.limit.unwrap_or(20);
    let page = state
        .jobs()
        .list(&account, limit, query.after.as_deref())
        .await?;
    Ok(Json(page))
}
