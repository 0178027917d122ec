//! `zeroshot serve`: its flags, and the plain [`Config`] the server runs from.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::args::{cache_dir, DbArgs, Device, ModelArgs};
use crate::batch::jobs::BatchSettings;
use crate::engine::queue::QueueLimits;
use crate::server::{BatchConfig, Config};
use crate::storage::{S3Config, StorageConfig};

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ZEROSHOT_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on; 0 picks a free one (the chosen address is printed).
    #[arg(long, env = "ZEROSHOT_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "ZEROSHOT_MAX_BODY_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub batch: BatchArgs,
    #[command(flatten)]
    pub webhooks: WebhookArgs,
    /// `/v1/classify`: texts per coalesced engine call at most.
    #[arg(
        long,
        alias = "max-batch-texts",
        env = "ZEROSHOT_MAX_RUN_TEXTS",
        default_value_t = 64
    )]
    pub max_run_texts: usize,
    /// `/v1/classify`: how long a request waits for others to share its engine call,
    /// beyond those already queued (which always join).
    #[arg(
        long,
        alias = "max-batch-wait-ms",
        env = "ZEROSHOT_MAX_RUN_WAIT_MS",
        default_value_t = 0
    )]
    pub max_run_wait_ms: u64,
    /// `/v1/classify`: requests waiting for inference at most; more get 503 `overloaded`.
    #[arg(long, env = "ZEROSHOT_MAX_QUEUED_REQUESTS", default_value_t = 256)]
    pub max_queued_requests: usize,
    /// The Swagger UI files `/docs` serves, as `scripts/setup.py` fetches them
    /// [default: $ZEROSHOT_CACHE/docs-ui].
    #[arg(long, env = "ZEROSHOT_DOCS_UI_DIR")]
    pub docs_ui_dir: Option<PathBuf>,
    /// Serve `GET /metrics` on this address (HOST:PORT; port 0 picks one, printed)
    /// instead of the main listener, which then answers 404 there.
    #[arg(long, env = "ZEROSHOT_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Origins (`https://app.example.com`) whose pages may call the API from a browser;
    /// repeatable or comma-separated. None by default: no CORS headers at all.
    #[arg(long, env = "ZEROSHOT_CORS_ORIGIN", value_delimiter = ',', value_parser = crate::api::cors::parse_origin)]
    pub cors_origin: Vec<axum::http::HeaderValue>,
}

impl ServeArgs {
    /// `--chunks-in-flight`, else the device's default.
    pub fn chunks_in_flight(&self) -> usize {
        match (self.batch.chunks_in_flight, self.model.device) {
            (Some(chunks), _) => chunks as usize,
            (None, Device::Cpu) => 1,
            (None, Device::Cuda) => 2,
        }
    }

    /// The flag, else where setup puts the files.
    pub fn docs_ui_dir(&self) -> PathBuf {
        self.docs_ui_dir
            .clone()
            .unwrap_or_else(|| cache_dir().join("docs-ui"))
    }
}

/// Where batch inputs and results live.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// `local` (files under --data-dir, uploads come back to this service) or `s3`.
    #[arg(long, env = "ZEROSHOT_STORAGE", value_enum, default_value = "local")]
    pub storage: StorageKind,
    /// Local storage: objects and the URL-signing key.
    #[arg(long, env = "ZEROSHOT_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Local storage: the base URL clients reach this service at [default: http://HOST:PORT].
    #[arg(long, env = "ZEROSHOT_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// S3: endpoint URL (any S3-compatible server); path-style addressing is used.
    #[arg(long, env = "ZEROSHOT_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "ZEROSHOT_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    #[arg(long, env = "ZEROSHOT_S3_BUCKET", default_value = "zeroshot")]
    pub s3_bucket: String,
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
}

/// Storage backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StorageKind {
    Local,
    S3,
}

/// Batch job limits and timing.
#[derive(Debug, Clone, Args)]
pub struct BatchArgs {
    /// Largest accepted batch input file, in bytes.
    #[arg(long, env = "ZEROSHOT_MAX_UPLOAD_BYTES", default_value_t = 5 * 1024 * 1024 * 1024)]
    pub max_upload_bytes: u64,
    /// How long an upload form stays valid, in seconds.
    #[arg(long, env = "ZEROSHOT_UPLOAD_TTL_SECS", default_value_t = 3600)]
    pub upload_ttl_secs: u64,
    /// How long a results download URL stays valid, in seconds.
    #[arg(long, env = "ZEROSHOT_DOWNLOAD_TTL_SECS", default_value_t = 3600)]
    pub download_ttl_secs: u64,
    /// A job whose worker has not reported for this long is resumed by another worker.
    #[arg(long, env = "ZEROSHOT_BATCH_LEASE_SECS", default_value_t = 30)]
    pub batch_lease_secs: u64,
    /// How long a batch job waits out an unreachable storage (retrying from its last
    /// checkpoint with backoff) before it fails naming the cause; starting it again
    /// runs it anew. A database outage is always waited out.
    #[arg(long, env = "ZEROSHOT_STORAGE_RETRY_SECS", default_value_t = 300)]
    pub storage_retry_secs: u64,
    /// Input bytes per shard: a started job's input is cut into shards of about this
    /// size (at a line boundary), and every instance's worker scores any of them, so a
    /// job spreads over all the instances sharing the database and the storage.
    #[arg(long, env = "ZEROSHOT_SHARD_BYTES", default_value_t = 64 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub shard_bytes: u64,
    /// Chunks (2,048 lines each) of a shard a worker scores at once, so that one
    /// chunk's parsing, tokenizing and row building overlap another's model runs
    /// [default: 1 on the CPU, where both share the cores; 2 with `--device cuda`,
    /// which otherwise idles between runs].
    #[arg(long, env = "ZEROSHOT_CHUNKS_IN_FLIGHT", value_parser = clap::value_parser!(u32).range(1..=8))]
    pub chunks_in_flight: Option<u32>,
    /// Days a job's input, results and error rows are kept after it ends (a job never
    /// started: after it was created); then they are deleted and the job shows
    /// `expired`. 0 keeps them forever.
    #[arg(long, env = "ZEROSHOT_RETENTION_DAYS", default_value_t = 30)]
    pub retention_days: u32,
    /// Seconds between two looks for jobs past retention.
    #[arg(
        long,
        env = "ZEROSHOT_RETENTION_SWEEP_SECS",
        default_value_t = 3600,
        hide = true
    )]
    pub retention_sweep_secs: u64,
}

