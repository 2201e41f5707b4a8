//! Exact single-budget solves by an expanding-core dynamic program, after Pisinger's minimal
//! algorithm for the multiple-choice knapsack problem (Eur. J. Oper. Res. 83, 1995).
//!
//! Minimise `sum_g w_g(c_g)` subject to `sum_g a_g(c_g) <= limit`. The LP relaxation's multiplier
//! `lambda` (found by bisection: the least `lambda` whose Lagrangian choice `x*` fits) splits every
//! assignment's value as `L + sum_g r_g(c_g) + lambda * slack`, where `L` is the Lagrangian bound
//! and `r_g(c) >= 0` the reduced cost of moving group `g` from `x*_g` to `c`. Groups enter the
//! dynamic program ("the core") in order of their best ratio `r / |da|`: the groups whose choice is
//! least settled come first. States are whole assignments (groups outside the core at `x*`), kept
//! as a staircase of (cost, value) with dominated states dropped. A state is dropped as soon as its
//! bound reaches the incumbent; the bound is the LP of what the groups outside the core can still
//! do: a state with slack `s` gains at most `s * min(lambda, rho_up)` in reduced terms from filling
//! it, and a state over budget by `o` pays at least `o * rho_down` to get back, with `rho_up` /
//! `rho_down` the best ratios of the moves left outside. Since those ratios only grow as the core
//! expands, most states die young: on 1000 random layers the staircase peaks at 1,500-60,000
//! states.

use crate::error::{Error, Result};
use crate::problem::budget::within;
use crate::problem::cost::CostKind;
use crate::problem::Problem;
use crate::solve::front::MAX_STATES;

/// A state of the dynamic program: a whole assignment, by its cost, value, summed reduced cost
/// and how it was reached.
#[derive(Clone, Copy)]
struct State {
    cost: f64,
    value: f64,
    reduced: f64,
    /// Index of the state it extends, in the previous stage.
    parent: u32,
    /// The choice taken in this stage's group; `NONE` keeps the group at `x*`.
    choice: u8,
}

const NONE: u8 = u8::MAX;

/// Doublings of the multiplier before a budget no finite multiplier meets is reported.
const MAX_DOUBLINGS: usize = 1000;
/// Bisection steps on the multiplier at most; the bisection ends sooner once `lo` and `hi` are
/// adjacent doubles.
const MAX_BISECTIONS: usize = 200;
/// A state whose bound is within this relative distance of the incumbent cannot improve on it.
const PRUNE_TOLERANCE: f64 = 1e-12;

/// A move of one group away from its Lagrangian choice.
#[derive(Clone, Copy)]
struct Move {
    choice: u8,
    reduced: f64,
    value: f64,
    cost: f64,
}

/// The least-`w` assignment with `sum a <= limit`; `choices[g]` lists group `g`'s allowed choices
/// as `(choice index, w, a)`. `None` when nothing fits. Ties in `w` go to the lower cost where the
/// Lagrangian choice decides them; otherwise to the first optimum found.
pub(crate) fn optimum(
    choices: &[Vec<(usize, f64, f64)>],
    limit: f64,
) -> Result<Option<Vec<usize>>> {
    optimum_until(choices, limit, &|| false)
}

/// Each group's allowed choices as `(choice index, w, a)`.
type Choices = [Vec<(usize, f64, f64)>];

/// [`optimum`], giving up with [`Error::TooLarge`] when `stop()` says so (checked once per group).
pub(crate) fn optimum_until(
    choices: &Choices,
    limit: f64,
    stop: &dyn Fn() -> bool,
) -> Result<Option<Vec<usize>>> {
    let cheapest: f64 = choices
        .iter()
        .map(|cs| cs.iter().map(|c| c.2).fold(f64::INFINITY, f64::min))
        .sum();
    if !within(cheapest, limit) {
        return Ok(None);
    }
    let unconstrained = lagrangian_choice(choices, 0.0);
    if within(cost_of(choices, &unconstrained), limit) {
        return Ok(Some(to_choices(choices, &unconstrained)));
    }
    let relaxation = Relaxation::new(choices, limit)?;
    let moves = relaxation.moves(choices);
    let core = Core::new(&relaxation, &moves, limit);
    expand(choices, &core, &moves, stop).map(Some)
}

