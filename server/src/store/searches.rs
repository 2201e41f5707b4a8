//! Searches: the request, the job that runs it, and its result (rounds and measured front). The
//! measurements themselves are evaluations, stored as the job makes them.

use super::candidates::insert_candidates;
use super::{
    jobs, leases, not_found, now_ms, Conn, Db, JobRow, NewPlan, PlanStatus, StoreError,
    StoreResult, Work,
};
use serde_json::Value;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SearchRow {
    pub id: String,
    pub supernet_id: String,
    /// JSON: the request.
    pub request: String,
    #[sqlx(try_from = "String")]
    pub status: PlanStatus,
    pub job_id: Option<String>,
    /// JSON: the rounds and the measured front.
    pub result: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

const SEARCH_SELECT: &str = "SELECT id, supernet_id, request, status, job_id, result, created_at, \
     updated_at FROM searches";

async fn search_on(conn: &mut Conn, id: &str) -> StoreResult<SearchRow> {
    sqlx::query_as::<_, SearchRow>(sqlx::AssertSqlSafe(format!(
        "{SEARCH_SELECT} WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| not_found("search", id))
}

impl Db {
    pub async fn search(&self, id: &str) -> StoreResult<SearchRow> {
        search_on(&mut *self.read.acquire().await?, id).await
    }

    /// The search whose points `plan` holds, if it still exists and names the plan.
    pub async fn search_holding(&self, plan: &super::PlanRow) -> StoreResult<Option<String>> {
        let Some(search_id) = serde_json::from_str::<Value>(&plan.request)
            .ok()
            .and_then(|r| {
                r.get("search_id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
        else {
            return Ok(None);
        };
        let row = match self.search(&search_id).await {
            Ok(row) => row,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let holds = match &row.result {
            Some(result) => plan_of(&search_id, result)?.as_deref() == Some(plan.id.as_str()),
            None => false,
        };
        Ok(holds.then_some(search_id))
    }

    /// A supernet's searches, newest first.
    pub async fn searches_of(&self, supernet_id: &str) -> StoreResult<Vec<SearchRow>> {
        Ok(sqlx::query_as::<_, SearchRow>(sqlx::AssertSqlSafe(format!(
            "{SEARCH_SELECT} WHERE supernet_id = $1 ORDER BY created_at DESC, id DESC"
        )))
        .bind(supernet_id)
        .fetch_all(&self.read)
        .await?)
    }

    /// Stores a search as pending with the job that runs it (`evaluations` steps); returns both
    /// rows as committed.
    pub async fn queue_search(
        &self,
        supernet_id: &str,
        request: &Value,
        evaluations: usize,
    ) -> StoreResult<(SearchRow, JobRow)> {
        let id = super::new_id("search");
        let job_id = super::new_id("job");
        let now = now_ms();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO searches (id, supernet_id, request, status, job_id, created_at, \
             updated_at) VALUES ($1, $2, $3, 'pending', $4, $5, $6)",
        )
        .bind(&id)
        .bind(supernet_id)
        .bind(request.to_string())
        .bind(&job_id)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let job = jobs::insert(
            &mut tx,
            &job_id,
            supernet_id,
            Some(&id),
            &Work::Search {},
            evaluations as i64,
        )
        .await?;
        let search = search_on(&mut tx, &id).await?;
        tx.commit().await?;
        Ok((search, job))
    }

    /// Stores a search's result and the plan holding its points as candidates (so each opens,
    /// is compared, chosen and exported as any plan's), with its job's progress at its end, in
    /// one transaction: a search resumed after a crash writes both or neither. The search row is
    /// written first, so a search deleted meanwhile writes nothing, and this and
    /// [`Db::delete_search`] lock the search before the job (never the other way round).
    pub async fn store_search_result(
        &self,
        id: &str,
        doc: &Value,
        plan: &NewPlan,
        job: super::Held<'_>,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let now = now_ms();
        let updated = sqlx::query(
            "UPDATE searches SET status = 'ready', result = $1, updated_at = $2 WHERE id = $3",
        )
        .bind(doc.to_string())
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(not_found("search", id));
        }
        sqlx::query(
            "INSERT INTO plans (id, supernet_id, request, status, result, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&plan.id)
        .bind(&plan.supernet_id)
        .bind(&plan.request)
        .bind(plan.status.as_str())
        .bind(&plan.result)
        .bind(plan.created_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let rows: Vec<_> = plan
            .candidates
            .iter()
            .map(|c| (plan.supernet_id.as_str(), plan.id.as_str(), c))
            .collect();
        insert_candidates(&mut tx, &rows).await?;
        leases::set_done_all(&mut tx, job).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a search, the plan holding its points (with its candidates) and the queued or
    /// running jobs of either (cancelled); its measurements stay, they are the supernet's
    /// evaluations. The search row goes first: on Postgres that waits for a result being
    /// stored, and its plan, once committed, is read back from the row and deleted too.
    pub async fn delete_search(&self, id: &str) -> StoreResult<DeletedSearch> {
        let mut tx = self.begin().await?;
        let result: Option<Option<String>> =
            sqlx::query_scalar("DELETE FROM searches WHERE id = $1 RETURNING result")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let result = result.ok_or_else(|| not_found("search", id))?;
        let mut jobs = jobs::cancel_for_plan(&mut tx, id, "search deleted").await?;
        let plan_id = match &result {
            Some(result) => plan_of(id, result)?,
            None => None,
        };
        let mut candidates = 0;
        if let Some(plan_id) = &plan_id {
            jobs.extend(jobs::cancel_for_plan(&mut tx, plan_id, "search deleted").await?);
            candidates = sqlx::query_scalar("SELECT COUNT(*) FROM candidates WHERE plan_id = $1")
                .bind(plan_id)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM plans WHERE id = $1")
                .bind(plan_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(DeletedSearch {
            jobs,
            plan_id,
            candidates,
        })
    }
}

/// The plan a search's stored result names.
fn plan_of(id: &str, result: &str) -> StoreResult<Option<String>> {
    Ok(serde_json::from_str::<Value>(result)
        .map_err(|e| StoreError::Corrupt(format!("search {id}'s result: {e}")))?
        .get("plan_id")
        .and_then(Value::as_str)
        .map(str::to_string))
}

/// What deleting a search took with it.
#[derive(Debug)]
pub struct DeletedSearch {
    /// Jobs asked to stop.
    pub jobs: Vec<String>,
    /// The plan that held its points.
    pub plan_id: Option<String>,
    pub candidates: i64,
}
