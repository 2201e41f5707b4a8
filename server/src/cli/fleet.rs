//! `bitplan fleet`: every device of a fleet planned, optionally with the chosen configurations
//! measured and gated on accuracy.

use super::{
    in_file, load_data, load_manifest, load_model, read, Failure, GapArgs, RuntimeArgs,
    EXIT_INFEASIBLE,
};
use crate::output::{self, Format};
use crate::search::{Measured, Metric};
use clap::Args;
use planner::eval::evaluator::Metrics;
use planner::solve::fleet::FleetOptions;
use planner::solve::search::Search;
use planner::Halt;
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub(super) struct FleetArgs {
    /// Supernet manifest (JSON).
    manifest: PathBuf,
    /// The fleet: {"name", "devices": [{name, latency_ms | roofline, budgets, weight_bits,
    /// activation_bits, high_bit_layers}]}.
    #[arg(long, value_name = "FLEET.json")]
    fleet: PathBuf,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Measure each chosen configuration and fail (exit 3) a device below this top-1 accuracy.
    #[arg(long, requires_all = ["model", "data"])]
    min_accuracy: Option<f64>,
    /// The ONNX model, to measure the chosen configurations.
    #[arg(long, value_name = "MODEL.onnx", requires = "data")]
    model: Option<PathBuf>,
    /// Validation set (.npz with `x`, or an array per model input, and labels `y`).
    #[arg(long, value_name = "VAL.npz", requires = "model")]
    data: Option<PathBuf>,
    /// Gate on the measured front: search it (`bitplan search`, --evaluations measurements on
    /// --model and --data, the devices' planned choices measured first and reused), then give
    /// each device the measured configuration of least loss it runs within its budgets.
    #[arg(long, requires_all = ["model", "data"])]
    search: bool,
    /// Measurements the search may make.
    #[arg(long, value_name = "N", default_value_t = crate::fleet::DEFAULT_SEARCH_EVALUATIONS, requires = "search")]
    evaluations: usize,
    /// What the search minimises.
    #[arg(long, value_enum, default_value = "kl", requires = "search")]
    metric: Metric,
    /// Optima shown at this many tighter and looser budgets around each device's choice.
    #[arg(long, default_value_t = FleetOptions::default().neighbours)]
    neighbours: usize,
    /// Step between those budgets, as a fraction of the device's budget.
    #[arg(long, default_value_t = FleetOptions::default().step)]
    step: f64,
    /// Time limit of each ILP solve for a device's choice, seconds.
    #[arg(long, default_value_t = FleetOptions::default().time_limit_s)]
    time_limit_s: f64,
    /// Time limit of each ILP solve for a neighbour, seconds (a neighbour stopped there reports
    /// its status and gap).
    #[arg(long, default_value_t = FleetOptions::default().neighbour_time_limit_s)]
    neighbour_time_limit_s: f64,
    #[command(flatten)]
    gap: GapArgs,
    #[arg(long, default_value_t = planner::eval::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub(super) fn fleet(args: FleetArgs) -> Result<u8, Failure> {
    let manifest = load_manifest(&args.manifest)?;
    let fleet = planner::solve::fleet::Fleet::from_json(&read(&args.fleet, "fleet")?)
        .map_err(in_file(&args.fleet))?;
    if let Some(a) = args.min_accuracy {
        if !(0.0..=1.0).contains(&a) {
            return Err(Failure::invalid(format!(
                "--min-accuracy must be within 0..=1, not {a}"
            )));
        }
    }
    let options = planner::solve::fleet::FleetOptions {
        neighbours: args.neighbours,
        step: args.step,
        time_limit_s: args.time_limit_s,
        neighbour_time_limit_s: args.neighbour_time_limit_s,
        mip_gap: args.gap.mip_gap,
    };
    options.check()?;
    let mut plan = planner::solve::fleet::plan_fleet(&manifest, &fleet, &options)
        .map_err(in_file(&args.fleet))?;
    let (Some(model), Some(data)) = (&args.model, &args.data) else {
        let doc = plan.to_json(&manifest);
        print!("{}", output::render_fleet(&doc, args.format));
        return Ok(exit_code(&doc));
    };
    let onnx = load_model(model)?;
    let set = load_data(data)?;
    if args.min_accuracy.is_some() && set.y.is_none() {
        return Err(Failure::invalid(format!(
            "{}: --min-accuracy needs labels (`y`) in the validation set",
            data.display()
        )));
    }
    let backend = args.runtime.backend()?;
    let eval_options = planner::eval::EvalOptions {
        batch_size: args.batch_size.max(1),
        quantize_activations: false,
    };
    let mut evaluator =
        planner::eval::Evaluator::new(&backend, &onnx, &manifest, set, eval_options)?;
    let mut metrics: HashMap<Vec<u8>, Metrics> = HashMap::new();
    for bits in crate::fleet::distinct_configs(&plan) {
        let m = evaluator.evaluate(&bits)?;
        metrics.insert(bits, m);
    }
    let searched = if args.search {
        Some(search_measured(
            &args,
            &manifest,
            &fleet,
            &mut plan,
            &mut evaluator,
            &mut metrics,
        )?)
    } else {
        None
    };
    let mut doc = plan.to_json(&manifest);
    let measured: HashMap<Vec<u8>, serde_json::Value> = metrics
        .iter()
        .map(|(bits, m)| (bits.clone(), crate::fleet::metrics_json(m)))
        .collect();
    crate::fleet::attach_metrics(&mut doc, &plan, &measured, args.min_accuracy);
    doc["evaluated_configs"] = json!(measured.len());
    if let Some((found, planned)) = searched {
        crate::fleet::mark_search(&mut doc, planned, args.metric, &found);
    }
    print!("{}", output::render_fleet(&doc, args.format));
    Ok(exit_code(&doc))
}

