//! The wire types: what the API answers, webhook events carry and the CLI's client
//! reads, one struct per concept. Plain serde and OpenAPI types; the layers above
//! build them (`batch::view`) and the database stores their statuses as the words
//! they serialize to.

mod classify;
mod jobs;
mod rows;
pub mod schema;
pub mod spec;
mod usage;
mod webhooks;

pub use classify::{ClassifyRequest, ClassifyResponse, MultiResponse, SingleResponse};
pub use jobs::{
    CreateRequest, CreatedJob, InlineItem, Job, JobList, JobStatus, Progress, ResultsLink, Shards,
    MAX_ID_CHARS,
};
pub use rows::{FailedRow, ResultRow, RowError, ScoredRow};
pub use spec::SpecFields;
pub use usage::{AccountLimits, BatchUsage, ClassifyUsage, DayUsage, Usage, UsageReport};
pub use webhooks::{Delivery, DeliveryList, DeliveryStatus, Event, WebhookSecret};

/// A stored word (a status, a usage source) that names nothing this version knows: an
/// error rather than a guess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value {0:?}")]
pub struct UnknownValue(pub String);

/// `FromStr` for an enum stored and shown as words: the word of one of its `ALL`
/// values (`as_str`); any other word is an [`UnknownValue`], never a guess.
macro_rules! from_word {
    ($($words:ty),* $(,)?) => {$(
        impl std::str::FromStr for $words {
            type Err = $crate::wire::UnknownValue;

            fn from_str(word: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .into_iter()
                    .find(|value| value.as_str() == word)
                    .ok_or_else(|| $crate::wire::UnknownValue(word.to_string()))
            }
        }
    )*};
}
pub(crate) use from_word;

from_word!(JobStatus, DeliveryStatus);
