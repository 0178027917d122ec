//! The model's ceiling on this machine: every text of an NDJSON file tokenized up
//! front, sorted by length and run through the ONNX graph in the engine's batches, in a tight loop
//! with no I/O, JSON or scoring. `scripts/perf_report.py` compares the service's batch
//! jobs with it. Usage (with the environment `scripts/setup.py --print-env` prints):
//! `cargo bench --bench ceiling -- FILE.ndjson`; prints one JSON object.

use std::time::Instant;

use zeroshot::cli::args::ModelArgs;
use zeroshot::engine::padding_bounded_runs;

fn main() {
    // `cargo bench` adds `--bench`; the file is the first other argument.
    let path = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with("--"))
        .expect("usage: cargo bench --bench ceiling -- FILE.ndjson");
    let content = std::fs::read_to_string(&path).expect("readable input file");
    let texts: Vec<String> = content
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let value: serde_json::Value =
                serde_json::from_str(line).expect("one JSON object per line");
            value["text"].as_str().expect("a text field").to_string()
        })
        .collect();
    drop(content);

    let engine = ModelArgs::from_env()
        .config()
        .load()
        .unwrap_or_else(|err| panic!("{err} (run scripts/setup.py and export its --print-env)"));
    let encoder = engine.encoder();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut encodings = encoder
        .tokenize(&refs, &encoder.manifest().text_prefix)
        .expect("tokenize");
    encodings.sort_by_key(|encoding| encoding.get_ids().len());
    let tokens: usize = encodings.iter().map(|e| e.get_ids().len()).sum();

    let lengths: Vec<usize> = encodings.iter().map(|e| e.get_ids().len()).collect();
    let batches = padding_bounded_runs(&lengths, encoder.run_limits());

    // Warm-up outside the clock: ONNX Runtime's first runs allocate. The engine's first
    // batch, not the first 32 texts: 32 texts of 2,048 tokens in one run would hold
    // gigabytes of attention scores that no real run does.
    if let Some(first) = batches.first() {
        let first: Vec<_> = encodings[first.clone()].iter().collect();
        encoder.run_encoded(&first).expect("inference");
    }
    let started = Instant::now();
    for range in batches {
        let batch: Vec<_> = encodings[range].iter().collect();
        std::hint::black_box(encoder.run_encoded(&batch).expect("inference"));
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "texts": texts.len(),
            "run_tokens": encoder.run_limits().tokens,
            "tokens": tokens,
            "seconds": seconds,
            "texts_per_second": texts.len() as f64 / seconds,
            "tokens_per_second": tokens as f64 / seconds,
            "peak_rss_mb": peak_rss_mb(),
        })
    );
}

/// This process's peak resident memory (VmHWM), in MB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
