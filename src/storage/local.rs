//! The embedded default's object store: files under a directory. Uploads come back to
//! this service (`POST /uploads`) with a policy it signed with HMAC-SHA256, mirroring
//! an S3 presigned POST: exact key, size range, expiry. Downloads are signed URLs too.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{ByteStream, Composed, OutputState, Storage, StorageError, UploadForm};
use crate::clock::now_ms;

type HmacSha256 = Hmac<Sha256>;

/// What a signed upload allows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadPolicy {
    pub key: String,
    pub max_bytes: u64,
    pub expires_at: i64,
}

/// Why an upload or download was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy signature does not match")]
    BadSignature,
    #[error("policy is malformed")]
    Malformed,
    #[error("policy expired")]
    Expired,
    #[error("key {0:?} is not the key the policy allows")]
    WrongKey(String),
    #[error("file is larger than the policy allows ({0} bytes)")]
    TooLarge(u64),
    #[error("file is empty")]
    Empty,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Files under `root/objects`, signed with a key kept in `root/signing.key`.
pub struct LocalStore {
    objects: PathBuf,
    secret: Vec<u8>,
    /// Base URL clients reach this service at, for upload and download URLs.
    public_url: String,
}

impl LocalStore {
    /// Opens (creating) the store; the signing key persists so URLs survive restarts.
    pub fn open(root: &Path, public_url: &str) -> Result<Self, StorageError> {
        let objects = root.join("objects");
        std::fs::create_dir_all(&objects)?;
        let key_path = root.join("signing.key");
        let secret = match std::fs::read_to_string(&key_path) {
            Ok(hex_key) => hex::decode(hex_key.trim())
                .map_err(|_| StorageError::Backend(format!("{} is not hex", key_path.display())))?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = vec![0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
                write_private(&key_path, hex::encode(&secret).as_bytes())?;
                secret
            }
            Err(err) => return Err(err.into()),
        };
        Ok(Self {
            objects,
            secret,
            public_url: public_url.trim_end_matches('/').to_string(),
        })
    }

    fn sign(&self, message: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("any key length");
        mac.update(message);
        hex::encode(mac.finalize().into_bytes())
    }

    fn verify(&self, message: &[u8], signature: &str) -> Result<(), PolicyError> {
        let signature = hex::decode(signature).map_err(|_| PolicyError::BadSignature)?;
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("any key length");
        mac.update(message);
        mac.verify_slice(&signature)
            .map_err(|_| PolicyError::BadSignature)
    }

    /// The path of `key`, refusing anything that could leave the objects directory.
    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        let valid = !key.is_empty()
            && !key.starts_with('/')
            && key
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..")
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_-.".contains(c));
        if !valid {
            return Err(StorageError::Backend(format!("invalid object key {key:?}")));
        }
        Ok(self.objects.join(key))
    }

    /// Checks an upload form's `key`, `policy` and `signature` fields.
    pub fn verify_upload(
        &self,
        key: &str,
        policy: &str,
        signature: &str,
    ) -> Result<UploadPolicy, PolicyError> {
        self.verify(policy.as_bytes(), signature)?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(policy)
            .map_err(|_| PolicyError::Malformed)?;
        let policy: UploadPolicy =
            serde_json::from_slice(&decoded).map_err(|_| PolicyError::Malformed)?;
        if policy.expires_at < now_ms() {
            return Err(PolicyError::Expired);
        }
        if policy.key != key {
            return Err(PolicyError::WrongKey(key.to_string()));
        }
        Ok(policy)
    }

    /// Streams an upload to a temporary file and moves it into place only when it is
    /// complete and within the policy's size range; nothing is kept otherwise.
    pub async fn store_upload<S, E>(
        &self,
        policy: &UploadPolicy,
        mut chunks: S,
    ) -> Result<u64, PolicyError>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        use futures_util::StreamExt;
        let target = self.path(&policy.key)?;
        if let Some(dir) = target.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(StorageError::from)?;
        }
        let partial = target.with_extension(format!("upload-{}", uuid::Uuid::new_v4().simple()));
        let result = async {
            let mut file = tokio::fs::File::create(&partial)
                .await
                .map_err(StorageError::from)?;
            let mut written = 0u64;
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk
                    .map_err(|err| StorageError::Backend(format!("upload interrupted: {err}")))?;
                written += chunk.len() as u64;
                if written > policy.max_bytes {
                    return Err(PolicyError::TooLarge(policy.max_bytes));
                }
                file.write_all(&chunk).await.map_err(StorageError::from)?;
            }
            if written == 0 {
                return Err(PolicyError::Empty);
            }
            // tokio writes in the background: a failed last write (a full disk) is
            // reported by flush, not by write_all nor by sync_all.
            file.flush().await.map_err(StorageError::from)?;
            file.sync_all().await.map_err(StorageError::from)?;
            Ok(written)
        }
        .await;
        match result {
            Ok(written) => {
                tokio::fs::rename(&partial, &target)
                    .await
                    .map_err(StorageError::from)?;
                Ok(written)
            }
            Err(err) => {
                let _ = tokio::fs::remove_file(&partial).await;
                Err(err)
            }
        }
    }

    /// Checks a download URL's signature and expiry, then opens the file.
    pub async fn open_download(
        &self,
        key: &str,
        expires: i64,
        signature: &str,
    ) -> Result<(u64, ByteStream), PolicyError> {
        self.verify(format!("{key}\n{expires}").as_bytes(), signature)?;
        if expires < now_ms() {
            return Err(PolicyError::Expired);
        }
        let size = self
            .size(key)
            .await?
            .ok_or_else(|| StorageError::NotFound(key.to_string()))?;
        Ok((size, self.read_from(key, 0).await?))
    }
}

