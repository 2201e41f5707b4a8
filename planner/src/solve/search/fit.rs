//! Refitting the search's objective to what was measured.
//!
//! The objective is a term per (group, choice) and a [`Link`] that carries their sum to a
//! predicted loss. Two models are fitted on the link's scale, by relative, non-negative ridge
//! regression: a weight per group on the starting terms ([`fit_groups`]), and each (group,
//! choice) term moved from that ([`fit`]). [`refit`] keeps the model, ridge and link whose
//! predictions of held-out measurements are best (k-fold cross-validation), so the strength of
//! the pull towards the start is set by what the measurements predict, not by a constant tuned
//! on one network. No fit lowers a weight or a term far ([`MAX_CORRECTION`]). [`fit_of`] says
//! how well a round's predictions fitted what it measured.

use super::normal::solve_non_negative;
use super::{Fit, MeasuredPoint};
use crate::problem::Problem;
use std::collections::{HashMap, HashSet};

/// The ridge strengths [`refit`] cross-validates, relative to the mean weight the measurements
/// give an unknown: from barely held (measurements decide) to held firmly to the start.
pub const RIDGES: [f64; 4] = [0.03, 0.3, 3.0, 30.0];

/// Most a fit lowers a group's weight or a term, as a factor: a fit that explains the
/// measurements with a layer that costs nothing would send the next round's every point to that
/// layer's lowest width, where no measurement has looked (on PP-OCR's classifier such a round
/// measured ten points 10 to 40 times above their predictions). Raising is not bounded: it only
/// steers the search away from a choice.
const MAX_CORRECTION: f64 = 4.0;

/// Measurements per term used at which [`Objective::cautious`] lets a fitted term fall the whole
/// [`MAX_CORRECTION`] below the start: half as many measurements as the terms they use (chosen
/// on the tuning sets; the fit is still underdetermined there).
const DETERMINED: f64 = 0.5;

/// Most unknowns a fit solves for (a dense system): past this, [`fit`] fits only the starting
/// objective's scale and [`fit_groups`] leaves the start as it is.
const MAX_FITTED_TERMS: usize = 3000;

/// Fewest measurements [`refit`] cross-validates: below them it keeps the starting terms under
/// a fitted link.
const MIN_CROSS_VALIDATED: usize = 3;

/// Folds of the cross-validation (fewer when fewer measurements).
const FOLDS: usize = 5;

/// Pull of the link's power towards 1: as much as this many squared units of log starting sum
/// per measurement, which a front spanning a decade of loss (a spread of several units) outweighs
/// many times, so such a front sets the power itself.
const LINK_PRIOR: f64 = 0.1;

/// The link's power stays within `[1 / MAX_POWER, MAX_POWER]`.
const MAX_POWER: f64 = 4.0;

/// How the objective's sum maps to a predicted loss: `scale * sum^power`. Increasing, so the
/// exact front of the terms is the front of the predictions. Measured losses of real networks
/// need not grow as the sum of their layers' single-layer losses: on PP-OCR's classifier the KL
/// grows about as the square root of that sum, so a sum fitted directly to losses is wrong at
/// one end of the front or the other.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    pub scale: f64,
    pub power: f64,
}

impl Link {
    pub const IDENTITY: Link = Link {
        scale: 1.0,
        power: 1.0,
    };

    /// The loss predicted for a sum of terms.
    pub fn loss(&self, sum: f64) -> f64 {
        self.scale * sum.max(0.0).powf(self.power)
    }

    /// The sum of terms that predicts `loss`: where a measurement sits on the terms' scale.
    pub fn sum(&self, loss: f64) -> f64 {
        (loss.max(0.0) / self.scale).powf(1.0 / self.power)
    }

