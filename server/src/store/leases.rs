//! Leases: claiming a job for a worker, renewing it, writing progress and results under it, and
//! how a run ends. A worker that dies (killed, out of memory, a native fault) stops renewing:
//! once its lease runs out, or at once when its supervisor saw it die, the job goes back to the
//! queue and the attempt counts as a crash; after `max_attempts` the job fails with the reason.
//! A write under a lease that is no longer the worker's changes nothing.

use super::jobs::{set_plan_status, JobRow, JobStatus, RawJob, Work, JOB_COLUMNS};
use super::{now_ms, Conn, Db, Dialect, StoreError, StoreResult};
use std::time::Duration;

/// How long a claimed job stays a worker's without a heartbeat.
pub const LEASE: Duration = Duration::from_secs(10);

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
