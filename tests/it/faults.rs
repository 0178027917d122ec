//! Batch jobs against failing dependencies, with the real servers: SeaweedFS stopped
//! mid-job and started again on the same data, storage away longer than the retry
//! budget, PostgreSQL restarted mid-job, local storage on a full disk, and a model
//! that fails (through the `ZEROSHOT_FAILPOINT_INFERENCE` injection point). Each test
//! that takes a server down has one of its own (the shared ones serve the other tests).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{self, Backend, Server};
use reqwest::Method;
use serde_json::{json, Value};

const LABELS: [&str; 3] = ["billing", "technical_issue", "feature_request"];
const STORAGE_RETRIES: &str = "zeroshot_dependency_retries_total{dependency=\"storage\"}";
const DATABASE_RETRIES: &str = "zeroshot_dependency_retries_total{dependency=\"database\"}";

fn job_config() -> Value {
    json!({"labels": LABELS, "adapt": false})
}

/// Runs a command to success, naming it when it fails.
fn run(command: &mut Command) {
    let output = command.output().expect("spawn");
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A SeaweedFS of this test's own on `port`, through scripts/seaweedfs.sh (which keeps
/// its data when started with `--keep-data`).
struct Seaweed {
    port: u16,
}

impl Seaweed {
    fn script(&self, mode: &[&str]) -> Command {
        let mut command =
            Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/seaweedfs.sh"));
        command
            .args(mode)
            .env("ZEROSHOT_TEST_S3_PORT", self.port.to_string());
        command
    }

    fn start(port: u16) -> Seaweed {
        let seaweed = Seaweed { port };
        run(&mut seaweed.script(&["--fresh"]));
        seaweed
    }

    fn stop(&self) {
        run(&mut self.script(&["--stop"]));
    }

    fn start_again(&self) {
        run(&mut self.script(&["--keep-data"]));
    }

    /// `serve` flags for a new bucket on this server.
    fn flags(&self) -> Vec<String> {
        let mut flags = common::s3_server_flags("faults");
        let at = flags.iter().position(|f| f == "--s3-endpoint").unwrap();
        flags[at + 1] = format!("http://127.0.0.1:{}", self.port);
        flags
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        let _ = self.script(&["--stop"]).output();
    }
}

/// Waits for a job to fail and checks that no partial results are offered; returns its
/// error.
async fn failed_without_results(server: &Server, id: &str) -> String {
    let failed = server
        .wait_for_job(id, "failed", Duration::from_secs(300))
        .await;
    let (status, _) = server
        .call(Method::GET, &format!("/v1/batch/{id}/results"), None)
        .await;
    assert_eq!(
        status, 409,
        "no partial results are offered for a failed job"
    );
    failed["error"].as_str().unwrap().to_string()
}

/// How many of a server's log lines contain `text`.
fn logged(server: &Server, text: &str) -> usize {
    server
        .logs()
        .iter()
        .filter(|line| line.contains(text))
        .count()
}

async fn serve_on(store_flags: &[String], extra: &[&str]) -> Server {
    let mut flags: Vec<&str> = store_flags.iter().map(String::as_str).collect();
    flags.extend_from_slice(extra);
    let database_url = common::fresh_database(Backend::Sqlite).await;
    Server::start_capturing_logs(&database_url, &flags).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_outlives_a_storage_outage_of_20_seconds() {
    // Two S3 parts of results (a part is 5 MiB, about 22,000 rows).
    const LINES: usize = 30_000;
    let seaweed = Seaweed::start(8433);
    let server = serve_on(&seaweed.flags(), &[]).await;
    let id = server
        .start_job(&job_config(), common::ticket_lines(LINES))
        .await;
    server.wait_for_progress(&id, 2_000).await;

    // Down for 20 s from the moment the worker first meets the outage (its first part
    // upload after the stop: how soon depends on the machine's speed).
    seaweed.stop();
    let deadline = Instant::now() + Duration::from_secs(240);
    while server.metric(STORAGE_RETRIES).await < 1.0 {
        assert!(Instant::now() < deadline, "the worker never met the outage");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (_, job) = server
        .call(Method::GET, &format!("/v1/batch/{id}"), None)
        .await;
    assert_eq!(
        job["status"], "processing",
        "it waits for the storage: {job}"
    );
    seaweed.start_again();

    let done = server
        .wait_for_job(&id, "completed", Duration::from_secs(300))
        .await;
    assert_eq!(done["requests_completed"], LINES as i64);
    common::assert_every_line_once(&server.download_results(&id).await, LINES);
    let retries = server.metric(STORAGE_RETRIES).await;
    assert!(
        retries >= 3.0,
        "retried with backoff through 20 s: {retries}"
    );
    assert_eq!(
        logged(&server, "storage unavailable; retrying"),
        1,
        "an outage is logged once when it begins, not per try"
    );
    assert_eq!(logged(&server, "storage available again"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_away_past_the_budget_fails_the_job_and_a_restart_completes_it() {
    // One S3 part: written at the end, so the storage is needed after the stop.
    const LINES: usize = 10_000;
    let seaweed = Seaweed::start(8443);
    let server = serve_on(&seaweed.flags(), &["--storage-retry-secs", "3"]).await;
    let id = server
        .start_job(&job_config(), common::ticket_lines(LINES))
        .await;
    server.wait_for_progress(&id, 2_000).await;

    seaweed.stop();
    let error = failed_without_results(&server, &id).await;
    assert!(
        error.starts_with("storage unavailable for ") && error.contains("--storage-retry-secs"),
        "the error names the cause: {error}"
    );

    seaweed.start_again();
    let (status, restarted) = server
        .call(Method::POST, &format!("/v1/batch/{id}/start"), None)
        .await;
    assert_eq!(status, 202, "{restarted}");
    server
        .wait_for_job(&id, "completed", Duration::from_secs(300))
        .await;
    common::assert_every_line_once(&server.download_results(&id).await, LINES);
}

/// A PostgreSQL cluster of this test's own, run as the `postgres` user when the test
/// runs as root (PostgreSQL refuses root).
struct Postgres {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
}

impl Postgres {
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| out.stdout.starts_with(b"0\n"));
        if root {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn create(port: u16) -> Postgres {
        let version = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries in /usr/lib/postgresql")
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .max()
            .expect("a PostgreSQL version");
        let dir = common::temp_dir();
        run(Command::new("chmod").arg("0777").arg(&dir));
        let postgres = Postgres {
            bin: Path::new("/usr/lib/postgresql")
                .join(version.to_string())
                .join("bin"),
            dir,
            port,
        };
        run(postgres
            .command("initdb")
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(postgres.dir.join("data")));
        postgres.start();
        postgres
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut command = self.command("pg_ctl");
        command
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "60"])
            .args(args);
        command
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        run(&mut self.pg_ctl(&["start", "-o", &options]));
    }

    fn stop(&self) {
        run(&mut self.pg_ctl(&["stop", "-m", "fast"]));
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate"]).output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_outlives_a_postgres_restart() {
    const LINES: usize = 20_000;
    let postgres = Postgres::create(5499);
    let server = Server::start_capturing_logs(&postgres.url(), &[]).await;
    let id = server
        .start_job(&job_config(), common::ticket_lines(LINES))
        .await;
    server.wait_for_progress(&id, 2_000).await;

    // Longer than the server waits for a pooled connection (10 s), so the worker's
    // calls fail, rather than only wait, while the database is away.
    postgres.stop();
    tokio::time::sleep(Duration::from_secs(20)).await;
    postgres.start();

    let done = server
        .wait_for_job(&id, "completed", Duration::from_secs(300))
        .await;
    assert_eq!(done["requests_completed"], LINES as i64);
    common::assert_every_line_once(&server.download_results(&id).await, LINES);
    assert!(
        server.metric(DATABASE_RETRIES).await >= 1.0,
        "the worker met the restart"
    );
    assert_eq!(
        logged(&server, "database unavailable; retrying"),
        1,
        "an outage is logged once when it begins, not per try"
    );
    assert_eq!(logged(&server, "database available again"), 1);
}

/// A tmpfs of `bytes` mounted on a new directory; unmounted when dropped.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(bytes: u64) -> SmallDisk {
        let dir = common::temp_dir();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&dir));
        SmallDisk { dir }
    }

    /// Every file under the mount, relative to it.
    fn files(&self) -> Vec<String> {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, root, out);
                } else {
                    out.push(path.strip_prefix(root).unwrap().display().to_string());
                }
            }
        }
        let mut files = Vec::new();
        walk(&self.dir, &self.dir, &mut files);
        files.sort();
        files
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_fails_the_job_cleanly() {
    // About 0.5 MB of input; its results (about 1 MB) do not fit in what is left.
    const LINES: usize = 6_000;
    let disk = SmallDisk::mount(1024 * 1024);
    let data_dir = disk.dir.display().to_string();
    let database_url = common::fresh_database(Backend::Sqlite).await;
    let server = Server::start_with(&database_url, &["--data-dir", &data_dir]).await;
    let id = server
        .start_job(&job_config(), common::ticket_lines(LINES))
        .await;

    let error = failed_without_results(&server, &id).await;
    assert!(
        error.starts_with("storage is full: ") && error.contains("No space left on device"),
        "{error}"
    );
    let files = disk.files();
    assert!(
        files
            .iter()
            .all(|file| !file.contains("results/") && !file.contains("errors/")),
        "the partial outputs are deleted: {files:?}"
    );
    assert!(
        files.contains(&format!("objects/inputs/{id}.ndjson")),
        "the input is kept for a restart: {files:?}"
    );

    // An upload that does not fit is refused whole.
    let (status, job) = server.post("/v1/batch", &job_config()).await;
    assert_eq!(status, 201, "{job}");
    let refused = server
        .upload_answer(&job, common::ticket_lines(LINES * 2))
        .await;
    assert_eq!(refused.status(), 507);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["type"], "storage_full", "{body}");
    assert_eq!(disk.files().len(), files.len(), "nothing of it is kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_failure_is_tried_once_more_and_a_second_one_fails_the_job() {
    const LINES: usize = 300;
    let database_url = common::fresh_database(Backend::Sqlite).await;
    let once = Server::start_capturing_logs_with_env(
        &database_url,
        &[],
        &[("ZEROSHOT_FAILPOINT_INFERENCE", "1")],
    )
    .await;
    let id = once
        .start_job(&job_config(), common::ticket_lines(LINES))
        .await;
    once.wait_for_job(&id, "completed", Duration::from_secs(120))
        .await;
    common::assert_every_line_once(&once.download_results(&id).await, LINES);
    assert_eq!(
        logged(&once, "inference failed; trying the job once more"),
        1
    );
    drop(once);

    let database_url = common::fresh_database(Backend::Sqlite).await;
    let twice = Server::start_capturing_logs_with_env(
        &database_url,
        &[],
        &[("ZEROSHOT_FAILPOINT_INFERENCE", "2")],
    )
    .await;
    let id = twice
        .start_job(&job_config(), common::ticket_lines(LINES))
        .await;
    let error = failed_without_results(&twice, &id).await;
    assert_eq!(
        error,
        "inference failed: injected by ZEROSHOT_FAILPOINT_INFERENCE"
    );

    // The failure was the model's, not the job's: a restart completes it.
    let (status, body) = twice
        .call(Method::POST, &format!("/v1/batch/{id}/start"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    twice
        .wait_for_job(&id, "completed", Duration::from_secs(120))
        .await;
    common::assert_every_line_once(&twice.download_results(&id).await, LINES);
}
