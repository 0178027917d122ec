//! One job across shards and instances: the input is cut into byte-range shards at
//! line boundaries, any instance's worker scores any shard, and the parts are joined
//! in input order. Real servers: the model, SQLite with local storage, and two
//! instances on PostgreSQL with SeaweedFS, one of them killed (-9) mid-shard.

use std::time::{Duration, Instant};

use crate::common::{self, Backend, Server};
use reqwest::Method;
use serde_json::{json, Value};

const LABELS: [&str; 3] = ["billing", "technical_issue", "feature_request"];
const LINES_OK: &str = "zeroshot_batch_lines_scored_total{outcome=\"ok\"}";

/// Ticket lines with a line that is not JSON after every 1,000th: error rows that must
/// land in their place in the results and, alone, in the errors object.
fn lines_with_errors(lines: usize) -> Vec<u8> {
    let mut input = Vec::new();
    for (i, line) in common::ticket_lines(lines)
        .split_inclusive(|&b| b == b'\n')
        .enumerate()
    {
        input.extend_from_slice(line);
        if i % 1_000 == 999 {
            input.extend_from_slice(b"not json\n");
        }
    }
    input
}

/// The ticket rows in order, each once, and the error rows where the bad lines were.
fn assert_rows(rows: &[Value], lines: usize) {
    let (errors, tickets): (Vec<&Value>, Vec<&Value>) =
        rows.iter().partition(|row| row.get("error").is_some());
    assert_eq!(tickets.len(), lines, "each line exactly once");
    for (i, row) in tickets.iter().enumerate() {
        // Ticket i is preceded by i / 1000 bad lines.
        let line = (i + 1 + i / 1_000) as i64;
        assert_eq!(
            (&row["line"], &row["id"]),
            (&json!(line), &json!(i)),
            "{row}"
        );
        assert!(row["label"].is_string(), "{row}");
    }
    assert_eq!(errors.len(), lines / 1_000);
    for (k, error) in errors.iter().enumerate() {
        // Line numbers are global: the bad line after ticket 1000(k+1) is line 1001(k+1).
        assert_eq!(error["line"], 1_001 * (k as i64 + 1), "{error}");
    }
    let numbers: Vec<i64> = rows
        .iter()
        .map(|row| row["line"].as_i64().unwrap())
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "rows in input order"
    );
}

