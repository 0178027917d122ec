//! Saved, versioned classifiers: a label set with its descriptions, examples, mode and
//! threshold under a name, whose label vectors are computed once at save time, and
//! which learns: adapted to unlabeled texts, taught examples (`learn`). Shared by the
//! HTTP API, the batch worker and the `zeroshot classifiers` CLI.

mod inputs;
pub mod learn;
mod view;

pub(crate) use inputs::recall_inputs;
use inputs::{decode_floats, encode_floats, remember_inputs};
pub use view::{describe_row, AdaptedFrom, ClassifierView, Origin};

use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::db::classifiers::{ClassifierRow, NewVersion};
use crate::db::{Db, DbError};
use crate::engine::{
    AdaptedLabels, Engine, EngineError, LabelError, LabelScorer, LabelVectors, Spec,
};
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
    /// The request cannot be read as meant (an unknown label, a NUL in a text): a 400.
    #[error("{param}: {message}")]
    Malformed { param: String, message: String },
    /// Adaptation's guard rails refused: no version was created (a 422).
    #[error("{param}: {message}")]
    Refused { param: String, message: String },
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
    pub origin: Origin,
    /// The adaptation it scores with, when it has one.
    pub adaptation: Option<Adaptation>,
}

/// A version's adaptation: where it came from, and the fitted label vectors.
#[derive(Debug, Clone)]
pub struct Adaptation {
    pub from: AdaptedFrom,
    pub labels: std::sync::Arc<AdaptedLabels>,
}

impl Classifier {
    /// What scores texts with this version: its adapted label vectors (on the
    /// adapted footing) when it has them, else its label vectors.
    pub fn scorer(&self) -> std::sync::Arc<dyn LabelScorer> {
        match &self.adaptation {
            Some(adaptation) => adaptation.labels.clone(),
            None => std::sync::Arc::new(self.vectors.clone()),
        }
    }

    /// `name@vN`.
    pub fn reference(&self) -> String {
        format!("{}@v{}", self.name, self.version)
    }

    /// The classifier as the API and CLI show it (without vectors).
    pub fn view(&self) -> ClassifierView {
        view::describe(
            &self.name,
            self.version,
            &self.description,
            &self.spec,
            self.created_at,
            self.origin.clone(),
            self.adaptation.as_ref().map(|a| a.from.clone()),
        )
    }
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
    (dim as i64, encode_floats(vectors.vectors.iter().flatten()))
}

fn decode_vectors(names: Vec<String>, dim: i64, encoded: &str) -> Option<LabelVectors> {
    let floats = decode_floats(encoded)?;
    let dim = usize::try_from(dim).ok().filter(|&d| d > 0)?;
    if floats.len() != dim * names.len() {
        return None;
    }
    let vectors = floats.chunks(dim).map(<[f32]>::to_vec).collect();
    Some(LabelVectors { names, vectors })
}

/// Validates a definition, computes its label vectors and stores it as version 1
/// (`update` false; 409 if the name exists) or as the next version (`update` true;
/// 404 if it does not). An update with the same labels keeps the latest version's
/// adaptation, combined with the new label vectors.
pub async fn save(
    db: &Db,
    engine: &std::sync::Arc<Engine>,
    account_id: &str,
    name: &str,
    definition: &Definition,
    update: bool,
) -> Result<Classifier, ClassifierError> {
    let spec = check_definition(name, definition)?;
    let previous = match (update, db.classifier(account_id, name, None).await?) {
        (false, Some(_)) => {
            return Err(DbError::Conflict(format!("classifier {name:?} already exists")).into())
        }
        (true, None) => return Err(DbError::NotFound(format!("no classifier {name:?}")).into()),
        (false, None) => None,
        (true, Some(latest)) => Some(load_row(db, engine, latest).await?),
    };
    if previous.is_some() {
        recall_inputs(db, engine, account_id, name, &spec).await?;
    }
    let vectors = vectors_of(engine, &spec).await?;
    let adaptation = previous
        .as_ref()
        .and_then(|previous| previous.carried_adaptation(&vectors, &spec));
    store_new_spec(
        db,
        engine,
        Draft {
            account_id,
            name,
            version: previous.as_ref().map_or(1, |p| p.version + 1),
            description: definition.description.clone(),
            spec,
            vectors,
            origin: Origin::Saved,
            adaptation,
        },
    )
    .await
}

