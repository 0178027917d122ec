//! The server commands of the CLI end to end: `zeroshot batch ...` and `zeroshot
//! classify --url`, the real binary against a real server (SQLite; local storage, and
//! S3 through SeaweedFS). The CLI's stderr is a pipe here, so progress comes as lines.

use std::path::{Path, PathBuf};

use crate::common::{self, Backend, Server};
use serde_json::{json, Value};

const LABELS: &str = "billing,technical_issue,feature_request";
const LABEL_NAMES: [&str; 3] = ["billing", "technical_issue", "feature_request"];
const TICKETS: [&str; 3] = [
    "I was charged twice for my subscription this month",
    "The app crashes when I open the settings page",
    "Feature request: please add an option to export reports as CSV",
];

/// One CLI run: exit code and output.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts exit code 0.
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "{self:#?}");
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("stdout is not JSON ({err}): {self:#?}"))
    }
}

/// `zeroshot ARGS` with the environment of a server user: `ZEROSHOT_URL` and
/// `ZEROSHOT_API_KEY` name `server` (flags given in `args` win).
async fn zeroshot(server: &Server, args: &[&str]) -> Run {
    run(
        &[
            ("ZEROSHOT_URL", &server.base),
            ("ZEROSHOT_API_KEY", &server.key),
        ],
        args,
    )
    .await
}

