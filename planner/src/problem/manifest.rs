//! The supernet manifest: the raw JSON form, and the checked [`Manifest`] every algorithm takes.
//!
//! Parse, don't validate: [`Manifest::from_json`] turns the raw document into a checked value once,
//! listing every problem with its JSON path. Nothing downstream re-checks.

use crate::error::{parse_json, Error, FieldError, Result};
use crate::problem::fields::screen;
use crate::problem::traces::{objective_traces, Estimate};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Largest bit-width a manifest may name.
pub const MAX_BITS: u8 = 32;

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    bits: Vec<i64>,
    #[serde(default)]
    activation_bits: Option<serde_json::Value>,
    #[serde(default)]
    rounding: Option<Rounding>,
    #[serde(default)]
    sensitivity_metric: Option<Divergence>,
    #[serde(default)]
    output: Option<String>,
    layers: Vec<RawLayer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayer {
    name: String,
    params: i64,
    macs: i64,
    #[serde(default)]
    hessian_trace: Option<f64>,
    #[serde(default)]
    hessian_trace_per_param: Option<f64>,
    #[serde(default)]
    hessian_trace_stderr: Option<f64>,
    #[serde(default)]
    perturbation: Option<BTreeMap<String, f64>>,
    #[serde(default)]
    sensitivity: Option<BTreeMap<String, f64>>,
    #[serde(default)]
    bits: Option<Vec<i64>>,
    #[serde(default)]
    tie: Option<String>,
    #[serde(default)]
    pin: Option<i64>,
    #[serde(default)]
    weight: Option<String>,
}

const WHAT: &str = "manifest";

/// Why a structure-only manifest (no layer with a trace or sensitivity) cannot be planned yet.
pub const UNSCORED: &str = "no layer has hessian_trace or sensitivity: the manifest describes the \
     model's structure only and cannot be planned until each layer's sensitivity is measured \
     (`bitplan manifest MODEL --data CALIB.npz`, or POST /v1/supernets/{id}/sensitivity once \
     the model and validation set are uploaded)";

/// The top-level fields a manifest may carry.
const MANIFEST_FIELDS: &[&str] = &[
    "name",
    "bits",
    "activation_bits",
    "rounding",
    "sensitivity_metric",
    "output",
    "layers",
];

/// The fields a manifest layer may carry.
const LAYER_FIELDS: &[&str] = &[
    "name",
    "params",
    "macs",
    "hessian_trace",
    "hessian_trace_per_param",
    "hessian_trace_stderr",
    "perturbation",
    "sensitivity",
    "bits",
    "tie",
    "pin",
    "weight",
];

/// Collects field errors so a user sees every problem of a document at once.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError::new(path, reason));
    }
}

fn check_bit(value: i64, path: &str, problems: &mut Problems) -> Option<u8> {
    if (1..=MAX_BITS as i64).contains(&value) {
        Some(value as u8)
    } else {
        problems.push(path, format!("bit-width {value} is outside 1..={MAX_BITS}"));
        None
    }
}

