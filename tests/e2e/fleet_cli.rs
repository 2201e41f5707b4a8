//! `bitplan fleet`: one row per device, exit codes for CI gates, measured metrics.

use crate::{bitplan, evaluate, repo, stderr, stdout};
use serde_json::{json, Value};

const TRIO: &str = "examples/fleets/resnet18-trio.fleet.json";
const ROOFLINE: &str = "examples/fleets/roofline.fleet.json";

fn ort_args() -> Vec<String> {
    match std::env::var("BITPLAN_ORT_LIB") {
        Ok(p) => vec!["--ort-lib".into(), p],
        Err(_) => Vec::new(),
    }
}

#[test]
fn every_device_of_the_trio_gets_a_plan_within_its_budgets() {
    let out = bitplan(&[
        "fleet",
        "examples/resnet18.manifest.json",
        "--fleet",
        TRIO,
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let fleet: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join(TRIO)).unwrap()).unwrap();
    let rows = doc["devices"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for (row, device) in rows.iter().zip(fleet["devices"].as_array().unwrap()) {
        assert_eq!(row["device"], device["name"]);
        assert_eq!(row["status"], "optimal");
        let b = &device["budgets"];
        if let Some(l) = b["max_latency_ms"].as_f64() {
            assert!(row["latency_ms"].as_f64().unwrap() <= l * (1.0 + 1e-9));
        }
        if let Some(s) = b["max_size_bytes"].as_f64() {
            assert!(row["size_bytes"].as_f64().unwrap() <= s);
        }
        // Supported weight bits and high-bit layers hold.
        let bits = row["bits"].as_object().unwrap();
        if let Some(w) = device["weight_bits"].as_array() {
            assert!(
                bits.values().all(|b| w.contains(b)),
                "{}: {bits:?}",
                row["device"]
            );
        }
        for l in device["high_bit_layers"].as_array().into_iter().flatten() {
            let highest = device["weight_bits"]
                .as_array()
                .map_or(json!(8), |w| w[0].clone());
            assert_eq!(bits[l.as_str().unwrap()], highest);
        }
        assert_eq!(row["front"].as_array().unwrap().len(), 4);
    }
}

#[test]
fn an_infeasible_device_or_a_failed_gate_exits_3_and_the_rest_is_planned() {
    let out = bitplan(&[
        "fleet",
        "examples/digits-cnn.manifest.json",
        "--fleet",
        ROOFLINE,
        "--format",
        "csv",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let csv = stdout(&out);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "device,status,bits,size_bytes,bops,latency_ms,omega,avg_bits,accuracy,agreement_fp32,meets_gate");
    assert_eq!(lines.len(), 6);
    assert!(lines
        .iter()
        .any(|l| l.starts_with("legacy-dsp,infeasible,")));
    assert_eq!(lines.iter().filter(|l| l.contains(",optimal,")).count(), 4);

    // With a gate: the four feasible devices are measured (each distinct configuration once).
    let mut args: Vec<String> = [
        "fleet",
        "examples/digits-cnn.manifest.json",
        "--fleet",
        ROOFLINE,
        "--format",
        "json",
        "--model",
        "testdata/digits-cnn/digits_cnn.onnx",
        "--data",
        "testdata/digits-cnn/digits_val.npz",
        "--min-accuracy",
        "0.97",
    ]
    .map(String::from)
    .to_vec();
    args.extend(ort_args());
    let out = bitplan(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    for row in doc["devices"].as_array().unwrap() {
        match row["status"].as_str().unwrap() {
            "optimal" => {
                let acc = row["metrics"]["accuracy"].as_f64().unwrap();
                assert_eq!(row["meets_gate"], acc >= 0.97);
            }
            _ => assert_eq!(row["meets_gate"], false),
        }
    }
    assert!(doc["evaluated_configs"].as_u64().unwrap() <= 4);
}

#[test]
fn a_lookup_table_missing_a_layer_is_an_error_naming_device_and_layer() {
    let dir = tempfile::tempdir().unwrap();
    let mut fleet: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join(TRIO)).unwrap()).unwrap();
    fleet["devices"][1]["latency_ms"]
        .as_object_mut()
        .unwrap()
        .remove("layer3.0.conv2");
    let path = dir.path().join("broken.fleet.json");
    std::fs::write(&path, fleet.to_string()).unwrap();
    let out = bitplan(&[
        "fleet",
        "examples/resnet18.manifest.json",
        "--fleet",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("edge-box") && err.contains("layer3.0.conv2") && err.contains("devices[1]"),
        "{err}"
    );
}

#[test]
fn bad_options_exit_2_naming_each() {
    let out = bitplan(&[
        "fleet",
        "examples/resnet18.manifest.json",
        "--fleet",
        ROOFLINE,
        "--step",
        "2",
        "--mip-gap",
        "-1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.starts_with("bitplan: fleet options is invalid:"),
        "{err}"
    );
    assert!(err.contains("step: must be within (0, 1)"), "{err}");
    assert!(
        err.contains("mip_gap: must be a relative gap at least 0 and below 1"),
        "{err}"
    );
}

/// `--search --metric agreement`: each device's choice is a configuration it runs within its
/// budgets, measured no worse than its planned choice (measured first and reused, never twice),
/// and some devices get one the plan did not choose; what is reported is what `bitplan evaluate`
/// measures; the infeasible device stays so and the exit code says it. (That the choice is the
/// best measured one is checked by brute force in `planner/tests/fleet.rs`.)
#[test]
fn with_search_each_device_gets_the_best_measured_point_under_its_budgets() {
    let (manifest, model, data) = (
        "examples/digits-cnn.manifest.json",
        "testdata/digits-cnn/digits_cnn.onnx",
        "testdata/digits-cnn/digits_val.npz",
    );
    let run = |search: bool| {
        let mut args = vec![
            "fleet", manifest, "--fleet", ROOFLINE, "--format", "json", "--model", model, "--data",
            data,
        ];
        if search {
            args.extend(["--search", "--evaluations", "12", "--metric", "agreement"]);
        }
        let out = bitplan(&args);
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        serde_json::from_str::<Value>(&stdout(&out)).unwrap()
    };
    let (planned, searched) = (run(false), run(true));
    let search = &searched["search"];
    let (made, reused) = (
        search["evaluations"].as_u64().unwrap(),
        search["reused"].as_u64().unwrap(),
    );
    assert!(made <= 12, "{search}");
    assert_eq!(reused, planned["evaluated_configs"].as_u64().unwrap());
    // Nothing is measured twice.
    assert_eq!(
        searched["evaluated_configs"].as_u64().unwrap(),
        made + reused
    );
    let fleet: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join(ROOFLINE)).unwrap()).unwrap();
    let rows = searched["devices"].as_array().unwrap();
    for ((row, before), device) in rows
        .iter()
        .zip(planned["devices"].as_array().unwrap())
        .zip(fleet["devices"].as_array().unwrap())
    {
        if row["status"] == "infeasible" {
            assert_eq!(row["chosen_by"], Value::Null, "{row}");
            continue;
        }
        assert_eq!(row["planned_bits"], before["bits"], "{row}");
        let by = row["chosen_by"].as_str().unwrap();
        assert_eq!(by == "plan", row["bits"] == before["bits"], "{row}");
        let budget = device["budgets"]["max_avg_bits"].as_f64().unwrap();
        assert!(row["avg_bits"].as_f64().unwrap() <= budget + 1e-9, "{row}");
        if let Some(widths) = device["weight_bits"].as_array() {
            for b in row["bits"].as_object().unwrap().values() {
                assert!(widths.contains(b), "{row}");
            }
        }
        // The planned choice was among the measurements: the choice is no worse.
        let agreement = row["metrics"]["agreement_fp32"].as_f64().unwrap();
        let planned_agreement = before["metrics"]["agreement_fp32"].as_f64().unwrap();
        assert!(agreement >= planned_agreement, "{row}");
        // A choice other than the plan's measured better, or as well and cheaper.
        let cheaper = row["size_bytes"].as_f64() < before["size_bytes"].as_f64();
        assert!(
            by == "plan"
                || agreement > planned_agreement
                || (agreement == planned_agreement && cheaper),
            "{row}"
        );
        let m = evaluate(manifest, model, data, &row["bits"].to_string());
        assert_eq!(m["agreement_fp32"].as_f64().unwrap(), agreement);
    }
    assert_eq!(
        rows.iter().filter(|r| r["status"] == "infeasible").count(),
        1
    );
    assert!(
        rows.iter().any(|r| r["chosen_by"] == "search"),
        "{searched}"
    );
}
