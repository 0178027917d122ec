//! The streaming batch worker. Every instance runs one: it claims an active job
//! nobody holds (just started, or whose worker's lease expired), streams the input
//! from the last checkpoint, scores chunks (rayon-parallel parsing and row building,
//! ONNX inference) while reading the next one and renewing its lease, appends rows to
//! the results (and error rows to the errors object) and commits a checkpoint after
//! each part. A cancel asked on any instance is seen at the next lease renewal.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rayon::prelude::*;
use serde_json::{json, Map, Value};
use tokio::io::BufReader;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::errors_key;
use super::lines::{parse_line, LineReader, RawLine};
use super::sample::Sampler;
use crate::db::batch::{status, Checkpoint, Claimed, JobRow, Lease};
use crate::db::Db;
use crate::engine::{
    AdaptationReport, Adapted, AdaptedLabels, ClassificationSpec, Engine, LabelScorer,
};
use crate::outage::{self, Dependency, Fault};
use crate::storage::{ByteStream, OutputState, Storage, StorageError};

/// Lines scored per engine call. The engine sorts a call's texts by length before
/// batching them, so larger chunks pad less: 512 lines of 20-80 word tickets run 4% more
/// tokens than the texts hold, 2048 lines 1%.
const CHUNK_LINES: usize = 2048;
/// Input bytes per chunk at most (so memory stays flat with long lines).
const CHUNK_BYTES: usize = 1024 * 1024;
/// Read buffer for the input stream.
const READ_BUFFER: usize = 256 * 1024;
/// How often an idle worker looks for abandoned jobs.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What a worker needs; cheap to clone.
#[derive(Clone)]
pub struct Worker {
    pub db: Db,
    pub storage: Arc<dyn Storage>,
    pub engine: Arc<OnceLock<Arc<Engine>>>,
    /// Identifies this worker's leases; unique per process.
    pub owner: String,
    /// A job whose lease is not renewed for this long is taken over by another worker.
    pub lease: Duration,
    /// Woken when a job is started, so it begins without waiting for the next poll.
    pub wake: Arc<Notify>,
    /// Cancelled when the process is asked to stop (SIGTERM): the worker hands its job
    /// back at the next chunk boundary and returns.
    pub stopping: CancellationToken,
    /// How long the storage may stay unreachable before a job is failed (a database
    /// outage is waited out: without it a job can be neither continued nor failed).
    pub storage_retry: Duration,
}

/// Why a job stopped before completing.
#[derive(Debug, thiserror::Error)]
enum JobError {
    /// The job itself cannot complete; it is marked failed with this message.
    #[error("{0}")]
    Fatal(String),
    /// Another worker holds the job now (our lease expired); leave it alone.
    #[error("lease lost")]
    LeaseLost,
    /// This process is stopping; the job goes back to the other workers as of its
    /// last checkpoint.
    #[error("stopping")]
    Stopping,
    /// Cancel was asked before any line was scored.
    #[error("cancel asked")]
    CancelAsked,
    /// A passing fault of the database or the storage: the job is tried again from its
    /// last checkpoint, with backoff.
    #[error(transparent)]
    Unavailable(#[from] Fault),
}

impl From<crate::db::DbError> for JobError {
    fn from(err: crate::db::DbError) -> Self {
        JobError::Unavailable(err.into())
    }
}

impl From<StorageError> for JobError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::NotFound(key) => {
                JobError::Fatal(format!("input file {key:?} is missing"))
            }
            // Space is not freed by waiting; the job is failed and its partial outputs
            // deleted, so it can be started again once there is room.
            StorageError::Full(message) => JobError::Fatal(format!("storage is full: {message}")),
            other => JobError::Unavailable(Fault {
                dependency: Dependency::Storage,
                message: other.to_string(),
            }),
        }
    }
}

/// Counters that travel with a checkpoint.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    completed: i64,
    failed: i64,
    tokens: i64,
}

