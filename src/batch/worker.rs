//! The streaming batch worker. Every instance runs one: it claims a processing job
//! nobody holds (just started, or whose worker's lease expired), streams the input
//! from the last checkpoint, scores chunks (rayon-parallel parsing and row building,
//! batched ONNX inference) while reading the next one and renewing its lease, appends
//! results and commits a checkpoint after each part.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rayon::prelude::*;
use serde_json::{json, Map, Value};
use tokio::io::BufReader;
use tokio::sync::Notify;

use super::lines::{parse_line, LineReader, RawLine};
use super::sample::Sampler;
use crate::db::batch::{Checkpoint, Claimed, JobRow};
use crate::db::Db;
use crate::engine::{
    AdaptationReport, Adapted, AdaptedLabels, ClassificationSpec, Engine, LabelScorer, LabelVectors,
};
use crate::storage::{Storage, StorageError};

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
    pub storage: Arc<Storage>,
    pub engine: Arc<OnceLock<Arc<Engine>>>,
    /// Identifies this worker's leases; unique per process.
    pub owner: String,
    /// A job whose lease is not renewed for this long is taken over by another worker.
    pub lease: Duration,
    /// Woken when a job is started, so it begins without waiting for the next poll.
    pub wake: Arc<Notify>,
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
    /// A passing fault (database, storage); the job is retried after the lease expires.
    #[error("{0}")]
    Transient(String),
}

impl From<crate::db::DbError> for JobError {
    fn from(err: crate::db::DbError) -> Self {
        JobError::Transient(err.to_string())
    }
}

