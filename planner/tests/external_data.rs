//! ONNX models whose weights live in a file beside them (how every model over 2 GB is saved):
//! read from `location`/`offset`/`length` relative to the model's folder, equal to the same model
//! stored inline, and locations outside the folder refused.

mod common;

use common::{digits, ort_lib, repo};
use planner::eval::{EvalOptions, Evaluator};
use planner::onnx::{pb, OnnxModel};
use planner::ort_backend::OrtBackend;
use prost::Message;
use std::path::PathBuf;

fn inline() -> OnnxModel {
    OnnxModel::from_path(&repo().join("testdata/digits-cnn/digits_cnn.onnx")).unwrap()
}

/// A fresh folder of its own under the system's temporary directory.
fn folder(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bitplan-external-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn entry(key: &str, value: String) -> pb::StringStringEntryProto {
    pb::StringStringEntryProto {
        key: Some(key.into()),
        value: Some(value),
    }
}

/// Writes the digits model with every initializer's bytes in `weights.bin` (each at an offset
/// aligned to 64, after some padding, as onnx's converter lays them out) and `location` as
/// given; returns the model's path.
fn write_external(dir: &std::path::Path, location: impl Fn(usize) -> String) -> PathBuf {
    let mut proto = inline().proto;
    let g = proto.graph.as_mut().unwrap();
    let mut blob = vec![7u8; 13];
    for (i, t) in g.initializer.iter_mut().enumerate() {
        let raw = t
            .raw_data
            .take()
            .unwrap_or_else(|| t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect());
        t.float_data.clear();
        blob.resize(blob.len().div_ceil(64) * 64, 0);
        let offset = blob.len();
        blob.extend_from_slice(&raw);
        t.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
        t.external_data = vec![
            entry("location", location(i)),
            entry("offset", offset.to_string()),
            entry("length", raw.len().to_string()),
        ];
    }
    std::fs::write(dir.join("weights.bin"), blob).unwrap();
    let path = dir.join("model.onnx");
    std::fs::write(&path, proto.encode_to_vec()).unwrap();
    path
}

#[test]
fn external_weights_read_evaluate_and_match_the_inline_model() {
    let dir = folder("match");
    let path = write_external(&dir, |_| "weights.bin".into());
    let external = OnnxModel::from_path(&path).unwrap();
    let inline = inline();
    let (a, b) = (
        inline.weighted_layers().unwrap(),
        external.weighted_layers().unwrap(),
    );
    assert_eq!(a.len(), b.len());
    assert!(!a.is_empty());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            inline.weight_values(x).unwrap(),
            external.weight_values(y).unwrap()
        );
    }
    // Read from bytes alone, the file beside it cannot be found: said, not guessed.
    let err = OnnxModel::from_bytes(&std::fs::read(&path).unwrap())
        .unwrap()
        .weight_values(&b[0])
        .unwrap_err()
        .to_string();
    assert!(err.contains("external file"), "{err}");

    let (_, manifest, data) = digits();
    let backend = OrtBackend::new(&ort_lib(), 1).unwrap();
    let mut from_inline = Evaluator::new(
        &backend,
        &inline,
        &manifest,
        data.clone(),
        EvalOptions::default(),
    )
    .unwrap();
    let mut from_external =
        Evaluator::new(&backend, &external, &manifest, data, EvalOptions::default()).unwrap();
    let bits: Vec<u8> = manifest
        .layers
        .iter()
        .map(|l| *l.choices().last().unwrap())
        .collect();
    let (x, y) = (
        from_inline.evaluate(&bits).unwrap(),
        from_external.evaluate(&bits).unwrap(),
    );
    assert_eq!(x.kl_fp32, y.kl_fp32);
    assert_eq!(x.accuracy, y.accuracy);
    assert!(x.kl_fp32 > 0.0, "the lowest bits move the output: {x:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn locations_outside_the_models_folder_and_short_files_are_refused() {
    for (case, location, want) in [
        ("parent", "../weights.bin", "inside the model's folder"),
        ("absolute", "/etc/passwd", "inside the model's folder"),
        (
            "nested",
            "sub/../../weights.bin",
            "inside the model's folder",
        ),
        ("missing", "other.bin", "cannot open"),
    ] {
        let dir = folder(case);
        let path = write_external(&dir, |_| location.to_string());
        let err = OnnxModel::from_path(&path).unwrap_err().to_string();
        assert!(err.contains(want), "{case}: {err}");
        assert!(
            err.contains(".external_data"),
            "{case}: names the tensor: {err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
    let dir = folder("short");
    let path = write_external(&dir, |_| "weights.bin".into());
    let full = std::fs::read(dir.join("weights.bin")).unwrap();
    std::fs::write(dir.join("weights.bin"), &full[..full.len() - 1]).unwrap();
    let err = OnnxModel::from_path(&path).unwrap_err().to_string();
    assert!(err.contains("past the end"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
