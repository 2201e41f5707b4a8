//! Evaluating candidates: a bit-width per layer, materialised by Double Rounding and measured on a
//! validation set.
//!
//! The runtime sits behind [`Backend`] so this module and its tests need no ONNX Runtime. One
//! session serves every candidate: the planned layers' weights are turned from initializers into
//! graph inputs once, and each candidate feeds its dequantized weights at run time, so a candidate
//! costs a weight derivation (integer shifts) and inference, never a model rewrite or a session
//! build.

use crate::error::{Error, Result};
use crate::manifest::{Manifest, Rounding};
use crate::npz::ValidationSet;
use crate::onnx::{pb, OnnxModel, WeightedLayer};
use crate::quant::HighBitWeights;
use prost::Message;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Instant;

/// A dense f32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// An inference runtime.
pub trait Backend {
    type Session: Session;
    /// Builds a session from a serialized ONNX model.
    fn session(&self, model: &[u8]) -> Result<Self::Session>;
}

/// A loaded model: named f32 inputs in, the first output out.
pub trait Session {
    fn run(&mut self, inputs: &[(&str, &[usize], &[f32])]) -> Result<Tensor>;
}

/// What a candidate measures on the validation set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// Top-1 accuracy, when the set has labels.
    pub accuracy: Option<f64>,
    /// Top-1 agreement with the fp32 model.
    pub agreement_fp32: f64,
    /// Mean KL(p_fp32 || p_candidate) over samples, nats.
    pub kl_fp32: f64,
    /// Top-1 agreement with the all-highest-bit model.
    pub agreement_highest: f64,
    /// Mean KL(p_highest || p_candidate), nats.
    pub kl_highest: f64,
    /// Output SQNR against the fp32 outputs, dB.
    pub sqnr_db: f64,
    /// Median host time per batch, ms.
    pub latency_ms: f64,
    pub samples: usize,
    pub batch_size: usize,
}

/// Where evaluation time goes (cumulative, ms).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timings {
    pub rewrite_ms: f64,
    pub session_ms: f64,
    pub weights_ms: f64,
    pub inference_ms: f64,
    pub candidates: usize,
}

/// How a candidate's weights are derived from the fp32 weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Double Rounding from the highest-bit store, with the manifest's rounding (what ships).
    DoubleRounding,
    /// Direct max-abs quantization at each bit-width (the baseline without a supernet).
    Direct,
}

/// A planned layer: where its weight enters the graph, and its highest-bit store.
struct Planned {
    input: String,
    shape: Vec<usize>,
    channels: usize,
    inner: usize,
    fp32: Vec<f32>,
    high: HighBitWeights,
}

/// Evaluates candidates of one manifest on one model and validation set.
pub struct Evaluator<S: Session> {
    session: S,
    input_name: String,
    planned: Vec<Option<Planned>>,
    rounding: Rounding,
    highest: u8,
    data: ValidationSet,
    batch_size: usize,
    fp32_logits: Tensor,
    highest_logits: Tensor,
    pub timings: Timings,
}

impl<S: Session> std::fmt::Debug for Evaluator<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("samples", &self.data.len())
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

const WHAT: &str = "evaluation input";

impl<S: Session> Evaluator<S> {
    /// Prepares the shared session and the fp32 and highest-bit reference outputs.
    pub fn new<B: Backend<Session = S>>(
        backend: &B,
        model: &OnnxModel,
        manifest: &Manifest,
        data: ValidationSet,
        batch_size: usize,
    ) -> Result<Self> {
        let started = Instant::now();
        let layers = model.weighted_layers()?;
        let by_weight: HashMap<&str, &WeightedLayer> =
            layers.iter().map(|l| (l.weight.as_str(), l)).collect();
        let by_node: HashMap<&str, &WeightedLayer> =
            layers.iter().map(|l| (l.node.as_str(), l)).collect();

        let graph = model.graph();
        let initializer_names: std::collections::HashSet<&str> = graph
            .initializer
            .iter()
            .filter_map(|t| t.name.as_deref())
            .collect();
        let graph_inputs: Vec<&pb::ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| {
                !i.name
                    .as_deref()
                    .is_some_and(|n| initializer_names.contains(n))
            })
            .collect();
        let [input] = graph_inputs.as_slice() else {
            return Err(Error::invalid(
                WHAT,
                "model",
                format!(
                    "bitplan evaluates models with exactly one data input; this one has {}",
                    graph_inputs.len()
                ),
            ));
        };
        let input_name = input.name.clone().unwrap_or_default();
        check_input_shape(input, &data)?;

