//! Cosine similarities → calibrated probabilities.

use super::manifest::Calibration;
use super::Mode;

/// Dot products of a unit text vector with unit label vectors.
pub fn cosines(text: &[f32], labels: &[Vec<f32>]) -> Vec<f32> {
    labels.iter().map(|label| dot(label, text)).collect()
}

/// A dot product in eight independent partial sums: one running sum must be added in
/// order and stays scalar, eight fill a SIMD register. Label scoring and head fitting
/// spend their time here.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (a_lanes, b_lanes) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_lanes
        .remainder()
        .iter()
        .zip(b_lanes.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut sums = [0f32; 8];
    for (x, y) in a_lanes.zip(b_lanes) {
        for ((sum, x), y) in sums.iter_mut().zip(x).zip(y) {
            *sum += x * y;
        }
    }
    sums.iter().sum::<f32>() + tail
}

/// `single`: a softmax over the labels at the model's temperature (sums to 1).
/// `multi`: a logistic per label on its cosine and its gap to the text's best cosine.
/// The cosine alone meant different things on different label sets (banking's labels
/// all sit closer to its texts than stackoverflow's); with the gap, threshold 0.3
/// returns the true label for 81-84% of texts on each dev set (docs/accuracy.md#calibration).
pub fn probabilities(cosines: &[f32], mode: Mode, calibration: &Calibration) -> Vec<f32> {
    match mode {
        Mode::Single => {
            let t = calibration.single_temperature;
            let max = cosines.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = cosines.iter().map(|c| ((c - max) / t).exp()).collect();
            let total: f32 = exps.iter().sum();
            exps.into_iter().map(|e| e / total).collect()
        }
        Mode::Multi => {
            let best = cosines.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            cosines
                .iter()
                .map(|c| {
                    let z = calibration.multi_scale * c
                        + calibration.multi_gap_scale * (c - best)
                        + calibration.multi_bias;
                    1.0 / (1.0 + (-z).exp())
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAL: Calibration = Calibration {
        single_temperature: 0.05,
        multi_scale: 20.0,
        multi_gap_scale: 10.0,
        multi_bias: -8.0,
    };

    #[test]
    fn dot_matches_the_plain_sum_at_every_length() {
        for len in [0, 1, 7, 8, 9, 17, 384] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - plain).abs() < 1e-4, "length {len}");
        }
    }

    #[test]
    fn single_mode_sums_to_one_and_keeps_order() {
        let p = probabilities(&[0.1, 0.5, 0.3], Mode::Single, &CAL);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[1] > p[2] && p[2] > p[0]);
    }

    #[test]
    fn multi_mode_sees_other_labels_only_through_the_best_cosine() {
        let few = probabilities(&[0.4, 0.1], Mode::Multi, &CAL);
        let many = probabilities(&[0.4, 0.1, 0.2, 0.3, 0.0], Mode::Multi, &CAL);
        assert_eq!(few[..2], many[..2]);
        assert!((few[0] - 0.5).abs() < 1e-6, "sigmoid(20*0.4-8) = 0.5");
        // 0.3 trails the best by 0.1: sigmoid(20*0.3 + 10*(-0.1) - 8) = sigmoid(-3).
        assert!((many[3] - 1.0 / (1.0 + 3f32.exp())).abs() < 1e-6);
        let better_best = probabilities(&[0.4, 0.1, 0.6], Mode::Multi, &CAL);
        assert!(
            better_best[0] < few[0],
            "a closer rival lowers a label's probability"
        );
    }
}
