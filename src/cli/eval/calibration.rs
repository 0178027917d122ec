//! Calibration fitting for `zeroshot eval --fit-calibration`: the single-mode
//! temperature and the multi-mode logistic, and the rotation that checks multi mode's
//! constants transfer to data they were not fitted on.

use serde::Serialize;

use crate::engine::{probabilities, Calibration, Mode};

/// Multi mode under `calibration` at `threshold`: the share of texts whose true label
/// is returned, and the labels returned per text.
pub fn multi_recall(
    data: &[(Vec<f32>, usize)],
    calibration: &Calibration,
    threshold: f32,
) -> (f64, f64) {
    let (mut hits, mut returned) = (0usize, 0usize);
    for (similarities, truth) in data {
        let p = probabilities(similarities, Mode::Multi, calibration);
        hits += usize::from(p[*truth] >= threshold);
        returned += p.iter().filter(|&&q| q >= threshold).count();
    }
    let n = data.len().max(1) as f64;
    (hits as f64 / n, returned as f64 / n)
}

/// One held-out data set of a rotation: the calibration fitted on the other sets, and
/// multi mode's recall and labels per text on this one under it.
#[derive(Debug, Serialize)]
pub struct HeldOut {
    pub calibration_fitted_on_the_others: Calibration,
    pub held_out_multi_recall: f64,
    pub held_out_multi_mean_labels: f64,
}

/// Whether multi mode's calibration transfers to data it was not fitted on: for each
/// data set (its texts' similarities and true labels), fit on all the others and
/// measure on it at `threshold`.
pub fn rotate(data_sets: &[Vec<(Vec<f32>, usize)>], threshold: f32) -> Vec<HeldOut> {
    (0..data_sets.len())
        .map(|held_out| {
            let others: Vec<(Vec<f32>, usize)> = data_sets
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != held_out)
                .flat_map(|(_, set)| set.iter().cloned())
                .collect();
            let calibration = fit_calibration(&others);
            let (recall, labels) = multi_recall(&data_sets[held_out], &calibration, threshold);
            HeldOut {
                calibration_fitted_on_the_others: calibration,
                held_out_multi_recall: recall,
                held_out_multi_mean_labels: labels,
            }
        })
        .collect()
}

/// The multi-mode fit weighs each text's wrong labels as if there were this many, so
/// data sets of 20 or 150 labels count alike and a probability reads as "chance that
/// this label is the right one among ~21 candidates".
const REFERENCE_NEGATIVES: f64 = 20.0;

/// Fits the softmax temperature (minimum negative log-likelihood of the true label)
/// and the multi-mode logistic `sigmoid(a * cos + g * (cos - best cos) + b)` on
/// (text, label) pairs, each text's wrong labels weighted to [`REFERENCE_NEGATIVES`]
/// in all.
pub fn fit_calibration(data: &[(Vec<f32>, usize)]) -> Calibration {
    let nll = |t: f64| -> f64 {
        data.iter()
            .map(|(cosines, truth)| {
                let max = cosines.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let log_total = cosines
                    .iter()
                    .map(|&c| ((c as f64 - max) / t).exp())
                    .sum::<f64>()
                    .ln();
                -((cosines[*truth] as f64 - max) / t - log_total)
            })
            .sum()
    };
    let single_temperature = (0..=200)
        .map(|i| 0.005 * (40f64).powf(i as f64 / 200.0))
        .min_by(|&a, &b| nll(a).total_cmp(&nll(b)))
        .unwrap_or(0.05);

    // The multi-mode logistic on (cosine, gap to the text's best cosine, 1).
    let rows: Vec<([f64; 3], f64, f64)> = data
        .iter()
        .flat_map(|(cosines, truth)| {
            let negative_weight = REFERENCE_NEGATIVES / (cosines.len() - 1).max(1) as f64;
            let best = cosines.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            cosines.iter().enumerate().map(move |(j, &c)| {
                let features = [c as f64, c as f64 - best, 1.0];
                if j == *truth {
                    (features, 1.0, 1.0)
                } else {
                    (features, 0.0, negative_weight)
                }
            })
        })
        .collect();
    let [scale, gap_scale, bias] = fit_logistic(&rows, [10.0, 0.0, -5.0]);
    Calibration {
        single_temperature: single_temperature as f32,
        multi_scale: scale as f32,
        multi_gap_scale: gap_scale as f32,
        multi_bias: bias as f32,
    }
}

