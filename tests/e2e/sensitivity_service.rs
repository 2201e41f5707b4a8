//! The service measures sensitivity: a supernet made from a model alone (no traces) is refused by
//! the planner, gets its sensitivity from a job (progress, cancel, one at a time), and then plans
//! on it; what the job stores is what `bitplan manifest --data` measures.

use crate::serve::{env_refs, ort_env, Server};
use crate::{bitplan, stderr, stdout};
use serde_json::{json, Value};
use std::time::Duration;

const MODEL: &str = "testdata/digits-cnn/digits_cnn.onnx";
const DATA: &str = "testdata/digits-cnn/digits_val.npz";

fn cli_manifest(args: &[&str]) -> Value {
    let mut all = vec!["manifest", MODEL, "--bits", "8,4,3,2"];
    all.extend_from_slice(args);
    let out = bitplan(&all);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[test]
fn a_model_without_traces_is_measured_by_a_job_then_planned() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = ort_env();
    let s = Server::start(&data, &env_refs(&env), &["--eval-pause-ms", "40"]);

    let created = s.ok("POST", "/v1/supernets", Some(&cli_manifest(&[])));
    let sn = created["id"].as_str().unwrap().to_string();
    assert!(
        created["warnings"]
            .to_string()
            .contains("no layer has hessian_trace or sensitivity"),
        "{created}"
    );
    let (status, refused) = s.call(
        "POST",
        &format!("/v1/supernets/{sn}/plans"),
        Some(&json!({"budgets": {"max_avg_bits": 4}})),
    );
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["fields"][0]["path"], "layers", "{refused}");
    let (status, early) = s.call(
        "POST",
        &format!("/v1/supernets/{sn}/sensitivity"),
        Some(&json!({})),
    );
    assert_eq!(status, 409, "{early}");
    assert!(
        early["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/model"),
        "{early}"
    );

    s.upload(&format!("/v1/supernets/{sn}/model"), MODEL);
    s.upload(&format!("/v1/supernets/{sn}/validation"), DATA);
    let (status, bad) = s.call(
        "POST",
        &format!("/v1/supernets/{sn}/sensitivity"),
        Some(&json!({"metric": "cosine"})),
    );
    assert_eq!(status, 422, "{bad}");
    assert_eq!(bad["error"]["fields"][0]["path"], "metric", "{bad}");

    // An mse pass, cancelled part-way, leaves the manifest as it was.
    let job = s.ok(
        "POST",
        &format!("/v1/supernets/{sn}/sensitivity"),
        Some(&json!({"metric": "mse", "batch_size": 64})),
    );
    assert_eq!(job["kind"], "sensitivity");
    let layers = created["layers"].as_i64().unwrap();
    assert_eq!(job["progress"]["total"], json!(layers * 4), "{job}");
    let (status, twice) = s.call(
        "POST",
        &format!("/v1/supernets/{sn}/sensitivity"),
        Some(&json!({})),
    );
    assert_eq!(status, 409, "{twice}");
    assert_eq!(twice["error"]["details"]["job_id"], job["id"], "{twice}");
    let id = job["id"].as_str().unwrap();
    let started = std::time::Instant::now();
    while s.ok("GET", &format!("/v1/jobs/{id}"), None)["progress"]["done"] == 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.ok("POST", &format!("/v1/jobs/{id}/cancel"), None);
    let cancelled = s.wait_job(id, Duration::from_secs(60));
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    // Stopped inside the pass, not after it ran to the end.
    let message = cancelled["progress"]["message"].as_str().unwrap();
    assert!(message.contains("sensitivity pass after"), "{cancelled}");
    assert!(
        cancelled["progress"]["done"].as_i64().unwrap() < layers * 4,
        "{cancelled}"
    );
    let manifest = &s.ok("GET", &format!("/v1/supernets/{sn}"), None)["manifest"];
    assert!(manifest.get("sensitivity_metric").is_none(), "{manifest}");

    // A whole kl pass: stored as measured, progress to the end, then plans use it.
    let job = s.ok(
        "POST",
        &format!("/v1/supernets/{sn}/sensitivity"),
        Some(&json!({"metric": "kl"})),
    );
    let done = s.wait_job(job["id"].as_str().unwrap(), Duration::from_secs(120));
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        done["progress"]["done"], done["progress"]["total"],
        "{done}"
    );
    let stored = s.ok("GET", &format!("/v1/supernets/{sn}"), None)["manifest"].clone();
    let measured = cli_manifest(&["--data", DATA]);
    assert_eq!(stored["sensitivity_metric"], "kl");
    assert_eq!(
        stored["layers"].as_array().unwrap().len(),
        measured["layers"].as_array().unwrap().len()
    );
    for (a, b) in stored["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(measured["layers"].as_array().unwrap())
    {
        let (a, b) = (
            a["sensitivity"].as_object().unwrap(),
            b["sensitivity"].as_object().unwrap(),
        );
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (bits, v) in a {
            let (x, y) = (v.as_f64().unwrap(), b[bits].as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-9 * y.abs().max(1e-12),
                "{bits} bits: {x} vs {y}"
            );
        }
    }
    let plan = s.ok(
        "POST",
        &format!("/v1/supernets/{sn}/plans"),
        Some(&json!({"budgets": {"max_avg_bits": 4}})),
    );
    assert_eq!(plan["result"]["objective"], "sensitivity_kl", "{plan}");

    // Measuring again replaces it, and plans (and their cached fronts) follow.
    let job = s.ok(
        "POST",
        &format!("/v1/supernets/{sn}/sensitivity"),
        Some(&json!({"metric": "mse"})),
    );
    let done = s.wait_job(job["id"].as_str().unwrap(), Duration::from_secs(120));
    assert_eq!(done["status"], "succeeded", "{done}");
    let plan = s.ok(
        "POST",
        &format!("/v1/supernets/{sn}/plans"),
        Some(&json!({"budgets": {"max_avg_bits": 4}})),
    );
    assert_eq!(plan["result"]["objective"], "sensitivity_mse", "{plan}");
    let stored = s.ok("GET", &format!("/v1/supernets/{sn}"), None)["manifest"].clone();
    assert_eq!(stored["sensitivity_metric"], "mse");
    s.stop();

    // The measured manifest outlives the process.
    let s = Server::start(&data, &env_refs(&env), &[]);
    assert_eq!(
        s.ok("GET", &format!("/v1/supernets/{sn}"), None)["manifest"],
        stored
    );
    s.stop();
}