/// A version about to be stored.
pub(crate) struct Draft<'a> {
    pub account_id: &'a str,
    pub name: &'a str,
    pub version: i64,
    pub description: Option<String>,
    pub spec: Spec,
    pub vectors: LabelVectors,
    pub origin: Origin,
    pub adaptation: Option<Adaptation>,
}

impl Draft<'_> {
    /// The row and the adapted labels' JSON as the database stores them.
    fn into_parts(self, model: &str) -> (Classifier, ClassifierRow, Option<String>) {
        let (dim, encoded) = encode_vectors(&self.vectors);
        let row = ClassifierRow {
            account_id: self.account_id.to_string(),
            name: self.name.to_string(),
            version: self.version,
            description: self.description.clone(),
            spec: serde_json::to_string(&self.spec).expect("serialisable"),
            model: model.to_string(),
            dim,
            vectors: encoded,
            created_at: now_ms(),
            origin: Some(serde_json::to_string(&self.origin).expect("serialisable")),
            adapted_from: self
                .adaptation
                .as_ref()
                .map(|a| serde_json::to_string(&a.from).expect("serialisable")),
        };
        let labels = self
            .adaptation
            .as_ref()
            .map(|a| serde_json::to_string(&a.labels).expect("serialisable"));
        let classifier = Classifier {
            name: row.name.clone(),
            version: row.version,
            description: self.description,
            spec: self.spec,
            vectors: self.vectors,
            created_at: row.created_at,
            origin: self.origin,
            adaptation: self.adaptation,
        };
        (classifier, row, labels)
    }
}

/// Stores `draft` as a new version.
pub(crate) async fn store(
    db: &Db,
    engine: &Engine,
    draft: Draft<'_>,
) -> Result<Classifier, ClassifierError> {
    let (classifier, row, labels) = draft.into_parts(engine.model_name());
    db.insert_classifier(&NewVersion {
        row: &row,
        adapted_labels: labels.as_deref(),
    })
    .await?;
    Ok(classifier)
}

/// Stores `draft`, whose spec is new (saved from a definition, or taught), and keeps
/// the vectors of its inputs, which the engine has just computed; a version with the
/// latest's spec (adapted) has none to add.
pub(crate) async fn store_new_spec(
    db: &Db,
    engine: &Engine,
    draft: Draft<'_>,
) -> Result<Classifier, ClassifierError> {
    let (account_id, name) = (draft.account_id, draft.name);
    let classifier = store(db, engine, draft).await?;
    remember_inputs(db, engine, account_id, name, &classifier.spec).await?;
    Ok(classifier)
}

/// Stores `draft` as the version the completed job `job_id` saved; false (nothing
/// stored) when that job saved one before.
pub(crate) async fn store_for_job(
    db: &Db,
    engine: &Engine,
    job_id: &str,
    draft: Draft<'_>,
) -> Result<bool, ClassifierError> {
    let (_, row, labels) = draft.into_parts(engine.model_name());
    let new = NewVersion {
        row: &row,
        adapted_labels: labels.as_deref(),
    };
    Ok(db.insert_job_version(job_id, &new).await?)
}

