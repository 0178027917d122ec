//! Batch jobs: NDJSON input parsing and the streaming worker. The job lifecycle's HTTP
//! side is in `api::batch`, its rows in `db::batch`.

pub mod inline;
pub mod jobs;
pub mod lines;
pub mod retention;
pub mod sample;
pub mod view;
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

/// Object keys a shard writes (results, errors): segments of their own (stored under
/// `parts/`, the prefix since sharding began), joined when the
/// job is assembled, or the job's objects themselves when it has one shard (nothing to
/// join).
pub fn shard_keys(job_id: &str, shard: i64, shards: i64) -> (String, String) {
    if shards <= 1 {
        return (output_key(job_id), errors_key(job_id));
    }
    (
        format!("parts/{job_id}/results-{shard:06}.ndjson"),
        format!("parts/{job_id}/errors-{shard:06}.ndjson"),
    )
}

/// Every object a job's run writes (results, errors, the segments of `shards` shards), for
/// those who delete a job's outputs: a failed run, `DELETE /v1/batch/{id}`, retention.
pub fn job_output_keys(job_id: &str, shards: Option<i64>) -> Vec<String> {
    let shards = shards.unwrap_or(0);
    let mut keys = vec![output_key(job_id), errors_key(job_id)];
    if shards > 1 {
        for shard in 0..shards {
            let (results, errors) = shard_keys(job_id, shard, shards);
            keys.extend([results, errors]);
        }
    }
    keys
}

/// Tokens estimated from the input size before anything is read: about four bytes a
/// token for English text, the cheap figure shown at start.
pub fn estimate_tokens(input_bytes: u64) -> i64 {
    (input_bytes / 4) as i64
}
