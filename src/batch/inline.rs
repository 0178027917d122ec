//! Inline items: the items of a `POST /v1/batch` body written as the job's input, one
//! NDJSON line each, so that the worker reads and checks them exactly as it does the
//! lines of an uploaded file (a bad item is an error row, not a refused request).

use serde::Serialize;

use crate::storage::{Storage, StorageError};

/// Most items one request carries; larger inputs are uploaded as a file.
pub const MAX_ITEMS: usize = 50_000;
/// Bytes gathered before each write: a few writes for the largest body, and above the
/// 5 MiB S3 asks of every part but the last.
const WRITE_BYTES: usize = 8 * 1024 * 1024;

/// Writes `items` to `key` as compact NDJSON (one line each, in order) and returns
/// the bytes written. A failed write leaves nothing behind.
pub async fn write_items<T: Serialize>(
    storage: &dyn Storage,
    key: &str,
    items: &[T],
) -> Result<u64, StorageError> {
    let written = write(storage, key, items).await;
    if written.is_err() {
        if let Err(err) = storage.delete(key).await {
            tracing::warn!(key, error = %err, "could not remove a partly written input");
        }
    }
    written
}

async fn write<T: Serialize>(
    storage: &dyn Storage,
    key: &str,
    items: &[T],
) -> Result<u64, StorageError> {
    let part = WRITE_BYTES.max(storage.min_part_bytes());
    let mut state = storage.start_output(key).await?;
    let mut buffer = Vec::with_capacity(part + part / 8);
    let mut total = 0u64;
    for (i, item) in items.iter().enumerate() {
        // Compact JSON has no raw newline: one item is exactly one line.
        serde_json::to_writer(&mut buffer, item)
            .map_err(|err| StorageError::Backend(format!("item {i}: {err}")))?;
        buffer.push(b'\n');
        if buffer.len() >= part || i + 1 == items.len() {
            total += buffer.len() as u64;
            storage
                .append_output(key, &mut state, std::mem::take(&mut buffer))
                .await?;
        }
    }
    storage.finish_output(key, &state).await?;
    Ok(total)
}
