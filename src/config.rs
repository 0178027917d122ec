//! Command-line flags, each with an environment fallback, and their defaults.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::engine::Mode;

/// Default model: the only one whose weights ship in a registry we can reach.
pub const DEFAULT_MODEL: &str = "all-minilm-l6-v2-int8-cpu";
/// ONNX Runtime version fetched by `scripts/setup.py`.
const ORT_VERSION: &str = "1.31.1";

/// zeroshot: self-hosted zero-shot text classification.
#[derive(Debug, Parser)]
#[command(name = "zeroshot", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines on stderr: `text` for people, `json` (one object a line) for collectors.
    #[arg(
        long,
        global = true,
        env = "ZEROSHOT_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service.
    Serve(Box<ServeArgs>),
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Classify texts locally, without a server; prints the same JSON as the API.
    Classify(ClassifyArgs),
    /// Manage saved classifiers (JSON or YAML definition files).
    Classifiers {
        #[command(subcommand)]
        command: ClassifiersCommand,
    },
    /// Measure accuracy on a labelled TSV (`text<TAB>label`, with a header).
    Eval(EvalArgs),
    /// Batch jobs on a zeroshot server: submit a file, follow it, fetch its results.
    Batch {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: BatchCommand,
    },
    /// Webhooks on a zeroshot server: the account's signing secret.
    Webhooks {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: WebhooksCommand,
    },
    /// The account's texts and tokens per day on a zeroshot server, and its limits.
    Usage {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        range: UsageArgs,
    },
    /// Accounts' limits: requests per second and monthly tokens (on the database).
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
}

/// `zeroshot usage`: which days, and how to print them.
#[derive(Debug, Clone, Args)]
pub struct UsageArgs {
    /// First day, YYYY-MM-DD UTC [default: the first of --to's month].
    #[arg(long)]
    pub from: Option<String>,
    /// Last day, included, YYYY-MM-DD UTC [default: today]; at most 366 days.
    #[arg(long)]
    pub to: Option<String>,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// An account, its limits and the tokens it used this month.
    Show {
        account: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Sets or clears an account's limits (others stay as they are), then shows it.
    Limits {
        account: String,
        /// `/v1/classify` requests per second (per server instance; bursts up to N).
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..), conflicts_with = "no_rps")]
        rps: Option<i64>,
        /// No requests-per-second limit.
        #[arg(long)]
        no_rps: bool,
        /// Tokens per UTC calendar month, `/v1/classify` and batch together.
        #[arg(long, value_parser = clap::value_parser!(i64).range(0..), conflicts_with = "no_monthly_tokens")]
        monthly_tokens: Option<i64>,
        /// No monthly token quota.
        #[arg(long)]
        no_monthly_tokens: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

