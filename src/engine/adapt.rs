//! Batch-adaptive scoring: a batch job sees its own texts, so it refines each label's
//! vector from the texts the job itself assigns to that label before it scores any.
//!
//! Fitted once per job on a bounded sample of its lines (see `batch::sample`):
//! 1. The label vectors (names, descriptions, examples: what `Engine::label_vectors`
//!    gives) softly assign the sample's texts to labels.
//! 2. Two views of every vector: centred on the sample's mean, and whitened by the
//!    inverse square root of the sample's within-label covariance (shrunk towards a
//!    multiple of the identity). Centring removes what all the job's texts share;
//!    whitening evens out directions that vary a lot inside every label, which is
//!    what lets 20 broad topics (stackoverflow) separate.
//! 3. Ten rounds of soft EM: each label's vector becomes the normalised sum of the
//!    texts it softly wins (its **pull**) plus its own starting vector (so a label that
//!    wins nothing stays where its name put it); a text's similarity to a label is the
//!    mean of its cosines in the two views. When the labels have examples, the starting
//!    vector (the examples' fitted head) is **anchored**: it counts as much as the texts
//!    the label wins, so adapting never undoes what the examples taught (measured in
//!    docs/accuracy.md#adapted-classifiers).
//!
//! Measured on the dev sets (docs/accuracy.md#adaptive-scoring-batch-jobs), with the
//! guard rails that switch it off where it cannot help: too few lines, or texts that
//! concentrate on a few labels (a label with 90% of the rows drags the others' vectors
//! into its texts).
//!
//! Deterministic: matrix products run single-threaded in a fixed order, so the same
//! sample gives the same vectors bit for bit.

use std::collections::BTreeMap;

use ndarray::{Array1, Array2, ArrayView1, Axis};
use serde::{Deserialize, Serialize};

use super::manifest::Manifest;
use super::{Calibration, LabelScorer, LabelVectors};

/// With fewer sampled lines than this, adaptation switches itself off: label vectors
/// fitted on a handful of texts move more by chance than by signal.
pub const MIN_LINES: usize = 200;
/// Most lines a job fits on (spread over the whole file by byte offset).
pub const MAX_SAMPLE: usize = 20_000;
/// A job samples every line up to this many, and a tenth of its lines beyond (up to
/// [`MAX_SAMPLE`]): sampled lines are embedded twice, so this bounds what adaptation
/// adds to a large job to about a tenth.
pub const FULL_SAMPLE: usize = 2_000;
/// Adaptation switches itself off when the labels that the texts go to, zero-shot, are
/// effectively fewer than this share of the label set (exp of the entropy of the
/// predicted label distribution over the number of labels). On the dev sets the share
/// is .86-.97; when one label has 90% of the rows it is .1-.4.
const MIN_EFFECTIVE_LABEL_SHARE: f64 = 0.5;
/// At most `most` of `items`, evenly spread, in order: how a sample is thinned to the
/// texts adaptation fits on (a job's sample, the texts sent to a classifier's `/adapt`).
pub fn spread<T>(items: Vec<T>, most: usize) -> Vec<T> {
    if items.len() <= most {
        return items;
    }
    let step = items.len() as f64 / most as f64;
    let mut items: Vec<Option<T>> = items.into_iter().map(Some).collect();
    (0..most)
        .filter_map(|i| items[(i as f64 * step) as usize].take())
        .collect()
}

/// Softmax temperature of the soft assignments.
const TEMPERATURE: f32 = 0.01;
/// EM rounds.
pub const ROUNDS: usize = 10;
/// Shrinkage of the within-label covariance towards (trace / dim) times the identity.
const SHRINKAGE: f32 = 0.2;

/// What adaptation did for a job, as its status shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AdaptationReport {
    /// Whether the job is scored with adapted label vectors.
    pub applied: bool,
    /// Why it is not (switched off by the caller, or by itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Lines the vectors were fitted on.
    pub sample_lines: usize,
    /// EM rounds run (0 when not applied).
    pub rounds: usize,
    /// Sampled texts each label wins with the adapted vectors (zero-shot when not applied).
    pub texts_per_label: BTreeMap<String, usize>,
}

impl AdaptationReport {
    /// The report of a job that asked for no adaptation.
    pub fn off() -> Self {
        Self {
            applied: false,
            reason: Some("adapt is false".to_string()),
            sample_lines: 0,
            rounds: 0,
            texts_per_label: BTreeMap::new(),
        }
    }
}