impl Worker {
    fn lease_ms(&self) -> i64 {
        self.lease.as_millis() as i64
    }

    /// Runs until the process is asked to stop (then hands its job back first).
    pub async fn run(self) {
        while !self.stopping.is_cancelled() {
            let Some(engine) = self.engine.get().cloned() else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            match self.db.claim_job(&self.owner, self.lease_ms()).await {
                Ok(Some(Claimed { job, resumed })) => {
                    outage::recovered(Dependency::Database);
                    if resumed {
                        crate::metrics::job_resumed();
                    }
                    tracing::info!(job = %job.id, resumed, "processing batch job");
                    self.run_job(&engine, job).await;
                }
                Ok(None) => {
                    outage::recovered(Dependency::Database);
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = self.stopping.cancelled() => {}
                        _ = tokio::time::sleep(POLL_INTERVAL) => {}
                    }
                }
                Err(err) => {
                    let outage = outage::fault(&err.into());
                    self.pause(outage.backoff().max(POLL_INTERVAL)).await;
                }
            }
        }
    }

    /// Runs a claimed job until it ends or leaves this worker. A passing fault is tried
    /// again from the last checkpoint (keeping the lease) after a backoff, until the
    /// storage has been away longer than its budget: then the job fails naming the cause.
    async fn run_job(&self, engine: &Arc<Engine>, job: JobRow) {
        let id = job.id.clone();
        let mut job = job;
        loop {
            let mut fault = match self.process(engine, job).await {
                Ok(ending) => {
                    tracing::info!(job = %id, ?ending, "batch job ended");
                    return;
                }
                Err(JobError::Fatal(message)) => return self.fail(&id, &message).await,
                Err(JobError::Stopping) => return self.hand_back(&id).await,
                Err(JobError::LeaseLost | JobError::CancelAsked) => {
                    tracing::warn!(job = %id, "batch job taken over by another worker");
                    return;
                }
                Err(JobError::Unavailable(fault)) => fault,
            };
            job = loop {
                let outage = outage::fault(&fault);
                if fault.dependency == Dependency::Storage
                    && outage.down_for() >= self.storage_retry
                {
                    let message = format!(
                        "storage unavailable for {} s (more than --storage-retry-secs, {} s): {}",
                        outage.down_for().as_secs(),
                        self.storage_retry.as_secs(),
                        fault.message
                    );
                    return self.fail(&id, &message).await;
                }
                if !self.pause(outage.backoff()).await {
                    return self.hand_back(&id).await;
                }
                match self.db.reclaim_job(&id, &self.owner, self.lease_ms()).await {
                    Ok(Some(job)) => break job,
                    Ok(None) => {
                        tracing::info!(job = %id, "batch job ended or taken over while its dependencies were away");
                        return;
                    }
                    Err(err) => fault = err.into(),
                }
            };
        }
    }

    /// Waits `delay`; `false` when the process is asked to stop meanwhile.
    async fn pause(&self, delay: Duration) -> bool {
        tokio::select! {
            _ = self.stopping.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    /// Ends a job `failed` with `message`, and deletes its partial results and error
    /// rows, so nothing truncated is ever offered and the space is freed.
    async fn fail(&self, id: &str, message: &str) {
        tracing::warn!(job = %id, error = %message, "batch job failed");
        match self.db.finish_job(id, &self.owner, Some(message)).await {
            Ok(true) => {
                for key in [super::output_key(id), errors_key(id)] {
                    if let Err(err) = self.storage.delete(&key).await {
                        tracing::warn!(job = %id, %key, error = %err, "could not delete a failed job's partial output; a restart replaces it");
                    }
                }
            }
            Ok(false) => {
                tracing::warn!(job = %id, "batch job taken over before it could be marked failed")
            }
            Err(err) => {
                tracing::error!(job = %id, error = %err, "could not mark job failed; it resumes when its lease expires")
            }
        }
    }

    /// Gives a job back as of its last checkpoint, for another worker to resume at once.
    async fn hand_back(&self, id: &str) {
        match self.db.release_job(id, &self.owner).await {
            Ok(_) => {
                tracing::info!(job = %id, "stopping; batch job handed back at its last checkpoint")
            }
            Err(err) => {
                tracing::error!(job = %id, error = %err, "could not hand the job back; it resumes when its lease expires")
            }
        }
    }

    /// Runs one claimed job to its end in four steps: prepare (outputs, label vectors),
    /// score a chunk, flush (write rows, checkpoint) while there is input, finish. Each
    /// lease renewal may find the job taken over (stop at once: `LeaseLost`) or asked to
    /// cancel (flush what is scored and end `cancelled`).
    /// A checkpoint that commits ends any outage the run met (a run that reaches one
    /// has read from the storage since it began).
    async fn process(&self, engine: &Arc<Engine>, job: JobRow) -> Result<Ending, JobError> {
        let mut run = Run::open(self, engine, job).await?;
        if run.job.status == status::CANCELLING {
            return run.finish(Ending::Cancelled).await;
        }
        let scorer = match run.prepare_labels().await {
            Err(JobError::CancelAsked) => return run.finish(Ending::Cancelled).await,
            other => other?,
        };
        let mut reader = run.input().await?;
        let mut next = read_chunk(&mut reader).await?;
        while !next.lines.is_empty() {
            let chunk = std::mem::take(&mut next);
            // The next chunk is read while this one is scored.
            let (scored, read) =
                tokio::join!(run.score(&scorer, chunk.lines), read_chunk(&mut reader));
            run.add(scored?, chunk.end_offset, chunk.end_line);
            next = read?;
            if run.flush(false).await? == Lease::CancelAsked {
                return run.finish(Ending::Cancelled).await;
            }
            outage::recovered(Dependency::Storage);
            outage::recovered(Dependency::Database);
            // Rows scored since the last checkpoint are scored again by the next worker.
            if self.stopping.is_cancelled() {
                return Err(JobError::Stopping);
            }
        }
        run.finish(Ending::RanToEnd).await
    }

    /// Extends the job's lease, showing `counts` as its progress; `LeaseLost` when
    /// another worker holds the job now.
    async fn renew_lease(&self, job_id: &str, counts: Counts) -> Result<Lease, JobError> {
        let lease = self
            .db
            .heartbeat(
                job_id,
                &self.owner,
                self.lease_ms(),
                counts.completed,
                counts.failed,
            )
            .await?;
        crate::metrics::lease_renewed();
        checked(lease)
    }

    /// Waits for a blocking task, renewing the lease meanwhile, so that a slow chunk
    /// (long texts, a slow machine) never lets another worker take the job over. A
    /// cancel asked meanwhile is seen at the next renewal after the task.
    async fn renewing_lease<T>(
        &self,
        job_id: &str,
        counts: Counts,
        task: tokio::task::JoinHandle<T>,
    ) -> Result<T, JobError> {
        tokio::pin!(task);
        let mut beat = tokio::time::interval(self.lease / 4);
        beat.tick().await; // the first tick is immediate; the lease is fresh
        loop {
            tokio::select! {
                done = &mut task => return done.map_err(scoring_stopped),
                _ = beat.tick() => { self.renew_lease(job_id, counts).await?; }
            }
        }
    }
}

/// A blocking task that panicked would panic again: the job fails rather than loop.
fn scoring_stopped(err: tokio::task::JoinError) -> JobError {
    JobError::Fatal(format!("scoring stopped unexpectedly: {err}"))
}

/// `LeaseLost` as an error, so that every step stops on it with `?`.
fn checked(lease: Lease) -> Result<Lease, JobError> {
    match lease {
        Lease::Lost => Err(JobError::LeaseLost),
        held => Ok(held),
    }
}

/// How a run ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Every line was read (the job completes, or is cancelled if that was asked
    /// meanwhile).
    RanToEnd,
    /// Cancel was asked; the rows scored so far are the results.
    Cancelled,
}

