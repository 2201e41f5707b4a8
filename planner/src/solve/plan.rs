//! Planning: one solve, the exact Pareto front, the paper's iterative pool and budget sweeps,
//! merged into one deduplicated pool of candidates.
//!
//! It owns choosing an engine per solve and merging what each mode finds; the request's checks are
//! `request`'s, the answer's shape `answer`'s.

use crate::error::{Error, Result};
use crate::problem::budget::{limits_of, Bound, BudgetReport, Infeasibility};
use crate::problem::cost::{CostKind, Limits};
use crate::problem::{Candidate, Problem};
use crate::solve::answer::{Plan, PlanStatus, PlannedCandidate, Solver, Solvers, Source};
use crate::solve::front::{pareto_front, FrontIndex};
use crate::solve::halt::Halt;
use crate::solve::ilp::{self, Objective, SolveOutcome, SolveStatus};
use crate::solve::request::{Engine, PlanRequest, Sweep, AUTO_KNAPSACK_MAX_GROUPS};
use std::collections::HashMap;
use std::time::Instant;

/// Plans: the engine behind `bitplan plan` and the service's plans.
pub fn plan(problem: &Problem, request: &PlanRequest) -> Result<Plan> {
    Planner::new(problem, request, &Halt::default())?.run()
}

/// [`plan`], answering single-budget solves on `index`'s cost from the precomputed front (exact,
/// O(log points) each) instead of solving them; other solves are unchanged. Stops with
/// [`Error::Stopped`] when `halt` says so (checked before every solve and once per group of a
/// front), and no solve runs past its deadline.
pub fn plan_indexed(
    problem: &Problem,
    request: &PlanRequest,
    index: Option<&FrontIndex>,
    halt: &Halt,
) -> Result<Plan> {
    let mut planner = Planner::new(problem, request, halt)?;
    planner.index = index.filter(|ix| ix.fits(problem));
    planner.run()
}

/// Checks a request against a problem without solving (what [`plan`] would refuse up front).
pub fn validate(problem: &Problem, request: &PlanRequest) -> Result<()> {
    Planner::new(problem, request, &Halt::default()).map(|_| ())
}

struct Planner<'a> {
    problem: &'a Problem,
    request: &'a PlanRequest,
    bounds: Vec<Bound>,
    limits: Limits,
    solves: usize,
    engines: Solvers,
    started: Instant,
    index: Option<&'a FrontIndex>,
    halt: &'a Halt,
}

impl<'a> Planner<'a> {
    fn new(problem: &'a Problem, request: &'a PlanRequest, halt: &'a Halt) -> Result<Self> {
        let bounds = request.check(problem)?;
        let limits = limits_of(&bounds);
        Ok(Planner {
            problem,
            request,
            bounds,
            limits,
            solves: 0,
            engines: Solvers::default(),
            started: Instant::now(),
            index: None,
            halt,
        })
    }

    /// Each ILP solve's time limit: the request's, within what is left before the deadline.
    fn time_limit_s(&self) -> f64 {
        self.request.time_limit_s.min(self.halt.remaining_s())
    }

    fn run(mut self) -> Result<Plan> {
        let mut pool = Pool::default();
        let mut infeasibility = None;
        let mut base: Option<Vec<usize>> = None;
        if self.request.pareto.is_none() || self.request.paper_pool {
            match self.solve(&self.limits.clone(), &[])? {
                SolveOutcome::Solved { picks, status } => {
                    pool.add(self.problem, &picks, Source::Optimal, status);
                    base = Some(picks);
                }
                SolveOutcome::Infeasible => infeasibility = Some(self.infeasibility()?),
            }
        }
        if let Some(axis) = self.request.pareto {
            let front = self.front(axis)?;
            if front.is_empty() && infeasibility.is_none() {
                infeasibility = Some(self.infeasibility()?);
            }
            for (picks, solve) in front {
                pool.add(self.problem, &picks, Source::Pareto, solve);
            }
        }
        if let Some(base) = base.filter(|_| self.request.paper_pool) {
            self.paper_pool(&base, &mut pool)?;
        }
        if let Some(sweep) = self.request.sweep {
            self.sweep(sweep, &mut pool)?;
        }
        if pool.items.is_empty() && infeasibility.is_none() {
            infeasibility = Some(self.infeasibility()?);
        }
        Ok(self.finish(pool, infeasibility))
    }

