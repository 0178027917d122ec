//! Shard rows: byte ranges of a job's input that any instance's worker scores under a
//! lease of its own, each with its own checkpoint. The job row sums their counters.

use std::collections::HashMap;

use sqlx::AnyConnection;

use super::batch::{shard_sum, Checkpoint, JobRow, Lease};
use super::{Db, DbError};
use crate::clock::now_ms;
use crate::wire::{JobStatus, Shards};

/// A shard as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ShardRow {
    pub job_id: String,
    pub shard: i64,
    pub start_offset: i64,
    pub end_offset: i64,
    pub start_line: i64,
    pub cp_input_offset: i64,
    pub cp_line: i64,
    pub cp_completed: i64,
    pub cp_failed: i64,
    pub cp_tokens: i64,
    pub cp_output_state: Option<String>,
    pub cp_errors_state: Option<String>,
    pub cp_errors_pending: Option<String>,
    pub completed_at: Option<i64>,
}

const SHARD_COLUMNS: &str = "job_id, shard, start_offset, end_offset, start_line, cp_input_offset, \
    cp_line, cp_completed, cp_failed, cp_tokens, cp_output_state, cp_errors_state, cp_errors_pending, \
    completed_at";

/// A shard a worker has just claimed, with its job.
#[derive(Debug)]
pub struct ClaimedShard {
    pub job: JobRow,
    pub shard: ShardRow,
    /// An earlier worker held it and its lease expired: it resumes from its checkpoint.
    pub resumed: bool,
}

/// The shards a worker may take: not completed, nobody's lease running, of a job that
/// is processing (or cancelling, for a shard that began: it ends what it wrote).
const CLAIMABLE: &str =
    "s.completed_at IS NULL AND (s.lease_expires_at IS NULL OR s.lease_expires_at < $1) \
    AND j.requests_total IS NOT NULL \
    AND (j.status = $2 OR (j.status = $3 AND s.lease_owner IS NOT NULL))";

/// Claims one claimable shard on `conn` (`lock` locks the rows read on PostgreSQL):
/// its job, number and the lease it had.
async fn take_shard(
    conn: &mut AnyConnection,
    owner: &str,
    lease_ms: i64,
    lock: &str,
) -> Result<Option<(String, i64, Option<i64>)>, DbError> {
    let now = now_ms();
    let candidates: Vec<(String, i64, Option<i64>)> = sqlx::query_as(&format!(
        "SELECT s.job_id, s.shard, s.lease_expires_at FROM batch_shards s \
         JOIN batch_jobs j ON j.id = s.job_id WHERE {CLAIMABLE} \
         ORDER BY j.started_at, s.shard LIMIT 4{lock}"
    ))
    .bind(now)
    .bind(JobStatus::Processing)
    .bind(JobStatus::Cancelling)
    .fetch_all(&mut *conn)
    .await?;
    for (job_id, shard, lease) in candidates {
        let claimed = sqlx::query(
            "UPDATE batch_shards SET lease_owner = $1, lease_expires_at = $2, \
             requests_completed = cp_completed, requests_failed = cp_failed \
             WHERE job_id = $3 AND shard = $4 AND completed_at IS NULL \
             AND (lease_expires_at IS NULL OR lease_expires_at < $5)",
        )
        .bind(owner)
        .bind(now + lease_ms)
        .bind(&job_id)
        .bind(shard)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        if claimed.rows_affected() == 1 {
            return Ok(Some((job_id, shard, lease)));
        }
    }
    Ok(None)
}

