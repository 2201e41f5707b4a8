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

/// A model of these (name, op, inputs, outputs) nodes on graph input `x`, with weight `w`,
/// answering `y`.
fn wired(nodes: &[(&str, &str, &[&str], &[&str])]) -> Vec<u8> {
    let mut model =
        pb::ModelProto::decode(conv_with_weight(vec![1, 1, 1, 1], vec![1.0]).as_slice()).unwrap();
    let g = model.graph.as_mut().unwrap();
    g.node = nodes
        .iter()
        .map(|(name, op, inputs, outputs)| pb::NodeProto {
            name: Some(name.to_string()),
            op_type: Some(op.to_string()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .collect();
    model.encode_to_vec()
}

fn wiring_refusal(nodes: &[(&str, &str, &[&str], &[&str])]) -> Vec<String> {
    match OnnxModel::from_bytes(&wired(nodes)) {
        Ok(_) => panic!("accepted {nodes:?}"),
        Err(e) => e
            .field_errors()
            .iter()
            .map(|f| format!("{} | {}", f.path, f.reason))
            .collect(),
    }
}

#[test]
fn a_well_wired_graph_is_read() {
    let nodes: &[(&str, &str, &[&str], &[&str])] = &[
        ("conv", "Conv", &["x", "w"], &["h"]),
        ("relu", "Relu", &["h", ""], &["y"]),
    ];
    OnnxModel::from_bytes(&wired(nodes)).unwrap();
}

#[test]
fn a_cyclic_graph_is_refused_naming_the_node_and_the_cycle() {
    let errors = wiring_refusal(&[
        ("conv", "Conv", &["x", "w"], &["h"]),
        ("add", "Add", &["h", "y"], &["z"]),
        ("relu", "Relu", &["z"], &["y"]),
    ]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("graph.node[add] | input \"y\" is produced by node \"relu\", which comes after it: the graph has a cycle"), "{errors:?}");
}

#[test]
fn a_missing_initializer_is_refused_naming_the_tensor() {
    let errors = wiring_refusal(&[("conv", "Conv", &["x", "w2"], &["y"])]);
    assert_eq!(
        errors,
        vec!["graph.node[conv] | input \"w2\" is not a graph input, an initializer or any node's output (a missing initializer?)"]
    );
}

#[test]
fn twice_produced_names_and_unproduced_outputs_are_refused() {
    let errors = wiring_refusal(&[
        ("conv", "Conv", &["x", "w"], &["h"]),
        ("relu", "Relu", &["h"], &["h"]),
    ]);
    assert_eq!(
        errors,
        vec![
            "graph.node[relu] | output \"h\" is already produced elsewhere in the graph",
            "graph.output | \"y\" is produced by no node, input or initializer",
        ]
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// A small valid model: Conv, Relu, Gemm over initializers.
    fn sample() -> Vec<u8> {
        let mut model =
            pb::ModelProto::decode(conv_with_weight(vec![2, 1, 1, 1], vec![1.0, -2.0]).as_slice())
                .unwrap();
        let g = model.graph.as_mut().unwrap();
        g.node[0].output = vec!["h".into()];
        g.node.push(pb::NodeProto {
            name: Some("fc".into()),
            op_type: Some("Gemm".into()),
            input: vec!["h".into(), "b".into()],
            output: vec!["y".into()],
            ..Default::default()
        });
        g.initializer.push(pb::TensorProto {
            name: Some("b".into()),
            dims: vec![3, 2],
            data_type: Some(pb::tensor_proto::DataType::Float as i32),
            raw_data: Some((0..6).flat_map(|i| (i as f32).to_le_bytes()).collect()),
            ..Default::default()
        });
        model.encode_to_vec()
    }

    /// Everything reading a model does before it runs: decoding, the wiring check, the weighted
    /// layers and their values.
    fn read(bytes: &[u8]) {
        if let Ok(model) = OnnxModel::from_bytes(bytes) {
            let _ = model.data_inputs();
            if let Ok(layers) = model.weighted_layers() {
                for l in &layers {
                    let _ = model.weight_values(l);
                }
            }
        }
    }

    #[test]
    fn the_sample_reads() {
        let model = OnnxModel::from_bytes(&sample()).unwrap();
        assert_eq!(model.weighted_layers().unwrap().len(), 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Any corruption of a valid model (bytes overwritten, the end cut off) is an error or a
        /// model, never a panic or a runaway allocation.
        #[test]
        fn corrupted_models_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut bytes = sample();
            for (at, value) in edits {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len()));
            }
            read(&bytes);
        }

        /// Arbitrary bytes are an error or a model, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            read(&bytes);
        }
    }
}