#[async_trait::async_trait]
impl Storage for LocalStore {
    /// The base URL clients reach this service at (upload and download URLs start with it).
    fn upload_base(&self) -> &str {
        &self.public_url
    }

    fn local(&self) -> Option<&LocalStore> {
        Some(self)
    }

    async fn presign_upload(
        &self,
        key: &str,
        max_bytes: u64,
        ttl: Duration,
    ) -> Result<UploadForm, StorageError> {
        self.path(key)?;
        let policy = UploadPolicy {
            key: key.to_string(),
            max_bytes,
            expires_at: now_ms() + ttl.as_millis() as i64,
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode(
            serde_json::to_vec(&policy).map_err(|err| StorageError::Backend(err.to_string()))?,
        );
        let fields = [
            ("key".to_string(), key.to_string()),
            ("signature".to_string(), self.sign(encoded.as_bytes())),
            ("policy".to_string(), encoded),
        ]
        .into_iter()
        .collect();
        Ok(UploadForm {
            url: format!("{}/uploads", self.public_url),
            fields,
            expires_at: policy.expires_at,
        })
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        match tokio::fs::metadata(self.path(key)?).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    async fn read_range(
        &self,
        key: &str,
        start: u64,
        end: Option<u64>,
    ) -> Result<ByteStream, StorageError> {
        let mut file = match tokio::fs::File::open(self.path(key)?).await {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(StorageError::NotFound(key.to_string()))
            }
            Err(err) => return Err(err.into()),
        };
        // Reading after a seek past the end gives nothing, as the range asks.
        file.seek(SeekFrom::Start(start)).await?;
        Ok(match end {
            Some(end) => Box::pin(file.take(end.saturating_sub(start))),
            None => Box::pin(file),
        })
    }

    async fn start_output(&self, key: &str) -> Result<OutputState, StorageError> {
        let path = self.path(key)?;
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::File::create(&path).await?;
        Ok(OutputState::Local { len: 0 })
    }

    /// Cuts the file back to the state's length first, so bytes written after the last checkpoint are replaced, never duplicated.
    async fn append_output(
        &self,
        key: &str,
        state: &mut OutputState,
        bytes: Vec<u8>,
    ) -> Result<(), StorageError> {
        let OutputState::Local { len } = state else {
            return Err(StorageError::Backend("not a local output".to_string()));
        };
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(self.path(key)?)
            .await?;
        file.set_len(*len).await?;
        file.seek(SeekFrom::Start(*len)).await?;
        file.write_all(&bytes).await?;
        // A failed background write (a full disk) surfaces here, not at write_all.
        file.flush().await?;
        file.sync_data().await?;
        *len += bytes.len() as u64;
        Ok(())
    }

    /// Drops anything past the final state.
    async fn finish_output(&self, key: &str, state: &OutputState) -> Result<(), StorageError> {
        let OutputState::Local { len } = state else {
            return Err(StorageError::Backend("not a local output".to_string()));
        };
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(self.path(key)?)
            .await?;
        file.set_len(*len).await?;
        file.sync_all().await?;
        Ok(())
    }

    /// `{public_url}/files/{key}?expires=..&signature=..`.
    async fn presign_download(&self, key: &str, ttl: Duration) -> Result<String, StorageError> {
        self.path(key)?;
        let expires = now_ms() + ttl.as_millis() as i64;
        let signature = self.sign(format!("{key}\n{expires}").as_bytes());
        Ok(format!(
            "{}/files/{key}?expires={expires}&signature={signature}",
            self.public_url
        ))
    }

    fn min_part_bytes(&self) -> usize {
        0
    }

    /// Copies the sources into a temporary file next to `dest` (the kernel copies file
    /// to file where it can), syncs it and renames it over `dest`: a crash leaves the
    /// old `dest` or the new one, never a part of it.
    async fn compose(&self, sources: &[String], dest: &str) -> Result<Composed, StorageError> {
        let sources = sources
            .iter()
            .map(|key| Ok((key.clone(), self.path(key)?)))
            .collect::<Result<Vec<_>, StorageError>>()?;
        let target = self.path(dest)?;
        let bytes = tokio::task::spawn_blocking(move || concatenate(&sources, &target))
            .await
            .map_err(|err| StorageError::Backend(format!("composing {dest:?}: {err}")))??;
        Ok(Composed { bytes, buffered: 0 })
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err.into()),
            _ => Ok(()),
        }
    }
}

/// Writes the files of `sources` (key, path) one after the other to a new file at
/// `target`, in place only once complete and synced. Returns the bytes written.
fn concatenate(sources: &[(String, PathBuf)], target: &Path) -> Result<u64, StorageError> {
    let dir = target
        .parent()
        .ok_or_else(|| StorageError::Backend(format!("{} has no parent", target.display())))?;
    std::fs::create_dir_all(dir)?;
    let partial = target.with_extension(format!("compose-{}", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        let mut out = std::fs::File::create(&partial)?;
        let mut written = 0;
        for (key, path) in sources {
            let mut source = match std::fs::File::open(path) {
                Ok(file) => file,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StorageError::NotFound(key.clone()))
                }
                Err(err) => return Err(err.into()),
            };
            // copy_file_range on Linux: the bytes stay in the kernel.
            written += std::io::copy(&mut source, &mut out)?;
        }
        out.sync_all()?;
        Ok(written)
    })();
    match written {
        Ok(written) => {
            std::fs::rename(&partial, target)?;
            // The rename itself is durable only once the directory is synced.
            std::fs::File::open(dir)?.sync_all()?;
            Ok(written)
        }
        Err(err) => {
            let _ = std::fs::remove_file(&partial);
            Err(err)
        }
    }
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)
}
