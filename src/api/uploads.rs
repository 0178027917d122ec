//! The local storage backend's upload and download endpoints. They stand in for S3's
//! presigned POST and GET: no API key, the signed policy or URL is the authorisation.

use axum::body::Body;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::storage::local::LocalStore;
use crate::storage::Storage;

fn local(state: &AppState) -> Result<&LocalStore, ApiError> {
    match state.storage.as_ref() {
        Storage::Local(store) => Ok(store),
        Storage::S3(_) => Err(ApiError::not_found("uploads go to S3 on this server")),
    }
}

/// `POST /uploads`: the form fields `key`, `policy`, `signature`, then `file`, as
/// with an S3 presigned POST. The file streams to disk and is kept only if whole.
pub async fn upload(
    State(state): State<AppState>,
    mut form: Multipart,
) -> Result<StatusCode, ApiError> {
    let store = local(&state)?;
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
#[derive(Debug, Deserialize)]
pub struct DownloadQuery {
    pub expires: i64,
    pub signature: String,
}

/// `GET /files/{key}?expires=&signature=`: streams an object.
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
