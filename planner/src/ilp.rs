//! The integer linear program, solved in process by HiGHS through good_lp.
//!
//! Binary `x[g,c]` picks choice `c` of group `g`; `sum_c x[g,c] = 1`. Every budget row and the
//! objective are shifted by their per-group minimum and scaled before the solver sees them (rows to
//! a right-hand side of one, the objective to a fixed spread): BOPs reach 10^11 while a layer's
//! Omega can be 10^-4, and unscaled rows make MIP solvers accept non-optimal assignments within
//! their absolute tolerances.
//!
//! Before the MIP, Lagrangian reduced-cost fixing shrinks it: the LP relaxation's duals `lambda`
//! give the bound `L = sum_g min_c (omega + lambda . cost) - lambda . budget` on every solution,
//! and a choice whose reduced cost lifts that bound above a feasible incumbent cannot be optimal,
//! so it is dropped before HiGHS branches.

use crate::budget::Limits;
use crate::error::{Error, Result};
use crate::problem::Problem;
use good_lp::solvers::highs::highs;
use good_lp::solvers::DualValues;
use good_lp::{
    variable, Expression, ProblemVariables, ResolutionError, Solution, SolutionStatus,
    SolutionWithDual, SolverModel, Variable, WithInitialSolution,
};
use serde::Serialize;

/// How a single solve ended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SolveStatus {
    /// Proven optimal.
    Optimal,
    /// Stopped at the time limit with a feasible assignment; `gap` bounds its relative distance
    /// from the optimum (from the LP relaxation), when known.
    TimeLimit { gap: Option<f64> },
}

/// What the ILP minimises.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Objective {
    Omega,
    /// Minimise one cost (for infeasibility reports).
    Cost(usize),
}

#[derive(Debug)]
pub(crate) enum IlpOutcome {
    Solved {
        picks: Vec<usize>,
        status: SolveStatus,
    },
    Infeasible,
}

/// The scaled objective's total range between the best and worst choice of every group.
/// HiGHS's optimality tolerances are absolute (~1e-7): a spread of 10^4 keeps differences of
/// 1e-11 of the total distinguishable. At a spread of 1, a 1000-layer instance came back
/// "optimal" 2.5e-6 above its true optimum.
const OBJECTIVE_SPREAD: f64 = 1e4;

/// One instance: which choices each group may still take, and what is minimised.
struct Instance<'a> {
    problem: &'a Problem,
    objective: Objective,
    allowed: Vec<Vec<usize>>,
}

impl Instance<'_> {
    fn coef(&self, g: usize, c: usize) -> f64 {
        let ch = &self.problem.groups[g].choices[c];
        match self.objective {
            Objective::Omega => ch.omega,
            Objective::Cost(k) => ch.cost[k],
        }
    }
    fn cost(&self, g: usize, c: usize, k: usize) -> f64 {
        self.problem.groups[g].choices[c].cost[k]
    }
    fn value(&self, picks: &[usize]) -> f64 {
        picks
            .iter()
            .enumerate()
            .map(|(g, &c)| self.coef(g, c))
            .sum()
    }
    fn costs(&self, picks: &[usize]) -> [f64; 3] {
        let mut out = [0.0; 3];
        for (g, &c) in picks.iter().enumerate() {
            for (k, o) in out.iter_mut().enumerate() {
                *o += self.cost(g, c, k);
            }
        }
        out
    }
    /// Sum over groups of the cheapest allowed choice for cost `k`.
    fn min_total(&self, k: usize) -> f64 {
        self.allowed
            .iter()
            .enumerate()
            .map(|(g, cs)| {
                cs.iter()
                    .map(|&c| self.cost(g, c, k))
                    .fold(f64::INFINITY, f64::min)
            })
            .sum()
    }
}

fn fits(costs: &[f64; 3], limits: &Limits) -> bool {
    limits
        .iter()
        .zip(costs)
        .all(|(l, c)| l.is_none_or(|l| *c <= l + 1e-12 * l.abs().max(1.0)))
}

