//! The browser playground at `/`: hand-written HTML, CSS and JavaScript compiled into
//! the binary (no CDN, no build step), calling the same `/v1` API as any client with
//! the key the person types in.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;

const INDEX_HTML: &str = include_str!("web/index.html");
const STYLE_CSS: &str = include_str!("web/playground.css");
const SCRIPT_JS: &str = include_str!("web/playground.js");

/// The page's two assets (the page itself is routed with the documented routes).
pub fn assets() -> Router<AppState> {
    Router::new()
        .route(
            "/assets/playground.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route(
            "/assets/playground.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT_JS) }),
        )
}

/// The playground: classify, batch jobs and saved classifiers in a browser.
#[utoipa::path(get, path = "/", operation_id = "playground", tag = "service",
    responses((status = 200, description = "The playground page", content_type = "text/html", body = String)))]
pub async fn index(State(state): State<AppState>) -> Response {
    let mut response = asset("text/html; charset=utf-8", INDEX_HTML);
    let policy = content_security_policy(origin_of(state.storage.upload_base()));
    if let Ok(value) = HeaderValue::from_str(&policy) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

/// A static text body; revalidated on every load so an upgraded binary's page is seen.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// Only the page's own files run, and scripts connect only to this service and to where
/// batch files are uploaded: the local store's public URL (may differ from the address
/// the page was opened at) or the S3 endpoint. Downloads are plain links, not fetches.
/// Forms never submit natively (the script sends them), and no other site may frame
/// the page.
fn content_security_policy(upload_origin: Option<&str>) -> String {
    let connect = match upload_origin {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_string(),
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src {connect}; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    )
}

/// `scheme://host[:port]` of an absolute http(s) URL, as CSP source expressions want it.
fn origin_of(url: &str) -> Option<&str> {
    let scheme_end = url.find("://")?;
    if !matches!(&url[..scheme_end], "http" | "https") {
        return None;
    }
    let rest = &url[scheme_end + 3..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let origin = &url[..scheme_end + 3 + end];
    // Anything CSP would read as a separator or a second directive is not an origin.
    (end > 0 && !origin.contains([' ', ';', ',', '\''])).then_some(origin)
}

#[cfg(test)]
mod tests {
    use super::{content_security_policy, origin_of};

    #[test]
    fn upload_origins_come_from_the_storage_base_url() {
        assert_eq!(
            origin_of("http://127.0.0.1:8080"),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            origin_of("https://s3.eu-west-1.amazonaws.com/bucket?x=1"),
            Some("https://s3.eu-west-1.amazonaws.com")
        );
        assert_eq!(
            origin_of("http://proxy.example/zeroshot/"),
            Some("http://proxy.example")
        );
        assert_eq!(origin_of("file:///tmp"), None);
        assert_eq!(origin_of("http://"), None);
        assert_eq!(origin_of("http://a b"), None);
        assert_eq!(origin_of("https://evil; script-src *"), None);
    }

    #[test]
    fn the_policy_allows_connecting_to_self_and_the_upload_origin_only() {
        let policy = content_security_policy(Some("https://s3.example.com"));
        assert!(
            policy.contains("connect-src 'self' https://s3.example.com;"),
            "{policy}"
        );
        assert!(policy.contains("script-src 'self';"), "{policy}");
        assert!(content_security_policy(None).contains("connect-src 'self';"));
    }
}
