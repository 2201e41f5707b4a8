//! Search: plan, measure, refit, re-plan. A measured Pareto front within an evaluation budget.
//!
//! Each round solves the exact front of the current objective, measures the points most likely to
//! improve the measured front, and refits the objective to every measurement so far. The
//! objective stays one value per (group, choice), so the exact solvers keep answering it. The fit
//! has two levels: a weight per group on its starting terms, plus a constant (layers whose
//! single-layer sensitivity under- or over-states what they do together), then each term that
//! measurements constrain moved from there (what no per-group weight explains, such as two
//! layers whose errors compound), pulled back where they do not. Measuring is the caller's (a callback), so the
//! module stays pure; what was measured before (any plan, fleet or earlier search) is passed in and
//! never measured again.

use crate::error::{Error, Result};
use crate::problem::budget::{limits_of, Budgets};
use crate::problem::cost::CostKind;
use crate::problem::{Candidate, Problem};
use crate::solve::front::{pareto_front, spread};
use crate::solve::halt::Halt;
use std::collections::{HashMap, HashSet};

/// Front points each round chooses among.
const FRONT_SAMPLE: usize = 400;

/// Weight of the pull towards the starting objective, relative to the measurements' scale: small,
/// so measurements win wherever they say something.
const RIDGE: f64 = 0.01;

/// Weight of the pull of each group's correction towards the common scale: larger than
/// [`RIDGE`], since a group's weight moves every one of its terms at once (on the digits and
/// PP-OCR benchmarks of `bench/search_vs_baselines.py`, 0.5 beat 0.02, 0.1, 2 and 10).
const GROUP_RIDGE: f64 = 0.5;

/// Most unknowns a fit solves for (a dense system): past this, [`fit`] fits only the starting
/// objective's scale and [`fit_groups`] leaves the start as it is.
const MAX_FITTED_TERMS: usize = 3000;

/// What to search.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub budgets: Budgets,
    /// The cost the front is measured against.
    pub pareto: CostKind,
    /// New measurements the search may make (0: only the front of the measurements given in).
    pub evaluations: usize,
    /// Measurements per round (default: a quarter of `evaluations`, at least 2).
    pub per_round: Option<usize>,
}

/// One measured configuration: its choices, its costs, and the loss measured (lower is better).
#[derive(Debug, Clone)]
pub struct MeasuredPoint {
    pub picks: Vec<usize>,
    pub candidate: Candidate,
    /// The objective's value when the point was chosen (`None` for measurements given in).
    pub predicted: Option<f64>,
    pub loss: f64,
    /// The round that measured it (0 for measurements given in).
    pub round: usize,
}

/// How well the objective predicted what a round then measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Rank correlation of predicted and measured losses (`None` below 3 points).
    pub spearman: Option<f64>,
    /// Mean absolute error of the predictions, in the loss's units.
    pub mae: f64,
}

#[derive(Debug, Clone)]
pub struct SearchRound {
    pub evaluated: usize,
    /// The predictions of this round's points, made before they were measured.
    pub fit: Fit,
    /// Points of the measured front after the round.
    pub front: usize,
    /// Points this round added to the measured front.
    pub improved: usize,
}

/// What a search found.
#[derive(Debug, Clone)]
pub struct Search {
    pub rounds: Vec<SearchRound>,
    /// New measurements made.
    pub evaluations: usize,
    /// Measurements given in and used.
    pub reused: usize,
    /// Every measured point, given in or new.
    pub measured: Vec<MeasuredPoint>,
    /// Indices into `measured` of its Pareto front (loss against the cost), cheapest first.
    pub front: Vec<usize>,
    /// Why it stopped.
    pub stopped: &'static str,
    /// The fitted objective: per group, per choice.
    pub objective: Vec<Vec<f64>>,
}

/// Measures one configuration (bit-width per layer); returns its loss, lower better.
pub type Measure<'a> = dyn FnMut(&Candidate) -> Result<f64> + 'a;

