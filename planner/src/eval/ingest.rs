//! Deriving a manifest from an ONNX model: weight counts from the weights, MACs from the output
//! shapes of one inference at the given input shape, Hessian traces merged by name, and with a
//! calibration set, each layer's measured sensitivity ([`crate::eval::sensitivity`]).
//!
//! It owns turning a model into manifest fields (counts, MACs, traces, measured perturbations and
//! sensitivity); checking the manifest stays the manifest's.
//!
//! MACs per sample of a weighted op = (output elements per sample) x (weights per output channel):
//! Conv `out_c*oh*ow * in/g*kh*kw`, Gemm/MatMul `n_out * k`. ConvTranspose multiplies each input
//! element by its `out/g*kh*kw` weights: (input elements per sample) x (weights per input channel).

use crate::error::{Error, FieldError, Result};
use crate::eval::npz::{Input, InputValues, ValidationSet};
use crate::eval::onnx::{declared_dims, declared_elem_type, pb, OnnxModel, WeightedLayer};
use crate::eval::quant::HighBitWeights;
use crate::eval::sensitivity::Progress;
use crate::eval::{probe, Backend, EvalOptions, Evaluator, Timings};
use crate::problem::manifest::{Divergence, Manifest, Warning};
use serde_json::{json, Map, Value};
use std::ops::ControlFlow;

const WHAT: &str = "traces";

/// The names a trace may be given under: the weight tensor, the tensor without a `.weight`
/// suffix (PyTorch's module name), and the node.
fn aliases(l: &WeightedLayer) -> Vec<String> {
    let mut out = vec![l.weight.clone()];
    if let Some(m) = l.weight.strip_suffix(".weight") {
        out.push(m.to_string());
    }
    out.push(l.node.clone());
    out
}

/// The one sample MACs are counted at: zeros of `given` shape (single-input models), else the
/// first sample of the calibration set, else zeros at the model's declared shapes with dynamic
/// dimensions at 1 (each such dimension but the batch gets a warning naming the input and the
/// dimension: a MAC count at 1 can be far off).
pub fn mac_sample(
    model: &OnnxModel,
    given: Option<&[usize]>,
    data: Option<&ValidationSet>,
) -> Result<(ValidationSet, Vec<Warning>)> {
    let inputs = model.data_inputs()?;
    if let Some(shape) = given {
        if shape.is_empty() || shape.contains(&0) {
            return Err(Error::invalid(
                "input shape",
                "",
                format!("{shape:?}: every dimension must be positive"),
            ));
        }
        let [input] = inputs.as_slice() else {
            return Err(Error::invalid(
                "input shape",
                "--input-shape",
                format!(
                    "the model has {} inputs: give a calibration set with an array per input instead",
                    inputs.len()
                ),
            ));
        };
        let sample = ValidationSet {
            inputs: vec![zeros(input, shape)],
            y: None,
        };
        return Ok((sample, Vec::new()));
    }
    if let Some(data) = data {
        return Ok((data.bind(model)?.slice(0, 1), Vec::new()));
    }
    let mut warnings = Vec::new();
    let mut sample = ValidationSet {
        inputs: Vec::new(),
        y: None,
    };
    for input in inputs {
        let name = input.name.clone().unwrap_or_default();
        let dims = declared_dims(input).ok_or_else(|| {
            Error::invalid(
                "input shape",
                "",
                format!("the model declares no shape for its input {name:?}: give the input shape or a calibration set"),
            )
        })?;
        warnings.extend(
            dims.iter()
                .enumerate()
                .skip(1)
                .filter(|(_, d)| d.is_none())
                .map(|(i, _)| Warning {
                    path: format!("input {name:?} dimension {i}"),
                    message: "dynamic, counted as 1 for the MAC count: give the input shape or a calibration set for the real size".into(),
                }),
        );
        let shape: Vec<usize> = dims.into_iter().map(|d| d.unwrap_or(1)).collect();
        sample.inputs.push(zeros(input, &shape));
    }
    Ok((sample, warnings))
}

/// An input of zeros of `shape` in the element type `info` declares.
fn zeros(info: &pb::ValueInfoProto, shape: &[usize]) -> Input {
    use pb::tensor_proto::DataType as D;
    let n: usize = shape.iter().product();
    let elem = declared_elem_type(info).unwrap_or(D::Float as i32);
    Input {
        name: info.name.clone().unwrap_or_default(),
        shape: shape.to_vec(),
        values: if elem == D::Int64 as i32 {
            InputValues::I64(vec![0; n])
        } else if elem == D::Int32 as i32 {
            InputValues::I32(vec![0; n])
        } else {
            InputValues::F32(vec![0.0; n])
        },
    }
}

/// What a manifest is derived from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub model: &'a OnnxModel,
    /// The manifest's name.
    pub name: &'a str,
    /// `{"name": trace}` or `{"name": {"hessian_trace" | "hessian_trace_per_param": x,
    /// "hessian_trace_stderr": s}}`, matched by module, tensor or node name.
    pub traces: Option<&'a Value>,
    /// The sample MACs are counted at ([`mac_sample`]).
    pub sample: &'a ValidationSet,
    /// The output to score (the graph's first when `None`), written into the manifest.
    pub output: Option<&'a str>,
    /// Candidate bit-widths.
    pub bits: &'a [u8],
}

