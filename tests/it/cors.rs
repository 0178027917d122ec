//! `--cors-origin` against the real binary: preflights and responses for listed
//! origins carry the CORS headers, other origins get no `access-control-allow-origin`,
//! and without the flag there is no CORS header at all.

use crate::common::{fresh_database, Backend, Server};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::json;

const APP: &str = "https://app.example.com";
const DEV: &str = "http://localhost:3000";
const OTHER: &str = "https://evil.example.net";

/// A browser's preflight for `POST /v1/classify` with a key and a JSON body.
async fn preflight(server: &Server, origin: &str) -> (u16, HeaderMap) {
    let resp = server
        .client
        .request(Method::OPTIONS, server.url("/v1/classify"))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type,idempotency-key,x-request-id",
        )
        .send()
        .await
        .expect("preflight");
    (resp.status().as_u16(), resp.headers().clone())
}

fn header_list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_ascii_lowercase())
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn listed_origins_get_cors_headers_and_others_do_not() {
    let database = fresh_database(Backend::Sqlite).await;
    // Repeatable and comma-separated alike.
    let server = Server::start_with(
        &database,
        &[
            "--cors-origin",
            APP,
            "--cors-origin",
            &format!("{DEV},http://127.0.0.1:9"),
        ],
    )
    .await;

    for origin in [APP, DEV] {
        let (status, headers) = preflight(&server, origin).await;
        assert_eq!(status, 200, "{headers:?}");
        assert_eq!(headers["access-control-allow-origin"], origin);
        let methods = header_list(&headers, "access-control-allow-methods");
        for method in ["get", "post", "put", "delete"] {
            assert!(methods.contains(&method.to_string()), "{methods:?}");
        }
        let allowed = header_list(&headers, "access-control-allow-headers");
        for header in [
            "authorization",
            "content-type",
            "idempotency-key",
            "x-request-id",
        ] {
            assert!(allowed.contains(&header.to_string()), "{allowed:?}");
        }
        assert!(headers.contains_key("access-control-max-age"));
        // Keys travel in Authorization, never in cookies.
        assert!(!headers.contains_key("access-control-allow-credentials"));
    }

    let (_, headers) = preflight(&server, OTHER).await;
    assert!(
        !headers.contains_key("access-control-allow-origin"),
        "a disallowed origin got {headers:?}"
    );

    // The actual call: the origin is allowed and the request id is readable by scripts.
    let resp = server
        .client
        .post(server.url("/v1/classify"))
        .bearer_auth(&server.key)
        .header("Origin", APP)
        .json(&json!({"text": "refund my double charge", "labels": ["billing", "shipping"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["access-control-allow-origin"], APP);
    assert_eq!(
        header_list(resp.headers(), "access-control-expose-headers"),
        ["x-request-id"]
    );
    assert!(resp.headers().contains_key("x-request-id"));
    // Errors carry them too, so a browser script can read the API's error body.
    let resp = server
        .client
        .get(server.url("/v1/batch"))
        .bearer_auth("zs_wrong")
        .header("Origin", DEV)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["access-control-allow-origin"], DEV);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_flag_there_are_no_cors_headers() {
    let server = Server::start(Backend::Sqlite).await;
    let (status, headers) = preflight(&server, APP).await;
    assert_ne!(status, 200, "no preflight answer without --cors-origin");
    assert!(
        !headers
            .keys()
            .any(|name| name.as_str().starts_with("access-control-")),
        "{headers:?}"
    );
    let resp = server
        .client
        .post(server.url("/v1/classify"))
        .bearer_auth(&server.key)
        .header("Origin", APP)
        .json(&json!({"text": "hi", "labels": ["a", "b"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        !resp
            .headers()
            .keys()
            .any(|name| name.as_str().starts_with("access-control-")),
        "{:?}",
        resp.headers()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_origin_stops_the_server_at_start() {
    let database = fresh_database(Backend::Sqlite).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_zeroshot"))
        .args(["serve", "--port", "0", "--database-url", &database])
        .args(["--cors-origin", "https://app.example.com/"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not an origin"), "{stderr}");
}