/// An object being written part by part: results, or the error rows alone.
struct Output {
    key: String,
    state: OutputState,
    /// Rows not yet written (writes wait for the storage's smallest part).
    pending: Vec<u8>,
}

impl Output {
    /// The object as the last checkpoint left it, or a new one.
    async fn open(
        storage: &dyn Storage,
        key: String,
        saved_state: Option<&str>,
        saved_pending: Option<&str>,
    ) -> Result<Self, JobError> {
        let state = match saved_state {
            Some(saved) => serde_json::from_str(saved).map_err(|err| {
                JobError::Fatal(format!("stored output state of {key} is unreadable: {err}"))
            })?,
            None => {
                // A restarted job's earlier output (a failed run's unfinished upload)
                // goes first.
                storage.delete(&key).await?;
                storage.start_output(&key).await?
            }
        };
        Ok(Self {
            key,
            state,
            pending: saved_pending
                .map(|rows| rows.as_bytes().to_vec())
                .unwrap_or_default(),
        })
    }

    /// Writes the pending rows as a part when they fill one (or `all`).
    async fn write(&mut self, storage: &dyn Storage, all: bool) -> Result<(), JobError> {
        if !self.pending.is_empty() && (all || self.pending.len() >= storage.min_part_bytes()) {
            let rows = std::mem::take(&mut self.pending);
            storage
                .append_output(&self.key, &mut self.state, rows)
                .await?;
        }
        Ok(())
    }