fn exit_code(doc: &serde_json::Value) -> u8 {
    if crate::fleet::all_pass(doc) {
        0
    } else {
        EXIT_INFEASIBLE
    }
}

/// `--search`: searches the measured front (the planned choices, measured already, reused),
/// then makes each device's choice in `plan` the least loss it runs within its budgets. Returns
/// the search and each device's planned bits (JSON, by layer name).
fn search_measured<B: planner::eval::Backend + Clone>(
    args: &FleetArgs,
    manifest: &planner::Manifest,
    fleet: &planner::solve::fleet::Fleet,
    plan: &mut planner::solve::fleet::FleetPlan,
    evaluator: &mut planner::eval::Evaluator<B>,
    metrics: &mut HashMap<Vec<u8>, Metrics>,
) -> Result<(Search, Vec<Option<serde_json::Value>>), Failure> {
    let body = crate::fleet::fleet_search(args.evaluations, args.metric, args.batch_size);
    let (problem, mut request) = body
        .prepare(manifest)
        .map_err(|e| super::search::as_flags(e, None))?;
    request.output = body.output_model(&problem, evaluator, &planner::Halt::default())?;
    let flagged = |message: String| Failure::invalid(format!("--metric: {message}"));
    // Every measurement and its loss, in the order of their bits, so that the search and the
    // ties between devices' choices do not depend on a hash map's order.
    let losses = |metrics: &HashMap<Vec<u8>, Metrics>| {
        let mut all = metrics
            .iter()
            .map(|(bits, m)| {
                let loss = args.metric.loss(&Measured::from(m)).map_err(flagged)?;
                Ok((bits.clone(), loss))
            })
            .collect::<Result<Vec<_>, Failure>>()?;
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok::<_, Failure>(all)
    };
    let prior = losses(metrics)?;
    let mut failure = None;
    let found = body.run(
        &problem,
        &request,
        &prior,
        &mut |c| {
            let m = evaluator.evaluate(&c.bits)?;
            let loss = args.metric.loss(&Measured::from(&m));
            metrics.insert(c.bits.clone(), m);
            loss.map_err(|message| {
                failure = Some(flagged(message.clone()));
                planner::Error::Runtime(message)
            })
        },
        &Halt::default(),
    );
    if let Some(f) = failure {
        return Err(f);
    }
    let found = found?;
    let planned = crate::fleet::choose_measured(manifest, fleet, plan, &losses(metrics)?)
        .map_err(in_file(&args.fleet))?;
    Ok((found, planned))
}
