//! Exact Pareto fronts by dynamic programming over groups.
//!
//! It owns the fronts and the knapsack optimum; it reads a compiled problem and never calls HiGHS.
//!
//! Partial assignments of the first `g` groups are states `(costs, Omega)`. A state that is no
//! better in every tracked cost and in Omega than another can never complete to a better plan (all
//! costs and Omega are sums), so only non-dominated states are kept. With no budget on a cost
//! other than the front's axis this is the classic multiple-choice knapsack merge of per-group
//! Pareto sets: each step is a K-way merge of K shifted copies of a sorted front, linear in its
//! size. Budgets on other costs add dimensions to the dominance test. States that cannot meet a
//! budget even with the cheapest completion are dropped as they appear.

use crate::error::{Error, Result};
use crate::problem::budget::within;
use crate::problem::cost::{CostKind, Costs, Limits};
use crate::problem::Problem;
use crate::solve::halt::Halt;

/// Relative slack of the Lagrangian test against the incumbent: a state is dropped only when its
/// bound clears the incumbent by more than the rounding of the sums either is made of.
const PROMISING_SLACK: f64 = 1e-9;
/// Absolute slack, for an incumbent of zero.
const PROMISING_FLOOR: f64 = 1e-300;

/// Most states one step may keep before the enumeration is refused as too large.
pub const MAX_STATES: usize = 2_000_000;

/// Most partial states one enumeration holds over all its groups (about 30 bytes each in two
/// dimensions: 600 MB): every stage is kept to trace the front back, so many groups of modest
/// stages add up. A ResNet-50-scale front (50 groups, 29,348 points) holds about 1.5 million.
pub const MAX_TOTAL_STATES: usize = 20_000_000;

/// Most cells (points × groups) of a front traced back into choices: a front of millions of
/// points on thousands of groups would not fit in memory, nor would its candidates in a response.
pub const MAX_FRONT_CELLS: usize = 20_000_000;

/// States after one group: flat arrays, ordered by axis cost then Omega.
#[derive(Default)]
struct Stage {
    axis: Vec<f64>,
    omega: Vec<f64>,
    /// `dims.len()` costs per state, for budgets on costs other than the axis.
    others: Vec<f64>,
    parent: Vec<u32>,
    choice: Vec<u8>,
}

/// The exact front of Omega against `axis`, under `limits` and with some groups fixed, thinned
/// to `points` spread evenly along the cost when given ([`spread`]) before it is traced back.
/// Returns choice indices per group, one vector per front point, by increasing axis cost.
/// `halt` is checked once per group.
pub(crate) fn pareto_front(
    problem: &Problem,
    axis: CostKind,
    limits: &Limits,
    fixed: &[Option<usize>],
    points: Option<usize>,
    halt: &Halt,
) -> Result<Vec<Vec<usize>>> {
    enumerate(problem, axis, limits, fixed, Keep::Front(points), halt)
}

/// What an enumeration returns.
#[derive(Debug, Clone, Copy)]
enum Keep {
    /// The front, thinned to this many points when given.
    Front(Option<usize>),
    /// Only the least-Omega point.
    Optimum,
}

/// The exact front of Omega against one cost with no budget at all, kept to answer single-budget
/// solves by a binary search: under a bound on that cost alone, the least-Omega assignment is the
/// front point of largest cost within the bound (along the front, Omega falls as cost rises).
/// Building it costs one front enumeration; each answer then costs O(log points).
#[derive(Debug, Clone)]
pub struct FrontIndex {
    axis: CostKind,
    groups: usize,
    costs: Vec<f64>,
    picks: Vec<Vec<u8>>,
}

impl FrontIndex {
    /// Enumerates the front (refuses, like any front, past [`MAX_STATES`]; stops when `halt`
    /// says so).
    pub fn build(problem: &Problem, axis: CostKind, halt: &Halt) -> Result<FrontIndex> {
        let front = pareto_front(problem, axis, &Limits::NONE, &[], None, halt)?;
        Ok(FrontIndex {
            axis,
            groups: problem.groups.len(),
            costs: front
                .iter()
                .map(|p| problem.candidate(p).cost(axis))
                .collect(),
            picks: front
                .iter()
                .map(|p| p.iter().map(|&c| c as u8).collect())
                .collect(),
        })
    }

