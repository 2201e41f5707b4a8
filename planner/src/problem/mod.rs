//! The model of the problem: what a plan is asked (a [`Manifest`] of layers with their sizes,
//! MACs and sensitivities, a [`DeviceProfile`], [`Budgets`](crate::Budgets)) and what each choice costs, compiled
//! into a [`Problem`]. It solves nothing and runs no model.
//!
//! A [`Problem`] holds the objective and every cost of every choice, grouped by tie so each group
//! takes one bit-width.
//!
//! Objective (HAWQ-V3): `Omega_i(b) = (Tr(H_i) / n_i) * ||Q_b(W_i) - W_i||^2`. With a measured
//! perturbation the squared error is the measured one; without it the trace-only proxy models the
//! error of a uniform quantizer with step `2^(1-b)` on weights scaled to unit max-abs
//! (variance `step^2 / 12` per weight), so `||Q_b(W) - W||^2 ~ n * 4^-b / 3` and
//! `Omega_i(b) = Tr(H_i) * 4^-b / 3`. The proxy ranks bit-widths and layers correctly but is on a
//! different absolute scale than measured errors; plans say which layers used it. Traces that
//! cannot be told from zero are priced by `traces`' rule, never as free.
//!
//! With measured sensitivity (every layer's output divergence when it alone is at `b` bits, the
//! rest at full precision), `Omega_i(b)` is that divergence and traces are not used.

pub(crate) mod budget;
pub(crate) mod cost;
pub(crate) mod device;
pub(crate) mod fields;
pub(crate) mod manifest;
pub mod synth;
pub(crate) mod traces;

use crate::error::{Error, Result};
use cost::{CostKind, Costs};
use device::DeviceProfile;
use manifest::{common_choices, ActivationBits, Manifest};
use std::collections::BTreeMap;

/// One bit-width a group may take, with the group's summed objective and costs at it.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub bits: u8,
    pub omega: f64,
    /// Latency is 0 without a device.
    pub cost: Costs,
}

/// Layers that must share a bit-width (a tie group, or a single untied layer).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Tie label, or the layer's name for an untied layer.
    pub label: String,
    /// Indices into the manifest's layers.
    pub layers: Vec<usize>,
    /// Allowed bit-widths, highest first.
    pub choices: Vec<Choice>,
}

