//! The classification fields `/v1/classify` and `/v1/batch` share: inline labels or a
//! saved classifier (whose mode and threshold the request may override), validated
//! with the same errors on both endpoints.

use super::{ApiError, AppState};
use crate::classifiers::{self, Classifier, ClassifierError};
use crate::classify::SpecFields;
use crate::db::{Account, DbError};
use crate::engine::{threshold_or_default, Spec};

/// A validated spec, and the saved classifier it came from (with its stored vectors).
pub struct Resolved {
    pub spec: Spec,
    pub saved: Option<Classifier>,
}

/// Inline labels, or the caller's saved classifier `name`, `name@N` or `name@vN`.
pub async fn resolve(
    fields: &SpecFields<'_>,
    state: &AppState,
    account: &Account,
) -> Result<Resolved, ApiError> {
    let Some(reference) = fields
        .classifier
        .as_deref()
        .filter(|_| fields.labels.is_none())
    else {
        return Ok(Resolved {
            spec: fields.inline()?,
            saved: None,
        });
    };
    for (present, param) in [
        (fields.descriptions.is_some(), "descriptions"),
        (fields.examples.is_some(), "examples"),
        (fields.source_type.is_some(), "source_type"),
    ] {
        if present {
            return Err(ApiError::invalid_request(format!(
                "{param} belongs to the saved classifier; save a new version to change it"
            ))
            .with_param(param));
        }
    }
    let (name, version) = classifiers::parse_reference(reference)
        .map_err(|err| ApiError::from(err).with_param("classifier"))?;
    let engine = state.engine()?;
    let saved = classifiers::load(&state.db, &engine, &account.id, &name, version)
        .await
        .map_err(|err| match err {
            ClassifierError::Db(DbError::NotFound(message)) => {
                ApiError::not_found(message).with_param("classifier")
            }
            other => other.into(),
        })?;
    let mut spec = saved.spec.clone();
    if let Some(mode) = fields.mode {
        spec.mode = mode;
    }
    if fields.threshold.is_some() {
        spec.threshold = threshold_or_default(fields.threshold)?;
    }
    if let Some(adapt) = fields.adapt {
        spec.adapt = adapt;
    }
    Ok(Resolved {
        spec,
        saved: Some(saved),
    })
}
