//! `bitplan serve`: configuration, start-up (lock, migrations, job recovery, demo), the HTTP
//! listener and the job runner, and graceful shutdown on SIGTERM or Ctrl-C.

use crate::app::{AppState, Config};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory: the SQLite database and the blob store.
    #[arg(long, env = "BITPLAN_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, env = "BITPLAN_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Load the digits-cnn demo supernet (manifest, model, validation set, a plan and its
    /// evaluation) unless it is already there.
    #[arg(long, env = "BITPLAN_DEMO")]
    pub demo: bool,
    /// Require the bearer token (BITPLAN_API_TOKEN) for reads too, not only writes.
    #[arg(long, env = "BITPLAN_PROTECT_READS")]
    pub protect_reads: bool,
    /// Largest JSON body, bytes.
    #[arg(long, env = "BITPLAN_MAX_JSON_BYTES", default_value_t = Config::MAX_JSON_BYTES)]
    pub max_json_bytes: usize,
    /// Largest model or validation-set upload, bytes.
    #[arg(long, env = "BITPLAN_MAX_UPLOAD_BYTES", default_value_t = Config::MAX_UPLOAD_BYTES)]
    pub max_upload_bytes: u64,
    /// Requests taking longer are answered 503 (event streams and uploads excepted).
    #[arg(long, env = "BITPLAN_REQUEST_TIMEOUT_S", default_value_t = Config::REQUEST_TIMEOUT_S)]
    pub request_timeout_s: f64,
    /// Upper bound on a plan's per-solve time limit, seconds.
    #[arg(long, env = "BITPLAN_MAX_SOLVE_TIME_S", default_value_t = Config::MAX_SOLVE_TIME_S)]
    pub max_solve_time_s: f64,
    /// Jobs run at once.
    #[arg(long, env = "BITPLAN_JOB_WORKERS", default_value_t = Config::JOB_WORKERS)]
    pub job_workers: usize,
    /// Evaluation jobs run at once (each runs ONNX Runtime sessions).
    #[arg(long, env = "BITPLAN_EVAL_CONCURRENCY", default_value_t = Config::EVAL_CONCURRENCY)]
    pub eval_concurrency: usize,
    /// Intra-op threads per ONNX Runtime session.
    #[arg(long, env = "BITPLAN_EVAL_THREADS", default_value_t = Config::EVAL_THREADS)]
    pub eval_threads: usize,
    /// The ONNX Runtime shared library (default: beside the executable, then .cache/onnxruntime-*/
    /// in the executable's folder or an ancestor).
    #[arg(long, env = "BITPLAN_ORT_LIB", value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    /// First retry delay of a failed job, seconds (doubles per attempt).
    #[arg(long, env = "BITPLAN_RETRY_BASE_S", default_value_t = Config::RETRY_BASE_S)]
    pub retry_base_s: f64,
    /// Pause after each evaluated candidate or sensitivity measurement, ms, for tests that must
    /// catch a job mid-way: only in builds with the `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    #[arg(long, env = "BITPLAN_EVAL_PAUSE_MS", default_value_t = 0, hide = true)]
    pub eval_pause_ms: u64,
}

impl ServeArgs {
    pub fn config(&self) -> anyhow::Result<Config> {
        let secs = |name: &str, v: f64| {
            anyhow::ensure!(
                v.is_finite() && v > 0.0,
                "--{name} must be a positive number of seconds"
            );
            Ok(Duration::from_secs_f64(v))
        };
        let mut c = Config::new(self.data_dir.clone());
        c.api_token = std::env::var("BITPLAN_API_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        anyhow::ensure!(
            !self.protect_reads || c.api_token.is_some(),
            "--protect-reads needs BITPLAN_API_TOKEN"
        );
        c.protect_reads = self.protect_reads;
        c.max_json_bytes = self.max_json_bytes;
        c.max_upload_bytes = self.max_upload_bytes;
        c.request_timeout = secs("request-timeout-s", self.request_timeout_s)?;
        secs("max-solve-time-s", self.max_solve_time_s)?;
        c.max_solve_time_s = self.max_solve_time_s;
        c.job_workers = self.job_workers.max(1);
        c.eval_concurrency = self.eval_concurrency.max(1);
        c.eval_threads = self.eval_threads.max(1);
        c.ort_lib = self.ort_lib.clone();
        c.retry_base = secs("retry-base-s", self.retry_base_s)?;
        #[cfg(feature = "test-hooks")]
        {
            c.eval_pause = Duration::from_millis(self.eval_pause_ms);
        }
        Ok(c)
    }
}

/// Runs the service until SIGTERM or Ctrl-C.
pub fn run(args: ServeArgs) -> anyhow::Result<u8> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .try_init();
    let config = args.config()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(config, args.addr, args.demo, shutdown_signal()))?;
    Ok(0)
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Opens the data directory, starts the runner and serves until `stop` resolves; then stops
/// taking requests, lets running jobs reach a checkpoint, and closes the database.
pub async fn serve(
    config: Config,
    addr: SocketAddr,
    demo: bool,
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
    let resumed = crate::jobs::recover(&state).await?;
    if resumed > 0 {
        tracing::info!("{resumed} interrupted job(s) queued again");
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

    let runner = tokio::spawn(crate::jobs::run(
        state.clone(),
        state.jobs.stopping.subscribe(),
    ));
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
    if tokio::time::timeout(Duration::from_secs(120), runner)
        .await
        .is_err()
    {
        tracing::warn!("jobs did not reach a checkpoint in 120 s; they resume at the next start");
    }
    state.db.close().await;
    drop(lock);
    Ok(())
}
