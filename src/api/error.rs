//! The one JSON error shape every endpoint answers with:
//! `{"error": {"type": ..., "message": ..., "param": ...}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::classifiers::ClassifierError;
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
    /// 503: the inference queue is full; retry shortly.
    Overloaded,
    /// 503: the model is still loading.
    NotReady,
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
}

impl ApiError {
    fn new(status: StatusCode, kind: ErrorType, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            param: None,
        }
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

    /// 503: more requests are waiting for inference than the queue holds.
    pub fn overloaded() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::Overloaded,
            "too many requests are waiting for inference; retry shortly",
        )
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
        (self.status, axum::Json(body)).into_response()
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