        // Turn every planned weight into a graph input fed at run time.
        let mut proto = model.proto.clone();
        let mut planned = Vec::with_capacity(manifest.layers.len());
        let mut errors = Vec::new();
        for (i, layer) in manifest.layers.iter().enumerate() {
            let Some(link) = &layer.weight else {
                planned.push(None);
                continue;
            };
            let Some(wl) = by_weight
                .get(link.as_str())
                .or_else(|| by_node.get(link.as_str()))
            else {
                errors.push(crate::FieldError::new(format!("layers[{i}].weight"), format!("layer {:?} links weight {link:?}, which is not the weight of any Conv/ConvTranspose/Gemm/MatMul in the model", layer.name)));
                planned.push(None);
                continue;
            };
            let fp32 = model.weight_values(wl)?;
            let high =
                HighBitWeights::quantize(&fp32, wl.channels, wl.inner, manifest.highest_bits());
            let feed = format!("bitplan.weight.{i}");
            let g = proto.graph.as_mut().expect("checked on load");
            // Every weighted op takes its weight as input 1.
            let node = g
                .node
                .iter_mut()
                .find(|n| n.input.get(1) == Some(&wl.weight) && node_is(n, &wl.node));
            let Some(node) = node else {
                return Err(Error::Solver(format!(
                    "layer {} vanished from the graph",
                    wl.node
                )));
            };
            node.input[1] = feed.clone();
            g.input.push(pb::ValueInfoProto {
                name: Some(feed.clone()),
                r#type: Some(tensor_type(&wl.shape)),
                ..Default::default()
            });
            planned.push(Some(Planned {
                input: feed,
                shape: wl.shape.clone(),
                channels: wl.channels,
                inner: wl.inner,
                fp32,
                high,
            }));
        }
        if !errors.is_empty() {
            return Err(Error::Invalid {
                what: "manifest",
                errors,
            });
        }
        let bytes = proto.encode_to_vec();
        let rewrite_ms = started.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let session = backend.session(&bytes)?;
        let session_ms = t.elapsed().as_secs_f64() * 1e3;

        let empty = Tensor {
            shape: Vec::new(),
            data: Vec::new(),
        };
        let mut ev = Evaluator {
            session,
            input_name,
            planned,
            rounding: manifest.rounding,
            highest: manifest.highest_bits(),
            data,
            batch_size: batch_size.max(1),
            fp32_logits: empty.clone(),
            highest_logits: empty,
            timings: Timings {
                rewrite_ms,
                session_ms,
                ..Timings::default()
            },
        };
        let fp32: Vec<Vec<f32>> = ev
            .planned
            .iter()
            .map(|p| p.as_ref().map(|p| p.fp32.clone()).unwrap_or_default())
            .collect();
        ev.fp32_logits = ev.infer(&fp32)?.0;
        if let Some(y) = &ev.data.y {
            let classes = ev.fp32_logits.shape.last().copied().unwrap_or(0);
            if let Some((i, &label)) = y.iter().enumerate().find(|(_, &l)| l as usize >= classes) {
                return Err(Error::invalid(
                    WHAT,
                    format!("y[{i}]"),
                    format!("label {label} is out of range for a model with {classes} outputs"),
                ));
            }
        }
        let highest = vec![ev.highest; ev.planned.len()];
        let weights = ev.weights_for(&highest, Scheme::DoubleRounding)?;
        ev.highest_logits = ev.infer(&weights)?.0;
        Ok(ev)
    }

    /// The dequantized weights of every planned layer at the given bits (manifest order).
    fn weights_for(&self, bits: &[u8], scheme: Scheme) -> Result<Vec<Vec<f32>>> {
        if bits.len() != self.planned.len() {
            return Err(Error::invalid(
                "bit configuration",
                "",
                format!(
                    "has {} bit-widths for {} layers",
                    bits.len(),
                    self.planned.len()
                ),
            ));
        }
        Ok(self
            .planned
            .iter()
            .zip(bits)
            .map(|(p, &b)| {
                p.as_ref()
                    .map(|p| match scheme {
                        Scheme::DoubleRounding => {
                            p.high.dequantize(b.min(p.high.bits), self.rounding)
                        }
                        Scheme::Direct => HighBitWeights::quantize(&p.fp32, p.channels, p.inner, b)
                            .dequantize(b, Rounding::HalfToEven),
                    })
                    .unwrap_or_default()
            })
            .collect())
    }

    /// Runs the validation set in batches with these planned weights; returns logits and per-batch ms.
    fn infer(&mut self, weights: &[Vec<f32>]) -> Result<(Tensor, Vec<f64>)> {
        let per = self.data.sample_size();
        let n = self.data.len();
        let mut out = Vec::new();
        let mut out_shape = Vec::new();
        let mut times = Vec::new();
        for start in (0..n).step_by(self.batch_size) {
            let end = (start + self.batch_size).min(n);
            let mut shape = self.data.x_shape.clone();
            shape[0] = end - start;
            let mut feeds: Vec<(&str, &[usize], &[f32])> = vec![(
                self.input_name.as_str(),
                &shape,
                &self.data.x[start * per..end * per],
            )];
            for (p, w) in self.planned.iter().zip(weights) {
                if let Some(p) = p {
                    feeds.push((p.input.as_str(), &p.shape, w));
                }
            }
            let t = Instant::now();
            let y = self.session.run(&feeds)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            if out_shape.is_empty() {
                out_shape = y.shape.clone();
            }
            out.extend_from_slice(&y.data);
        }
        if out_shape.len() != 2 {
            return Err(Error::invalid(
                WHAT,
                "model",
                format!("the first output must be [batch, classes], got shape {out_shape:?}"),
            ));
        }
        out_shape[0] = n;
        Ok((
            Tensor {
                shape: out_shape,
                data: out,
            },
            times,
        ))
    }

    /// Measures one candidate (a bit-width per manifest layer; unlinked layers are ignored).
    pub fn evaluate(&mut self, bits: &[u8]) -> Result<Metrics> {
        self.evaluate_with(bits, Scheme::DoubleRounding)
    }

    /// Measures one candidate with weights derived by `scheme`.
    pub fn evaluate_with(&mut self, bits: &[u8], scheme: Scheme) -> Result<Metrics> {
        let t = Instant::now();
        let weights = self.weights_for(bits, scheme)?;
        self.timings.weights_ms += t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let (logits, mut times) = self.infer(&weights)?;
        self.timings.inference_ms += t.elapsed().as_secs_f64() * 1e3;
        self.timings.candidates += 1;
        times.sort_by(f64::total_cmp);
        let classes = logits.shape[1];
        let n = logits.shape[0];
        let argmax = |row: &[f32]| {
            row.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
                .unwrap_or(0)
        };
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
            kl32 += kl(r32, row);
            kl_h += kl(rh, row);
            for (a, b) in r32.iter().zip(row) {
                signal += f64::from(*a).powi(2);
                noise += f64::from(a - b).powi(2);
            }
        }
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
            latency_ms: times[times.len() / 2],
            samples: n,
            batch_size: self.batch_size,
        })
    }

    /// The candidate's output logits over the whole validation set, `[N, classes]`.
    pub fn logits(&mut self, bits: &[u8]) -> Result<Tensor> {
        let weights = self.weights_for(bits, Scheme::DoubleRounding)?;
        Ok(self.infer(&weights)?.0)
    }

    /// The validation set this evaluator runs.
    pub fn data(&self) -> &ValidationSet {
        &self.data
    }

    /// Top-1 accuracy of the fp32 model, when labelled.
    pub fn fp32_accuracy(&self) -> Option<f64> {
        let y = self.data.y.as_ref()?;
        let classes = self.fp32_logits.shape[1];
        let correct = y
            .iter()
            .enumerate()
            .filter(|(s, &l)| {
                let row = &self.fp32_logits.data[s * classes..(s + 1) * classes];
                row.iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(i, _)| i as i64)
                    == Some(l)
            })
            .count();
        Some(correct as f64 / y.len() as f64)
    }
}