    /// The requested front on `axis`: enumerated exactly (thinned to `points`), or, when too many
    /// points to enumerate but only a few wanted, solved for one by one.
    fn front(&mut self, axis: CostKind) -> Result<Vec<(Vec<usize>, SolveStatus)>> {
        let points = self.request.points;
        match pareto_front(self.problem, axis, &self.limits, &[], points, self.halt) {
            Ok(front) => {
                self.solves += 1;
                self.engines.insert(Solver::Knapsack);
                Ok(front
                    .into_iter()
                    .map(|picks| (picks, SolveStatus::Optimal))
                    .collect())
            }
            Err(Error::TooLarge(_)) if points.is_some() => {
                self.front_by_solves(axis, points.unwrap_or(1))
            }
            Err(e) => Err(e),
        }
    }

    /// The paper's iterative pool: the optimum with each group forced, in turn, to each choice
    /// `base` (the optimum) does not take.
    fn paper_pool(&mut self, base: &[usize], pool: &mut Pool) -> Result<()> {
        let mut fixed = vec![None; self.problem.groups.len()];
        for g in 0..self.problem.groups.len() {
            for c in 0..self.problem.groups[g].choices.len() {
                if c == base[g] {
                    continue;
                }
                fixed[g] = Some(c);
                if let SolveOutcome::Solved { picks, status } =
                    self.solve(&self.limits.clone(), &fixed)?
                {
                    pool.add(self.problem, &picks, Source::Paper, status);
                }
            }
            fixed[g] = None;
        }
        Ok(())
    }

    /// The optimum at `sweep.points` evenly spaced limits of one cost, from its minimum to its
    /// budget (or maximum).
    fn sweep(&mut self, sweep: Sweep, pool: &mut Pool) -> Result<()> {
        let k = sweep.cost;
        let lo = self.problem.min_cost(k);
        let hi = self.limits[k].map_or(self.problem.max_cost(k), |l| {
            l.min(self.problem.max_cost(k))
        });
        for t in 0..sweep.points {
            let mut limits = self.limits;
            let at = lo + (hi - lo) * t as f64 / (sweep.points - 1) as f64;
            limits[k] = Some(limits[k].map_or(at, |l| l.min(at)));
            if let SolveOutcome::Solved { picks, status } = self.solve(&limits, &[])? {
                pool.add(self.problem, &picks, Source::Sweep, status);
            }
        }
        Ok(())
    }

    /// The plan: the pool sorted, its status (the weakest proof of any candidate), and the
    /// infeasibility report only when nothing was found.
    fn finish(self, pool: Pool, infeasibility: Option<Infeasibility>) -> Plan {
        let ended = |f: fn(&SolveStatus) -> bool| pool.items.iter().any(|c| f(&c.solve));
        let status = if pool.items.is_empty() {
            PlanStatus::Infeasible
        } else if ended(|s| matches!(s, SolveStatus::TimeLimit { .. })) {
            PlanStatus::TimeLimit
        } else if ended(|s| matches!(s, SolveStatus::WithinGap { .. })) {
            PlanStatus::WithinGap
        } else {
            PlanStatus::Optimal
        };
        let sort_by = self
            .request
            .pareto
            .or(self.request.sweep.map(|s| s.cost))
            .unwrap_or(CostKind::Size);
        let mut candidates = pool.items;
        candidates.sort_by(|a, b| {
            a.candidate
                .cost(sort_by)
                .total_cmp(&b.candidate.cost(sort_by))
                .then(a.candidate.omega.total_cmp(&b.candidate.omega))
        });
        let manifest = &self.problem.manifest;
        Plan {
            status,
            candidates,
            sort_by,
            infeasibility: infeasibility.filter(|_| status == PlanStatus::Infeasible),
            solves: self.solves,
            solve_time_ms: self.started.elapsed().as_secs_f64() * 1e3,
            engine: self.engines,
            warnings: manifest.warnings.clone(),
            objective: manifest.objective(),
            proxy_layers: manifest
                .proxy_layers()
                .into_iter()
                .map(String::from)
                .collect(),
        }
    }