/// Label vectors fitted to one job's texts: the two views' transforms and each label's
/// vector in both, plus the job statistics that put its similarities on the footing of
/// the manifest's `adapted_calibration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaptedLabels {
    names: Vec<String>,
    /// The sample's mean text vector.
    mean: Vec<f32>,
    /// Inverse square root of the shrunk within-label covariance, row-major, dim x dim.
    whitening: Vec<f32>,
    /// Each label's vector in the centred view.
    centred: Vec<Vec<f32>>,
    /// Each label's vector in the whitened view.
    whitened: Vec<Vec<f32>>,
    /// Mean over the sample of each text's best similarity.
    level: f32,
    /// Mean over the sample of (best similarity - mean similarity): how far a label
    /// stands out on this job's texts.
    spread: f32,
    /// Each label's pull in the centred view: the sum of the sampled texts it softly won
    /// in the last round (so new starting vectors can be combined with it, see
    /// [`AdaptedLabels::restarted`]). Empty in jobs stored before it was kept.
    #[serde(default)]
    pull_centred: Vec<Vec<f32>>,
    /// The same in the whitened view.
    #[serde(default)]
    pull_whitened: Vec<Vec<f32>>,
    /// The soft count of sampled texts each label won in the last round.
    #[serde(default)]
    mass: Vec<f32>,
}

/// Adaptation's outcome: the report, and the vectors when it applied.
pub struct Adapted {
    pub report: AdaptationReport,
    pub labels: Option<AdaptedLabels>,
}

fn rows(vectors: &[Vec<f32>], dim: usize) -> Array2<f32> {
    Array2::from_shape_fn((vectors.len(), dim), |(i, j)| vectors[i][j])
}

fn normalize_rows(mut m: Array2<f32>) -> Array2<f32> {
    for mut row in m.rows_mut() {
        let norm = row.dot(&row).sqrt();
        if norm > 0.0 {
            row /= norm;
        }
    }
    m
}

fn softmax_rows(mut m: Array2<f32>, temperature: f32) -> Array2<f32> {
    for mut row in m.rows_mut() {
        let max = row.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        row.mapv_inplace(|v| ((v - max) / temperature).exp());
        let total = row.sum();
        row /= total;
    }
    m
}

fn argmax(row: ArrayView1<f32>) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

fn texts_per_label(names: &[String], similarities: &Array2<f32>) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = names.iter().map(|n| (n.clone(), 0)).collect();
    for row in similarities.rows() {
        *counts.get_mut(&names[argmax(row)]).expect("known label") += 1;
    }
    counts
}

/// exp(entropy) of the zero-shot label distribution over the number of labels.
fn effective_label_share(similarities: &Array2<f32>) -> f64 {
    let labels = similarities.ncols();
    let mut counts = vec![0usize; labels];
    for row in similarities.rows() {
        counts[argmax(row)] += 1;
    }
    let n = similarities.nrows() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum();
    entropy.exp() / labels as f64
}

/// Fits adapted label vectors on `sample` (unit text vectors of the job's sampled
/// lines), starting from `labels` (`anchored` when they carry examples); switches
/// itself off where it cannot help.
pub fn fit(sample: &[Vec<f32>], labels: &LabelVectors, anchored: bool) -> Adapted {
    let names = labels.names.clone();
    let dim = labels.vectors.first().map_or(0, Vec::len);
    let x = rows(sample, dim);
    let start = normalize_rows(rows(&labels.vectors, dim));
    let zero_shot = x.dot(&start.t());
    if let Some(reason) = skip_reason(names.len(), sample.len(), &zero_shot) {
        return Adapted {
            report: AdaptationReport {
                applied: false,
                reason: Some(reason),
                sample_lines: sample.len(),
                rounds: 0,
                texts_per_label: texts_per_label(&names, &zero_shot),
            },
            labels: None,
        };
    }

    let n = x.nrows() as f32;
    let mean: Array1<f32> = x.sum_axis(Axis(0)) / n;
    let whitening = within_label_whitening(&x, zero_shot);
    let refined = refine(&x, &start, &mean, &whitening, anchored);
    let (level, spread) = level_and_spread(&refined.similarities);
    let to_vecs = |m: &Array2<f32>| m.rows().into_iter().map(|r| r.to_vec()).collect();
    Adapted {
        report: AdaptationReport {
            applied: true,
            reason: None,
            sample_lines: sample.len(),
            rounds: ROUNDS,
            texts_per_label: texts_per_label(&names, &refined.similarities),
        },
        labels: Some(AdaptedLabels {
            names,
            mean: mean.to_vec(),
            whitening: whitening.iter().copied().collect(),
            centred: to_vecs(&refined.centred),
            whitened: to_vecs(&refined.whitened),
            level: (level / n as f64) as f32,
            spread: ((spread / n as f64) as f32).max(1e-6),
            pull_centred: to_vecs(&refined.pull_centred),
            pull_whitened: to_vecs(&refined.pull_whitened),
            mass: refined.mass.to_vec(),
        }),
    }
}

