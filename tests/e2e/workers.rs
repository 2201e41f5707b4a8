//! Worker processes under `bitplan serve`: a worker killed mid-job is replaced, the job runs again
//! from what was stored and its attempts count; a job that kills its worker every time fails
//! after its attempts with the reason, while every other job finishes and the API answers
//! throughout.

use crate::serve::{digits_named, env_refs, ort_env, Server};
use serde_json::{json, Value};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The processes whose parent is `parent`, from /proc.
fn children(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: the command may hold spaces, so read after its last ')'.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: u32 = after.split(' ').nth(1).unwrap().parse().unwrap();
        if ppid == parent {
            out.push(pid);
        }
    }
    out
}

/// Polls `/healthz` until dropped; counts the polls and the failed ones.
struct HealthWatch {
    stop: Arc<AtomicBool>,
    polls: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HealthWatch {
    fn start(base: &str) -> HealthWatch {
        let (stop, polls, failures) = (Arc::default(), Arc::default(), Arc::default());
        let (s, p, f): (Arc<AtomicBool>, Arc<AtomicUsize>, Arc<AtomicUsize>) =
            (Arc::clone(&stop), Arc::clone(&polls), Arc::clone(&failures));
        let url = format!("{base}/healthz");
        let thread = std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            while !s.load(Ordering::SeqCst) {
                p.fetch_add(1, Ordering::SeqCst);
                let ok = http.get(&url).send().is_ok_and(|r| r.status().is_success());
                if !ok {
                    f.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        HealthWatch {
            stop,
            polls,
            failures,
            thread: Some(thread),
        }
    }

    /// Stops polling; returns (polls, failures).
    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        (
            self.polls.load(Ordering::SeqCst),
            self.failures.load(Ordering::SeqCst),
        )
    }
}

fn sigkill(pid: u32) {
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -KILL {pid}");
}

/// The evaluated candidates of a plan: id and stored metrics.
fn evaluated(s: &Server, plan: &str) -> Vec<(String, Value)> {
    s.ok(
        "GET",
        &format!("/v1/plans/{plan}/candidates?evaluated=true"),
        None,
    )["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap().to_string(), c["metrics"].clone()))
        .collect()
}

fn wait_progress(s: &Server, job: &str, done: u64) {
    let started = Instant::now();
    loop {
        let j = s.ok("GET", &format!("/v1/jobs/{job}"), None);
        if j["status"] == "running" && j["progress"]["done"].as_u64().unwrap() >= done {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{j}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_worker_killed_mid_job_twice_is_replaced_and_every_result_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut env = ort_env();
    env.push(("BITPLAN_EVAL_PAUSE_MS", "60".into()));
    let s = Server::start(&data, &env_refs(&env), &["--workers", "2"]);
    let sn = digits_named(&s, "digits-cnn");
    let plan = s.ok(
        "POST",
        &format!("/v1/supernets/{sn}/plans"),
        Some(&json!({"pareto": "size"})),
    );
    let pid = plan["id"].as_str().unwrap().to_string();
    let total = plan["candidate_count"].as_u64().unwrap();
    assert!(total >= 30, "{total}");
    let health = HealthWatch::start(&s.base);
    let job = s.ok(
        "POST",
        &format!("/v1/plans/{pid}/evaluations"),
        Some(&json!({})),
    );
    let jid = job["id"].as_str().unwrap().to_string();

    let mut kept: Vec<(String, Value)> = Vec::new();
    let mut killed: Vec<u32> = Vec::new();
    for round in 1..=2u64 {
        wait_progress(&s, &jid, 5 * round);
        let workers = children(s.pid());
        assert_eq!(workers.len(), 2, "two worker processes: {workers:?}");
        // Every worker dies, the one running the job with them.
        for w in &workers {
            sigkill(*w);
        }
        killed.extend(&workers);
        kept = evaluated(&s, &pid);
        assert!((kept.len() as u64) < total, "{}", kept.len());
    }

    let j = s.wait_job(&jid, Duration::from_secs(120));
    let (polls, failures) = health.finish();
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_eq!(j["attempts"], 3, "both killed runs count: {j}");
    assert_eq!(j["crashes"], 2, "{j}");
    assert_eq!(j["progress"]["done"], total, "{j}");
    assert!(polls >= 10, "{polls}");
    assert_eq!(failures, 0, "the API answered throughout ({polls} polls)");
    // What the killed workers stored is kept, not measured again: every result once.
    let after = evaluated(&s, &pid);
    assert_eq!(after.len() as u64, total);
    for (id, metrics) in &kept {
        let now = &after.iter().find(|(a, _)| a == id).unwrap().1;
        assert_eq!(now, metrics, "candidate {id}: a stored result changed");
    }
    // The supervisor started new workers in place of the killed ones.
    let workers = children(s.pid());
    assert_eq!(workers.len(), 2, "{workers:?}");
    assert!(workers.iter().all(|w| !killed.contains(w)), "{workers:?}");
    assert!(s.log().contains("signal 9 (SIGKILL)"), "{}", s.log());
    s.stop();
}

#[test]
fn a_job_that_kills_its_worker_fails_after_its_attempts_while_the_others_finish() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut env = ort_env();
    env.push(("BITPLAN_CRASH_ON_SUPERNET", "poison".into()));
    // Two workers: the poison job keeps killing one while the other runs the good job (each runs
    // one model-running job at a time, so no job shares a process with the poison).
    let s = Server::start(&data, &env_refs(&env), &["--workers", "2"]);
    let health = HealthWatch::start(&s.base);
    let mut jobs = Vec::new();
    for name in ["poison", "digits-cnn"] {
        let sn = digits_named(&s, name);
        let plan = s.ok(
            "POST",
            &format!("/v1/supernets/{sn}/plans"),
            Some(&json!({"pareto": "size", "points": 4})),
        );
        let pid = plan["id"].as_str().unwrap();
        let job = s.ok(
            "POST",
            &format!("/v1/plans/{pid}/evaluations"),
            Some(&json!({})),
        );
        jobs.push(job["id"].as_str().unwrap().to_string());
    }
    let poison = s.wait_job(&jobs[0], Duration::from_secs(120));
    let good = s.wait_job(&jobs[1], Duration::from_secs(120));
    let (polls, failures) = health.finish();
    assert_eq!(poison["status"], "failed", "{poison}");
    assert_eq!(poison["attempts"], 3, "{poison}");
    assert_eq!(poison["crashes"], 3, "{poison}");
    assert_eq!(
        poison["error"], "worker died 3 times: signal 6 (SIGABRT)",
        "{poison}"
    );
    assert_eq!(good["status"], "succeeded", "{good}");
    assert_eq!(good["attempts"], 1, "{good}");
    assert_eq!(failures, 0, "the API answered throughout ({polls} polls)");
    // The poisoned supernet's plan is still there and untouched; its evaluation simply failed.
    let listed = s.ok("GET", "/v1/jobs?status=failed", None);
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1, "{listed}");
    s.stop();
}

/// A `bitplan worker` process on a shared store, started by hand as an operator would.
struct Worker {
    child: std::process::Child,
}

impl Worker {
    fn start(owner: &str, data: &std::path::Path, env: &[(&str, &str)]) -> Worker {
        let log = data.with_extension(format!("{owner}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bitplan"));
        cmd.args(["worker", "--owner", owner, "--job-workers", "1"])
            .arg("--data-dir")
            .arg(data.with_extension(owner))
            .arg("--blob-dir")
            .arg(data.join("blobs"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Worker {
            child: cmd.spawn().unwrap(),
        }
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The running jobs and the workers holding them.
fn running(s: &Server) -> Vec<(String, String)> {
    s.ok("GET", "/v1/jobs?status=running&limit=1000", None)["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| Some((j["id"].as_str()?.into(), j["worker"].as_str()?.into())))
        .collect()
}

fn succeeded(s: &Server) -> usize {
    s.ok("GET", "/v1/jobs?status=succeeded&limit=1000", None)["jobs"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn on_postgres_an_api_and_three_workers_run_200_jobs_through_two_sigkills_exactly_once() {
    let db = crate::pg::TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut env = ort_env();
    env.push(("BITPLAN_DATABASE_URL", db.url.clone()));
    let s = Server::start(&data, &env_refs(&env), &["--workers", "0"]);
    // 5 supernets × 40 candidates: 200 distinct measurements, one job each.
    let mut jobs = Vec::new();
    let mut plans = Vec::new();
    for k in 0..5 {
        let sn = digits_named(&s, &format!("digits-{k}"));
        let plan = s.ok(
            "POST",
            &format!("/v1/supernets/{sn}/plans"),
            Some(&json!({"pareto": "size"})),
        );
        let pid = plan["id"].as_str().unwrap().to_string();
        let candidates = s.ok("GET", &format!("/v1/plans/{pid}/candidates?limit=40"), None);
        for c in candidates["candidates"].as_array().unwrap() {
            let job = s.ok(
                "POST",
                &format!("/v1/plans/{pid}/evaluations"),
                Some(&json!({"candidate_ids": [c["id"]]})),
            );
            jobs.push(job["id"].as_str().unwrap().to_string());
        }
        plans.push(pid);
    }
    assert_eq!(jobs.len(), 200);

    let mut worker_env = env_refs(&env);
    worker_env.push(("BITPLAN_EVAL_PAUSE_MS", "200"));
    let health = HealthWatch::start(&s.base);
    let mut workers: Vec<(String, Worker)> = (0..3)
        .map(|i| {
            let owner = format!("w{i}");
            let w = Worker::start(&owner, &data, &worker_env);
            (owner, w)
        })
        .collect();
    // Twice: once jobs are flowing, SIGKILL a worker in the middle of its job, and start another
    // in its place as an orchestrator would. Its job waits for the lease to run out.
    let mut killed: Vec<String> = Vec::new();
    for (round, after) in [(0, 20), (1, 80)] {
        let started = Instant::now();
        let (job, owner) = loop {
            let busy = running(&s);
            if succeeded(&s) >= after {
                if let Some(found) = busy.into_iter().find(|(_, w)| w.starts_with('w')) {
                    break found;
                }
            }
            assert!(started.elapsed() < Duration::from_secs(120), "no job ran");
            std::thread::sleep(Duration::from_millis(20));
        };
        let slot = workers.iter().position(|(o, _)| *o == owner).unwrap();
        workers[slot].1.kill9();
        killed.push(job);
        let fresh = format!("r{round}");
        workers[slot] = (fresh.clone(), Worker::start(&fresh, &data, &worker_env));
    }

    let mut outcomes = Vec::new();
    for id in &jobs {
        outcomes.push(s.wait_job(id, Duration::from_secs(300)));
    }
    let (polls, failures) = health.finish();
    for j in &outcomes {
        assert_eq!(j["status"], "succeeded", "{j}");
        assert_eq!(j["progress"]["done"], 1, "{j}");
    }
    for id in &killed {
        let j = outcomes.iter().find(|j| j["id"] == id.as_str()).unwrap();
        assert_eq!(j["attempts"], 2, "the killed run counts: {j}");
        assert_eq!(j["crashes"], 1, "{j}");
    }
    let crashed = outcomes.iter().filter(|j| j["crashes"] != 0).count();
    assert_eq!(crashed, 2, "only the two killed jobs crashed");
    for j in outcomes
        .iter()
        .filter(|j| !killed.iter().any(|k| j["id"] == k.as_str()))
    {
        assert_eq!(j["attempts"], 1, "{j}");
    }
    // Every measurement stored once: 40 per plan, 200 in all.
    for pid in &plans {
        let page = s.ok(
            "GET",
            &format!("/v1/plans/{pid}/candidates?evaluated=true&limit=1"),
            None,
        );
        assert_eq!(page["total"], 40, "{pid}");
    }
    assert_eq!(failures, 0, "the API answered throughout ({polls} polls)");
    s.stop();
}
