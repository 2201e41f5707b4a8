//! Evaluation jobs per second against the number of worker processes: the real binary, the digits
//! fixture (two supernets, one job per candidate of their exact size fronts). For each worker
//! count the jobs are queued first (`serve --workers 0`), then the service is started again on the
//! same data directory with `--workers N` (one job at a time each), and timed until every job has
//! succeeded.
//!
//! `cargo run --release --example worker_scaling -- [--workers 1,2,4]` (the embedded SQLite store;
//! each run on a fresh data directory)

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("bitplan")
}

fn flag(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

/// `bitplan serve` on a free port; its base URL.
fn serve(data: &Path, workers: usize) -> (Child, String) {
    let mut child = Command::new(binary())
        .args(["serve", "--addr", "127.0.0.1:0", "--job-workers", "1"])
        .args(["--workers", &workers.to_string(), "--data-dir"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("cargo build --release first");
    let line = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    (
        child,
        line.trim_start_matches("bitplan: listening on ")
            .to_string(),
    )
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn call(http: &reqwest::blocking::Client, method: &str, url: &str, body: Option<Value>) -> Value {
    let mut req = http.request(method.parse().unwrap(), url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().unwrap();
    assert!(
        resp.status().is_success(),
        "{method} {url}: {}",
        resp.status()
    );
    resp.json().unwrap()
}

fn upload(http: &reqwest::blocking::Client, url: &str, file: &str) {
    let bytes = std::fs::read(repo().join(file)).unwrap();
    let resp = http
        .put(url)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "PUT {url}: {}", resp.status());
}

/// Queues one evaluation job per candidate of two supernets' size fronts; returns the count.
fn queue_jobs(http: &reqwest::blocking::Client, base: &str) -> usize {
    let mut manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("examples/digits-cnn.manifest.json")).unwrap(),
    )
    .unwrap();
    let mut jobs = 0;
    for k in 0..2 {
        manifest["name"] = json!(format!("digits-{k}"));
        let sn = call(
            http,
            "POST",
            &format!("{base}/v1/supernets"),
            Some(manifest.clone()),
        );
        let id = sn["id"].as_str().unwrap();
        upload(
            http,
            &format!("{base}/v1/supernets/{id}/model"),
            "testdata/digits-cnn/digits_cnn.onnx",
        );
        upload(
            http,
            &format!("{base}/v1/supernets/{id}/validation"),
            "testdata/digits-cnn/digits_val.npz",
        );
        let plan = call(
            http,
            "POST",
            &format!("{base}/v1/supernets/{id}/plans"),
            Some(json!({"pareto": "size"})),
        );
        for c in plan["candidates"].as_array().unwrap() {
            call(
                http,
                "POST",
                &format!(
                    "{base}/v1/plans/{}/evaluations",
                    plan["id"].as_str().unwrap()
                ),
                Some(json!({"candidate_ids": [c["id"]]})),
            );
            jobs += 1;
        }
    }
    jobs
}

fn main() {
    let counts: Vec<usize> = flag("--workers")
        .unwrap_or_else(|| "1,2,4".into())
        .split(',')
        .map(|n| n.parse().unwrap())
        .collect();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("evaluation jobs, one candidate each (digits fixture, 540 images), {cores} cores");
    let mut first = None;
    for workers in counts {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (child, base) = serve(&data, 0);
        let jobs = queue_jobs(&http, &base);
        stop(child);
        let (child, base) = serve(&data, workers);
        let started = Instant::now();
        loop {
            let done = call(
                &http,
                "GET",
                &format!("{base}/v1/jobs?status=succeeded&limit=1000"),
                None,
            )["jobs"]
                .as_array()
                .unwrap()
                .len();
            if done >= jobs {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "{done} of {jobs}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let rate = jobs as f64 / started.elapsed().as_secs_f64();
        stop(child);
        let base_rate = *first.get_or_insert(rate);
        println!(
            "{workers} worker(s): {jobs} jobs in {:.2} s = {rate:.1} jobs/s ({:.2}x of 1 worker)",
            started.elapsed().as_secs_f64(),
            rate / base_rate
        );
    }
}