/// Weighted logistic regression by Newton's method with backtracking:
/// rows of (features, label 0/1, weight); returns the coefficients.
fn fit_logistic<const K: usize>(rows: &[([f64; K], f64, f64)], start: [f64; K]) -> [f64; K] {
    let dot = |x: &[f64; K], theta: &[f64; K]| x.iter().zip(theta).map(|(a, b)| a * b).sum::<f64>();
    let loss = |theta: &[f64; K]| -> f64 {
        rows.iter()
            .map(|(x, y, w)| {
                let z = dot(x, theta);
                // log(1 + e^z) - y z, computed stably.
                w * (z.max(0.0) + (-z.abs()).exp().ln_1p() - y * z)
            })
            .sum()
    };
    let mut theta = start;
    for _ in 0..100 {
        let mut gradient = [0.0; K];
        let mut hessian = [[0.0; K]; K];
        for (x, y, w) in rows {
            let p = 1.0 / (1.0 + (-dot(x, &theta)).exp());
            let (r, s) = (w * (p - y), w * p * (1.0 - p));
            for i in 0..K {
                gradient[i] += r * x[i];
                for j in 0..K {
                    hessian[i][j] += s * x[i] * x[j];
                }
            }
        }
        let Some(direction) = solve(hessian, gradient) else {
            break;
        };
        let current = loss(&theta);
        let mut step = 1.0;
        let moved = |step: f64| -> [f64; K] {
            let mut next = theta;
            next.iter_mut()
                .zip(&direction)
                .for_each(|(t, d)| *t -= step * d);
            next
        };
        while step > 1e-6 && loss(&moved(step)) > current {
            step /= 2.0;
        }
        theta = moved(step);
        if direction.iter().all(|d| (step * d).abs() < 1e-7) {
            break;
        }
    }
    theta
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting (None if singular).
fn solve<const K: usize>(mut a: [[f64; K]; K], mut b: [f64; K]) -> Option<[f64; K]> {
    for col in 0..K {
        let pivot = (col..K).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col];
        for row in col + 1..K {
            let factor = a[row][col] / pivot_row[col];
            a[row]
                .iter_mut()
                .zip(&pivot_row)
                .skip(col)
                .for_each(|(x, p)| *x -= factor * p);
            b[row] -= factor * b[col];
        }
    }
    let mut x = [0.0; K];
    for row in (0..K).rev() {
        let rest: f64 = (row + 1..K).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - rest) / a[row][row];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logistic_fit_recovers_known_coefficients() {
        // Labels drawn as the expected fraction: weight p for y = 1 and 1 - p for y = 0
        // on a grid, so the maximum-likelihood fit is the generating model itself.
        let truth = [2.0, -1.0, 0.5];
        let mut rows = Vec::new();
        for i in 0..20 {
            for j in 0..20 {
                let x = [i as f64 / 10.0 - 1.0, j as f64 / 10.0 - 1.0, 1.0];
                let z: f64 = x.iter().zip(&truth).map(|(a, b)| a * b).sum();
                let p = 1.0 / (1.0 + (-z).exp());
                rows.push((x, 1.0, p));
                rows.push((x, 0.0, 1.0 - p));
            }
        }
        let fit = fit_logistic(&rows, [0.0; 3]);
        for (got, want) in fit.iter().zip(truth) {
            assert!((got - want).abs() < 1e-4, "{fit:?}");
        }
    }

    #[test]
    fn calibration_fit_separates_true_from_wrong_labels() {
        // The true label sits near 0.6, the others near 0.2: the fitted logistic must put
        // its midpoint between them and the temperature must favour the true label.
        let data: Vec<(Vec<f32>, usize)> = (0..200)
            .map(|i| {
                let jitter = (i % 7) as f32 * 0.02;
                let mut cosines = vec![0.2 + jitter; 21];
                cosines[i % 21] = 0.6 - jitter;
                (cosines, i % 21)
            })
            .collect();
        let fit = fit_calibration(&data);
        let p = |c: f32, best: f32| {
            let z = fit.multi_scale * c + fit.multi_gap_scale * (c - best) + fit.multi_bias;
            1.0 / (1.0 + (-z).exp())
        };
        assert!(p(0.6, 0.6) > 0.9 && p(0.2, 0.6) < 0.1, "{fit:?}");
        assert!(fit.single_temperature < 0.1, "{fit:?}");
    }
}
