//! The baselines a search is measured against: proxy-only (the exact front of the starting
//! objective) and greedy (AIMET's path), each measuring its points in one round.

use super::{candidate_within, measured_front, starting_objective, Measure, MeasuredPoint};
use super::{round_fit, FitModel, Fitted, Objective, Search, SearchRequest, SearchRound};
use crate::error::{Error, Result};
use crate::problem::budget::limits_of;
use crate::problem::cost::CostKind;
use crate::problem::Problem;
use crate::solve::front::{pareto_front, spread};
use crate::solve::halt::Halt;

/// The proxy-only baseline: the exact front of the starting objective, `evaluations` points
/// spread evenly along it, each measured (one round).
pub fn proxy_only(
    problem: &Problem,
    request: &SearchRequest,
    measure: &mut Measure<'_>,
    halt: &Halt,
) -> Result<Search> {
    at_least_one(request)?;
    let limits = limits_of(&request.budgets.bounds(problem)?);
    let front = pareto_front(
        problem,
        request.pareto,
        &limits,
        &[],
        Some(request.evaluations),
        halt,
    )?;
    measure_once(problem, request, front, measure, halt)
}

/// The greedy baseline (AIMET's mixed-precision search): from every group at its costliest
/// choice, lower one group a step at a time, always the one whose next choice adds the least
/// objective per unit of cost saved; `evaluations` points spread evenly along that path within
/// the budgets, each measured (one round).
pub fn greedy(
    problem: &Problem,
    request: &SearchRequest,
    measure: &mut Measure<'_>,
    halt: &Halt,
) -> Result<Search> {
    at_least_one(request)?;
    let limits = limits_of(&request.budgets.bounds(problem)?);
    // Within the budgets, and each point cheaper than every one before it (a move that saves
    // nothing, or costs more on a device's latency table, is skipped), cheapest first.
    let mut path: Vec<Vec<usize>> = Vec::new();
    let mut cheapest = f64::INFINITY;
    for p in greedy_path(problem, request.pareto) {
        let c = problem.candidate(&p);
        if c.cost(request.pareto) < cheapest && candidate_within(&c, &limits) {
            cheapest = c.cost(request.pareto);
            path.push(p);
        }
    }
    path.reverse();
    let costs: Vec<f64> = path
        .iter()
        .map(|p| problem.candidate(p).cost(request.pareto))
        .collect();
    let points = spread(&costs, request.evaluations)
        .into_iter()
        .map(|i| path[i].clone())
        .collect();
    measure_once(problem, request, points, measure, halt)
}

/// The greedy path on `axis`, costliest first: from each group's first (highest-bit) choice, one
/// group moves to its next choice per step, the one adding the least objective per unit of cost
/// it saves (a move that saves nothing goes last); ends with every group at its last choice.
pub fn greedy_path(problem: &Problem, axis: CostKind) -> Vec<Vec<usize>> {
    let mut picks = vec![0; problem.groups.len()];
    let mut path = vec![picks.clone()];
    loop {
        let step = problem
            .groups
            .iter()
            .enumerate()
            .filter(|(g, group)| picks[*g] + 1 < group.choices.len())
            .map(|(g, group)| {
                let (now, next) = (&group.choices[picks[g]], &group.choices[picks[g] + 1]);
                let saved = now.cost[axis] - next.cost[axis];
                let added = next.omega - now.omega;
                let rate = if saved > 0.0 {
                    added / saved
                } else {
                    f64::INFINITY
                };
                (g, rate)
            })
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let Some((g, _)) = step else {
            return path;
        };
        picks[g] += 1;
        path.push(picks.clone());
    }
}

/// A baseline spreads its evaluations along a path: it needs at least one.
fn at_least_one(request: &SearchRequest) -> Result<()> {
    if request.evaluations == 0 {
        return Err(Error::invalid(
            "search request",
            "evaluations",
            "must be at least 1",
        ));
    }
    Ok(())
}

/// Measures `points` in order as one round of a search that stops there.
fn measure_once(
    problem: &Problem,
    request: &SearchRequest,
    points: Vec<Vec<usize>>,
    measure: &mut Measure<'_>,
    halt: &Halt,
) -> Result<Search> {
    if points.is_empty() {
        return Err(Error::invalid(
            "search request",
            "budgets",
            "no configuration meets the budgets",
        ));
    }
    let mut measured = Vec::new();
    for picks in points {
        halt.check()?;
        let candidate = problem.candidate(&picks);
        let loss = measure(&candidate)?;
        measured.push(MeasuredPoint {
            predicted: Some(candidate.omega),
            picks,
            candidate,
            loss,
            round: 1,
        });
    }
    let pairs: Vec<(f64, f64)> = measured
        .iter()
        .map(|m| (m.candidate.omega, m.loss))
        .collect();
    let front = measured_front(&measured, request.pareto);
    Ok(Search {
        rounds: vec![SearchRound {
            evaluated: measured.len(),
            fit: round_fit(&pairs, FitModel::Start),
            front: front.len(),
            improved: front.len(),
            model: FitModel::Start,
        }],
        evaluations: measured.len(),
        reused: 0,
        objective: Fitted::Additive(Objective::start(&starting_objective(problem))),
        measured,
        front,
        stopped: "the points are measured",
    })
}
