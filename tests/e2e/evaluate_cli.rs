//! `bitplan evaluate` and `bitplan measure` on the digits fixture: the metric contract and clear
//! errors for bad models, data and links.

use crate::{bitplan, repo, stderr, stdout};
use serde_json::Value;
use std::io::Write;
use std::path::Path;

const MANIFEST: &str = "examples/digits-cnn.manifest.json";
const MODEL: &str = "testdata/digits-cnn/digits_cnn.onnx";
const DATA: &str = "testdata/digits-cnn/digits_val.npz";

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_string()
}

/// A .npy file: little-endian f32 or i64 data with a version-1 header.
pub(crate) fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn npz(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut z = zip::ZipWriter::new(&mut buf);
    for (name, bytes) in members {
        z.start_file(
            format!("{name}.npy"),
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored),
        )
        .unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
    buf.into_inner()
}

#[test]
fn evaluate_prints_the_metric_contract() {
    let dir = tempfile::tempdir().unwrap();
    let bits = write(
        dir.path(),
        "bits.json",
        br#"{"conv1": 8, "conv2": 3, "fc1": 4, "fc2": 8}"#,
    );
    let out = bitplan(&[
        "evaluate", MANIFEST, "--model", MODEL, "--data", DATA, "--bits", &bits, "--format", "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    for key in [
        "accuracy",
        "agreement_fp32",
        "kl_fp32",
        "sqnr_db",
        "latency_ms",
    ] {
        assert!(v[key].is_number(), "{key} missing in {v}");
    }
    let acc = v["accuracy"].as_f64().unwrap();
    assert!(acc > 0.97 && acc <= 1.0, "{acc}");
    assert!(v["sqnr_db"].as_f64().unwrap() > 10.0);

    // A plan candidate's JSON is accepted as BITS.json too.
    let plan = bitplan(&["plan", MANIFEST, "--max-avg-bits", "4", "--format", "json"]);
    let plan: Value = serde_json::from_str(&stdout(&plan)).unwrap();
    let cand = write(
        dir.path(),
        "cand.json",
        plan["candidates"][0].to_string().as_bytes(),
    );
    let out = bitplan(&[
        "evaluate", MANIFEST, "--model", MODEL, "--data", DATA, "--bits", &cand, "--format", "json",
    ]);
    let w: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(w["bits"], plan["candidates"][0]["bits"]);
}

#[test]
fn bad_bits_models_and_data_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let good_bits = write(
        dir.path(),
        "bits.json",
        br#"{"conv1": 8, "conv2": 3, "fc1": 4, "fc2": 8}"#,
    );
    let run = |model: &str, data: &str, bits: &str| {
        bitplan(&[
            "evaluate", MANIFEST, "--model", model, "--data", data, "--bits", bits,
        ])
    };

    let bits = write(
        dir.path(),
        "b1.json",
        br#"{"conv1": 4, "conv2": 3, "fc9": 4, "fc2": 8}"#,
    );
    let out = run(MODEL, DATA, &bits);
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(
        e.contains("fc9: not a layer") && e.contains("fc1: missing"),
        "{e}"
    );
    let bits = write(
        dir.path(),
        "b2.json",
        br#"{"conv1": 4, "conv2": 3, "fc1": 4, "fc2": 8}"#,
    );
    let e = stderr(&run(MODEL, DATA, &bits));
    assert!(
        e.contains("conv1") && e.contains("4 bits is not allowed here (allowed: [8])"),
        "{e}"
    );

    let onnx = std::fs::read(repo().join(MODEL)).unwrap();
    let truncated = write(dir.path(), "t.onnx", &onnx[..onnx.len() / 3]);
    let out = run(&truncated, DATA, &good_bits);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not an ONNX model"),
        "{}",
        stderr(&out)
    );
    let text = write(dir.path(), "x.onnx", b"hello, world");
    assert_eq!(run(&text, DATA, &good_bits).status.code(), Some(2));

    let x = |n: usize, w: usize| npy("<f4", &[n, 1, w, w], &vec![0u8; n * w * w * 4]);
    let wrong_shape = write(dir.path(), "s.npz", &npz(&[("x", x(4, 7))]));
    let out = run(MODEL, &wrong_shape, &good_bits);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("x: shape [4, 1, 7, 7] does not fit the model input \"input\""),
        "{}",
        stderr(&out)
    );

    let labels: Vec<u8> = [3i64, 12, 0, 1]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let bad_labels = write(
        dir.path(),
        "l.npz",
        &npz(&[("x", x(4, 8)), ("y", npy("<i8", &[4], &labels))]),
    );
    let out = run(MODEL, &bad_labels, &good_bits);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("y[1]: label 12 is out of range for a model with 10 outputs"),
        "{}",
        stderr(&out)
    );

    let no_x = write(dir.path(), "n.npz", &npz(&[("inputs", x(4, 8))]));
    assert!(stderr(&run(MODEL, &no_x, &good_bits)).contains(
        "x: the npz has no array `x` nor one named like the model input \"input\" (it has: inputs)"
    ));
    let not_npz = write(dir.path(), "z.npz", b"PK not really");
    assert!(stderr(&run(MODEL, &not_npz, &good_bits)).contains("not an .npz archive"));

    // A manifest layer linked to a weight the model does not have.
    let mut m: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join(MANIFEST)).unwrap()).unwrap();
    m["layers"][1]["weight"] = Value::from("conv9.weight");
    let manifest = write(dir.path(), "m.json", m.to_string().as_bytes());
    let out = bitplan(&[
        "evaluate", &manifest, "--model", MODEL, "--data", DATA, "--bits", &good_bits,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("layers[1].weight: layer \"conv2\" links weight \"conv9.weight\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn measure_fills_perturbations_from_the_weights() {
    let dir = tempfile::tempdir().unwrap();
    let mut m: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join(MANIFEST)).unwrap()).unwrap();
    let want = m["layers"][2]["perturbation"].clone();
    for l in m["layers"].as_array_mut().unwrap() {
        l.as_object_mut().unwrap().remove("perturbation");
    }
    let stripped = write(dir.path(), "m.json", m.to_string().as_bytes());
    let out = bitplan(&["measure", &stripped, "--model", MODEL]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    for (bits, e) in want.as_object().unwrap() {
        let got = v["layers"][2]["perturbation"][bits].as_f64().unwrap();
        assert!(
            (got - e.as_f64().unwrap()).abs() <= 1e-5 * got,
            "fc1 {bits}: {got} vs {e}"
        );
    }
}

#[test]
fn export_writes_a_qdq_model_and_its_bit_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let bits = write(
        dir.path(),
        "bits.json",
        br#"{"conv1": 8, "conv2": 3, "fc1": 4, "fc2": 8}"#,
    );
    let out_path = dir.path().join("digits_q.onnx");
    let out = bitplan(&[
        "export",
        MANIFEST,
        "--model",
        MODEL,
        "--bits",
        &bits,
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let model =
        planner::eval::onnx::OnnxModel::from_bytes(&std::fs::read(&out_path).unwrap()).unwrap();
    let dq: Vec<_> = model
        .graph()
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("DequantizeLinear"))
        .collect();
    assert_eq!(dq.len(), 4);
    // conv2 at 3 bits: its int8 initializer only holds values within +-3.
    let q = model
        .graph()
        .initializer
        .iter()
        .find(|t| t.name.as_deref() == Some("conv2.weight.bitplan_w3.q"))
        .unwrap();
    let values = model.tensor_values(q).unwrap();
    assert!(values.iter().all(|v| v.abs() <= 3.0) && values.iter().any(|v| v.abs() == 3.0));
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("digits_q.bits.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        config,
        serde_json::json!({"conv1": 8, "conv2": 3, "fc1": 4, "fc2": 8})
    );
}

#[test]
fn manifest_derives_params_and_macs_and_names_missing_traces() {
    let dir = tempfile::tempdir().unwrap();
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("testdata/digits-cnn/digits_cnn_layers.json"))
            .unwrap(),
    )
    .unwrap();
    let layers = fixture["layers"].as_array().unwrap();
    // Traces by module name, by tensor name and per parameter: all three spellings merge.
    let traces = serde_json::json!({
        "conv1": layers[0]["hessian_trace"],
        "conv2.weight": layers[1]["hessian_trace"],
        "fc1": {"hessian_trace_per_param": layers[2]["hessian_trace_per_param"]},
        "/fc2/Gemm": {"hessian_trace": layers[3]["hessian_trace"]},
    });
    let path = write(dir.path(), "traces.json", traces.to_string().as_bytes());
    let out = bitplan(&["manifest", MODEL, "--traces", &path]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let m: Value = serde_json::from_str(&stdout(&out)).unwrap();
    for (got, want) in m["layers"].as_array().unwrap().iter().zip(layers) {
        assert_eq!(got["name"], want["name"]);
        assert_eq!(got["params"], want["params"]);
        assert_eq!(got["macs"], want["macs"], "{}", want["name"]);
        assert_eq!(got["weight"], want["weight_initializer"]);
        let t = got["hessian_trace"].as_f64().unwrap();
        assert!((t - want["hessian_trace"].as_f64().unwrap()).abs() <= 1e-9 * t);
    }

    let partial = write(
        dir.path(),
        "partial.json",
        br#"{"conv1": 0.3, "conv2": 0.3, "fc9": 1.0}"#,
    );
    let out = bitplan(&["manifest", MODEL, "--traces", &partial]);
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(
        e.contains("fc1: no trace for this layer")
            && e.contains("fc2: no trace")
            && e.contains("fc9: names no weighted layer"),
        "{e}"
    );
}