/// Searches for the measured front. `prior` holds measurements made before, as a bit-width per
/// layer and its loss.
pub fn search(
    problem: &Problem,
    request: &SearchRequest,
    prior: &[(Vec<u8>, f64)],
    measure: &mut Measure<'_>,
    halt: &Halt,
) -> Result<Search> {
    let axis = request.pareto;
    let limits = limits_of(&request.budgets.bounds(problem)?);
    let per_round = request
        .per_round
        .unwrap_or(request.evaluations.div_ceil(4).max(2))
        .max(1);
    let start = starting_objective(problem);
    let mut measured: Vec<MeasuredPoint> = Vec::new();
    let mut seen: HashSet<Vec<usize>> = HashSet::new();
    for (bits, loss) in prior {
        let Ok(picks) = problem.picks_from_bits(bits) else {
            continue; // measured under another manifest's choices: not this problem's
        };
        let candidate = problem.candidate(&picks);
        if loss.is_finite() && candidate_within(&candidate, &limits) && seen.insert(picks.clone()) {
            measured.push(MeasuredPoint {
                picks,
                candidate,
                predicted: None,
                loss: *loss,
                round: 0,
            });
        }
    }
    let reused = measured.len();
    let refit = |measured: &[MeasuredPoint]| refit(problem, &start, measured);
    let mut objective = refit(&measured);
    let mut rounds = Vec::new();
    let mut made = 0;
    let stopped = loop {
        halt.check()?;
        if made >= request.evaluations {
            break "the evaluation budget is spent";
        }
        let current = with_objective(problem, &objective);
        let front = pareto_front(&current, axis, &limits, &[], Some(FRONT_SAMPLE), halt)?;
        if front.is_empty() && measured.is_empty() {
            return Err(Error::invalid(
                "search request",
                "budgets",
                "no configuration meets the budgets",
            ));
        }
        let fresh: Vec<Vec<usize>> = front.into_iter().filter(|p| !seen.contains(p)).collect();
        if fresh.is_empty() {
            break "every point of the objective's front is measured";
        }
        let want = per_round.min(request.evaluations - made);
        let chosen = choose(&current, axis, &fresh, &measured, want);
        let before = measured_front(&measured, axis);
        let round = rounds.len() + 1;
        let mut pairs = Vec::new();
        for i in chosen {
            halt.check()?;
            let picks = fresh[i].clone();
            let candidate = problem.candidate(&picks);
            let predicted = current.candidate(&picks).omega;
            let loss = measure(&candidate)?;
            made += 1;
            seen.insert(picks.clone());
            pairs.push((predicted, loss));
            measured.push(MeasuredPoint {
                picks,
                candidate,
                predicted: Some(predicted),
                loss,
                round,
            });
        }
        let after = measured_front(&measured, axis);
        let improved = after.iter().filter(|i| !before.contains(i)).count();
        rounds.push(SearchRound {
            evaluated: pairs.len(),
            fit: fit_of(&pairs),
            front: after.len(),
            improved,
        });
        objective = refit(&measured);
        if improved == 0 && round > 1 {
            break "a round added nothing to the measured front";
        }
    };
    let front = measured_front(&measured, axis);
    Ok(Search {
        rounds,
        evaluations: made,
        reused,
        measured,
        front,
        stopped,
        objective,
    })
}

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

/// The problem's objective, per group, per choice: where a search starts.
pub fn starting_objective(problem: &Problem) -> Vec<Vec<f64>> {
    problem
        .groups
        .iter()
        .map(|g| g.choices.iter().map(|c| c.omega).collect())
        .collect()
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
            fit: fit_of(&pairs),
            front: front.len(),
            improved: front.len(),
        }],
        evaluations: measured.len(),
        reused: 0,
        objective: starting_objective(problem),
        measured,
        front,
        stopped: "the points are measured",
    })
}

fn candidate_within(c: &Candidate, limits: &crate::problem::cost::Limits) -> bool {
    CostKind::ALL
        .into_iter()
        .all(|k| limits[k].is_none_or(|l| crate::problem::budget::within(c.cost(k), l)))
}

/// The problem with its choices' Omega replaced by `objective`.
fn with_objective(problem: &Problem, objective: &[Vec<f64>]) -> Problem {
    let mut p = problem.clone();
    for (g, terms) in p.groups.iter_mut().zip(objective) {
        for (c, &t) in g.choices.iter_mut().zip(terms) {
            c.omega = t;
        }
    }
    p
}

/// Indices of the measured Pareto front (loss against `axis`), cheapest first.
pub fn measured_front(measured: &[MeasuredPoint], axis: CostKind) -> Vec<usize> {
    let mut order: Vec<usize> = (0..measured.len()).collect();
    order.sort_by(|&a, &b| {
        let (ca, cb) = (
            measured[a].candidate.cost(axis),
            measured[b].candidate.cost(axis),
        );
        ca.total_cmp(&cb)
            .then(measured[a].loss.total_cmp(&measured[b].loss))
    });
    let mut best = f64::INFINITY;
    let mut out = Vec::new();
    for i in order {
        if measured[i].loss < best {
            best = measured[i].loss;
            out.push(i);
        }
    }
    out
}

