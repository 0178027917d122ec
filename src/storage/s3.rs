//! Object storage on S3 or any S3-compatible server (MinIO, SeaweedFS, R2, ...).
//!
//! Uploads go straight from the client to the bucket with a presigned POST policy
//! (signed here by hand: the SDK only presigns single requests), downloads with a
//! presigned GET, and results are written as a multipart upload whose parts the job
//! checkpoints record, so a restarted worker re-uploads only the part it lost.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};
use aws_sdk_s3::types::{
    BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
};
use aws_sdk_s3::Client;
use base64::Engine as _;

use super::{ByteStream, OutputState, StorageError, UploadForm, UploadedPart};

/// Smallest part S3 accepts in a multipart upload, but for the last one.
pub const MIN_PART_BYTES: usize = 5 * 1024 * 1024;

/// The signing algorithm of presigned POST policies (SigV4).
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Where the bucket lives and the static credentials to reach it with.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Base URL of the S3 API, e.g. `https://s3.eu-west-1.amazonaws.com` or
    /// `http://127.0.0.1:8333`; buckets are addressed path style under it.
    pub endpoint: String,
    /// Signing region (`us-east-1` for most S3-compatible servers).
    pub region: String,
    /// Bucket holding every object of this service; created when missing.
    pub bucket: String,
    /// Access key id, also embedded in presigned POST credentials.
    pub access_key_id: String,
    /// Secret key that signs requests, POST policies and download URLs.
    pub secret_access_key: String,
}

/// A bucket on an S3-compatible server, reached with static credentials.
pub struct S3Store {
    client: Client,
    config: S3Config,
}

impl std::fmt::Debug for S3Store {
    // By hand so the secret key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("endpoint", &self.config.endpoint)
            .field("region", &self.config.region)
            .field("bucket", &self.config.bucket)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// The endpoint URL (upload forms post to it, path-style).
    pub fn endpoint(&self) -> &str {
        &self.config.endpoint
    }

