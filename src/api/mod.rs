//! HTTP only: routing, extraction, authentication and the error shape. The work is
//! done by [`crate::engine`] and [`crate::db`].

pub mod batch;
pub mod classifiers;
pub mod classify;
pub mod cors;
mod error;
mod json;
pub mod models;
mod playground;
mod spec;
mod uploads;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_http::LatencyUnit;
use tracing::Level;

use crate::db::Db;
use crate::engine::batcher::Batcher;
use crate::engine::Engine;
use crate::storage::Storage;

pub use error::ApiError;
pub use json::ApiJson;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    /// Set once the model has loaded; until then `/readyz` and `/v1` answer 503.
    pub engine: Arc<OnceLock<Arc<Engine>>>,
    /// Coalesces concurrent `/v1/classify` calls; set with the engine.
    pub batcher: Arc<OnceLock<Batcher>>,
    pub max_body_bytes: usize,
    pub storage: Arc<Storage>,
    /// Wakes this instance's batch worker when a job starts.
    pub wake_workers: Arc<Notify>,
    pub batch: BatchSettings,
    /// Origins whose pages may call the API from a browser (`--cors-origin`); empty: none.
    pub cors_origins: Vec<axum::http::HeaderValue>,
}

/// Limits and lifetimes of batch uploads and downloads.
#[derive(Debug, Clone)]
pub struct BatchSettings {
    pub max_upload_bytes: u64,
    pub upload_ttl: Duration,
    pub download_ttl: Duration,
}

impl AppState {
    /// The dynamic batcher, or 503 while the model loads.
    pub fn batcher(&self) -> Result<Batcher, ApiError> {
        self.batcher.get().cloned().ok_or_else(ApiError::not_ready)
    }

    /// The engine, or 503 while it loads.
    pub fn engine(&self) -> Result<Arc<Engine>, ApiError> {
        self.engine.get().cloned().ok_or_else(ApiError::not_ready)
    }
}

/// Builds the whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let cors = cors::layer(&state.cors_origins);
    let v1 = Router::new()
        .route("/classify", post(classify::handle))
        .route("/batch", post(batch::create).get(batch::list))
        .route("/batch/{id}", get(batch::get).delete(batch::delete))
        .route("/batch/{id}/start", post(batch::start))
        .route("/batch/{id}/results", get(batch::results))
        .route("/models", get(models::list))
        .route(
            "/classifiers",
            post(classifiers::create).get(classifiers::list),
        )
        .route(
            "/classifiers/{name}",
            get(classifiers::get)
                .put(classifiers::update)
                .delete(classifiers::delete),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));

    let app = Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .nest("/v1", v1)
        .route("/uploads", post(uploads::upload).layer(DefaultBodyLimit::disable()))
        .route("/files/{*key}", get(uploads::download))
        .merge(playground::routes())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let id = req
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", id, method = %req.method(), path = %req.uri().path())
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO).latency_unit(LatencyUnit::Micros))
                // A 503 from /readyz while loading is expected; real faults log in ApiError::internal.
                .on_failure(()),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state);
    // Outermost, so preflights are answered before authentication and routing.
    match cors {
        Some(cors) => app.layer(cors),
        None => app,
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.engine.get() {
        Some(engine) => {
            Json(json!({"status": "ready", "model": engine.model_name()})).into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading"})),
        )
            .into_response(),
    }
}

/// Every `/v1` call needs `Authorization: Bearer <key>` of a live key.
async fn require_api_key(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <key> header"))?;
    let secret = header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|secret| !secret.is_empty())
        .ok_or_else(|| ApiError::unauthorized("Authorization header must be Bearer <key>"))?;
    let account = state
        .db
        .authenticate(secret)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid or revoked API key"))?;
    req.extensions_mut().insert(account);
    Ok(next.run(req).await)
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down; finishing in-flight requests");
    // A last chance for slow clients, bounded so a stuck one cannot hold the process.
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        std::process::exit(0);
    });
}
