//! Webhook rows: each account's signing secret, and one delivery per job ending,
//! enqueued once however many instances race for it and claimed under a lease for
//! each attempt.

use super::batch::{JobRow, COLUMNS};
use super::{Db, DbError};
use crate::clock::now_ms;
use crate::wire::{DeliveryStatus, JobStatus};

/// An account's signing secret, and the previous one while it still signs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SecretRow {
    pub secret: String,
    pub created_at: i64,
    pub previous_secret: Option<String>,
    pub previous_expires_at: Option<i64>,
}

impl SecretRow {
    /// The secrets a message sent at `now` is signed with: the current one, and the
    /// previous one until it expires.
    pub fn signing_secrets(&self, now: i64) -> Vec<&str> {
        let previous = self
            .previous_secret
            .as_deref()
            .filter(|_| self.previous_expires_at.is_some_and(|at| at > now));
        std::iter::once(self.secret.as_str())
            .chain(previous)
            .collect()
    }
}

/// One event for one receiver, with where its delivery stands.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: String,
    pub account_id: String,
    pub job_id: String,
    /// The job's `completed_at` for the ending this announces.
    pub ended_at: i64,
    pub event_type: String,
    pub url: String,
    /// The request body, built when the event was enqueued.
    pub payload: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

const DELIVERY_COLUMNS: &str = "id, account_id, job_id, ended_at, event_type, url, payload, \
    status, attempts, next_attempt_at, last_status, last_error, created_at, delivered_at";

/// An event to enqueue.
pub struct NewDelivery<'a> {
    pub id: &'a str,
    pub account_id: &'a str,
    pub job_id: &'a str,
    pub ended_at: i64,
    pub event_type: &'a str,
    pub url: &'a str,
    pub payload: &'a str,
}

/// How an attempt ended, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// The receiver answered 2xx with this status.
    Delivered { status: i64 },
    /// Try again at `next_attempt_at`.
    Retry {
        status: Option<i64>,
        error: String,
        next_attempt_at: i64,
    },
    /// Stop trying.
    Failed { status: Option<i64>, error: String },
}

