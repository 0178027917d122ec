//! `/v1/webhooks/secret`: the account's webhook signing secret, read or rotated; and
//! `/v1/batch/{id}/webhooks`: where a job's events stand. Delivery itself is
//! [`crate::webhooks`]'s.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, AppState, ErrorBody};
use crate::clock::rfc3339;
use crate::db::webhooks::{DeliveryRow, SecretRow};
use crate::db::Account;
use crate::webhooks;
use crate::wire::DeliveryStatus;

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

impl From<SecretRow> for WebhookSecret {
    fn from(row: SecretRow) -> Self {
        let now = crate::clock::now_ms();
        Self {
            secret: row.secret,
            created_at: rfc3339(row.created_at),
            previous_expires_at: row.previous_expires_at.filter(|&at| at > now).map(rfc3339),
        }
    }
}

/// The account's webhook signing secret.
#[utoipa::path(get, path = "/webhooks/secret", operation_id = "get_webhook_secret", tag = "webhooks",
    responses(
        (status = 200, description = "The signing secret", body = WebhookSecret),
        (status = 404, description = "The account has no secret yet (POST makes one; so does a job with a webhook_url)", body = ErrorBody),
    ))]
pub async fn get_secret(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
) -> Result<Json<WebhookSecret>, ApiError> {
    let secret = state.db.webhook_secret(&account.id).await?.ok_or_else(|| {
        ApiError::not_found("no webhook signing secret yet; POST /v1/webhooks/secret makes one")
    })?;
    Ok(Json(secret.into()))
}

/// Makes the account's webhook signing secret, or replaces it: events are then signed
/// with the new one and, for 24 hours, also with the previous one.
#[utoipa::path(post, path = "/webhooks/secret", operation_id = "rotate_webhook_secret", tag = "webhooks",
    responses((status = 200, description = "The new signing secret", body = WebhookSecret)))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
) -> Result<Json<WebhookSecret>, ApiError> {
    Ok(Json(
        webhooks::rotate_secret(&state.db, &account.id)
            .await?
            .into(),
    ))
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

/// A job's webhook events, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    pub data: Vec<Delivery>,
}

/// The job's webhook events (one per time it ended) and how their delivery went.
#[utoipa::path(get, path = "/batch/{id}/webhooks", operation_id = "list_batch_webhooks", tag = "webhooks",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job's events", body = DeliveryList),
        (status = 404, description = "No such job", body = ErrorBody),
    ))]
pub async fn deliveries(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<String>,
) -> Result<Json<DeliveryList>, ApiError> {
    state.jobs().get(&account, &id).await?;
    let rows = state.db.job_deliveries(&account.id, &id).await?;
    Ok(Json(DeliveryList {
        data: rows.into_iter().map(Delivery::from).collect(),
    }))
}
