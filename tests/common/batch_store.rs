//! The object store a test server keeps batch files in (a local data directory, or
//! its own bucket on the test S3 server), opened from the test as well, so that tests
//! can see what is stored under a key.

use tokio::io::AsyncReadExt;
use zeroshot::storage::{LocalStore, S3Config, S3Store, Storage};

use crate::common::{self, Backend, Server};

/// Where a test server stores batch files.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Local,
    S3,
}

/// A server's store: the flags that give it to the server, and the test's own view.
pub struct Store {
    flags: Vec<String>,
    view: Box<dyn Storage>,
}

impl Store {
    /// A fresh data directory, or a fresh bucket named `prefix-...`.
    pub async fn new(kind: Kind, prefix: &str) -> Store {
        match kind {
            Kind::Local => {
                let dir = common::temp_dir();
                let view = Box::new(LocalStore::open(&dir, "http://unused").expect("open"));
                let flags = vec!["--data-dir".into(), dir.display().to_string()];
                Store { flags, view }
            }
            Kind::S3 => {
                let flags = common::s3_server_flags(prefix);
                let flag = |name: &str| {
                    let at = flags.iter().position(|f| f == name).expect(name);
                    flags[at + 1].clone()
                };
                let config = S3Config {
                    endpoint: flag("--s3-endpoint"),
                    region: "us-east-1".into(),
                    bucket: flag("--s3-bucket"),
                    access_key_id: flag("--s3-access-key-id"),
                    secret_access_key: flag("--s3-secret-access-key"),
                };
                let view = Box::new(S3Store::connect(config).await.expect("connect to S3"));
                Store { flags, view }
            }
        }
    }

    /// Starts `zeroshot serve` on a fresh `backend` database with this store and `extra`.
    pub async fn serve(&self, backend: Backend, extra: &[&str]) -> Server {
        let mut flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        flags.extend_from_slice(extra);
        Server::start_with(&common::fresh_database(backend).await, &flags).await
    }

    /// The object under `key`, or `None` when there is none.
    pub async fn object(&self, key: &str) -> Option<Vec<u8>> {
        self.view.size(key).await.expect("size")?;
        let mut bytes = Vec::new();
        self.view
            .read_from(key, 0)
            .await
            .expect("read")
            .read_to_end(&mut bytes)
            .await
            .expect("read to end");
        Some(bytes)
    }
}
