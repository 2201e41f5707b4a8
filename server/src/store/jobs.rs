//! Jobs: the durable queue. What a job is (its kind and payload, typed), queueing, listing and
//! cancelling; with `leases`, every change of a job's state happens in these two files, and so
//! does the status of the (fleet) plan a job works for, which changes with it in the same
//! transaction.

use super::{not_found, now_ms, Conn, Db, StoreError, StoreResult};
use serde::{Deserialize, Serialize};

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
    Search {},
}

impl Work {
    pub fn kind(&self) -> &'static str {
        match self {
            Work::Plan {} => "plan",
            Work::Evaluate(_) => "evaluate",
            Work::Fleet {} => "fleet",
            Work::Sensitivity(_) => "sensitivity",
            Work::Search {} => "search",
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
            Work::Search {} => Some("searches"),
            _ => None,
        }
    }

    fn payload(&self) -> String {
        let mut v = serde_json::to_value(self).expect("JSON");
        v["payload"].take().to_string()
    }

    pub(super) fn decode(kind: &str, payload: &str) -> Result<Work, String> {
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
pub(super) struct RawJob {
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

pub(super) const JOB_COLUMNS: &str = "id, kind, payload, supernet_id, plan_id, status, attempts, \
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
pub(super) async fn set_plan_status(
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

    /// Jobs waiting in the queue.
    pub async fn queued_jobs(&self) -> StoreResult<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM jobs WHERE status = 'queued'")
            .fetch_one(&self.read)
            .await?;
        Ok(n)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_round_trips_through_its_columns() {
        for work in [
            Work::Plan {},
            Work::Fleet {},
            Work::Search {},
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
        let e = Work::decode("distill", "{}").unwrap_err();
        assert!(e.contains("distill"), "{e}");
    }
}
