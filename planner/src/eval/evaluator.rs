//! Evaluating candidates: a bit-width per layer, materialised by Double Rounding and measured on a
//! validation set.
//!
//! The runtime sits behind [`Backend`] so this module and its tests need no ONNX Runtime. The graph
//! is prepared once (each planned weight an initializer slot whose values every session is given
//! in memory, activation quantizers whose scale and bounds are fed per run), split at
//! single-tensor cuts before planned layers (`segment`), and each segment serialised
//! once. A candidate runs segment by segment: a segment's output is reused when an earlier
//! candidate had the same bits on every planned layer up to it, and a segment's session is reused
//! when its own layers' bits repeat (`sessions`); otherwise a session is built with the
//! slots' weights at those bits. Slots are initializers, not graph inputs fed per run: ONNX Runtime
//! pre-packs weights it sees at session build (graph inputs measured 97 against 134 candidates/s
//! on the digits CNN without caching).

use crate::error::{Error, Result};
use crate::eval::compare::{argmax, closeness, divergence, OutputKind};
use crate::eval::npz::ValidationSet;
use crate::eval::onnx::OnnxModel;
use crate::eval::prepare::{
    activation_quantizer, planned_ops, slot_name, Planned, Prepared, Reference,
};
use crate::eval::quant::HighBitWeights;
use crate::eval::runtime::{Backend, External, Feed, Initializer, Session, Tensor};
use crate::eval::segment::{split, Segment};
use crate::eval::sessions::{self, Sessions};
use crate::problem::manifest::{ActivationBits, Divergence, Manifest, Rounding};
use prost::Message;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// What a candidate measures on the validation set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// Top-1 accuracy, when the set has labels.
    pub accuracy: Option<f64>,
    /// Top-1 agreement with the fp32 model, over output rows.
    pub agreement_fp32: f64,
    /// Mean KL(p_fp32 || p_candidate) over output rows (samples; positions of an output
    /// `[N, ..., w]`), nats.
    pub kl_fp32: f64,
    /// Top-1 agreement with the all-highest-bit model, over output rows.
    pub agreement_highest: f64,
    /// Mean KL(p_highest || p_candidate) over output rows, nats.
    pub kl_highest: f64,
    /// Output SQNR against the fp32 outputs, dB.
    pub sqnr_db: f64,
    /// Mean over samples of the cosine similarity of the output with fp32's.
    pub cosine_mean: f64,
    /// The smallest per-sample cosine similarity with fp32.
    pub cosine_min: f64,
    /// ‖output − fp32 output‖₂ / ‖fp32 output‖₂.
    pub rel_l2: f64,
    /// Median host time per batch, ms.
    pub latency_ms: f64,
    pub samples: usize,
    pub batch_size: usize,
    /// Whether activations were fake-quantized too.
    pub activations_quantized: bool,
}

/// Where evaluation time goes (cumulative, ms).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timings {
    /// Graph preparation once, then writing each candidate's weights and serialising.
    pub rewrite_ms: f64,
    /// Session builds (one per candidate).
    pub session_ms: f64,
    /// The fp32 reference pass (with activation range calibration), once.
    pub reference_ms: f64,
    /// Segments run (cache misses) and reused (hits).
    pub segment_runs: usize,
    pub segment_hits: usize,
    /// Candidates' inference (segments actually run), including deriving their weights.
    pub inference_ms: f64,
    pub candidates: usize,
}

/// A bit-width that stands for the layer's fp32 weights, unquantized (sensitivity passes keep
/// every layer but one there).
pub const FULL_PRECISION: u8 = 0;

/// How a candidate's weights are derived from the fp32 weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Double Rounding from the highest-bit store, with the manifest's rounding (what ships).
    DoubleRounding,
    /// Direct max-abs quantization at each bit-width (the baseline without a supernet).
    Direct,
}

/// Evaluation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalOptions {
    pub batch_size: usize,
    /// Fake-quantize each planned layer's input activations at its activation bit-width
    /// (the manifest's `activation_bits`), with ranges calibrated on the validation set.
    pub quantize_activations: bool,
}

/// Samples per inference batch unless asked otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 128;

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            batch_size: DEFAULT_BATCH_SIZE,
            quantize_activations: false,
        }
    }
}

