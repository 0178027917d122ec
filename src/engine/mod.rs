//! The classification engine: tokenize, run the model, score. No HTTP, no database.

pub mod adapt;
mod head;
mod labels;
mod manifest;
mod model;
pub mod queue;
pub mod runtime;
mod score;
pub mod text;

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use lru::LruCache;
use serde::Serialize;

pub use adapt::{AdaptationReport, Adapted, AdaptedLabels};
pub use labels::{Label, LabelError, LabelSet, Mode};
pub use manifest::{Calibration, Manifest, Pooling};
pub use model::{padding_bounded_runs, Device, Embedding, EmbeddingModel, RunLimits};
pub use score::probabilities;

use labels::label_sentences;
use model::normalize;

/// Multi-mode threshold when a request gives none.
pub const DEFAULT_THRESHOLD: f32 = 0.3;
/// Label vectors kept in memory; 384-dim vectors make this about 30 MB.
const LABEL_CACHE_ENTRIES: usize = 20_000;
/// Whole label sets' prepared vectors kept in memory (each at most 200 vectors, so
/// at most about 20 MB).
const SET_CACHE_ENTRIES: usize = 64;
/// With examples, the label's own vector counts as this many examples: its weight is
/// M / (M + K) for K examples, so one example leans on the name and eight on the
/// examples (chosen on the dev sets, docs/accuracy.md#choices-measured-on-the-dev-sets).
const LABEL_WORTH_IN_EXAMPLES: f32 = 1.0;
/// Saved versions' adapted label vectors kept in memory, parsed (each about 1 MB).
const ADAPTED_CACHE_ENTRIES: usize = 32;
/// Sampled texts embedded per engine call when adapting (as many as a batch job's chunk).
const ADAPT_EMBED_CHUNK: usize = 2048;

/// Everything that can go wrong inside the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("model could not be loaded: {0}")]
    ModelLoad(String),
    /// [`ModelConfig::load`] failed: the directory it read, and why.
    #[error("loading model {}: {source}", dir.display())]
    Load {
        dir: std::path::PathBuf,
        source: Box<EngineError>,
    },
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    #[error("inference failed: {0}")]
    Inference(String),
}

impl From<ort::Error> for EngineError {
    fn from(err: ort::Error) -> Self {
        EngineError::Inference(err.to_string())
    }
}

/// One label's probability.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

/// The outcome for one text.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Classification {
    /// The most probable label.
    pub label: String,
    /// Its probability.
    pub confidence: f32,
    /// `single`: the top label. `multi`: every label at or above the threshold (maybe none).
    pub labels: Vec<String>,
    /// Every label with its probability, most probable first.
    pub scores: Vec<LabelScore>,
    pub tokens: usize,
    pub truncated: bool,
}

/// Everything that defines how texts are classified: validated once, stored with batch
/// jobs and saved classifiers, applied the same way by every path.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Spec {
    pub labels: LabelSet,
    pub mode: Mode,
    pub threshold: f32,
    /// Batch jobs fit the label vectors to their own texts first (`engine::adapt`);
    /// specs stored before the option existed adapt, as new ones do by default.
    #[serde(default = "adapt_by_default")]
    pub adapt: bool,
}

fn adapt_by_default() -> bool {
    true
}

impl Spec {
    /// Validates every part; errors name the request field at fault.
    pub fn new(
        names: &[String],
        descriptions: &BTreeMap<String, String>,
        examples: &BTreeMap<String, Vec<String>>,
        source_type: Option<&str>,
        mode: Option<Mode>,
        threshold: Option<f32>,
        adapt: Option<bool>,
    ) -> Result<Self, LabelError> {
        let labels = LabelSet::new(names, descriptions, examples, source_type)?;
        Ok(Self {
            labels,
            mode: mode.unwrap_or_default(),
            threshold: threshold_or_default(threshold)?,
            adapt: adapt.unwrap_or_else(adapt_by_default),
        })
    }
}

/// A requested multi-mode threshold (0-1), or the default.
pub fn threshold_or_default(threshold: Option<f32>) -> Result<f32, LabelError> {
    match threshold {
        None => Ok(DEFAULT_THRESHOLD),
        Some(t) if t.is_finite() && (0.0..=1.0).contains(&t) => Ok(t),
        Some(t) => Err(LabelError {
            param: "threshold".to_string(),
            message: format!("threshold must be between 0 and 1, got {t}"),
        }),
    }
}

/// Label vectors ready for scoring: computed once per label set, reusable across texts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LabelVectors {
    pub names: Vec<String>,
    pub vectors: Vec<Vec<f32>>,
}