    fn saved_state(&self) -> String {
        serde_json::to_string(&self.state).expect("serialisable")
    }
}

/// One job as this worker runs it: what every step shares.
struct Run<'w> {
    worker: &'w Worker,
    engine: Arc<Engine>,
    job: JobRow,
    spec: ClassificationSpec,
    results: Output,
    errors: Output,
    /// Counters and input position of the rows scored so far (checkpointed at a flush).
    counts: Counts,
    input_offset: u64,
    input_line: i64,
}

impl<'w> Run<'w> {
    /// Reads the job's config and checkpoint and opens its outputs.
    async fn open(worker: &'w Worker, engine: &Arc<Engine>, job: JobRow) -> Result<Self, JobError> {
        let spec: ClassificationSpec = serde_json::from_str(&job.config)
            .map_err(|err| JobError::Fatal(format!("stored job config is unreadable: {err}")))?;
        let storage = worker.storage.as_ref();
        let results = Output::open(
            storage,
            job.output_key.clone(),
            job.cp_output_state.as_deref(),
            None,
        )
        .await?;
        let errors = Output::open(
            storage,
            errors_key(&job.id),
            job.cp_errors_state.as_deref(),
            job.cp_errors_pending.as_deref(),
        )
        .await?;
        Ok(Self {
            worker,
            engine: engine.clone(),
            counts: Counts {
                completed: job.cp_completed,
                failed: job.cp_failed,
                tokens: job.cp_tokens,
            },
            input_offset: job.cp_input_offset as u64,
            input_line: job.cp_line,
            spec,
            results,
            errors,
            job,
        })
    }