/// Solves `min objective` s.t. limits, with some groups fixed to one choice.
pub(crate) fn solve(
    problem: &Problem,
    limits: &Limits,
    fixed: &[Option<usize>],
    objective: Objective,
    time_limit_s: f64,
) -> Result<IlpOutcome> {
    let allowed = (0..problem.groups.len())
        .map(|g| match fixed.get(g).copied().flatten() {
            Some(c) => vec![c],
            None => (0..problem.groups[g].choices.len()).collect(),
        })
        .collect();
    let mut inst = Instance {
        problem,
        objective,
        allowed,
    };
    for (k, l) in limits.iter().enumerate() {
        if l.is_some_and(|l| inst.min_total(k) > l + 1e-9 * l.abs().max(1.0)) {
            return Ok(IlpOutcome::Infeasible);
        }
    }
    let incumbent = if limits.iter().any(Option::is_some) {
        reduce(&mut inst, limits, time_limit_s).unwrap_or(None)
    } else {
        None
    };

    let mut limits = *limits;
    // Solver tolerances can admit a row a hair over its bound; re-solve with that row tightened.
    for _ in 0..4 {
        let outcome = solve_mip(&inst, &limits, incumbent.as_deref(), time_limit_s)?;
        let IlpOutcome::Solved { picks, .. } = &outcome else {
            return Ok(outcome);
        };
        let costs = inst.costs(picks);
        let mut tightened = false;
        for (k, lim) in limits.iter_mut().enumerate() {
            if let Some(l) = lim {
                let over = costs[k] - *l;
                if over > 1e-12 * l.abs().max(1.0) {
                    *l -= 2.0 * over;
                    tightened = true;
                }
            }
        }
        if !tightened {
            return Ok(outcome);
        }
    }
    Err(Error::Solver(
        "the solver kept returning assignments over budget".into(),
    ))
}

/// Lagrangian reduced-cost fixing (see the module docs). Narrows `inst.allowed` and returns the
/// feasible incumbent it used, if one was found. Optional: when it fails (say its LP hits the
/// time limit) the MIP runs unreduced.
fn reduce(
    inst: &mut Instance<'_>,
    limits: &Limits,
    time_limit_s: f64,
) -> Result<Option<Vec<usize>>> {
    let Run::Solved { values, lambda, .. } = run(inst, limits, true, None, time_limit_s)? else {
        return Ok(None);
    };
    let Some(incumbent) = repair_and_improve(inst, limits, argmax(&values)) else {
        return Ok(None);
    };
    let ub = inst.value(&incumbent);
    let lag = |g: usize, c: usize| {
        inst.coef(g, c) + (0..3).map(|k| lambda[k] * inst.cost(g, c, k)).sum::<f64>()
    };
    let best: Vec<f64> = inst
        .allowed
        .iter()
        .enumerate()
        .map(|(g, cs)| cs.iter().map(|&c| lag(g, c)).fold(f64::INFINITY, f64::min))
        .collect();
    let bound: f64 = best.iter().sum::<f64>()
        - (0..3)
            .map(|k| lambda[k] * limits[k].unwrap_or(0.0))
            .sum::<f64>();
    let slack = ub - bound;
    // Generous against rounding in the sums: keeping a choice is always safe.
    let tolerance = 1e-7 * ub.abs().max(bound.abs()) + 1e-12;
    let narrowed: Vec<Vec<usize>> = inst
        .allowed
        .iter()
        .enumerate()
        .map(|(g, cs)| {
            cs.iter()
                .copied()
                .filter(|&c| c == incumbent[g] || lag(g, c) - best[g] <= slack + tolerance)
                .collect()
        })
        .collect();
    inst.allowed = narrowed;
    Ok(Some(incumbent))
}

/// The choice with the largest value in each group.
fn argmax(values: &[Vec<(usize, f64)>]) -> Vec<usize> {
    values
        .iter()
        .map(|xs| {
            xs.iter()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .expect("every group has a choice")
                .0
        })
        .collect()
}

