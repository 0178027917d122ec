//! Webhooks as the API shows them and receivers get them: the event body, the
//! account's signing secret, a job's deliveries.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Job;

/// A webhook request's body: the Standard Webhooks envelope around the job as
/// `GET /v1/batch/{id}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// `batch.completed`, `batch.failed` or `batch.cancelled`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the job ended (RFC 3339).
    pub timestamp: String,
    pub data: Job,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up: a refused address, or no 2xx within 24 hours of the event.
    Failed,
}

impl DeliveryStatus {
    /// Every status.
    pub const ALL: [DeliveryStatus; 3] = [Self::Pending, Self::Delivered, Self::Failed];

    /// The word the API uses, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

/// The key webhook signatures are made with. Verify `webhook-signature` with it as
/// the Standard Webhooks libraries do (the key is the base64 after `whsec_`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookSecret {
    /// `whsec_` + base64 of 32 random bytes.
    pub secret: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// After a rotation: until when events are also signed with the previous secret.
    pub previous_expires_at: Option<String>,
}

/// One event of a job and its delivery.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    /// The `webhook-id` header: the same on every attempt.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    /// The receiver's last HTTP status.
    pub last_status: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When a pending delivery is tried next (RFC 3339).
    pub next_attempt_at: Option<String>,
    /// When the job ended, which is the event's time (RFC 3339).
    pub event_at: String,
    pub delivered_at: Option<String>,
}

/// A job's webhook events, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    pub data: Vec<Delivery>,
}