    /// The label vectors the job scores with. On its first run: one streaming pass that
    /// counts the lines and samples them, the adaptation fitted on the sample (when the
    /// spec asks for it), and both stored before any line is scored. On a resumed run:
    /// the stored vectors, so every line is scored as an uninterrupted run would.
    async fn prepare_labels(&self) -> Result<Arc<dyn LabelScorer>, JobError> {
        let (worker, job) = (self.worker, &self.job);
        let labels = {
            let (engine, set) = (self.engine.clone(), self.spec.labels.clone());
            tokio::task::spawn_blocking(move || engine.label_vectors(&set))
                .await
                .map_err(scoring_stopped)?
                .map_err(|err| JobError::Fatal(err.to_string()))?
        };
        // The upload form stays valid after start: refuse a file replaced under the job.
        let size = worker.storage.size(&job.input_key).await?;
        if size != job.input_bytes.map(|bytes| bytes as u64) {
            return Err(JobError::Fatal(
                "the input file changed after the job started; upload it again and restart the job"
                    .to_string(),
            ));
        }
        if job.requests_total.is_some() {
            // Stored with the line count in one update: present exactly when it applied.
            return Ok(match worker.db.adapted_labels(&job.id).await? {
                None => Arc::new(labels),
                Some(stored) => {
                    let adapted: AdaptedLabels = serde_json::from_str(&stored).map_err(|err| {
                        JobError::Fatal(format!(
                            "stored adapted label vectors are unreadable: {err}"
                        ))
                    })?;
                    Arc::new(adapted)
                }
            });
        }
        let sampler = self.spec.adapt.then(|| Sampler::new(size.unwrap_or(0)));
        let (total, sample) = self.survey(sampler).await?;
        let adapted = match sample {
            None => Adapted {
                report: AdaptationReport::off(),
                labels: None,
            },
            Some(sample) => {
                let (engine, labels) = (self.engine.clone(), labels.clone());
                let fitting = tokio::task::spawn_blocking(move || engine.adapt(&sample, &labels));
                worker
                    .renewing_lease(&job.id, Counts::default(), fitting)
                    .await?
                    .map_err(|err| JobError::Fatal(format!("inference failed: {err}")))?
            }
        };
        let report = serde_json::to_string(&adapted.report).expect("serialisable");
        let stored = adapted
            .labels
            .as_ref()
            .map(|labels| serde_json::to_string(labels).expect("serialisable"));
        if !worker
            .db
            .set_survey(&job.id, &worker.owner, total, &report, stored.as_deref())
            .await?
        {
            return Err(JobError::LeaseLost);
        }
        tracing::info!(job = %job.id, adaptation = %report, "batch job surveyed");
        Ok(match adapted.labels {
            Some(adapted) => Arc::new(adapted),
            None => Arc::new(labels),
        })
    }

    /// One streaming pass over the input (renewing the lease): counts its non-blank
    /// lines and, given a sampler, picks the lines adaptation is fitted on.
    async fn survey(
        &self,
        mut sampler: Option<Sampler>,
    ) -> Result<(i64, Option<Vec<String>>), JobError> {
        let (worker, job) = (self.worker, &self.job);
        let input = worker.storage.read_from(&job.input_key, 0).await?;
        let mut reader = LineReader::new(BufReader::with_capacity(READ_BUFFER, input), 0, 0);
        let mut total = 0i64;
        let mut last_beat = std::time::Instant::now();
        loop {
            let start = reader.offset;
            let Some(line) = next_line(&mut reader).await? else {
                break;
            };
            total += 1;
            if let Some(sampler) = sampler.as_mut() {
                sampler.offer(start, &line);
            }
            if worker.stopping.is_cancelled() {
                return Err(JobError::Stopping);
            }
            if last_beat.elapsed() > worker.lease / 4 {
                if worker.renew_lease(&job.id, Counts::default()).await? == Lease::CancelAsked {
                    return Err(JobError::CancelAsked);
                }
                last_beat = std::time::Instant::now();
            }
        }
        Ok((total, sampler.map(|s| s.finish(total as usize))))
    }

    /// The input from the checkpoint on.
    async fn input(&self) -> Result<LineReader<BufReader<ByteStream>>, JobError> {
        let input = self
            .worker
            .storage
            .read_from(&self.job.input_key, self.input_offset)
            .await?;
        Ok(LineReader::new(
            BufReader::with_capacity(READ_BUFFER, input),
            self.input_offset,
            self.input_line,
        ))
    }

