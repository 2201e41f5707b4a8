//! Fleet plans around the planner's `plan_fleet`: the service's fleet-plan request, measured
//! metrics for each distinct chosen configuration (measured once however many devices share it),
//! the accuracy gate, and the gate on the measured front (a search, then each device's best
//! measured configuration). Shared by `bitplan fleet`, the API and the service's fleet-plan jobs.

use crate::search::{Axis, Method, Metric, PlannedOn, SearchBody};
use planner::solve::fleet::{Fleet, FleetOptions, FleetPlan};
use planner::solve::search::Search;
use planner::Manifest;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;

/// The body of `POST /v1/supernets/{id}/fleet-plans`, stored as the plan's options.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetPlanBody {
    pub fleet_id: String,
    /// Measure each device's choice on the supernet's validation set.
    #[serde(default)]
    pub evaluate: bool,
    /// Gate: a device below this accuracy fails (implies `evaluate`).
    #[serde(default)]
    pub min_accuracy: Option<f64>,
    #[serde(default = "default_neighbours")]
    pub neighbours: usize,
    #[serde(default = "default_step")]
    pub step: f64,
    #[serde(default)]
    pub time_limit_s: Option<f64>,
    #[serde(default = "default_neighbour_limit")]
    pub neighbour_time_limit_s: f64,
    #[serde(default)]
    pub mip_gap: f64,
    #[serde(default = "crate::planning::default_batch_size")]
    pub batch_size: usize,
    /// Gate on the measured front: search it (the devices' planned choices measured first and
    /// reused), then give each device the measured configuration of least loss within its
    /// budgets.
    #[serde(default)]
    pub search: bool,
    /// Measurements the search may make.
    #[serde(default = "default_search_evaluations")]
    pub evaluations: usize,
    /// What the search minimises.
    #[serde(default)]
    pub metric: Metric,
}

/// Measurements a fleet's search makes unless asked otherwise.
pub const DEFAULT_SEARCH_EVALUATIONS: usize = 40;

fn default_search_evaluations() -> usize {
    DEFAULT_SEARCH_EVALUATIONS
}

fn default_neighbours() -> usize {
    FleetOptions::default().neighbours
}
fn default_step() -> f64 {
    FleetOptions::default().step
}
fn default_neighbour_limit() -> f64 {
    FleetOptions::default().neighbour_time_limit_s
}

impl FleetPlanBody {
    pub fn options(&self, max_time_s: f64) -> FleetOptions {
        FleetOptions {
            neighbours: self.neighbours,
            step: self.step,
            time_limit_s: self
                .time_limit_s
                .unwrap_or(crate::planning::default_time_limit_s(max_time_s)),
            neighbour_time_limit_s: self.neighbour_time_limit_s,
            mip_gap: self.mip_gap,
        }
    }

    pub fn measures(&self) -> bool {
        self.evaluate || self.min_accuracy.is_some() || self.search
    }
}

/// The search a fleet gates on: the network's measured front against size under no budget of
/// its own (each device's budgets then choose from it).
pub fn fleet_search(evaluations: usize, metric: Metric, batch_size: usize) -> SearchBody {
    SearchBody {
        pareto: Axis::Size,
        budgets: planner::Budgets::default(),
        device: None,
        evaluations,
        per_round: None,
        metric,
        method: Method::Search,
        objective: PlannedOn::Output,
        batch_size,
    }
}

/// Gives each device of `plan` the measured configuration of least loss it runs within its
/// budgets (`measured`: bits and loss, in a fixed order, so ties do not depend on a map's);
/// a device none fits keeps its plan. Returns each device's planned bits (JSON by layer name).
pub fn choose_measured(
    manifest: &Manifest,
    fleet: &Fleet,
    plan: &mut FleetPlan,
    measured: &[(Vec<u8>, f64)],
) -> planner::Result<Vec<Option<Value>>> {
    let choices = planner::solve::fleet::best_measured(manifest, fleet, measured)?;
    let mut planned = Vec::new();
    for (device, choice) in plan.devices.iter_mut().zip(choices) {
        planned.push(device.best.as_ref().map(|c| manifest.bits_json(&c.bits)));
        if let Some(choice) = choice {
            device.best = Some(choice.candidate);
        }
    }
    Ok(planned)
}