fn check_bit_list(values: &[i64], path: &str, problems: &mut Problems) -> Vec<u8> {
    if values.is_empty() {
        problems.push(path, "must list at least one bit-width");
    }
    let mut out = Vec::new();
    for (i, &v) in values.iter().enumerate() {
        let item = format!("{path}[{i}]");
        if let Some(b) = check_bit(v, &item, problems) {
            if out.contains(&b) {
                problems.push(item, format!("bit-width {b} is listed twice"));
            } else {
                out.push(b);
            }
        }
    }
    out.sort_unstable_by(|a, b| b.cmp(a));
    out
}

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
    /// Parses and checks a manifest document.
    pub fn from_json(text: &str) -> Result<Manifest> {
        Self::from_value(parse_json(WHAT, text)?)
    }

    /// Parses and checks a manifest already decoded as a JSON value. Fields bitplan does not read
    /// are warnings, near-misses of known fields errors (see `problem::fields`).
    pub fn from_value(mut value: serde_json::Value) -> Result<Manifest> {
        let mut problems = Problems::default();
        let mut warnings = Vec::new();
        screen(
            &mut value,
            "",
            MANIFEST_FIELDS,
            &mut problems.0,
            &mut warnings,
        );
        if let Some(layers) = value.get_mut("layers").and_then(|l| l.as_array_mut()) {
            for (i, layer) in layers.iter_mut().enumerate() {
                let at = format!("layers[{i}]");
                screen(layer, &at, LAYER_FIELDS, &mut problems.0, &mut warnings);
            }
        }
        let raw: RawManifest = match serde_path_to_error::deserialize(value) {
            Ok(raw) => raw,
            Err(e) => {
                let path = e.path().to_string();
                let path = if path == "." { String::new() } else { path };
                problems.push(path, e.into_inner().to_string());
                return Err(Error::Invalid {
                    what: WHAT,
                    errors: problems.0,
                });
            }
        };
        Self::check(raw, problems, warnings)
    }

    fn check(
        raw: RawManifest,
        mut problems: Problems,
        mut warnings: Vec<Warning>,
    ) -> Result<Manifest> {
        if raw.name.trim().is_empty() {
            problems.push("name", "must not be empty");
        }
        let bits = check_bit_list(&raw.bits, "bits", &mut problems);
        let activation_bits = match &raw.activation_bits {
            None => ActivationBits::Same,
            Some(serde_json::Value::String(s)) if s == "same" => ActivationBits::Same,
            Some(serde_json::Value::Number(n)) => match n.as_i64() {
                Some(v) => check_bit(v, "activation_bits", &mut problems)
                    .map_or(ActivationBits::Same, ActivationBits::Fixed),
                None => {
                    problems.push("activation_bits", format!("{n} is not a whole bit-width"));
                    ActivationBits::Same
                }
            },
            Some(other) => {
                problems.push(
                    "activation_bits",
                    format!("must be \"same\" or a bit-width, not {other}"),
                );
                ActivationBits::Same
            }
        };
        if raw.layers.is_empty() {
            problems.push("layers", "must list at least one layer");
        }

        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut layers = Vec::with_capacity(raw.layers.len());
        // Traces are the objective unless some layer has measured sensitivity; a manifest with
        // neither anywhere is structure only (valid, not plannable).
        let needs_trace = raw.layers.iter().all(|l| l.sensitivity.is_none())
            && raw
                .layers
                .iter()
                .any(|l| l.hessian_trace.is_some() || l.hessian_trace_per_param.is_some());
        for (i, l) in raw.layers.iter().enumerate() {
            let at = |field: &str| format!("layers[{i}].{field}");
            if l.name.trim().is_empty() {
                problems.push(at("name"), "must not be empty");
            } else if let Some(first) = seen.insert(l.name.as_str(), i) {
                problems.push(
                    at("name"),
                    format!(
                        "duplicate layer name {:?} (first at layers[{first}])",
                        l.name
                    ),
                );
            }
            if l.params <= 0 {
                problems.push(
                    at("params"),
                    format!("must be a positive weight count, not {}", l.params),
                );
            }
            if l.macs < 0 {
                problems.push(at("macs"), format!("must not be negative, not {}", l.macs));
            }
            let params = l.params.max(1) as u64;

            let trace = check_trace(l, i, params, needs_trace, &mut problems);
            let layer_bits = match &l.bits {
                None => bits.clone(),
                Some(list) => {
                    let own = check_bit_list(list, &at("bits"), &mut problems);
                    for b in &own {
                        if !bits.contains(b) {
                            problems.push(
                                at("bits"),
                                format!("bit-width {b} is not in the manifest's bits {bits:?}"),
                            );
                        }
                    }
                    own
                }
            };

            let pin = l.pin.and_then(|p| check_bit(p, &at("pin"), &mut problems));
            if let Some(p) = pin {
                if !layer_bits.contains(&p) {
                    problems.push(
                        at("pin"),
                        format!(
                            "pinned bit-width {p} is not among the layer's bits {layer_bits:?}"
                        ),
                    );
                }
            }

            let perturbation = l.perturbation.as_ref().map(|map| {
                check_per_bit(
                    map,
                    &at("perturbation"),
                    &bits,
                    &layer_bits,
                    "squared error",
                    &mut problems,
                )
            });
            // A pinned layer's sensitivity is needed at its pin only.
            let measurable = pin.map_or_else(|| layer_bits.clone(), |p| vec![p]);
            let sensitivity = l.sensitivity.as_ref().map(|map| {
                check_per_bit(
                    map,
                    &at("sensitivity"),
                    &bits,
                    &measurable,
                    "divergence",
                    &mut problems,
                )
            });
            if let Some(t) = &l.tie {
                if t.trim().is_empty() {
                    problems.push(at("tie"), "tie label must not be empty");
                }
            }

            layers.push(Layer {
                name: l.name.clone(),
                params,
                macs: l.macs.max(0) as u64,
                hessian_trace: trace.map(|t| t.trace),
                hessian_trace_stderr: trace.and_then(|t| t.stderr),
                objective_trace: 0.0,
                perturbation,
                sensitivity,
                bits: layer_bits,
                tie: l.tie.clone(),
                pin,
                weight: l.weight.clone(),
            });
        }

        check_ties(&layers, &mut problems);
        check_sensitivity_everywhere(&layers, raw.sensitivity_metric, &mut problems);
        let estimates: Vec<Option<Estimate>> = layers
            .iter()
            .map(|l| {
                l.hessian_trace.map(|trace| Estimate {
                    trace,
                    stderr: l.hessian_trace_stderr,
                    params: l.params,
                })
            })
            .collect();
        let paths: Vec<String> = (0..layers.len())
            .map(|i| format!("layers[{i}].hessian_trace"))
            .collect();
        let (priced, trace_warnings) = objective_traces(&estimates, &paths);
        for (l, t) in layers.iter_mut().zip(priced) {
            l.objective_trace = t;
        }
        if layers.iter().all(|l| l.sensitivity.is_none()) {
            warnings.extend(trace_warnings);
        }
        if layers.iter().all(Layer::unscored) {
            warnings.push(Warning {
                path: "layers".into(),
                message: UNSCORED.into(),
            });
        }

        if raw.output.as_deref().is_some_and(|o| o.trim().is_empty()) {
            problems.push("output", "must name one of the model's outputs");
        }

        if problems.0.is_empty() {
            Ok(Manifest {
                name: raw.name,
                bits,
                activation_bits,
                rounding: raw.rounding.unwrap_or_default(),
                sensitivity_metric: layers
                    .iter()
                    .any(|l| l.sensitivity.is_some())
                    .then(|| raw.sensitivity_metric.unwrap_or_default()),
                output: raw.output,
                layers,
                warnings,
            })
        } else {
            Err(Error::Invalid {
                what: WHAT,
                errors: problems.0,
            })
        }
    }

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

