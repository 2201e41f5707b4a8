//! The output-space objective: a configuration's loss predicted from the single-layer runs'
//! output changes added up ([`OutputChanges`]), cross terms included, so that layers whose errors
//! cancel or compound in the output are seen. An additive objective (a term per layer and
//! width) cannot see them: on PP-OCR's classifier, within half a bit of average bits, the
//! summed single-layer KL orders measured configurations with Spearman -0.16, this objective
//! with 0.83.
//!
//! A group's change at a choice is the sum of its layers' changes. The prediction is
//! `(G |sum of changes|^2 + (1 - G) sum of |change|^2) / rows` under a [`Link`] to the loss: G
//! is the share of the cross terms kept (the interaction), 0 being the summed single-layer
//! terms. Both are fitted to the measurements ([`refit_output`]). Only inner products are needed:
//! the model keeps the Gram matrix of the (group, choice) changes, and a walk keeps each change's
//! inner product with the current sum, so a move is priced in O(1) and made in O(terms).
//!
//! The prediction is not separable, so its front is not the exact solvers'. With at most
//! [`EXHAUSTIVE`] configurations it is enumerated exactly; else it is a greedy path on the
//! prediction (a step may lower it), each point then improved by single and paired moves
//! that lower the prediction within the point's cost and the budgets.

use super::fit::{log_error, usable, Link};
use super::MeasuredPoint;
use crate::error::{Error, Result};
use crate::eval::sensitivity::OutputChanges;
use crate::problem::budget::within;
use crate::problem::cost::{CostKind, Costs, Limits};
use crate::problem::Problem;
use crate::solve::front::spread;
use crate::solve::halt::Halt;
use std::sync::Arc;

/// Most (group, choice) terms the model takes: its Gram matrix is their square in f64 (32 MB
/// at 2,000) and costs their square times the change's length to build.
pub const MAX_TERMS: usize = 2000;

/// Most configurations whose front is found by enumerating them all.
pub const EXHAUSTIVE: usize = 50_000;

/// The shares of the cross terms [`refit_output`] chooses among, the first on a tie.
pub const INTERACTIONS: [f64; 5] = [1.0, 0.75, 0.5, 0.25, 0.0];

/// Fewest measurements [`refit_output`] cross-validates; below them, all cross terms under a
/// fitted scale.
const MIN_CROSS_VALIDATED: usize = 3;

/// Folds of the cross-validation (fewer when fewer measurements).
const FOLDS: usize = 5;

/// Most moves a polish makes, per group.
const MAX_POLISH_MOVES_PER_GROUP: usize = 20;

/// Relative slack of a move that "lowers" the prediction: below it, a move is rounding.
const LOWERS: f64 = 1e-12;

/// The Gram matrix of the (group, choice) output changes of a problem.
#[derive(Clone)]
pub struct OutputModel {
    /// Each group's first term; a group's choices are consecutive terms.
    offsets: Vec<usize>,
    terms: usize,
    gram: Vec<f64>,
    rows: f64,
}

impl std::fmt::Debug for OutputModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputModel")
            .field("terms", &self.terms)
            .field("rows", &self.rows)
            .finish()
    }
}