/// A segment's output over the whole validation set, and its median time per batch.
struct Cached {
    out: Arc<Tensor>,
    median_ms: f64,
}

/// Memory for cached segment outputs; past it, outputs are recomputed rather than kept.
const CACHE_BYTES: usize = 1 << 30;
/// Evaluates candidates of one manifest on one model and validation set.
pub struct Evaluator<B: Backend> {
    backend: B,
    pub(crate) segments: Vec<Segment>,
    /// Each segment's serialized graph, without its planned weights (given per session) and
    /// without external data (read by the runtime from the model's folder).
    segment_bytes: Vec<Vec<u8>>,
    /// The model's folder, where its external data is.
    folder: Option<PathBuf>,
    /// Sessions by segment and the bits of the segment's own layers.
    pub(crate) sessions: Sessions<B::Session>,
    /// Segment outputs over the whole set, by segment and the bits of every layer up to it.
    cache: HashMap<(usize, Vec<u8>), Cached>,
    cached_bytes: usize,
    planned: Vec<Option<Planned>>,
    rounding: Rounding,
    activation_bits: ActivationBits,
    highest: u8,
    data: ValidationSet,
    batch_size: usize,
    fp32_logits: Tensor,
    highest_logits: Tensor,
    /// Whether the output rows are logits or probabilities (read off the fp32 outputs).
    output_kind: OutputKind,
    pub timings: Timings,
}

impl<B: Backend> std::fmt::Debug for Evaluator<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("samples", &self.data.len())
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

impl<B: Backend + Clone> Evaluator<B> {
    /// Prepares the graph and the fp32 and highest-bit reference outputs.
    pub fn new(
        backend: &B,
        model: &OnnxModel,
        manifest: &Manifest,
        data: ValidationSet,
        options: EvalOptions,
    ) -> Result<Self> {
        let batch_size = options.batch_size.max(1);
        let data = data.bind(model)?;
        let output = model.scored_output(manifest.output.as_deref())?.clone();
        let links = model.link_layers(manifest)?;
        let ops = planned_ops(model, &links);

        let t = Instant::now();
        let reference = Reference::run(
            backend,
            model,
            manifest,
            &ops,
            &data,
            batch_size,
            options.quantize_activations,
        )?;
        let reference_ms = t.elapsed().as_secs_f64() * 1e3;
        reference.check_labels(&data, output.name.as_deref().unwrap_or_default())?;

        let started = Instant::now();
        let Prepared { proto, planned } =
            Prepared::new(model, manifest, output, &links, &ops, &reference.act_ranges)?;
        let inputs: Vec<String> = data.inputs.iter().map(|i| i.name.clone()).collect();
        let mut segments = split(&proto, &inputs, planned.len());
        // Each segment's graph is kept serialized only.
        let segment_bytes = segments
            .iter_mut()
            .map(|s| std::mem::take(&mut s.proto).encode_to_vec())
            .collect();
        let rewrite_ms = started.elapsed().as_secs_f64() * 1e3;

        let fp32_logits = reference.logits;
        let mut ev = Evaluator {
            backend: backend.clone(),
            sessions: Sessions::new(sessions::WEIGHT_BUDGET, sessions::PER_SEGMENT),
            segment_bytes,
            segments,
            folder: model.folder.clone(),
            cache: HashMap::new(),
            cached_bytes: 0,
            planned,
            rounding: manifest.rounding,
            activation_bits: manifest.activation_bits,
            highest: manifest.highest_bits(),
            data,
            batch_size,
            highest_logits: fp32_logits.clone(),
            output_kind: OutputKind::detect(&fp32_logits.data, width(&fp32_logits)),
            fp32_logits,
            timings: Timings {
                rewrite_ms,
                reference_ms,
                ..Timings::default()
            },
        };
        let highest = vec![ev.highest; ev.planned.len()];
        ev.highest_logits = ev
            .infer(&highest, Scheme::DoubleRounding)?
            .0
            .as_ref()
            .clone();
        Ok(ev)
    }

