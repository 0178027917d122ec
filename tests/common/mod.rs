//! Shared test helpers: the real engine, a real server process, real databases.

use std::sync::{Arc, Mutex, OnceLock};

/// Runs each named `async fn case(backend: Backend)` as a test on SQLite and on
/// Postgres (`sqlite::case`, `postgres::case`).
macro_rules! on_both_databases {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $case() { super::$case(super::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $case() { super::$case(super::Backend::Postgres).await })*
        }
    };
}

pub mod batch_store;
pub mod storage_cases;

use zeroshot::cli::args::ModelArgs;
use zeroshot::engine::Engine;

/// The real default model, loaded once per test binary (ORT_DYLIB_PATH and
/// ZEROSHOT_MODELS_DIR / ZEROSHOT_CACHE as set by scripts/test.sh).
pub fn engine() -> Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let engine = ModelArgs::from_env()
                .config()
                .load()
                .unwrap_or_else(|err| panic!("{err} (run scripts/setup.py first)"));
            Arc::new(engine)
        })
        .clone()
}

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;

/// Which database a test runs against.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Postgres server for tests (trust auth); scripts/test.sh starts it.
fn postgres_admin_url() -> String {
    std::env::var("ZEROSHOT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A new empty temporary directory.
pub fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("zeroshot-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A `ZEROSHOT_TEST_S3_*` variable (scripts/test.sh exports them from scripts/seaweedfs.sh).
fn s3_env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the tests through scripts/test.sh"))
}

/// `serve` flags for S3 storage on the test S3 server, in a new bucket named `prefix-...`.
pub fn s3_server_flags(prefix: &str) -> Vec<String> {
    vec![
        "--storage".into(),
        "s3".into(),
        "--s3-endpoint".into(),
        s3_env("ZEROSHOT_TEST_S3_ENDPOINT"),
        "--s3-bucket".into(),
        format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ),
        "--s3-access-key-id".into(),
        s3_env("ZEROSHOT_TEST_S3_ACCESS_KEY_ID"),
        "--s3-secret-access-key".into(),
        s3_env("ZEROSHOT_TEST_S3_SECRET_ACCESS_KEY"),
    ]
}

/// A fresh, empty database of the given backend; returns its URL.
pub async fn fresh_database(backend: Backend) -> String {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    match backend {
        Backend::Sqlite => format!("sqlite://{}/zeroshot.db", temp_dir().display()),
        Backend::Postgres => {
            let admin = postgres_admin_url();
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .unwrap_or_else(|err| {
                    panic!("connecting to {admin}: {err} (is Postgres running?)")
                });
            let name = format!("zs_test_{unique}");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .expect("create test database");
            let (base, _) = admin.rsplit_once('/').expect("url has a database");
            format!("{base}/{name}")
        }
    }
}

/// `lines` numbered support tickets as NDJSON: line `i + 1` has `id` `i`.
pub fn ticket_lines(lines: usize) -> Vec<u8> {
    const TICKETS: [&str; 3] = [
        "I was charged twice for my subscription this month",
        "The app crashes when I open the settings page",
        "Feature request: please add an option to export reports as CSV",
    ];
    (0..lines)
        .map(|i| {
            format!(
                "{}\n",
                serde_json::json!({"text": format!("{} (#{i})", TICKETS[i % 3]), "id": i})
            )
        })
        .collect::<String>()
        .into_bytes()
}

/// Asserts that result rows are `lines` ticket lines, each exactly once and in order.
pub fn assert_every_line_once(rows: &[serde_json::Value], lines: usize) {
    assert_eq!(rows.len(), lines, "each line exactly once");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(
            row["line"],
            (i + 1) as i64,
            "in order, none lost or repeated"
        );
        assert_eq!(row["id"], i as i64);
    }
}

