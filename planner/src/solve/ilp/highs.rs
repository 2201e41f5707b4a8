//! The HiGHS driver: builds the scaled binary program of an [`Instance`] (or its LP relaxation),
//! runs it within the solve's deadline, and reads back the assignment, how the run ended and the
//! LP's budget duals. The root (bounds, fixing, incumbents) is the parent module's.

use super::*;

pub(super) fn solve_mip(
    inst: &Instance<'_>,
    limits: &Limits,
    root: Option<&Root>,
    mip_gap: f64,
    deadline: &Deadline,
) -> Result<SolveOutcome> {
    let incumbent = root.map(|r| r.incumbent.as_slice());
    let bound = root.and_then(|r| r.bound);
    let model = Model {
        relax: false,
        initial: incumbent,
        time_limit_s: inst.mip_time(deadline),
        mip_gap,
        target: bound
            .filter(|_| mip_gap > 0.0)
            .map(|b| within_gap_of(b, mip_gap)),
    };
    let (values, ended) = match run(inst, limits, model)? {
        Run::Infeasible => return Ok(SolveOutcome::Infeasible),
        Run::NoSolution => return Err(no_solution(deadline)),
        Run::Solved { values, ended, .. } => (values, ended),
    };
    let mut picks = argmax(&values);
    match ended {
        Ended::Optimal => {
            return Ok(SolveOutcome::Solved {
                picks,
                status: SolveStatus::Optimal,
            })
        }
        Ended::WithinGap => {
            // HiGHS does not say how close it got: at most `mip_gap` (its relative gap is on the
            // shifted objective, which is no larger, and its target is within it of the root's
            // bound), and at most the gap to the root's bound.
            let value = inst.value(&picks);
            let gap = bound.map_or(mip_gap, |b| gap(value, b).min(mip_gap));
            return Ok(SolveOutcome::Solved {
                picks,
                status: SolveStatus::WithinGap { gap },
            });
        }
        Ended::TimeLimit => {}
    }
    // Stopped at the time limit: keep the better of the MIP's assignment and the root's.
    if let Some(start) = incumbent {
        if inst.value(start) < inst.value(&picks) {
            picks = start.to_vec();
        }
    }
    let bound = match bound {
        Some(b) => Some(b),
        // No root bound: the LP relaxation, if there is time left for it.
        None if deadline.remaining_s() >= MIN_MIP_S => {
            match run(inst, limits, Model::lp(deadline.remaining_s())) {
                Ok(Run::Solved { values, .. }) => Some(
                    values
                        .iter()
                        .enumerate()
                        .flat_map(|(g, xs)| xs.iter().map(move |&(c, v)| v * inst.coef(g, c)))
                        .sum(),
                ),
                _ => None,
            }
        }
        None => None,
    };
    let value = inst.value(&picks);
    let gap = bound.map(|b| gap(value, b));
    Ok(SolveOutcome::Solved {
        picks,
        status: match gap {
            // Out of time, but what was asked is proven.
            Some(gap) if mip_gap > 0.0 && gap <= mip_gap => SolveStatus::WithinGap { gap },
            gap => SolveStatus::TimeLimit { gap },
        },
    })
}

/// The objective below which a plan is within relative `mip_gap` of a lower bound on the
/// optimum (`(value - bound) / value <= mip_gap`), less a margin for the rounding of HiGHS's
/// shifted and scaled objective. HiGHS stops at the first plan under it: without it, a solve
/// whose root's bound already sits within the gap of the plans HiGHS finds went on to its time
/// limit, because HiGHS's own bound is weaker than the root's.
fn within_gap_of(bound: f64, mip_gap: f64) -> f64 {
    let target = bound / (1.0 - mip_gap);
    target - (1e-9 * (target - bound)).max(1e-11 * bound.abs())
}

/// What HiGHS is asked to solve, and when to stop.
pub(super) struct Model<'a> {
    /// The LP relaxation `0 <= x <= 1` instead of binaries.
    relax: bool,
    /// A feasible assignment to start from.
    initial: Option<&'a [usize]>,
    time_limit_s: f64,
    /// HiGHS's relative MIP gap (0: prove the optimum).
    mip_gap: f64,
    /// Stop at the first plan whose objective is below this (in the instance's units); HiGHS's
    /// "optimal" then only means that.
    target: Option<f64>,
}

