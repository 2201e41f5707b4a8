//! Deployable export: the candidate as a standard QDQ ONNX model. Each planned layer's weight
//! becomes an int8 initializer holding its `b`-bit Double Rounding integers, dequantized by a
//! DequantizeLinear with the per-channel scales `s_h * 2^(h-b)` on the op's output-channel axis.
//! Plain ONNX Runtime runs it, and its outputs equal the fake-quantized evaluation's.
//!
//! It owns writing a plan as a model; it reads the model and the manifest and measures nothing.

use crate::error::{Error, FieldError, Result};
use crate::eval::onnx::{int_attribute, pb, OnnxModel, WeightedLayer};
use crate::problem::manifest::Manifest;
use prost::Message;

const WHAT: &str = "export";

fn tensor(
    name: String,
    dims: Vec<i64>,
    data_type: pb::tensor_proto::DataType,
    raw: Vec<u8>,
) -> pb::TensorProto {
    pb::TensorProto {
        name: Some(name),
        dims,
        data_type: Some(data_type as i32),
        raw_data: Some(raw),
        ..Default::default()
    }
}

/// The candidate (a bit-width per manifest layer) as serialized QDQ ONNX bytes.
pub fn export_qdq(model: &OnnxModel, manifest: &Manifest, bits: &[u8]) -> Result<Vec<u8>> {
    Ok(export_qdq_model(model, manifest, bits)?.encode_to_vec())
}

/// The candidate as QDQ ONNX bytes whose weights of 1 KiB or more are in a second blob, to be
/// written beside the model under the file name `location` (how models over 2 GB are stored).
pub fn export_qdq_external(
    model: &OnnxModel,
    manifest: &Manifest,
    bits: &[u8],
    location: &str,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut proto = export_qdq_model(model, manifest, bits)?;
    let blob = crate::eval::external::externalize(&mut proto, location);
    Ok((proto.encode_to_vec(), blob))
}

/// The candidate as a QDQ ONNX model.
fn export_qdq_model(model: &OnnxModel, manifest: &Manifest, bits: &[u8]) -> Result<pb::ModelProto> {
    check_opset(model)?;
    let links = model.link_layers(manifest)?;
    // The weights it keeps go with it: the source's external data is read in, and written out
    // again (inline, or to a blob of its own by `export_qdq_external`).
    let mut source = model.clone();
    source.inline_external_data()?;
    let mut proto = source.proto;
    let g = proto.graph.as_mut().expect("checked on load");
    let mut errors = Vec::new();
    let mut new_nodes = Vec::new();
    for ((layer, &b), wl) in manifest.layers.iter().zip(bits).zip(&links) {
        let Some(wl) = wl else { continue };
        if b > 8 {
            errors.push(FieldError::new(
                layer.name.clone(),
                format!("{b} bits does not fit the int8 QDQ export"),
            ));
            continue;
        }
        let dq = Dequantized::new(model, manifest, wl, b)?;
        g.initializer.extend(dq.initializers);
        new_nodes.extend(dq.nodes);
        for n in g.node.iter_mut() {
            if n.input.get(1) == Some(&wl.weight)
                && matches!(
                    n.op_type.as_deref(),
                    Some("Conv" | "ConvTranspose" | "Gemm" | "MatMul")
                )
            {
                n.input[1] = dq.output.clone();
            }
        }
    }
    Error::check(WHAT, errors)?;
    // Dequantization first keeps the node list topologically sorted.
    new_nodes.append(&mut g.node);
    g.node = new_nodes;
    drop_unread(g);
    Ok(proto)
}

/// Per-channel DequantizeLinear needs opset 13 or later.
fn check_opset(model: &OnnxModel) -> Result<()> {
    let opset = model
        .proto
        .opset_import
        .iter()
        .find(|o| o.domain.as_deref().unwrap_or("").is_empty())
        .and_then(|o| o.version)
        .unwrap_or(0);
    if opset < 13 {
        return Err(Error::invalid(WHAT, "model.opset_import", format!("per-channel DequantizeLinear needs opset 13 or later; the model uses opset {opset}")));
    }
    Ok(())
}

