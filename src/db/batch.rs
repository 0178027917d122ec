//! Batch job rows: creation, the start race (settled by a partial unique index), and
//! the job-level leases of the survey (which cuts the shards) and the assembly (which
//! joins their parts). The shards' own leases and checkpoints are in `db::shards`.

use super::{Db, DbError};
use crate::clock::now_ms;
use crate::wire::JobStatus;

/// A job as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: String,
    pub account_id: String,
    pub status: JobStatus,
    pub spec: String,
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
    /// How many shards the survey cut, set with `requests_total`.
    pub shards: Option<i64>,
    /// 1: save the fitted vectors as the classifier's next version on completion.
    pub save_adapted: i64,
    /// The version it saved.
    pub saved_version: Option<i64>,
}

/// Every [`JobRow`] column, for the queries that read whole jobs.
pub(super) const COLUMNS: &str = "id, account_id, status, spec, metadata, input_key, output_key, upload_expires_at, \
    input_bytes, requests_total, requests_completed, requests_failed, estimated_tokens, actual_tokens, error, \
    created_at, started_at, completed_at, classifier_name, classifier_version, adaptation, expired_at, webhook_url, shards, \
    save_adapted, saved_version";

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
    pub spec: &'a str,
    pub metadata: &'a str,
    pub input_key: &'a str,
    pub output_key: &'a str,
    pub upload_expires_at: i64,
    /// The saved classifier (name, version) the spec came from.
    pub classifier: Option<(&'a str, i64)>,
    /// Where the job's end is announced.
    pub webhook_url: Option<&'a str>,
    /// Save the fitted vectors as the classifier's next version on completion.
    pub save_adapted: bool,
}

/// How a start attempt ended.
#[derive(Debug, PartialEq)]
pub enum StartOutcome {
    Started,
    /// The job is not pending or failed; carries its status.
    WrongStatus(JobStatus),
    /// Another job of the account is processing.
    AnotherActive,
    /// Retention deleted its input at this time (ms).
    Expired(i64),
    NotFound,
}

