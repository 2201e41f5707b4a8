//! The graph an evaluator runs, prepared once per model: each planned layer's weight moved to an
//! initializer slot of its own (its values given to every session in memory), activation
//! quantizers inserted before planned ops when asked, and weights nothing reads any more dropped;
//! and the fp32 reference pass ([`probe`]) that calibrates activation ranges on the way. It builds
//! graphs and runs the reference; running candidates is the evaluator's.

use crate::error::{Error, Result};
use crate::eval::npz::ValidationSet;
use crate::eval::onnx::{pb, OnnxModel, WeightedLayer};
use crate::eval::quant::HighBitWeights;
use crate::eval::runtime::{Backend, External, Session, Tensor};
use crate::problem::manifest::Manifest;
use prost::Message;

/// A planned layer: its weights and highest-bit store.
pub(crate) struct Planned {
    pub shape: Vec<usize>,
    pub channels: usize,
    pub inner: usize,
    pub fp32: Vec<f32>,
    pub high: HighBitWeights,
    /// Calibrated range of the layer's input activations, with activation quantization.
    pub act_range: Option<(f32, f32)>,
}

/// Where the planned weights' slots say their data is: never read, since every session is given
/// the slots' values in memory.
const SLOT_LOCATION: &str = "bitplan.weight-slot";

const WHAT: &str = "evaluation input";

/// The initializer planned layer `layer`'s weights take in every session.
pub(crate) fn slot_name(layer: usize) -> String {
    format!("bitplan.weight.{layer}")
}

/// Activation fake-quantization parameters `(scale, lo, hi)` for a calibrated range at `bits`:
/// unsigned `[0, 2^b - 1]` when the range is non-negative (after a ReLU), else symmetric
/// `±(2^(b-1) - 1)`; the scale maps the largest magnitude seen to the top level.
pub fn activation_quantizer(range: (f32, f32), bits: u8) -> [f32; 3] {
    let (lo, hi) = range;
    if lo >= 0.0 {
        let levels = ((1u64 << bits) - 1) as f32;
        [if hi > 0.0 { hi / levels } else { 1.0 }, 0.0, levels]
    } else {
        let levels = ((1u64 << (bits - 1)) - 1).max(1) as f32;
        let m = lo.abs().max(hi.abs());
        [m / levels, -levels, levels]
    }
}

/// Per manifest layer, the graph node of its planned op (`None` for a layer not in the model):
/// every weighted op takes its weight as input 1, data as input 0.
pub(crate) fn planned_ops(
    model: &OnnxModel,
    links: &[Option<WeightedLayer>],
) -> Vec<Option<usize>> {
    links
        .iter()
        .map(|wl| {
            wl.as_ref().and_then(|wl| {
                model
                    .graph()
                    .node
                    .iter()
                    .position(|n| n.input.get(1) == Some(&wl.weight) && node_is(n, &wl.node))
            })
        })
        .collect()
}

/// The fp32 reference outputs, and per layer its calibrated input range when `calibrate`.
pub(crate) struct Reference {
    pub logits: Tensor,
    pub act_ranges: Vec<Option<(f32, f32)>>,
}

impl Reference {
    /// The fp32 reference pass over the bound set, recording the range of every planned op's
    /// input activations when `calibrate`.
    pub fn run<B: Backend>(
        backend: &B,
        model: &OnnxModel,
        manifest: &Manifest,
        ops: &[Option<usize>],
        data: &ValidationSet,
        batch_size: usize,
        calibrate: bool,
    ) -> Result<Reference> {
        let act_inputs: Vec<(usize, String)> = ops
            .iter()
            .enumerate()
            .filter(|_| calibrate)
            .filter_map(|(i, op)| op.map(|o| (i, model.graph().node[o].input[0].clone())))
            .collect();
        let names: Vec<String> = act_inputs.iter().map(|(_, n)| n.clone()).collect();
        let mut ranges = vec![(f32::INFINITY, f32::NEG_INFINITY); names.len()];
        let logits = probe(
            backend,
            model,
            manifest.output.as_deref(),
            &names,
            data,
            batch_size,
            |k, t| {
                for &v in &t.data {
                    ranges[k].0 = ranges[k].0.min(v);
                    ranges[k].1 = ranges[k].1.max(v);
                }
            },
        )?;
        let mut act_ranges = vec![None; ops.len()];
        for ((i, _), range) in act_inputs.iter().zip(ranges) {
            act_ranges[*i] = Some(range);
        }
        Ok(Reference { logits, act_ranges })
    }

