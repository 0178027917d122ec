//! Batch jobs: NDJSON input parsing and the streaming worker. The job lifecycle's HTTP
//! side is in `api::batch`, its rows in `db::batch`.

pub mod inline;
pub mod lines;
pub mod retention;
pub mod sample;
pub mod worker;

pub use worker::Worker;

/// Object key of a job's uploaded input.
pub fn input_key(job_id: &str) -> String {
    format!("inputs/{job_id}.ndjson")
}

/// Object key of a job's results.
pub fn output_key(job_id: &str) -> String {
    format!("results/{job_id}.ndjson")
}

/// Object key of a job's error rows alone (the same rows as in its results).
pub fn errors_key(job_id: &str) -> String {
    format!("errors/{job_id}.ndjson")
}

/// Tokens estimated from the input size before anything is read: about four bytes a
/// token for English text, the cheap figure shown at start.
pub fn estimate_tokens(input_bytes: u64) -> i64 {
    (input_bytes / 4) as i64
}
