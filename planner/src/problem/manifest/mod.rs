//! The supernet manifest: the checked [`Manifest`] every algorithm takes, its layers and the
//! settings they share. Reading and checking the JSON document is `check`'s.
//!
//! Parse, don't validate: [`Manifest::from_json`] turns the raw document into a checked value once,
//! listing every problem with its JSON path. Nothing downstream re-checks.

mod check;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The candidate bit-widths a manifest derived from a model (or generated) offers unless told
/// otherwise, highest first.
pub const DEFAULT_BITS: [u8; 6] = [8, 6, 5, 4, 3, 2];

/// Largest bit-width a manifest may name.
pub const MAX_BITS: u8 = 32;

/// Most layers a manifest may list: the solvers are built and measured for hundreds to thousands
/// of groups (1,000 in the engines' agreement test); past this a manifest is refused before any
/// layer is checked.
pub const MAX_LAYERS: usize = 10_000;

/// Most weights a manifest may count in all: every size and average is computed in f64, exact
/// for integers up to 2^53.
pub const MAX_TOTAL_PARAMS: u64 = 1 << 53;

/// Most problems one refusal lists; the last entry says how many more there were.
pub const MAX_PROBLEMS: usize = 100;

/// How activations are quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationBits {
    /// Each layer's input activations use that layer's weight bit-width (the paper's setting).
    Same,
    /// Every layer's activations use this fixed bit-width.
    Fixed(u8),
}

impl Serialize for ActivationBits {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            ActivationBits::Same => s.serialize_str("same"),
            ActivationBits::Fixed(b) => s.serialize_u8(*b),
        }
    }
}

/// The rounding of the Double Rounding shift; must match the one the supernet was trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// Ties round away from zero (the default).
    #[default]
    HalfAwayFromZero,
    /// Ties round to the even neighbour, as `torch.round` does.
    HalfToEven,
}

/// A warning about accepted input that the user should know of (e.g. a trace priced as not free).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Warning {
    pub path: String,
    pub message: String,
}

/// The output divergence measured sensitivity is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Divergence {
    /// Mean KL(p_fp32 || p_quantized) over samples, nats (softmax of logits, or probabilities as
    /// they are when the output already is a distribution).
    #[default]
    Kl,
    /// Output mean squared error relative to the fp32 output's mean square.
    Mse,
}

impl Divergence {
    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Divergence::Kl => "kl",
            Divergence::Mse => "mse",
        }
    }
}

/// One weighted layer of a checked manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Layer {
    pub name: String,
    pub params: u64,
    pub macs: u64,
    /// Trace of the layer's whole Hessian block as given (a noisy estimate may be negative);
    /// absent when the layer has measured sensitivity only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hessian_trace: Option<f64>,
    /// Standard error of the trace estimate, when the tool that estimated it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hessian_trace_stderr: Option<f64>,
    /// The trace the objective uses: the estimate, or what `problem::traces` prices an estimate
    /// that cannot be told from zero at (0 for a layer with sensitivity only).
    #[serde(skip)]
    pub objective_trace: f64,
    /// Measured `||Q_b(W) - W||^2` per bit-width (covers every allowed bit when present).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perturbation: Option<BTreeMap<u8, f64>>,
    /// Measured output divergence with this layer alone at each bit-width and every other layer
    /// at full precision (covers every allowed bit when present); the objective when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensitivity: Option<BTreeMap<u8, f64>>,
    /// Allowed bit-widths, highest first.
    pub bits: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tie: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<String>,
}

impl Layer {
    /// Neither a trace nor measured sensitivity: nothing to price its bit-widths by yet.
    pub fn unscored(&self) -> bool {
        self.hessian_trace.is_none() && self.sensitivity.is_none()
    }

    /// The objective's trace per weight (HAWQ-V3's normalisation).
    pub fn trace_per_param(&self) -> f64 {
        self.objective_trace / self.params as f64
    }

