//! HTTP only: routing, extraction, authentication and the error shape. The work is
//! done by [`crate::engine`] and [`crate::db`].

pub mod batch;
pub mod classifiers;
pub mod classify;
pub mod cors;
mod error;
mod idempotency;
mod inline;
mod json;
pub mod models;
pub mod observe;
pub mod openapi;
mod playground;
mod quota;
mod spec;
mod uploads;
pub mod usage;
pub mod webhooks;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::batch::jobs::{BatchSettings, Jobs};
use crate::db::Db;
use crate::engine::queue::InferenceQueue;
use crate::engine::Engine;
use crate::storage::Storage;
use crate::usage::PendingUsage;

pub use error::{ApiError, ErrorBody};
pub use json::ApiJson;
pub use quota::RateLimiter;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    /// Set once the model has loaded; until then `/readyz` and `/v1` answer 503.
    pub engine: Arc<OnceLock<Arc<Engine>>>,
    /// Coalesces concurrent `/v1/classify` calls; set with the engine.
    pub queue: Arc<OnceLock<InferenceQueue>>,
    pub max_body_bytes: usize,
    pub storage: Arc<dyn Storage>,
    /// Wakes this instance's batch worker when a job starts.
    pub wake_workers: Arc<Notify>,
    pub batch: BatchSettings,
    /// Where `/docs` finds the Swagger UI files.
    pub docs_ui_dir: std::path::PathBuf,
    /// Renders `/metrics` on this listener; `None` when `--metrics-addr` serves it elsewhere.
    pub metrics: Option<PrometheusHandle>,
    /// Origins whose pages may call the API from a browser (`--cors-origin`); empty: none.
    pub cors_origins: Vec<axum::http::HeaderValue>,
    /// Which webhook URLs jobs may name (`--allow-private-webhooks`).
    pub webhooks: crate::webhooks::Settings,
    /// Accounts' requests per second on `/v1/classify`, counted in this process.
    pub rate_limiter: Arc<RateLimiter>,
    /// `/v1/classify` usage counted in this process and not written yet.
    pub usage: PendingUsage,
}

/// The routes whose POST takes many texts (inline batch items, texts to adapt to),
/// and so a larger body.
const LARGE_BODY_ROUTES: [&str; 2] = ["/v1/batch", "/v1/classifiers/{name}/adapt"];

impl AppState {
    /// The largest body a request to the route `path` may send: `--max-body-bytes`, or
    /// 64 MiB (if that is more) for `POST /v1/batch` and its inline items and for the
    /// texts of `POST /v1/classifiers/{name}/adapt`.
    pub fn body_limit(&self, path: &str) -> usize {
        if LARGE_BODY_ROUTES.contains(&path) {
            self.max_body_bytes.max(inline::MAX_BODY_BYTES)
        } else {
            self.max_body_bytes
        }
    }

    /// The inference queue, or 503 while the model loads.
    pub fn queue(&self) -> Result<InferenceQueue, ApiError> {
        self.queue.get().cloned().ok_or_else(ApiError::not_ready)
    }

    /// The batch jobs of this service's database and storage.
    pub fn jobs(&self) -> Jobs<'_> {
        Jobs {
            db: &self.db,
            storage: self.storage.as_ref(),
            settings: &self.batch,
            usage: &self.usage,
            wake: &self.wake_workers,
        }
    }

    /// The engine, or 503 while it loads.
    pub fn engine(&self) -> Result<Arc<Engine>, ApiError> {
        self.engine.get().cloned().ok_or_else(ApiError::not_ready)
    }
}

/// Every documented route: the router and its OpenAPI description come from this one
/// list. Given the state, `/v1` checks API keys (the description alone needs none).
pub fn routes(state: Option<&AppState>) -> OpenApiRouter<AppState> {
    let (schemas, paths, batch_root) = routes!(batch::create, batch::list);
    let (adapt_schemas, adapt_paths, adapt) = routes!(classifiers::adapt);
    // Outside them, the router's default limit (`--max-body-bytes`) holds.
    let (batch_root, adapt) = match state {
        Some(state) => (
            batch_root.layer(DefaultBodyLimit::max(
                state.body_limit(LARGE_BODY_ROUTES[0]),
            )),
            adapt.layer(DefaultBodyLimit::max(
                state.body_limit(LARGE_BODY_ROUTES[1]),
            )),
        ),
        None => (batch_root, adapt),
    };
    let mut v1 = OpenApiRouter::new()
        .routes(routes!(classify::handle))
        .routes((schemas, paths, batch_root))
        .routes(routes!(batch::get, batch::delete))
        .routes(routes!(batch::start))
        .routes(routes!(batch::cancel))
        .routes(routes!(batch::results))
        .routes(routes!(webhooks::get_secret, webhooks::rotate_secret))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(models::list))
        .routes(routes!(usage::get))
        .routes(routes!(classifiers::create, classifiers::list))
        .routes(routes!(
            classifiers::get,
            classifiers::update,
            classifiers::delete
        ))
        .routes(routes!(classifiers::versions))
        .routes((adapt_schemas, adapt_paths, adapt))
        .routes(routes!(classifiers::teach));
    if let Some(state) = state {
        // The last layer added runs first: the key is checked, then idempotency.
        v1 = v1
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                idempotency::idempotent,
            ))
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                require_api_key,
            ));
    }
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(playground::index))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(observe::metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(openapi::docs))
        .nest("/v1", v1)
}

/// Builds the whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let cors = cors::layer(&state.cors_origins);
    let (documented, mut description) = routes(Some(&state)).split_for_parts();
    openapi::apply_conventions(&mut description);
    let app = documented
        .route("/docs/{file}", get(openapi::docs_asset))
        .route(
            "/uploads",
            post(uploads::upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/files/{*key}", get(uploads::download))
        .layer(axum::Extension(Arc::new(description)))
        .merge(playground::assets())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(middleware::from_fn(observe::track))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state);
    // Outermost, so preflights are answered before authentication and routing.
    match cors {
        Some(cors) => app.layer(cors),
        None => app,
    }
}

/// `{"status": "ok"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: String,
}

/// Liveness: the process answers HTTP (the model may still be loading).
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "service",
    responses((status = 200, description = "Alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_string(),
    })
}

/// Whether the instance can classify yet.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReadyState {
    Ready,
    Loading,
}

/// `/readyz`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub status: ReadyState,
    /// The model served, once loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Readiness: 200 once the model is loaded, 503 until then.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "service",
    responses(
        (status = 200, description = "Ready to classify", body = Readiness),
        (status = 503, description = "The model is loading", body = Readiness),
    ))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    match state.engine.get() {
        Some(engine) => (
            StatusCode::OK,
            Json(Readiness {
                status: ReadyState::Ready,
                model: Some(engine.model_name().to_string()),
            }),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                status: ReadyState::Loading,
                model: None,
            }),
        ),
    }
}

/// This API's OpenAPI 3.1 description.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", tag = "service",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
async fn openapi_json(
    axum::Extension(description): axum::Extension<Arc<utoipa::openapi::OpenApi>>,
) -> Json<Arc<utoipa::openapi::OpenApi>> {
    Json(description)
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
    observe::record_account(&account.id);
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
