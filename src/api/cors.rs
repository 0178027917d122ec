//! Cross-origin access for browsers calling the API from pages served elsewhere
//! (`--cors-origin`). Off by default: without listed origins no CORS header is sent and
//! browsers keep other origins out.

use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::REQUEST_ID;

/// How long a browser may reuse a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// Parses one `--cors-origin` value: `scheme://host[:port]`, exactly as browsers send
/// it in `Origin` (no path, no trailing slash), so a typo fails at start instead of
/// silently matching nothing.
pub fn parse_origin(value: &str) -> Result<HeaderValue, String> {
    let value = value.trim();
    let host = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or_else(|| {
            format!("{value:?} is not an origin: it must start with http:// or https://")
        })?;
    if host.is_empty() || host.contains(['/', '?', '#', '*']) || host.contains(char::is_whitespace)
    {
        return Err(format!(
            "{value:?} is not an origin: write scheme://host[:port] with no path, e.g. https://app.example.com"
        ));
    }
    HeaderValue::from_str(value).map_err(|err| format!("{value:?}: {err}"))
}

/// The CORS layer for `origins`, or none when the list is empty: the allowed origins,
/// the methods the API uses, the request headers a client sends and `x-request-id`
/// exposed to scripts. Keys travel in `Authorization`, not cookies, so no credentials.
pub fn layer(origins: &[HeaderValue]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
                REQUEST_ID,
            ])
            .expose_headers([REQUEST_ID])
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

#[cfg(test)]
mod tests {
    use super::parse_origin;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        assert_eq!(
            parse_origin("https://app.example.com").unwrap(),
            "https://app.example.com"
        );
        assert_eq!(
            parse_origin(" http://localhost:3000 ").unwrap(),
            "http://localhost:3000"
        );
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "*",
            "https://*.example.com",
            "ftp://example.com",
            "https://",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad} accepted");
        }
    }
}
