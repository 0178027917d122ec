//! Object storage for batch inputs and results: S3 (any S3-compatible server) or a
//! local directory for the embedded default. Both hand out the same upload form (a
//! multipart/form-data POST with a signed policy) and both stream: nothing here holds
//! a whole object in memory.

pub mod local;
pub mod s3;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;

pub use local::LocalStore;
pub use s3::{S3Config, S3Store};

/// Where objects live: plain settings (the CLI makes them from its flags).
#[derive(Debug, Clone)]
pub enum StorageConfig {
    /// Files under `data_dir`; upload forms and download links point at `public_url`
    /// (`None`: the service's own address).
    Local {
        data_dir: PathBuf,
        public_url: Option<String>,
    },
    S3(S3Config),
}

impl StorageConfig {
    /// Opens the storage; `own_url` is the service's address, where local uploads go
    /// unless `public_url` says otherwise.
    pub async fn open(&self, own_url: &str) -> Result<Arc<dyn Storage>, StorageError> {
        Ok(match self {
            StorageConfig::Local {
                data_dir,
                public_url,
            } => Arc::new(LocalStore::open(
                data_dir,
                public_url.as_deref().unwrap_or(own_url),
            )?),
            StorageConfig::S3(config) => Arc::new(S3Store::connect(config.clone()).await?),
        })
    }
}

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

/// What [`Storage::compose`] did, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Composed {
    /// Size of the composed object.
    pub bytes: u64,
    /// Of those, bytes this service read and wrote again because the store could not
    /// copy them itself (S3: pieces too small to be parts; local: none, the kernel
    /// copies file to file).
    pub buffered: u64,
}

/// An object store backend. One implementation per backend ([`LocalStore`],
/// [`S3Store`]), used as `Arc<dyn Storage>` so callers never match on the backend.
#[async_trait::async_trait]
pub trait Storage: Send + Sync {
    /// The base URL upload forms post to (local: the public URL; S3: the endpoint), so
    /// the playground's Content-Security-Policy can let browsers reach exactly it.
    fn upload_base(&self) -> &str;

    /// The local store, whose upload and download endpoints this service serves itself;
    /// `None` for stores clients reach directly.
    fn local(&self) -> Option<&LocalStore> {
        None
    }

    /// A signed upload form for exactly `key`, 1 byte to `max_bytes`, valid for `ttl`.
    async fn presign_upload(
        &self,
        key: &str,
        max_bytes: u64,
        ttl: Duration,
    ) -> Result<UploadForm, StorageError>;

    /// Size of an object, or `None` when it does not exist.
    async fn size(&self, key: &str) -> Result<Option<u64>, StorageError>;

    /// Streams bytes `[start, end)` of an object, or from `start` to its end when `end`
    /// is `None` (a shard reads its slice of the input this way). A range past the end
    /// is cut at the end; an empty one (`end <= start`, or `start` at or past the end)
    /// is an empty stream. A missing object is [`StorageError::NotFound`].
    async fn read_range(
        &self,
        key: &str,
        start: u64,
        end: Option<u64>,
    ) -> Result<ByteStream, StorageError>;

    /// Streams an object from byte `offset` to its end.
    async fn read_from(&self, key: &str, offset: u64) -> Result<ByteStream, StorageError> {
        self.read_range(key, offset, None).await
    }

    /// Begins a results object.
    async fn start_output(&self, key: &str) -> Result<OutputState, StorageError>;

    /// Appends `bytes` after what `state` covers and advances `state`. Writing again from
    /// an older state replaces what was written after it (resume after a crash).
    async fn append_output(
        &self,
        key: &str,
        state: &mut OutputState,
        bytes: Vec<u8>,
    ) -> Result<(), StorageError>;

    /// Makes the results object whole and readable.
    async fn finish_output(&self, key: &str, state: &OutputState) -> Result<(), StorageError>;

    /// Smallest part [`Storage::append_output`] accepts, but for the last one.
    fn min_part_bytes(&self) -> usize;

    /// Makes `dest` the concatenation of `sources` in order (empty sources are fine; no
    /// sources make an empty `dest`), replacing any `dest` there was, without sending
    /// the bytes through this service where the store can copy them itself: this is
    /// how the shards' results become the job's results. `dest` appears whole or not
    /// at all. The sources are left in place for the caller to delete. A missing
    /// source is [`StorageError::NotFound`].
    async fn compose(&self, sources: &[String], dest: &str) -> Result<Composed, StorageError>;

    /// A time-limited URL to download `key`.
    async fn presign_download(&self, key: &str, ttl: Duration) -> Result<String, StorageError>;

    /// Deletes an object and any unfinished output under `key`; a missing one is fine.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
}
