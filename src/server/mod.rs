//! The service, built and run from a plain [`Config`]: the database (with the first
//! account), the metrics recorder, storage, the HTTP server, the batch worker, the
//! webhook dispatcher, the retention sweeper and the usage writes, the model loaded in
//! the background, and a graceful stop on SIGTERM or Ctrl-C. The CLI makes the config
//! from its flags (`cli::serve`); nothing here knows about flags.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use axum::http::HeaderValue;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::batch::jobs::BatchSettings;
use crate::batch::retention::Sweeper;
use crate::batch::Worker;
use crate::db::{Db, DbError};
use crate::engine::queue::{InferenceQueue, QueueLimits};
use crate::engine::{Engine, ModelConfig};
use crate::storage::{Storage, StorageConfig};
use crate::usage::PendingUsage;

/// How often `/v1/classify` usage counted in memory is written to the database.
const USAGE_WRITES: Duration = Duration::from_secs(1);

/// Everything the service needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    /// 0 picks a free port (the chosen address is printed).
    pub port: u16,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// `sqlite://path` or `postgres://...`.
    pub database_url: String,
    pub model: ModelConfig,
    pub storage: StorageConfig,
    pub batch: BatchConfig,
    pub webhooks: crate::webhooks::Settings,
    /// How `/v1/classify` calls share engine runs.
    pub queue: QueueLimits,
    /// The Swagger UI files `/docs` serves.
    pub docs_ui_dir: PathBuf,
    /// Serve `/metrics` on this address instead of the main listener.
    pub metrics_addr: Option<SocketAddr>,
    /// Origins whose pages may call the API from a browser; empty: none.
    pub cors_origins: Vec<HeaderValue>,
}

/// Batch jobs: uploads, downloads, leases, shards and retention.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    pub uploads: BatchSettings,
    /// How long a worker's lease on a job or shard lasts without renewal.
    pub lease: Duration,
    /// How long the worker retries storage before failing a job.
    pub storage_retry: Duration,
    /// Input bytes per shard, about.
    pub shard_bytes: u64,
    /// Chunks a worker scores at once.
    pub chunks_in_flight: usize,
    /// Jobs' inputs and results are deleted this long after they end; `None`: kept.
    pub retention: Option<Duration>,
    /// How often retention looks for expired jobs.
    pub retention_sweep: Duration,
}

/// Runs the service until SIGTERM or Ctrl-C, then stops gracefully: in-flight requests
/// finish, the worker hands its shard back at the next chunk, usage is written.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let db = Db::connect(&config.database_url)
        .await
        .with_context(|| format!("opening database {}", config.database_url))?;
    first_account(&db).await?;
    let metrics = metrics(config.metrics_addr, &db).await?;
    let listener = TcpListener::bind((config.host, config.port))
        .await
        .with_context(|| format!("binding {}:{}", config.host, config.port))?;
    let address = listener.local_addr()?;
    let state = AppState {
        db: db.clone(),
        engine: Arc::new(OnceLock::new()),
        queue: Arc::new(OnceLock::new()),
        max_body_bytes: config.max_body_bytes,
        storage: open_storage(&config.storage, address).await?,
        wake_workers: Arc::new(Notify::new()),
        batch: config.batch.uploads.clone(),
        docs_ui_dir: config.docs_ui_dir.clone(),
        metrics,
        cors_origins: config.cors_origins.clone(),
        webhooks: config.webhooks,
        rate_limiter: Default::default(),
        usage: PendingUsage::default(),
    };
    let stopping = CancellationToken::new();
    let worker = spawn_background(&config, &state, &stopping);
    println!("listening on http://{address}");
    let model = config.model.clone();
    let loading = tokio::task::spawn_blocking(move || model.load());
    let shutdown = {
        let stopping = stopping.clone();
        async move {
            api::shutdown_signal().await;
            stopping.cancel();
        }
    };
    let server = tokio::spawn(api::serve(listener, state.clone(), shutdown));
    let engine = loading.await.context("model loader panicked")??;
    ready(&state, engine, config.queue);
    server.await.context("server task panicked")??;
    worker.await.context("batch worker panicked")?;
    state.usage.write(&db).await?;
    Ok(())
}

