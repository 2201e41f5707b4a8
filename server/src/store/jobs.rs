//! Jobs: the durable queue. Queueing, claiming, leases, progress and every change of a job's
//! state happen here, and only here; so does the status of the (fleet) plan a job works for,
//! which changes with it in the same transaction.
//!
//! A worker claims the oldest due job in one statement and holds a lease on it, renewed by its
//! heartbeat ([`LEASE`]). A worker that dies (killed, out of memory, a native fault) stops
//! renewing: once the lease runs out, or at once when its supervisor saw it die, the job goes
//! back to the queue and the attempt counts as a crash; after `max_attempts` the job fails with
//! the reason. A worker whose lease was taken from it can no longer change the job.

use super::{not_found, now_ms, Conn, Db, Dialect, StoreError, StoreResult};
use serde::{Deserialize, Serialize};
use std::time::Duration;

text_enum! {
    /// Where a job is.
    pub enum JobStatus {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl JobStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// How long a claimed job stays a worker's without a heartbeat.
pub const LEASE: Duration = Duration::from_secs(10);

/// Attempts a job gets (crashes included) before it fails.
pub const MAX_ATTEMPTS: i64 = 3;

/// Measure bit configurations (bits keys) of a supernet on its validation set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluateWork {
    pub bits: Vec<String>,
    pub quantize_activations: bool,
    pub batch_size: usize,
}

/// Measure every layer's sensitivity of a supernet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensitivityWork {
    pub metric: planner::Divergence,
    pub batch_size: usize,
}

/// What a job does: its kind and that kind's payload. The plan a plan or fleet job works for is
/// the job's `plan_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "payload", rename_all = "snake_case")]
pub enum Work {
    Plan {},
    Evaluate(EvaluateWork),
    Fleet {},
    Sensitivity(SensitivityWork),
}

impl Work {
    pub fn kind(&self) -> &'static str {
        match self {
            Work::Plan {} => "plan",
            Work::Evaluate(_) => "evaluate",
            Work::Fleet {} => "fleet",
            Work::Sensitivity(_) => "sensitivity",
        }
    }

    /// Whether it runs models (and so needs an evaluation slot).
    pub fn runs_models(&self) -> bool {
        !matches!(self, Work::Plan {})
    }

    /// The table of the plan it works for, if any.
    fn plan_table(&self) -> Option<&'static str> {
        match self {
            Work::Plan {} => Some("plans"),
            Work::Fleet {} => Some("fleet_plans"),
            _ => None,
        }
    }

    fn payload(&self) -> String {
        let mut v = serde_json::to_value(self).expect("JSON");
        v["payload"].take().to_string()
    }

    fn decode(kind: &str, payload: &str) -> Result<Work, String> {
        let payload: serde_json::Value =
            serde_json::from_str(payload).map_err(|e| format!("job payload: {e}"))?;
        serde_json::from_value(serde_json::json!({"kind": kind, "payload": payload}))
            .map_err(|e| format!("a {kind:?} job: {e}"))
    }
}

/// A stored job.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub work: Work,
    pub supernet_id: Option<String>,
    pub plan_id: Option<String>,
    pub status: JobStatus,
    pub attempts: i64,
    pub max_attempts: i64,
    pub crashes: i64,
    pub cancel_requested: bool,
    pub progress_done: i64,
    pub progress_total: i64,
    pub message: String,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub updated_at: i64,
    pub lease_owner: Option<String>,
    pub deadline_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct RawJob {
    id: String,
    kind: String,
    payload: String,
    supernet_id: Option<String>,
    plan_id: Option<String>,
    #[sqlx(try_from = "String")]
    status: JobStatus,
    attempts: i64,
    max_attempts: i64,
    crashes: i64,
    cancel_requested: i64,
    progress_done: i64,
    progress_total: i64,
    message: String,
    error: Option<String>,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    updated_at: i64,
    lease_owner: Option<String>,
    deadline_at: Option<i64>,
}

