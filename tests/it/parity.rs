//! Parity with independent references, made on this machine by `scripts/test.sh`:
//! - `scripts/parity_reference.py` embeds each of its texts on its own with Python
//!   `tokenizers` + `onnxruntime` (no batching, no padding) with the default model,
//!   into the file `ZEROSHOT_PARITY_REFERENCE` names;
//! - `scripts/nomic_reference.py` embeds 63 texts of up to 1,884 tokens with GPT4All
//!   (llama.cpp, its own tokenizer and graph) from the GGUF file `nomic-embed-text-v1.5`
//!   is derived from, into `ZEROSHOT_NOMIC_REFERENCE`.
//!
//! The engine must land on the same vectors while sorting, batching and padding, and
//! must count tokens and truncation alike.

use serde::Deserialize;

use crate::common;
use zeroshot::classify::{self, ClassifyError};
use zeroshot::engine::Engine;
use zeroshot::wire::SpecFields;

/// The default model against the same graph run by Python: only batching and padding
/// differ.
const MIN_COSINE: f64 = 0.9999;
/// `nomic-embed-text-v1.5` (fp32) against llama.cpp, which multiplies by the f16
/// weights in f16 arithmetic.
const NOMIC_MIN_COSINE: f64 = 0.999;

#[derive(Deserialize)]
struct Fixture {
    model: String,
    texts: Vec<Reference>,
    #[serde(default)]
    rejected: Vec<String>,
}

#[derive(Deserialize)]
struct Reference {
    text: String,
    tokens: usize,
    truncated: bool,
    embedding: Vec<f32>,
}

/// The reference file the environment variable `var` names.
fn read_fixture(var: &str) -> Fixture {
    let path = std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} names a parity reference made on this machine (run the tests with scripts/test.sh)")
    });
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {path}: {err}"));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{path} is not a reference: {err}"))
}

fn fixture() -> Fixture {
    read_fixture("ZEROSHOT_PARITY_REFERENCE")
}