    /// Scores one chunk off the async threads, renewing the lease meanwhile.
    async fn score(
        &self,
        scorer: &Arc<dyn LabelScorer>,
        lines: Vec<RawLine>,
    ) -> Result<ScoredChunk, JobError> {
        let (engine, scorer, spec) = (self.engine.clone(), scorer.clone(), self.spec.clone());
        let scoring = tokio::task::spawn_blocking(move || {
            score_chunk(&engine, scorer.as_ref(), &spec, lines)
        });
        self.worker
            .renewing_lease(&self.job.id, self.counts, scoring)
            .await?
    }

    /// Takes a scored chunk's rows and counts; the input now stands after it.
    fn add(&mut self, chunk: ScoredChunk, end_offset: u64, end_line: i64) {
        crate::metrics::lines_scored(chunk.counts.completed, chunk.counts.failed);
        self.results.pending.extend_from_slice(&chunk.rows);
        self.errors.pending.extend_from_slice(&chunk.error_rows);
        self.counts.completed += chunk.counts.completed;
        self.counts.failed += chunk.counts.failed;
        self.counts.tokens += chunk.counts.tokens;
        self.input_offset = end_offset;
        self.input_line = end_line;
    }

    /// Writes the results when a part is full (or everything pending, error rows
    /// included, when `all`) and commits a checkpoint with them; otherwise only renews
    /// the lease. Says whether cancel was asked.
    async fn flush(&mut self, all: bool) -> Result<Lease, JobError> {
        let worker = self.worker;
        let storage = worker.storage.as_ref();
        let part_full = !self.results.pending.is_empty()
            && self.results.pending.len() >= storage.min_part_bytes();
        if !(all || part_full) {
            return worker.renew_lease(&self.job.id, self.counts).await;
        }
        self.results.write(storage, true).await?;
        self.errors.write(storage, all).await?;
        let checkpoint = Checkpoint {
            input_offset: self.input_offset as i64,
            line: self.input_line,
            completed: self.counts.completed,
            failed: self.counts.failed,
            tokens: self.counts.tokens,
            output_state: self.results.saved_state(),
            errors_state: self.errors.saved_state(),
            errors_pending: String::from_utf8(self.errors.pending.clone())
                .expect("rows are JSON text"),
        };
        let lease = worker
            .db
            .checkpoint(&self.job.id, &worker.owner, worker.lease_ms(), &checkpoint)
            .await?;
        checked(lease)
    }

    /// Writes every row left, makes both objects whole and ends the job. A job that
    /// ran to its end with nothing scored fails instead, saying why.
    async fn finish(mut self, ending: Ending) -> Result<Ending, JobError> {
        self.flush(true).await?;
        let storage = self.worker.storage.as_ref();
        storage
            .finish_output(&self.results.key, &self.results.state)
            .await?;
        storage
            .finish_output(&self.errors.key, &self.errors.state)
            .await?;
        if ending == Ending::RanToEnd {
            let nothing_scored = match (self.counts.completed, self.counts.failed) {
                (0, 0) => Some("the input has no lines".to_string()),
                (0, failed) => Some(format!(
                    "every line failed ({failed} lines); see the results for each error"
                )),
                _ => None,
            };
            if let Some(message) = nothing_scored {
                return Err(JobError::Fatal(message));
            }
        }
        let worker = self.worker;
        if !worker
            .db
            .finish_job(&self.job.id, &worker.owner, None)
            .await?
        {
            return Err(JobError::LeaseLost);
        }
        Ok(ending)
    }
}

/// A scored chunk: every row in input order, the error rows again on their own.
struct ScoredChunk {
    rows: Vec<u8>,
    error_rows: Vec<u8>,
    counts: Counts,
}

/// Lines read together, and where the input stands after them (the checkpoint
/// position once they are scored and written).
#[derive(Default)]
struct Chunk {
    lines: Vec<RawLine>,
    end_offset: u64,
    end_line: i64,
}

