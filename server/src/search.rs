//! Searches around the planner's `search`: the request (`bitplan search`'s flags and the body of
//! `POST /v1/supernets/{id}/searches`), the loss each metric makes of a measurement, and the
//! search's JSON document. Shared by the CLI, the API and the search job.

use crate::error::ApiError;
use clap::ValueEnum;
use planner::solve::search::{Search, SearchRequest};
use planner::{Budgets, CostKind, DeviceProfile, Manifest, Problem};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;

/// Most measurements one search may ask for.
pub const MAX_EVALUATIONS: usize = 10_000;

/// The cost the measured front is drawn against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Axis {
    Size,
    Bops,
    Latency,
    /// Average weight bits (weight storage over weights).
    #[value(alias = "avg_bits")]
    AvgBits,
}

impl Axis {
    pub fn cost(self) -> CostKind {
        match self {
            Axis::Size | Axis::AvgBits => CostKind::Size,
            Axis::Bops => CostKind::Bops,
            Axis::Latency => CostKind::Latency,
        }
    }
}

/// What is measured, as a loss (lower is better).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// KL divergence from the fp32 model's outputs.
    #[default]
    Kl,
    /// 1 - top-1 accuracy on the labels `y`.
    Accuracy,
    /// 1 - top-1 agreement with the fp32 model.
    Agreement,
    /// 1 - mean cosine similarity with the fp32 model's outputs.
    Cosine,
}

/// How the configurations to measure are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Plan, measure, refit the objective to the measurements, plan again.
    #[default]
    Search,
    /// The exact front of the manifest's objective, the evaluations spread evenly along it.
    ProxyOnly,
    /// AIMET-style: lower the layer that costs least objective per unit of cost saved, one step
    /// at a time; the evaluations spread evenly along that path.
    Greedy,
}

/// What a measurement said, as far as a search reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub kl_fp32: f64,
    pub agreement_fp32: f64,
    pub accuracy: Option<f64>,
    pub cosine_mean: Option<f64>,
}

impl From<&planner::eval::evaluator::Metrics> for Measured {
    fn from(m: &planner::eval::evaluator::Metrics) -> Measured {
        Measured {
            kl_fp32: m.kl_fp32,
            agreement_fp32: m.agreement_fp32,
            accuracy: m.accuracy,
            cosine_mean: Some(m.cosine_mean),
        }
    }
}

impl From<&crate::store::MetricsRow> for Measured {
    fn from(m: &crate::store::MetricsRow) -> Measured {
        Measured {
            kl_fp32: m.kl_fp32,
            agreement_fp32: m.agreement_fp32,
            accuracy: m.accuracy,
            cosine_mean: m.cosine_mean,
        }
    }
}

impl Metric {
    /// The loss of a measurement; an error says what the measurement lacks.
    pub fn loss(self, m: &Measured) -> Result<f64, String> {
        match self {
            Metric::Kl => Ok(m.kl_fp32),
            Metric::Accuracy => m.accuracy.map(|a| 1.0 - a).ok_or_else(|| {
                "the accuracy metric needs labels: the validation set has no `y`".to_string()
            }),
            Metric::Agreement => Ok(1.0 - m.agreement_fp32),
            Metric::Cosine => m
                .cosine_mean
                .map(|c| 1.0 - c)
                .ok_or_else(|| "the measurement has no cosine similarity".to_string()),
        }
    }
}

/// The body of `POST /v1/supernets/{id}/searches`, stored as the search's request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    pub pareto: Axis,
    #[serde(default)]
    pub budgets: Budgets,
    /// A device profile, for latency.
    #[serde(default)]
    pub device: Option<Value>,
    pub evaluations: usize,
    #[serde(default)]
    pub per_round: Option<usize>,
    #[serde(default)]
    pub metric: Metric,
    #[serde(default)]
    pub method: Method,
    #[serde(default = "crate::planning::default_batch_size")]
    pub batch_size: usize,
}