async fn error_rows(server: &Server, id: &str) -> Vec<Value> {
    let (status, links) = server
        .call(Method::GET, &format!("/v1/batch/{id}/results"), None)
        .await;
    assert_eq!(status, 200, "{links}");
    server
        .download_rows(links["errors_url"].as_str().unwrap())
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sharded_job_scores_as_one_shard_does() {
    // Three chunks (2,048 + 2,048 + 909 lines): the job of one shard scores two of them at once
    // (`--chunks-in-flight 2`, the GPU default), the sharded job one at a time.
    const LINES: usize = 5_000;
    let input = lines_with_errors(LINES);
    let config = json!({"labels": LABELS});

    let database_url = common::fresh_database(Backend::Sqlite).await;
    let whole = Server::start_with(&database_url, &["--chunks-in-flight", "2"]).await;
    let id = whole.start_job(&config, input.clone()).await;
    let one = whole
        .wait_for_job(&id, "completed", Duration::from_secs(300))
        .await;
    assert_eq!(
        one["shards"],
        json!({"total": 1, "pending": 0, "processing": 0, "completed": 1})
    );
    let expected = whole.download_results(&id).await;
    drop(whole);

    // About 40 KB a shard: 8 shards, cut wherever a line ends past each 40,000 bytes.
    let database_url = common::fresh_database(Backend::Sqlite).await;
    let sharded = Server::start_with(&database_url, &["--shard-bytes", "40000"]).await;
    let id = sharded.start_job(&config, input.clone()).await;
    let done = sharded
        .wait_for_job(&id, "completed", Duration::from_secs(300))
        .await;
    let total = input.len().div_ceil(40_000) as i64;
    assert_eq!(
        done["shards"],
        json!({"total": total, "pending": 0, "processing": 0, "completed": total})
    );
    assert_eq!(done["requests_total"], (LINES + LINES / 1_000) as i64);
    assert_eq!(done["requests_completed"], LINES as i64);
    assert_eq!(done["requests_failed"], (LINES / 1_000) as i64);
    assert_eq!(done["actual_tokens"], one["actual_tokens"]);
    assert_eq!(
        done["adaptation"], one["adaptation"],
        "fitted once, the same way"
    );

    let rows = sharded.download_results(&id).await;
    assert_rows(&rows, LINES);
    assert_eq!(error_rows(&sharded, &id).await.len(), LINES / 1_000);
    // The same labels as the job of one shard; scores equal but for float noise (texts
    // meet other texts in each model run).
    for (got, want) in rows.iter().zip(&expected) {
        assert_eq!(got["line"], want["line"]);
        assert_eq!(got["label"], want["label"], "{got} vs {want}");
        let (a, b) = (
            got["confidence"].as_f64().unwrap_or(0.0),
            want["confidence"].as_f64().unwrap_or(0.0),
        );
        assert!((a - b).abs() < 1e-3, "{got} vs {want}");
    }
    let parts: Vec<String> = walk(sharded.data_dir.as_ref().expect("local storage"))
        .into_iter()
        .filter(|path| path.contains("parts/"))
        .collect();
    assert!(parts.is_empty(), "assembled parts are deleted: {parts:?}");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path.display().to_string());
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_every_shard_and_keeps_what_was_scored() {
    const LINES: usize = 12_000;
    let database_url = common::fresh_database(Backend::Sqlite).await;
    let server = Server::start_with(&database_url, &["--shard-bytes", "100000"]).await;
    let id = server
        .start_job(
            &json!({"labels": LABELS, "adapt": false}),
            common::ticket_lines(LINES),
        )
        .await;
    server.wait_for_progress(&id, 1_000).await;
    let (status, body) = server
        .call(Method::POST, &format!("/v1/batch/{id}/cancel"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    let cancelled = server
        .wait_for_job(&id, "cancelled", Duration::from_secs(120))
        .await;
    let shards = &cancelled["shards"];
    assert!(shards["total"].as_i64().unwrap() >= 9, "{shards}");
    assert!(
        shards["pending"].as_i64().unwrap() > 0,
        "shards never begun: {shards}"
    );
    let rows = server.download_results(&id).await;
    let scored = cancelled["requests_completed"].as_i64().unwrap() as usize;
    assert_eq!(rows.len(), scored);
    assert!((1_000..LINES).contains(&scored), "{scored}");
    // The rows of the shards that began, in input order, from line 1.
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["line"], i as i64 + 1, "{row}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_share_a_job_and_one_killed_mid_shard_loses_nothing() {
    const LINES: usize = 16_000;
    let database_url = common::fresh_database(Backend::Postgres).await;
    let store = common::s3_server_flags("shards");
    let mut flags: Vec<&str> = store.iter().map(String::as_str).collect();
    // 16 shards; a killed instance's shard is taken over 3 s after its last renewal.
    flags.extend(["--shard-bytes", "80000", "--batch-lease-secs", "3"]);
    let first = Server::start_with(&database_url, &flags).await;
    let mut second = Server::start_with(&database_url, &flags).await;
    second.key = first.key.clone();

    let input = lines_with_errors(LINES);
    let id = first
        .start_job(&json!({"labels": LABELS}), input.clone())
        .await;
    // Both instances score shards of the one job at once.
    let started = Instant::now();
    loop {
        let (_, job) = first
            .call(Method::GET, &format!("/v1/batch/{id}"), None)
            .await;
        if first.metric(LINES_OK).await > 0.0 && second.metric(LINES_OK).await > 0.0 {
            assert_eq!(job["status"], "processing", "ended too soon: {job}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, shown) = second
        .call(Method::GET, &format!("/v1/batch/{id}"), None)
        .await;
    assert_eq!(
        shown["shards"]["total"],
        input.len().div_ceil(80_000) as i64
    );

    drop(first); // kill -9, mid-shard
    let done = second
        .wait_for_job(&id, "completed", Duration::from_secs(600))
        .await;
    assert!(second.metric("zeroshot_batch_job_resumes_total").await >= 1.0);
    assert_eq!(done["requests_completed"], LINES as i64);
    assert_eq!(done["requests_failed"], (LINES / 1_000) as i64);
    assert_rows(&second.download_results(&id).await, LINES);
    let errors = error_rows(&second, &id).await;
    assert_eq!(errors.len(), LINES / 1_000);
    assert!(errors.iter().all(|row| row.get("error").is_some()));
}
