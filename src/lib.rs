//! zeroshot: a self-hosted zero-shot text classification service.
//!
//! - [`engine`]: tokenize, run the ONNX model, score (no HTTP, no database).
//! - [`batch`]: batch job input parsing and the streaming worker.
//! - [`classifiers`]: saved, versioned classifiers (API and CLI share them).
//! - [`storage`]: object storage (S3 or a local directory) for batch files.
//! - [`db`]: accounts and API keys in SQLite or Postgres.
//! - [`api`]: the HTTP surface.
//! - [`eval`]: accuracy on labelled data, and calibration fitting.
//! - [`config`]: command-line flags with environment fallbacks.
//! - [`metrics`]: the Prometheus metrics and the calls that record them.
//! - [`client`]: a typed client of the HTTP API; [`remote`]: the CLI commands using it.
//! - [`webhooks`]: signed notices of batch jobs ending, delivered with retries.
//! - [`outage`]: storage and database faults retried with backoff, logged once per outage.
//! - [`calendar`]: UTC days, which usage is counted by; [`usage`]: the CLI's `usage`
//!   and `accounts` commands.

pub mod api;
pub mod batch;
pub mod classifiers;
pub mod classify;
pub mod cli;
pub mod clock;
pub mod db;
pub mod engine;
pub mod metrics;
pub mod outage;
pub mod server;
pub mod storage;
pub mod usage;
pub mod webhooks;
pub mod wire;
