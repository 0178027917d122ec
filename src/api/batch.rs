//! `/v1/batch`: create a job (with a signed upload form, or its items inline), start
//! it, watch it, fetch its results, delete it. All scoped to the caller's account: another account's job
//! is a 404.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::inline::{check_items, InlineItem};
use super::spec::{Resolved, SpecFields};
use super::{ApiError, ApiJson, AppState, ErrorBody};
use crate::batch::inline::write_items;
use crate::batch::view::{view, view_one, views};
use crate::batch::{errors_key, estimate_tokens, input_key, job_output_keys, output_key};
use crate::clock::{now_ms, rfc3339};
use crate::db::batch::{CancelOutcome, JobRow, NewJob, StartOutcome};
use crate::db::Account;
use crate::engine::Mode;
use crate::webhooks::{self, address::check_url};
use crate::wire::{CreatedJob, Job, JobList, JobStatus, ResultsLink};

/// Most metadata entries, and their sizes.
const MAX_METADATA_ENTRIES: usize = 16;
const MAX_METADATA_KEY_CHARS: usize = 64;
const MAX_METADATA_VALUE_CHARS: usize = 512;
/// Largest page of `GET /v1/batch`.
const MAX_PAGE: i64 = 100;

/// `POST /v1/batch`: the classification config of `/v1/classify` minus the text.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// 1-200 distinct label names of up to 100 characters.
    #[schema(min_items = 1, max_items = 200)]
    pub labels: Option<Vec<String>>,
    /// A saved classifier instead of labels: `name` (latest), `name@N` or `name@vN`;
    /// pinned when the job is created.
    #[schema(pattern = "^[a-z0-9_-]{1,64}(@v?[1-9][0-9]*)?$")]
    pub classifier: Option<String>,
    /// A sentence per label (up to 1,000 characters) saying what it covers.
    pub descriptions: Option<BTreeMap<String, String>>,
    /// Up to 64 example texts per label.
    pub examples: Option<BTreeMap<String, Vec<String>>>,
    /// What the texts are (`support ticket`, `news headline`), up to 64 characters.
    #[schema(max_length = 64)]
    pub source_type: Option<String>,
    pub mode: Option<Mode>,
    /// Multi mode: labels at or above it are returned (default 0.3).
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub threshold: Option<f32>,
    /// Fit the label vectors to the job's own texts before scoring (default true).
    pub adapt: Option<bool>,
    /// Up to 16 entries: keys of 1-64 characters, values of up to 512.
    pub metadata: Option<BTreeMap<String, String>>,
    /// The input itself instead of an upload: 1-50,000 objects, each one input line
    /// (`{"id": ..., "text": ...}`), checked when the job runs like a file's lines. The
    /// whole body may be up to 64 MiB. The job is created ready to start.
    #[schema(min_items = 1, max_items = 50000)]
    pub items: Option<Vec<InlineItem>>,
    /// With `items`: start the job in this call, as `POST /v1/batch/{id}/start` would.
    /// When it cannot start (another job of the account is processing), nothing is
    /// created and the answer is that 409.
    pub start: Option<bool>,
    /// Told when the job ends (`batch.completed`, `batch.failed`, `batch.cancelled`),
    /// signed with the account's webhook secret: an absolute http(s) URL without user
    /// name or password, to a public address.
    #[schema(max_length = 2048, pattern = "^https?://")]
    pub webhook_url: Option<String>,
}

fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(ApiError::validation(
            "metadata",
            format!("at most {MAX_METADATA_ENTRIES} metadata entries"),
        ));
    }
    for (key, value) in metadata {
        if key.is_empty() || key.chars().count() > MAX_METADATA_KEY_CHARS {
            return Err(ApiError::validation(
                format!("metadata.{key}"),
                format!("metadata keys are 1-{MAX_METADATA_KEY_CHARS} characters"),
            ));
        }
        if value.chars().count() > MAX_METADATA_VALUE_CHARS {
            return Err(ApiError::validation(
                format!("metadata.{key}"),
                format!("metadata values are at most {MAX_METADATA_VALUE_CHARS} characters"),
            ));
        }
    }
    Ok(())
}

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
    let Resolved { spec, saved } = SpecFields {
        labels: &request.labels,
        classifier: &request.classifier,
        descriptions: &request.descriptions,
        examples: &request.examples,
        source_type: &request.source_type,
        mode: request.mode,
        threshold: request.threshold,
        adapt: request.adapt,
    }
    .resolve(&state, &account)
    .await?;
    let metadata = request.metadata.unwrap_or_default();
    check_metadata(&metadata)?;
    if let Some(items) = &request.items {
        check_items(items)?;
    } else if request.start == Some(true) {
        return Err(ApiError::validation(
            "start",
            "start needs items; a job whose file is uploaded starts with POST /v1/batch/{id}/start",
        ));
    }
    if let Some(url) = &request.webhook_url {
        check_url(url, state.webhooks.allow_private)
            .map_err(|err| ApiError::validation("webhook_url", err.to_string()))?;
        // Made now, so it can be read before the first event is signed with it.
        webhooks::secret(&state.db, &account.id).await?;
    }

    let id = format!("batch_{}", uuid::Uuid::new_v4().simple());
    let input = input_key(&id);
    // Inline items are stored before the job exists, so it is never seen without them.
    let form = match &request.items {
        Some(items) => {
            write_items(state.storage.as_ref(), &input, items).await?;
            None
        }
        None => Some(
            state
                .storage
                .presign_upload(&input, state.batch.max_upload_bytes, state.batch.upload_ttl)
                .await?,
        ),
    };
    let created = state
        .db
        .create_job(&NewJob {
            id: &id,
            account_id: &account.id,
            config: &serde_json::to_string(&spec).expect("serialisable"),
            metadata: &serde_json::to_string(&metadata).expect("serialisable"),
            input_key: &input,
            output_key: &output_key(&id),
            // Inline: no form, none to accept.
            upload_expires_at: form.as_ref().map_or_else(now_ms, |form| form.expires_at),
            classifier: saved.as_ref().map(|c| (c.name.as_str(), c.version)),
            webhook_url: request.webhook_url.as_deref(),
        })
        .await;
    let started = match created {
        Ok(job) if request.start == Some(true) => start_job(&state, &account, &job).await,
        Ok(job) => view(&job).map_err(ApiError::from),
        Err(err) => Err(err.into()),
    };
    let job = match started {
        Ok(job) => job,
        Err(err) => {
            // Nothing is kept of a request that failed, so that it can be sent again.
            if form.is_none() {
                state.db.delete_job(&account.id, &id).await?;
                state.storage.delete(&input).await?;
            }
            return Err(err);
        }
    };
    Ok((
        StatusCode::CREATED,
        Json(CreatedJob {
            job,
            upload_url: form.as_ref().map(|form| form.url.clone()),
            expires_at: form.as_ref().map(|form| rfc3339(form.expires_at)),
            upload_fields: form.map(|form| form.fields),
            input_key: input,
            max_upload_bytes: request
                .items
                .is_none()
                .then_some(state.batch.max_upload_bytes),
        }),
    ))
}

/// The caller's job `id`, or 404 (another account's job included).
pub(super) async fn own_job(
    state: &AppState,
    account: &Account,
    id: &str,
) -> Result<JobRow, ApiError> {
    state
        .db
        .job(&account.id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no batch job {id:?}")))
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
    let job = own_job(&state, &account, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(start_job(&state, &account, &job).await?),
    ))
}

/// The 410 of a job retention expired at `at` (ms).
fn expired(at: i64) -> ApiError {
    ApiError::expired(format!(
        "the input and results of this job were deleted at {} (--retention-days after it \
         ended); the job itself stays",
        rfc3339(at)
    ))
}

