//! Usage counters: one row per account, UTC day and source, added to where the work
//! is done (a successful `/v1/classify` call, gathered in memory and written about
//! once a second; a batch checkpoint, in its transaction). The upsert adds in the
//! database, so instances sharing it never lose an update.

use std::collections::HashMap;
use std::sync::Mutex;

use sqlx::AnyConnection;

use super::{Db, DbError};
use crate::clock::Day;

/// Where tokens were spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Classify,
    Batch,
}

impl Source {
    /// As stored in `usage_daily.source`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Classify => "classify",
            Source::Batch => "batch",
        }
    }
}

/// One day's counters of one source, as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct UsageRow {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    /// [`Source::as_str`].
    pub source: String,
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
    .bind(Source::Batch.as_str())
    .bind(completed)
    .bind(tokens)
    .bind(job_id)
    .bind(shard)
    .bind(owner)
    .execute(conn)
    .await?;
    Ok(())
}

/// Classify usage counted in memory and written about once a second
/// ([`Db::write_classify_usage`]): one upsert per account and day instead of one per
/// call, which kept SQLite's single writer from capping `/v1/classify` throughput.
#[derive(Debug, Default)]
pub struct Pending {
    counts: Mutex<HashMap<(String, Day), Counts>>,
}

/// Requests, texts and tokens of one account on one day.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    requests: i64,
    texts: i64,
    tokens: i64,
}

impl Pending {
    fn add(&self, account_id: &str, day: Day, counts: Counts) {
        let mut pending = self.counts.lock().expect("usage lock");
        let entry = pending.entry((account_id.to_string(), day)).or_default();
        entry.requests += counts.requests;
        entry.texts += counts.texts;
        entry.tokens += counts.tokens;
    }

    fn tokens_since(&self, account_id: &str, from: Day) -> i64 {
        let pending = self.counts.lock().expect("usage lock");
        pending
            .iter()
            .filter(|((account, day), _)| account == account_id && *day >= from)
            .map(|(_, counts)| counts.tokens)
            .sum()
    }
}

impl Db {
    /// Counts one successful `/v1/classify` call of `texts` texts and `tokens` tokens,
    /// today; written with the next [`Db::write_classify_usage`].
    pub fn add_classify_usage(&self, account_id: &str, texts: i64, tokens: i64) {
        let counts = Counts {
            requests: 1,
            texts,
            tokens,
        };
        self.classify_usage.add(account_id, Day::today(), counts);
    }

    /// Writes the classify usage counted in memory, in one transaction; kept for the
    /// next call if that fails.
    pub async fn write_classify_usage(&self) -> Result<(), DbError> {
        let taken = std::mem::take(&mut *self.classify_usage.counts.lock().expect("usage lock"));
        if taken.is_empty() {
            return Ok(());
        }
        let written = async {
            let mut tx = self.pool().begin().await?;
            for ((account_id, day), counts) in &taken {
                sqlx::query(&format!(
                    "INSERT INTO usage_daily (account_id, day, source, requests, texts, tokens) \
                     VALUES ($1, $2, $3, $4, $5, $6) {ADD}"
                ))
                .bind(account_id)
                .bind(day.to_string())
                .bind(Source::Classify.as_str())
                .bind(counts.requests)
                .bind(counts.texts)
                .bind(counts.tokens)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        }
        .await;
        if let Err(err) = written {
            for ((account_id, day), counts) in taken {
                self.classify_usage.add(&account_id, day, counts);
            }
            return Err(err.into());
        }
        Ok(())
    }

    /// Writes the classify usage counted in memory every `period`, for ever (`serve`
    /// runs it; it writes once more when it stops).
    pub async fn write_classify_usage_every(self, period: std::time::Duration) {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            // Counts not written stay in memory for the next tick. The outage is logged
            // once, and ended by the loops that reach the database every second (a tick
            // with nothing to write proves nothing).
            if let Err(err) = self.write_classify_usage().await {
                crate::outage::fault(&err.into());
            }
        }
    }

    /// An account's counters from `from` to `to` (both included), by day then source,
    /// this process's classify usage written first.
    pub async fn usage(
        &self,
        account_id: &str,
        from: Day,
        to: Day,
    ) -> Result<Vec<UsageRow>, DbError> {
        self.write_classify_usage().await?;
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

    /// Tokens an account used (classify and batch) from `from` through today: as
    /// written, plus this process's classify usage not written yet.
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
        Ok(tokens + self.classify_usage.tokens_since(account_id, from))
    }
}