impl BatchArgs {
    /// How long jobs' files are kept; `None`: forever.
    pub fn retention(&self) -> Option<std::time::Duration> {
        (self.retention_days > 0)
            .then(|| std::time::Duration::from_secs(u64::from(self.retention_days) * 86_400))
    }
}

/// Webhook delivery.
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// Let webhooks reach loopback, private, link-local and metadata addresses (for
    /// local use and tests; never on a server others can create jobs on).
    #[arg(long, env = "ZEROSHOT_ALLOW_PRIVATE_WEBHOOKS")]
    pub allow_private_webhooks: bool,
    /// Delay before a failed webhook delivery's first retry, in seconds; the next ones
    /// wait 6, 24, 120, 360, 720, 1440, then 2880 times it, for up to 24 hours.
    #[arg(long, env = "ZEROSHOT_WEBHOOK_RETRY_BASE_SECS", default_value_t = 5.0, value_parser = positive_secs)]
    pub webhook_retry_base_secs: f64,
}

impl WebhookArgs {
    /// The settings the API and the dispatcher read.
    pub fn settings(&self) -> crate::webhooks::Settings {
        crate::webhooks::Settings {
            allow_private: self.allow_private_webhooks,
            retry_base: std::time::Duration::from_secs_f64(self.webhook_retry_base_secs),
        }
    }
}

/// A number of seconds above zero and at most a day.
fn positive_secs(arg: &str) -> Result<f64, String> {
    match arg.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= 86_400.0 => Ok(secs),
        _ => Err(format!(
            "expected seconds above 0 and at most 86400, got {arg:?}"
        )),
    }
}

/// `zeroshot serve`: runs the service these flags describe.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    crate::server::run(args.config()?).await
}

impl ServeArgs {
    /// The plain settings of the service these flags describe.
    pub fn config(&self) -> anyhow::Result<Config> {
        let batch = &self.batch;
        Ok(Config {
            host: self.host,
            port: self.port,
            max_body_bytes: self.max_body_bytes,
            database_url: self.db.database_url.clone(),
            model: self.model.config(),
            storage: self.storage.config()?,
            batch: BatchConfig {
                uploads: BatchSettings {
                    max_upload_bytes: batch.max_upload_bytes,
                    upload_ttl: Duration::from_secs(batch.upload_ttl_secs),
                    download_ttl: Duration::from_secs(batch.download_ttl_secs),
                },
                lease: Duration::from_secs(batch.batch_lease_secs),
                storage_retry: Duration::from_secs(batch.storage_retry_secs),
                shard_bytes: batch.shard_bytes,
                chunks_in_flight: self.chunks_in_flight(),
                retention: batch.retention(),
                retention_sweep: Duration::from_secs(batch.retention_sweep_secs),
            },
            webhooks: self.webhooks.settings(),
            queue: QueueLimits {
                max_run_texts: self.max_run_texts.max(1),
                max_wait: Duration::from_millis(self.max_run_wait_ms),
                max_queued: self.max_queued_requests.max(1),
            },
            docs_ui_dir: self.docs_ui_dir(),
            metrics_addr: self.metrics_addr,
            cors_origins: self.cors_origin.clone(),
        })
    }
}

impl StorageArgs {
    /// The storage these flags describe; S3 needs its endpoint and credentials.
    fn config(&self) -> anyhow::Result<StorageConfig> {
        let required = |value: &Option<String>, flag: &str| {
            value
                .clone()
                .with_context(|| format!("--storage s3 needs {flag}"))
        };
        Ok(match self.storage {
            StorageKind::Local => StorageConfig::Local {
                data_dir: self.data_dir.clone(),
                public_url: self.public_url.clone(),
            },
            StorageKind::S3 => StorageConfig::S3(S3Config {
                endpoint: required(&self.s3_endpoint, "--s3-endpoint")?,
                region: self.s3_region.clone(),
                bucket: self.s3_bucket.clone(),
                access_key_id: required(&self.s3_access_key_id, "--s3-access-key-id")?,
                secret_access_key: required(&self.s3_secret_access_key, "--s3-secret-access-key")?,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn serve_args(flags: &[&str]) -> Result<ServeArgs, clap::Error> {
        let args = ["zeroshot", "serve"].iter().chain(flags);
        match Cli::try_parse_from(args)?.command {
            Command::Serve(args) => Ok(*args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn chunks_in_flight_default_to_the_devices_and_the_flag_wins() {
        let in_flight = |flags: &[&str]| serve_args(flags).unwrap().chunks_in_flight();
        assert_eq!(in_flight(&[]), 1);
        assert_eq!(in_flight(&["--device", "cuda"]), 2);
        assert_eq!(
            in_flight(&["--device", "cuda", "--chunks-in-flight", "1"]),
            1
        );
        assert_eq!(in_flight(&["--chunks-in-flight", "3"]), 3);
        for refused in ["0", "9"] {
            assert!(serve_args(&["--chunks-in-flight", refused]).is_err());
        }
    }
}
