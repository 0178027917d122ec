//! The streaming batch worker. Every instance runs one, and every job's work is
//! spread over all of them:
//!
//! - **Survey** (job-level lease): one streaming pass over the input counts its lines,
//!   samples them for adaptation, cuts it into shards of about `--shard-bytes` at line
//!   boundaries and fits the adapted label vectors, all stored before any line is scored.
//! - **Shards** (a lease each): any worker claims any shard nobody holds, streams its
//!   byte range from the shard's checkpoint, scores chunks (rayon-parallel parsing and
//!   row building, ONNX inference; `--chunks-in-flight` at once, one by default on the
//!   CPU, two on a GPU) while reading the next one and renewing its lease,
//!   appends rows to the shard's result part (and error rows to its errors part) and
//!   commits a checkpoint after each part.
//! - **Assembly** (job-level lease): when no shard is left, the parts are joined in
//!   input order into the job's results and errors objects, by the store where it can
//!   (`Storage::compose`), and the job ends.
//!
//! A cancel asked on any instance is seen at each shard's next lease renewal.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rayon::prelude::*;
use serde_json::{json, Map, Value};
use tokio::io::BufReader;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::lines::{parse_line, LineReader, RawLine};
use super::sample::Sampler;
use super::{job_output_keys, shard_keys};
use crate::db::batch::{Checkpoint, Claimed, JobRow, Lease, NewShard, Survey};
use crate::db::shards::{ClaimedShard, ShardRow};
use crate::db::Db;
use crate::engine::{
    AdaptationReport, Adapted, AdaptedLabels, ClassificationSpec, Engine, LabelScorer, LabelVectors,
};
use crate::outage::{self, Dependency, Fault};
use crate::storage::{ByteStream, OutputState, Storage, StorageError};
use crate::wire::JobStatus;

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
    /// A job or shard whose lease is not renewed for this long is taken over by
    /// another worker.
    pub lease: Duration,
    /// Woken when a job is started, so it begins without waiting for the next poll.
    pub wake: Arc<Notify>,
    /// Cancelled when the process is asked to stop (SIGTERM): the worker hands its job
    /// or shard back at the next chunk boundary and returns.
    pub stopping: CancellationToken,
    /// How long the storage may stay unreachable before a job is failed (a database
    /// outage is waited out: without it a job can be neither continued nor failed).
    pub storage_retry: Duration,
    /// Input bytes per shard, cut at the next line boundary (`--shard-bytes`).
    pub shard_bytes: u64,
    /// Chunks of a shard scored at once (`--chunks-in-flight`): with more than one, a
    /// chunk's parsing, tokenizing and row building overlap another's model runs.
    pub chunks_in_flight: usize,
}

/// Why a task stopped before completing.
#[derive(Debug, thiserror::Error)]
enum JobError {
    /// The job itself cannot complete; it is marked failed with this message.
    #[error("{0}")]
    Fatal(String),
    /// The model failed on the job's texts. Tried once more from the last checkpoint
    /// (a run can fail once for reasons of its own); a second failure fails the job.
    #[error("inference failed: {0}")]
    Inference(String),
    /// Another worker holds the task now (our lease expired), or the job ended
    /// elsewhere; leave it alone.
    #[error("lease lost")]
    LeaseLost,
    /// This process is stopping; the task goes back to the other workers as of its
    /// last checkpoint.
    #[error("stopping")]
    Stopping,
    /// Cancel was asked before any line was scored.
    #[error("cancel asked")]
    CancelAsked,
    /// A passing fault of the database or the storage: the task is tried again from
    /// its last checkpoint, with backoff.
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
            StorageError::NotFound(key) => JobError::Fatal(format!("object {key:?} is missing")),
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

/// One piece of work under one lease.
enum Task {
    /// The job's survey or assembly, under the job-level lease.
    Job(JobRow),
    /// Scoring one shard, under the shard's lease.
    Shard(JobRow, ShardRow),
}

impl Task {
    fn job(&self) -> &JobRow {
        match self {
            Task::Job(job) | Task::Shard(job, _) => job,
        }
    }
}

/// The lease a step renews while it works.
#[derive(Debug, Clone, Copy)]
enum Held<'a> {
    Job(&'a str),
    /// A shard, showing `counts` as its progress.
    Shard {
        job: &'a str,
        shard: i64,
        counts: Counts,
    },
}

impl Worker {
    fn lease_ms(&self) -> i64 {
        self.lease.as_millis() as i64
    }

