//! `bitplan manifest --data`: measured sensitivity from a model and a calibration set, no traces
//! needed, and plans that say they used it.

use crate::{bitplan, evaluate, stderr, stdout};
use serde_json::Value;

const MODEL: &str = "testdata/digits-cnn/digits_cnn.onnx";
const DATA: &str = "testdata/digits-cnn/digits_val.npz";

#[test]
fn a_manifest_measured_from_data_plans_on_its_sensitivity() {
    let out = bitplan(&["manifest", MODEL, "--data", DATA, "--bits", "8,4,2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sensitivity: 12/12"),
        "{}",
        stderr(&out)
    );
    let m: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(m["sensitivity_metric"], "kl");
    for l in m["layers"].as_array().unwrap() {
        assert!(l.get("hessian_trace").is_none(), "{l}");
        let s = l["sensitivity"].as_object().unwrap();
        assert_eq!(s.keys().collect::<Vec<_>>(), ["2", "4", "8"], "{l}");
        assert!(s["2"].as_f64().unwrap() > s["8"].as_f64().unwrap(), "{l}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("measured.json");
    std::fs::write(&path, stdout(&out)).unwrap();
    let plan = bitplan(&[
        "plan",
        path.to_str().unwrap(),
        "--max-avg-bits",
        "4",
        "--format",
        "json",
    ]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    let p: Value = serde_json::from_str(&stdout(&plan)).unwrap();
    assert_eq!(p["objective"], "sensitivity_kl");
    assert_eq!(p["proxy_layers"].as_array().unwrap().len(), 0);
    let table = bitplan(&["plan", path.to_str().unwrap(), "--max-avg-bits", "4"]);
    assert!(
        stdout(&table).contains("objective: measured sensitivity kl"),
        "{}",
        stdout(&table)
    );

    // With traces too: kept for reference, the objective stays measured; mse on request.
    let traces = dir.path().join("traces.json");
    std::fs::write(
        &traces,
        r#"{"conv1": -0.2, "conv2": 0.3, "fc1": 2.5, "fc2": 9.5}"#,
    )
    .unwrap();
    let out = bitplan(&[
        "manifest",
        MODEL,
        "--data",
        DATA,
        "--traces",
        traces.to_str().unwrap(),
        "--metric",
        "mse",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(m["sensitivity_metric"], "mse");
    assert_eq!(m["layers"][0]["hessian_trace"], -0.2);
}

#[test]
fn a_manifest_without_traces_or_data_is_structure_only_and_refused_by_the_planner() {
    let out = bitplan(&["manifest", MODEL]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: layers: no layer has hessian_trace or sensitivity"),
        "{}",
        stderr(&out)
    );
    let m: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(m["layers"].as_array().unwrap().len(), 4, "{m}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("structure.json");
    std::fs::write(&path, stdout(&out)).unwrap();
    let plan = bitplan(&["plan", path.to_str().unwrap(), "--max-avg-bits", "4"]);
    assert_eq!(plan.status.code(), Some(2), "{}", stderr(&plan));
    assert!(
        stderr(&plan).contains("layers: no layer has hessian_trace or sensitivity"),
        "{}",
        stderr(&plan)
    );
}

/// A generated text encoder: two int64 inputs, two outputs, the second an embedding.
#[test]
fn a_two_input_model_is_measured_and_evaluated_on_the_output_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let generated = planner::eval::synth_model::text_encoder(5, 24);
    let model = dir.path().join("text.onnx");
    let data = dir.path().join("calib.npz");
    std::fs::write(&model, &generated.model).unwrap();
    std::fs::write(&data, &generated.npz).unwrap();
    let (model, data) = (model.to_str().unwrap(), data.to_str().unwrap());

    // Without --output the first output is scored, and said so.
    let out = bitplan(&["manifest", model, "--bits", "8,4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "output: the model has 3 outputs (\"pooled\", \"embedding\", \"length\"); the first is scored"
        ),
        "{}",
        stderr(&out)
    );
    // Measured too, it still says so.
    let out = bitplan(&[
        "manifest", model, "--data", data, "--bits", "8,4", "--metric", "mse",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("output: the model has 3 outputs"),
        "{}",
        stderr(&out)
    );
    let out = bitplan(&["manifest", model, "--data", data, "--output", "logits"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(
            "output: the model has no output \"logits\" (its outputs: \"pooled\", \"embedding\", \"length\")"
        ),
        "{}",
        stderr(&out)
    );

    let out = bitplan(&[
        "manifest",
        model,
        "--data",
        data,
        "--output",
        "embedding",
        "--metric",
        "mse",
        "--bits",
        "8,4,2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    let m: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(m["output"], "embedding");
    assert_eq!(m["sensitivity_metric"], "mse");
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for l in layers {
        let s = &l["sensitivity"];
        assert!(s["2"].as_f64().unwrap() > s["8"].as_f64().unwrap(), "{l}");
    }
    let manifest = dir.path().join("text.manifest.json");
    std::fs::write(&manifest, stdout(&out)).unwrap();
    let e = evaluate(
        manifest.to_str().unwrap(),
        model,
        data,
        r#"{"proj": 4, "head": 2}"#,
    );
    let cosine = e["cosine_mean"].as_f64().unwrap();
    assert!(cosine > 0.5 && cosine < 1.0, "{e}");
    assert!(e["rel_l2"].as_f64().unwrap() > 0.0, "{e}");
    assert_eq!(e["samples"], 24);
}