    pub fn axis(&self) -> CostKind {
        self.axis
    }

    pub fn len(&self) -> usize {
        self.costs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.costs.is_empty()
    }

    /// The least-Omega assignment whose cost is within `limit` (the rule every engine uses), or
    /// `None` when none is.
    pub fn best_under(&self, limit: f64) -> Option<Vec<usize>> {
        let n = self.costs.partition_point(|&c| within(c, limit));
        n.checked_sub(1)
            .map(|i| self.picks[i].iter().map(|&c| usize::from(c)).collect())
    }

    /// Whether this index answers for `problem` (same groups).
    pub(crate) fn fits(&self, problem: &Problem) -> bool {
        self.groups == problem.groups.len()
    }
}

/// The least-Omega assignment within `limits` (bounded on `axis`), by the same dynamic program
/// with branch-and-bound pruning: a state whose Lagrangian lower bound exceeds a greedy incumbent
/// cannot lead to the optimum. Returns `None` when no assignment fits.
pub(crate) fn optimum(
    problem: &Problem,
    axis: CostKind,
    limits: &Limits,
    fixed: &[Option<usize>],
) -> Result<Option<Vec<usize>>> {
    Ok(enumerate(
        problem,
        axis,
        limits,
        fixed,
        Keep::Optimum,
        &Halt::default(),
    )?
    .pop())
}

fn enumerate(
    problem: &Problem,
    axis: CostKind,
    limits: &Limits,
    fixed: &[Option<usize>],
    keep: Keep,
    halt: &Halt,
) -> Result<Vec<Vec<usize>>> {
    let optimum_only = matches!(keep, Keep::Optimum);
    let groups = &problem.groups;
    let dims: Vec<CostKind> = CostKind::ALL
        .into_iter()
        .filter(|&k| k != axis && limits[k].is_some())
        .collect();
    let allowed = problem.allowed(fixed);
    let rest = Completion::new(problem, &allowed, limits);
    if CostKind::ALL.into_iter().any(|k| !rest.fits(k, 0.0, 0)) {
        return Ok(Vec::new());
    }
    let bound = match limits[axis] {
        // The greedy incumbent only respects the axis budget, so it bounds nothing when others bind.
        Some(limit) if optimum_only && dims.is_empty() => {
            LagrangeBound::new(problem, axis, limit, &allowed)
        }
        _ => None,
    };
    let promising = |omega: f64, axis_cost: f64, g_next: usize| -> bool {
        bound
            .as_ref()
            .is_none_or(|b| b.promising(omega, axis_cost, g_next))
    };
    let fits = |k: CostKind, value: f64, g_next: usize| rest.fits(k, value, g_next);

    let mut stages: Vec<Stage> = Vec::with_capacity(groups.len() + 1);
    stages.push(Stage {
        axis: vec![0.0],
        omega: vec![0.0],
        others: vec![0.0; dims.len()],
        parent: vec![0],
        choice: vec![0],
    });
    let mut held = 1usize;
    for (g, allowed) in allowed.iter().enumerate() {
        halt.check()?;
        let choices: Vec<(u8, f64, f64, Vec<f64>)> = allowed
            .iter()
            .map(|&c| {
                let ch = &groups[g].choices[c];
                (
                    c as u8,
                    ch.cost[axis],
                    ch.omega,
                    dims.iter().map(|&k| ch.cost[k]).collect(),
                )
            })
            .collect();
        let cur = stages.last().expect("the start stage");
        let next = if dims.is_empty() {
            merge_2d(
                cur,
                &choices,
                |v| fits(axis, v, g + 1),
                |om, ax| promising(om, ax, g + 1),
            )
        } else {
            merge_nd(cur, &choices, &dims, &fits, &promising, axis, g + 1, halt)?
        };
        if next.axis.len() > MAX_STATES {
            return Err(Error::TooLarge(format!(
                "the exact front has more than {MAX_STATES} partial states at group {} of {}; narrow the budgets or use a sweep",
                g + 1,
                groups.len()
            )));
        }
        held += next.axis.len();
        if held > MAX_TOTAL_STATES {
            return Err(Error::TooLarge(format!(
                "the exact front holds more than {MAX_TOTAL_STATES} partial states in all over its first {} of {} groups; narrow the budgets or use a sweep",
                g + 1,
                groups.len()
            )));
        }
        stages.push(next);
    }
    let points = match keep {
        Keep::Front(points) => points,
        Keep::Optimum => None,
    };
    front_of_last(&stages, points)
}

