//! The classification fields `/v1/classify` and `/v1/batch` share, validated into one
//! [`ClassificationSpec`] with the same errors on both endpoints.

use std::collections::BTreeMap;

use super::ApiError;
use crate::engine::{ClassificationSpec, LabelSet, Mode};

/// Multi-mode threshold when the request gives none.
pub const DEFAULT_THRESHOLD: f32 = 0.3;

/// Borrowed request fields that define a classification.
pub struct SpecFields<'a> {
    pub labels: &'a Option<Vec<String>>,
    pub classifier: &'a Option<String>,
    pub descriptions: &'a Option<BTreeMap<String, String>>,
    pub examples: &'a Option<BTreeMap<String, Vec<String>>>,
    pub source_type: &'a Option<String>,
    pub mode: Option<Mode>,
    pub threshold: Option<f32>,
}

impl SpecFields<'_> {
    /// Validates the fields: labels or a saved classifier, threshold in 0-1.
    pub fn resolve(&self) -> Result<ClassificationSpec, ApiError> {
        let labels = match (self.labels, self.classifier) {
            (Some(_), Some(_)) => {
                return Err(
                    ApiError::invalid_request("send either labels or classifier, not both")
                        .with_param("classifier"),
                )
            }
            (None, Some(name)) => {
                return Err(ApiError::not_found(format!("no saved classifier {name:?}"))
                    .with_param("classifier"))
            }
            (None, None) => {
                return Err(ApiError::validation(
                    "labels",
                    "labels (or classifier) is required",
                ))
            }
            (Some(names), None) => LabelSet::new(
                names,
                self.descriptions.as_ref().unwrap_or(&BTreeMap::new()),
                self.examples.as_ref().unwrap_or(&BTreeMap::new()),
                self.source_type.as_deref(),
            )?,
        };
        let threshold = match self.threshold {
            None => DEFAULT_THRESHOLD,
            Some(t) if t.is_finite() && (0.0..=1.0).contains(&t) => t,
            Some(t) => {
                return Err(ApiError::validation(
                    "threshold",
                    format!("threshold must be between 0 and 1, got {t}"),
                ))
            }
        };
        Ok(ClassificationSpec {
            labels,
            mode: self.mode.unwrap_or_default(),
            threshold,
        })
    }
}