    /// Runs the validation set through every segment for these bits (reusing cached segment
    /// outputs and sessions); returns the logits and the model's host time per batch (the sum of
    /// the segments' median batch times).
    fn infer(&mut self, bits: &[u8], scheme: Scheme) -> Result<(Arc<Tensor>, f64)> {
        self.check_bits(bits)?;
        let act_values = self.activation_values(bits);
        let tag = scheme_tag(scheme);
        let mut upstream = vec![tag];
        let mut current: Option<Arc<Tensor>> = None;
        let mut latency_ms = 0.0;
        for s in 0..self.segments.len() {
            let own = self.own_key(s, bits, scheme);
            for &l in &self.segments[s].act_layers {
                push_layer_key(&mut upstream, l, bits[l]);
            }
            upstream.extend_from_slice(&own[1..]);
            if let Some(c) = self.cache.get(&(s, upstream.clone())) {
                self.timings.segment_hits += 1;
                latency_ms += c.median_ms;
                current = Some(c.out.clone());
                continue;
            }
            self.ensure_session(s, &own, bits, scheme)?;
            let (out, median_ms) = self.run_segment(s, &own, current.as_deref(), &act_values)?;
            latency_ms += median_ms;
            let out = Arc::new(out);
            let size = out.data.len() * 4;
            if self.cached_bytes + size <= CACHE_BYTES {
                self.cached_bytes += size;
                self.cache.insert(
                    (s, upstream.clone()),
                    Cached {
                        out: out.clone(),
                        median_ms,
                    },
                );
            }
            current = Some(out);
        }
        Ok((current.expect("at least one segment"), latency_ms))
    }

    /// A configuration has one bit-width per manifest layer.
    fn check_bits(&self, bits: &[u8]) -> Result<()> {
        if bits.len() == self.planned.len() {
            return Ok(());
        }
        Err(Error::invalid(
            "bit configuration",
            "",
            format!(
                "has {} bit-widths for {} layers",
                bits.len(),
                self.planned.len()
            ),
        ))
    }

    /// Each planned layer's activation quantizer `(scale, lo, hi)` for these bits, when it has one.
    fn activation_values(&self, bits: &[u8]) -> Vec<Option<[f32; 3]>> {
        self.planned
            .iter()
            .zip(bits)
            .map(|(p, &b)| {
                let a = match self.activation_bits {
                    ActivationBits::Same => b,
                    ActivationBits::Fixed(a) => a,
                };
                p.as_ref()
                    .and_then(|p| p.act_range)
                    .map(|r| activation_quantizer(r, a))
            })
            .collect()
    }

    /// The key of segment `s`'s session for these bits: the scheme, then each of its layers' bits.
    pub(crate) fn own_key(&self, s: usize, bits: &[u8], scheme: Scheme) -> Vec<u8> {
        let mut own = vec![scheme_tag(scheme)];
        for &l in &self.segments[s].slots {
            push_layer_key(&mut own, l, bits[l]);
        }
        own
    }

    /// Builds segment `s`'s session for these bits unless one is kept under `own`.
    pub(crate) fn ensure_session(
        &mut self,
        s: usize,
        own: &[u8],
        bits: &[u8],
        scheme: Scheme,
    ) -> Result<()> {
        if self.sessions.contains(s, own) {
            return Ok(());
        }
        let t = Instant::now();
        let values: Vec<Initializer> = self.segments[s]
            .slots
            .iter()
            .map(|&l| Initializer {
                name: slot_name(l),
                shape: self.planned[l]
                    .as_ref()
                    .expect("slots are planned")
                    .shape
                    .clone(),
                data: self.weights(l, bits[l], scheme),
            })
            .collect();
        let bytes = values.iter().map(|v| 4 * v.data.len()).sum();
        let external = External {
            folder: self.folder.clone(),
            values,
        };
        self.timings.rewrite_ms += t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let session = self.backend.session(&self.segment_bytes[s], external)?;
        self.timings.session_ms += t.elapsed().as_secs_f64() * 1e3;
        self.sessions.insert(s, own, session, bytes);
        Ok(())
    }