const JOB_COLUMNS: &str = "id, kind, payload, supernet_id, plan_id, status, attempts, \
     max_attempts, crashes, cancel_requested, progress_done, progress_total, message, error, \
     created_at, started_at, finished_at, updated_at, lease_owner, deadline_at";

impl TryFrom<RawJob> for JobRow {
    type Error = StoreError;

    fn try_from(r: RawJob) -> StoreResult<JobRow> {
        let work = Work::decode(&r.kind, &r.payload)
            .map_err(|e| StoreError::Corrupt(format!("job {}: {e}", r.id)))?;
        Ok(JobRow {
            id: r.id,
            work,
            supernet_id: r.supernet_id,
            plan_id: r.plan_id,
            status: r.status,
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            crashes: r.crashes,
            cancel_requested: r.cancel_requested != 0,
            progress_done: r.progress_done,
            progress_total: r.progress_total,
            message: r.message,
            error: r.error,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            updated_at: r.updated_at,
            lease_owner: r.lease_owner,
            deadline_at: r.deadline_at,
        })
    }
}

fn rows(raw: Vec<RawJob>) -> StoreResult<Vec<JobRow>> {
    raw.into_iter().map(JobRow::try_from).collect()
}

async fn job_on(conn: &mut Conn, id: &str) -> StoreResult<JobRow> {
    sqlx::query_as::<_, RawJob>(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| not_found("job", id))?
    .try_into()
}

/// Queues a job inside the caller's transaction; returns it as stored.
pub(super) async fn insert(
    tx: &mut Conn,
    id: &str,
    supernet_id: &str,
    plan_id: Option<&str>,
    work: &Work,
    total: i64,
) -> StoreResult<JobRow> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO jobs (id, kind, supernet_id, plan_id, payload, status, run_after, \
         max_attempts, progress_total, message, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8, 'queued', $9, $10)",
    )
    .bind(id)
    .bind(work.kind())
    .bind(supernet_id)
    .bind(plan_id)
    .bind(work.payload())
    .bind(now)
    .bind(MAX_ATTEMPTS)
    .bind(total)
    .bind(now)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    job_on(tx, id).await
}

/// The job `id` as run by `owner`: what its results are written under. A write under a lease
/// that is no longer `owner`'s fails with [`StoreError::LeaseLost`] and changes nothing.
#[derive(Debug, Clone, Copy)]
pub struct Held<'a> {
    pub id: &'a str,
    pub owner: &'a str,
}

/// Fails unless the statement changed the job's row (the lease is still the worker's).
fn held(done: sqlx::any::AnyQueryResult, job: Held<'_>) -> StoreResult<()> {
    if done.rows_affected() == 0 {
        return Err(StoreError::LeaseLost(job.id.to_string()));
    }
    Ok(())
}

/// Writes a job's progress (steps done and a message for people) while its worker holds it.
pub(super) async fn set_progress(
    conn: &mut Conn,
    job: Held<'_>,
    done: usize,
    message: &str,
    now: i64,
) -> StoreResult<()> {
    let r = sqlx::query(
        "UPDATE jobs SET progress_done = $1, message = $2, updated_at = $3 \
         WHERE id = $4 AND lease_owner = $5 AND status = 'running'",
    )
    .bind(done as i64)
    .bind(message)
    .bind(now)
    .bind(job.id)
    .bind(job.owner)
    .execute(conn)
    .await?;
    held(r, job)
}

/// Sets the steps a job has done (its message unchanged), while its worker holds it.
pub(super) async fn set_done(conn: &mut Conn, job: Held<'_>, done: i64) -> StoreResult<()> {
    let r = sqlx::query(
        "UPDATE jobs SET progress_done = $1, updated_at = $2 \
         WHERE id = $3 AND lease_owner = $4 AND status = 'running'",
    )
    .bind(done)
    .bind(now_ms())
    .bind(job.id)
    .bind(job.owner)
    .execute(conn)
    .await?;
    held(r, job)
}