/// Chooses `want` of the `fresh` front points: with nothing measured, spread evenly along the
/// cost; else greedily the point that, at its predicted loss, most enlarges the area the known
/// points dominate (cost against log loss, so every decade of loss counts alike), known being the
/// measured points and those already chosen, taken at their prediction: a round spreads over the
/// front's gaps. Ties go to the point nearest a measurement the objective predicted worst.
fn choose(
    current: &Problem,
    axis: CostKind,
    fresh: &[Vec<usize>],
    measured: &[MeasuredPoint],
    want: usize,
) -> Vec<usize> {
    let priced: Vec<(f64, f64)> = fresh
        .iter()
        .map(|p| {
            let c = current.candidate(p);
            (c.cost(axis), c.omega)
        })
        .collect();
    if measured.is_empty() {
        let costs: Vec<f64> = priced.iter().map(|p| p.0).collect();
        return spread(&costs, want);
    }
    let losses = || {
        measured
            .iter()
            .map(|m| m.loss)
            .chain(priced.iter().map(|p| p.1))
    };
    let floor = losses()
        .filter(|&l| l > 0.0)
        .fold(f64::INFINITY, f64::min)
        .min(1.0)
        * 1e-3;
    let log = |loss: f64| loss.max(floor).ln();
    let mut known: Vec<(f64, f64)> = measured
        .iter()
        .map(|m| (m.candidate.cost(axis), log(m.loss)))
        .collect();
    let costs = || known.iter().map(|k| k.0).chain(priced.iter().map(|p| p.0));
    let (lo, hi) = costs().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), c| {
        (lo.min(c), hi.max(c))
    });
    let reference = (
        hi + (hi - lo).max(1e-12) * 0.01,
        losses().map(log).fold(f64::NEG_INFINITY, f64::max) + 1.0,
    );
    let scale = measured
        .iter()
        .map(|m| m.loss.abs())
        .fold(0.0, f64::max)
        .max(1e-300);
    let misses: Vec<(f64, f64)> = measured
        .iter()
        .filter_map(|m| {
            m.predicted
                .map(|p| (m.candidate.cost(axis), (p - m.loss).abs() / scale))
        })
        .collect();
    let miss_near = |cost: f64| {
        misses
            .iter()
            .min_by(|a, b| (a.0 - cost).abs().total_cmp(&(b.0 - cost).abs()))
            .map_or(0.0, |m| m.1)
    };
    let mut chosen: Vec<usize> = Vec::new();
    while chosen.len() < want.min(fresh.len()) {
        let base = area(&known, reference);
        let gain = |i: usize| {
            let mut with = known.clone();
            with.push((priced[i].0, log(priced[i].1)));
            (area(&with, reference) - base, miss_near(priced[i].0))
        };
        let Some(next) = (0..fresh.len())
            .filter(|i| !chosen.contains(i))
            .max_by(|&a, &b| {
                let (ga, gb) = (gain(a), gain(b));
                ga.0.total_cmp(&gb.0).then(ga.1.total_cmp(&gb.1))
            })
        else {
            break;
        };
        known.push((priced[next].0, log(priced[next].1)));
        chosen.push(next);
    }
    chosen
}

/// The area `points` dominate (both coordinates minimised) up to `reference`: a staircase swept
/// by increasing cost.
fn area(points: &[(f64, f64)], reference: (f64, f64)) -> f64 {
    let mut sorted: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|p| p.0 < reference.0 && p.1 < reference.1)
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut best = reference.1;
    let mut total = 0.0;
    for (i, &(x, y)) in sorted.iter().enumerate() {
        best = best.min(y);
        let next = sorted.get(i + 1).map_or(reference.0, |p| p.0);
        total += (next - x) * (reference.1 - best);
    }
    total
}

/// The objective the search plans on next: per-group corrections of `start`
/// ([`fit_groups`]), then every term measurements constrain moved from there ([`fit`]).
pub fn refit(problem: &Problem, start: &[Vec<f64>], measured: &[MeasuredPoint]) -> Vec<Vec<f64>> {
    fit(problem, &fit_groups(start, measured), measured)
}