    /// Runs segment `s` (its session under `own`, built) over the whole set in batches, from the
    /// previous segment's output (`None` for the first) and the validation inputs it reads;
    /// returns its output and median time per batch.
    pub(crate) fn run_segment(
        &mut self,
        s: usize,
        own: &[u8],
        input: Option<&Tensor>,
        act_values: &[Option<[f32; 3]>],
    ) -> Result<(Tensor, f64)> {
        let seg = &self.segments[s];
        let n = self.data.len();
        let session = self.sessions.get_mut(s, own).expect("built first");
        let names: Vec<[String; 3]> = seg
            .act_layers
            .iter()
            .map(|i| ["scale", "lo", "hi"].map(|k| format!("bitplan.act.{i}.{k}")))
            .collect();
        let fed: Vec<&crate::eval::npz::Input> = seg
            .data_inputs
            .iter()
            .map(|name| self.data.input(name).expect("segments read bound inputs"))
            .collect();
        let (mut out, mut out_shape, mut times) = (Vec::new(), Vec::new(), Vec::new());
        for start in (0..n).step_by(self.batch_size) {
            let end = (start + self.batch_size).min(n);
            let mut feeds: Vec<Feed> = Vec::new();
            if let (Some(name), Some(x)) = (&seg.input, input) {
                let per: usize = x.shape[1..].iter().product();
                let mut shape = x.shape.clone();
                shape[0] = end - start;
                feeds.push(Feed::f32(name, &shape, &x.data[start * per..end * per]));
            }
            feeds.extend(fed.iter().map(|i| i.feed(start, end)));
            for (k, &l) in seg.act_layers.iter().enumerate() {
                let v = act_values[l]
                    .as_ref()
                    .expect("quantized layers have ranges");
                for (name, value) in names[k].iter().zip(v) {
                    feeds.push(Feed::f32(name, &[], std::slice::from_ref(value)));
                }
            }
            let t = Instant::now();
            let y = session.run(&feeds)?.swap_remove(0);
            times.push(t.elapsed().as_secs_f64() * 1e3);
            if out_shape.is_empty() {
                out_shape = y.shape.clone();
            }
            out.extend_from_slice(&y.data);
        }
        self.timings.inference_ms += times.iter().sum::<f64>();
        self.timings.segment_runs += 1;
        times.sort_by(f64::total_cmp);
        out_shape[0] = n;
        Ok((
            Tensor {
                shape: out_shape,
                data: out,
            },
            times[times.len() / 2],
        ))
    }

    /// One planned layer's weights at `bits` by `scheme`.
    fn weights(&self, layer: usize, bits: u8, scheme: Scheme) -> Vec<f32> {
        let p = self.planned[layer]
            .as_ref()
            .expect("only planned layers have slots");
        if bits == FULL_PRECISION {
            return p.fp32.clone();
        }
        match scheme {
            Scheme::DoubleRounding => p.high.dequantize(bits.min(p.high.bits), self.rounding),
            Scheme::Direct => HighBitWeights::quantize(&p.fp32, p.channels, p.inner, bits)
                .dequantize(bits, Rounding::HalfToEven),
        }
    }

    /// Measures one candidate (a bit-width per manifest layer; unlinked layers are ignored).
    pub fn evaluate(&mut self, bits: &[u8]) -> Result<Metrics> {
        self.evaluate_with(bits, Scheme::DoubleRounding)
    }

