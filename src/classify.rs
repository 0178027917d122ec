//! Classifying texts as `/v1/classify` does, with no HTTP: the texts and the spec
//! checked, the texts scored against the label vectors and the answer shaped. The
//! server embeds through its inference queue (`api::classify`); the CLI's local
//! `zeroshot classify` calls [`run`] in its own thread. Both print identical JSON.

use std::time::Instant;

use crate::engine::text::{self, TextError};
use crate::engine::{
    Classification, Embedding, Engine, EngineError, LabelError, LabelScorer, Spec,
};
use crate::wire::SpecFields;
pub use crate::wire::{ClassifyRequest, ClassifyResponse, MultiResponse, SingleResponse};

/// Most texts in one `texts` request.
pub const MAX_TEXTS: usize = 64;

/// Why texts could not be classified.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    /// A field's value is not acceptable (an empty text, too many texts).
    #[error("{param}: {message}")]
    Invalid { param: String, message: String },
    /// The request itself is malformed (both of two exclusive fields, a NUL in a text).
    #[error("{param}: {message}")]
    Malformed { param: String, message: String },
    /// The labels (or their descriptions, examples) are not acceptable.
    #[error("{}: {}", .0.param, .0.message)]
    Labels(#[from] LabelError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

fn invalid(param: impl Into<String>, message: impl Into<String>) -> ClassifyError {
    ClassifyError::Invalid {
        param: param.into(),
        message: message.into(),
    }
}

fn malformed(param: impl Into<String>, message: impl Into<String>) -> ClassifyError {
    ClassifyError::Malformed {
        param: param.into(),
        message: message.into(),
    }
}

/// Classifies `text` or `texts` against inline labels (`fields`) in the calling thread,
/// without the inference queue (the CLI).
pub fn run(
    engine: &Engine,
    text: Option<&String>,
    many: Option<&Vec<String>>,
    fields: &SpecFields,
) -> Result<ClassifyResponse, ClassifyError> {
    let started = Instant::now();
    let texts = texts(text, many)?;
    let spec = fields.check(None)?;
    let labels = engine.label_vectors(&spec.labels)?;
    let embeddings = engine.embed_texts(&texts)?;
    Ok(respond(
        engine,
        text.is_some(),
        &spec,
        &labels,
        None,
        &embeddings,
        started,
    ))
}

/// Scores embedded texts and shapes the answer; `started` is when the request
/// arrived, for `latency_ms`.
pub fn respond(
    engine: &Engine,
    single: bool,
    spec: &Spec,
    labels: &dyn LabelScorer,
    classifier: Option<String>,
    embeddings: &[Embedding],
    started: Instant,
) -> ClassifyResponse {
    let mode = spec.mode;
    let mut results: Vec<Classification> = embeddings
        .iter()
        .map(|embedding| engine.score(embedding, labels, mode, spec.threshold))
        .collect();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let model = engine.model_name().to_string();
    if single {
        ClassifyResponse::Single(SingleResponse {
            result: results.remove(0),
            mode,
            classifier,
            latency_ms,
            model,
        })
    } else {
        ClassifyResponse::Multi(MultiResponse {
            tokens: results.iter().map(|r| r.tokens).sum(),
            results,
            mode,
            classifier,
            latency_ms,
            model,
        })
    }
}

/// The texts to classify: one `text` or up to [`MAX_TEXTS`] `texts`, each checked.
pub fn texts<'a>(
    text: Option<&'a String>,
    texts: Option<&'a Vec<String>>,
) -> Result<Vec<&'a str>, ClassifyError> {
    match (text, texts) {
        (Some(_), Some(_)) => Err(malformed("texts", "send either text or texts, not both")),
        (None, None) => Err(invalid("text", "text (or texts) is required")),
        (Some(text), None) => {
            check_text("text", text)?;
            Ok(vec![text.as_str()])
        }
        (None, Some(texts)) => {
            if texts.is_empty() {
                return Err(invalid("texts", "texts is empty"));
            }
            if texts.len() > MAX_TEXTS {
                return Err(invalid(
                    "texts",
                    format!(
                        "at most {MAX_TEXTS} texts per request, got {} (use /v1/batch)",
                        texts.len()
                    ),
                ));
            }
            for (i, text) in texts.iter().enumerate() {
                check_text(&format!("texts[{i}]"), text)?;
            }
            Ok(texts.iter().map(String::as_str).collect())
        }
    }
}

/// A blank text is a 422 like any unacceptable value; a NUL is a 400, as a lone
/// surrogate (which never parses) is: both mean the client sent no real text.
fn check_text(param: &str, text: &str) -> Result<(), ClassifyError> {
    text::check(text).map_err(|err| match err {
        TextError::Blank => invalid(param, err.to_string()),
        TextError::Nul | TextError::LoneSurrogate => malformed(param, err.to_string()),
    })
}
