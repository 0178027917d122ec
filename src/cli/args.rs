//! The commands' flags, each with an environment fallback, and their defaults; the
//! plain settings below the CLI are made from them here.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::engine::{Mode, ModelConfig};
use crate::wire::SpecFields;

/// Default model: the only one whose weights ship in a registry we can reach.
pub const DEFAULT_MODEL: &str = "all-minilm-l6-v2-int8-cpu";
/// ONNX Runtime version fetched by `scripts/setup.py`.
const ORT_VERSION: &str = "1.31.1";

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
#[command(group(ArgGroup::new("labels_or_classifier").required(true).args(["labels", "classifier", "spec_file"])))]
pub struct SubmitArgs {
    /// The input: NDJSON, one `{"text": ..., "id": ...}` per line.
    pub file: PathBuf,
    /// Comma-separated labels.
    #[arg(long, value_delimiter = ',')]
    pub labels: Option<Vec<String>>,
    /// A saved classifier on the server: `name` (latest) or `name@vN`.
    #[arg(long)]
    pub classifier: Option<String>,
    /// A spec file, JSON or YAML, as for `zeroshot classifiers create` (labels,
    /// descriptions, examples, source_type, mode, threshold, adapt; its name and
    /// description are not used). Flags given next to it override its values.
    /// (`--config` is its old name, still accepted.)
    #[arg(long = "spec", alias = "config", value_name = "FILE")]
    pub spec_file: Option<PathBuf>,
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

impl SpecFlags {
    /// These flags over `fields` (a spec file's, or none).
    pub fn over(&self, fields: SpecFields) -> SpecFields {
        SpecFields {
            source_type: self.source_type.clone().or(fields.source_type),
            mode: self.mode.map(Into::into).or(fields.mode),
            threshold: self.threshold.or(fields.threshold),
            ..fields
        }
    }
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
    /// Adapt the latest version to unlabeled texts (or a completed batch job's) and
    /// save the next version; refused by the guard rails, nothing is saved.
    Adapt {
        name: String,
        /// Texts like the ones it will see, one per line (an NDJSON line's `text` field
        /// is read as its text).
        #[arg(long, required_unless_present = "job", conflicts_with = "job")]
        texts: Option<PathBuf>,
        /// A completed batch job of the account that used this classifier (its fitted
        /// vectors are reused).
        #[arg(long)]
        job: Option<String>,
        #[command(flatten)]
        scope: ClassifierScope,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Teach the latest version examples from a `text<TAB>label` file (with a header
    /// line, as `zeroshot eval` reads) and save the next version.
    Teach {
        name: String,
        file: PathBuf,
        #[command(flatten)]
        scope: ClassifierScope,
        #[command(flatten)]
        model: ModelArgs,
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
            | ClassifiersCommand::Delete { scope, .. }
            | ClassifiersCommand::Adapt { scope, .. }
            | ClassifiersCommand::Teach { scope, .. } => scope,
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

    /// The plain model settings these flags describe.
    pub fn config(&self) -> ModelConfig {
        ModelConfig {
            ort_library: self.ort_library(),
            model_dir: self.model_dir(),
            threads: self.threads,
            device: self.engine_device(),
            run_tokens: self.onnx_run_tokens.map(|tokens| tokens as usize),
        }
    }
}

/// `$ZEROSHOT_CACHE`, else `~/.cache/zeroshot`: where `scripts/setup.py` caches downloads.
pub(super) fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ZEROSHOT_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache").join("zeroshot")
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
    /// The classification fields of the flags (no labels with `--classifier`).
    pub fn spec_fields(&self) -> SpecFields {
        self.spec.over(SpecFields {
            labels: (!self.labels.is_empty()).then(|| self.labels.clone()),
            ..SpecFields::default()
        })
    }

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
    /// Measure a saved classifier adapted to part of each file: adapt on this many of
    /// its texts (`500`) or this share (`50%`), evenly spread and their labels unseen,
    /// as `POST /v1/classifiers/{name}/adapt` does, then score the rest one text at a
    /// time as `/v1/classify` does with the adapted version.
    #[arg(long, conflicts_with_all = ["baseline", "adapt"])]
    pub adapt_on: Option<crate::cli::eval::AdaptPart>,
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
