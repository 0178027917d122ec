//! Retention: which jobs are past it, and the claim that lets exactly one instance
//! delete a job's objects and mark it expired.

use super::{Db, DbError};
use crate::clock::now_ms;
use crate::wire::JobStatus;

/// A job whose input and results are due for deletion.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Expirable {
    pub id: String,
    pub input_key: String,
}

/// The condition "past retention, not expired yet" with its placeholders numbered
/// from `$first`: the cutoff (ms), pending, then the ended states. A job is past
/// retention once it ended before the cutoff, or when it is still pending (never
/// started: uploaded and left, or never uploaded) and was created before it.
fn past_retention(first: usize) -> String {
    let ended = (0..JobStatus::ENDED.len())
        .map(|i| format!("${}", first + 2 + i))
        .collect::<Vec<_>>()
        .join(", ");
    let (cutoff, pending) = (first, first + 1);
    format!(
        "expired_at IS NULL AND ((status IN ({ended}) AND completed_at < ${cutoff}) \
         OR (status = ${pending} AND created_at < ${cutoff}))"
    )
}

/// How many placeholders [`past_retention`] uses.
const PAST_RETENTION_BINDS: usize = 2 + JobStatus::ENDED.len();

/// Binds [`past_retention`]'s values, in its order.
fn bind_past_retention<'q, O>(
    mut query: sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>>,
    cutoff: i64,
) -> sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>> {
    query = query.bind(cutoff).bind(JobStatus::Pending);
    for ended in JobStatus::ENDED {
        query = query.bind(ended);
    }
    query
}

impl Db {
    /// Up to `limit` jobs past retention at `cutoff` (ms), oldest first.
    pub async fn expirable_jobs(&self, cutoff: i64, limit: i64) -> Result<Vec<Expirable>, DbError> {
        let sql = format!(
            "SELECT id, input_key FROM batch_jobs WHERE {} \
             ORDER BY created_at LIMIT ${}",
            past_retention(1),
            PAST_RETENTION_BINDS + 1
        );
        let query = bind_past_retention(sqlx::query_as::<_, Expirable>(&sql), cutoff);
        Ok(query.bind(limit).fetch_all(self.pool()).await?)
    }

    /// Marks a job expired if it is still past retention at `cutoff` and nobody marked
    /// it yet; `true` when this call did, so that its caller alone deletes the objects.
    /// A marked job no longer starts ([`Db::start_job`] checks `expired_at`).
    pub async fn mark_expired(&self, id: &str, cutoff: i64) -> Result<bool, DbError> {
        let sql = format!(
            "UPDATE batch_jobs SET expired_at = $1 WHERE id = $2 AND {} RETURNING id",
            past_retention(3)
        );
        let query = sqlx::query_as::<_, (String,)>(&sql).bind(now_ms()).bind(id);
        let marked = bind_past_retention(query, cutoff)
            .fetch_optional(self.pool())
            .await?;
        Ok(marked.is_some())
    }

    /// Takes back a mark whose deletions failed, so that a later sweep tries again.
    pub async fn unmark_expired(&self, id: &str) -> Result<(), DbError> {
        sqlx::query("UPDATE batch_jobs SET expired_at = NULL WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
