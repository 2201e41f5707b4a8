//! Refitting the search's objective to what was measured: per-group weights on the starting terms
//! ([`fit_groups`]), then each (group, choice) term ([`fit`]), by relative, non-negative ridge
//! regression; and how well a round's predictions fitted its measurements ([`fit_of`]).

use super::{Fit, MeasuredPoint};
use crate::problem::Problem;
use std::collections::HashMap;

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
