//! Per-account limits, checked before work starts: requests per second on
//! `/v1/classify` (a token bucket in this process) and a monthly token quota (month to
//! date from the usage counters, shared by every instance). Over either: 429 with
//! `Retry-After` and an error `type` that says which.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{ApiError, AppState};
use crate::db::Account;

/// The routes whose POST can answer 429 (and whose description says so).
pub(super) const ROUTES: [&str; 2] = ["/v1/classify", "/v1/batch/{id}/start"];
/// Buckets kept before full ones (idle accounts) are dropped.
const MAX_BUCKETS: usize = 10_000;
/// A bucket untouched for this long is full (it refills at least its burst a second),
/// so dropping it changes nothing.
const FULL_AFTER: Duration = Duration::from_secs(1);

/// One token bucket per account: `rps` tokens a second, holding at most `max(1, rps)`,
/// one per request. Per instance: N instances behind a balancer admit up to N x rps.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// Takes a request from the account's bucket at `now`; when it is empty, the
    /// seconds until it holds one again (rounded up, at least 1).
    fn take(&self, account_id: &str, rps: i64, now: Instant) -> Result<(), u64> {
        let rate = rps.max(1) as f64;
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(account_id) {
            buckets.retain(|_, bucket| now.saturating_duration_since(bucket.at) < FULL_AFTER);
        }
        let bucket = buckets.entry(account_id.to_string()).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        // A lowered limit applies at once: the bucket never holds more than it allows.
        bucket.tokens = (bucket.tokens + bucket.refill(now, rate)).min(rate);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        Err((((1.0 - bucket.tokens) / rate).ceil() as u64).max(1))
    }
}

impl Bucket {
    /// Tokens earned since the bucket was last touched.
    fn refill(&self, now: Instant, rate: f64) -> f64 {
        now.saturating_duration_since(self.at).as_secs_f64() * rate
    }
}

/// Whether the account may call `/v1/classify` now: within its requests per second,
/// and with tokens left this month.
pub async fn admit_classify(state: &AppState, account: &Account) -> Result<(), ApiError> {
    if let Some(rps) = account.limits.rps_limit {
        state
            .rate_limiter
            .take(&account.id, rps, Instant::now())
            .map_err(|wait| ApiError::rate_limited(rps, wait))?;
    }
    if let Some(quota) = account.limits.monthly_token_quota {
        let used = month_to_date(state, account).await?;
        if used >= quota {
            return Err(ApiError::quota_exceeded(
                format!("this account's monthly quota of {quota} tokens is used up ({used} used this month, UTC)"),
                crate::usage::seconds_to_next_month(),
            ));
        }
    }
    Ok(())
}

/// Tokens the account used since the start of this UTC month: as written, plus this
/// process's classify usage not written yet.
pub(super) async fn month_to_date(state: &AppState, account: &Account) -> Result<i64, ApiError> {
    Ok(crate::usage::month_to_date(&state.db, &state.usage, &account.id).await?)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::RateLimiter;

    #[test]
    fn a_bucket_allows_its_burst_then_one_per_interval() {
        let limiter = RateLimiter::default();
        let start = Instant::now();
        assert_eq!(limiter.take("a", 2, start), Ok(()));
        assert_eq!(limiter.take("a", 2, start), Ok(()));
        assert_eq!(limiter.take("a", 2, start), Err(1));
        // Other accounts have their own bucket.
        assert_eq!(limiter.take("b", 2, start), Ok(()));
        // Half a second refills one request at 2 per second.
        let later = start + Duration::from_millis(500);
        assert_eq!(limiter.take("a", 2, later), Ok(()));
        assert_eq!(limiter.take("a", 2, later), Err(1));
        // An idle bucket holds no more than its burst.
        let idle = later + Duration::from_secs(60);
        for _ in 0..2 {
            assert_eq!(limiter.take("a", 2, idle), Ok(()));
        }
        assert_eq!(limiter.take("a", 2, idle), Err(1));
    }

    #[test]
    fn a_lowered_limit_applies_at_once() {
        let limiter = RateLimiter::default();
        let start = Instant::now();
        for _ in 0..10 {
            assert_eq!(limiter.take("a", 10, start), Ok(()));
        }
        assert_eq!(limiter.take("a", 10, start), Err(1));
        let later = start + Duration::from_secs(5);
        assert_eq!(limiter.take("a", 1, later), Ok(()));
        assert_eq!(limiter.take("a", 1, later), Err(1));
    }
}