/// Why adaptation cannot help with `labels` labels and `lines` sampled lines whose
/// zero-shot similarities are `zero_shot`, or `None` when it can.
fn skip_reason(labels: usize, lines: usize, zero_shot: &Array2<f32>) -> Option<String> {
    if labels < 2 {
        return Some("one label: nothing to choose between".to_string());
    }
    if lines < MIN_LINES {
        return Some(format!(
            "too few lines: {lines} (adaptation needs at least {MIN_LINES})"
        ));
    }
    let share = effective_label_share(zero_shot);
    if share < MIN_EFFECTIVE_LABEL_SHARE {
        return Some(format!(
            "the texts concentrate on few labels (effectively {:.1} of {labels}), where \
             adapting would pull the other labels into them",
            share * labels as f64,
        ));
    }
    None
}

/// The whitening matrix of the within-label covariance of the texts `x`, under the
/// soft assignment of their zero-shot similarities.
fn within_label_whitening(x: &Array2<f32>, zero_shot: Array2<f32>) -> Array2<f32> {
    let n = x.nrows() as f32;
    let assignment = softmax_rows(zero_shot, TEMPERATURE);
    let mass = assignment.sum_axis(Axis(0)).mapv(|m| m + 1e-6);
    let label_means = assignment.t().dot(x) / &mass.insert_axis(Axis(1));
    let residuals = x - &assignment.dot(&label_means);
    let covariance = residuals.t().dot(&residuals) / n;
    inverse_sqrt(&covariance, SHRINKAGE)
}

/// Label vectors after [`ROUNDS`] rounds of moving them towards the texts softly
/// assigned to them, the texts' last similarities to them, and the last round's pulls
/// and masses.
struct Refined {
    centred: Array2<f32>,
    whitened: Array2<f32>,
    similarities: Array2<f32>,
    pull_centred: Array2<f32>,
    pull_whitened: Array2<f32>,
    mass: Array1<f32>,
}

/// `start` in the two views of a sample with this `mean` and `whitening`.
fn views(
    start: &Array2<f32>,
    mean: &Array1<f32>,
    whitening: &Array2<f32>,
) -> (Array2<f32>, Array2<f32>) {
    let centred = start - mean;
    let whitened = normalize_rows(centred.dot(whitening));
    (normalize_rows(centred), whitened)
}

/// How much each label's starting vector counts against its pull: once, or when
/// `anchored` (the labels have examples) as much as the texts it won.
fn start_weights(mass: &Array1<f32>, anchored: bool) -> Array2<f32> {
    mass.mapv(|m| if anchored { m.max(1.0) } else { 1.0 })
        .insert_axis(Axis(1))
}

/// Refines the `start` label vectors on the texts `x`, both centred on `mean`, in
/// the plain and the `whitening` spaces; a similarity is the mean of the two.
fn refine(
    x: &Array2<f32>,
    start: &Array2<f32>,
    mean: &Array1<f32>,
    whitening: &Array2<f32>,
    anchored: bool,
) -> Refined {
    let (text_centred, text_whitened) = views(x, mean, whitening);
    let (start_centred, start_whitened) = views(start, mean, whitening);

    let similarity = |a: &Array2<f32>, b: &Array2<f32>| {
        (text_centred.dot(&a.t()) + text_whitened.dot(&b.t())) * 0.5
    };
    let mut assignment = softmax_rows(text_centred.dot(&start_centred.t()), TEMPERATURE);
    let mut refined = Refined {
        centred: start_centred.clone(),
        whitened: start_whitened.clone(),
        similarities: Array2::zeros((0, 0)),
        pull_centred: Array2::zeros(start.raw_dim()),
        pull_whitened: Array2::zeros(start.raw_dim()),
        mass: Array1::zeros(start.nrows()),
    };
    for _ in 0..ROUNDS {
        refined.mass = assignment.sum_axis(Axis(0));
        let weights = start_weights(&refined.mass, anchored);
        refined.pull_centred = assignment.t().dot(&text_centred);
        refined.pull_whitened = assignment.t().dot(&text_whitened);
        refined.centred = normalize_rows(&refined.pull_centred + &(&start_centred * &weights));
        refined.whitened = normalize_rows(&refined.pull_whitened + &(&start_whitened * &weights));
        refined.similarities = similarity(&refined.centred, &refined.whitened);
        assignment = softmax_rows(refined.similarities.clone(), TEMPERATURE);
    }
    refined
}

