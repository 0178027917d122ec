//! Idempotency keys: one row per (account, key) holding the request's hash and, once
//! the request succeeded, its answer. The primary key settles races: of several
//! identical requests only one inserts the row and runs.

use sqlx::Row;

use super::{Db, DbError};
use crate::clock::now_ms;

/// A key's first answer is replayed for this long.
pub const KEY_TTL_MS: i64 = 24 * 3600 * 1000;
/// A reservation without an answer for this long belongs to a request that died
/// (a crashed instance); a retry takes it over.
pub const ABANDONED_AFTER_MS: i64 = 60 * 1000;

/// What a request carrying a key should do.
#[derive(Debug, PartialEq, Eq)]
pub enum Reservation {
    /// The key is new (or expired): run the request, then `complete` or `release` it.
    Reserved,
    /// The same request succeeded before: answer this again.
    Replay { status: u16, body: String },
    /// The same request is running now under this key.
    InFlight,
    /// The key was used for a different request.
    Mismatch,
}

impl Db {
    /// Reserves `key` for a request whose method, path and body hash to `request_hash`.
    pub async fn reserve_idempotency_key(
        &self,
        account_id: &str,
        key: &str,
        request_hash: &str,
    ) -> Result<Reservation, DbError> {
        let now = now_ms();
        // Expired keys, and reservations whose request died, are free again.
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE account_id = $1 AND idempotency_key = $2 \
             AND (created_at < $3 OR (response IS NULL AND created_at < $4))",
        )
        .bind(account_id)
        .bind(key)
        .bind(now - KEY_TTL_MS)
        .bind(now - ABANDONED_AFTER_MS)
        .execute(self.pool())
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (account_id, idempotency_key, request_hash, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(account_id)
        .bind(key)
        .bind(request_hash)
        .bind(now)
        .execute(self.pool())
        .await;
        match inserted {
            Ok(_) => return Ok(Reservation::Reserved),
            Err(sqlx::Error::Database(err)) if err.is_unique_violation() => {}
            Err(err) => return Err(err.into()),
        }
        let row = sqlx::query(
            "SELECT request_hash, status, response FROM idempotency_keys \
             WHERE account_id = $1 AND idempotency_key = $2",
        )
        .bind(account_id)
        .bind(key)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            // Released between our insert and this read: the caller asks again.
            return Ok(Reservation::InFlight);
        };
        if row.try_get::<String, _>("request_hash")? != request_hash {
            return Ok(Reservation::Mismatch);
        }
        let status: Option<i64> = row.try_get("status")?;
        let body: Option<String> = row.try_get("response")?;
        Ok(match (status, body) {
            (Some(status), Some(body)) => Reservation::Replay {
                status: u16::try_from(status).unwrap_or(500),
                body,
            },
            _ => Reservation::InFlight,
        })
    }

    /// Stores the answer of the request that reserved `key`.
    pub async fn complete_idempotency_key(
        &self,
        account_id: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE idempotency_keys SET status = $1, response = $2 \
             WHERE account_id = $3 AND idempotency_key = $4",
        )
        .bind(i64::from(status))
        .bind(body)
        .bind(account_id)
        .bind(key)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forgets a reservation whose request did not succeed, so the key can be retried
    /// (with a corrected request, too).
    pub async fn release_idempotency_key(
        &self,
        account_id: &str,
        key: &str,
    ) -> Result<(), DbError> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE account_id = $1 AND idempotency_key = $2 \
             AND response IS NULL",
        )
        .bind(account_id)
        .bind(key)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
