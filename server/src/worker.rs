//! Worker processes. `bitplan worker` claims jobs from the data directory's store and runs them
//! (`crate::jobs`); `bitplan serve` starts `--workers N` of them and supervises them here: a
//! worker that dies (a native fault in ONNX Runtime, out of memory, SIGKILL) is seen at once,
//! the jobs it held are given up with the reason (the attempt counts), and it is started again.
//! Workers die with the service that started them (Linux's parent-death signal), so a service
//! that is itself killed leaves none behind to hold leases.

use crate::app::{AppState, Config};
use clap::Args;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What a worker is told: where the store is and how to run jobs. `bitplan serve` takes the same
/// flags and hands them on to the workers it starts.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Data directory: the SQLite database (unless --database-url) and the blob store (unless
    /// --blob-dir).
    #[arg(long, env = "BITPLAN_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// The store on PostgreSQL, `postgres://USER@HOST:PORT/DB`, shared by every service and worker
    /// (default: SQLite in the data directory).
    #[arg(
        long,
        env = "BITPLAN_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// The blob folder (models, validation sets), which every worker must reach: local disk on
    /// one machine, a shared mount across machines (default: DATA_DIR/blobs).
    #[arg(long, env = "BITPLAN_BLOB_DIR", value_name = "DIR")]
    pub blob_dir: Option<PathBuf>,
    /// Jobs a worker runs at once.
    #[arg(long, env = "BITPLAN_JOB_WORKERS", default_value_t = Config::JOB_WORKERS)]
    pub job_workers: usize,
    /// Jobs that run models (evaluations, sensitivity passes, measured fleet plans) a worker runs
    /// at once (each runs ONNX Runtime sessions).
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
    /// How long a job may run, seconds from its first start, before it is stopped and failed.
    #[arg(long, env = "BITPLAN_JOB_DEADLINE_S", default_value_t = Config::JOB_DEADLINE_S)]
    pub job_deadline_s: f64,
    /// Most bytes a validation set's arrays may take, decompressed and held in memory (8 bytes a
    /// value): an upload or an evaluation past it is refused naming the array.
    #[arg(long, env = "BITPLAN_MAX_NPZ_BYTES", default_value_t = planner::eval::npz::MAX_NPZ_BYTES)]
    pub max_npz_bytes: u64,
    /// Upper bound on a plan's per-solve time limit, seconds.
    #[arg(long, env = "BITPLAN_MAX_SOLVE_TIME_S", default_value_t = Config::MAX_SOLVE_TIME_S)]
    pub max_solve_time_s: f64,
    /// Pause after each evaluated candidate or sensitivity measurement, ms, for tests that must
    /// catch a job mid-way: only in builds with the `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    #[arg(long, env = "BITPLAN_EVAL_PAUSE_MS", default_value_t = 0, hide = true)]
    pub eval_pause_ms: u64,
    /// Abort the process when a job starts measuring the supernet of this name, for tests of
    /// workers that die: only in builds with the `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    #[arg(long, env = "BITPLAN_CRASH_ON_SUPERNET", hide = true)]
    pub crash_on_supernet: Option<String>,
}

/// A positive, finite number of seconds from the flag `name`.
pub fn seconds(name: &str, v: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        v.is_finite() && v > 0.0,
        "--{name} must be a positive number of seconds"
    );
    Ok(Duration::from_secs_f64(v))
}

impl WorkerArgs {
    /// The configuration these flags give, on `Config`'s defaults.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut c = Config::new(self.data_dir.clone());
        c.database_url = self.database_url.clone();
        c.blob_dir = self.blob_dir.clone();
        c.job_workers = self.job_workers.max(1);
        c.eval_concurrency = self.eval_concurrency.max(1);
        c.eval_threads = self.eval_threads.max(1);
        c.ort_lib = self.ort_lib.clone();
        c.retry_base = seconds("retry-base-s", self.retry_base_s)?;
        c.job_deadline = seconds("job-deadline-s", self.job_deadline_s)?;
        seconds("max-solve-time-s", self.max_solve_time_s)?;
        c.max_solve_time_s = self.max_solve_time_s;
        c.max_npz_bytes = self.max_npz_bytes;
        #[cfg(feature = "test-hooks")]
        {
            c.eval_pause = Duration::from_millis(self.eval_pause_ms);
            c.crash_on = self.crash_on_supernet.clone();
        }
        Ok(c)
    }

    /// The same flags on a worker's command line.
    fn to_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = Vec::new();
        let mut flag = |name: &str, value: OsString| {
            out.push(format!("--{name}").into());
            out.push(value);
        };
        flag("data-dir", self.data_dir.clone().into());
        if let Some(dir) = &self.blob_dir {
            flag("blob-dir", dir.clone().into());
        }
        flag("job-workers", self.job_workers.to_string().into());
        flag("eval-concurrency", self.eval_concurrency.to_string().into());
        flag("eval-threads", self.eval_threads.to_string().into());
        if let Some(lib) = &self.ort_lib {
            flag("ort-lib", lib.clone().into());
        }
        flag("retry-base-s", self.retry_base_s.to_string().into());
        flag("job-deadline-s", self.job_deadline_s.to_string().into());
        flag("max-solve-time-s", self.max_solve_time_s.to_string().into());
        flag("max-npz-bytes", self.max_npz_bytes.to_string().into());
        #[cfg(feature = "test-hooks")]
        {
            flag("eval-pause-ms", self.eval_pause_ms.to_string().into());
            if let Some(name) = &self.crash_on_supernet {
                flag("crash-on-supernet", name.clone().into());
            }
        }
        out
    }
}

