//! The one JSON error shape every endpoint answers with:
//! `{"error": {"type": ..., "message": ..., "param": ...}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::batch::jobs::JobsError;
use crate::classifiers::ClassifierError;
use crate::classify::ClassifyError;
use crate::db::DbError;
use crate::engine::queue::QueueError;
use crate::engine::{EngineError, LabelError};
use crate::storage::local::PolicyError;
use crate::storage::StorageError;

/// Stable machine-readable error kinds: clients branch on these, not on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// 400: the body or query is not what the endpoint reads.
    InvalidRequest,
    /// 422: well-formed but not acceptable; `param` names the field.
    ValidationError,
    /// 401: no key, or an unknown or revoked one.
    AuthenticationError,
    /// 403: a signed upload or download that does not check out.
    Forbidden,
    /// 404.
    NotFound,
    /// 405.
    MethodNotAllowed,
    /// 409: the resource is not in a state that allows this.
    Conflict,
    /// 410: retention deleted the job's input and results (`--retention-days`).
    Expired,
    /// 413.
    PayloadTooLarge,
    /// 415.
    UnsupportedMediaType,
    /// 429: the account's requests per second (`rps_limit`) are used up; retry after
    /// `Retry-After` seconds.
    RateLimited,
    /// 429: the account's monthly token quota is used up (`Retry-After`: until the
    /// next UTC month), or a batch job would go over it.
    QuotaExceeded,
    /// 503: the inference queue is full; retry after `Retry-After` seconds.
    Overloaded,
    /// 503: the model is still loading.
    NotReady,
    /// 507: the server's storage has no room for the upload.
    StorageFull,
    /// 500: details are in the server log.
    InternalError,
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, for a program (`type`, `param`) and for a person (`message`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: ErrorType,
    pub message: String,
    /// The request field at fault (a JSON path such as `texts[3]`), when one is.
    pub param: Option<String>,
}

/// An error as the client sees it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: ErrorType,
    pub message: String,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    /// Seconds after which a retry may succeed (`Retry-After`), when known.
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: ErrorType, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    /// Sets `Retry-After` (whole seconds, at least 1).
    fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// Names the request field at fault.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// 400: the body is not what the endpoint reads (bad JSON, wrong type, unknown field).
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorType::InvalidRequest, message)
    }

    /// 422: well-formed but not acceptable (empty text, too many labels, ...).
    pub fn validation(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::ValidationError,
            message,
        )
        .with_param(param)
    }

    /// 401: no key, or a key that is unknown or revoked.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorType::AuthenticationError,
            message,
        )
    }

    /// 403: a signed upload or download URL that does not check out.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorType::Forbidden, message)
    }

    /// 409: the resource is not in a state that allows this.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, ErrorType::Conflict, message)
    }

    /// 410: retention deleted what was asked for; the message says when.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, ErrorType::Expired, message)
    }

    /// 507: the storage refused the write for lack of space; an operator must free
    /// some, so no `Retry-After`.
    pub fn storage_full(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            ErrorType::StorageFull,
            format!("the server's storage is full: {}", message.into()),
        )
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorType::NotFound, message)
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorType::MethodNotAllowed,
            "method not allowed",
        )
    }

    /// 413.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorType::PayloadTooLarge,
            format!("request body is larger than {limit} bytes"),
        )
    }

    /// 415.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorType::UnsupportedMediaType,
            "send the body as JSON with Content-Type: application/json",
        )
    }

    /// 429: the account's requests per second are used up for `retry_after` seconds.
    pub fn rate_limited(rps: i64, retry_after: u64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorType::RateLimited,
            format!("this account may make {rps} requests per second to /v1/classify; retry after {retry_after} s"),
        )
        .with_retry_after(retry_after)
    }

    /// 429: the account's monthly token quota does not allow this until `retry_after`
    /// seconds from now (the next month).
    pub fn quota_exceeded(message: impl Into<String>, retry_after: u64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorType::QuotaExceeded,
            message,
        )
        .with_retry_after(retry_after)
    }

    /// 503: more requests are waiting for inference than the queue holds; the queue
    /// drains within about a second.
    pub fn overloaded() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::Overloaded,
            "too many requests are waiting for inference; retry shortly",
        )
        .with_retry_after(1)
    }

    /// 503: the model is still loading.
    pub fn not_ready() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::NotReady,
            "the model is still loading",
        )
    }

    /// 500: details go to the log, not to the client.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::InternalError,
            "internal error",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                kind: self.kind,
                message: self.message,
                param: self.param,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<LabelError> for ApiError {
    fn from(err: LabelError) -> Self {
        ApiError::validation(err.param, err.message)
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        ApiError::internal(err)
    }
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::NotFound(message) => ApiError::not_found(message),
            DbError::Conflict(message) => ApiError::conflict(message),
            other => ApiError::internal(other),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::NotFound(key) => ApiError::not_found(format!("no object {key:?}")),
            StorageError::Full(message) => ApiError::storage_full(message),
            other => ApiError::internal(other),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> Self {
        match err {
            QueueError::Overloaded => ApiError::overloaded(),
            QueueError::Engine(err) => err.into(),
        }
    }
}

impl From<ClassifierError> for ApiError {
    fn from(err: ClassifierError) -> Self {
        match err {
            ClassifierError::Invalid(err) => err.into(),
            ClassifierError::Db(err) => err.into(),
            ClassifierError::Engine(err) => err.into(),
            ClassifierError::Malformed { param, message } => {
                ApiError::invalid_request(message).with_param(param)
            }
            ClassifierError::Refused { param, message } => ApiError::validation(param, message),
        }
    }
}

impl From<ClassifyError> for ApiError {
    fn from(err: ClassifyError) -> Self {
        match err {
            ClassifyError::Invalid { param, message } => ApiError::validation(param, message),
            ClassifyError::Malformed { param, message } => {
                ApiError::invalid_request(message).with_param(param)
            }
            ClassifyError::Labels(err) => err.into(),
            ClassifyError::Engine(err) => err.into(),
        }
    }
}

impl From<JobsError> for ApiError {
    fn from(err: JobsError) -> Self {
        match err {
            JobsError::Invalid { param, message } => ApiError::validation(param, message),
            JobsError::NotFound(message) => ApiError::not_found(message),
            JobsError::Conflict(message) => ApiError::conflict(message),
            JobsError::Expired(message) => ApiError::expired(message),
            JobsError::QuotaExceeded {
                message,
                retry_after,
            } => ApiError::quota_exceeded(message, retry_after),
            JobsError::Db(err) => err.into(),
            JobsError::Storage(err) => err.into(),
            JobsError::View(err) => ApiError::internal(err),
        }
    }
}

impl From<PolicyError> for ApiError {
    fn from(err: PolicyError) -> Self {
        match err {
            PolicyError::BadSignature
            | PolicyError::Expired
            | PolicyError::WrongKey(_)
            | PolicyError::Malformed => ApiError::forbidden(err.to_string()),
            PolicyError::TooLarge(_) | PolicyError::Empty => {
                ApiError::invalid_request(err.to_string()).with_param("file")
            }
            PolicyError::Storage(err) => err.into(),
        }
    }
}
