//! Deriving a manifest from an ONNX model: weight counts from the weights, MACs from the output
//! shapes of one inference at the given input shape, Hessian traces merged by name.
//!
//! MACs per sample of a weighted op = (output elements per sample) x (weights per output channel):
//! Conv `out_c*oh*ow * in/g*kh*kw`, Gemm/MatMul `n_out * k`. ConvTranspose multiplies each input
//! element by its `out/g*kh*kw` weights: (input elements per sample) x (weights per input channel).

use crate::error::{Error, FieldError, Result};
use crate::eval::{probe, Backend};
use crate::npz::ValidationSet;
use crate::onnx::{OnnxModel, WeightedLayer};
use serde_json::{json, Map, Value};

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

/// Builds a manifest document from a model, traces (`{"name": trace}` or
/// `{"name": {"hessian_trace" | "hessian_trace_per_param": x}}`) and candidate bits.
pub fn derive_manifest<B: Backend>(
    backend: &B,
    model: &OnnxModel,
    name: &str,
    traces: &Value,
    input_shape: &[usize],
    bits: &[u8],
) -> Result<crate::Manifest> {
    let layers = model.weighted_layers()?;
    if layers.is_empty() {
        return Err(Error::invalid(
            "ONNX model",
            "graph",
            "no Conv, ConvTranspose, Gemm or MatMul with constant weights",
        ));
    }
    let traces = traces.as_object().ok_or_else(|| {
        Error::invalid(WHAT, "", "must be an object mapping layer names to traces")
    })?;

    // One inference on zeros, with every weighted op's input and output exposed.
    let sample: usize = input_shape.iter().product();
    let data = ValidationSet {
        x: vec![0.0; sample],
        x_shape: input_shape.to_vec(),
        y: None,
    };
    let g = model.graph();
    let mut tensors = Vec::new();
    for l in &layers {
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
        &tensors,
        &data,
        input_shape[0].max(1),
        |k, t| shapes[k] = t.shape.clone(),
    )?;
    let per_sample = |shape: &[usize]| -> u64 { shape.iter().skip(1).product::<usize>() as u64 };

    let mut errors = Vec::new();
    let mut used = std::collections::HashSet::new();
    let mut out_layers = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let params = l.params() as u64;
        let macs = if l.op_type == "ConvTranspose" {
            per_sample(&shapes[2 * i]) * params / l.shape[0].max(1) as u64
        } else {
            per_sample(&shapes[2 * i + 1]) * params / l.channels.max(1) as u64
        };
        let names = aliases(l);
        // PyTorch exports name weights `<module>.weight`: the module is the layer; else the node.
        let layer_name = l
            .weight
            .strip_suffix(".weight")
            .unwrap_or(&l.node)
            .to_string();
        let found = names
            .iter()
            .find_map(|n| traces.get(n).map(|v| (n.clone(), v)));
        let mut doc =
            json!({"name": layer_name, "params": params, "macs": macs, "weight": l.weight});
        match found {
            None => errors.push(FieldError::new(
                layer_name.clone(),
                format!(
                    "no trace for this layer (looked up as {})",
                    names.join(", ")
                ),
            )),
            Some((key, v)) => {
                used.insert(key.clone());
                match v {
                    Value::Number(_) => doc["hessian_trace"] = v.clone(),
                    Value::Object(o) => {
                        for k in ["hessian_trace", "hessian_trace_per_param"] {
                            if let Some(x) = o.get(k) {
                                doc[k] = x.clone();
                            }
                        }
                    }
                    _ => errors.push(FieldError::new(
                        key,
                        "must be a number or an object with hessian_trace",
                    )),
                }
            }
        }
        out_layers.push(doc);
    }
    for key in traces.keys() {
        if !used.contains(key) {
            errors.push(FieldError::new(
                key.clone(),
                "names no weighted layer of the model",
            ));
        }
    }
    Error::check(WHAT, errors)?;
    let mut doc = Map::new();
    doc.insert("name".into(), json!(name));
    doc.insert("bits".into(), json!(bits));
    doc.insert("layers".into(), Value::Array(out_layers));
    crate::Manifest::from_value(Value::Object(doc))
}
