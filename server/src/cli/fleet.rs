//! `bitplan fleet`: every device of a fleet planned, optionally with the chosen configurations
//! measured and gated on accuracy.

use super::{
    in_file, load_data, load_manifest, load_model, read, Failure, GapArgs, RuntimeArgs,
    EXIT_INFEASIBLE,
};
use crate::output::{self, Format};
use clap::Args;
use planner::solve::fleet::FleetOptions;
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
    let plan = planner::solve::fleet::plan_fleet(&manifest, &fleet, &options)
        .map_err(in_file(&args.fleet))?;
    let mut doc = plan.to_json(&manifest);
    if let (Some(model), Some(data)) = (&args.model, &args.data) {
        let onnx = load_model(model)?;
        let set = load_data(data)?;
        if args.min_accuracy.is_some() && set.y.is_none() {
            return Err(Failure::invalid(format!(
                "{}: --min-accuracy needs labels (`y`) in the validation set",
                data.display()
            )));
        }
        let backend = args.runtime.backend()?;
        let options = planner::eval::EvalOptions {
            batch_size: args.batch_size.max(1),
            quantize_activations: false,
        };
        let mut evaluator =
            planner::eval::Evaluator::new(&backend, &onnx, &manifest, set, options)?;
        let mut measured = std::collections::HashMap::new();
        for bits in crate::fleet::distinct_configs(&plan) {
            let m = evaluator.evaluate(&bits)?;
            measured.insert(bits, crate::fleet::metrics_json(&m));
        }
        crate::fleet::attach_metrics(&mut doc, &plan, &measured, args.min_accuracy);
        doc["evaluated_configs"] = serde_json::json!(measured.len());
    }
    print!("{}", output::render_fleet(&doc, args.format));
    Ok(if crate::fleet::all_pass(&doc) {
        0
    } else {
        EXIT_INFEASIBLE
    })
}