/// Builds a manifest from a model: with traces, one of Hessian traces (every layer needs one);
/// without, a structure-only manifest (objective `none`) to measure sensitivity into later. A model
/// with several outputs and no `output` chosen gets a warning naming the one scored.
pub fn derive_manifest<B: Backend>(backend: &B, source: &Source) -> Result<Manifest> {
    let mut manifest = Manifest::from_value(manifest_document(backend, source)?)?;
    manifest.warnings.extend(output_warning(source));
    Ok(manifest)
}

/// When the model has several outputs and none was chosen, which one is scored.
fn output_warning(source: &Source) -> Option<Warning> {
    let outputs = &source.model.graph().output;
    if source.output.is_some() || outputs.len() < 2 {
        return None;
    }
    let names: Vec<String> = outputs
        .iter()
        .map(|o| format!("{:?}", o.name.clone().unwrap_or_default()))
        .collect();
    Some(Warning {
        path: "output".into(),
        message: format!(
            "the model has {} outputs ({}); the first is scored: --output NAME picks another",
            outputs.len(),
            names.join(", ")
        ),
    })
}

/// How a manifest's sensitivity is measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SensitivityOptions {
    pub metric: Divergence,
    pub batch_size: usize,
}

/// Builds a manifest whose layers carry measured sensitivity on `data` (traces optional: kept in
/// the manifest for reference, unused by the objective); MACs at `source.sample`. Also says where the
/// pass spent its time.
pub fn measure_manifest<B: Backend + Clone>(
    backend: &B,
    source: &Source,
    data: ValidationSet,
    options: SensitivityOptions,
    progress: impl FnMut(Progress) -> ControlFlow<()>,
) -> Result<(Manifest, Timings)> {
    let structure = derive_manifest(backend, source)?;
    let (mut measured, timings) =
        measure_sensitivity(backend, source.model, &structure, data, options, progress)?;
    measured.warnings.extend(output_warning(source));
    Ok((measured, timings))
}

/// `manifest` (structure only, or with traces or older measurements) with every layer's
/// sensitivity measured on `data` under `options.metric`, replacing any it had; and where the pass
/// spent its time. `progress` may stop the pass ([`Error::Stopped`]).
pub fn measure_sensitivity<B: Backend + Clone>(
    backend: &B,
    model: &OnnxModel,
    manifest: &Manifest,
    data: ValidationSet,
    options: SensitivityOptions,
    progress: impl FnMut(Progress) -> ControlFlow<()>,
) -> Result<(Manifest, Timings)> {
    let eval = EvalOptions {
        batch_size: options.batch_size.max(1),
        quantize_activations: false,
    };
    let mut evaluator = Evaluator::new(backend, model, manifest, data, eval)?;
    let measured = evaluator.sensitivity(manifest, options.metric, progress)?;
    let mut doc = manifest.to_json();
    doc["sensitivity_metric"] = json!(options.metric.as_str());
    for (layer, values) in doc["layers"]
        .as_array_mut()
        .expect("a manifest has layers")
        .iter_mut()
        .zip(measured)
    {
        layer["sensitivity"] = per_bit(values);
    }
    Ok((Manifest::from_value(doc)?, evaluator.timings))
}

/// A per-bit map as the manifest writes it (`{"8": x, ...}`).
fn per_bit(values: impl IntoIterator<Item = (u8, f64)>) -> Value {
    Value::Object(
        values
            .into_iter()
            .map(|(b, v)| (b.to_string(), json!(v)))
            .collect(),
    )
}

/// The manifest document of a model: per weighted layer its name, weight count, MACs at
/// the source's sample, weight link and, when `traces` are given, its trace.
fn manifest_document<B: Backend>(backend: &B, source: &Source) -> Result<Value> {
    let Source {
        model,
        name,
        traces,
        sample,
        output,
        bits,
    } = *source;
    let layers = model.weighted_layers()?;
    if layers.is_empty() {
        return Err(Error::invalid(
            "ONNX model",
            "graph",
            "no Conv, ConvTranspose, Gemm or MatMul with constant weights",
        ));
    }
    let traces = match traces {
        Some(t) => Some(t.as_object().ok_or_else(|| {
            Error::invalid(WHAT, "", "must be an object mapping layer names to traces")
        })?),
        None => None,
    };
    let shapes = layer_shapes(backend, model, &layers, output, sample)?;
    let mut errors = Vec::new();
    let mut used = std::collections::HashSet::new();
    let mut out_layers = Vec::new();
    for (l, (input, output)) in layers.iter().zip(shapes) {
        // PyTorch exports name weights `<module>.weight`: the module is the layer; else the node.
        let layer_name = l.weight.strip_suffix(".weight").unwrap_or(&l.node);
        let params = l.params() as u64;
        let macs = layer_macs(l, &input, &output);
        let mut doc =
            json!({"name": layer_name, "params": params, "macs": macs, "weight": l.weight});
        if let Some(traces) = traces {
            errors.extend(merge_trace(&mut doc, l, traces, &mut used));
        }
        out_layers.push(doc);
    }
    let unused = traces.into_iter().flat_map(|t| t.keys());
    for key in unused.filter(|k| !used.contains(*k)) {
        errors.push(FieldError::new(
            key.clone(),
            "names no weighted layer of the model",
        ));
    }
    Error::check(WHAT, errors)?;
    let mut doc = Map::new();
    doc.insert("name".into(), json!(name));
    doc.insert("bits".into(), json!(bits));
    if let Some(output) = output {
        doc.insert("output".into(), json!(output));
    }
    doc.insert("layers".into(), Value::Array(out_layers));
    Ok(Value::Object(doc))
}

