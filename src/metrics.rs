//! Prometheus metrics: every name, bucket set and description lives here, and the rest
//! of the code records through the few functions below (no metric name is spelled
//! anywhere else). Labels stay bounded: route templates, methods, statuses, outcomes and
//! job statuses; never an account, a text or a raw path.
//!
//! Recording is a no-op until [`install`] runs (`serve` does), so the CLI, the benches
//! and the tests that use the engine directly pay nothing.

use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

const HTTP_REQUESTS: &str = "zeroshot_http_requests_total";
const HTTP_DURATION: &str = "zeroshot_http_request_duration_seconds";
const INFERENCE_TEXTS: &str = "zeroshot_inference_run_texts";
const INFERENCE_DURATION: &str = "zeroshot_inference_duration_seconds";
const TOKENS_EMBEDDED: &str = "zeroshot_tokens_embedded_total";
const QUEUE_DEPTH: &str = "zeroshot_inference_queue_depth";
const BATCH_JOBS: &str = "zeroshot_batch_jobs";
const BATCH_LINES: &str = "zeroshot_batch_lines_scored_total";
const LEASE_RENEWALS: &str = "zeroshot_batch_lease_renewals_total";
const JOB_RESUMES: &str = "zeroshot_batch_job_resumes_total";
const WEBHOOK_ATTEMPTS: &str = "zeroshot_webhook_attempts_total";
const DEPENDENCY_RETRIES: &str = "zeroshot_dependency_retries_total";

/// Seconds, from a cached-label `/v1/classify` of one short text (about a millisecond)
/// to a long batch chunk's ONNX run on a slow machine.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Texts per ONNX run: powers of two up to the engine's largest batch (32).
const TEXTS_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0];

/// How often histogram samples are folded into their buckets between scrapes, so an
/// unscraped instance does not keep them all.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the global Prometheus recorder, describes every metric, starts the series
/// without labels (and the batch line outcomes) at zero so they show before their first
/// event, and keeps histogram memory bounded. Call once, inside the Tokio runtime.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(INFERENCE_DURATION.into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(INFERENCE_TEXTS.into()), TEXTS_BUCKETS)?
        .install_recorder()?;
    describe_all();
    start_at_zero();
    spawn_upkeep(handle.clone());
    Ok(handle)
}

/// Describes every metric (its help line, and its unit where it has one).
fn describe_all() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route template, method and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency until the response head, by route template and method"
    );
    describe_histogram!(
        INFERENCE_TEXTS,
        "Texts per ONNX run (the _count is the number of runs)"
    );
    describe_histogram!(
        INFERENCE_DURATION,
        Unit::Seconds,
        "ONNX run latency, input tensors to pooled vectors (waiting for the session included)"
    );
    describe_counter!(
        TOKENS_EMBEDDED,
        "Tokens run through the model (texts, label sentences, adaptation samples), padding excluded"
    );
    describe_gauge!(
        QUEUE_DEPTH,
        "/v1/classify requests waiting in the inference queue"
    );
    describe_gauge!(
        BATCH_JOBS,
        "Batch jobs by status in the database (all instances sharing it), read at scrape time"
    );
    describe_counter!(
        BATCH_LINES,
        "Batch job lines scored by this instance's worker, by outcome (ok or error)"
    );
    describe_counter!(
        LEASE_RENEWALS,
        "Heartbeats that extended a batch job's lease"
    );
    describe_counter!(
        JOB_RESUMES,
        "Batch jobs taken over after their worker's lease expired"
    );
    describe_counter!(
        WEBHOOK_ATTEMPTS,
        "Webhook delivery attempts by this instance, by outcome (delivered, retry, failed)"
    );
    describe_counter!(
        DEPENDENCY_RETRIES,
        "Calls of the background loops (batch worker, webhook deliveries, usage writes) that met an unavailable dependency (storage or database), to be retried"
    );
}

/// Starts the series without labels, and those with a fixed set of outcomes or
/// dependencies, at zero so they show before their first event.
fn start_at_zero() {
    counter!(TOKENS_EMBEDDED).absolute(0);
    gauge!(QUEUE_DEPTH).set(0.0);
    counter!(BATCH_LINES, "outcome" => "ok").absolute(0);
    counter!(BATCH_LINES, "outcome" => "error").absolute(0);
    counter!(LEASE_RENEWALS).absolute(0);
    counter!(JOB_RESUMES).absolute(0);
    for outcome in ["delivered", "retry", "failed"] {
        counter!(WEBHOOK_ATTEMPTS, "outcome" => outcome).absolute(0);
    }
    for dependency in ["storage", "database"] {
        counter!(DEPENDENCY_RETRIES, "dependency" => dependency).absolute(0);
    }
}

/// Folds histogram samples into their buckets every [`UPKEEP_INTERVAL`], so an
/// unscraped instance does not keep them all.
fn spawn_upkeep(upkeep: PrometheusHandle) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
}

/// The Prometheus text exposition, with the number of batch jobs in each status as the
/// caller read them now (every status, zero included: the gauge keeps its last value).
pub fn render(handle: &PrometheusHandle, jobs_by_status: &[(&'static str, i64)]) -> String {
    for &(status, count) in jobs_by_status {
        gauge!(BATCH_JOBS, "status" => status).set(count as f64);
    }
    handle.render()
}

/// One answered HTTP request. `route` is the matched route template (or a fixed word
/// for unmatched paths), `method` one of a fixed set: both bounded.
pub fn http_request(route: &str, method: &'static str, status: u16, latency: Duration) {
    let route = route.to_string();
    counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => status.to_string())
        .increment(1);
    histogram!(HTTP_DURATION, "route" => route, "method" => method).record(latency.as_secs_f64());
}

/// One ONNX run over `texts` texts holding `tokens` real tokens.
pub fn inference(texts: usize, tokens: usize, latency: Duration) {
    histogram!(INFERENCE_TEXTS).record(texts as f64);
    histogram!(INFERENCE_DURATION).record(latency.as_secs_f64());
    counter!(TOKENS_EMBEDDED).increment(tokens as u64);
}

/// A request joined the inference queue.
pub fn request_queued() {
    gauge!(QUEUE_DEPTH).increment(1.0);
}

/// A request left the inference queue (taken into a run, or refused).
pub fn request_dequeued() {
    gauge!(QUEUE_DEPTH).decrement(1.0);
}

/// A scored batch chunk: `ok` lines with a result, `errors` lines with an error row.
pub fn lines_scored(ok: i64, errors: i64) {
    counter!(BATCH_LINES, "outcome" => "ok").increment(ok.max(0) as u64);
    counter!(BATCH_LINES, "outcome" => "error").increment(errors.max(0) as u64);
}

/// A batch job's lease was extended by a heartbeat.
pub fn lease_renewed() {
    counter!(LEASE_RENEWALS).increment(1);
}

/// This worker took over a job whose previous worker stopped reporting.
pub fn job_resumed() {
    counter!(JOB_RESUMES).increment(1);
}

/// A webhook delivery attempt ended: `delivered`, `retry` (tried again later) or
/// `failed` (given up).
pub fn webhook_attempt(outcome: &'static str) {
    counter!(WEBHOOK_ATTEMPTS, "outcome" => outcome).increment(1);
}

/// A background call that failed because `dependency` (`storage` or `database`) was
/// unavailable, to be retried.
pub fn dependency_retry(dependency: &'static str) {
    counter!(DEPENDENCY_RETRIES, "dependency" => dependency).increment(1);
}
