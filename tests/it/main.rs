//! Every integration test in one binary, so that a build links the crate and its
//! dependencies (ONNX Runtime, the AWS SDK, sqlx) into one test executable, not one per
//! file. One module per area; the shared helpers are in `tests/common`. Run one area
//! with a name filter: `cargo test --release --test it playground::`.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod adapt;
mod batch;
mod cancel;
mod classifiers;
mod classifiers_learn;
mod cli;
mod cli_batch;
mod cors;
mod docs;
mod faults;
mod hostile_text;
mod http_api;
mod idempotency;
mod inline_items;
mod observability;
mod openapi;
mod parity;
mod playground;
mod retention;
mod shards;
mod shutdown;
mod storage_local;
mod storage_s3;
mod usage;
mod webhooks;
