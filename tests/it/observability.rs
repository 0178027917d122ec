//! `/metrics` and the request log lines, against the real binary, model and databases.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::{self, Backend, Server};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::Connection;

const LABELS: [&str; 3] = ["billing", "technical_issue", "feature_request"];

/// One sample of the text exposition: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Every sample line of a Prometheus text exposition (comments skipped).
fn parse_exposition(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}').expect("closing brace")),
                None => (series, ""),
            };
            Sample {
                name: name.to_string(),
                labels: parse_labels(labels),
                value: value
                    .parse()
                    .unwrap_or_else(|_| panic!("value of {line:?}")),
            }
        })
        .collect()
}

/// `key="value",...` with `\"` and `\\` escapes in values.
fn parse_labels(mut rest: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label key");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("closing quote") {
                (_, '\\') => value.push(chars.next().expect("escaped char").1),
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.to_string(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    labels
}

/// The value of the sample `name` with exactly these labels.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == wanted)
        .map(|s| s.value)
}

/// Scrapes `{base}/metrics`, checking the status and content type.
async fn scrape(server: &Server, base: &str) -> (String, Vec<Sample>) {
    let resp = server
        .client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = resp.text().await.expect("metrics body");
    let samples = parse_exposition(&text);
    (text, samples)
}

/// The `+Inf`-ordered buckets of a histogram series never decrease and end at its count.
fn assert_histogram(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let count = value(samples, &format!("{name}_count"), labels)
        .unwrap_or_else(|| panic!("{name}_count{labels:?}"));
    let mut buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.name == format!("{name}_bucket"))
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| (s.labels["le"].parse::<f64>().expect("le"), s.value))
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(
        buckets.len() > 2,
        "{name} has explicit buckets: {buckets:?}"
    );
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, count));
    count
}

