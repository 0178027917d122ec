//! `Idempotency-Key` on the POSTs that create something (`/v1/batch`,
//! `/v1/classifiers`): a retried request gets the first answer again instead of a
//! second job. Keys are per account and last 24 hours; the same key with a different
//! request is a 422. Only successes are remembered, so a failed request can be retried
//! under its key, corrected or not.

use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, request, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::Required;

use super::{ApiError, AppState};
use crate::db::idempotency::Reservation;
use crate::db::Account;

/// The request header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on an answer replayed from an earlier request.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// The routes whose POST honours the header (and whose description says so).
pub(super) const ROUTES: [&str; 2] = ["/v1/batch", "/v1/classifiers"];
/// Longest key.
pub const MAX_KEY_CHARS: usize = 255;
/// How long a request waits for an identical one running under its key.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(25);

/// Middleware (inside authentication): reserves the key, runs the request once, stores
/// a success and replays it to the same request later.
pub async fn idempotent(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
        .filter(|path| req.method() == Method::POST && ROUTES.contains(&path.as_str()));
    let (Some(route), Some(key)) = (route, req.headers().get(&IDEMPOTENCY_KEY)) else {
        return Ok(next.run(req).await);
    };
    let key = valid_key(key)?;
    let account = req
        .extensions()
        .get::<Account>()
        .cloned()
        .ok_or_else(|| ApiError::internal("idempotency check ran before authentication"))?;

    let (parts, body) = req.into_parts();
    let limit = state.body_limit(&route);
    let bytes = to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::payload_too_large(limit))?;
    let hash = request_hash(&parts, &bytes);
    if let Some(replayed) = reserve(&state, &account, &key, &hash).await? {
        return Ok(replayed);
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    remember(&state, &account, &key, response).await
}

/// What identifies a request under its key: its method, path and body.
fn request_hash(parts: &request::Parts, bytes: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(parts.method.as_str());
    hash.update([0]);
    hash.update(parts.uri.path());
    hash.update([0]);
    hash.update(bytes);
    hex::encode(hash.finalize())
}

/// Reserves `key` for the request of `request_hash`, waiting up to
/// [`WAIT_FOR_FIRST`] for an identical request running under it. `Some` is the
/// earlier answer to replay; `None` means this request runs.
async fn reserve(
    state: &AppState,
    account: &Account,
    key: &str,
    request_hash: &str,
) -> Result<Option<Response>, ApiError> {
    let waiting_since = Instant::now();
    loop {
        match state
            .db
            .reserve_idempotency_key(&account.id, key, request_hash)
            .await?
        {
            Reservation::Reserved => return Ok(None),
            Reservation::Replay { status, body } => return Ok(Some(replay(status, body))),
            Reservation::Mismatch => {
                return Err(ApiError::validation(
                    "Idempotency-Key",
                    "this Idempotency-Key was used for a different request in the last 24 \
                     hours; use a new key for a new request",
                ))
            }
            Reservation::InFlight if waiting_since.elapsed() < WAIT_FOR_FIRST => {
                tokio::time::sleep(POLL).await;
            }
            Reservation::InFlight => {
                return Err(ApiError::conflict(
                    "a request with this Idempotency-Key is still running; retry later",
                ))
            }
        }
    }
}

/// Stores a successful `response` under `key` and returns it; releases the key of a
/// failed one, so the request can be retried under it.
async fn remember(
    state: &AppState,
    account: &Account,
    key: &str,
    response: Response,
) -> Result<Response, ApiError> {
    if !response.status().is_success() {
        state.db.release_idempotency_key(&account.id, key).await?;
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    // Our own JSON answers: small, and read whole before they are sent anyway.
    let bytes = to_bytes(body, usize::MAX)
        .await
        .map_err(ApiError::internal)?;
    let text = String::from_utf8_lossy(&bytes);
    state
        .db
        .complete_idempotency_key(&account.id, key, parts.status.as_u16(), &text)
        .await?;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// The header as the OpenAPI description of [`ROUTES`]' POSTs lists it.
pub(super) fn header_parameter() -> Parameter {
    ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "Makes a retry safe: the same key with the same body within 24 hours answers \
             the first success again (with `Idempotent-Replayed: true`); with another body, \
             422. 1-255 visible ASCII characters, per account.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_KEY_CHARS))
                .pattern(Some("^[!-~]+$")),
        ))
        .build()
}

/// 1-255 visible ASCII characters (a UUID, say).
fn valid_key(value: &HeaderValue) -> Result<String, ApiError> {
    value
        .to_str()
        .ok()
        .filter(|key| {
            !key.is_empty()
                && key.len() <= MAX_KEY_CHARS
                && key.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::invalid_request(format!(
                "Idempotency-Key must be 1-{MAX_KEY_CHARS} visible ASCII characters"
            ))
            .with_param("Idempotency-Key")
        })
}

fn replay(status: u16, body: String) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (IDEMPOTENT_REPLAYED, HeaderValue::from_static("true")),
        ],
        body,
    )
        .into_response()
}