/// Turns a text's vector into one similarity per label, on the footing of one of the
/// model's calibrations: plain label vectors (every sync call) and a batch job's
/// adapted ones score through the same code.
pub trait LabelScorer: Send + Sync {
    /// Label names, in the order of the similarities.
    fn names(&self) -> &[String];
    /// One similarity per label for a unit text vector.
    fn similarities(&self, text: &[f32]) -> Vec<f32>;
    /// The calibration that turns these similarities into probabilities.
    fn calibration<'a>(&self, manifest: &'a Manifest) -> &'a Calibration;
}

impl LabelScorer for LabelVectors {
    fn names(&self) -> &[String] {
        &self.names
    }

    fn similarities(&self, text: &[f32]) -> Vec<f32> {
        score::cosines(text, &self.vectors)
    }

    fn calibration<'a>(&self, manifest: &'a Manifest) -> &'a Calibration {
        &manifest.calibration
    }
}

/// The prototype of a label whose own (unit) vector is `vector`: that vector, or with
/// examples their mean blended in, the label counting as
/// [`LABEL_WORTH_IN_EXAMPLES`] examples.
fn blend_examples(vector: &[f32], examples: &[Arc<Vec<f32>>]) -> Vec<f32> {
    let mut prototype = vector.to_vec();
    if !examples.is_empty() {
        let label_weight =
            LABEL_WORTH_IN_EXAMPLES / (LABEL_WORTH_IN_EXAMPLES + examples.len() as f32);
        prototype.iter_mut().for_each(|v| *v *= label_weight);
        prototype
            .iter_mut()
            .zip(mean(examples, 1.0 - label_weight))
            .for_each(|(v, e)| *v += e);
        normalize(&mut prototype);
    }
    prototype
}

/// Refines the label `vectors` into a classifier head (see `head`) fitted on each
/// label's own vector and its examples' vectors.
fn fit_head(
    vectors: &[Vec<f32>],
    own_vectors: &[Vec<f32>],
    example_vectors: &[Vec<Arc<Vec<f32>>>],
) -> Vec<Vec<f32>> {
    let samples: Vec<head::Sample> = own_vectors
        .iter()
        .zip(example_vectors)
        .enumerate()
        .flat_map(|(label, (own, examples))| {
            std::iter::once(own.as_slice())
                .chain(examples.iter().map(|e| e.as_slice()))
                .map(move |vector| head::Sample { vector, label })
        })
        .collect();
    head::fit(vectors, &samples)
}

/// `weight` times the mean of unit vectors (not normalised again).
fn mean(vectors: &[Arc<Vec<f32>>], weight: f32) -> Vec<f32> {
    let scale = weight / vectors.len() as f32;
    let mut sum = vec![0f32; vectors[0].len()];
    for vector in vectors {
        sum.iter_mut()
            .zip(vector.iter())
            .for_each(|(s, v)| *s += scale * v);
    }
    sum
}

/// A loaded model plus the label-vector cache. Shared by the server, the CLI and batch jobs.
pub struct Engine {
    model: EmbeddingModel,
    dimensions: usize,
    label_cache: Mutex<LruCache<String, Arc<Vec<f32>>>>,
    /// Prepared vectors (fitted heads included) keyed by model and whole set: a set
    /// sent again costs one lookup instead of one per label sentence.
    set_cache: Mutex<LruCache<String, LabelVectors>>,
    /// Saved classifier versions' adapted label vectors, keyed by the caller by the
    /// version's identity (a version never changes).
    adapted_cache: Mutex<LruCache<String, Arc<AdaptedLabels>>>,
}

/// Which model to load and how: plain settings (the CLI makes them from its flags).
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// The ONNX Runtime shared library.
    pub ort_library: PathBuf,
    /// The model directory (its `manifest.json`, graph and tokenizer).
    pub model_dir: PathBuf,
    /// ONNX Runtime intra-op threads; 0 means one per core.
    pub threads: usize,
    pub device: Device,
    /// Tokens per ONNX run, padding included; `None` for the device's default.
    pub run_tokens: Option<usize>,
}

impl ModelConfig {
    /// Loads the engine (ONNX Runtime once per process, then the model); an error
    /// names the model directory.
    pub fn load(&self) -> Result<Engine, EngineError> {
        Engine::load(
            &self.ort_library,
            &self.model_dir,
            self.threads,
            self.device,
            RunLimits::for_device(self.device, self.run_tokens),
        )
        .map_err(|source| EngineError::Load {
            dir: self.model_dir.clone(),
            source: Box::new(source),
        })
    }
}

