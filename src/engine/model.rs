//! Text → sentence vector: tokenization with `tokenizers`, inference with `ort`,
//! pooling and normalisation as the manifest says.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Mutex;

use ndarray::{Array2, ArrayViewD, Axis};
use ort::environment::Environment;
use ort::ep::CUDA;
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;
use tokenizers::{Encoding, Tokenizer, TruncationParams};

use super::manifest::{Manifest, Pooling};
use super::EngineError;

/// Padding tokens a run may add, as a share of its real tokens.
const MAX_PADDING: f64 = 0.1;
/// Tokens per ONNX run on the CPU, padding included: 16 texts at 256 tokens. Attention
/// memory grows with texts × length², so this bounds ONNX Runtime's arena for long
/// texts while leaving 32 tickets of 20-80 words in one run.
const CPU_RUN_TOKENS: usize = 4096;
/// Tokens per ONNX run on a GPU: a GPU is only busy with thousands of rows at once, and
/// its memory holds the larger attention scores (MiniLM at 256 tokens in fp16: 0.4 GB
/// per layer's scores; nomic-embed-text-v1.5, 16 texts of 2,048 tokens: 3.2 GB). Chosen
/// without a GPU to measure on; `scripts/gpu_check.sh` times the ceiling at several
/// budgets so that a machine with one can tell (docs/gpu.md#larger-runs).
const CUDA_RUN_TOKENS: usize = 32_768;
/// A run's text count is bounded too, at one text per this many tokens of its budget
/// (32 texts on the CPU): short texts gain little from longer runs, and a run's texts
/// wait for its longest.
const TOKENS_PER_RUN_TEXT: usize = 128;
/// Bytes per token of `max_tokens` kept before tokenizing a long text (see `tokenize`).
const CUT_BYTES_PER_TOKEN: usize = 16;
/// Most bytes per token of `max_tokens` ever tokenized: a text whose first 64 × 256
/// bytes still make fewer than `max_tokens` tokens (a 1 MB run without spaces is one
/// `[UNK]`, combining marks are stripped) is cut there, so no text costs more.
const MAX_BYTES_PER_TOKEN: usize = 64;

/// Where inference runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// An NVIDIA GPU through ONNX Runtime's CUDA provider; failing to register it is an
    /// error, never a silent fall back to the CPU.
    Cuda {
        device_id: i32,
    },
}

impl Device {
    /// The tokens per ONNX run on this device when `--onnx-run-tokens` does not say.
    pub fn default_run_tokens(self) -> usize {
        match self {
            Device::Cpu => CPU_RUN_TOKENS,
            Device::Cuda { .. } => CUDA_RUN_TOKENS,
        }
    }
}

/// How large one ONNX run may be: its tokens, padding included, and its texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// Texts × the longest text's tokens, at most (a longer text still runs, alone).
    pub tokens: usize,
    /// Texts per run, at most.
    pub texts: usize,
}

impl RunLimits {
    /// A budget of `tokens` per run (at least 1), and one text per
    /// [`TOKENS_PER_RUN_TEXT`] of it.
    pub fn new(tokens: usize) -> Self {
        let tokens = tokens.max(1);
        Self {
            tokens,
            texts: (tokens / TOKENS_PER_RUN_TEXT).max(1),
        }
    }

    /// `tokens` when given, else the device's default.
    pub fn for_device(device: Device, tokens: Option<usize>) -> Self {
        Self::new(tokens.unwrap_or_else(|| device.default_run_tokens()))
    }
}

/// One text's vector plus what the caller reports about it.
#[derive(Debug, Clone)]
pub struct Embedding {
    pub vector: Vec<f32>,
    /// Tokens the model saw, special tokens included.
    pub tokens: usize,
    /// True when the text was longer than the model's `max_tokens` and was cut.
    pub truncated: bool,
}

/// A loaded sentence-embedding model. Inference does one run at a time through a
/// mutex: ONNX Runtime already spreads one run over its intra-op threads.
pub struct EmbeddingModel {
    manifest: Manifest,
    tokenizer: Tokenizer,
    session: Mutex<Session>,
    has_token_type_ids: bool,
    limits: RunLimits,
}

