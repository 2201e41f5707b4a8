//! Helpers shared by the tests that run ONNX Runtime.
#![allow(dead_code)] // each test crate uses its own subset

use std::path::PathBuf;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `BITPLAN_ORT_LIB`, or where `scripts/setup` puts the library.
pub fn ort_lib() -> PathBuf {
    let path = std::env::var_os("BITPLAN_ORT_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".cache/onnxruntime-1.32.0/libonnxruntime.so"));
    assert!(
        path.exists(),
        "ONNX Runtime library not found at {}: run scripts/test (or scripts/setup) first",
        path.display()
    );
    path
}

/// The digits fixture: its model, manifest and validation set.
pub fn digits() -> (
    planner::onnx::OnnxModel,
    planner::Manifest,
    planner::npz::ValidationSet,
) {
    let model = planner::onnx::OnnxModel::from_bytes(
        &std::fs::read(repo().join("testdata/digits-cnn/digits_cnn.onnx")).unwrap(),
    )
    .unwrap();
    let manifest = planner::Manifest::from_json(
        &std::fs::read_to_string(repo().join("examples/digits-cnn.manifest.json")).unwrap(),
    )
    .unwrap();
    let data = planner::npz::ValidationSet::from_npz(
        &std::fs::read(repo().join("testdata/digits-cnn/digits_val.npz")).unwrap(),
    )
    .unwrap();
    (model, manifest, data)
}

/// Largest difference between two outputs, relative to the expected magnitude (at least 1).
pub fn max_rel_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
        .fold(0f32, f32::max)
}
