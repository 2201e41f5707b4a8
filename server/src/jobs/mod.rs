//! The job runner: claims jobs from the store under a lease, runs up to `job_workers` at once
//! and at most `eval_concurrency` of them running models, and reports how each run ended.
//!
//! It runs in `bitplan worker` processes (which `bitplan serve` starts and supervises, so that a
//! native fault in ONNX Runtime never takes the API down; tests also run it in-process). While a job runs, a heartbeat renews its lease and reads back whether it was
//! cancelled; the job stops at its next checkpoint when it was cancelled, ran past its deadline,
//! lost its lease, or its process is shutting down. Evaluation jobs store each candidate's
//! result in its own transaction, so a crash loses at most the candidate being measured, and a
//! job that runs again skips what is already stored. This module owns the worker loop and job
//! outcomes; each job kind's work lives in its own submodule; the queue itself is `store`'s.

use crate::app::AppState;
use crate::error::ApiError;
use crate::store::{Ending, JobRow, JobStatus, Lease, StoreError, Work, LEASE};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

mod evaluate;
mod fleet;
mod plan;
mod search;
mod sensitivity;

/// How often a running job's lease is renewed and its cancellation read back.
const HEARTBEAT: Duration = Duration::from_millis(500);

/// Writes of a job's outcome tried again after the first fails (within half its lease).
const FINISH_TRIES: u32 = 3;

/// How often a runner gives up the jobs of workers that are gone and fails overdue ones.
const REAP_EVERY: Duration = Duration::from_secs(2);

/// Why a job stopped without finishing.
#[derive(Debug)]
pub struct JobError {
    pub message: String,
    /// Worth another attempt (server-side faults); invalid inputs are not.
    pub retryable: bool,
}

impl JobError {
    fn permanent(message: impl Into<String>) -> JobError {
        JobError {
            message: message.into(),
            retryable: false,
        }
    }
}

impl From<ApiError> for JobError {
    fn from(e: ApiError) -> JobError {
        JobError {
            retryable: e.status.is_server_error(),
            message: e.message,
        }
    }
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> JobError {
        JobError {
            retryable: matches!(e, StoreError::Database(_)),
            message: e.to_string(),
        }
    }
}

impl From<planner::Error> for JobError {
    fn from(e: planner::Error) -> JobError {
        let retryable = matches!(e, planner::Error::Solver(_));
        JobError {
            message: e.to_string(),
            retryable,
        }
    }
}

enum Outcome {
    Done(String),
    Cancelled(String),
    /// Stopped by shutdown: back to the queue, the attempt not counted.
    Interrupted,
    /// The lease was lost: the job is someone else's now; leave it alone.
    Lost,
    Failed(JobError),
}

/// Gives up the jobs a previous run of this service left running (its worker processes died
/// with it), counting the attempt; returns how many. Only on SQLite,
/// where one service runs per data directory, so that at its start every service's lease is a
/// dead one; services sharing a Postgres store leave it to lease expiry.
pub async fn recover(state: &AppState) -> Result<usize, StoreError> {
    if state.db.dialect() != crate::store::Dialect::Sqlite {
        return Ok(0);
    }
    let owners = format!("{SERVICE_OWNER}%");
    let gone = state
        .db
        .release_crashed(Some(&owners), "the service stopped abruptly")
        .await?;
    Ok(gone.len())
}

/// The prefix of the lease owners of a service and the workers it starts.
const SERVICE_OWNER: &str = "serve-";

/// This service's name on leases: the prefix, its pid and a random tag (pids repeat across
/// machines sharing a store).
pub fn service_owner() -> &'static str {
    static OWNER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    OWNER.get_or_init(|| {
        let tag = uuid::Uuid::now_v7().simple().to_string();
        format!(
            "{SERVICE_OWNER}{}-{}",
            std::process::id(),
            &tag[tag.len() - 8..]
        )
    })
}

