//! The CLI's server commands, on top of [`super::client`]: `zeroshot batch ...` and
//! `zeroshot classify --url`. JSON and results go to stdout (or `--output`); progress
//! goes to stderr, as a live bar on a terminal and as a plain line now and then
//! otherwise (logs, CI). [`RemoteError::exit_code`] gives scripts distinct codes.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::args::{BatchCommand, ClassifyArgs, ServerArgs, SubmitArgs, WebhooksCommand};
use super::client::{
    ClassifyRequest, Client, ClientError, CreateRequest, CreatedJob, Job, JobStatus,
};
use crate::classifiers::{Definition, DefinitionFileError};
use crate::wire::SpecFields;

/// How often a followed job is polled.
const POLL: Duration = Duration::from_secs(1);
/// Without a terminal, a progress line at least this often (and on every status change).
const LINE_EVERY: Duration = Duration::from_secs(10);
/// Failed polls in a row (network, not API errors) before `--wait` gives up.
const POLL_RETRIES: u32 = 5;

/// Why a server command failed; each kind has its exit code.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Definition(#[from] DefinitionFileError),
    #[error("{}: {error}", path.display())]
    Input {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {error}", path.display())]
    Output {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file is uploaded, but the server would not start the job (say, another job
    /// of the account is processing).
    #[error("job {id} was created and its file uploaded, but it did not start: {reason}; start it later with `zeroshot batch start {id}`")]
    NotStarted { id: String, reason: ClientError },
    /// A followed job is pending: nothing will happen until it is started.
    #[error("job {id} is pending: it was never started (`zeroshot batch start {id}`)")]
    Pending { id: String },
    /// A followed job ended `failed`.
    #[error("job {id} failed: {message}")]
    JobFailed { id: String, message: String },
    /// A followed job was cancelled; its rows scored before that can still be downloaded.
    #[error("job {id} was cancelled (`zeroshot batch results {id}` downloads the rows scored before that)")]
    JobCancelled { id: String },
    /// Ctrl-C while following a job; the job itself goes on.
    #[error(
        "interrupted; job {id} goes on on the server (`zeroshot batch wait {id}` follows it again)"
    )]
    Interrupted { id: String },
}

impl RemoteError {
    /// 3 when a followed job failed, 130 when following was interrupted, else 1
    /// (clap's usage errors are 2).
    pub fn exit_code(&self) -> u8 {
        match self {
            RemoteError::JobFailed { .. } | RemoteError::JobCancelled { .. } => 3,
            RemoteError::Interrupted { .. } => 130,
            _ => 1,
        }
    }
}

/// `zeroshot batch ...`.
pub async fn batch(server: &ServerArgs, command: BatchCommand) -> Result<(), RemoteError> {
    let client = Client::new(&server.url, server.api_key.as_deref())?;
    match command {
        BatchCommand::Submit(args) => submit(&client, &args).await,
        BatchCommand::List { limit, after } => {
            println!(
                "{}",
                client.list_jobs(limit, after.as_deref()).await?.pretty()
            );
            Ok(())
        }
        BatchCommand::Status { id } => {
            println!("{}", client.job(&id).await?.pretty());
            Ok(())
        }
        BatchCommand::Start { id } => {
            println!("{}", client.start_job(&id).await?.pretty());
            Ok(())
        }
        BatchCommand::Wait { id, output } => {
            follow(&client, &id).await?;
            save_results(&client, &id, output.as_deref()).await
        }
        BatchCommand::Results { id, output } => save_results(&client, &id, output.as_deref()).await,
        BatchCommand::Cancel { id } => {
            println!("{}", client.cancel_job(&id).await?.pretty());
            Ok(())
        }
        BatchCommand::Delete { id } => {
            client.delete_job(&id).await?;
            println!("{}", serde_json::json!({ "deleted": id }));
            Ok(())
        }
    }
}

/// `zeroshot webhooks ...`.
pub async fn webhooks(server: &ServerArgs, command: WebhooksCommand) -> Result<(), RemoteError> {
    let client = Client::new(&server.url, server.api_key.as_deref())?;
    match command {
        WebhooksCommand::Secret { rotate } => {
            println!("{}", client.webhook_secret(rotate).await?.pretty());
        }
    }
    Ok(())
}

/// `zeroshot classify --url`: the server's answer, printed as the local command prints.
pub async fn classify(url: &str, args: &ClassifyArgs) -> Result<(), RemoteError> {
    let client = Client::new(url, args.api_key.as_deref())?;
    let (text, texts) = args.text_or_texts();
    let mut request = ClassifyRequest {
        text,
        texts,
        classifier: args.classifier.clone(),
        ..ClassifyRequest::default()
    };
    request.set_spec_fields(args.spec_fields());
    println!("{}", client.classify(&request).await?.pretty());
    Ok(())
}