/// A model other than the default, from the same models directory.
fn load_model(name: &str) -> Engine {
    zeroshot::cli::args::ModelArgs {
        model: name.to_string(),
        ..zeroshot::cli::args::ModelArgs::from_env()
    }
    .config()
    .load()
    .unwrap_or_else(|err| panic!("load {name}: {err} (scripts/test.sh sets it up)"))
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

/// Embeds every fixture text in one engine call (sorting by length, batching and
/// per-batch padding are all exercised) and compares vectors, token counts and
/// truncation flags with the reference.
fn assert_matches_reference(engine: &Engine, fixture: &Fixture, min_cosine: f64) {
    assert_eq!(
        engine.model_name(),
        fixture.model,
        "the reference is another model's"
    );
    let texts: Vec<&str> = fixture.texts.iter().map(|r| r.text.as_str()).collect();
    let embeddings = engine.embed_texts(&texts).expect("embed fixture texts");
    assert_eq!(embeddings.len(), fixture.texts.len());

    let mut failures = Vec::new();
    let mut worst = (f64::INFINITY, "");
    let mut sum = 0.0;
    for (reference, embedding) in fixture.texts.iter().zip(&embeddings) {
        assert_eq!(
            embedding.vector.len(),
            reference.embedding.len(),
            "dimension for {:?}",
            reference.text
        );
        let similarity = cosine(&embedding.vector, &reference.embedding);
        sum += similarity;
        if similarity < worst.0 {
            worst = (similarity, reference.text.as_str());
        }
        if similarity < min_cosine {
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
        "model {}: {} texts, mean cosine {:.9}, worst {:.9} (1 - cos = {:.2e}) for {shown:?}",
        fixture.model,
        fixture.texts.len(),
        sum / fixture.texts.len() as f64,
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
    assert_matches_reference(&common::engine(), &fixture, MIN_COSINE);
}

/// `nomic-embed-text-v1.5`: our ONNX graph and tokenizer, both derived from the GGUF
/// file, against llama.cpp running that file, on short texts and on texts far past
/// the default model's 256 tokens (up to 1,884).
#[test]
fn nomic_embeddings_match_llama_cpp() {
    let fixture = read_fixture("ZEROSHOT_NOMIC_REFERENCE");
    assert!(
        fixture.texts.len() >= 50,
        "fixture has only {} texts",
        fixture.texts.len()
    );
    assert!(
        fixture.texts.iter().filter(|r| r.tokens > 512).count() >= 3,
        "fixture has too few texts past 512 tokens"
    );
    assert_matches_reference(
        &load_model("nomic-embed-text-v1.5"),
        &fixture,
        NOMIC_MIN_COSINE,
    );
}

/// Blank texts are refused as `/v1/classify` refuses them (422, naming the text): the
/// classification service the API and the CLI share.
#[test]
fn empty_after_trim_texts_are_rejected() {
    let fixture = fixture();
    assert!(!fixture.rejected.is_empty());
    let engine = common::engine();
    let fields = SpecFields {
        labels: Some(vec!["billing".to_string(), "bug report".to_string()]),
        ..SpecFields::default()
    };
    let refused_param = |text: Option<&String>, texts: Option<&Vec<String>>| match classify::run(
        &engine, text, texts, &fields,
    ) {
        Err(ClassifyError::Invalid { param, .. }) => param,
        other => panic!("expected a 422 refusal, got {other:?}"),
    };
    for rejected in &fixture.rejected {
        assert_eq!(
            refused_param(Some(rejected), None),
            "text",
            "text {rejected:?}"
        );
        let texts = vec!["fine".to_string(), rejected.clone()];
        assert_eq!(
            refused_param(None, Some(&texts)),
            "texts[1]",
            "texts {rejected:?}"
        );
    }
}

/// The default model's integer products against the published graph it is made from
/// (fp32 arithmetic): its quantization moves vectors by 1 - cos ~0.005 on
/// average (docs/models.md#the-default-model); a broken derivation would land far away.
#[test]
fn integer_model_stays_close_to_the_float_graph() {
    let fixture = fixture();
    let float = load_model("all-minilm-l6-v2-int8");
    assert_close_to_float(&common::engine(), &float, &fixture);
}

/// `nomic-embed-text-v1.5`'s integer graph against its fp32 graph, on texts of up to
/// 1,884 tokens: 1 - cos ~0.001 on average (docs/models.md#nomic-embed-text-v15-opt-in).
#[test]
fn nomic_integer_model_stays_close_to_the_float_graph() {
    let fixture = read_fixture("ZEROSHOT_NOMIC_REFERENCE");
    assert_close_to_float(
        &load_model("nomic-embed-text-v1.5-int8-cpu"),
        &load_model("nomic-embed-text-v1.5"),
        &fixture,
    );
}

fn assert_close_to_float(integer: &Engine, float: &Engine, fixture: &Fixture) {
    let texts: Vec<&str> = fixture.texts.iter().map(|r| r.text.as_str()).collect();
    let integer = integer.embed_texts(&texts).expect("embed");
    let float = float.embed_texts(&texts).expect("embed");
    let similarities: Vec<f64> = integer
        .iter()
        .zip(&float)
        .map(|(a, b)| cosine(&a.vector, &b.vector))
        .collect();
    let mean = similarities.iter().sum::<f64>() / similarities.len() as f64;
    let worst = similarities.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "{}: mean cosine {mean:.5}, worst {worst:.5} to the float graph",
        fixture.model
    );
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
    assert_batch_independent(&common::engine());
}

/// The same for `nomic-embed-text-v1.5`'s integer graph (per-token scales only).
#[test]
fn a_texts_vector_does_not_depend_on_its_batch_nomic() {
    assert_batch_independent(&load_model("nomic-embed-text-v1.5-int8-cpu"));
}

fn assert_batch_independent(engine: &Engine) {
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
        "{}: alone vs batched cosine {similarity}",
        engine.model_name()
    );
}