    /// `n` front points by the epsilon-constraint method: the least-Omega plan at `n` evenly spaced
    /// limits of the axis cost, from its minimum to the cost of the unconstrained optimum. Each is
    /// an optimum; points another one dominates are dropped.
    fn front_by_solves(
        &mut self,
        axis: CostKind,
        n: usize,
    ) -> Result<Vec<(Vec<usize>, SolveStatus)>> {
        let k = axis;
        let SolveOutcome::Solved { picks: top, status } = self.solve(&self.limits.clone(), &[])?
        else {
            return Ok(Vec::new());
        };
        let hi = self.problem.candidate(&top).cost(axis);
        let lo = self.problem.min_cost(axis);
        let mut found = vec![(top, status)];
        for t in 0..n.saturating_sub(1) {
            let mut limits = self.limits;
            let at = lo + (hi - lo) * t as f64 / (n - 1).max(1) as f64;
            limits[k] = Some(limits[k].map_or(at, |l| l.min(at)));
            if let SolveOutcome::Solved { picks, status } = self.solve(&limits, &[])? {
                found.push((picks, status));
            }
        }
        let priced: Vec<Candidate> = found
            .iter()
            .map(|(p, _)| self.problem.candidate(p))
            .collect();
        let dominated = |i: usize| {
            let (a, b) = (&priced[i], &priced);
            b.iter().any(|o| {
                o.cost(axis) <= a.cost(axis)
                    && o.omega <= a.omega
                    && (o.cost(axis) < a.cost(axis) || o.omega < a.omega)
            })
        };
        Ok((0..found.len())
            .filter(|&i| !dominated(i))
            .map(|i| found[i].clone())
            .collect())
    }

    /// One solve: minimum Omega under `limits` with some groups fixed.
    fn solve(&mut self, limits: &Limits, fixed: &[Option<usize>]) -> Result<SolveOutcome> {
        self.halt.check()?;
        self.solves += 1;
        if let Some(ix) = self.index {
            let bounded: Vec<(CostKind, f64)> = limits.bounded().collect();
            if self.request.engine != Engine::Highs
                && fixed.iter().all(Option::is_none)
                && bounded.len() == 1
                && bounded[0].0 == ix.axis()
            {
                self.engines.insert(Solver::FrontIndex);
                let limit = bounded[0].1;
                return Ok(ix
                    .best_under(limit)
                    .map_or(SolveOutcome::Infeasible, |picks| SolveOutcome::Solved {
                        picks,
                        status: SolveStatus::Optimal,
                    }));
            }
        }
        let bounded = limits.bounded().count();
        let small = self.problem.groups.len() <= AUTO_KNAPSACK_MAX_GROUPS;
        let engine = match (self.request.engine, bounded) {
            (Engine::Auto | Engine::Core, 0) => Engine::Knapsack,
            (Engine::Auto, 1) if small => Engine::Knapsack,
            (Engine::Auto | Engine::Core, 1) => Engine::Core,
            (Engine::Auto | Engine::Core, _) => Engine::Highs,
            (e, _) => e,
        };
        if engine == Engine::Core {
            let (k, limit) = limits.bounded().next().expect("one limit");
            match crate::solve::expanding_core::solve(self.problem, k, limit, fixed) {
                Ok(found) => {
                    self.engines.insert(Solver::Core);
                    return Ok(found.map_or(SolveOutcome::Infeasible, |picks| {
                        SolveOutcome::Solved {
                            picks,
                            status: SolveStatus::Optimal,
                        }
                    }));
                }
                // Past its state limit, HiGHS answers instead.
                Err(Error::TooLarge(_)) => return self.solve_with(Engine::Highs, limits, fixed),
                Err(e) => return Err(e),
            }
        }
        self.solve_with(engine, limits, fixed)
    }

    /// One solve by HiGHS or the knapsack program.
    fn solve_with(
        &mut self,
        engine: Engine,
        limits: &Limits,
        fixed: &[Option<usize>],
    ) -> Result<SolveOutcome> {
        match engine {
            Engine::Highs => {
                self.engines.insert(Solver::Highs);
                ilp::solve(
                    self.problem,
                    limits,
                    fixed,
                    Objective::Omega,
                    ilp::Stop {
                        time_limit_s: self.time_limit_s(),
                        mip_gap: self.request.mip_gap,
                    },
                )
            }
            _ => {
                self.engines.insert(Solver::Knapsack);
                Ok(knapsack_optimum(self.problem, limits, fixed)?.map_or(
                    SolveOutcome::Infeasible,
                    |picks| SolveOutcome::Solved {
                        picks,
                        status: SolveStatus::Optimal,
                    },
                ))
            }
        }
    }

