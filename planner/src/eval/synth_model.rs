//! A generated ONNX model of a shape bitplan must handle beyond image classifiers: a text encoder
//! with two integer inputs and an embedding output, with a calibration set to go with it. Seeded,
//! so tests and examples get the same model everywhere.
//!
//! Graph (opset 13): `input_ids` int64 `[N, T]` → Gather from an embedding table (not planned) →
//! MatMul `proj` `[D, H]` → Relu → times `attention_mask` (int64 `[N, T]`, cast, read only here,
//! after the first planned layer) → sum over tokens → outputs `pooled` `[N, H]` (first) and, by
//! MatMul `head` `[H, E]`, `embedding` `[N, E]` (the one to score); a third output, `length`
//! (int64 `[N]`), counts each sample's tokens straight from the mask.

use crate::eval::npz::{to_npz, Array, Values};
use crate::eval::onnx::{int_attribute, pb};
use crate::problem::synth::Rng;
use prost::Message;

/// Vocabulary size, tokens per sample, and the embedding, hidden and output widths.
pub const VOCAB: usize = 50;
pub const TOKENS: usize = 6;
pub const EMBED: usize = 16;
pub const HIDDEN: usize = 24;
pub const OUT: usize = 8;

/// A generated model and a calibration set for it.
#[derive(Debug, Clone)]
pub struct TextEncoder {
    /// The serialized ONNX model.
    pub model: Vec<u8>,
    /// `.npz` with `input_ids` and `attention_mask` (int64), `samples` rows.
    pub npz: Vec<u8>,
}

fn float_tensor(name: &str, dims: &[usize], rng: &mut Rng, scale: f64) -> pb::TensorProto {
    let n: usize = dims.iter().product();
    pb::TensorProto {
        name: Some(name.into()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(pb::tensor_proto::DataType::Float as i32),
        raw_data: Some(
            (0..n)
                .flat_map(|_| (rng.range(-scale, scale) as f32).to_le_bytes())
                .collect(),
        ),
        ..Default::default()
    }
}

fn int_tensor(name: &str, values: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        name: Some(name.into()),
        dims: vec![values.len() as i64],
        data_type: Some(pb::tensor_proto::DataType::Int64 as i32),
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
    pb::NodeProto {
        op_type: Some(op.into()),
        name: Some(output.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

fn value(
    name: &str,
    elem: pb::tensor_proto::DataType,
    dims: &[Option<usize>],
) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    pb::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: Some(elem as i32),
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                Some(v) => Value::DimValue(*v as i64),
                                None => Value::DimParam("batch".into()),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The text encoder for `seed`, with a calibration set of `samples` token sequences (each a random
/// length of 1 to [`TOKENS`] tokens, padded with id 0 and mask 0).
pub fn text_encoder(seed: u64, samples: usize) -> TextEncoder {
    let mut rng = Rng::new(seed);
    let model = pb::ModelProto {
        ir_version: Some(8),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        producer_name: Some("bitplan synth_model".into()),
        graph: Some(encoder_graph(&mut rng)),
        ..Default::default()
    };
    TextEncoder {
        model: model.encode_to_vec(),
        npz: token_set(&mut rng, samples),
    }
}

/// The encoder's graph, its weights drawn from `rng`.
fn encoder_graph(rng: &mut Rng) -> pb::GraphProto {
    use pb::tensor_proto::DataType as D;
    let mut cast = node("Cast", &["attention_mask"], "mask_f");
    cast.attribute.push(int_attribute("to", D::Float as i64));
    let mut pooled = node("ReduceSum", &["masked", "tokens_axis"], "pooled");
    pooled.attribute.push(int_attribute("keepdims", 0));
    let mut length = node("ReduceSum", &["attention_mask", "tokens_axis"], "length");
    length.attribute = pooled.attribute.clone();
    pb::GraphProto {
        name: Some("text_encoder".into()),
        node: vec![
            node("Gather", &["embed.weight", "input_ids"], "embedded"),
            node("MatMul", &["embedded", "proj.weight"], "projected"),
            node("Relu", &["projected"], "hidden"),
            cast,
            node("Unsqueeze", &["mask_f", "feature_axis"], "mask_3d"),
            node("Mul", &["hidden", "mask_3d"], "masked"),
            pooled,
            node("MatMul", &["pooled", "head.weight"], "embedding"),
            length,
        ],
        initializer: vec![
            float_tensor("embed.weight", &[VOCAB, EMBED], rng, 1.0),
            float_tensor("proj.weight", &[EMBED, HIDDEN], rng, 0.5),
            float_tensor("head.weight", &[HIDDEN, OUT], rng, 0.3),
            int_tensor("tokens_axis", &[1]),
            int_tensor("feature_axis", &[2]),
        ],
        input: vec![
            value("input_ids", D::Int64, &[None, Some(TOKENS)]),
            value("attention_mask", D::Int64, &[None, Some(TOKENS)]),
        ],
        output: vec![
            value("pooled", D::Float, &[None, Some(HIDDEN)]),
            value("embedding", D::Float, &[None, Some(OUT)]),
            value("length", D::Int64, &[None]),
        ],
        ..Default::default()
    }
}

/// `samples` padded token sequences as `.npz` bytes (`input_ids`, `attention_mask`).
fn token_set(rng: &mut Rng, samples: usize) -> Vec<u8> {
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        let len = 1 + rng.below(TOKENS as u64) as usize;
        for t in 0..TOKENS {
            let real = t < len;
            ids.push(if real {
                1 + rng.below(VOCAB as u64 - 1) as i64
            } else {
                0
            });
            mask.push(i64::from(real));
        }
    }
    let array = |values| Array {
        shape: vec![samples, TOKENS],
        values: Values::Int(values),
    };
    to_npz(&[("input_ids", &array(ids)), ("attention_mask", &array(mask))])
}