impl OutputModel {
    /// The model of `problem`'s groups from its layers' `changes` (every layer at every width
    /// its group may take).
    pub fn new(problem: &Problem, changes: &OutputChanges) -> Result<OutputModel> {
        let layers = &problem.manifest.layers;
        if changes.layers.len() != layers.len() {
            return Err(Error::invalid(
                "output changes",
                "layers",
                format!(
                    "{} layers' changes for a manifest of {} layers",
                    changes.layers.len(),
                    layers.len()
                ),
            ));
        }
        let terms = Self::check_size(problem)?;
        let mut offsets = Vec::with_capacity(problem.groups.len());
        let mut vectors: Vec<Vec<f64>> = Vec::with_capacity(terms);
        let mut len = None;
        for g in &problem.groups {
            offsets.push(vectors.len());
            for c in &g.choices {
                let mut sum: Vec<f64> = Vec::new();
                for &l in &g.layers {
                    let change = changes.layers[l].get(&c.bits).ok_or_else(|| {
                        Error::invalid(
                            "output changes",
                            format!("layers[{l}]"),
                            format!("{} has no output change at {} bits", layers[l].name, c.bits),
                        )
                    })?;
                    if *len.get_or_insert(change.len()) != change.len() {
                        return Err(Error::invalid(
                            "output changes",
                            format!("layers[{l}]"),
                            format!(
                                "{}'s change at {} bits has {} numbers, others {}",
                                layers[l].name,
                                c.bits,
                                change.len(),
                                len.unwrap_or(0)
                            ),
                        ));
                    }
                    sum.resize(change.len(), 0.0);
                    for (s, &v) in sum.iter_mut().zip(change) {
                        *s += f64::from(v);
                    }
                }
                vectors.push(sum);
            }
        }
        let mut gram = vec![0.0; terms * terms];
        for i in 0..terms {
            for j in i..terms {
                let d: f64 = vectors[i].iter().zip(&vectors[j]).map(|(a, b)| a * b).sum();
                gram[i * terms + j] = d;
                gram[j * terms + i] = d;
            }
        }
        Ok(OutputModel {
            offsets,
            terms,
            gram,
            rows: changes.rows.max(1) as f64,
        })
    }

    /// The (group, choice) terms of `problem`, refused past [`MAX_TERMS`]: checked before the
    /// sensitivity pass runs, so a problem too large is refused before hours of runs.
    pub fn check_size(problem: &Problem) -> Result<usize> {
        let terms: usize = problem.groups.iter().map(|g| g.choices.len()).sum();
        if terms > MAX_TERMS {
            return Err(Error::invalid(
                "search request",
                "objective",
                format!("{terms} (group, bit-width) terms: the output objective takes at most {MAX_TERMS}; use the additive objective"),
            ));
        }
        Ok(terms)
    }

    fn dot(&self, i: usize, j: usize) -> f64 {
        self.gram[i * self.terms + j]
    }

    fn term(&self, group: usize, choice: usize) -> usize {
        self.offsets[group] + choice
    }

    /// The prediction's value for `picks` (before the link), keeping `interaction` of the
    /// cross terms.
    pub fn value(&self, picks: &[usize], interaction: f64) -> f64 {
        self.mix(self.parts(picks), interaction)
    }

    /// The prediction's two parts for `picks`: the squared norm of the summed changes, and the
    /// sum of their own squared norms.
    fn parts(&self, picks: &[usize]) -> (f64, f64) {
        let t: Vec<usize> = picks
            .iter()
            .enumerate()
            .map(|(g, &c)| self.term(g, c))
            .collect();
        let own: f64 = t.iter().map(|&i| self.dot(i, i)).sum();
        let total: f64 = t
            .iter()
            .map(|&i| t.iter().map(|&j| self.dot(i, j)).sum::<f64>())
            .sum();
        (total, own)
    }

    /// The prediction's value from its parts (or their changes), keeping `interaction` of the
    /// cross terms.
    fn mix(&self, (total, own): (f64, f64), interaction: f64) -> f64 {
        (interaction * total + (1.0 - interaction) * own) / self.rows
    }
}

/// The output-space objective fitted to measurements: the model, the share of its cross terms
/// kept and the link to the loss.
#[derive(Debug, Clone)]
pub struct OutputObjective {
    pub model: Arc<OutputModel>,
    pub interaction: f64,
    pub link: Link,
}

impl OutputObjective {
    /// The loss predicted for `picks`.
    pub fn predict(&self, picks: &[usize]) -> f64 {
        self.link
            .loss(self.model.value(picks, self.interaction).max(0.0))
    }

    /// At most `points` configurations along the objective's front within `limits`, cheapest on
    /// `axis` first (the module doc says how it is found).
    pub fn front(
        &self,
        problem: &Problem,
        limits: &Limits,
        axis: CostKind,
        points: usize,
        halt: &Halt,
    ) -> Result<Vec<Vec<usize>>> {
        let sizes: Vec<usize> = problem.groups.iter().map(|g| g.choices.len()).collect();
        // Enumeration prices each configuration in O(groups^2): bounded in work, not in count.
        let work = sizes.len().pow(2).max(1);
        let count = sizes.iter().try_fold(1usize, |n, &s| {
            n.checked_mul(s)
                .filter(|&n| n <= EXHAUSTIVE && n.saturating_mul(work) <= EXHAUSTIVE * 400)
        });
        let found = match count {
            Some(_) => self.enumerated(problem, limits, axis, &sizes, halt)?,
            None => self.polished_path(problem, limits, axis, points, halt)?,
        };
        let costs: Vec<f64> = found
            .iter()
            .map(|p| problem.candidate(p).cost(axis))
            .collect();
        Ok(spread(&costs, points)
            .into_iter()
            .map(|i| found[i].clone())
            .collect())
    }