impl SearchBody {
    /// The problem and the planner's request, checked: 422 naming the field otherwise.
    pub fn prepare(&self, manifest: &Manifest) -> Result<(Problem, SearchRequest), ApiError> {
        if self.evaluations == 0 || self.evaluations > MAX_EVALUATIONS {
            return Err(ApiError::invalid(
                "evaluations",
                format!("must be within 1..={MAX_EVALUATIONS}"),
            ));
        }
        if self.per_round == Some(0) {
            return Err(ApiError::invalid("per_round", "must be at least 1"));
        }
        let device = match &self.device {
            Some(v) => Some(
                DeviceProfile::from_json(&v.to_string())
                    .map_err(|e| ApiError::from(e).under("device.").prefix_message("device"))?,
            ),
            None => None,
        };
        if self.pareto == Axis::Latency && device.is_none() {
            return Err(ApiError::invalid(
                "pareto",
                "a latency front needs a device profile (device)",
            ));
        }
        let problem = Problem::new(manifest, device.as_ref())?;
        let plan = planner::PlanRequest {
            budgets: self.budgets.clone(),
            ..planner::PlanRequest::default()
        };
        planner::validate_plan(&problem, &plan).map_err(crate::planning::under_budgets)?;
        let request = SearchRequest {
            budgets: self.budgets.clone(),
            pareto: self.pareto.cost(),
            evaluations: self.evaluations,
            per_round: self.per_round,
        };
        Ok((problem, request))
    }

    /// Runs the chosen method.
    pub fn run(
        &self,
        problem: &Problem,
        request: &SearchRequest,
        prior: &[(Vec<u8>, f64)],
        measure: &mut planner::solve::search::Measure<'_>,
        halt: &planner::Halt,
    ) -> planner::Result<Search> {
        use planner::solve::search::{greedy, proxy_only, search};
        match self.method {
            Method::Search => search(problem, request, prior, measure, halt),
            Method::ProxyOnly => proxy_only(problem, request, measure, halt),
            Method::Greedy => greedy(problem, request, measure, halt),
        }
    }
}

/// The name of a value as its flag and JSON spell it (`proxy_only`, `avg_bits`).
fn name(v: impl ValueEnum) -> String {
    v.to_possible_value()
        .expect("named")
        .get_name()
        .replace('-', "_")
}

/// The search as JSON: its rounds and the measured front, cheapest first. `measured` holds what
/// each front point measured.
pub fn document(
    problem: &Problem,
    found: &Search,
    measured: &HashMap<Vec<u8>, Measured>,
    axis: Axis,
    method: Method,
) -> Value {
    let front: Vec<Value> = found
        .front
        .iter()
        .map(|&i| {
            let p = &found.measured[i];
            let c = &p.candidate;
            let m = measured.get(&c.bits);
            json!({
                "bits": problem.manifest.bits_json(&c.bits),
                "size_bytes": c.size_bytes,
                "bops": c.bops,
                "avg_bits": c.avg_bits,
                "latency_ms": c.latency_ms,
                "predicted": {"loss": p.predicted, "round": p.round},
                "measured": {
                    "loss": p.loss,
                    "kl_fp32": m.map(|m| m.kl_fp32),
                    "agreement_fp32": m.map(|m| m.agreement_fp32),
                    "accuracy": m.and_then(|m| m.accuracy),
                    "cosine_mean": m.and_then(|m| m.cosine_mean),
                },
            })
        })
        .collect();
    json!({
        "status": "done",
        "method": name(method),
        "pareto": name(axis),
        "stopped": found.stopped,
        "evaluations": found.evaluations,
        "reused": found.reused,
        "rounds": found.rounds.iter().map(|r| json!({
            "evaluated": r.evaluated,
            "fit": {"spearman": r.fit.spearman, "mae": r.fit.mae},
            "front": r.front,
            "improved": r.improved,
            "model": r.model.as_str(),
        })).collect::<Vec<_>>(),
        "front": front,
    })
}
