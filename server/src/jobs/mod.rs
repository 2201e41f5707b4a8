//! The durable job runner. Jobs live in SQLite; one runner per process claims them atomically
//! (a single `UPDATE … RETURNING`), runs up to `job_workers` at once and at most
//! `eval_concurrency` evaluations, retries failures with exponential backoff, and honours
//! cancellation between steps. Evaluation jobs store each candidate's result in its own
//! transaction, so a crash loses at most the candidate being measured; on restart, jobs left
//! `running` are queued again and skip what is already stored. This module owns the queue, the
//! worker loop and job outcomes; each job kind's work lives in its own submodule.

use crate::app::AppState;
use crate::error::ApiError;
use crate::store::{self, now_ms, JobRow, JOB_COLUMNS};
use sqlx::{SqliteConnection, SqliteExecutor};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

mod evaluate;
mod fleet;
mod plan;
mod sensitivity;

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

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> JobError {
        JobError {
            message: format!("database: {e}"),
            retryable: true,
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
    Failed(JobError),
}

/// Jobs a previous process left running were interrupted: queue them again.
pub async fn recover(state: &AppState) -> Result<u64, sqlx::Error> {
    let now = now_ms();
    let mut tx = state.db.write.begin().await?;
    let n = sqlx::query(
        "UPDATE jobs SET status = 'queued', attempts = MAX(attempts - 1, 0), run_after = ?, \
         updated_at = ?, message = 'interrupted; resumed after restart' WHERE status = 'running'",
    )
    .bind(now)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    for sql in [
        "UPDATE plans SET status = 'pending', updated_at = ? WHERE status = 'running'",
        "UPDATE fleet_plans SET status = 'pending', updated_at = ? WHERE status = 'running'",
    ] {
        sqlx::query(sql).bind(now).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(n)
}

/// Claims the oldest due job, evaluations only when `evaluations` allows.
async fn claim(state: &AppState, evaluations: bool) -> Result<Option<JobRow>, sqlx::Error> {
    let now = now_ms();
    sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(format!(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, \
         started_at = COALESCE(started_at, ?1), updated_at = ?1, message = 'running' \
         WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND run_after <= ?1 \
           AND (?2 OR kind = 'plan') ORDER BY created_at, id LIMIT 1) \
         RETURNING {JOB_COLUMNS}"
    )))
    .bind(now)
    .bind(evaluations)
    .fetch_optional(&state.db.write)
    .await
}