/// The objective refitted to the measurements: one term per (group, choice). The starting terms
/// are first rescaled to the measurements (least squares through the origin); then every term a
/// measurement uses is fitted by ridge regression towards its rescaled start, so terms no
/// measurement constrains keep the start's shape.
pub fn fit(problem: &Problem, start: &[Vec<f64>], measured: &[MeasuredPoint]) -> Vec<Vec<f64>> {
    let sum_start =
        |picks: &[usize]| -> f64 { picks.iter().enumerate().map(|(g, &c)| start[g][c]).sum() };
    if measured.is_empty() {
        return start.to_vec();
    }
    let (num, den) = measured.iter().fold((0.0, 0.0), |(n, d), m| {
        let p = sum_start(&m.picks);
        (n + p * m.loss, d + p * p)
    });
    let scale = if den > 0.0 && num > 0.0 {
        num / den
    } else {
        1.0
    };
    let mut out: Vec<Vec<f64>> = start
        .iter()
        .map(|g| g.iter().map(|t| t * scale).collect())
        .collect();
    // The fitted terms: every (group, choice) a measurement uses.
    let mut index: HashMap<(usize, usize), usize> = HashMap::new();
    for m in measured {
        for (g, &c) in m.picks.iter().enumerate() {
            let n = index.len();
            index.entry((g, c)).or_insert(n);
        }
    }
    let k = index.len();
    if k > MAX_FITTED_TERMS || problem.groups.len() != start.len() {
        return out;
    }
    let mean_loss = measured.iter().map(|m| m.loss.abs()).sum::<f64>() / measured.len() as f64;
    let groups = start.len().max(1) as f64;
    // A term's prior width: its rescaled start, but never below a share of an average term.
    let floor = mean_loss / groups;
    let mut ata = vec![0.0; k * k];
    let mut atb = vec![0.0; k];
    for m in measured {
        let cols: Vec<usize> = m
            .picks
            .iter()
            .enumerate()
            .map(|(g, &c)| index[&(g, c)])
            .collect();
        // Relative residuals: a loss of 0.01 is fitted as closely as one of 10.
        let w = 1.0 / m.loss.abs().max(mean_loss * 1e-9).max(1e-300).powi(2);
        for &a in &cols {
            atb[a] += w * m.loss;
            for &b in &cols {
                ata[a * k + b] += w;
            }
        }
    }
    let weight = RIDGE * measured.len() as f64 / groups;
    for (&(g, c), &j) in &index {
        let prior = out[g][c];
        let width = prior.abs().max(floor).max(1e-300);
        let w = weight / (width * width);
        ata[j * k + j] += w;
        atb[j] += w * prior;
    }
    if let Some(theta) = solve_non_negative(&ata, &atb, k) {
        for (&(g, c), &j) in &index {
            out[g][c] = theta[j];
        }
    }
    out
}

/// The objective refitted as the starting one with a weight per group and a constant: a loss is
/// predicted as `b + sum over groups of w_g * start[g][choice]`, fitted to the measurements by
/// relative, ridge-regularised least squares, each weight pulled towards the one common scale
/// that fits best; the constant is spread evenly over the groups' terms, so the fronts it gives
/// are the weighted start's.
pub fn fit_groups(start: &[Vec<f64>], measured: &[MeasuredPoint]) -> Vec<Vec<f64>> {
    let groups = start.len();
    if measured.is_empty() || groups == 0 || groups >= MAX_FITTED_TERMS {
        return start.to_vec();
    }
    let sum_start =
        |picks: &[usize]| -> f64 { picks.iter().enumerate().map(|(g, &c)| start[g][c]).sum() };
    let (num, den) = measured.iter().fold((0.0, 0.0), |(n, d), m| {
        let p = sum_start(&m.picks);
        (n + p * m.loss, d + p * p)
    });
    let scale = if den > 0.0 && num > 0.0 {
        num / den
    } else {
        1.0
    };
    // Unknowns: each group's weight relative to `scale`, then the constant.
    let k = groups + 1;
    let mean_loss = measured.iter().map(|m| m.loss.abs()).sum::<f64>() / measured.len() as f64;
    let mut ata = vec![0.0; k * k];
    let mut atb = vec![0.0; k];
    for m in measured {
        let mut x: Vec<f64> = m
            .picks
            .iter()
            .enumerate()
            .map(|(g, &c)| scale * start[g][c])
            .collect();
        x.push(1.0);
        let w = 1.0 / m.loss.abs().max(mean_loss * 1e-9).max(1e-300).powi(2);
        for a in 0..k {
            atb[a] += w * x[a] * m.loss;
            for b in 0..k {
                ata[a * k + b] += w * x[a] * x[b];
            }
        }
    }
    let ridge = GROUP_RIDGE * measured.len() as f64 / groups as f64;
    for g in 0..groups {
        ata[g * k + g] += ridge;
        atb[g] += ridge;
    }
    ata[groups * k + groups] += 1e-9 * measured.len() as f64 / (mean_loss * mean_loss).max(1e-300);
    let Some(theta) = solve_non_negative(&ata, &atb, k) else {
        return start.to_vec();
    };
    let constant = theta[groups] / groups as f64;
    start
        .iter()
        .zip(&theta)
        .map(|(terms, &w)| terms.iter().map(|t| w * scale * t + constant).collect())
        .collect()
}

