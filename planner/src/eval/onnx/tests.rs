//! Weight shapes refused before they size anything.

use super::*;

/// A one-Conv model whose weight `w` declares `dims` and holds `values`.
fn conv_with_weight(dims: Vec<i64>, values: Vec<f32>) -> Vec<u8> {
    let graph = pb::GraphProto {
        node: vec![pb::NodeProto {
            name: Some("conv".into()),
            op_type: Some("Conv".into()),
            input: vec!["x".into(), "w".into()],
            output: vec!["y".into()],
            ..Default::default()
        }],
        initializer: vec![pb::TensorProto {
            name: Some("w".into()),
            dims,
            data_type: Some(pb::tensor_proto::DataType::Float as i32),
            float_data: values,
            ..Default::default()
        }],
        input: vec![pb::ValueInfoProto {
            name: Some("x".into()),
            ..Default::default()
        }],
        output: vec![pb::ValueInfoProto {
            name: Some("y".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    pb::ModelProto {
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

fn refusal(dims: Vec<i64>) -> String {
    let model = OnnxModel::from_bytes(&conv_with_weight(dims, Vec::new())).unwrap();
    model.weighted_layers().unwrap_err().to_string()
}

#[test]
fn a_weight_shape_that_would_size_arrays_from_nothing_is_refused() {
    // 2^40 output channels and no values: per-channel arrays would be sized from the dims.
    let e = refusal(vec![1 << 40, 0, 1, 1]);
    assert!(
        e.contains("graph.node[conv]") && e.contains("at least one value"),
        "{e}"
    );
    assert!(refusal(vec![4, -1, 3, 3]).contains("at least one value"));
    let e = refusal(vec![1 << 32, 1 << 32, 1, 1]);
    assert!(e.contains("more values than can be addressed"), "{e}");
    // A consistent weight is listed.
    let model = OnnxModel::from_bytes(&conv_with_weight(vec![2, 1, 1, 1], vec![1.0, -1.0]));
    let layers = model.unwrap().weighted_layers().unwrap();
    assert_eq!((layers[0].channels, layers[0].inner), (2, 1));
}