/// The value of bucket `le` of a histogram without labels.
fn bucket(samples: &[Sample], name: &str, le: &str) -> f64 {
    value(samples, &format!("{name}_bucket"), &[("le", le)])
        .unwrap_or_else(|| panic!("{name} bucket {le}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn http_and_inference_metrics() {
    let server = Server::start(Backend::Sqlite).await;
    // The first call embeds the label sentences too; they are cached afterwards.
    let (status, answer) = server
        .post(
            "/v1/classify",
            &json!({"text": "I was charged twice this month", "labels": LABELS}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = server
        .post("/v1/classify", &json!({"labels": LABELS}))
        .await;
    assert_eq!(status, 422, "{answer}");
    for id in ["job_probe0000000000000001", "job_probe0000000000000002"] {
        let (status, _) = server
            .call(Method::GET, &format!("/v1/batch/{id}"), None)
            .await;
        assert_eq!(status, 404);
    }
    let (_, before) = scrape(&server, &server.base).await;

    // Five texts of one length: one ONNX run of five, and nothing else (labels cached).
    let texts: Vec<String> = (1..=5)
        .map(|n| format!("Please refund the duplicate charge on invoice {n}"))
        .collect();
    let (status, answer) = server
        .post("/v1/classify", &json!({"texts": texts, "labels": LABELS}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let (text, after) = scrape(&server, &server.base).await;

    let requests = "zeroshot_http_requests_total";
    let classify = [("route", "/v1/classify"), ("method", "POST")];
    let with_status = |status| {
        let mut labels = classify.to_vec();
        labels.push(("status", status));
        labels
    };
    assert_eq!(value(&after, requests, &with_status("200")), Some(2.0));
    assert_eq!(value(&after, requests, &with_status("422")), Some(1.0));
    assert_eq!(
        value(
            &after,
            requests,
            &[
                ("route", "/v1/batch/{id}"),
                ("method", "GET"),
                ("status", "404")
            ]
        ),
        Some(2.0),
        "ids are not labels; the route template is"
    );
    assert!(!text.contains("probe000"), "a raw path leaked into labels");
    for sample in after.iter().filter(|s| s.name == requests) {
        let route = &sample.labels["route"];
        assert!(route == "unmatched" || route.starts_with('/'), "{route}");
    }
    let latency = "zeroshot_http_request_duration_seconds";
    assert_eq!(assert_histogram(&after, latency, &classify), 3.0);
    assert!(text.contains(&format!("# TYPE {requests} counter")));
    assert!(text.contains(&format!("# TYPE {latency} histogram")));

    let texts_hist = "zeroshot_inference_run_texts";
    let delta = |samples_name: &str| {
        value(&after, samples_name, &[]).unwrap() - value(&before, samples_name, &[]).unwrap()
    };
    assert_histogram(&after, texts_hist, &[]);
    assert_eq!(delta(&format!("{texts_hist}_count")), 1.0, "one ONNX run");
    assert_eq!(delta(&format!("{texts_hist}_sum")), 5.0, "of five texts");
    let in_4_to_8 =
        |samples: &[Sample]| bucket(samples, texts_hist, "8") - bucket(samples, texts_hist, "4");
    assert_eq!(in_4_to_8(&after) - in_4_to_8(&before), 1.0);
    let duration = "zeroshot_inference_duration_seconds";
    assert_histogram(&after, duration, &[]);
    assert_eq!(delta(&format!("{duration}_count")), 1.0);
    let tokens = "zeroshot_tokens_embedded_total";
    assert_eq!(
        delta(tokens),
        answer["tokens"].as_f64().unwrap(),
        "tokens embedded are the texts' tokens"
    );
    assert!(value(&before, tokens, &[]).unwrap() > 0.0);
    assert_eq!(
        value(&after, "zeroshot_inference_queue_depth", &[]),
        Some(0.0),
        "every queued request was taken"
    );
}

/// A batch job to completion moves the line and job counts; another job stays pending.
async fn batch_job_metrics(backend: Backend) {
    let server = Server::start(backend).await;
    let (status, job) = server.post("/v1/batch", &json!({"labels": LABELS})).await;
    assert_eq!(status, 201, "{job}");
    let (status, pending) = server.post("/v1/batch", &json!({"labels": LABELS})).await;
    assert_eq!(status, 201, "{pending}");
    let id = job["job_id"].as_str().unwrap();
    let mut input = String::new();
    for i in 0..7 {
        input.push_str(
            &json!({"id": format!("t{i}"), "text": format!("The app crashes on start ({i})")})
                .to_string(),
        );
        input.push('\n');
    }
    input.push_str("{\"id\": \"no text\"}\n");
    assert_eq!(server.upload(&job, input.into_bytes()).await / 100, 2);
    let (status, started) = server
        .call(Method::POST, &format!("/v1/batch/{id}/start"), None)
        .await;
    assert_eq!(status, 202, "{started}");
    let done = server
        .wait_for_job(id, "completed", Duration::from_secs(120))
        .await;
    assert_eq!(done["requests_completed"], 7);
    assert_eq!(done["requests_failed"], 1);

    let (_, samples) = scrape(&server, &server.base).await;
    let lines = "zeroshot_batch_lines_scored_total";
    assert_eq!(value(&samples, lines, &[("outcome", "ok")]), Some(7.0));
    assert_eq!(value(&samples, lines, &[("outcome", "error")]), Some(1.0));
    let jobs = "zeroshot_batch_jobs";
    for (state, count) in [
        ("completed", 1.0),
        ("pending", 1.0),
        ("processing", 0.0),
        ("failed", 0.0),
    ] {
        assert_eq!(
            value(&samples, jobs, &[("status", state)]),
            Some(count),
            "{state}"
        );
    }
    let resumes = "zeroshot_batch_job_resumes_total";
    assert_eq!(
        value(&samples, resumes, &[]),
        Some(0.0),
        "a start is no resume"
    );
    assert!(value(&samples, "zeroshot_batch_lease_renewals_total", &[]).is_some());

    // As if another worker had held the job from the start and vanished: its lease
    // expired, nothing checkpointed. This server's worker takes it over.
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&server.database_url)
        .await
        .expect("connect to the test database");
    sqlx::query("UPDATE batch_jobs SET status = 'processing', completed_at = NULL WHERE id = $1")
        .bind(id)
        .execute(&mut db)
        .await
        .expect("reopen the job");
    sqlx::query(
        "UPDATE batch_shards SET completed_at = NULL, lease_owner = 'gone', lease_expires_at = 1, \
         cp_input_offset = start_offset, cp_line = start_line, cp_completed = 0, cp_failed = 0, \
         cp_tokens = 0, cp_output_state = NULL, cp_errors_state = NULL, cp_errors_pending = NULL \
         WHERE job_id = $1",
    )
    .bind(id)
    .execute(&mut db)
    .await
    .expect("abandon its shard");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, samples) = scrape(&server, &server.base).await;
        if value(&samples, jobs, &[("status", "completed")]) == Some(1.0)
            && value(&samples, lines, &[("outcome", "ok")]) == Some(14.0)
        {
            assert_eq!(value(&samples, resumes, &[]), Some(1.0));
            assert_eq!(value(&samples, lines, &[("outcome", "error")]), Some(2.0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned job was not resumed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

on_both_databases!(batch_job_metrics);

#[tokio::test(flavor = "multi_thread")]
async fn metrics_addr_moves_metrics_to_their_own_listener() {
    let database_url = common::fresh_database(Backend::Sqlite).await;
    let server = Server::start_with(&database_url, &["--metrics-addr", "127.0.0.1:0"]).await;
    let metrics_base = server
        .startup
        .iter()
        .find_map(|line| line.strip_prefix("metrics on "))
        .and_then(|url| url.strip_suffix("/metrics"))
        .expect("the metrics address is printed")
        .to_string();
    assert_ne!(metrics_base, server.base);

    let resp = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "not_found");

    let (_, samples) = scrape(&server, &metrics_base).await;
    assert_eq!(
        value(
            &samples,
            "zeroshot_http_requests_total",
            &[("route", "/metrics"), ("method", "GET"), ("status", "404")]
        ),
        Some(1.0),
        "the main listener's refusal is counted; the metrics listener's own scrapes are not"
    );
    let resp = server
        .client
        .get(format!("{metrics_base}/v1/classify"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        404,
        "the metrics listener serves nothing else"
    );
}

/// Waits until the captured logs hold a line containing `needle`, then a little longer
/// (a duplicate would show), and returns every such line.
async fn log_lines_with(server: &Server, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let matching = || -> Vec<String> {
        server
            .logs()
            .into_iter()
            .filter(|line| line.contains(needle))
            .collect()
    };
    while matching().is_empty() {
        assert!(Instant::now() < deadline, "no log line with {needle}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    matching()
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_request_id_account_route_status_and_latency() {
    let database_url = common::fresh_database(Backend::Sqlite).await;
    let server = Server::start_capturing_logs(&database_url, &["--log-format", "json"]).await;
    let keys = server.cli(&["keys", "list"]);
    assert!(keys.status.success());
    let keys: Value = serde_json::from_slice(&keys.stdout).unwrap();
    let account_id = keys[0]["account_id"].as_str().unwrap().to_string();
    assert!(account_id.starts_with("acct_"));

    let request_id = format!("obs-{}", uuid::Uuid::new_v4().simple());
    let resp = server
        .client
        .post(server.url("/v1/classify"))
        .bearer_auth(&server.key)
        .header("x-request-id", &request_id)
        .json(&json!({"text": "The app crashes on start", "labels": LABELS}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], request_id.as_str());

    let lines = log_lines_with(&server, &request_id).await;
    assert_eq!(lines.len(), 1, "one line per request: {lines:#?}");
    let line: Value = serde_json::from_str(&lines[0]).expect("a JSON log line");
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert!(line["latency_ms"].as_f64().unwrap() > 0.0, "{line}");
    let span = &line["span"];
    assert_eq!(span["request_id"], request_id.as_str(), "{line}");
    assert_eq!(span["account_id"], account_id.as_str(), "{line}");
    assert_eq!(span["route"], "/v1/classify", "{line}");
    assert_eq!(span["method"], "POST", "{line}");

    // Without a valid key there is no account; the line is there all the same.
    let anonymous = format!("obs-{}", uuid::Uuid::new_v4().simple());
    let resp = server
        .client
        .get(server.url("/v1/batch/job_x"))
        .bearer_auth("zs_not_a_key")
        .header("x-request-id", &anonymous)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let lines = log_lines_with(&server, &anonymous).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(line["status"], 401, "{line}");
    assert_eq!(line["span"]["route"], "/v1/batch/{id}", "{line}");
    assert_eq!(line["span"]["method"], "GET", "{line}");
    assert!(line["span"].get("account_id").is_none(), "{line}");

    // The flag applies to every log line, the startup ones included.
    let logs = server.logs();
    assert!(logs.iter().any(|l| l.contains("model loaded")), "{logs:#?}");
    for log in &logs {
        assert!(
            serde_json::from_str::<Value>(log).is_ok(),
            "not JSON: {log}"
        );
    }
}

/// Text logs written to a pipe (as to a file or a collector) carry no ANSI colour codes;
/// only a terminal gets colours. The server's stderr is a pipe here.
#[tokio::test(flavor = "multi_thread")]
async fn text_logs_to_a_pipe_have_no_colour_codes() {
    let database_url = common::fresh_database(Backend::Sqlite).await;
    let server = Server::start_capturing_logs(&database_url, &["--log-format", "text"]).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !server
        .logs()
        .iter()
        .any(|line| line.contains("model loaded; ready"))
    {
        assert!(
            Instant::now() < deadline,
            "no ready line: {:?}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = server.logs();
    assert!(logs.iter().any(|line| line.contains(" INFO ")), "{logs:?}");
    let coloured: Vec<&String> = logs.iter().filter(|line| line.contains('\u{1b}')).collect();
    assert!(
        coloured.is_empty(),
        "colour codes in piped logs: {coloured:?}"
    );
}
