//! Local search for the root's incumbents: repairing an assignment over budget by the cheapest
//! moves, then improving a feasible one by single and paired moves within every budget. It reads
//! the instance and never calls the solver.

use super::{Deadline, Instance};
use crate::problem::cost::{Costs, Limits};

/// Moves a repair may take, per group, before it gives up on meeting the budgets.
const REPAIR_MOVES_PER_GROUP: usize = 8;

/// A feasible assignment near `picks`: first move groups to cheaper choices until every budget
/// holds (least objective increase per unit of relative excess removed), then improve it by local
/// search (see [`improve`]).
pub(super) fn repair_and_improve(
    inst: &Instance<'_>,
    limits: &Limits,
    mut picks: Vec<usize>,
    deadline: &Deadline,
) -> Option<Vec<usize>> {
    let excess = |costs: &Costs| -> f64 {
        limits
            .bounded()
            .map(|(k, l)| (costs[k] - l).max(0.0) / l.abs().max(f64::MIN_POSITIVE))
            .sum()
    };
    let moved = |costs: &Costs, g: usize, from: usize, to: usize| -> Costs {
        *costs + (inst.choice_costs(g, to) - inst.choice_costs(g, from))
    };
    let mut costs = inst.costs(&picks);
    for _ in 0..inst.allowed.len() * REPAIR_MOVES_PER_GROUP {
        let e = excess(&costs);
        if e == 0.0 || deadline.passed() {
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
    if !limits.admit(&costs) {
        return None;
    }
    improve(inst, limits, &mut picks, deadline);
    Some(picks)
}

/// A change of one group's choice, with its effect on the objective and on each cost.
#[derive(Clone, Copy)]
struct Move {
    g: usize,
    c: usize,
    objective: f64,
    cost: Costs,
}

/// Local search on a feasible assignment until no move helps or the deadline passes: the best
/// single move that lowers the objective within budget, else the best pair of moves in two
/// groups (one that lowers the objective and spends budget, one that frees what it needs).
/// Pairs reach assignments single moves cannot when every budget is nearly spent.
pub(super) fn improve(
    inst: &Instance<'_>,
    limits: &Limits,
    picks: &mut [usize],
    deadline: &Deadline,
) {
    let mut costs = inst.costs(picks);
    let admits = |costs: &Costs, m: &Move, n: Option<&Move>| -> bool {
        limits.admit(&(*costs + (m.cost + n.map_or(Costs::ZERO, |n| n.cost))))
    };
    while !deadline.passed() {
        let moves: Vec<Move> = inst
            .allowed
            .iter()
            .enumerate()
            .flat_map(|(g, cs)| {
                let from = picks[g];
                cs.iter().filter(move |&&c| c != from).map(move |&c| Move {
                    g,
                    c,
                    objective: inst.coef(g, c) - inst.coef(g, from),
                    cost: inst.choice_costs(g, c) - inst.choice_costs(g, from),
                })
            })
            .collect();
        let single = moves
            .iter()
            .filter(|m| m.objective < 0.0 && admits(&costs, m, None))
            .min_by(|a, b| a.objective.total_cmp(&b.objective));
        let chosen: Vec<Move> = match single {
            Some(m) => vec![*m],
            None => {
                // Moves that free budget, cheapest in objective first, to pair with gains.
                let mut givers: Vec<&Move> = moves.iter().filter(|m| m.objective >= 0.0).collect();
                givers.sort_by(|a, b| a.objective.total_cmp(&b.objective));
                let mut best: Option<(f64, Move, Move)> = None;
                for gain in moves.iter().filter(|m| m.objective < 0.0) {
                    for give in &givers {
                        let total = gain.objective + give.objective;
                        if total >= best.map_or(0.0, |b| b.0) {
                            break; // givers only get dearer
                        }
                        if give.g != gain.g && admits(&costs, gain, Some(give)) {
                            best = Some((total, *gain, **give));
                            break;
                        }
                    }
                }
                match best {
                    Some((_, a, b)) => vec![a, b],
                    None => return,
                }
            }
        };
        for m in chosen {
            costs += m.cost;
            picks[m.g] = m.c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::cost::CostKind;
    use crate::solve::ilp::Objective;
    use crate::{Manifest, Problem};

    /// Two layers, 8 or 4 bits, one size budget that the start spends exactly: no single move
    /// helps (the 8-bit upgrade of `a` overspends, the downgrade of `b` costs error), the pair does.
    #[test]
    fn local_search_takes_a_pair_of_moves_when_no_single_move_helps() {
        let manifest = Manifest::from_json(
            r#"{"name": "pair", "bits": [8, 4], "layers": [
                {"name": "a", "params": 8, "macs": 8, "hessian_trace_per_param": 1, "perturbation": {"8": 0, "4": 10}},
                {"name": "b", "params": 8, "macs": 8, "hessian_trace_per_param": 1, "perturbation": {"8": 0, "4": 1}}
            ]}"#,
        )
        .unwrap();
        let problem = Problem::new(&manifest, None).unwrap();
        let inst = Instance {
            problem: &problem,
            objective: Objective::Omega,
            allowed: vec![vec![0, 1], vec![0, 1]],
        };
        let mut limits = Limits::NONE;
        limits[CostKind::Size] = Some(12.0);
        let mut picks = vec![1, 0];
        assert_eq!(inst.value(&picks), 10.0);
        improve(&inst, &limits, &mut picks, &Deadline::after(10.0));
        assert_eq!(picks, vec![0, 1]);
        assert_eq!(inst.value(&picks), 1.0);
        assert!(limits.admit(&inst.costs(&picks)));
    }
}
