//! The local storage backend's upload and download endpoints. They stand in for S3's
//! presigned POST and GET: no API key, the signed policy or URL is the authorisation.

use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, AppState};
use crate::storage::local::LocalStore;

fn local(state: &AppState) -> Result<&LocalStore, ApiError> {
    state
        .storage
        .local()
        .ok_or_else(|| ApiError::not_found("uploads go to S3 on this server"))
}

/// The presigned upload form of local storage, in the order it must be sent.
// Only describes the form in the OpenAPI document: the handler reads the parts one
// by one as they stream in.
#[allow(dead_code)]
#[derive(Debug, ToSchema)]
pub struct UploadFormBody {
    /// `upload_fields.key`.
    pub key: String,
    /// `upload_fields.policy`.
    pub policy: String,
    /// `upload_fields.signature`.
    pub signature: String,
    /// The NDJSON input, last.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// Uploads a batch job's input through its presigned form (local storage only).
///
/// The form fields `key`, `policy`, `signature`, then `file`, as with an S3 presigned
/// POST; no API key, the signed policy is the authorisation.
#[utoipa::path(post, path = "/uploads", operation_id = "upload_input", tag = "storage",
    request_body(content = UploadFormBody, content_type = "multipart/form-data"),
    responses(
        (status = 204, description = "Stored whole"),
        (status = 400, description = "Malformed form, fields out of order, or a file over the limit", body = super::ErrorBody),
        (status = 403, description = "The policy's signature, key or expiry does not check out", body = super::ErrorBody),
        (status = 404, description = "This server stores inputs in S3", body = super::ErrorBody),
        (status = 500, description = "Storage failed", body = super::ErrorBody),
        (status = 507, description = "No room left in the storage; nothing of the upload is kept", body = super::ErrorBody),
    ))]
pub async fn upload(
    State(state): State<AppState>,
    form: Result<Multipart, MultipartRejection>,
) -> Result<StatusCode, ApiError> {
    let store = local(&state)?;
    let mut form = form.map_err(|err| {
        ApiError::invalid_request(format!("send the form as multipart/form-data: {err}"))
    })?;
    let (mut key, mut policy, mut signature): (Option<String>, Option<String>, Option<String>) =
        (None, None, None);
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|err| ApiError::invalid_request(format!("malformed multipart body: {err}")))?
    {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            let (Some(key), Some(policy), Some(signature)) = (&key, &policy, &signature) else {
                return Err(ApiError::invalid_request(
                    "key, policy and signature must come before file",
                ));
            };
            let allowed = store.verify_upload(key, policy, signature)?;
            store.store_upload(&allowed, field).await?;
            return Ok(StatusCode::NO_CONTENT);
        }
        let value = field
            .text()
            .await
            .map_err(|err| ApiError::invalid_request(format!("malformed multipart body: {err}")))?;
        match name.as_str() {
            "key" => key = Some(value),
            "policy" => policy = Some(value),
            "signature" => signature = Some(value),
            _ => {}
        }
    }
    Err(ApiError::invalid_request("the form has no file field").with_param("file"))
}

/// Query of a signed download URL.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DownloadQuery {
    /// Unix milliseconds after which the URL is refused.
    pub expires: i64,
    pub signature: String,
}

/// Downloads a job's results through a signed URL (local storage only).
#[utoipa::path(get, path = "/files/{key}", operation_id = "download_results", tag = "storage",
    params(("key" = String, Path, description = "Object key"), DownloadQuery),
    responses(
        (status = 200, description = "NDJSON, one row per input line", content_type = "application/x-ndjson", body = String),
        (status = 403, description = "Bad or expired signature", body = super::ErrorBody),
        (status = 404, description = "No such object, or this server stores results in S3", body = super::ErrorBody),
        (status = 500, description = "Storage failed", body = super::ErrorBody),
    ))]
pub async fn download(
    State(state): State<AppState>,
    Path(key): Path<String>,
    query: Result<Query<DownloadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let store = local(&state)?;
    let Query(query) = query.map_err(|_| ApiError::forbidden("missing or malformed signature"))?;
    let (size, body) = store
        .open_download(&key, query.expires, &query.signature)
        .await?;
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CONTENT_LENGTH, size)
        .body(Body::from_stream(tokio_util::io::ReaderStream::new(body)))
        .map_err(ApiError::internal)
}