/// Marks each device row of a fleet document with what chose its configuration (`plan` or
/// `search`) and its planned bits, and adds the search's summary.
pub fn mark_search(doc: &mut Value, planned: Vec<Option<Value>>, metric: Metric, found: &Search) {
    let rows = doc["devices"].as_array_mut().expect("devices");
    for (row, planned) in rows.iter_mut().zip(planned) {
        row["chosen_by"] = match (&planned, row["bits"].is_null()) {
            (_, true) => Value::Null,
            (Some(p), false) if *p == row["bits"] => json!("plan"),
            _ => json!("search"),
        };
        row["planned_bits"] = planned.unwrap_or(Value::Null);
    }
    doc["search"] = json!({
        "metric": metric,
        "evaluations": found.evaluations,
        "reused": found.reused,
        "rounds": found.rounds.len(),
        "stopped": found.stopped,
        "measured_front": found.front.len(),
    });
}

/// The distinct bit configurations chosen for the fleet's devices, in first-seen order.
pub fn distinct_configs(plan: &FleetPlan) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for d in &plan.devices {
        if let Some(c) = &d.best {
            if !out.contains(&c.bits) {
                out.push(c.bits.clone());
            }
        }
    }
    out
}

/// Puts each device's measured metrics (by its configuration) into the fleet document, and,
/// with a gate, whether its accuracy meets it. The document's rows are in `plan`'s device order.
pub fn attach_metrics(
    doc: &mut Value,
    plan: &FleetPlan,
    metrics: &HashMap<Vec<u8>, Value>,
    min_accuracy: Option<f64>,
) {
    let rows = doc["devices"].as_array_mut().expect("devices");
    for (row, d) in rows.iter_mut().zip(&plan.devices) {
        let m = d.best.as_ref().and_then(|c| metrics.get(&c.bits)).cloned();
        let gate = match (min_accuracy, &m) {
            (Some(min), Some(m)) => json!(m["accuracy"].as_f64().is_some_and(|a| a >= min)),
            (Some(_), None) => json!(false),
            (None, _) => Value::Null,
        };
        row["metrics"] = m.unwrap_or(Value::Null);
        row["meets_gate"] = gate;
    }
    doc["min_accuracy"] = json!(min_accuracy);
}

/// Whether every device has a plan and meets the gate (when there is one).
pub fn all_pass(doc: &Value) -> bool {
    doc["devices"].as_array().is_some_and(|rows| {
        rows.iter().all(|r| {
            r["status"] != "infeasible" && r["status"] != "unsupported" && r["meets_gate"] != false
        })
    })
}

/// A measurement as the service reports it (`Metrics` in openapi.yaml, without `evaluated_at`),
/// so that `bitplan fleet --format json` and the service's fleet tables carry the same keys.
pub fn metrics_json(m: &planner::eval::Metrics) -> Value {
    json!({
        "accuracy": m.accuracy,
        "agreement_fp32": m.agreement_fp32,
        "kl_fp32": m.kl_fp32,
        "agreement_highest": m.agreement_highest,
        "kl_highest": m.kl_highest,
        "sqnr_db": m.sqnr_db.is_finite().then_some(m.sqnr_db),
        "cosine_mean": m.cosine_mean.is_finite().then_some(m.cosine_mean),
        "cosine_min": m.cosine_min.is_finite().then_some(m.cosine_min),
        "rel_l2": m.rel_l2.is_finite().then_some(m.rel_l2),
        "latency_ms": m.latency_ms,
        "samples": m.samples,
        "batch_size": m.batch_size,
        "quantize_activations": m.activations_quantized,
    })
}