/// Marks every step of a job done, while its worker holds it.
pub(super) async fn set_done_all(conn: &mut Conn, job: Held<'_>) -> StoreResult<()> {
    let r = sqlx::query(
        "UPDATE jobs SET progress_done = progress_total, updated_at = $1 \
         WHERE id = $2 AND lease_owner = $3 AND status = 'running'",
    )
    .bind(now_ms())
    .bind(job.id)
    .bind(job.owner)
    .execute(conn)
    .await?;
    held(r, job)
}

/// Cancels the unfinished jobs of a plan being deleted; returns their ids.
pub(super) async fn cancel_for_plan(
    tx: &mut Conn,
    plan_id: &str,
    message: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let now = now_ms();
    let ids = sqlx::query_scalar(
        "UPDATE jobs SET cancel_requested = 1, updated_at = $1 WHERE plan_id = $2 \
         AND status IN ('queued', 'running') RETURNING id",
    )
    .bind(now)
    .bind(plan_id)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE jobs SET status = 'cancelled', finished_at = $1, message = $2 \
         WHERE plan_id = $3 AND status = 'queued'",
    )
    .bind(now)
    .bind(message)
    .bind(plan_id)
    .execute(&mut *tx)
    .await?;
    Ok(ids)
}

/// Sets the status of the (fleet) plan a job of `work` works for, unless that plan has already
/// ended.
async fn set_plan_status(
    conn: &mut Conn,
    work: &Work,
    plan_id: Option<&str>,
    status: super::PlanStatus,
) -> Result<(), sqlx::Error> {
    let (Some(table), Some(plan_id)) = (work.plan_table(), plan_id) else {
        return Ok(());
    };
    // The table name comes from a fixed list; the values are bound.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET status = $1, updated_at = $2 WHERE id = $3 AND status IN ('pending', 'running')"
    )))
    .bind(status.as_str())
    .bind(now_ms())
    .bind(plan_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// How a job's run ended, as its worker reports it.
#[derive(Debug, Clone)]
pub enum Ending {
    Succeeded(String),
    Cancelled(String),
    /// Stopped by its worker's shutdown: back to the queue, the attempt not counted.
    Interrupted(String),
    /// Failed, worth another attempt after `delay`.
    Retry {
        error: String,
        delay: Duration,
    },
    Failed(String),
}

/// What a heartbeat learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Renewed; `cancel` when someone asked the job to stop.
    Held { cancel: bool },
    /// The job is no longer this worker's (its lease ran out and it was given up, or the job
    /// was deleted): the worker must stop without touching it.
    Lost,
}

/// Why a job's worker is gone, for the job's record.
fn crash_ending(job: &RawCrash, reason: &str) -> (JobStatus, String, String) {
    let crashes = job.crashes + 1;
    if job.attempts >= job.max_attempts {
        let error = if crashes == job.attempts {
            format!("worker died {crashes} times: {reason}")
        } else {
            format!(
                "attempt {} of {}: worker died: {reason}",
                job.attempts, job.max_attempts
            )
        };
        (JobStatus::Failed, error, "failed".into())
    } else {
        let message = format!(
            "attempt {} of {}: worker died ({reason}); queued again",
            job.attempts, job.max_attempts
        );
        (JobStatus::Queued, format!("worker died: {reason}"), message)
    }
}

#[derive(sqlx::FromRow)]
struct RawCrash {
    id: String,
    kind: String,
    payload: String,
    plan_id: Option<String>,
    attempts: i64,
    max_attempts: i64,
    crashes: i64,
}

impl Db {
    pub async fn job(&self, id: &str) -> StoreResult<JobRow> {
        job_on(&mut *self.read.acquire().await?, id).await
    }

    /// Jobs, newest first, optionally of one status and one supernet.
    pub async fn jobs(
        &self,
        status: Option<JobStatus>,
        supernet_id: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<JobRow>> {
        rows(
            sqlx::query_as::<_, RawJob>(sqlx::AssertSqlSafe(format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE ($1 IS NULL OR status = $1) \
                 AND ($2 IS NULL OR supernet_id = $2) ORDER BY created_at DESC, id DESC LIMIT $3"
            )))
            .bind(status.map(JobStatus::as_str))
            .bind(supernet_id)
            .bind(limit)
            .fetch_all(&self.read)
            .await?,
        )
    }

