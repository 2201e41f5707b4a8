//! `bitplan search`: the measured Pareto front within an evaluation budget. Plans, measures the
//! candidates with ONNX Runtime, refits the objective to what was measured, and plans again
//! (`planner::solve::search`).

use super::RuntimeArgs;
use super::{check_batch_size, in_file, load_data, load_manifest, load_model, read, Failure};
use crate::output::Format;
use clap::{Args, ValueEnum};
use planner::eval::evaluator::Metrics;
use planner::solve::search::{greedy, proxy_only, search, SearchRequest};
use planner::{Budgets, CostKind, DeviceProfile, Halt, Problem};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;

/// The cost the measured front is drawn against.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Axis {
    Size,
    Bops,
    Latency,
    /// Average weight bits (weight storage over weights).
    #[value(alias = "avg_bits")]
    AvgBits,
}

impl Axis {
    fn cost(self) -> CostKind {
        match self {
            Axis::Size | Axis::AvgBits => CostKind::Size,
            Axis::Bops => CostKind::Bops,
            Axis::Latency => CostKind::Latency,
        }
    }
}

/// How the configurations to measure are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Method {
    /// Plan, measure, refit the objective to the measurements, plan again.
    Search,
    /// The exact front of the manifest's objective, the evaluations spread evenly along it.
    ProxyOnly,
    /// AIMET-style: lower the layer that costs least objective per unit of cost saved, one step
    /// at a time; the evaluations spread evenly along that path.
    Greedy,
}

/// What is measured, as a loss (lower is better).
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Metric {
    /// KL divergence from the fp32 model's outputs.
    Kl,
    /// 1 - top-1 accuracy on the labels `y`.
    Accuracy,
    /// 1 - top-1 agreement with the fp32 model.
    Agreement,
    /// 1 - mean cosine similarity with the fp32 model's outputs.
    Cosine,
}

impl Metric {
    fn loss(self, m: &Metrics) -> Result<f64, Failure> {
        Ok(match self {
            Metric::Kl => m.kl_fp32,
            Metric::Accuracy => {
                1.0 - m.accuracy.ok_or_else(|| {
                    Failure::invalid(
                        "--metric accuracy needs labels: the validation set has no `y`",
                    )
                })?
            }
            Metric::Agreement => 1.0 - m.agreement_fp32,
            Metric::Cosine => 1.0 - m.cosine_mean,
        })
    }
}

#[derive(Debug, Args)]
pub(super) struct SearchArgs {
    /// Supernet manifest (JSON); its layers link their ONNX weights with `weight`.
    manifest: PathBuf,
    /// The fp32 (or int8 QDQ) ONNX model.
    #[arg(long, value_name = "MODEL.onnx")]
    model: PathBuf,
    /// Validation set: .npz with `x` (or an array per model input) and optional labels `y`.
    #[arg(long, value_name = "VAL.npz")]
    data: PathBuf,
    /// The cost the measured front is drawn against.
    #[arg(long, value_enum)]
    pareto: Axis,
    /// Device profile (JSON), for latency.
    #[arg(long, value_name = "DEVICE.json")]
    device: Option<PathBuf>,
    #[arg(long, value_name = "N")]
    max_size_bytes: Option<f64>,
    #[arg(long, value_name = "N")]
    max_bops: Option<f64>,
    #[arg(long, value_name = "X")]
    max_avg_bits: Option<f64>,
    #[arg(long, value_name = "X", requires = "device")]
    max_latency_ms: Option<f64>,
    /// Measurements the search may make.
    #[arg(long, value_name = "N")]
    evaluations: usize,
    /// Measurements per round (default: a quarter of --evaluations, at least 2).
    #[arg(long, value_name = "N")]
    per_round: Option<usize>,
    #[arg(long, value_enum, default_value = "kl")]
    metric: Metric,
    /// How the configurations to measure are chosen (the baselines measure in one round).
    #[arg(long, value_enum, default_value = "search")]
    method: Method,
    #[arg(long, default_value_t = planner::eval::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

/// Most measurements one search may ask for.
const MAX_EVALUATIONS: usize = 10_000;

pub(super) fn run(args: SearchArgs) -> Result<u8, Failure> {
    let manifest = load_manifest(&args.manifest)?;
    let device = match &args.device {
        Some(p) => Some(DeviceProfile::from_json(&read(p, "device profile")?).map_err(in_file(p))?),
        None => None,
    };
    let problem = Problem::new(&manifest, device.as_ref())?;
    if args.evaluations == 0 || args.evaluations > MAX_EVALUATIONS {
        return Err(Failure::invalid(format!(
            "--evaluations must be within 1..={MAX_EVALUATIONS}"
        )));
    }
    if matches!(args.pareto, Axis::Latency) && device.is_none() {
        return Err(Failure::invalid("--pareto latency needs --device"));
    }
    check_batch_size(args.batch_size)?;
    let model = load_model(&args.model)?;
    let data = load_data(&args.data)?;
    let backend = args.runtime.backend()?;
    let options = planner::eval::EvalOptions {
        batch_size: args.batch_size,
        quantize_activations: false,
    };
    let mut evaluator = planner::eval::Evaluator::new(&backend, &model, &manifest, data, options)?;
    let request = SearchRequest {
        budgets: Budgets {
            max_size_bytes: args.max_size_bytes,
            max_bops: args.max_bops,
            max_latency_ms: args.max_latency_ms,
            max_avg_bits: args.max_avg_bits,
        },
        pareto: args.pareto.cost(),
        evaluations: args.evaluations,
        per_round: args.per_round,
    };
    let mut metrics: HashMap<Vec<u8>, Metrics> = HashMap::new();
    let mut failure = None;
    let mut measure = |c: &planner::Candidate| {
        let m = evaluator.evaluate(&c.bits)?;
        let loss = args.metric.loss(&m);
        metrics.insert(c.bits.clone(), m);
        loss.map_err(|e| {
            let message = e.message.clone();
            failure = Some(e);
            planner::Error::Runtime(message)
        })
    };
    let halt = Halt::default();
    let found = match args.method {
        Method::Search => search(&problem, &request, &[], &mut measure, &halt),
        Method::ProxyOnly => proxy_only(&problem, &request, &mut measure, &halt),
        Method::Greedy => greedy(&problem, &request, &mut measure, &halt),
    };
    if let Some(f) = failure {
        return Err(f);
    }
    let found = found?;
    let doc = document(&problem, &found, &metrics, args.pareto, args.method);
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&doc).expect("JSON")),
        Format::Table | Format::Csv => print!("{}", table(&found, &metrics, args.format)),
    }
    Ok(0)
}

