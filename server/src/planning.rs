//! The glue between a stored plan request and the planner: the accepted request body, its checks,
//! solving it, and storing a plan solved at once. Used by the HTTP handler (small plans answer at
//! once) and by the job runner (big ones).

use crate::app::{AppState, Gate};
use crate::error::ApiError;
use crate::store::{new_id, now_ms, CandidateFields, JobRow, NewPlan, PlanRow, PlanStatus};
use planner::Halt;
use planner::{
    Budgets, CostKind, DeviceProfile, Engine, Manifest, Plan, PlanRequest, Problem, Sweep,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A solve's time limit when a request gives none: the planner's default, within the service's
/// `--max-solve-time-s`.
pub fn default_time_limit_s(max_time_s: f64) -> f64 {
    planner::DEFAULT_TIME_LIMIT_S.min(max_time_s)
}

/// Samples per inference batch when a request gives no `batch_size` (evaluations, fleet plans,
/// sensitivity passes).
pub fn default_batch_size() -> usize {
    planner::eval::DEFAULT_BATCH_SIZE
}

/// The body of `POST /v1/supernets/{id}/plans`, stored as the plan's `request`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    #[serde(default)]
    pub budgets: Budgets,
    /// A device profile (required for latency budgets, fronts and sweeps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pareto: Option<CostKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points: Option<usize>,
    #[serde(default)]
    pub paper_pool: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<Sweep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit_s: Option<f64>,
    #[serde(default)]
    pub mip_gap: f64,
    #[serde(default)]
    pub engine: Engine,
    /// Run as a job even when small enough to answer at once.
    #[serde(default, rename = "async")]
    pub run_async: bool,
}

/// A request checked against its supernet: ready to solve.
#[derive(Debug)]
pub struct Prepared {
    pub problem: Problem,
    pub request: PlanRequest,
}

impl PlanBody {
    /// Whether this plan runs as a job: when asked, or when it builds a pool on a manifest too
    /// big for the knapsack engine (single solves are bounded by their time limit).
    pub fn needs_job(&self, problem: &Problem) -> bool {
        let pooled = self.pareto.is_some() || self.paper_pool || self.sweep.is_some();
        self.run_async || (pooled && problem.groups.len() > planner::AUTO_KNAPSACK_MAX_GROUPS)
    }

    /// The cost whose exact front answers every solve of this request, if one does: a single
    /// kind of budget (average bits is a size budget), optionally swept along that same cost.
    pub fn index_axis(&self) -> Option<CostKind> {
        if self.pareto.is_some() || self.paper_pool || self.engine == Engine::Highs {
            return None;
        }
        match (self.budgets.kinds().as_slice(), self.sweep) {
            ([k], None) => Some(*k),
            ([], Some(s)) => Some(s.cost),
            ([k], Some(s)) if s.cost == *k => Some(*k),
            _ => None,
        }
    }

    /// Builds the problem and the planner's request; every refusal names its field.
    pub fn prepare(&self, manifest: &Manifest, max_time_s: f64) -> Result<Prepared, ApiError> {
        let device = match &self.device {
            Some(v) => Some(
                DeviceProfile::from_json(&v.to_string())
                    .map_err(|e| ApiError::from(e).under("device.").prefix_message("device"))?,
            ),
            None => None,
        };
        let problem = Problem::new(manifest, device.as_ref()).map_err(|e| match e {
            // A device that does not fit the manifest (e.g. a latency table missing a layer).
            planner::Error::Invalid {
                what: "device profile",
                ..
            } => ApiError::from(e).under("device.").prefix_message("device"),
            other => ApiError::from(other),
        })?;
        let time_limit_s = self
            .time_limit_s
            .unwrap_or(default_time_limit_s(max_time_s));
        if time_limit_s > max_time_s {
            return Err(ApiError::invalid(
                "time_limit_s",
                format!("must be at most {max_time_s} s on this server (--max-solve-time-s)"),
            ));
        }
        let request = PlanRequest {
            budgets: self.budgets.clone(),
            pareto: self.pareto,
            points: self.points,
            paper_pool: self.paper_pool,
            sweep: self.sweep,
            time_limit_s,
            mip_gap: self.mip_gap,
            engine: self.engine,
        };
        planner::validate_plan(&problem, &request).map_err(under_budgets)?;
        Ok(Prepared { problem, request })
    }
}

/// A planner's refusal of a request, its budgets' fields put where a body holds them: the
/// planner names them by their own field (`max_bops`), a body under `budgets.`.
pub fn under_budgets(e: planner::Error) -> ApiError {
    let mut err = ApiError::from(e);
    for f in &mut err.fields {
        if f.path.starts_with("max_") {
            f.path = format!("budgets.{}", f.path);
        }
    }
    err
}

/// A solved plan's stored status.
pub fn plan_status(plan: &Plan) -> PlanStatus {
    if plan.status == planner::PlanStatus::Infeasible {
        PlanStatus::Infeasible
    } else {
        PlanStatus::Ready
    }
}

/// Where a solve runs: inside a request (bounded by `--max-inline-solves`) or in a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Solving {
    InRequest,
    InJob,
}

/// Raises its flag when dropped: a solve whose request was dropped (its client gone, or its
/// timeout answered) stops at its next check instead of running on.
#[derive(Debug)]
struct RaiseOnDrop(Arc<AtomicBool>);

