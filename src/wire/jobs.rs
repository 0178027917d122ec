//! Batch jobs as the API takes and shows them, webhook events carry them and the CLI's
//! client sends and reads them.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use super::spec::with_spec_fields;
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
    /// Whether the job saves its fitted vectors as its classifier's next version.
    pub save_adapted: bool,
    /// The version it saved (`name@vN`), once completed.
    pub saved_version: Option<String>,
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

with_spec_fields! {
    /// `POST /v1/batch`: the classification config of `/v1/classify` minus the text.
    #[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct CreateRequest {
        /// A saved classifier instead of labels: `name` (latest), `name@N` or `name@vN`;
        /// pinned when the job is created.
        #[schema(pattern = "^[a-z0-9_-]{1,64}(@v?[1-9][0-9]{0,17})?$")]
        #[serde(skip_serializing_if = "Option::is_none")]
        pub classifier: Option<String>,
        /// Fit the label vectors to the job's own texts before scoring (default true).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub adapt: Option<bool>,
        /// With `classifier`: when the job completes with its adaptation applied, save
        /// the fitted vectors as the classifier's next version (`saved_version`).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub save_adapted: Option<bool>,
        /// Up to 16 entries: keys of 1-64 characters, values of up to 512.
        #[schema(value_type = Option<crate::wire::schema::Metadata>)]
        #[serde(skip_serializing_if = "Option::is_none")]
        pub metadata: Option<BTreeMap<String, String>>,
        /// The input itself instead of an upload: 1-50,000 objects, each one input line
        /// (`{"id": ..., "text": ...}`), checked when the job runs like a file's lines. The
        /// whole body may be up to 64 MiB. The job is created ready to start.
        #[schema(min_items = 1, max_items = 50000)]
        #[serde(skip_serializing_if = "Option::is_none")]
        pub items: Option<Vec<InlineItem>>,
        /// With `items`: start the job in this call, as `POST /v1/batch/{id}/start` would.
        /// When it cannot start (another job of the account is processing), nothing is
        /// created and the answer is that 409.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub start: Option<bool>,
        /// Told when the job ends (`batch.completed`, `batch.failed`, `batch.cancelled`),
        /// signed with the account's webhook secret: an absolute http(s) URL without user
        /// name or password, to a public address.
        ///
        /// The pattern is the part of the rule JSON Schema can say: lower-case host names
        /// (labels that start with a letter, single hyphens), an optional port, then any
        /// path, query and fragment of visible ASCII. Some other URLs pass the server's
        /// parser (an IP address, an internationalised name), but an address that is not
        /// public is refused, which no pattern can say.
        #[schema(
            max_length = 2048,
            pattern = "^https?://[a-z][a-z0-9]*(-[a-z0-9]+)*(\\.[a-z][a-z0-9]*(-[a-z0-9]+)*)*(:[0-9]{1,4})?([/?#][!-~]*)?$"
        )]
        #[serde(skip_serializing_if = "Option::is_none")]
        pub webhook_url: Option<String>,
    }
}

/// One inline item: any JSON object, kept as given. Its fields are not checked here:
/// like an uploaded line, a bad item becomes an error row of the job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InlineItem(pub Map<String, Value>);

impl PartialSchema for InlineItem {
    fn schema() -> RefOr<Schema> {
        let any = |description: String| {
            ObjectBuilder::new()
                .schema_type(SchemaType::AnyValue)
                .description(Some(description))
        };
        ObjectBuilder::new()
            .description(Some(
                "One input line, as in an uploaded file. Checked when the job runs: an item \
                 without a usable `text` or with a bad `id` is an error row (`missing_text`, \
                 `empty_text`, `invalid_text`, `text_not_string`, `invalid_id`), not a refused request.",
            ))
            .property(
                "text",
                any("The text to classify: a non-empty string.".to_string()),
            )
            .property(
                "id",
                any(format!(
                    "Echoed in the result row: a string of up to {MAX_ID_CHARS} characters \
                     or a number (`custom_id` is read too)."
                )),
            )
            .into()
    }
}

impl ToSchema for InlineItem {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("InlineItem")
    }
}

/// The longest `id` (in characters) an input line may carry.
pub const MAX_ID_CHARS: usize = 64;