    /// Every configuration within `limits`, the staircase of least prediction by cost.
    fn enumerated(
        &self,
        problem: &Problem,
        limits: &Limits,
        axis: CostKind,
        sizes: &[usize],
        halt: &Halt,
    ) -> Result<Vec<Vec<usize>>> {
        let mut all: Vec<(f64, f64, Vec<usize>)> = Vec::new();
        let mut picks = vec![0; sizes.len()];
        for visited in 1usize.. {
            let costs = costs_of(problem, &picks);
            if within_limits(&costs, limits) {
                let value = self.model.value(&picks, self.interaction);
                all.push((costs[axis], value, picks.clone()));
            }
            // The next configuration, the last group counting fastest.
            let Some(g) = (0..sizes.len()).rev().find(|&g| picks[g] + 1 < sizes[g]) else {
                break;
            };
            picks[g] += 1;
            picks[g + 1..].iter_mut().for_each(|p| *p = 0);
            if visited.is_multiple_of(4096) {
                halt.check()?;
            }
        }
        Ok(staircase(all))
    }

    /// The greedy path on the prediction within `limits`, `points` of it spread by cost, each
    /// polished ([`Walk::polish`]); of those, the ones no cheaper one predicts as low, cheapest
    /// first.
    fn polished_path(
        &self,
        problem: &Problem,
        limits: &Limits,
        axis: CostKind,
        points: usize,
        halt: &Halt,
    ) -> Result<Vec<Vec<usize>>> {
        let mut walk = Walk::new(
            &self.model,
            self.interaction,
            problem,
            vec![0; problem.groups.len()],
        );
        let mut path = vec![walk.picks.clone()];
        loop {
            halt.check()?;
            let step = (0..problem.groups.len())
                .filter(|&g| walk.picks[g] + 1 < problem.groups[g].choices.len())
                .map(|g| {
                    let next = walk.picks[g] + 1;
                    let choices = &problem.groups[g].choices;
                    let saved = choices[walk.picks[g]].cost[axis] - choices[next].cost[axis];
                    let added = walk.delta(g, next);
                    let rate = if saved > 0.0 {
                        added / saved
                    } else {
                        f64::INFINITY
                    };
                    (rate, g, next)
                })
                .min_by(|a, b| a.0.total_cmp(&b.0));
            let Some((_, g, next)) = step else { break };
            walk.apply(g, next);
            path.push(walk.picks.clone());
        }
        // Cheapest first, within the budgets, each cheaper than the one before it.
        let mut kept: Vec<(f64, Vec<usize>)> = Vec::new();
        for p in path.into_iter().rev() {
            let costs = costs_of(problem, &p);
            if within_limits(&costs, limits) && kept.last().is_none_or(|k| costs[axis] > k.0) {
                kept.push((costs[axis], p));
            }
        }
        let costs: Vec<f64> = kept.iter().map(|k| k.0).collect();
        let mut out: Vec<Vec<usize>> = Vec::new();
        for i in spread(&costs, points) {
            halt.check()?;
            let mut walk = Walk::new(&self.model, self.interaction, problem, kept[i].1.clone());
            walk.polish(limits, axis, kept[i].0);
            if !out.contains(&walk.picks) {
                out.push(walk.picks);
            }
        }
        let priced: Vec<(f64, f64, Vec<usize>)> = out
            .into_iter()
            .map(|p| {
                let value = self.model.value(&p, self.interaction);
                (problem.candidate(&p).cost(axis), value, p)
            })
            .collect();
        Ok(staircase(priced))
    }
}