/// A feasible assignment near `picks`: first move groups to cheaper choices until every budget
/// holds (least objective increase per unit of relative excess removed), then take any move that
/// lowers the objective and stays within budget.
fn repair_and_improve(
    inst: &Instance<'_>,
    limits: &Limits,
    mut picks: Vec<usize>,
) -> Option<Vec<usize>> {
    let excess = |costs: &[f64; 3]| -> f64 {
        (0..3)
            .map(|k| {
                limits[k].map_or(0.0, |l| {
                    (costs[k] - l).max(0.0) / l.abs().max(f64::MIN_POSITIVE)
                })
            })
            .sum()
    };
    let moved = |costs: &[f64; 3], g: usize, from: usize, to: usize| -> [f64; 3] {
        let mut c = *costs;
        for (k, v) in c.iter_mut().enumerate() {
            *v += inst.cost(g, to, k) - inst.cost(g, from, k);
        }
        c
    };
    let mut costs = inst.costs(&picks);
    for _ in 0..inst.allowed.len() * 8 {
        let e = excess(&costs);
        if e == 0.0 {
            break;
        }
        let mut best: Option<(f64, usize, usize)> = None;
        for (g, cs) in inst.allowed.iter().enumerate() {
            for &c in cs {
                let gain = e - excess(&moved(&costs, g, picks[g], c));
                if gain <= 0.0 {
                    continue;
                }
                let score = (inst.coef(g, c) - inst.coef(g, picks[g])).max(0.0) / gain;
                if best.is_none_or(|b| score < b.0) {
                    best = Some((score, g, c));
                }
            }
        }
        let (_, g, c) = best?;
        costs = moved(&costs, g, picks[g], c);
        picks[g] = c;
    }
    if !fits(&costs, limits) {
        return None;
    }
    loop {
        let mut best: Option<(f64, usize, usize)> = None;
        for (g, cs) in inst.allowed.iter().enumerate() {
            for &c in cs {
                let delta = inst.coef(g, c) - inst.coef(g, picks[g]);
                if delta < 0.0
                    && best.is_none_or(|b| delta < b.0)
                    && fits(&moved(&costs, g, picks[g], c), limits)
                {
                    best = Some((delta, g, c));
                }
            }
        }
        let Some((_, g, c)) = best else {
            return Some(picks);
        };
        costs = moved(&costs, g, picks[g], c);
        picks[g] = c;
    }
}

fn solve_mip(
    inst: &Instance<'_>,
    limits: &Limits,
    incumbent: Option<&[usize]>,
    time_limit_s: f64,
) -> Result<IlpOutcome> {
    let (values, optimal) = match run(inst, limits, false, incumbent, time_limit_s)? {
        Run::Infeasible => return Ok(IlpOutcome::Infeasible),
        Run::Solved {
            values, optimal, ..
        } => (values, optimal),
    };
    let picks = argmax(&values);
    let status = if optimal {
        SolveStatus::Optimal
    } else {
        // Bound the gap with the LP relaxation (cheap next to the MIP that hit the limit).
        let incumbent = inst.value(&picks);
        let gap = match run(inst, limits, true, None, time_limit_s) {
            Ok(Run::Solved { values, .. }) => {
                let bound: f64 = values
                    .iter()
                    .enumerate()
                    .flat_map(|(g, xs)| xs.iter().map(move |&(c, v)| v * inst.coef(g, c)))
                    .sum();
                Some(((incumbent - bound) / incumbent.abs().max(f64::MIN_POSITIVE)).max(0.0))
            }
            _ => None,
        };
        SolveStatus::TimeLimit { gap }
    };
    Ok(IlpOutcome::Solved { picks, status })
}

/// Raw solver output: every variable's value per group and, for the LP relaxation, the budget
/// rows' multipliers in original units (objective per unit of cost).
enum Run {
    Solved {
        values: Vec<Vec<(usize, f64)>>,
        optimal: bool,
        lambda: [f64; 3],
    },
    Infeasible,
}

/// The least value of `f` over a group's allowed choices.
fn group_min(g: usize, xs: &[(usize, Variable)], f: impl Fn(usize, usize) -> f64) -> f64 {
    xs.iter()
        .map(|&(c, _)| f(g, c))
        .fold(f64::INFINITY, f64::min)
}