/// Per group, the choice of least `w + lambda * a` (ties to the lower cost).
fn lagrangian_choice(choices: &Choices, lambda: f64) -> Vec<usize> {
    choices
        .iter()
        .map(|cs| {
            (0..cs.len())
                .min_by(|&i, &j| {
                    let (x, y) = (cs[i], cs[j]);
                    (x.1 + lambda * x.2)
                        .total_cmp(&(y.1 + lambda * y.2))
                        .then(x.2.total_cmp(&y.2))
                })
                .expect("every group has a choice")
        })
        .collect()
}

/// The summed cost `a` of positions `p` (one per group, into its choices).
fn cost_of(choices: &Choices, p: &[usize]) -> f64 {
    p.iter().enumerate().map(|(g, &i)| choices[g][i].2).sum()
}

/// The choice indices of positions `p`.
fn to_choices(choices: &Choices, p: &[usize]) -> Vec<usize> {
    p.iter()
        .enumerate()
        .map(|(g, &i)| choices[g][i].0)
        .collect()
}

/// The LP relaxation of the budget: its multiplier, the Lagrangian choice `x*` and the bound.
struct Relaxation {
    lambda: f64,
    /// Per group, the position of its Lagrangian choice `x*`.
    start: Vec<usize>,
    /// Per group, its Lagrangian value `w + lambda * a` at `x*`.
    best: Vec<f64>,
    /// `L = sum best - lambda * limit`.
    bound: f64,
}

impl Relaxation {
    /// The least lambda whose Lagrangian choice fits: double, then bisect. Any lambda >= 0 gives
    /// valid bounds; a better one only prunes more.
    fn new(choices: &Choices, limit: f64) -> Result<Relaxation> {
        let fits =
            |lambda: f64| within(cost_of(choices, &lagrangian_choice(choices, lambda)), limit);
        let mut hi = 1.0f64;
        let mut doublings = 0;
        while !fits(hi) {
            hi *= 2.0;
            doublings += 1;
            if doublings > MAX_DOUBLINGS {
                return Err(Error::Solver(
                    "no finite Lagrange multiplier meets the budget".into(),
                ));
            }
        }
        let mut lo = 0.0f64;
        for _ in 0..MAX_BISECTIONS {
            let mid = 0.5 * (lo + hi);
            if mid <= lo || mid >= hi {
                break;
            }
            if fits(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let mut r = Relaxation {
            lambda: hi,
            start: lagrangian_choice(choices, hi),
            best: Vec::new(),
            bound: 0.0,
        };
        r.best = (0..choices.len())
            .map(|g| r.lagrangian(choices, g, r.start[g]))
            .collect();
        r.bound = r.best.iter().sum::<f64>() - r.lambda * limit;
        Ok(r)
    }

    fn lagrangian(&self, choices: &Choices, g: usize, i: usize) -> f64 {
        choices[g][i].1 + self.lambda * choices[g][i].2
    }

    /// Per group, its useful moves away from `x*`.
    fn moves(&self, choices: &Choices) -> Vec<Vec<Move>> {
        (0..choices.len())
            .map(|g| {
                let (_, w0, a0) = choices[g][self.start[g]];
                (0..choices[g].len())
                    .filter(|&i| i != self.start[g])
                    .filter_map(|i| {
                        let (_, w, a) = choices[g][i];
                        let m = Move {
                            choice: i as u8,
                            reduced: (self.lagrangian(choices, g, i) - self.best[g]).max(0.0),
                            value: w - w0,
                            cost: a - a0,
                        };
                        // Same cost and no better: never useful.
                        (m.cost != 0.0 || m.value < 0.0).then_some(m)
                    })
                    .collect()
            })
            .collect()
    }
}

impl Move {
    /// Reduced cost per unit of budget moved (0 for a free move).
    fn ratio(&self) -> f64 {
        if self.cost == 0.0 {
            0.0
        } else {
            self.reduced / self.cost.abs()
        }
    }
}

/// The order groups enter the core, and the LP bound on what the groups still outside can do.
struct Core<'a> {
    relaxation: &'a Relaxation,
    limit: f64,
    /// Groups with a useful move, by their best ratio.
    order: Vec<usize>,
    /// Best ratios of the moves outside the core once stage `i` is done: `up` spends budget and
    /// gains value, `down` frees budget and loses value.
    up: Vec<f64>,
    down: Vec<f64>,
}

impl Core<'_> {
    fn new<'a>(relaxation: &'a Relaxation, moves: &[Vec<Move>], limit: f64) -> Core<'a> {
        let key: Vec<f64> = moves
            .iter()
            .map(|ms| ms.iter().map(Move::ratio).fold(f64::INFINITY, f64::min))
            .collect();
        let mut order: Vec<usize> = (0..moves.len()).filter(|&g| !moves[g].is_empty()).collect();
        order.sort_by(|&x, &y| key[x].total_cmp(&key[y]));
        let m = order.len();
        let mut up = vec![f64::INFINITY; m + 1];
        let mut down = vec![f64::INFINITY; m + 1];
        for i in (0..m).rev() {
            up[i] = up[i + 1];
            down[i] = down[i + 1];
            for mv in &moves[order[i]] {
                if mv.cost > 0.0 {
                    up[i] = up[i].min(mv.ratio());
                } else if mv.cost < 0.0 {
                    down[i] = down[i].min(mv.ratio());
                }
            }
        }
        Core {
            relaxation,
            limit,
            order,
            up,
            down,
        }
    }

    /// Whether a state after stage `i - 1` cannot beat `ub`: its bound is the Lagrangian bound,
    /// its reduced cost, and the best the groups outside the core can do with its slack (or
    /// must pay to cover its excess).
    fn prunes(&self, t: &State, i: usize, ub: f64) -> bool {
        let (r, slack) = (self.relaxation, self.limit - t.cost);
        let lb = if slack >= 0.0 {
            r.bound + t.reduced + slack * r.lambda.min(self.up[i])
        } else {
            r.bound + t.reduced - slack * self.down[i]
        };
        lb >= ub - PRUNE_TOLERANCE * ub.abs()
    }
}

