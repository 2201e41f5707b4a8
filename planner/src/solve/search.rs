//! Search: plan, measure, refit, re-plan. A measured Pareto front within an evaluation budget.
//!
//! Each round finds the front of the current objective, measures the points most likely to
//! improve the measured front, and refits the objective to every measurement so far. Given the
//! single-layer runs' output changes ([`SearchRequest::output`]), the objective is the
//! output-space one ([`output`]: the changes added up, cross terms included, so layers whose
//! errors cancel or compound are seen; the share of cross terms and the link fitted by
//! cross-validation). Without them it is additive ([`refit`]: a term per (group, choice) under an
//! increasing link to the loss, its fit, ridge and link chosen by cross-validation), held so that
//! no term is lowered further than the measurements per term allow ([`Objective::cautious`]),
//! and the exact solvers find its front. Measuring is the caller's (a callback), so the module
//! stays pure; what was measured before (any plan, fleet or earlier search) is passed in and
//! never measured again.

use crate::error::{Error, Result};
use crate::problem::budget::{limits_of, Budgets};
use crate::problem::cost::CostKind;
use crate::problem::{Candidate, Problem};
use crate::solve::front::{pareto_front, spread};
use crate::solve::halt::Halt;
use std::collections::HashSet;
use std::sync::Arc;

/// Front points each round chooses among.
const FRONT_SAMPLE: usize = 400;

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
    /// The single-layer runs' output changes: when given, [`search`] plans on the output-space
    /// objective ([`output`]); else on the additive one.
    pub output: Option<Arc<OutputModel>>,
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
    /// Geometric mean of measured over predicted loss: 4 says the round measured four times what
    /// it predicted, the planning objective's optimism that a rank and a mean absolute error hide.
    /// `None` where the predictions are not losses (the starting objective's Ω) or no measured loss
    /// is positive ([`fit_of`] says how it counts a measured 0).
    pub ratio: Option<f64>,
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
    /// The model of the objective whose predictions the round measured.
    pub model: FitModel,
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
    /// The objective refitted to every measurement, as the search plans on it.
    pub objective: Fitted,
}

/// An objective a search plans on, fitted to its measurements.
#[derive(Debug, Clone)]
pub enum Fitted {
    /// A term per (group, choice), held ([`Objective::cautious`]).
    Additive(Objective),
    /// The output-space objective.
    Output(OutputObjective),
}

impl Fitted {
    /// The loss predicted for `picks`.
    pub fn predict(&self, picks: &[usize]) -> f64 {
        match self {
            Fitted::Additive(o) => o.predict(picks),
            Fitted::Output(o) => o.predict(picks),
        }
    }

    /// The fitted model.
    pub fn model(&self) -> FitModel {
        match self {
            Fitted::Additive(o) => o.model,
            Fitted::Output(_) => FitModel::Output,
        }
    }

    /// The share of the cross terms the output-space objective keeps.
    pub fn interaction(&self) -> Option<f64> {
        match self {
            Fitted::Additive(_) => None,
            Fitted::Output(o) => Some(o.interaction),
        }
    }