/// The real `zeroshot` binary serving on a free port with the real model.
pub struct Server {
    child: Child,
    pub base: String,
    /// The key printed once by the first `serve` of an empty database.
    pub key: String,
    pub database_url: String,
    pub client: reqwest::Client,
    /// What the server printed on stdout up to and including "listening on".
    pub startup: Vec<String>,
    /// The local storage directory the server was given, unless the caller chose one.
    pub data_dir: Option<std::path::PathBuf>,
    /// The server's stderr lines so far, when started with [`Server::start_capturing_logs`].
    logs: Option<Arc<Mutex<Vec<String>>>>,
}

impl Server {
    /// Starts `zeroshot serve` on a fresh database and waits until `/readyz` is 200.
    pub async fn start(backend: Backend) -> Server {
        let database_url = fresh_database(backend).await;
        Self::start_with(&database_url, &[]).await
    }

    /// Starts `zeroshot serve` on `database_url` with extra flags. Local storage goes to
    /// a fresh temporary directory unless `extra` names `--data-dir`.
    pub async fn start_with(database_url: &str, extra: &[&str]) -> Server {
        Self::launch(database_url, extra, &[], false).await
    }

    /// Like [`Server::start_with`], but logging at `info` into [`Server::logs`] instead
    /// of the test's stderr.
    pub async fn start_capturing_logs(database_url: &str, extra: &[&str]) -> Server {
        Self::launch(database_url, extra, &[], true).await
    }

    /// Like [`Server::start_capturing_logs`], with extra environment variables (the
    /// service's fault injection points).
    pub async fn start_capturing_logs_with_env(
        database_url: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        Self::launch(database_url, extra, env, true).await
    }

    /// The server's stderr lines so far (empty unless started capturing them).
    pub fn logs(&self) -> Vec<String> {
        self.logs
            .as_ref()
            .map(|logs| logs.lock().expect("logs lock").clone())
            .unwrap_or_default()
    }