/// The label vectors of `spec`, computed off the async threads.
pub(crate) async fn vectors_of(
    engine: &std::sync::Arc<Engine>,
    spec: &Spec,
) -> Result<LabelVectors, ClassifierError> {
    let (engine, set) = (engine.clone(), spec.labels.clone());
    Ok(
        tokio::task::spawn_blocking(move || engine.label_vectors(&set))
            .await
            .map_err(|err| EngineError::Inference(err.to_string()))??,
    )
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

/// Loads a version (the latest when `version` is `None`).
pub async fn load(
    db: &Db,
    engine: &std::sync::Arc<Engine>,
    account_id: &str,
    name: &str,
    version: Option<i64>,
) -> Result<Classifier, ClassifierError> {
    let row = db
        .classifier(account_id, name, version)
        .await?
        .ok_or_else(|| {
            DbError::NotFound(match version {
                Some(v) => format!("no classifier {name:?} version {v}"),
                None => format!("no classifier {name:?}"),
            })
        })?;
    load_row(db, engine, row).await
}

pub(super) fn unreadable(err: serde_json::Error) -> ClassifierError {
    DbError::Conflict(format!("stored classifier is unreadable: {err}")).into()
}

/// A stored version, ready to use. Vectors stored for another model are recomputed
/// with this one and stored again (and an adaptation fitted with the other model is
/// dropped).
async fn load_row(
    db: &Db,
    engine: &std::sync::Arc<Engine>,
    mut row: ClassifierRow,
) -> Result<Classifier, ClassifierError> {
    let spec: Spec = serde_json::from_str(&row.spec).map_err(unreadable)?;
    let names: Vec<String> = spec.labels.names().map(str::to_string).collect();
    let same_model = row.model == engine.model_name();
    let stored = same_model
        .then(|| decode_vectors(names, row.dim, &row.vectors))
        .flatten();
    let vectors = match stored {
        Some(vectors) => vectors,
        None => {
            let vectors = vectors_of(engine, &spec).await?;
            (row.dim, row.vectors) = encode_vectors(&vectors);
            row.model = engine.model_name().to_string();
            row.adapted_from = None;
            db.update_classifier_vectors(&row).await?;
            vectors
        }
    };
    let adaptation = match &row.adapted_from {
        Some(from) if same_model => adaptation(db, engine, &row, from).await?,
        _ => None,
    };
    let origin = match &row.origin {
        Some(origin) => serde_json::from_str(origin).map_err(unreadable)?,
        None => Origin::Saved,
    };
    Ok(Classifier {
        name: row.name,
        version: row.version,
        description: row.description,
        spec,
        vectors,
        created_at: row.created_at,
        origin,
        adaptation,
    })
}

/// The stored adaptation of `row`, whose `adapted_from` is `from`. Its label vectors
/// are read and parsed once per instance (about 1 MB of vectors): a version never
/// changes, so the engine keeps them under its identity.
async fn adaptation(
    db: &Db,
    engine: &Engine,
    row: &ClassifierRow,
    from: &str,
) -> Result<Option<Adaptation>, ClassifierError> {
    let from = serde_json::from_str(from).map_err(unreadable)?;
    let key = format!(
        "{}\u{0}{}\u{0}{}\u{0}{}",
        row.account_id, row.name, row.version, row.created_at
    );
    if let Some(labels) = engine.cached_adapted(&key) {
        return Ok(Some(Adaptation { from, labels }));
    }
    let Some(labels) = db
        .classifier_adapted_labels(&row.account_id, &row.name, row.version)
        .await?
    else {
        return Ok(None);
    };
    let labels = std::sync::Arc::new(serde_json::from_str(&labels).map_err(unreadable)?);
    engine.cache_adapted(key, std::sync::Arc::clone(&labels));
    Ok(Some(Adaptation { from, labels }))
}

impl Classifier {
    /// This version's adaptation carried to new label vectors `vectors` of `spec`
    /// (same labels: the adaptation's pulls with the new starting vectors); `None`
    /// when it has none or the labels changed.
    pub(crate) fn carried_adaptation(
        &self,
        vectors: &LabelVectors,
        spec: &Spec,
    ) -> Option<Adaptation> {
        let adaptation = self.adaptation.as_ref()?;
        Some(Adaptation {
            from: adaptation.from.clone(),
            labels: std::sync::Arc::new(
                adaptation
                    .labels
                    .restarted(vectors, spec.labels.has_examples())?,
            ),
        })
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
