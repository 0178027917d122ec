//! The classification fields `/v1/classify` and `/v1/batch` share: inline labels or a
//! saved classifier (whose mode and threshold the request may override), validated
//! with the same errors on both endpoints.

use std::collections::BTreeMap;

use super::{ApiError, AppState};
use crate::classifiers::{self, Classifier, ClassifierError};
use crate::db::{Account, DbError};
use crate::engine::{threshold_or_default, Mode, Spec};

/// Borrowed request fields that define a classification.
pub struct SpecFields<'a> {
    pub labels: &'a Option<Vec<String>>,
    pub classifier: &'a Option<String>,
    pub descriptions: &'a Option<BTreeMap<String, String>>,
    pub examples: &'a Option<BTreeMap<String, Vec<String>>>,
    pub source_type: &'a Option<String>,
    pub mode: Option<Mode>,
    pub threshold: Option<f32>,
    /// Batch jobs only: adapt the label vectors to the job's texts (None: the saved
    /// classifier's choice, else true).
    pub adapt: Option<bool>,
}

/// A validated spec, and the saved classifier it came from (with its stored vectors).
pub struct Resolved {
    pub spec: Spec,
    pub saved: Option<Classifier>,
}

impl SpecFields<'_> {
    /// Inline labels only (the CLI has no saved classifiers).
    pub fn inline(&self) -> Result<Spec, ApiError> {
        match (self.labels, self.classifier) {
            (Some(_), Some(_)) => Err(ApiError::invalid_request(
                "send either labels or classifier, not both",
            )
            .with_param("classifier")),
            (None, Some(_)) => Err(
                ApiError::invalid_request("saved classifiers need the server")
                    .with_param("classifier"),
            ),
            (None, None) => Err(ApiError::validation(
                "labels",
                "labels (or classifier) is required",
            )),
            (Some(names), None) => Ok(Spec::new(
                names,
                self.descriptions.as_ref().unwrap_or(&BTreeMap::new()),
                self.examples.as_ref().unwrap_or(&BTreeMap::new()),
                self.source_type.as_deref(),
                self.mode,
                self.threshold,
                self.adapt,
            )?),
        }
    }

    /// Inline labels, or the caller's saved classifier `name`, `name@N` or `name@vN`.
    pub async fn resolve(&self, state: &AppState, account: &Account) -> Result<Resolved, ApiError> {
        let Some(reference) = self.classifier.as_deref().filter(|_| self.labels.is_none()) else {
            return Ok(Resolved {
                spec: self.inline()?,
                saved: None,
            });
        };
        for (present, param) in [
            (self.descriptions.is_some(), "descriptions"),
            (self.examples.is_some(), "examples"),
            (self.source_type.is_some(), "source_type"),
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
        if let Some(mode) = self.mode {
            spec.mode = mode;
        }
        if self.threshold.is_some() {
            spec.threshold = threshold_or_default(self.threshold)?;
        }
        if let Some(adapt) = self.adapt {
            spec.adapt = adapt;
        }
        Ok(Resolved {
            spec,
            saved: Some(saved),
        })
    }
}
