//! Measured sensitivity, forward only: each planned layer alone at each of its bit-widths (Double
//! Rounding), every other layer at full precision, and how far the model's output moves from the
//! fp32 output on a calibration set ([`Divergence`]).
//!
//! The pass walks the graph's segments in order and keeps the fp32 activations at the current cut:
//! a layer's configurations run only from its own segment on, with the segments after it reusing
//! one fp32 session each. So the work is about half the forward passes a naive loop needs, and one
//! small session build per (layer, bit-width) instead of a whole model's.

use crate::error::{Error, Result};
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

impl<B: Backend + Clone> Evaluator<B> {
    /// Measures every layer of `manifest` (the one this evaluator was built for) alone at each of
    /// its allowed bit-widths; `progress` hears of each measurement and may stop the pass there
    /// ([`Error::Stopped`]). Needs an evaluator without activation quantization (the pass
    /// measures weights), and every layer linked to its weight.
    pub fn sensitivity(
        &mut self,
        manifest: &Manifest,
        metric: Divergence,
        mut progress: impl FnMut(Progress) -> ControlFlow<()>,
    ) -> Result<Sensitivities> {
        self.check_pass(manifest, metric)?;
        let layers = manifest.layers.len();
        let total: usize = manifest.layers.iter().map(|l| l.choices().len()).sum();
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
    fn check_pass(&self, manifest: &Manifest, metric: Divergence) -> Result<()> {
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
        if !unlinked.is_empty() {
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
