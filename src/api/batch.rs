//! `/v1/batch`: create a job (with a signed upload form, or its items inline), start
//! it, watch it, fetch its results, delete it. All scoped to the caller's account: another account's job
//! is a 404.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::inline::{check_items, InlineItem};
use super::spec::{Resolved, SpecFields};
use super::{ApiError, ApiJson, AppState, ErrorBody};
use crate::batch::inline::write_items;
use crate::batch::{errors_key, estimate_tokens, input_key, job_output_keys, output_key};
use crate::db::batch::{status, CancelOutcome, JobRow, NewJob, StartOutcome};
use crate::db::shards::ShardCounts;
use crate::db::{now_ms, rfc3339, Account};
use crate::engine::{AdaptationReport, ClassificationSpec, Mode};
use crate::webhooks::{self, address::check_url};

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
    #[schema(value_type = Option<std::collections::BTreeSet<crate::api::openapi::LabelName>>, min_items = 1, max_items = 200)]
    pub labels: Option<Vec<String>>,
    /// A saved classifier instead of labels: `name` (latest), `name@N` or `name@vN`;
    /// pinned when the job is created.
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
    /// Fit the label vectors to the job's own texts before scoring (default true).
    pub adapt: Option<bool>,
    /// Up to 16 entries: keys of 1-64 characters, values of up to 512.
    #[schema(value_type = Option<crate::api::openapi::Metadata>)]
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
    ///
    /// The pattern is the part of the rule JSON Schema can say: lower-case host names
    /// (labels that start with a letter, single hyphens), an optional port, then any
    /// path, query and fragment of visible ASCII. Some other URLs pass the server's
    /// parser (an IP address, an internationalised name), but an address that is not
    /// public is refused, which no pattern can say.
    #[schema(
        max_length = 2048,
        pattern = "^https?://[a-z][a-z0-9]*(-[a-z0-9]+)*(\\.[a-z][a-z0-9]*(-[a-z0-9]+)*)*(:[0-9]{1,4})?([/?#][!-~]*)?$"
    )]
    pub webhook_url: Option<String>,
}

/// A job's state. `failed` jobs may be started again (from the start of the file).
/// The CLI's client reads the same type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Created; waiting for its file and `start`.
    Pending,
    Processing,
    /// Cancel was asked; it stops at its next chunk and becomes `cancelled`.
    Cancelling,
    Completed,
    Failed,
    /// Stopped on request; the rows scored before that stay downloadable.
    Cancelled,
}

impl JobStatus {
    fn of(row: &JobRow) -> Self {
        match row.status.as_str() {
            status::PENDING => Self::Pending,
            status::PROCESSING => Self::Processing,
            status::CANCELLING => Self::Cancelling,
            status::COMPLETED => Self::Completed,
            status::CANCELLED => Self::Cancelled,
            _ => Self::Failed,
        }
    }

    /// The word the API uses, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => status::PENDING,
            Self::Processing => status::PROCESSING,
            Self::Cancelling => status::CANCELLING,
            Self::Completed => status::COMPLETED,
            Self::Failed => status::FAILED,
            Self::Cancelled => status::CANCELLED,
        }
    }
}

/// A batch job as the API shows it (and as the CLI's client reads it).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub job_id: String,
    pub status: JobStatus,
    /// The saved classifier the job pinned, as `name@vN`.
    pub classifier: Option<String>,
    pub mode: Mode,
    pub threshold: f32,
    pub adapt: bool,
    /// What adaptation did, once the job has read its input.
    pub adaptation: Option<AdaptationReport>,
    pub labels: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    /// Where the job's end is announced.
    pub webhook_url: Option<String>,
    /// Lines of the input, once counted.
    pub requests_total: Option<i64>,
    pub requests_completed: i64,
    pub requests_failed: i64,
    pub estimated_tokens: Option<i64>,
    pub actual_tokens: Option<i64>,
    pub input_bytes: Option<i64>,
    /// Why the job failed.
    pub error: Option<String>,
    pub progress: Progress,
    /// How the job's shards stand, once its input is surveyed (cut into shards that
    /// any instance scores); null before.
    pub shards: Option<Shards>,
    /// RFC 3339, like every time below.
    pub created_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    /// Retention (`--retention-days` after the job ended) deleted its input and
    /// results; the job stays listed, its results answer 410.
    pub expired: bool,
}

impl Job {
    /// Lines scored so far, failed ones included.
    pub fn lines_done(&self) -> u64 {
        (self.requests_completed + self.requests_failed).max(0) as u64
    }
}

/// A new job and the form that uploads its input (an S3-style presigned POST). A job
/// created with `items` has its input already: the upload fields are null.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedJob {
    #[serde(flatten)]
    pub job: Job,
    /// POST a `multipart/form-data` body here: every `upload_fields` entry, then `file`.
    pub upload_url: Option<String>,
    pub upload_fields: Option<BTreeMap<String, String>>,
    /// Where the input is stored.
    pub input_key: String,
    /// When the upload form stops being accepted (RFC 3339).
    pub expires_at: Option<String>,
    pub max_upload_bytes: Option<u64>,
}

