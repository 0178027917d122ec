//! Why a task stops before completing, and how faults of the database and the storage
//! become such reasons.

use crate::outage::{Dependency, Fault};
use crate::storage::StorageError;

/// Why a task stopped before completing.
#[derive(Debug, thiserror::Error)]
pub(super) enum JobError {
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