/// Solves the normal equations `a x = b` (k × k, row-major) with every unknown kept at zero or
/// above: one the solution drives below zero is pinned at zero and the rest solved again (an
/// active set; a few passes settle it, and what is still negative after them is clamped).
/// `None` when the system is singular from the start.
fn solve_non_negative(ata: &[f64], atb: &[f64], k: usize) -> Option<Vec<f64>> {
    let mut theta: Option<Vec<f64>> = None;
    let mut pinned = vec![false; k];
    for _ in 0..8 {
        let (mut a, mut b) = (ata.to_vec(), atb.to_vec());
        for j in (0..k).filter(|&j| pinned[j]) {
            for i in 0..k {
                a[i * k + j] = 0.0;
                a[j * k + i] = 0.0;
            }
            a[j * k + j] = 1.0;
            b[j] = 0.0;
        }
        let Some(solved) = cholesky_solve(&mut a, &mut b, k) else {
            return theta;
        };
        let negative: Vec<usize> = (0..k).filter(|&j| solved[j] < 0.0).collect();
        theta = Some(solved.iter().map(|t| t.max(0.0)).collect());
        if negative.is_empty() {
            break;
        }
        for j in negative {
            pinned[j] = true;
        }
    }
    theta
}

/// Solves `a x = b` for a symmetric positive definite `a` (n × n, row-major), in place.
fn cholesky_solve(a: &mut [f64], b: &mut [f64], n: usize) -> Option<Vec<f64>> {
    for j in 0..n {
        let mut d = a[j * n + j];
        for p in 0..j {
            d -= a[j * n + p] * a[j * n + p];
        }
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for p in 0..j {
                s -= a[i * n + p] * a[j * n + p];
            }
            a[i * n + j] = s / d;
        }
    }
    for i in 0..n {
        let mut s = b[i];
        for p in 0..i {
            s -= a[i * n + p] * b[p];
        }
        b[i] = s / a[i * n + i];
    }
    for i in (0..n).rev() {
        let mut s = b[i];
        for p in i + 1..n {
            s -= a[p * n + i] * b[p];
        }
        b[i] = s / a[i * n + i];
    }
    Some(b.to_vec())
}

/// Spearman's rank correlation and the mean absolute error of (predicted, measured) pairs.
pub fn fit_of(pairs: &[(f64, f64)]) -> Fit {
    let n = pairs.len();
    let mae = if n == 0 {
        0.0
    } else {
        pairs.iter().map(|(p, m)| (p - m).abs()).sum::<f64>() / n as f64
    };
    let spearman = (n >= 3).then(|| {
        let ranks = |v: Vec<f64>| -> Vec<f64> {
            let mut order: Vec<usize> = (0..v.len()).collect();
            order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
            let mut r = vec![0.0; v.len()];
            let mut i = 0;
            while i < order.len() {
                let mut j = i;
                while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
                    j += 1;
                }
                for &o in &order[i..=j] {
                    r[o] = (i + j) as f64 / 2.0;
                }
                i = j + 1;
            }
            r
        };
        let a = ranks(pairs.iter().map(|p| p.0).collect());
        let b = ranks(pairs.iter().map(|p| p.1).collect());
        let mean = (n - 1) as f64 / 2.0;
        let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
        for i in 0..n {
            sab += (a[i] - mean) * (b[i] - mean);
            saa += (a[i] - mean) * (a[i] - mean);
            sbb += (b[i] - mean) * (b[i] - mean);
        }
        if saa == 0.0 || sbb == 0.0 {
            0.0
        } else {
            sab / (saa * sbb).sqrt()
        }
    });
    Fit { spearman, mae }
}

#[cfg(test)]
mod tests;