/// `bitplan worker`.
#[derive(Debug, Args)]
pub struct WorkerCommand {
    #[command(flatten)]
    pub args: WorkerArgs,
    /// The name this worker's leases carry (default: `worker-<pid>-<random>`).
    #[arg(long, hide = true)]
    pub owner: Option<String>,
    /// The service that started this worker: the worker dies with it.
    #[arg(long, hide = true)]
    pub parent_pid: Option<u32>,
}

/// Makes this process die with its parent `parent` (Linux's parent-death signal), so that no
/// worker outlives the service holding leases; fails when the parent is already gone.
fn die_with(parent: u32) -> anyhow::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    // The parent may have died before the signal was set up.
    let now = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32);
    anyhow::ensure!(
        now == parent,
        "the service that started this worker ({parent}) is gone"
    );
    Ok(())
}

/// Runs jobs until SIGTERM or Ctrl-C; then lets the running ones reach a checkpoint.
pub fn run(cmd: WorkerCommand) -> anyhow::Result<u8> {
    crate::process::init_tracing();
    if let Some(parent) = cmd.parent_pid {
        die_with(parent)?;
    }
    let config = cmd.args.config()?;
    let owner = cmd.owner.unwrap_or_else(|| {
        let tag = uuid::Uuid::now_v7().simple().to_string();
        format!("worker-{}-{}", std::process::id(), &tag[tag.len() - 8..])
    });
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let state = AppState::open(config).await?;
            tracing::info!(
                "worker {owner} running jobs of {}",
                state.config.data_dir.display()
            );
            let hub = state.jobs.clone();
            tokio::spawn(async move {
                crate::process::shutdown_signal().await;
                hub.shutdown();
            });
            crate::jobs::run(state.clone(), owner, state.jobs.stopping.subscribe()).await;
            state.db.close().await;
            anyhow::Ok(())
        })?;
    Ok(0)
}

/// Starts `count` worker processes and keeps them running until `stop` turns true; then stops
/// them (SIGTERM, so their jobs reach a checkpoint and go back to the queue) and waits.
pub async fn supervise(
    state: AppState,
    args: WorkerArgs,
    count: usize,
    stop: watch::Receiver<bool>,
) {
    let mut slots = tokio::task::JoinSet::new();
    for slot in 0..count {
        slots.spawn(keep_running(
            state.clone(),
            args.clone(),
            slot,
            stop.clone(),
        ));
    }
    while slots.join_next().await.is_some() {}
}

/// Restart delays after a worker dies: doubling from the first, reset after a healthy minute.
const FIRST_RESTART: Duration = Duration::from_millis(250);
const LAST_RESTART: Duration = Duration::from_secs(30);
const HEALTHY: Duration = Duration::from_secs(60);
/// How long a stopping worker may take to reach its jobs' checkpoints.
pub const STOP_GRACE: Duration = Duration::from_secs(120);

/// Runs worker number `slot`, starting it again whenever it dies.
async fn keep_running(
    state: AppState,
    args: WorkerArgs,
    slot: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut delay = FIRST_RESTART;
    for generation in 0u64.. {
        if *stop.borrow() {
            return;
        }
        let owner = format!("{}-w{slot}-{generation}", crate::jobs::service_owner());
        let started = Instant::now();
        let status = match run_worker(&args, &owner, &mut stop).await {
            Ok(Some(status)) => status,
            Ok(None) => return,
            Err(e) => {
                tracing::error!("cannot start worker {owner}: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(LAST_RESTART) => continue,
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        };
        let reason = describe(status);
        tracing::error!("worker {owner} died: {reason}");
        match state.db.release_crashed(Some(&owner), &reason).await {
            Ok(jobs) => {
                for (id, status) in jobs {
                    tracing::warn!("job {id}: its worker died ({reason}); now {status}");
                    state.jobs.changed(&id);
                }
            }
            Err(e) => tracing::error!("cannot release the jobs of worker {owner}: {e}"),
        }
        delay = if started.elapsed() >= HEALTHY {
            FIRST_RESTART
        } else {
            (delay * 2).min(LAST_RESTART)
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Runs one worker process until it exits (its status) or `stop` turns true (`None`, once it
/// has stopped).
async fn run_worker(
    args: &WorkerArgs,
    owner: &str,
    stop: &mut watch::Receiver<bool>,
) -> std::io::Result<Option<ExitStatus>> {
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    // The database URL may carry a password: in the environment, not on the command line.
    if let Some(url) = &args.database_url {
        command.env("BITPLAN_DATABASE_URL", url);
    }
    let mut child = command
        .arg("worker")
        .args(args.to_args())
        .arg("--owner")
        .arg(owner)
        .arg("--parent-pid")
        .arg(std::process::id().to_string())
        .spawn()?;
    let stopped = tokio::select! {
        status = child.wait() => return Ok(Some(status?)),
        stopped = stop.wait_for(|s| *s) => stopped.is_ok(),
    };
    if stopped {
        if let Some(pid) = child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "worker {owner} did not stop in {} s; killing it",
            STOP_GRACE.as_secs()
        );
        let _ = child.kill().await;
    }
    Ok(None)
}

/// How a worker ended, in words: `signal 9 (SIGKILL)` or `exit code 101`.
fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(signal) = status.signal() {
        let name = match signal {
            libc::SIGKILL => " (SIGKILL)",
            libc::SIGABRT => " (SIGABRT)",
            libc::SIGSEGV => " (SIGSEGV)",
            libc::SIGBUS => " (SIGBUS)",
            libc::SIGTERM => " (SIGTERM)",
            _ => "",
        };
        format!("signal {signal}{name}")
    } else {
        match status.code() {
            Some(code) => format!("exit code {code}"),
            None => "unknown exit".into(),
        }
    }
}