    /// Stored jobs counted by status.
    pub async fn job_counts(&self) -> StoreResult<Vec<(String, i64)>> {
        Ok(
            sqlx::query_as("SELECT status, COUNT(*) FROM jobs GROUP BY status")
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// Jobs whose row changed at or after `since` (ms; a change in the same millisecond as the
    /// last one seen is not missed): ids, newest change last, and the time of the newest change.
    pub async fn jobs_changed_since(&self, since: i64) -> StoreResult<(Vec<String>, i64)> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT id, updated_at FROM jobs WHERE updated_at >= $1 ORDER BY updated_at LIMIT 1000",
        )
        .bind(since)
        .fetch_all(&self.read)
        .await?;
        let newest = rows.last().map_or(since, |r| r.1);
        Ok((rows.into_iter().map(|r| r.0).collect(), newest))
    }

    /// Queues a job for a supernet (and the plan it works for); returns it as stored.
    pub async fn queue_job(
        &self,
        supernet_id: &str,
        plan_id: Option<&str>,
        work: &Work,
        total: usize,
    ) -> StoreResult<JobRow> {
        let mut tx = self.begin().await?;
        let job = insert(
            &mut tx,
            &super::new_id("job"),
            supernet_id,
            plan_id,
            work,
            total as i64,
        )
        .await?;
        tx.commit().await?;
        Ok(job)
    }