/// Opens the storage; local uploads come back to `address` unless `--public-url` says.
async fn open_storage(
    config: &StorageConfig,
    address: SocketAddr,
) -> anyhow::Result<Arc<dyn Storage>> {
    config
        .open(&format!("http://{address}"))
        .await
        .with_context(|| match config {
            StorageConfig::Local { data_dir, .. } => {
                format!("opening local storage {}", data_dir.display())
            }
            StorageConfig::S3(_) => "connecting to S3".to_string(),
        })
}

/// On an empty database, creates the account `default` and prints its API key once.
async fn first_account(db: &Db) -> anyhow::Result<()> {
    if db.count_accounts().await? > 0 {
        return Ok(());
    }
    match db.create_account("default").await {
        Ok(account) => {
            let key = db.create_key(&account).await?;
            println!(
                "created account \"default\" with API key (shown once): {}",
                key.secret
            );
            Ok(())
        }
        // Another instance sharing this database got there first.
        Err(DbError::Conflict(_)) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Installs the metrics recorder; serves `/metrics` on `address` when given, else
/// hands the recorder to the main listener.
async fn metrics(address: Option<SocketAddr>, db: &Db) -> anyhow::Result<Option<PrometheusHandle>> {
    let metrics = crate::metrics::install().context("installing the metrics recorder")?;
    let Some(address) = address else {
        return Ok(Some(metrics));
    };
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address} (--metrics-addr)"))?;
    println!("metrics on http://{}/metrics", listener.local_addr()?);
    tokio::spawn(api::observe::serve_metrics(listener, metrics, db.clone()));
    Ok(None)
}

/// Starts the background loops: retention, webhook deliveries (on their own task, so a
/// slow receiver never holds the worker up), usage writes and the batch worker, which
/// stops with `stopping` and hands its shard back at the next chunk boundary.
fn spawn_background(
    config: &Config,
    state: &AppState,
    stopping: &CancellationToken,
) -> JoinHandle<()> {
    let db = &state.db;
    if let Some(retention) = config.batch.retention {
        tokio::spawn(
            Sweeper {
                db: db.clone(),
                storage: state.storage.clone(),
                retention,
                interval: config.batch.retention_sweep.max(Duration::from_secs(1)),
            }
            .run(),
        );
    }
    tokio::spawn(
        crate::webhooks::Dispatcher {
            db: db.clone(),
            owner: format!("webhooks_{}", uuid::Uuid::new_v4().simple()),
            settings: config.webhooks,
        }
        .run(),
    );
    tokio::spawn(state.usage.clone().write_every(db.clone(), USAGE_WRITES));
    tokio::spawn(
        Worker {
            db: db.clone(),
            storage: state.storage.clone(),
            engine: state.engine.clone(),
            owner: format!("worker_{}", uuid::Uuid::new_v4().simple()),
            lease: config.batch.lease.max(Duration::from_secs(1)),
            wake: state.wake_workers.clone(),
            stopping: stopping.clone(),
            storage_retry: config.batch.storage_retry,
            shard_bytes: config.batch.shard_bytes,
            chunks_in_flight: config.batch.chunks_in_flight,
        }
        .run(),
    )
}

/// The model is loaded: `/v1` and the worker may use it.
fn ready(state: &AppState, engine: Engine, limits: QueueLimits) {
    tracing::info!(model = engine.model_name(), "model loaded; ready");
    let engine = Arc::new(engine);
    let _ = state
        .queue
        .set(InferenceQueue::start(engine.clone(), limits));
    let _ = state.engine.set(engine);
}
