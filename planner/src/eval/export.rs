//! Deployable export: the candidate as a standard QDQ ONNX model. Each planned layer's weight
//! becomes an int8 initializer holding its `b`-bit Double Rounding integers, dequantized by a
//! DequantizeLinear with the per-channel scales `s_h * 2^(h-b)` on the op's output-channel axis.
//! Plain ONNX Runtime runs it, and its outputs equal the fake-quantized evaluation's.

use crate::error::{Error, FieldError, Result};
use crate::eval::onnx::{pb, OnnxModel};
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
    let links = model.link_layers(manifest)?;
    // The weights it keeps go with it: the source's external data is read in, and written out
    // again (inline, or to a blob of its own by `export_qdq_external`).
    let mut source = model.clone();
    source.inline_external_data()?;
    let mut proto = source.proto;
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
        let high = model.high_bit_weights(wl, manifest.highest_bits())?;
        let (q, mult) = high.lower(b, manifest.rounding);
        let base = format!("{}.bitplan_w{b}", wl.weight);
        let dims: Vec<i64> = wl.shape.iter().map(|&d| d as i64).collect();
        let g = proto.graph.as_mut().expect("checked on load");
        let axis = wl.axis as i64;
        // Per-channel scales in the order of the channel axis.
        let scales: Vec<u8> = high
            .scales
            .iter()
            .flat_map(|s| (s * mult).to_le_bytes())
            .collect();
        g.initializer.push(tensor(
            format!("{base}.q"),
            dims,
            pb::tensor_proto::DataType::Int8,
            q.iter().map(|&v| v as i8 as u8).collect(),
        ));
        g.initializer.push(tensor(
            format!("{base}.scale"),
            vec![wl.channels as i64],
            pb::tensor_proto::DataType::Float,
            scales,
        ));
        g.initializer.push(tensor(
            format!("{base}.zero_point"),
            vec![wl.channels as i64],
            pb::tensor_proto::DataType::Int8,
            vec![0; wl.channels],
        ));
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
        new_nodes.push(pb::NodeProto {
            name: Some(format!("{base}.DequantizeLinear")),
            op_type: Some("DequantizeLinear".into()),
            input: vec![
                format!("{base}.q"),
                format!("{base}.scale"),
                format!("{base}.zero_point"),
            ],
            output: vec![dq_out.clone()],
            attribute: vec![pb::AttributeProto {
                name: Some("axis".into()),
                i: Some(axis),
                r#type: Some(pb::attribute_proto::AttributeType::Int as i32),
                ..Default::default()
            }],
            ..Default::default()
        });
        if channels_last {
            let shape: Vec<u8> = wl
                .shape
                .iter()
                .flat_map(|&d| (d as i64).to_le_bytes())
                .collect();
            g.initializer.push(tensor(
                format!("{base}.shape"),
                vec![wl.shape.len() as i64],
                pb::tensor_proto::DataType::Int64,
                shape,
            ));
            new_nodes.push(pb::NodeProto {
                name: Some(format!("{base}.Reshape")),
                op_type: Some("Reshape".into()),
                input: vec![dq_out, format!("{base}.shape")],
                output: vec![base.clone()],
                ..Default::default()
            });
        }
        for n in g.node.iter_mut() {
            if n.input.get(1) == Some(&wl.weight)
                && matches!(
                    n.op_type.as_deref(),
                    Some("Conv" | "ConvTranspose" | "Gemm" | "MatMul")
                )
            {
                n.input[1] = base.clone();
            }
        }
    }
    Error::check(WHAT, errors)?;
    let g = proto.graph.as_mut().expect("checked on load");
    // Dequantization first keeps the node list topologically sorted.
    new_nodes.append(&mut g.node);
    g.node = new_nodes;
    // Drop fp32 weights nothing reads any more.
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
    Ok(proto)
}
