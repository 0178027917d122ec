//! Inline items on `POST /v1/batch`, against the real binary and model: SQLite with
//! local storage, and Postgres with S3 (SeaweedFS).

use std::time::Duration;

use crate::common::batch_store::{Kind, Store};
use crate::common::{Backend, Server};
use reqwest::Method;
use serde_json::{json, Value};

const LABELS: [&str; 3] = ["billing", "technical_issue", "feature_request"];

/// Runs each case on SQLite with local storage and on Postgres with S3.
macro_rules! on_both_setups {
    ($($case:ident),* $(,)?) => {
        mod sqlite_local {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $case() { super::$case(super::Backend::Sqlite, super::Kind::Local).await })*
        }
        mod postgres_s3 {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $case() { super::$case(super::Backend::Postgres, super::Kind::S3).await })*
        }
    };
}

on_both_setups!(
    items_are_input_lines_checked_like_a_file,
    start_true_runs_the_job_in_the_same_call,
    limits_and_the_larger_body_of_this_route,
);

async fn start(backend: Backend, kind: Kind) -> (Store, Server) {
    let store = Store::new(kind, "zs-inline").await;
    let server = store.serve(backend, &[]).await;
    (store, server)
}

/// POSTs `body` to `/v1/batch`, with an Idempotency-Key when given.
async fn create(server: &Server, body: &Value, key: Option<&str>) -> (u16, bool, Value) {
    let mut request = server
        .client
        .post(server.url("/v1/batch"))
        .bearer_auth(&server.key)
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let resp = request.send().await.expect("request");
    let status = resp.status().as_u16();
    let replayed = resp.headers().contains_key("idempotent-replayed");
    (status, replayed, resp.json().await.unwrap_or(Value::Null))
}

async fn job_ids(server: &Server) -> Vec<String> {
    let (status, listed) = server.call(Method::GET, "/v1/batch?limit=100", None).await;
    assert_eq!(status, 200, "{listed}");
    listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["job_id"].as_str().unwrap().to_string())
        .collect()
}

/// Starts a job and waits for it to complete; its result rows.
async fn run_to_completion(server: &Server, id: &str) -> Vec<Value> {
    let (status, started) = server
        .call(Method::POST, &format!("/v1/batch/{id}/start"), None)
        .await;
    assert_eq!(status, 202, "{started}");
    server
        .wait_for_job(id, "completed", Duration::from_secs(120))
        .await;
    server.download_results(id).await
}

async fn items_are_input_lines_checked_like_a_file(backend: Backend, kind: Kind) {
    let (store, server) = start(backend, kind).await;
    let items = json!([
        {"id": "a", "text": "I was charged twice for my subscription this month"},
        {"id": "b", "text": ""},
        {"id": 3},
        {"custom_id": "d", "text": "The app crashes when I open the settings page"},
    ]);
    let (status, _, job) = create(
        &server,
        &json!({"labels": LABELS, "items": items, "adapt": false}),
        None,
    )
    .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["status"], "pending");
    assert_eq!(job["expired"], false);
    for field in [
        "upload_url",
        "upload_fields",
        "expires_at",
        "max_upload_bytes",
    ] {
        assert!(
            job[field].is_null(),
            "no upload form for inline items: {job}"
        );
    }
    let id = job["job_id"].as_str().unwrap();

    // Stored as the job's input: one compact line per item, in order.
    let input = store
        .object(job["input_key"].as_str().unwrap())
        .await
        .expect("the input is stored before the answer");
    let lines: Vec<Value> = String::from_utf8(input)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(Value::from(lines), items);

    let rows = run_to_completion(&server, id).await;
    assert_eq!(rows.len(), 4, "{rows:?}");
    let lines: Vec<i64> = rows.iter().map(|r| r["line"].as_i64().unwrap()).collect();
    assert_eq!(lines, [1, 2, 3, 4], "one row per item, in order");
    let ids: Vec<&Value> = rows.iter().map(|r| &r["id"]).collect();
    assert_eq!(ids, [&json!("a"), &json!("b"), &json!(3), &json!("d")]);
    for scored in [&rows[0], &rows[3]] {
        assert!(
            LABELS.contains(&scored["label"].as_str().unwrap()),
            "{scored}"
        );
        assert_eq!(scored["scores"].as_object().unwrap().len(), 3);
    }
    assert_eq!(rows[1]["error"]["code"], "empty_text");
    assert_eq!(rows[2]["error"]["code"], "missing_text");
    let (_, done) = server
        .call(Method::GET, &format!("/v1/batch/{id}"), None)
        .await;
    assert_eq!(
        (&done["requests_completed"], &done["requests_failed"]),
        (&json!(2), &json!(2))
    );

    // The same lines uploaded as a file give the same rows.
    let (status, _, file_job) =
        create(&server, &json!({"labels": LABELS, "adapt": false}), None).await;
    assert_eq!(status, 201, "{file_job}");
    let file: String = items
        .as_array()
        .unwrap()
        .iter()
        .map(|item| format!("{item}\n"))
        .collect();
    assert_eq!(server.upload(&file_job, file.into_bytes()).await / 100, 2);
    let file_rows = run_to_completion(&server, file_job["job_id"].as_str().unwrap()).await;
    assert_eq!(file_rows, rows);

    // A retried request with its Idempotency-Key answers the same job.
    let body = json!({"labels": LABELS, "items": [{"text": "refund please"}]});
    let (status, replayed, first) = create(&server, &body, Some("inline-1")).await;
    assert_eq!((status, replayed), (201, false), "{first}");
    let (status, replayed, again) = create(&server, &body, Some("inline-1")).await;
    assert_eq!((status, replayed), (201, true), "{again}");
    assert_eq!(again, first);
    assert_eq!(job_ids(&server).await.len(), 3);
}

