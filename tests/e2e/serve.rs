//! `bitplan serve` as users run it: the real binary on a free port, driven over HTTP. Every
//! response is checked against openapi.yaml.

use crate::contract::Contract;
use crate::repo;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn contract() -> &'static Contract {
    static C: OnceLock<Contract> = OnceLock::new();
    C.get_or_init(Contract::load)
}

/// A running `bitplan serve`.
pub struct Server {
    child: Child,
    pub base: String,
    log: PathBuf,
    http: reqwest::blocking::Client,
}

impl Server {
    pub fn start(data: &Path, env: &[(&str, &str)], args: &[&str]) -> Server {
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, Ordering::SeqCst);
        let log = data.with_extension(format!("serve-{n}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bitplan"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data)
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .current_dir(repo())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("bitplan serve starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_else(|| {
            panic!(
                "the server printed no address; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        let base = first
            .strip_prefix("bitplan: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            base,
            log,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A request whose response must fit the contract; returns the status and the JSON body.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (status, bytes) = self.raw(
            method,
            path,
            body.map(|b| b.to_string().into_bytes()),
            "application/json",
        );
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: &str,
    ) -> (u16, Vec<u8>) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.header("content-type", content_type).body(b);
        }
        let resp = req
            .send()
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = resp.bytes().unwrap().to_vec();
        contract().check(method, path, status, &ct, &bytes);
        (status, bytes)
    }

    pub fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, v) = self.call(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path} -> {status}: {v}"
        );
        v
    }

    pub fn upload(&self, path: &str, file: &str) -> Value {
        let bytes = std::fs::read(repo().join(file)).unwrap();
        let (status, body) = self.raw("PUT", path, Some(bytes), "application/octet-stream");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    pub fn wait_job(&self, id: &str, timeout: Duration) -> Value {
        let started = Instant::now();
        loop {
            let j = self.ok("GET", &format!("/v1/jobs/{id}"), None);
            if ["succeeded", "failed", "cancelled"].contains(&j["status"].as_str().unwrap()) {
                return j;
            }
            assert!(started.elapsed() < timeout, "job {id} still {j}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit {status}; log:\n{}", self.log());
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn ort_env() -> Vec<(&'static str, String)> {
    let lib = std::env::var("BITPLAN_ORT_LIB").unwrap_or_else(|_| {
        repo()
            .join(".cache/onnxruntime-1.32.0/libonnxruntime.so")
            .display()
            .to_string()
    });
    vec![("BITPLAN_ORT_LIB", lib)]
}

pub fn env_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn manifest(file: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join(file)).unwrap()).unwrap()
}

/// Creates the digits supernet with its model and validation set; returns its id.
fn digits(s: &Server) -> String {
    digits_named(s, "digits-cnn")
}

/// Creates the digits supernet under the name `name`, with its model and validation set;
/// returns its id.
pub fn digits_named(s: &Server, name: &str) -> String {
    let mut m = manifest("examples/digits-cnn.manifest.json");
    m["name"] = json!(name);
    let sn = s.ok("POST", "/v1/supernets", Some(&m));
    let id = sn["id"].as_str().unwrap().to_string();
    s.upload(
        &format!("/v1/supernets/{id}/model"),
        "testdata/digits-cnn/digits_cnn.onnx",
    );
    s.upload(
        &format!("/v1/supernets/{id}/validation"),
        "testdata/digits-cnn/digits_val.npz",
    );
    id
}

#[test]
fn upload_plan_evaluate_export_then_read_back_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = ort_env();
    let s = Server::start(&data, &env_refs(&env), &[]);
    let sn = digits(&s);
    let plan = s.ok(
        "POST",
        &format!("/v1/supernets/{sn}/plans"),
        Some(&json!({"pareto": "size", "points": 8})),
    );
    let pid = plan["id"].as_str().unwrap().to_string();
    assert_eq!(plan["candidate_count"], 8);
    let job = s.ok(
        "POST",
        &format!("/v1/plans/{pid}/evaluations"),
        Some(&json!({})),
    );
    let job = s.wait_job(job["id"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(job["status"], "succeeded", "{job}");
    let candidates = s.ok("GET", &format!("/v1/plans/{pid}/candidates"), None);
    let first = candidates["candidates"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.ok(
        "PUT",
        &format!("/v1/plans/{pid}/choice"),
        Some(&json!({"candidate_id": first})),
    );
    let config = s.ok("GET", &format!("/v1/candidates/{first}/config"), None);
    let (status, qdq) = s.raw(
        "GET",
        &format!("/v1/candidates/{first}/model.onnx"),
        None,
        "",
    );
    assert_eq!(status, 200);
    let supernet = s.ok("GET", &format!("/v1/supernets/{sn}"), None);
    s.stop();

    // A new process on the same data directory serves the same answers.
    let s = Server::start(&data, &env_refs(&env), &[]);
    assert_eq!(s.ok("GET", &format!("/v1/supernets/{sn}"), None), supernet);
    assert_eq!(
        s.ok("GET", &format!("/v1/plans/{pid}/candidates"), None),
        candidates
    );
    assert_eq!(
        s.ok("GET", &format!("/v1/plans/{pid}"), None)["chosen_candidate_id"],
        first.as_str()
    );
    assert_eq!(
        s.ok("GET", &format!("/v1/candidates/{first}/config"), None),
        config
    );
    assert_eq!(
        s.raw(
            "GET",
            &format!("/v1/candidates/{first}/model.onnx"),
            None,
            ""
        )
        .1,
        qdq
    );
    assert_eq!(
        s.ok(
            "GET",
            &format!("/v1/jobs/{}", job["id"].as_str().unwrap()),
            None
        ),
        job
    );
    assert!(candidates["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["metrics"]["accuracy"].is_number()
            && c["metrics"]["cosine_mean"].is_number()
            && c["metrics"]["rel_l2"].is_number()));
    s.stop();
}

#[test]
fn sigkill_of_the_service_during_an_evaluation_resumes_it_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut env = ort_env();
    env.push(("BITPLAN_EVAL_PAUSE_MS", "60".into()));
    let s = Server::start(&data, &env_refs(&env), &[]);
    let sn = digits(&s);
    let plan = s.ok(
        "POST",
        &format!("/v1/supernets/{sn}/plans"),
        Some(&json!({"pareto": "size"})),
    );
    let pid = plan["id"].as_str().unwrap().to_string();
    let total = plan["candidate_count"].as_u64().unwrap();
    assert!(total >= 30, "{total}");
    let job = s.ok(
        "POST",
        &format!("/v1/plans/{pid}/evaluations"),
        Some(&json!({})),
    );
    let jid = job["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    loop {
        let j = s.ok("GET", &format!("/v1/jobs/{jid}"), None);
        if j["progress"]["done"].as_u64().unwrap() >= 5 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{j}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = s.ok(
        "GET",
        &format!("/v1/plans/{pid}/candidates?evaluated=true"),
        None,
    );
    s.kill9();
    let measured: Vec<(String, Value)> = before["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap().to_string(), c["metrics"].clone()))
        .collect();
    assert!(
        measured.len() >= 5 && (measured.len() as u64) < total,
        "{}",
        measured.len()
    );

    let s = Server::start(&data, &env_refs(&env[..1]), &[]);
    let j = s.wait_job(&jid, Duration::from_secs(60));
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_eq!(j["progress"]["done"], total);
    // The killed run counts: its worker died with the service, and a job that kills its
    // process every time must not run for ever.
    assert_eq!(j["attempts"], 2, "{j}");
    assert_eq!(j["crashes"], 1, "{j}");
    assert_eq!(j["error"], Value::Null, "{j}");
    let after = s.ok(
        "GET",
        &format!("/v1/plans/{pid}/candidates?evaluated=true"),
        None,
    );
    assert_eq!(after["total"], total);
    for (id, metrics) in &measured {
        let c = s.ok("GET", &format!("/v1/candidates/{id}"), None);
        assert_eq!(
            &c["metrics"], metrics,
            "a result stored before the kill changed"
        );
    }
    s.stop();
}

#[test]
fn sixty_four_clients_plan_and_read_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[], &[]);
    let sn = s.ok(
        "POST",
        "/v1/supernets",
        Some(&manifest("examples/resnet18.manifest.json")),
    );
    let sn = sn["id"].as_str().unwrap().to_string();
    let max_size = {
        let m = planner::Manifest::from_value(manifest("examples/resnet18.manifest.json")).unwrap();
        planner::Problem::new(&m, None)
            .unwrap()
            .max_cost(planner::CostKind::Size)
    };
    const CLIENTS: usize = 64;
    const ROUNDS: usize = 5;
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let s = &s;
                let sn = &sn;
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    for r in 0..ROUNDS {
                        let budget = max_size
                            * (0.3 + 0.6 * ((c * ROUNDS + r) as f64 / (CLIENTS * ROUNDS) as f64));
                        let body = json!({"budgets": {"max_size_bytes": budget}});
                        let (status, plan) =
                            s.call("POST", &format!("/v1/supernets/{sn}/plans"), Some(&body));
                        if status != 201 {
                            failures.push(format!("plan -> {status}: {plan}"));
                            continue;
                        }
                        let pid = plan["id"].as_str().unwrap();
                        for path in [
                            format!("/v1/plans/{pid}/candidates"),
                            format!("/v1/plans/{pid}"),
                            format!("/v1/supernets/{sn}/plans"),
                        ] {
                            let (status, v) = s.call("GET", &path, None);
                            if status != 200 {
                                failures.push(format!("{path} -> {status}: {v}"));
                            }
                        }
                        let size = plan["candidates"][0]["size_bytes"].as_f64().unwrap();
                        if size > budget {
                            failures.push(format!("size {size} over budget {budget}"));
                        }
                    }
                    failures
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} failures, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let plans = s.ok("GET", &format!("/v1/supernets/{sn}/plans"), None);
    assert_eq!(plans["plans"].as_array().unwrap().len(), CLIENTS * ROUNDS);
    let log = s.log();
    assert!(
        !log.contains("locked") && !log.to_lowercase().contains("busy"),
        "{log}"
    );
    s.stop();
}

#[test]
fn the_demo_serves_a_measured_front() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = ort_env();
    let s = Server::start(&data, &env_refs(&env), &["--demo"]);
    let supernets = s.ok("GET", "/v1/supernets", None);
    assert_eq!(supernets["supernets"].as_array().unwrap().len(), 1);
    let jobs = s.ok("GET", "/v1/jobs", None);
    let job = s.wait_job(
        jobs["jobs"][0]["id"].as_str().unwrap(),
        Duration::from_secs(60),
    );
    assert_eq!(job["status"], "succeeded", "{job}");
    let pid = job["plan_id"].as_str().unwrap();
    let page = s.ok(
        "GET",
        &format!("/v1/plans/{pid}/candidates?sort=accuracy&order=desc&limit=1"),
        None,
    );
    assert!(
        page["candidates"][0]["metrics"]["accuracy"]
            .as_f64()
            .unwrap()
            > 0.95
    );
    assert_eq!(page["total"], job["progress"]["total"]);
    s.stop();
    // Loading it again is a no-op.
    let s = Server::start(&data, &env_refs(&env), &["--demo"]);
    assert_eq!(
        s.ok("GET", "/v1/supernets", None)["supernets"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A second server on the same directory is refused.
    let second = Command::new(env!("CARGO_BIN_EXE_bitplan"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("another bitplan serve"));
    s.stop();
}

/// A count flag may lower the planner's bound but not raise it: the service does not start.
#[test]
fn count_flags_beyond_the_planners_bounds_stop_the_service_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, value, want) in [
        (
            "--max-layers",
            "10001",
            "--max-layers must be from 1 to 10000, not 10001",
        ),
        (
            "--max-plan-solves",
            "0",
            "--max-plan-solves must be from 1 to 10000, not 0",
        ),
        (
            "--max-fleet-devices",
            "1001",
            "--max-fleet-devices must be from 1 to 1000",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_bitplan"))
            .args([
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--workers",
                "0",
                flag,
                value,
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(want), "{flag} {value}: {stderr}");
    }
}

/// A search job killed with its service resumes at the next start: what it measured before is
/// reused, not measured again, and counts against its budget.
#[test]
fn sigkill_of_the_service_during_a_search_resumes_it_within_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut env = ort_env();
    env.push(("BITPLAN_EVAL_PAUSE_MS", "100".into()));
    let s = Server::start(&data, &env_refs(&env), &[]);
    let sn = digits(&s);
    let budget = 12;
    let search = s.ok(
        "POST",
        &format!("/v1/supernets/{sn}/searches"),
        Some(&json!({"pareto": "avg_bits", "evaluations": budget, "per_round": 4})),
    );
    let (id, jid) = (
        search["id"].as_str().unwrap().to_string(),
        search["job"]["id"].as_str().unwrap().to_string(),
    );
    let started = Instant::now();
    let done = loop {
        let j = s.ok("GET", &format!("/v1/jobs/{jid}"), None);
        let done = j["progress"]["done"].as_u64().unwrap();
        if done >= 3 {
            break done;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{j}");
        std::thread::sleep(Duration::from_millis(10));
    };
    s.kill9();

    let s = Server::start(&data, &env_refs(&env[..1]), &[]);
    let j = s.wait_job(&jid, Duration::from_secs(60));
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_eq!(
        (&j["attempts"], &j["crashes"]),
        (&json!(2), &json!(1)),
        "{j}"
    );
    let result = &s.ok("GET", &format!("/v1/searches/{id}"), None)["result"];
    let (made, reused) = (
        result["evaluations"].as_u64().unwrap(),
        result["reused"].as_u64().unwrap(),
    );
    assert!(
        reused >= done,
        "{done} measured before the kill, {reused} reused: {result}"
    );
    assert!(made + reused <= budget, "{result}");
    assert!(!result["front"].as_array().unwrap().is_empty(), "{result}");
    s.stop();
}
