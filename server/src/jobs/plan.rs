//! The plan job: solves a stored plan request too big to answer at once, and stores its
//! candidates and status in one transaction with the job's progress.

use super::{Ctx, JobError, Outcome};
use crate::planning::{self, PlanBody};
use crate::store::{CandidateFields, StoreError};

pub(super) async fn run(ctx: &Ctx) -> Result<Outcome, JobError> {
    let state = &ctx.state;
    let plan_id = ctx.plan_id()?;
    let plan = match state.db.plan(&plan_id).await {
        Ok(plan) => plan,
        Err(StoreError::NotFound { .. }) => {
            return Ok(Outcome::Cancelled("the plan was deleted".into()))
        }
        Err(e) => return Err(e.into()),
    };
    let manifest = state.manifest(&plan.supernet_id).await?;
    let body: PlanBody = serde_json::from_str(&plan.request)
        .map_err(|e| JobError::permanent(format!("stored plan request: {e}")))?;
    let prepared = body.prepare(&manifest, f64::INFINITY)?;
    let solved = planning::solve(
        state,
        &plan.supernet_id,
        &body,
        prepared,
        ctx.halt(),
        planning::Solving::InJob,
    )
    .await;
    // A solve stopped by the job's halt ends as the checkpoint says (cancelled, overdue, ...).
    if let Some(o) = ctx.checkpoint() {
        return Ok(o);
    }
    let solved = solved?;
    state
        .db
        .store_solved_plan(
            &plan,
            planning::plan_status(&solved),
            &solved.summary_json().to_string(),
            &CandidateFields::of_plan(&solved),
            ctx.held(),
        )
        .await?;
    Ok(Outcome::Done(match &solved.infeasibility {
        Some(inf) => format!("infeasible: {}", inf.message),
        None => format!(
            "{} candidates in {:.1} ms",
            solved.candidates.len(),
            solved.solve_time_ms
        ),
    }))
}
