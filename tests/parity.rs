//! Parity with an independent reference: `scripts/parity_reference.py` embeds each
//! of its texts on its own with Python `tokenizers` + `onnxruntime` (no batching, no
//! padding), on this machine, into the file `ZEROSHOT_PARITY_REFERENCE` names
//! (`scripts/test.sh` makes it). The engine must land on the same vectors while
//! sorting, batching and padding, and must count tokens and truncation alike.

mod common;

use serde::Deserialize;
use zeroshot::api::classify::{run, ClassifyRequest};

const MIN_COSINE: f64 = 0.9999;

#[derive(Deserialize)]
struct Fixture {
    model: String,
    texts: Vec<Reference>,
    rejected: Vec<String>,
}

#[derive(Deserialize)]
struct Reference {
    text: String,
    tokens: usize,
    truncated: bool,
    embedding: Vec<f32>,
}

fn fixture() -> Fixture {
    let path = std::env::var("ZEROSHOT_PARITY_REFERENCE").expect(
        "ZEROSHOT_PARITY_REFERENCE names the reference scripts/parity_reference.py made \
         on this machine (run the tests with scripts/test.sh)",
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {path}: {err}"));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{path} is not a reference: {err}"))
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn embeddings_match_python_reference() {
    let fixture = fixture();
    assert!(
        fixture.texts.len() >= 40,
        "fixture has only {} texts",
        fixture.texts.len()
    );
    assert!(
        fixture.texts.iter().any(|r| r.truncated),
        "fixture has no truncated text"
    );

    let engine = common::engine();
    let texts: Vec<&str> = fixture.texts.iter().map(|r| r.text.as_str()).collect();
    // One call: sorting by length, batching and per-batch padding are all exercised.
    let embeddings = engine.embed_texts(&texts).expect("embed fixture texts");
    assert_eq!(embeddings.len(), fixture.texts.len());

    let mut failures = Vec::new();
    let mut worst = (f64::INFINITY, "");
    for (reference, embedding) in fixture.texts.iter().zip(&embeddings) {
        assert_eq!(
            embedding.vector.len(),
            reference.embedding.len(),
            "dimension for {:?}",
            reference.text
        );
        let similarity = cosine(&embedding.vector, &reference.embedding);
        if similarity < worst.0 {
            worst = (similarity, reference.text.as_str());
        }
        if similarity < MIN_COSINE {
            failures.push(format!("cosine {similarity:.6} for {:?}", reference.text));
        }
        if embedding.tokens != reference.tokens {
            failures.push(format!(
                "tokens {} (reference {}) for {:?}",
                embedding.tokens, reference.tokens, reference.text
            ));
        }
        if embedding.truncated != reference.truncated {
            failures.push(format!(
                "truncated {} (reference {}) for {:?}",
                embedding.truncated, reference.truncated, reference.text
            ));
        }
    }
    let shown: String = worst.1.chars().take(60).collect();
    println!(
        "model {}: {} texts, worst cosine {:.9} (1 - cos = {:.2e}) for {shown:?}",
        fixture.model,
        fixture.texts.len(),
        worst.0,
        1.0 - worst.0
    );
    assert!(
        failures.is_empty(),
        "{} parity failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn empty_after_trim_texts_are_rejected() {
    let fixture = fixture();
    assert!(!fixture.rejected.is_empty());
    let engine = common::engine();
    let labels = || Some(vec!["billing".to_string(), "bug report".to_string()]);
    let classify = |request: ClassifyRequest| run(&engine, &request);

    for rejected in &fixture.rejected {
        let err = classify(ClassifyRequest {
            text: Some(rejected.clone()),
            labels: labels(),
            ..Default::default()
        })
        .err()
        .unwrap_or_else(|| panic!("text {rejected:?} was accepted"));
        assert_eq!(err.param.as_deref(), Some("text"), "text {rejected:?}");
        assert_eq!(err.status.as_u16(), 422, "text {rejected:?}");

        let err = classify(ClassifyRequest {
            texts: Some(vec!["fine".into(), rejected.clone()]),
            labels: labels(),
            ..Default::default()
        })
        .err()
        .unwrap_or_else(|| panic!("texts [\"fine\", {rejected:?}] was accepted"));
        assert_eq!(err.param.as_deref(), Some("texts[1]"), "texts {rejected:?}");
        assert_eq!(err.status.as_u16(), 422, "texts {rejected:?}");
    }
}

/// The default model's integer products against the published graph it is made from
/// (fp32 arithmetic): its quantization moves vectors by 1 - cos ~0.005 on
/// average (README "Models"); a broken derivation would land far away.
#[test]
fn integer_model_stays_close_to_the_float_graph() {
    let float = zeroshot::config::ModelArgs {
        model: "all-minilm-l6-v2-int8".to_string(),
        ..zeroshot::config::ModelArgs::from_env()
    }
    .load_engine()
    .expect("load all-minilm-l6-v2-int8 (scripts/setup.py fetches every manifest)");
    let fixture = fixture();
    let texts: Vec<&str> = fixture.texts.iter().map(|r| r.text.as_str()).collect();
    let integer = common::engine().embed_texts(&texts).expect("embed");
    let float = float.embed_texts(&texts).expect("embed");
    let similarities: Vec<f64> = integer
        .iter()
        .zip(&float)
        .map(|(a, b)| cosine(&a.vector, &b.vector))
        .collect();
    let mean = similarities.iter().sum::<f64>() / similarities.len() as f64;
    let worst = similarities.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(mean > 0.99, "mean cosine {mean}");
    assert!(worst > 0.95, "worst cosine {worst}");
    assert!(
        mean < 1.0 - 1e-6,
        "the two models are not different graphs: {mean}"
    );
}

/// Activations are quantized per token or by a fixed calibrated scale, never by one
/// taken from the batch, so a text's vector does not depend on the texts batched with
/// it (or their padding): the same ticket scores the same in a
/// batch job and in a lone `/v1/classify` call.
#[test]
fn a_texts_vector_does_not_depend_on_its_batch() {
    let engine = common::engine();
    let text = "I was charged twice for my subscription this month";
    let alone = engine.embed_texts(&[text]).expect("embed").remove(0);
    // Near-equal lengths share one ONNX run (a lone outlier would run alone); the
    // one-token-longer mate pads this text.
    let batch = [
        "she was billed twice for her subscription last month",
        text,
        "THE APP CRASHES WHENEVER I OPEN THE SETTINGS PAGE!!!",
        "I was charged twice for my yearly subscription this month",
        "hi",
    ];
    let together = engine.embed_texts(&batch).expect("embed").remove(1);
    let similarity = cosine(&alone.vector, &together.vector);
    assert!(
        similarity > 1.0 - 1e-9,
        "alone vs batched cosine {similarity}"
    );
}
