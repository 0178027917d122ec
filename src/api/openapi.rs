//! The machine-readable API description (`GET /openapi.json`, OpenAPI 3.1) and the
//! docs page that renders it (`GET /docs`, Swagger UI from files `scripts/setup.py`
//! fetched and checked; nothing from a CDN).
//!
//! The operations come from the handlers' own `#[utoipa::path]` annotations and the
//! request and response types they use, collected while the router is built, so the
//! description cannot drift from the routes. [`apply_conventions`] adds what every
//! `/v1` operation shares: bearer auth and the error responses of the one error shape.

use std::path::Path;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{AllOfBuilder, Object, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, ResponseBuilder};

use super::error::{ErrorBody, ErrorDetail, ErrorType};
use super::{idempotency, quota, uploads, ApiError, AppState};

/// The parts of the description that are not in a handler's annotation.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "zeroshot",
        description = "Self-hosted zero-shot text classification: labels chosen at request \
            time, no training. Every `/v1` call takes `Authorization: Bearer <API key>`; every \
            error has the body `{\"error\": {\"type\", \"message\", \"param\"}}`."
    ),
    // Routed with a wildcard or a per-route body limit, so added here rather than by
    // `routes!`.
    paths(uploads::upload, uploads::download),
    // The webhook body is no response of this API; listed so clients can generate it.
    components(schemas(ErrorBody, ErrorDetail, ErrorType, crate::wire::Event)),
    tags(
        (name = "classify", description = "Classify texts now"),
        (name = "batch", description = "Classify a file of up to 5 GB in the background"),
        (name = "classifiers", description = "Saved, versioned label sets"),
        (name = "webhooks", description = "Signed notices of batch jobs ending: the signing \
            secret, and each job's deliveries"),
        (name = "models", description = "The model this instance serves"),
        (name = "usage", description = "Texts and tokens used per day, and the account's limits"),
        (name = "storage", description = "Presigned upload and download of local storage \
            (S3 serves these itself)"),
        (name = "service", description = "Health, readiness and this description"),
    )
)]
pub struct ApiDoc;

/// Name of the bearer-key security scheme.
const API_KEY: &str = "api_key";

/// Bearer auth and the shared error responses on every `/v1` operation; applied once
/// the routes' operations are in.
pub(super) fn apply_conventions(openapi: &mut OpenApi) {
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        API_KEY,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("An API key from `zeroshot keys create`"))
                .build(),
        ),
    );
    state_request_rules(openapi);
    for (path, item) in openapi.paths.paths.iter_mut() {
        if !path.starts_with("/v1/") {
            continue;
        }
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            authenticated(operation);
        }
        if quota::ROUTES.contains(&path.as_str()) {
            if let Some(post) = &mut item.post {
                post.responses.responses.insert(
                    "429".to_string(),
                    retry_after(error_response(
                        "The account's requests per second (`rate_limited`) or monthly token \
                         quota (`quota_exceeded`) are used up; retry after `Retry-After` seconds",
                    ))
                    .into(),
                );
            }
        }
        if idempotency::ROUTES.contains(&path.as_str()) {
            if let Some(post) = &mut item.post {
                post.parameters
                    .get_or_insert_with(Vec::new)
                    .push(RefOr::T(idempotency::header_parameter()));
            }
        }
    }
}

/// The rules between fields of a request body that its properties alone do not state:
/// exactly one of `text` and `texts`, exactly one of `labels` and `classifier` (which
/// brings its own descriptions, examples and source type), `start` only with `items`,
/// `labels` in a classifier's definition, and `name` on create. A field sent as `null`
/// counts as absent, as the server reads it.
fn state_request_rules(openapi: &mut OpenApi) {
    let present = |field: &str, kind: Type| (field.to_string(), kind);
    let branch = |present: (String, Type), absent: &[&str]| -> serde_json::Value {
        let mut properties = serde_json::Map::new();
        properties.insert(present.0.clone(), serde_json::json!({ "type": present.1 }));
        for field in absent {
            properties.insert(field.to_string(), serde_json::json!({ "type": "null" }));
        }
        serde_json::json!({ "required": [present.0], "properties": properties })
    };
    let text_or_texts = serde_json::json!({ "oneOf": [
        branch(present("text", Type::String), &["texts"]),
        branch(present("texts", Type::Array), &["text"]),
    ]});
    let labels_or_classifier = serde_json::json!({ "oneOf": [
        branch(present("labels", Type::Array), &["classifier"]),
        branch(
            present("classifier", Type::String),
            &["labels", "descriptions", "examples", "source_type"],
        ),
    ]});
    let start_needs_items = serde_json::json!({ "anyOf": [
        branch(present("items", Type::Array), &[]),
        { "properties": { "start": { "enum": [false, null] } } },
    ]});
    let components = openapi.components.get_or_insert_with(Default::default);
    for (name, rules) in [
        (
            "ClassifyRequest",
            vec![text_or_texts, labels_or_classifier.clone()],
        ),
        (
            "CreateRequest",
            vec![labels_or_classifier, start_needs_items],
        ),
    ] {
        if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(name) {
            add_keyword(object, "allOf", serde_json::Value::Array(rules));
        }
    }
    // The spec fields are optional (and nullable) in the other bodies, where
    // `classifier` may stand for them; a definition has labels, not null.
    if let Some(RefOr::T(Schema::Object(definition))) = components.schemas.get_mut("Definition") {
        definition.required.push("labels".to_string());
        if let Some(RefOr::T(Schema::Array(labels))) = definition.properties.get_mut("labels") {
            labels.schema_type = SchemaType::Type(Type::Array);
        }
    }
    require_name_on_create(openapi);
}

