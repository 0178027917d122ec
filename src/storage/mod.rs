//! Object storage for batch inputs and results: S3 (any S3-compatible server) or a
//! local directory for the embedded default. Both hand out the same upload form (a
//! multipart/form-data POST with a signed policy) and both stream: nothing here holds
//! a whole object in memory.

pub mod local;
pub mod s3;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;

pub use local::LocalStore;
pub use s3::{S3Config, S3Store};

/// A streamed object body.
pub type ByteStream = Pin<Box<dyn AsyncRead + Send>>;

/// Where and how to upload: POST `fields` then `file` as multipart/form-data to `url`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadForm {
    pub url: String,
    pub fields: BTreeMap<String, String>,
    /// Unix milliseconds after which the policy is refused.
    pub expires_at: i64,
}

/// A results object being written part by part. Stored in each job checkpoint, so a
/// restarted worker continues exactly where the last checkpoint left the object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum OutputState {
    /// Bytes of the local file covered by the checkpoint; anything after is cut off.
    Local { len: u64 },
    /// An S3 multipart upload and the parts the checkpoint covers.
    S3 {
        upload_id: String,
        parts: Vec<UploadedPart>,
    },
}

/// One uploaded part of an S3 multipart upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadedPart {
    pub number: i32,
    pub etag: String,
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object {0:?} not found")]
    NotFound(String),
    #[error("storage error: {0}")]
    Backend(String),
    /// No space left: waiting does not help, unlike the other errors.
    #[error("{0}")]
    Full(String),
    #[error("storage i/o error: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for StorageError {
    fn from(err: std::io::Error) -> Self {
        match err.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                StorageError::Full(err.to_string())
            }
            _ => StorageError::Io(err),
        }
    }
}

/// The configured backend.
pub enum Storage {
    Local(LocalStore),
    S3(S3Store),
}

impl Storage {
    /// The base URL upload forms post to (local: the public URL; S3: the endpoint), so
    /// the playground's Content-Security-Policy can let browsers reach exactly it.
    pub fn upload_base(&self) -> &str {
        match self {
            Storage::Local(store) => store.public_url(),
            Storage::S3(store) => store.endpoint(),
        }
    }

    /// A signed upload form for exactly `key`, 1 byte to `max_bytes`, valid for `ttl`.
    pub async fn presign_upload(
        &self,
        key: &str,
        max_bytes: u64,
        ttl: Duration,
    ) -> Result<UploadForm, StorageError> {
        match self {
            Storage::Local(store) => store.presign_upload(key, max_bytes, ttl),
            Storage::S3(store) => store.presign_upload(key, max_bytes, ttl),
        }
    }

    /// Size of an object, or `None` when it does not exist.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        match self {
            Storage::Local(store) => store.size(key).await,
            Storage::S3(store) => store.size(key).await,
        }
    }

    /// Streams an object from byte `offset` to its end.
    pub async fn read_from(&self, key: &str, offset: u64) -> Result<ByteStream, StorageError> {
        match self {
            Storage::Local(store) => store.read_from(key, offset).await,
            Storage::S3(store) => store.read_from(key, offset).await,
        }
    }

    /// Begins a results object.
    pub async fn start_output(&self, key: &str) -> Result<OutputState, StorageError> {
        match self {
            Storage::Local(store) => store.start_output(key).await,
            Storage::S3(store) => store.start_output(key).await,
        }
    }

    /// Appends `bytes` after what `state` covers and advances `state`. Writing again from
    /// an older state replaces what was written after it (resume after a crash).
    pub async fn append_output(
        &self,
        key: &str,
        state: &mut OutputState,
        bytes: Vec<u8>,
    ) -> Result<(), StorageError> {
        match self {
            Storage::Local(store) => store.append_output(key, state, bytes).await,
            Storage::S3(store) => store.append_output(key, state, bytes).await,
        }
    }

    /// Makes the results object whole and readable.
    pub async fn finish_output(&self, key: &str, state: &OutputState) -> Result<(), StorageError> {
        match self {
            Storage::Local(store) => store.finish_output(key, state).await,
            Storage::S3(store) => store.finish_output(key, state).await,
        }
    }

    /// Smallest part [`Storage::append_output`] accepts, but for the last one.
    pub fn min_part_bytes(&self) -> usize {
        match self {
            Storage::Local(_) => 0,
            Storage::S3(_) => s3::MIN_PART_BYTES,
        }
    }

    /// A time-limited URL to download `key`.
    pub async fn presign_download(&self, key: &str, ttl: Duration) -> Result<String, StorageError> {
        match self {
            Storage::Local(store) => store.presign_download(key, ttl),
            Storage::S3(store) => store.presign_download(key, ttl).await,
        }
    }

    /// Deletes an object and any unfinished output under `key`; a missing one is fine.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self {
            Storage::Local(store) => store.delete(key).await,
            Storage::S3(store) => store.delete(key).await,
        }
    }
}
