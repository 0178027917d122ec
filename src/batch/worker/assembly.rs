//! Assembly, a job's last step under the job-level lease: the shards' segments joined
//! in input order into the job's results and errors objects, the fitted vectors saved
//! as the classifier's next version when the job asked (`save_adapted`), and the job
//! ended.

use std::sync::Arc;

use super::{Ending, JobError, Worker};
use crate::batch::{errors_key, shard_keys};
use crate::classifiers::{learn, ClassifierError};
use crate::db::batch::JobRow;
use crate::engine::{AdaptationReport, Engine};
use crate::wire::JobStatus;

impl Worker {
    /// Joins the shards' segments, in input order, into the job's results and errors
    /// objects and ends the job: `completed`, or `cancelled` when that was asked (with
    /// the rows of every shard that began). A job whose every line failed fails
    /// instead, saying so. Runs again from the start after a fault: the segments stay
    /// until the job has ended.
    pub(super) async fn assemble(
        &self,
        engine: &Arc<Engine>,
        job: &JobRow,
    ) -> Result<Ending, JobError> {
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
        if job.status == JobStatus::Processing && job.save_adapted != 0 {
            self.save_adapted(engine, job).await?;
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

    /// Saves the job's own fitted vectors as its classifier's next version, once (a
    /// repeated assembly finds the version recorded). Nothing is saved when the job's
    /// adaptation did not apply, or the classifier's labels changed or it was deleted
    /// since; the log says why. A database fault is retried with the assembly.
    async fn save_adapted(&self, engine: &Arc<Engine>, job: &JobRow) -> Result<(), JobError> {
        let (Some(name), None) = (&job.classifier_name, job.saved_version) else {
            return Ok(());
        };
        let report: Option<AdaptationReport> = job
            .adaptation
            .as_deref()
            .and_then(|report| serde_json::from_str(report).ok());
        let labels = self.db.adapted_labels(&job.id).await?;
        let (Some(report), Some(labels)) = (report.filter(|r| r.applied), labels) else {
            tracing::info!(job = %job.id, "save_adapted: the job's adaptation did not apply; no version saved");
            return Ok(());
        };
        let labels = serde_json::from_str(&labels).map_err(|err| {
            JobError::Fatal(format!(
                "stored adapted label vectors are unreadable: {err}"
            ))
        })?;
        match learn::save_job_version(&self.db, engine, job, name, (report, labels)).await {
            Ok(version) => {
                tracing::info!(job = %job.id, classifier = %name, ?version, "save_adapted: fitted vectors saved");
                Ok(())
            }
            Err(ClassifierError::Db(err)) if !matches!(err, crate::db::DbError::NotFound(_)) => {
                Err(err.into())
            }
            Err(err) => {
                tracing::warn!(job = %job.id, classifier = %name, error = %err, "save_adapted: no version saved");
                Ok(())
            }
        }
    }
}
