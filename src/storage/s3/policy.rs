//! The presigned POST policy of uploads, signed here by hand (SigV4): the SDK only
//! presigns single requests, and a browser-style form needs a signed policy.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};
use base64::Engine as _;

use super::S3Config;
use crate::storage::{StorageError, UploadForm};

/// The signing algorithm of presigned POST policies (SigV4).
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// A presigned POST form, made at `now`, for exactly `key` in the bucket of `config`,
/// 1 to `max_bytes` bytes, valid for `ttl`.
pub(super) fn post_form(
    config: &S3Config,
    key: &str,
    max_bytes: u64,
    ttl: Duration,
    now: SystemTime,
) -> Result<UploadForm, StorageError> {
    let now_secs = unix_secs(now)?;
    let expires_secs = unix_secs(expiry(now, ttl)?)?;
    let expiration = format_date_time(expires_secs)?;
    let amz_date = format_date_time(now_secs)?.replace(['-', ':'], "");
    let date = &amz_date[..8];
    let credential = format!(
        "{}/{date}/{}/s3/aws4_request",
        config.access_key_id, config.region
    );
    let policy = serde_json::json!({
        "expiration": expiration,
        "conditions": [
            {"bucket": config.bucket},
            {"key": key},
            ["content-length-range", 1, max_bytes],
            {"x-amz-algorithm": ALGORITHM},
            {"x-amz-credential": credential},
            {"x-amz-date": amz_date},
        ],
    });
    let policy = base64::engine::general_purpose::STANDARD.encode(policy.to_string());
    let signature = sign(config, now, &policy);
    let fields = [
        ("key", key.to_string()),
        ("policy", policy),
        ("x-amz-algorithm", ALGORITHM.to_string()),
        ("x-amz-credential", credential),
        ("x-amz-date", amz_date.clone()),
        ("x-amz-signature", signature),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value))
    .collect();
    Ok(UploadForm {
        url: format!("{}/{}", config.endpoint, config.bucket),
        fields,
        expires_at: expires_secs.saturating_mul(1000),
    })
}

/// When a form made at `now` for `ttl` expires: rounded up to whole seconds, so the
/// form is valid for at least `ttl` and `expires_at` is exactly the instant the
/// server checks.
fn expiry(now: SystemTime, ttl: Duration) -> Result<SystemTime, StorageError> {
    now.checked_add(ttl)
        .and_then(|expires| expires.checked_add(Duration::from_nanos(999_999_999)))
        .ok_or_else(|| StorageError::Backend(format!("upload ttl {ttl:?} out of range")))
}

/// The SigV4 signature of the base64 `policy`, with the signing key derived from the
/// day of `now`, matching x-amz-date.
fn sign(config: &S3Config, now: SystemTime, policy: &str) -> String {
    let signing_key = aws_sigv4::sign::v4::generate_signing_key(
        &config.secret_access_key,
        now,
        &config.region,
        "s3",
    );
    aws_sigv4::sign::v4::calculate_signature(signing_key, policy.as_bytes())
}

/// Whole unix seconds of `time`, rounded down.
fn unix_secs(time: SystemTime) -> Result<i64, StorageError> {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| StorageError::Backend("system clock is before 1970".to_string()))?
        .as_secs();
    i64::try_from(secs).map_err(|_| StorageError::Backend("system clock out of range".to_string()))
}

/// `yyyy-mm-ddThh:mm:ssZ` (UTC) for unix seconds.
fn format_date_time(secs: i64) -> Result<String, StorageError> {
    DateTime::from_secs(secs)
        .fmt(DateTimeFormat::DateTime)
        .map_err(|err| StorageError::Backend(format!("formatting time {secs}: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_policy_dates() {
        assert_eq!(format_date_time(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_date_time(1_700_000_000).unwrap(),
            "2023-11-14T22:13:20Z"
        );
    }
}
