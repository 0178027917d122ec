//! Batch jobs end to end against the real binary and model: local storage + SQLite and
//! S3 (SeaweedFS) + Postgres, uploads through the signed multipart POST forms.

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

/// Where the server keeps batch files.
#[derive(Clone, Copy, Debug)]
enum Store {
    Local,
    S3,
}

/// Flags for a server on the given store; S3 gets a bucket of its own.
fn store_flags(store: Store) -> Vec<String> {
    match store {
        Store::Local => Vec::new(),
        Store::S3 => common::s3_server_flags("zs-batch"),
    }
}

async fn start(backend: Backend, store: Store, extra: &[&str]) -> Server {
    let mut flags = store_flags(store);
    flags.extend(extra.iter().map(|s| s.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Server::start_with(&common::fresh_database(backend).await, &flags).await
}

async fn create_job(server: &Server, body: &Value) -> Value {
    let (status, job) = server.post("/v1/batch", body).await;
    assert_eq!(status, 201, "{job}");
    job
}

/// `n` ticket lines; every tenth is malformed in a different way.
fn input_with_errors(n: usize) -> (Vec<u8>, usize) {
    let mut out = String::new();
    let mut bad = 0;
    for i in 0..n {
        let line = match i % 10 {
            9 => {
                bad += 1;
                match (i / 10) % 5 {
                    0 => "{not json".to_string(),
                    1 => json!({"id": format!("t{i}")}).to_string(),
                    2 => json!({"text": 42, "id": format!("t{i}")}).to_string(),
                    3 => json!({"text": "   ", "id": format!("t{i}")}).to_string(),
                    _ => "[\"an array\"]".to_string(),
                }
            }
            _ => json!({"text": format!("{} (#{i})", TICKETS[i % 3]), "id": format!("t{i}")})
                .to_string(),
        };
        out.push_str(&line);
        out.push('\n');
        if i % 50 == 0 {
            out.push('\n'); // blank lines are skipped
        }
    }
    (out.into_bytes(), bad)
}

async fn full_lifecycle(backend: Backend, store: Store) {
    let server = start(backend, store, &[]).await;
    let job = create_job(
        &server,
        &json!({"labels": LABELS, "metadata": {"team": "support"}, "mode": "single"}),
    )
    .await;
    let id = job["job_id"].as_str().unwrap().to_string();
    assert_eq!(job["status"], "pending");
    assert!(job["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(job["metadata"]["team"], "support");

    let (status, early) = server
        .call(Method::GET, &format!("/v1/batch/{id}/results"), None)
        .await;
    assert_eq!(status, 409, "results before completion: {early}");
    let (status, not_uploaded) = server
        .call(Method::POST, &format!("/v1/batch/{id}/start"), None)
        .await;
    assert_eq!(status, 422, "start before upload: {not_uploaded}");

    let (input, bad) = input_with_errors(300);
    assert_eq!(server.upload(&job, input).await / 100, 2);
    let (status, started) = server
        .call(Method::POST, &format!("/v1/batch/{id}/start"), None)
        .await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["status"], "processing");
    assert!(started["estimated_tokens"].as_i64().unwrap() > 0);
    assert!(started["actual_tokens"].is_null());

    let done = server
        .wait_for_job(&id, "completed", Duration::from_secs(120))
        .await;
    assert_eq!(done["requests_total"], 300);
    assert_eq!(done["requests_completed"], 300 - bad as i64);
    assert_eq!(done["requests_failed"], bad as i64);
    assert_eq!(done["progress"]["percent"], 100.0);
    assert!(done["actual_tokens"].as_i64().unwrap() > 0);
    assert!(done["completed_at"].is_string());

    let rows = server.download_results(&id).await;
    assert_eq!(rows.len(), 300, "one row per non-blank line");
    let mut previous_line = 0;
    let mut tokens = 0;
    for (i, row) in rows.iter().enumerate() {
        let line = row["line"].as_i64().unwrap();
        assert!(line > previous_line, "rows in input order");
        previous_line = line;
        if i % 10 == 9 {
            let code = row["error"]["code"].as_str().unwrap();
            let expected = [
                "invalid_json",
                "missing_text",
                "text_not_string",
                "empty_text",
                "invalid_json",
            ][(i / 10) % 5];
            assert_eq!(code, expected, "{row}");
        } else {
            assert_eq!(row["id"], format!("t{i}"));
            assert_eq!(row["label"], LABELS[i % 3], "{row}");
            assert_eq!(row["scores"].as_object().unwrap().len(), 3);
            tokens += row["tokens"].as_i64().unwrap();
        }
    }
    assert_eq!(done["actual_tokens"].as_i64().unwrap(), tokens);

    // The error rows again on their own, in the same order.
    let (_, link) = server
        .call(Method::GET, &format!("/v1/batch/{id}/results"), None)
        .await;
    assert_eq!(link["errors"], bad as i64);
    let errors = server
        .download_rows(link["errors_url"].as_str().unwrap())
        .await;
    let error_rows: Vec<Value> = rows
        .iter()
        .filter(|row| row.get("error").is_some())
        .cloned()
        .collect();
    assert_eq!(errors, error_rows);

    // Completed jobs do not start again; other accounts see nothing.
    let (status, _) = server
        .call(Method::POST, &format!("/v1/batch/{id}/start"), None)
        .await;
    assert_eq!(status, 409);
    let other = server.cli(&["keys", "create", "--account", "other"]);
    let other: Value = serde_json::from_slice(&other.stdout).unwrap();
    let other_key = other["secret"].as_str().unwrap();
    for (method, path) in [
        (Method::GET, format!("/v1/batch/{id}")),
        (Method::GET, format!("/v1/batch/{id}/results")),
        (Method::POST, format!("/v1/batch/{id}/start")),
        (Method::DELETE, format!("/v1/batch/{id}")),
    ] {
        let (status, _) = server.call_as(other_key, method, &path, None).await;
        assert_eq!(status, 404, "{path} for another account");
    }
    let (_, listed) = server
        .call_as(other_key, Method::GET, "/v1/batch", None)
        .await;
    assert_eq!(listed["data"], json!([]));

    // Listing, newest first, paginated.
    let second = create_job(&server, &json!({"labels": LABELS})).await;
    let (_, page) = server.call(Method::GET, "/v1/batch?limit=1", None).await;
    assert_eq!(page["data"][0]["job_id"], second["job_id"]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page) = server
        .call(
            Method::GET,
            &format!("/v1/batch?limit=1&after={cursor}"),
            None,
        )
        .await;
    assert_eq!(page["data"][0]["job_id"], json!(id));
    assert!(page["next_cursor"].is_null());

    // Delete removes the job and its files.
    let (_, link) = server
        .call(Method::GET, &format!("/v1/batch/{id}/results"), None)
        .await;
    let (status, _) = server
        .call(Method::DELETE, &format!("/v1/batch/{id}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = server
        .call(Method::GET, &format!("/v1/batch/{id}"), None)
        .await;
    assert_eq!(status, 404);
    for url in [&link["url"], &link["errors_url"]] {
        let gone = server
            .client
            .get(url.as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert!(
            gone.status().is_client_error(),
            "results file deleted: {}",
            gone.status()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_local_storage_sqlite() {
    full_lifecycle(Backend::Sqlite, Store::Local).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_s3_postgres() {
    full_lifecycle(Backend::Postgres, Store::S3).await;
}

async fn one_active_job(backend: Backend, store: Store) {
    let server = start(backend, store, &[]).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let job = create_job(&server, &json!({"labels": LABELS})).await;
        let lines: String = (0..2000)
            .map(|i| format!("{{\"text\": \"{} {i}\"}}\n", TICKETS[i % 3]))
            .collect();
        assert_eq!(server.upload(&job, lines.into_bytes()).await / 100, 2);
        ids.push(job["job_id"].as_str().unwrap().to_string());
    }
    let calls = (0..50).map(|i| {
        let path = format!("/v1/batch/{}/start", ids[i % 2]);
        let server = &server;
        async move { server.call(Method::POST, &path, None).await.0 }
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert_eq!(
        statuses.iter().filter(|&&s| s == 202).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|&s| s == 202 || s == 409),
        "{statuses:?}"
    );
    // Deleting the processing one is refused.
    let (_, first) = server
        .call(Method::GET, &format!("/v1/batch/{}", ids[0]), None)
        .await;
    let processing = if first["status"] == "processing" {
        &ids[0]
    } else {
        &ids[1]
    };
    let (status, _) = server
        .call(Method::DELETE, &format!("/v1/batch/{processing}"), None)
        .await;
    assert_eq!(status, 409);
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_starts_one_wins_sqlite() {
    one_active_job(Backend::Sqlite, Store::Local).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_starts_one_wins_postgres() {
    one_active_job(Backend::Postgres, Store::S3).await;
}

async fn resumes_after_kill(backend: Backend, store: Store) {
    let database_url = common::fresh_database(backend).await;
    let data_dir = common::temp_dir();
    let mut flags = store_flags(store);
    flags.extend([
        "--batch-lease-secs".into(),
        "2".into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
    ]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::start_with(&database_url, &flags).await;
    let key = server.key.clone();

    // stackoverflow's dev set ten times over (varied texts, so adaptation applies and
    // the kill lands while scoring with adapted vectors). 40 labels make rows of
    // about 1.2 kB, so S3's 5 MiB parts (one checkpoint each) come every ~4,500 lines
    // and the kill lands after at least one checkpoint.
    let texts = stackoverflow_dev_texts();
    let mut labels = stackoverflow_labels();
    labels.extend((0..20).map(|i| format!("unrelated_topic_{i}")));
    let spec = json!({"labels": labels});
    let job = create_job(&server, &spec).await;
    let id = job["job_id"].as_str().unwrap().to_string();
    let n = 20_000;
    let kill_after = match store {
        Store::Local => 1_000,
        Store::S3 => 6_000,
    };
    // Every 997th line is bad: its error row must also be in the errors file once,
    // though (on S3) error rows wait in the checkpoint until they fill a part.
    let lines: String = (0..n)
        .map(|i| match i % 997 {
            996 => "{not json\n".to_string(),
            _ => format!(
                "{}\n",
                json!({"text": texts[i % texts.len()], "id": i.to_string()})
            ),
        })
        .collect();
    let bad = n / 997;
    assert_eq!(
        server.upload(&job, lines.clone().into_bytes()).await / 100,
        2
    );
    let (status, _) = server
        .call(Method::POST, &format!("/v1/batch/{id}/start"), None)
        .await;
    assert_eq!(status, 202);
    // Let it write a few checkpoints, then kill -9 (the first pass, sampling and
    // fitting come before any line is scored).
    server.wait_for_progress(&id, kill_after).await;
    drop(server); // SIGKILL

    let mut restarted = Server::start_with(&database_url, &flags).await;
    restarted.key = key;
    let done = restarted
        .wait_for_job(&id, "completed", Duration::from_secs(300))
        .await;
    assert_eq!(done["requests_completed"], (n - bad) as i64);
    assert_eq!(done["requests_failed"], bad as i64);
    let rows = restarted.download_results(&id).await;
    assert_eq!(rows.len(), n, "each line exactly once");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(
            row["line"],
            (i + 1) as i64,
            "in order, none lost or repeated"
        );
        match i % 997 {
            996 => assert_eq!(row["error"]["code"], "invalid_json"),
            _ => assert_eq!(row["id"], i.to_string()),
        }
    }
    let (_, link) = restarted
        .call(Method::GET, &format!("/v1/batch/{id}/results"), None)
        .await;
    let errors = restarted
        .download_rows(link["errors_url"].as_str().unwrap())
        .await;
    let lines_with_errors: Vec<i64> = errors
        .iter()
        .map(|row| row["line"].as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = (1..=n as i64).filter(|line| line % 997 == 0).collect();
    assert_eq!(lines_with_errors, expected, "each error row once, in order");
    let adaptation = &done["adaptation"];
    assert_eq!(adaptation["applied"], true, "{done}");
    assert_eq!(adaptation["sample_lines"], 2_000, "a tenth of the lines");
    assert_eq!(adaptation["rounds"], 10);
    let per_label = adaptation["texts_per_label"].as_object().unwrap();
    assert_eq!(per_label.len(), 40);
    assert_eq!(
        per_label.values().map(|v| v.as_i64().unwrap()).sum::<i64>(),
        2_000
    );

    // The same file and spec, uninterrupted: the very same rows (the resumed job
    // scored with the vectors stored before the kill, and fitting is deterministic).
    if matches!(store, Store::Local) {
        let again = create_job(&restarted, &spec).await;
        let again_id = again["job_id"].as_str().unwrap().to_string();
        assert_eq!(restarted.upload(&again, lines.into_bytes()).await / 100, 2);
        let (status, _) = restarted
            .call(Method::POST, &format!("/v1/batch/{again_id}/start"), None)
            .await;
        assert_eq!(status, 202);
        restarted
            .wait_for_job(&again_id, "completed", Duration::from_secs(300))
            .await;
        assert!(
            restarted.download_results(&again_id).await == rows,
            "an uninterrupted run writes the same rows"
        );
    }
}

fn stackoverflow_dev() -> Vec<zeroshot::cli::eval::Example> {
    let dir = std::env::var("ZEROSHOT_DATASETS_DIR")
        .expect("ZEROSHOT_DATASETS_DIR (scripts/setup.py --datasets; scripts/test.sh sets it)");
    zeroshot::cli::eval::read_tsv(&std::path::Path::new(&dir).join("stackoverflow/dev.tsv"))
        .expect("stackoverflow dev set")
}

fn stackoverflow_dev_texts() -> Vec<String> {
    stackoverflow_dev().into_iter().map(|e| e.text).collect()
}

fn stackoverflow_labels() -> Vec<String> {
    let mut labels: Vec<String> = stackoverflow_dev().into_iter().map(|e| e.label).collect();
    labels.sort();
    labels.dedup();
    labels
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_and_resume_local_sqlite() {
    resumes_after_kill(Backend::Sqlite, Store::Local).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_and_resume_s3_postgres() {
    resumes_after_kill(Backend::Postgres, Store::S3).await;
}

/// Runs one job over `lines` to completion; returns its final status and rows.
async fn run_job(server: &Server, spec: &Value, lines: &[u8]) -> (Value, Vec<Value>) {
    let job = create_job(server, spec).await;
    let id = job["job_id"].as_str().unwrap().to_string();
    assert_eq!(server.upload(&job, lines.to_vec()).await / 100, 2);
    let (status, started) = server
        .call(Method::POST, &format!("/v1/batch/{id}/start"), None)
        .await;
    assert_eq!(status, 202, "{started}");
    let done = server
        .wait_for_job(&id, "completed", Duration::from_secs(120))
        .await;
    let rows = server.download_results(&id).await;
    (done, rows)
}

/// `adapt` on jobs and saved classifiers: on by default, reported in the status; off,
/// a job scores exactly as `/v1/classify` does; a classifier's choice is kept unless
/// the job overrides it.
#[tokio::test(flavor = "multi_thread")]
async fn adapt_on_and_off() {
    let server = start(Backend::Sqlite, Store::Local, &[]).await;
    let texts = stackoverflow_dev_texts();
    let labels = stackoverflow_labels();
    let lines: String = texts
        .iter()
        .step_by(5)
        .take(300)
        .map(|t| format!("{}\n", json!({"text": t})))
        .collect();

    let (on, adapted_rows) = run_job(&server, &json!({"labels": labels}), lines.as_bytes()).await;
    assert_eq!(on["adapt"], true);
    assert_eq!(on["adaptation"]["applied"], true, "{on}");
    assert_eq!(
        on["adaptation"]["sample_lines"], 300,
        "small files are sampled whole"
    );

    let (off, rows) = run_job(
        &server,
        &json!({"labels": labels, "adapt": false}),
        lines.as_bytes(),
    )
    .await;
    assert_eq!(off["adapt"], false);
    assert_eq!(off["adaptation"]["applied"], false);
    assert_eq!(off["adaptation"]["reason"], "adapt is false");
    assert_ne!(rows, adapted_rows, "adaptation changes scores");
    for (row, text) in rows.iter().zip(texts.iter().step_by(5)).take(5) {
        let (status, sync) = server
            .post("/v1/classify", &json!({"text": text, "labels": labels}))
            .await;
        assert_eq!(status, 200, "{sync}");
        assert_eq!(row["label"], sync["label"]);
        let (a, b) = (
            row["confidence"].as_f64().unwrap(),
            sync["confidence"].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-6, "{a} against {b}");
    }

    let (status, saved) = server
        .post(
            "/v1/classifiers",
            &json!({"name": "so", "labels": labels, "adapt": false}),
        )
        .await;
    assert_eq!(status, 201, "{saved}");
    assert_eq!(saved["adapt"], false);
    let pinned = create_job(&server, &json!({"classifier": "so"})).await;
    assert_eq!(pinned["adapt"], false);
    let overridden = create_job(&server, &json!({"classifier": "so", "adapt": true})).await;
    assert_eq!(overridden["adapt"], true);
    let (status, refused) = server
        .post(
            "/v1/classify",
            &json!({"text": "x", "labels": labels, "adapt": true}),
        )
        .await;
    assert_eq!(status, 400, "sync classification stays per text: {refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_specs_and_every_line_failing() {
    let server = start(Backend::Sqlite, Store::Local, &[]).await;
    let cases = [
        (json!({}), 422, Some("labels")),
        (json!({"labels": ["a", "a"]}), 422, Some("labels[1]")),
        (
            json!({"labels": ["a"], "threshold": 2}),
            422,
            Some("threshold"),
        ),
        (json!({"labels": ["a"], "text": "x"}), 400, Some("text")),
        (
            json!({"labels": ["a"], "metadata": {"k": 1}}),
            400,
            Some("metadata.k"),
        ),
        (
            json!({"labels": ["a"], "classifier": "c"}),
            400,
            Some("classifier"),
        ),
    ];
    for (body, status, param) in cases {
        let (got, answer) = server.post("/v1/batch", &body).await;
        assert_eq!(got, status, "{body} -> {answer}");
        assert_eq!(
            answer["error"]["param"].as_str(),
            param,
            "{body} -> {answer}"
        );
    }
    let (status, _) = server.call(Method::GET, "/v1/batch/batch_nope", None).await;
    assert_eq!(status, 404);

    let job = create_job(&server, &json!({"labels": LABELS})).await;
    let id = job["job_id"].as_str().unwrap();
    assert_eq!(
        server
            .upload(&job, b"{bad\n[1]\n{\"text\": 3}\n".to_vec())
            .await
            / 100,
        2
    );
    let (status, _) = server
        .call(Method::POST, &format!("/v1/batch/{id}/start"), None)
        .await;
    assert_eq!(status, 202);
    let failed = server
        .wait_for_job(id, "failed", Duration::from_secs(60))
        .await;
    assert_eq!(failed["requests_failed"], 3);
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("every line failed"),
        "{failed}"
    );
    // A failed job may start again (after a new upload it would see the new file).
    let (status, _) = server
        .call(Method::POST, &format!("/v1/batch/{id}/start"), None)
        .await;
    assert_eq!(status, 202);
}

#[tokio::test(flavor = "multi_thread")]
async fn local_upload_policy_is_enforced() {
    let server = start(
        Backend::Sqlite,
        Store::Local,
        &["--max-upload-bytes", "1000", "--upload-ttl-secs", "1"],
    )
    .await;
    let job = create_job(&server, &json!({"labels": LABELS})).await;
    let id = job["job_id"].as_str().unwrap();
    let line = b"{\"text\": \"hello\"}\n".to_vec();

    let mut tampered = job.clone();
    let policy = tampered["upload_fields"]["policy"]
        .as_str()
        .unwrap()
        .to_string();
    let decoded = String::from_utf8(base64_decode(&policy))
        .unwrap()
        .replace("1000", "999999");
    tampered["upload_fields"]["policy"] = json!(base64_encode(decoded.as_bytes()));
    assert_eq!(
        server.upload(&tampered, line.clone()).await,
        403,
        "tampered policy"
    );

    let mut wrong_key = job.clone();
    wrong_key["upload_fields"]["key"] = json!("inputs/someone-else.ndjson");
    assert_eq!(
        server.upload(&wrong_key, line.clone()).await,
        403,
        "wrong key"
    );
    assert_eq!(server.upload(&job, vec![b'x'; 1001]).await, 400, "oversize");
    assert_eq!(server.upload(&job, Vec::new()).await, 400, "empty");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(server.upload(&job, line).await, 403, "expired");

    // Nothing was stored for any of them.
    let (status, answer) = server
        .call(Method::POST, &format!("/v1/batch/{id}/start"), None)
        .await;
    assert_eq!(status, 422, "{answer}");
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