/// The dynamic program over the core's groups, from `x*` (the first incumbent, over budget or
/// not) to the optimum.
fn expand(
    choices: &Choices,
    core: &Core<'_>,
    moves: &[Vec<Move>],
    stop: &dyn Fn() -> bool,
) -> Result<Vec<usize>> {
    let (start, m) = (&core.relaxation.start, core.order.len());
    let mut incumbent = to_choices(choices, start);
    let mut ub = (0..choices.len())
        .map(|g| choices[g][start[g]].1)
        .sum::<f64>();
    let mut states = vec![State {
        cost: cost_of(choices, start),
        value: ub,
        reduced: 0.0,
        parent: 0,
        choice: NONE,
    }];
    // Per stage, how each kept state was reached.
    let mut history: Vec<Vec<(u32, u8)>> = Vec::with_capacity(m);
    let mut lists: Vec<Vec<State>> = Vec::new();
    for (i, &g) in core.order.iter().enumerate() {
        // One list per way to take group g (stay, or each move): the states shifted by it, in
        // cost order since `states` is; then a K-way merge keeps the staircase.
        let stay = Move {
            choice: NONE,
            reduced: 0.0,
            value: 0.0,
            cost: 0.0,
        };
        lists.resize_with(moves[g].len() + 1, Vec::new);
        for (list, mv) in lists
            .iter_mut()
            .zip(std::iter::once(&stay).chain(&moves[g]))
        {
            list.clear();
            for (p, s) in states.iter().enumerate() {
                let t = s.then(p, mv);
                if within(t.cost, core.limit) && t.value < ub {
                    ub = t.value;
                    incumbent = reconstruct(&history, &core.order, start, i, &t, choices);
                }
                if !core.prunes(&t, i + 1, ub) {
                    list.push(t);
                }
            }
        }
        // Dominated by a cheaper state, or bounded out by an incumbent found since.
        merge_staircase(&lists, &mut states, |t| !core.prunes(t, i + 1, ub));
        if states.len() > MAX_STATES {
            return Err(Error::TooLarge(format!(
                "the core dynamic program has more than {MAX_STATES} states at group {} of {}",
                i + 1,
                m
            )));
        }
        history.push(states.iter().map(|s| (s.parent, s.choice)).collect());
        if states.is_empty() {
            break;
        }
        if stop() {
            return Err(Error::TooLarge(format!(
                "the core dynamic program stopped at group {} of {m}",
                i + 1
            )));
        }
    }
    Ok(incumbent)
}

impl State {
    /// This state (at index `parent` of its stage) with one more group taken by `mv`.
    fn then(&self, parent: usize, mv: &Move) -> State {
        State {
            cost: self.cost + mv.cost,
            value: self.value + mv.value,
            reduced: self.reduced + mv.reduced,
            parent: parent as u32,
            choice: mv.choice,
        }
    }
}