impl Model<'_> {
    pub(super) fn lp(time_limit_s: f64) -> Model<'static> {
        Model {
            relax: true,
            initial: None,
            time_limit_s,
            mip_gap: 0.0,
            target: None,
        }
    }
}

/// Why HiGHS stopped with a solution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Ended {
    Optimal,
    /// Within the model's nonzero `mip_gap`.
    WithinGap,
    TimeLimit,
}

/// Raw solver output: every variable's value per group and, for the LP relaxation, the budget
/// rows' multipliers in original units (objective per unit of cost).
pub(super) enum Run {
    Solved {
        values: Vec<Vec<(usize, f64)>>,
        ended: Ended,
        lambda: PerCost<f64>,
    },
    Infeasible,
    /// Stopped at the time limit before finding any feasible assignment.
    NoSolution,
}

/// The shortest time limit HiGHS is given (it reads 0 as no limit).
const MIN_TIME_LIMIT_S: f64 = 0.001;

/// Each group's allowed choices with their variables.
type Vars = Vec<Vec<(usize, Variable)>>;

/// Per group, the least value of `f(group, choice)` over its allowed choices.
fn group_mins(x: &Vars, f: impl Fn(usize, usize) -> f64) -> Vec<f64> {
    x.iter()
        .enumerate()
        .map(|(g, xs)| {
            xs.iter()
                .map(|&(c, _)| f(g, c))
                .fold(f64::INFINITY, f64::min)
        })
        .collect()
}

/// `sum_g sum_c weight(f(g, c) - mins[g]) x[g,c]`, zero terms left out: the objective and the
/// budget rows as the solver sees them, shifted by each group's minimum and scaled by `weight`.
fn shifted(
    x: &Vars,
    f: impl Fn(usize, usize) -> f64,
    mins: &[f64],
    weight: impl Fn(f64) -> f64,
) -> Expression {
    let mut e = Expression::from(0.0);
    for (g, xs) in x.iter().enumerate() {
        for &(c, v) in xs {
            let w = weight(f(g, c) - mins[g]);
            if w != 0.0 {
                e.add_mul(w, v);
            }
        }
    }
    e
}

/// Per group, the largest value of `f(g, c) - mins[g]` over its allowed choices.
fn group_spans(x: &Vars, f: impl Fn(usize, usize) -> f64, mins: &[f64]) -> Vec<f64> {
    x.iter()
        .enumerate()
        .map(|(g, xs)| {
            xs.iter()
                .map(|&(c, _)| f(g, c) - mins[g])
                .fold(0.0, f64::max)
        })
        .collect()
}

/// Builds and runs the model (binary, or relaxed to `0 <= x <= 1`).
pub(super) fn run(inst: &Instance<'_>, limits: &Limits, model: Model<'_>) -> Result<Run> {
    let mut vars = ProblemVariables::new();
    let x: Vars = inst
        .allowed
        .iter()
        .map(|cs| {
            cs.iter()
                .map(|&c| {
                    let v = variable();
                    let v = if model.relax {
                        v.min(0.0).max(1.0)
                    } else {
                        v.binary()
                    };
                    (c, vars.add(v))
                })
                .collect()
        })
        .collect();

    // Objective: subtract each group's minimum (a constant) and scale the remaining spread.
    let coef = |g: usize, c: usize| inst.coef(g, c);
    let mins = group_mins(&x, coef);
    let spread: f64 = group_spans(&x, coef, &mins).iter().sum();
    let obj_scale = if spread > 0.0 {
        OBJECTIVE_SPREAD / spread
    } else {
        1.0
    };
    let objective = shifted(&x, coef, &mins, |d| d * obj_scale);
    let offset: f64 = mins.iter().sum();
    let mut highs_model = configure(vars.minimise(objective).using(highs), &model, &x, |t| {
        (t - offset) * obj_scale
    });
    for xs in &x {
        let mut row = Expression::from(0.0);
        for &(_, v) in xs {
            row.add_mul(1.0, v);
        }
        highs_model.add_constraint(row.eq(1.0));
    }
    let Some(budget_rows) = add_budget_rows(&mut highs_model, inst, limits, &x) else {
        return Ok(Run::Infeasible);
    };

    let mut solution = match highs_model.solve() {
        Ok(s) => s,
        Err(ResolutionError::Infeasible) => return Ok(Run::Infeasible),
        Err(ResolutionError::Other("NoSolutionFound")) => return Ok(Run::NoSolution),
        Err(e) => return Err(Error::Solver(e.to_string())),
    };
    let values = x
        .iter()
        .map(|xs| xs.iter().map(|&(c, v)| (c, solution.value(v))).collect())
        .collect();
    let ended = match solution.status() {
        SolutionStatus::Optimal if model.target.is_some() => Ended::WithinGap,
        SolutionStatus::Optimal => Ended::Optimal,
        // With a zero gap asked, HiGHS's "optimal with a gap" is a residual at rounding noise.
        SolutionStatus::GapLimit if model.mip_gap == 0.0 => Ended::Optimal,
        SolutionStatus::GapLimit => Ended::WithinGap,
        _ => Ended::TimeLimit,
    };
    let mut lambda = PerCost::default();
    if model.relax {
        let duals = solution.compute_dual();
        for (k, scale, row) in budget_rows {
            // Row duals are per unit of the scaled row; express them per unit of original cost.
            lambda[k] = duals.dual(row).abs() / (scale * obj_scale);
        }
    }
    Ok(Run::Solved {
        values,
        ended,
        lambda,
    })
}

