//! The offline commands end to end: `zeroshot classify` and `zeroshot eval` with the
//! real binary and model.

use std::process::Command;

use serde_json::Value;

/// Twelve labelled support tickets (one record spans two lines).
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tickets.tsv");

/// The fixture's entry of an eval report.
fn eval(args: &[&str]) -> Value {
    eval_report(args)["datasets"][FIXTURE].clone()
}

/// The whole eval report on the fixture.
fn eval_report(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_zeroshot"))
        .args(["eval", "--data", FIXTURE])
        .args(args)
        .output()
        .expect("run zeroshot eval");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON report")
}

#[test]
fn reports_accuracy_f1_and_multi_recall() {
    let report = eval(&[]);
    assert_eq!(
        report["texts"], 12,
        "the quoted two-line record counts once"
    );
    assert_eq!(report["labels"], 3);
    let accuracy = report["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.75, "easy tickets: {report}");
    assert!(report["macro_f1"].as_f64().unwrap() > 0.7);
    assert!(report["worst_labels"].as_array().unwrap().len() <= 3);
    assert!(report["multi_recall"].as_f64().is_some());
    assert!(report["texts_per_second"].as_f64().unwrap() > 0.0);
}

#[test]
fn examples_from_train_data_are_used() {
    // Training on the test file itself with every example: each text is its own
    // label's example, so almost everything must come out right.
    let report = eval(&["--train", FIXTURE, "--examples-per-label", "4"]);
    assert!(report["accuracy"].as_f64().unwrap() >= 0.9, "{report}");
}

#[test]
fn baseline_scores_bare_label_names_and_takes_no_method_options() {
    let baseline = eval(&["--baseline"]);
    assert_eq!(baseline["texts"], 12);
    assert!(baseline["accuracy"].as_f64().unwrap() >= 0.5, "{baseline}");
    // The multi-mode bias (Newton's method) is a continuous function of every cosine,
    // where 12 texts' hit counts can coincide: other label vectors, another bias.
    let bias = |args: &[&str]| eval_report(args)["fitted_calibration"]["multi_bias"].clone();
    assert_ne!(
        bias(&["--baseline", "--fit-calibration"]),
        bias(&["--fit-calibration"]),
        "different label vectors give different cosines"
    );

    let refused = Command::new(env!("CARGO_BIN_EXE_zeroshot"))
        .args([
            "eval",
            "--data",
            FIXTURE,
            "--baseline",
            "--source-type",
            "ticket",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--source-type"));
}

#[test]
fn fits_calibration_constants() {
    let output = Command::new(env!("CARGO_BIN_EXE_zeroshot"))
        .args(["eval", "--data", FIXTURE, "--fit-calibration"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let fitted = &report["fitted_calibration"];
    assert!(fitted["multi_scale"].as_f64().unwrap() > 0.0, "{report}");
    assert!(fitted["single_temperature"].as_f64().unwrap() > 0.0);
}

#[test]
fn classify_prints_the_api_json_without_a_server() {
    let run = |args: &[&str]| -> Value {
        let output = Command::new(env!("CARGO_BIN_EXE_zeroshot"))
            .arg("classify")
            .args(args)
            .output()
            .expect("run zeroshot classify");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("JSON")
    };
    let one = run(&[
        "--labels",
        "billing,technical_issue",
        "I was charged twice this month",
    ]);
    assert_eq!(one["label"], "billing", "{one}");
    assert_eq!(one["mode"], "single");
    assert_eq!(one["model"], "all-minilm-l6-v2-int8-cpu");
    assert_eq!(one["scores"].as_array().unwrap().len(), 2);
    for field in ["confidence", "labels", "tokens", "truncated", "latency_ms"] {
        assert!(!one[field].is_null(), "{field} missing: {one}");
    }

    let many = run(&[
        "--labels",
        "billing,technical_issue",
        "--mode",
        "multi",
        "--threshold",
        "0.01",
        "The app crashes on start",
        "Refund my payment",
    ]);
    let results = many["results"].as_array().unwrap();
    assert_eq!(results[0]["label"], "technical_issue", "{many}");
    assert_eq!(results[1]["label"], "billing", "{many}");
    assert_eq!(many["mode"], "multi");

    let refused = Command::new(env!("CARGO_BIN_EXE_zeroshot"))
        .args(["classify", "--labels", "a,a", "text"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("labels[1]"));
}

#[test]
fn cuda_without_a_cuda_runtime_fails_instead_of_falling_back_to_cpu() {
    // scripts/setup.py fetches the CPU build of ONNX Runtime: asking for CUDA must fail.
    let output = Command::new(env!("CARGO_BIN_EXE_zeroshot"))
        .args(["classify", "--device", "cuda", "--labels", "a,b", "hello"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        output.stdout.is_empty(),
        "no result on the CPU behind the caller's back"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CUDA"), "{stderr}");
}
