//! What a plan answers: its candidates with where each came from and how it was proven, the
//! plan's status, the engines that answered, and the JSON form of all of it. Finding them is
//! [`plan`](super::plan())'s.

use crate::problem::budget::Infeasibility;
use crate::problem::cost::CostKind;
use crate::problem::manifest::Warning;
use crate::problem::{Candidate, Problem};
use crate::solve::ilp::SolveStatus;
use serde::Serialize;
use serde_json::{json, Map, Value};

/// Where a candidate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The optimum under the budgets.
    Optimal,
    /// A point of the exact Pareto front.
    Pareto,
    /// The paper's pool: one group forced to another bit-width, the rest re-solved.
    Paper,
    /// The optimum at one budget of a sweep.
    Sweep,
}

/// The overall status of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    /// Every candidate is the proven optimum of its solve (or an exact front point).
    Optimal,
    /// Some solve stopped at its time limit; see each candidate's `solve`.
    TimeLimit,
    /// Every solve ended proven optimal or within the request's `mip_gap`, and some within the
    /// gap only; see each candidate's `solve`.
    WithinGap,
    /// No assignment meets the budgets.
    Infeasible,
}

impl PlanStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanStatus::Optimal => "optimal",
            PlanStatus::TimeLimit => "time_limit",
            PlanStatus::WithinGap => "within_gap",
            PlanStatus::Infeasible => "infeasible",
        }
    }
}

/// A candidate of a plan, with how it was found.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedCandidate {
    pub candidate: Candidate,
    pub sources: Vec<Source>,
    pub solve: SolveStatus,
}

/// The answer to a [`PlanRequest`](crate::PlanRequest).
#[derive(Debug, Clone)]
pub struct Plan {
    pub status: PlanStatus,
    /// Sorted by `sort_by`, then Omega.
    pub candidates: Vec<PlannedCandidate>,
    pub sort_by: CostKind,
    pub infeasibility: Option<Infeasibility>,
    pub solves: usize,
    pub solve_time_ms: f64,
    /// The engines that answered the plan's solves.
    pub engine: Solvers,
    pub warnings: Vec<Warning>,
    pub proxy_layers: Vec<String>,
    /// What Omega is: `sensitivity_kl`, `sensitivity_mse` (measured) or `hessian`.
    pub objective: &'static str,
}

/// An engine that answered solves of a plan. The variants are declared in the order of their
/// names, so the derived order is the order [`Solvers`] shows them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Solver {
    /// The expanding-core dynamic program.
    Core,
    /// A precomputed exact front ([`FrontIndex`](crate::FrontIndex)).
    FrontIndex,
    /// The ILP through HiGHS.
    Highs,
    /// The knapsack dynamic program (and the exact front).
    Knapsack,
}

impl Solver {
    /// The name in plans' `engine` (`core`, `front-index`, `highs`, `knapsack`).
    pub fn as_str(self) -> &'static str {
        match self {
            Solver::Core => "core",
            Solver::FrontIndex => "front-index",
            Solver::Highs => "highs",
            Solver::Knapsack => "knapsack",
        }
    }
}

/// The engines that answered a plan's solves. Shown as their names in name order joined by `+`
/// (`highs+knapsack`), or `none` when no solve ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Solvers(std::collections::BTreeSet<Solver>);

impl Solvers {
    pub fn contains(&self, s: Solver) -> bool {
        self.0.contains(&s)
    }

    pub(crate) fn insert(&mut self, s: Solver) {
        self.0.insert(s);
    }
}

impl std::fmt::Display for Solvers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.0.iter().map(|s| s.as_str()).collect();
        f.write_str(&names.join("+"))
    }
}

impl Plan {
    /// The JSON document of `bitplan plan --format json` (also the service's plan body).
    pub fn to_json(&self, problem: &Problem) -> Value {
        let mut doc = self.summary_json();
        doc["candidates"] = self
            .candidates
            .iter()
            .map(|c| candidate_json(problem, c))
            .collect();
        doc
    }

    /// Everything but the candidates: status, how it was solved, what Omega is, warnings and
    /// (when infeasible) why.
    pub fn summary_json(&self) -> Value {
        json!({
            "status": self.status.as_str(),
            "sort_by": self.sort_by.as_str(),
            "solves": self.solves,
            "solve_time_ms": self.solve_time_ms,
            "engine": self.engine.to_string(),
            "objective": self.objective,
            "proxy_layers": self.proxy_layers,
            "warnings": self.warnings,
            "infeasible": self.infeasibility,
        })
    }
}

/// A candidate as JSON: `bits` maps layer names to bit-widths, in manifest order.
pub fn candidate_json(problem: &Problem, c: &PlannedCandidate) -> Value {
    let mut v = bare_candidate_json(problem, &c.candidate);
    let obj = v.as_object_mut().expect("an object");
    obj.insert("sources".into(), json!(c.sources));
    obj.insert("solve".into(), json!(c.solve));
    v
}

/// A priced candidate as JSON, without provenance.
pub fn bare_candidate_json(problem: &Problem, c: &Candidate) -> Value {
    let mut obj = Map::new();
    obj.insert("bits".into(), problem.manifest.bits_json(&c.bits));
    obj.insert("omega".into(), json!(c.omega));
    obj.insert("size_bytes".into(), json!(c.size_bytes));
    obj.insert("bops".into(), json!(c.bops));
    obj.insert("avg_bits".into(), json!(c.avg_bits));
    if let Some(l) = c.latency_ms {
        obj.insert("latency_ms".into(), json!(l));
    }
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solvers_show_in_name_order_whatever_order_they_answered_in() {
        let mut used = Solvers::default();
        assert_eq!(used.to_string(), "none");
        for s in [
            Solver::Knapsack,
            Solver::Highs,
            Solver::Knapsack,
            Solver::FrontIndex,
        ] {
            used.insert(s);
        }
        assert_eq!(used.to_string(), "front-index+highs+knapsack");
        assert!(used.contains(Solver::Highs) && !used.contains(Solver::Core));
    }
}