/// Time-limited downloads of a completed (or cancelled) job's results.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResultsLink {
    pub job_id: String,
    /// GET it (no API key): NDJSON, one row per input line scored, in input order.
    pub url: String,
    /// GET it (no API key): the error rows of `url` alone, same format and order.
    pub errors_url: String,
    /// Rows in `errors_url` (the lines that failed).
    pub errors: i64,
    /// RFC 3339; both links stop working then.
    pub expires_at: String,
    pub requests_completed: i64,
    pub requests_failed: i64,
}

/// One page of jobs, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub data: Vec<Job>,
    /// Pass as `after` for the next page; null on the last one.
    pub next_cursor: Option<String>,
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
        Ok(job) => view(&job),
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
    if job.status != status::PENDING && job.status != status::FAILED {
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
    view(&own_job(state, account, id).await?)
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
    Ok(Json(view_one(&state, &job).await?))
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
    let has_results = job.status == status::COMPLETED
        || (job.status == status::CANCELLED && job.started_at.is_some());
    if !has_results {
        return Err(ApiError::conflict(match job.status.as_str() {
            status::CANCELLED => {
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
            Ok((StatusCode::ACCEPTED, Json(view_one(&state, &job).await?)))
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
        data: views(&state, &page).await?,
        next_cursor,
    }))
}

/// A job's shards by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Shards {
    pub total: i64,
    /// Waiting for a worker (or given back, or left by a worker that stopped).
    pub pending: i64,
    /// Being scored by a worker now.
    pub processing: i64,
    pub completed: i64,
}

impl From<ShardCounts> for Shards {
    fn from(counts: ShardCounts) -> Self {
        Self {
            total: counts.total,
            pending: counts.pending,
            processing: counts.processing,
            completed: counts.completed,
        }
    }
}

/// Jobs as the API shows them, with their shards (one query for all).
async fn views(state: &AppState, jobs: &[&JobRow]) -> Result<Vec<Job>, ApiError> {
    let ids: Vec<&str> = jobs.iter().map(|job| job.id.as_str()).collect();
    let mut shards = state.db.shard_counts(&ids).await?;
    jobs.iter()
        .map(|job| {
            let mut shown = view(job)?;
            shown.shards = shards.remove(&job.id).map(Shards::from);
            Ok(shown)
        })
        .collect()
}

/// One job as the API shows it, with its shards.
async fn view_one(state: &AppState, job: &JobRow) -> Result<Job, ApiError> {
    Ok(views(state, &[job]).await?.remove(0))
}

/// Progress a person can read: share of the input read, and an estimate of the rest.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    /// 0-100, one decimal.
    pub percent: f64,
    pub lines_per_second: Option<f64>,
    /// While processing, once the rate is known.
    pub eta_seconds: Option<f64>,
}

fn progress(job: &JobRow) -> Progress {
    let done = job.requests_completed + job.requests_failed;
    let percent = match (job.status.as_str(), job.requests_total) {
        (status::COMPLETED, _) => 100.0,
        (_, Some(total)) if total > 0 => (100.0 * done as f64 / total as f64).min(100.0),
        _ => 0.0,
    };
    let elapsed = job
        .started_at
        .map(|started| (job.completed_at.unwrap_or_else(now_ms) - started) as f64 / 1000.0);
    let rate = elapsed
        .filter(|&s| s > 0.0 && done > 0)
        .map(|s| done as f64 / s);
    let eta = match (job.status.as_str(), rate, job.requests_total) {
        (status::PROCESSING, Some(rate), Some(total)) => {
            Some(((total - done).max(0) as f64) / rate)
        }
        _ => None,
    };
    Progress {
        percent: (percent * 10.0).round() / 10.0,
        lines_per_second: rate.map(|r| r.round()),
        eta_seconds: eta.map(|e| e.ceil()),
    }
}

/// The job as the API shows it (and as webhook events carry it).
pub(crate) fn view(job: &JobRow) -> Result<Job, ApiError> {
    let spec: ClassificationSpec = serde_json::from_str(&job.config)
        .map_err(|err| ApiError::internal(format!("job {} config: {err}", job.id)))?;
    Ok(Job {
        job_id: job.id.clone(),
        status: JobStatus::of(job),
        classifier: job
            .classifier_name
            .as_ref()
            .zip(job.classifier_version)
            .map(|(name, version)| format!("{name}@v{version}")),
        mode: spec.mode,
        threshold: spec.threshold,
        adapt: spec.adapt,
        adaptation: job
            .adaptation
            .as_deref()
            .and_then(|report| serde_json::from_str(report).ok()),
        labels: spec.labels.names().map(str::to_string).collect(),
        metadata: serde_json::from_str(&job.metadata).unwrap_or_default(),
        webhook_url: job.webhook_url.clone(),
        requests_total: job.requests_total,
        requests_completed: job.requests_completed,
        requests_failed: job.requests_failed,
        estimated_tokens: job.estimated_tokens,
        actual_tokens: job.actual_tokens,
        input_bytes: job.input_bytes,
        error: job.error.clone(),
        progress: progress(job),
        shards: None,
        created_at: rfc3339(job.created_at),
        started_at: job.started_at.map(rfc3339),
        completed_at: job.completed_at.map(rfc3339),
        expired: job.expired_at.is_some(),
    })
}