/// `zeroshot ARGS` with extra environment variables.
async fn run(env: &[(&str, &str)], args: &[&str]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_zeroshot"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .await
        .expect("run zeroshot");
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

/// `n` ticket lines with ids `t0`.., cycling through the three kinds.
fn tickets(n: usize) -> String {
    (0..n)
        .map(|i| json!({"text": format!("{} (#{i})", TICKETS[i % 3]), "id": format!("t{i}")}))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Writes `content` to a new file in a fresh temporary directory.
fn temp_file(name: &str, content: &str) -> PathBuf {
    let path = common::temp_dir().join(name);
    std::fs::write(&path, content).expect("write temp file");
    path
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// The id in the final progress line `batch_… completed: …`, which must be there.
fn completed_job_id(run: &Run, lines: usize) -> String {
    let wanted = format!(" completed: {lines}/{lines} lines (100.0%)");
    let line = run
        .stderr
        .lines()
        .find(|line| line.contains(&wanted))
        .unwrap_or_else(|| panic!("no {wanted:?} progress line: {run:#?}"));
    line.split_whitespace().next().unwrap().to_string()
}

/// Result rows of an NDJSON text; checks there is one per input line, in order, each
/// with the ticket kind's label as its top label.
fn check_rows(ndjson: &str, lines: usize) -> Vec<Value> {
    let rows: Vec<Value> = ndjson
        .lines()
        .map(|line| serde_json::from_str(line).expect("result row is JSON"))
        .collect();
    assert_eq!(rows.len(), lines, "one row per line: {ndjson}");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["line"], i + 1, "{row}");
        assert_eq!(row["id"], format!("t{i}"), "{row}");
        assert_eq!(row["label"], LABEL_NAMES[i % 3], "{row}");
    }
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_waits_downloads_and_manages_the_job() {
    let server = Server::start(Backend::Sqlite).await;
    let input = temp_file("tickets.ndjson", &tickets(30));
    let output = input.with_file_name("results.ndjson");
    let submitted = zeroshot(
        &server,
        &[
            "batch",
            "submit",
            path_str(&input),
            "--labels",
            LABELS,
            "--metadata",
            "team=support",
            "--wait",
            "--output",
            path_str(&output),
        ],
    )
    .await
    .ok();
    // Not a terminal: plain progress lines, no bar drawing.
    let id = completed_job_id(&submitted, 30);
    assert!(id.starts_with("batch_"), "{submitted:#?}");
    assert!(
        submitted.stderr.contains(&format!("{id}: uploaded ")),
        "{submitted:#?}"
    );
    assert!(
        submitted
            .stderr
            .contains(&format!("{id}: results written to ")),
        "{submitted:#?}"
    );
    assert!(
        !submitted.stderr.contains('\x1b'),
        "no terminal escapes: {submitted:#?}"
    );
    assert!(
        submitted.stdout.is_empty(),
        "results went to --output: {submitted:#?}"
    );
    let results = std::fs::read_to_string(&output).expect("results file");
    check_rows(&results, 30);
    assert!(!input.with_file_name("results.ndjson.part").exists());

    let status = zeroshot(&server, &["batch", "status", &id])
        .await
        .ok()
        .json();
    assert_eq!(status["status"], "completed", "{status}");
    assert_eq!(status["requests_completed"], 30);
    assert_eq!(status["metadata"]["team"], "support");
    assert_eq!(status["adapt"], true, "the server's default");

    let list = zeroshot(&server, &["batch", "list"]).await.ok().json();
    assert_eq!(list["data"][0]["job_id"], id.as_str(), "{list}");
    assert!(list["next_cursor"].is_null());

    let to_stdout = zeroshot(&server, &["batch", "results", &id]).await.ok();
    assert_eq!(to_stdout.stdout, results);
    let again = output.with_file_name("again.ndjson");
    zeroshot(&server, &["batch", "results", &id, "-o", path_str(&again)])
        .await
        .ok();
    assert_eq!(std::fs::read_to_string(&again).unwrap(), results);

    let deleted = zeroshot(&server, &["batch", "delete", &id])
        .await
        .ok()
        .json();
    assert_eq!(deleted, json!({ "deleted": id }));
    let gone = zeroshot(&server, &["batch", "status", &id]).await;
    assert_eq!(gone.code, 1, "{gone:#?}");
    assert_eq!(
        gone.stderr.trim(),
        format!("error: no batch job {id:?} (not_found)")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_with_a_spec_file_then_wait() {
    let server = Server::start(Backend::Sqlite).await;
    let input = temp_file("tickets.ndjson", &tickets(30));
    let spec = temp_file(
        "tickets.yaml",
        "name: not-used-by-a-job\n\
         labels: [billing, technical_issue, feature_request]\n\
         descriptions:\n  billing: charges, invoices, refunds and payments\n\
         mode: multi\n\
         threshold: 0.4\n",
    );
    let submitted = zeroshot(
        &server,
        &[
            "batch",
            "submit",
            path_str(&input),
            "--spec",
            path_str(&spec),
            "--threshold",
            "0.25",
            "--no-adapt",
        ],
    )
    .await
    .ok();
    let job = submitted.json();
    let id = job["job_id"].as_str().expect("job_id").to_string();
    assert_eq!(job["status"], "processing", "{job}");
    assert_eq!(job["mode"], "multi", "from the file");
    assert_eq!(job["threshold"], 0.25, "the flag over the file");
    assert_eq!(job["adapt"], false);
    assert_eq!(job["labels"], json!(LABEL_NAMES));
    assert!(submitted
        .stderr
        .contains(&format!("zeroshot batch wait {id}")));

    let waited = zeroshot(&server, &["batch", "wait", &id]).await.ok();
    assert_eq!(completed_job_id(&waited, 30), id);
    for row in check_rows(&waited.stdout, 30) {
        assert!(row["labels"].is_array(), "multi mode rows: {row}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_and_error_messages() {
    let server = Server::start(Backend::Sqlite).await;

    // Every line fails, so the job fails: exit code 3 with the job's error.
    let not_ndjson = temp_file("notes.txt", "not JSON at all\nnor this\n");
    let failed = zeroshot(
        &server,
        &[
            "batch",
            "submit",
            path_str(&not_ndjson),
            "--labels",
            "a,b",
            "--wait",
        ],
    )
    .await;
    assert_eq!(failed.code, 3, "{failed:#?}");
    let error = failed.stderr.lines().last().unwrap();
    assert!(
        error.starts_with("error: job batch_")
            && error.contains("failed: every line failed (2 lines)"),
        "{failed:#?}"
    );
    let id = error["error: job ".len()..]
        .split_whitespace()
        .next()
        .unwrap();
    assert_eq!(zeroshot(&server, &["batch", "wait", id]).await.code, 3);

    // The API's error, as `message (type, param p)`.
    let wrong_key = zeroshot(&server, &["batch", "list", "--api-key", "zs_wrong"]).await;
    assert_eq!(wrong_key.code, 1, "{wrong_key:#?}");
    assert_eq!(
        wrong_key.stderr.trim(),
        "error: invalid or revoked API key (authentication_error)"
    );
    let input = temp_file("tickets.ndjson", &tickets(3));
    let invalid = zeroshot(
        &server,
        &["batch", "submit", path_str(&input), "--labels", "a,a"],
    )
    .await;
    assert_eq!(invalid.code, 1, "{invalid:#?}");
    assert!(
        invalid.stderr.trim().starts_with("error: duplicate label")
            && invalid
                .stderr
                .trim()
                .ends_with("(validation_error, param labels[1])"),
        "{invalid:#?}"
    );

    // A file that is not there fails before any job is created.
    let missing = zeroshot(
        &server,
        &[
            "batch",
            "submit",
            "/nonexistent/input.ndjson",
            "--labels",
            "a,b",
        ],
    )
    .await;
    assert_eq!(missing.code, 1, "{missing:#?}");
    assert!(
        missing.stderr.contains("/nonexistent/input.ndjson"),
        "{missing:#?}"
    );
    let list = zeroshot(&server, &["batch", "list"]).await.ok().json();
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "only the failed job: {list}"
    );

    // No server: a message, not a debug dump.
    let unreachable = zeroshot(&server, &["batch", "list", "--url", "http://127.0.0.1:9"]).await;
    assert_eq!(unreachable.code, 1, "{unreachable:#?}");
    assert!(
        unreachable.stderr.starts_with("error: ") && unreachable.stderr.contains("127.0.0.1:9"),
        "{unreachable:#?}"
    );
    assert!(!unreachable.stderr.contains("Error {"), "{unreachable:#?}");

    // Usage errors are clap's: 2.
    for usage in [
        &["batch", "submit", path_str(&input)][..],
        &[
            "batch",
            "submit",
            path_str(&input),
            "--labels",
            "a",
            "--output",
            "x",
        ],
        &[
            "batch",
            "submit",
            path_str(&input),
            "--labels",
            "a",
            "--classifier",
            "c",
        ],
        &["classify", "--classifier", "c", "text"],
    ] {
        let refused = zeroshot(&server, usage).await;
        assert_eq!(refused.code, 2, "{usage:?}: {refused:#?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_while_following_leaves_the_job_running() {
    use tokio::io::AsyncBufReadExt;

    let server = Server::start(Backend::Sqlite).await;
    // Long enough to be still running when the first progress line is read.
    let input = temp_file("tickets.ndjson", &tickets(20_000));
    let started = zeroshot(
        &server,
        &["batch", "submit", path_str(&input), "--labels", LABELS],
    )
    .await
    .ok()
    .json();
    let id = started["job_id"].as_str().unwrap();
    let mut follower = tokio::process::Command::new(env!("CARGO_BIN_EXE_zeroshot"))
        .args([
            "batch",
            "wait",
            id,
            "--url",
            &server.base,
            "--api-key",
            &server.key,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn zeroshot batch wait");
    let mut stderr = tokio::io::BufReader::new(follower.stderr.take().unwrap()).lines();
    let first = stderr.next_line().await.unwrap().expect("a progress line");
    assert!(first.starts_with(&format!("{id} processing")), "{first}");
    let pid = follower.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let mut rest = Vec::new();
    while let Some(line) = stderr.next_line().await.unwrap() {
        rest.push(line);
    }
    let status = follower.wait().await.unwrap();
    assert_eq!(status.code(), Some(130), "{rest:?}");
    assert_eq!(
        rest.last().map(String::as_str),
        Some(
            format!(
                "error: interrupted; job {id} goes on on the server \
                 (`zeroshot batch wait {id}` follows it again)"
            )
            .as_str()
        )
    );
    let job = zeroshot(&server, &["batch", "status", id])
        .await
        .ok()
        .json();
    assert_eq!(job["status"], "processing", "{job}");

    // `batch cancel` stops it; following it then ends with exit code 3, and the rows
    // scored before the cancel download.
    let cancelled = zeroshot(&server, &["batch", "cancel", id])
        .await
        .ok()
        .json();
    assert!(
        ["cancelling", "cancelled"].contains(&cancelled["status"].as_str().unwrap()),
        "{cancelled}"
    );
    let waited = zeroshot(&server, &["batch", "wait", id]).await;
    assert_eq!(waited.code, 3, "{waited:#?}");
    assert!(
        waited.stderr.trim_end().ends_with(&format!(
            "error: job {id} was cancelled (`zeroshot batch results {id}` downloads the rows scored before that)"
        )),
        "{waited:#?}"
    );
    let job = zeroshot(&server, &["batch", "status", id])
        .await
        .ok()
        .json();
    let scored = job["requests_completed"].as_i64().unwrap() as usize;
    assert!(scored < 20_000, "{job}");
    let results = zeroshot(&server, &["batch", "results", id]).await.ok();
    assert_eq!(check_rows(&results.stdout, scored).len(), scored);
}

/// Pretty JSON without its `latency_ms` line, which differs from run to run.
fn without_latency(pretty: &str) -> String {
    pretty
        .lines()
        .filter(|line| !line.contains("\"latency_ms\""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn classify_url_prints_what_local_classify_prints() {
    let server = Server::start(Backend::Sqlite).await;
    let texts = ["The app crashes on start", "Refund my payment"];
    for args in [
        vec!["--labels", LABELS, texts[0]],
        vec![
            "--labels",
            LABELS,
            "--mode",
            "multi",
            "--threshold",
            "0.2",
            texts[0],
            texts[1],
        ],
    ] {
        // ZEROSHOT_URL (here a dead address) does not turn a local run into a call.
        let local = run(
            &[("ZEROSHOT_URL", "http://127.0.0.1:9")],
            &[&["classify"], &args[..]].concat(),
        )
        .await
        .ok();
        let remote = zeroshot(
            &server,
            &[&["classify", "--url", &server.base], &args[..]].concat(),
        )
        .await
        .ok();
        assert_eq!(
            without_latency(&remote.stdout),
            without_latency(&local.stdout),
            "same JSON, same field order"
        );
        assert!(remote.json()["latency_ms"].is_number());
    }

    let (status, saved) = server
        .post(
            "/v1/classifiers",
            &json!({"name": "tickets", "labels": LABEL_NAMES, "mode": "multi"}),
        )
        .await;
    assert_eq!(status, 201, "{saved}");
    let answer = zeroshot(
        &server,
        &[
            "classify",
            "--url",
            &server.base,
            "--classifier",
            "tickets",
            TICKETS[0],
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(answer["classifier"], "tickets@v1", "{answer}");
    assert_eq!(answer["mode"], "multi", "the saved mode: no --mode sent");
    assert_eq!(answer["label"], "billing");

    let wrong_key = zeroshot(
        &server,
        &[
            "classify",
            "--url",
            &server.base,
            "--api-key",
            "zs_wrong",
            "--labels",
            "a,b",
            "x",
        ],
    )
    .await;
    assert_eq!(wrong_key.code, 1);
    assert_eq!(
        wrong_key.stderr.trim(),
        "error: invalid or revoked API key (authentication_error)"
    );
}

fn s3_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test.sh, or `eval \"$(scripts/seaweedfs.sh)\"`")
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_uploads_through_an_s3_presigned_post() {
    let bucket = format!(
        "zs-cli-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let (endpoint, key_id, secret) = (
        s3_env("ZEROSHOT_TEST_S3_ENDPOINT"),
        s3_env("ZEROSHOT_TEST_S3_ACCESS_KEY_ID"),
        s3_env("ZEROSHOT_TEST_S3_SECRET_ACCESS_KEY"),
    );
    let server = Server::start_with(
        &common::fresh_database(Backend::Sqlite).await,
        &[
            "--storage",
            "s3",
            "--s3-endpoint",
            &endpoint,
            "--s3-bucket",
            &bucket,
            "--s3-access-key-id",
            &key_id,
            "--s3-secret-access-key",
            &secret,
        ],
    )
    .await;
    let input = temp_file("tickets.ndjson", &tickets(30));
    let output = input.with_file_name("results.ndjson");
    let submitted = zeroshot(
        &server,
        &[
            "batch",
            "submit",
            path_str(&input),
            "--labels",
            LABELS,
            "--wait",
            "-o",
            path_str(&output),
        ],
    )
    .await
    .ok();
    completed_job_id(&submitted, 30);
    check_rows(&std::fs::read_to_string(&output).unwrap(), 30);
}
