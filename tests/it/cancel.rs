//! Cancelling batch jobs against the real binary and model: a pending job at once; a
//! processing one at its next chunk, on the instance that holds it (two instances on
//! Postgres + S3), or by whichever instance takes it over after its worker died
//! (SQLite + local storage). What was scored before stays downloadable, exactly once
//! and in order; the counters match the rows; the account's slot is free again.

use std::time::Duration;

use crate::common::{self, Backend, Server};
use reqwest::Method;
use serde_json::{json, Value};

const LABELS: [&str; 3] = ["billing", "technical_issue", "feature_request"];
const TICKETS: [&str; 3] = [
    "I was charged twice for my subscription this month",
    "The app crashes when I open the settings page",
    "Feature request: please add an option to export reports as CSV",
];
/// Lines of the big input: far more than get scored before the cancel lands.
const LINES: usize = 30_000;

/// `LINES` ticket lines; every 100th is not JSON (an error row).
fn big_input() -> Vec<u8> {
    let mut out = String::new();
    for i in 0..LINES {
        if i % 100 == 99 {
            out.push_str("{not json\n");
        } else {
            let text = format!("{} (#{i})", TICKETS[i % 3]);
            out.push_str(&json!({"text": text, "id": i}).to_string());
            out.push('\n');
        }
    }
    out.into_bytes()
}

async fn call(server: &Server, method: Method, path: &str) -> (u16, Value) {
    server.call(method, path, None).await
}

/// Creates a job of `LABELS`, uploads `input` and starts it.
async fn started_job(server: &Server, input: Vec<u8>) -> String {
    let (status, job) = server
        .post("/v1/batch", &json!({"labels": LABELS, "adapt": false}))
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["job_id"].as_str().unwrap().to_string();
    assert_eq!(server.upload(&job, input).await / 100, 2);
    let (status, started) = call(server, Method::POST, &format!("/v1/batch/{id}/start")).await;
    assert_eq!(status, 202, "{started}");
    id
}

/// A cancelled job's downloads: lines 1..=n exactly once, in order, every 100th an
/// error row; the errors file holds exactly those error rows; the counters match.
async fn check_partial_results(server: &Server, id: &str, job: &Value) -> usize {
    let (status, link) = call(server, Method::GET, &format!("/v1/batch/{id}/results")).await;
    assert_eq!(status, 200, "{link}");
    let rows = server.download_rows(link["url"].as_str().unwrap()).await;
    let n = rows.len();
    assert!(n > 0 && n < LINES, "partial results: {n} rows");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(
            row["line"],
            (i + 1) as i64,
            "in order, none lost or repeated"
        );
        if i % 100 == 99 {
            assert_eq!(row["error"]["code"], "invalid_json", "{row}");
        } else {
            assert_eq!(row["id"], i as i64);
            assert!(row["label"].is_string(), "{row}");
        }
    }
    let failed = n / 100;
    assert_eq!(job["requests_completed"], (n - failed) as i64, "{job}");
    assert_eq!(job["requests_failed"], failed as i64, "{job}");
    assert_eq!(link["requests_completed"], (n - failed) as i64);
    assert_eq!(link["errors"], failed as i64);
    let errors = server
        .download_rows(link["errors_url"].as_str().unwrap())
        .await;
    let expected: Vec<&Value> = rows
        .iter()
        .filter(|row| row.get("error").is_some())
        .collect();
    assert_eq!(errors.iter().collect::<Vec<_>>(), expected);
    n
}

