//! Fleet plans around the planner's `plan_fleet`: the service's fleet-plan request, measured
//! metrics for each distinct chosen configuration (measured once however many devices share it)
//! and the accuracy gate. Shared by `bitplan fleet`, the API and the service's fleet-plan jobs.

use planner::solve::fleet::{FleetOptions, FleetPlan};
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
        self.evaluate || self.min_accuracy.is_some()
    }
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