fn node_is(n: &pb::NodeProto, name: &str) -> bool {
    n.name
        .as_deref()
        .filter(|s| !s.is_empty())
        .or(n.output.first().map(String::as_str))
        == Some(name)
}

fn tensor_type(shape: &[usize]) -> pb::TypeProto {
    pb::TypeProto {
        value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
            elem_type: Some(pb::tensor_proto::DataType::Float as i32),
            shape: Some(pb::TensorShapeProto {
                dim: shape
                    .iter()
                    .map(|&d| pb::tensor_shape_proto::Dimension {
                        value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(d as i64)),
                        ..Default::default()
                    })
                    .collect(),
            }),
        })),
        ..Default::default()
    }
}

/// The declared input shape (static dimensions only) must match the data's per-sample shape.
fn check_input_shape(input: &pb::ValueInfoProto, data: &ValidationSet) -> Result<()> {
    let Some(pb::type_proto::Value::TensorType(t)) =
        input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Ok(());
    };
    let Some(shape) = &t.shape else { return Ok(()) };
    let dims: Vec<Option<i64>> = shape
        .dim
        .iter()
        .map(|d| match d.value {
            Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => Some(v),
            _ => None,
        })
        .collect();
    let name = input.name.clone().unwrap_or_default();
    let fits = dims.len() == data.x_shape.len()
        && dims
            .iter()
            .zip(&data.x_shape)
            .skip(1)
            .all(|(d, &x)| d.is_none_or(|d| d as usize == x));
    if !fits {
        let want: Vec<String> = dims
            .iter()
            .map(|d| d.map_or("?".into(), |v| v.to_string()))
            .collect();
        return Err(Error::invalid(
            WHAT,
            "x",
            format!(
                "shape {:?} does not fit the model input {name:?} [{}]",
                data.x_shape,
                want.join(", ")
            ),
        ));
    }
    Ok(())
}

/// KL(softmax(p) || softmax(q)) in nats, computed stably from logits.
fn kl(p: &[f32], q: &[f32]) -> f64 {
    let log_softmax = |z: &[f32]| -> Vec<f64> {
        let m = z
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let lse = m + z
            .iter()
            .map(|&v| (f64::from(v) - m).exp())
            .sum::<f64>()
            .ln();
        z.iter().map(|&v| f64::from(v) - lse).collect()
    };
    let (lp, lq) = (log_softmax(p), log_softmax(q));
    lp.iter()
        .zip(&lq)
        .map(|(a, b)| a.exp() * (a - b))
        .sum::<f64>()
        .max(0.0)
}
