//! Usage (`GET /v1/usage`, `zeroshot usage`) and per-account quotas (requests per
//! second, monthly tokens, `zeroshot accounts`) against the real binary on SQLite and
//! Postgres.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{self, Backend, Server};
use reqwest::Method;
use serde_json::{json, Value};
use zeroshot::clock::Day;
use zeroshot::db::Db;

on_both_databases!(
    classify_and_batch_usage_per_day,
    rate_limit_and_monthly_quota,
    resumed_job_counts_each_line_once
);

const LABELS: [&str; 3] = ["billing", "technical_issue", "feature_request"];
const TICKETS: [&str; 3] = [
    "I was charged twice for my subscription this month",
    "The app crashes when I open the settings page",
    "Feature request: please add an option to export reports as CSV",
];

/// A request's status, `Retry-After` and JSON body.
async fn send(
    server: &Server,
    key: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Option<u64>, Value) {
    let mut request = server
        .client
        .request(method, server.url(path))
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(body);
    }
    let resp = request.send().await.expect("request");
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().parse().expect("whole seconds"));
    let status = resp.status().as_u16();
    (
        status,
        retry_after,
        resp.json().await.unwrap_or(Value::Null),
    )
}

async fn usage(server: &Server, key: &str, query: &str) -> (u16, Value) {
    server
        .call_as(key, Method::GET, &format!("/v1/usage{query}"), None)
        .await
}