    /// Fitted by least squares of the log loss on the log of the starting sum, the power pulled
    /// towards 1 ([`LINK_PRIOR`]) and kept within [`MAX_POWER`]; the power is 1 when not
    /// `power_free` or below two usable measurements.
    fn fit(start: &[Vec<f64>], measured: &[MeasuredPoint], power_free: bool) -> Link {
        Link::fit_pairs(
            measured.iter().map(|m| {
                let sum: f64 = m.picks.iter().enumerate().map(|(g, &c)| start[g][c]).sum();
                (sum, m.loss)
            }),
            power_free,
        )
    }

    /// [`Link::fit`] on (sum, loss) pairs.
    pub(super) fn fit_pairs(pairs: impl Iterator<Item = (f64, f64)>, power_free: bool) -> Link {
        let logs: Vec<(f64, f64)> = pairs
            .filter(|&(sum, loss)| sum > 0.0 && loss > 0.0)
            .map(|(sum, loss)| (sum.ln(), loss.ln()))
            .collect();
        let n = logs.len() as f64;
        if logs.is_empty() {
            return Link::IDENTITY;
        }
        let (mx, my) = (
            logs.iter().map(|p| p.0).sum::<f64>() / n,
            logs.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let sxx: f64 = logs.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let sxy: f64 = logs.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let prior = LINK_PRIOR * n;
        let power = if logs.len() < 2 || !power_free {
            1.0
        } else {
            ((sxy + prior) / (sxx + prior)).clamp(1.0 / MAX_POWER, MAX_POWER)
        };
        Link {
            scale: (my - power * mx).exp(),
            power,
        }
    }
}

/// The search's objective: a term per (group, choice), and the link from their sum to a loss.
#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    pub terms: Vec<Vec<f64>>,
    pub link: Link,
    /// The model [`refit`] chose.
    pub model: FitModel,
    /// The model's ridge strength (one of [`RIDGES`]; 0 for the start under a link).
    pub ridge: f64,
}

impl Objective {
    /// The starting terms as they are.
    pub fn start(start: &[Vec<f64>]) -> Self {
        Objective {
            terms: start.to_vec(),
            link: Link::IDENTITY,
            model: FitModel::Start,
            ridge: 0.0,
        }
    }

    /// The sum of the terms `picks` chooses.
    pub fn sum(&self, picks: &[usize]) -> f64 {
        picks
            .iter()
            .enumerate()
            .map(|(g, &c)| self.terms[g][c])
            .sum()
    }

    /// The loss predicted for `picks`.
    pub fn predict(&self, picks: &[usize]) -> f64 {
        self.link.loss(self.sum(picks))
    }

    /// The objective a search plans on: this fit with no term below the start rescaled to the
    /// measurements divided by a factor that grows from 1 to `MAX_CORRECTION` (4) with the
    /// measurements per (group, choice) term they use (reached at `DETERMINED`, 0.5); link, model
    /// and raised terms as fitted. With hundreds of terms and tens of measurements, some terms
    /// are lowered by chance, and the exact solver seeks out exactly those (the optimizer's
    /// curse): on ResNet-50-thin, planning on the unbounded fit measured fronts 0.25 above the
    /// better baseline in log KL (mean over 6 to 4 bits, three runs), planning on these 0.06.
    /// The terms are counted whatever the model, since a per-group weight fitted from the
    /// choices measured is carried to the others too. With more measurements per term a fit may
    /// lower terms further, which a measured interaction needs: lowering the other layers' terms
    /// is how an additive model makes room for two layers whose errors compound. The start, and
    /// the start under a fitted link, are returned as they are.
    pub fn cautious(self, start: &[Vec<f64>], measured: &[MeasuredPoint]) -> Objective {
        let measured = usable(measured);
        if matches!(self.model, FitModel::Start | FitModel::Link) || measured.is_empty() {
            return self;
        }
        let used: HashSet<(usize, usize)> = measured
            .iter()
            .flat_map(|m| m.picks.iter().copied().enumerate())
            .collect();
        let determined = (measured.len() as f64 / used.len().max(1) as f64 / DETERMINED).min(1.0);
        let factor = 1.0 + (MAX_CORRECTION - 1.0) * determined;
        let on_scale: Vec<MeasuredPoint> = measured
            .iter()
            .map(|m| MeasuredPoint {
                loss: self.link.sum(m.loss),
                ..m.clone()
            })
            .collect();
        let scale = scale_of(start, &on_scale);
        let terms = self
            .terms
            .iter()
            .zip(start)
            .map(|(terms, from)| {
                terms
                    .iter()
                    .zip(from)
                    .map(|(&t, &s)| t.max(scale * s / factor))
                    .collect()
            })
            .collect();
        Objective { terms, ..self }
    }
}

