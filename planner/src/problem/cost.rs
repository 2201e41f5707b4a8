//! The costs a plan is bounded by and traded against: [`CostKind`], and [`PerCost`], one value per
//! kind indexed by it ([`Costs`] for amounts, [`Limits`] for budgets, [`PerCost<f64>`] for the
//! Lagrange multipliers that price them). It owns the arithmetic on those values and nothing
//! about where they come from.

use serde::{Deserialize, Serialize};
use std::ops::{Add, AddAssign, Index, IndexMut, Sub};

/// A cost that budgets bound and fronts trade against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostKind {
    /// Model weight storage, `sum params * bits / 8`.
    Size,
    /// Bit-operations, `sum MACs * w_bits * a_bits`.
    Bops,
    /// Device latency, from the device profile's model.
    Latency,
}

impl CostKind {
    pub const ALL: [CostKind; 3] = [CostKind::Size, CostKind::Bops, CostKind::Latency];

    /// The name used on the command line and in JSON (`size`, `bops`, `latency`).
    pub fn as_str(self) -> &'static str {
        match self {
            CostKind::Size => "size",
            CostKind::Bops => "bops",
            CostKind::Latency => "latency",
        }
    }

    /// The budget that bounds this cost.
    pub fn budget_name(self) -> &'static str {
        match self {
            CostKind::Size => "max_size_bytes",
            CostKind::Bops => "max_bops",
            CostKind::Latency => "max_latency_ms",
        }
    }
}

impl std::str::FromStr for CostKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "size" => Ok(CostKind::Size),
            "bops" => Ok(CostKind::Bops),
            "latency" => Ok(CostKind::Latency),
            other => Err(format!(
                "unknown cost {other:?}: expected size, bops or latency"
            )),
        }
    }
}

/// One value per [`CostKind`], indexed by it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PerCost<T>([T; 3]);

/// An amount of every cost: `size_bytes`, `bops`, `latency_ms` (0 without a device).
pub type Costs = PerCost<f64>;

/// A budget per cost; `None` leaves the cost unbounded.
pub type Limits = PerCost<Option<f64>>;

impl<T> PerCost<T> {
    /// The value `f(kind)` for every kind.
    pub fn from_fn(mut f: impl FnMut(CostKind) -> T) -> PerCost<T> {
        PerCost(CostKind::ALL.map(&mut f))
    }

    /// Every kind with its value, in [`CostKind::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (CostKind, &T)> {
        CostKind::ALL.into_iter().zip(&self.0)
    }
}

impl<T> Index<CostKind> for PerCost<T> {
    type Output = T;
    fn index(&self, k: CostKind) -> &T {
        &self.0[k as usize]
    }
}

impl<T> IndexMut<CostKind> for PerCost<T> {
    fn index_mut(&mut self, k: CostKind) -> &mut T {
        &mut self.0[k as usize]
    }
}

impl Costs {
    pub const ZERO: Costs = PerCost([0.0; 3]);

    /// `sum_k self[k] * other[k]`: costs priced at multipliers.
    pub fn dot(&self, other: &Costs) -> f64 {
        self.0.iter().zip(&other.0).map(|(a, b)| a * b).sum()
    }
}

impl Limits {
    pub const NONE: Limits = PerCost([None; 3]);

    /// Whether every bounded cost is within its limit, by the one rule every engine shares
    /// (`budget::within`).
    pub fn admit(&self, costs: &Costs) -> bool {
        self.iter()
            .all(|(k, l)| l.is_none_or(|l| crate::problem::budget::within(costs[k], l)))
    }

    /// The bounded costs with their limits, in [`CostKind::ALL`] order.
    pub fn bounded(&self) -> impl Iterator<Item = (CostKind, f64)> + '_ {
        self.iter().filter_map(|(k, l)| l.map(|l| (k, l)))
    }

    /// The limits as amounts, unbounded costs at 0 (what multipliers price).
    pub fn or_zero(&self) -> Costs {
        PerCost(self.0.map(|l| l.unwrap_or(0.0)))
    }
}

impl Add for Costs {
    type Output = Costs;
    fn add(self, rhs: Costs) -> Costs {
        PerCost::from_fn(|k| self[k] + rhs[k])
    }
}

impl Sub for Costs {
    type Output = Costs;
    fn sub(self, rhs: Costs) -> Costs {
        PerCost::from_fn(|k| self[k] - rhs[k])
    }
}

impl AddAssign for Costs {
    fn add_assign(&mut self, rhs: Costs) {
        *self = *self + rhs;
    }
}

impl std::iter::Sum for Costs {
    fn sum<I: Iterator<Item = Costs>>(iter: I) -> Costs {
        iter.fold(Costs::ZERO, Add::add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexing_follows_the_kind_not_the_position_it_was_written_in() {
        let c = Costs::from_fn(|k| match k {
            CostKind::Size => 1.0,
            CostKind::Bops => 20.0,
            CostKind::Latency => 300.0,
        });
        assert_eq!(
            (c[CostKind::Size], c[CostKind::Bops], c[CostKind::Latency]),
            (1.0, 20.0, 300.0)
        );
        let kinds: Vec<CostKind> = c.iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, CostKind::ALL);
        let d = c + c - Costs::from_fn(|_| 1.0);
        assert_eq!(d, Costs::from_fn(|k| 2.0 * c[k] - 1.0));
        assert_eq!(c.dot(&d), 1.0 + 20.0 * 39.0 + 300.0 * 599.0);
    }

    #[test]
    fn limits_admit_exactly_at_the_bound_and_ignore_unbounded_costs() {
        let mut limits = Limits::NONE;
        limits[CostKind::Bops] = Some(100.0);
        let at = |bops: f64, others: f64| {
            Costs::from_fn(|k| if k == CostKind::Bops { bops } else { others })
        };
        assert!(limits.admit(&at(100.0, 1e300)));
        assert!(limits.admit(&at(100.0 * (1.0 + 0.5e-12), 0.0)));
        assert!(!limits.admit(&at(100.0 * (1.0 + 2e-12), 0.0)));
        assert_eq!(limits.or_zero(), at(100.0, 0.0));
    }
}
