//! Retention (`--retention-days`): a job's input, results and error rows are deleted
//! that long after it ended, or after it was created when it never started. The row
//! stays, marked expired, so the job still lists and its results answer 410.
//!
//! Every instance sweeps; a conditional UPDATE gives each job to one of them, and a
//! marked job no longer starts, so nothing is deleted under a running job.

use std::sync::Arc;
use std::time::Duration;

use super::job_output_keys;
use crate::clock::now_ms;
use crate::db::retention::Expirable;
use crate::db::{Db, DbError};
use crate::storage::{Storage, StorageError};

/// Jobs read per query.
const PAGE: i64 = 100;

/// Periodically expires the jobs past retention.
pub struct Sweeper {
    pub db: Db,
    pub storage: Arc<dyn Storage>,
    /// How long after a job ends its objects are kept.
    pub retention: Duration,
    /// Time between sweeps (the first runs at once).
    pub interval: Duration,
}

impl Sweeper {
    /// Runs until the process ends.
    pub async fn run(self) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match self.sweep().await {
                Ok(0) => {}
                Ok(jobs) => tracing::info!(jobs, "retention: deleted the files of expired jobs"),
                Err(err) => tracing::error!(error = %err, "retention sweep failed"),
            }
        }
    }

    /// Expires every job past retention now; returns how many this instance expired.
    /// A job whose objects could not all be deleted is left for the next sweep.
    pub async fn sweep(&self) -> Result<u64, DbError> {
        let cutoff = now_ms() - self.retention.as_millis() as i64;
        let mut expired = 0;
        loop {
            let jobs = self.db.expirable_jobs(cutoff, PAGE).await?;
            let full_page = jobs.len() as i64 == PAGE;
            let mut failed = false;
            for job in jobs {
                // Another instance may have taken it since the query.
                if !self.db.mark_expired(&job.id, cutoff).await? {
                    continue;
                }
                match delete_objects(self.storage.as_ref(), &job).await {
                    Ok(()) => expired += 1,
                    Err(err) => {
                        tracing::warn!(job = %job.id, error = %err, "retention: could not delete a job's files; retrying next sweep");
                        self.db.unmark_expired(&job.id).await?;
                        failed = true;
                    }
                }
            }
            // A failed job would come back in the next page: stop until the next sweep.
            if !full_page || failed {
                return Ok(expired);
            }
        }
    }
}

/// Deletes a job's input, results and error rows (an ended job's parts are gone
/// already); missing ones are fine.
async fn delete_objects(storage: &dyn Storage, job: &Expirable) -> Result<(), StorageError> {
    for key in std::iter::once(job.input_key.clone()).chain(job_output_keys(&job.id, None)) {
        storage.delete(&key).await?;
    }
    Ok(())
}