impl Engine {
    /// Loads ONNX Runtime from `ort_library` (once per process) and the model in `model_dir`.
    pub fn load(
        ort_library: &Path,
        model_dir: &Path,
        intra_threads: usize,
        device: Device,
        limits: RunLimits,
    ) -> Result<Self, EngineError> {
        let runtime = runtime::init(ort_library)?;
        let model = EmbeddingModel::load(&runtime, model_dir, intra_threads, device, limits)?;
        // One probe text tells the vectors' length, whatever the graph declares.
        let dimensions = model.embed(&["dimensions"], "")?[0].vector.len();
        Ok(Self {
            model,
            dimensions,
            label_cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(LABEL_CACHE_ENTRIES).expect("non-zero"),
            )),
            set_cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(SET_CACHE_ENTRIES).expect("non-zero"),
            )),
            adapted_cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(ADAPTED_CACHE_ENTRIES).expect("non-zero"),
            )),
        })
    }

    /// The sentence encoder itself, for measuring its parts.
    pub fn encoder(&self) -> &EmbeddingModel {
        &self.model
    }

    /// Length of the model's sentence vectors.
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Name of the loaded model, as responses report it.
    pub fn model_name(&self) -> &str {
        &self.model.manifest().name
    }

    /// Embeds texts as the model's inputs (with the manifest's text prefix).
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Embedding>, EngineError> {
        self.model.embed(texts, &self.model.manifest().text_prefix)
    }

    /// One vector per label: the mean of its sentences' vectors, blended with the mean
    /// of its examples when it has any, and then refined into a classifier head fitted
    /// on the examples (see `head`). Whole sets are cached, and so is every sentence's
    /// vector, so a new set costs inference only for sentences never seen.
    pub fn label_vectors(&self, set: &LabelSet) -> Result<LabelVectors, EngineError> {
        let set_key = format!(
            "{}\u{0}{}",
            self.model_name(),
            serde_json::to_string(set).expect("serialisable")
        );
        {
            let mut sets = self.set_cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(found) = sets.get(&set_key) {
                return Ok(found.clone());
            }
        }
        let result = self.fit_label_vectors(set)?;
        let mut sets = self.set_cache.lock().unwrap_or_else(|p| p.into_inner());
        sets.put(set_key, result.clone());
        Ok(result)
    }

    /// The label vectors of `set`, uncached: see [`Engine::label_vectors`].
    fn fit_label_vectors(&self, set: &LabelSet) -> Result<LabelVectors, EngineError> {
        let has_examples = set.has_examples();

        let manifest = self.model.manifest();
        let source_type = set.source_type.as_deref();
        let sentences: Vec<Vec<String>> = set
            .labels
            .iter()
            .map(|label| label_sentences(label, source_type))
            .collect();
        // One engine call for every label sentence of the set, then one per label with examples.
        let flat: Vec<String> = sentences.iter().flatten().cloned().collect();
        let mut flat_vectors = self
            .cached_vectors(&flat, &manifest.label_prefix)?
            .into_iter();

        let mut vectors = Vec::with_capacity(set.labels.len());
        let mut own_vectors = Vec::with_capacity(set.labels.len());
        let mut example_vectors = Vec::with_capacity(set.labels.len());
        for (label, own) in set.labels.iter().zip(&sentences) {
            let own: Vec<Arc<Vec<f32>>> = flat_vectors.by_ref().take(own.len()).collect();
            let mut vector = mean(&own, 1.0);
            normalize(&mut vector);
            let examples = if label.examples.is_empty() {
                Vec::new()
            } else {
                self.cached_vectors(&label.examples, &manifest.text_prefix)?
            };
            vectors.push(blend_examples(&vector, &examples));
            own_vectors.push(vector);
            example_vectors.push(examples);
        }
        if has_examples {
            vectors = fit_head(&vectors, &own_vectors, &example_vectors);
        }
        Ok(LabelVectors {
            names: set.names().map(str::to_string).collect(),
            vectors,
        })
    }

    /// Adapted label vectors kept under `key` by [`Engine::cache_adapted`].
    pub fn cached_adapted(&self, key: &str) -> Option<Arc<AdaptedLabels>> {
        let mut cache = self.adapted_cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(key).cloned()
    }

    /// Keeps adapted label vectors under `key`, which must name what never changes.
    pub fn cache_adapted(&self, key: String, labels: Arc<AdaptedLabels>) {
        let mut cache = self.adapted_cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.put(key, labels);
    }

    /// Raw similarities of one embedded text with each label (calibration fitting).
    pub fn similarities(&self, embedding: &Embedding, labels: &dyn LabelScorer) -> Vec<f32> {
        labels.similarities(&embedding.vector)
    }

    /// Fits label vectors to sampled texts (see `adapt`), embedding them in chunks so
    /// the sample's runs stay as tight as a job's; `anchored` when `labels` carry
    /// examples ([`LabelSet::has_examples`]).
    pub fn adapt(
        &self,
        sample: &[String],
        labels: &LabelVectors,
        anchored: bool,
    ) -> Result<Adapted, EngineError> {
        let mut vectors = Vec::with_capacity(sample.len());
        for chunk in sample.chunks(ADAPT_EMBED_CHUNK) {
            let texts: Vec<&str> = chunk.iter().map(String::as_str).collect();
            vectors.extend(self.embed_texts(&texts)?.into_iter().map(|e| e.vector));
        }
        Ok(adapt::fit(&vectors, labels, anchored))
    }

    /// Scores one embedded text against prepared label vectors.
    pub fn score(
        &self,
        embedding: &Embedding,
        labels: &dyn LabelScorer,
        mode: Mode,
        threshold: f32,
    ) -> Classification {
        let similarities = labels.similarities(&embedding.vector);
        let calibration = labels.calibration(self.model.manifest());
        let probabilities = score::probabilities(&similarities, mode, calibration);
        let mut scores: Vec<LabelScore> = labels
            .names()
            .iter()
            .zip(probabilities)
            .map(|(label, score)| LabelScore {
                label: label.clone(),
                score,
            })
            .collect();
        scores.sort_by(|a, b| b.score.total_cmp(&a.score));
        let top = &scores[0];
        let chosen = match mode {
            Mode::Single => vec![top.label.clone()],
            Mode::Multi => scores
                .iter()
                .take_while(|s| s.score >= threshold)
                .map(|s| s.label.clone())
                .collect(),
        };
        Classification {
            label: top.label.clone(),
            confidence: top.score,
            labels: chosen,
            scores,
            tokens: embedding.tokens,
            truncated: embedding.truncated,
        }
    }

    /// The label cache's key of `text` embedded with `prefix` by this model.
    fn input_key(&self, prefix: &str, text: &str) -> String {
        format!("{}\u{0}{prefix}{text}", self.model_name())
    }

    /// The label cache's keys of every text the vectors of `set` come from: its label
    /// sentences and its examples (the model's name is part of each).
    pub fn input_keys(&self, set: &LabelSet) -> Vec<String> {
        let manifest = self.model.manifest();
        let source_type = set.source_type.as_deref();
        set.labels
            .iter()
            .flat_map(|label| {
                let sentences = label_sentences(label, source_type)
                    .into_iter()
                    .map(|s| self.input_key(&manifest.label_prefix, &s));
                let examples = label
                    .examples
                    .iter()
                    .map(|e| self.input_key(&manifest.text_prefix, e));
                sentences.chain(examples).collect::<Vec<_>>()
            })
            .collect()
    }

    /// The vectors the label cache holds under `keys` ([`Engine::input_keys`]).
    pub fn cached_inputs(&self, keys: &[String]) -> Vec<Option<Arc<Vec<f32>>>> {
        let mut cache = self.label_cache.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter().map(|key| cache.get(key).cloned()).collect()
    }

    /// Puts vectors this model computed before (kept by the caller under their
    /// [`Engine::input_keys`]) back into the label cache, so they are not embedded again.
    pub fn prime_inputs(&self, entries: Vec<(String, Vec<f32>)>) {
        let mut cache = self.label_cache.lock().unwrap_or_else(|p| p.into_inner());
        for (key, vector) in entries {
            cache.put(key, Arc::new(vector));
        }
    }

    /// Vectors for `texts` (each with `prefix`), computing only the ones not cached.
    fn cached_vectors(
        &self,
        texts: &[String],
        prefix: &str,
    ) -> Result<Vec<Arc<Vec<f32>>>, EngineError> {
        let key = |text: &str| self.input_key(prefix, text);
        let mut found: Vec<Option<Arc<Vec<f32>>>> = {
            let mut cache = self.label_cache.lock().unwrap_or_else(|p| p.into_inner());
            texts
                .iter()
                .map(|text| cache.get(&key(text)).cloned())
                .collect()
        };
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| found[i].is_none()).collect();
        if !missing.is_empty() {
            let inputs: Vec<&str> = missing.iter().map(|&i| texts[i].as_str()).collect();
            let embeddings = self.model.embed(&inputs, prefix)?;
            let mut cache = self.label_cache.lock().unwrap_or_else(|p| p.into_inner());
            for (&i, embedding) in missing.iter().zip(embeddings) {
                let vector = Arc::new(embedding.vector);
                cache.put(key(&texts[i]), vector.clone());
                found[i] = Some(vector);
            }
        }
        Ok(found
            .into_iter()
            .map(|v| v.expect("filled above"))
            .collect())
    }
}