/// The models [`refit`] chooses among, by rising freedom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FitModel {
    /// The starting terms as they are (nothing fitted: no measurement yet, or a baseline).
    Start,
    /// The starting terms under a fitted link.
    Link,
    /// A weight per group on the starting terms, and a constant.
    Groups,
    /// Each (group, choice) term a measurement uses, moved from the per-group fit.
    Terms,
    /// The output-space objective (`output`): the single-layer runs' output changes added up,
    /// a share of their cross terms kept, under a fitted link.
    Output,
}

impl FitModel {
    pub fn as_str(self) -> &'static str {
        match self {
            FitModel::Start => "start",
            FitModel::Link => "link",
            FitModel::Groups => "groups",
            FitModel::Terms => "terms",
            FitModel::Output => "output",
        }
    }
}

/// The objective fitted to the measurements (a search plans on it held by
/// [`Objective::cautious`]): of the per-group and the per-term fits, at each of [`RIDGES`], with
/// the link's power 1 or fitted, the one that best predicts measurements it was not fitted to
/// (mean squared error of the log loss, k-fold; the first on a tie). Below
/// `MIN_CROSS_VALIDATED` measurements, the starting terms under a fitted scale. The plain
/// start under a link is not a candidate: with nothing but measurements along its own front it
/// tends to predict those best, and then never learns what a round that leaves that front
/// shows (two layers whose errors compound).
pub fn refit(problem: &Problem, start: &[Vec<f64>], measured: &[MeasuredPoint]) -> Objective {
    let measured = &usable(measured);
    if measured.is_empty() {
        return Objective::start(start);
    }
    if measured.len() < MIN_CROSS_VALIDATED {
        return fit_model(problem, start, measured, FitModel::Link, 0.0, false);
    }
    let folds = FOLDS.min(measured.len());
    let held_out_error = |model: FitModel, ridge: f64, power_free: bool| -> f64 {
        let mut total = 0.0;
        for fold in 0..folds {
            let (mut train, mut test) = (Vec::new(), Vec::new());
            for (i, m) in measured.iter().enumerate() {
                if i % folds == fold {
                    test.push(m);
                } else {
                    train.push(m.clone());
                }
            }
            let fitted = fit_model(problem, start, &train, model, ridge, power_free);
            for m in test {
                total += log_error(fitted.predict(&m.picks), m.loss);
            }
        }
        total / measured.len() as f64
    };
    let mut candidates = Vec::new();
    for power_free in [false, true] {
        for model in [FitModel::Groups, FitModel::Terms] {
            candidates.extend(RIDGES.map(|ridge| (model, ridge, power_free)));
        }
    }
    let mut best = (candidates[0], f64::INFINITY);
    for candidate in candidates {
        let (model, ridge, power_free) = candidate;
        let error = held_out_error(model, ridge, power_free);
        if error < best.1 {
            best = (candidate, error);
        }
    }
    let (model, ridge, power_free) = best.0;
    fit_model(problem, start, measured, model, ridge, power_free)
}

/// The measurements a fit can use: finite losses, those at or below 0 (such as full agreement
/// with fp32) raised to half the least positive one, as good as anything measured but with a
/// logarithm and a finite weight in a relative fit.
pub(super) fn usable(measured: &[MeasuredPoint]) -> Vec<MeasuredPoint> {
    let floor = zero_loss(measured.iter().map(|m| m.loss)).unwrap_or(1.0);
    measured
        .iter()
        .filter(|m| m.loss.is_finite())
        .map(|m| MeasuredPoint {
            loss: if m.loss > 0.0 { m.loss } else { floor },
            ..m.clone()
        })
        .collect()
}