/// A layer's trace estimate as given, checked.
fn check_trace(
    l: &RawLayer,
    i: usize,
    params: u64,
    needs_trace: bool,
    problems: &mut Problems,
) -> Option<Estimate> {
    let at = |field: &str| format!("layers[{i}].{field}");
    let (trace, field) = match (l.hessian_trace, l.hessian_trace_per_param) {
        (Some(_), Some(_)) => {
            problems.push(
                at("hessian_trace"),
                "give hessian_trace or hessian_trace_per_param, not both",
            );
            return None;
        }
        (None, None) => {
            if l.hessian_trace_stderr.is_some() {
                problems.push(
                    at("hessian_trace_stderr"),
                    "is the standard error of a trace: give hessian_trace or hessian_trace_per_param with it",
                );
            }
            if needs_trace {
                problems.push(
                    at("hessian_trace"),
                    "missing: give hessian_trace or hessian_trace_per_param (or measured sensitivity)",
                );
            }
            return None;
        }
        (Some(t), None) => (t, "hessian_trace"),
        (None, Some(t)) => (t * params as f64, "hessian_trace_per_param"),
    };
    if !trace.is_finite() {
        problems.push(at(field), format!("must be a finite number, not {trace}"));
        return None;
    }
    let stderr = match l.hessian_trace_stderr {
        Some(s) if !(s.is_finite() && s >= 0.0) => {
            problems.push(
                at("hessian_trace_stderr"),
                format!("must be a finite, non-negative standard error, not {s}"),
            );
            None
        }
        // A per-weight trace's standard error scales with it.
        Some(s) if field == "hessian_trace_per_param" => Some(s * params as f64),
        other => other,
    };
    Some(Estimate {
        trace,
        stderr,
        params,
    })
}