/// Of (cost, value, picks), those whose value is below every cheaper one's, cheapest first.
fn staircase(mut priced: Vec<(f64, f64, Vec<usize>)>) -> Vec<Vec<usize>> {
    priced.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut best = f64::INFINITY;
    priced
        .into_iter()
        .filter(|(_, value, _)| {
            let lower = *value < best;
            best = best.min(*value);
            lower
        })
        .map(|(_, _, picks)| picks)
        .collect()
}

/// The costs of `picks`, summed over groups.
fn costs_of(problem: &Problem, picks: &[usize]) -> Costs {
    picks
        .iter()
        .enumerate()
        .map(|(g, &c)| problem.groups[g].choices[c].cost)
        .sum()
}

fn within_limits(costs: &Costs, limits: &Limits) -> bool {
    CostKind::ALL
        .into_iter()
        .all(|k| limits[k].is_none_or(|l| within(costs[k], l)))
}

/// A configuration on the way, with each term's inner product with the current sum of changes:
/// a move's change of the prediction in O(1), a move in O(terms).
struct Walk<'a> {
    model: &'a OutputModel,
    problem: &'a Problem,
    interaction: f64,
    picks: Vec<usize>,
    /// Inner product of each term with the sum of the picked terms.
    along: Vec<f64>,
    costs: Costs,
}

impl<'a> Walk<'a> {
    fn new(
        model: &'a OutputModel,
        interaction: f64,
        problem: &'a Problem,
        picks: Vec<usize>,
    ) -> Self {
        let picked: Vec<usize> = picks
            .iter()
            .enumerate()
            .map(|(g, &c)| model.term(g, c))
            .collect();
        let along = (0..model.terms)
            .map(|t| picked.iter().map(|&p| model.dot(t, p)).sum())
            .collect();
        let costs = costs_of(problem, &picks);
        Walk {
            model,
            problem,
            interaction,
            picks,
            along,
            costs,
        }
    }

    /// How the prediction's value changes when group `g` moves from its pick (term `i`) to
    /// term `j` and, with `other`, group h from term `k` to term `l`.
    fn change(&self, i: usize, j: usize, other: Option<(usize, usize)>) -> f64 {
        let m = self.model;
        let step = |i: usize, j: usize| {
            let total = 2.0 * (self.along[j] - self.along[i]) + m.dot(j, j) - 2.0 * m.dot(i, j)
                + m.dot(i, i);
            (total, m.dot(j, j) - m.dot(i, i))
        };
        let (mut total, mut own) = step(i, j);
        if let Some((k, l)) = other {
            let (t, o) = step(k, l);
            total += t + 2.0 * (m.dot(j, l) - m.dot(j, k) - m.dot(i, l) + m.dot(i, k));
            own += o;
        }
        m.mix((total, own), self.interaction)
    }

    /// The prediction's value at the current picks.
    fn value(&self) -> f64 {
        let m = self.model;
        let picked = self.picks.iter().enumerate().map(|(g, &c)| m.term(g, c));
        let parts = picked.fold((0.0, 0.0), |(t, o), p| (t + self.along[p], o + m.dot(p, p)));
        m.mix(parts, self.interaction)
    }

    /// How the prediction's value changes when group `g` takes choice `c`.
    fn delta(&self, g: usize, c: usize) -> f64 {
        self.change(
            self.model.term(g, self.picks[g]),
            self.model.term(g, c),
            None,
        )
    }

    fn apply(&mut self, g: usize, c: usize) {
        let (i, j) = (self.model.term(g, self.picks[g]), self.model.term(g, c));
        for (t, a) in self.along.iter_mut().enumerate() {
            *a += self.model.dot(t, j) - self.model.dot(t, i);
        }
        let choices = &self.problem.groups[g].choices;
        self.costs = self.costs - choices[self.picks[g]].cost + choices[c].cost;
        self.picks[g] = c;
    }

    /// Whether the costs after moving `moves` stay within `limits` and `axis` within `budget`.
    fn fits(&self, moves: &[(usize, usize)], limits: &Limits, axis: CostKind, budget: f64) -> bool {
        let mut costs = self.costs;
        for &(g, c) in moves {
            let choices = &self.problem.groups[g].choices;
            costs = costs - choices[self.picks[g]].cost + choices[c].cost;
        }
        within(costs[axis], budget) && within_limits(&costs, limits)
    }

