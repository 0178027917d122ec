//! The `zeroshot` command line: clap lives here and only here. Each command turns its
//! flags into the plain settings of the layer it drives: `serve` runs the server
//! (`crate::server`), `batch`, `webhooks`, `usage` and `classify --url` talk to a
//! server over HTTP (`client`, `remote`), and `keys`, `accounts`, `classifiers`,
//! `classify` and `eval` work on the database and the model directly (`local`).

pub mod args;
pub mod client;
pub mod eval;
mod local;
pub mod remote;
pub mod serve;
mod usage;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::db::Db;

use args::{
    AccountsCommand, BatchCommand, ClassifiersCommand, ClassifyArgs, EvalArgs, KeysCommand,
    ServerArgs, UsageArgs, WebhooksCommand,
};
use serve::ServeArgs;

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

/// Runs one command.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve::serve(*args).await,
        Command::Keys { command } => local::keys(command).await,
        Command::Classify(args) => match &args.url {
            Some(url) => Ok(remote::classify(url, &args).await?),
            None => local::classify(args).await,
        },
        Command::Classifiers { command } => local::classifiers(command).await,
        Command::Eval(args) => tokio::task::spawn_blocking(move || local::eval(args)).await?,
        Command::Batch { server, command } => Ok(remote::batch(&server, command).await?),
        Command::Webhooks { server, command } => Ok(remote::webhooks(&server, command).await?),
        Command::Usage { server, range } => Ok(usage::report(&server, &range).await?),
        Command::Accounts { command } => {
            usage::accounts(&Db::connect(&command.db().database_url).await?, command).await
        }
    }
}

/// The process's exit code for a command that failed: 1, or the server commands' own
/// codes (docs/cli.md#exit-codes).
pub fn exit_code(err: &anyhow::Error) -> u8 {
    err.downcast_ref::<remote::RemoteError>()
        .map_or(1, remote::RemoteError::exit_code)
}

/// Logs to stderr, filtered by `ZEROSHOT_LOG`. In JSON each line is one object: the
/// event's fields at the top level, the enclosing span's (a request's id, route,
/// method, account) under `span`. Text has colours only when stderr is a terminal.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("ZEROSHOT_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).with_span_list(false).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(flags: &[&str]) -> args::SubmitArgs {
        let args = ["zeroshot", "batch", "submit", "in.ndjson"]
            .iter()
            .chain(flags);
        match Cli::try_parse_from(args).expect("parses").command {
            Command::Batch {
                command: BatchCommand::Submit(args),
                ..
            } => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn a_spec_file_is_given_with_spec_or_its_old_name_config() {
        for flag in ["--spec", "--config"] {
            let args = submit(&[flag, "tickets.yaml"]);
            assert_eq!(args.spec_file, Some("tickets.yaml".into()), "{flag}");
        }
        assert!(Cli::try_parse_from(["zeroshot", "batch", "submit", "in.ndjson"]).is_err());
    }
}
