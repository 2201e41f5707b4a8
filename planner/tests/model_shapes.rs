//! Weights in the shapes real models store them: int8 behind DequantizeLinear (Conv), a Constant
//! node laid out [in, out] (MatMul), and Gemm without transB. Ingest, evaluation and QDQ export
//! must agree on every layout.

mod common;
use common::{max_rel_diff, ort_lib};
use planner::eval::npz::ValidationSet;
use planner::eval::onnx::{int_attribute, pb, OnnxModel, WeightSource};
use planner::eval::ort_backend::OrtBackend;
use planner::eval::{Backend, EvalOptions, Evaluator, Session};
use planner::problem::synth::Rng;
use prost::Message;

fn tensor(
    name: &str,
    dims: &[i64],
    dt: pb::tensor_proto::DataType,
    raw: Vec<u8>,
) -> pb::TensorProto {
    pb::TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(dt as i32),
        raw_data: Some(raw),
        ..Default::default()
    }
}

fn floats(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|_| (rng.range(-1.0, 1.0) as f32).to_le_bytes())
        .collect()
}

fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    output: &str,
    attrs: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute: attrs,
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = dims
        .iter()
        .map(|&d| Dimension {
            value: Some(if d < 0 {
                Value::DimParam("N".into())
            } else {
                Value::DimValue(d)
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// x [N,1,4,4] -> Conv(int8 W via DequantizeLinear, pad 1) -> ConvTranspose(W [2,3,2,2]) -> Relu
/// -> Flatten -> MatMul(Constant [75,8]) -> Gemm(B [8,5], transB=0)
fn model() -> Vec<u8> {
    use pb::tensor_proto::DataType as D;
    let mut rng = Rng::new(3);
    let q: Vec<u8> = (0..18)
        .map(|_| (rng.below(255) as i64 - 127) as i8 as u8)
        .collect();
    let scales: Vec<u8> = [0.01f32, 0.02]
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    let constant = pb::NodeProto {
        op_type: Some("Constant".into()),
        name: Some("mm_const".into()),
        output: vec!["mm.w".into()],
        attribute: vec![pb::AttributeProto {
            name: Some("value".into()),
            t: Some(tensor("mm.w", &[75, 8], D::Float, floats(&mut rng, 600))),
            r#type: Some(pb::attribute_proto::AttributeType::Tensor as i32),
            ..Default::default()
        }],
        ..Default::default()
    };
    let graph = pb::GraphProto {
        name: Some("shapes".into()),
        node: vec![
            node(
                "DequantizeLinear",
                "conv_dq",
                &["conv.q", "conv.scale", "conv.zp"],
                "conv.w",
                vec![int_attribute("axis", 0)],
            ),
            node(
                "Conv",
                "conv",
                &["x", "conv.w"],
                "c",
                vec![pb::AttributeProto {
                    name: Some("pads".into()),
                    ints: vec![1, 1, 1, 1],
                    r#type: Some(pb::attribute_proto::AttributeType::Ints as i32),
                    ..Default::default()
                }],
            ),
            node("ConvTranspose", "up", &["c", "up.w"], "u", vec![]),
            node("Relu", "relu", &["u"], "r", vec![]),
            node("Flatten", "flat", &["r"], "f", vec![]),
            constant,
            node("MatMul", "mm", &["f", "mm.w"], "m", vec![]),
            node(
                "Gemm",
                "gemm",
                &["m", "gemm.b", "gemm.c"],
                "y",
                vec![int_attribute("transB", 0)],
            ),
        ],
        initializer: vec![
            tensor("conv.q", &[2, 1, 3, 3], D::Int8, q),
            tensor("conv.scale", &[2], D::Float, scales),
            tensor("conv.zp", &[2], D::Int8, vec![0, 0]),
            tensor("up.w", &[2, 3, 2, 2], D::Float, floats(&mut rng, 24)),
            tensor("gemm.b", &[8, 5], D::Float, floats(&mut rng, 40)),
            tensor("gemm.c", &[5], D::Float, floats(&mut rng, 5)),
        ],
        input: vec![value_info("x", &[-1, 1, 4, 4])],
        output: vec![value_info("y", &[-1, 5])],
        ..Default::default()
    };
    pb::ModelProto {
        ir_version: Some(8),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn every_weight_layout_is_ingested_evaluated_and_exported_consistently() {
    let bytes = model();
    let model = OnnxModel::from_bytes(&bytes).unwrap();
    let layers = model.weighted_layers().unwrap();
    let summary: Vec<(&str, usize, usize)> = layers
        .iter()
        .map(|l| (l.op_type.as_str(), l.channels, l.inner))
        .collect();
    assert_eq!(
        summary,
        [
            ("Conv", 2, 9),
            ("ConvTranspose", 3, 4),
            ("MatMul", 8, 1),
            ("Gemm", 5, 1)
        ]
    );
    assert!(matches!(layers[0].source, WeightSource::Dequantized { .. }));
    assert_eq!(layers[2].source, WeightSource::Constant);
    // int8 weights are taken as they are: dequantized values are exact multiples of the scale
    let w = model.weight_values(&layers[0]).unwrap();
    assert!(w[..9]
        .iter()
        .all(|v| ((v / 0.01).round() * 0.01 - v).abs() < 1e-6));
    let store = model.high_bit_weights(&layers[0], 8).unwrap();
    assert_eq!(
        store.scales,
        vec![0.01, 0.02],
        "the int8 model's own scales are the 8-bit store"
    );
    assert_eq!(
        store.dequantize(8, planner::Rounding::HalfAwayFromZero),
        w,
        "8 bits reproduces the stored weights exactly"
    );
    // At another highest bit-width the stored integers cannot serve; the weights are re-quantized.
    assert_eq!(model.high_bit_weights(&layers[0], 6).unwrap().bits, 6);

    let backend = OrtBackend::new(&ort_lib(), 1).unwrap();
    let traces = serde_json::json!({"conv": 1.0, "up": 0.7, "mm": 2.0, "gemm": 0.5});
    let source = planner::eval::ingest::Source {
        model: &model,
        name: "shapes",
        traces: Some(&traces),
        sample: &ValidationSet::single(vec![0.0; 16], vec![1, 1, 4, 4], None),
        output: None,
        bits: &[8, 6, 4, 3, 2],
    };
    let manifest = planner::eval::ingest::derive_manifest(&backend, &source).unwrap();
    let macs: Vec<u64> = manifest.layers.iter().map(|l| l.macs).collect();
    // ConvTranspose: each of the 2*4*4 inputs meets its 3*2*2 weights.
    assert_eq!(macs, [2 * 4 * 4 * 9, 2 * 4 * 4 * 12, 8 * 75, 5 * 8]);
    let names: Vec<&str> = manifest.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["conv", "up", "mm", "gemm"]);

    let mut rng = Rng::new(9);
    let n = 64;
    let data = ValidationSet::single(
        (0..n * 16).map(|_| rng.range(0.0, 1.0) as f32).collect(),
        vec![n, 1, 4, 4],
        Some((0..n).map(|_| rng.below(5) as i64).collect()),
    );
    let mut ev = Evaluator::new(
        &backend,
        &model,
        &manifest,
        data.clone(),
        EvalOptions {
            batch_size: 16,
            ..EvalOptions::default()
        },
    )
    .unwrap();
    for bits in [[8u8, 8, 8, 8], [4, 3, 6, 2], [2, 6, 4, 3]] {
        let m = ev.evaluate(&bits).unwrap();
        assert!(m.sqnr_db.is_finite());
        let qdq = planner::eval::export::export_qdq(&model, &manifest, &bits).unwrap();
        let want = ev.logits(&bits).unwrap();
        let got = backend
            .session(&qdq, Default::default())
            .unwrap()
            .run(&data.bind(&model).unwrap().feeds(0, data.len()))
            .unwrap()
            .swap_remove(0);
        let worst = max_rel_diff(&got.data, &want.data);
        assert!(
            worst <= 1e-5,
            "{bits:?}: QDQ differs from fake-quant by {worst}"
        );
    }
}

#[test]
fn macs_are_counted_at_the_data_shape_and_dynamic_dims_without_data_are_warned_of() {
    let mut proto = pb::ModelProto::decode(model().as_slice()).unwrap();
    proto.graph.as_mut().unwrap().input[0] = value_info("x", &[-1, 1, -1, -1]);
    let model = OnnxModel {
        proto,
        folder: None,
    };
    let shape = |sample: &ValidationSet| sample.inputs[0].shape.clone();
    let (sample, warnings) = planner::eval::ingest::mac_sample(&model, None, None).unwrap();
    assert_eq!(shape(&sample), [1, 1, 1, 1]);
    let paths: Vec<&str> = warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        paths,
        ["input \"x\" dimension 2", "input \"x\" dimension 3"]
    );
    assert!(warnings[0].message.contains("counted as 1"));

    let data = ValidationSet::single(vec![0.0; 3 * 16], vec![3, 1, 4, 4], None);
    let (sample, warnings) = planner::eval::ingest::mac_sample(&model, None, Some(&data)).unwrap();
    assert_eq!((shape(&sample), warnings.len()), (vec![1, 1, 4, 4], 0));
    let (sample, _) =
        planner::eval::ingest::mac_sample(&model, Some(&[2, 1, 4, 4]), Some(&data)).unwrap();
    assert_eq!(shape(&sample), [2, 1, 4, 4]);
    assert!(planner::eval::ingest::mac_sample(&model, Some(&[1, 0]), None).is_err());
}
