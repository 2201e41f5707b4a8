//! Candidates evaluated per second on the digits fixture (used by `scripts/bench`): N distinct
//! configurations in a seeded random order (no candidate twice, so no free repeats).
//! Usage: eval_throughput ORT_LIB N
//! Prints one JSON line: candidates per second and where the time went.

use planner::eval::npz::ValidationSet;
use planner::eval::onnx::OnnxModel;
use planner::eval::ort_backend::OrtBackend;
use planner::eval::{EvalOptions, Evaluator};
use planner::problem::synth::Rng;
use planner::Manifest;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (lib, n) = (&args[1], args[2].parse::<usize>().expect("N"));
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let started = Instant::now();
    let backend = OrtBackend::new(std::path::Path::new(lib), 1).unwrap();
    let model = OnnxModel::from_bytes(
        &std::fs::read(root.join("testdata/digits-cnn/digits_cnn.onnx")).unwrap(),
    )
    .unwrap();
    let manifest = Manifest::from_json(
        &std::fs::read_to_string(root.join("examples/digits-cnn.manifest.json")).unwrap(),
    )
    .unwrap();
    let data = ValidationSet::from_npz(
        &std::fs::read(root.join("testdata/digits-cnn/digits_val.npz")).unwrap(),
    )
    .unwrap();
    let mut ev = Evaluator::new(
        &backend,
        &model,
        &manifest,
        data,
        EvalOptions {
            batch_size: 540,
            ..EvalOptions::default()
        },
    )
    .unwrap();
    let setup_s = started.elapsed().as_secs_f64();
    // Every configuration once, in a seeded random order.
    let mut all: Vec<Vec<u8>> = vec![Vec::new()];
    for l in &manifest.layers {
        all = all
            .iter()
            .flat_map(|p| {
                l.choices()
                    .into_iter()
                    .map(move |b| [p.clone(), vec![b]].concat())
            })
            .collect();
    }
    let mut rng = Rng::new(7);
    for i in (1..all.len()).rev() {
        all.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let n = n.min(all.len());
    let t = Instant::now();
    let mut acc = 0.0;
    for bits in &all[..n] {
        let a = ev.evaluate(bits).unwrap().accuracy.unwrap();
        if std::env::var_os("EVAL_TRACE").is_some() {
            eprintln!("{bits:?} {a}");
        }
        acc += a;
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"candidates_per_s": n as f64 / s, "setup_s": setup_s, "mean_accuracy": acc / n as f64, "timings": ev.timings})
    );
}