impl Drop for RaiseOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs the planner off the async threads and records its solve time. Single-budget solves are
/// answered from the supernet's cached exact front on that cost when one can be built. The
/// planner stops when `halt` says so, and also when this future is dropped.
pub async fn solve(
    state: &AppState,
    supernet_id: &str,
    body: &PlanBody,
    prepared: Prepared,
    halt: Halt,
    solving: Solving,
) -> Result<Plan, ApiError> {
    let dropped = Arc::new(AtomicBool::new(false));
    let _raise = RaiseOnDrop(dropped.clone());
    let halt = halt.or_when(dropped);
    let index = match body.index_axis() {
        Some(axis) => {
            let gate = match solving {
                Solving::InRequest => Some(Gate::Solve),
                Solving::InJob => None,
            };
            let (device, problem) = (body.device.as_ref(), &prepared.problem);
            state
                .front_index(supernet_id, device, axis, problem, gate, &halt)
                .await?
        }
        None => None,
    };
    let plan = if index.is_some() && body.sweep.is_none() {
        // One binary search on the cached front: microseconds, no need to leave this thread.
        planner::plan_indexed(
            &prepared.problem,
            &prepared.request,
            index.as_deref(),
            &halt,
        )?
    } else {
        // A solve inside a request holds one of `--max-inline-solves` places (jobs are bounded
        // by their workers).
        let place = match solving {
            Solving::InRequest => Some(state.admit(Gate::Solve)?),
            Solving::InJob => None,
        };
        // The place is held by the blocking work, which outlives a dropped request until its
        // halt is seen.
        tokio::task::spawn_blocking(move || {
            let _place = place;
            planner::plan_indexed(
                &prepared.problem,
                &prepared.request,
                index.as_deref(),
                &halt,
            )
        })
        .await
        .map_err(|e| ApiError::internal("planner task", e))??
    };
    state.metrics.solve(plan.solve_time_ms / 1e3);
    Ok(plan)
}

/// What creating a plan did.
#[derive(Debug)]
pub enum Created {
    /// Solved at once and stored with its candidates.
    Ready { plan: PlanRow },
    /// Stored as pending; the job solves it. The rows as committed, read before the job runner
    /// can claim the job (a read after the commit could already see it running).
    Queued { plan: PlanRow, job: Box<JobRow> },
}

/// Creates a plan: small ones are solved now (infeasible budgets are a 422 carrying the smallest
/// achievable values, and nothing is stored), big ones are queued as a job.
pub async fn create(
    state: &AppState,
    supernet_id: &str,
    body: &PlanBody,
) -> Result<Created, ApiError> {
    let manifest = state.manifest(supernet_id).await?;
    let prepared = body.prepare(&manifest, state.config.max_solve_time_s)?;
    let max_solves = state.config.max_plan_solves;
    if let Some(e) = prepared.request.check_solves(&prepared.problem, max_solves) {
        return Err(ApiError::invalid(
            e.path,
            format!("{} here (--max-plan-solves)", e.reason),
        ));
    }
    let mut stored = body.clone();
    stored.time_limit_s = Some(prepared.request.time_limit_s);
    let new = NewRequest {
        plan_id: new_id("plan"),
        supernet_id: supernet_id.to_string(),
        text: serde_json::to_string(&stored).expect("JSON"),
        now: now_ms(),
    };
    if body.needs_job(&prepared.problem) {
        let _queueing = state.admit_job().await?;
        return queue(state, new).await;
    }
    // Within the request's timeout (which answers 503 at the same moment).
    let deadline = Instant::now() + state.config.request_timeout;
    let halt = Halt::new(Arc::default(), Some(deadline));
    let plan = solve(state, supernet_id, body, prepared, halt, Solving::InRequest).await?;
    if let Some(inf) = &plan.infeasibility {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "infeasible",
            inf.message.clone(),
        )
        .with_details(json!({ "infeasible": inf })));
    }
    store_solved(state, new, &plan).await
}

/// A checked plan request about to be stored: the new plan's id, its supernet, the request as
/// stored, and the creation time.
struct NewRequest {
    plan_id: String,
    supernet_id: String,
    text: String,
    now: i64,
}

/// Stores the plan as pending with the job that solves it, and wakes the job runner.
async fn queue(state: &AppState, new: NewRequest) -> Result<Created, ApiError> {
    let (plan, job) = state
        .db
        .queue_plan(&new.plan_id, &new.supernet_id, &new.text, new.now)
        .await?;
    state.jobs.wake.notify_one();
    Ok(Created::Queued {
        plan,
        job: Box::new(job),
    })
}

/// Stores a plan solved at once with its candidates (through the plan writer); a supernet
/// deleted meanwhile is a 404.
async fn store_solved(state: &AppState, new: NewRequest, plan: &Plan) -> Result<Created, ApiError> {
    let result = plan.summary_json().to_string();
    state
        .plan_writer
        .write(NewPlan {
            id: new.plan_id.clone(),
            supernet_id: new.supernet_id.clone(),
            request: new.text.clone(),
            status: plan_status(plan),
            result: result.clone(),
            created_at: new.now,
            candidates: CandidateFields::of_plan(plan),
        })
        .await?;
    // The stored row, as a read would return it.
    Ok(Created::Ready {
        plan: PlanRow {
            id: new.plan_id,
            supernet_id: new.supernet_id,
            request: new.text,
            status: plan_status(plan),
            job_id: None,
            result: Some(result),
            chosen_candidate_id: None,
            created_at: new.now,
            updated_at: new.now,
            candidates: plan.candidates.len() as i64,
        },
    })
}
