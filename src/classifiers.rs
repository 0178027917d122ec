//! Saved, versioned classifiers: a label set with its descriptions, examples, mode and
//! threshold under a name, whose label vectors are computed once at save time. Shared
//! by the HTTP API and the `zeroshot classifiers` CLI.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::clock::{now_ms, rfc3339};
use crate::db::classifiers::ClassifierRow;
use crate::db::{Db, DbError};
use crate::engine::{Engine, EngineError, LabelError, LabelVectors, Mode, Spec};
use crate::wire::spec::with_spec_fields;

/// Longest classifier name.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest classifier description.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;

with_spec_fields! {
    /// A classifier as written in a request body or a JSON/YAML file: its name and
    /// description, whether batch jobs adapt, and the spec (`labels` required).
    #[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct Definition {
        /// Required on create; on update it may repeat the name in the path.
        #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
        pub name: Option<String>,
        /// What it is for, for people.
        #[schema(max_length = 1000, pattern = r"^[^\u0000]*$")]
        pub description: Option<String>,
        /// Whether batch jobs using it adapt the label vectors to their texts (default true).
        pub adapt: Option<bool>,
    }
}

/// A saved classifier version as the API and CLI show it (without its vectors).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClassifierView {
    pub name: String,
    pub version: i64,
    /// `name@vN`: pins this version in `classifier` fields.
    pub reference: String,
    pub description: Option<String>,
    pub labels: Vec<String>,
    /// Only labels that have one.
    pub descriptions: BTreeMap<String, String>,
    /// Only labels that have some.
    pub examples: BTreeMap<String, Vec<String>>,
    pub source_type: Option<String>,
    pub mode: Mode,
    pub threshold: f32,
    pub adapt: bool,
    /// RFC 3339.
    pub created_at: String,
}

impl Definition {
    /// Reads a definition file: YAML when it ends in `.yaml` or `.yml`, else JSON.
    pub fn from_file(path: &std::path::Path) -> Result<Self, DefinitionFileError> {
        let text = std::fs::read_to_string(path).map_err(|error| DefinitionFileError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let invalid = |format, message: String| DefinitionFileError::Invalid {
            path: path.to_path_buf(),
            format,
            message,
        };
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => {
                serde_norway::from_str(&text).map_err(|err| invalid("YAML", err.to_string()))
            }
            _ => serde_json::from_str(&text).map_err(|err| invalid("JSON", err.to_string())),
        }
    }
}

/// Why a definition file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionFileError {
    #[error("reading {}: {error}", path.display())]
    Read {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("{}: invalid {format} definition: {message}", path.display())]
    Invalid {
        path: std::path::PathBuf,
        format: &'static str,
        message: String,
    },
}

/// Why a classifier operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    #[error("{0}")]
    Invalid(#[from] LabelError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

fn invalid(param: &str, message: impl Into<String>) -> ClassifierError {
    ClassifierError::Invalid(LabelError {
        param: param.to_string(),
        message: message.into(),
    })
}

/// A stored version, ready to use.
#[derive(Debug, Clone)]
pub struct Classifier {
    pub name: String,
    pub version: i64,
    pub description: Option<String>,
    pub spec: Spec,
    pub vectors: LabelVectors,
    pub created_at: i64,
}

/// `name`, `name@3` or `name@v3`: the latest or a pinned version.
pub fn parse_reference(reference: &str) -> Result<(String, Option<i64>), ClassifierError> {
    let (name, version) = match reference.split_once('@') {
        None => (reference, None),
        Some((name, version)) => {
            let digits = version.strip_prefix('v').unwrap_or(version);
            match digits.parse::<i64>() {
                Ok(v) if v >= 1 => (name, Some(v)),
                _ => {
                    return Err(invalid(
                        "classifier",
                        format!("{reference:?}: expected name, name@N or name@vN"),
                    ))
                }
            }
        }
    };
    check_name(name)?;
    Ok((name.to_string(), version))
}

/// Names are 1-64 characters of `[a-z0-9_-]`.
pub fn check_name(name: &str) -> Result<(), ClassifierError> {
    let valid = !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(invalid(
            "name",
            format!("{name:?}: names are 1-{MAX_NAME_CHARS} characters of a-z, 0-9, _ and -"),
        ))
    }
}

