//! The `zeroshot` command: `serve`, `keys`, `classify`, and the rest (`--help`).

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use zeroshot::api::{self, classify, AppState, BatchSettings};
use zeroshot::batch::retention::Sweeper;
use zeroshot::batch::Worker;
use zeroshot::classifiers;
use zeroshot::config::{
    ClassifiersCommand, ClassifyArgs, Cli, Command, EvalArgs, KeysCommand, LogFormat, ModelArgs,
    ServeArgs, StorageArgs, StorageKind,
};
use zeroshot::db::{Db, DbError};
use zeroshot::engine::queue::{InferenceQueue, QueueLimits};
use zeroshot::engine::Engine;
use zeroshot::eval;
use zeroshot::remote;
use zeroshot::storage::{LocalStore, S3Config, S3Store, Storage};
use zeroshot::usage;

/// How often `/v1/classify` usage counted in memory is written to the database.
const USAGE_WRITES: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            // 1, or the server commands' own codes (docs/cli.md#exit-codes).
            ExitCode::from(
                err.downcast_ref::<remote::RemoteError>()
                    .map_or(1, remote::RemoteError::exit_code),
            )
        }
    }
}

/// Bounds glibc's malloc arenas to one per core, before any thread starts. By default
/// glibc allows eight per core, and the threads that score batch chunks (rayon, ONNX
/// Runtime, tokio) each keep their own arena's high-water mark: RSS climbed 27.6% over
/// a 10-minute soak with the defaults, 5.4% with two arenas on two cores
/// (docs/performance.md#soak-test). `MALLOC_ARENA_MAX` in the environment, which glibc
/// reads itself, wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets an allocator parameter; no thread has started yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// Logs to stderr, filtered by `ZEROSHOT_LOG`. In JSON each line is one object: the
/// event's fields at the top level, the enclosing span's (a request's id, route,
/// method, account) under `span`.
fn init_logging(format: LogFormat) {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("ZEROSHOT_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).with_span_list(false).init(),
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(*args).await,
        Command::Keys { command } => {
            keys(&Db::connect(&command.db().database_url).await?, command).await
        }
        Command::Classify(args) => match &args.url {
            Some(url) => Ok(remote::classify(url, &args).await?),
            None => classify_locally(args).await,
        },
        Command::Classifiers { command } => manage_classifiers(command).await,
        Command::Eval(args) => tokio::task::spawn_blocking(move || evaluate(args)).await?,
        Command::Batch { server, command } => Ok(remote::batch(&server, command).await?),
        Command::Webhooks { server, command } => Ok(remote::webhooks(&server, command).await?),
        Command::Usage { server, range } => Ok(usage::report(&server, &range).await?),
        Command::Accounts { command } => {
            usage::accounts(&Db::connect(&command.db().database_url).await?, command).await
        }
    }
}