/// Sums over texts of the best similarity (level) and of its margin over the mean
/// similarity (spread).
fn level_and_spread(similarities: &Array2<f32>) -> (f64, f64) {
    let (mut level, mut spread) = (0f64, 0f64);
    for row in similarities.rows() {
        let best = row.fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        level += best;
        spread += best - row.mean().unwrap_or(0.0) as f64;
    }
    (level, spread)
}

impl AdaptedLabels {
    /// The same adaptation combined with new starting vectors `start` (the same labels,
    /// in the same order, after examples were taught): each label's pull is kept and
    /// its new start weighed as [`fit`] weighs it, so teaching an adapted classifier
    /// costs no embedding. The footing (level, spread) stays the sample's. `None` when
    /// the pulls were not kept or the labels differ.
    pub fn restarted(&self, start: &LabelVectors, anchored: bool) -> Option<AdaptedLabels> {
        let dim = self.mean.len();
        if self.mass.len() != self.names.len() || start.names != self.names {
            return None;
        }
        let mean = Array1::from(self.mean.clone());
        let whitening = Array2::from_shape_vec((dim, dim), self.whitening.clone()).ok()?;
        let (start_centred, start_whitened) = views(&rows(&start.vectors, dim), &mean, &whitening);
        let weights = start_weights(&Array1::from(self.mass.clone()), anchored);
        let combine = |pull: &[Vec<f32>], start: &Array2<f32>| {
            let pull = rows(pull, dim);
            normalize_rows(pull + &(start * &weights))
                .rows()
                .into_iter()
                .map(|r| r.to_vec())
                .collect()
        };
        Some(AdaptedLabels {
            centred: combine(&self.pull_centred, &start_centred),
            whitened: combine(&self.pull_whitened, &start_whitened),
            ..self.clone()
        })
    }
}

impl LabelScorer for AdaptedLabels {
    fn names(&self) -> &[String] {
        &self.names
    }

    /// The mean of the text's cosines in the two views, shifted and scaled by this
    /// job's own level and spread, so one set of calibration constants fits every job.
    fn similarities(&self, text: &[f32]) -> Vec<f32> {
        let dim = self.mean.len();
        let centred: Vec<f32> = text.iter().zip(&self.mean).map(|(t, m)| t - m).collect();
        let mut whitened = vec![0f32; dim];
        for (c, row) in centred.iter().zip(self.whitening.chunks_exact(dim)) {
            whitened.iter_mut().zip(row).for_each(|(w, r)| *w += c * r);
        }
        let unit = |v: &[f32]| {
            let norm = super::score::dot(v, v).sqrt().max(f32::MIN_POSITIVE);
            v.iter().map(|x| x / norm).collect::<Vec<f32>>()
        };
        let (centred, whitened) = (unit(&centred), unit(&whitened));
        self.centred
            .iter()
            .zip(&self.whitened)
            .map(|(a, b)| {
                let cosine =
                    0.5 * (super::score::dot(a, &centred) + super::score::dot(b, &whitened));
                (cosine - self.level) / self.spread
            })
            .collect()
    }

    fn calibration<'a>(&self, manifest: &'a Manifest) -> &'a Calibration {
        &manifest.adapted_calibration
    }
}

/// Most Newton-Schulz iterations for the inverse square root: quadratic once they close
/// in, converged well before this for any shrinkage of at least 0.1 at a few hundred
/// dimensions (the smallest eigenvalue then is at least a tenth of the mean).
const NEWTON_SCHULZ_STEPS: usize = 40;
/// The iteration stops once its update differs from the identity by less than this.
const NEWTON_SCHULZ_TOLERANCE: f32 = 1e-6;

