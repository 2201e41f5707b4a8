//! `bitplan serve`: configuration, start-up (lock, migrations, job recovery, demo), the HTTP
//! listener and the job runner, and graceful shutdown on SIGTERM or Ctrl-C.

use crate::app::{AppState, Config};
use crate::worker::{seconds, WorkerArgs};
use clap::Args;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub work: WorkerArgs,
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, env = "BITPLAN_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Worker processes that run jobs (evaluations, sensitivity passes, fleet plans, big plans),
    /// so that a crashing evaluation never takes the API down; 0 runs none here (the API alone,
    /// with `bitplan worker` processes elsewhere on a shared store).
    #[arg(long, env = "BITPLAN_WORKERS", default_value_t = ServeArgs::WORKERS)]
    pub workers: usize,
    /// Load the digits-cnn demo supernet (manifest, model, validation set, a plan and its
    /// evaluation) unless it is already there.
    #[arg(long, env = "BITPLAN_DEMO")]
    pub demo: bool,
    /// Require the bearer token (BITPLAN_API_TOKEN) for reads too, not only writes.
    #[arg(long, env = "BITPLAN_PROTECT_READS")]
    pub protect_reads: bool,
    /// Host names requests may be addressed to besides loopback ones, comma-separated (`*`: any).
    /// On a loopback address only localhost, 127.0.0.1 and ::1 are answered unless listed here,
    /// so that a web page whose name resolves to 127.0.0.1 cannot reach the service.
    #[arg(
        long,
        env = "BITPLAN_ALLOWED_HOSTS",
        value_delimiter = ',',
        value_name = "HOSTS"
    )]
    pub allowed_hosts: Vec<String>,
    /// Largest JSON body, bytes.
    #[arg(long, env = "BITPLAN_MAX_JSON_BYTES", default_value_t = Config::MAX_JSON_BYTES)]
    pub max_json_bytes: usize,
    /// Largest model or validation-set upload, bytes.
    #[arg(long, env = "BITPLAN_MAX_UPLOAD_BYTES", default_value_t = Config::MAX_UPLOAD_BYTES)]
    pub max_upload_bytes: u64,
    /// Uploads (models, validation sets) received at once; more are answered 503 with Retry-After.
    #[arg(long, env = "BITPLAN_MAX_UPLOADS", default_value_t = Config::MAX_UPLOADS)]
    pub max_uploads: usize,
    /// Model exports built at once; more are answered 503 with Retry-After.
    #[arg(long, env = "BITPLAN_MAX_EXPORTS", default_value_t = Config::MAX_EXPORTS)]
    pub max_exports: usize,
    /// Plans solved inside their request (pools on small manifests; single solves not answered
    /// from a cached front) at once; more are answered 503 with Retry-After.
    #[arg(long, env = "BITPLAN_MAX_INLINE_SOLVES", default_value_t = Config::MAX_INLINE_SOLVES)]
    pub max_inline_solves: usize,
    /// Jobs waiting in the queue; a request that would queue another is answered 503 with
    /// Retry-After.
    #[arg(long, env = "BITPLAN_MAX_QUEUED_JOBS", default_value_t = Config::MAX_QUEUED_JOBS)]
    pub max_queued_jobs: usize,
    /// Layers a posted manifest may hold (at most 10,000); more are refused with 422.
    #[arg(long, env = "BITPLAN_MAX_LAYERS", default_value_t = planner::MAX_LAYERS)]
    pub max_layers: usize,
    /// Solves a posted plan may need (the optimum, each sweep point, each forced choice of a paper
    /// pool, each point of a front solved point by point; at most 10,000); more are refused with
    /// 422 naming the field with the largest share.
    #[arg(long, env = "BITPLAN_MAX_PLAN_SOLVES", default_value_t = planner::MAX_SOLVES)]
    pub max_plan_solves: usize,
    /// Devices a posted fleet may hold (at most 1,000); more are refused with 422.
    #[arg(long, env = "BITPLAN_MAX_FLEET_DEVICES", default_value_t = planner::solve::fleet::MAX_DEVICES)]
    pub max_fleet_devices: usize,
    /// Requests taking longer are answered 503 (event streams and uploads excepted).
    #[arg(long, env = "BITPLAN_REQUEST_TIMEOUT_S", default_value_t = Config::REQUEST_TIMEOUT_S)]
    pub request_timeout_s: f64,
}

impl ServeArgs {
    /// Worker processes unless `--workers` says otherwise.
    pub const WORKERS: usize = 1;

