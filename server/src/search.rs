//! Searches around the planner's `search`: the request (`bitplan search`'s flags and the body of
//! `POST /v1/supernets/{id}/searches`), the loss each metric makes of a measurement, and the
//! search's JSON document. Shared by the CLI, the API and the search job.

use crate::error::ApiError;
use crate::store::{bits_key, CandidateFields, NewPlan, PlanStatus};
use clap::ValueEnum;
use planner::solve::search::{OutputModel, Search, SearchRequest};
use planner::{Budgets, CostKind, DeviceProfile, Manifest, Problem};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

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

/// What the search plans on (`--objective`; the baselines plan on the manifest's objective).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlannedOn {
    /// The single-layer runs' output changes added up (a sensitivity pass on the data first,
    /// forward only, not counted as evaluations): sees layers whose errors cancel or compound.
    #[default]
    Output,
    /// A term per layer and width, from the manifest's objective.
    Additive,
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
    #[serde(default)]
    pub objective: PlannedOn,
    #[serde(default = "crate::planning::default_batch_size")]
    pub batch_size: usize,
}

/// A count of measurements to make: within `1..=MAX_EVALUATIONS` (422 naming `evaluations`).
pub fn check_evaluations(evaluations: usize) -> Result<(), ApiError> {
    if (1..=MAX_EVALUATIONS).contains(&evaluations) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "evaluations",
            format!("must be within 1..={MAX_EVALUATIONS}"),
        ))
    }
}

