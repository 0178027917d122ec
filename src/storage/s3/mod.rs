//! Object storage on S3 or any S3-compatible server (MinIO, SeaweedFS, R2, ...).
//!
//! Uploads go straight from the client to the bucket with a presigned POST policy
//! (signed here by hand: the SDK only presigns single requests), downloads with a
//! presigned GET, and results are written as a multipart upload whose parts the job
//! checkpoints record, so a restarted worker re-uploads only the part it lost.
//!
//! This module is the SDK adapter; [`policy`] signs the POST policy of upload forms
//! and [`compose`] plans how sources become the parts of a composed object.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
};
use aws_sdk_s3::Client;
use futures_util::future::try_join_all;
use tokio::io::AsyncReadExt;

use super::{ByteStream, Composed, OutputState, Storage, StorageError, UploadForm, UploadedPart};

mod compose;
mod policy;

use compose::ComposeStep;
pub use compose::MIN_PART_BYTES;

/// Sources whose size is asked at once when composing.
const HEAD_CONCURRENCY: usize = 16;

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

    /// Copies bytes `[start, end)` of `source` as the part after those in `state`,
    /// inside the store (UploadPartCopy): the bytes never pass through this service.
    async fn copy_part(
        &self,
        key: &str,
        state: &mut OutputState,
        source: &str,
        start: u64,
        end: u64,
    ) -> Result<(), StorageError> {
        let (upload_id, parts, number) = next_part(key, state)?;
        let copied = self
            .client
            .upload_part_copy()
            .bucket(&self.config.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .copy_source(copy_source(&self.config.bucket, source))
            .copy_source_range(format!("bytes={start}-{}", end - 1))
            .send()
            .await
            .map_err(|err| backend("UploadPartCopy", source, &err))?;
        let etag = copied
            .copy_part_result()
            .and_then(|result| result.e_tag())
            .ok_or_else(|| {
                StorageError::Backend(format!(
                    "UploadPartCopy {number} of {key:?} returned no ETag"
                ))
            })?;
        parts.push(UploadedPart {
            number,
            etag: etag.to_string(),
        });
        Ok(())
    }

    /// Sizes of `sources`, asked [`HEAD_CONCURRENCY`] at a time; a missing one is
    /// [`StorageError::NotFound`].
    async fn source_sizes(&self, sources: &[String]) -> Result<Vec<u64>, StorageError> {
        let mut sizes = Vec::with_capacity(sources.len());
        for batch in sources.chunks(HEAD_CONCURRENCY) {
            let found = try_join_all(batch.iter().map(|key| self.size(key))).await?;
            for (key, size) in batch.iter().zip(found) {
                sizes.push(size.ok_or_else(|| StorageError::NotFound(key.clone()))?);
            }
        }
        Ok(sizes)
    }

    /// Carries out the compose `steps` on the upload in `state` and completes it.
    /// Returns the bytes read through this service.
    async fn assemble(
        &self,
        sources: &[String],
        dest: &str,
        steps: &[ComposeStep],
        state: &mut OutputState,
    ) -> Result<u64, StorageError> {
        let mut buffer = Vec::new();
        let mut buffered = 0;
        for &step in steps {
            match step {
                ComposeStep::Copy { source, start, end } => {
                    self.copy_part(dest, state, &sources[source], start, end)
                        .await?
                }
                ComposeStep::Buffer { source, start, end } => {
                    buffered += self
                        .buffer_range(&sources[source], start, end, dest, &mut buffer)
                        .await?;
                }
                ComposeStep::Upload => {
                    self.append_output(dest, state, std::mem::take(&mut buffer))
                        .await?
                }
            }
        }
        self.finish_output(dest, state).await?;
        Ok(buffered)
    }

    /// Reads bytes `[start, end)` of `source` onto `buffer` while composing `dest`;
    /// returns how many were read.
    async fn buffer_range(
        &self,
        source: &str,
        start: u64,
        end: u64,
        dest: &str,
        buffer: &mut Vec<u8>,
    ) -> Result<u64, StorageError> {
        let read = self
            .read_range(source, start, Some(end))
            .await?
            .read_to_end(buffer)
            .await? as u64;
        // The plan rests on the sizes: a source that changed since would make the
        // parts wrong.
        if read != end - start {
            return Err(StorageError::Backend(format!(
                "{source:?} changed while composing {dest:?}"
            )));
        }
        Ok(read)
    }

    /// Aborts the upload of a failed compose; a failure to abort is only logged, the
    /// compose's own error is the one that matters.
    async fn abort_compose(&self, dest: &str, state: &OutputState) {
        if let OutputState::S3 { upload_id, .. } = state {
            if let Err(abort) = self.abort_upload(dest, upload_id).await {
                tracing::warn!(key = dest, error = %abort, "could not abort a failed compose");
            }
        }
    }
}

/// The upload id and parts of an S3 output state, and the number of the next part.
fn next_part<'a>(
    key: &str,
    state: &'a mut OutputState,
) -> Result<(&'a str, &'a mut Vec<UploadedPart>, i32), StorageError> {
    let OutputState::S3 { upload_id, parts } = state else {
        return Err(StorageError::Backend("not an S3 output".to_string()));
    };
    let number = i32::try_from(parts.len() + 1)
        .map_err(|_| StorageError::Backend(format!("too many parts for {key:?}")))?;
    Ok((upload_id, parts, number))
}