/// The solver's options for `model`: time limit, gaps, tolerances, the objective target (through
/// `to_objective`, the instance's units to the solver's), presolve and the starting assignment.
fn configure(
    mut highs_model: HighsProblem,
    model: &Model<'_>,
    x: &Vars,
    to_objective: impl Fn(f64) -> f64,
) -> HighsProblem {
    highs_model = highs_model
        .set_time_limit(model.time_limit_s.max(MIN_TIME_LIMIT_S))
        .set_option("mip_rel_gap", model.mip_gap)
        .set_option("mip_abs_gap", 0.0)
        .set_option("mip_feasibility_tolerance", FEASIBILITY_TOLERANCE)
        .set_option("primal_feasibility_tolerance", FEASIBILITY_TOLERANCE)
        .set_option("mip_allow_restart", ALLOW_RESTART)
        .set_option("output_flag", false);
    if let Some(target) = model.target {
        highs_model = highs_model.set_option("objective_target", to_objective(target));
    }
    if model.relax {
        // HiGHS's presolve costs more than it saves on this LP: 60 against 18-20 ms on 1000 groups
        // under three budgets (measured). The MIP keeps it.
        highs_model = highs_model.set_option("presolve", "off");
    }
    if let Some(picks) = model.initial {
        let start: Vec<(Variable, f64)> = x
            .iter()
            .zip(picks)
            .flat_map(|(xs, &p)| {
                xs.iter()
                    .map(move |&(c, v)| (v, if c == p { 1.0 } else { 0.0 }))
            })
            .collect();
        highs_model = highs_model.with_initial_solution(start);
    }
    highs_model
}

/// One row per binding budget, shifted by each group's cheapest choice and scaled to a
/// right-hand side of one (by the slack, or the widest step when there is none); returns each
/// row's cost kind, scale and handle, or `None` when some budget cannot be met.
fn add_budget_rows(
    highs_model: &mut HighsProblem,
    inst: &Instance<'_>,
    limits: &Limits,
    x: &Vars,
) -> Option<Vec<(CostKind, f64, ConstraintReference)>> {
    let mut rows = Vec::new();
    for (k, limit) in limits.bounded() {
        let cost = |g: usize, c: usize| inst.cost(g, c, k);
        let gmins = group_mins(x, cost);
        let slack = limit - gmins.iter().sum::<f64>();
        if !within(limit - slack, limit) {
            return None;
        }
        let widest = group_spans(x, cost, &gmins).into_iter().fold(0.0, f64::max);
        if widest == 0.0 {
            continue; // every allowed choice costs the same: the row cannot bind
        }
        let scale = if slack > 0.0 { slack } else { widest };
        let row = shifted(x, cost, &gmins, |d| d / scale);
        rows.push((
            k,
            scale,
            highs_model.add_constraint(row.leq(slack.max(0.0) / scale)),
        ));
    }
    Some(rows)
}
