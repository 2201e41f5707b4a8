//! Budgets: upper bounds on costs, and the report of why a set of budgets cannot be met.
//!
//! It owns checking budgets and turning them into limits per cost, and the one rule of "within a
//! budget" ([`within`]); solving under them is `solve`'s.

use crate::error::{Error, FieldError, Result};
use crate::problem::cost::{CostKind, Limits};
use crate::problem::Problem;
use serde::{Deserialize, Serialize};

/// The budgets a plan must meet; any subset may be given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size_bytes: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bops: Option<f64>,
    /// Needs a device profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ms: Option<f64>,
    /// Weight bits averaged over all weights; a size budget in other units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_avg_bits: Option<f64>,
}

/// One budget as the solver sees it: a bound on one cost, in that cost's units.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Bound {
    pub name: &'static str,
    pub kind: CostKind,
    /// The limit in the cost's own units (bytes for `max_avg_bits`).
    pub limit: f64,
    /// Multiplies a cost to express it in the budget's units (8 / params for average bits).
    pub to_budget_units: f64,
}

/// Relative tolerance of "within a budget": the rounding of a cost summed over thousands of layers
/// in another order (about 1e-13), and no more, so that a plan's reported cost is within its
/// budget as the user reads it.
pub(crate) const TOLERANCE: f64 = 1e-12;

/// Whether `cost` is within the budget `limit`: the one rule of every engine (knapsack, core,
/// front, HiGHS), so they agree on a candidate exactly at a budget.
pub(crate) fn within(cost: f64, limit: f64) -> bool {
    cost <= limit + TOLERANCE * limit.abs().max(1.0)
}

impl Budgets {
    /// Whether no budget is set.
    pub fn is_empty(&self) -> bool {
        self.bounds_unchecked(1.0).is_empty()
    }

    fn bounds_unchecked(&self, total_params: f64) -> Vec<Bound> {
        let mut out = Vec::new();
        let mut push = |name, kind, value: Option<f64>, to_budget_units: f64| {
            if let Some(v) = value {
                out.push(Bound {
                    name,
                    kind,
                    limit: v / to_budget_units,
                    to_budget_units,
                });
            }
        };
        push("max_size_bytes", CostKind::Size, self.max_size_bytes, 1.0);
        push("max_bops", CostKind::Bops, self.max_bops, 1.0);
        push(
            "max_latency_ms",
            CostKind::Latency,
            self.max_latency_ms,
            1.0,
        );
        push(
            "max_avg_bits",
            CostKind::Size,
            self.max_avg_bits,
            8.0 / total_params,
        );
        out
    }

    /// The kinds of cost bounded, once each (average bits bounds size).
    pub fn kinds(&self) -> Vec<CostKind> {
        let mut kinds = Vec::new();
        if self.max_size_bytes.is_some() || self.max_avg_bits.is_some() {
            kinds.push(CostKind::Size);
        }
        if self.max_bops.is_some() {
            kinds.push(CostKind::Bops);
        }
        if self.max_latency_ms.is_some() {
            kinds.push(CostKind::Latency);
        }
        kinds
    }

    /// Checks that every budget given is a finite, non-negative number.
    pub fn check_values(&self) -> Result<()> {
        Error::check("budgets", self.value_errors())
    }

    fn value_errors(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        for (name, v) in [
            ("max_size_bytes", self.max_size_bytes),
            ("max_bops", self.max_bops),
            ("max_latency_ms", self.max_latency_ms),
            ("max_avg_bits", self.max_avg_bits),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v >= 0.0) {
                    errors.push(FieldError::new(
                        name,
                        format!("must be a finite, non-negative number, not {v}"),
                    ));
                }
            }
        }
        errors
    }

    /// Checks the budgets against a problem and returns them as bounds.
    pub(crate) fn bounds(&self, problem: &Problem) -> Result<Vec<Bound>> {
        let mut errors = self.value_errors();
        if self.max_latency_ms.is_some() && !problem.has_latency() {
            errors.push(FieldError::new(
                "max_latency_ms",
                "a latency budget needs a device profile",
            ));
        }
        Error::check("budgets", errors)?;
        Ok(self.bounds_unchecked(problem.manifest.total_params() as f64))
    }
}

pub(crate) fn limits_of(bounds: &[Bound]) -> Limits {
    let mut limits = Limits::NONE;
    for b in bounds {
        let slot = &mut limits[b.kind];
        *slot = Some(slot.map_or(b.limit, |l: f64| l.min(b.limit)));
    }
    limits
}

/// Why a set of budgets cannot be met, budget by budget.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Infeasibility {
    pub budgets: Vec<BudgetReport>,
    /// One sentence for people.
    pub message: String,
}

/// What one budget asked for and what is achievable.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetReport {
    pub budget: &'static str,
    pub limit: f64,
    /// The smallest value of this cost any assignment reaches (ties and pins respected).
    pub min_achievable: f64,
    /// The smallest value reachable while meeting every other budget; `None` when the other
    /// budgets cannot be met together either.
    pub min_under_other_budgets: Option<f64>,
    /// Whether this budget can be met on its own.
    pub achievable_alone: bool,
}

impl Infeasibility {
    pub(crate) fn new(budgets: Vec<BudgetReport>) -> Infeasibility {
        let alone: Vec<String> = budgets
            .iter()
            .filter(|b| !b.achievable_alone)
            .map(|b| {
                format!(
                    "{} {} is below the smallest achievable {}",
                    b.budget,
                    fmt_num(b.limit),
                    fmt_num(b.min_achievable)
                )
            })
            .collect();
        let message = if alone.is_empty() {
            let parts: Vec<String> = budgets
                .iter()
                .map(|b| match b.min_under_other_budgets {
                    Some(m) => format!(
                        "{} needs at least {} under the others",
                        b.budget,
                        fmt_num(m)
                    ),
                    None => format!("{} cannot be paired with the others", b.budget),
                })
                .collect();
            format!(
                "no assignment meets all budgets together, though each is achievable alone: {}",
                parts.join("; ")
            )
        } else {
            format!("no assignment fits: {}", alone.join("; "))
        };
        Infeasibility { budgets, message }
    }
}

/// A number for messages: whole numbers as such, others to at most 6 decimals.
pub fn fmt_num(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_a_budget_is_relative_with_a_floor_of_one_unit() {
        for limit in [1e-3, 1.0, 4096.0, 3.7e9] {
            let scale = f64::max(limit, 1.0);
            assert!(within(limit, limit), "exactly at {limit}");
            assert!(
                within(limit + 0.5 * TOLERANCE * scale, limit),
                "rounding at {limit}"
            );
            assert!(
                !within(limit + 2.0 * TOLERANCE * scale, limit),
                "over {limit}"
            );
        }
        // A zero budget takes only rounding of a unit.
        assert!(within(0.5e-12, 0.0) && !within(2e-12, 0.0));
    }
}