    /// The bit-widths this layer may take: its own list, narrowed to the pin when pinned.
    pub fn choices(&self) -> Vec<u8> {
        match self.pin {
            Some(p) => vec![p],
            None => self.bits.clone(),
        }
    }
}

/// A checked supernet manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    pub name: String,
    /// Candidate bit-widths, highest first.
    pub bits: Vec<u8>,
    pub activation_bits: ActivationBits,
    pub rounding: Rounding,
    /// The divergence the layers' `sensitivity` measures, when they have it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensitivity_metric: Option<Divergence>,
    /// The model output evaluation and sensitivity score (the graph's first when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    pub layers: Vec<Layer>,
    /// What was accepted but changed, assumed or ignored; not part of the manifest itself.
    #[serde(skip)]
    pub warnings: Vec<Warning>,
}

/// Why a structure-only manifest (no layer with a trace or sensitivity) cannot be planned yet.
pub const UNSCORED: &str = "no layer has hessian_trace or sensitivity: the manifest describes the \
     model's structure only and cannot be planned until each layer's sensitivity is measured \
     (`bitplan manifest MODEL --data CALIB.npz`, or POST /v1/supernets/{id}/sensitivity once \
     the model and validation set are uploaded)";

/// A bit configuration as JSON: `{"<layer>": bits, ...}`, layers in the order given.
pub fn bits_json<'a>(names: impl IntoIterator<Item = &'a str>, bits: &[u8]) -> serde_json::Value {
    serde_json::Value::Object(
        names
            .into_iter()
            .zip(bits)
            .map(|(n, &b)| (n.to_string(), serde_json::json!(b)))
            .collect(),
    )
}

impl Manifest {
    /// The highest candidate bit-width (the stored integer model's).
    pub fn highest_bits(&self) -> u8 {
        self.bits[0]
    }

    /// Total weight count.
    pub fn total_params(&self) -> u64 {
        self.layers.iter().map(|l| l.params).sum()
    }

    /// Index of a layer by name.
    pub fn layer_index(&self, name: &str) -> Option<usize> {
        self.layers.iter().position(|l| l.name == name)
    }

    /// Names of the layers whose objective uses the trace-only proxy (no measured perturbation,
    /// no measured sensitivity).
    pub fn proxy_layers(&self) -> Vec<&str> {
        self.layers
            .iter()
            .filter(|l| l.perturbation.is_none() && l.sensitivity.is_none())
            .map(|l| l.name.as_str())
            .collect()
    }

    /// What the objective is: `sensitivity_kl` / `sensitivity_mse` (measured output divergence),
    /// `hessian` (Hessian-weighted quantization error), or `none` (structure only: no layer has a
    /// trace or sensitivity yet, so the manifest cannot be planned until measured).
    pub fn objective(&self) -> &'static str {
        match self.sensitivity_metric {
            Some(Divergence::Kl) => "sensitivity_kl",
            Some(Divergence::Mse) => "sensitivity_mse",
            None if self.layers.iter().all(Layer::unscored) => "none",
            None => "hessian",
        }
    }

    /// Whether the layers carry an objective (traces or measured sensitivity) to plan with.
    pub fn is_scored(&self) -> bool {
        !self.layers.iter().all(Layer::unscored)
    }

    /// A bit configuration as JSON: each layer's name to its bit-width, in manifest order (what
    /// plans, evaluations and exports give as `bits`).
    pub fn bits_json(&self, bits: &[u8]) -> serde_json::Value {
        bits_json(self.layers.iter().map(|l| l.name.as_str()), bits)
    }

    /// Serialises back to the manifest JSON format (checked values, traces as given, sorted bits).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a manifest always serialises")
    }
}

/// Bit-widths every member of a group allows (pins included), highest first.
pub(crate) fn common_choices(layers: &[Layer], members: &[usize]) -> Vec<u8> {
    let mut common = layers[members[0]].choices();
    for &m in &members[1..] {
        let c = layers[m].choices();
        common.retain(|b| c.contains(b));
    }
    common
}

#[cfg(test)]
mod tests;