/// Builds and runs the model (binary, or relaxed to `0 <= x <= 1`).
fn run(
    inst: &Instance<'_>,
    limits: &Limits,
    relax: bool,
    initial: Option<&[usize]>,
    time_limit_s: f64,
) -> Result<Run> {
    let mut vars = ProblemVariables::new();
    let x: Vec<Vec<(usize, Variable)>> = inst
        .allowed
        .iter()
        .map(|cs| {
            cs.iter()
                .map(|&c| {
                    (
                        c,
                        vars.add(if relax {
                            variable().min(0.0).max(1.0)
                        } else {
                            variable().binary()
                        }),
                    )
                })
                .collect()
        })
        .collect();

    // Objective: subtract each group's minimum (a constant) and scale the remaining spread.
    let coef = |g: usize, c: usize| inst.coef(g, c);
    let mins: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(g, xs)| group_min(g, xs, coef))
        .collect();
    let spread: f64 = x
        .iter()
        .enumerate()
        .map(|(g, xs)| {
            xs.iter()
                .map(|&(c, _)| coef(g, c) - mins[g])
                .fold(0.0, f64::max)
        })
        .sum();
    let obj_scale = if spread > 0.0 {
        OBJECTIVE_SPREAD / spread
    } else {
        1.0
    };
    let mut obj = Expression::from(0.0);
    for (g, xs) in x.iter().enumerate() {
        for &(c, v) in xs {
            let w = (coef(g, c) - mins[g]) * obj_scale;
            if w != 0.0 {
                obj.add_mul(w, v);
            }
        }
    }

    let mut model = vars
        .minimise(obj)
        .using(highs)
        .set_time_limit(time_limit_s.max(0.001))
        .set_option("mip_rel_gap", 0.0)
        .set_option("mip_abs_gap", 0.0)
        .set_option("mip_feasibility_tolerance", 1e-9)
        .set_option("primal_feasibility_tolerance", 1e-9)
        .set_option("output_flag", false);
    if let Some(picks) = initial {
        let start: Vec<(Variable, f64)> = x
            .iter()
            .zip(picks)
            .flat_map(|(xs, &p)| {
                xs.iter()
                    .map(move |&(c, v)| (v, if c == p { 1.0 } else { 0.0 }))
            })
            .collect();
        model = model.with_initial_solution(start);
    }

    for xs in &x {
        let mut row = Expression::from(0.0);
        for &(_, v) in xs {
            row.add_mul(1.0, v);
        }
        model.add_constraint(row.eq(1.0));
    }

    let mut budget_rows = Vec::new();
    for (k, limit) in limits.iter().enumerate() {
        let Some(limit) = *limit else { continue };
        let cost = |g: usize, c: usize| inst.cost(g, c, k);
        let gmins: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(g, xs)| group_min(g, xs, cost))
            .collect();
        let slack = limit - gmins.iter().sum::<f64>();
        if slack < -1e-9 * limit.abs().max(1.0) {
            return Ok(Run::Infeasible);
        }
        let widest = x
            .iter()
            .enumerate()
            .flat_map(|(g, xs)| xs.iter().map(move |&(c, _)| (g, c)))
            .map(|(g, c)| cost(g, c) - gmins[g])
            .fold(0.0, f64::max);
        if widest == 0.0 {
            continue; // every allowed choice costs the same: the row cannot bind
        }
        let scale = if slack > 0.0 { slack } else { widest };
        let mut row = Expression::from(0.0);
        for (g, xs) in x.iter().enumerate() {
            for &(c, v) in xs {
                let w = (cost(g, c) - gmins[g]) / scale;
                if w != 0.0 {
                    row.add_mul(w, v);
                }
            }
        }
        budget_rows.push((
            k,
            scale,
            model.add_constraint(row.leq(slack.max(0.0) / scale)),
        ));
    }

    let mut solution = match model.solve() {
        Ok(s) => s,
        Err(ResolutionError::Infeasible) => return Ok(Run::Infeasible),
        Err(ResolutionError::Other("NoSolutionFound")) => {
            return Err(Error::Solver(format!(
                "no feasible assignment found within the {time_limit_s} s time limit"
            )))
        }
        Err(e) => return Err(Error::Solver(e.to_string())),
    };
    let values = x
        .iter()
        .map(|xs| xs.iter().map(|&(c, v)| (c, solution.value(v))).collect())
        .collect();
    // Gaps are set to zero, so HiGHS's "optimal with a gap" is a residual at rounding noise.
    let optimal = matches!(
        solution.status(),
        SolutionStatus::Optimal | SolutionStatus::GapLimit
    );
    let mut lambda = [0.0; 3];
    if relax {
        let duals = solution.compute_dual();
        for (k, scale, row) in budget_rows {
            // Row duals are per unit of the scaled row; express them per unit of original cost.
            lambda[k] = duals.dual(row).abs() / (scale * obj_scale);
        }
    }
    Ok(Run::Solved {
        values,
        optimal,
        lambda,
    })
}
