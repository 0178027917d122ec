//! A JSON body extractor whose every failure is an [`ApiError`] naming the field at
//! fault (`serde_path_to_error` tracks where deserialization stopped).

use axum::body::Bytes;
use axum::extract::{FromRequest, MatchedPath, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::AppState;
use crate::engine::text::{self, TextError};

/// Like `axum::Json`, with our error shape.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::unsupported_media_type());
        }
        // The route's own limit (it is the one `Bytes` applies), for the message.
        let limit = req
            .extensions()
            .get::<MatchedPath>()
            .map_or(state.max_body_bytes, |path| state.body_limit(path.as_str()));
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(limit)
            } else {
                ApiError::invalid_request(format!("could not read the body: {rejection}"))
            }
        })?;
        // Every endpoint reads an object; serde would otherwise accept a struct as an array.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::invalid_request("the body must be a JSON object"));
        }
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let error = if text::is_lone_surrogate(&inner) {
                ApiError::invalid_request(format!("{}: {inner}", TextError::LoneSurrogate))
            } else {
                ApiError::invalid_request(format!("invalid JSON body: {inner}"))
            };
            if path == "." {
                error
            } else {
                error.with_param(path)
            }
        })?;
        deserializer
            .end()
            .map_err(|err| ApiError::invalid_request(format!("invalid JSON body: {err}")))?;
        Ok(ApiJson(value))
    }
}
