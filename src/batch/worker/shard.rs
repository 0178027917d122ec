//! Scoring one shard under its own lease: open its outputs and label vectors, read its
//! byte range from the checkpoint in chunks, score them (`--chunks-in-flight` at
//! once), append the rows to the shard's segments and checkpoint, then finish.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::io::BufReader;

use super::chunk::{read_chunk, score_chunk, Chunk, ScoredChunk, Scoring};
use super::survey::{job_spec, label_vectors};
use super::{checked, Counts, Ending, Held, JobError, Worker, READ_BUFFER};
use crate::batch::lines::LineReader;
use crate::batch::shard_keys;
use crate::db::batch::{Checkpoint, JobRow, Lease};
use crate::db::shards::ShardRow;
use crate::engine::{AdaptedLabels, Engine, LabelScorer, Spec};
use crate::outage::{self, Dependency};
use crate::storage::{ByteStream, OutputState, Storage};
use crate::wire::JobStatus;

impl Worker {
    /// Scores one shard to its end in four steps: open (outputs, label vectors), score
    /// a chunk, flush (write rows, checkpoint) while there is input, finish. Each lease
    /// renewal may find the shard taken over or the job ended (stop at once:
    /// `LeaseLost`) or asked to cancel (flush what is scored and end the shard).
    /// A checkpoint that commits ends any outage the shard met (scoring that reaches one
    /// has read from the storage since it began).
    pub(super) async fn score_shard(
        &self,
        engine: &Arc<Engine>,
        job: JobRow,
        shard: ShardRow,
    ) -> Result<Ending, JobError> {
        let mut shard = OpenShard::open(self, engine, job, shard).await?;
        if shard.job.status == JobStatus::Cancelling {
            return shard.finish(Ending::Cancelled).await;
        }
        let scorer = shard.labels().await?;
        let mut reader = shard.input().await?;
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
                    in_flight.push_back(shard.start_scoring(&scorer, std::mem::take(&mut next)));
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
            let (scored, read) = tokio::join!(shard.scored(oldest), async {
                if read_ahead {
                    read_chunk(&mut reader).await.map(Some)
                } else {
                    Ok(None)
                }
            });
            let (scored, end_offset, end_line) = scored?;
            shard.add(scored, end_offset, end_line);
            if let Some(chunk) = read? {
                read_all = chunk.lines.is_empty();
                next = chunk;
            }
            if self.checkpoint(&mut shard).await? == Lease::CancelAsked {
                return shard.finish(Ending::Cancelled).await;
            }
        }
        shard.finish(Ending::ShardDone).await
    }

    /// Writes the rows added and commits a checkpoint; `Stopping` when the process is
    /// asked to stop (rows scored since the last checkpoint are scored again by the
    /// next worker).
    async fn checkpoint(&self, shard: &mut OpenShard<'_>) -> Result<Lease, JobError> {
        let lease = shard.flush(false).await?;
        outage::recovered(Dependency::Storage);
        outage::recovered(Dependency::Database);
        if lease != Lease::CancelAsked && self.stopping.is_cancelled() {
            return Err(JobError::Stopping);
        }
        Ok(lease)
    }
}

/// An object being written part by part: results, or the error rows alone.
pub(super) struct Output {
    key: String,
    state: OutputState,
    /// Rows not yet written (writes wait for the storage's smallest part).
    pending: Vec<u8>,
}

impl Output {
    /// The object as the last checkpoint left it, or a new one.
    pub(super) async fn open(
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
    pub(super) async fn write(&mut self, storage: &dyn Storage, all: bool) -> Result<(), JobError> {
        if !self.pending.is_empty() && (all || self.pending.len() >= storage.min_part_bytes()) {
            let rows = std::mem::take(&mut self.pending);
            storage
                .append_output(&self.key, &mut self.state, rows)
                .await?;
        }
        Ok(())
    }

    pub(super) fn saved_state(&self) -> String {
        serde_json::to_string(&self.state).expect("serialisable")
    }
}

/// One shard as this worker scores it: what every step shares.
pub(super) struct OpenShard<'w> {
    worker: &'w Worker,
    engine: Arc<Engine>,
    job: JobRow,
    shard: ShardRow,
    spec: Spec,
    results: Output,
    errors: Output,
    /// Counters and input position of the rows scored so far (checkpointed at a flush).
    counts: Counts,
    input_offset: u64,
    input_line: i64,
}

impl<'w> OpenShard<'w> {
    /// Reads the job's spec and the shard's checkpoint and opens its outputs.
    pub(super) async fn open(
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
    pub(super) fn held(&self) -> Held<'_> {
        Held::Shard {
            job: &self.job.id,
            shard: self.shard.shard,
            counts: self.counts,
        }
    }

    /// The label vectors the survey stored (adapted to the job's texts), or the
    /// spec's own when adaptation did not apply: every shard scores with the same.
    pub(super) async fn labels(&self) -> Result<Arc<dyn LabelScorer>, JobError> {
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
    pub(super) async fn input(&self) -> Result<LineReader<BufReader<ByteStream>>, JobError> {
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
    pub(super) fn start_scoring(&self, scorer: &Arc<dyn LabelScorer>, chunk: Chunk) -> Scoring {
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
    pub(super) async fn scored(
        &self,
        scoring: Scoring,
    ) -> Result<(ScoredChunk, u64, i64), JobError> {
        let scored = self
            .worker
            .renewing_lease(self.held(), scoring.task)
            .await??;
        Ok((scored, scoring.end_offset, scoring.end_line))
    }

    /// Takes a scored chunk's rows and counts; the input now stands after it.
    pub(super) fn add(&mut self, chunk: ScoredChunk, end_offset: u64, end_line: i64) {
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
    pub(super) async fn flush(&mut self, all: bool) -> Result<Lease, JobError> {
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
    pub(super) async fn finish(mut self, ending: Ending) -> Result<Ending, JobError> {
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
