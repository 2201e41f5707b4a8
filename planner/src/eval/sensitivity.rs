//! Measured sensitivity, forward only: each planned layer alone at each of its bit-widths (Double
//! Rounding), every other layer at full precision, and how far the model's output moves from the
//! fp32 output on a calibration set ([`Divergence`]).
//!
//! The pass walks the graph's segments in order and keeps the fp32 activations at the current cut:
//! a layer's configurations run only from its own segment on, with the segments after it reusing
//! one fp32 session each. So the work is about half the forward passes a naive loop needs, and one
//! small session build per (layer, bit-width) instead of a whole model's.
//!
//! The same runs can keep each output's change from fp32 ([`OutputChanges`]): the output-space
//! objective a search plans on adds them up, so it sees layers whose errors cancel or compound.

use crate::error::{Error, Result};
use crate::eval::compare::output_change;
use crate::eval::{Backend, Evaluator, Scheme, Tensor, FULL_PRECISION};
use crate::problem::manifest::{Divergence, Manifest};
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Instant;

/// Where a sensitivity pass is: measurements done of total, the layer and bit-width just measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
    /// Index of the layer in manifest order, and its name.
    pub layer: usize,
    pub layer_name: String,
    pub bits: u8,
    pub elapsed_s: f64,
}

impl Progress {
    /// Seconds left at the pace so far.
    pub fn eta_s(&self) -> f64 {
        if self.done == 0 {
            return f64::NAN;
        }
        self.elapsed_s / self.done as f64 * self.total.saturating_sub(self.done) as f64
    }
}

/// Each manifest layer's divergence at each bit-width it may take (its pin alone when pinned), in
/// manifest order.
pub type Sensitivities = Vec<BTreeMap<u8, f64>>;

/// Most numbers one output change keeps: a larger output (samples times classes) is
/// count-sketched to this many, each number added with a pseudo-random sign to a pseudo-random
/// slot, which keeps inner products in expectation (8,192 f32 per run: 10 MB for 324 runs).
pub const MAX_CHANGE_LEN: usize = 8192;

/// Each layer's output change from fp32 at each bit-width it may take, in manifest order
/// ([`output_change`], sketched past [`MAX_CHANGE_LEN`]): `|sum of changes|^2 / rows` predicts
/// the divergence of the layers together.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputChanges {
    /// Rows of the output (samples) the changes span.
    pub rows: usize,
    pub layers: Vec<BTreeMap<u8, Vec<f32>>>,
}

impl<B: Backend + Clone> Evaluator<B> {
    /// Measures every layer of `manifest` (the one this evaluator was built for) alone at each of
    /// its allowed bit-widths; `progress` hears of each measurement and may stop the pass there
    /// ([`Error::Stopped`]). Needs an evaluator without activation quantization (the pass
    /// measures weights), and every layer linked to its weight.
    pub fn sensitivity(
        &mut self,
        manifest: &Manifest,
        metric: Divergence,
        progress: impl FnMut(Progress) -> ControlFlow<()>,
    ) -> Result<Sensitivities> {
        self.pass(manifest, metric, true, progress, |_, _, _| {})
    }

    /// Each layer's output change at each bit-width it may take ([`OutputChanges`]), in KL for
    /// outputs of at least two columns, else in relative MSE: the sensitivity pass's runs, their
    /// outputs kept. A layer with no ONNX weight gets no change at any width (zeros), as an
    /// evaluation ignores it.
    pub fn output_changes(
        &mut self,
        manifest: &Manifest,
        progress: impl FnMut(Progress) -> ControlFlow<()>,
    ) -> Result<OutputChanges> {
        let width = self.output_width();
        let metric = if width >= 2 {
            Divergence::Kl
        } else {
            Divergence::Mse
        };
        let reference = self.fp32_output().data.clone();
        let rows = reference.len() / width.max(1);
        let mut layers = vec![BTreeMap::new(); manifest.layers.len()];
        let kind = self.output_kind();
        self.pass(manifest, metric, false, progress, |l, b, y| {
            let change = output_change(metric, kind, &reference, &y.data, width);
            layers[l].insert(b, sketch(&change, MAX_CHANGE_LEN));
        })?;
        let len = reference.len().min(MAX_CHANGE_LEN);
        for (layer, changes) in manifest.layers.iter().zip(&mut layers) {
            if changes.is_empty() {
                changes.extend(layer.choices().into_iter().map(|b| (b, vec![0.0; len])));
            }
        }
        Ok(OutputChanges { rows, layers })
    }