/// Runs jobs as `owner` until `shutdown` turns true, then waits for the running ones to stop.
pub async fn run(state: AppState, owner: String, mut shutdown: watch::Receiver<bool>) {
    let workers = Arc::new(Semaphore::new(state.config.job_workers.max(1)));
    let evals = Arc::new(Semaphore::new(state.config.eval_concurrency.max(1)));
    let mut running = JoinSet::new();
    // Reaping runs on its own, so that it goes on while every job slot is busy.
    let reaper = {
        let (state, mut shutdown) = (state.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                reap(&state).await;
                tokio::select! {
                    _ = tokio::time::sleep(REAP_EVERY) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        })
    };
    loop {
        while running.try_join_next().is_some() {}
        if *shutdown.borrow() {
            break;
        }
        let worker = tokio::select! {
            p = workers.clone().acquire_owned() => p.expect("semaphore open"),
            _ = shutdown.changed() => break,
        };
        let eval = evals.clone().try_acquire_owned().ok();
        let deadline = state.config.job_deadline;
        match state.db.claim(&owner, eval.is_some(), deadline).await {
            Ok(Some(job)) => {
                let eval = if job.work.runs_models() { eval } else { None };
                let ctx = Ctx::new(state.clone(), job, owner.clone(), shutdown.clone());
                running.spawn(execute(ctx, worker, eval));
            }
            Ok(None) => {
                drop((worker, eval));
                tokio::select! {
                    _ = state.jobs.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = shutdown.changed() => break,
                }
            }
            Err(e) => {
                tracing::error!("cannot claim a job: {e}");
                drop((worker, eval));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    while running.join_next().await.is_some() {}
    reaper.abort();
}

/// Gives up the jobs whose lease ran out (their worker is gone) and fails queued jobs past
/// their deadline.
async fn reap(state: &AppState) {
    match state
        .db
        .release_crashed(None, "its lease ran out (the worker stopped renewing it)")
        .await
    {
        Ok(gone) => {
            for (id, status) in gone {
                tracing::warn!("job {id}: its worker is gone; now {status}");
                state.jobs.changed(&id);
            }
        }
        Err(e) => tracing::error!("cannot release the jobs of dead workers: {e}"),
    }
    if let Err(e) = state.db.expire_deadlines().await {
        tracing::error!("cannot expire job deadlines: {e}");
    }
}

/// Why a running job should stop, as its heartbeat and its process tell it.
#[derive(Debug, Default)]
struct Stops {
    cancel: AtomicBool,
    lost: AtomicBool,
    overdue: AtomicBool,
    /// Raised with any of them, or at shutdown: what a solve inside the job checks.
    halted: Arc<AtomicBool>,
}

impl Stops {
    fn any(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
            || self.lost.load(Ordering::SeqCst)
            || self.overdue.load(Ordering::SeqCst)
    }
}

/// One claimed job, with what it needs to check whether to stop.
struct Ctx {
    state: AppState,
    job: JobRow,
    owner: String,
    stops: Arc<Stops>,
    shutdown: watch::Receiver<bool>,
}

impl Ctx {
    fn new(state: AppState, job: JobRow, owner: String, shutdown: watch::Receiver<bool>) -> Ctx {
        let stops = Stops::default();
        stops.cancel.store(job.cancel_requested, Ordering::SeqCst);
        Ctx {
            state,
            job,
            owner,
            stops: Arc::new(stops),
            shutdown,
        }
    }

    /// The supernet the job works on (every job has one).
    fn supernet_id(&self) -> Result<String, JobError> {
        self.job.supernet_id.clone().ok_or_else(|| {
            JobError::permanent(format!("a {} job without a supernet", self.job.work.kind()))
        })
    }

    /// The (fleet) plan the job works for.
    fn plan_id(&self) -> Result<String, JobError> {
        self.job.plan_id.clone().ok_or_else(|| {
            JobError::permanent(format!("a {} job without its plan", self.job.work.kind()))
        })
    }

    /// Whether to stop here, and how: the lease lost, cancelled by a user, past the deadline,
    /// or the process shutting down.
    fn checkpoint(&self) -> Option<Outcome> {
        if self.stops.lost.load(Ordering::SeqCst) {
            Some(Outcome::Lost)
        } else if self.stops.cancel.load(Ordering::SeqCst) {
            Some(Outcome::Cancelled("cancelled".into()))
        } else if self.stops.overdue.load(Ordering::SeqCst)
            // The solve's halt stops at the deadline itself, maybe before the heartbeat's tick.
            || self
                .job
                .deadline_at
                .is_some_and(|d| crate::store::now_ms() >= d)
        {
            Some(Outcome::Failed(JobError::permanent(format!(
                "the job ran past its deadline ({} s from its first start)",
                self.state.config.job_deadline.as_secs_f64()
            ))))
        } else if *self.shutdown.borrow() {
            Some(Outcome::Interrupted)
        } else {
            None
        }
    }

    /// What stops a solve inside this job: any reason to stop (raised by the heartbeat), and
    /// the job's deadline.
    fn halt(&self) -> planner::Halt {
        let deadline = self.job.deadline_at.map(|at| {
            let left = u64::try_from(at - crate::store::now_ms()).unwrap_or(0);
            Instant::now() + Duration::from_millis(left)
        });
        planner::Halt::new(self.stops.halted.clone(), deadline)
    }

    /// The job as this worker holds it: what its results are written under.
    fn held(&self) -> crate::store::Held<'_> {
        crate::store::Held {
            id: &self.job.id,
            owner: &self.owner,
        }
    }

    /// Records the job's progress and tells its watchers.
    async fn progress(&self, done: usize, message: &str) -> Result<(), StoreError> {
        self.state.db.progress(self.held(), done, message).await?;
        self.state.jobs.changed(&self.job.id);
        Ok(())
    }
}

/// Renews the job's lease until dropped, raising its stop flags when it was cancelled, lost,
/// or ran past its deadline.
fn heartbeat(ctx: &Ctx) -> tokio::task::JoinHandle<()> {
    let db = ctx.state.db.clone();
    let (id, owner) = (ctx.job.id.clone(), ctx.owner.clone());
    let stops = ctx.stops.clone();
    let deadline = ctx.job.deadline_at;
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        // Time since the last renewal that went through, not a count of failures: one renewal
        // can wait out SQLite's busy timeout. Past half the lease, the job may be someone else's.
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            if deadline.is_some_and(|d| crate::store::now_ms() >= d) {
                stops.overdue.store(true, Ordering::SeqCst);
            }
            let lost = match tokio::time::timeout(LEASE / 4, db.renew(&id, &owner)).await {
                Ok(Ok(Lease::Held { cancel })) => {
                    renewed = Instant::now();
                    if cancel {
                        stops.cancel.store(true, Ordering::SeqCst);
                    }
                    false
                }
                Ok(Ok(Lease::Lost)) => true,
                Ok(Err(e)) => {
                    tracing::warn!("job {id}: cannot renew its lease: {e}");
                    renewed.elapsed() >= LEASE / 2
                }
                Err(_) => {
                    tracing::warn!("job {id}: renewing its lease took over {:?}", LEASE / 4);
                    renewed.elapsed() >= LEASE / 2
                }
            };
            if lost {
                tracing::warn!("job {id}: lease lost; stopping without recording anything");
                stops.lost.store(true, Ordering::SeqCst);
            }
            // Any reason to stop, raised this tick, reaches a solve inside the job at once.
            if stops.any() || *shutdown.borrow() {
                stops.halted.store(true, Ordering::SeqCst);
            }
            if lost {
                return;
            }
        }
    })
}

