//! Usage counters: one row per account, UTC day and source, added to where the work
//! is done (successful `/v1/classify` calls, gathered in memory by `crate::usage` and
//! written about once a second; a batch checkpoint, in its transaction). The upsert adds in the
//! database, so instances sharing it never lose an update.

use std::collections::HashMap;

use sqlx::AnyConnection;

use super::{Db, DbError};
use crate::clock::Day;
use crate::wire::from_word;

/// Where tokens were spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Classify,
    Batch,
}

impl Source {
    /// Every source.
    pub const ALL: [Source; 2] = [Source::Classify, Source::Batch];

    /// As stored in `usage_daily.source`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Classify => "classify",
            Source::Batch => "batch",
        }
    }
}

from_word!(Source);

/// One day's counters of one source, as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct UsageRow {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub source: Source,
    /// `/v1/classify` calls; 0 for batch.
    pub requests: i64,
    pub texts: i64,
    pub tokens: i64,
}

/// Adds to one day's counters of an account: `VALUES` and `ON CONFLICT` together, so
/// the statements below only choose where the numbers come from.
const ADD: &str = "ON CONFLICT (account_id, day, source) DO UPDATE SET \
    requests = usage_daily.requests + excluded.requests, \
    texts = usage_daily.texts + excluded.texts, \
    tokens = usage_daily.tokens + excluded.tokens";

/// Counts what a shard's checkpoint adds over its stored one (completed lines and
/// tokens), on the day it commits. Run inside the checkpoint's transaction, before its
/// update: lines scored again after a resume were never checkpointed, so they are
/// counted once. Reads the stored values in the same statement that writes, so SQLite
/// takes its write lock at once (a read first could not upgrade under a busy writer).
/// The caller's update decides the rest (lease, status): if it changes nothing, the
/// transaction is rolled back with this.
pub(super) async fn add_checkpoint_usage(
    conn: &mut AnyConnection,
    job_id: &str,
    shard: i64,
    owner: &str,
    completed: i64,
    tokens: i64,
) -> Result<(), DbError> {
    // SQLite needs the WHERE to tell this SELECT's end from ON CONFLICT's start.
    sqlx::query(&format!(
        "INSERT INTO usage_daily (account_id, day, source, requests, texts, tokens) \
         SELECT j.account_id, $1, $2, 0, $3 - s.cp_completed, $4 - s.cp_tokens \
         FROM batch_shards s JOIN batch_jobs j ON j.id = s.job_id \
         WHERE s.job_id = $5 AND s.shard = $6 AND s.lease_owner = $7 \
         AND (s.cp_completed <> $3 OR s.cp_tokens <> $4) {ADD}"
    ))
    .bind(Day::today().to_string())
    .bind(Source::Batch)
    .bind(completed)
    .bind(tokens)
    .bind(job_id)
    .bind(shard)
    .bind(owner)
    .execute(conn)
    .await?;
    Ok(())
}

/// Requests, texts and tokens of one account on one day.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub requests: i64,
    pub texts: i64,
    pub tokens: i64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, more: Counts) {
        self.requests += more.requests;
        self.texts += more.texts;
        self.tokens += more.tokens;
    }
}

impl Db {
    /// Adds `/v1/classify` counts (per account and day) in one transaction.
    pub async fn add_classify_usage(
        &self,
        counts: &HashMap<(String, Day), Counts>,
    ) -> Result<(), DbError> {
        let mut tx = self.pool().begin().await?;
        for ((account_id, day), counts) in counts {
            sqlx::query(&format!(
                "INSERT INTO usage_daily (account_id, day, source, requests, texts, tokens) \
                 VALUES ($1, $2, $3, $4, $5, $6) {ADD}"
            ))
            .bind(account_id)
            .bind(day.to_string())
            .bind(Source::Classify)
            .bind(counts.requests)
            .bind(counts.texts)
            .bind(counts.tokens)
            .execute(&mut *tx)
            .await?;
        }
        Ok(tx.commit().await?)
    }

    /// An account's counters from `from` to `to` (both included), by day then source,
    /// as written.
    pub async fn usage(
        &self,
        account_id: &str,
        from: Day,
        to: Day,
    ) -> Result<Vec<UsageRow>, DbError> {
        Ok(sqlx::query_as::<_, UsageRow>(
            "SELECT day, source, requests, texts, tokens FROM usage_daily \
             WHERE account_id = $1 AND day >= $2 AND day <= $3 ORDER BY day, source",
        )
        .bind(account_id)
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all(self.pool())
        .await?)
    }

    /// Tokens an account used (classify and batch) from `from` through today, as
    /// written.
    pub async fn tokens_since(&self, account_id: &str, from: Day) -> Result<i64, DbError> {
        // Postgres sums BIGINTs as NUMERIC, which the `Any` driver does not read.
        let (tokens,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(tokens), 0) AS BIGINT) FROM usage_daily \
             WHERE account_id = $1 AND day >= $2",
        )
        .bind(account_id)
        .bind(from.to_string())
        .fetch_one(self.pool())
        .await?;
        Ok(tokens)
    }
}