    /// Queues a job unless the supernet has an unfinished job of the same kind: then returns
    /// that job's id as the error.
    pub async fn queue_job_alone(
        &self,
        supernet_id: &str,
        work: &Work,
        total: usize,
    ) -> StoreResult<Result<JobRow, String>> {
        let mut tx = self.begin().await?;
        let running: Option<String> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE supernet_id = $1 AND kind = $2 \
             AND status IN ('queued', 'running') LIMIT 1",
        )
        .bind(supernet_id)
        .bind(work.kind())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = running {
            return Ok(Err(id));
        }
        let id = super::new_id("job");
        let job = insert(&mut tx, &id, supernet_id, None, work, total as i64).await?;
        tx.commit().await?;
        Ok(Ok(job))
    }

    /// Cancels a job: a queued one at once (with the plan waiting for it), a running one at its
    /// worker's next checkpoint. Idempotent; returns the job as it now is.
    pub async fn cancel_job(&self, id: &str) -> StoreResult<JobRow> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let job = job_on(&mut tx, id).await?;
        if !job.status.is_terminal() {
            // Whether it was still queued is what this statement did, not what was read before
            // it: on Postgres a worker may claim the job in between.
            let cancelled = sqlx::query(
                "UPDATE jobs SET status = 'cancelled', cancel_requested = 1, finished_at = $1, \
                 updated_at = $2, message = 'cancelled before it started', lease_owner = NULL \
                 WHERE id = $3 AND status = 'queued'",
            )
            .bind(now)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query(
                "UPDATE jobs SET cancel_requested = 1, updated_at = $1 WHERE id = $2 AND status = 'running'",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            if cancelled > 0 {
                let plan = super::PlanStatus::Cancelled;
                set_plan_status(&mut tx, &job.work, job.plan_id.as_deref(), plan).await?;
            }
        }
        let job = job_on(&mut tx, id).await?;
        tx.commit().await?;
        Ok(job)
    }

    /// Claims the oldest due job for `owner` with a fresh lease (models-running jobs only when
    /// `models` allows), counting the attempt; a first claim sets the job's deadline `deadline`
    /// from now. Returns the job as claimed.
    pub async fn claim(
        &self,
        owner: &str,
        models: bool,
        deadline: Duration,
    ) -> StoreResult<Option<JobRow>> {
        let now = now_ms();
        // On Postgres, concurrent claims skip the row another worker is claiming instead of
        // waiting for it (and then finding it taken); SQLite has one writer at a time.
        let lock = match self.dialect {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        };
        let mut tx = self.begin().await?;
        let raw = sqlx::query_as::<_, RawJob>(sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = $3, \
             lease_expires_at = $1 + $4, deadline_at = COALESCE(deadline_at, $1 + $5), \
             started_at = COALESCE(started_at, $1), updated_at = $1, message = 'running' \
             WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND run_after <= $1 \
               AND (deadline_at IS NULL OR deadline_at > $1) \
               AND ($2 OR kind = 'plan') ORDER BY created_at, id LIMIT 1{lock}) \
             RETURNING {JOB_COLUMNS}"
        )))
        .bind(now)
        .bind(models)
        .bind(owner)
        .bind(LEASE.as_millis() as i64)
        .bind(deadline.as_millis().min(i64::MAX as u128) as i64)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(raw) = raw else { return Ok(None) };
        let job = JobRow::try_from(raw)?;
        let plan = super::PlanStatus::Running;
        set_plan_status(&mut tx, &job.work, job.plan_id.as_deref(), plan).await?;
        tx.commit().await?;
        Ok(Some(job))
    }

    /// Renews `owner`'s lease on a running job; says whether it still holds it and whether the
    /// job was asked to stop.
    pub async fn renew(&self, job_id: &str, owner: &str) -> StoreResult<Lease> {
        let now = now_ms();
        let cancel: Option<i64> = sqlx::query_scalar(
            "UPDATE jobs SET lease_expires_at = $1 WHERE id = $2 AND lease_owner = $3 \
             AND status = 'running' RETURNING cancel_requested",
        )
        .bind(now + LEASE.as_millis() as i64)
        .bind(job_id)
        .bind(owner)
        .fetch_optional(&self.write)
        .await?;
        Ok(match cancel {
            Some(cancel) => Lease::Held {
                cancel: cancel != 0,
            },
            None => Lease::Lost,
        })
    }

    /// Records a job's progress, while its worker holds it.
    pub async fn progress(&self, job: Held<'_>, done: usize, message: &str) -> StoreResult<()> {
        let mut conn = self.write.acquire().await?;
        set_progress(&mut conn, job, done, message, now_ms()).await
    }

    /// Ends `owner`'s run of a job (and moves the plan it works for with it), in one transaction.
    /// Returns the job's new status, or `None` when the job was no longer `owner`'s: a worker
    /// that lost its lease changes nothing.
    pub async fn finish(
        &self,
        job: &JobRow,
        owner: &str,
        ending: Ending,
    ) -> StoreResult<Option<JobStatus>> {
        use super::PlanStatus as P;
        let now = now_ms();
        // The job's new status, the plan's, the message, the error (when it changes), when it is
        // due again, whether the attempt is uncounted, and whether the job has ended.
        let (status, plan, message, error, run_after, uncount) = match ending {
            Ending::Succeeded(m) => (JobStatus::Succeeded, None, m, Some(None), None, false),
            Ending::Cancelled(m) => (
                JobStatus::Cancelled,
                Some(P::Cancelled),
                m,
                None,
                None,
                false,
            ),
            Ending::Interrupted(m) => (JobStatus::Queued, Some(P::Pending), m, None, None, true),
            Ending::Retry { error, delay } => {
                let message = format!(
                    "attempt {} of {} failed; retrying in {:.1} s",
                    job.attempts,
                    job.max_attempts,
                    delay.as_secs_f64()
                );
                let at = now + delay.as_millis() as i64;
                (
                    JobStatus::Queued,
                    Some(P::Pending),
                    message,
                    Some(Some(error)),
                    Some(at),
                    false,
                )
            }
            Ending::Failed(e) => (
                JobStatus::Failed,
                Some(P::Failed),
                "failed".into(),
                Some(Some(e)),
                None,
                false,
            ),
        };
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE jobs SET status = $1, updated_at = $2, message = $3, \
             error = CASE WHEN $4 THEN $5 ELSE error END, attempts = attempts - $6, \
             run_after = COALESCE($7, run_after), finished_at = CASE WHEN $8 THEN $9 END, \
             lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $10 AND lease_owner = $11 AND status = 'running'",
        )
        .bind(status.as_str())
        .bind(now)
        .bind(&message)
        .bind(error.is_some())
        .bind(error.flatten())
        .bind(i64::from(uncount))
        .bind(run_after)
        .bind(status.is_terminal())
        .bind(now)
        .bind(&job.id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        if let Some(p) = plan {
            set_plan_status(&mut tx, &job.work, job.plan_id.as_deref(), p).await?;
        }
        tx.commit().await?;
        Ok(Some(status))
    }

    /// Gives up the jobs whose worker is gone: those whose lease ran out, and (when `owners` is
    /// given: a SQL `LIKE` pattern, or an owner's exact id) those whose owner died for `reason`,
    /// as its supervisor saw. Each such attempt counts as a crash; a job out of attempts fails.
    /// Returns the ids and new statuses.
    pub async fn release_crashed(
        &self,
        owners: Option<&str>,
        reason: &str,
    ) -> StoreResult<Vec<(String, JobStatus)>> {
        let now = now_ms();
        // On Postgres the rows stay locked until the commit, so a renewal, a finish or another
        // worker's reaping cannot slip in between reading and releasing them (SQLite's
        // transaction holds the whole file).
        let lock = match self.dialect {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        };
        let mut tx = self.begin().await?;
        let gone: Vec<RawCrash> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, kind, payload, plan_id, attempts, max_attempts, crashes FROM jobs \
             WHERE status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at < $1 \
             OR lease_owner LIKE $2){lock}"
        )))
        .bind(now)
        .bind(owners)
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(gone.len());
        for job in &gone {
            let (status, error, message) = crash_ending(job, reason);
            sqlx::query(
                "UPDATE jobs SET status = $1, error = $2, message = $3, crashes = crashes + 1, \
                 run_after = $4, updated_at = $5, finished_at = CASE WHEN $6 = 'failed' THEN $7 END, \
                 lease_owner = NULL, lease_expires_at = NULL WHERE id = $8",
            )
            .bind(status.as_str())
            .bind(&error)
            .bind(&message)
            .bind(now)
            .bind(now)
            .bind(status.as_str())
            .bind(now)
            .bind(&job.id)
            .execute(&mut *tx)
            .await?;
            if let Ok(work) = Work::decode(&job.kind, &job.payload) {
                let plan = match status {
                    JobStatus::Failed => super::PlanStatus::Failed,
                    _ => super::PlanStatus::Pending,
                };
                set_plan_status(&mut tx, &work, job.plan_id.as_deref(), plan).await?;
            }
            out.push((job.id.clone(), status));
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Fails the queued jobs past their deadline, with the plans they work for. (A running job
    /// past its deadline is stopped by its worker at its next checkpoint.)
    pub async fn expire_deadlines(&self) -> StoreResult<u64> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let expired: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "UPDATE jobs SET status = 'failed', error = 'the job ran past its deadline', \
             message = 'failed', finished_at = $1, updated_at = $1, lease_owner = NULL \
             WHERE status = 'queued' AND deadline_at < $1 RETURNING kind, payload, plan_id",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        for (kind, payload, plan_id) in &expired {
            if let Ok(work) = Work::decode(kind, payload) {
                let failed = super::PlanStatus::Failed;
                set_plan_status(&mut tx, &work, plan_id.as_deref(), failed).await?;
            }
        }
        tx.commit().await?;
        Ok(expired.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_round_trips_through_its_columns() {
        for work in [
            Work::Plan {},
            Work::Fleet {},
            Work::Evaluate(EvaluateWork {
                bits: vec!["[8,4]".into()],
                quantize_activations: true,
                batch_size: 64,
            }),
            Work::Sensitivity(SensitivityWork {
                metric: planner::Divergence::default(),
                batch_size: 32,
            }),
        ] {
            assert_eq!(Work::decode(work.kind(), &work.payload()).unwrap(), work);
        }
        // Rows written before payloads were typed: plan and fleet jobs stored `{}`.
        assert_eq!(Work::decode("plan", "{}").unwrap(), Work::Plan {});
        let e = Work::decode("search", "{}").unwrap_err();
        assert!(e.contains("search"), "{e}");
    }
}