    /// Measures one candidate with weights derived by `scheme`.
    pub fn evaluate_with(&mut self, bits: &[u8], scheme: Scheme) -> Result<Metrics> {
        let (logits, latency_ms) = self.infer(bits, scheme)?;
        self.timings.candidates += 1;
        let classes = width(&logits);
        let n = logits.data.len() / classes;
        let kind = self.output_kind;
        let mut correct = 0usize;
        let (mut agree32, mut agree_h, mut kl32, mut kl_h) = (0usize, 0usize, 0.0, 0.0);
        let (mut signal, mut noise) = (0.0f64, 0.0f64);
        for s in 0..n {
            let row = &logits.data[s * classes..(s + 1) * classes];
            let r32 = &self.fp32_logits.data[s * classes..(s + 1) * classes];
            let rh = &self.highest_logits.data[s * classes..(s + 1) * classes];
            let top = argmax(row);
            if let Some(y) = &self.data.y {
                correct += usize::from(top as i64 == y[s]);
            }
            agree32 += usize::from(top == argmax(r32));
            agree_h += usize::from(top == argmax(rh));
            kl32 += kind.kl(r32, row);
            kl_h += kind.kl(rh, row);
            for (a, b) in r32.iter().zip(row) {
                signal += f64::from(*a).powi(2);
                noise += f64::from(a - b).powi(2);
            }
        }
        let close = closeness(&self.fp32_logits.data, &logits.data, classes);
        let nf = n as f64;
        Ok(Metrics {
            accuracy: self.data.y.as_ref().map(|_| correct as f64 / nf),
            agreement_fp32: agree32 as f64 / nf,
            kl_fp32: kl32 / nf,
            agreement_highest: agree_h as f64 / nf,
            kl_highest: kl_h / nf,
            sqnr_db: if noise == 0.0 {
                f64::INFINITY
            } else {
                10.0 * (signal / noise).log10()
            },
            cosine_mean: close.cosine_mean,
            cosine_min: close.cosine_min,
            rel_l2: close.rel_l2,
            latency_ms,
            samples: self.data.len(),
            batch_size: self.batch_size,
            activations_quantized: self.quantizes_activations(),
        })
    }

    /// How far outputs `y` (over the whole set) are from the fp32 outputs.
    pub(crate) fn divergence_from_fp32(&self, metric: Divergence, y: &Tensor) -> f64 {
        divergence(
            metric,
            self.output_kind,
            &self.fp32_logits.data,
            &y.data,
            width(&self.fp32_logits),
        )
    }

    /// The fp32 model's scored output over the validation set.
    pub(crate) fn fp32_output(&self) -> &Tensor {
        &self.fp32_logits
    }

    /// Values per sample of the scored output.
    pub(crate) fn output_width(&self) -> usize {
        width(&self.fp32_logits)
    }

    /// Whether the evaluator fake-quantizes activations.
    pub fn quantizes_activations(&self) -> bool {
        self.planned
            .iter()
            .any(|p| p.as_ref().is_some_and(|p| p.act_range.is_some()))
    }

    /// Whether the model's outputs are logits or probabilities.
    pub fn output_kind(&self) -> OutputKind {
        self.output_kind
    }

    /// The candidate's scored output over the whole validation set, `[N, ...]`.
    pub fn logits(&mut self, bits: &[u8]) -> Result<Tensor> {
        Ok(self.infer(bits, Scheme::DoubleRounding)?.0.as_ref().clone())
    }

    /// Drops cached segment outputs and sessions (memory back; the next candidates compute anew).
    pub fn clear_cache(&mut self) {
        self.cache.clear();
        self.cached_bytes = 0;
        self.sessions.clear();
    }

    /// How many pieces the graph was cut into for reuse across candidates.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// The validation set this evaluator runs.
    pub fn data(&self) -> &ValidationSet {
        &self.data
    }

    /// Top-1 accuracy of the fp32 model, when labelled.
    pub fn fp32_accuracy(&self) -> Option<f64> {
        let y = self.data.y.as_ref()?;
        let classes = width(&self.fp32_logits);
        let correct = y
            .iter()
            .enumerate()
            .filter(|(s, &l)| {
                argmax(&self.fp32_logits.data[s * classes..(s + 1) * classes]) as i64 == l
            })
            .count();
        Some(correct as f64 / y.len() as f64)
    }
}

fn scheme_tag(scheme: Scheme) -> u8 {
    match scheme {
        Scheme::DoubleRounding => 0,
        Scheme::Direct => 1,
    }
}

/// Appends a layer's index (all 32 bits of it) and bit-width to a cache key.
fn push_layer_key(key: &mut Vec<u8>, layer: usize, bits: u8) {
    key.extend_from_slice(&(layer as u32).to_le_bytes());
    key.push(bits);
}

/// Values per row of a scored output: its last dimension. An output `[N, ..., w]` is compared row
/// by row (a sequence model's logits are a distribution per position; padded positions count
/// like the others); `[N]` is a row of one per sample.
fn width(t: &Tensor) -> usize {
    match t.shape.as_slice() {
        [_, .., w] => (*w).max(1),
        // `[N]`: one value per sample.
        _ => 1,
    }
}