    /// Reports, per budget, what it asked and the least achievable alone and under the others.
    fn infeasibility(&mut self) -> Result<Infeasibility> {
        let mut reports = Vec::new();
        for (i, b) in self.bounds.iter().enumerate() {
            let k = b.kind;
            let alone = self.problem.min_cost(b.kind);
            let others: Vec<Bound> = self
                .bounds
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, b)| b.clone())
                .collect();
            let other_limits = limits_of(&others);
            self.solves += 1;
            let under_others = match ilp::solve(
                self.problem,
                &other_limits,
                &[],
                Objective::Cost(k),
                ilp::Stop {
                    time_limit_s: self.time_limit_s(),
                    mip_gap: 0.0,
                },
            )? {
                SolveOutcome::Solved { picks, .. } => {
                    Some(self.problem.candidate(&picks).cost(b.kind) * b.to_budget_units)
                }
                SolveOutcome::Infeasible => None,
            };
            let min_achievable = alone * b.to_budget_units;
            reports.push(BudgetReport {
                budget: b.name,
                limit: b.limit * b.to_budget_units,
                min_achievable,
                min_under_other_budgets: under_others,
                achievable_alone: crate::problem::budget::within(
                    min_achievable,
                    b.limit * b.to_budget_units,
                ),
            });
        }
        Ok(Infeasibility::new(reports))
    }
}

/// The exact optimum by the knapsack dynamic program: the cheapest-Omega end of the front.
pub(crate) fn knapsack_optimum(
    problem: &Problem,
    limits: &Limits,
    fixed: &[Option<usize>],
) -> Result<Option<Vec<usize>>> {
    // Without any budget every group independently takes its least-Omega choice.
    if limits.bounded().next().is_none() {
        return Ok(Some(
            problem
                .allowed(fixed)
                .into_iter()
                .zip(&problem.groups)
                .map(|(allowed, grp)| {
                    // Least Omega, ties to the smaller size.
                    let key =
                        |c: usize| (grp.choices[c].omega, grp.choices[c].cost[CostKind::Size]);
                    allowed
                        .into_iter()
                        .min_by(|&a, &b| {
                            let ((oa, sa), (ob, sb)) = (key(a), key(b));
                            oa.total_cmp(&ob).then(sa.total_cmp(&sb))
                        })
                        .expect("every group has a choice")
                })
                .collect(),
        ));
    }
    let (axis, _) = limits.bounded().next().expect("some limit is set");
    crate::solve::front::optimum(problem, axis, limits, fixed)
}

#[derive(Default)]
struct Pool {
    items: Vec<PlannedCandidate>,
    index: HashMap<Vec<usize>, usize>,
}

impl Pool {
    fn add(&mut self, problem: &Problem, picks: &[usize], source: Source, solve: SolveStatus) {
        match self.index.get(picks) {
            Some(&i) => {
                if !self.items[i].sources.contains(&source) {
                    self.items[i].sources.push(source);
                }
            }
            None => {
                self.index.insert(picks.to_vec(), self.items.len());
                self.items.push(PlannedCandidate {
                    candidate: problem.candidate(picks),
                    sources: vec![source],
                    solve,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epsilon_constraint_points_lie_on_the_exact_front() {
        let m = crate::problem::synth::resnet18(3);
        let p = Problem::new(&m, None).unwrap();
        for axis in [CostKind::Size, CostKind::Bops] {
            let req = PlanRequest {
                pareto: Some(axis),
                ..PlanRequest::default()
            };
            let exact: Vec<(f64, f64)> = plan(&p, &req)
                .unwrap()
                .candidates
                .iter()
                .map(|c| (c.candidate.cost(axis), c.candidate.omega))
                .collect();
            let halt = Halt::default();
            let mut planner = Planner::new(&p, &req, &halt).unwrap();
            let points = planner.front_by_solves(axis, 9).unwrap();
            assert!(points.len() >= 5, "{}", points.len());
            for (picks, _) in &points {
                let c = p.candidate(picks);
                assert!(
                    exact
                        .iter()
                        .any(|&(cost, om)| cost == c.cost(axis)
                            && (om - c.omega).abs() <= 1e-12 * om),
                    "{axis:?}: ({}, {}) is not on the exact front",
                    c.cost(axis),
                    c.omega
                );
            }
        }
    }
}
