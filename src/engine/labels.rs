//! Label sets: validation of what a caller sent, and the sentences whose vectors
//! stand for each label.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

/// Most labels one request may name.
pub const MAX_LABELS: usize = 200;
/// Longest label name, in characters.
pub const MAX_LABEL_CHARS: usize = 100;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
/// Most examples per label.
pub const MAX_EXAMPLES_PER_LABEL: usize = 64;
/// Longest `source_type`, in characters.
pub const MAX_SOURCE_TYPE_CHARS: usize = 64;

/// `single`: exactly one label, probabilities sum to 1. `multi`: each label is judged
/// on its own and every label at or above the threshold is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Single,
    Multi,
}

/// One label with what the caller told us about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub name: String,
    pub description: Option<String>,
    pub examples: Vec<String>,
}

/// A validated label set: what every classification path (sync, batch, saved) needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelSet {
    pub labels: Vec<Label>,
    pub source_type: Option<String>,
}

/// Why a label set was refused, naming the request field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct LabelError {
    pub param: String,
    pub message: String,
}

fn refuse(param: impl Into<String>, message: impl Into<String>) -> LabelError {
    LabelError {
        param: param.into(),
        message: message.into(),
    }
}

impl LabelSet {
    /// Validates raw request parts: 1-200 labels, unique after trimming, each at most
    /// 100 characters; descriptions and examples only for known labels.
    pub fn new(
        names: &[String],
        descriptions: &BTreeMap<String, String>,
        examples: &BTreeMap<String, Vec<String>>,
        source_type: Option<&str>,
    ) -> Result<Self, LabelError> {
        if names.is_empty() {
            return Err(refuse("labels", "at least one label is required"));
        }
        if names.len() > MAX_LABELS {
            return Err(refuse(
                "labels",
                format!(
                    "at most {MAX_LABELS} labels are allowed, got {}",
                    names.len()
                ),
            ));
        }
        let mut seen = HashSet::new();
        let mut labels = Vec::with_capacity(names.len());
        for (i, raw) in names.iter().enumerate() {
            let name = raw.trim();
            let param = format!("labels[{i}]");
            if name.is_empty() {
                return Err(refuse(param, "label is empty"));
            }
            if name.chars().count() > MAX_LABEL_CHARS {
                return Err(refuse(
                    param,
                    format!("label is longer than {MAX_LABEL_CHARS} characters"),
                ));
            }
            if !seen.insert(name.to_string()) {
                return Err(refuse(param, format!("duplicate label {name:?}")));
            }
            labels.push(Label {
                name: name.to_string(),
                description: None,
                examples: Vec::new(),
            });
        }

        for (key, description) in descriptions {
            let param = format!("descriptions.{key}");
            let label = find_label(&mut labels, key)
                .ok_or_else(|| refuse(&param, format!("description for unknown label {key:?}")))?;
            let description = description.trim();
            if description.chars().count() > MAX_DESCRIPTION_CHARS {
                return Err(refuse(
                    param,
                    format!("description is longer than {MAX_DESCRIPTION_CHARS} characters"),
                ));
            }
            if !description.is_empty() {
                label.description = Some(description.to_string());
            }
        }

        for (key, texts) in examples {
            let param = format!("examples.{key}");
            let label = find_label(&mut labels, key)
                .ok_or_else(|| refuse(&param, format!("examples for unknown label {key:?}")))?;
            if texts.len() > MAX_EXAMPLES_PER_LABEL {
                return Err(refuse(
                    param,
                    format!("at most {MAX_EXAMPLES_PER_LABEL} examples per label"),
                ));
            }
            for (j, text) in texts.iter().enumerate() {
                if text.trim().is_empty() {
                    return Err(refuse(format!("{param}[{j}]"), "example is empty"));
                }
                label.examples.push(text.clone());
            }
        }

        let source_type = match source_type.map(str::trim) {
            Some(s) if s.chars().count() > MAX_SOURCE_TYPE_CHARS => {
                return Err(refuse(
                    "source_type",
                    format!("source_type is longer than {MAX_SOURCE_TYPE_CHARS} characters"),
                ))
            }
            Some("") | None => None,
            Some(s) => Some(s.to_string()),
        };
        Ok(Self {
            labels,
            source_type,
        })
    }

    /// Label names in request order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.labels.iter().map(|label| label.name.as_str())
    }
}

fn find_label<'a>(labels: &'a mut [Label], key: &str) -> Option<&'a mut Label> {
    let key = key.trim();
    labels.iter_mut().find(|label| label.name == key)
}

/// Turns a label name into words: `feature_request` → `feature request`,
/// `BillingIssue` → `billing issue`.
pub fn label_words(name: &str) -> String {
    let mut words = String::with_capacity(name.len() + 4);
    let mut previous: Option<char> = None;
    for c in name.chars() {
        if c == '_' || c == '-' || c == '.' || c == '/' {
            words.push(' ');
        } else {
            if c.is_uppercase() && previous.is_some_and(|p| p.is_lowercase()) {
                words.push(' ');
            }
            words.extend(c.to_lowercase());
        }
        previous = Some(c);
    }
    words.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The sentences whose mean vector stands for a label. Measured on the dev sets
/// (README, "Accuracy"): the bare words and "about <words>" averaged beat either alone
/// and every longer template tried ("This text is about ...", "<type> topic: ...").
/// A description, when given, is appended to each; `source_type` names the subject.
pub fn label_sentences(label: &Label, source_type: Option<&str>) -> Vec<String> {
    let words = label_words(&label.name);
    let about = match source_type {
        Some(kind) => format!("{kind} about {words}"),
        None => format!("about {words}"),
    };
    let mut sentences = vec![words, about];
    if let Some(description) = &label.description {
        sentences
            .iter_mut()
            .for_each(|s| *s = format!("{s}: {description}"));
    }
    sentences
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn words_from_snake_kebab_and_camel_case() {
        assert_eq!(label_words("feature_request"), "feature request");
        assert_eq!(label_words("card-payment_fee"), "card payment fee");
        assert_eq!(label_words("BillingIssue"), "billing issue");
        assert_eq!(label_words("  spaced   out "), "spaced out");
    }

    #[test]
    fn duplicates_after_trimming_are_refused() {
        let err = LabelSet::new(
            &names(&["billing", " billing "]),
            &Default::default(),
            &Default::default(),
            None,
        )
        .unwrap_err();
        assert_eq!(err.param, "labels[1]");
    }

    #[test]
    fn descriptions_must_name_known_labels() {
        let mut descriptions = BTreeMap::new();
        descriptions.insert("refund".to_string(), "money back".to_string());
        let err = LabelSet::new(
            &names(&["billing"]),
            &descriptions,
            &Default::default(),
            None,
        )
        .unwrap_err();
        assert_eq!(err.param, "descriptions.refund");
    }

    #[test]
    fn label_count_limits() {
        assert_eq!(
            LabelSet::new(&[], &Default::default(), &Default::default(), None)
                .unwrap_err()
                .param,
            "labels"
        );
        let many: Vec<String> = (0..=MAX_LABELS).map(|i| format!("l{i}")).collect();
        assert!(LabelSet::new(&many, &Default::default(), &Default::default(), None).is_err());
        assert!(LabelSet::new(
            &many[..MAX_LABELS],
            &Default::default(),
            &Default::default(),
            None
        )
        .is_ok());
    }
}
