//! Label sets: validation of what a caller sent, and the sentences whose vectors
//! stand for each label.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::text::{self, TextError};

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
    /// Whether any label has examples.
    pub fn has_examples(&self) -> bool {
        self.labels.iter().any(|label| !label.examples.is_empty())
    }

    /// Validates raw request parts: 1-200 labels, unique after trimming, each at most
    /// 100 characters; descriptions and examples only for known labels.
    pub fn new(
        names: &[String],
        descriptions: &BTreeMap<String, String>,
        examples: &BTreeMap<String, Vec<String>>,
        source_type: Option<&str>,
    ) -> Result<Self, LabelError> {
        let mut labels = parse_names(names)?;
        add_descriptions(&mut labels, descriptions)?;
        add_examples(&mut labels, examples)?;
        let source_type = parse_source_type(source_type)?;
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

/// The labels of `names`, trimmed: 1 to [`MAX_LABELS`], unique, each at most
/// [`MAX_LABEL_CHARS`] characters; no descriptions or examples yet.
fn parse_names(names: &[String]) -> Result<Vec<Label>, LabelError> {
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
        check_text(&param, "label", name, false)?;
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
    Ok(labels)
}

/// Sets the trimmed descriptions of known labels, each at most
/// [`MAX_DESCRIPTION_CHARS`] characters; a blank one means none.
fn add_descriptions(
    labels: &mut [Label],
    descriptions: &BTreeMap<String, String>,
) -> Result<(), LabelError> {
    for (key, description) in descriptions {
        let param = format!("descriptions.{key}");
        let label = find_label(labels, key)
            .ok_or_else(|| refuse(&param, format!("description for unknown label {key:?}")))?;
        let description = description.trim();
        check_text(&param, "description", description, true)?;
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(refuse(
                param,
                format!("description is longer than {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        if !text::is_blank(description) {
            label.description = Some(description.to_string());
        }
    }
    Ok(())
}

/// Adds the examples of known labels, at most [`MAX_EXAMPLES_PER_LABEL`] each.
fn add_examples(
    labels: &mut [Label],
    examples: &BTreeMap<String, Vec<String>>,
) -> Result<(), LabelError> {
    for (key, texts) in examples {
        let param = format!("examples.{key}");
        let label = find_label(labels, key)
            .ok_or_else(|| refuse(&param, format!("examples for unknown label {key:?}")))?;
        if texts.len() > MAX_EXAMPLES_PER_LABEL {
            return Err(refuse(
                param,
                format!("at most {MAX_EXAMPLES_PER_LABEL} examples per label"),
            ));
        }
        for (j, text) in texts.iter().enumerate() {
            check_text(&format!("{param}[{j}]"), "example", text, false)?;
            label.examples.push(text.clone());
        }
    }
    Ok(())
}

/// The trimmed source type, at most [`MAX_SOURCE_TYPE_CHARS`] characters; a blank
/// one means none.
fn parse_source_type(source_type: Option<&str>) -> Result<Option<String>, LabelError> {
    if let Some(source_type) = source_type {
        check_text("source_type", "source_type", source_type, true)?;
    }
    match source_type.map(str::trim) {
        Some(s) if s.chars().count() > MAX_SOURCE_TYPE_CHARS => Err(refuse(
            "source_type",
            format!("source_type is longer than {MAX_SOURCE_TYPE_CHARS} characters"),
        )),
        Some(s) if text::is_blank(s) => Ok(None),
        None => Ok(None),
        Some(s) => Ok(Some(s.to_string())),
    }
}

/// Refuses a label part that holds a NUL, or that is blank unless `blank_ok` (a blank
/// description or source_type means none); `what` names the part in the message.
fn check_text(param: &str, what: &str, value: &str, blank_ok: bool) -> Result<(), LabelError> {
    match text::check(value) {
        Ok(()) => Ok(()),
        Err(TextError::Blank) if blank_ok => Ok(()),
        Err(TextError::Blank) => Err(refuse(param, format!("{what} is empty"))),
        Err(err) => Err(refuse(param, format!("{what}: {err}"))),
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
/// (docs/accuracy.md#choices-measured-on-the-dev-sets): the bare words and
/// "about <words>" averaged beat either alone and every longer template tried ("This
/// text is about ...", "<type> topic: ...").
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

    #[test]
    fn invisible_and_nul_label_parts_are_refused_by_name() {
        let refused = |names: &[&str], examples: &[(&str, &str)]| {
            let examples = examples
                .iter()
                .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                .collect();
            LabelSet::new(
                &super::tests::names(names),
                &Default::default(),
                &examples,
                None,
            )
            .unwrap_err()
        };
        let err = refused(&["ok", "\u{200B}\u{FEFF}"], &[]);
        assert_eq!(
            (err.param.as_str(), err.message.as_str()),
            ("labels[1]", "label is empty")
        );
        assert_eq!(refused(&["a\0b"], &[]).param, "labels[0]");
        assert!(refused(&["a\0b"], &[]).message.contains("NUL"));
        assert_eq!(
            refused(&["ok"], &[("ok", "\u{00AD}")]).param,
            "examples.ok[0]"
        );
        let mut descriptions = BTreeMap::new();
        descriptions.insert("ok".to_string(), "\u{2060} ".to_string());
        let set = LabelSet::new(
            &names(&["ok"]),
            &descriptions,
            &Default::default(),
            Some("\u{200D}"),
        )
        .unwrap();
        assert_eq!(
            (set.labels[0].description.as_deref(), set.source_type),
            (None, None)
        );
    }

    use proptest::prelude::*;

    /// Strings built of what validation cares about: words, spaces, invisible
    /// characters, NULs, and runs just under and over each length limit.
    fn text_of(long: usize) -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            6 => "[a-z]{1,6}",
            2 => Just(" ".to_string()),
            1 => Just("\u{200B}".to_string()),
            1 => Just("\u{FEFF}\u{00AD}".to_string()),
            1 => Just("\0".to_string()),
            1 => Just("é".to_string()),
            1 => (long - 3..long + 3).prop_map(|n| "x".repeat(n)),
        ];
        proptest::collection::vec(piece, 0..4).prop_map(|pieces| pieces.concat())
    }

    /// A request's label parts; descriptions and examples mostly name real labels.
    #[allow(clippy::type_complexity)]
    fn label_request() -> impl Strategy<
        Value = (
            Vec<String>,
            BTreeMap<String, String>,
            BTreeMap<String, Vec<String>>,
            Option<String>,
        ),
    > {
        let names = prop_oneof![
            8 => proptest::collection::vec(text_of(MAX_LABEL_CHARS), 0..6),
            1 => proptest::collection::vec("[a-z]{1,4}", MAX_LABELS - 2..MAX_LABELS + 2),
        ];
        names.prop_flat_map(|names| {
            let count = names.len().max(1);
            let key = (0..count + 1, any::<bool>()).prop_map({
                let names = names.clone();
                move |(i, padded)| match names.get(i) {
                    Some(name) if padded => format!(" {name}"),
                    Some(name) => name.clone(),
                    None => "unknown".to_string(),
                }
            });
            let examples = prop_oneof![
                6 => proptest::collection::vec(text_of(8), 0..3),
                1 => proptest::collection::vec(Just("e".to_string()), MAX_EXAMPLES_PER_LABEL..MAX_EXAMPLES_PER_LABEL + 2),
            ];
            (
                Just(names),
                proptest::collection::btree_map(key.clone(), text_of(MAX_DESCRIPTION_CHARS), 0..3),
                proptest::collection::btree_map(key, examples, 0..3),
                proptest::option::of(text_of(MAX_SOURCE_TYPE_CHARS)),
            )
        })
    }

    /// The param the limits (docs/api.md#post-v1classify) say is at fault first, in the
    /// order the request is checked; `None` when they allow the request.
    fn first_fault(
        names: &[String],
        descriptions: &BTreeMap<String, String>,
        examples: &BTreeMap<String, Vec<String>>,
        source_type: Option<&str>,
    ) -> Option<String> {
        let bad = |s: &str| {
            s.contains('\0')
                || s.chars()
                    .all(|c| c.is_whitespace() || super::text::is_default_ignorable(c))
        };
        let too_long = |s: &str, most: usize| s.trim().chars().count() > most;
        if names.is_empty() || names.len() > MAX_LABELS {
            return Some("labels".into());
        }
        let trimmed: Vec<&str> = names.iter().map(|n| n.trim()).collect();
        for (i, name) in trimmed.iter().enumerate() {
            if bad(name) || too_long(name, MAX_LABEL_CHARS) || trimmed[..i].contains(name) {
                return Some(format!("labels[{i}]"));
            }
        }
        for (key, description) in descriptions {
            if !trimmed.contains(&key.trim())
                || description.contains('\0')
                || too_long(description, MAX_DESCRIPTION_CHARS)
            {
                return Some(format!("descriptions.{key}"));
            }
        }
        for (key, texts) in examples {
            if !trimmed.contains(&key.trim()) || texts.len() > MAX_EXAMPLES_PER_LABEL {
                return Some(format!("examples.{key}"));
            }
            if let Some(j) = texts.iter().position(|t| bad(t)) {
                return Some(format!("examples.{key}[{j}]"));
            }
        }
        match source_type {
            Some(s) if s.contains('\0') || too_long(s, MAX_SOURCE_TYPE_CHARS) => {
                Some("source_type".into())
            }
            _ => None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn label_sets_are_accepted_exactly_within_the_limits(
            (names, descriptions, examples, source_type) in label_request(),
        ) {
            let result = LabelSet::new(&names, &descriptions, &examples, source_type.as_deref());
            let fault = first_fault(&names, &descriptions, &examples, source_type.as_deref());
            match result {
                Ok(set) => {
                    prop_assert_eq!(fault, None);
                    let trimmed: Vec<&str> = names.iter().map(|n| n.trim()).collect();
                    prop_assert_eq!(set.names().collect::<Vec<_>>(), trimmed);
                    for label in &set.labels {
                        let given = label.examples.len();
                        let sent: usize = examples
                            .iter()
                            .filter(|(key, _)| key.trim() == label.name)
                            .map(|(_, texts)| texts.len())
                            .sum();
                        prop_assert_eq!(given, sent);
                    }
                }
                Err(err) => {
                    prop_assert_eq!(Some(err.param), fault, "{}", err.message);
                    prop_assert!(!err.message.is_empty());
                }
            }
        }

        #[test]
        fn thresholds_are_accepted_exactly_from_0_to_1(
            threshold in prop_oneof![any::<f32>(), -0.1f32..1.1, Just(f32::NAN), Just(0.0), Just(1.0)],
        ) {
            match crate::engine::threshold_or_default(Some(threshold)) {
                Ok(t) => prop_assert!((0.0..=1.0).contains(&threshold) && t == threshold),
                Err(err) => {
                    prop_assert!(!(0.0..=1.0).contains(&threshold));
                    prop_assert_eq!(err.param, "threshold");
                }
            }
        }
    }
}