/// What a measured loss at or below 0 counts as: half the least positive, finite one of
/// `losses` (`None` when there is none).
fn zero_loss(losses: impl Iterator<Item = f64>) -> Option<f64> {
    let least = losses
        .filter(|l| l.is_finite() && *l > 0.0)
        .fold(f64::INFINITY, f64::min);
    least.is_finite().then_some(least / 2.0)
}

/// The squared error of a prediction in log loss (a prediction at or below zero counts as a
/// millionth of the loss).
pub(super) fn log_error(predicted: f64, loss: f64) -> f64 {
    if loss <= 0.0 {
        return 0.0;
    }
    (predicted.max(loss * 1e-6).ln() - loss.ln()).powi(2)
}

/// `model` fitted to `measured`: the link first, then the terms fitted to where each
/// measurement sits on the link's scale.
fn fit_model(
    problem: &Problem,
    start: &[Vec<f64>],
    measured: &[MeasuredPoint],
    model: FitModel,
    ridge: f64,
    power_free: bool,
) -> Objective {
    let link = Link::fit(start, measured, power_free);
    let on_scale: Vec<MeasuredPoint> = measured
        .iter()
        .map(|m| MeasuredPoint {
            loss: link.sum(m.loss),
            ..m.clone()
        })
        .collect();
    let terms = match model {
        FitModel::Start | FitModel::Link | FitModel::Output => start.to_vec(),
        FitModel::Groups => fit_groups(start, &on_scale, ridge),
        FitModel::Terms => {
            let groups = fit_groups(start, &on_scale, ridge);
            let mut terms = fit(problem, &groups, &on_scale, ridge);
            // Bounded against the start itself too, so the per-group and the per-term lowering
            // do not compound.
            let scale = scale_of(start, &on_scale);
            for (fitted, from) in terms.iter_mut().zip(start) {
                for (t, s) in fitted.iter_mut().zip(from) {
                    *t = t.max(scale * s / MAX_CORRECTION);
                }
            }
            terms
        }
    };
    Objective {
        terms,
        link,
        model,
        ridge,
    }
}

/// The objective refitted to the measurements: one term per (group, choice). The starting terms
/// are first rescaled to the measurements (least squares through the origin); then every term a
/// measurement uses is fitted by ridge regression towards its rescaled start, so terms no
/// measurement constrains keep the start's shape.
pub fn fit(
    problem: &Problem,
    start: &[Vec<f64>],
    measured: &[MeasuredPoint],
    ridge: f64,
) -> Vec<Vec<f64>> {
    if measured.is_empty() {
        return start.to_vec();
    }
    let scale = scale_of(start, measured);
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
    let mean_loss = mean_loss(measured);
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
        let w = relative_weight(m.loss, mean_loss);
        for &a in &cols {
            atb[a] += w * m.loss;
            for &b in &cols {
                ata[a * k + b] += w;
            }
        }
    }
    // The pull is on each term's relative move, as strong on average as `ridge` times the
    // measurements' mean weight on a term.
    let widths: Vec<f64> = index
        .keys()
        .map(|&(g, c)| out[g][c].abs().max(floor).max(1e-300))
        .collect();
    let mean_width = widths.iter().sum::<f64>() / k.max(1) as f64;
    let diagonal = (0..k).map(|j| ata[j * k + j]).sum::<f64>() / k.max(1) as f64;
    let weight = ridge * diagonal * mean_width * mean_width;
    for (&(g, c), &j) in &index {
        let prior = out[g][c];
        let width = prior.abs().max(floor).max(1e-300);
        let w = weight / (width * width);
        ata[j * k + j] += w;
        atb[j] += w * prior;
    }
    if let Some(theta) = solve_non_negative(&ata, &atb, k) {
        for (&(g, c), &j) in &index {
            out[g][c] = theta[j].max(out[g][c] / MAX_CORRECTION);
        }
    }
    out
}

