//! Jobs as callers drive them: create (with the form that uploads the input, or with
//! inline items), start, cancel, delete, list, and the links to the results. Every call
//! is scoped to one account: another account's job is not found. The HTTP handlers
//! (`api::batch`) validate the request and call these; the worker takes over once a
//! job is started.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

use super::view::{view, view_one, views, ViewError, ViewsError};
use super::{errors_key, estimate_tokens, input_key, job_output_keys, output_key};
use crate::clock::{now_ms, rfc3339};
use crate::db::batch::{CancelOutcome, JobRow, NewJob, StartOutcome};
use crate::db::{Account, Db, DbError};
use crate::engine::Spec;
use crate::storage::{Storage, StorageError, UploadForm};
use crate::usage::PendingUsage;
use crate::wire::{CreatedJob, Job, JobList, JobStatus, ResultsLink};

/// Most metadata entries, and their sizes.
const MAX_METADATA_ENTRIES: usize = 16;
const MAX_METADATA_KEY_CHARS: usize = 64;
const MAX_METADATA_VALUE_CHARS: usize = 512;
/// Largest page of [`Jobs::list`].
pub const MAX_PAGE: i64 = 100;

/// Limits and lifetimes of batch uploads and downloads.
#[derive(Debug, Clone)]
pub struct BatchSettings {
    pub max_upload_bytes: u64,
    pub upload_ttl: Duration,
    pub download_ttl: Duration,
}

/// Why a call on a job was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// A field the caller sent cannot be accepted.
    #[error("{param}: {message}")]
    Invalid { param: String, message: String },
    #[error("{0}")]
    NotFound(String),
    /// The job is not in a state that allows this, or another job of the account is.
    #[error("{0}")]
    Conflict(String),
    /// Retention deleted the job's input and results.
    #[error("{0}")]
    Expired(String),
    /// The account's monthly token quota has no room for the job.
    #[error("{message}")]
    QuotaExceeded { message: String, retry_after: u64 },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    View(#[from] ViewError),
}

impl From<ViewsError> for JobsError {
    fn from(err: ViewsError) -> Self {
        match err {
            ViewsError::Db(err) => err.into(),
            ViewsError::View(err) => err.into(),
        }
    }
}

fn invalid(param: impl Into<String>, message: impl Into<String>) -> JobsError {
    JobsError::Invalid {
        param: param.into(),
        message: message.into(),
    }
}

/// A job to create, its request validated by the caller.
#[derive(Debug)]
pub struct NewJobRequest<T> {
    pub spec: Spec,
    /// The saved classifier the spec came from (`name`, version), pinned now.
    pub classifier: Option<(String, i64)>,
    pub metadata: BTreeMap<String, String>,
    /// The input itself (written as NDJSON, one item a line), or `None` for an upload.
    pub items: Option<Vec<T>>,
    /// With items: start the job in this call.
    pub start: bool,
    pub webhook_url: Option<String>,
    /// Save the fitted vectors as the classifier's next version on completion.
    pub save_adapted: bool,
}

impl<T> NewJobRequest<T> {
    /// The request's own rules: metadata within its limits, `start` only with items.
    pub fn check(&self) -> Result<(), JobsError> {
        check_metadata(&self.metadata)?;
        if self.items.is_none() && self.start {
            return Err(invalid(
                "start",
                "start needs items; a job whose file is uploaded starts with POST /v1/batch/{id}/start",
            ));
        }
        if self.save_adapted && self.classifier.is_none() {
            return Err(invalid(
                "save_adapted",
                "save_adapted needs a classifier, whose next version it saves",
            ));
        }
        Ok(())
    }
}

/// What the job calls need.
pub struct Jobs<'a> {
    pub db: &'a Db,
    pub storage: &'a dyn Storage,
    pub settings: &'a BatchSettings,
    /// Classify usage not written yet, which quotas count.
    pub usage: &'a PendingUsage,
    /// Wakes this instance's worker when a job starts.
    pub wake: &'a Notify,
}

