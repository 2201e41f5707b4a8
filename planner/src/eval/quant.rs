//! Double Rounding: one stored integer model at the highest bit-width; every lower bit-width is
//! derived from its integers by a second, symmetric rounding shift.
//!
//! Highest bits `h`, per output channel `c`: `s_h = max|w_c| / (2^(h-1) - 1)`,
//! `q_h = clamp(round(w / s_h), ±(2^(h-1) - 1))` (ties to even, like `np.round` / `torch.round`).
//! Lower bits `l = h - k`: `q_l = clamp(round(q_h / 2^k), ±(2^(l-1) - 1))`, dequantized as
//! `q_l * s_h * 2^k`. The shift's rounding is the one the supernet was trained with
//! ([`Rounding`]): ties away from zero, or ties to even. Never `(q + 2^(k-1)) >> k`, which rounds
//! every tie up and biases each weight by `+s/2`.

use crate::problem::manifest::Rounding;

/// Largest magnitude of a symmetric `bits`-bit integer (`2^(bits-1) - 1`).
pub fn qmax(bits: u8) -> i32 {
    // In i64: at 32 bits, `1i32 << 31` is already i32::MIN.
    ((1i64 << (bits - 1)) - 1) as i32
}

/// Calls `f(channel, run)` on consecutive runs of `w` that share one output channel, in order:
/// element `i` is in channel `(i / inner) % channels`.
fn for_each_run(w: &[f32], channels: usize, inner: usize, mut f: impl FnMut(usize, &[f32])) {
    if inner == 1 {
        // One element per channel, channels cycling: each row holds every channel once.
        for row in w.chunks(channels) {
            for (c, v) in row.iter().enumerate() {
                f(c, std::slice::from_ref(v));
            }
        }
    } else {
        for (r, run) in w.chunks(inner).enumerate() {
            f(r % channels, run);
        }
    }
}

/// `round(q / 2^k)` in integers, with the given tie rule. `k` may be 0. Branch-free, so loops
/// over it vectorize (`(x ^ sign) - sign` negates when `sign` is -1).
#[inline]
pub fn shift_round(q: i32, k: u32, rounding: Rounding) -> i32 {
    if k == 0 {
        return q;
    }
    let half = 1i32 << (k - 1);
    match rounding {
        Rounding::HalfAwayFromZero => {
            let sign = q >> 31;
            let m = (((q ^ sign) - sign) + half) >> k;
            (m ^ sign) - sign
        }
        Rounding::HalfToEven => {
            let floor = q >> k; // arithmetic shift: floor division for negatives too
            let rem = q - (floor << k); // in [0, 2^k)
            floor + i32::from(rem > half || (rem == half && floor & 1 == 1))
        }
    }
}

/// One layer's weights stored at the highest bit-width, per output channel.
#[derive(Debug, Clone, PartialEq)]
pub struct HighBitWeights {
    pub bits: u8,
    /// Integers in the layer's own element order.
    pub q: Vec<i32>,
    /// One scale per output channel.
    pub scales: Vec<f32>,
    /// Output channel of each element is `(i / inner) % channels`.
    pub inner: usize,
}

impl HighBitWeights {
    /// Quantizes fp32 weights at `bits`, per output channel. `channels` and `inner` describe the
    /// layout: element `i` belongs to channel `(i / inner) % channels` (Conv `[out, in, kh, kw]`:
    /// `inner = in*kh*kw`; a MatMul constant `[in, out]`: `inner = 1`).
    pub fn quantize(w: &[f32], channels: usize, inner: usize, bits: u8) -> HighBitWeights {
        let (channels, inner) = (channels.max(1), inner.max(1));
        let mut max_abs = vec![0f32; channels];
        for_each_run(w, channels, inner, |c, run| {
            max_abs[c] = run.iter().fold(max_abs[c], |m, v| m.max(v.abs()));
        });
        let qm = qmax(bits);
        // An all-zero channel keeps scale 1 so it dequantizes to exact zeros.
        let scales: Vec<f32> = max_abs
            .iter()
            .map(|&m| if m > 0.0 { m / qm as f32 } else { 1.0 })
            .collect();
        let mut q = Vec::with_capacity(w.len());
        for_each_run(w, channels, inner, |c, run| {
            let s = scales[c];
            q.extend(
                run.iter()
                    .map(|&v| ((v / s).round_ties_even() as i32).clamp(-qm, qm)),
            );
        });
        HighBitWeights {
            bits,
            q,
            scales,
            inner,
        }
    }

