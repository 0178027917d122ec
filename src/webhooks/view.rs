//! The API's views of the webhook rows: the signing secret and a job's deliveries.

use crate::clock::{now_ms, rfc3339};
use crate::db::webhooks::{DeliveryRow, SecretRow};
use crate::wire::{Delivery, DeliveryStatus, WebhookSecret};

impl From<SecretRow> for WebhookSecret {
    fn from(row: SecretRow) -> Self {
        let now = now_ms();
        Self {
            secret: row.secret,
            created_at: rfc3339(row.created_at),
            previous_expires_at: row.previous_expires_at.filter(|&at| at > now).map(rfc3339),
        }
    }
}

impl From<DeliveryRow> for Delivery {
    fn from(row: DeliveryRow) -> Self {
        let status = row.status;
        Self {
            id: row.id,
            kind: row.event_type,
            url: row.url,
            status,
            attempts: row.attempts,
            last_status: row.last_status,
            last_error: row.last_error,
            next_attempt_at: (status == DeliveryStatus::Pending)
                .then(|| rfc3339(row.next_attempt_at)),
            event_at: rfc3339(row.ended_at),
            delivered_at: row.delivered_at.map(rfc3339),
        }
    }
}