/// The job body from the flags, over the `--spec` file's values.
fn job_request(args: &SubmitArgs) -> Result<CreateRequest, RemoteError> {
    let (file_fields, file_adapt) = match &args.spec_file {
        Some(path) => {
            let definition = Definition::from_file(path)?;
            (definition.spec_fields(), definition.adapt)
        }
        None => (SpecFields::default(), None),
    };
    let mut fields = args.spec.over(file_fields);
    fields.labels = args.labels.clone().or(fields.labels);
    let mut request = CreateRequest {
        classifier: args.classifier.clone(),
        adapt: args.adapt().or(file_adapt),
        metadata: (!args.metadata.is_empty()).then(|| args.metadata.iter().cloned().collect()),
        webhook_url: args.webhook_url.clone(),
        ..CreateRequest::default()
    };
    request.set_spec_fields(fields);
    Ok(request)
}

/// Create, upload, start; with `--wait`, follow and download.
async fn submit(client: &Client, args: &SubmitArgs) -> Result<(), RemoteError> {
    let request = job_request(args)?;
    // A missing file fails before a job exists.
    let size = tokio::fs::metadata(&args.file)
        .await
        .map_err(|error| RemoteError::Input {
            path: args.file.clone(),
            error,
        })?
        .len();
    let created = client.create_job(&request).await?.value;
    let id = created.job.job_id.clone();
    if let Err(err) = upload(client, &created, &args.file, size).await {
        // A job without its file is of no use: do not leave it behind.
        let _ = client.delete_job(&id).await;
        return Err(err.into());
    }
    let started = client
        .start_job(&id)
        .await
        .map_err(|reason| RemoteError::NotStarted {
            id: id.clone(),
            reason,
        })?;
    if !args.wait {
        println!("{}", started.pretty());
        eprintln!("{id} started; follow it with `zeroshot batch wait {id}`");
        return Ok(());
    }
    follow(client, &id).await?;
    save_results(client, &id, args.output.as_deref()).await
}

/// Uploads the job's file with a byte meter on stderr.
async fn upload(
    client: &Client,
    job: &CreatedJob,
    path: &Path,
    size: u64,
) -> Result<(), ClientError> {
    let meter = Arc::new(UploadMeter::new(&job.job.job_id, size));
    let began = Instant::now();
    let result = client
        .upload(job, path, {
            let meter = meter.clone();
            move |bytes| meter.add(bytes)
        })
        .await;
    if let Some(bar) = &meter.bar {
        bar.finish_and_clear();
    }
    result?;
    eprintln!(
        "{}: uploaded {} in {:.1} s",
        job.job.job_id,
        HumanBytes(size),
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Upload progress: a byte bar on a terminal, else a line every [`LINE_EVERY`].
struct UploadMeter {
    id: String,
    size: u64,
    bar: Option<ProgressBar>,
    /// Bytes sent, and when the last line was printed (lines only).
    sent: Mutex<(u64, Instant)>,
}

impl UploadMeter {
    fn new(id: &str, size: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} uploading [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec}, ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar
        });
        Self {
            id: id.to_string(),
            size,
            bar,
            sent: Mutex::new((0, Instant::now())),
        }
    }

    fn add(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
            return;
        }
        let mut sent = self.sent.lock().expect("meter lock");
        sent.0 += bytes;
        if sent.1.elapsed() >= LINE_EVERY {
            sent.1 = Instant::now();
            eprintln!(
                "{}: uploading, {}/{}",
                self.id,
                HumanBytes(sent.0),
                HumanBytes(self.size)
            );
        }
    }
}

