//! `/v1/webhooks/secret`: the account's webhook signing secret, read or rotated; and
//! `/v1/batch/{id}/webhooks`: where a job's events stand. Delivery itself is
//! [`crate::webhooks`]'s.

use axum::extract::{Path, State};
use axum::{Extension, Json};

use super::{ApiError, AppState, ErrorBody};
use crate::db::Account;
use crate::webhooks;
use crate::wire::{Delivery, DeliveryList, WebhookSecret};

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