    /// Runs until the process is asked to stop (then hands its task back first).
    pub async fn run(self) {
        while !self.stopping.is_cancelled() {
            let Some(engine) = self.engine.get().cloned() else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            match self.claim().await {
                Ok(Some((task, resumed))) => {
                    outage::recovered(Dependency::Database);
                    if resumed {
                        crate::metrics::job_resumed();
                    }
                    self.run_task(&engine, task).await;
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

    /// The next task nobody holds: a job's survey or assembly first (they unblock a
    /// whole job), else a shard. Says whether an earlier worker had held it.
    async fn claim(&self) -> Result<Option<(Task, bool)>, crate::db::DbError> {
        if let Some(Claimed { job, resumed }) =
            self.db.claim_job(&self.owner, self.lease_ms()).await?
        {
            tracing::info!(job = %job.id, resumed, "batch job: survey or assembly");
            return Ok(Some((Task::Job(job), resumed)));
        }
        Ok(self
            .db
            .claim_shard(&self.owner, self.lease_ms())
            .await?
            .map(|ClaimedShard { job, shard, resumed }| {
                tracing::info!(job = %job.id, shard = shard.shard, resumed, "scoring batch job shard");
                (Task::Shard(job, shard), resumed)
            }))
    }

    /// Runs one task to its end. A database or storage fault tries it again from its
    /// last checkpoint (keeping the lease) after a backoff, until the storage has been
    /// away longer than its budget: then the job fails naming the cause.
    async fn run_task(&self, engine: &Arc<Engine>, task: Task) {
        let id = task.job().id.clone();
        let mut task = task;
        let mut inference_retried = false;
        loop {
            let shard = match &task {
                Task::Shard(_, shard) => Some(shard.shard),
                Task::Job(_) => None,
            };
            let ended = match task {
                Task::Job(job) => self.job_level(engine, job).await,
                Task::Shard(job, shard) => self.score_shard(engine, job, shard).await,
            };
            let mut fault = match ended {
                Ok(ending) => {
                    tracing::info!(job = %id, ?shard, ?ending, "batch task ended");
                    return;
                }
                Err(JobError::Stopping) => return self.hand_back(&id, shard).await,
                Err(JobError::LeaseLost | JobError::CancelAsked) => {
                    tracing::warn!(job = %id, ?shard, "batch task taken over by another worker, or its job ended");
                    return;
                }
                // Whatever ended a run while the process stops, the next worker decides
                // on a fresh run: an error met while shutting down is no proof.
                Err(err) if self.stopping.is_cancelled() => {
                    tracing::warn!(job = %id, ?shard, error = %err, "batch task stopped by an error while stopping");
                    return self.hand_back(&id, shard).await;
                }
                Err(JobError::Inference(message)) if !inference_retried => {
                    tracing::warn!(job = %id, ?shard, error = %message, "inference failed; trying the job once more from its last checkpoint");
                    inference_retried = true;
                    None
                }
                Err(err @ (JobError::Fatal(_) | JobError::Inference(_))) => {
                    return self.fail(&id, shard, &err.to_string()).await
                }
                Err(JobError::Unavailable(fault)) => Some(fault),
            };
            task = loop {
                if let Some(fault) = &fault {
                    let outage = outage::fault(fault);
                    if fault.dependency == Dependency::Storage
                        && outage.down_for() >= self.storage_retry
                    {
                        let message = format!(
                            "storage unavailable for {} s (more than --storage-retry-secs, {} s): {}",
                            outage.down_for().as_secs(),
                            self.storage_retry.as_secs(),
                            fault.message
                        );
                        return self.fail(&id, shard, &message).await;
                    }
                    if !self.pause(outage.backoff()).await {
                        return self.hand_back(&id, shard).await;
                    }
                }
                let reclaimed = match shard {
                    None => self
                        .db
                        .reclaim_job(&id, &self.owner, self.lease_ms())
                        .await
                        .map(|job| job.map(Task::Job)),
                    Some(shard) => self
                        .db
                        .reclaim_shard(&id, shard, &self.owner, self.lease_ms())
                        .await
                        .map(|held| held.map(|(job, shard)| Task::Shard(job, shard))),
                };
                match reclaimed {
                    Ok(Some(task)) => break task,
                    Ok(None) => {
                        tracing::info!(job = %id, ?shard, "batch task ended or taken over while it waited to run again");
                        return;
                    }
                    Err(err) => fault = Some(err.into()),
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

    /// Ends a job `failed` with `message` (from its survey or assembly while holding
    /// the job-level lease, or from any of its shards), and deletes its partial
    /// results, parts and error rows, so nothing truncated is ever offered and the
    /// space is freed. The other shards' workers see it at their next renewal.
    async fn fail(&self, id: &str, shard: Option<i64>, message: &str) {
        tracing::warn!(job = %id, ?shard, error = %message, "batch job failed");
        let holder = shard.is_none().then_some(self.owner.as_str());
        match self.db.finish_job(id, holder, Some(message)).await {
            Ok(true) => self.delete_outputs(id).await,
            Ok(false) => {
                tracing::warn!(job = %id, "batch job taken over or ended before it could be marked failed")
            }
            Err(err) => {
                tracing::error!(job = %id, error = %err, "could not mark job failed; it resumes when its lease expires")
            }
        }
    }

    /// Deletes a failed job's outputs: its results, errors and every shard's parts.
    async fn delete_outputs(&self, id: &str) {
        let shards = match self.db.job_by_id(id).await {
            Ok(job) => job.and_then(|job| job.shards),
            Err(_) => None,
        };
        for key in job_output_keys(id, shards) {
            if let Err(err) = self.storage.delete(&key).await {
                tracing::warn!(job = %id, %key, error = %err, "could not delete a failed job's partial output; a restart replaces it");
            }
        }
    }

    /// Gives a task back as of its last checkpoint, for another worker to resume at once.
    async fn hand_back(&self, id: &str, shard: Option<i64>) {
        let released = match shard {
            None => self.db.release_job(id, &self.owner).await,
            Some(shard) => self.db.release_shard(id, shard, &self.owner).await,
        };
        match released {
            Ok(_) => {
                tracing::info!(job = %id, ?shard, "stopping; batch task handed back at its last checkpoint")
            }
            Err(err) => {
                tracing::error!(job = %id, ?shard, error = %err, "could not hand the task back; it resumes when its lease expires")
            }
        }
    }

    /// A job's job-level work: its survey when it has none yet, else (every shard
    /// done, or cancel asked) its assembly.
    async fn job_level(&self, engine: &Arc<Engine>, job: JobRow) -> Result<Ending, JobError> {
        if job.requests_total.is_none() && job.status != JobStatus::Cancelling {
            return match self.survey(engine, &job).await {
                Err(JobError::CancelAsked) => self.assemble(&job).await,
                Ok(()) => Ok(Ending::Surveyed),
                Err(err) => Err(err),
            };
        }
        self.assemble(&job).await
    }

    /// The survey: label vectors, one streaming pass that counts the lines, samples
    /// them (when the spec asks for adaptation) and cuts the shards, the adaptation
    /// fitted on the sample; all stored together before any line is scored.
    async fn survey(&self, engine: &Arc<Engine>, job: &JobRow) -> Result<(), JobError> {
        let spec = job_spec(job)?;
        let labels = label_vectors(engine, &spec).await?;
        let size = self.checked_input_size(job).await?;
        let sampler = spec.adapt.then(|| Sampler::new(size));
        let (total, sample, shards) = self.read_through(job, sampler).await?;
        if total == 0 {
            return Err(JobError::Fatal("the input has no lines".to_string()));
        }
        let adapted = match sample {
            None => Adapted {
                report: AdaptationReport::off(),
                labels: None,
            },
            Some(sample) => {
                let engine = engine.clone();
                let fitting = tokio::task::spawn_blocking(move || engine.adapt(&sample, &labels));
                self.renewing_lease(Held::Job(&job.id), fitting)
                    .await?
                    .map_err(|err| JobError::Inference(err.to_string()))?
            }
        };
        let report = serde_json::to_string(&adapted.report).expect("serialisable");
        let stored = adapted
            .labels
            .as_ref()
            .map(|labels| serde_json::to_string(labels).expect("serialisable"));
        let shard_count = shards.len();
        let survey = Survey {
            requests: total,
            adaptation: &report,
            adapted_labels: stored.as_deref(),
            shards,
        };
        if !self.db.set_survey(&job.id, &self.owner, &survey).await? {
            return Err(JobError::LeaseLost);
        }
        tracing::info!(job = %job.id, adaptation = %report, shards = shard_count, "batch job surveyed");
        Ok(())
    }

    /// The input's size, refusing a file replaced after the job started (the upload
    /// form stays valid after start).
    async fn checked_input_size(&self, job: &JobRow) -> Result<u64, JobError> {
        let size = self.storage.size(&job.input_key).await?;
        if size != job.input_bytes.map(|bytes| bytes as u64) {
            return Err(JobError::Fatal(
                "the input file changed after the job started; upload it again and restart the job"
                    .to_string(),
            ));
        }
        Ok(size.unwrap_or(0))
    }

    /// One streaming pass over the input (renewing the lease): counts its non-blank
    /// lines, cuts shards of about `shard_bytes` after a line and, given a sampler,
    /// picks the lines adaptation is fitted on.
    async fn read_through(
        &self,
        job: &JobRow,
        mut sampler: Option<Sampler>,
    ) -> Result<(i64, Option<Vec<String>>, Vec<NewShard>), JobError> {
        let input = self.storage.read_from(&job.input_key, 0).await?;
        let mut reader = LineReader::new(BufReader::with_capacity(READ_BUFFER, input), 0, 0);
        let mut cuts = ShardCuts::new(self.shard_bytes);
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
            cuts.after_line(reader.offset, reader.line);
            if self.stopping.is_cancelled() {
                return Err(JobError::Stopping);
            }
            if last_beat.elapsed() > self.lease / 4 {
                if self.renew(Held::Job(&job.id)).await? == Lease::CancelAsked {
                    return Err(JobError::CancelAsked);
                }
                last_beat = std::time::Instant::now();
            }
        }
        let shards = cuts.finish(reader.offset);
        Ok((total, sampler.map(|s| s.finish(total as usize)), shards))
    }

    /// Joins the shards' parts, in input order, into the job's results and errors
    /// objects and ends the job: `completed`, or `cancelled` when that was asked (with
    /// the rows of every shard that began). A job whose every line failed fails
    /// instead, saying so. Runs again from the start after a fault: the parts stay
    /// until the job has ended.
    async fn assemble(&self, job: &JobRow) -> Result<Ending, JobError> {
        let shards = self.db.shards(&job.id).await?;
        let (completed, failed) = shards.iter().fold((0, 0), |(completed, failed), shard| {
            (completed + shard.cp_completed, failed + shard.cp_failed)
        });
        if job.status == JobStatus::Processing && completed == 0 {
            return Err(JobError::Fatal(format!(
                "every line failed ({failed} lines); see the results for each error"
            )));
        }
        let count = shards.len() as i64;
        // Every shard that began has completed by now (cancel leaves the others).
        let began: Vec<(String, String)> = shards
            .iter()
            .filter(|shard| shard.completed_at.is_some())
            .map(|shard| shard_keys(&job.id, shard.shard, count))
            .collect();
        let (results, errors): (Vec<String>, Vec<String>) = began.iter().cloned().unzip();
        for (parts, key) in [
            (&results, &job.output_key),
            (&errors, &super::errors_key(&job.id)),
        ] {
            // A job of one shard wrote its objects themselves.
            if parts.as_slice() != std::slice::from_ref(key) {
                let composed = self.storage.compose(parts, key).await?;
                tracing::info!(job = %job.id, %key, parts = parts.len(), bytes = composed.bytes,
                    buffered = composed.buffered, "batch job parts assembled");
            }
        }
        if !self.db.finish_job(&job.id, Some(&self.owner), None).await? {
            return Err(JobError::LeaseLost);
        }
        if count > 1 {
            for key in results.iter().chain(&errors) {
                if let Err(err) = self.storage.delete(key).await {
                    tracing::warn!(job = %job.id, %key, error = %err, "could not delete an assembled part");
                }
            }
        }
        Ok(if job.status == JobStatus::Cancelling {
            Ending::Cancelled
        } else {
            Ending::Completed
        })
    }

    /// Scores one shard to its end in four steps: open (outputs, label vectors), score
    /// a chunk, flush (write rows, checkpoint) while there is input, finish. Each lease
    /// renewal may find the shard taken over or the job ended (stop at once:
    /// `LeaseLost`) or asked to cancel (flush what is scored and end the shard).
    /// A checkpoint that commits ends any outage the run met (a run that reaches one
    /// has read from the storage since it began).
    async fn score_shard(
        &self,
        engine: &Arc<Engine>,
        job: JobRow,
        shard: ShardRow,
    ) -> Result<Ending, JobError> {
        let mut run = Run::open(self, engine, job, shard).await?;
        if run.job.status == JobStatus::Cancelling {
            return run.finish(Ending::Cancelled).await;
        }
        let scorer = run.labels().await?;
        let mut reader = run.input().await?;
        let in_flight_at_most = self.chunks_in_flight.max(1);
        // Chunks being scored, oldest first; their rows are added in this order.
        let mut in_flight: VecDeque<Scoring> = VecDeque::with_capacity(in_flight_at_most);
        // The chunk read and not yet being scored (empty: none), and whether the
        // shard's input is read to its end.
        let mut next = Chunk::default();
        let mut read_all = false;
        loop {
            if in_flight.len() < in_flight_at_most {
                if !next.lines.is_empty() {
                    in_flight.push_back(run.start_scoring(&scorer, std::mem::take(&mut next)));
                    continue;
                }
                if !read_all {
                    next = read_chunk(&mut reader).await?;
                    read_all = next.lines.is_empty();
                    continue;
                }
            }
            let Some(oldest) = in_flight.pop_front() else {
                break;
            };
            // The next chunk is read while the oldest is scored.
            let read_ahead = next.lines.is_empty() && !read_all;
            let (scored, read) = tokio::join!(run.scored(oldest), async {
                if read_ahead {
                    read_chunk(&mut reader).await.map(Some)
                } else {
                    Ok(None)
                }
            });
            let (scored, end_offset, end_line) = scored?;
            run.add(scored, end_offset, end_line);
            if let Some(chunk) = read? {
                read_all = chunk.lines.is_empty();
                next = chunk;
            }
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
        run.finish(Ending::ShardDone).await
    }

    /// Extends a lease; `LeaseLost` when another worker holds the task now or its job
    /// ended.
    async fn renew(&self, held: Held<'_>) -> Result<Lease, JobError> {
        let lease = match held {
            Held::Job(job) => self.db.heartbeat(job, &self.owner, self.lease_ms()).await?,
            Held::Shard { job, shard, counts } => {
                self.db
                    .shard_heartbeat(
                        job,
                        shard,
                        &self.owner,
                        self.lease_ms(),
                        counts.completed,
                        counts.failed,
                    )
                    .await?
            }
        };
        crate::metrics::lease_renewed();
        checked(lease)
    }

    /// Waits for a blocking task, renewing the lease meanwhile, so that a slow chunk
    /// (long texts, a slow machine) never lets another worker take the task over. A
    /// cancel asked meanwhile is seen at the next renewal after the task.
    async fn renewing_lease<T>(
        &self,
        held: Held<'_>,
        task: tokio::task::JoinHandle<T>,
    ) -> Result<T, JobError> {
        tokio::pin!(task);
        let mut beat = tokio::time::interval(self.lease / 4);
        beat.tick().await; // the first tick is immediate; the lease is fresh
        loop {
            tokio::select! {
                done = &mut task => return done.map_err(scoring_stopped),
                _ = beat.tick() => { self.renew(held).await?; }
            }
        }
    }
}

/// Where the survey cuts shards: after the first line that brings a shard to
/// `shard_bytes` or more, so that every shard but the last holds at least that much.
struct ShardCuts {
    shard_bytes: u64,
    shards: Vec<NewShard>,
    /// Where the shard being measured begins, and the number of the line before it.
    start: (u64, i64),
}

impl ShardCuts {
    fn new(shard_bytes: u64) -> Self {
        Self {
            shard_bytes: shard_bytes.max(1),
            shards: Vec::new(),
            start: (0, 0),
        }
    }

    /// A line ended at `offset`, numbered `line`.
    fn after_line(&mut self, offset: u64, line: i64) {
        if offset - self.start.0 >= self.shard_bytes {
            self.cut(offset, line);
        }
    }

    fn cut(&mut self, offset: u64, line: i64) {
        let (start_offset, start_line) = self.start;
        self.shards.push(NewShard {
            start_offset: start_offset as i64,
            end_offset: offset as i64,
            start_line,
        });
        self.start = (offset, line);
    }

    /// The shards, the last one ending at `end` (the input's end).
    fn finish(mut self, end: u64) -> Vec<NewShard> {
        if end > self.start.0 || self.shards.is_empty() {
            self.cut(end, 0);
        }
        self.shards
    }
}

/// The job's classification config, as validated at creation.
fn job_spec(job: &JobRow) -> Result<ClassificationSpec, JobError> {
    serde_json::from_str(&job.config)
        .map_err(|err| JobError::Fatal(format!("stored job config is unreadable: {err}")))
}

/// The spec's label vectors, computed off the async threads.
async fn label_vectors(
    engine: &Arc<Engine>,
    spec: &ClassificationSpec,
) -> Result<LabelVectors, JobError> {
    let (engine, set) = (engine.clone(), spec.labels.clone());
    tokio::task::spawn_blocking(move || engine.label_vectors(&set))
        .await
        .map_err(scoring_stopped)?
        .map_err(|err| JobError::Inference(err.to_string()))
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

/// How a task ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The survey is stored; the shards are open to every worker.
    Surveyed,
    /// A shard read to its end.
    ShardDone,
    /// The job's parts are assembled; it completed.
    Completed,
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

/// One shard as this worker scores it: what every step shares.
struct Run<'w> {
    worker: &'w Worker,
    engine: Arc<Engine>,
    job: JobRow,
    shard: ShardRow,
    spec: ClassificationSpec,
    results: Output,
    errors: Output,
    /// Counters and input position of the rows scored so far (checkpointed at a flush).
    counts: Counts,
    input_offset: u64,
    input_line: i64,
}

impl<'w> Run<'w> {
    /// Reads the job's config and the shard's checkpoint and opens its outputs.
    async fn open(
        worker: &'w Worker,
        engine: &Arc<Engine>,
        job: JobRow,
        shard: ShardRow,
    ) -> Result<Self, JobError> {
        let spec = job_spec(&job)?;
        let storage = worker.storage.as_ref();
        let (results_key, errors_key) = shard_keys(&job.id, shard.shard, job.shards.unwrap_or(1));
        let results =
            Output::open(storage, results_key, shard.cp_output_state.as_deref(), None).await?;
        let errors = Output::open(
            storage,
            errors_key,
            shard.cp_errors_state.as_deref(),
            shard.cp_errors_pending.as_deref(),
        )
        .await?;
        Ok(Self {
            worker,
            engine: engine.clone(),
            counts: Counts {
                completed: shard.cp_completed,
                failed: shard.cp_failed,
                tokens: shard.cp_tokens,
            },
            input_offset: shard.cp_input_offset as u64,
            input_line: shard.cp_line,
            spec,
            results,
            errors,
            job,
            shard,
        })
    }

    /// The lease this run holds, showing its progress so far.
    fn held(&self) -> Held<'_> {
        Held::Shard {
            job: &self.job.id,
            shard: self.shard.shard,
            counts: self.counts,
        }
    }

    /// The label vectors the survey stored (adapted to the job's texts), or the
    /// spec's own when adaptation did not apply: every shard scores with the same.
    async fn labels(&self) -> Result<Arc<dyn LabelScorer>, JobError> {
        if let Some(stored) = self.worker.db.adapted_labels(&self.job.id).await? {
            let adapted: AdaptedLabels = serde_json::from_str(&stored).map_err(|err| {
                JobError::Fatal(format!(
                    "stored adapted label vectors are unreadable: {err}"
                ))
            })?;
            return Ok(Arc::new(adapted));
        }
        Ok(Arc::new(label_vectors(&self.engine, &self.spec).await?))
    }

    /// The shard's input from its checkpoint on, to the shard's end.
    async fn input(&self) -> Result<LineReader<BufReader<ByteStream>>, JobError> {
        let end = self.shard.end_offset as u64;
        let input = self
            .worker
            .storage
            .read_range(&self.job.input_key, self.input_offset, Some(end))
            .await?;
        Ok(LineReader::new(
            BufReader::with_capacity(READ_BUFFER, input),
            self.input_offset,
            self.input_line,
        ))
    }

    /// Starts scoring one chunk off the async threads.
    fn start_scoring(&self, scorer: &Arc<dyn LabelScorer>, chunk: Chunk) -> Scoring {
        let (engine, scorer, spec) = (self.engine.clone(), scorer.clone(), self.spec.clone());
        let lines = chunk.lines;
        Scoring {
            task: tokio::task::spawn_blocking(move || {
                score_chunk(&engine, scorer.as_ref(), &spec, lines)
            }),
            end_offset: chunk.end_offset,
            end_line: chunk.end_line,
        }
    }

    /// Waits for a chunk's scoring, renewing the lease meanwhile; with where the
    /// input stands after the chunk.
    async fn scored(&self, scoring: Scoring) -> Result<(ScoredChunk, u64, i64), JobError> {
        let scored = self
            .worker
            .renewing_lease(self.held(), scoring.task)
            .await??;
        Ok((scored, scoring.end_offset, scoring.end_line))
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
            return worker.renew(self.held()).await;
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
            .checkpoint(
                &self.job.id,
                self.shard.shard,
                &worker.owner,
                worker.lease_ms(),
                &checkpoint,
            )
            .await?;
        checked(lease)
    }

    /// Writes every row left, makes both parts whole and marks the shard done; the
    /// worker that finds no shard left assembles the job.
    async fn finish(mut self, ending: Ending) -> Result<Ending, JobError> {
        self.flush(true).await?;
        let storage = self.worker.storage.as_ref();
        storage
            .finish_output(&self.results.key, &self.results.state)
            .await?;
        storage
            .finish_output(&self.errors.key, &self.errors.state)
            .await?;
        let worker = self.worker;
        if !worker
            .db
            .finish_shard(&self.job.id, self.shard.shard, &worker.owner)
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

/// A chunk being scored on the blocking threads. Dropped unawaited (a cancel, a stop,
/// an error), it runs to its end and its rows are thrown away: they are after the
/// last checkpoint, so whoever goes on scores them again.
struct Scoring {
    task: tokio::task::JoinHandle<Result<ScoredChunk, JobError>>,
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

/// Fault injection for tests: `ZEROSHOT_FAILPOINT_INFERENCE=N` fails this process's
/// first N chunk inferences, so that a test can see the retry and the failure that
/// follow a model error without breaking the model.
fn injected_inference_failure() -> Option<JobError> {
    static LEFT: OnceLock<AtomicU32> = OnceLock::new();
    LEFT.get_or_init(|| {
        let failures = std::env::var("ZEROSHOT_FAILPOINT_INFERENCE").ok();
        AtomicU32::new(failures.and_then(|n| n.parse().ok()).unwrap_or(0))
    })
    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
        left.checked_sub(1)
    })
    .ok()
    .map(|_| JobError::Inference("injected by ZEROSHOT_FAILPOINT_INFERENCE".to_string()))
}

/// Parses, embeds and scores one chunk; returns its NDJSON rows in input order.
fn score_chunk(
    engine: &Engine,
    labels: &dyn LabelScorer,
    spec: &ClassificationSpec,
    chunk: Vec<RawLine>,
) -> Result<ScoredChunk, JobError> {
    if let Some(injected) = injected_inference_failure() {
        return Err(injected);
    }
    let parsed: Vec<_> = chunk.par_iter().map(parse_line).collect();
    let texts: Vec<&str> = parsed
        .iter()
        .filter_map(|(_, line)| line.as_ref().ok().map(|l| l.text.as_str()))
        .collect();
    let embeddings = engine
        .embed_texts(&texts)
        .map_err(|err| JobError::Inference(err.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines of `lengths` bytes (newline included), as the survey sees them.
    fn cut(shard_bytes: u64, lengths: &[u64]) -> Vec<NewShard> {
        let mut cuts = ShardCuts::new(shard_bytes);
        let mut offset = 0;
        for (number, length) in lengths.iter().enumerate() {
            offset += length;
            cuts.after_line(offset, number as i64 + 1);
        }
        cuts.finish(offset)
    }

    fn shard(start_offset: i64, end_offset: i64, start_line: i64) -> NewShard {
        NewShard {
            start_offset,
            end_offset,
            start_line,
        }
    }

    #[test]
    fn shards_end_after_the_line_that_fills_them() {
        assert_eq!(
            cut(10, &[4, 4, 4, 4, 4, 4, 4]),
            [shard(0, 12, 0), shard(12, 24, 3), shard(24, 28, 6)]
        );
    }

    #[test]
    fn a_cut_at_the_end_leaves_no_empty_shard() {
        assert_eq!(cut(8, &[4, 4, 4, 4]), [shard(0, 8, 0), shard(8, 16, 2)]);
    }

    #[test]
    fn a_line_longer_than_a_shard_is_a_shard_of_its_own() {
        assert_eq!(cut(10, &[3, 25, 3]), [shard(0, 28, 0), shard(28, 31, 2)]);
    }

    #[test]
    fn a_small_input_is_one_shard() {
        assert_eq!(cut(1 << 20, &[5, 5]), [shard(0, 10, 0)]);
        assert_eq!(cut(1 << 20, &[]), [shard(0, 0, 0)]);
    }
}