impl Jobs<'_> {
    /// Creates a pending job and the form that uploads its input, or a job whose input
    /// is `items` (started at once with `start`). Nothing is kept of a request that
    /// fails, so that it can be sent again.
    pub async fn create<T: Serialize>(
        &self,
        account: &Account,
        request: NewJobRequest<T>,
    ) -> Result<CreatedJob, JobsError> {
        request.check()?;
        let id = format!("batch_{}", uuid::Uuid::new_v4().simple());
        let input = input_key(&id);
        let form = self.store_input(&input, request.items.as_deref()).await?;
        let created = self.insert(account, &id, &request, form.as_ref()).await;
        let job = match created {
            Ok(job) if request.start => self.start_row(account, &job).await,
            Ok(job) => view(&job).map_err(JobsError::from),
            Err(err) => Err(err),
        };
        let job = match job {
            Ok(job) => job,
            Err(err) => {
                if form.is_none() {
                    self.db.delete_job(&account.id, &id).await?;
                    self.storage.delete(&input).await?;
                }
                return Err(err);
            }
        };
        Ok(created_job(
            job,
            input,
            form,
            request
                .items
                .is_none()
                .then_some(self.settings.max_upload_bytes),
        ))
    }

    /// Inline items are stored before the job exists, so it is never seen without
    /// them; an upload gets its form instead.
    async fn store_input<T: Serialize>(
        &self,
        input: &str,
        items: Option<&[T]>,
    ) -> Result<Option<UploadForm>, JobsError> {
        Ok(match items {
            Some(items) => {
                super::inline::write_items(self.storage, input, items).await?;
                None
            }
            None => Some(
                self.storage
                    .presign_upload(
                        input,
                        self.settings.max_upload_bytes,
                        self.settings.upload_ttl,
                    )
                    .await?,
            ),
        })
    }

    async fn insert<T>(
        &self,
        account: &Account,
        id: &str,
        request: &NewJobRequest<T>,
        form: Option<&UploadForm>,
    ) -> Result<JobRow, JobsError> {
        Ok(self
            .db
            .create_job(&NewJob {
                id,
                account_id: &account.id,
                spec: &serde_json::to_string(&request.spec).expect("serialisable"),
                metadata: &serde_json::to_string(&request.metadata).expect("serialisable"),
                input_key: &input_key(id),
                output_key: &output_key(id),
                // Inline: no form, none to accept.
                upload_expires_at: form.map_or_else(now_ms, |form| form.expires_at),
                classifier: request
                    .classifier
                    .as_ref()
                    .map(|(name, version)| (name.as_str(), *version)),
                webhook_url: request.webhook_url.as_deref(),
                save_adapted: request.save_adapted,
            })
            .await?)
    }

    /// The account's job `id`.
    pub async fn get(&self, account: &Account, id: &str) -> Result<JobRow, JobsError> {
        self.db
            .job(&account.id, id)
            .await?
            .ok_or_else(|| JobsError::NotFound(format!("no batch job {id:?}")))
    }

    /// The account's job `id` as the API shows it.
    pub async fn show(&self, account: &Account, id: &str) -> Result<Job, JobsError> {
        Ok(view_one(self.db, &self.get(account, id).await?).await?)
    }

    /// Starts a pending job whose input is stored, or restarts a failed one.
    pub async fn start(&self, account: &Account, id: &str) -> Result<Job, JobsError> {
        let job = self.get(account, id).await?;
        self.start_row(account, &job).await
    }

    async fn start_row(&self, account: &Account, job: &JobRow) -> Result<Job, JobsError> {
        let id = &job.id;
        if let Some(at) = job.expired_at {
            return Err(expired(at));
        }
        if job.status != JobStatus::Pending && job.status != JobStatus::Failed {
            return Err(not_startable(job.status));
        }
        let size = self.storage.size(&job.input_key).await?.ok_or_else(|| {
            invalid(
                "file",
                "no file was uploaded for this job; POST it to upload_url first",
            )
        })?;
        let estimated_tokens = estimate_tokens(size);
        self.admit(account, estimated_tokens).await?;
        match self
            .db
            .start_job(&account.id, id, size as i64, estimated_tokens)
            .await?
        {
            StartOutcome::Started => {}
            StartOutcome::WrongStatus(current) => return Err(not_startable(current)),
            StartOutcome::AnotherActive => {
                return Err(JobsError::Conflict(
                    "another batch job of this account is processing; one active job per account"
                        .to_string(),
                ))
            }
            StartOutcome::Expired(at) => return Err(expired(at)),
            StartOutcome::NotFound => {
                return Err(JobsError::NotFound(format!("no batch job {id:?}")))
            }
        }
        self.wake.notify_one();
        Ok(view(&self.get(account, id).await?)?)
    }

    /// Whether a job estimated at `estimated_tokens` may start: it must fit in what is
    /// left of the month's quota. A job already running is not stopped.
    async fn admit(&self, account: &Account, estimated_tokens: i64) -> Result<(), JobsError> {
        let Some(quota) = account.limits.monthly_token_quota else {
            return Ok(());
        };
        let used = crate::usage::month_to_date(self.db, self.usage, &account.id).await?;
        if used.saturating_add(estimated_tokens) > quota {
            return Err(JobsError::QuotaExceeded {
                message: format!(
                    "this job's estimated {estimated_tokens} tokens do not fit in this account's \
                     monthly quota of {quota} ({used} used this month, UTC)"
                ),
                retry_after: crate::usage::seconds_to_next_month(),
            });
        }
        Ok(())
    }

    /// Time-limited download links for a job's results and its error rows: once it is
    /// completed, or once it is cancelled (the rows scored before that).
    pub async fn results(&self, account: &Account, id: &str) -> Result<ResultsLink, JobsError> {
        let job = self.get(account, id).await?;
        if let Some(at) = job.expired_at {
            return Err(expired(at));
        }
        let has_results = job.status == JobStatus::Completed
            || (job.status == JobStatus::Cancelled && job.started_at.is_some());
        if !has_results {
            return Err(JobsError::Conflict(match job.status {
                JobStatus::Cancelled => {
                    "job was cancelled before it started; it has no results".to_string()
                }
                other => format!("job is {other}; results exist once it is completed or cancelled"),
            }));
        }
        let ttl = self.settings.download_ttl;
        Ok(ResultsLink {
            url: self.storage.presign_download(&job.output_key, ttl).await?,
            errors_url: self
                .storage
                .presign_download(&errors_key(&job.id), ttl)
                .await?,
            job_id: job.id,
            errors: job.requests_failed,
            expires_at: rfc3339(now_ms() + ttl.as_millis() as i64),
            requests_completed: job.requests_completed,
            requests_failed: job.requests_failed,
        })
    }

    /// Stops a job: a pending one is cancelled at once; a processing one is
    /// `cancelling` until the worker holding it (on any instance) reaches its next
    /// chunk. Asking again is harmless.
    pub async fn cancel(&self, account: &Account, id: &str) -> Result<Job, JobsError> {
        match self.db.cancel_job(&account.id, id).await? {
            CancelOutcome::Stopping(job) => Ok(view_one(self.db, &job).await?),
            CancelOutcome::AlreadyEnded(current) => Err(JobsError::Conflict(format!(
                "job is {current}; only pending or processing jobs can be cancelled"
            ))),
            CancelOutcome::NotFound => Err(JobsError::NotFound(format!("no batch job {id:?}"))),
        }
    }

    /// Deletes a job that is not processing, with its input and results.
    pub async fn delete(&self, account: &Account, id: &str) -> Result<(), JobsError> {
        let job = self.get(account, id).await?;
        if !self.db.delete_job(&account.id, id).await? {
            return Err(JobsError::Conflict(
                "job is processing; cancel it, or delete it once it ends".to_string(),
            ));
        }
        for key in std::iter::once(job.input_key).chain(job_output_keys(&job.id, job.shards)) {
            self.storage.delete(&key).await?;
        }
        Ok(())
    }

    /// A page of the account's jobs, newest first, after the cursor `after` (a
    /// `next_cursor` of an earlier page).
    pub async fn list(
        &self,
        account: &Account,
        limit: i64,
        after: Option<&str>,
    ) -> Result<JobList, JobsError> {
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(invalid("limit", format!("limit must be 1-{MAX_PAGE}")));
        }
        let cursor = match after {
            None => None,
            Some(after) => Some(
                after
                    .split_once(':')
                    .and_then(|(created, id)| Some((created.parse::<i64>().ok()?, id)))
                    .ok_or_else(|| invalid("after", "not a cursor from next_cursor"))?,
            ),
        };
        let jobs = self.db.list_jobs(&account.id, cursor, limit + 1).await?;
        let more = jobs.len() as i64 > limit;
        let page: Vec<&JobRow> = jobs.iter().take(limit as usize).collect();
        let next_cursor = match (more, page.last()) {
            (true, Some(last)) => Some(format!("{}:{}", last.created_at, last.id)),
            _ => None,
        };
        Ok(JobList {
            data: views(self.db, &page).await?,
            next_cursor,
        })
    }
}