    /// The shift `k`, the clip bound and the scale multiplier `2^k` for deriving `bits` bits.
    fn shift_for(&self, bits: u8) -> (u32, i32, f32) {
        assert!(
            bits >= 1 && bits <= self.bits,
            "{bits} bits is not within 1..={}",
            self.bits
        );
        let k = u32::from(self.bits - bits);
        (k, qmax(bits).max(i32::from(bits == 1)), (1u32 << k) as f32)
    }

    /// The `bits`-bit integers derived by the rounding shift, and the scale multiplier `2^k`.
    pub fn lower(&self, bits: u8, rounding: Rounding) -> (Vec<i32>, f32) {
        let (k, qm, mult) = self.shift_for(bits);
        (
            self.q
                .iter()
                .map(|&q| shift_round(q, k, rounding).clamp(-qm, qm))
                .collect(),
            mult,
        )
    }

    /// Dequantized `bits`-bit weights.
    pub fn dequantize(&self, bits: u8, rounding: Rounding) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.q.len());
        self.dequantize_into(bits, rounding, &mut out);
        out
    }

    /// Dequantized `bits`-bit weights into `out` (cleared first). Runs of one channel are
    /// processed with a constant scale `s_h * 2^k` (exactly `q * s_h * 2^k`: a power-of-two
    /// factor rounds nothing), so the inner loop is a branch-free shift, clamp and multiply.
    pub fn dequantize_into(&self, bits: u8, rounding: Rounding, out: &mut Vec<f32>) {
        let (k, qm, mult) = self.shift_for(bits);
        out.clear();
        out.resize(self.q.len(), 0.0);
        let scaled: Vec<f32> = self.scales.iter().map(|s| s * mult).collect();
        macro_rules! run {
            ($round:expr) => {
                if self.inner == 1 {
                    // channels last: each row of `channels` elements walks the scales in order
                    for (o, q) in out
                        .chunks_mut(scaled.len())
                        .zip(self.q.chunks(scaled.len()))
                    {
                        for ((o, &q), &s) in o.iter_mut().zip(q).zip(&scaled) {
                            *o = ($round)(q).clamp(-qm, qm) as f32 * s;
                        }
                    }
                } else {
                    for (r, (o, q)) in out
                        .chunks_mut(self.inner)
                        .zip(self.q.chunks(self.inner))
                        .enumerate()
                    {
                        let s = scaled[r % scaled.len()];
                        for (o, &q) in o.iter_mut().zip(q) {
                            *o = ($round)(q).clamp(-qm, qm) as f32 * s;
                        }
                    }
                }
            };
        }
        // One loop per rounding, so each inlines a constant tie rule and vectorizes.
        match rounding {
            Rounding::HalfAwayFromZero => {
                run!(|q: i32| shift_round(q, k, Rounding::HalfAwayFromZero))
            }
            Rounding::HalfToEven => run!(|q: i32| shift_round(q, k, Rounding::HalfToEven)),
        }
    }

    /// `||Q_b(W) - W||^2` against the original fp32 weights, accumulated in f64.
    pub fn squared_error(&self, w: &[f32], bits: u8, rounding: Rounding) -> f64 {
        self.dequantize(bits, rounding)
            .iter()
            .zip(w)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum()
    }
}

