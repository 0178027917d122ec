//! The classification fields `/v1/classify` and `/v1/batch` share: inline labels or a
//! saved classifier (whose mode and threshold the request may override), validated
//! with the same errors on both endpoints.

use super::{ApiError, AppState};
use crate::classifiers::{self, Classifier, ClassifierError};
use crate::db::{Account, DbError};
use crate::engine::{threshold_or_default, Spec};
use crate::wire::SpecFields;

/// A validated spec, and the saved classifier it came from (with its stored vectors).
pub struct Resolved {
    pub spec: Spec,
    pub saved: Option<Classifier>,
}

/// Inline labels, or the caller's saved classifier `name`, `name@N` or `name@vN` (whose
/// mode, threshold and `adapt` the request may override).
pub async fn resolve(
    fields: &SpecFields,
    classifier: Option<&str>,
    adapt: Option<bool>,
    state: &AppState,
    account: &Account,
) -> Result<Resolved, ApiError> {
    let Some(reference) = saved_reference(fields, classifier)? else {
        return Ok(Resolved {
            spec: fields.check(adapt)?,
            saved: None,
        });
    };
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
    if let Some(adapt) = adapt {
        spec.adapt = adapt;
    }
    Ok(Resolved {
        spec,
        saved: Some(saved),
    })
}

/// The saved classifier a request names instead of labels (None: inline labels):
/// exactly one of the two, and none of the fields the classifier brings itself.
fn saved_reference<'a>(
    fields: &SpecFields,
    classifier: Option<&'a str>,
) -> Result<Option<&'a str>, ApiError> {
    match (&fields.labels, classifier) {
        (Some(_), Some(_)) => Err(ApiError::invalid_request(
            "send either labels or classifier, not both",
        )
        .with_param("classifier")),
        (None, None) => Err(ApiError::validation(
            "labels",
            "labels (or classifier) is required",
        )),
        (Some(_), None) => Ok(None),
        (None, Some(reference)) => match fields.saved_field_sent() {
            Some(field) => Err(ApiError::invalid_request(format!(
                "{field} belongs to the saved classifier; save a new version to change it"
            ))
            .with_param(field)),
            None => Ok(Some(reference)),
        },
    }
}