/// The objective refitted as the starting one with a weight per group and a constant: a loss is
/// predicted as `b + sum over groups of w_g * start[g][choice]`, fitted to the measurements by
/// relative, ridge-regularised least squares, each weight pulled towards the one common scale
/// that fits best; the constant is spread evenly over the groups' terms, so the fronts it gives
/// are the weighted start's.
pub fn fit_groups(start: &[Vec<f64>], measured: &[MeasuredPoint], ridge: f64) -> Vec<Vec<f64>> {
    let groups = start.len();
    if measured.is_empty() || groups == 0 || groups >= MAX_FITTED_TERMS {
        return start.to_vec();
    }
    let scale = scale_of(start, measured);
    // Unknowns: each group's weight relative to `scale`, then the constant.
    let k = groups + 1;
    let mean_loss = mean_loss(measured);
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
        let w = relative_weight(m.loss, mean_loss);
        for a in 0..k {
            atb[a] += w * x[a] * m.loss;
            for b in 0..k {
                ata[a * k + b] += w * x[a] * x[b];
            }
        }
    }
    let diagonal = (0..groups).map(|g| ata[g * k + g]).sum::<f64>() / groups as f64;
    let pull = ridge * diagonal.max(1e-300);
    for g in 0..groups {
        ata[g * k + g] += pull;
        atb[g] += pull;
    }
    ata[groups * k + groups] += 1e-9 * measured.len() as f64 / (mean_loss * mean_loss).max(1e-300);
    let Some(theta) = solve_non_negative(&ata, &atb, k) else {
        return start.to_vec();
    };
    let constant = theta[groups] / groups as f64;
    start
        .iter()
        .zip(&theta)
        .map(|(terms, &w)| {
            let w = w.max(1.0 / MAX_CORRECTION);
            terms.iter().map(|t| w * scale * t + constant).collect()
        })
        .collect()
}

/// The factor that best carries `start` to the measurements' units: least squares through the
/// origin of each loss on its starting objective (1 when that is not positive).
fn scale_of(start: &[Vec<f64>], measured: &[MeasuredPoint]) -> f64 {
    let (num, den) = measured.iter().fold((0.0, 0.0), |(n, d), m| {
        let p: f64 = m.picks.iter().enumerate().map(|(g, &c)| start[g][c]).sum();
        (n + p * m.loss, d + p * p)
    });
    if den > 0.0 && num > 0.0 {
        num / den
    } else {
        1.0
    }
}

fn mean_loss(measured: &[MeasuredPoint]) -> f64 {
    measured.iter().map(|m| m.loss.abs()).sum::<f64>() / measured.len() as f64
}

/// A measurement's weight in a relative fit: a loss of 0.01 is fitted as closely as one of 10.
fn relative_weight(loss: f64, mean_loss: f64) -> f64 {
    1.0 / loss.abs().max(mean_loss * 1e-9).max(1e-300).powi(2)
}

/// Spearman's rank correlation, the mean absolute error and the geometric mean ratio of measured
/// to predicted of (predicted, measured) pairs: the ratio over the pairs with a positive
/// prediction, a measured loss at or below 0 taken as half the least positive one (no ratio
/// when no measured loss is positive).
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
    // A measured loss at or below 0 (full agreement with fp32) counts as half the least positive
    // one, as in the fits: left out, it would hide the predictions it shows too high.
    let used: Vec<(f64, f64)> = pairs
        .iter()
        .copied()
        .filter(|(p, m)| *p > 0.0 && p.is_finite() && m.is_finite())
        .collect();
    let ratio = zero_loss(used.iter().map(|p| p.1)).map(|zero| {
        let logs = used.iter().map(|&(p, m)| m.max(zero).ln() - p.ln());
        (logs.sum::<f64>() / used.len() as f64).exp()
    });
    Fit {
        spearman,
        mae,
        ratio,
    }
}
