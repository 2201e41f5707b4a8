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

/// The least value of `f` over a group's allowed choices.
fn group_min(g: usize, xs: &[(usize, Variable)], f: impl Fn(usize, usize) -> f64) -> f64 {
    xs.iter()
        .map(|&(c, _)| f(g, c))
        .fold(f64::INFINITY, f64::min)
}

/// Builds and runs the model (binary, or relaxed to `0 <= x <= 1`).
pub(super) fn run(inst: &Instance<'_>, limits: &Limits, model: Model<'_>) -> Result<Run> {
    let Model {
        relax,
        initial,
        time_limit_s,
        mip_gap,
        target,
    } = model;
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
        .set_option("mip_rel_gap", mip_gap)
        .set_option("mip_abs_gap", 0.0)
        .set_option("mip_feasibility_tolerance", FEASIBILITY_TOLERANCE)
        .set_option("primal_feasibility_tolerance", FEASIBILITY_TOLERANCE)
        .set_option("mip_allow_restart", ALLOW_RESTART)
        .set_option("output_flag", false);

    if let Some(target) = target {
        let offset: f64 = mins.iter().sum();
        model = model.set_option("objective_target", (target - offset) * obj_scale);
    }
    if relax {
        // HiGHS's presolve costs more than it saves on this LP: 60 against 18-20 ms on 1000 groups
        // under three budgets (measured). The MIP keeps it.
        model = model.set_option("presolve", "off");
    }
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
    for (k, limit) in limits.bounded() {
        let cost = |g: usize, c: usize| inst.cost(g, c, k);
        let gmins: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(g, xs)| group_min(g, xs, cost))
            .collect();
        let slack = limit - gmins.iter().sum::<f64>();
        if !within(limit - slack, limit) {
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
        Err(ResolutionError::Other("NoSolutionFound")) => return Ok(Run::NoSolution),
        Err(e) => return Err(Error::Solver(e.to_string())),
    };
    let values = x
        .iter()
        .map(|xs| xs.iter().map(|&(c, v)| (c, solution.value(v))).collect())
        .collect();
    let ended = match solution.status() {
        SolutionStatus::Optimal if target.is_some() => Ended::WithinGap,
        SolutionStatus::Optimal => Ended::Optimal,
        // With a zero gap asked, HiGHS's "optimal with a gap" is a residual at rounding noise.
        SolutionStatus::GapLimit if mip_gap == 0.0 => Ended::Optimal,
        SolutionStatus::GapLimit => Ended::WithinGap,
        _ => Ended::TimeLimit,
    };
    let mut lambda = PerCost::default();
    if relax {
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
