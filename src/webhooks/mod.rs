//! Webhooks: a batch job's end (`batch.completed`, `batch.failed`, `batch.cancelled`)
//! posted to the job's `webhook_url`, signed the Standard Webhooks way
//! (<https://www.standardwebhooks.com/>) with the account's secret. The
//! [`dispatcher`] enqueues and delivers events on its own task, apart from scoring;
//! [`address`] keeps deliveries away from private networks.

pub mod address;
pub mod dispatcher;
mod view;

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::db::webhooks::SecretRow;
use crate::db::{Db, DbError};
use crate::wire::JobStatus;

pub use dispatcher::Dispatcher;

/// Prefix of a signing secret as shown; the rest is the key's base64.
const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a signing secret (the HMAC key).
const SECRET_BYTES: usize = 32;
/// Events are retried for this long after the job ended, and jobs that ended longer
/// ago than this are never announced; a rotated secret keeps signing this long.
pub const WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Delays before the 1st, 2nd, ... retry, in units of the retry base (5 s by default:
/// 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, then every 4 h).
const BACKOFF: [u32; 8] = [1, 6, 24, 120, 360, 720, 1440, 2880];

/// How this instance delivers webhooks (`serve` flags).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `--allow-private-webhooks`: loopback, private and link-local receivers allowed.
    pub allow_private: bool,
    /// `--webhook-retry-base-secs`: the first retry's delay; later ones are multiples.
    pub retry_base: Duration,
}

/// The event a job in this status announces; `None` while it has not ended.
pub fn event_type(job_status: JobStatus) -> Option<&'static str> {
    match job_status {
        JobStatus::Completed => Some("batch.completed"),
        JobStatus::Failed => Some("batch.failed"),
        JobStatus::Cancelled => Some("batch.cancelled"),
        _ => None,
    }
}

/// A new random signing secret, `whsec_` + base64 of 32 bytes.
fn new_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The account's signing secret, made now if it has none.
pub async fn secret(db: &Db, account_id: &str) -> Result<SecretRow, DbError> {
    if let Some(secret) = db.webhook_secret(account_id).await? {
        return Ok(secret);
    }
    db.ensure_webhook_secret(account_id, &new_secret()).await?;
    db.webhook_secret(account_id)
        .await?
        .ok_or_else(|| DbError::NotFound(format!("account {account_id:?}")))
}

/// Replaces the account's signing secret (or makes its first); the previous one
/// keeps signing for [`WINDOW`].
pub async fn rotate_secret(db: &Db, account_id: &str) -> Result<SecretRow, DbError> {
    db.rotate_webhook_secret(account_id, &new_secret(), WINDOW.as_millis() as i64)
        .await
}

/// The `webhook-signature` header: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
/// under each secret, space-separated. A secret that is not `whsec_<base64>` signs
/// nothing.
pub fn signature(secrets: &[&str], id: &str, timestamp: i64, body: &str) -> String {
    let signed = format!("{id}.{timestamp}.{body}");
    secrets
        .iter()
        .filter_map(|secret| {
            let key = base64::engine::general_purpose::STANDARD
                .decode(secret.strip_prefix(SECRET_PREFIX)?)
                .ok()?;
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
            mac.update(signed.as_bytes());
            Some(format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
            ))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The delay before the next attempt, after `failures` failed ones (at least 1).
pub fn retry_delay(base: Duration, failures: i64) -> Duration {
    let step = (failures.max(1) as usize - 1).min(BACKOFF.len() - 1);
    base * BACKOFF[step]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The Standard Webhooks specification's own test vector.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn two_secrets_sign_twice_and_bad_ones_not_at_all() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        let both = signature(&[&a, &b], "msg_1", 1, "{}");
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], signature(&[&a], "msg_1", 1, "{}"));
        assert_eq!(parts[1], signature(&[&b], "msg_1", 1, "{}"));
        assert_eq!(signature(&["nope"], "msg_1", 1, "{}"), "");
    }

    #[test]
    fn backoff_grows_then_stays_at_its_cap() {
        let base = Duration::from_secs(5);
        let delays: Vec<u64> = (1..=10).map(|n| retry_delay(base, n).as_secs()).collect();
        assert_eq!(
            delays,
            [5, 30, 120, 600, 1800, 3600, 7200, 14400, 14400, 14400]
        );
    }

    #[test]
    fn only_endings_are_events() {
        assert_eq!(event_type(JobStatus::Completed), Some("batch.completed"));
        assert_eq!(event_type(JobStatus::Failed), Some("batch.failed"));
        assert_eq!(event_type(JobStatus::Cancelled), Some("batch.cancelled"));
        assert_eq!(event_type(JobStatus::Processing), None);
        assert_eq!(event_type(JobStatus::Cancelling), None);
    }
}