fn load_engine(args: &ModelArgs) -> anyhow::Result<Engine> {
    args.load_engine()
        .with_context(|| format!("loading model {}", args.model_dir().display()))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let db = Db::connect(&args.db.database_url)
        .await
        .with_context(|| format!("opening database {}", args.db.database_url))?;
    if db.count_accounts().await? == 0 {
        match db.create_account("default").await {
            Ok(account) => {
                let key = db.create_key(&account).await?;
                println!(
                    "created account \"default\" with API key (shown once): {}",
                    key.secret
                );
            }
            // Another instance sharing this database got there first.
            Err(DbError::Conflict(_)) => {}
            Err(err) => return Err(err.into()),
        }
    }

    let metrics = zeroshot::metrics::install().context("installing the metrics recorder")?;
    let metrics = match args.metrics_addr {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("binding {address} (--metrics-addr)"))?;
            println!("metrics on http://{}/metrics", listener.local_addr()?);
            tokio::spawn(api::observe::serve_metrics(listener, metrics, db.clone()));
            None
        }
        None => Some(metrics),
    };

    let listener = tokio::net::TcpListener::bind((args.host, args.port))
        .await
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    let address = listener.local_addr()?;
    let storage = open_storage(&args.storage, &format!("http://{address}")).await?;

    let engine = Arc::new(OnceLock::new());
    let queue = Arc::new(OnceLock::new());
    let wake_workers = Arc::new(tokio::sync::Notify::new());
    let state = AppState {
        db: db.clone(),
        engine: engine.clone(),
        queue: queue.clone(),
        max_body_bytes: args.max_body_bytes,
        storage: storage.clone(),
        wake_workers: wake_workers.clone(),
        batch: BatchSettings {
            max_upload_bytes: args.batch.max_upload_bytes,
            upload_ttl: Duration::from_secs(args.batch.upload_ttl_secs),
            download_ttl: Duration::from_secs(args.batch.download_ttl_secs),
        },
        docs_ui_dir: args.docs_ui_dir(),
        metrics,
        cors_origins: args.cors_origin.clone(),
        webhooks: args.webhooks.settings(),
        rate_limiter: Default::default(),
    };
    if let Some(retention) = args.batch.retention() {
        tokio::spawn(
            Sweeper {
                db: db.clone(),
                storage: storage.clone(),
                retention,
                interval: Duration::from_secs(args.batch.retention_sweep_secs.max(1)),
            }
            .run(),
        );
    }
    // Webhooks go out on their own task: a slow receiver never holds the worker up.
    tokio::spawn(
        zeroshot::webhooks::Dispatcher {
            db: db.clone(),
            owner: format!("webhooks_{}", uuid::Uuid::new_v4().simple()),
            settings: args.webhooks.settings(),
        }
        .run(),
    );
    tokio::spawn(db.clone().write_classify_usage_every(USAGE_WRITES));
    // SIGTERM stops the HTTP server (in-flight requests finish) and the worker, which
    // hands its job back at the next chunk boundary instead of holding its lease.
    let stopping = CancellationToken::new();
    let worker = tokio::spawn(
        Worker {
            db: db.clone(),
            storage,
            engine: engine.clone(),
            owner: format!("worker_{}", uuid::Uuid::new_v4().simple()),
            lease: Duration::from_secs(args.batch.batch_lease_secs.max(1)),
            wake: wake_workers,
            stopping: stopping.clone(),
            storage_retry: Duration::from_secs(args.batch.storage_retry_secs),
            shard_bytes: args.batch.shard_bytes,
            chunks_in_flight: args.chunks_in_flight(),
        }
        .run(),
    );
    println!("listening on http://{address}");
    let model = args.model.clone();
    let loading = tokio::task::spawn_blocking(move || load_engine(&model));
    let shutdown = {
        let stopping = stopping.clone();
        async move {
            api::shutdown_signal().await;
            stopping.cancel();
        }
    };
    let server = tokio::spawn(api::serve(listener, state, shutdown));

    let loaded = loading.await.context("model loader panicked")??;
    tracing::info!(model = loaded.model_name(), "model loaded; ready");
    let loaded = Arc::new(loaded);
    let limits = QueueLimits {
        max_run_texts: args.max_run_texts.max(1),
        max_wait: Duration::from_millis(args.max_run_wait_ms),
        max_queued: args.max_queued_requests.max(1),
    };
    let _ = queue.set(InferenceQueue::start(loaded.clone(), limits));
    let _ = engine.set(loaded);
    server.await.context("server task panicked")??;
    worker.await.context("batch worker panicked")?;
    db.write_classify_usage().await?;
    Ok(())
}

async fn open_storage(args: &StorageArgs, own_url: &str) -> anyhow::Result<Arc<dyn Storage>> {
    Ok(match args.storage {
        StorageKind::Local => {
            let public_url = args.public_url.as_deref().unwrap_or(own_url);
            Arc::new(
                LocalStore::open(&args.data_dir, public_url).with_context(|| {
                    format!("opening local storage {}", args.data_dir.display())
                })?,
            )
        }
        StorageKind::S3 => {
            let required = |value: &Option<String>, flag: &str| {
                value
                    .clone()
                    .with_context(|| format!("--storage s3 needs {flag}"))
            };
            let config = S3Config {
                endpoint: required(&args.s3_endpoint, "--s3-endpoint")?,
                region: args.s3_region.clone(),
                bucket: args.s3_bucket.clone(),
                access_key_id: required(&args.s3_access_key_id, "--s3-access-key-id")?,
                secret_access_key: required(&args.s3_secret_access_key, "--s3-secret-access-key")?,
            };
            Arc::new(S3Store::connect(config).await.context("connecting to S3")?)
        }
    })
}

async fn manage_classifiers(command: ClassifiersCommand) -> anyhow::Result<()> {
    let scope = command.scope();
    let db = Db::connect(&scope.db.database_url).await?;
    let account = db
        .account_by_name(&scope.account)
        .await?
        .with_context(|| format!("no account {:?}", scope.account))?;
    let output = match &command {
        ClassifiersCommand::Create { file, model, .. }
        | ClassifiersCommand::Update { file, model, .. } => {
            let definition = classifiers::Definition::from_file(file)?;
            let (name, update) = match &command {
                ClassifiersCommand::Update { name, .. } => (name.clone(), true),
                _ => (
                    definition
                        .name
                        .clone()
                        .context("the definition has no \"name\"")?,
                    false,
                ),
            };
            let engine = Arc::new(
                tokio::task::spawn_blocking({
                    let model = model.clone();
                    move || load_engine(&model)
                })
                .await??,
            );
            let saved = classifiers::save(&db, &engine, &account.id, &name, &definition, update)
                .await
                .map_err(describe_classifier_error)?;
            serde_json::to_value(saved.view())?
        }
        ClassifiersCommand::List { .. } => serde_json::to_value(
            db.list_classifiers(&account.id)
                .await?
                .iter()
                .map(classifiers::describe_row)
                .collect::<Result<Vec<_>, _>>()?,
        )?,
        ClassifiersCommand::Show { reference, .. } => {
            let (name, version) =
                classifiers::parse_reference(reference).map_err(describe_classifier_error)?;
            let row = db
                .classifier(&account.id, &name, version)
                .await?
                .with_context(|| format!("no classifier {reference:?}"))?;
            serde_json::to_value(classifiers::describe_row(&row)?)?
        }
        ClassifiersCommand::Delete { name, .. } => {
            db.delete_classifier(&account.id, name).await?;
            serde_json::json!({ "deleted": name })
        }
    };
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}