    /// Builds the client and makes sure the bucket exists, so a fresh server works
    /// and a wrong endpoint or credential fails at startup rather than on first use.
    pub async fn connect(mut config: S3Config) -> Result<S3Store, StorageError> {
        config.endpoint = config.endpoint.trim_end_matches('/').to_string();
        let credentials = Credentials::new(
            config.access_key_id.clone(),
            config.secret_access_key.clone(),
            None,
            None,
            "zeroshot-static",
        );
        let sdk_config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .credentials_provider(credentials)
            .region(Region::new(config.region.clone()))
            .endpoint_url(&config.endpoint)
            .force_path_style(true)
            // Checksums only where S3 requires them: several S3-compatible servers
            // reject or mishandle the newer default trailing checksums.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        let store = S3Store {
            client: Client::from_conf(sdk_config),
            config,
        };
        store.ensure_bucket().await?;
        Ok(store)
    }

    async fn ensure_bucket(&self) -> Result<(), StorageError> {
        let bucket = &self.config.bucket;
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => return Ok(()),
            Err(err) if http_status(&err) == Some(404) => {}
            Err(err) => return Err(backend("HeadBucket", bucket, &err)),
        }
        let mut create = self.client.create_bucket().bucket(bucket);
        if self.config.region != "us-east-1" {
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(
                        self.config.region.as_str(),
                    ))
                    .build(),
            );
        }
        match create.send().await {
            Ok(_) => Ok(()),
            // Another instance created it in between.
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_bucket_already_owned_by_you()) =>
            {
                Ok(())
            }
            Err(err) => Err(backend("CreateBucket", bucket, &err)),
        }
    }

    /// A presigned POST form for exactly `key`, 1 to `max_bytes` bytes, valid for
    /// `ttl`: the client uploads straight to the bucket and can write nothing else.
    pub fn presign_upload(
        &self,
        key: &str,
        max_bytes: u64,
        ttl: Duration,
    ) -> Result<UploadForm, StorageError> {
        let now = SystemTime::now();
        let now_secs = unix_secs(now)?;
        // Rounded up to whole seconds, so the form is valid for at least `ttl` and
        // `expires_at` is exactly the instant the server checks.
        let expires = now
            .checked_add(ttl)
            .and_then(|expires| expires.checked_add(Duration::from_nanos(999_999_999)))
            .ok_or_else(|| StorageError::Backend(format!("upload ttl {ttl:?} out of range")))?;
        let expires_secs = unix_secs(expires)?;
        let expiration = format_date_time(expires_secs)?;
        let amz_date = format_date_time(now_secs)?.replace(['-', ':'], "");
        let date = &amz_date[..8];
        let credential = format!(
            "{}/{date}/{}/s3/aws4_request",
            self.config.access_key_id, self.config.region
        );
        let policy = serde_json::json!({
            "expiration": expiration,
            "conditions": [
                {"bucket": self.config.bucket},
                {"key": key},
                ["content-length-range", 1, max_bytes],
                {"x-amz-algorithm": ALGORITHM},
                {"x-amz-credential": credential},
                {"x-amz-date": amz_date},
            ],
        });
        let policy = base64::engine::general_purpose::STANDARD.encode(policy.to_string());
        // The signing key is derived from the day of `now`, matching x-amz-date.
        let signing_key = aws_sigv4::sign::v4::generate_signing_key(
            &self.config.secret_access_key,
            now,
            &self.config.region,
            "s3",
        );
        let signature = aws_sigv4::sign::v4::calculate_signature(signing_key, policy.as_bytes());
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
            url: format!("{}/{}", self.config.endpoint, self.config.bucket),
            fields,
            expires_at: expires_secs.saturating_mul(1000),
        })
    }

    /// Size of `key` from HeadObject, or `None` when it does not exist.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        match self
            .client
            .head_object()
            .bucket(&self.config.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(head) => Ok(Some(
                u64::try_from(head.content_length().unwrap_or(0)).unwrap_or(0),
            )),
            Err(err) if http_status(&err) == Some(404) => Ok(None),
            Err(err) => Err(backend("HeadObject", key, &err)),
        }
    }

    /// Streams `key` from byte `offset` with a ranged GET; the body is read as the
    /// caller consumes it, never buffered whole. At or past the end: an empty stream.
    pub async fn read_from(&self, key: &str, offset: u64) -> Result<ByteStream, StorageError> {
        let mut request = self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(key);
        // No range from 0: a range on an empty object is unsatisfiable (416).
        if offset > 0 {
            request = request.range(format!("bytes={offset}-"));
        }
        match request.send().await {
            Ok(object) => Ok(Box::pin(object.body.into_async_read())),
            Err(err) if http_status(&err) == Some(404) => {
                Err(StorageError::NotFound(key.to_string()))
            }
            // S3 answers 416 for a range starting at or past the end of the object.
            Err(err) if http_status(&err) == Some(416) => match self.size(key).await? {
                Some(size) if offset >= size => Ok(Box::pin(tokio::io::empty())),
                Some(_) => Err(backend("GetObject", key, &err)),
                None => Err(StorageError::NotFound(key.to_string())),
            },
            Err(err) => Err(backend("GetObject", key, &err)),
        }
    }

    /// Starts a multipart upload for a results object.
    pub async fn start_output(&self, key: &str) -> Result<OutputState, StorageError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.config.bucket)
            .key(key)
            .send()
            .await
            .map_err(|err| backend("CreateMultipartUpload", key, &err))?;
        let upload_id = created.upload_id().ok_or_else(|| {
            StorageError::Backend(format!(
                "CreateMultipartUpload for {key:?} returned no upload id"
            ))
        })?;
        Ok(OutputState::S3 {
            upload_id: upload_id.to_string(),
            parts: Vec::new(),
        })
    }

    /// Uploads `bytes` as the part after those in `state`. From an older state this
    /// re-uploads the same part number, which replaces it: that is how resume works.
    pub async fn append_output(
        &self,
        key: &str,
        state: &mut OutputState,
        bytes: Vec<u8>,
    ) -> Result<(), StorageError> {
        let OutputState::S3 { upload_id, parts } = state else {
            return Err(StorageError::Backend("not an S3 output".to_string()));
        };
        let number = i32::try_from(parts.len() + 1)
            .map_err(|_| StorageError::Backend(format!("too many parts for {key:?}")))?;
        let uploaded = self
            .client
            .upload_part()
            .bucket(&self.config.bucket)
            .key(key)
            .upload_id(upload_id.as_str())
            .part_number(number)
            .body(bytes.into())
            .send()
            .await
            .map_err(|err| backend("UploadPart", key, &err))?;
        let etag = uploaded.e_tag().ok_or_else(|| {
            StorageError::Backend(format!("UploadPart {number} of {key:?} returned no ETag"))
        })?;
        parts.push(UploadedPart {
            number,
            etag: etag.to_string(),
        });
        Ok(())
    }

    /// Completes the multipart upload with exactly the parts in `state` (later parts
    /// from a crashed attempt are dropped). With no parts, stores an empty object.
    /// Finishing again after a crash that hid the first success is fine.
    pub async fn finish_output(&self, key: &str, state: &OutputState) -> Result<(), StorageError> {
        let OutputState::S3 { upload_id, parts } = state else {
            return Err(StorageError::Backend("not an S3 output".to_string()));
        };
        if parts.is_empty() {
            // S3 cannot complete an upload without parts: drop it, put an empty object.
            self.abort_upload(key, upload_id).await?;
            self.client
                .put_object()
                .bucket(&self.config.bucket)
                .key(key)
                .body(Vec::new().into())
                .send()
                .await
                .map_err(|err| backend("PutObject", key, &err))?;
            return Ok(());
        }
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .iter()
                    .map(|part| {
                        CompletedPart::builder()
                            .part_number(part.number)
                            .e_tag(&part.etag)
                            .build()
                    })
                    .collect(),
            ))
            .build();
        match self
            .client
            .complete_multipart_upload()
            .bucket(&self.config.bucket)
            .key(key)
            .upload_id(upload_id.as_str())
            .multipart_upload(completed)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Already completed by an attempt that crashed before its checkpoint.
            Err(err) if err.code() == Some("NoSuchUpload") && self.size(key).await?.is_some() => {
                Ok(())
            }
            Err(err) => Err(backend("CompleteMultipartUpload", key, &err)),
        }
    }

    /// A presigned GET URL for `key`, valid for `ttl` (at most 7 days, S3's limit).
    pub async fn presign_download(&self, key: &str, ttl: Duration) -> Result<String, StorageError> {
        let presigning = PresigningConfig::expires_in(ttl)
            .map_err(|err| StorageError::Backend(format!("presigning {key:?}: {err}")))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(key)
            .presigned(presigning)
            .await
            .map_err(|err| backend("presign GetObject", key, &err))?;
        Ok(request.uri().to_string())
    }

    /// Deletes `key` and aborts unfinished multipart uploads of it, whose parts would
    /// otherwise be stored (and billed) forever; a missing object is fine.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let mut key_marker: Option<String> = None;
        let mut upload_id_marker: Option<String> = None;
        loop {
            let listed = self
                .client
                .list_multipart_uploads()
                .bucket(&self.config.bucket)
                .prefix(key)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(upload_id_marker.take())
                .send()
                .await
                .map_err(|err| backend("ListMultipartUploads", key, &err))?;
            for upload in listed.uploads() {
                // The prefix also matches longer keys: only this exact key's uploads.
                if let (Some(upload_key), Some(upload_id)) = (upload.key(), upload.upload_id()) {
                    if upload_key == key {
                        self.abort_upload(key, upload_id).await?;
                    }
                }
            }
            if !listed.is_truncated().unwrap_or(false) {
                break;
            }
            key_marker = listed.next_key_marker().map(str::to_string);
            upload_id_marker = listed.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && upload_id_marker.is_none() {
                break;
            }
        }
        match self
            .client
            .delete_object()
            .bucket(&self.config.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if http_status(&err) == Some(404) => Ok(()),
            Err(err) => Err(backend("DeleteObject", key, &err)),
        }
    }

    /// Aborts one multipart upload; one already gone is fine.
    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), StorageError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.config.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if http_status(&err) == Some(404) => Ok(()),
            Err(err) => Err(backend("AbortMultipartUpload", key, &err)),
        }
    }
}

/// HTTP status of a failed request, when a response came back at all.
fn http_status<E>(err: &SdkError<E>) -> Option<u16> {
    err.raw_response()
        .map(|response| response.status().as_u16())
}

/// An SDK failure as a backend error naming the operation, the key and every cause.
fn backend<E: std::error::Error + 'static>(
    operation: &str,
    key: &str,
    err: &SdkError<E>,
) -> StorageError {
    StorageError::Backend(format!(
        "S3 {operation} {key:?}: {}",
        DisplayErrorContext(err)
    ))
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