    /// Moves that lower the prediction without leaving `limits` or raising `axis` above
    /// `budget`, the best first, until none does: one group to any other choice; else one group
    /// a step costlier and another to any cheaper choice.
    fn polish(&mut self, limits: &Limits, axis: CostKind, budget: f64) {
        let groups = self.problem.groups.len();
        // Every move lowers the prediction, so it ends; the cap guards against rounding letting
        // two moves of no true gain undo each other.
        for _ in 0..MAX_POLISH_MOVES_PER_GROUP * groups.max(1) {
            let floor = -LOWERS * self.value().abs();
            let mut best: Option<(f64, Vec<(usize, usize)>)> = None;
            let consider =
                |gain: f64,
                 moves: Vec<(usize, usize)>,
                 best: &mut Option<(f64, Vec<(usize, usize)>)>| {
                    if gain < floor && best.as_ref().is_none_or(|b| gain < b.0) {
                        *best = Some((gain, moves));
                    }
                };
            for g in 0..groups {
                for c in 0..self.problem.groups[g].choices.len() {
                    if c != self.picks[g] && self.fits(&[(g, c)], limits, axis, budget) {
                        consider(self.delta(g, c), vec![(g, c)], &mut best);
                    }
                }
            }
            if best.is_none() {
                for g in (0..groups).filter(|&g| self.picks[g] > 0) {
                    let up = self.picks[g] - 1;
                    let (i, j) = (self.model.term(g, self.picks[g]), self.model.term(g, up));
                    for h in (0..groups).filter(|&h| h != g) {
                        for c in self.picks[h] + 1..self.problem.groups[h].choices.len() {
                            let moves = vec![(g, up), (h, c)];
                            if self.fits(&moves, limits, axis, budget) {
                                let (k, l) =
                                    (self.model.term(h, self.picks[h]), self.model.term(h, c));
                                consider(self.change(i, j, Some((k, l))), moves, &mut best);
                            }
                        }
                    }
                }
            }
            let Some((_, moves)) = best else { return };
            for (g, c) in moves {
                self.apply(g, c);
            }
        }
    }
}

/// The output-space objective fitted to `measured`: of the shares [`INTERACTIONS`] of the
/// cross terms, under a link of power 1 or fitted, the one that best predicts measurements it
/// was not fitted to (mean squared error of the log loss, k-fold; the first on a tie). Below
/// `MIN_CROSS_VALIDATED` measurements, every cross term under a fitted scale; with none, the
/// prediction as it is (in the divergence the changes were measured in).
pub fn refit_output(model: &Arc<OutputModel>, measured: &[MeasuredPoint]) -> OutputObjective {
    let measured = &usable(measured);
    // Each measurement's parts, priced once for every share and fold.
    let parts: Vec<(f64, f64)> = measured.iter().map(|m| model.parts(&m.picks)).collect();
    let link = |interaction: f64, train: &mut dyn Iterator<Item = usize>, power_free: bool| {
        Link::fit_pairs(
            train.map(|i| (model.mix(parts[i], interaction), measured[i].loss)),
            power_free,
        )
    };
    let fitted = |interaction: f64, power_free: bool| OutputObjective {
        model: Arc::clone(model),
        interaction,
        link: link(interaction, &mut (0..measured.len()), power_free),
    };
    if measured.len() < MIN_CROSS_VALIDATED {
        return fitted(INTERACTIONS[0], false);
    }
    let folds = FOLDS.min(measured.len());
    let mut best = (INTERACTIONS[0], false, f64::INFINITY);
    for interaction in INTERACTIONS {
        for power_free in [false, true] {
            let mut error = 0.0;
            for fold in 0..folds {
                let trained = link(
                    interaction,
                    &mut (0..measured.len()).filter(|i| i % folds != fold),
                    power_free,
                );
                error += (0..measured.len())
                    .filter(|i| i % folds == fold)
                    .map(|i| {
                        let predicted = trained.loss(model.mix(parts[i], interaction).max(0.0));
                        log_error(predicted, measured[i].loss)
                    })
                    .sum::<f64>();
            }
            if error < best.2 {
                best = (interaction, power_free, error);
            }
        }
    }
    fitted(best.0, best.1)
}

#[cfg(test)]
mod tests;