    /// The pass over the layers linked to a weight (refused unless `every_layer` is): `keep`
    /// sees each run's layer, bit-width and output.
    fn pass(
        &mut self,
        manifest: &Manifest,
        metric: Divergence,
        every_layer: bool,
        mut progress: impl FnMut(Progress) -> ControlFlow<()>,
        mut keep: impl FnMut(usize, u8, &Tensor),
    ) -> Result<Sensitivities> {
        self.check_pass(manifest, metric, every_layer)?;
        let layers = manifest.layers.len();
        let total: usize = (0..layers)
            .filter(|&l| self.segments.iter().any(|s| s.slots.contains(&l)))
            .map(|l| manifest.layers[l].choices().len())
            .sum();
        let started = Instant::now();
        let fp32 = vec![FULL_PRECISION; layers];
        let no_activations = vec![None; layers];
        let mut out: Sensitivities = vec![BTreeMap::new(); layers];
        let mut done = 0;
        let mut measured = vec![false; layers];
        // The fp32 activations entering the current segment (None: the calibration set itself).
        let mut chain: Option<Tensor> = None;
        for s in 0..self.segments.len() {
            for l in self.segments[s].slots.clone() {
                if std::mem::replace(&mut measured[l], true) {
                    continue;
                }
                for b in manifest.layers[l].choices() {
                    let mut bits = fp32.clone();
                    bits[l] = b;
                    let y = self.run_from(s, chain.as_ref(), &bits, &fp32, &no_activations)?;
                    let value = self.divergence_from_fp32(metric, &y);
                    if !value.is_finite() {
                        return Err(Error::Runtime(format!(
                            "layer {} at {b} bits: the output's {} divergence is {value} (non-finite outputs)",
                            manifest.layers[l].name,
                            metric.as_str()
                        )));
                    }
                    out[l].insert(b, value);
                    keep(l, b, &y);
                    done += 1;
                    let step = progress(Progress {
                        done,
                        total,
                        layer: l,
                        layer_name: manifest.layers[l].name.clone(),
                        bits: b,
                        elapsed_s: started.elapsed().as_secs_f64(),
                    });
                    if step.is_break() {
                        return Err(Error::Stopped(format!(
                            "sensitivity pass after {done} of {total} measurements"
                        )));
                    }
                }
            }
            if s + 1 < self.segments.len() {
                let own = self.own_key(s, &fp32, Scheme::DoubleRounding);
                self.ensure_session(s, &own, &fp32, Scheme::DoubleRounding)?;
                chain = Some(
                    self.run_segment(s, &own, chain.as_ref(), &no_activations)?
                        .0,
                );
            }
        }
        Ok(out)
    }

    /// What a sensitivity pass needs: weights alone quantized, every layer linked to its weight,
    /// and for `kl` an output of at least two columns.
    fn check_pass(&self, manifest: &Manifest, metric: Divergence, every_layer: bool) -> Result<()> {
        if self.quantizes_activations() {
            return Err(Error::invalid(
                "sensitivity pass",
                "quantize_activations",
                "measures weights alone: build the evaluator without activation quantization",
            ));
        }
        let unlinked: Vec<String> = (0..manifest.layers.len())
            .filter(|&l| !self.segments.iter().any(|s| s.slots.contains(&l)))
            .map(|l| manifest.layers[l].name.clone())
            .collect();
        if every_layer && !unlinked.is_empty() {
            return Err(Error::invalid(
                "sensitivity pass",
                "layers",
                format!(
                    "no ONNX weight found for {}: every layer needs one to be measured",
                    unlinked.join(", ")
                ),
            ));
        }
        if metric == Divergence::Kl && self.output_width() < 2 {
            return Err(Error::invalid(
                "sensitivity pass",
                "metric",
                format!(
                    "kl compares distributions, and the model's output has {} column(s): use mse",
                    self.output_width()
                ),
            ));
        }
        Ok(())
    }

    /// Runs segment `s` at `bits` from `input`, then every later segment at `rest`.
    fn run_from(
        &mut self,
        s: usize,
        input: Option<&Tensor>,
        bits: &[u8],
        rest: &[u8],
        activations: &[Option<[f32; 3]>],
    ) -> Result<Tensor> {
        let own = self.own_key(s, bits, Scheme::DoubleRounding);
        self.ensure_session(s, &own, bits, Scheme::DoubleRounding)?;
        let mut y = self.run_segment(s, &own, input, activations)?.0;
        // No other configuration of the pass has these bits on this segment.
        self.sessions.remove(s, &own);
        for t in s + 1..self.segments.len() {
            let own = self.own_key(t, rest, Scheme::DoubleRounding);
            self.ensure_session(t, &own, rest, Scheme::DoubleRounding)?;
            y = self.run_segment(t, &own, Some(&y), activations)?.0;
        }
        Ok(y)
    }
}

/// `values` as at most `len` numbers: as they are when they fit, else count-sketched (each value
/// added, with a sign, to one slot, both from a hash of its index, the same for every run).
fn sketch(values: &[f64], len: usize) -> Vec<f32> {
    if values.len() <= len {
        return values.iter().map(|&v| v as f32).collect();
    }
    let mut out = vec![0f64; len];
    for (i, &v) in values.iter().enumerate() {
        let h = splitmix64(i as u64);
        let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
        out[(h % len as u64) as usize] += sign * v;
    }
    out.into_iter().map(|v| v as f32).collect()
}

/// SplitMix64's output function: a well-mixed hash of `x`.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sketch keeps short vectors exactly, and long ones' inner products and norms close (the
    /// error of a count sketch shrinks as one over the root of its length).
    #[test]
    fn sketch_keeps_inner_products() {
        assert_eq!(sketch(&[1.0, -2.0], 4), vec![1.0f32, -2.0]);
        let n = 40_000;
        // Positive values: a sketch without signs would add every collision to the products.
        let a: Vec<f64> = (0..n).map(|i| (i * 7919 % 1000) as f64 / 1000.0).collect();
        let b: Vec<f64> = (0..n)
            .map(|i| a[i] * 0.6 + ((i * 104_729) % 997) as f64 / 997.0)
            .collect();
        let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(x, y)| x * y).sum::<f64>();
        let (sa, sb) = (sketch(&a, MAX_CHANGE_LEN), sketch(&b, MAX_CHANGE_LEN));
        let to64 = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
        let (sa, sb) = (to64(&sa), to64(&sb));
        assert_eq!(sa.len(), MAX_CHANGE_LEN);
        for (got, want) in [(dot(&sa, &sa), dot(&a, &a)), (dot(&sa, &sb), dot(&a, &b))] {
            assert!((got / want - 1.0).abs() < 0.05, "{got} vs {want}");
        }
    }
}
