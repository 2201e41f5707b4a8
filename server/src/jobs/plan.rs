//! The plan job: solves a stored plan request too big to answer at once, and stores its
//! candidates and status in one transaction with the job's progress.

use super::{start_plan, Ctx, JobError, Outcome};
use crate::planning::{self, PlanBody};
use crate::store::{self, now_ms};

pub(super) async fn run(ctx: &Ctx) -> Result<Outcome, JobError> {
    let state = &ctx.state;
    let plan_id = start_plan(ctx).await?;
    let Ok(plan) = store::plan(&state.db, &plan_id).await else {
        return Ok(Outcome::Cancelled("the plan was deleted".into()));
    };
    let manifest = state.manifest(&plan.supernet_id).await?;
    let body: PlanBody = serde_json::from_str(&plan.request)
        .map_err(|e| JobError::permanent(format!("stored plan request: {e}")))?;
    let prepared = body.prepare(&manifest, f64::INFINITY)?;
    let solved = planning::solve(state, &plan.supernet_id, &body, prepared).await?;
    if let Some(o) = ctx.checkpoint() {
        return Ok(o);
    }
    let mut tx = state.db.write.begin().await?;
    planning::store_result(&mut tx, &plan.supernet_id, &plan_id, &solved).await?;
    sqlx::query("UPDATE jobs SET progress_done = 1, updated_at = ? WHERE id = ?")
        .bind(now_ms())
        .bind(&ctx.job.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Outcome::Done(match &solved.infeasibility {
        Some(inf) => format!("infeasible: {}", inf.message),
        None => format!(
            "{} candidates in {:.1} ms",
            solved.candidates.len(),
            solved.solve_time_ms
        ),
    }))
}
