//! A fleet gated on what was measured: each device's best measured configuration under its
//! budgets, on the device's own costs (its latency model, its bit-widths, its high-bit layers).

use super::Fleet;
use crate::error::Result;
use crate::problem::budget::limits_of;
use crate::problem::manifest::Manifest;
use crate::problem::{Candidate, Problem};
use crate::solve::search::candidate_within;

/// A device's choice among measured configurations.
#[derive(Debug, Clone)]
pub struct MeasuredChoice {
    /// Index into the measurements given.
    pub index: usize,
    /// The configuration priced on the device.
    pub candidate: Candidate,
    pub loss: f64,
}

/// For each device of `fleet`, the measured configuration (a bit-width per layer of `manifest`,
/// and its loss, lower better) of least loss that the device can run within its budgets; `None`
/// for a device no measurement fits (or that cannot run the model). Ties go to the cheaper on
/// the device's primary cost, then to the first given.
pub fn best_measured(
    manifest: &Manifest,
    fleet: &Fleet,
    measured: &[(Vec<u8>, f64)],
) -> Result<Vec<Option<MeasuredChoice>>> {
    fleet.check(manifest)?;
    fleet
        .devices
        .iter()
        .map(|device| {
            let Ok(restricted) = device.restrict(manifest) else {
                return Ok(None);
            };
            let problem = Problem::new(&restricted, Some(&device.profile))?;
            let limits = limits_of(&device.budgets.bounds(&problem)?);
            let cost = device.primary_cost();
            let mut best: Option<MeasuredChoice> = None;
            for (index, (bits, loss)) in measured.iter().enumerate() {
                // A configuration the device cannot run (a width it lacks, a high-bit layer
                // lowered) is not its choice.
                let Ok(candidate) = problem.candidate_from_bits(bits) else {
                    continue;
                };
                if !loss.is_finite() || !candidate_within(&candidate, &limits) {
                    continue;
                }
                let better = best.as_ref().is_none_or(|b| {
                    loss.total_cmp(&b.loss)
                        .then(candidate.cost(cost).total_cmp(&b.candidate.cost(cost)))
                        .is_lt()
                });
                if better {
                    best = Some(MeasuredChoice {
                        index,
                        candidate,
                        loss: *loss,
                    });
                }
            }
            Ok(best)
        })
        .collect()
}