impl Db {
    /// Takes one shard nobody holds for `owner`, for `lease_ms`, oldest job first. On
    /// PostgreSQL concurrent claims skip each other's rows (`FOR UPDATE SKIP LOCKED`,
    /// in a transaction); on SQLite, which has one writer, no transaction: a deferred
    /// one that reads first could not upgrade to a write under a busy writer. Either
    /// way the update re-checks the lease, so two workers never hold one shard.
    pub async fn claim_shard(
        &self,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Option<ClaimedShard>, DbError> {
        let claimed = if self.is_postgres() {
            let mut tx = self.pool().begin().await?;
            let claimed =
                take_shard(&mut tx, owner, lease_ms, " FOR UPDATE OF s SKIP LOCKED").await?;
            tx.commit().await?;
            claimed
        } else {
            take_shard(&mut *self.pool().acquire().await?, owner, lease_ms, "").await?
        };
        let Some((job_id, shard, lease)) = claimed else {
            return Ok(None);
        };
        let (Some(job), Some(shard)) = (
            self.job_by_id(&job_id).await?,
            self.shard(&job_id, shard).await?,
        ) else {
            return Ok(None); // deleted meanwhile
        };
        Ok(Some(ClaimedShard {
            job,
            shard,
            resumed: lease.is_some(),
        }))
    }

    async fn shard(&self, job_id: &str, shard: i64) -> Result<Option<ShardRow>, DbError> {
        Ok(sqlx::query_as::<_, ShardRow>(&format!(
            "SELECT {SHARD_COLUMNS} FROM batch_shards WHERE job_id = $1 AND shard = $2"
        ))
        .bind(job_id)
        .bind(shard)
        .fetch_optional(self.pool())
        .await?)
    }

    /// A job's shards in input order.
    pub async fn shards(&self, job_id: &str) -> Result<Vec<ShardRow>, DbError> {
        Ok(sqlx::query_as::<_, ShardRow>(&format!(
            "SELECT {SHARD_COLUMNS} FROM batch_shards WHERE job_id = $1 ORDER BY shard"
        ))
        .bind(job_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// Extends the lease of a shard `owner` still holds and gives it back as of its
    /// last checkpoint (progress shown from there), with its job, for a worker that
    /// retries after a fault. `None` when the job ended or another worker took it.
    pub async fn reclaim_shard(
        &self,
        job_id: &str,
        shard: i64,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Option<(JobRow, ShardRow)>, DbError> {
        let renewed = sqlx::query(
            "UPDATE batch_shards SET lease_expires_at = $1, \
             requests_completed = cp_completed, requests_failed = cp_failed \
             WHERE job_id = $2 AND shard = $3 AND lease_owner = $4 AND completed_at IS NULL",
        )
        .bind(now_ms() + lease_ms)
        .bind(job_id)
        .bind(shard)
        .bind(owner)
        .execute(self.pool())
        .await?;
        if renewed.rows_affected() == 0 {
            return Ok(None);
        }
        let (Some(job), Some(shard)) = (
            self.job_by_id(job_id).await?,
            self.shard(job_id, shard).await?,
        ) else {
            return Ok(None);
        };
        let active = [JobStatus::Processing, JobStatus::Cancelling].contains(&job.status);
        Ok(active.then_some((job, shard)))
    }

    /// Extends a shard's lease and shows its progress in the job's counters. The lease
    /// is lost when another worker holds the shard or the job ended (failed
    /// elsewhere); cancel asked shows as [`Lease::CancelAsked`].
    pub async fn shard_heartbeat(
        &self,
        job_id: &str,
        shard: i64,
        owner: &str,
        lease_ms: i64,
        completed: i64,
        failed: i64,
    ) -> Result<Lease, DbError> {
        let mut tx = self.pool().begin().await?;
        let renewed = sqlx::query(
            "UPDATE batch_shards SET lease_expires_at = $1, requests_completed = $2, requests_failed = $3 \
             WHERE job_id = $4 AND shard = $5 AND lease_owner = $6 AND completed_at IS NULL",
        )
        .bind(now_ms() + lease_ms)
        .bind(completed)
        .bind(failed)
        .bind(job_id)
        .bind(shard)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        if renewed.rows_affected() == 0 {
            return Ok(Lease::Lost);
        }
        let lease = self.show_progress(&mut tx, job_id).await?;
        tx.commit().await?;
        Ok(lease)
    }

    /// Sums the shards' display counters into the job's, and says whether the job is
    /// still running (a shard's lease stands only while it is).
    async fn show_progress(
        &self,
        conn: &mut sqlx::AnyConnection,
        job_id: &str,
    ) -> Result<Lease, DbError> {
        let row: Option<(JobStatus,)> = sqlx::query_as(&format!(
            "UPDATE batch_jobs SET requests_completed = {completed}, requests_failed = {failed} \
             WHERE id = $1 AND status IN ($2, $3) RETURNING status",
            completed = shard_sum("requests_completed"),
            failed = shard_sum("requests_failed"),
        ))
        .bind(job_id)
        .bind(JobStatus::Processing)
        .bind(JobStatus::Cancelling)
        .fetch_optional(conn)
        .await?;
        Ok(Lease::of(row))
    }

    /// Commits a shard's checkpoint (and extends its lease) with the usage it adds.
    pub async fn checkpoint(
        &self,
        job_id: &str,
        shard: i64,
        owner: &str,
        lease_ms: i64,
        cp: &Checkpoint,
    ) -> Result<Lease, DbError> {
        let mut tx = self.pool().begin().await?;
        super::usage::add_checkpoint_usage(&mut tx, job_id, shard, owner, cp.completed, cp.tokens)
            .await?;
        let saved = sqlx::query(
            "UPDATE batch_shards SET cp_input_offset = $1, cp_line = $2, cp_completed = $3, cp_failed = $4, \
             cp_tokens = $5, cp_output_state = $6, cp_errors_state = $7, cp_errors_pending = $8, \
             requests_completed = $3, requests_failed = $4, lease_expires_at = $9 \
             WHERE job_id = $10 AND shard = $11 AND lease_owner = $12 AND completed_at IS NULL",
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
        .bind(job_id)
        .bind(shard)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        if saved.rows_affected() == 0 {
            return Ok(Lease::Lost); // the usage is rolled back with it
        }
        let lease = self.show_progress(&mut tx, job_id).await?;
        if lease != Lease::Lost {
            tx.commit().await?;
        }
        Ok(lease)
    }

    /// Marks a shard done (its last checkpoint covers it all, its parts are whole) and
    /// releases it. `false` when the lease was lost.
    pub async fn finish_shard(
        &self,
        job_id: &str,
        shard: i64,
        owner: &str,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE batch_shards SET completed_at = $1, lease_owner = NULL, lease_expires_at = NULL \
             WHERE job_id = $2 AND shard = $3 AND lease_owner = $4 AND completed_at IS NULL",
        )
        .bind(now_ms())
        .bind(job_id)
        .bind(shard)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a shard back as of its last checkpoint, for any worker to resume at once.
    pub async fn release_shard(
        &self,
        job_id: &str,
        shard: i64,
        owner: &str,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE batch_shards SET lease_expires_at = 0 \
             WHERE job_id = $1 AND shard = $2 AND lease_owner = $3 AND completed_at IS NULL",
        )
        .bind(job_id)
        .bind(shard)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Shard counts of each of `job_ids` that has shards, in one query.
    pub async fn shard_counts(&self, job_ids: &[&str]) -> Result<HashMap<String, Shards>, DbError> {
        if job_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let placeholders: Vec<String> = (2..job_ids.len() + 2).map(|n| format!("${n}")).collect();
        let query = format!(
            "SELECT job_id, COUNT(*), \
             SUM(CASE WHEN completed_at IS NULL AND lease_expires_at >= $1 THEN 1 ELSE 0 END), \
             SUM(CASE WHEN completed_at IS NOT NULL THEN 1 ELSE 0 END) \
             FROM batch_shards WHERE job_id IN ({}) GROUP BY job_id",
            placeholders.join(", ")
        );
        let mut rows = sqlx::query_as::<_, (String, i64, i64, i64)>(&query).bind(now_ms());
        for id in job_ids {
            rows = rows.bind(*id);
        }
        Ok(rows
            .fetch_all(self.pool())
            .await?
            .into_iter()
            .map(|(id, total, processing, completed)| {
                let counts = Shards {
                    total,
                    pending: total - processing - completed,
                    processing,
                    completed,
                };
                (id, counts)
            })
            .collect())
    }
}
