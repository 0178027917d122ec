//! SIGTERM hands a batch job over: the stopping instance's worker gives the job back
//! at its next chunk boundary (as of its last checkpoint) instead of holding its lease
//! until it expires, so another instance resumes it at once. Two real instances on
//! Postgres sharing a local storage directory.

use std::time::{Duration, Instant};

use crate::common::{self, Backend, Server};
use serde_json::json;

const LINES: usize = 20_000;

#[tokio::test]
async fn sigterm_hands_the_job_to_another_instance() {
    let database_url = common::fresh_database(Backend::Postgres).await;
    let data_dir = common::temp_dir().display().to_string();
    // The default 30 s lease: without the handover the other instance would wait it out.
    let flags = ["--data-dir", data_dir.as_str()];
    let first = Server::start_with(&database_url, &flags).await;

    let labels = ["billing", "technical_issue", "feature_request"];
    let id = first
        .start_job(
            &json!({"labels": labels, "adapt": false}),
            common::ticket_lines(LINES),
        )
        .await;
    first.wait_for_progress(&id, 2_000).await;

    // The second instance starts while the first holds the job, so it only waits.
    let mut second = Server::start_with(&database_url, &flags).await;
    second.key = first.key.clone();
    assert_eq!(second.metric("zeroshot_batch_job_resumes_total").await, 0.0);
    let status = first.terminate();
    assert!(status.success(), "a clean exit on SIGTERM: {status}");
    let stopped = Instant::now();
    while second.metric("zeroshot_batch_job_resumes_total").await < 1.0 {
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
    common::assert_every_line_once(&second.download_results(&id).await, LINES);
}