/// K-way merge of `lists` (each in cost order) into `states`, in (cost, value) order, keeping a
/// state only when it is worth less than every cheaper kept state and `keep` admits it.
fn merge_staircase(lists: &[Vec<State>], states: &mut Vec<State>, keep: impl Fn(&State) -> bool) {
    states.clear();
    let mut heads = vec![0usize; lists.len()];
    loop {
        let mut pick: Option<(usize, State)> = None;
        for (j, list) in lists.iter().enumerate() {
            if let Some(t) = list.get(heads[j]) {
                if pick.is_none_or(|(_, b)| {
                    t.cost
                        .total_cmp(&b.cost)
                        .then(t.value.total_cmp(&b.value))
                        .is_lt()
                }) {
                    pick = Some((j, *t));
                }
            }
        }
        let Some((j, t)) = pick else { break };
        heads[j] += 1;
        if states.last().is_none_or(|k: &State| t.value < k.value) && keep(&t) {
            states.push(t);
        }
    }
}

/// The full assignment of state `t`, created in stage `stage` (not yet in `history`).
fn reconstruct(
    history: &[Vec<(u32, u8)>],
    order: &[usize],
    start: &[usize],
    stage: usize,
    t: &State,
    choices: &Choices,
) -> Vec<usize> {
    let mut picks = start.to_vec();
    if t.choice != NONE {
        picks[order[stage]] = usize::from(t.choice);
    }
    let mut p = t.parent as usize;
    for i in (0..stage).rev() {
        let (parent, choice) = history[i][p];
        if choice != NONE {
            picks[order[i]] = usize::from(choice);
        }
        p = parent as usize;
    }
    to_choices(choices, &picks)
}

/// [`optimum`] for a problem: least Omega with cost `k` within `limit`, some groups fixed.
pub(crate) fn solve(
    problem: &Problem,
    k: CostKind,
    limit: f64,
    fixed: &[Option<usize>],
) -> Result<Option<Vec<usize>>> {
    let choices: Vec<Vec<(usize, f64, f64)>> = problem
        .allowed(fixed)
        .into_iter()
        .zip(&problem.groups)
        .map(|(allowed, grp)| {
            allowed
                .into_iter()
                .map(|c| (c, grp.choices[c].omega, grp.choices[c].cost[k]))
                .collect()
        })
        .collect();
    optimum(&choices, limit)
}

#[cfg(test)]
mod tests {
    use super::optimum;
    use proptest::prelude::*;

    /// Every assignment's (w, a), by enumeration.
    fn all(choices: &[Vec<(usize, f64, f64)>]) -> Vec<(f64, f64)> {
        let mut out = vec![(0.0, 0.0)];
        for cs in choices {
            out = out
                .iter()
                .flat_map(|&(w, a)| cs.iter().map(move |c| (w + c.1, a + c.2)))
                .collect();
        }
        out
    }

    /// Small integer values make ties, equal costs and zero-cost moves common.
    fn groups() -> impl Strategy<Value = Vec<Vec<(usize, f64, f64)>>> {
        proptest::collection::vec(
            proptest::collection::vec((0u32..20, 0u32..12), 1..=4),
            1..=8,
        )
        .prop_map(|gs| {
            gs.into_iter()
                .map(|cs| {
                    cs.into_iter()
                        .enumerate()
                        .map(|(i, (w, a))| (i, f64::from(w) * 0.37, f64::from(a) * 1.3))
                        .collect()
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        #[test]
        fn the_core_optimum_equals_brute_force(choices in groups(), at in 0.0f64..1.2) {
            let every = all(&choices);
            let lo = every.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
            let hi = every.iter().map(|p| p.1).fold(0.0, f64::max);
            let limit = lo + at * (hi - lo) - 0.05 * (hi - lo) * f64::from(u8::from(at < 0.1));
            let best = every
                .iter()
                .filter(|p| p.1 <= limit + 1e-12 * limit.abs().max(1.0))
                .map(|p| p.0)
                .fold(f64::INFINITY, f64::min);
            let found = optimum(&choices, limit).unwrap();
            match found {
                None => prop_assert!(best.is_infinite(), "missed a feasible assignment of value {}", best),
                Some(picks) => {
                    let (w, a) = picks.iter().enumerate().fold((0.0, 0.0), |(w, a), (g, &c)| {
                        let ch = choices[g].iter().find(|x| x.0 == c).unwrap();
                        (w + ch.1, a + ch.2)
                    });
                    prop_assert!(a <= limit + 1e-9 * limit.abs().max(1.0), "over budget: {} > {}", a, limit);
                    prop_assert!((w - best).abs() <= 1e-9 * best.abs().max(1.0), "core {} vs brute force {}", w, best);
                }
            }
        }
    }
}