impl AccountsCommand {
    /// The database every accounts command works on.
    pub fn db(&self) -> &DbArgs {
        match self {
            AccountsCommand::Show { db, .. } | AccountsCommand::Limits { db, .. } => db,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Print the account's webhook signing secret; --rotate replaces it (the previous
    /// one keeps signing for 24 hours) or makes the first.
    Secret {
        #[arg(long)]
        rotate: bool,
    },
}

/// Which zeroshot server the client commands talk to, and with which key.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Base URL of the zeroshot server.
    #[arg(
        long,
        env = "ZEROSHOT_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// API key (from `zeroshot keys create`, or the one the first `serve` printed).
    #[arg(long, env = "ZEROSHOT_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// Create a job, upload FILE to it and start it; with --wait, follow it to the end
    /// and download the results.
    Submit(SubmitArgs),
    /// The account's jobs, newest first (one page; --after continues).
    List {
        /// Jobs per page (1-100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// The `next_cursor` of the previous page.
        #[arg(long)]
        after: Option<String>,
    },
    /// One job's status and progress.
    Status { id: String },
    /// Start a job whose file is uploaded (a failed job starts again from scratch).
    Start { id: String },
    /// Follow a started job to its end, then download its results.
    Wait {
        id: String,
        /// Write the results here instead of to stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Download a completed job's results.
    Results {
        id: String,
        /// Write the results here instead of to stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Stop a job: a pending one at once, a processing one at its next chunk (its
    /// rows scored so far stay downloadable).
    Cancel { id: String },
    /// Delete a job that is not processing, with its input and results.
    Delete { id: String },
}

/// How texts are classified, as `zeroshot classify` and `zeroshot batch submit` take it.
#[derive(Debug, Clone, Args)]
pub struct SpecFlags {
    /// `single`: one label per text; `multi`: every label at or above the threshold
    /// [default: single, or the saved classifier's].
    #[arg(long, value_enum)]
    pub mode: Option<CliMode>,
    /// Multi mode: return labels at or above this probability.
    #[arg(long)]
    pub threshold: Option<f32>,
    /// What the texts are ("support ticket", "news headline"), used in label sentences.
    #[arg(long)]
    pub source_type: Option<String>,
}

/// `zeroshot batch submit`: the job's classification, the file, and what to do after.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("spec").required(true).args(["labels", "classifier", "config"])))]
pub struct SubmitArgs {
    /// The input: NDJSON, one `{"text": ..., "id": ...}` per line.
    pub file: PathBuf,
    /// Comma-separated labels.
    #[arg(long, value_delimiter = ',')]
    pub labels: Option<Vec<String>>,
    /// A saved classifier on the server: `name` (latest) or `name@vN`.
    #[arg(long)]
    pub classifier: Option<String>,
    /// A classifier definition file, JSON or YAML, as for `zeroshot classifiers create`
    /// (labels, descriptions, examples, source_type, mode, threshold, adapt; its name
    /// and description are not used). Flags given next to it override its values.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub spec: SpecFlags,
    /// Fit the label vectors to this file's texts before scoring (the server's default,
    /// or the saved classifier's choice).
    #[arg(long, overrides_with = "no_adapt")]
    pub adapt: bool,
    /// Score with the label vectors as they are.
    #[arg(long, overrides_with = "adapt")]
    pub no_adapt: bool,
    /// Job metadata as `key=value`; repeat for more.
    #[arg(long, value_parser = key_value)]
    pub metadata: Vec<(String, String)>,
    /// Tell this URL when the job ends (a signed `batch.completed`/`failed`/`cancelled`).
    #[arg(long)]
    pub webhook_url: Option<String>,
    /// Follow the job with a progress display until it ends, then download the results.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: write the results here instead of to stdout.
    #[arg(short, long, requires = "wait")]
    pub output: Option<PathBuf>,
}

impl SubmitArgs {
    /// `--adapt` / `--no-adapt`, the last one given; None leaves it to the server.
    pub fn adapt(&self) -> Option<bool> {
        match (self.adapt, self.no_adapt) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        }
    }
}

/// `key=value` of `--metadata`.
fn key_value(arg: &str) -> Result<(String, String), String> {
    arg.split_once('=')
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .ok_or_else(|| format!("expected key=value, got {arg:?}"))
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key (and the account, if it does not exist yet); prints the secret once.
    Create {
        #[arg(long)]
        account: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke a key by id.
    Revoke {
        id: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClassifiersCommand {
    /// Save version 1 of a new classifier from a file (its `name` field names it).
    Create {
        file: PathBuf,
        #[command(flatten)]
        scope: ClassifierScope,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Save a new version of a classifier from a file.
    Update {
        name: String,
        file: PathBuf,
        #[command(flatten)]
        scope: ClassifierScope,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// The latest version of each classifier.
    List {
        #[command(flatten)]
        scope: ClassifierScope,
    },
    /// One classifier: `name` (latest) or `name@vN`.
    Show {
        reference: String,
        #[command(flatten)]
        scope: ClassifierScope,
    },
    /// Delete every version of a classifier.
    Delete {
        name: String,
        #[command(flatten)]
        scope: ClassifierScope,
    },
}

/// Whose classifiers, in which database.
#[derive(Debug, Clone, Args)]
pub struct ClassifierScope {
    #[arg(long, default_value = "default")]
    pub account: String,
    #[command(flatten)]
    pub db: DbArgs,
}

impl ClassifiersCommand {
    /// The account and database every classifiers command works on.
    pub fn scope(&self) -> &ClassifierScope {
        match self {
            ClassifiersCommand::Create { scope, .. }
            | ClassifiersCommand::Update { scope, .. }
            | ClassifiersCommand::List { scope }
            | ClassifiersCommand::Show { scope, .. }
            | ClassifiersCommand::Delete { scope, .. } => scope,
        }
    }
}

impl KeysCommand {
    /// The database every keys command works on.
    pub fn db(&self) -> &DbArgs {
        match self {
            KeysCommand::Create { db, .. }
            | KeysCommand::List { db, .. }
            | KeysCommand::Revoke { db, .. } => db,
        }
    }
}

/// Where the database lives.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// `sqlite://path` (embedded default) or `postgres://...` (several instances).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://data/zeroshot.db"
    )]
    pub database_url: String,
}

/// Which model to load and how.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Model name (a directory under --models-dir) or a path to a model directory.
    #[arg(long, env = "ZEROSHOT_MODEL", default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Where `scripts/setup.py` puts models [default: $ZEROSHOT_CACHE/models].
    #[arg(long, env = "ZEROSHOT_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// The ONNX Runtime shared library [default: $ZEROSHOT_CACHE/onnxruntime/<version>/libonnxruntime.so.<version>].
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_library: Option<PathBuf>,
    /// ONNX Runtime intra-op threads; 0 means one per core.
    #[arg(long, env = "ZEROSHOT_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// Where inference runs. `cuda` needs an ONNX Runtime built with the CUDA provider
    /// (libonnxruntime_providers_cuda.so beside the library); it fails rather than
    /// falling back to the CPU.
    #[arg(long, env = "ZEROSHOT_DEVICE", value_enum, default_value = "cpu")]
    pub device: Device,
    /// The GPU to use with `--device cuda`.
    #[arg(long, env = "ZEROSHOT_CUDA_DEVICE_ID", default_value_t = 0)]
    pub cuda_device_id: i32,
    /// Tokens per ONNX run, padding included (texts × the longest); texts per run are
    /// one per 128 of them [default: 4096 on the CPU, 32768 with `--device cuda`].
    #[arg(long, env = "ZEROSHOT_ONNX_RUN_TOKENS", value_parser = clap::value_parser!(u32).range(1..))]
    pub onnx_run_tokens: Option<u32>,
}

/// Only the model flags, for callers that are not the CLI (tests, benches).
#[derive(Debug, Parser)]
struct ModelOnly {
    #[command(flatten)]
    model: ModelArgs,
}

impl ModelArgs {
    /// The model settings from the environment alone, with the CLI's defaults.
    pub fn from_env() -> Self {
        ModelOnly::parse_from(["zeroshot"]).model
    }

    /// The model directory to load.
    pub fn model_dir(&self) -> PathBuf {
        let as_path = PathBuf::from(&self.model);
        if self.model.contains('/') || as_path.is_dir() && as_path.join("manifest.json").is_file() {
            return as_path;
        }
        self.models_dir
            .clone()
            .unwrap_or_else(|| cache_dir().join("models"))
            .join(&self.model)
    }

    /// The execution device, with its id.
    pub fn engine_device(&self) -> crate::engine::Device {
        match self.device {
            Device::Cpu => crate::engine::Device::Cpu,
            Device::Cuda => crate::engine::Device::Cuda {
                device_id: self.cuda_device_id,
            },
        }
    }

    /// The ONNX Runtime library to load.
    pub fn ort_library(&self) -> PathBuf {
        self.ort_library.clone().unwrap_or_else(|| {
            cache_dir()
                .join("onnxruntime")
                .join(ORT_VERSION)
                .join(format!("libonnxruntime.so.{ORT_VERSION}"))
        })
    }

    /// Loads the engine these flags describe (ONNX Runtime once per process, then the model).
    pub fn load_engine(&self) -> Result<crate::engine::Engine, crate::engine::EngineError> {
        let device = self.engine_device();
        crate::engine::Engine::load(
            &self.ort_library(),
            &self.model_dir(),
            self.threads,
            device,
            crate::engine::RunLimits::for_device(
                device,
                self.onnx_run_tokens.map(|tokens| tokens as usize),
            ),
        )
    }
}

/// `$ZEROSHOT_CACHE`, else `~/.cache/zeroshot`: where `scripts/setup.py` caches downloads.
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ZEROSHOT_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache").join("zeroshot")
}

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

#[derive(Debug, Clone, Args)]
pub struct ClassifyArgs {
    /// Comma-separated labels.
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "classifier",
        conflicts_with = "classifier"
    )]
    pub labels: Vec<String>,
    /// With --url: a saved classifier on the server (`name` or `name@vN`) instead of --labels.
    #[arg(long, requires = "url")]
    pub classifier: Option<String>,
    /// Classify on this zeroshot server (POST /v1/classify) instead of loading the model
    /// here; the model flags are then unused. ZEROSHOT_URL is not read here, so a
    /// variable set for `zeroshot batch` never turns local runs into server calls.
    #[arg(long)]
    pub url: Option<String>,
    /// With --url: the API key.
    #[arg(long, env = "ZEROSHOT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    #[command(flatten)]
    pub spec: SpecFlags,
    /// One or more texts.
    #[arg(required = true)]
    pub texts: Vec<String>,
    #[command(flatten)]
    pub model: ModelArgs,
}

