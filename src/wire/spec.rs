//! The spec as a request sends it: the classification fields `/v1/classify`,
//! `/v1/batch` and saved classifiers share (the CLI's client sends the same), declared
//! once here as [`SpecFields`] and checked into an [`engine::Spec`](crate::engine::Spec).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::engine::{LabelError, Spec};

/// Declares a request body with its own fields first, then the classification fields
/// of [`SpecFields`], with `spec_fields()` and `set_spec_fields()` to read and write
/// those as one.
///
/// The fields are written into each body rather than `#[serde(flatten)]`ed: only in a
/// flat struct does serde refuse an unknown field with the list of known ones and name
/// the field of every error (`param`), and only for one does utoipa describe a flat
/// object that refuses other properties.
macro_rules! with_spec_fields {
    ($(#[$attr:meta])* pub struct $name:ident { $($own:tt)* }) => {
        $crate::wire::spec::with_spec_fields!(@struct $(#[$attr])* $name { $($own)* });

        impl $name {
            /// The classification fields of the body.
            pub fn spec_fields(&self) -> $crate::wire::SpecFields {
                $crate::wire::SpecFields {
                    labels: self.labels.clone(),
                    descriptions: self.descriptions.clone(),
                    examples: self.examples.clone(),
                    source_type: self.source_type.clone(),
                    mode: self.mode,
                    threshold: self.threshold,
                }
            }

            /// Sets the classification fields of the body.
            pub fn set_spec_fields(&mut self, fields: $crate::wire::SpecFields) {
                self.labels = fields.labels;
                self.descriptions = fields.descriptions;
                self.examples = fields.examples;
                self.source_type = fields.source_type;
                self.mode = fields.mode;
                self.threshold = fields.threshold;
            }
        }
    };
    (@struct $(#[$attr:meta])* $name:ident { $($own:tt)* }) => {
        $(#[$attr])*
        pub struct $name {
            $($own)*
            /// 1-200 distinct label names of up to 100 characters.
            #[schema(value_type = Option<std::collections::BTreeSet<$crate::wire::schema::LabelName>>, min_items = 1, max_items = 200)]
            #[serde(skip_serializing_if = "Option::is_none")]
            pub labels: Option<Vec<String>>,
            /// A sentence per label (up to 1,000 characters) saying what it covers.
            #[schema(value_type = Option<std::collections::BTreeMap<String, $crate::wire::schema::LabelDescription>>)]
            #[serde(skip_serializing_if = "Option::is_none")]
            pub descriptions: Option<std::collections::BTreeMap<String, String>>,
            /// Up to 64 example texts per label.
            #[schema(value_type = Option<std::collections::BTreeMap<String, $crate::wire::schema::LabelExamples>>)]
            #[serde(skip_serializing_if = "Option::is_none")]
            pub examples: Option<std::collections::BTreeMap<String, Vec<String>>>,
            /// What the texts are (`support ticket`, `news headline`), up to 64 characters.
            #[schema(max_length = 64, pattern = r"^[^\u0000]*$")]
            #[serde(skip_serializing_if = "Option::is_none")]
            pub source_type: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub mode: Option<$crate::engine::Mode>,
            /// Multi mode: labels at or above it are returned (default 0.3).
            #[schema(minimum = 0.0, maximum = 1.0)]
            #[serde(skip_serializing_if = "Option::is_none")]
            pub threshold: Option<f32>,
        }
    };
}
pub(crate) use with_spec_fields;

with_spec_fields! {
    @struct
    /// The classification fields as sent: labels with their descriptions and examples,
    /// the source type, mode and threshold. Request bodies carry them
    /// ([`with_spec_fields`]); [`SpecFields::check`] makes the [`Spec`] of them.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    SpecFields {}
}

impl SpecFields {
    /// The fields a saved classifier brings itself, one of which is sent: a request
    /// that names a classifier may override its mode and threshold, nothing else.
    pub fn saved_field_sent(&self) -> Option<&'static str> {
        [
            (self.descriptions.is_some(), "descriptions"),
            (self.examples.is_some(), "examples"),
            (self.source_type.is_some(), "source_type"),
        ]
        .into_iter()
        .find_map(|(sent, field)| sent.then_some(field))
    }

    /// The spec of these fields, every part checked (errors name the field at fault);
    /// `adapt` is the batch-only choice (default true). Labels are required.
    pub fn check(&self, adapt: Option<bool>) -> Result<Spec, LabelError> {
        let labels = self.labels.as_ref().ok_or_else(|| LabelError {
            param: "labels".to_string(),
            message: "labels is required".to_string(),
        })?;
        Spec::new(
            labels,
            self.descriptions.as_ref().unwrap_or(&BTreeMap::new()),
            self.examples.as_ref().unwrap_or(&BTreeMap::new()),
            self.source_type.as_deref(),
            self.mode,
            self.threshold,
            adapt,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::SpecFields;
    use crate::engine::Mode;
    use crate::wire::{ClassifyRequest, CreateRequest};

    fn fields() -> SpecFields {
        SpecFields {
            labels: Some(vec!["billing".into(), "bug".into()]),
            descriptions: Some(BTreeMap::from([("bug".into(), "it crashes".into())])),
            examples: Some(BTreeMap::from([("billing".into(), vec!["refund".into()])])),
            source_type: Some("support ticket".into()),
            mode: Some(Mode::Multi),
            threshold: Some(0.4),
        }
    }

    #[test]
    fn each_body_reads_and_writes_the_same_spec_fields() {
        let sent = serde_json::to_value(fields()).unwrap();
        let classify: ClassifyRequest = serde_json::from_value(sent.clone()).unwrap();
        assert_eq!(classify.spec_fields(), fields());
        let create: CreateRequest = serde_json::from_value(sent.clone()).unwrap();
        assert_eq!(create.spec_fields(), fields());

        let mut written = CreateRequest::default();
        written.set_spec_fields(fields());
        assert_eq!(serde_json::to_value(&written).unwrap(), sent);
    }

    #[test]
    fn an_unknown_field_is_refused_with_the_known_ones() {
        let err = serde_json::from_value::<ClassifyRequest>(json!({"text": "x", "label": ["a"]}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `label`"), "{err}");
        assert!(err.contains("`labels`"), "{err}");
    }

    #[test]
    fn a_spec_needs_labels_and_names_the_field_at_fault() {
        let missing = SpecFields::default().check(None).unwrap_err();
        assert_eq!(missing.param, "labels");
        let bad = SpecFields {
            threshold: Some(3.0),
            ..fields()
        };
        assert_eq!(bad.check(None).unwrap_err().param, "threshold");
        let spec = fields().check(Some(false)).unwrap();
        assert_eq!(
            (spec.mode, spec.threshold, spec.adapt),
            (Mode::Multi, 0.4, false)
        );
        assert_eq!(
            SpecFields {
                examples: None,
                ..fields()
            }
            .saved_field_sent(),
            Some("descriptions")
        );
    }
}
