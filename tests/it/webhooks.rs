//! Webhooks against the real binary on SQLite and Postgres: a receiver in this test
//! process records what arrives; signatures are checked with an implementation of the
//! Standard Webhooks scheme written here, not the server's.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{self, fresh_database, Backend, Server};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

on_both_databases!(
    endings_are_announced_once_and_signed,
    failed_attempts_are_retried_across_a_restart,
    private_receivers_are_refused_without_the_flag
);

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: i64,
    signature: String,
    content_type: String,
    body: String,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("the body is JSON")
    }

    /// Which of the space-separated signatures verify with `secret`, in order.
    fn verified_by(&self, secret: &str) -> Vec<bool> {
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
            .expect("base64 secret");
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{}.{}.{}", self.id, self.timestamp, self.body).as_bytes());
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        self.signature
            .split(' ')
            .map(|signature| signature == format!("v1,{expected}"))
            .collect()
    }
}

/// A webhook receiver on 127.0.0.1: answers each request with the next scripted
/// status (200 once the script is used up) and records it.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    /// Starts it; returns it and its port.
    async fn start(script: &[u16]) -> (Receiver, u16) {
        let receiver = Receiver::default();
        receiver.script.lock().unwrap().extend(script);
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(record))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, port)
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` requests have arrived; returns them all.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{n} webhooks not received: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn record(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    receiver.got.lock().unwrap().push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp").parse().expect("unix seconds"),
        signature: header("webhook-signature"),
        content_type: header("content-type"),
        body: String::from_utf8(body.to_vec()).unwrap(),
    });
    let next = receiver.script.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(next).unwrap()
}

/// Creates a job with `webhook_url`, uploads `input` and starts it; its id.
async fn run_job(server: &Server, webhook_url: &str, input: &str) -> String {
    let (status, job) = server
        .post(
            "/v1/batch",
            &json!({"labels": ["billing", "shipping"], "adapt": false, "webhook_url": webhook_url}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["webhook_url"], webhook_url);
    assert_eq!(
        server.upload(&job, input.as_bytes().to_vec()).await / 100,
        2
    );
    let id = job["job_id"].as_str().unwrap().to_string();
    let (status, started) = server
        .call(Method::POST, &format!("/v1/batch/{id}/start"), None)
        .await;
    assert_eq!(status, 202, "{started}");
    id
}

const GOOD: &str = "{\"text\": \"I was charged twice\"}\n{\"text\": \"where is my parcel\"}\n";
const ALL_BAD: &str = "not json\n{\"id\": 1}\n";

/// Polls `GET path` until `done` holds for its JSON.
async fn poll(server: &Server, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = server.call(Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path} never got there: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn job(server: &Server, id: &str) -> Value {
    let (status, job) = server
        .call(Method::GET, &format!("/v1/batch/{id}"), None)
        .await;
    assert_eq!(status, 200);
    job
}

/// `zeroshot webhooks secret [--rotate]` against the server.
fn cli_secret(server: &Server, rotate: bool) -> Value {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_zeroshot"));
    command.args([
        "webhooks",
        "secret",
        "--url",
        &server.base,
        "--api-key",
        &server.key,
    ]);
    if rotate {
        command.arg("--rotate");
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

async fn endings_are_announced_once_and_signed(backend: Backend) {
    let (receiver, port) = Receiver::start(&[]).await;
    let hook = format!("http://127.0.0.1:{port}/hook");
    let flags = [
        "--allow-private-webhooks",
        "--webhook-retry-base-secs",
        "0.2",
    ];
    let server = Server::start_with(&fresh_database(backend).await, &flags).await;

    let (status, none) = server.call(Method::GET, "/v1/webhooks/secret", None).await;
    assert_eq!(status, 404, "no secret before the first webhook: {none}");

    // A completed job: one batch.completed whose data is the job as GET shows it.
    let completed = run_job(&server, &hook, GOOD).await;
    let (status, secret) = server.call(Method::GET, "/v1/webhooks/secret", None).await;
    assert_eq!(status, 200, "a job with a webhook_url made the secret");
    let secret = secret["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(cli_secret(&server, false)["secret"], secret.as_str());
    server
        .wait_for_job(&completed, "completed", Duration::from_secs(60))
        .await;
    let first = receiver.wait_for(1).await[0].clone();
    let event = first.json();
    let shown = job(&server, &completed).await;
    assert_eq!(event["type"], "batch.completed");
    assert_eq!(
        event["data"], shown,
        "the job exactly as GET /v1/batch/{{id}} shows it"
    );
    assert_eq!(event["timestamp"], shown["completed_at"]);
    assert_eq!(first.content_type, "application/json");
    assert!(first.id.starts_with("msg_"), "{}", first.id);
    assert_eq!(first.verified_by(&secret), [true], "{}", first.signature);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now - first.timestamp).abs() < 300,
        "webhook-timestamp is now"
    );

    // A failed job (every line invalid): batch.failed.
    let failed = run_job(&server, &hook, ALL_BAD).await;
    let second = receiver.wait_for(2).await[1].clone();
    let event = second.json();
    assert_eq!(event["type"], "batch.failed");
    assert_eq!(event["data"]["job_id"], failed.as_str());
    assert_eq!(event["data"]["status"], "failed");
    assert_eq!(event["data"], job(&server, &failed).await);
    assert_eq!(second.verified_by(&secret), [true]);

    // Rotation (through the CLI): for 24 h every event carries both signatures.
    let rotated = cli_secret(&server, true);
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    assert!(rotated["previous_expires_at"].is_string(), "{rotated}");
    let (_, shown_secret) = server.call(Method::GET, "/v1/webhooks/secret", None).await;
    assert_eq!(shown_secret["secret"], new_secret.as_str());
    let third_job = run_job(&server, &hook, ALL_BAD).await;
    let third = receiver.wait_for(3).await[2].clone();
    assert_eq!(third.json()["data"]["job_id"], third_job.as_str());
    assert_eq!(
        third.verified_by(&new_secret),
        [true, false],
        "{}",
        third.signature
    );
    assert_eq!(
        third.verified_by(&secret),
        [false, true],
        "{}",
        third.signature
    );

    // Each ending was sent once, and its delivery says so.
    let got = receiver.received();
    assert_eq!(got.len(), 3, "{got:?}");
    let (_, deliveries) = server
        .call(
            Method::GET,
            &format!("/v1/batch/{completed}/webhooks"),
            None,
        )
        .await;
    let deliveries = deliveries["data"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1);
    let delivery = &deliveries[0];
    assert_eq!(delivery["id"], first.id.as_str());
    assert_eq!(delivery["type"], "batch.completed");
    assert_eq!(delivery["status"], "delivered");
    assert_eq!(delivery["attempts"], 1);
    assert_eq!(delivery["last_status"], 200);
    assert!(delivery["delivered_at"].is_string());

    // A failed job started again ends again: a new event with a new id.
    let (status, _) = server
        .call(Method::POST, &format!("/v1/batch/{failed}/start"), None)
        .await;
    assert_eq!(status, 202);
    let fourth = receiver.wait_for(4).await[3].clone();
    assert_eq!(fourth.json()["type"], "batch.failed");
    assert_eq!(fourth.json()["data"]["job_id"], failed.as_str());
    assert_ne!(fourth.id, second.id);
    let listed = poll(&server, &format!("/v1/batch/{failed}/webhooks"), |list| {
        list["data"].as_array().unwrap().len() == 2
    })
    .await;
    assert_eq!(listed["data"][0]["id"], fourth.id.as_str(), "newest first");

    // A cancelled job: batch.cancelled.
    let (status, pending) = server
        .post(
            "/v1/batch",
            &json!({"labels": ["billing", "shipping"], "webhook_url": hook}),
        )
        .await;
    assert_eq!(status, 201, "{pending}");
    let cancelled = pending["job_id"].as_str().unwrap();
    let (status, _) = server
        .call(Method::POST, &format!("/v1/batch/{cancelled}/cancel"), None)
        .await;
    assert_eq!(status, 202);
    let fifth = receiver.wait_for(5).await[4].clone();
    let event = fifth.json();
    assert_eq!(event["type"], "batch.cancelled");
    assert_eq!(event["data"]["status"], "cancelled");
    assert_eq!(event["data"], job(&server, cancelled).await);
    assert_eq!(fifth.verified_by(&new_secret), [true, false]);
}

async fn failed_attempts_are_retried_across_a_restart(backend: Backend) {
    // 500 twice, then 200. Retries come 1 s and then 6 s after a failure: the server
    // is replaced between the second and the third attempt.
    let (receiver, port) = Receiver::start(&[500, 500]).await;
    let hook = format!("http://127.0.0.1:{port}/hook");
    let database_url = fresh_database(backend).await;
    let data_dir = common::temp_dir();
    let flags = [
        "--allow-private-webhooks",
        "--webhook-retry-base-secs",
        "1",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ];
    let server = Server::start_with(&database_url, &flags).await;
    let key = server.key.clone();
    let id = run_job(&server, &hook, GOOD).await;
    server
        .wait_for_job(&id, "completed", Duration::from_secs(60))
        .await;
    receiver.wait_for(2).await;
    let deliveries = format!("/v1/batch/{id}/webhooks");
    let pending = poll(&server, &deliveries, |list| {
        list["data"][0]["attempts"] == 2
    })
    .await;
    let pending = &pending["data"][0];
    assert_eq!(pending["status"], "pending");
    assert_eq!(pending["last_status"], 500);
    assert!(
        pending["last_error"].as_str().unwrap().contains("500"),
        "{pending}"
    );
    assert!(pending["next_attempt_at"].is_string());
    assert!(server.terminate().success());

    let mut restarted = Server::start_with(&database_url, &flags).await;
    restarted.key = key;
    let done = poll(&restarted, &deliveries, |list| {
        list["data"][0]["status"] == "delivered"
    })
    .await;
    let done = &done["data"][0];
    assert_eq!(done["attempts"], 3);
    assert_eq!(done["last_status"], 200);
    assert!(done["next_attempt_at"].is_null());
    let got = receiver.received();
    assert_eq!(got.len(), 3, "{got:?}");
    for attempt in &got {
        assert_eq!(attempt.id, got[0].id, "one webhook-id on every attempt");
        assert_eq!(attempt.body, got[0].body, "the same body on every attempt");
    }
    assert_eq!(done["id"], got[0].id.as_str());
    assert!(
        got[2].timestamp >= got[0].timestamp + 7,
        "signed at each attempt, after the backoff"
    );
    assert_eq!(got[2].json()["data"], job(&restarted, &id).await);
}

async fn private_receivers_are_refused_without_the_flag(backend: Backend) {
    let (receiver, port) = Receiver::start(&[]).await;
    let server = Server::start_with(
        &fresh_database(backend).await,
        &["--webhook-retry-base-secs", "0.2"],
    )
    .await;
    let long = format!("https://example.com/{}", "a".repeat(2048));
    for (url, why) in [
        (format!("http://127.0.0.1:{port}/hook"), "loopback"),
        (format!("http://[::ffff:127.0.0.1]:{port}/hook"), "loopback"),
        (
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "link-local",
        ),
        ("http://10.0.0.8/hook".to_string(), "private"),
        ("ftp://example.com/hook".to_string(), "http"),
        (
            "https://user:secret@example.com/hook".to_string(),
            "password",
        ),
        (long, "2048"),
    ] {
        let (status, refused) = server
            .post(
                "/v1/batch",
                &json!({"labels": ["a", "b"], "webhook_url": url}),
            )
            .await;
        assert_eq!(status, 422, "{url}: {refused}");
        assert_eq!(refused["error"]["param"], "webhook_url");
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{url}: {message}");
    }

    // A name is resolved at each delivery: localhost is loopback, so nothing is sent.
    let id = run_job(&server, &format!("http://localhost:{port}/hook"), ALL_BAD).await;
    let listed = poll(&server, &format!("/v1/batch/{id}/webhooks"), |list| {
        list["data"][0]["status"] == "failed"
    })
    .await;
    let delivery = &listed["data"][0];
    assert_eq!(delivery["type"], "batch.failed");
    assert_eq!(delivery["attempts"], 1, "a refused address is not retried");
    let error = delivery["last_error"].as_str().unwrap();
    assert!(
        error.contains("refused") && error.contains("loopback"),
        "{error}"
    );
    assert!(delivery["last_status"].is_null());
    assert!(
        receiver.received().is_empty(),
        "nothing reached the receiver"
    );
}