/// Polls a started job until it ends, showing its progress; the completed job, or why not.
async fn follow(client: &Client, id: &str) -> Result<Job, RemoteError> {
    let mut display = JobDisplay::new(id);
    let mut failed_polls = 0;
    loop {
        match client.job(id).await {
            Ok(answer) => {
                failed_polls = 0;
                let job = answer.value;
                display.show(&job);
                match job.status {
                    JobStatus::Completed => return Ok(job),
                    JobStatus::Failed => {
                        return Err(RemoteError::JobFailed {
                            id: id.to_string(),
                            message: job.error.unwrap_or_else(|| "no reason given".into()),
                        })
                    }
                    JobStatus::Cancelled => {
                        return Err(RemoteError::JobCancelled { id: id.to_string() })
                    }
                    JobStatus::Pending => return Err(RemoteError::Pending { id: id.to_string() }),
                    JobStatus::Processing | JobStatus::Cancelling => {}
                }
            }
            // The server's answer is final; the network may come back.
            Err(ClientError::Http(err)) if failed_polls < POLL_RETRIES => {
                failed_polls += 1;
                display.note(&format!("{id}: polling failed ({err}); retrying"));
            }
            Err(err) => {
                display.clear();
                return Err(err.into());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = tokio::signal::ctrl_c() => {
                display.clear();
                return Err(RemoteError::Interrupted { id: id.to_string() });
            }
        }
    }
}

/// A followed job on stderr: a bar on a terminal, else [`describe`] lines.
struct JobDisplay {
    bar: Option<ProgressBar>,
    /// Lines only: the status and time of the last line printed.
    last_line: Option<(JobStatus, Instant)>,
}

impl JobDisplay {
    fn new(id: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix} {msg}").expect("valid template"),
            );
            bar.set_prefix(id.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            last_line: None,
        }
    }

    /// Shows a poll's answer; an ended job's line stays.
    fn show(&mut self, job: &Job) {
        let ended = matches!(
            job.status,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        );
        if let Some(bar) = &self.bar {
            if ended {
                bar.finish_and_clear();
                eprintln!("{}", describe(job));
                return;
            }
            match job.requests_total {
                Some(total) => {
                    bar.set_message(rate_and_eta(job));
                    if bar.length().is_none() {
                        bar.set_style(
                            ProgressStyle::with_template(
                                "{spinner} [{wide_bar}] {pos}/{len} lines ({percent}%){msg}",
                            )
                            .expect("valid template")
                            .progress_chars("=> "),
                        );
                        bar.set_length(total.max(0) as u64);
                    }
                    bar.set_position(job.lines_done());
                }
                None => bar.set_message("counting lines"),
            }
            return;
        }
        let due = match self.last_line {
            None => true,
            Some((status, at)) => status != job.status || at.elapsed() >= LINE_EVERY,
        };
        if due {
            eprintln!("{}", describe(job));
            self.last_line = Some((job.status, Instant::now()));
        }
    }

    /// A message between progress updates.
    fn note(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(message),
            None => eprintln!("{message}"),
        }
    }

    /// Removes the bar (the command is ending otherwise than by the job's end).
    fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `batch_… processing: 120/300 lines (40.0%), 2 failed, 85 lines/s, ETA 3s`.
fn describe(job: &Job) -> String {
    let mut line = format!("{} {}", job.job_id, job.status.as_str());
    match job.requests_total {
        Some(total) => line.push_str(&format!(
            ": {}/{total} lines ({:.1}%)",
            job.lines_done(),
            job.progress.percent
        )),
        None if job.status == JobStatus::Processing => line.push_str(": counting lines"),
        None => {}
    }
    if job.requests_failed > 0 {
        line.push_str(&format!(", {} failed", job.requests_failed));
    }
    line + &rate_and_eta(job)
}

/// `, 85 lines/s, ETA 3s` as far as the server knows them.
fn rate_and_eta(job: &Job) -> String {
    let mut out = String::new();
    if let Some(rate) = job.progress.lines_per_second {
        out.push_str(&format!(", {rate:.0} lines/s"));
    }
    if let (JobStatus::Processing, Some(eta)) = (job.status, job.progress.eta_seconds) {
        out.push_str(&format!(
            ", ETA {}",
            indicatif::HumanDuration(Duration::from_secs_f64(eta.max(0.0)))
        ));
    }
    out
}

/// Downloads a completed job's results to `output` (whole or not at all: written
/// beside it, then renamed) or to stdout.
async fn save_results(client: &Client, id: &str, output: Option<&Path>) -> Result<(), RemoteError> {
    let link = client.results_link(id).await?.value;
    let Some(path) = output else {
        client.download(&link, &mut tokio::io::stdout()).await?;
        return Ok(());
    };
    let output_error = |error| RemoteError::Output {
        path: path.to_path_buf(),
        error,
    };
    let mut partial = path.as_os_str().to_owned();
    partial.push(".part");
    let partial = PathBuf::from(partial);
    let mut file = tokio::fs::File::create(&partial)
        .await
        .map_err(output_error)?;
    let written = match client.download(&link, &mut file).await {
        Ok(written) => written,
        Err(err) => {
            drop(file);
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(err.into());
        }
    };
    drop(file);
    tokio::fs::rename(&partial, path)
        .await
        .map_err(output_error)?;
    eprintln!(
        "{id}: results written to {} ({})",
        path.display(),
        HumanBytes(written)
    );
    Ok(())
}