impl From<StorageError> for JobError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::NotFound(key) => {
                JobError::Fatal(format!("input file {key:?} is missing"))
            }
            other => JobError::Transient(other.to_string()),
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

    /// Runs until the process ends.
    pub async fn run(self) {
        loop {
            let Some(engine) = self.engine.get().cloned() else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            match self.db.claim_job(&self.owner, self.lease_ms()).await {
                Ok(Some(Claimed { job, resumed })) => {
                    let id = job.id.clone();
                    if resumed {
                        crate::metrics::job_resumed();
                    }
                    tracing::info!(job = %id, resumed, "processing batch job");
                    match self.process(&engine, job).await {
                        Ok(()) => tracing::info!(job = %id, "batch job finished"),
                        Err(JobError::Fatal(message)) => {
                            tracing::warn!(job = %id, %message, "batch job failed");
                            if let Err(err) =
                                self.db.finish_job(&id, &self.owner, Some(&message)).await
                            {
                                tracing::error!(job = %id, error = %err, "could not mark job failed");
                            }
                        }
                        Err(err) => {
                            tracing::warn!(job = %id, error = %err, "batch job interrupted; will resume")
                        }
                    }
                }
                Ok(None) => {
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(POLL_INTERVAL) => {}
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, "claiming batch jobs failed");
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
        }
    }

    async fn process(&self, engine: &Arc<Engine>, job: JobRow) -> Result<(), JobError> {
        let spec: ClassificationSpec = serde_json::from_str(&job.config)
            .map_err(|err| JobError::Fatal(format!("stored job config is unreadable: {err}")))?;
        let labels = {
            let (engine, set) = (engine.clone(), spec.labels.clone());
            tokio::task::spawn_blocking(move || engine.label_vectors(&set))
                .await
                .map_err(|err| JobError::Transient(err.to_string()))?
                .map_err(|err| JobError::Fatal(err.to_string()))?
        };
        // The upload form stays valid after start: refuse a file replaced under the job.
        let size = self.storage.size(&job.input_key).await?;
        if size != job.input_bytes.map(|bytes| bytes as u64) {
            return Err(JobError::Fatal(
                "the input file changed after the job started; upload it again and restart the job"
                    .to_string(),
            ));
        }
        let scorer = self
            .prepare_labels(engine, &job, &spec, labels, size.unwrap_or(0))
            .await?;

        let mut state = match &job.cp_output_state {
            Some(saved) => serde_json::from_str(saved).map_err(|err| {
                JobError::Fatal(format!("stored output state is unreadable: {err}"))
            })?,
            None => self.storage.start_output(&job.output_key).await?,
        };
        let input = self
            .storage
            .read_from(&job.input_key, job.cp_input_offset as u64)
            .await?;
        let mut reader = LineReader::new(
            BufReader::with_capacity(READ_BUFFER, input),
            job.cp_input_offset as u64,
            job.cp_line,
        );
        let mut counts = Counts {
            completed: job.cp_completed,
            failed: job.cp_failed,
            tokens: job.cp_tokens,
        };
        let mut pending: Vec<u8> = Vec::new();
        let min_part = self.storage.min_part_bytes();
        let mut next = read_chunk(&mut reader).await?;
        loop {
            let chunk = std::mem::take(&mut next);
            let at_end = chunk.lines.is_empty();
            if !at_end {
                let (engine, scorer, spec) = (engine.clone(), scorer.clone(), spec.clone());
                let lines = chunk.lines;
                let scoring = tokio::task::spawn_blocking(move || {
                    score_chunk(&engine, scorer.as_ref(), &spec, lines)
                });
                // The next chunk is read while this one is scored.
                let (scored, read) = tokio::join!(
                    self.renewing_lease(&job.id, counts, scoring),
                    read_chunk(&mut reader)
                );
                let (rows, chunk_counts) = scored??;
                crate::metrics::lines_scored(chunk_counts.completed, chunk_counts.failed);
                next = read?;
                pending.extend_from_slice(&rows);
                counts.completed += chunk_counts.completed;
                counts.failed += chunk_counts.failed;
                counts.tokens += chunk_counts.tokens;
            }
            if (pending.len() >= min_part && !pending.is_empty()) || (at_end && !pending.is_empty())
            {
                self.storage
                    .append_output(&job.output_key, &mut state, std::mem::take(&mut pending))
                    .await?;
                let checkpoint = Checkpoint {
                    input_offset: chunk.end_offset as i64,
                    line: chunk.end_line,
                    completed: counts.completed,
                    failed: counts.failed,
                    tokens: counts.tokens,
                    output_state: serde_json::to_string(&state).expect("serialisable"),
                };
                if !self
                    .db
                    .checkpoint(&job.id, &self.owner, self.lease_ms(), &checkpoint)
                    .await?
                {
                    return Err(JobError::LeaseLost);
                }
            } else if !at_end {
                self.renew_lease(&job.id, counts).await?;
            }
            if at_end {
                break;
            }
        }
        self.storage.finish_output(&job.output_key, &state).await?;
        let error = match (counts.completed, counts.failed) {
            (0, 0) => Some("the input has no lines".to_string()),
            (0, failed) => Some(format!(
                "every line failed ({failed} lines); see the results for each error"
            )),
            _ => None,
        };
        if let Some(message) = error {
            return Err(JobError::Fatal(message));
        }
        if !self.db.finish_job(&job.id, &self.owner, None).await? {
            return Err(JobError::LeaseLost);
        }
        Ok(())
    }

    /// Extends the job's lease, showing `counts` as its progress; `LeaseLost` when
    /// another worker holds the job now.
    async fn renew_lease(&self, job_id: &str, counts: Counts) -> Result<(), JobError> {
        if !self
            .db
            .heartbeat(
                job_id,
                &self.owner,
                self.lease_ms(),
                counts.completed,
                counts.failed,
            )
            .await?
        {
            return Err(JobError::LeaseLost);
        }
        crate::metrics::lease_renewed();
        Ok(())
    }

    /// Waits for a scoring task, renewing the lease meanwhile, so that a slow chunk
    /// (long texts, a slow machine) never lets another worker take the job over.
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
                done = &mut task => return done.map_err(|err| JobError::Transient(err.to_string())),
                _ = beat.tick() => self.renew_lease(job_id, counts).await?,
            }
        }
    }

    /// The label vectors a job scores with. On its first run: one streaming pass that
    /// counts the lines and samples them, the adaptation fitted on the sample (when the
    /// spec asks for it), and both stored before any line is scored. On a resumed run:
    /// the stored vectors, so every line is scored as an uninterrupted run would.
    async fn prepare_labels(
        &self,
        engine: &Arc<Engine>,
        job: &JobRow,
        spec: &ClassificationSpec,
        labels: LabelVectors,
        file_bytes: u64,
    ) -> Result<Arc<dyn LabelScorer>, JobError> {
        if job.requests_total.is_some() {
            // Stored with the line count in one update: present exactly when it applied.
            return Ok(match self.db.adapted_labels(&job.id).await? {
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
        let (total, sample) = self
            .survey(job, spec.adapt.then(|| Sampler::new(file_bytes)))
            .await?;
        let adapted = match sample {
            None => Adapted {
                report: AdaptationReport::off(),
                labels: None,
            },
            Some(sample) => {
                let (engine, labels) = (engine.clone(), labels.clone());
                let fitting = tokio::task::spawn_blocking(move || engine.adapt(&sample, &labels));
                self.renewing_lease(&job.id, Counts::default(), fitting)
                    .await?
                    .map_err(|err| JobError::Fatal(format!("inference failed: {err}")))?
            }
        };
        let report = serde_json::to_string(&adapted.report).expect("serialisable");
        let stored = adapted
            .labels
            .as_ref()
            .map(|labels| serde_json::to_string(labels).expect("serialisable"));
        if !self
            .db
            .set_survey(&job.id, &self.owner, total, &report, stored.as_deref())
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
        job: &JobRow,
        mut sampler: Option<Sampler>,
    ) -> Result<(i64, Option<Vec<String>>), JobError> {
        let input = self.storage.read_from(&job.input_key, 0).await?;
        let mut reader = LineReader::new(BufReader::with_capacity(READ_BUFFER, input), 0, 0);
        let mut total = 0i64;
        let mut last_beat = std::time::Instant::now();
        loop {
            let start = reader.offset;
            let Some(line) = reader
                .next_line()
                .await
                .map_err(|err| JobError::Fatal(format!("input file could not be read: {err}")))?
            else {
                break;
            };
            total += 1;
            if let Some(sampler) = sampler.as_mut() {
                sampler.offer(start, &line);
            }
            if last_beat.elapsed() > self.lease / 4 {
                self.renew_lease(&job.id, Counts::default()).await?;
                last_beat = std::time::Instant::now();
            }
        }
        Ok((total, sampler.map(|s| s.finish(total as usize))))
    }
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
        match reader
            .next_line()
            .await
            .map_err(|err| JobError::Fatal(format!("input file could not be read: {err}")))?
        {
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

/// Parses, embeds and scores one chunk; returns its NDJSON rows in input order.
fn score_chunk(
    engine: &Engine,
    labels: &dyn LabelScorer,
    spec: &ClassificationSpec,
    chunk: Vec<RawLine>,
) -> Result<(Vec<u8>, Counts), JobError> {
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
    let mut out = Vec::with_capacity(rows.iter().map(|(r, _)| r.len()).sum());
    let mut totals = Counts::default();
    for (row, counts) in rows {
        out.extend_from_slice(&row);
        totals.completed += counts.completed;
        totals.failed += counts.failed;
        totals.tokens += counts.tokens;
    }
    Ok((out, totals))
}
