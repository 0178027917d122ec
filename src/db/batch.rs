//! Batch job rows: creation, the start race (settled by a partial unique index),
//! leases for workers, checkpoints.

use super::{now_ms, Db, DbError};

/// Job states as stored and as the API shows them.
pub mod status {
    pub const PENDING: &str = "pending";
    pub const PROCESSING: &str = "processing";
    pub const COMPLETED: &str = "completed";
    pub const FAILED: &str = "failed";
    /// Cancel was asked while processing; the worker holding it stops at its next chunk.
    pub const CANCELLING: &str = "cancelling";
    pub const CANCELLED: &str = "cancelled";
    /// Every status, for reports that list each one (zero included).
    pub const ALL: &[&str] = &[
        PENDING, PROCESSING, CANCELLING, COMPLETED, FAILED, CANCELLED,
    ];
    /// States a job does not leave by itself; `completed_at` says when it got there.
    pub const ENDED: &[&str] = &[COMPLETED, FAILED, CANCELLED];
}

/// A job as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: String,
    pub account_id: String,
    pub status: String,
    pub config: String,
    pub metadata: String,
    pub input_key: String,
    pub output_key: String,
    pub upload_expires_at: i64,
    pub input_bytes: Option<i64>,
    pub requests_total: Option<i64>,
    pub requests_completed: i64,
    pub requests_failed: i64,
    pub estimated_tokens: Option<i64>,
    pub actual_tokens: Option<i64>,
    pub error: Option<String>,
    pub cp_input_offset: i64,
    pub cp_line: i64,
    pub cp_completed: i64,
    pub cp_failed: i64,
    pub cp_tokens: i64,
    pub cp_output_state: Option<String>,
    pub cp_errors_state: Option<String>,
    pub cp_errors_pending: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub classifier_name: Option<String>,
    pub classifier_version: Option<i64>,
    /// What adaptation did (JSON `AdaptationReport`), set with `requests_total`.
    pub adaptation: Option<String>,
    /// When retention deleted its input and results; the row stays.
    pub expired_at: Option<i64>,
    /// Told when the job ends (`crate::webhooks`).
    pub webhook_url: Option<String>,
}

/// Every [`JobRow`] column, for the queries that read whole jobs.
pub(super) const COLUMNS: &str = "id, account_id, status, config, metadata, input_key, output_key, upload_expires_at, \
    input_bytes, requests_total, requests_completed, requests_failed, estimated_tokens, actual_tokens, error, \
    cp_input_offset, cp_line, cp_completed, cp_failed, cp_tokens, cp_output_state, cp_errors_state, cp_errors_pending, created_at, started_at, completed_at, \
    classifier_name, classifier_version, adaptation, expired_at, webhook_url";

/// A job a worker has just claimed.
#[derive(Debug)]
pub struct Claimed {
    pub job: JobRow,
    /// An earlier worker held it and its lease expired: the job resumes (from its
    /// checkpoint) rather than starting.
    pub resumed: bool,
}

/// What a new job needs.
pub struct NewJob<'a> {
    pub id: &'a str,
    pub account_id: &'a str,
    pub config: &'a str,
    pub metadata: &'a str,
    pub input_key: &'a str,
    pub output_key: &'a str,
    pub upload_expires_at: i64,
    /// The saved classifier (name, version) the config came from.
    pub classifier: Option<(&'a str, i64)>,
    /// Where the job's end is announced.
    pub webhook_url: Option<&'a str>,
}

/// How a start attempt ended.
#[derive(Debug, PartialEq)]
pub enum StartOutcome {
    Started,
    /// The job is not pending or failed; carries its status.
    WrongStatus(String),
    /// Another job of the account is processing.
    AnotherActive,
    /// Retention deleted its input at this time (ms).
    Expired(i64),
    NotFound,
}

/// Progress committed atomically with the results written so far.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub input_offset: i64,
    pub line: i64,
    pub completed: i64,
    pub failed: i64,
    pub tokens: i64,
    /// The results object's upload state (JSON `OutputState`).
    pub output_state: String,
    /// The errors object's upload state (JSON `OutputState`).
    pub errors_state: String,
    /// Error rows not yet written to the errors object (below the storage's part size).
    pub errors_pending: String,
}

/// Whether a worker still holds a job, as each lease renewal finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    Held,
    /// Still held, and cancel was asked: stop at the end of this chunk.
    CancelAsked,
    /// Another worker holds the job now (this one's lease expired).
    Lost,
}

impl Lease {
    fn of(row: Option<(String,)>) -> Self {
        match row {
            None => Lease::Lost,
            Some((state,)) if state == status::CANCELLING => Lease::CancelAsked,
            Some(_) => Lease::Held,
        }
    }
}