fn encode_vectors(vectors: &LabelVectors) -> (i64, String) {
    let dim = vectors.vectors.first().map_or(0, Vec::len);
    let bytes: Vec<u8> = vectors
        .vectors
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    (
        dim as i64,
        base64::engine::general_purpose::STANDARD.encode(bytes),
    )
}

fn decode_vectors(names: Vec<String>, dim: i64, encoded: &str) -> Option<LabelVectors> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let floats: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let dim = usize::try_from(dim).ok().filter(|&d| d > 0)?;
    if floats.len() != dim * names.len() {
        return None;
    }
    let vectors = floats.chunks(dim).map(<[f32]>::to_vec).collect();
    Some(LabelVectors { names, vectors })
}

/// Validates a definition, computes its label vectors and stores it as version 1
/// (`update` false; 409 if the name exists) or as the next version (`update` true;
/// 404 if it does not).
pub async fn save(
    db: &Db,
    engine: &std::sync::Arc<Engine>,
    account_id: &str,
    name: &str,
    definition: &Definition,
    update: bool,
) -> Result<Classifier, ClassifierError> {
    let spec = check_definition(name, definition)?;
    let version = next_version(db, account_id, name, update).await?;
    let vectors = {
        let (engine, set) = (engine.clone(), spec.labels.clone());
        tokio::task::spawn_blocking(move || engine.label_vectors(&set))
            .await
            .map_err(|err| EngineError::Inference(err.to_string()))??
    };
    let (dim, encoded) = encode_vectors(&vectors);
    let row = ClassifierRow {
        account_id: account_id.to_string(),
        name: name.to_string(),
        version,
        description: definition.description.clone(),
        spec: serde_json::to_string(&spec).expect("serialisable"),
        model: engine.model_name().to_string(),
        dim,
        vectors: encoded,
        created_at: now_ms(),
    };
    db.insert_classifier(&row).await?;
    Ok(Classifier {
        name: row.name,
        version,
        description: row.description,
        spec,
        vectors,
        created_at: row.created_at,
    })
}

