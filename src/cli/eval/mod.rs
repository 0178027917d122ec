//! `zeroshot eval`: runs the real engine (the service's code path) over a labelled TSV
//! and reports accuracy, macro-F1, the worst labels, multi-mode recall and throughput.
//! With `--fit-calibration` it also fits the manifest's calibration constants
//! (`calibration`).

mod calibration;

pub use calibration::{fit_calibration, multi_recall, rotate, HeldOut};

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::batch::lines::RawLine;
use crate::batch::sample::Sampler;
use crate::classifiers::learn;
use crate::engine::{AdaptationReport, Engine, LabelScorer, LabelSet, LabelVectors, Mode};

/// Texts embedded per engine call.
const CHUNK: usize = 256;

/// One labelled example.
#[derive(Debug, Clone)]
pub struct Example {
    pub text: String,
    pub label: String,
}

/// Reads a `text<TAB>label` file with a header line. Fields may be quoted
/// (`"..."`, with `""` for a quote) and then hold tabs and span lines, as spreadsheet
/// exports do. Blank lines are skipped.
pub fn read_tsv(path: &Path) -> anyhow::Result<Vec<Example>> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    parse_tsv(file, path)
}

/// [`read_tsv`] of any reader; `path` only names it in errors.
fn parse_tsv(reader: impl std::io::Read, path: &Path) -> anyhow::Result<Vec<Example>> {
    let mut tsv = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        // Only `\n` ends a record: a `\r` elsewhere stays in its field, and the one
        // of a `\r\n` ending lands on the label, which is trimmed.
        .terminator(csv::Terminator::Any(b'\n'))
        // Records of one or three fields are read, then reported below.
        .flexible(true)
        .has_headers(true)
        .from_reader(reader);
    let mut examples = Vec::new();
    for record in tsv.records() {
        let record = record.with_context(|| format!("reading {}", path.display()))?;
        let fields: Vec<&str> = record.iter().collect();
        match fields.as_slice() {
            [text, label] if !text.trim().is_empty() && !label.trim().is_empty() => {
                examples.push(Example {
                    text: text.to_string(),
                    label: label.trim().to_string(),
                })
            }
            [only] if only.trim().is_empty() => {}
            _ => {
                // The header is record 1, as the file's first line is line 1.
                let position = record.position().expect("read records have a position");
                bail!(
                    "{}: record {} (line {}): expected text<TAB>label",
                    path.display(),
                    position.record() + 1,
                    position.line()
                )
            }
        }
    }
    if examples.is_empty() {
        bail!("{}: no examples", path.display());
    }
    Ok(examples)
}

/// How to build the label set.
#[derive(Debug, Default)]
pub struct EvalOptions {
    /// Labelled data to draw examples from (the first K per label, in file order).
    pub train: Vec<Example>,
    pub examples_per_label: usize,
    pub descriptions: BTreeMap<String, String>,
    pub source_type: Option<String>,
    pub mode: Mode,
    pub threshold: f32,
    pub fit_calibration: bool,
    /// Label vectors from the bare names (underscores as spaces) instead of the
    /// engine's label method: the baseline that
    /// docs/accuracy.md#results-test-sets-one-command compares against.
    pub baseline: bool,
    /// Score the file as a batch job with `adapt: true` would: the same sample (the
    /// texts as NDJSON lines, picked by byte offset), the same fit, the same scoring.
    pub adapt: bool,
    /// Adapt a saved classifier on this part of the texts (their labels unseen), as
    /// `POST /v1/classifiers/{name}/adapt` does, then score the rest one text at a
    /// time as `/v1/classify` does with the adapted version.
    pub adapt_on: Option<AdaptPart>,
}

/// The part of a file's texts `--adapt-on` adapts on: a count (`500`) or a share
/// (`50%`), taken evenly spread through the file; the rest is scored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AdaptPart {
    Texts(usize),
    Percent(f64),
}

impl std::str::FromStr for AdaptPart {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let wrong = || format!("{value:?}: expected a count of texts (500) or a share (50%)");
        match value.strip_suffix('%') {
            Some(share) => match share.parse::<f64>() {
                Ok(p) if p > 0.0 && p < 100.0 => Ok(Self::Percent(p)),
                _ => Err(wrong()),
            },
            None => value.parse().map(Self::Texts).map_err(|_| wrong()),
        }
    }
}