impl Group {
    pub(crate) fn min_cost(&self, k: CostKind) -> f64 {
        self.choices
            .iter()
            .map(|c| c.cost[k])
            .fold(f64::INFINITY, f64::min)
    }
    pub(crate) fn max_cost(&self, k: CostKind) -> f64 {
        self.choices
            .iter()
            .map(|c| c.cost[k])
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

/// A compiled planning problem.
#[derive(Debug, Clone)]
pub struct Problem {
    pub manifest: Manifest,
    pub device: Option<String>,
    pub groups: Vec<Group>,
    /// For each layer, the group it belongs to.
    pub layer_group: Vec<usize>,
}

/// The trace-only proxy of `Omega_i(b)` (see the module docs).
pub fn proxy_omega(hessian_trace: f64, bits: u8) -> f64 {
    hessian_trace * 0.25f64.powi(i32::from(bits)) / 3.0
}

/// `Omega_i(b)` for one layer: its measured sensitivity when the manifest has it, else the
/// Hessian-weighted error (measured perturbation, or the proxy) with the trace the manifest's
/// trust rule prices it at (`problem::traces`).
pub fn layer_omega(layer: &crate::Layer, bits: u8) -> f64 {
    if let Some(s) = &layer.sensitivity {
        return s[&bits];
    }
    match &layer.perturbation {
        Some(p) => layer.trace_per_param() * p[&bits],
        None => proxy_omega(layer.objective_trace, bits),
    }
}

impl Problem {
    /// Compiles a manifest (and a device, when latency matters) into group cost tables.
    /// Fails when the device cannot price some layer at some allowed bit-width, or when the
    /// manifest has no objective yet (structure only).
    pub fn new(manifest: &Manifest, device: Option<&DeviceProfile>) -> Result<Problem> {
        if !manifest.is_scored() {
            return Err(Error::invalid(
                "manifest",
                "layers",
                crate::problem::manifest::UNSCORED,
            ));
        }
        let mut by_tie: BTreeMap<&str, usize> = BTreeMap::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut labels: Vec<String> = Vec::new();
        let mut layer_group = Vec::with_capacity(manifest.layers.len());
        for (i, l) in manifest.layers.iter().enumerate() {
            let g = match &l.tie {
                Some(t) => *by_tie.entry(t.as_str()).or_insert_with(|| {
                    members.push(Vec::new());
                    labels.push(t.clone());
                    members.len() - 1
                }),
                None => {
                    members.push(Vec::new());
                    labels.push(l.name.clone());
                    members.len() - 1
                }
            };
            members[g].push(i);
            layer_group.push(g);
        }

        let mut groups = Vec::with_capacity(members.len());
        for (label, layers) in labels.into_iter().zip(members) {
            let mut choices = Vec::new();
            for bits in common_choices(&manifest.layers, &layers) {
                let mut c = Choice {
                    bits,
                    omega: 0.0,
                    cost: Costs::ZERO,
                };
                for &i in &layers {
                    let l = &manifest.layers[i];
                    let a_bits = match manifest.activation_bits {
                        ActivationBits::Same => bits,
                        ActivationBits::Fixed(a) => a,
                    };
                    c.omega += layer_omega(l, bits);
                    c.cost[CostKind::Size] += l.params as f64 * f64::from(bits) / 8.0;
                    c.cost[CostKind::Bops] += l.macs as f64 * f64::from(bits) * f64::from(a_bits);
                    if let Some(d) = device {
                        c.cost[CostKind::Latency] += d.layer_latency_ms(l, bits, a_bits)?;
                    }
                }
                choices.push(c);
            }
            groups.push(Group {
                label,
                layers,
                choices,
            });
        }
        Ok(Problem {
            manifest: manifest.clone(),
            device: device.map(|d| d.name.clone()),
            groups,
            layer_group,
        })
    }

    /// Whether latency can be priced (a device was given).
    pub fn has_latency(&self) -> bool {
        self.device.is_some()
    }

    /// Turns a choice index per group into a priced candidate.
    pub fn candidate(&self, picks: &[usize]) -> Candidate {
        debug_assert_eq!(picks.len(), self.groups.len());
        let mut omega = 0.0;
        let mut cost = Costs::ZERO;
        for (g, &p) in self.groups.iter().zip(picks) {
            let c = &g.choices[p];
            omega += c.omega;
            cost += c.cost;
        }
        let bits = self
            .layer_group
            .iter()
            .map(|&g| self.groups[g].choices[picks[g]].bits)
            .collect();
        let total_params = self.manifest.total_params() as f64;
        Candidate {
            bits,
            omega,
            size_bytes: cost[CostKind::Size],
            bops: cost[CostKind::Bops],
            avg_bits: cost[CostKind::Size] * 8.0 / total_params,
            latency_ms: self.has_latency().then_some(cost[CostKind::Latency]),
        }
    }

    /// Prices a bit-width per layer (in manifest order), checking ties, pins and allowed bits.
    pub fn candidate_from_bits(&self, bits: &[u8]) -> Result<Candidate> {
        Ok(self.candidate(&self.picks_from_bits(bits)?))
    }

    /// The choice per group of a bit-width per layer (in manifest order), checking ties, pins
    /// and allowed bits.
    pub fn picks_from_bits(&self, bits: &[u8]) -> Result<Vec<usize>> {
        if bits.len() != self.layer_group.len() {
            return Err(Error::invalid(
                "bit configuration",
                "",
                format!(
                    "{} bit-widths for {} layers",
                    bits.len(),
                    self.layer_group.len()
                ),
            ));
        }
        let mut picks = vec![usize::MAX; self.groups.len()];
        let mut errors = Vec::new();
        for (i, (&b, &g)) in bits.iter().zip(&self.layer_group).enumerate() {
            let name = &self.manifest.layers[i].name;
            match self.groups[g].choices.iter().position(|c| c.bits == b) {
                None => errors.push(crate::FieldError::new(
                    name.clone(),
                    format!(
                        "{b} bits is not allowed here (allowed: {:?})",
                        self.groups[g]
                            .choices
                            .iter()
                            .map(|c| c.bits)
                            .collect::<Vec<_>>()
                    ),
                )),
                Some(p) if picks[g] != usize::MAX && picks[g] != p => {
                    errors.push(crate::FieldError::new(
                        name.clone(),
                        format!(
                            "tied layers of group {:?} must share one bit-width",
                            self.groups[g].label
                        ),
                    ))
                }
                Some(p) => picks[g] = p,
            }
        }
        crate::Error::check("bit configuration", errors)?;
        Ok(picks)
    }

    /// Per group, the choices a solve may take: the one `fixed` names, else all of them.
    pub(crate) fn allowed(&self, fixed: &[Option<usize>]) -> Vec<Vec<usize>> {
        (0..self.groups.len())
            .map(|g| match fixed.get(g).copied().flatten() {
                Some(c) => vec![c],
                None => (0..self.groups[g].choices.len()).collect(),
            })
            .collect()
    }

    /// Sum over groups of the cheapest choice for cost `k` (ties and pins only, no other budget).
    pub fn min_cost(&self, k: CostKind) -> f64 {
        self.groups.iter().map(|g| g.min_cost(k)).sum()
    }

    /// Sum over groups of the most expensive choice for cost `k`.
    pub fn max_cost(&self, k: CostKind) -> f64 {
        self.groups.iter().map(|g| g.max_cost(k)).sum()
    }
}

/// A bit-width per layer with its predicted objective and costs.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Bit-width per layer, in manifest order.
    pub bits: Vec<u8>,
    pub omega: f64,
    pub size_bytes: f64,
    pub bops: f64,
    /// Weight bits averaged over all weights.
    pub avg_bits: f64,
    /// Present when a device was given.
    pub latency_ms: Option<f64>,
}

impl Candidate {
    /// The value of cost `k` (latency is 0 without a device).
    pub fn cost(&self, k: CostKind) -> f64 {
        match k {
            CostKind::Size => self.size_bytes,
            CostKind::Bops => self.bops,
            CostKind::Latency => self.latency_ms.unwrap_or(0.0),
        }
    }
}
