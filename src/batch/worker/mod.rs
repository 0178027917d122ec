//! The streaming batch worker. Every instance runs one, and every job's work is
//! spread over all of them, in the order a job runs:
//!
//! 1. **Claim** (here): the next task nobody holds, a job's survey or assembly first,
//!    else a shard; a fault tries the task again from its last checkpoint (`again`).
//! 2. **Survey** ([`survey`], job-level lease): one streaming pass over the input counts
//!    its lines, samples them for adaptation, cuts it into shards of about
//!    `--shard-bytes` at line ends and fits the adapted label vectors, all stored before
//!    any line is scored.
//! 3. **Shards** ([`shard`], a lease each): any worker claims any shard nobody holds,
//!    streams its byte range from the shard's checkpoint, scores [`chunk`]s
//!    (rayon-parallel parsing and row building, the model's runs; `--chunks-in-flight`
//!    at once, one by default on the CPU, two on a GPU) while reading the next one and
//!    renewing its [`lease`], appends rows to the shard's results segment (and error
//!    rows to its errors segment) and commits a checkpoint after each flush.
//! 4. **Assembly** ([`assembly`], job-level lease): when no shard is left, the segments
//!    are joined in input order into the job's results and errors objects, by the store
//!    where it can (`Storage::compose`), and the job ends.
//!
//! A cancel asked on any instance is seen at each shard's next lease renewal; SIGTERM
//! hands the task back at the next chunk boundary. Why a task stops: [`error`].

mod assembly;
mod chunk;
mod error;
mod lease;
mod shard;
mod survey;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::job_output_keys;
use crate::db::batch::{Claimed, JobRow, Lease};
use crate::db::shards::{ClaimedShard, ShardRow};
use crate::db::Db;
use crate::engine::Engine;
use crate::outage::{self, Dependency, Fault};
use crate::storage::Storage;
use crate::wire::JobStatus;
use error::JobError;

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
            let fault = match ended {
                Ok(ending) => {
                    tracing::info!(job = %id, ?shard, ?ending, "batch task ended");
                    return;
                }
                Err(JobError::Stopping) => return self.hand_back(&id, shard).await,
                Err(JobError::LeaseLost | JobError::CancelAsked) => {
                    tracing::warn!(job = %id, ?shard, "batch task taken over by another worker, or its job ended");
                    return;
                }
                // Whatever ended an attempt while the process stops, the next worker
                // decides on a fresh one: an error met while shutting down is no proof.
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
            match self.again(&id, shard, fault).await {
                Some(again) => task = again,
                None => return,
            }
        }
    }

    /// The task taken again from its last checkpoint, after `fault`'s backoff (at
    /// once after a model failure); `None` when it ended meanwhile: failed (the
    /// storage was away longer than its budget), handed back (the process stops), or
    /// ended or taken over elsewhere.
    async fn again(&self, id: &str, shard: Option<i64>, mut fault: Option<Fault>) -> Option<Task> {
        loop {
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
                    self.fail(id, shard, &message).await;
                    return None;
                }
                if !self.pause(outage.backoff()).await {
                    self.hand_back(id, shard).await;
                    return None;
                }
            }
            let reclaimed = match shard {
                None => self
                    .db
                    .reclaim_job(id, &self.owner, self.lease_ms())
                    .await
                    .map(|job| job.map(Task::Job)),
                Some(shard) => self
                    .db
                    .reclaim_shard(id, shard, &self.owner, self.lease_ms())
                    .await
                    .map(|held| held.map(|(job, shard)| Task::Shard(job, shard))),
            };
            match reclaimed {
                Ok(Some(task)) => return Some(task),
                Ok(None) => {
                    tracing::info!(job = %id, ?shard, "batch task ended or taken over while it waited to run again");
                    return None;
                }
                Err(err) => fault = Some(err.into()),
            }
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
    /// results, segments and error rows, so nothing truncated is ever offered and the
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

    /// Deletes a failed job's outputs: its results, errors and every shard's segments.
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
                Err(JobError::CancelAsked) => self.assemble(engine, &job).await,
                Ok(()) => Ok(Ending::Surveyed),
                Err(err) => Err(err),
            };
        }
        self.assemble(engine, &job).await
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

/// How a task ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The survey is stored; the shards are open to every worker.
    Surveyed,
    /// A shard read to its end.
    ShardDone,
    /// The job's segments are assembled; it completed.
    Completed,
    /// Cancel was asked; the rows scored so far are the results.
    Cancelled,
}