impl EmbeddingModel {
    /// Loads the tokenizer and ONNX graph of the model directory `dir`.
    /// `intra_threads` = 0 lets ONNX Runtime pick (one per core); `limits` sizes the
    /// ONNX runs `embed` splits its texts into.
    pub fn load(
        runtime: &Environment,
        dir: &Path,
        intra_threads: usize,
        device: Device,
        limits: RunLimits,
    ) -> Result<Self, EngineError> {
        let manifest = Manifest::load(dir)?;
        let mut tokenizer = Tokenizer::from_file(manifest.file_path(dir, "tokenizer"))
            .map_err(|err| EngineError::ModelLoad(format!("tokenizer: {err}")))?;
        // Shipped tokenizers often bake in fixed padding; we pad per run ourselves.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: manifest.max_tokens,
                ..Default::default()
            }))
            .map_err(|err| EngineError::ModelLoad(format!("tokenizer: {err}")))?;

        let model_path = manifest.file_path(dir, "model");
        let providers = match device {
            Device::Cpu => Vec::new(),
            Device::Cuda { device_id } => vec![CUDA::default()
                .with_device_id(device_id)
                .build()
                .error_on_failure()],
        };
        let session = Session::builder(runtime)
            .and_then(|builder| Ok(builder.with_intra_threads(intra_threads)?))
            .and_then(|builder| Ok(builder.with_execution_providers(providers)?))
            // Shapes change with every run, so memory patterns (planned per shape) do
            // not pay; measured on a 3,000-line job: peak RSS 394-457 MB without them,
            // 426-448 MB with them, throughput unchanged.
            .and_then(|builder| Ok(builder.with_memory_pattern(false)?))
            .and_then(|mut builder| builder.commit_from_file(&model_path))
            .map_err(|err| {
                EngineError::ModelLoad(format!("onnx model {}: {err}", model_path.display()))
            })?;
        let input_names: Vec<&str> = session.inputs().iter().map(|input| input.name()).collect();
        for required in [&manifest.inputs.input_ids, &manifest.inputs.attention_mask] {
            if !input_names.contains(&required.as_str()) {
                return Err(EngineError::ModelLoad(format!(
                    "onnx model has no input {required:?} (inputs: {input_names:?})"
                )));
            }
        }
        let has_token_type_ids = manifest
            .inputs
            .token_type_ids
            .as_deref()
            .is_some_and(|name| input_names.contains(&name));
        Ok(Self {
            manifest,
            tokenizer,
            session: Mutex::new(session),
            has_token_type_ids,
            limits,
        })
    }

    /// The manifest this model was loaded from.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// How large `embed`'s ONNX runs may be (the benches batch the same way).
    pub fn run_limits(&self) -> RunLimits {
        self.limits
    }

    /// Embeds texts, each prefixed with `prefix`, in input order.
    pub fn embed(&self, texts: &[&str], prefix: &str) -> Result<Vec<Embedding>, EngineError> {
        let (encodings, cut) = self.tokenize_bounded(texts, prefix)?;
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| encodings[i].get_ids().len());

        let lengths: Vec<usize> = order
            .iter()
            .map(|&i| encodings[i].get_ids().len())
            .collect();

        let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); encodings.len()];
        for range in padding_bounded_runs(&lengths, self.limits) {
            let chunk = &order[range];
            let run: Vec<&Encoding> = chunk.iter().map(|&i| &encodings[i]).collect();
            for (&i, vector) in chunk.iter().zip(self.run_encoded(&run)?) {
                vectors[i] = vector;
            }
        }
        Ok(encodings
            .iter()
            .zip(vectors)
            .zip(cut)
            .map(|((encoding, vector), cut)| Embedding {
                vector,
                tokens: encoding.get_ids().len(),
                truncated: cut || !encoding.get_overflowing().is_empty(),
            })
            .collect())
    }

    /// Tokenizes texts (each with `prefix`), unpadded and truncated at `max_tokens`;
    /// public so the benches can time tokenization apart from inference.
    pub fn tokenize(&self, texts: &[&str], prefix: &str) -> Result<Vec<Encoding>, EngineError> {
        Ok(self.tokenize_bounded(texts, prefix)?.0)
    }

    /// [`Self::tokenize`], plus for each text whether its end was cut off unread.
    ///
    /// A text longer than [`CUT_BYTES_PER_TOKEN`] × `max_tokens` bytes is first cut
    /// there, at a whitespace in the second half of that head when there is one:
    /// tokenizers split words at whitespace, so when the head overflows `max_tokens`, its
    /// first `max_tokens` tokens are the whole text's. A head that does not overflow is
    /// doubled and tokenized again, up to [`MAX_BYTES_PER_TOKEN`] × `max_tokens` bytes,
    /// where it is kept as it is (reported as truncated). A 1 MB document then costs
    /// what a 4 KB one does, and the most hostile text what a 16 KB one does, in time and
    /// in memory.
    fn tokenize_bounded(
        &self,
        texts: &[&str],
        prefix: &str,
    ) -> Result<(Vec<Encoding>, Vec<bool>), EngineError> {
        let mut limit = CUT_BYTES_PER_TOKEN * self.manifest.max_tokens;
        let most = MAX_BYTES_PER_TOKEN * self.manifest.max_tokens;
        let mut heads: Vec<&str> = texts.iter().map(|text| head(text, limit)).collect();
        let mut encodings = self.encode(&heads, prefix)?;
        loop {
            let short: Vec<usize> = (0..texts.len())
                .filter(|&i| heads[i].len() < texts[i].len())
                .filter(|&i| encodings[i].get_overflowing().is_empty())
                .collect();
            if short.is_empty() || limit >= most {
                break;
            }
            limit = (limit * 2).min(most);
            let longer: Vec<&str> = short.iter().map(|&i| head(texts[i], limit)).collect();
            for (&i, (text, encoding)) in short
                .iter()
                .zip(longer.iter().zip(self.encode(&longer, prefix)?))
            {
                heads[i] = text;
                encodings[i] = encoding;
            }
        }
        let cut = heads
            .iter()
            .zip(texts)
            .map(|(head, text)| head.len() < text.len())
            .collect();
        Ok((encodings, cut))
    }

    fn encode(&self, texts: &[&str], prefix: &str) -> Result<Vec<Encoding>, EngineError> {
        let inputs: Vec<String> = texts.iter().map(|text| format!("{prefix}{text}")).collect();
        self.tokenizer
            .encode_batch(inputs, true)
            .map_err(|err| EngineError::Tokenize(err.to_string()))
    }

    /// Pads one run's texts to the longest, runs the graph and pools (one ONNX run);
    /// public so the benches can time inference apart from tokenization.
    pub fn run_encoded(&self, texts: &[&Encoding]) -> Result<Vec<Vec<f32>>, EngineError> {
        let started = std::time::Instant::now();
        let rows = texts.len();
        let cols = texts.iter().map(|e| e.get_ids().len()).max().unwrap_or(0);
        let mut ids = Array2::<i64>::zeros((rows, cols));
        let mut mask = Array2::<i64>::zeros((rows, cols));
        let mut type_ids = Array2::<i64>::zeros((rows, cols));
        for (row, encoding) in texts.iter().enumerate() {
            for (col, ((&id, &m), &t)) in encoding
                .get_ids()
                .iter()
                .zip(encoding.get_attention_mask())
                .zip(encoding.get_type_ids())
                .enumerate()
            {
                ids[[row, col]] = i64::from(id);
                mask[[row, col]] = i64::from(m);
                type_ids[[row, col]] = i64::from(t);
            }
        }

        let names = &self.manifest.inputs;
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = vec![
            (
                names.input_ids.as_str().into(),
                TensorRef::from_array_view(&ids)?.into(),
            ),
            (
                names.attention_mask.as_str().into(),
                TensorRef::from_array_view(&mask)?.into(),
            ),
        ];
        if let (true, Some(name)) = (self.has_token_type_ids, names.token_type_ids.as_deref()) {
            inputs.push((name.into(), TensorRef::from_array_view(&type_ids)?.into()));
        }

        let mut session = self
            .session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let outputs = session.run(inputs)?;
        let hidden = outputs
            .get(&self.manifest.output)
            .ok_or_else(|| {
                EngineError::Inference(format!("model has no output {:?}", self.manifest.output))
            })?
            .try_extract_array::<f32>()?;
        let pooled = self.pool(hidden, &mask)?;
        let tokens = texts.iter().map(|e| e.get_ids().len()).sum();
        crate::metrics::inference(rows, tokens, started.elapsed());
        Ok(pooled)
    }

    fn pool(
        &self,
        hidden: ArrayViewD<'_, f32>,
        mask: &Array2<i64>,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let hidden = hidden
            .into_dimensionality::<ndarray::Ix3>()
            .map_err(|err| {
                EngineError::Inference(format!("output is not [batch, seq, dim]: {err}"))
            })?;
        let mut vectors = Vec::with_capacity(hidden.len_of(Axis(0)));
        for (tokens, row_mask) in hidden.outer_iter().zip(mask.outer_iter()) {
            let mut vector = match self.manifest.pooling {
                Pooling::Cls => tokens.row(0).to_vec(),
                Pooling::Mean => {
                    let mut sum = vec![0f32; tokens.len_of(Axis(1))];
                    let mut count = 0f32;
                    for (token, &m) in tokens.outer_iter().zip(row_mask) {
                        if m != 0 {
                            count += 1.0;
                            sum.iter_mut().zip(token).for_each(|(s, &v)| *s += v);
                        }
                    }
                    sum.iter_mut().for_each(|s| *s /= count.max(1.0));
                    sum
                }
            };
            if self.manifest.normalize {
                normalize(&mut vector);
            }
            vectors.push(vector);
        }
        Ok(vectors)
    }
}

