//! Plans: the stored request, its status, the job that solves it when it is big, the chosen
//! candidate; storing a solved plan's candidates; deleting a plan.

use super::candidates::{insert_candidates, CandidateFields};
use super::{jobs, leases, not_found, now_ms, Conn, Db, JobRow, StoreResult, Work};

text_enum! {
    /// Where a plan is: waiting for its job, being solved, or ended.
    pub enum PlanStatus {
        Pending = "pending",
        Running = "running",
        Ready = "ready",
        Infeasible = "infeasible",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlanRow {
    pub id: String,
    pub supernet_id: String,
    pub request: String,
    #[sqlx(try_from = "String")]
    pub status: PlanStatus,
    pub job_id: Option<String>,
    pub result: Option<String>,
    pub chosen_candidate_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub candidates: i64,
}

const PLAN_SELECT: &str = "SELECT p.id, p.supernet_id, p.request, p.status, p.job_id, p.result, \
     p.chosen_candidate_id, p.created_at, p.updated_at, \
     (SELECT COUNT(*) FROM candidates c WHERE c.plan_id = p.id) AS candidates FROM plans p";

/// A plan as `conn` sees it (a transaction sees its own uncommitted rows).
async fn plan_on(conn: &mut Conn, id: &str) -> StoreResult<PlanRow> {
    sqlx::query_as::<_, PlanRow>(sqlx::AssertSqlSafe(format!(
        "{PLAN_SELECT} WHERE p.id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| not_found("plan", id))
}

impl Db {
    pub async fn plan(&self, id: &str) -> StoreResult<PlanRow> {
        plan_on(&mut *self.read.acquire().await?, id).await
    }

    /// A supernet's plans, newest first.
    pub async fn plans_of(&self, supernet_id: &str) -> StoreResult<Vec<PlanRow>> {
        Ok(sqlx::query_as::<_, PlanRow>(sqlx::AssertSqlSafe(format!(
            "{PLAN_SELECT} WHERE p.supernet_id = $1 ORDER BY p.created_at DESC, p.id DESC"
        )))
        .bind(supernet_id)
        .fetch_all(&self.read)
        .await?)
    }

    /// Stores a plan as pending with the job that solves it. Returns both rows as committed, read
    /// inside the transaction (after the commit a worker could already have claimed the job).
    pub async fn queue_plan(
        &self,
        plan_id: &str,
        supernet_id: &str,
        request: &str,
        now: i64,
    ) -> StoreResult<(PlanRow, JobRow)> {
        let job_id = super::new_id("job");
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO plans (id, supernet_id, request, status, job_id, created_at, updated_at) \
             VALUES ($1, $2, $3, 'pending', $4, $5, $6)",
        )
        .bind(plan_id)
        .bind(supernet_id)
        .bind(request)
        .bind(&job_id)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let job = jobs::insert(
            &mut tx,
            &job_id,
            supernet_id,
            Some(plan_id),
            &Work::Plan {},
            1,
        )
        .await?;
        let plan = plan_on(&mut tx, plan_id).await?;
        tx.commit().await?;
        Ok((plan, job))
    }

    /// Marks `candidate_id` (which the caller checked is the plan's) as the one to ship, or clears
    /// the choice.
    pub async fn choose(&self, plan_id: &str, candidate_id: Option<&str>) -> StoreResult<()> {
        let updated =
            sqlx::query("UPDATE plans SET chosen_candidate_id = $1, updated_at = $2 WHERE id = $3")
                .bind(candidate_id)
                .bind(now_ms())
                .bind(plan_id)
                .execute(&self.write)
                .await?;
        if updated.rows_affected() == 0 {
            return Err(not_found("plan", plan_id));
        }
        Ok(())
    }

    /// Deletes a plan and its candidates; its unfinished jobs are cancelled (queued ones at once,
    /// running ones at their next checkpoint). Returns those jobs' ids.
    pub async fn delete_plan(&self, id: &str) -> StoreResult<Vec<String>> {
        let mut tx = self.begin().await?;
        let jobs = jobs::cancel_for_plan(&mut tx, id, "plan deleted").await?;
        let deleted = sqlx::query("DELETE FROM plans WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(not_found("plan", id));
        }
        tx.commit().await?;
        Ok(jobs)
    }

    /// Stores a job's solved plan: its candidates (replacing those of an earlier, interrupted
    /// attempt), its status and summary, and the job's progress, in one transaction; only while
    /// the job's worker holds it.
    pub async fn store_solved_plan(
        &self,
        plan: &PlanRow,
        status: PlanStatus,
        result: &str,
        candidates: &[CandidateFields],
        job: leases::Held<'_>,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM candidates WHERE plan_id = $1")
            .bind(&plan.id)
            .execute(&mut *tx)
            .await?;
        let rows: Vec<_> = candidates
            .iter()
            .map(|c| (plan.supernet_id.as_str(), plan.id.as_str(), c))
            .collect();
        insert_candidates(&mut tx, &rows).await?;
        sqlx::query("UPDATE plans SET status = $1, result = $2, updated_at = $3 WHERE id = $4")
            .bind(status.as_str())
            .bind(result)
            .bind(now_ms())
            .bind(&plan.id)
            .execute(&mut *tx)
            .await?;
        leases::set_done(&mut tx, job, 1).await?;
        tx.commit().await?;
        Ok(())
    }
}