/// The cheapest completion from each group on, per cost: a partial state fits a budget only if it
/// still does with it.
struct Completion<'a> {
    limits: &'a Limits,
    rest_min: Vec<Costs>,
}

impl<'a> Completion<'a> {
    fn new(problem: &Problem, allowed: &[Vec<usize>], limits: &'a Limits) -> Completion<'a> {
        let groups = &problem.groups;
        let mut rest_min = vec![Costs::ZERO; groups.len() + 1];
        for g in (0..groups.len()).rev() {
            let cheapest = Costs::from_fn(|k| {
                allowed[g]
                    .iter()
                    .map(|&c| groups[g].choices[c].cost[k])
                    .fold(f64::INFINITY, f64::min)
            });
            rest_min[g] = rest_min[g + 1] + cheapest;
        }
        Completion { limits, rest_min }
    }

    /// Whether `value` of cost `k` after `g_next` groups can still meet its budget.
    fn fits(&self, k: CostKind, value: f64, g_next: usize) -> bool {
        self.limits[k].is_none_or(|l| within(value + self.rest_min[g_next][k], l))
    }
}

/// The (axis, Omega) front of the last stage, thinned to `points` when given, traced back to a
/// choice per group: with extra dimensions the last stage can hold points dominated on
/// (axis, Omega).
fn front_of_last(stages: &[Stage], points: Option<usize>) -> Result<Vec<Vec<usize>>> {
    let groups = stages.len() - 1;
    let last = stages.last().expect("at least the start stage");
    let mut best = f64::INFINITY;
    let mut keep = Vec::new();
    for i in 0..last.axis.len() {
        if last.omega[i] < best {
            best = last.omega[i];
            keep.push(i);
        }
    }
    if let Some(n) = points {
        let costs: Vec<f64> = keep.iter().map(|&i| last.axis[i]).collect();
        keep = spread(&costs, n).into_iter().map(|j| keep[j]).collect();
    }
    if keep.len().saturating_mul(groups) > MAX_FRONT_CELLS {
        return Err(Error::TooLarge(format!(
            "the exact front has {} points on {groups} groups, more than {MAX_FRONT_CELLS} choices to return; give points to keep fewer, or narrow the budgets",
            keep.len()
        )));
    }
    Ok(keep
        .into_iter()
        .map(|mut i| {
            let mut picks = vec![0usize; groups];
            for g in (0..groups).rev() {
                let st = &stages[g + 1];
                picks[g] = st.choice[i] as usize;
                i = st.parent[i] as usize;
            }
            picks
        })
        .collect())
}

/// K-way merge of the K shifted copies of a 2-D front, keeping strictly decreasing Omega.
fn merge_2d(
    cur: &Stage,
    choices: &[(u8, f64, f64, Vec<f64>)],
    fits: impl Fn(f64) -> bool,
    promising: impl Fn(f64, f64) -> bool,
) -> Stage {
    let n = cur.axis.len();
    let k = choices.len();
    let mut out = Stage::default();
    out.axis.reserve(n * 2);
    let mut pos = vec![0usize; k];
    let mut best = f64::INFINITY;
    loop {
        // The head with the smallest (axis, Omega) among the K cursors.
        let mut pick: Option<(usize, f64, f64)> = None;
        for j in 0..k {
            let i = pos[j];
            if i >= n {
                continue;
            }
            let ax = cur.axis[i] + choices[j].1;
            let om = cur.omega[i] + choices[j].2;
            if pick.is_none_or(|(_, pa, po)| ax < pa || (ax == pa && om < po)) {
                pick = Some((j, ax, om));
            }
        }
        let Some((j, ax, om)) = pick else { break };
        if !fits(ax) {
            break; // every remaining head costs at least this much
        }
        let i = pos[j];
        pos[j] += 1;
        if om < best {
            best = om;
            if !promising(om, ax) {
                continue;
            }
            out.axis.push(ax);
            out.omega.push(om);
            out.parent.push(i as u32);
            out.choice.push(choices[j].0);
        }
    }
    out
}

/// Merge with budgets on other costs: keep states not dominated in (axis, others, Omega).
// One stage step's inputs, each used once; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
fn merge_nd(
    cur: &Stage,
    choices: &[(u8, f64, f64, Vec<f64>)],
    dims: &[CostKind],
    fits: &impl Fn(CostKind, f64, usize) -> bool,
    promising: &impl Fn(f64, f64, usize) -> bool,
    axis: CostKind,
    g_next: usize,
    halt: &Halt,
) -> Result<Stage> {
    let nd = dims.len();
    let n = cur.axis.len();
    if n.saturating_mul(choices.len()) > MAX_STATES.saturating_mul(4) {
        return Err(Error::TooLarge(format!(
            "the exact front under budgets on {} costs would weigh {} partial states at group {g_next}, more than {}; narrow the budgets or use a sweep",
            nd + 1,
            n.saturating_mul(choices.len()),
            MAX_STATES.saturating_mul(4)
        )));
    }
    let mut cand: Vec<(f64, f64, u32, u8, usize)> = Vec::with_capacity(n * choices.len());
    let mut other_vals: Vec<f64> = Vec::with_capacity(n * choices.len() * nd);
    for i in 0..n {
        'choice: for (c, ax, om, oth) in choices {
            let ax = cur.axis[i] + ax;
            if !fits(axis, ax, g_next) || !promising(cur.omega[i] + om, ax, g_next) {
                continue;
            }
            let start = other_vals.len();
            for d in 0..nd {
                let v = cur.others[i * nd + d] + oth[d];
                if !fits(dims[d], v, g_next) {
                    other_vals.truncate(start);
                    continue 'choice;
                }
                other_vals.push(v);
            }
            cand.push((ax, cur.omega[i] + om, i as u32, *c, start));
        }
    }
    cand.sort_unstable_by(|x, y| x.0.total_cmp(&y.0).then(x.1.total_cmp(&y.1)));