/// Creates a key (and its account) with the CLI; returns the secret.
fn new_key(server: &Server, account: &str) -> String {
    let created = server.cli(&["keys", "create", "--account", account]);
    assert!(created.status.success(), "{created:?}");
    serde_json::from_slice::<Value>(&created.stdout).unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `zeroshot accounts ARGS...` on the server's database; the account it prints.
fn accounts(server: &Server, args: &[&str]) -> Value {
    let mut all = vec!["accounts"];
    all.extend(args);
    let output = server.cli(&all);
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `n` ticket lines; `bad` of them (every tenth) are not JSON.
fn tickets(n: usize) -> (Vec<u8>, usize) {
    let mut out = String::new();
    let mut bad = 0;
    for i in 0..n {
        if i % 10 == 9 {
            bad += 1;
            out.push_str("{not json\n");
        } else {
            let text = format!("{} (#{i})", TICKETS[i % 3]);
            out.push_str(&format!("{}\n", json!({"text": text, "id": i.to_string()})));
        }
    }
    (out.into_bytes(), bad)
}

/// Creates a job (without adaptation, for speed) and uploads `input`; its id.
async fn upload_job(server: &Server, key: &str, input: Vec<u8>) -> String {
    let (status, job) = server
        .post_as(key, "/v1/batch", &json!({"labels": LABELS, "adapt": false}))
        .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(server.upload(&job, input).await / 100, 2);
    job["job_id"].as_str().unwrap().to_string()
}

async fn classify_and_batch_usage_per_day(backend: Backend) {
    let server = Server::start(backend).await;
    let key = server.key.clone();
    let today = Day::today().to_string();

    // Nothing yet: no days, zero totals, this month by default.
    let (status, empty) = usage(&server, &key, "").await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(empty["from"], Day::today().first_of_month().to_string());
    assert_eq!(empty["to"], today);
    assert_eq!(empty["data"], json!([]));
    assert_eq!(empty["total"]["tokens"], 0);
    assert_eq!(empty["limits"]["rps_limit"], Value::Null);
    assert_eq!(empty["limits"]["monthly_token_quota"], Value::Null);

    // Three successful calls (one text, three texts, a saved classifier) and two that
    // fail: only the successes count, with the tokens they answered with.
    let (status, one) = server
        .post(
            "/v1/classify",
            &json!({"text": TICKETS[0], "labels": LABELS}),
        )
        .await;
    assert_eq!(status, 200, "{one}");
    let (status, three) = server
        .post("/v1/classify", &json!({"texts": TICKETS, "labels": LABELS}))
        .await;
    assert_eq!(status, 200, "{three}");
    let (status, _) = server
        .post(
            "/v1/classifiers",
            &json!({"name": "router", "labels": LABELS}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, saved) = server
        .post(
            "/v1/classify",
            &json!({"text": TICKETS[1], "classifier": "router"}),
        )
        .await;
    assert_eq!(status, 200, "{saved}");
    for bad in [
        json!({"text": "  ", "labels": LABELS}),
        json!({"text": "hello", "classifier": "missing"}),
    ] {
        let (status, _) = server.post("/v1/classify", &bad).await;
        assert!(status == 422 || status == 404, "{status}");
    }
    let classify_tokens = one["tokens"].as_i64().unwrap()
        + three["tokens"].as_i64().unwrap()
        + saved["tokens"].as_i64().unwrap();
    assert!(classify_tokens > 0);

    // A batch job: its completed lines and its actual tokens; error rows count nothing.
    let (input, bad) = tickets(60);
    let id = upload_job(&server, &key, input).await;
    let (status, started) = server
        .call(Method::POST, &format!("/v1/batch/{id}/start"), None)
        .await;
    assert_eq!(status, 202, "{started}");
    let done = server
        .wait_for_job(&id, "completed", Duration::from_secs(120))
        .await;
    assert_eq!(done["requests_completed"], 60 - bad as i64);
    let batch_tokens = done["actual_tokens"].as_i64().unwrap();

    let (status, report) = usage(&server, &key, &format!("?from={today}&to={today}")).await;
    assert_eq!(status, 200, "{report}");
    let expected_day = json!({
        "date": today,
        "classify": {"requests": 3, "texts": 5, "tokens": classify_tokens},
        "batch": {"texts": 60 - bad as i64, "tokens": batch_tokens},
        "tokens": classify_tokens + batch_tokens,
    });
    assert_eq!(report["data"], json!([expected_day]), "{report}");
    let mut total = expected_day.clone();
    total.as_object_mut().unwrap().remove("date");
    assert_eq!(report["total"], total);
    assert_eq!(
        report["limits"]["month_to_date_tokens"],
        classify_tokens + batch_tokens
    );
    // The default range (this month) holds the same day.
    let (_, default_range) = usage(&server, &key, "").await;
    assert_eq!(default_range["data"], report["data"]);
    // Days before today: none of it.
    let (status, earlier) = usage(&server, &key, "?from=2020-01-01&to=2020-12-31").await;
    assert_eq!(status, 200, "{earlier}");
    assert_eq!(earlier["data"], json!([]));
    assert_eq!(earlier["total"]["tokens"], 0);
    assert_eq!(earlier["to"], "2020-12-31");

    // Another account sees none of it.
    let other = new_key(&server, "other");
    let (status, theirs) = usage(&server, &other, "").await;
    assert_eq!(status, 200);
    assert_eq!(theirs["data"], json!([]));
    assert_eq!(theirs["limits"]["month_to_date_tokens"], 0);

    // Bad dates and ranges: 422 naming the field; unknown parameters: 400.
    for (query, param) in [
        ("?from=2024-02-30", "from"),
        ("?to=yesterday", "to"),
        ("?from=2024-1-01&to=2024-01-31", "from"),
        ("?from=2024-03-02&to=2024-03-01", "from"),
        ("?from=2023-01-01&to=2024-01-02", "to"),
    ] {
        let (status, refused) = usage(&server, &key, query).await;
        assert_eq!(status, 422, "{query}: {refused}");
        assert_eq!(refused["error"]["type"], "validation_error");
        assert_eq!(refused["error"]["param"], param, "{query}");
    }
    for query in [
        "?from=2023-01-01&to=2024-01-01",
        "?from=2024-01-01&to=2024-12-31",
    ] {
        let (status, _) = usage(&server, &key, query).await;
        assert_eq!(status, 200, "{query}: 366 days are fine");
    }
    let (status, unknown) = usage(&server, &key, "?since=2024-01-01").await;
    assert_eq!(status, 400, "{unknown}");

    // `zeroshot usage`: a table with today's row and totals; --json: the API's answer.
    let cli = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_zeroshot"))
            .arg("usage")
            .args(["--url", &server.base, "--api-key", &key])
            .args(args)
            .output()
            .expect("run zeroshot usage");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let table = cli(&[]);
    let row = table
        .lines()
        .find(|line| line.starts_with(&today))
        .unwrap_or_else(|| panic!("a row for {today}:\n{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    let plain = |n: i64| n.to_string();
    assert_eq!(
        cells
            .iter()
            .map(|cell| cell.replace(',', ""))
            .collect::<Vec<_>>(),
        [
            today.clone(),
            "3".into(),
            "5".into(),
            plain(classify_tokens),
            plain(60 - bad as i64),
            plain(batch_tokens),
            plain(classify_tokens + batch_tokens),
        ],
        "{table}"
    );
    let totals = table
        .lines()
        .find(|line| line.starts_with("total"))
        .unwrap();
    assert_eq!(
        totals.split_whitespace().skip(1).collect::<Vec<_>>(),
        cells[1..],
        "{table}"
    );
    assert!(table.contains("monthly quota none"), "{table}");
    let json_out: Value = serde_json::from_str(&cli(&["--json"])).unwrap();
    assert_eq!(json_out["data"], report["data"]);
    let quiet = cli(&["--from", "2020-01-01", "--to", "2020-01-31"]);
    assert!(quiet.contains("(no usage on these days)"), "{quiet}");
    let refused = Command::new(env!("CARGO_BIN_EXE_zeroshot"))
        .args(["usage", "--url", &server.base, "--api-key", &key])
        .args(["--from", "2024-02-30"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("validation_error, param from"),
        "{message}"
    );
}

async fn rate_limit_and_monthly_quota(backend: Backend) {
    let server = std::sync::Arc::new(Server::start(backend).await);
    let key = new_key(&server, "limited");
    let body = json!({"text": TICKETS[0], "labels": LABELS});

    // Limits are set and cleared one by one; the others stay.
    let shown = accounts(&server, &["show", "limited"]);
    assert_eq!(shown["name"], "limited");
    assert_eq!(shown["rps_limit"], Value::Null);
    assert_eq!(shown["monthly_token_quota"], Value::Null);
    let set = accounts(
        &server,
        &[
            "limits",
            "limited",
            "--rps",
            "2",
            "--monthly-tokens",
            "5000",
        ],
    );
    assert_eq!(set["rps_limit"], 2);
    assert_eq!(set["monthly_token_quota"], 5000);
    let cleared = accounts(&server, &["limits", "limited", "--no-monthly-tokens"]);
    assert_eq!(cleared["rps_limit"], 2, "--rps left as it was");
    assert_eq!(cleared["monthly_token_quota"], Value::Null);
    let refused = server.cli(&["accounts", "limits", "limited", "--rps", "0"]);
    assert!(!refused.status.success(), "at least 1 request per second");
    let refused = server.cli(&["accounts", "limits", "nobody", "--rps", "3"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no account \"nobody\""));

    // 2 per second: of a burst of 10, the first two pass, the others get 429
    // `rate_limited` with Retry-After; the other account is not limited.
    let burst = |key: String| {
        let (server, body) = (server.clone(), body.clone());
        futures_util::future::join_all((0..10).map(move |_| {
            let (server, body, key) = (server.clone(), body.clone(), key.clone());
            async move { send(&server, &key, Method::POST, "/v1/classify", Some(&body)).await }
        }))
    };
    let began = Instant::now();
    let answers = burst(key.clone()).await;
    // Two at once, and two more a second for as long as the burst took to arrive.
    let refilled = (began.elapsed().as_secs_f64() * 2.0).ceil() as usize;
    let passed = answers.iter().filter(|(status, ..)| *status == 200).count();
    assert!(
        passed >= 2 && passed <= 2 + refilled && passed < 10,
        "{passed} of 10 passed"
    );
    for (status, retry_after, answer) in &answers {
        if *status != 200 {
            assert_eq!(*status, 429, "{answer}");
            assert_eq!(answer["error"]["type"], "rate_limited");
            assert_eq!(*retry_after, Some(1));
        }
    }
    let unlimited = burst(server.key.clone()).await;
    assert!(unlimited.iter().all(|(status, ..)| *status == 200));
    // After Retry-After, calls pass again; refused calls counted nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, _, _) = send(&server, &key, Method::POST, "/v1/classify", Some(&body)).await;
    assert_eq!(status, 200);
    let (_, report) = usage(&server, &key, "").await;
    assert_eq!(report["total"]["classify"]["requests"], passed as i64 + 1);
    assert_eq!(report["limits"]["rps_limit"], 2);
    // Cleared: the same burst all passes.
    accounts(&server, &["limits", "limited", "--no-rps"]);
    assert!(burst(key.clone())
        .await
        .iter()
        .all(|(status, ..)| *status == 200));

    // A quota at what is used: 429 `quota_exceeded` until the next UTC month.
    let (_, report) = usage(&server, &key, "").await;
    let used = report["limits"]["month_to_date_tokens"].as_i64().unwrap();
    assert_eq!(used, report["total"]["tokens"].as_i64().unwrap());
    let set = accounts(
        &server,
        &["limits", "limited", "--monthly-tokens", &used.to_string()],
    );
    assert_eq!(set["month_to_date_tokens"], used);
    let (status, retry_after, refused) =
        send(&server, &key, Method::POST, "/v1/classify", Some(&body)).await;
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["error"]["type"], "quota_exceeded");
    let until_next_month =
        (Day::today().first_of_next_month().start_ms() - zeroshot::clock::now_ms()) / 1000;
    let retry_after = retry_after.expect("Retry-After") as i64;
    assert!(
        (retry_after - until_next_month).abs() <= 5,
        "{retry_after} s vs {until_next_month} s to the next month"
    );

    // A batch job whose estimate does not fit in what is left may not start (and
    // stays pending); without the quota it starts.
    accounts(
        &server,
        &[
            "limits",
            "limited",
            "--monthly-tokens",
            &(used + 10).to_string(),
        ],
    );
    let (input, _) = tickets(20);
    let id = upload_job(&server, &key, input).await;
    let start = format!("/v1/batch/{id}/start");
    let (status, retry_after, refused) = send(&server, &key, Method::POST, &start, None).await;
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["error"]["type"], "quota_exceeded");
    assert!(retry_after.is_some());
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("estimated"));
    let (_, job) = server
        .call_as(&key, Method::GET, &format!("/v1/batch/{id}"), None)
        .await;
    assert_eq!(job["status"], "pending");
    // Below the quota, classify still passes.
    let (status, _, _) = send(&server, &key, Method::POST, "/v1/classify", Some(&body)).await;
    assert_eq!(status, 200);

    accounts(&server, &["limits", "limited", "--no-monthly-tokens"]);
    let (status, _, started) = send(&server, &key, Method::POST, &start, None).await;
    assert_eq!(status, 202, "{started}");
    let (status, _, _) = send(&server, &key, Method::POST, "/v1/classify", Some(&body)).await;
    assert_eq!(status, 200);
}

async fn resumed_job_counts_each_line_once(backend: Backend) {
    let database_url = common::fresh_database(backend).await;
    let data_dir = common::temp_dir();
    let flags = [
        "--batch-lease-secs",
        "2",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ];
    let server = Server::start_with(&database_url, &flags).await;
    let key = server.key.clone();
    // Chunks of 2,048 lines, a checkpoint after each (local storage).
    let n = 4_500;
    let (input, bad) = tickets(n);
    let id = upload_job(&server, &key, input).await;
    let (status, _) = server
        .call(Method::POST, &format!("/v1/batch/{id}/start"), None)
        .await;
    assert_eq!(status, 202);
    // Kill -9 once the first checkpoint is in, while the next chunk is scored.
    server.wait_for_progress(&id, 0).await;
    drop(server); // SIGKILL

    // What was counted is exactly what was checkpointed.
    let db = Db::connect(&database_url).await.unwrap();
    let row = db.job_by_id(&id).await.unwrap().unwrap();
    let shards = db.shards(&id).await.unwrap();
    assert_eq!(shards.len(), 1, "{shards:?}");
    let checkpoint = &shards[0];
    assert!(checkpoint.cp_completed > 0 && checkpoint.cp_completed < (n - bad) as i64);
    let today = Day::today();
    let counted = db.usage(&row.account_id, today, today).await.unwrap();
    assert_eq!(counted.len(), 1, "{counted:?}");
    assert_eq!(
        (
            counted[0].source.as_str(),
            counted[0].texts,
            counted[0].tokens
        ),
        ("batch", checkpoint.cp_completed, checkpoint.cp_tokens)
    );

    let mut restarted = Server::start_with(&database_url, &flags).await;
    restarted.key = key.clone();
    let done = restarted
        .wait_for_job(&id, "completed", Duration::from_secs(300))
        .await;
    assert_eq!(done["requests_completed"], (n - bad) as i64);
    let (status, report) = usage(&restarted, &key, "").await;
    assert_eq!(status, 200);
    assert_eq!(
        report["total"]["batch"],
        json!({"texts": (n - bad) as i64, "tokens": done["actual_tokens"]}),
        "each line counted once: {report}"
    );
}

/// A full inference queue is the whole server's problem: 503 `overloaded` with
/// Retry-After, not a 429.
#[tokio::test(flavor = "multi_thread")]
async fn overload_keeps_503_with_retry_after() {
    let database_url = common::fresh_database(Backend::Sqlite).await;
    let server = std::sync::Arc::new(
        Server::start_with(
            &database_url,
            &["--max-queued-requests", "1", "--max-batch-texts", "64"],
        )
        .await,
    );
    let texts: Vec<String> = (0..64)
        .map(|i| format!("a fairly long support ticket number {i} about billing"))
        .collect();
    let body = json!({"texts": texts, "labels": LABELS});
    let answers = futures_util::future::join_all((0..12).map(|_| {
        let (server, body) = (server.clone(), body.clone());
        async move {
            send(
                &server,
                &server.key,
                Method::POST,
                "/v1/classify",
                Some(&body),
            )
            .await
        }
    }))
    .await;
    let overloaded: Vec<_> = answers
        .iter()
        .filter(|(status, ..)| *status != 200)
        .collect();
    assert!(
        !overloaded.is_empty(),
        "12 concurrent calls overflow a queue of 1"
    );
    for (status, retry_after, answer) in overloaded {
        assert_eq!(*status, 503, "{answer}");
        assert_eq!(answer["error"]["type"], "overloaded");
        assert_eq!(*retry_after, Some(1));
    }
    // Only the calls that were answered are counted.
    let passed = answers.iter().filter(|(status, ..)| *status == 200).count() as i64;
    let (_, report) = usage(&server, &server.key, "").await;
    assert_eq!(report["total"]["classify"]["requests"], passed);
    assert_eq!(report["total"]["classify"]["texts"], passed * 64);
}
