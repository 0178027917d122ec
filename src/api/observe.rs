//! Observability at the HTTP edge: every request runs in a `request` span and ends
//! with one info log line and the HTTP metrics; `GET /metrics` renders them all.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tracing::Instrument;

use super::{ApiError, AppState, REQUEST_ID};
use crate::db::Db;

/// The route label of a request no route matched: its raw path would be unbounded.
const UNMATCHED: &str = "unmatched";
/// The span field the auth middleware fills in.
const ACCOUNT_ID: &str = "account_id";
/// Methods labelled by name; any other is `other` (clients may send any token).
static METHODS: [Method; 7] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::HEAD,
    Method::OPTIONS,
];

/// Middleware around every route: opens the `request` span (request id, route
/// template, method, path; the account once authenticated), then logs one line with
/// status and latency and records the HTTP metrics.
pub async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_string();
    let method = METHODS
        .iter()
        .find(|known| *known == req.method())
        .map_or("other", Method::as_str);
    let span = tracing::info_span!(
        "request",
        request_id = req
            .headers()
            .get(&REQUEST_ID)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("-"),
        method,
        route = %route,
        path = %req.uri().path(),
        account_id = tracing::field::Empty,
    );
    let response = next.run(req).instrument(span.clone()).await;
    let latency = started.elapsed();
    let status = response.status().as_u16();
    crate::metrics::http_request(&route, method, status, latency);
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = latency.as_secs_f64() * 1000.0,
            "request finished"
        );
    });
    response
}

/// Adds the authenticated account to the current request's span (and so to its log line).
pub fn record_account(account_id: &str) {
    tracing::Span::current().record(ACCOUNT_ID, account_id);
}

/// Prometheus metrics of this instance (text exposition format).
///
/// On the main listener; 404 when `--metrics-addr` serves them elsewhere.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "service",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 404, description = "Served on `--metrics-addr` instead", body = super::ErrorBody),
    ))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let handle = state
        .metrics
        .as_ref()
        .ok_or_else(|| ApiError::not_found("no such endpoint"))?;
    scrape(handle, &state.db).await
}

/// Serves `GET /metrics` alone on its own listener (`--metrics-addr`), until the process ends.
pub async fn serve_metrics(listener: tokio::net::TcpListener, handle: PrometheusHandle, db: Db) {
    let router = Router::new()
        .route(
            "/metrics",
            get(
                |State((handle, db)): State<(PrometheusHandle, Db)>| async move {
                    scrape(&handle, &db).await
                },
            ),
        )
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .with_state((handle, db));
    if let Err(err) = axum::serve(listener, router).await {
        tracing::error!(error = %err, "the metrics listener stopped");
    }
}

async fn scrape(handle: &PrometheusHandle, db: &Db) -> Result<Response, ApiError> {
    let jobs: Vec<(&'static str, i64)> = db
        .count_jobs_by_status()
        .await?
        .into_iter()
        .map(|(status, count)| (status.as_str(), count))
        .collect();
    let text = crate::metrics::render(handle, &jobs);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
