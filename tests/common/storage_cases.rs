//! Cases every storage backend must pass, run through `dyn Storage` by each backend's
//! test file (`storage_local.rs`, `storage_s3.rs`) on real files and a real S3 server.
//! Every case uses its own keys, so runs against a reused store do not meet.

use tokio::io::AsyncReadExt;
use zeroshot::storage::{Composed, Storage, StorageError};

/// A fresh key under `case`.
pub fn unique_key(case: &str) -> String {
    format!("{case}/{}.jsonl", uuid::Uuid::new_v4().simple())
}

/// Deterministic, position-dependent bytes, so misplaced ranges cannot compare equal.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(31))
        .collect()
}

/// Bytes `[start, end)` of `key` (to its end for `None`), read to the end.
pub async fn read_range(storage: &dyn Storage, key: &str, start: u64, end: Option<u64>) -> Vec<u8> {
    let mut stream = storage
        .read_range(key, start, end)
        .await
        .unwrap_or_else(|err| panic!("read_range {key} {start}..{end:?}: {err}"));
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .await
        .expect("read the stream");
    bytes
}

/// `key` from byte `offset`, read to the end.
pub async fn read_all(storage: &dyn Storage, key: &str, offset: u64) -> Vec<u8> {
    let mut stream = storage.read_from(key, offset).await.expect("read_from");
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .await
        .expect("read the stream");
    bytes
}

/// Stores `data` under `key` through the output path (one part; none when empty).
pub async fn put(storage: &dyn Storage, key: &str, data: &[u8]) {
    let mut state = storage.start_output(key).await.unwrap();
    if !data.is_empty() {
        storage
            .append_output(key, &mut state, data.to_vec())
            .await
            .unwrap();
    }
    storage.finish_output(key, &state).await.unwrap();
}

/// `read_range` inside an object, at its start and end, past its end, empty ranges,
/// on an empty object and on a missing one.
pub async fn read_ranges(storage: &dyn Storage) {
    let key = unique_key("range");
    let data = pattern(1000, 21);
    put(storage, &key, &data).await;
    for (start, end) in [
        (10, 20),
        (0, 5),
        (0, 1000),
        (990, 1000),
        (999, 1000),
        (1, 999),
    ] {
        assert!(
            read_range(storage, &key, start, Some(end)).await == data[start as usize..end as usize],
            "range {start}..{end} differs"
        );
    }
    assert!(
        read_range(storage, &key, 990, Some(5000)).await == data[990..],
        "a range past the end is cut at the end"
    );
    assert!(read_range(storage, &key, 0, None).await == data);
    assert!(read_range(storage, &key, 400, None).await == data[400..]);
    for (start, end) in [
        (0, Some(0)),
        (5, Some(5)),
        (20, Some(10)),
        (1000, Some(1000)),
        (1000, Some(1010)),
        (2000, Some(3000)),
        (1000, None),
        (2000, None),
    ] {
        assert!(
            read_range(storage, &key, start, end).await.is_empty(),
            "range {start}..{end:?} is not empty"
        );
    }

    let empty = unique_key("range-empty");
    put(storage, &empty, &[]).await;
    for (start, end) in [(0, Some(10)), (0, Some(0)), (0, None), (3, Some(8))] {
        assert!(
            read_range(storage, &empty, start, end).await.is_empty(),
            "range {start}..{end:?} of an empty object is not empty"
        );
    }

    let missing = unique_key("range-missing");
    for (start, end) in [(0, Some(10)), (5, Some(5)), (0, None), (7, None)] {
        assert!(
            matches!(
                storage.read_range(&missing, start, end).await,
                Err(StorageError::NotFound(_))
            ),
            "range {start}..{end:?} of a missing object"
        );
    }
    for key in [key, empty] {
        storage.delete(&key).await.unwrap();
    }
}

/// Composes sources of `sizes` bytes (distinct patterns) over an existing destination,
/// checks the destination holds their concatenation and the sources are untouched,
/// then deletes everything. Returns what compose reported.
pub async fn compose(storage: &dyn Storage, sizes: &[usize]) -> Composed {
    let case = format!("compose/{}", uuid::Uuid::new_v4().simple());
    let mut sources = Vec::new();
    let mut expected = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let key = format!("{case}/source-{i}.jsonl");
        let data = pattern(size, i as u8 + 1);
        put(storage, &key, &data).await;
        expected.extend_from_slice(&data);
        sources.push(key);
    }
    let dest = format!("{case}/results.jsonl");
    put(storage, &dest, b"an older object, replaced").await;

    let composed = storage
        .compose(&sources, &dest)
        .await
        .unwrap_or_else(|err| panic!("compose {sizes:?}: {err}"));
    assert_eq!(composed.bytes, expected.len() as u64, "{sizes:?}");
    assert!(
        composed.buffered <= composed.bytes,
        "{sizes:?}: {composed:?}"
    );
    assert_eq!(
        storage.size(&dest).await.unwrap(),
        Some(expected.len() as u64),
        "{sizes:?}"
    );
    assert!(
        read_all(storage, &dest, 0).await == expected,
        "composed bytes differ for {sizes:?}"
    );
    for (key, &size) in sources.iter().zip(sizes) {
        assert_eq!(
            storage.size(key).await.unwrap(),
            Some(size as u64),
            "{key} is left in place"
        );
        storage.delete(key).await.unwrap();
    }
    storage.delete(&dest).await.unwrap();
    composed
}

/// A missing source fails compose with `NotFound` and leaves the destination as it was.
pub async fn compose_missing_source(storage: &dyn Storage) {
    let present = unique_key("compose-present");
    let missing = unique_key("compose-missing");
    let dest = unique_key("compose-dest");
    put(storage, &present, &pattern(100, 1)).await;
    put(storage, &dest, b"kept").await;
    let composed = storage
        .compose(&[present.clone(), missing.clone()], &dest)
        .await;
    assert!(
        matches!(&composed, Err(StorageError::NotFound(key)) if *key == missing),
        "got {composed:?}"
    );
    assert_eq!(read_all(storage, &dest, 0).await, b"kept");
    for key in [present, dest] {
        storage.delete(&key).await.unwrap();
    }
}
