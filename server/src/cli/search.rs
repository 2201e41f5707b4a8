//! `bitplan search`: the measured Pareto front within an evaluation budget. Plans, measures the
//! candidates with ONNX Runtime, refits the objective to what was measured, and plans again
//! (`planner::solve::search`).

use super::RuntimeArgs;
use super::{check_batch_size, load_data, load_manifest, load_model, read, Failure};
use crate::output::Format;
use crate::search::{document, predicted, Axis, Measured, Method, Metric, PlannedOn, SearchBody};
use clap::Args;
use planner::eval::evaluator::Metrics;
use planner::{Budgets, Halt};
use std::collections::HashMap;
use std::path::PathBuf;

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
    /// What the search plans on: output (the single-layer runs' output changes added up, from a
    /// forward-only pass over --data first) or additive (the manifest's objective).
    #[arg(long, value_enum, default_value = "output")]
    objective: PlannedOn,
    #[arg(long, default_value_t = planner::eval::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

pub(super) fn run(args: SearchArgs) -> Result<u8, Failure> {
    let manifest = load_manifest(&args.manifest)?;
    let device = match &args.device {
        Some(p) => Some(
            serde_json::from_str(&read(p, "device profile")?)
                .map_err(|e| Failure::invalid(format!("{}: {e}", p.display())))?,
        ),
        None => None,
    };
    let body = SearchBody {
        pareto: args.pareto,
        budgets: Budgets {
            max_size_bytes: args.max_size_bytes,
            max_bops: args.max_bops,
            max_latency_ms: args.max_latency_ms,
            max_avg_bits: args.max_avg_bits,
        },
        device,
        evaluations: args.evaluations,
        per_round: args.per_round,
        metric: args.metric,
        method: args.method,
        objective: args.objective,
        batch_size: args.batch_size,
    };
    let (problem, mut request) = body
        .prepare(&manifest)
        .map_err(|e| as_flags(e, args.device.as_deref()))?;
    check_batch_size(args.batch_size)?;
    let model = load_model(&args.model)?;
    let data = load_data(&args.data)?;
    let backend = args.runtime.backend()?;
    let options = planner::eval::EvalOptions {
        batch_size: args.batch_size,
        quantize_activations: false,
    };
    let mut evaluator = planner::eval::Evaluator::new(&backend, &model, &manifest, data, options)?;
    request.output = body.output_model(&problem, &mut evaluator, &Halt::default())?;
    let mut metrics: HashMap<Vec<u8>, Metrics> = HashMap::new();
    let mut failure = None;
    let found = body.run(
        &problem,
        &request,
        &[],
        &mut |c| {
            let m = evaluator.evaluate(&c.bits)?;
            let loss = args.metric.loss(&Measured::from(&m));
            metrics.insert(c.bits.clone(), m);
            loss.map_err(|message| {
                failure = Some(Failure::invalid(format!("--metric: {message}")));
                planner::Error::Runtime(message)
            })
        },
        &Halt::default(),
    );
    if let Some(f) = failure {
        return Err(f);
    }
    let found = found?;
    match args.format {
        Format::Json => {
            let measured = metrics
                .iter()
                .map(|(b, m)| (b.clone(), Measured::from(m)))
                .collect();
            let predicted = predicted(&problem, &request, &found, &Halt::default())?;
            let doc = document(
                &problem,
                &found,
                &measured,
                args.pareto,
                args.method,
                &predicted,
                None,
            );
            println!("{}", serde_json::to_string_pretty(&doc).expect("JSON"));
        }
        Format::Table | Format::Csv => print!("{}", table(&found, &metrics, args.format)),
    }
    Ok(0)
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
            "# {} evaluations in {} rounds ({}); fit per round (spearman, mae, measured/predicted): {}\n",
            found.evaluations,
            found.rounds.len(),
            found.stopped,
            found
                .rounds
                .iter()
                .map(|r| format!(
                    "({}, {:.3e}, {})",
                    r.fit.spearman.map_or("-".into(), |s| format!("{s:.2}")),
                    r.fit.mae,
                    r.fit.ratio.map_or("-".into(), |q| format!("{q:.2}"))
                ))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    out
}

/// A search request's error as this command's flags (`--max-avg-bits: …`), a device's fields as
/// its file's (`DEVICE.json: roofline: …`).
pub(super) fn as_flags(e: crate::error::ApiError, device: Option<&std::path::Path>) -> Failure {
    let device = device.map(|p| p.display().to_string());
    let lines: Vec<String> = e
        .fields
        .iter()
        .map(|f| match (f.path.strip_prefix("device"), &device) {
            (Some(rest), Some(file)) => {
                format!("{file}: {}: {}", rest.trim_start_matches('.'), f.reason)
            }
            _ => format!(
                "--{}: {}",
                f.path.trim_start_matches("budgets.").replace('_', "-"),
                f.reason
            ),
        })
        .collect();
    Failure::invalid(if lines.is_empty() {
        e.message
    } else {
        lines.join("\n")
    })
}
