//! What a plan is asked: the [`PlanRequest`] (budgets, front, pool, sweep, solver limits), its
//! defaults, and its check against a problem. Answering it is [`plan`](super::plan())'s.

use crate::error::{Error, Result};
use crate::problem::budget::{Bound, Budgets};
use crate::problem::cost::CostKind;
use crate::problem::Problem;
use serde::{Deserialize, Serialize};

/// Above this many groups `Engine::Auto` answers one budget with the expanding-core program
/// instead of the knapsack DP: the DP is exact at any size, but on hundreds of layers of very
/// different sizes its state space (even pruned by the Lagrangian bound) outgrows it (measured: 200
/// random layers under a BOPs budget, 39 s where HiGHS took 2.6 s; ResNet-50's 50 groups, 9.9 ms
/// against HiGHS's 24 ms).
pub const AUTO_KNAPSACK_MAX_GROUPS: usize = 64;

/// Most points a budget sweep may ask for.
pub const MAX_SWEEP_POINTS: usize = 1000;

/// Most points a thinned front (`points`) may keep: a page of candidates.
pub const MAX_POINTS: usize = 10_000;

/// Most solves one plan may need, counted before any runs: the optimum, a sweep's points, the
/// paper's pool (one per choice a group can be forced to) and a front built solve by solve.
/// Each solve is also bounded by the time limit, and the whole plan by its caller's deadline.
pub const MAX_SOLVES: usize = 10_000;

/// Which algorithm answers a single solve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// With no budget, each group's least-Omega choice; with one, the knapsack dynamic program up
    /// to [`AUTO_KNAPSACK_MAX_GROUPS`] groups and the expanding-core program beyond; with more,
    /// HiGHS.
    #[default]
    Auto,
    /// Always the ILP through HiGHS.
    Highs,
    /// The exact dynamic program (any number of budgets; may refuse very large state spaces).
    Knapsack,
    /// The expanding-core dynamic program (exact, one budget; built for hundreds to thousands of
    /// groups). Solves with no budget or several are answered as under `auto`.
    Core,
}

/// A budget sweep: solves at evenly spaced budgets of one cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    pub cost: CostKind,
    pub points: usize,
}

/// What to plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    #[serde(default)]
    pub budgets: Budgets,
    /// Enumerate the exact front of Omega against this cost.
    #[serde(default)]
    pub pareto: Option<CostKind>,
    /// Keep only this many front points, spread evenly along the cost.
    #[serde(default)]
    pub points: Option<usize>,
    /// The paper's iterative pool around the budgeted optimum.
    #[serde(default)]
    pub paper_pool: bool,
    #[serde(default)]
    pub sweep: Option<Sweep>,
    /// Time limit of each ILP solve, seconds.
    #[serde(default = "default_time_limit")]
    pub time_limit_s: f64,
    /// Relative optimality gap at which an ILP solve may stop, in `[0, 1)`: 0 (the default)
    /// proves every optimum; `1e-4` (HiGHS's and Gurobi's default) accepts a plan proven within
    /// 0.01% of it. Exact engines (knapsack, core, front) always answer the optimum.
    #[serde(default)]
    pub mip_gap: f64,
    #[serde(default)]
    pub engine: Engine,
}

/// Time limit of each ILP solve unless a request gives one, seconds.
pub const DEFAULT_TIME_LIMIT_S: f64 = 10.0;

fn default_time_limit() -> f64 {
    DEFAULT_TIME_LIMIT_S
}

/// A `mip_gap` must be a relative gap in `[0, 1)`.
pub(crate) fn check_mip_gap(mip_gap: f64) -> Option<crate::FieldError> {
    (!(mip_gap.is_finite() && (0.0..1.0).contains(&mip_gap)))
        .then(|| crate::FieldError::new("mip_gap", "must be a relative gap at least 0 and below 1"))
}

impl Default for PlanRequest {
    fn default() -> Self {
        PlanRequest {
            budgets: Budgets::default(),
            pareto: None,
            points: None,
            paper_pool: false,
            sweep: None,
            time_limit_s: default_time_limit(),
            mip_gap: 0.0,
            engine: Engine::Auto,
        }
    }
}

impl PlanRequest {
    /// The solves this request may need at most, before any runs.
    pub fn solves(&self, problem: &Problem) -> usize {
        let optimum = usize::from(self.pareto.is_none() || self.paper_pool);
        let pool = if self.paper_pool {
            problem.groups.iter().map(|g| g.choices.len() - 1).sum()
        } else {
            0
        };
        let sweep = self.sweep.map_or(0, |s| s.points);
        // A front too large to enumerate is solved for point by point.
        let front = self.pareto.map_or(0, |_| self.points.unwrap_or(1));
        optimum + pool + sweep + front
    }

    /// Refuses a request needing more than `max` solves (see [`PlanRequest::solves`]), naming the
    /// field with the largest share of them.
    pub fn check_solves(&self, problem: &Problem, max: usize) -> Option<crate::FieldError> {
        let solves = self.solves(problem);
        if solves <= max {
            return None;
        }
        let (sweep, points) = (self.sweep.map_or(0, |s| s.points), self.points.unwrap_or(0));
        let pool = solves.saturating_sub(sweep + points);
        let field = if self.paper_pool && pool >= sweep.max(points) {
            "paper_pool"
        } else if sweep >= points {
            "sweep.points"
        } else {
            "points"
        };
        Some(crate::FieldError::new(
            field,
            format!("the plan would need {solves} solves, more than the {max} a plan may run"),
        ))
    }

    /// Checks the request against `problem` (what [`plan`](super::plan()) refuses up front) and
    /// returns its budgets as bounds.
    pub(crate) fn check(&self, problem: &Problem) -> Result<Vec<Bound>> {
        let bounds = self.budgets.bounds(problem)?;
        let mut errors = Vec::new();
        if self.pareto == Some(CostKind::Latency) && !problem.has_latency() {
            errors.push(crate::FieldError::new(
                "pareto",
                "a latency front needs a device profile",
            ));
        }
        if self.points == Some(0) {
            errors.push(crate::FieldError::new("points", "must be at least 1"));
        }
        if self.points.is_some_and(|n| n > MAX_POINTS) {
            errors.push(crate::FieldError::new(
                "points",
                format!("must be at most {MAX_POINTS}"),
            ));
        }
        if self.points.is_some() && self.pareto.is_none() {
            errors.push(crate::FieldError::new(
                "points",
                "only applies to a Pareto front (give pareto)",
            ));
        }
        if let Some(s) = self.sweep {
            if s.points < 2 {
                errors.push(crate::FieldError::new(
                    "sweep.points",
                    "a sweep needs at least 2 points",
                ));
            }
            if s.points > MAX_SWEEP_POINTS {
                errors.push(crate::FieldError::new(
                    "sweep.points",
                    format!("must be at most {MAX_SWEEP_POINTS}"),
                ));
            }
            if s.cost == CostKind::Latency && !problem.has_latency() {
                errors.push(crate::FieldError::new(
                    "sweep.cost",
                    "a latency sweep needs a device profile",
                ));
            }
        }
        if !(self.time_limit_s.is_finite() && self.time_limit_s > 0.0) {
            errors.push(crate::FieldError::new(
                "time_limit_s",
                "must be a positive number of seconds",
            ));
        }
        errors.extend(check_mip_gap(self.mip_gap));
        if errors.is_empty() {
            errors.extend(self.check_solves(problem, MAX_SOLVES));
        }
        Error::check("plan request", errors)?;
        Ok(bounds)
    }
}
