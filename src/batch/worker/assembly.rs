//! Assembly, a job's last step under the job-level lease: the shards' segments joined
//! in input order into the job's results and errors objects, and the job ended.

use super::{Ending, JobError, Worker};
use crate::batch::{errors_key, shard_keys};
use crate::db::batch::JobRow;
use crate::wire::JobStatus;

impl Worker {
    /// Joins the shards' segments, in input order, into the job's results and errors
    /// objects and ends the job: `completed`, or `cancelled` when that was asked (with
    /// the rows of every shard that began). A job whose every line failed fails
    /// instead, saying so. Runs again from the start after a fault: the segments stay
    /// until the job has ended.
    pub(super) async fn assemble(&self, job: &JobRow) -> Result<Ending, JobError> {
        let shards = self.db.shards(&job.id).await?;
        let (completed, failed) = shards.iter().fold((0, 0), |(completed, failed), shard| {
            (completed + shard.cp_completed, failed + shard.cp_failed)
        });
        if job.status == JobStatus::Processing && completed == 0 {
            return Err(JobError::Fatal(format!(
                "every line failed ({failed} lines); see the results for each error"
            )));
        }
        let count = shards.len() as i64;
        // Every shard that began has completed by now (cancel leaves the others).
        let began: Vec<(String, String)> = shards
            .iter()
            .filter(|shard| shard.completed_at.is_some())
            .map(|shard| shard_keys(&job.id, shard.shard, count))
            .collect();
        let (results, errors): (Vec<String>, Vec<String>) = began.iter().cloned().unzip();
        for (segments, key) in [(&results, &job.output_key), (&errors, &errors_key(&job.id))] {
            // A job of one shard wrote its objects themselves.
            if segments.as_slice() != std::slice::from_ref(key) {
                let composed = self.storage.compose(segments, key).await?;
                tracing::info!(job = %job.id, %key, segments = segments.len(), bytes = composed.bytes,
                    buffered = composed.buffered, "batch job segments assembled");
            }
        }
        if !self.db.finish_job(&job.id, Some(&self.owner), None).await? {
            return Err(JobError::LeaseLost);
        }
        if count > 1 {
            for key in results.iter().chain(&errors) {
                if let Err(err) = self.storage.delete(key).await {
                    tracing::warn!(job = %job.id, %key, error = %err, "could not delete an assembled segment");
                }
            }
        }
        Ok(if job.status == JobStatus::Cancelling {
            Ending::Cancelled
        } else {
            Ending::Completed
        })
    }
}
