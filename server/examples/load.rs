//! Loopback load driver for `bitplan serve`: starts the real binary on a fresh data directory,
//! then runs C concurrent clients for a fixed duration against
//!   1. `GET /healthz` (the HTTP floor, as a baseline in the same run), and
//!   2. `POST /v1/supernets/{id}/plans`: single-solve plans (a size budget varying per request)
//!      on a ResNet-50-scale manifest, each stored with its candidate.
//!
//! Prints requests per second, p50/p99 latency and errors for both.
//!
//! `cargo run --release --example load -- [--clients 32] [--seconds 10] [--manifest M.json]`

use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Phase {
    requests: usize,
    errors: usize,
    seconds: f64,
    latencies_ms: Vec<f64>,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    fn quantile(&self, q: f64) -> f64 {
        let mut v = self.latencies_ms.clone();
        v.sort_by(f64::total_cmp);
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    }

    fn line(&self, name: &str) -> String {
        format!(
            "{name}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors ({} requests in {:.1} s)",
            self.rate(),
            self.quantile(0.5),
            self.quantile(0.99),
            self.errors,
            self.requests,
            self.seconds
        )
    }
}

/// Runs `clients` loops of `request(client, i)` for `seconds`.
async fn phase<F, Fut>(clients: usize, seconds: f64, request: F) -> Phase
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut i = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                if !request(c, i).await {
                    errors += 1;
                }
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                i += 1;
            }
            (lat, errors)
        }));
    }
    let mut out = Phase {
        requests: 0,
        errors: 0,
        seconds: 0.0,
        latencies_ms: Vec::new(),
    };
    for t in tasks {
        let (lat, errors) = t.await.unwrap();
        out.requests += lat.len();
        out.errors += errors;
        out.latencies_ms.extend(lat);
    }
    out.seconds = started.elapsed().as_secs_f64();
    out
}

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let clients = arg("--clients", 32.0) as usize;
    let seconds = arg("--seconds", 10.0);
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().unwrap().parent().unwrap().join("bitplan");
    let dir = tempfile::tempdir().unwrap();
    // The store: the embedded SQLite, or Postgres at `--database-url`.
    let database = std::env::args()
        .skip_while(|a| a != "--database-url")
        .nth(1);
    let mut command = Command::new(&binary);
    if let Some(url) = &database {
        command.env("BITPLAN_DATABASE_URL", url);
    }
    let mut child = command
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e} (cargo build --release first)",
                binary.display()
            )
        });
    let line = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let base = line
        .trim_start_matches("bitplan: listening on ")
        .to_string();

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap();
    let manifest = match std::env::args().skip_while(|a| a != "--manifest").nth(1) {
        Some(path) => {
            planner::Manifest::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap()
        }
        None => planner::problem::synth::resnet50(50),
    };
    let max_size = planner::Problem::new(&manifest, None)
        .unwrap()
        .max_cost(planner::CostKind::Size);
    let sn: serde_json::Value = http
        .post(format!("{base}/v1/supernets"))
        .json(&manifest.to_json())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sn = sn["id"].as_str().unwrap().to_string();
    println!(
        "bitplan serve on {base}, store {}; {clients} clients, {seconds} s per phase; manifest {} ({} layers)",
        if database.is_some() { "Postgres" } else { "SQLite" },
        manifest.name,
        manifest.layers.len()
    );

    let (h, b) = (http.clone(), base.clone());
    let health =
        phase(clients, seconds.min(3.0), move |_, _| {
            let (h, b) = (h.clone(), b.clone());
            async move {
                matches!(h.get(format!("{b}/healthz")).send().await, Ok(r) if r.status() == 200)
            }
        })
        .await;
    println!("{}", health.line("GET /healthz (baseline)"));

    let url = format!("{base}/v1/supernets/{sn}/plans");
    let plans = phase(clients, seconds, move |c, i| {
        let (h, url) = (http.clone(), url.clone());
        // Budgets from 35% to 95% of the all-highest size, different per request.
        let frac = 0.35 + 0.6 * (((c * 7919 + i * 104_729) % 1000) as f64 / 1000.0);
        let body = json!({"budgets": {"max_size_bytes": frac * max_size}});
        async move { matches!(h.post(&url).json(&body).send().await, Ok(r) if r.status() == 201) }
    })
    .await;
    println!("{}", plans.line("POST plans (single solve, stored)"));
    println!(
        "plans: {:.0} req/s = {:.2}x of the /healthz floor; target >= 1000 req/s, p99 <= 50 ms, 0 errors: {}",
        plans.rate(),
        plans.rate() / health.rate(),
        if plans.rate() >= 1000.0 && plans.quantile(0.99) <= 50.0 && plans.errors == 0 {
            "met"
        } else {
            "MISSED"
        }
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