impl SearchBody {
    /// The problem and the planner's request, checked: 422 naming the field otherwise.
    pub fn prepare(&self, manifest: &Manifest) -> Result<(Problem, SearchRequest), ApiError> {
        check_evaluations(self.evaluations)?;
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
            output: None,
        };
        Ok((problem, request))
    }

    /// The output-space model a search plans on (method `search`, objective `output`): the
    /// sensitivity pass on `evaluator`'s data, each run's output change kept; `None` otherwise.
    pub fn output_model<B: planner::eval::Backend + Clone>(
        &self,
        problem: &Problem,
        evaluator: &mut planner::eval::Evaluator<B>,
        halt: &planner::Halt,
    ) -> planner::Result<Option<Arc<OutputModel>>> {
        if self.method != Method::Search || self.objective != PlannedOn::Output {
            return Ok(None);
        }
        OutputModel::check_size(problem)?;
        let changes = evaluator.output_changes(&problem.manifest, |_| {
            if halt.check().is_err() {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })?;
        halt.check()?;
        Ok(Some(Arc::new(OutputModel::new(problem, &changes)?)))
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

/// Points of the refitted objective's front a search document draws.
pub const PREDICTED_POINTS: usize = 400;

/// The exact front of the search's refitted objective under the request's budgets
/// ([`PREDICTED_POINTS`] of it, spread along the cost), with predicted losses.
pub fn predicted(
    problem: &Problem,
    request: &SearchRequest,
    found: &Search,
    halt: &planner::Halt,
) -> planner::Result<Vec<(Vec<usize>, f64)>> {
    planner::solve::search::predicted_front(
        problem,
        request,
        &found.objective,
        PREDICTED_POINTS,
        halt,
    )
}

/// The plan holding a search's points as candidates, and the candidate id of each configuration.
#[derive(Debug)]
pub struct SearchPlan {
    pub plan: NewPlan,
    pub ids: HashMap<Vec<u8>, String>,
}

impl SearchPlan {
    /// Every point the search measured or reused and every point of its predicted front, as one
    /// plan's candidates: `omega` is the refitted objective's predicted loss (in the metric's
    /// units), ranked by the search's cost. Sources: `search` (measured), `predicted` (on the
    /// refitted objective's exact front, its solve `optimal`).
    pub fn new(
        problem: &Problem,
        found: &Search,
        predicted: &[(Vec<usize>, f64)],
        body: &SearchBody,
        search_id: &str,
        supernet_id: &str,
    ) -> SearchPlan {
        let mut points: Vec<(Vec<usize>, Vec<&str>)> = Vec::new();
        let mut index: HashMap<Vec<usize>, usize> = HashMap::new();
        let measured = found.measured.iter().map(|m| (&m.picks, "search"));
        for (picks, source) in measured.chain(predicted.iter().map(|(p, _)| (p, "predicted"))) {
            match index.get(picks) {
                Some(&i) => points[i].1.push(source),
                None => {
                    index.insert(picks.clone(), points.len());
                    points.push((picks.clone(), vec![source]));
                }
            }
        }
        let axis = body.pareto.cost();
        let mut priced: Vec<_> = points
            .into_iter()
            .map(|(picks, sources)| {
                let omega = found.objective.predict(&picks);
                (problem.candidate(&picks), omega, sources)
            })
            .collect();
        priced.sort_by(|a, b| {
            a.0.cost(axis)
                .total_cmp(&b.0.cost(axis))
                .then(a.1.total_cmp(&b.1))
        });
        let mut ids = HashMap::new();
        let candidates = priced
            .into_iter()
            .enumerate()
            .map(|(i, (c, omega, sources))| {
                let id = crate::store::new_id("cand");
                ids.insert(c.bits.clone(), id.clone());
                let status = if sources.contains(&"predicted") {
                    "optimal"
                } else {
                    "measured"
                };
                CandidateFields {
                    id,
                    position: i as i64,
                    bits: bits_key(&c.bits),
                    omega,
                    size_bytes: c.size_bytes,
                    bops: c.bops,
                    avg_bits: c.avg_bits,
                    latency_ms: c.latency_ms,
                    sources: json!(sources).to_string(),
                    solve: json!({"status": status, "gap": null}).to_string(),
                }
            })
            .collect();
        let mut request = json!({
            "search_id": search_id,
            "pareto": axis.as_str(),
            "budgets": body.budgets,
        });
        if let Some(device) = &body.device {
            request["device"] = device.clone();
        }
        let result = json!({
            "status": "search",
            "sort_by": axis.as_str(),
            "solves": 0,
            "solve_time_ms": 0.0,
            "engine": "search",
            "objective": "search_refit",
            "proxy_layers": [],
            "warnings": [],
            "infeasible": null,
        });
        SearchPlan {
            plan: NewPlan {
                id: crate::store::new_id("plan"),
                supernet_id: supernet_id.to_string(),
                request: request.to_string(),
                status: PlanStatus::Ready,
                result: result.to_string(),
                created_at: crate::store::now_ms(),
                candidates,
            },
            ids,
        }
    }
}

/// A configuration's bits (by layer name) and predicted costs, with its candidate's id when the
/// search's points are stored as a plan.
fn configuration(problem: &Problem, c: &planner::Candidate, plan: Option<&SearchPlan>) -> Value {
    let mut v = json!({
        "bits": problem.manifest.bits_json(&c.bits),
        "size_bytes": c.size_bytes,
        "bops": c.bops,
        "avg_bits": c.avg_bits,
        "latency_ms": c.latency_ms,
    });
    if let Some(plan) = plan {
        v["candidate_id"] = json!(plan.ids.get(&c.bits));
    }
    v
}

/// The search as JSON: its rounds, the measured front (cheapest first), every point it measured
/// or reused (`points`, with what was predicted before it was measured), and the front its
/// refitted objective predicts (`predicted_front`, from [`predicted`]). `measured` holds what each
/// front point measured; `plan`, the plan holding the points as candidates (`plan_id` and each
/// point's `candidate_id`).
pub fn document(
    problem: &Problem,
    found: &Search,
    measured: &HashMap<Vec<u8>, Measured>,
    axis: Axis,
    method: Method,
    predicted: &[(Vec<usize>, f64)],
    plan: Option<&SearchPlan>,
) -> Value {
    let front: Vec<Value> = found
        .front
        .iter()
        .map(|&i| {
            let p = &found.measured[i];
            let m = measured.get(&p.candidate.bits);
            let mut v = configuration(problem, &p.candidate, plan);
            v["predicted"] = json!({"loss": p.predicted, "round": p.round});
            v["measured"] = json!({
                "loss": p.loss,
                "kl_fp32": m.map(|m| m.kl_fp32),
                "agreement_fp32": m.map(|m| m.agreement_fp32),
                "accuracy": m.and_then(|m| m.accuracy),
                "cosine_mean": m.and_then(|m| m.cosine_mean),
            });
            v
        })
        .collect();
    let points: Vec<Value> = found
        .measured
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut v = configuration(problem, &p.candidate, plan);
            v["predicted"] = json!(p.predicted);
            v["loss"] = json!(p.loss);
            v["round"] = json!(p.round);
            v["on_front"] = json!(found.front.contains(&i));
            v
        })
        .collect();
    let predicted_front: Vec<Value> = predicted
        .iter()
        .map(|(picks, loss)| {
            let mut v = configuration(problem, &problem.candidate(picks), plan);
            v["predicted"] = json!(loss);
            v
        })
        .collect();
    json!({
        "status": "done",
        "method": name(method),
        "pareto": name(axis),
        "stopped": found.stopped,
        "evaluations": found.evaluations,
        "reused": found.reused,
        "model": found.objective.model().as_str(),
        "interaction": found.objective.interaction(),
        "rounds": found.rounds.iter().map(|r| json!({
            "evaluated": r.evaluated,
            "fit": {"spearman": r.fit.spearman, "mae": r.fit.mae, "ratio": r.fit.ratio},
            "front": r.front,
            "improved": r.improved,
            "model": r.model.as_str(),
        })).collect::<Vec<_>>(),
        "front": front,
        "points": points,
        "predicted_front": predicted_front,
        "plan_id": plan.map(|p| &p.plan.id),
    })
}
