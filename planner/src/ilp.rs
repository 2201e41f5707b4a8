//! The integer linear program, solved in process by HiGHS through good_lp.
//!
//! Binary `x[g,c]` picks choice `c` of group `g`; `sum_c x[g,c] = 1`. Every budget row and the
//! objective are shifted by their per-group minimum and scaled before the solver sees them (rows to
//! a right-hand side of one, the objective to a fixed spread): BOPs reach 10^11 while a layer's
//! Omega can be 10^-4, and unscaled rows make MIP solvers accept non-optimal assignments within
//! their absolute tolerances.

use crate::budget::Limits;
use crate::error::{Error, Result};
use crate::problem::Problem;
use good_lp::solvers::highs::highs;
use good_lp::{
    variable, Expression, ProblemVariables, ResolutionError, Solution, SolutionStatus, SolverModel,
    Variable,
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

/// The scaled objective's total range between the best and worst choice of every group.
const OBJECTIVE_SPREAD: f64 = 1e4;

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

fn coefficient(problem: &Problem, objective: Objective, g: usize, c: usize) -> f64 {
    let ch = &problem.groups[g].choices[c];
    match objective {
        Objective::Omega => ch.omega,
        Objective::Cost(k) => ch.cost[k],
    }
}

/// Solves `min objective` s.t. limits, with some groups fixed to one choice.
pub(crate) fn solve(
    problem: &Problem,
    limits: &Limits,
    fixed: &[Option<usize>],
    objective: Objective,
    time_limit_s: f64,
) -> Result<IlpOutcome> {
    let mut limits = *limits;
    // Solver tolerances can admit a row a hair over its bound; re-solve with that row tightened.
    for _ in 0..4 {
        let outcome = solve_once(problem, &limits, fixed, objective, time_limit_s)?;
        let IlpOutcome::Solved { picks, .. } = &outcome else {
            return Ok(outcome);
        };
        let cand = problem.candidate(picks);
        let mut tightened = false;
        for (k, lim) in limits.iter_mut().enumerate() {
            let kind = crate::CostKind::ALL[k];
            if let Some(l) = lim {
                let over = cand.cost(kind) - *l;
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

fn solve_once(
    problem: &Problem,
    limits: &Limits,
    fixed: &[Option<usize>],
    objective: Objective,
    time_limit_s: f64,
) -> Result<IlpOutcome> {
    let (values, optimal) = match run_model(problem, limits, fixed, objective, time_limit_s, false)?
    {
        Relaxed::Infeasible => return Ok(IlpOutcome::Infeasible),
        Relaxed::Solved { values, optimal } => (values, optimal),
    };
    let picks: Vec<usize> = values
        .iter()
        .map(|xs| {
            xs.iter()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|&(c, _)| c)
                .expect("every group has a choice")
        })
        .collect();
    let status = if optimal {
        SolveStatus::Optimal
    } else {
        // Bound the gap with the LP relaxation (cheap next to the MIP that hit the limit).
        let incumbent: f64 = picks
            .iter()
            .enumerate()
            .map(|(g, &c)| coefficient(problem, objective, g, c))
            .sum();
        let gap = match run_model(problem, limits, fixed, objective, time_limit_s, true) {
            Ok(Relaxed::Solved { values, .. }) => {
                let bound: f64 = values
                    .iter()
                    .enumerate()
                    .flat_map(|(g, xs)| xs.iter().map(move |&(c, v)| (g, c, v)))
                    .map(|(g, c, v)| v * coefficient(problem, objective, g, c))
                    .sum();
                Some(((incumbent - bound) / incumbent.abs().max(f64::MIN_POSITIVE)).max(0.0))
            }
            _ => None,
        };
        SolveStatus::TimeLimit { gap }
    };
    Ok(IlpOutcome::Solved { picks, status })
}

/// Builds and runs the model (binary, or relaxed to `0 <= x <= 1`).
fn run_model(
    problem: &Problem,
    limits: &Limits,
    fixed: &[Option<usize>],
    objective: Objective,
    time_limit_s: f64,
    relax: bool,
) -> Result<Relaxed> {
    let groups = &problem.groups;
    let allowed = |g: usize| -> Vec<usize> {
        match fixed.get(g).copied().flatten() {
            Some(c) => vec![c],
            None => (0..groups[g].choices.len()).collect(),
        }
    };

    let mut vars = ProblemVariables::new();
    let x: Vec<Vec<(usize, Variable)>> = (0..groups.len())
        .map(|g| {
            allowed(g)
                .into_iter()
                .map(|c| {
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
    let mins: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(g, xs)| {
            xs.iter()
                .map(|&(c, _)| coefficient(problem, objective, g, c))
                .fold(f64::INFINITY, f64::min)
        })
        .collect();
    let spread: f64 = x
        .iter()
        .enumerate()
        .map(|(g, xs)| {
            xs.iter()
                .map(|&(c, _)| coefficient(problem, objective, g, c) - mins[g])
                .fold(0.0, f64::max)
        })
        .sum();
    // HiGHS's optimality tolerances are absolute (~1e-7): spreading the objective over 10^4 keeps
    // differences of 1e-11 of the total distinguishable. At a spread of 1, a 1000-layer instance
    // came back "optimal" 2.5e-6 above its true optimum.
    let obj_scale = if spread > 0.0 {
        OBJECTIVE_SPREAD / spread
    } else {
        1.0
    };
    let mut obj = Expression::from(0.0);
    for (g, xs) in x.iter().enumerate() {
        for &(c, v) in xs {
            let w = (coefficient(problem, objective, g, c) - mins[g]) * obj_scale;
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

    for xs in &x {
        let mut row = Expression::from(0.0);
        for &(_, v) in xs {
            row.add_mul(1.0, v);
        }
        model.add_constraint(row.eq(1.0));
    }

    for (k, limit) in limits.iter().enumerate() {
        let Some(limit) = *limit else { continue };
        let base: f64 = x
            .iter()
            .enumerate()
            .map(|(g, xs)| {
                xs.iter()
                    .map(|&(c, _)| groups[g].choices[c].cost[k])
                    .fold(f64::INFINITY, f64::min)
            })
            .sum();
        let slack = limit - base;
        if slack < -1e-9 * limit.abs().max(1.0) {
            return Ok(Relaxed::Infeasible);
        }
        let mut row = Expression::from(0.0);
        let mut widest: f64 = 0.0;
        for (g, xs) in x.iter().enumerate() {
            let gmin = xs
                .iter()
                .map(|&(c, _)| groups[g].choices[c].cost[k])
                .fold(f64::INFINITY, f64::min);
            for &(c, _) in xs {
                widest = widest.max(groups[g].choices[c].cost[k] - gmin);
            }
        }
        if widest == 0.0 {
            continue; // every allowed choice costs the same: the row cannot bind
        }
        let scale = if slack > 0.0 { slack } else { widest };
        for (g, xs) in x.iter().enumerate() {
            let gmin = xs
                .iter()
                .map(|&(c, _)| groups[g].choices[c].cost[k])
                .fold(f64::INFINITY, f64::min);
            for &(c, v) in xs {
                let w = (groups[g].choices[c].cost[k] - gmin) / scale;
                if w != 0.0 {
                    row.add_mul(w, v);
                }
            }
        }
        model.add_constraint(row.leq(slack.max(0.0) / scale));
    }

    let solution = match model.solve() {
        Ok(s) => s,
        Err(ResolutionError::Infeasible) => return Ok(Relaxed::Infeasible),
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
    Ok(Relaxed::Solved {
        values,
        // Gaps are set to zero, so HiGHS's "optimal with a gap" is a residual at rounding noise.
        optimal: matches!(
            solution.status(),
            SolutionStatus::Optimal | SolutionStatus::GapLimit
        ),
    })
}

/// Raw solver output: the value of every variable, per group.
enum Relaxed {
    Solved {
        values: Vec<Vec<(usize, f64)>>,
        optimal: bool,
    },
    Infeasible,
}