/// After a cancel the account may start another job, and the cancelled one deletes.
async fn slot_is_free_and_job_deletes(server: &Server, id: &str) {
    let other = started_job(server, b"{\"text\": \"refund please\"}\n".to_vec()).await;
    server
        .wait_for_job(&other, "completed", Duration::from_secs(120))
        .await;
    let (status, _) = call(server, Method::DELETE, &format!("/v1/batch/{id}")).await;
    assert_eq!(status, 204);
    let (status, _) = call(server, Method::GET, &format!("/v1/batch/{id}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn cancel_pending_processing_and_taken_over_sqlite_local() {
    let database_url = common::fresh_database(Backend::Sqlite).await;
    let data_dir = common::temp_dir().display().to_string();
    let flags = ["--batch-lease-secs", "2", "--data-dir", &data_dir];
    let server = Server::start_with(&database_url, &flags).await;

    // Pending: cancelled at once, for good; asking again changes nothing.
    let (_, pending) = server.post("/v1/batch", &json!({"labels": LABELS})).await;
    let id = pending["job_id"].as_str().unwrap();
    for _ in 0..2 {
        let (status, job) = call(&server, Method::POST, &format!("/v1/batch/{id}/cancel")).await;
        assert_eq!(status, 202, "{job}");
        assert_eq!(job["status"], "cancelled");
        assert!(job["completed_at"].is_string());
    }
    let (status, err) = call(&server, Method::POST, &format!("/v1/batch/{id}/start")).await;
    assert_eq!(
        (status, err["error"]["type"].as_str()),
        (409, Some("conflict"))
    );
    let (status, err) = call(&server, Method::GET, &format!("/v1/batch/{id}/results")).await;
    assert_eq!(status, 409);
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("before it started"));
    let (status, _) = call(&server, Method::POST, "/v1/batch/no-such-job/cancel").await;
    assert_eq!(status, 404);

    // Processing, on the instance holding it: cancelling, then cancelled at its next
    // chunk; DELETE waits for that.
    let id = started_job(&server, big_input()).await;
    server.wait_for_progress(&id, 2_000).await;
    let (status, job) = call(&server, Method::POST, &format!("/v1/batch/{id}/cancel")).await;
    assert_eq!(status, 202, "{job}");
    assert!(
        job["status"] == "cancelling" || job["status"] == "cancelled",
        "{job}"
    );
    if job["status"] == "cancelling" {
        let (status, _) = call(&server, Method::DELETE, &format!("/v1/batch/{id}")).await;
        assert_eq!(status, 409, "an active job is not deleted");
    }
    let job = server
        .wait_for_job(&id, "cancelled", Duration::from_secs(60))
        .await;
    assert!(job["error"].is_null(), "{job}");
    check_partial_results(&server, &id, &job).await;
    let (status, _) = call(&server, Method::POST, &format!("/v1/batch/{id}/cancel")).await;
    assert_eq!(status, 202, "cancelling a cancelled job is harmless");
    slot_is_free_and_job_deletes(&server, &id).await;

    // A completed job cannot be cancelled.
    let done = started_job(&server, b"{\"text\": \"my invoice is wrong\"}\n".to_vec()).await;
    server
        .wait_for_job(&done, "completed", Duration::from_secs(120))
        .await;
    let (status, _) = call(&server, Method::POST, &format!("/v1/batch/{done}/cancel")).await;
    assert_eq!(status, 409);

    // Its worker dies (kill -9); the cancel is asked of the next instance, whose worker
    // takes the job over once the lease expires and ends it from its last checkpoint.
    let id = started_job(&server, big_input()).await;
    server.wait_for_progress(&id, 2_000).await;
    let key = server.key.clone();
    drop(server); // SIGKILL
    let mut next = Server::start_with(&database_url, &flags).await;
    next.key = key;
    let (status, job) = call(&next, Method::POST, &format!("/v1/batch/{id}/cancel")).await;
    assert_eq!(status, 202, "{job}");
    let job = next
        .wait_for_job(&id, "cancelled", Duration::from_secs(60))
        .await;
    let n = check_partial_results(&next, &id, &job).await;
    assert!(
        n >= 2_000,
        "what was checkpointed before the kill is kept: {n}"
    );
}

#[tokio::test]
async fn cancel_on_another_instance_postgres_s3() {
    let database_url = common::fresh_database(Backend::Postgres).await;
    let s3 = common::s3_server_flags("zs-cancel");
    let flags: Vec<&str> = s3.iter().map(String::as_str).collect();
    let holder = Server::start_with(&database_url, &flags).await;
    let id = started_job(&holder, big_input()).await;
    holder.wait_for_progress(&id, 1_000).await;

    // The second instance starts once the first holds the job, so only the first
    // scores it; the cancel is asked of the second.
    let mut other = Server::start_with(&database_url, &flags).await;
    other.key = holder.key.clone();
    let (status, job) = call(&other, Method::POST, &format!("/v1/batch/{id}/cancel")).await;
    assert_eq!(status, 202, "{job}");
    let job = other
        .wait_for_job(&id, "cancelled", Duration::from_secs(60))
        .await;
    // Fewer rows than one 5 MiB part: the cancel wrote them as the last part.
    check_partial_results(&other, &id, &job).await;
    slot_is_free_and_job_deletes(&other, &id).await;
}