/// A shard's progress, committed atomically with the results written so far.
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
    pub(super) fn of(row: Option<(JobStatus,)>) -> Self {
        match row {
            None => Lease::Lost,
            Some((JobStatus::Cancelling,)) => Lease::CancelAsked,
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
    AlreadyEnded(JobStatus),
    NotFound,
}

impl Db {
    /// Inserts a pending job.
    pub async fn create_job(&self, job: &NewJob<'_>) -> Result<JobRow, DbError> {
        sqlx::query(
            "INSERT INTO batch_jobs (id, account_id, status, spec, metadata, input_key, output_key, \
             upload_expires_at, created_at, classifier_name, classifier_version, webhook_url, save_adapted) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(job.id)
        .bind(job.account_id)
        .bind(JobStatus::Pending)
        .bind(job.spec)
        .bind(job.metadata)
        .bind(job.input_key)
        .bind(job.output_key)
        .bind(job.upload_expires_at)
        .bind(now_ms())
        .bind(job.classifier.map(|(name, _)| name))
        .bind(job.classifier.map(|(_, version)| version))
        .bind(job.webhook_url)
        .bind(i64::from(job.save_adapted))
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
             error = NULL, completed_at = NULL, shards = NULL, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $5 AND account_id = $6 AND status IN ($7, $8) AND expired_at IS NULL",
        )
        .bind(JobStatus::Processing)
        .bind(now_ms())
        .bind(input_bytes)
        .bind(estimated_tokens)
        .bind(id)
        .bind(account_id)
        .bind(JobStatus::Pending)
        .bind(JobStatus::Failed)
        .execute(self.pool())
        .await;
        match result {
            Ok(done) if done.rows_affected() == 1 => {
                // An earlier run's shards; the survey cuts new ones.
                sqlx::query("DELETE FROM batch_shards WHERE job_id = $1")
                    .bind(id)
                    .execute(self.pool())
                    .await?;
                Ok(StartOutcome::Started)
            }
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
        .bind(JobStatus::Processing)
        .bind(JobStatus::Cancelling)
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
        .bind(JobStatus::Cancelled)
        .bind(now)
        .bind(id)
        .bind(account_id)
        .bind(JobStatus::Pending)
        .execute(self.pool())
        .await?;
        if pending.rows_affected() == 0 {
            sqlx::query(
                "UPDATE batch_jobs SET status = $1 WHERE id = $2 AND account_id = $3 AND status = $4",
            )
            .bind(JobStatus::Cancelling)
            .bind(id)
            .bind(account_id)
            .bind(JobStatus::Processing)
            .execute(self.pool())
            .await?;
        }
        Ok(match self.job(account_id, id).await? {
            None => CancelOutcome::NotFound,
            Some(job)
                if job.status == JobStatus::Cancelling || job.status == JobStatus::Cancelled =>
            {
                CancelOutcome::Stopping(Box::new(job))
            }
            Some(job) => CancelOutcome::AlreadyEnded(job.status),
        })
    }

    /// Takes one active job with job-level work that nobody holds, for `owner`, for
    /// `lease_ms`: a survey (just started, or its worker's lease expired) or an assembly
    /// (no shard left to score: every one completed, or, when cancel was asked, every
    /// one that began). A cancelling job is taken too, so that it ends.
    pub async fn claim_job(&self, owner: &str, lease_ms: i64) -> Result<Option<Claimed>, DbError> {
        let now = now_ms();
        // A lease is only ever cleared by (re)starting or finishing a job, so a processing
        // job with one has been claimed before.
        let candidates: Vec<(String, Option<i64>)> = sqlx::query_as(&format!(
            "SELECT id, lease_expires_at FROM batch_jobs WHERE status IN ($1, $2) \
             AND (lease_expires_at IS NULL OR lease_expires_at < $3) AND {JOB_LEVEL_WORK} \
             ORDER BY started_at LIMIT 4"
        ))
        .bind(JobStatus::Processing)
        .bind(JobStatus::Cancelling)
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        for (id, lease) in candidates {
            let claimed = sqlx::query(
                "UPDATE batch_jobs SET lease_owner = $1, lease_expires_at = $2 \
                 WHERE id = $3 AND status IN ($4, $5) AND (lease_expires_at IS NULL OR lease_expires_at < $6)",
            )
            .bind(owner)
            .bind(now + lease_ms)
            .bind(&id)
            .bind(JobStatus::Processing)
            .bind(JobStatus::Cancelling)
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

    /// Extends the job-level lease `owner` still holds, for a worker that retries the
    /// survey or the assembly after a fault. `None` when the job ended or another
    /// worker took it meanwhile.
    pub async fn reclaim_job(
        &self,
        id: &str,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Option<JobRow>, DbError> {
        let renewed = sqlx::query(
            "UPDATE batch_jobs SET lease_expires_at = $1 \
             WHERE id = $2 AND lease_owner = $3 AND status IN ($4, $5)",
        )
        .bind(now_ms() + lease_ms)
        .bind(id)
        .bind(owner)
        .bind(JobStatus::Processing)
        .bind(JobStatus::Cancelling)
        .execute(self.pool())
        .await?;
        if renewed.rows_affected() == 0 {
            return Ok(None);
        }
        self.job_by_id(id).await
    }

    /// Jobs per status across every account, in one query, so that every instance
    /// sharing the database reports the same counts.
    pub async fn count_jobs_by_status(&self) -> Result<Vec<(JobStatus, i64)>, DbError> {
        let counts: Vec<(JobStatus, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM batch_jobs GROUP BY status")
                .fetch_all(self.pool())
                .await?;
        Ok(JobStatus::ALL
            .into_iter()
            .map(|status| {
                let count = counts.iter().find(|(stored, _)| *stored == status);
                (status, count.map_or(0, |(_, count)| *count))
            })
            .collect())
    }

    /// Extends the job-level lease (survey, assembly).
    pub async fn heartbeat(&self, id: &str, owner: &str, lease_ms: i64) -> Result<Lease, DbError> {
        let row: Option<(JobStatus,)> = sqlx::query_as(
            "UPDATE batch_jobs SET lease_expires_at = $1 \
             WHERE id = $2 AND lease_owner = $3 AND status IN ($4, $5) RETURNING status",
        )
        .bind(now_ms() + lease_ms)
        .bind(id)
        .bind(owner)
        .bind(JobStatus::Processing)
        .bind(JobStatus::Cancelling)
        .fetch_optional(self.pool())
        .await?;
        Ok(Lease::of(row))
    }

    /// Records what the survey found, before any line is scored: the number of
    /// requests, what adaptation did, the adapted label vectors (JSON) when it applied,
    /// and the shards (replacing an earlier run's). Clears the job-level lease (the
    /// assembly's claim is a first claim, not a resume), so that every worker, this one
    /// included, can take the shards. `false` when the lease was lost.
    pub async fn set_survey(
        &self,
        id: &str,
        owner: &str,
        survey: &Survey<'_>,
    ) -> Result<bool, DbError> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query(
            "UPDATE batch_jobs SET requests_total = $1, adaptation = $2, adapted_labels = $3, \
             shards = $4, lease_owner = NULL, lease_expires_at = NULL WHERE id = $5 AND lease_owner = $6",
        )
        .bind(survey.requests)
        .bind(survey.adaptation)
        .bind(survey.adapted_labels)
        .bind(survey.shards.len() as i64)
        .bind(id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM batch_shards WHERE job_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for (number, shard) in survey.shards.iter().enumerate() {
            sqlx::query(
                "INSERT INTO batch_shards (job_id, shard, start_offset, end_offset, start_line, \
                 cp_input_offset, cp_line) VALUES ($1, $2, $3, $4, $5, $3, $5)",
            )
            .bind(id)
            .bind(number as i64)
            .bind(shard.start_offset)
            .bind(shard.end_offset)
            .bind(shard.start_line)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
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

    /// Gives the job-level lease back: it expires now, so any instance's worker takes
    /// the survey or assembly over at its next poll. `false` when another worker held
    /// it already.
    pub async fn release_job(&self, id: &str, owner: &str) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE batch_jobs SET lease_expires_at = 0 WHERE id = $1 AND lease_owner = $2 AND status IN ($3, $4)",
        )
        .bind(id)
        .bind(owner)
        .bind(JobStatus::Processing)
        .bind(JobStatus::Cancelling)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends a job, releasing its lease: `completed`, or `failed` with `error`; a job
    /// asked to cancel ends `cancelled` whichever way its run ended. With an `owner`,
    /// only while it holds the job-level lease (`false` when it was lost); without, the
    /// job fails whoever holds what (a shard's worker met an error that ends the job),
    /// `false` when it had ended already.
    pub async fn finish_job(
        &self,
        id: &str,
        owner: Option<&str>,
        error: Option<&str>,
    ) -> Result<bool, DbError> {
        let (ran_to, tokens) = match error {
            None => (JobStatus::Completed, shard_sum("cp_tokens")),
            Some(_) => (JobStatus::Failed, "NULL".to_string()),
        };
        let finish =
            format!(
            "UPDATE batch_jobs SET status = CASE status WHEN $1 THEN $2 ELSE $3 END, error = $4, \
             completed_at = $5, actual_tokens = {tokens}, requests_completed = {completed}, \
             requests_failed = {failed}, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $6 AND status IN ($7, $1) {held}",
            completed = shard_sum("cp_completed"),
            failed = shard_sum("cp_failed"),
            held = if owner.is_some() { "AND lease_owner = $8" } else { "" },
        );
        let mut query = sqlx::query(&finish)
            .bind(JobStatus::Cancelling)
            .bind(JobStatus::Cancelled)
            .bind(ran_to)
            .bind(error)
            .bind(now_ms())
            .bind(id)
            .bind(JobStatus::Processing);
        if let Some(owner) = owner {
            query = query.bind(owner);
        }
        let done = query.execute(self.pool()).await?;
        Ok(done.rows_affected() == 1)
    }
}

/// Where the job-level work is: a survey not done yet, or no shard left to score (every
/// one completed; when cancel was asked, every one that began: a worker claimed it, and
/// only `finish_shard` clears its lease owner).
const JOB_LEVEL_WORK: &str = "(requests_total IS NULL OR NOT EXISTS (SELECT 1 FROM batch_shards s \
    WHERE s.job_id = batch_jobs.id AND s.completed_at IS NULL \
    AND (batch_jobs.status = 'processing' OR s.lease_owner IS NOT NULL)))";

/// The sum of a shard column over the job of the enclosing `batch_jobs` row.
pub(super) fn shard_sum(column: &str) -> String {
    format!(
        "(SELECT COALESCE(SUM(s.{column}), 0) FROM batch_shards s WHERE s.job_id = batch_jobs.id)"
    )
}

/// What a job's survey found.
pub struct Survey<'a> {
    /// Non-blank lines.
    pub requests: i64,
    /// What adaptation did (JSON `AdaptationReport`).
    pub adaptation: &'a str,
    /// The adapted label vectors (JSON), when adaptation applied.
    pub adapted_labels: Option<&'a str>,
    pub shards: Vec<NewShard>,
}

/// A byte range of the input, cut at a line boundary, and the number of the line
/// before it (line numbers stay global).
#[derive(Debug, Clone, PartialEq)]
pub struct NewShard {
    pub start_offset: i64,
    pub end_offset: i64,
    pub start_line: i64,
}

#[cfg(test)]
mod tests {
    use super::NewJob;
    use crate::db::Db;
    use crate::wire::JobStatus;

    /// A status word this version does not know fails the read; it never passes for
    /// `failed` or any other status.
    #[tokio::test]
    async fn an_unknown_stored_status_is_an_error_not_a_guess() {
        let dir = std::env::temp_dir().join(format!("zs-db-{}", uuid::Uuid::new_v4().simple()));
        let db = Db::connect(&format!("sqlite://{}/zeroshot.db", dir.display()))
            .await
            .expect("sqlite opens");
        let account = db.create_account("statuses").await.expect("account");
        let job = NewJob {
            id: "batch_statuses",
            account_id: &account.id,
            spec: "{}",
            metadata: "{}",
            input_key: "inputs/batch_statuses.ndjson",
            output_key: "results/batch_statuses.ndjson",
            upload_expires_at: 0,
            classifier: None,
            webhook_url: None,
            save_adapted: false,
        };
        let created = db.create_job(&job).await.expect("job");
        assert_eq!(created.status, JobStatus::Pending);
        sqlx::query("UPDATE batch_jobs SET status = 'paused'")
            .execute(db.pool())
            .await
            .expect("update");
        let err = db
            .job(&account.id, job.id)
            .await
            .expect_err("unknown status");
        assert!(
            err.to_string().contains("unknown value \"paused\""),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