/// The search as JSON: its rounds and the measured front, cheapest first.
fn document(
    problem: &Problem,
    found: &planner::solve::search::Search,
    metrics: &HashMap<Vec<u8>, Metrics>,
    axis: Axis,
    method: Method,
) -> Value {
    let front: Vec<Value> = found
        .front
        .iter()
        .map(|&i| {
            let p = &found.measured[i];
            let c = &p.candidate;
            let m = &metrics[&c.bits];
            json!({
                "bits": problem.manifest.bits_json(&c.bits),
                "size_bytes": c.size_bytes,
                "bops": c.bops,
                "avg_bits": c.avg_bits,
                "latency_ms": c.latency_ms,
                "predicted": {"loss": p.predicted, "round": p.round},
                "measured": {
                    "loss": p.loss,
                    "kl_fp32": m.kl_fp32,
                    "agreement_fp32": m.agreement_fp32,
                    "accuracy": m.accuracy,
                    "cosine_mean": m.cosine_mean,
                },
            })
        })
        .collect();
    json!({
        "status": "done",
        "method": method.to_possible_value().expect("named").get_name().replace('-', "_"),
        "pareto": axis.to_possible_value().expect("named").get_name().replace('-', "_"),
        "stopped": found.stopped,
        "evaluations": found.evaluations,
        "reused": found.reused,
        "rounds": found.rounds.iter().map(|r| json!({
            "evaluated": r.evaluated,
            "fit": {"spearman": r.fit.spearman, "mae": r.fit.mae},
            "front": r.front,
            "improved": r.improved,
        })).collect::<Vec<_>>(),
        "front": front,
    })
}

fn table(
    found: &planner::solve::search::Search,
    metrics: &HashMap<Vec<u8>, Metrics>,
    format: Format,
) -> String {
    let mut out = String::new();
    let sep = if matches!(format, Format::Csv) {
        ","
    } else {
        "  "
    };
    out.push_str(
        &[
            "avg_bits",
            "size_bytes",
            "loss",
            "kl_fp32",
            "agreement_fp32",
            "accuracy",
            "round",
            "bits",
        ]
        .join(sep),
    );
    out.push('\n');
    for &i in &found.front {
        let p = &found.measured[i];
        let m = &metrics[&p.candidate.bits];
        let bits: String = p
            .candidate
            .bits
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(if matches!(format, Format::Csv) {
                " "
            } else {
                ""
            });
        out.push_str(
            &[
                format!("{:.3}", p.candidate.avg_bits),
                format!("{:.0}", p.candidate.size_bytes),
                format!("{:.6}", p.loss),
                format!("{:.6}", m.kl_fp32),
                format!("{:.4}", m.agreement_fp32),
                m.accuracy.map_or("-".into(), |a| format!("{a:.4}")),
                p.round.to_string(),
                bits,
            ]
            .join(sep),
        );
        out.push('\n');
    }
    if matches!(format, Format::Table) {
        out.push_str(&format!(
            "# {} evaluations in {} rounds ({}); fit per round (spearman, mae): {}\n",
            found.evaluations,
            found.rounds.len(),
            found.stopped,
            found
                .rounds
                .iter()
                .map(|r| format!(
                    "({}, {:.3e})",
                    r.fit.spearman.map_or("-".into(), |s| format!("{s:.2}")),
                    r.fit.mae
                ))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    out
}