/// Direct per-bit quantization (no Double Rounding): `s_b = max|w_c| / (2^(b-1) - 1)`, ties to
/// even. The baseline a supernet trained with Double Rounding is compared against.
pub fn direct_squared_error(w: &[f32], channels: usize, inner: usize, bits: u8) -> f64 {
    let hb = HighBitWeights::quantize(w, channels, inner, bits);
    hb.squared_error(w, bits, Rounding::HalfToEven)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact rational rounding as the oracle: q / 2^k with ties resolved by the rule.
    fn oracle(q: i32, k: u32, rounding: Rounding) -> i32 {
        let x = q as f64 / (1u64 << k) as f64; // exact: |q| < 2^31 and k < 31
        let f = x.floor();
        let frac = x - f;
        if frac > 0.5 {
            f as i32 + 1
        } else if frac < 0.5 {
            f as i32
        } else {
            match rounding {
                Rounding::HalfAwayFromZero => (x.signum() * x.abs().ceil()) as i32,
                Rounding::HalfToEven => {
                    if (f as i64) % 2 == 0 {
                        f as i32
                    } else {
                        f as i32 + 1
                    }
                }
            }
        }
    }

    #[test]
    fn qmax_is_exact_up_to_32_bits() {
        assert_eq!(qmax(1), 0);
        assert_eq!(qmax(8), 127);
        assert_eq!(qmax(16), 32767);
        assert_eq!(qmax(32), i32::MAX);
    }

    #[test]
    fn shift_matches_exact_rounding_on_every_int8_and_shift() {
        for rounding in [Rounding::HalfAwayFromZero, Rounding::HalfToEven] {
            for k in 0..8 {
                for q in -128..=127 {
                    assert_eq!(
                        shift_round(q, k, rounding),
                        oracle(q, k, rounding),
                        "q={q} k={k} {rounding:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn ties_are_symmetric_and_follow_the_rule() {
        // k = 2: ties at +-2 (0.5), +-6 (1.5), +-10 (2.5)
        let away = |q| shift_round(q, 2, Rounding::HalfAwayFromZero);
        let even = |q| shift_round(q, 2, Rounding::HalfToEven);
        assert_eq!(
            [away(2), away(-2), away(6), away(-6), away(10), away(-10)],
            [1, -1, 2, -2, 3, -3]
        );
        assert_eq!(
            [even(2), even(-2), even(6), even(-6), even(10), even(-10)],
            [0, 0, 2, -2, 2, -2]
        );
        // Symmetry over the whole int8 range, both rules.
        for k in 1..8 {
            for q in -127..=127 {
                for r in [Rounding::HalfAwayFromZero, Rounding::HalfToEven] {
                    assert_eq!(shift_round(-q, k, r), -shift_round(q, k, r));
                }
            }
        }
    }

    #[test]
    fn lower_bits_clip_to_the_symmetric_range() {
        // 127 at 7 bits: 127/2 = 63.5 rounds to 64 away from zero, clipped to 63.
        let hb = HighBitWeights {
            bits: 8,
            q: vec![127, -127, 126, -126, 64],
            scales: vec![1.0],
            inner: 1,
        };
        let (q, mult) = hb.lower(7, Rounding::HalfAwayFromZero);
        assert_eq!((q, mult), (vec![63, -63, 63, -63, 32], 2.0));
        let (q, _) = hb.lower(7, Rounding::HalfToEven);
        assert_eq!(q, vec![63, -63, 63, -63, 32]);
        let (q, mult) = hb.lower(2, Rounding::HalfAwayFromZero);
        assert_eq!((q, mult), (vec![1, -1, 1, -1, 1], 64.0));
        let (q, _) = hb.lower(8, Rounding::HalfToEven);
        assert_eq!(q, hb.q);
    }

    #[test]
    fn fast_dequantize_equals_shift_then_scale_elementwise() {
        let mut rng = crate::problem::synth::Rng::new(5);
        for (channels, inner, rows) in [(3usize, 5usize, 2usize), (4, 1, 7), (1, 9, 1)] {
            let n = channels * inner * rows;
            let q: Vec<i32> = (0..n).map(|_| rng.below(255) as i32 - 127).collect();
            let scales: Vec<f32> = (0..channels).map(|_| rng.range(1e-3, 1.0) as f32).collect();
            let hb = HighBitWeights {
                bits: 8,
                q,
                scales,
                inner,
            };
            for bits in 1..=8 {
                for r in [Rounding::HalfAwayFromZero, Rounding::HalfToEven] {
                    let (low, mult) = hb.lower(bits, r);
                    let want: Vec<f32> = low
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| v as f32 * hb.scales[(i / inner) % channels] * mult)
                        .collect();
                    assert_eq!(
                        hb.dequantize(bits, r),
                        want,
                        "{channels}x{inner} at {bits} bits, {r:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn per_channel_scales_follow_the_layout() {
        // Conv [2 out, 1 in, 1, 2]: channel = i / 2
        let w = [0.5f32, -1.0, 2.0, 0.25];
        let hb = HighBitWeights::quantize(&w, 2, 2, 8);
        assert_eq!(hb.scales, vec![1.0 / 127.0, 2.0 / 127.0]);
        assert_eq!(hb.q, vec![64, -127, 127, 16]);
        // MatMul constant [in 2, out 2]: channel = i % 2
        let hb = HighBitWeights::quantize(&w, 2, 1, 8);
        assert_eq!(hb.scales, vec![2.0 / 127.0, 1.0 / 127.0]);
        let back = hb.dequantize(8, Rounding::HalfAwayFromZero);
        assert!(back
            .iter()
            .zip(&w)
            .all(|(a, b)| (a - b).abs() <= 1.0 / 127.0));
        assert_eq!(
            hb.squared_error(&w, 8, Rounding::HalfAwayFromZero),
            back.iter()
                .zip(&w)
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum::<f64>()
        );
    }
}