/// How a cancel request ended.
#[derive(Debug)]
pub enum CancelOutcome {
    /// The job is cancelled, or cancelling until its worker's next chunk.
    Stopping(Box<JobRow>),
    /// It had already ended this way (completed or failed) and stays so.
    AlreadyEnded(String),
    NotFound,
}

impl Db {
    /// Inserts a pending job.
    pub async fn create_job(&self, job: &NewJob<'_>) -> Result<JobRow, DbError> {
        sqlx::query(
            "INSERT INTO batch_jobs (id, account_id, status, config, metadata, input_key, output_key, \
             upload_expires_at, created_at, classifier_name, classifier_version, webhook_url) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(job.id)
        .bind(job.account_id)
        .bind(status::PENDING)
        .bind(job.config)
        .bind(job.metadata)
        .bind(job.input_key)
        .bind(job.output_key)
        .bind(job.upload_expires_at)
        .bind(now_ms())
        .bind(job.classifier.map(|(name, _)| name))
        .bind(job.classifier.map(|(_, version)| version))
        .bind(job.webhook_url)
        .execute(self.pool())
        .await?;
        self.job(job.account_id, job.id)
            .await?
            .ok_or_else(|| DbError::NotFound(job.id.to_string()))
    }

    /// A job of this account (another account's job does not exist for the caller).
    pub async fn job(&self, account_id: &str, id: &str) -> Result<Option<JobRow>, DbError> {
        Ok(sqlx::query_as::<_, JobRow>(&format!(
            "SELECT {COLUMNS} FROM batch_jobs WHERE id = $1 AND account_id = $2"
        ))
        .bind(id)
        .bind(account_id)
        .fetch_optional(self.pool())
        .await?)
    }

    /// A job by id alone, for the worker.
    pub async fn job_by_id(&self, id: &str) -> Result<Option<JobRow>, DbError> {
        Ok(
            sqlx::query_as::<_, JobRow>(&format!("SELECT {COLUMNS} FROM batch_jobs WHERE id = $1"))
                .bind(id)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// The account's jobs, newest first, after the cursor `(created_at, id)` if given.
    pub async fn list_jobs(
        &self,
        account_id: &str,
        before: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<JobRow>, DbError> {
        let (created, id) = before.unwrap_or((i64::MAX, ""));
        Ok(sqlx::query_as::<_, JobRow>(&format!(
            "SELECT {COLUMNS} FROM batch_jobs WHERE account_id = $1 \
             AND (created_at < $2 OR (created_at = $2 AND id < $3) OR $3 = '') \
             ORDER BY created_at DESC, id DESC LIMIT $4"
        ))
        .bind(account_id)
        .bind(created)
        .bind(id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }

    /// Moves a pending or failed job to processing, from scratch. The partial unique
    /// index refuses a second processing job of the same account, whichever instance asks;
    /// an expired job (its input deleted) does not start.
    pub async fn start_job(
        &self,
        account_id: &str,
        id: &str,
        input_bytes: i64,
        estimated_tokens: i64,
    ) -> Result<StartOutcome, DbError> {
        let result = sqlx::query(
            "UPDATE batch_jobs SET status = $1, started_at = $2, input_bytes = $3, estimated_tokens = $4, \
             requests_total = NULL, adaptation = NULL, adapted_labels = NULL, requests_completed = 0, requests_failed = 0, actual_tokens = NULL, \
             error = NULL, completed_at = NULL, cp_input_offset = 0, cp_line = 0, cp_completed = 0, \
             cp_failed = 0, cp_tokens = 0, cp_output_state = NULL, cp_errors_state = NULL, cp_errors_pending = NULL, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $5 AND account_id = $6 AND status IN ($7, $8) AND expired_at IS NULL",
        )
        .bind(status::PROCESSING)
        .bind(now_ms())
        .bind(input_bytes)
        .bind(estimated_tokens)
        .bind(id)
        .bind(account_id)
        .bind(status::PENDING)
        .bind(status::FAILED)
        .execute(self.pool())
        .await;
        match result {
            Ok(done) if done.rows_affected() == 1 => Ok(StartOutcome::Started),
            Ok(_) => Ok(match self.job(account_id, id).await? {
                Some(JobRow {
                    expired_at: Some(at),
                    ..
                }) => StartOutcome::Expired(at),
                Some(job) => StartOutcome::WrongStatus(job.status),
                None => StartOutcome::NotFound,
            }),
            Err(sqlx::Error::Database(err)) if err.is_unique_violation() => {
                Ok(StartOutcome::AnotherActive)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Deletes a job that is not active (processing or cancelling); `Ok(false)` when it is.
    pub async fn delete_job(&self, account_id: &str, id: &str) -> Result<bool, DbError> {
        let done = sqlx::query(
            "DELETE FROM batch_jobs WHERE id = $1 AND account_id = $2 AND status NOT IN ($3, $4)",
        )
        .bind(id)
        .bind(account_id)
        .bind(status::PROCESSING)
        .bind(status::CANCELLING)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Asks a job to stop: a pending one is cancelled at once, a processing one becomes
    /// cancelling (its worker ends it at its next chunk). Asking again changes nothing.
    pub async fn cancel_job(&self, account_id: &str, id: &str) -> Result<CancelOutcome, DbError> {
        let now = now_ms();
        let pending = sqlx::query(
            "UPDATE batch_jobs SET status = $1, completed_at = $2 WHERE id = $3 AND account_id = $4 AND status = $5",
        )
        .bind(status::CANCELLED)
        .bind(now)
        .bind(id)
        .bind(account_id)
        .bind(status::PENDING)
        .execute(self.pool())
        .await?;
        if pending.rows_affected() == 0 {
            sqlx::query(
                "UPDATE batch_jobs SET status = $1 WHERE id = $2 AND account_id = $3 AND status = $4",
            )
            .bind(status::CANCELLING)
            .bind(id)
            .bind(account_id)
            .bind(status::PROCESSING)
            .execute(self.pool())
            .await?;
        }
        Ok(match self.job(account_id, id).await? {
            None => CancelOutcome::NotFound,
            Some(job) if job.status == status::CANCELLING || job.status == status::CANCELLED => {
                CancelOutcome::Stopping(Box::new(job))
            }
            Some(job) => CancelOutcome::AlreadyEnded(job.status),
        })
    }

    /// Takes one active job nobody holds (just started, or its worker's lease expired)
    /// for `owner`, for `lease_ms`. A cancelling one is taken too, so that it ends.
    pub async fn claim_job(&self, owner: &str, lease_ms: i64) -> Result<Option<Claimed>, DbError> {
        let now = now_ms();
        // A lease is only ever cleared by (re)starting or finishing a job, so a processing
        // job with one has been claimed before.
        let candidates: Vec<(String, Option<i64>)> = sqlx::query_as(
            "SELECT id, lease_expires_at FROM batch_jobs WHERE status IN ($1, $2) \
             AND (lease_expires_at IS NULL OR lease_expires_at < $3) ORDER BY started_at LIMIT 4",
        )
        .bind(status::PROCESSING)
        .bind(status::CANCELLING)
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        for (id, lease) in candidates {
            let claimed = sqlx::query(
                "UPDATE batch_jobs SET lease_owner = $1, lease_expires_at = $2, \
                 requests_completed = cp_completed, requests_failed = cp_failed \
                 WHERE id = $3 AND status IN ($4, $5) AND (lease_expires_at IS NULL OR lease_expires_at < $6)",
            )
            .bind(owner)
            .bind(now + lease_ms)
            .bind(&id)
            .bind(status::PROCESSING)
            .bind(status::CANCELLING)
            .bind(now)
            .execute(self.pool())
            .await?;
            if claimed.rows_affected() == 1 {
                return Ok(self.job_by_id(&id).await?.map(|job| Claimed {
                    job,
                    resumed: lease.is_some(),
                }));
            }
        }
        Ok(None)
    }

    /// Extends the lease of a job `owner` still holds, and gives it back as of its last
    /// checkpoint (progress shown from there), for a worker that retries after a fault.
    /// `None` when the job ended or another worker took it meanwhile.
    pub async fn reclaim_job(
        &self,
        id: &str,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Option<JobRow>, DbError> {
        let renewed = sqlx::query(
            "UPDATE batch_jobs SET lease_expires_at = $1, \
             requests_completed = cp_completed, requests_failed = cp_failed \
             WHERE id = $2 AND lease_owner = $3 AND status IN ($4, $5)",
        )
        .bind(now_ms() + lease_ms)
        .bind(id)
        .bind(owner)
        .bind(status::PROCESSING)
        .bind(status::CANCELLING)
        .execute(self.pool())
        .await?;
        if renewed.rows_affected() == 0 {
            return Ok(None);
        }
        self.job_by_id(id).await
    }

    /// Jobs per status across every account, in one query, so that every instance
    /// sharing the database reports the same counts.
    pub async fn count_jobs_by_status(&self) -> Result<Vec<(String, i64)>, DbError> {
        Ok(
            sqlx::query_as("SELECT status, COUNT(*) FROM batch_jobs GROUP BY status")
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// Extends the lease and shows progress.
    pub async fn heartbeat(
        &self,
        id: &str,
        owner: &str,
        lease_ms: i64,
        completed: i64,
        failed: i64,
    ) -> Result<Lease, DbError> {
        let row: Option<(String,)> = sqlx::query_as(
            "UPDATE batch_jobs SET lease_expires_at = $1, requests_completed = $2, requests_failed = $3 \
             WHERE id = $4 AND lease_owner = $5 AND status IN ($6, $7) RETURNING status",
        )
        .bind(now_ms() + lease_ms)
        .bind(completed)
        .bind(failed)
        .bind(id)
        .bind(owner)
        .bind(status::PROCESSING)
        .bind(status::CANCELLING)
        .fetch_optional(self.pool())
        .await?;
        Ok(Lease::of(row))
    }

    /// Records what the worker's first pass found, before any line is scored: the
    /// number of requests, what adaptation did and the adapted label vectors (JSON)
    /// when it applied. `false` when the lease was lost.
    pub async fn set_survey(
        &self,
        id: &str,
        owner: &str,
        total: i64,
        adaptation: &str,
        adapted_labels: Option<&str>,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE batch_jobs SET requests_total = $1, adaptation = $2, adapted_labels = $3 \
             WHERE id = $4 AND lease_owner = $5",
        )
        .bind(total)
        .bind(adaptation)
        .bind(adapted_labels)
        .bind(id)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A job's adapted label vectors (JSON), kept out of [`JobRow`] because they are
    /// large (a dim x dim matrix) and only the worker needs them.
    pub async fn adapted_labels(&self, id: &str) -> Result<Option<String>, DbError> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT adapted_labels FROM batch_jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.and_then(|(labels,)| labels))
    }

    /// Commits a checkpoint (and extends the lease) with the usage it adds.
    pub async fn checkpoint(
        &self,
        id: &str,
        owner: &str,
        lease_ms: i64,
        cp: &Checkpoint,
    ) -> Result<Lease, DbError> {
        let mut tx = self.pool().begin().await?;
        super::usage::add_checkpoint_usage(&mut tx, id, owner, cp.completed, cp.tokens).await?;
        let row: Option<(String,)> = sqlx::query_as(
            "UPDATE batch_jobs SET cp_input_offset = $1, cp_line = $2, cp_completed = $3, cp_failed = $4, \
             cp_tokens = $5, cp_output_state = $6, cp_errors_state = $7, cp_errors_pending = $8, \
             requests_completed = $3, requests_failed = $4, lease_expires_at = $9 \
             WHERE id = $10 AND lease_owner = $11 AND status IN ($12, $13) RETURNING status",
        )
        .bind(cp.input_offset)
        .bind(cp.line)
        .bind(cp.completed)
        .bind(cp.failed)
        .bind(cp.tokens)
        .bind(&cp.output_state)
        .bind(&cp.errors_state)
        .bind(&cp.errors_pending)
        .bind(now_ms() + lease_ms)
        .bind(id)
        .bind(owner)
        .bind(status::PROCESSING)
        .bind(status::CANCELLING)
        .fetch_optional(&mut *tx)
        .await?;
        let lease = Lease::of(row);
        if lease != Lease::Lost {
            tx.commit().await?; // else the usage is rolled back with it
        }
        Ok(lease)
    }

    /// Gives a job back as of its last checkpoint: its lease expires now, so any
    /// instance's worker takes it over (as a resume) at its next poll. `false` when
    /// another worker held it already.
    pub async fn release_job(&self, id: &str, owner: &str) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE batch_jobs SET lease_expires_at = 0 WHERE id = $1 AND lease_owner = $2 AND status IN ($3, $4)",
        )
        .bind(id)
        .bind(owner)
        .bind(status::PROCESSING)
        .bind(status::CANCELLING)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends a job, releasing its lease: `completed`, or `failed` with `error`; a job
    /// asked to cancel ends `cancelled` whichever way its run ended. `false` when the
    /// lease was lost.
    pub async fn finish_job(
        &self,
        id: &str,
        owner: &str,
        error: Option<&str>,
    ) -> Result<bool, DbError> {
        let (ran_to, tokens) = match error {
            None => (status::COMPLETED, "cp_tokens"),
            Some(_) => (status::FAILED, "NULL"),
        };
        let done = sqlx::query(&format!(
            "UPDATE batch_jobs SET status = CASE status WHEN $1 THEN $2 ELSE $3 END, error = $4, \
             completed_at = $5, actual_tokens = {tokens}, requests_completed = cp_completed, \
             requests_failed = cp_failed, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $6 AND lease_owner = $7 AND status IN ($8, $1)"
        ))
        .bind(status::CANCELLING)
        .bind(status::CANCELLED)
        .bind(ran_to)
        .bind(error)
        .bind(now_ms())
        .bind(id)
        .bind(owner)
        .bind(status::PROCESSING)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
