//! The vectors of a classifier's label sentences and examples, kept with it (one row
//! per text, deleted with the classifier) so that a lesson embeds only its new texts,
//! after a restart too; and the base64 form vectors are stored in.

use base64::Engine as _;
use sha2::Digest as _;

use super::ClassifierError;
use crate::db::Db;
use crate::engine::{Engine, Spec};

/// Base64 of the floats' little-endian bytes.
pub(super) fn encode_floats<'a>(floats: impl IntoIterator<Item = &'a f32>) -> String {
    let bytes: Vec<u8> = floats.into_iter().flat_map(|v| v.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(super) fn decode_floats(encoded: &str) -> Option<Vec<f32>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    Some(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

fn input_hash(key: &str) -> String {
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

/// Keeps the vectors of `spec`'s label sentences and examples (those the engine holds,
/// having just computed them) with the classifier `name`, so a lesson after a restart
/// embeds only its new texts.
pub(super) async fn remember_inputs(
    db: &Db,
    engine: &Engine,
    account_id: &str,
    name: &str,
    spec: &Spec,
) -> Result<(), ClassifierError> {
    let keys = engine.input_keys(&spec.labels);
    let inputs: Vec<(String, String)> = keys
        .iter()
        .zip(engine.cached_inputs(&keys))
        .filter_map(|(key, vector)| Some((input_hash(key), encode_floats(vector?.iter()))))
        .collect();
    Ok(db
        .insert_classifier_inputs(account_id, name, &inputs)
        .await?)
}

/// Puts the kept vectors of `spec`'s inputs that the engine does not hold back into
/// its cache (after a restart), so computing its label vectors embeds only new texts.
pub(crate) async fn recall_inputs(
    db: &Db,
    engine: &Engine,
    account_id: &str,
    name: &str,
    spec: &Spec,
) -> Result<(), ClassifierError> {
    let keys = engine.input_keys(&spec.labels);
    let missing: std::collections::HashMap<String, String> = keys
        .iter()
        .zip(engine.cached_inputs(&keys))
        .filter(|(_, vector)| vector.is_none())
        .map(|(key, _)| (input_hash(key), key.clone()))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let found = db
        .classifier_inputs(account_id, name)
        .await?
        .into_iter()
        .filter_map(|(hash, vector)| Some((missing.get(&hash)?.clone(), decode_floats(&vector)?)))
        .collect();
    engine.prime_inputs(found);
    Ok(())
}
