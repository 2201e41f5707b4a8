//! End-to-end tests: run the real `bitplan` binary as CI pipelines do.

mod contract;
mod evaluate_cli;
mod fleet_cli;
mod fresh_machine;
mod hostile;
mod pg;
mod plan_cli;
mod search_cli;
mod sensitivity_cli;
mod sensitivity_service;
mod serve;
mod workers;

use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository root (this crate lives in `server/`).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs `bitplan` with arguments; paths are relative to the repository root.
pub fn bitplan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bitplan"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("the binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `bitplan evaluate MANIFEST --model MODEL --data DATA` of one configuration (`bits`: JSON, a
/// bit-width per layer name), which must succeed: its metrics.
pub fn evaluate(manifest: &str, model: &str, data: &str, bits: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bits.json");
    std::fs::write(&path, bits).unwrap();
    let out = bitplan(&[
        "evaluate",
        manifest,
        "--model",
        model,
        "--data",
        data,
        "--bits",
        path.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}