/// The classification spec of `definition`, stored under `name`: the body may repeat
/// the name but not name another, and the description has at most
/// [`MAX_DESCRIPTION_CHARS`] characters and no NUL (which Postgres cannot store).
fn check_definition(name: &str, definition: &Definition) -> Result<Spec, ClassifierError> {
    check_name(name)?;
    if let Some(other) = definition.name.as_deref().filter(|other| *other != name) {
        return Err(invalid(
            "name",
            format!("body names {other:?} but the path names {name:?}"),
        ));
    }
    if let Some(description) = &definition.description {
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(invalid(
                "description",
                format!("at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        if description.contains('\0') {
            return Err(invalid(
                "description",
                "description contains a NUL character (\\u0000)",
            ));
        }
    }
    Ok(definition.spec_fields().check(definition.adapt)?)
}

/// The version a save of `name` creates: 1 for a new classifier (409 if it exists),
/// the latest plus one for an update (404 if there is none).
async fn next_version(
    db: &Db,
    account_id: &str,
    name: &str,
    update: bool,
) -> Result<i64, ClassifierError> {
    match (db.classifier(account_id, name, None).await?, update) {
        (Some(_), false) => {
            Err(DbError::Conflict(format!("classifier {name:?} already exists")).into())
        }
        (None, true) => Err(DbError::NotFound(format!("no classifier {name:?}")).into()),
        (None, false) => Ok(1),
        (Some(latest), true) => Ok(latest.version + 1),
    }
}

/// Loads a version (the latest when `version` is `None`). Vectors stored for another
/// model are recomputed with this one and stored again.
pub async fn load(
    db: &Db,
    engine: &std::sync::Arc<Engine>,
    account_id: &str,
    name: &str,
    version: Option<i64>,
) -> Result<Classifier, ClassifierError> {
    let mut row = db
        .classifier(account_id, name, version)
        .await?
        .ok_or_else(|| {
            DbError::NotFound(match version {
                Some(v) => format!("no classifier {name:?} version {v}"),
                None => format!("no classifier {name:?}"),
            })
        })?;
    let spec: Spec = serde_json::from_str(&row.spec)
        .map_err(|err| DbError::Conflict(format!("stored classifier is unreadable: {err}")))?;
    let names: Vec<String> = spec.labels.names().map(str::to_string).collect();
    let stored = (row.model == engine.model_name())
        .then(|| decode_vectors(names, row.dim, &row.vectors))
        .flatten();
    let vectors = match stored {
        Some(vectors) => vectors,
        None => {
            let (engine_ref, set) = (engine.clone(), spec.labels.clone());
            let vectors = tokio::task::spawn_blocking(move || engine_ref.label_vectors(&set))
                .await
                .map_err(|err| EngineError::Inference(err.to_string()))??;
            (row.dim, row.vectors) = encode_vectors(&vectors);
            row.model = engine.model_name().to_string();
            db.update_classifier_vectors(&row).await?;
            vectors
        }
    };
    Ok(Classifier {
        name: row.name,
        version: row.version,
        description: row.description,
        spec,
        vectors,
        created_at: row.created_at,
    })
}

impl Classifier {
    /// The classifier as the API and CLI show it (without vectors).
    pub fn view(&self) -> ClassifierView {
        describe(
            &self.name,
            self.version,
            &self.description,
            &self.spec,
            self.created_at,
        )
    }
}

/// A stored version as the API and CLI show it, without decoding its vectors.
pub fn describe_row(row: &ClassifierRow) -> Result<ClassifierView, ClassifierError> {
    let spec: Spec = serde_json::from_str(&row.spec)
        .map_err(|err| DbError::Conflict(format!("stored classifier is unreadable: {err}")))?;
    Ok(describe(
        &row.name,
        row.version,
        &row.description,
        &spec,
        row.created_at,
    ))
}

fn describe(
    name: &str,
    version: i64,
    description: &Option<String>,
    spec: &Spec,
    created_at: i64,
) -> ClassifierView {
    let labels = &spec.labels.labels;
    ClassifierView {
        name: name.to_string(),
        version,
        reference: format!("{name}@v{version}"),
        description: description.clone(),
        labels: labels.iter().map(|l| l.name.clone()).collect(),
        descriptions: labels
            .iter()
            .filter_map(|l| Some((l.name.clone(), l.description.clone()?)))
            .collect(),
        examples: labels
            .iter()
            .filter(|l| !l.examples.is_empty())
            .map(|l| (l.name.clone(), l.examples.clone()))
            .collect(),
        source_type: spec.labels.source_type.clone(),
        mode: spec.mode,
        threshold: spec.threshold,
        adapt: spec.adapt,
        created_at: rfc3339(created_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(
            parse_reference("ticket-router").unwrap(),
            ("ticket-router".to_string(), None)
        );
        assert_eq!(parse_reference("ticket-router@v3").unwrap().1, Some(3));
        assert_eq!(parse_reference("ticket-router@3").unwrap().1, Some(3));
        assert!(parse_reference("ticket-router@v0").is_err());
        assert!(parse_reference("Ticket Router").is_err());
        assert!(parse_reference(&"a".repeat(65)).is_err());
    }

    #[test]
    fn vectors_round_trip() {
        let vectors = LabelVectors {
            names: vec!["a".into(), "b".into()],
            vectors: vec![vec![0.5, -1.25, 3.0], vec![0.0, 1e-7, -2.5]],
        };
        let (dim, encoded) = encode_vectors(&vectors);
        assert_eq!(
            decode_vectors(vectors.names.clone(), dim, &encoded),
            Some(vectors)
        );
        assert_eq!(
            decode_vectors(vec!["a".into()], dim, &encoded),
            None,
            "wrong label count"
        );
    }
}