/// Starts a pending job whose input is stored, or restarts a failed one: for `start`
/// and for `create` with `"start": true`.
async fn start_job(state: &AppState, account: &Account, job: &JobRow) -> Result<Job, ApiError> {
    let id = &job.id;
    if let Some(at) = job.expired_at {
        return Err(expired(at));
    }
    if job.status != JobStatus::Pending && job.status != JobStatus::Failed {
        return Err(ApiError::conflict(format!(
            "job is {}; only pending or failed jobs start",
            job.status
        )));
    }
    let size = state.storage.size(&job.input_key).await?.ok_or_else(|| {
        ApiError::validation(
            "file",
            "no file was uploaded for this job; POST it to upload_url first",
        )
    })?;
    let estimated_tokens = estimate_tokens(size);
    super::quota::admit_batch(state, account, estimated_tokens).await?;
    match state
        .db
        .start_job(&account.id, id, size as i64, estimated_tokens)
        .await?
    {
        StartOutcome::Started => {}
        StartOutcome::WrongStatus(current) => {
            return Err(ApiError::conflict(format!(
                "job is {current}; only pending or failed jobs start"
            )))
        }
        StartOutcome::AnotherActive => {
            return Err(ApiError::conflict(
                "another batch job of this account is processing; one active job per account",
            ))
        }
        StartOutcome::Expired(at) => return Err(expired(at)),
        StartOutcome::NotFound => return Err(ApiError::not_found(format!("no batch job {id:?}"))),
    }
    state.wake_workers.notify_one();
    Ok(view(&own_job(state, account, id).await?)?)
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
    let job = own_job(&state, &account, &id).await?;
    Ok(Json(view_one(&state.db, &job).await?))
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
    let job = own_job(&state, &account, &id).await?;
    if let Some(at) = job.expired_at {
        return Err(expired(at));
    }
    let has_results = job.status == JobStatus::Completed
        || (job.status == JobStatus::Cancelled && job.started_at.is_some());
    if !has_results {
        return Err(ApiError::conflict(match job.status {
            JobStatus::Cancelled => {
                "job was cancelled before it started; it has no results".to_string()
            }
            other => format!("job is {other}; results exist once it is completed or cancelled"),
        }));
    }
    let ttl = state.batch.download_ttl;
    let url = state.storage.presign_download(&job.output_key, ttl).await?;
    let errors_url = state
        .storage
        .presign_download(&errors_key(&job.id), ttl)
        .await?;
    Ok(Json(ResultsLink {
        job_id: job.id,
        url,
        errors_url,
        errors: job.requests_failed,
        expires_at: rfc3339(now_ms() + ttl.as_millis() as i64),
        requests_completed: job.requests_completed,
        requests_failed: job.requests_failed,
    }))
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
    match state.db.cancel_job(&account.id, &id).await? {
        CancelOutcome::Stopping(job) => {
            Ok((StatusCode::ACCEPTED, Json(view_one(&state.db, &job).await?)))
        }
        CancelOutcome::AlreadyEnded(current) => Err(ApiError::conflict(format!(
            "job is {current}; only pending or processing jobs can be cancelled"
        ))),
        CancelOutcome::NotFound => Err(ApiError::not_found(format!("no batch job {id:?}"))),
    }
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
    let job = own_job(&state, &account, &id).await?;
    if !state.db.delete_job(&account.id, &id).await? {
        return Err(ApiError::conflict(
            "job is processing; cancel it, or delete it once it ends",
        ));
    }
    for key in std::iter::once(job.input_key).chain(job_output_keys(&job.id, job.shards)) {
        state.storage.delete(&key).await?;
    }
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
    /// The `next_cursor` of the previous page.
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
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::validation(
            "limit",
            format!("limit must be 1-{MAX_PAGE}"),
        ));
    }
    let cursor = match &query.after {
        None => None,
        Some(after) => Some(
            after
                .split_once(':')
                .and_then(|(created, id)| Some((created.parse::<i64>().ok()?, id)))
                .ok_or_else(|| ApiError::validation("after", "not a cursor from next_cursor"))?,
        ),
    };
    let jobs = state.db.list_jobs(&account.id, cursor, limit + 1).await?;
    let more = jobs.len() as i64 > limit;
    let page: Vec<&JobRow> = jobs.iter().take(limit as usize).collect();
    let next_cursor = match (more, page.last()) {
        (true, Some(last)) => Some(format!("{}:{}", last.created_at, last.id)),
        _ => None,
    };
    Ok(Json(JobList {
        data: views(&state.db, &page).await?,
        next_cursor,
    }))
}