    let mut out = Stage::default();
    for (j, (ax, om, parent, choice, start)) in cand.into_iter().enumerate() {
        // The dominance scan is quadratic in the states kept: look up now and then.
        if j % 4096 == 0 {
            halt.check()?;
        }
        let oth = &other_vals[start..start + nd];
        // Kept states all have axis <= this one (sorted); one no worse in Omega and every other cost dominates.
        let dominated = (0..out.axis.len())
            .rev()
            .any(|m| out.omega[m] <= om && (0..nd).all(|d| out.others[m * nd + d] <= oth[d]));
        if dominated {
            continue;
        }
        if out.axis.len() >= MAX_STATES {
            return Err(Error::TooLarge(format!(
                "the exact front under budgets on {} costs has more than {MAX_STATES} partial states; narrow the budgets or use a sweep",
                nd + 1
            )));
        }
        out.axis.push(ax);
        out.omega.push(om);
        out.others.extend_from_slice(oth);
        out.parent.push(parent);
        out.choice.push(choice);
    }
    Ok(out)
}

/// A Lagrangian bound for one budget `sum cost <= limit`: for any multiplier `lambda >= 0`, a
/// completion of groups `g..` spending at most `r` has `Omega >= suffix[g] - lambda * r`, where
/// `suffix[g] = sum over groups >= g of min_c (omega_c + lambda * cost_c)`. `lambda` is the LP
/// relaxation's critical efficiency (greedy over the groups' lower convex hulls), and the greedy
/// integer solution of that relaxation is the incumbent `ub`.
struct LagrangeBound {
    lambda: f64,
    limit: f64,
    suffix: Vec<f64>,
    ub: f64,
}