async fn execute(ctx: Ctx, _worker: OwnedSemaphorePermit, _eval: Option<OwnedSemaphorePermit>) {
    ctx.state.jobs.changed(&ctx.job.id);
    let beat = heartbeat(&ctx);
    let outcome = match ctx.checkpoint() {
        Some(o) => o,
        None => match &ctx.job.work {
            Work::Plan {} => plan::run(&ctx).await,
            Work::Evaluate(work) => evaluate::run(&ctx, work).await,
            Work::Fleet {} => fleet::run(&ctx).await,
            Work::Sensitivity(work) => sensitivity::run(&ctx, work).await,
            Work::Search {} => search::run(&ctx).await,
        }
        .unwrap_or_else(Outcome::Failed),
    };
    beat.abort();
    if let Err(e) = finish(&ctx, outcome).await {
        tracing::error!("job {}: cannot record its outcome: {e}", ctx.job.id);
    }
    ctx.state.jobs.changed(&ctx.job.id);
}

async fn finish(ctx: &Ctx, outcome: Outcome) -> Result<(), StoreError> {
    let job = &ctx.job;
    let ending = match outcome {
        Outcome::Lost => return Ok(()),
        Outcome::Done(m) => Ending::Succeeded(m),
        Outcome::Cancelled(m) => Ending::Cancelled(m),
        Outcome::Interrupted => {
            Ending::Interrupted("interrupted by shutdown; resumes at the next start".into())
        }
        Outcome::Failed(e) if e.retryable && job.attempts < job.max_attempts => {
            let delay = ctx.state.config.retry_base * (1u32 << (job.attempts - 1).clamp(0, 16));
            tracing::warn!(
                "job {} attempt {} failed: {}",
                job.id,
                job.attempts,
                e.message
            );
            Ending::Retry {
                error: e.message,
                delay,
            }
        }
        Outcome::Failed(e) => {
            tracing::warn!("job {} failed: {}", job.id, e.message);
            Ending::Failed(e.message)
        }
    };
    // A failed write is tried again while the lease still stands (the heartbeat has stopped):
    // otherwise the job would wait out its lease and count as a crash.
    let mut tries = 0;
    let recorded = loop {
        match ctx.state.db.finish(job, &ctx.owner, ending.clone()).await {
            Ok(r) => break r,
            Err(e) if tries < FINISH_TRIES => {
                tries += 1;
                tracing::warn!("job {}: cannot record its outcome yet: {e}", job.id);
                tokio::time::sleep(LEASE / 8).await;
            }
            Err(e) => return Err(e),
        }
    };
    match recorded {
        Some(JobStatus::Queued) => ctx.state.jobs.wake.notify_one(),
        Some(status) => ctx
            .state
            .metrics
            .job_finished(job.work.kind(), status.as_str()),
        None => tracing::warn!("job {}: its lease was lost before it finished", job.id),
    }
    Ok(())
}

