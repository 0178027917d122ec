//! Jobs as the API shows them: a stored job and its shards made into the wire's
//! [`Job`], for the API and for webhook events.

use crate::clock::{now_ms, rfc3339};
use crate::db::batch::JobRow;
use crate::db::{Db, DbError};
use crate::engine::Spec;
use crate::wire::{Job, JobStatus, Progress};

/// A stored job whose spec cannot be read back: a fault of this service, not the caller.
#[derive(Debug, thiserror::Error)]
#[error("job {job_id} spec: {message}")]
pub struct ViewError {
    pub job_id: String,
    pub message: String,
}

/// Why jobs could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum ViewsError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    View(#[from] ViewError),
}

/// Jobs as the API shows them, with their shards (one query for all).
pub async fn views(db: &Db, jobs: &[&JobRow]) -> Result<Vec<Job>, ViewsError> {
    let ids: Vec<&str> = jobs.iter().map(|job| job.id.as_str()).collect();
    let mut shards = db.shard_counts(&ids).await?;
    jobs.iter()
        .map(|job| {
            let mut shown = view(job)?;
            shown.shards = shards.remove(&job.id);
            Ok(shown)
        })
        .collect()
}

/// One job as the API shows it, with its shards.
pub async fn view_one(db: &Db, job: &JobRow) -> Result<Job, ViewsError> {
    Ok(views(db, &[job]).await?.remove(0))
}

fn progress(job: &JobRow) -> Progress {
    let done = job.requests_completed + job.requests_failed;
    let percent = match (job.status, job.requests_total) {
        (JobStatus::Completed, _) => 100.0,
        (_, Some(total)) if total > 0 => (100.0 * done as f64 / total as f64).min(100.0),
        _ => 0.0,
    };
    let elapsed = job
        .started_at
        .map(|started| (job.completed_at.unwrap_or_else(now_ms) - started) as f64 / 1000.0);
    let rate = elapsed
        .filter(|&s| s > 0.0 && done > 0)
        .map(|s| done as f64 / s);
    let eta = match (job.status, rate, job.requests_total) {
        (JobStatus::Processing, Some(rate), Some(total)) => {
            Some(((total - done).max(0) as f64) / rate)
        }
        _ => None,
    };
    Progress {
        percent: (percent * 10.0).round() / 10.0,
        lines_per_second: rate.map(|r| r.round()),
        eta_seconds: eta.map(|e| e.ceil()),
    }
}

/// The job as the API shows it (and as webhook events carry it), without its shards.
pub fn view(job: &JobRow) -> Result<Job, ViewError> {
    let spec: Spec = serde_json::from_str(&job.spec).map_err(|err| ViewError {
        job_id: job.id.clone(),
        message: err.to_string(),
    })?;
    Ok(Job {
        job_id: job.id.clone(),
        status: job.status,
        classifier: job
            .classifier_name
            .as_ref()
            .zip(job.classifier_version)
            .map(|(name, version)| format!("{name}@v{version}")),
        mode: spec.mode,
        threshold: spec.threshold,
        adapt: spec.adapt,
        adaptation: job
            .adaptation
            .as_deref()
            .and_then(|report| serde_json::from_str(report).ok()),
        save_adapted: job.save_adapted != 0,
        saved_version: job
            .classifier_name
            .as_ref()
            .zip(job.saved_version)
            .map(|(name, version)| format!("{name}@v{version}")),
        labels: spec.labels.names().map(str::to_string).collect(),
        metadata: serde_json::from_str(&job.metadata).unwrap_or_default(),
        webhook_url: job.webhook_url.clone(),
        requests_total: job.requests_total,
        requests_completed: job.requests_completed,
        requests_failed: job.requests_failed,
        estimated_tokens: job.estimated_tokens,
        actual_tokens: job.actual_tokens,
        input_bytes: job.input_bytes,
        error: job.error.clone(),
        progress: progress(job),
        shards: None,
        created_at: rfc3339(job.created_at),
        started_at: job.started_at.map(rfc3339),
        completed_at: job.completed_at.map(rfc3339),
        expired: job.expired_at.is_some(),
    })
}
