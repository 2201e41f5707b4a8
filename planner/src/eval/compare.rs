//! Comparing a quantized model's outputs with the fp32 reference's: agreement, KL, SQNR, cosine
//! similarity, relative L2 and the divergences measured sensitivity is in.
//!
//! It owns the metrics, computed from output arrays alone: no model, no runtime.
//!
//! Outputs are `[samples, width]` rows. A row is either logits (KL on their softmax) or already a
//! probability distribution (a model ending in Softmax): KL is then taken on the rows as they are,
//! since a softmax of probabilities flattens them and under-reports KL by orders of magnitude.
//! Which one a model has is read off its fp32 outputs once ([`OutputKind::detect`]).

use crate::problem::manifest::Divergence;

/// What a model's output rows are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// Unnormalised scores: distributions are their softmax.
    Logits,
    /// Non-negative rows summing to 1.
    Probabilities,
}

/// Tolerance on a probability row's sum.
const SUM_TOLERANCE: f64 = 1e-3;
/// Probabilities are clamped to this before taking logs (a zero in the quantized output where the
/// reference has mass would make KL infinite).
const MIN_PROBABILITY: f64 = 1e-12;

impl OutputKind {
    /// Probabilities when every row is non-negative and sums to 1 (within 1e-3), else logits.
    pub fn detect(rows: &[f32], width: usize) -> OutputKind {
        let width = width.max(1);
        let distributions = !rows.is_empty()
            && rows.chunks(width).all(|r| {
                r.iter().all(|&v| v >= 0.0)
                    && (r.iter().map(|&v| f64::from(v)).sum::<f64>() - 1.0).abs() <= SUM_TOLERANCE
            });
        if distributions {
            OutputKind::Probabilities
        } else {
            OutputKind::Logits
        }
    }

    /// The row as log-probabilities.
    fn log_distribution(self, z: &[f32]) -> Vec<f64> {
        match self {
            OutputKind::Probabilities => z
                .iter()
                .map(|&v| f64::from(v).max(MIN_PROBABILITY).ln())
                .collect(),
            OutputKind::Logits => {
                let m = z
                    .iter()
                    .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
                let lse = m + z
                    .iter()
                    .map(|&v| (f64::from(v) - m).exp())
                    .sum::<f64>()
                    .ln();
                z.iter().map(|&v| f64::from(v) - lse).collect()
            }
        }
    }

    /// KL(p || q) in nats between the distributions of two rows. Terms where p has no mass add
    /// nothing; a NaN (non-finite outputs) is passed on, never hidden as 0.
    pub fn kl(self, p: &[f32], q: &[f32]) -> f64 {
        let (lp, lq) = (self.log_distribution(p), self.log_distribution(q));
        let mass = |i: usize| match self {
            OutputKind::Probabilities => f64::from(p[i]),
            OutputKind::Logits => lp[i].exp(),
        };
        let total: f64 = (0..lp.len())
            .filter(|&i| mass(i) > 0.0)
            .map(|i| mass(i) * (lp[i] - lq[i]))
            .sum();
        // Rounding can leave a tiny negative sum for equal rows.
        if total < 0.0 {
            0.0
        } else {
            total
        }
    }
}

/// The index of a row's largest value.
pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

/// Geometric agreement of outputs with the reference, per sample and overall.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Closeness {
    /// Mean over samples of cos(reference row, output row); 1 where both rows are zero.
    pub cosine_mean: f64,
    /// The smallest per-sample cosine.
    pub cosine_min: f64,
    /// ‖output − reference‖₂ / ‖reference‖₂ over the whole output.
    pub rel_l2: f64,
}

/// Cosine similarity per sample and relative L2 of `out` against `reference` (rows of `width`).
pub fn closeness(reference: &[f32], out: &[f32], width: usize) -> Closeness {
    let width = width.max(1);
    let (mut sum, mut min, mut n) = (0.0, f64::INFINITY, 0usize);
    let (mut diff2, mut ref2) = (0.0f64, 0.0f64);
    for (r, o) in reference.chunks(width).zip(out.chunks(width)) {
        let (mut dot, mut rr, mut oo) = (0.0f64, 0.0f64, 0.0f64);
        for (&a, &b) in r.iter().zip(o) {
            let (a, b) = (f64::from(a), f64::from(b));
            dot += a * b;
            rr += a * a;
            oo += b * b;
            diff2 += (a - b) * (a - b);
        }
        ref2 += rr;
        let cos = if rr == 0.0 && oo == 0.0 {
            1.0
        } else if rr == 0.0 || oo == 0.0 {
            0.0
        } else {
            dot / (rr.sqrt() * oo.sqrt())
        };
        sum += cos;
        min = f64::min(min, cos);
        n += 1;
    }
    Closeness {
        cosine_mean: if n == 0 { 1.0 } else { sum / n as f64 },
        cosine_min: if n == 0 { 1.0 } else { min },
        rel_l2: if ref2 == 0.0 {
            diff2.sqrt()
        } else {
            (diff2 / ref2).sqrt()
        },
    }
}

