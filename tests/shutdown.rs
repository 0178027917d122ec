//! SIGTERM hands a batch job over: the stopping instance's worker gives the job back
//! at its next chunk boundary (as of its last checkpoint) instead of holding its lease
//! until it expires, so another instance resumes it at once. Two real instances on
//! Postgres sharing a local storage directory.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, Server};
use reqwest::Method;
use serde_json::{json, Value};

const TICKETS: [&str; 3] = [
    "I was charged twice for my subscription this month",
    "The app crashes when I open the settings page",
    "Feature request: please add an option to export reports as CSV",
];
const LINES: usize = 20_000;

/// A counter's value in a Prometheus text exposition (0 when absent).
async fn counter(server: &Server, name: &str) -> f64 {
    let text = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn sigterm_hands_the_job_to_another_instance() {
    let database_url = common::fresh_database(Backend::Postgres).await;
    let data_dir = common::temp_dir().display().to_string();
    // The default 30 s lease: without the handover the other instance would wait it out.
    let flags = ["--data-dir", data_dir.as_str()];
    let first = Server::start_with(&database_url, &flags).await;

    let labels = ["billing", "technical_issue", "feature_request"];
    let (status, job) = first
        .post("/v1/batch", &json!({"labels": labels, "adapt": false}))
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["job_id"].as_str().unwrap().to_string();
    let input: String = (0..LINES)
        .map(|i| {
            format!(
                "{}\n",
                json!({"text": format!("{} (#{i})", TICKETS[i % 3]), "id": i})
            )
        })
        .collect();
    assert_eq!(first.upload(&job, input.into_bytes()).await / 100, 2);
    let (status, _) = first
        .call(Method::POST, &format!("/v1/batch/{id}/start"), None)
        .await;
    assert_eq!(status, 202);
    first.wait_for_progress(&id, 2_000).await;

    // The second instance starts while the first holds the job, so it only waits.
    let mut second = Server::start_with(&database_url, &flags).await;
    second.key = first.key.clone();
    assert_eq!(
        counter(&second, "zeroshot_batch_job_resumes_total").await,
        0.0
    );
    let status = first.terminate();
    assert!(status.success(), "a clean exit on SIGTERM: {status}");
    let stopped = Instant::now();
    while counter(&second, "zeroshot_batch_job_resumes_total").await < 1.0 {
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "the other instance resumes the job within 5 s of the first one stopping"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let done = second
        .wait_for_job(&id, "completed", Duration::from_secs(300))
        .await;
    assert_eq!(done["requests_completed"], LINES as i64);
    let rows: Vec<Value> = second.download_results(&id).await;
    assert_eq!(rows.len(), LINES, "each line exactly once");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(
            row["line"],
            (i + 1) as i64,
            "in order, none lost or repeated"
        );
        assert_eq!(row["id"], i as i64);
    }
}
