//! Chunks: up to `CHUNK_LINES` lines of a shard read together, then scored off the
//! async threads (rayon-parallel parsing and row building, the model's runs), with the
//! failure point the tests use to make the model fail.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use rayon::prelude::*;
use serde_json::Value;

use super::{Counts, JobError, CHUNK_BYTES, CHUNK_LINES};
use crate::batch::lines::{parse_line, LineError, LineReader, RawLine};
use crate::engine::{Classification, Embedding, Engine, LabelScorer, Spec};
use crate::outage::{Dependency, Fault};
use crate::wire::{FailedRow, ResultRow, RowError, ScoredRow};

/// A scored chunk: every row in input order, the error rows again on their own.
pub(super) struct ScoredChunk {
    pub(super) rows: Vec<u8>,
    pub(super) error_rows: Vec<u8>,
    pub(super) counts: Counts,
}

/// Lines read together, and where the input stands after them (the checkpoint
/// position once they are scored and written).
#[derive(Default)]
pub(super) struct Chunk {
    pub(super) lines: Vec<RawLine>,
    pub(super) end_offset: u64,
    pub(super) end_line: i64,
}

/// A chunk being scored on the blocking threads. Dropped unawaited (a cancel, a stop,
/// an error), it runs to its end and its rows are thrown away: they are after the
/// last checkpoint, so whoever goes on scores them again.
pub(super) struct Scoring {
    pub(super) task: tokio::task::JoinHandle<Result<ScoredChunk, JobError>>,
    pub(super) end_offset: u64,
    pub(super) end_line: i64,
}

pub(super) async fn read_chunk<R: tokio::io::AsyncBufRead + Unpin>(
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
pub(super) async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(
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
pub(super) fn injected_inference_failure() -> Option<JobError> {
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
pub(super) fn score_chunk(
    engine: &Engine,
    labels: &dyn LabelScorer,
    spec: &Spec,
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
    // Each parsed line's embedding, in order; `None` for the lines that failed.
    let mut embedded = embeddings.iter();
    let embedding_of: Vec<Option<&Embedding>> = parsed
        .iter()
        .map(|(_, line)| line.as_ref().ok().and_then(|_| embedded.next()))
        .collect();
    let rows: Vec<(Vec<u8>, Counts)> = chunk
        .par_iter()
        .zip(parsed.par_iter())
        .zip(embedding_of.par_iter())
        .map(|((raw, (id, line)), embedding)| {
            let scored = line.as_ref().map(|_| {
                let embedding = embedding.expect("every parsed line has an embedding");
                engine.score(embedding, labels, spec.mode, spec.threshold)
            });
            row(raw.number, id, scored)
        })
        .collect();
    Ok(gather(rows))
}

/// A line's results row (NDJSON, newline included) and what it counts.
fn row(line: i64, id: &Value, scored: Result<Classification, &LineError>) -> (Vec<u8>, Counts) {
    let (row, counts) = match &scored {
        Ok(result) => (
            ResultRow::Scored(ScoredRow {
                line,
                id,
                label: &result.label,
                confidence: f64::from(result.confidence),
                labels: &result.labels,
                scores: result
                    .scores
                    .iter()
                    .map(|score| (score.label.as_str(), f64::from(score.score)))
                    .collect(),
                tokens: result.tokens,
                truncated: result.truncated,
            }),
            Counts {
                completed: 1,
                failed: 0,
                tokens: result.tokens as i64,
            },
        ),
        Err(error) => (
            ResultRow::Failed(FailedRow {
                line,
                id,
                error: RowError {
                    code: error.code,
                    message: &error.message,
                },
            }),
            Counts {
                completed: 0,
                failed: 1,
                tokens: 0,
            },
        ),
    };
    let mut bytes = serde_json::to_vec(&row).expect("serialisable");
    bytes.push(b'\n');
    (bytes, counts)
}

/// The chunk's rows joined in order, its error rows apart, and their counts summed.
fn gather(rows: Vec<(Vec<u8>, Counts)>) -> ScoredChunk {
    let mut scored = ScoredChunk {
        rows: Vec::with_capacity(rows.iter().map(|(row, _)| row.len()).sum()),
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
    scored
}