    pub fn config(&self) -> anyhow::Result<Config> {
        let mut c = self.work.config()?;
        c.api_token = std::env::var("BITPLAN_API_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        anyhow::ensure!(
            !self.protect_reads || c.api_token.is_some(),
            "--protect-reads needs BITPLAN_API_TOKEN"
        );
        c.protect_reads = self.protect_reads;
        c.allowed_hosts = self
            .allowed_hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        c.loopback_hosts_only = self.addr.ip().is_loopback();
        c.max_json_bytes = self.max_json_bytes;
        c.max_upload_bytes = self.max_upload_bytes;
        c.max_uploads = self.max_uploads.max(1);
        c.max_exports = self.max_exports.max(1);
        c.max_inline_solves = self.max_inline_solves.max(1);
        c.max_queued_jobs = self.max_queued_jobs.max(1);
        c.request_timeout = seconds("request-timeout-s", self.request_timeout_s)?;
        c.max_layers = within("max-layers", self.max_layers, planner::MAX_LAYERS)?;
        c.max_plan_solves = within("max-plan-solves", self.max_plan_solves, planner::MAX_SOLVES)?;
        c.max_fleet_devices = within(
            "max-fleet-devices",
            self.max_fleet_devices,
            planner::solve::fleet::MAX_DEVICES,
        )?;
        Ok(c)
    }
}

/// A count flag that may lower a planner's bound but not raise it.
fn within(flag: &str, value: usize, ceiling: usize) -> anyhow::Result<usize> {
    anyhow::ensure!(
        (1..=ceiling).contains(&value),
        "--{flag} must be from 1 to {ceiling}, not {value}"
    );
    Ok(value)
}

/// Runs the service until SIGTERM or Ctrl-C.
pub fn run(args: ServeArgs) -> anyhow::Result<u8> {
    crate::process::init_tracing();
    let config = args.config()?;
    let jobs = match args.workers {
        0 => Jobs::Elsewhere,
        n => Jobs::Workers(args.work.clone(), n),
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(
            config,
            args.addr,
            args.demo,
            jobs,
            crate::process::shutdown_signal(),
        ))?;
    Ok(0)
}

/// Where the service's jobs run.
#[derive(Debug, Clone)]
pub enum Jobs {
    /// Not here: `bitplan worker` processes started by hand run them (on a shared store).
    Elsewhere,
    /// In this many worker processes, started with these flags.
    Workers(WorkerArgs, usize),
}

/// Opens the data directory, starts the runner and serves until `stop` resolves; then stops
/// taking requests, lets running jobs reach a checkpoint, and closes the database.
pub async fn serve(
    config: Config,
    addr: SocketAddr,
    demo: bool,
    jobs: Jobs,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)?;
    // One server per data directory: a second would run the same jobs twice.
    let lock = std::fs::File::create(config.data_dir.join("bitplan.lock"))?;
    if lock.try_lock().is_err() {
        anyhow::bail!(
            "another bitplan serve is using the data directory {}",
            config.data_dir.display()
        );
    }
    let state = AppState::open(config).await?;
    state.blobs.remove_partial_uploads()?;
    let released = crate::jobs::recover(&state).await?;
    if released > 0 {
        tracing::warn!(
            "{released} job(s) left running by an abrupt stop given up (attempts counted)"
        );
    }
    if demo {
        crate::demo::load(&state).await?;
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    // Tests and scripts read this line to find the port.
    println!("bitplan: listening on http://{local}");
    tracing::info!(
        "serving on http://{local} with data in {}",
        state.config.data_dir.display()
    );

    let stopping = state.jobs.stopping.subscribe();
    let runner = match jobs {
        Jobs::Elsewhere => tokio::spawn(async {}),
        Jobs::Workers(args, n) => {
            tokio::spawn(crate::worker::supervise(state.clone(), args, n, stopping))
        }
    };
    tokio::spawn(watch_jobs(state.clone()));
    let hub = state.jobs.clone();
    let mut grace = state.jobs.stopping.subscribe();
    let server = axum::serve(listener, crate::api::router(state.clone())).with_graceful_shutdown(
        async move {
            stop.await;
            tracing::info!("shutting down");
            hub.shutdown();
        },
    );
    tokio::select! {
        r = server => r?,
        // Clients that keep connections open do not hold the shutdown up for long.
        _ = async {
            let _ = grace.wait_for(|s| *s).await;
            tokio::time::sleep(Duration::from_secs(10)).await;
        } => tracing::warn!("connections still open after 10 s; closing them"),
    }
    state.jobs.shutdown();
    // Longer than the workers' own grace, so they bring their jobs to a checkpoint first.
    if tokio::time::timeout(crate::worker::STOP_GRACE + Duration::from_secs(10), runner)
        .await
        .is_err()
    {
        tracing::warn!("jobs did not reach a checkpoint in 120 s; they resume at the next start");
    }
    state.db.close().await;
    drop(lock);
    Ok(())
}

/// How often the service looks for jobs that worker processes changed.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// Tells this process's event streams about jobs changed anywhere (worker processes write the
/// store directly), until the service stops.
async fn watch_jobs(state: AppState) {
    let mut since = crate::store::now_ms();
    let mut stopping = state.jobs.stopping.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(WATCH_EVERY) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        match state.db.jobs_changed_since(since).await {
            Ok((ids, newest)) => {
                for id in ids {
                    state.jobs.changed(&id);
                }
                since = newest;
            }
            Err(e) => tracing::warn!("cannot read job changes: {e}"),
        }
    }
}