/// Splits texts sorted by token count into ONNX runs within `limits` (texts, and tokens
/// padding included) whose padding stays within [`MAX_PADDING`] of their real tokens; a
/// text longer than the token budget runs alone. Thousands of batch-job
/// lines sort into near-equal neighbours and fill whole runs; a few concurrent
/// `/v1/classify` texts of mixed lengths run in smaller runs instead of paying for
/// padding (measured with `scripts/perf_report.py`, docs/performance.md#cpu).
pub fn padding_bounded_runs(
    sorted_lengths: &[usize],
    limits: RunLimits,
) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let (mut start, mut real) = (0, 0);
    for (i, &length) in sorted_lengths.iter().enumerate() {
        let count = i - start + 1;
        let padded = length * count;
        if count > 1
            && (count > limits.texts
                || padded > limits.tokens
                || padded as f64 > (real + length) as f64 * (1.0 + MAX_PADDING))
        {
            runs.push(start..i);
            (start, real) = (i, 0);
        }
        real += length;
    }
    if start < sorted_lengths.len() {
        runs.push(start..sorted_lengths.len());
    }
    runs
}

/// The text's first `limit` bytes or fewer: up to the last whitespace in the second
/// half of them when there is one (so no word is cut), else up to the last character
/// that fits; the whole text when it is no longer.
fn head(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let floor = |mut at: usize| {
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        at
    };
    let (half, end) = (floor(limit / 2), floor(limit));
    match text[half..end].rfind(char::is_whitespace) {
        Some(at) if half + at > 0 => &text[..half + at],
        _ => &text[..end],
    }
}