/// `bucket/key` URL-encoded, as UploadPartCopy's `x-amz-copy-source` wants it: every
/// byte but ASCII letters, digits, RFC 3986's other unreserved characters (`-_.~`) and
/// the `/` between path segments becomes `%XX` (upper-case hex).
fn copy_source(bucket: &str, key: &str) -> String {
    const KEPT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(&format!("{bucket}/{key}"), KEPT).to_string()
}

#[async_trait::async_trait]
impl Storage for S3Store {
    /// The endpoint URL (upload forms post to it, path-style).
    fn upload_base(&self) -> &str {
        &self.config.endpoint
    }

    /// A presigned POST form for exactly `key`, 1 to `max_bytes` bytes, valid for
    /// `ttl`: the client uploads straight to the bucket and can write nothing else.
    async fn presign_upload(
        &self,
        key: &str,
        max_bytes: u64,
        ttl: Duration,
    ) -> Result<UploadForm, StorageError> {
        policy::post_form(&self.config, key, max_bytes, ttl, SystemTime::now())
    }

    /// Size of `key` from HeadObject, or `None` when it does not exist.
    async fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
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

    /// Streams the range with a ranged GET; the body is read as the caller consumes
    /// it, never buffered whole.
    async fn read_range(
        &self,
        key: &str,
        start: u64,
        end: Option<u64>,
    ) -> Result<ByteStream, StorageError> {
        let mut request = self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(key);
        match end {
            // An HTTP range cannot be empty: only check that the object is there.
            Some(end) if end <= start => {
                return match self.size(key).await? {
                    Some(_) => Ok(Box::pin(tokio::io::empty())),
                    None => Err(StorageError::NotFound(key.to_string())),
                }
            }
            Some(end) => request = request.range(format!("bytes={start}-{}", end - 1)),
            // No range from 0: a range on an empty object is unsatisfiable (416).
            None if start > 0 => request = request.range(format!("bytes={start}-")),
            None => {}
        }
        match request.send().await {
            Ok(object) => Ok(Box::pin(object.body.into_async_read())),
            Err(err) if http_status(&err) == Some(404) => {
                Err(StorageError::NotFound(key.to_string()))
            }
            // S3 answers 416 for a range starting at or past the end of the object.
            Err(err) if http_status(&err) == Some(416) => match self.size(key).await? {
                Some(size) if start >= size => Ok(Box::pin(tokio::io::empty())),
                Some(_) => Err(backend("GetObject", key, &err)),
                None => Err(StorageError::NotFound(key.to_string())),
            },
            Err(err) => Err(backend("GetObject", key, &err)),
        }
    }

    /// Starts a multipart upload for a results object.
    async fn start_output(&self, key: &str) -> Result<OutputState, StorageError> {
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
    async fn append_output(
        &self,
        key: &str,
        state: &mut OutputState,
        bytes: Vec<u8>,
    ) -> Result<(), StorageError> {
        let (upload_id, parts, number) = next_part(key, state)?;
        let uploaded = self
            .client
            .upload_part()
            .bucket(&self.config.bucket)
            .key(key)
            .upload_id(upload_id)
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
    async fn finish_output(&self, key: &str, state: &OutputState) -> Result<(), StorageError> {
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

    fn min_part_bytes(&self) -> usize {
        MIN_PART_BYTES
    }

    /// Assembles `dest` as a multipart upload following [`compose::plan`]: parts the
    /// store copies itself (UploadPartCopy of a source's byte range) wherever the piece
    /// is large enough to be a part, and small pieces gathered here (ranged GETs) into
    /// parts of at least [`MIN_PART_BYTES`]. The upload is aborted on any failure.
    async fn compose(&self, sources: &[String], dest: &str) -> Result<Composed, StorageError> {
        let sizes = self.source_sizes(sources).await?;
        let steps = compose::plan(&sizes, dest)?;
        let mut state = self.start_output(dest).await?;
        match self.assemble(sources, dest, &steps, &mut state).await {
            Ok(buffered) => Ok(Composed {
                bytes: sizes.iter().sum(),
                buffered,
            }),
            Err(err) => {
                self.abort_compose(dest, &state).await;
                Err(err)
            }
        }
    }

    /// A presigned GET URL for `key`, valid for `ttl` (at most 7 days, S3's limit).
    async fn presign_download(&self, key: &str, ttl: Duration) -> Result<String, StorageError> {
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
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_copy_sources() {
        assert_eq!(copy_source("b", "jobs/x-1_2.jsonl"), "b/jobs/x-1_2.jsonl");
        assert_eq!(copy_source("b", "a b+c"), "b/a%20b%2Bc");
        assert_eq!(copy_source("b", "~.%?#&=é"), "b/~.%25%3F%23%26%3D%C3%A9");
        // Every ASCII character, and multi-byte ones, as the byte-by-byte rule says.
        let key: String = (0..128u8).map(char::from).chain(['é', '€', '😀']).collect();
        let mut expected = String::from("b/");
        for byte in key.bytes() {
            if byte.is_ascii_alphanumeric() || b"/-_.~".contains(&byte) {
                expected.push(char::from(byte));
            } else {
                expected.push_str(&format!("%{byte:02X}"));
            }
        }
        assert_eq!(copy_source("b", &key), expected);
    }
}