/// Runs jobs until `shutdown` turns true, then waits for the running ones to stop.
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let workers = Arc::new(Semaphore::new(state.config.job_workers.max(1)));
    let evals = Arc::new(Semaphore::new(state.config.eval_concurrency.max(1)));
    let mut running = JoinSet::new();
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
        match claim(&state, eval.is_some()).await {
            Ok(Some(job)) => {
                let eval = if job.kind == "plan" { None } else { eval };
                running.spawn(execute(state.clone(), job, worker, eval, shutdown.clone()));
            }
            Ok(None) => {
                drop((worker, eval));
                tokio::select! {
                    _ = state.jobs.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
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
}

/// One claimed job, with what it needs to check for cancellation.
struct Ctx {
    state: AppState,
    job: JobRow,
    cancel: Arc<AtomicBool>,
    shutdown: watch::Receiver<bool>,
}

impl Ctx {
    /// The job's stored payload.
    fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_json::from_str(&self.job.payload)
            .map_err(|e| JobError::permanent(format!("stored job payload: {e}")))
    }

    /// The supernet the job works on (every evaluation and sensitivity job has one).
    fn supernet_id(&self) -> Result<String, JobError> {
        self.job.supernet_id.clone().ok_or_else(|| {
            JobError::permanent(format!("a {} job without a supernet", self.job.kind))
        })
    }

    /// Whether to stop here: cancelled by a user, or the server is shutting down.
    fn checkpoint(&self) -> Option<Outcome> {
        if self.cancel.load(Ordering::SeqCst) {
            Some(Outcome::Cancelled("cancelled".into()))
        } else if *self.shutdown.borrow() {
            Some(Outcome::Interrupted)
        } else {
            None
        }
    }
}

async fn execute(
    state: AppState,
    job: JobRow,
    _worker: OwnedSemaphorePermit,
    _eval: Option<OwnedSemaphorePermit>,
    shutdown: watch::Receiver<bool>,
) {
    let cancel = Arc::new(AtomicBool::new(job.cancel_requested != 0));
    state
        .jobs
        .cancel_flags
        .lock()
        .expect("lock")
        .insert(job.id.clone(), cancel.clone());
    state.jobs.changed(&job.id);
    let ctx = Ctx {
        state: state.clone(),
        job,
        cancel,
        shutdown,
    };
    let outcome = match ctx.checkpoint() {
        Some(o) => o,
        None => match ctx.job.kind.as_str() {
            "plan" => plan::run(&ctx).await.unwrap_or_else(Outcome::Failed),
            "evaluate" => evaluate::run(&ctx).await.unwrap_or_else(Outcome::Failed),
            "fleet" => fleet::run(&ctx).await.unwrap_or_else(Outcome::Failed),
            "sensitivity" => sensitivity::run(&ctx).await.unwrap_or_else(Outcome::Failed),
            other => Outcome::Failed(JobError::permanent(format!("unknown job kind {other:?}"))),
        },
    };
    if let Err(e) = finish(&ctx, outcome).await {
        tracing::error!("job {}: cannot record its outcome: {e}", ctx.job.id);
    }
    state
        .jobs
        .cancel_flags
        .lock()
        .expect("lock")
        .remove(&ctx.job.id);
    state.jobs.changed(&ctx.job.id);
}

async fn finish(ctx: &Ctx, outcome: Outcome) -> Result<(), sqlx::Error> {
    let job = &ctx.job;
    let now = now_ms();
    let mut tx = ctx.state.db.write.begin().await?;
    let (job_status, plan_status) = record_outcome(&mut tx, ctx, outcome, now).await?;
    if let (Some(status), Some(plan_id)) = (plan_status, &job.plan_id) {
        set_plan_status(&mut tx, &job.kind, plan_id, status).await?;
    }
    tx.commit().await?;
    if job_status != "queued" {
        ctx.state.metrics.job_finished(&job.kind, job_status);
    } else {
        ctx.state.jobs.wake.notify_one();
    }
    Ok(())
}

/// Writes the job row's state after `outcome`. Returns the job's new status and, when the
/// (fleet) plan it works for changes with it, that plan's new status.
async fn record_outcome(
    conn: &mut SqliteConnection,
    ctx: &Ctx,
    outcome: Outcome,
    now: i64,
) -> Result<(&'static str, Option<&'static str>), sqlx::Error> {
    let job = &ctx.job;
    Ok(match outcome {
        Outcome::Done(message) => {
            let sql = "UPDATE jobs SET status = 'succeeded', finished_at = ?, updated_at = ?, \
                       message = ?, error = NULL WHERE id = ?";
            end_job(conn, sql, now, &message, &job.id).await?;
            ("succeeded", None)
        }
        Outcome::Cancelled(message) => {
            let sql = "UPDATE jobs SET status = 'cancelled', finished_at = ?, updated_at = ?, \
                       message = ? WHERE id = ?";
            end_job(conn, sql, now, &message, &job.id).await?;
            ("cancelled", Some("cancelled"))
        }
        Outcome::Interrupted => {
            sqlx::query(
                "UPDATE jobs SET status = 'queued', attempts = MAX(attempts - 1, 0), updated_at = ?, \
                 message = 'interrupted by shutdown; resumes at the next start' WHERE id = ?",
            )
            .bind(now)
            .bind(&job.id)
            .execute(conn)
            .await?;
            ("queued", Some("pending"))
        }
        Outcome::Failed(e) if e.retryable && job.attempts < job.max_attempts => {
            retry_later(conn, ctx, &e, now).await?;
            ("queued", Some("pending"))
        }
        Outcome::Failed(e) => {
            tracing::warn!("job {} failed: {}", job.id, e.message);
            let sql = "UPDATE jobs SET status = 'failed', finished_at = ?, updated_at = ?, \
                       error = ?, message = 'failed' WHERE id = ?";
            end_job(conn, sql, now, &e.message, &job.id).await?;
            ("failed", Some("failed"))
        }
    })
}

/// Ends a job with `sql`, an update binding the time (as finished_at and updated_at), one text
/// (the message or the error) and the job id.
async fn end_job(
    conn: &mut SqliteConnection,
    sql: &'static str,
    now: i64,
    text: &str,
    job_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(sql)
        .bind(now)
        .bind(now)
        .bind(text)
        .bind(job_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Queues a failed attempt again, due after an exponential backoff from `retry_base`.
async fn retry_later(
    conn: &mut SqliteConnection,
    ctx: &Ctx,
    e: &JobError,
    now: i64,
) -> Result<(), sqlx::Error> {
    let job = &ctx.job;
    let delay =
        ctx.state.config.retry_base.as_millis() as i64 * (1i64 << (job.attempts - 1).clamp(0, 16));
    tracing::warn!(
        "job {} attempt {} failed: {}",
        job.id,
        job.attempts,
        e.message
    );
    sqlx::query(
        "UPDATE jobs SET status = 'queued', run_after = ?, updated_at = ?, error = ?, \
         message = ? WHERE id = ?",
    )
    .bind(now + delay)
    .bind(now)
    .bind(&e.message)
    .bind(format!(
        "attempt {} of {} failed; retrying in {:.1} s",
        job.attempts,
        job.max_attempts,
        delay as f64 / 1e3
    ))
    .bind(&job.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// The table of what a job of `kind` works for: plans, or fleet plans.
fn plan_table(kind: &str) -> Option<&'static str> {
    match kind {
        "plan" => Some("plans"),
        "fleet" => Some("fleet_plans"),
        _ => None,
    }
}

/// Sets the status of the (fleet) plan a job works for, unless it has already ended.
async fn set_plan_status(
    conn: &mut SqliteConnection,
    kind: &str,
    plan_id: &str,
    status: &str,
) -> Result<(), sqlx::Error> {
    let Some(table) = plan_table(kind) else {
        return Ok(());
    };
    // The table name comes from the fixed list above; the values are bound.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET status = ?, updated_at = ? WHERE id = ? AND status IN ('pending', 'running')"
    )))
    .bind(status)
    .bind(now_ms())
    .bind(plan_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// The id of the (fleet) plan the job works for, marked running.
async fn start_plan(ctx: &Ctx) -> Result<String, JobError> {
    let id =
        ctx.job.plan_id.clone().ok_or_else(|| {
            JobError::permanent(format!("a {} job without its plan", ctx.job.kind))
        })?;
    let mut conn = ctx.state.db.write.acquire().await?;
    set_plan_status(&mut conn, &ctx.job.kind, &id, "running").await?;
    Ok(id)
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
}

impl Inputs {
    async fn load(state: &AppState, supernet_id: &str) -> Result<Inputs, JobError> {
        let supernet = store::supernet(&state.db, supernet_id).await?;
        let (Some(model_hash), Some(data_hash)) = (supernet.model_hash, supernet.data_hash) else {
            return Err(JobError::permanent(
                "the supernet has no model or validation set any more",
            ));
        };
        Ok(Inputs {
            model: state.blobs.read(&model_hash).await?,
            data: state.blobs.read(&data_hash).await?,
            model_hash,
            data_hash,
            manifest: state.manifest(supernet_id).await?,
            library: crate::runtime::ort_library(state.config.ort_lib.as_deref())
                .map_err(JobError::permanent)?,
            threads: state.config.eval_threads,
        })
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
            planner::eval::npz::ValidationSet::from_npz(&self.data)?,
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

/// Records the job's progress and tells its watchers.
async fn progress(ctx: &Ctx, done: usize, message: &str) -> Result<(), sqlx::Error> {
    write_progress(&ctx.state.db.write, &ctx.job.id, done, message, now_ms()).await?;
    ctx.state.jobs.changed(&ctx.job.id);
    Ok(())
}

/// Writes a job's progress: steps done and a message for people.
async fn write_progress<'c>(
    conn: impl SqliteExecutor<'c>,
    job_id: &str,
    done: usize,
    message: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE jobs SET progress_done = ?, message = ?, updated_at = ? WHERE id = ?")
        .bind(done as i64)
        .bind(message)
        .bind(now)
        .bind(job_id)
        .execute(conn)
        .await?;
    Ok(())
}
