//! Retention (`--retention-days`), against the real binary: SQLite with local storage
//! and Postgres with S3 (SeaweedFS). Jobs are aged by moving their times back in the
//! database; the sweeper runs every second.

use std::time::{Duration, Instant};

use crate::common::batch_store::{Kind, Store};
use crate::common::{Backend, Server};
use reqwest::Method;
use serde_json::{json, Value};

const LABELS: [&str; 2] = ["billing", "shipping"];
const DAY_MS: i64 = 86_400_000;

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_local() {
    expired_jobs_lose_their_files_and_keep_their_rows(Backend::Sqlite, Kind::Local).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_s3() {
    expired_jobs_lose_their_files_and_keep_their_rows(Backend::Postgres, Kind::S3).await;
}

/// A job of three items, pending, or completed when `run`.
async fn inline_job(server: &Server, run: bool) -> Value {
    let items = json!([
        {"id": "a", "text": "I was charged twice"},
        {"id": "b", "text": "my parcel never arrived"},
        {"id": "c"},
    ]);
    let (status, job) = server
        .post(
            "/v1/batch",
            &json!({"labels": LABELS, "items": items, "start": run}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["job_id"].as_str().unwrap();
    if run {
        return server
            .wait_for_job(id, "completed", Duration::from_secs(120))
            .await;
    }
    job
}

fn id(job: &Value) -> &str {
    job["job_id"].as_str().unwrap()
}

async fn job(server: &Server, id: &str) -> Value {
    let (status, job) = server
        .call(Method::GET, &format!("/v1/batch/{id}"), None)
        .await;
    assert_eq!(status, 200, "{job}");
    job
}

/// Polls until the job shows `expired: true`.
async fn wait_expired(server: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = job(server, id).await;
        if job["expired"] == true {
            return job;
        }
        assert_eq!(job["expired"], false, "{job}");
        assert!(Instant::now() < deadline, "not expired in time: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Moves a job's `column` back by `days`.
async fn age(server: &Server, id: &str, column: &str, days: i64) {
    let db = zeroshot::db::Db::connect(&server.database_url)
        .await
        .expect("open the server's database");
    let done = sqlx::query(&format!(
        "UPDATE batch_jobs SET {column} = {column} - $1 WHERE id = $2"
    ))
    .bind(days * DAY_MS)
    .bind(id)
    .execute(db.pool())
    .await
    .expect("age the job");
    assert_eq!(done.rows_affected(), 1);
}

async fn expired_jobs_lose_their_files_and_keep_their_rows(backend: Backend, kind: Kind) {
    let store = Store::new(kind, "zs-retention").await;
    let server = store.serve(backend, &["--retention-sweep-secs", "1"]).await;
    let old = inline_job(&server, true).await;
    let recent = inline_job(&server, true).await;
    let stale = inline_job(&server, false).await;
    let fresh = inline_job(&server, false).await;
    let (status, link) = server
        .call(
            Method::GET,
            &format!("/v1/batch/{}/results", id(&old)),
            None,
        )
        .await;
    assert_eq!(status, 200, "{link}");
    let keys = |job: &Value| {
        let id = id(job);
        [
            zeroshot::batch::input_key(id),
            zeroshot::batch::output_key(id),
        ]
    };
    for key in keys(&old) {
        assert!(store.object(&key).await.is_some(), "{key} before expiry");
    }

    // Ended 31 days ago (default retention: 30 days); pending since 31 days ago.
    age(&server, id(&old), "completed_at", 31).await;
    age(&server, id(&stale), "created_at", 31).await;
    let expired = wait_expired(&server, id(&old)).await;
    wait_expired(&server, id(&stale)).await;

    // The row stays, as it was.
    for field in [
        "status",
        "requests_total",
        "requests_completed",
        "requests_failed",
        "actual_tokens",
        "labels",
        "started_at",
    ] {
        assert_eq!(expired[field], old[field], "{field}");
    }
    assert_eq!(expired["requests_completed"], 2);
    // Its files are gone, and so is the download issued before.
    for job in [&old, &stale] {
        for key in keys(job) {
            assert!(store.object(&key).await.is_none(), "{key} deleted");
        }
    }
    let download = server
        .client
        .get(link["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 404, "the old download URL");
    // The API says so: 410 `expired` with when, for the results and for a start.
    for (method, path) in [
        (Method::GET, format!("/v1/batch/{}/results", id(&old))),
        (Method::POST, format!("/v1/batch/{}/start", id(&stale))),
    ] {
        let (status, gone) = server.call(method, &path, None).await;
        assert_eq!(status, 410, "{path}: {gone}");
        assert_eq!(gone["error"]["type"], "expired");
        let message = gone["error"]["message"].as_str().unwrap();
        assert!(message.contains("deleted at 20"), "{message}");
    }
    let (_, listed) = server.call(Method::GET, "/v1/batch", None).await;
    let listed_expired: Vec<(&str, bool)> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| (id(job), job["expired"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        listed_expired,
        [
            (id(&fresh), false),
            (id(&recent), false),
            (id(&old), true),
            (id(&stale), true),
        ],
        "newest first; the stale job was created 31 days ago"
    );

    // Jobs within retention are untouched: the sweeps above passed them by.
    assert_eq!(server.download_results(id(&recent)).await.len(), 3);
    assert!(store.object(&keys(&fresh)[0]).await.is_some());
    let (status, started) = server
        .call(
            Method::POST,
            &format!("/v1/batch/{}/start", id(&fresh)),
            None,
        )
        .await;
    assert_eq!(status, 202, "{started}");
    server
        .wait_for_job(id(&fresh), "completed", Duration::from_secs(120))
        .await;

    // An expired job can still be deleted.
    let (status, _) = server
        .call(Method::DELETE, &format!("/v1/batch/{}", id(&old)), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = server
        .call(Method::GET, &format!("/v1/batch/{}", id(&old)), None)
        .await;
    assert_eq!(status, 404);
}
