//! Checking a manifest document: the raw JSON form, every field checked with its JSON path, and
//! the checked [`Manifest`] built once. Parse, don't validate: nothing downstream re-checks.

use super::common_choices;
use super::{
    ActivationBits, Divergence, Layer, Manifest, Rounding, Warning, MAX_BITS, MAX_LAYERS,
    MAX_PROBLEMS, MAX_TOTAL_PARAMS, UNSCORED,
};
use crate::error::{parse_json, Error, FieldError, Result};
use crate::problem::fields::screen;
use crate::problem::traces::{objective_traces, Estimate};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

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

    /// The refusal listing the problems, at most [`MAX_PROBLEMS`] of them.
    fn into_error(mut self) -> Error {
        if self.0.len() > MAX_PROBLEMS {
            let more = self.0.len() - (MAX_PROBLEMS - 1);
            self.0.truncate(MAX_PROBLEMS - 1);
            self.0.push(FieldError::new(
                "layers",
                format!("and {more} more problems not listed"),
            ));
        }
        Error::Invalid {
            what: WHAT,
            errors: self.0,
        }
    }
}

/// The weights of all layers together must stay exact in f64 (each layer's count is checked on
/// its own, so the sum cannot wrap before this test).
fn check_total_params(layers: &[Layer], problems: &mut Problems) {
    let total = layers
        .iter()
        .try_fold(0u64, |sum, l| sum.checked_add(l.params));
    if total.is_none_or(|t| t > MAX_TOTAL_PARAMS) {
        problems.push(
            "layers",
            format!("the layers count more than {MAX_TOTAL_PARAMS} weights in all (2^53, where sizes stop being exact)"),
        );
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
        let activation_bits = check_activation_bits(raw.activation_bits.as_ref(), &mut problems);
        if raw.layers.is_empty() {
            problems.push("layers", "must list at least one layer");
        }
        if raw.layers.len() > MAX_LAYERS {
            problems.push(
                "layers",
                format!(
                    "lists {} layers, more than the {MAX_LAYERS} a manifest may hold",
                    raw.layers.len()
                ),
            );
            return Err(problems.into_error());
        }
        let mut layers = check_layers(&raw.layers, &bits, &mut problems);
        check_total_params(&layers, &mut problems);
        check_ties(&layers, &mut problems);
        check_sensitivity_everywhere(&layers, raw.sensitivity_metric, &mut problems);
        price_traces(&mut layers, &mut warnings);
        if raw.output.as_deref().is_some_and(|o| o.trim().is_empty()) {
            problems.push("output", "must name one of the model's outputs");
        }
        if !problems.0.is_empty() {
            return Err(problems.into_error());
        }
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
    }
}

/// `activation_bits`: absent or `"same"`, or one bit-width for every layer.
fn check_activation_bits(
    value: Option<&serde_json::Value>,
    problems: &mut Problems,
) -> ActivationBits {
    match value {
        None => ActivationBits::Same,
        Some(serde_json::Value::String(s)) if s == "same" => ActivationBits::Same,
        Some(serde_json::Value::Number(n)) => match n.as_i64() {
            Some(v) => check_bit(v, "activation_bits", problems)
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
    }
}

/// Every layer checked, names unique; traces are not priced yet (`objective_trace` is 0).
fn check_layers(raw: &[RawLayer], bits: &[u8], problems: &mut Problems) -> Vec<Layer> {
    // Traces are the objective unless some layer has measured sensitivity; a manifest with
    // neither anywhere is structure only (valid, not plannable).
    let needs_trace = raw.iter().all(|l| l.sensitivity.is_none())
        && raw
            .iter()
            .any(|l| l.hessian_trace.is_some() || l.hessian_trace_per_param.is_some());
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut layers = Vec::with_capacity(raw.len());
    for (i, l) in raw.iter().enumerate() {
        if let Some(first) = seen
            .insert(l.name.as_str(), i)
            .filter(|_| !l.name.trim().is_empty())
        {
            problems.push(
                format!("layers[{i}].name"),
                format!(
                    "duplicate layer name {:?} (first at layers[{first}])",
                    l.name
                ),
            );
        }
        layers.push(check_layer(l, i, bits, needs_trace, problems));
    }
    layers
}

/// One layer: its counts, trace, bits, pin, per-bit maps and tie label.
fn check_layer(
    l: &RawLayer,
    i: usize,
    bits: &[u8],
    needs_trace: bool,
    problems: &mut Problems,
) -> Layer {
    let at = |field: &str| format!("layers[{i}].{field}");
    if l.name.trim().is_empty() {
        problems.push(at("name"), "must not be empty");
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
    let trace = check_trace(l, i, params, needs_trace, problems);
    let layer_bits = check_layer_bits(l.bits.as_deref(), &at("bits"), bits, problems);
    let pin = l.pin.and_then(|p| check_bit(p, &at("pin"), problems));
    if let Some(p) = pin.filter(|p| !layer_bits.contains(p)) {
        problems.push(
            at("pin"),
            format!("pinned bit-width {p} is not among the layer's bits {layer_bits:?}"),
        );
    }
    let perturbation = l.perturbation.as_ref().map(|map| {
        let path = at("perturbation");
        check_per_bit(map, &path, bits, &layer_bits, "squared error", problems)
    });
    // A pinned layer's sensitivity is needed at its pin only.
    let measurable = pin.map_or_else(|| layer_bits.clone(), |p| vec![p]);
    let sensitivity = l.sensitivity.as_ref().map(|map| {
        let path = at("sensitivity");
        check_per_bit(map, &path, bits, &measurable, "divergence", problems)
    });
    if l.tie.as_ref().is_some_and(|t| t.trim().is_empty()) {
        problems.push(at("tie"), "tie label must not be empty");
    }
    Layer {
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
    }
}

/// A layer's own `bits` (the manifest's when absent): a subset of the manifest's.
fn check_layer_bits(
    own: Option<&[i64]>,
    path: &str,
    bits: &[u8],
    problems: &mut Problems,
) -> Vec<u8> {
    let Some(list) = own else {
        return bits.to_vec();
    };
    let own = check_bit_list(list, path, problems);
    for b in own.iter().filter(|b| !bits.contains(b)) {
        problems.push(
            path,
            format!("bit-width {b} is not in the manifest's bits {bits:?}"),
        );
    }
    own
}

/// Sets each layer's `objective_trace` by the trust rule (`problem::traces`); its warnings
/// matter only when traces are the objective (no measured sensitivity). A structure-only
/// manifest is warned of.
fn price_traces(layers: &mut [Layer], warnings: &mut Vec<Warning>) {
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
