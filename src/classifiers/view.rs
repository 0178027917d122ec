//! A saved version as the API and the CLI show it: its spec, how it was made and
//! where its adaptation came from, without its vectors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{unreadable, ClassifierError};
use crate::clock::rfc3339;
use crate::db::classifiers::ClassifierRow;
use crate::engine::{AdaptationReport, Mode, Spec};

/// How a version was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// Saved from a definition (created, or updated with `PUT`).
    Saved,
    /// Adapted to unlabeled texts or to a finished batch job's texts (see `adapted_from`).
    Adapted { from_version: i64 },
    /// Taught examples: `added` new ones, `removed` taken away.
    Taught {
        from_version: i64,
        added: usize,
        removed: usize,
    },
}

/// Where the adaptation a version scores with came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AdaptedFrom {
    /// How many texts were sent to `/adapt` (absent when adapted from a job).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub texts: Option<usize>,
    /// The batch job whose fitted vectors it took (absent when adapted from texts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// What adaptation did: the texts it fitted on, its rounds, the guard rails'
    /// decision and the texts each label won.
    pub adaptation: AdaptationReport,
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
    /// How this version was made.
    pub origin: Origin,
    /// Present when this version scores with an adaptation: where it came from (kept
    /// by later versions that were taught examples or updated with the same labels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapted_from: Option<AdaptedFrom>,
    /// RFC 3339.
    pub created_at: String,
}

/// A stored version as the API and CLI show it, without decoding its vectors.
pub fn describe_row(row: &ClassifierRow) -> Result<ClassifierView, ClassifierError> {
    let spec: Spec = serde_json::from_str(&row.spec).map_err(unreadable)?;
    let origin = match &row.origin {
        Some(origin) => serde_json::from_str(origin).map_err(unreadable)?,
        None => Origin::Saved,
    };
    let adapted_from = match &row.adapted_from {
        Some(from) => Some(serde_json::from_str(from).map_err(unreadable)?),
        None => None,
    };
    Ok(describe(
        &row.name,
        row.version,
        &row.description,
        &spec,
        row.created_at,
        origin,
        adapted_from,
    ))
}

pub(super) fn describe(
    name: &str,
    version: i64,
    description: &Option<String>,
    spec: &Spec,
    created_at: i64,
    origin: Origin,
    adapted_from: Option<AdaptedFrom>,
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
        origin,
        adapted_from,
        created_at: rfc3339(created_at),
    }
}