/// One layer's weight at `b` bits as QDQ: its int8 integers, scales and zero points, the nodes
/// that dequantize them, and the tensor the op reads instead of its fp32 weight.
struct Dequantized {
    initializers: Vec<pb::TensorProto>,
    nodes: Vec<pb::NodeProto>,
    output: String,
}

impl Dequantized {
    fn new(model: &OnnxModel, manifest: &Manifest, wl: &WeightedLayer, b: u8) -> Result<Self> {
        let high = model.high_bit_weights(wl, manifest.highest_bits())?;
        let (q, mult) = high.lower(b, manifest.rounding);
        let base = format!("{}.bitplan_w{b}", wl.weight);
        let axis = wl.axis as i64;
        // Per-channel scales in the order of the channel axis.
        let scales: Vec<u8> = high
            .scales
            .iter()
            .flat_map(|s| (s * mult).to_le_bytes())
            .collect();
        let channels = vec![wl.channels as i64];
        let mut initializers = vec![
            tensor(
                format!("{base}.q"),
                wl.shape.iter().map(|&d| d as i64).collect(),
                pb::tensor_proto::DataType::Int8,
                q.iter().map(|&v| v as i8 as u8).collect(),
            ),
            tensor(
                format!("{base}.scale"),
                channels.clone(),
                pb::tensor_proto::DataType::Float,
                scales,
            ),
            tensor(
                format!("{base}.zero_point"),
                channels,
                pb::tensor_proto::DataType::Int8,
                vec![0; wl.channels],
            ),
        ];
        // ONNX Runtime (extended optimizations and up) fuses DequantizeLinear -> MatMul, and
        // -> Gemm with the weight's channels last, into MatMulIntegerToFloat, which quantizes the
        // activations dynamically and no longer computes the model as written (measured: 0.025
        // max abs error on a 32x8 layer). A shape-preserving Reshape between them blocks the
        // fusion and keeps the outputs equal to the fake-quantized evaluation.
        let channels_last =
            axis == wl.shape.len() as i64 - 1 && matches!(wl.op_type.as_str(), "MatMul" | "Gemm");
        let dq_out = if channels_last {
            format!("{base}.dq")
        } else {
            base.clone()
        };
        let mut nodes = vec![dequantize_linear(&base, &dq_out, axis)];
        if channels_last {
            let shape: Vec<u8> = wl
                .shape
                .iter()
                .flat_map(|&d| (d as i64).to_le_bytes())
                .collect();
            initializers.push(tensor(
                format!("{base}.shape"),
                vec![wl.shape.len() as i64],
                pb::tensor_proto::DataType::Int64,
                shape,
            ));
            nodes.push(pb::NodeProto {
                name: Some(format!("{base}.Reshape")),
                op_type: Some("Reshape".into()),
                input: vec![dq_out, format!("{base}.shape")],
                output: vec![base.clone()],
                ..Default::default()
            });
        }
        Ok(Dequantized {
            initializers,
            nodes,
            output: base,
        })
    }
}

/// `DequantizeLinear(base.q, base.scale, base.zero_point)` on `axis`, into `output`.
fn dequantize_linear(base: &str, output: &str, axis: i64) -> pb::NodeProto {
    pb::NodeProto {
        name: Some(format!("{base}.DequantizeLinear")),
        op_type: Some("DequantizeLinear".into()),
        input: vec![
            format!("{base}.q"),
            format!("{base}.scale"),
            format!("{base}.zero_point"),
        ],
        output: vec![output.to_string()],
        attribute: vec![int_attribute("axis", axis)],
        ..Default::default()
    }
}

/// Drops fp32 weights (and graph inputs) nothing reads any more.
fn drop_unread(g: &mut pb::GraphProto) {
    let used: std::collections::HashSet<String> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(g.output.iter().filter_map(|o| o.name.clone()))
        .collect();
    g.initializer
        .retain(|t| t.name.as_ref().is_none_or(|n| used.contains(n)));
    g.input
        .retain(|i| i.name.as_ref().is_none_or(|n| used.contains(n)));
}