    /// At most `points` configurations along the objective's front within `limits`, cheapest
    /// on `axis` first: the exact front of an additive objective, the output-space objective's
    /// as [`output`] finds it.
    pub fn front(
        &self,
        problem: &Problem,
        limits: &crate::problem::cost::Limits,
        axis: CostKind,
        points: usize,
        halt: &Halt,
    ) -> Result<Vec<Vec<usize>>> {
        match self {
            Fitted::Additive(o) => {
                let current = with_objective(problem, &o.terms);
                pareto_front(&current, axis, limits, &[], Some(points), halt)
            }
            Fitted::Output(o) => o.front(problem, limits, axis, points, halt),
        }
    }
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
    let refit = |measured: &[MeasuredPoint]| match &request.output {
        Some(model) => Fitted::Output(refit_output(model, measured)),
        None => Fitted::Additive(refit(problem, &start, measured).cautious(&start, measured)),
    };
    let mut objective = refit(&measured);
    let mut rounds = Vec::new();
    let mut made = 0;
    let stopped = loop {
        halt.check()?;
        if made >= request.evaluations {
            break "the evaluation budget is spent";
        }
        let front = objective.front(problem, &limits, axis, FRONT_SAMPLE, halt)?;
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
        let priced: Vec<(f64, f64)> = fresh
            .iter()
            .map(|p| (problem.candidate(p).cost(axis), objective.predict(p)))
            .collect();
        let chosen = choose(&priced, &measured, axis, want);
        let before = measured_front(&measured, axis);
        let round = rounds.len() + 1;
        let mut pairs = Vec::new();
        for i in chosen {
            halt.check()?;
            let picks = fresh[i].clone();
            let candidate = problem.candidate(&picks);
            let predicted = objective.predict(&picks);
            let loss = measure(&candidate)?;
            if !loss.is_finite() {
                return Err(Error::Runtime(format!(
                    "the measured loss of {:?} is {loss}, not a number the search can compare",
                    candidate.bits
                )));
            }
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
            fit: round_fit(&pairs, objective.model()),
            front: after.len(),
            improved,
            model: objective.model(),
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

/// How well a round's predictions, made under `model`, fitted what it measured. The starting
/// objective predicts Ω, not a loss, so its rounds have no ratio of measured to predicted.
fn round_fit(pairs: &[(f64, f64)], model: FitModel) -> Fit {
    let fit = fit_of(pairs);
    match model {
        FitModel::Start => Fit { ratio: None, ..fit },
        _ => fit,
    }
}

/// The exact front of `objective` within the request's budgets, at most `points` spread along
/// the cost, cheapest first, each with its predicted loss: what a search believes after its
/// measurements, to draw next to what it measured.
pub fn predicted_front(
    problem: &Problem,
    request: &SearchRequest,
    objective: &Fitted,
    points: usize,
    halt: &Halt,
) -> Result<Vec<(Vec<usize>, f64)>> {
    let limits = limits_of(&request.budgets.bounds(problem)?);
    let front = objective.front(problem, &limits, request.pareto, points, halt)?;
    Ok(front
        .into_iter()
        .map(|p| {
            let loss = objective.predict(&p);
            (p, loss)
        })
        .collect())
}

/// The problem's objective, per group, per choice: where a search starts.
pub fn starting_objective(problem: &Problem) -> Vec<Vec<f64>> {
    problem
        .groups
        .iter()
        .map(|g| g.choices.iter().map(|c| c.omega).collect())
        .collect()
}

pub(crate) fn candidate_within(c: &Candidate, limits: &crate::problem::cost::Limits) -> bool {
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

/// Chooses `want` of the fresh front points, `priced` as (cost, predicted loss), cheapest first:
/// with nothing measured, spread evenly along the cost; else greedily the point that, at its
/// predicted loss, most enlarges the area the known points dominate (cost against log loss, so
/// every decade of loss counts alike), known being the measured points and those already
/// chosen, taken at their prediction: a round spreads over the front's gaps. Ties go to the
/// point nearest a measurement the objective predicted worst.
fn choose(
    priced: &[(f64, f64)],
    measured: &[MeasuredPoint],
    axis: CostKind,
    want: usize,
) -> Vec<usize> {
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
    while chosen.len() < want.min(priced.len()) {
        let base = area(&known, reference);
        let gain = |i: usize| {
            let mut with = known.clone();
            with.push((priced[i].0, log(priced[i].1)));
            (area(&with, reference) - base, miss_near(priced[i].0))
        };
        let Some(next) = (0..priced.len())
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

mod baselines;
mod fit;
mod normal;
pub mod output;

pub use baselines::{greedy, greedy_path, proxy_only};
pub use fit::{fit, fit_groups, fit_of, refit, FitModel, Link, Objective, RIDGES};
pub use output::{refit_output, OutputModel, OutputObjective};

#[cfg(test)]
mod tests;