/// CLI form of a classifier error: the field at fault first.
fn describe_classifier_error(err: classifiers::ClassifierError) -> anyhow::Error {
    match err {
        classifiers::ClassifierError::Invalid(err) => {
            anyhow::anyhow!("{}: {}", err.param, err.message)
        }
        other => other.into(),
    }
}

async fn keys(db: &Db, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create { account, .. } => {
            let account = match db.account_by_name(&account).await? {
                Some(existing) => existing,
                None => db.create_account(&account).await?,
            };
            let key = db.create_key(&account).await?;
            println!("{}", serde_json::to_string_pretty(&key)?);
        }
        KeysCommand::List { account, .. } => {
            let keys = db.list_keys(account.as_deref()).await?;
            println!("{}", serde_json::to_string_pretty(&keys)?);
        }
        KeysCommand::Revoke { id, .. } => {
            db.revoke_key(&id).await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

async fn classify_locally(args: ClassifyArgs) -> anyhow::Result<()> {
    let engine = tokio::task::spawn_blocking({
        let model = args.model.clone();
        move || load_engine(&model)
    })
    .await??;
    let (text, texts) = args.text_or_texts();
    let request = classify::ClassifyRequest {
        text,
        texts,
        labels: Some(args.labels),
        source_type: args.spec.source_type,
        mode: args.spec.mode.map(Into::into),
        threshold: args.spec.threshold,
        ..Default::default()
    };
    let response = classify::run(&engine, &request).map_err(|err| match err.param {
        Some(param) => anyhow::anyhow!("{param}: {}", err.message),
        None => anyhow::anyhow!(err.message),
    })?;
    println!("{}", serde_json::to_string_pretty(&response)?);
    Ok(())
}

fn evaluate(args: EvalArgs) -> anyhow::Result<()> {
    if !args.train.is_empty() && args.train.len() != args.data.len() {
        anyhow::bail!(
            "give one --train per --data ({} vs {})",
            args.train.len(),
            args.data.len()
        );
    }
    let engine = load_engine(&args.model)?;
    let descriptions: std::collections::BTreeMap<String, String> = match &args.descriptions {
        Some(path) => serde_json::from_str(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| {
            format!(
                "{}: expected a JSON object {{label: description}}",
                path.display()
            )
        })?,
        None => Default::default(),
    };
    let mut reports = serde_json::Map::new();
    let mut similarities = Vec::new();
    for (i, data) in args.data.iter().enumerate() {
        let options = eval::EvalOptions {
            train: match args.train.get(i) {
                Some(path) => eval::read_tsv(path)?,
                None => Vec::new(),
            },
            examples_per_label: args.examples_per_label,
            descriptions: descriptions.clone(),
            source_type: args.source_type.clone(),
            mode: args.mode.into(),
            threshold: args.threshold,
            fit_calibration: args.fit_calibration || args.rotate,
            baseline: args.baseline,
            adapt: args.adapt,
        };
        let mut report = eval::evaluate(&engine, &eval::read_tsv(data)?, &options)?;
        similarities.push(std::mem::take(&mut report.similarities));
        reports.insert(data.display().to_string(), serde_json::to_value(&report)?);
    }
    let mut output = serde_json::json!({ "model": engine.model_name(), "datasets": reports });
    if args.fit_calibration {
        let all: Vec<_> = similarities.concat();
        output["fitted_calibration"] = serde_json::to_value(eval::fit_calibration(&all))?;
    }
    if args.rotate {
        let rotation: serde_json::Map<String, serde_json::Value> = args
            .data
            .iter()
            .zip(eval::rotate(&similarities, args.threshold))
            .map(|(data, held_out)| {
                Ok((data.display().to_string(), serde_json::to_value(held_out)?))
            })
            .collect::<anyhow::Result<_>>()?;
        output["rotation"] = rotation.into();
    }
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}
