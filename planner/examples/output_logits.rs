//! The scored output of configurations, for experiments outside the binary (used by
//! `bench/linearized_surrogate.py`).
//! Usage: output_logits ORT_LIB MODEL.onnx MANIFEST.json DATA.npz CONFIGS.json
//! CONFIGS.json is a list of bit-width arrays in manifest order (0: the layer stays fp32).
//! Prints one JSON line: per configuration, its output over the data set, flattened.

use planner::eval::npz::ValidationSet;
use planner::eval::onnx::OnnxModel;
use planner::eval::ort_backend::OrtBackend;
use planner::eval::{EvalOptions, Evaluator};
use planner::Manifest;
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: output_logits ORT_LIB MODEL.onnx MANIFEST.json DATA.npz CONFIGS.json");
        std::process::exit(2);
    }
    let read = |i: usize| std::fs::read(&args[i]).unwrap_or_else(|e| panic!("{}: {e}", args[i]));
    let backend = OrtBackend::new(Path::new(&args[1]), 1).expect("ONNX Runtime");
    let model = OnnxModel::from_path(Path::new(&args[2])).expect("model");
    let manifest =
        Manifest::from_json(&String::from_utf8(read(3)).expect("UTF-8")).expect("manifest");
    let data = ValidationSet::from_npz(&read(4)).expect("data");
    let configs: Vec<Vec<u8>> = serde_json::from_slice(&read(5)).expect("configurations");
    let options = EvalOptions {
        batch_size: 64,
        ..EvalOptions::default()
    };
    let mut evaluator =
        Evaluator::new(&backend, &model, &manifest, data, options).expect("evaluator");
    let outputs: Vec<Vec<f32>> = configs
        .iter()
        .map(|bits| {
            let out = evaluator.logits(bits).expect("inference").data;
            // Each configuration starts afresh (sessions and segment outputs dropped): slower
            // than sharing fp32's prefix, but the run's memory stays that of one configuration.
            // On opennsfw's 325 single-layer configurations, a run without this was killed for
            // memory while a search ran beside it.
            evaluator.clear_cache();
            out
        })
        .collect();
    println!("{}", serde_json::to_string(&outputs).expect("JSON"));
}