/// A generated two-input text encoder (int64 ids and mask) through the service: the upload binds
/// the npz by input name, and the job measures the output the manifest names.
#[test]
fn a_two_input_model_is_measured_by_the_service_on_its_named_output() {
    let dir = tempfile::tempdir().unwrap();
    let generated = planner::eval::synth_model::text_encoder(7, 20);
    let (model, npz) = (dir.path().join("text.onnx"), dir.path().join("calib.npz"));
    std::fs::write(&model, &generated.model).unwrap();
    std::fs::write(&npz, &generated.npz).unwrap();
    let (model, npz) = (model.to_str().unwrap(), npz.to_str().unwrap());
    let manifest = |extra: &[&str]| -> Value {
        let mut args = vec![
            "manifest",
            model,
            "--output",
            "embedding",
            "--bits",
            "8,4,2",
        ];
        args.extend_from_slice(extra);
        let out = bitplan(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    let env = ort_env();
    let s = Server::start(&dir.path().join("data"), &env_refs(&env), &[]);
    let created = s.ok("POST", "/v1/supernets", Some(&manifest(&[])));
    let sn = created["id"].as_str().unwrap().to_string();

    // A set without the mask is refused at upload, naming the input it lacks.
    let ids_only = dir.path().join("ids.npz");
    let set = planner::eval::npz::read_npz(&generated.npz).unwrap();
    std::fs::write(
        &ids_only,
        planner::eval::npz::to_npz(&[("input_ids", &set["input_ids"])]),
    )
    .unwrap();
    s.upload(&format!("/v1/supernets/{sn}/model"), model);
    let (status, refused) = s.raw(
        "PUT",
        &format!("/v1/supernets/{sn}/validation"),
        Some(std::fs::read(&ids_only).unwrap()),
        "application/octet-stream",
    );
    let refused: Value = serde_json::from_slice(&refused).unwrap();
    assert_eq!(status, 422, "{refused}");
    assert_eq!(
        refused["error"]["fields"][0]["path"], "validation.attention_mask",
        "{refused}"
    );
    s.upload(&format!("/v1/supernets/{sn}/validation"), npz);

    let job = s.ok(
        "POST",
        &format!("/v1/supernets/{sn}/sensitivity"),
        Some(&json!({"metric": "mse", "batch_size": 8})),
    );
    let done = s.wait_job(job["id"].as_str().unwrap(), Duration::from_secs(120));
    assert_eq!(done["status"], "succeeded", "{done}");
    let stored = s.ok("GET", &format!("/v1/supernets/{sn}"), None)["manifest"].clone();
    assert_eq!(stored["output"], "embedding", "{stored}");
    let measured = manifest(&["--data", npz, "--metric", "mse", "--batch-size", "8"]);
    for (a, b) in stored["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(measured["layers"].as_array().unwrap())
    {
        for (bits, v) in a["sensitivity"].as_object().unwrap() {
            let (x, y) = (
                v.as_f64().unwrap(),
                b["sensitivity"][bits].as_f64().unwrap(),
            );
            assert!(
                y > 0.0 && (x - y).abs() <= 1e-9 * y,
                "{bits} bits: {x} vs {y}"
            );
        }
    }
    let plan = s.ok(
        "POST",
        &format!("/v1/supernets/{sn}/plans"),
        Some(&json!({"budgets": {"max_avg_bits": 4}})),
    );
    assert_eq!(plan["result"]["objective"], "sensitivity_mse", "{plan}");
    s.stop();
}