/// Scales a vector to unit length (a zero vector stays zero).
pub fn normalize(vector: &mut [f32]) {
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|v| *v /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPU: RunLimits = RunLimits {
        tokens: CPU_RUN_TOKENS,
        texts: 32,
    };

    #[test]
    fn the_cpu_budget_is_the_measured_one() {
        assert_eq!(RunLimits::for_device(Device::Cpu, None), CPU);
        assert_eq!(
            RunLimits::for_device(Device::Cuda { device_id: 0 }, None),
            RunLimits {
                tokens: 32_768,
                texts: 256
            }
        );
        assert_eq!(
            RunLimits::for_device(Device::Cuda { device_id: 0 }, Some(4096)),
            CPU
        );
    }

    #[test]
    fn near_equal_lengths_fill_whole_runs() {
        let lengths = vec![40; 70];
        assert_eq!(
            padding_bounded_runs(&lengths, CPU),
            vec![0..32, 32..64, 64..70]
        );
    }

    #[test]
    fn a_gpu_budget_runs_a_chunk_of_tickets_in_few_runs() {
        // A batch job's chunk of 2,048 tickets of 30-109 tokens, sorted: 64 runs of 32
        // on the CPU; on a GPU 9, as long as the padding bound allows among the
        // shortest (154 texts of 30-35 tokens) and up to 256 texts among the longest.
        let lengths: Vec<usize> = (0..2048).map(|i| 30 + i * 80 / 2048).collect();
        let cuda = RunLimits::for_device(Device::Cuda { device_id: 0 }, None);
        let gpu_runs = padding_bounded_runs(&lengths, cuda);
        assert_eq!(padding_bounded_runs(&lengths, CPU).len(), 64);
        assert_eq!(gpu_runs.len(), 9);
        assert_eq!(gpu_runs[0], 0..154);
        assert_eq!(gpu_runs[7], 1588..1844);
        assert_eq!(gpu_runs.last().unwrap().end, lengths.len());
        for run in &gpu_runs {
            let longest = lengths[run.end - 1];
            assert!(run.len() <= cuda.texts && run.len() * longest <= cuda.tokens);
        }
    }

    #[test]
    fn a_text_longer_than_the_budget_runs_alone() {
        let limits = RunLimits::new(100);
        assert_eq!(limits.texts, 1);
        assert_eq!(
            padding_bounded_runs(
                &[60, 60, 256, 300],
                RunLimits {
                    tokens: 100,
                    texts: 4
                }
            ),
            vec![0..1, 1..2, 2..3, 3..4]
        );
        assert_eq!(
            padding_bounded_runs(
                &[30, 30, 30, 256],
                RunLimits {
                    tokens: 100,
                    texts: 4
                }
            ),
            vec![0..3, 3..4]
        );
    }

    #[test]
    fn mixed_lengths_split_where_padding_would_exceed_the_bound() {
        // 20, 21, 22 pad to 22 x 3 = 66 for 63 real tokens (5%); adding 40 would pad to
        // 160 for 103 (55%), and 40, 41 pad 2% again.
        let runs = padding_bounded_runs(&[20, 21, 22, 40, 41, 100], CPU);
        assert_eq!(runs, vec![0..3, 3..5, 5..6]);
        for range in runs {
            let slice = &[20, 21, 22, 40, 41, 100][range];
            let padded = slice.iter().max().unwrap() * slice.len();
            let real: usize = slice.iter().sum();
            assert!(padded as f64 <= real as f64 * (1.0 + MAX_PADDING));
        }
    }

    #[test]
    fn long_texts_run_in_smaller_runs() {
        let runs = padding_bounded_runs(&[256; 40], CPU);
        assert_eq!(runs, vec![0..16, 16..32, 32..40]);
    }

    #[test]
    fn heads_end_at_a_whitespace_when_one_is_near_else_at_a_character() {
        assert_eq!(head("short text", 100), "short text");
        assert_eq!(head("one two three", 9), "one two");
        assert_eq!(head("one two three", 8), "one two");
        assert_eq!(head("é é é", 4), "é");
        assert_eq!(head("nowhitespacehere", 5), "nowhi");
        assert_eq!(head("ééé", 5), "éé");
        // A whitespace in the first half is too far back: the head would stop growing.
        assert_eq!(head("a bcdefghijklmnop", 10), "a bcdefghi");
    }

    #[test]
    fn no_texts_no_runs() {
        assert!(padding_bounded_runs(&[], CPU).is_empty());
    }
}
