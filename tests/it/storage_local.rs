//! The local backend on a real directory, through `dyn Storage` as the service uses it:
//! ranged reads and composing objects by concatenation.

use std::path::Path;

use crate::common;
use crate::common::storage_cases::{self, compose};
use zeroshot::storage::{LocalStore, Storage};

/// A store in a fresh temporary directory, and that directory.
fn store() -> (LocalStore, std::path::PathBuf) {
    let dir = common::temp_dir();
    let store = LocalStore::open(&dir, "http://unused").expect("open the store");
    (store, dir)
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.push(path.display().to_string());
        }
    }
    found
}

#[tokio::test]
async fn read_range_reads_slices() {
    let (store, dir) = store();
    storage_cases::read_ranges(&store).await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn compose_concatenates_files_in_order() {
    let (store, dir) = store();
    let storage: &dyn Storage = &store;
    assert!(storage.local().is_some());
    let min = zeroshot::storage::s3::MIN_PART_BYTES;
    for sizes in [
        &[min + 1000, min, min + 7][..],
        &[min / 2 + 3],
        &[100_000; 3],
        &[100_000, 2 * min + 1, 100_000, 0, min + 100_000],
        &[],
        &[0, 0],
    ] {
        let composed = compose(storage, sizes).await;
        assert_eq!(composed.buffered, 0, "the kernel copies: {composed:?}");
    }
    storage_cases::compose_missing_source(storage).await;
    // No temporary file is left behind, after success or failure.
    let objects = dir.join("objects");
    let left: Vec<String> = files(&objects);
    assert!(left.is_empty(), "left behind: {left:?}");
    std::fs::remove_dir_all(dir).unwrap();
}