impl LagrangeBound {
    fn new(
        problem: &Problem,
        k: CostKind,
        limit: f64,
        allowed: &[Vec<usize>],
    ) -> Option<LagrangeBound> {
        let groups = &problem.groups;
        // Per group: lower convex hull of (cost, omega), cheapest first, Omega strictly falling.
        let hulls: Vec<Vec<(f64, f64)>> = allowed
            .iter()
            .enumerate()
            .map(|(g, cs)| {
                let mut pts: Vec<(f64, f64)> = cs
                    .iter()
                    .map(|&c| (groups[g].choices[c].cost[k], groups[g].choices[c].omega))
                    .collect();
                pts.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.total_cmp(&y.1)));
                let mut hull: Vec<(f64, f64)> = Vec::new();
                for p in pts {
                    if hull.last().is_some_and(|h| p.1 >= h.1) {
                        continue; // costs more, saves nothing
                    }
                    while hull.len() >= 2 {
                        let (o, q) = (hull[hull.len() - 2], hull[hull.len() - 1]);
                        // q is above the segment o-p: not on the lower hull
                        if (q.1 - o.1) * (p.0 - o.0) >= (p.1 - o.1) * (q.0 - o.0) {
                            hull.pop();
                        } else {
                            break;
                        }
                    }
                    hull.push(p);
                }
                hull
            })
            .collect();
        let mut spent: f64 = hulls.iter().map(|h| h[0].0).sum();
        if !within(spent, limit) {
            return None;
        }
        let mut steps: Vec<(f64, usize, usize)> = Vec::new(); // (efficiency, group, hull index reached)
        for (g, h) in hulls.iter().enumerate() {
            for i in 1..h.len() {
                steps.push(((h[i - 1].1 - h[i].1) / (h[i].0 - h[i - 1].0), g, i));
            }
        }
        steps.sort_by(|x, y| y.0.total_cmp(&x.0));
        let mut at = vec![0usize; hulls.len()];
        let mut lambda = 0.0;
        for &(eff, g, i) in &steps {
            if at[g] + 1 != i {
                continue; // an earlier step of this group was skipped
            }
            let extra = hulls[g][i].0 - hulls[g][i - 1].0;
            if within(spent + extra, limit) {
                spent += extra;
                at[g] = i;
            } else if lambda == 0.0 {
                lambda = eff; // the LP's critical step
            }
        }
        let ub: f64 = at.iter().enumerate().map(|(g, &i)| hulls[g][i].1).sum();
        let mut suffix = vec![0.0; groups.len() + 1];
        for g in (0..groups.len()).rev() {
            let m = hulls[g]
                .iter()
                .map(|&(c, o)| o + lambda * c)
                .fold(f64::INFINITY, f64::min);
            suffix[g] = suffix[g + 1] + m;
        }
        Some(LagrangeBound {
            lambda,
            limit,
            suffix,
            ub,
        })
    }

    /// Whether a state after `g_next` groups can still complete at or below the incumbent.
    fn promising(&self, omega: f64, axis_cost: f64, g_next: usize) -> bool {
        let bound = omega + self.suffix[g_next] - self.lambda * (self.limit - axis_cost);
        bound <= self.ub + PROMISING_SLACK * self.ub.abs() + PROMISING_FLOOR
    }
}

/// Indices of up to `n` points spread evenly along a front's axis cost (ends always included).
pub fn spread(costs: &[f64], n: usize) -> Vec<usize> {
    if n == 0 || costs.is_empty() {
        return Vec::new();
    }
    if n >= costs.len() {
        return (0..costs.len()).collect();
    }
    if n == 1 {
        return vec![costs.len() - 1];
    }
    let (lo, hi) = (costs[0], costs[costs.len() - 1]);
    let mut out: Vec<usize> = Vec::with_capacity(n);
    for t in 0..n {
        let target = lo + (hi - lo) * t as f64 / (n - 1) as f64;
        let i = costs.partition_point(|&c| c < target);
        let i = if i > 0 && (i == costs.len() || target - costs[i - 1] <= costs[i] - target) {
            i - 1
        } else {
            i
        };
        if out.last() != Some(&i) {
            out.push(i);
        }
    }
    out
}