    /// Labels need a scored output `[samples, classes]` and each label must name a class.
    pub fn check_labels(&self, data: &ValidationSet, output: &str) -> Result<()> {
        let Some(y) = &data.y else { return Ok(()) };
        if self.logits.shape.len() != 2 {
            return Err(Error::invalid(
                WHAT,
                "y",
                format!(
                    "labels need a scored output [samples, classes]; {output:?} has shape {:?}",
                    self.logits.shape
                ),
            ));
        }
        let classes = self.logits.shape[1];
        if let Some((i, &label)) = y.iter().enumerate().find(|(_, &l)| l as usize >= classes) {
            return Err(Error::invalid(
                WHAT,
                format!("y[{i}]"),
                format!("label {label} is out of range for a model with {classes} outputs"),
            ));
        }
        Ok(())
    }
}

/// The graph every candidate runs, and its planned layers (by manifest layer).
pub(crate) struct Prepared {
    pub proto: pb::ModelProto,
    pub planned: Vec<Option<Planned>>,
}

impl Prepared {
    /// Moves each planned weight to its slot and, where a layer has a calibrated range, inserts
    /// its activation quantizer (scale, lo and hi fed per candidate) right before its op; the
    /// graph's one output is `output`, the scored one.
    pub fn new(
        model: &OnnxModel,
        manifest: &Manifest,
        output: pb::ValueInfoProto,
        links: &[Option<WeightedLayer>],
        ops: &[Option<usize>],
        act_ranges: &[Option<(f32, f32)>],
    ) -> Result<Prepared> {
        let mut proto = model.proto.clone();
        let g = proto.graph.as_mut().expect("checked on load");
        g.output = vec![output];
        let mut planned = Vec::with_capacity(links.len());
        let mut inserts: Vec<(usize, Vec<pb::NodeProto>)> = Vec::new();
        for (i, (wl, op)) in links.iter().zip(ops).enumerate() {
            let (Some(wl), Some(op)) = (wl, *op) else {
                planned.push(None);
                continue;
            };
            g.node[op].input[1] = slot_name(i);
            g.initializer.push(weight_slot(i, &wl.shape, wl.params()));
            if act_ranges[i].is_some() {
                let x = std::mem::take(&mut g.node[op].input[0]);
                let (inputs, nodes, out) = activation_quantizer_nodes(i, x);
                g.node[op].input[0] = out;
                g.input.extend(inputs);
                inserts.push((op, nodes));
            }
            planned.push(Some(Planned::new(model, manifest, wl, act_ranges[i])?));
        }
        inserts.sort_by_key(|(op, _)| std::cmp::Reverse(*op));
        for (op, nodes) in inserts {
            g.node.splice(op..op, nodes);
        }
        drop_unread_initializers(g);
        Ok(Prepared { proto, planned })
    }
}

impl Planned {
    fn new(
        model: &OnnxModel,
        manifest: &Manifest,
        wl: &WeightedLayer,
        act_range: Option<(f32, f32)>,
    ) -> Result<Planned> {
        let fp32 = model.weight_values(wl)?;
        let high = match model.stored_high_bit_weights(wl, manifest.highest_bits())? {
            Some(stored) => stored,
            None => HighBitWeights::quantize(&fp32, wl.channels, wl.inner, manifest.highest_bits()),
        };
        Ok(Planned {
            shape: wl.shape.clone(),
            channels: wl.channels,
            inner: wl.inner,
            fp32,
            high,
            act_range,
        })
    }
}

/// Layer `layer`'s weight slot: a float initializer of the weight's shape whose values each
/// session is given in memory ([`External::values`]).
fn weight_slot(layer: usize, shape: &[usize], params: usize) -> pb::TensorProto {
    let mut slot = pb::TensorProto {
        name: Some(slot_name(layer)),
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: Some(pb::tensor_proto::DataType::Float as i32),
        ..Default::default()
    };
    crate::eval::external::mark(&mut slot, SLOT_LOCATION, 0, 4 * params);
    slot
}