/// A created job with its upload form, when it has one.
fn created_job(
    job: Job,
    input_key: String,
    form: Option<UploadForm>,
    max_upload_bytes: Option<u64>,
) -> CreatedJob {
    CreatedJob {
        job,
        upload_url: form.as_ref().map(|form| form.url.clone()),
        expires_at: form.as_ref().map(|form| rfc3339(form.expires_at)),
        upload_fields: form.map(|form| form.fields),
        input_key,
        max_upload_bytes,
    }
}

fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), JobsError> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(invalid(
            "metadata",
            format!("at most {MAX_METADATA_ENTRIES} metadata entries"),
        ));
    }
    for (key, value) in metadata {
        if key.is_empty() || key.chars().count() > MAX_METADATA_KEY_CHARS {
            return Err(invalid(
                format!("metadata.{key}"),
                format!("metadata keys are 1-{MAX_METADATA_KEY_CHARS} characters"),
            ));
        }
        if value.chars().count() > MAX_METADATA_VALUE_CHARS {
            return Err(invalid(
                format!("metadata.{key}"),
                format!("metadata values are at most {MAX_METADATA_VALUE_CHARS} characters"),
            ));
        }
    }
    Ok(())
}

fn not_startable(status: JobStatus) -> JobsError {
    JobsError::Conflict(format!(
        "job is {status}; only pending or failed jobs start"
    ))
}

/// The refusal of a job retention expired at `at` (ms).
fn expired(at: i64) -> JobsError {
    JobsError::Expired(format!(
        "the input and results of this job were deleted at {} (--retention-days after it \
         ended); the job itself stays",
        rfc3339(at)
    ))
}
