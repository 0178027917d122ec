//! Batch jobs as the API shows them, webhook events carry them and the CLI's client
//! reads them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::UnknownValue;
use crate::engine::{AdaptationReport, Mode};

/// A job's state. `failed` jobs may be started again (from the start of the file).
/// The CLI's client reads the same type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Created; waiting for its file and `start`.
    Pending,
    Processing,
    /// Cancel was asked; it stops at its next chunk and becomes `cancelled`.
    Cancelling,
    Completed,
    Failed,
    /// Stopped on request; the rows scored before that stay downloadable.
    Cancelled,
}

impl JobStatus {
    /// Every status, for reports that list each one (zero included).
    pub const ALL: [JobStatus; 6] = [
        Self::Pending,
        Self::Processing,
        Self::Cancelling,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];
    /// States a job does not leave by itself; `completed_at` says when it got there.
    pub const ENDED: [JobStatus; 3] = [Self::Completed, Self::Failed, Self::Cancelled];

    /// The word the API uses, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Cancelling => "cancelling",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the job has ended ([`Self::ENDED`]).
    pub fn has_ended(self) -> bool {
        Self::ENDED.contains(&self)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = UnknownValue;

    /// The status a stored word names; any other word is an error, never a guess.
    fn from_str(word: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == word)
            .ok_or_else(|| UnknownValue(word.to_string()))
    }
}

/// A batch job as the API shows it (and as the CLI's client reads it).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub job_id: String,
    pub status: JobStatus,
    /// The saved classifier the job pinned, as `name@vN`.
    pub classifier: Option<String>,
    pub mode: Mode,
    pub threshold: f32,
    pub adapt: bool,
    /// What adaptation did, once the job has read its input.
    pub adaptation: Option<AdaptationReport>,
    pub labels: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    /// Where the job's end is announced.
    pub webhook_url: Option<String>,
    /// Lines of the input, once counted.
    pub requests_total: Option<i64>,
    pub requests_completed: i64,
    pub requests_failed: i64,
    pub estimated_tokens: Option<i64>,
    pub actual_tokens: Option<i64>,
    pub input_bytes: Option<i64>,
    /// Why the job failed.
    pub error: Option<String>,
    pub progress: Progress,
    /// How the job's shards stand, once its input is surveyed (cut into shards that
    /// any instance scores); null before.
    pub shards: Option<Shards>,
    /// RFC 3339, like every time below.
    pub created_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    /// Retention (`--retention-days` after the job ended) deleted its input and
    /// results; the job stays listed, its results answer 410.
    pub expired: bool,
}

impl Job {
    /// Lines scored so far, failed ones included.
    pub fn lines_done(&self) -> u64 {
        (self.requests_completed + self.requests_failed).max(0) as u64
    }
}

/// A new job and the form that uploads its input (an S3-style presigned POST). A job
/// created with `items` has its input already: the upload fields are null.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedJob {
    #[serde(flatten)]
    pub job: Job,
    /// POST a `multipart/form-data` body here: every `upload_fields` entry, then `file`.
    pub upload_url: Option<String>,
    pub upload_fields: Option<BTreeMap<String, String>>,
    /// Where the input is stored.
    pub input_key: String,
    /// When the upload form stops being accepted (RFC 3339).
    pub expires_at: Option<String>,
    pub max_upload_bytes: Option<u64>,
}

/// Time-limited downloads of a completed (or cancelled) job's results.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResultsLink {
    pub job_id: String,
    /// GET it (no API key): NDJSON, one row per input line scored, in input order.
    pub url: String,
    /// GET it (no API key): the error rows of `url` alone, same format and order.
    pub errors_url: String,
    /// Rows in `errors_url` (the lines that failed).
    pub errors: i64,
    /// RFC 3339; both links stop working then.
    pub expires_at: String,
    pub requests_completed: i64,
    pub requests_failed: i64,
}

/// One page of jobs, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub data: Vec<Job>,
    /// Pass as `after` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

/// A job's shards by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Shards {
    pub total: i64,
    /// Waiting for a worker (or given back, or left by a worker that stopped).
    pub pending: i64,
    /// Being scored by a worker now.
    pub processing: i64,
    pub completed: i64,
}

/// Progress a person can read: share of the input read, and an estimate of the rest.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    /// 0-100, one decimal.
    pub percent: f64,
    pub lines_per_second: Option<f64>,
    /// While processing, once the rate is known.
    pub eta_seconds: Option<f64>,
}