/// What measuring a supernet needs: its model and validation set, its manifest, and where ONNX
/// Runtime is.
struct Inputs {
    model_hash: String,
    data_hash: String,
    model: Vec<u8>,
    data: Vec<u8>,
    manifest: Arc<planner::Manifest>,
    library: std::path::PathBuf,
    threads: usize,
    max_npz_bytes: u64,
}

impl Inputs {
    async fn load(state: &AppState, supernet_id: &str) -> Result<Inputs, JobError> {
        let supernet = state.db.supernet(supernet_id).await?;
        let (Some(model_hash), Some(data_hash)) = (supernet.model_hash, supernet.data_hash) else {
            return Err(JobError::permanent(
                "the supernet has no model or validation set any more",
            ));
        };
        let inputs = Inputs {
            model: state.blobs.read(&model_hash).await?,
            data: state.blobs.read(&data_hash).await?,
            model_hash,
            data_hash,
            manifest: state.manifest(supernet_id).await?,
            library: crate::runtime::ort_library(state.config.ort_lib.as_deref())
                .map_err(JobError::permanent)?,
            threads: state.config.eval_threads,
            max_npz_bytes: state.config.max_npz_bytes,
        };
        state.config.crash_point(&inputs.manifest.name);
        Ok(inputs)
    }

    /// The runtime, the parsed model and the validation set (blocking work).
    fn open(
        &self,
    ) -> planner::Result<(
        planner::eval::ort_backend::OrtBackend,
        planner::eval::onnx::OnnxModel,
        planner::eval::npz::ValidationSet,
    )> {
        Ok((
            planner::eval::ort_backend::OrtBackend::new(&self.library, self.threads)?,
            planner::eval::onnx::OnnxModel::from_bytes(&self.model)?,
            planner::eval::npz::ValidationSet::from_npz_within(&self.data, self.max_npz_bytes)?,
        ))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, JobError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| JobError {
        message: format!("evaluation task: {e}"),
        retryable: true,
    })
}