async fn start_true_runs_the_job_in_the_same_call(backend: Backend, kind: Kind) {
    let (store, server) = start(backend, kind).await;
    let (status, _, job) = create(
        &server,
        &json!({"labels": LABELS, "start": true,
                "items": [{"id": 1, "text": "Please add dark mode"}, {"id": 2, "text": "My card was declined"}]}),
        None,
    )
    .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["status"], "processing");
    assert!(job["started_at"].is_string());
    let id = job["job_id"].as_str().unwrap().to_string();
    let done = server
        .wait_for_job(&id, "completed", Duration::from_secs(120))
        .await;
    assert_eq!(done["requests_completed"], 2);
    let rows = server.download_results(&id).await;
    let ids: Vec<&Value> = rows.iter().map(|r| &r["id"]).collect();
    assert_eq!(ids, [&json!(1), &json!(2)]);

    // The most items a request takes; started, the job holds the account's one slot.
    let many: Vec<Value> = (0..50_000)
        .map(|i| json!({"id": i, "text": format!("ticket {i}: the export button does nothing")}))
        .collect();
    let (status, _, busy) = create(
        &server,
        &json!({"labels": LABELS, "start": true, "items": many}),
        None,
    )
    .await;
    assert_eq!(status, 201, "{busy}");
    assert_eq!(busy["status"], "processing");

    // Another start now: 409, and nothing of it is kept.
    let before = job_ids(&server).await;
    let (status, _, refused) = create(
        &server,
        &json!({"labels": LABELS, "start": true, "items": [{"text": "where is my parcel"}]}),
        None,
    )
    .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["type"], "conflict");
    assert_eq!(job_ids(&server).await, before, "no job created");
    let (_, busy_now) = server
        .call(
            Method::GET,
            &format!("/v1/batch/{}", busy["job_id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(
        busy_now["status"], "processing",
        "the refusal was while the big job ran: {busy_now}"
    );
    // Without `start`, the job is created pending and waits.
    let (status, _, waiting) = create(
        &server,
        &json!({"labels": LABELS, "items": [{"text": "where is my parcel"}]}),
        None,
    )
    .await;
    assert_eq!(status, 201, "{waiting}");
    assert_eq!(waiting["status"], "pending");
    assert!(store
        .object(waiting["input_key"].as_str().unwrap())
        .await
        .is_some());
}

async fn limits_and_the_larger_body_of_this_route(backend: Backend, kind: Kind) {
    let (store, server) = start(backend, kind).await;
    let refused = |body: Value| {
        let server = &server;
        async move {
            let (status, _, answer) = create(server, &body, None).await;
            (status, answer["error"]["param"].clone())
        }
    };
    let too_many: Vec<Value> = (0..50_001).map(|_| json!({"text": "x"})).collect();
    assert_eq!(
        refused(json!({"labels": LABELS, "items": too_many})).await,
        (422, json!("items"))
    );
    assert_eq!(
        refused(json!({"labels": LABELS, "items": []})).await,
        (422, json!("items"))
    );
    assert_eq!(
        refused(json!({"labels": LABELS, "start": true})).await,
        (422, json!("start"))
    );
    // An item that is not an object is not an input line: the body is refused.
    assert_eq!(
        refused(json!({"labels": LABELS, "items": [{"text": "ok"}, "just text"]})).await,
        (400, json!("items[1]"))
    );
    assert!(job_ids(&server).await.is_empty());

    // About 10 MiB of items (S3: more than one part), with an Idempotency-Key, whose
    // middleware reads the body first.
    let text = "words ".repeat(170);
    let big: Vec<Value> = (0..10_000)
        .map(|i| json!({"id": format!("t{i}"), "text": format!("{i} {text}")}))
        .collect();
    let body = json!({"labels": LABELS, "items": big});
    let size = body.to_string().len();
    assert!(size > 10 << 20, "{size} bytes");
    let (status, _, job) = create(&server, &body, Some("big-1")).await;
    assert_eq!(status, 201, "{job}");
    let input = store
        .object(job["input_key"].as_str().unwrap())
        .await
        .expect("stored");
    let text = String::from_utf8(input).unwrap();
    assert_eq!(text.lines().count(), 10_000);
    assert_eq!(
        serde_json::from_str::<Value>(text.lines().last().unwrap()).unwrap(),
        big[9_999]
    );

    // Other routes keep --max-body-bytes (2 MiB): 3 MiB is too large for them.
    let three_mib = "x".repeat(3 << 20);
    for (path, body) in [
        ("/v1/classify", json!({"labels": LABELS, "text": three_mib})),
        (
            "/v1/classifiers",
            json!({"name": "big", "labels": LABELS, "description": three_mib}),
        ),
    ] {
        let resp = server
            .client
            .post(server.url(path))
            .bearer_auth(&server.key)
            .header("Idempotency-Key", "big-2")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 413, "{path}");
        let error: Value = resp.json().await.unwrap();
        assert_eq!(error["error"]["type"], "payload_too_large", "{path}");
    }
    // And this one stops at 64 MiB.
    let huge = json!({"labels": LABELS, "items": [{"text": "y".repeat(65 << 20)}]});
    for key in [None, Some("huge")] {
        let (status, _, answer) = create(&server, &huge, key).await;
        assert_eq!(status, 413, "{answer}");
        assert!(answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&(64usize << 20).to_string()));
    }
    assert_eq!(job_ids(&server).await.len(), 1);
}