/// The divergence of `out` from `reference`: mean KL over samples, or the mean squared error
/// relative to the reference's mean square.
pub fn divergence(
    metric: Divergence,
    kind: OutputKind,
    reference: &[f32],
    out: &[f32],
    width: usize,
) -> f64 {
    let width = width.max(1);
    match metric {
        Divergence::Kl => {
            let rows = reference.len() / width;
            let total: f64 = reference
                .chunks(width)
                .zip(out.chunks(width))
                .map(|(p, q)| kind.kl(p, q))
                .sum();
            total / rows.max(1) as f64
        }
        Divergence::Mse => closeness(reference, out, width).rel_l2.powi(2),
    }
}

/// A run's output change from the reference, as a vector `u` whose squared norm over the rows
/// approximates [`divergence`] to second order: `|u|^2 / rows`. So the changes of several layers
/// that each moved the output can be added, and `|sum of u|^2 / rows` predicts the divergence of
/// all of them together, cross terms included (negative where their changes cancel).
///
/// KL: per row, with `p` the reference's distribution and `d` the change of the log-probabilities,
/// `u = sqrt(p / 2) * (d - p.d)`: the change whitened by the softmax's Fisher information, whose
/// quadratic form is KL's second-order term. MSE: `(out - reference)` over the reference's root
/// sum of squares, times `sqrt(rows)`.
pub fn output_change(
    metric: Divergence,
    kind: OutputKind,
    reference: &[f32],
    out: &[f32],
    width: usize,
) -> Vec<f64> {
    let width = width.max(1);
    let rows = reference.len() / width;
    match metric {
        Divergence::Kl => {
            let mut u = Vec::with_capacity(reference.len());
            for (r, o) in reference.chunks(width).zip(out.chunks(width)) {
                let (lp, lq) = (kind.log_distribution(r), kind.log_distribution(o));
                let p: Vec<f64> = lp.iter().map(|l| l.exp()).collect();
                let d: Vec<f64> = lq.iter().zip(&lp).map(|(q, p)| q - p).collect();
                let mean: f64 = p.iter().zip(&d).map(|(p, d)| p * d).sum();
                u.extend(p.iter().zip(&d).map(|(p, d)| (p / 2.0).sqrt() * (d - mean)));
            }
            u
        }
        Divergence::Mse => {
            let norm: f64 = reference.iter().map(|&a| f64::from(a).powi(2)).sum();
            let scale = (rows as f64 / if norm > 0.0 { norm } else { 1.0 }).sqrt();
            reference
                .iter()
                .zip(out)
                .map(|(&a, &b)| (f64::from(b) - f64::from(a)) * scale)
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_on_logits_is_shift_invariant_and_matches_the_closed_form() {
        let k = OutputKind::Logits;
        assert_eq!(k.kl(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 0.0);
        assert!(k.kl(&[1.0, 2.0, 3.0], &[11.0, 12.0, 13.0]) < 1e-12);
        // p = (1/2, 1/2), q = (1/4, 3/4): KL = 1/2 ln 2 + 1/2 ln(2/3)
        let want = 0.5 * 2f64.ln() + 0.5 * (2.0f64 / 3.0).ln();
        assert!((k.kl(&[0.0, 0.0], &[0.0, 3f32.ln()]) - want).abs() < 1e-7);
    }

    #[test]
    fn probability_rows_are_detected_and_compared_as_they_are() {
        let probs = [0.9f32, 0.1, 0.2, 0.8];
        assert_eq!(OutputKind::detect(&probs, 2), OutputKind::Probabilities);
        assert_eq!(OutputKind::detect(&[0.9, 0.2], 2), OutputKind::Logits);
        assert_eq!(OutputKind::detect(&[1.2, -0.2], 2), OutputKind::Logits);
        // KL((0.9, 0.1) || (0.6, 0.4)) by hand.
        let want = 0.9 * (0.9f64 / 0.6).ln() + 0.1 * (0.1f64 / 0.4).ln();
        let got = OutputKind::Probabilities.kl(&[0.9, 0.1], &[0.6, 0.4]);
        assert!((got - want).abs() < 1e-7, "{got} vs {want}");
        // Taking a softmax of probabilities instead understates it many times over.
        assert!(OutputKind::Logits.kl(&[0.9, 0.1], &[0.6, 0.4]) * 5.0 < got);
        // A class without mass adds nothing; a non-finite output is not hidden as 0.
        assert!((OutputKind::Probabilities.kl(&[1.0, 0.0], &[0.5, 0.5]) - 2f64.ln()).abs() < 1e-12);
        assert!(OutputKind::Logits
            .kl(&[1.0, 2.0], &[f32::NAN, 0.0])
            .is_nan());
    }

    #[test]
    fn closeness_and_relative_mse_follow_their_definitions() {
        let reference = [1.0f32, 0.0, 0.0, 2.0];
        let out = [1.0f32, 1.0, 0.0, 2.0];
        let c = closeness(&reference, &out, 2);
        assert!((c.cosine_min - 1.0 / 2f64.sqrt()).abs() < 1e-12);
        assert!((c.cosine_mean - (1.0 + 1.0 / 2f64.sqrt()) / 2.0).abs() < 1e-12);
        assert!((c.rel_l2 - (1.0f64 / 5.0).sqrt()).abs() < 1e-12);
        let mse = divergence(Divergence::Mse, OutputKind::Logits, &reference, &out, 2);
        assert!((mse - 0.2).abs() < 1e-12);
    }

    /// The second-order change agrees with the exact divergence as the change shrinks, on logits,
    /// on probabilities and for MSE; and two changes' sum predicts the divergence of both.
    #[test]
    fn output_change_is_the_divergence_to_second_order() {
        let reference = [0.3f32, -1.2, 2.0, 0.5, 0.1, -0.4];
        let direction = [0.7f32, -0.2, 0.4, -0.9, 0.3, 0.5];
        let squared = |u: &[f64]| u.iter().map(|x| x * x).sum::<f64>() / 2.0;
        for (metric, kind, base) in [
            (Divergence::Kl, OutputKind::Logits, reference.to_vec()),
            (Divergence::Mse, OutputKind::Logits, reference.to_vec()),
            (
                Divergence::Kl,
                OutputKind::Probabilities,
                vec![0.2, 0.5, 0.3, 0.6, 0.3, 0.1],
            ),
        ] {
            for step in [1e-1f32, 1e-2] {
                let moved: Vec<f32> = match kind {
                    OutputKind::Logits => base
                        .iter()
                        .zip(&direction)
                        .map(|(a, d)| a + step * d)
                        .collect(),
                    // A move that keeps the rows distributions: mass between neighbours.
                    OutputKind::Probabilities => {
                        let m = [step, -step, 0.0, 0.0, step, -step];
                        base.iter().zip(m).map(|(a, d)| a + d * 0.5).collect()
                    }
                };
                let exact = divergence(metric, kind, &base, &moved, 3);
                let u = output_change(metric, kind, &base, &moved, 3);
                let relative = (squared(&u) / exact - 1.0).abs();
                assert!(
                    relative < 3.0 * f64::from(step),
                    "{metric:?} {kind:?} step {step}: {} vs {exact}",
                    squared(&u)
                );
            }
        }
        // Two changes in opposite directions cancel in the sum, as in the outputs.
        let up: Vec<f32> = reference
            .iter()
            .zip(&direction)
            .map(|(a, d)| a + 0.01 * d)
            .collect();
        let down: Vec<f32> = reference
            .iter()
            .zip(&direction)
            .map(|(a, d)| a - 0.01 * d)
            .collect();
        let (a, b) = (
            output_change(Divergence::Kl, OutputKind::Logits, &reference, &up, 3),
            output_change(Divergence::Kl, OutputKind::Logits, &reference, &down, 3),
        );
        let sum: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert!(squared(&sum) < 1e-6 * squared(&a), "{}", squared(&sum));
    }
}
