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
    planner::eval::onnx::OnnxModel,
    planner::Manifest,
    planner::eval::npz::ValidationSet,
) {
    let model = planner::eval::onnx::OnnxModel::from_bytes(
        &std::fs::read(repo().join("testdata/digits-cnn/digits_cnn.onnx")).unwrap(),
    )
    .unwrap();
    let manifest = planner::Manifest::from_json(
        &std::fs::read_to_string(repo().join("examples/digits-cnn.manifest.json")).unwrap(),
    )
    .unwrap();
    let data = planner::eval::npz::ValidationSet::from_npz(
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

/// Output `output` of the whole model with layer `layer`'s weight at `bits` by Double Rounding, the
/// rest fp32, run in one session: the oracle for measured sensitivity.
pub fn whole_model_with_one_layer(
    backend: &planner::eval::ort_backend::OrtBackend,
    model: &planner::eval::onnx::OnnxModel,
    manifest: &planner::Manifest,
    data: &planner::eval::npz::ValidationSet,
    layer: usize,
    bits: u8,
    output: usize,
) -> Vec<f32> {
    let links = model.link_layers(manifest).unwrap();
    let wl = links[layer].as_ref().unwrap();
    let values = model
        .high_bit_weights(wl, manifest.highest_bits())
        .unwrap()
        .dequantize(bits, manifest.rounding);
    let mut proto = model.proto.clone();
    let init = proto
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.name.as_deref() == Some(wl.weight.as_str()))
        .unwrap();
    init.float_data.clear();
    init.external_data.clear();
    init.data_location = None;
    init.raw_data = Some(values.iter().flat_map(|v| v.to_le_bytes()).collect());
    use planner::eval::{Backend, External, Session};
    use prost::Message;
    backend
        .session(
            &proto.encode_to_vec(),
            External::folder(model.folder.clone()),
        )
        .unwrap()
        .run(&data.bind(model).unwrap().feeds(0, data.len()))
        .unwrap()
        .swap_remove(output)
        .data
}