/// A per-bit map (`perturbation`, `sensitivity`): keys among the manifest's bit-widths, finite
/// non-negative values, one for each of the layer's allowed bits.
fn check_per_bit(
    map: &BTreeMap<String, f64>,
    path: &str,
    bits: &[u8],
    layer_bits: &[u8],
    what: &str,
    problems: &mut Problems,
) -> BTreeMap<u8, f64> {
    let mut out = BTreeMap::new();
    for (key, &value) in map {
        let at = format!("{path}.{key}");
        match key.trim().parse::<u8>() {
            Ok(b) if bits.contains(&b) => {
                if !value.is_finite() || value < 0.0 {
                    problems.push(
                        at,
                        format!("must be a finite, non-negative {what}, not {value}"),
                    );
                } else {
                    out.insert(b, value);
                }
            }
            _ => problems.push(
                at,
                format!("key {key:?} is not one of the manifest's bit-widths {bits:?}"),
            ),
        }
    }
    for b in layer_bits {
        if !map.keys().any(|k| k.trim().parse::<u8>() == Ok(*b)) {
            problems.push(
                path,
                format!("has no value for bit-width {b}; give every allowed bit or none"),
            );
        }
    }
    out
}

/// Measured sensitivity is an output divergence, on another scale than Hessian-weighted errors:
/// a manifest has it on every layer or on none.
fn check_sensitivity_everywhere(
    layers: &[Layer],
    metric: Option<Divergence>,
    problems: &mut Problems,
) {
    let with = layers.iter().filter(|l| l.sensitivity.is_some()).count();
    if with == 0 {
        if metric.is_some() {
            problems.push(
                "sensitivity_metric",
                "names a divergence but no layer has measured sensitivity",
            );
        }
        return;
    }
    for (i, l) in layers.iter().enumerate() {
        if l.sensitivity.is_none() {
            problems.push(
                format!("layers[{i}].sensitivity"),
                format!("missing: {with} other layers have measured sensitivity, and the objective cannot mix it with Hessian-weighted errors"),
            );
        }
    }
}

/// Tied layers must share at least one bit-width, and their pins must agree.
fn check_ties(layers: &[Layer], problems: &mut Problems) {
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, l) in layers.iter().enumerate() {
        if let Some(t) = &l.tie {
            groups.entry(t.as_str()).or_default().push(i);
        }
    }
    for (label, members) in groups {
        let common = common_choices(layers, &members);
        if common.is_empty() {
            let detail: Vec<String> = members
                .iter()
                .map(|&i| format!("{} {:?}", layers[i].name, layers[i].choices()))
                .collect();
            problems.push(
                format!("layers[{}].tie", members[0]),
                format!(
                    "tie group {label:?} has no common bit-width (pins and bits: {})",
                    detail.join(", ")
                ),
            );
        }
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
#[path = "manifest_tests.rs"]
mod tests;
