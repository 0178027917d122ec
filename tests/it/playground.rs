//! The playground at `/` against the real binary and model (SQLite, local storage):
//! its files and headers, then a real browser using it (tests/browser/playground.py,
//! headless Chromium driven by Playwright; `scripts/setup.py --browser` prints
//! ZEROSHOT_BROWSER_PYTHON, scripts/test.sh sets it up).

use std::path::PathBuf;
use std::process::Command;

use crate::common::{self, Backend, Server};
use serde_json::json;

/// The page's Content-Security-Policy lets its script connect to this server and to the
/// origin a batch job's upload form posts to, and nowhere else; returns that origin.
async fn policy_allows_the_upload_origin(server: &Server) -> String {
    let page = server.client.get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    let (status, job) = server
        .post("/v1/batch", &json!({"labels": ["billing", "shipping"]}))
        .await;
    assert_eq!(status, 201, "{job}");
    let url = job["upload_url"].as_str().unwrap();
    let (scheme, rest) = url.split_once("://").unwrap();
    let origin = format!("{scheme}://{}", rest.split('/').next().unwrap());
    assert!(
        policy.contains(&format!("connect-src 'self' {origin};")),
        "upload_url {url} not allowed by {policy}"
    );
    origin
}

#[tokio::test(flavor = "multi_thread")]
async fn with_s3_the_policy_allows_the_bucket_endpoint() {
    let flags = common::s3_server_flags("zs-web");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let database = common::fresh_database(Backend::Sqlite).await;
    let server = Server::start_with(&database, &flags).await;
    let origin = policy_allows_the_upload_origin(&server).await;
    assert_ne!(origin, server.base, "uploads go to S3, not to this server");
}

#[tokio::test(flavor = "multi_thread")]
async fn page_and_assets_are_served_with_their_types_and_policy() {
    let server = Server::start(Backend::Sqlite).await;
    // Local storage: uploads go to this server's public URL, which is its own address.
    assert_eq!(policy_allows_the_upload_origin(&server).await, server.base);
    let page = server.client.get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let policy = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{directive} missing: {policy}");
    }
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script src="/assets/playground.js" defer>"#));
    // Nothing inline for the policy to block, and nothing fetched from elsewhere.
    assert!(!html.contains("<script>") && !html.contains("style="));
    assert!(!html.contains("https://"), "no external resources");

    for (path, content_type, needle) in [
        (
            "/assets/playground.js",
            "text/javascript; charset=utf-8",
            "/v1/classify",
        ),
        (
            "/assets/playground.css",
            "text/css; charset=utf-8",
            ".bar-fill",
        ),
    ] {
        let asset = server.client.get(server.url(path)).send().await.unwrap();
        assert_eq!(asset.status(), 200, "{path}");
        assert_eq!(asset.headers()["content-type"], content_type, "{path}");
        assert!(asset.text().await.unwrap().contains(needle), "{path}");
    }
    // The API around it is unchanged: unknown paths still get the JSON 404.
    let (status, body) = server
        .call(reqwest::Method::GET, "/assets/nope.js", None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["type"], "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn playground_works_in_a_real_browser() {
    let python = std::env::var("ZEROSHOT_BROWSER_PYTHON").expect(
        "ZEROSHOT_BROWSER_PYTHON is not set: eval \"$(scripts/setup.py --browser --print-env)\" (scripts/test.sh does)",
    );
    let server = Server::start(Backend::Sqlite).await;
    let (status, saved) = server
        .post(
            "/v1/classifiers",
            &json!({
                "name": "ticket-router",
                "description": "routes support tickets",
                "labels": ["billing", "shipping", "technical", "account_access"],
                "descriptions": {"billing": "payments, refunds and invoices"},
            }),
        )
        .await;
    assert_eq!(status, 201, "{saved}");

    let screenshots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("playground");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/playground.py");
    let mut command = Command::new(&python);
    command.args([
        script,
        "--url",
        &server.base,
        "--api-key",
        &server.key,
        "--classifier",
        "ticket-router",
        "--screenshots",
        screenshots.to_str().expect("utf-8 path"),
    ]);
    // Regenerates docs/playground.md's picture when asked (ZEROSHOT_README_SCREENSHOT=path).
    if let Some(path) = std::env::var_os("ZEROSHOT_README_SCREENSHOT") {
        command.arg("--readme-screenshot").arg(path);
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|err| panic!("running {python}: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser test failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    println!("{stdout}");
}