/// `POST /v1/classifiers` names the classifier in the body (`PUT` in the path).
fn require_name_on_create(openapi: &mut OpenApi) {
    let create = openapi
        .paths
        .paths
        .get_mut("/v1/classifiers")
        .and_then(|item| item.post.as_mut())
        .and_then(|post| post.request_body.as_mut())
        .and_then(|body| match body {
            RefOr::T(body) => body.content.get_mut("application/json"),
            RefOr::Ref(_) => None,
        });
    if let Some(RefOr::T(content)) = create {
        let required_name = ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .required("name")
            .property("name", ObjectBuilder::new().schema_type(Type::String));
        content.schema = Some(
            AllOfBuilder::new()
                .item(Ref::from_schema_name("Definition"))
                .item(required_name)
                .into(),
        );
    }
}

/// Adds a JSON Schema keyword utoipa's model has no field for next to an object's
/// properties (serialized with them, as extensions are).
fn add_keyword(object: &mut Object, keyword: &str, value: serde_json::Value) {
    object
        .extensions
        .get_or_insert_with(Default::default)
        .insert(keyword.to_string(), value);
}

/// Marks an operation as needing the API key and documents the errors any such
/// operation can answer with.
fn authenticated(operation: &mut Operation) {
    operation.security = Some(vec![SecurityRequirement::new(
        API_KEY,
        Vec::<String>::new(),
    )]);
    let reads_body = operation.request_body.is_some();
    let has_parameter_in = |place: ParameterIn| {
        operation
            .parameters
            .iter()
            .flatten()
            .any(|parameter| matches!(parameter, RefOr::T(p) if p.parameter_in == place))
    };
    let reads_query = has_parameter_in(ParameterIn::Query);
    let has_path_params = has_parameter_in(ParameterIn::Path);
    let mut errors = vec![
        ("401", "Missing, unknown or revoked API key"),
        ("500", "Internal error; details are in the server log"),
        (
            "503",
            "The model is still loading (`not_ready`) or the inference queue is full (`overloaded`)",
        ),
    ];
    if reads_body || reads_query {
        errors.push(("400", "The body or query is not what this operation reads"));
    }
    if reads_body {
        errors.push(("413", "The body is larger than `--max-body-bytes`"));
        errors.push(("415", "The body is not `application/json`"));
    }
    if reads_body || reads_query || has_path_params {
        errors.push(("422", "A field is not acceptable; `param` names it"));
    }
    for (status, description) in errors {
        let response = match status {
            "503" => retry_after(error_response(description)),
            _ => error_response(description),
        };
        operation
            .responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| response.into());
    }
}

/// Describes the `Retry-After` header an error response may carry.
fn retry_after(mut response: utoipa::openapi::Response) -> utoipa::openapi::Response {
    let seconds = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1));
    response.headers.insert(
        "Retry-After".to_string(),
        HeaderBuilder::new()
            .schema(Some(seconds))
            .description(Some("Whole seconds after which to retry"))
            .build()
            .into(),
    );
    response
}

fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
        )
        .build()
}

/// The description of every route, built from the router itself.
pub fn description() -> OpenApi {
    let mut openapi = super::routes(None).into_openapi();
    apply_conventions(&mut openapi);
    openapi
}

/// The page that loads the pinned Swagger UI and points it at `/openapi.json`.
const DOCS_PAGE: &str = include_str!("docs/index.html");
/// Starts Swagger UI; a file rather than an inline script, so the page's
/// Content-Security-Policy can forbid inline scripts.
const DOCS_INIT: &str = include_str!("docs/init.js");
/// The files of the `swagger-ui-dist` package the page uses.
const DOCS_ASSETS: [(&str, &str); 2] = [
    ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    ("swagger-ui.css", "text/css; charset=utf-8"),
];
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self' data:";

/// Renders the API description with Swagger UI.
#[utoipa::path(get, path = "/docs", operation_id = "docs", tag = "service",
    responses(
        (status = 200, description = "The docs page", content_type = "text/html", body = String),
        (status = 404, description = "The docs UI files are not installed (run scripts/setup.py)", body = ErrorBody),
    ))]
pub async fn docs(State(state): State<AppState>) -> Result<Response, ApiError> {
    docs_installed(&state.docs_ui_dir).await?;
    Ok((
        [(header::CONTENT_SECURITY_POLICY, DOCS_CSP)],
        Html(DOCS_PAGE),
    )
        .into_response())
}

/// The docs page's scripts and styles.
pub async fn docs_asset(
    State(state): State<AppState>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    if file == "init.js" {
        return Ok((
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            DOCS_INIT,
        )
            .into_response());
    }
    let (name, content_type) = DOCS_ASSETS
        .into_iter()
        .find(|(name, _)| *name == file)
        .ok_or_else(|| ApiError::not_found(format!("no docs file {file:?}")))?;
    let bytes = tokio::fs::read(state.docs_ui_dir.join(name))
        .await
        .map_err(|_| not_installed(&state.docs_ui_dir))?;
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "public, max-age=3600")
        .body(Body::from(bytes))
        .map_err(ApiError::internal)
}

async fn docs_installed(dir: &Path) -> Result<(), ApiError> {
    for (name, _) in DOCS_ASSETS {
        if !tokio::fs::try_exists(dir.join(name)).await.unwrap_or(false) {
            return Err(not_installed(dir));
        }
    }
    Ok(())
}

fn not_installed(dir: &Path) -> ApiError {
    ApiError::not_found(format!(
        "the docs UI is not installed in {} (run scripts/setup.py, or set --docs-ui-dir); \
         the description itself is at /openapi.json",
        dir.display()
    ))
}