impl Db {
    /// The account's signing secret, if it has one.
    pub async fn webhook_secret(&self, account_id: &str) -> Result<Option<SecretRow>, DbError> {
        Ok(sqlx::query_as::<_, SecretRow>(
            "SELECT secret, created_at, previous_secret, previous_expires_at \
             FROM webhook_secrets WHERE account_id = $1",
        )
        .bind(account_id)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Stores `secret` as the account's signing secret unless it has one already.
    pub async fn ensure_webhook_secret(
        &self,
        account_id: &str,
        secret: &str,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO webhook_secrets (account_id, secret, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (account_id) DO NOTHING",
        )
        .bind(account_id)
        .bind(secret)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Makes `secret` the account's signing secret; the one it replaces keeps signing
    /// for `overlap_ms` (a rotation drops any older one).
    pub async fn rotate_webhook_secret(
        &self,
        account_id: &str,
        secret: &str,
        overlap_ms: i64,
    ) -> Result<SecretRow, DbError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO webhook_secrets (account_id, secret, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (account_id) DO UPDATE SET previous_secret = webhook_secrets.secret, \
             previous_expires_at = $4, secret = excluded.secret, created_at = excluded.created_at",
        )
        .bind(account_id)
        .bind(secret)
        .bind(now)
        .bind(now + overlap_ms)
        .execute(self.pool())
        .await?;
        self.webhook_secret(account_id)
            .await?
            .ok_or_else(|| DbError::NotFound(format!("account {account_id:?}")))
    }

    /// Jobs with a webhook URL that ended at or after `since` and whose ending has no
    /// delivery yet, oldest ending first.
    pub async fn unannounced_endings(
        &self,
        since: i64,
        limit: i64,
    ) -> Result<Vec<JobRow>, DbError> {
        let ended: Vec<String> = (0..JobStatus::ENDED.len())
            .map(|i| format!("${}", i + 3))
            .collect();
        let sql = format!(
            "SELECT {COLUMNS} FROM batch_jobs WHERE webhook_url IS NOT NULL AND completed_at >= $1 \
             AND status IN ({}) AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d \
             WHERE d.job_id = batch_jobs.id AND d.ended_at = batch_jobs.completed_at) \
             ORDER BY completed_at LIMIT $2",
            ended.join(", ")
        );
        let query = sqlx::query_as::<_, JobRow>(&sql).bind(since).bind(limit);
        Ok(JobStatus::ENDED
            .iter()
            .fold(query, |query, state| query.bind(*state))
            .fetch_all(self.pool())
            .await?)
    }

    /// Enqueues an event, due now; `false` when its ending was enqueued already
    /// (by another instance).
    pub async fn enqueue_delivery(&self, delivery: &NewDelivery<'_>) -> Result<bool, DbError> {
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO webhook_deliveries (id, account_id, job_id, ended_at, event_type, url, \
             payload, status, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
             ON CONFLICT (job_id, ended_at) DO NOTHING",
        )
        .bind(delivery.id)
        .bind(delivery.account_id)
        .bind(delivery.job_id)
        .bind(delivery.ended_at)
        .bind(delivery.event_type)
        .bind(delivery.url)
        .bind(delivery.payload)
        .bind(DeliveryStatus::Pending)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Takes up to `limit` due deliveries nobody is attempting, for `owner`, for
    /// `lease_ms`. A row changed since it was read (another instance attempted it) is
    /// left alone, so no attempt is made twice.
    pub async fn claim_deliveries(
        &self,
        owner: &str,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, DbError> {
        let now = now_ms();
        let due: Vec<DeliveryRow> = sqlx::query_as(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE status = $1 \
             AND next_attempt_at <= $2 AND (lease_expires_at IS NULL OR lease_expires_at < $2) \
             ORDER BY next_attempt_at LIMIT $3"
        ))
        .bind(DeliveryStatus::Pending)
        .bind(now)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut claimed = Vec::with_capacity(due.len());
        for delivery in due {
            let done = sqlx::query(
                "UPDATE webhook_deliveries SET lease_owner = $1, lease_expires_at = $2 \
                 WHERE id = $3 AND status = $4 AND attempts = $5 \
                 AND (lease_expires_at IS NULL OR lease_expires_at < $6)",
            )
            .bind(owner)
            .bind(now + lease_ms)
            .bind(&delivery.id)
            .bind(DeliveryStatus::Pending)
            .bind(delivery.attempts)
            .bind(now)
            .execute(self.pool())
            .await?;
            if done.rows_affected() == 1 {
                claimed.push(delivery);
            }
        }
        Ok(claimed)
    }

    /// Records an attempt made under `owner`'s lease and releases it; `false` when
    /// the lease was lost (the attempt took longer than the lease).
    pub async fn record_attempt(
        &self,
        id: &str,
        owner: &str,
        attempt: &Attempt,
    ) -> Result<bool, DbError> {
        let now = now_ms();
        let (state, status, error, next, delivered) = match attempt {
            Attempt::Delivered { status } => (
                DeliveryStatus::Delivered,
                Some(*status),
                None,
                now,
                Some(now),
            ),
            Attempt::Retry {
                status,
                error,
                next_attempt_at,
            } => (
                DeliveryStatus::Pending,
                *status,
                Some(error.as_str()),
                *next_attempt_at,
                None,
            ),
            Attempt::Failed { status, error } => (
                DeliveryStatus::Failed,
                *status,
                Some(error.as_str()),
                now,
                None,
            ),
        };
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, last_status = $2, \
             last_error = $3, next_attempt_at = $4, delivered_at = $5, lease_owner = NULL, \
             lease_expires_at = NULL WHERE id = $6 AND lease_owner = $7",
        )
        .bind(state)
        .bind(status)
        .bind(error)
        .bind(next)
        .bind(delivered)
        .bind(id)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A job's deliveries (one per ending), newest ending first.
    pub async fn job_deliveries(
        &self,
        account_id: &str,
        job_id: &str,
    ) -> Result<Vec<DeliveryRow>, DbError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE account_id = $1 AND job_id = $2 \
             ORDER BY ended_at DESC"
        ))
        .bind(account_id)
        .bind(job_id)
        .fetch_all(self.pool())
        .await?)
    }
}
