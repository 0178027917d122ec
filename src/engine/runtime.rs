//! The ONNX Runtime shared library, loaded once per process (ONNX Runtime allows a
//! single environment per process, and tests build several engines in one).

use std::path::Path;
use std::sync::OnceLock;

use ort::environment::Environment;

use super::EngineError;

static RUNTIME: OnceLock<Environment> = OnceLock::new();

/// Loads `libonnxruntime` from `library` on first use and returns the process-wide
/// environment; later calls return the same one whatever path they pass.
pub fn init(library: &Path) -> Result<Environment, EngineError> {
    if let Some(env) = RUNTIME.get() {
        return Ok(env.clone());
    }
    if !library.is_file() {
        return Err(EngineError::ModelLoad(format!(
            "ONNX Runtime library {} not found (run scripts/setup.py, or set ORT_DYLIB_PATH)",
            library.display()
        )));
    }
    let env = ort::init_from(library)
        .map_err(|err| EngineError::ModelLoad(format!("loading {}: {err}", library.display())))?
        .with_name("zeroshot")
        .build()
        .map_err(|err| EngineError::ModelLoad(format!("ONNX Runtime environment: {err}")))?;
    Ok(RUNTIME.get_or_init(|| env).clone())
}