/// A model whose weights live beside it exports the same way: OUT.onnx refers to OUT.onnx.data,
/// and read back it is the export of the same model stored inline.
#[test]
fn export_of_an_external_data_model_keeps_its_weights_beside_it() {
    use planner::eval::external::{externalize, has_external_data};
    use planner::eval::onnx::OnnxModel;
    let dir = tempfile::tempdir().unwrap();
    let mut source = OnnxModel::from_path(&repo().join(MODEL)).unwrap();
    let blob = externalize(&mut source.proto, "digits.weights");
    assert!(has_external_data(&source.proto));
    std::fs::write(dir.path().join("digits.weights"), &blob).unwrap();
    let model = write(dir.path(), "digits.onnx", &source.to_bytes());
    let bits = write(
        dir.path(),
        "bits.json",
        br#"{"conv1": 8, "conv2": 3, "fc1": 4, "fc2": 2}"#,
    );
    let export = |model: &str, out: &Path| {
        let run = bitplan(&[
            "export",
            MANIFEST,
            "--model",
            model,
            "--bits",
            &bits,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    };
    let (external_out, inline_out) = (dir.path().join("q.onnx"), dir.path().join("inline_q.onnx"));
    export(&model, &external_out);
    export(MODEL, &inline_out);
    assert!(!dir.path().join("inline_q.onnx.data").exists());

    let written = OnnxModel::from_bytes(&std::fs::read(&external_out).unwrap()).unwrap();
    assert!(has_external_data(&written.proto));
    let external = OnnxModel::from_path(&external_out).unwrap();
    let inline = OnnxModel::from_path(&inline_out).unwrap();
    let tensors = |m: &OnnxModel| -> Vec<(String, Vec<f32>)> {
        m.graph()
            .initializer
            .iter()
            .map(|t| (t.name.clone().unwrap(), m.tensor_values(t).unwrap()))
            .collect()
    };
    assert_eq!(tensors(&external), tensors(&inline));
    assert_eq!(external.graph().node, inline.graph().node);
    // The big weights really are in the file beside it, at aligned offsets.
    let data = std::fs::metadata(dir.path().join("q.onnx.data"))
        .unwrap()
        .len();
    assert!(data > 10_000, "{data} bytes");
    for t in &written.graph().initializer {
        if let Some(offset) = t
            .external_data
            .iter()
            .find(|e| e.key.as_deref() == Some("offset"))
        {
            assert_eq!(
                offset.value.as_ref().unwrap().parse::<u64>().unwrap() % 64,
                0
            );
        }
    }
}