async fn read_chunk<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut LineReader<R>,
) -> Result<Chunk, JobError> {
    let mut lines = Vec::with_capacity(CHUNK_LINES);
    let mut bytes = 0usize;
    while lines.len() < CHUNK_LINES && bytes < CHUNK_BYTES {
        match next_line(reader).await? {
            Some(line) => {
                bytes += line.bytes.as_ref().map_or(0, Vec::len);
                lines.push(line);
            }
            None => break,
        }
    }
    Ok(Chunk {
        lines,
        end_offset: reader.offset,
        end_line: reader.line,
    })
}

/// The input's next non-blank line. A read that fails mid-stream is the storage going
/// away (the bytes themselves are never an error: bad lines become error rows).
async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut LineReader<R>,
) -> Result<Option<RawLine>, JobError> {
    reader.next_line().await.map_err(|err| {
        JobError::Unavailable(Fault {
            dependency: Dependency::Storage,
            message: format!("reading the input failed: {err}"),
        })
    })
}

/// Parses, embeds and scores one chunk; returns its NDJSON rows in input order.
fn score_chunk(
    engine: &Engine,
    labels: &dyn LabelScorer,
    spec: &ClassificationSpec,
    chunk: Vec<RawLine>,
) -> Result<ScoredChunk, JobError> {
    let parsed: Vec<_> = chunk.par_iter().map(parse_line).collect();
    let texts: Vec<&str> = parsed
        .iter()
        .filter_map(|(_, line)| line.as_ref().ok().map(|l| l.text.as_str()))
        .collect();
    let embeddings = engine
        .embed_texts(&texts)
        .map_err(|err| JobError::Fatal(format!("inference failed: {err}")))?;
    let mut embedding_of = Vec::with_capacity(parsed.len());
    let mut next = 0;
    for (_, line) in &parsed {
        embedding_of.push(line.is_ok().then(|| {
            next += 1;
            &embeddings[next - 1]
        }));
    }

    let rows: Vec<(Vec<u8>, Counts)> = chunk
        .par_iter()
        .zip(parsed.par_iter())
        .zip(embedding_of.par_iter())
        .map(|((raw, (id, line)), embedding)| {
            let (row, counts) = match (line, embedding) {
                (Ok(_), Some(embedding)) => {
                    let result = engine.score(embedding, labels, spec.mode, spec.threshold);
                    let scores: Map<String, Value> =
                        result.scores.iter().map(|s| (s.label.clone(), json!(s.score))).collect();
                    (
                        json!({"line": raw.number, "id": id, "label": result.label, "confidence": result.confidence,
                               "labels": result.labels, "scores": scores, "tokens": result.tokens,
                               "truncated": result.truncated}),
                        Counts { completed: 1, failed: 0, tokens: result.tokens as i64 },
                    )
                }
                (Err(error), _) => (
                    json!({"line": raw.number, "id": id, "error": {"code": error.code, "message": error.message}}),
                    Counts { completed: 0, failed: 1, tokens: 0 },
                ),
                (Ok(_), None) => unreachable!("every parsed line has an embedding"),
            };
            let mut bytes = serde_json::to_vec(&row).expect("serialisable");
            bytes.push(b'\n');
            (bytes, counts)
        })
        .collect();
    let mut scored = ScoredChunk {
        rows: Vec::with_capacity(rows.iter().map(|(r, _)| r.len()).sum()),
        error_rows: Vec::new(),
        counts: Counts::default(),
    };
    for (row, counts) in rows {
        scored.rows.extend_from_slice(&row);
        if counts.failed > 0 {
            scored.error_rows.extend_from_slice(&row);
        }
        scored.counts.completed += counts.completed;
        scored.counts.failed += counts.failed;
        scored.counts.tokens += counts.tokens;
    }
    Ok(scored)
}