    async fn launch(
        database_url: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        capture_logs: bool,
    ) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_zeroshot"));
        command.args(["serve", "--port", "0", "--database-url", database_url]);
        command.envs(env.iter().copied());
        if capture_logs {
            command.env("ZEROSHOT_LOG", "info");
        } else if std::env::var_os("ZEROSHOT_LOG").is_none() {
            command.env("ZEROSHOT_LOG", "warn");
        }
        let data_dir = (!extra.contains(&"--data-dir")).then(temp_dir);
        if let Some(dir) = &data_dir {
            command.args(["--data-dir", dir.to_str().expect("utf-8 temp dir")]);
        }
        let mut child = command
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(if capture_logs {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .expect("spawn zeroshot serve");
        let logs = child.stderr.take().map(|stderr| {
            let logs = Arc::new(Mutex::new(Vec::new()));
            let sink = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    sink.lock().expect("logs lock").push(line);
                }
            });
            logs
        });
        let stdout = child.stdout.take().expect("stdout");
        let (key, base, startup) = tokio::task::spawn_blocking(move || {
            let mut key = String::new();
            let mut startup = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let line = line.expect("read server stdout");
                startup.push(line.clone());
                if let Some((_, secret)) = line.split_once("(shown once): ") {
                    key = secret.trim().to_string();
                }
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return (key, addr.trim().to_string(), startup);
                }
            }
            panic!("server exited before listening");
        })
        .await
        .expect("reader");
        let mut server = Server {
            child,
            base,
            key,
            database_url: database_url.to_string(),
            // A fresh connection per request: a server that refuses a body unread (413)
            // closes its connection, and a pooled one could be picked as it closes.
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("HTTP client"),
            startup,
            data_dir,
            logs,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!("server exited before it was ready: {status}");
            }
            if let Ok(resp) = self.client.get(self.url("/readyz")).send().await {
                if resp.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server not ready after 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's peak resident memory so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read the server's /proc status");
        let kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status");
        kib / 1024.0
    }

    /// Absolute URL of a path on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POST JSON with this server's key.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        self.post_as(&self.key, path, body).await
    }

    /// POST JSON with a given key.
    pub async fn post_as(
        &self,
        key: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let resp = self
            .client
            .post(self.url(path))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Any request with this server's key; returns status and JSON body (Null if none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        self.call_as(&self.key, method, path, body).await
    }

    /// Any request with a given key.
    pub async fn call_as(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = self.client.request(method, self.url(path)).bearer_auth(key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let resp = request.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Uploads a batch file with a job's form: its `upload_fields`, then `file` last, as
    /// `curl -F` would. Returns the HTTP status.
    pub async fn upload(&self, job: &serde_json::Value, content: Vec<u8>) -> u16 {
        self.upload_answer(job, content).await.status().as_u16()
    }

    /// Like [`Server::upload`], returning the whole response.
    pub async fn upload_answer(
        &self,
        job: &serde_json::Value,
        content: Vec<u8>,
    ) -> reqwest::Response {
        let mut form = reqwest::multipart::Form::new();
        for (name, value) in job["upload_fields"].as_object().expect("upload_fields") {
            form = form.text(
                name.clone(),
                value.as_str().expect("string field").to_string(),
            );
        }
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(content).file_name("input.ndjson"),
        );
        let url = job["upload_url"].as_str().expect("upload_url");
        self.client
            .post(url)
            .multipart(form)
            .send()
            .await
            .expect("upload")
    }

    /// Creates a batch job with `config`, uploads `input` and starts it; returns its id.
    pub async fn start_job(&self, config: &serde_json::Value, input: Vec<u8>) -> String {
        let (status, job) = self.post("/v1/batch", config).await;
        assert_eq!(status, 201, "{job}");
        let id = job["job_id"].as_str().expect("job_id").to_string();
        assert_eq!(self.upload(&job, input).await / 100, 2, "upload");
        let (status, started) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/batch/{id}/start"),
                None,
            )
            .await;
        assert_eq!(status, 202, "{started}");
        id
    }

    /// A series' value in this server's `/metrics` (0 when absent); `series` is the
    /// name with its labels as exposed, e.g. `name{label="value"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Polls a batch job until it has `wanted` status; panics if it fails instead.
    pub async fn wait_for_job(
        &self,
        id: &str,
        wanted: &str,
        timeout: Duration,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, job) = self
                .call(reqwest::Method::GET, &format!("/v1/batch/{id}"), None)
                .await;
            assert_eq!(status, 200, "{job}");
            if job["status"] == wanted {
                return job;
            }
            assert!(job["status"] != "failed", "job failed: {job}");
            assert!(Instant::now() < deadline, "job not {wanted} in time: {job}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls a processing job until it has scored more than `lines` lines; returns it
    /// then, and panics if it is no longer processing (it ended too soon for the test).
    pub async fn wait_for_progress(&self, id: &str, lines: i64) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let (_, job) = self
                .call(reqwest::Method::GET, &format!("/v1/batch/{id}"), None)
                .await;
            if job["requests_completed"].as_i64().unwrap() > lines {
                assert_eq!(job["status"], "processing", "ended too soon: {job}");
                return job;
            }
            assert!(Instant::now() < deadline, "no progress: {job}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A completed job's result rows, through its download URL.
    pub async fn download_results(&self, id: &str) -> Vec<serde_json::Value> {
        let (status, results) = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/batch/{id}/results"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{results}");
        self.download_rows(results["url"].as_str().expect("url"))
            .await
    }

    /// The NDJSON rows at a (signed) download URL.
    pub async fn download_rows(&self, url: &str) -> Vec<serde_json::Value> {
        let body = self.client.get(url).send().await.expect("download");
        assert_eq!(body.status(), 200);
        let text = body.text().await.expect("results body");
        text.lines()
            .map(|line| serde_json::from_str(line).expect("result row is JSON"))
            .collect()
    }

    /// Runs the CLI against this server's database.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_zeroshot"))
            .args(args)
            .args(["--database-url", &self.database_url])
            .output()
            .expect("run zeroshot cli")
    }

    /// Sends SIGTERM and returns the exit status once the process is gone.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failing test shows what the server logged (when it captured its logs).
        if std::thread::panicking() {
            for line in self.logs() {
                eprintln!("server: {line}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
