//! The digits fixture (a real trained CNN, testdata/digits-cnn): ONNX ingest and Double Rounding
//! reproduce the squared weight errors the fixture measured in NumPy.

use planner::eval::ingest::measure_perturbations;
use planner::eval::onnx::OnnxModel;
use planner::eval::quant::{direct_squared_error, HighBitWeights};
use planner::{Manifest, Rounding};
use serde_json::Value;
use std::path::PathBuf;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/digits-cnn")
        .join(name)
}

fn fixture() -> (OnnxModel, Value) {
    let model =
        OnnxModel::from_bytes(&std::fs::read(testdata("digits_cnn.onnx")).unwrap()).unwrap();
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(testdata("digits_cnn_layers.json")).unwrap())
            .unwrap();
    (model, meta)
}

fn assert_close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-5 * want.abs(),
        "{what}: got {got}, fixture {want} (rel {:.2e})",
        (got - want) / want
    );
}

#[test]
fn finds_the_four_weighted_layers_with_their_layouts() {
    let (model, meta) = fixture();
    let layers = model.weighted_layers().unwrap();
    let names: Vec<(&str, &str, &str)> = layers
        .iter()
        .map(|l| (l.node.as_str(), l.op_type.as_str(), l.weight.as_str()))
        .collect();
    let want: Vec<(&str, &str, &str)> = meta["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["onnx_node"].as_str().unwrap(),
                l["op_type"].as_str().unwrap(),
                l["weight_initializer"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(names, want);
    for (l, m) in layers.iter().zip(meta["layers"].as_array().unwrap()) {
        assert_eq!(l.params() as u64, m["params"].as_u64().unwrap());
        assert_eq!(
            l.channels as u64,
            m["weight_shape"][0].as_u64().unwrap(),
            "{}: out channels (Gemm has transB=1)",
            l.node
        );
    }
}

#[test]
fn double_rounding_and_direct_errors_match_the_fixture() {
    let (model, meta) = fixture();
    for (l, m) in model
        .weighted_layers()
        .unwrap()
        .iter()
        .zip(meta["layers"].as_array().unwrap())
    {
        let w = model.weight_values(l).unwrap();
        let hb = HighBitWeights::quantize(&w, l.channels, l.inner, 8);
        for b in [8u8, 6, 5, 4, 3, 2] {
            let key = b.to_string();
            assert_close(
                hb.squared_error(&w, b, Rounding::HalfAwayFromZero),
                m["delta_w_sq"]["double_rounding_sym"][&key]
                    .as_f64()
                    .unwrap(),
                &format!("{} DR {b} bits", l.node),
            );
            assert_close(
                direct_squared_error(&w, l.channels, l.inner, b),
                m["delta_w_sq"]["direct"][&key].as_f64().unwrap(),
                &format!("{} direct {b} bits", l.node),
            );
        }
    }
}

#[test]
fn measured_perturbations_fill_the_manifest() {
    let (model, meta) = fixture();
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/digits-cnn.manifest.json"),
    )
    .unwrap();
    let mut doc: Value = serde_json::from_str(&text).unwrap();
    for l in doc["layers"].as_array_mut().unwrap() {
        l.as_object_mut().unwrap().remove("perturbation");
    }
    let manifest = Manifest::from_value(doc.clone()).unwrap();
    assert_eq!(manifest.proxy_layers().len(), 4);
    let measured = measure_perturbations(&model, &manifest).unwrap();
    assert!(measured.proxy_layers().is_empty());
    for (l, m) in measured
        .layers
        .iter()
        .zip(meta["layers"].as_array().unwrap())
    {
        for (b, e) in l.perturbation.as_ref().unwrap() {
            assert_close(
                *e,
                m["delta_w_sq"]["double_rounding_sym"][b.to_string()]
                    .as_f64()
                    .unwrap(),
                &l.name,
            );
        }
    }

    // A layer linked to a tensor the model does not have is named in the error.
    doc["layers"][2]["weight"] = Value::from("fc9.weight");
    let bad = Manifest::from_value(doc).unwrap();
    let e = measure_perturbations(&model, &bad).unwrap_err();
    assert_eq!(e.field_errors()[0].path, "layers[2].weight");
    assert!(e.to_string().contains("\"fc9.weight\""), "{e}");
}

#[test]
fn truncated_or_foreign_bytes_are_clear_errors() {
    let bytes = std::fs::read(testdata("digits_cnn.onnx")).unwrap();
    for (what, b) in [
        ("truncated", &bytes[..bytes.len() / 2]),
        (
            "npz",
            &std::fs::read(testdata("digits_val.npz")).unwrap()[..],
        ),
        ("empty", &[][..]),
    ] {
        let e = OnnxModel::from_bytes(b).unwrap_err().to_string();
        assert!(e.contains("ONNX model is invalid"), "{what}: {e}");
    }
}