impl AdaptPart {
    /// (the texts adapted on, the texts scored): every text goes to one of the two,
    /// the adapted part evenly spread through `data`.
    pub fn split(self, data: &[Example]) -> (Vec<Example>, Vec<Example>) {
        let n = data.len();
        let count = match self {
            Self::Texts(count) => count.min(n),
            Self::Percent(p) => ((n as f64 * p / 100.0).round() as usize).min(n),
        };
        let mut chosen = vec![false; n];
        for i in 0..count {
            chosen[i * n / count.max(1)] = true;
        }
        let (adapt, scored): (Vec<_>, Vec<_>) = data
            .iter()
            .cloned()
            .zip(chosen)
            .partition(|(_, chosen)| *chosen);
        let texts = |part: Vec<(Example, bool)>| part.into_iter().map(|(e, _)| e).collect();
        (texts(adapt), texts(scored))
    }
}

/// One label's F1.
#[derive(Debug, Serialize)]
pub struct LabelF1 {
    pub label: String,
    pub f1: f64,
    pub support: usize,
}

/// What `zeroshot eval` prints.
#[derive(Debug, Serialize)]
pub struct EvalReport {
    pub texts: usize,
    pub labels: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub worst_labels: Vec<LabelF1>,
    /// Multi mode at the threshold: share of texts whose true label is returned.
    pub multi_recall: f64,
    /// Multi mode at the threshold: labels returned per text.
    pub multi_mean_labels: f64,
    pub texts_per_second: f64,
    /// Tokens the model read per second over the same run.
    pub tokens_per_second: f64,
    /// What adaptation did (with `--adapt` or `--adapt-on`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adaptation: Option<AdaptationReport>,
    /// With `--adapt-on`: the texts adapted on (`texts` counts the ones scored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapted_on: Option<usize>,
    /// (similarity per label, index of the true label) per text; filled when fitting.
    #[serde(skip)]
    pub similarities: Vec<(Vec<f32>, usize)>,
}

/// The texts a batch job over this data would fit its adaptation on: each text as an
/// NDJSON line `{"text": ...}`, offered to the job's sampler at its byte offset.
fn batch_sample(test: &[Example]) -> Vec<String> {
    let lines: Vec<Vec<u8>> = test
        .iter()
        .map(|e| serde_json::to_vec(&serde_json::json!({ "text": e.text })).expect("serialisable"))
        .collect();
    let file_bytes: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
    let mut sampler = Sampler::new(file_bytes);
    let mut start = 0u64;
    for (number, bytes) in lines.into_iter().enumerate() {
        let length = bytes.len() as u64 + 1;
        let line = RawLine {
            number: number as i64 + 1,
            bytes: Some(bytes),
        };
        sampler.offer(start, &line);
        start += length;
    }
    sampler.finish(test.len())
}

/// Runs the evaluation.
pub fn evaluate(
    engine: &Engine,
    data: &[Example],
    options: &EvalOptions,
) -> anyhow::Result<EvalReport> {
    let mut names: Vec<String> = data.iter().map(|e| e.label.clone()).collect();
    names.sort();
    names.dedup();
    let set = label_set(&names, options)?;
    let (adapt_part, test) = match options.adapt_on {
        Some(part) => part.split(data),
        None => (Vec::new(), data.to_vec()),
    };
    let test = test.as_slice();

    let started = Instant::now();
    let labels = label_vectors(engine, &names, &set, options)?;
    let (scorer, adaptation) = scorer(
        engine,
        test,
        &adapt_part,
        labels,
        set.has_examples(),
        options,
    )?;
    let index: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let scored = score_all(engine, test, scorer.as_ref(), &index, options)?;
    let elapsed = started.elapsed().as_secs_f64();
    let truth: Vec<usize> = test.iter().map(|e| index[e.label.as_str()]).collect();

    let (accuracy, per_label) = f1_scores(&truth, &scored.predicted, &names);
    let macro_f1 = per_label.iter().map(|l| l.f1).sum::<f64>() / per_label.len() as f64;
    let mut worst_labels = per_label;
    worst_labels.sort_by(|a, b| a.f1.total_cmp(&b.f1));
    worst_labels.truncate(5);
    Ok(EvalReport {
        texts: test.len(),
        labels: names.len(),
        accuracy,
        macro_f1,
        worst_labels,
        multi_recall: scored.multi_hits as f64 / test.len() as f64,
        multi_mean_labels: scored.multi_returned as f64 / test.len() as f64,
        texts_per_second: test.len() as f64 / elapsed,
        tokens_per_second: scored.tokens as f64 / elapsed,
        adaptation,
        adapted_on: options.adapt_on.map(|_| adapt_part.len()),
        similarities: scored.similarities,
    })
}