/// `C'^(-1/2)` of a symmetric covariance `C`, with `C' = (1 - shrinkage) C + shrinkage
/// (trace / dim) I`, by the coupled Newton-Schulz iteration: matrix products only
/// (single-threaded, so the same input gives the same bits), about 0.1 s at 384
/// dimensions where Jacobi rotations took seconds.
fn inverse_sqrt(covariance: &Array2<f32>, shrinkage: f32) -> Array2<f32> {
    let dim = covariance.nrows();
    let identity = Array2::<f32>::eye(dim);
    let trace = covariance.diag().sum();
    let shrunk = covariance * (1.0 - shrinkage) + &identity * (shrinkage * trace / dim as f32);
    // Scaled so every eigenvalue lies in (0, 1], where the iteration converges.
    let scale = shrunk.iter().map(|v| v * v).sum::<f32>().sqrt();
    let mut y = &shrunk / scale;
    let mut z = identity.clone();
    for _ in 0..NEWTON_SCHULZ_STEPS {
        let t = (&identity * 3.0 - z.dot(&y)) * 0.5;
        y = y.dot(&t);
        z = t.dot(&z);
        let change = (&t - &identity).iter().fold(0f32, |m, v| m.max(v.abs()));
        if change < NEWTON_SCHULZ_TOLERANCE {
            break;
        }
    }
    z / scale.sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_sqrt_inverts_the_square_root() {
        // A symmetric positive definite matrix: M^-1/2 M M^-1/2 = I.
        let dim = 6;
        let m = Array2::from_shape_fn((dim, dim), |(i, j)| {
            if i == j {
                2.0 + i as f32
            } else {
                0.3 / (1.0 + (i as f32 - j as f32).abs())
            }
        });
        let w = inverse_sqrt(&m, 0.0);
        let identity = w.dot(&m).dot(&w);
        for i in 0..dim {
            for j in 0..dim {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((identity[[i, j]] - want).abs() < 1e-4, "{identity:?}");
            }
        }
    }

    fn unit(v: Vec<f32>) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    /// Texts around two centres that the label vectors only roughly point at.
    fn clusters(n: usize) -> (Vec<Vec<f32>>, LabelVectors) {
        let texts = (0..n)
            .map(|i| {
                let side = (i % 2) as f32;
                let wobble = ((i * 7919) % 13) as f32 / 13.0 - 0.5;
                unit(vec![1.0 - side, side, 0.3 + 0.2 * wobble, 0.1 * wobble])
            })
            .collect();
        let labels = LabelVectors {
            names: vec!["a".into(), "b".into()],
            vectors: vec![
                unit(vec![1.0, 0.2, 0.0, 0.5]),
                unit(vec![0.2, 1.0, 0.0, -0.5]),
            ],
        };
        (texts, labels)
    }

    #[test]
    fn switches_itself_off_on_few_lines() {
        let (texts, labels) = clusters(MIN_LINES - 1);
        let adapted = fit(&texts, &labels, false);
        assert!(!adapted.report.applied && adapted.labels.is_none());
        assert!(adapted.report.reason.unwrap().contains("too few lines"));
    }

    #[test]
    fn an_empty_file_is_no_error() {
        let (_, labels) = clusters(0);
        let adapted = fit(&[], &labels, false);
        assert!(!adapted.report.applied);
        assert_eq!(adapted.report.texts_per_label["a"], 0);
    }

    #[test]
    fn adapts_and_is_deterministic() {
        let (texts, labels) = clusters(400);
        let first = fit(&texts, &labels, false);
        assert!(first.report.applied, "{:?}", first.report);
        assert_eq!(first.report.texts_per_label["a"], 200);
        assert_eq!(first.report.texts_per_label["b"], 200);
        assert_eq!(first.labels, fit(&texts, &labels, false).labels);
    }

    #[test]
    fn restarting_from_the_same_start_gives_the_same_vectors() {
        let (texts, labels) = clusters(400);
        for anchored in [false, true] {
            let adapted = fit(&texts, &labels, anchored).labels.expect("applied");
            let again = adapted.restarted(&labels, anchored).expect("pulls kept");
            for (a, b) in adapted
                .centred
                .iter()
                .flatten()
                .zip(again.centred.iter().flatten())
            {
                assert!((a - b).abs() < 1e-5, "{a} against {b}");
            }
            let other = LabelVectors {
                names: vec!["a".into(), "c".into()],
                vectors: labels.vectors.clone(),
            };
            assert!(
                adapted.restarted(&other, anchored).is_none(),
                "other labels"
            );
        }
    }

    #[test]
    fn anchored_start_vectors_hold_their_ground() {
        // Label b's start points away from its texts; anchored, it moves less.
        let (texts, labels) = clusters(400);
        let b_start = normalize_rows(rows(&labels.vectors, 4));
        let moved = |anchored: bool| {
            let adapted = fit(&texts, &labels, anchored).labels.expect("applied");
            let mean = Array1::from(adapted.mean.clone());
            let centred = normalize_rows(&b_start - &mean);
            let b = Array1::from(adapted.centred[1].clone());
            centred.row(1).dot(&b)
        };
        assert!(
            moved(true) > moved(false),
            "{} <= {}",
            moved(true),
            moved(false)
        );
    }
}