/// Layer `layer`'s activation fake-quantizer on tensor `x`, `clip(round(x / scale), lo, hi) *
/// scale`: its three scalar graph inputs, its nodes and the name of its output.
fn activation_quantizer_nodes(
    layer: usize,
    x: String,
) -> (Vec<pb::ValueInfoProto>, Vec<pb::NodeProto>, String) {
    let p = format!("bitplan.act.{layer}");
    let inputs = ["scale", "lo", "hi"]
        .map(|s| pb::ValueInfoProto {
            name: Some(format!("{p}.{s}")),
            r#type: Some(tensor_type(Some(&[]))),
            ..Default::default()
        })
        .into();
    let step = |op: &str, inputs: Vec<String>, out: &str| pb::NodeProto {
        name: Some(format!("{p}.{}", op.to_lowercase())),
        op_type: Some(op.into()),
        input: inputs,
        output: vec![format!("{p}.{out}")],
        ..Default::default()
    };
    let nodes = vec![
        step("Div", vec![x, format!("{p}.scale")], "scaled"),
        step("Round", vec![format!("{p}.scaled")], "rounded"),
        step(
            "Clip",
            vec![format!("{p}.rounded"), format!("{p}.lo"), format!("{p}.hi")],
            "clipped",
        ),
        step(
            "Mul",
            vec![format!("{p}.clipped"), format!("{p}.scale")],
            "out",
        ),
    ];
    (inputs, nodes, format!("{p}.out"))
}

/// Drops initializers no node reads (weights moved to their slots), which would only be
/// serialised again.
fn drop_unread_initializers(g: &mut pb::GraphProto) {
    let used: std::collections::HashSet<&str> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    g.initializer
        .retain(|t| t.name.as_deref().is_some_and(|n| used.contains(n)));
}
/// Runs the unmodified model over the whole set (bound to the model: [`ValidationSet::bind`]) in
/// batches, also returning the named intermediate tensors through `visit(index, tensor)`: the fp32
/// reference and calibration pass. Returns the scored `output` (the graph's first when `None`),
/// `[samples, ...]`.
pub fn probe<B: Backend>(
    backend: &B,
    model: &OnnxModel,
    output: Option<&str>,
    tensors: &[String],
    data: &ValidationSet,
    batch_size: usize,
    mut visit: impl FnMut(usize, &Tensor),
) -> Result<Tensor> {
    model.require_external_data()?;
    let mut proto = model.proto.clone();
    let g = proto.graph.as_mut().expect("checked on load");
    g.output = vec![model.scored_output(output)?.clone()];
    for t in tensors {
        g.output.push(pb::ValueInfoProto {
            name: Some(t.clone()),
            r#type: Some(tensor_type(None)),
            ..Default::default()
        });
    }
    let name = g.output[0].name.clone().unwrap_or_default();
    let mut session = backend.session(
        &proto.encode_to_vec(),
        External::folder(model.folder.clone()),
    )?;
    let n = data.len();
    let (mut out, mut out_shape) = (Vec::new(), Vec::new());
    for start in (0..n).step_by(batch_size.max(1)) {
        let end = (start + batch_size.max(1)).min(n);
        let mut outputs = session.run(&data.feeds(start, end))?;
        let extra = outputs.split_off(1);
        for (k, t) in extra.iter().enumerate() {
            visit(k, t);
        }
        let y = outputs.swap_remove(0);
        if y.shape.first() != Some(&(end - start)) {
            return Err(Error::invalid(
                WHAT,
                "output",
                format!(
                    "the scored output {name:?} must have the batch as its first dimension; a batch of {} gave shape {:?}",
                    end - start,
                    y.shape
                ),
            ));
        }
        if out_shape.is_empty() {
            out_shape = y.shape.clone();
        }
        out.extend_from_slice(&y.data);
    }
    out_shape[0] = n;
    Ok(Tensor {
        shape: out_shape,
        data: out,
    })
}

fn node_is(n: &pb::NodeProto, name: &str) -> bool {
    n.name
        .as_deref()
        .filter(|s| !s.is_empty())
        .or(n.output.first().map(String::as_str))
        == Some(name)
}

/// A float tensor type; with `None` the shape is left for the runtime to infer.
pub(crate) fn tensor_type(shape: Option<&[usize]>) -> pb::TypeProto {
    pb::TypeProto {
        value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
            elem_type: Some(pb::tensor_proto::DataType::Float as i32),
            shape: shape.map(|shape| pb::TensorShapeProto {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_quantizer_picks_unsigned_after_relu_and_symmetric_otherwise() {
        assert_eq!(
            activation_quantizer((0.0, 6.0), 8),
            [6.0 / 255.0, 0.0, 255.0]
        );
        assert_eq!(activation_quantizer((-2.0, 1.0), 4), [2.0 / 7.0, -7.0, 7.0]);
        assert_eq!(activation_quantizer((0.0, 0.0), 4), [1.0, 0.0, 15.0]);
    }
}