impl ClassifyArgs {
    /// One text goes as `text` (answered as one object), several as `texts`.
    pub fn text_or_texts(&self) -> (Option<String>, Option<Vec<String>>) {
        match self.texts.as_slice() {
            [one] => (Some(one.clone()), None),
            many => (None, Some(many.to_vec())),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Labelled test data; repeat for several data sets (each is scored on its own labels).
    #[arg(long, required = true)]
    pub data: Vec<PathBuf>,
    /// Labelled data to take examples from, one per --data, in the same order.
    #[arg(long, requires = "examples_per_label")]
    pub train: Vec<PathBuf>,
    /// Examples per label taken from --train (the first K in file order).
    #[arg(long, default_value_t = 0)]
    pub examples_per_label: usize,
    /// JSON file {label: description}.
    #[arg(long)]
    pub descriptions: Option<PathBuf>,
    #[arg(long)]
    pub source_type: Option<String>,
    #[arg(long, value_enum, default_value = "single")]
    pub mode: CliMode,
    /// Multi-mode threshold for the recall figures.
    #[arg(long, default_value_t = 0.3)]
    pub threshold: f32,
    /// Also fit the model's calibration constants on this data.
    #[arg(long)]
    pub fit_calibration: bool,
    /// Score with the plain baseline instead (each label name with underscores as spaces,
    /// embedded as is), to measure what the default method adds.
    #[arg(long, conflicts_with_all = ["examples_per_label", "descriptions", "source_type"])]
    pub baseline: bool,
    /// Score each file as a batch job with `adapt: true` would: the same sample, the
    /// same fit of the label vectors to the file's texts, the same scoring (with the
    /// manifest's `adapted_calibration`, which --fit-calibration then fits).
    #[arg(long, conflicts_with = "baseline")]
    pub adapt: bool,
    /// Check that multi mode's calibration transfers to data it was not fitted on: for
    /// each --data file, fit the constants on the other files and report that file's
    /// multi-mode recall and labels per text at --threshold.
    #[arg(long)]
    pub rotate: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// `--device` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    Cpu,
    Cuda,
}

/// `--mode` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CliMode {
    Single,
    Multi,
}

impl From<CliMode> for Mode {
    fn from(mode: CliMode) -> Self {
        match mode {
            CliMode::Single => Mode::Single,
            CliMode::Multi => Mode::Multi,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