/// Per weighted layer, the shapes of its op's input and output on the sample: one inference with
/// every weighted op's input and output exposed.
fn layer_shapes<B: Backend>(
    backend: &B,
    model: &OnnxModel,
    layers: &[WeightedLayer],
    output: Option<&str>,
    sample: &ValidationSet,
) -> Result<Vec<(Vec<usize>, Vec<usize>)>> {
    let g = model.graph();
    let mut tensors = Vec::new();
    for l in layers {
        let n = g
            .node
            .iter()
            .find(|n| n.input.get(1) == Some(&l.weight))
            .expect("listed from the graph");
        tensors.push(n.input[0].clone());
        tensors.push(n.output[0].clone());
    }
    let mut shapes = vec![Vec::new(); tensors.len()];
    probe(
        backend,
        model,
        output,
        &tensors,
        &sample.bind(model)?,
        sample.len().max(1),
        |k, t| shapes[k] = t.shape.clone(),
    )?;
    let mut shapes = shapes.into_iter();
    Ok(std::iter::from_fn(|| Some((shapes.next()?, shapes.next()?))).collect())
}

/// Multiply-accumulates per sample: each output value (input value, for a transposed
/// convolution) takes one weight per input channel.
fn layer_macs(l: &WeightedLayer, input: &[usize], output: &[usize]) -> u64 {
    let per_sample = |shape: &[usize]| -> u64 { shape.iter().skip(1).product::<usize>() as u64 };
    let params = l.params() as u64;
    if l.op_type == "ConvTranspose" {
        per_sample(input) * params / l.shape[0].max(1) as u64
    } else {
        per_sample(output) * params / l.channels.max(1) as u64
    }
}

/// Copies layer `l`'s trace fields from `traces` (looked up by each of its names) into its
/// document, adding the key it was found under to `used`; the error when there is none or it is
/// not a trace.
fn merge_trace(
    doc: &mut Value,
    l: &WeightedLayer,
    traces: &Map<String, Value>,
    used: &mut std::collections::HashSet<String>,
) -> Option<FieldError> {
    let names = aliases(l);
    let Some((key, v)) = names
        .iter()
        .find_map(|n| traces.get(n).map(|v| (n.clone(), v)))
    else {
        return Some(FieldError::new(
            doc["name"].as_str().unwrap_or_default(),
            format!(
                "no trace for this layer (looked up as {})",
                names.join(", ")
            ),
        ));
    };
    used.insert(key.clone());
    match v {
        Value::Number(_) => doc["hessian_trace"] = v.clone(),
        Value::Object(o) => {
            for k in [
                "hessian_trace",
                "hessian_trace_per_param",
                "hessian_trace_stderr",
            ] {
                if let Some(x) = o.get(k) {
                    doc[k] = x.clone();
                }
            }
        }
        _ => {
            return Some(FieldError::new(
                key,
                "must be a number or an object with hessian_trace",
            ))
        }
    }
    None
}

/// The manifest with every linked layer's `perturbation` measured from the model's real weights:
/// `||Q_b(W) - W||^2` for each allowed bit, by Double Rounding from the highest bit-width with the
/// manifest's rounding. Layers without a `weight` link keep what they had.
pub fn measure_perturbations(
    model: &OnnxModel,
    manifest: &crate::Manifest,
) -> Result<crate::Manifest> {
    let links = model.link_layers(manifest)?;
    let mut out = manifest.clone();
    let mut errors = Vec::new();
    for (i, (layer, wl)) in out.layers.iter_mut().zip(&links).enumerate() {
        let Some(wl) = wl else { continue };
        if wl.params() as u64 != layer.params {
            errors.push(crate::FieldError::new(
                format!("layers[{i}].params"),
                format!(
                    "layer {:?} says {} weights but {:?} in the model has {} (shape {:?})",
                    layer.name,
                    layer.params,
                    wl.weight,
                    wl.params(),
                    wl.shape
                ),
            ));
            continue;
        }
        let w = model.weight_values(wl)?;
        let hb = HighBitWeights::quantize(&w, wl.channels, wl.inner, manifest.highest_bits());
        layer.perturbation = Some(
            layer
                .bits
                .iter()
                .map(|&b| (b, hb.squared_error(&w, b, manifest.rounding)))
                .collect(),
        );
    }
    Error::check("manifest", errors)?;
    Ok(out)
}