/// The label set of `names` with the descriptions of `options` that name them, and up
/// to `examples_per_label` training examples each.
fn label_set(names: &[String], options: &EvalOptions) -> anyhow::Result<LabelSet> {
    let descriptions: BTreeMap<String, String> = options
        .descriptions
        .iter()
        .filter(|(label, _)| names.contains(label))
        .map(|(label, text)| (label.clone(), text.clone()))
        .collect();
    let mut examples: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if options.examples_per_label > 0 {
        for example in &options.train {
            let list = examples.entry(example.label.clone()).or_default();
            if list.len() < options.examples_per_label && names.contains(&example.label) {
                list.push(example.text.clone());
            }
        }
        examples.retain(|label, _| names.contains(label));
    }
    Ok(LabelSet::new(
        names,
        &descriptions,
        &examples,
        options.source_type.as_deref(),
    )?)
}

/// The label vectors of `set`, or with `baseline` just the label names embedded.
fn label_vectors(
    engine: &Engine,
    names: &[String],
    set: &LabelSet,
    options: &EvalOptions,
) -> anyhow::Result<LabelVectors> {
    if !options.baseline {
        return Ok(engine.label_vectors(set)?);
    }
    let words: Vec<String> = names.iter().map(|n| n.replace('_', " ")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let prefix = &engine.encoder().manifest().label_prefix;
    Ok(LabelVectors {
        names: names.to_vec(),
        vectors: engine
            .encoder()
            .embed(&words, prefix)?
            .into_iter()
            .map(|e| e.vector)
            .collect(),
    })
}

/// What scores the texts: `labels`, or with `adapt` the labels adapted to the texts a
/// batch job would sample, or with `adapt_on` to `adapt_part` as a saved classifier
/// is adapted (and what adaptation did). `anchored` when the labels have examples.
fn scorer(
    engine: &Engine,
    test: &[Example],
    adapt_part: &[Example],
    labels: LabelVectors,
    anchored: bool,
    options: &EvalOptions,
) -> anyhow::Result<(Box<dyn LabelScorer>, Option<AdaptationReport>)> {
    let adapted = if options.adapt_on.is_some() {
        let texts = adapt_part.iter().map(|e| e.text.clone()).collect();
        learn::fit_texts(engine, texts, &labels, anchored)?
    } else if options.adapt {
        engine.adapt(&batch_sample(test), &labels, anchored)?
    } else {
        return Ok((Box::new(labels), None));
    };
    let scorer: Box<dyn LabelScorer> = match adapted.labels {
        Some(adapted) => Box::new(adapted),
        None => Box::new(labels),
    };
    Ok((scorer, Some(adapted.report)))
}

/// What scoring every test text gave.
struct Scored {
    /// Index of the single-mode label per text.
    predicted: Vec<usize>,
    tokens: usize,
    /// Texts whose true label multi mode returned.
    multi_hits: usize,
    /// Labels multi mode returned, all texts together.
    multi_returned: usize,
    /// (similarity per label, index of the true label) per text, when fitting.
    similarities: Vec<(Vec<f32>, usize)>,
}

/// Embeds the test texts [`CHUNK`] at a time and scores each in single and multi mode.
fn score_all(
    engine: &Engine,
    test: &[Example],
    labels: &dyn LabelScorer,
    index: &HashMap<&str, usize>,
    options: &EvalOptions,
) -> anyhow::Result<Scored> {
    let mut scored = Scored {
        predicted: Vec::with_capacity(test.len()),
        tokens: 0,
        multi_hits: 0,
        multi_returned: 0,
        similarities: Vec::new(),
    };
    for chunk in test.chunks(CHUNK) {
        let texts: Vec<&str> = chunk.iter().map(|e| e.text.as_str()).collect();
        for (embedding, example) in engine.embed_texts(&texts)?.iter().zip(chunk) {
            scored.tokens += embedding.tokens;
            let single = engine.score(embedding, labels, options.mode, options.threshold);
            scored.predicted.push(index[single.label.as_str()]);
            let multi = engine.score(embedding, labels, Mode::Multi, options.threshold);
            scored.multi_hits += usize::from(multi.labels.contains(&example.label));
            scored.multi_returned += multi.labels.len();
            if options.fit_calibration {
                scored.similarities.push((
                    engine.similarities(embedding, labels),
                    index[example.label.as_str()],
                ));
            }
        }
    }
    Ok(scored)
}

/// Accuracy and per-label F1 (labels with no gold example are left out).
fn f1_scores(truth: &[usize], predicted: &[usize], names: &[String]) -> (f64, Vec<LabelF1>) {
    let n = names.len();
    let (mut tp, mut fp, mut fn_) = (vec![0usize; n], vec![0usize; n], vec![0usize; n]);
    for (&t, &p) in truth.iter().zip(predicted) {
        if t == p {
            tp[t] += 1;
        } else {
            fp[p] += 1;
            fn_[t] += 1;
        }
    }
    let accuracy = tp.iter().sum::<usize>() as f64 / truth.len() as f64;
    let per_label = (0..n)
        .filter(|&i| tp[i] + fn_[i] > 0)
        .map(|i| {
            let denominator = 2 * tp[i] + fp[i] + fn_[i];
            LabelF1 {
                label: names[i].clone(),
                f1: 2.0 * tp[i] as f64 / denominator as f64,
                support: tp[i] + fn_[i],
            }
        })
        .collect();
    (accuracy, per_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples(n: usize) -> Vec<Example> {
        (0..n)
            .map(|i| Example {
                text: format!("text {i}"),
                label: format!("label {}", i % 3),
            })
            .collect()
    }

    #[test]
    fn adapt_parts_read_counts_and_shares_and_split_every_text_once() {
        assert_eq!("500".parse(), Ok(AdaptPart::Texts(500)));
        assert_eq!("50%".parse(), Ok(AdaptPart::Percent(50.0)));
        for wrong in ["0%", "100%", "half", "-3", ""] {
            assert!(wrong.parse::<AdaptPart>().is_err(), "{wrong}");
        }
        let data = examples(10);
        let (adapt, scored) = AdaptPart::Percent(50.0).split(&data);
        let texts = |part: &[Example]| part.iter().map(|e| e.text.clone()).collect::<Vec<_>>();
        assert_eq!(
            texts(&adapt),
            ["text 0", "text 2", "text 4", "text 6", "text 8"]
        );
        assert_eq!(
            texts(&scored),
            ["text 1", "text 3", "text 5", "text 7", "text 9"]
        );
        let (adapt, scored) = AdaptPart::Texts(20).split(&data);
        assert_eq!((adapt.len(), scored.len()), (10, 0), "at most every text");
        let (adapt, scored) = AdaptPart::Percent(75.0).split(&examples(1000));
        assert_eq!((adapt.len(), scored.len()), (750, 250));
    }

    fn parse(content: &str) -> anyhow::Result<Vec<(String, String)>> {
        let examples = parse_tsv(content.as_bytes(), Path::new("t.tsv"))?;
        Ok(examples.into_iter().map(|e| (e.text, e.label)).collect())
    }

    fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(text, label)| (text.to_string(), label.to_string()))
            .collect()
    }

    #[test]
    fn quoted_fields_may_span_lines() {
        // Quoted fields hold tabs, newlines and doubled quotes; CRLF endings work; the
        // header (quoted here, over two lines) is skipped.
        let examples =
            parse("\"te\nxt\"\tlabel\r\n\"a \"\"b\"\"\nc\td\"\tx\nplain\ty\r\n\"q\"\t\"z\"\r\n")
                .unwrap();
        assert_eq!(
            examples,
            pairs(&[("a \"b\"\nc\td", "x"), ("plain", "y"), ("q", "z")])
        );
    }

    #[test]
    fn unquoted_fields_are_taken_as_written() {
        // A quote inside an unquoted field is a character; so is a lone `\r`; only the
        // label is trimmed; blank and whitespace-only lines are skipped.
        let examples =
            parse("text\tlabel\n\nsay \"hi\"\tgreeting\n  \r\n\r\na\rb \t  padded \n   \nlast\tl")
                .unwrap();
        assert_eq!(
            examples,
            pairs(&[
                ("say \"hi\"", "greeting"),
                ("a\rb ", "padded"),
                ("last", "l")
            ])
        );
    }

    #[test]
    fn bad_records_are_named() {
        let error = parse("text\tlabel\na\tb\n\"two\nlines\"\tc\nno label\n")
            .unwrap_err()
            .to_string();
        assert_eq!(error, "t.tsv: record 4 (line 5): expected text<TAB>label");
        let error = parse("text\tlabel\na\tb\tc\n").unwrap_err().to_string();
        assert_eq!(error, "t.tsv: record 2 (line 2): expected text<TAB>label");
        let error = parse("text\tlabel\n \tb\n").unwrap_err().to_string();
        assert_eq!(error, "t.tsv: record 2 (line 2): expected text<TAB>label");
        let error = parse("text\tlabel\n\n").unwrap_err().to_string();
        assert_eq!(error, "t.tsv: no examples");
    }

    #[test]
    fn f1_and_accuracy() {
        let names = vec!["a".to_string(), "b".to_string()];
        let (accuracy, per_label) = f1_scores(&[0, 0, 1, 1], &[0, 1, 1, 1], &names);
        assert_eq!(accuracy, 0.75);
        assert!((per_label[0].f1 - 2.0 / 3.0).abs() < 1e-9);
        assert!((per_label[1].f1 - 0.8).abs() < 1e-9);
    }
}
