//! `bitplan plan` and `bitplan hasb`: planning from a manifest (and a device profile) alone,
//! with no model or validation set.

use super::{in_file, load_manifest, read, Failure, GapArgs, EXIT_INFEASIBLE};
use crate::output::{self, Format};
use clap::{Args, ValueEnum};
use planner::{
    Budgets, CostKind, DeviceProfile, Engine, HasbParams, PlanRequest, PlanStatus, Problem, Sweep,
};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CostArg {
    Size,
    Bops,
    Latency,
}

impl From<CostArg> for CostKind {
    fn from(c: CostArg) -> CostKind {
        match c {
            CostArg::Size => CostKind::Size,
            CostArg::Bops => CostKind::Bops,
            CostArg::Latency => CostKind::Latency,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PoolArg {
    /// The paper's pool: force each layer (tie group) to each other bit-width and re-solve.
    Paper,
    /// Solve at evenly spaced budgets of one cost (see --sweep-cost, --sweep-points).
    Sweep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EngineArg {
    Auto,
    Highs,
    Knapsack,
    Core,
}

#[derive(Debug, Args)]
pub(super) struct PlanArgs {
    /// Supernet manifest (JSON).
    manifest: PathBuf,
    /// Budget on weight storage, bytes.
    #[arg(long, value_name = "N")]
    max_size_bytes: Option<f64>,
    /// Budget on bit-operations (MACs x weight bits x activation bits).
    #[arg(long, value_name = "N")]
    max_bops: Option<f64>,
    /// Budget on weight bits averaged over all weights.
    #[arg(long, value_name = "X")]
    max_avg_bits: Option<f64>,
    /// Device profile (JSON): a per-layer latency table or a roofline.
    #[arg(long, value_name = "DEVICE.json")]
    device: Option<PathBuf>,
    /// Budget on device latency, milliseconds (needs --device).
    #[arg(long, value_name = "X", requires = "device")]
    max_latency_ms: Option<f64>,
    /// Enumerate the exact Pareto front of Omega against this cost, under the other budgets.
    #[arg(long, value_enum, value_name = "COST")]
    pareto: Option<CostArg>,
    /// Keep N front points spread evenly along the cost.
    #[arg(long, value_name = "N", requires = "pareto")]
    points: Option<usize>,
    /// Add a candidate pool (repeatable).
    #[arg(long, value_enum, value_name = "POOL")]
    pool: Vec<PoolArg>,
    /// Cost swept by --pool sweep (default: the --pareto cost, else size).
    #[arg(long, value_enum, value_name = "COST")]
    sweep_cost: Option<CostArg>,
    /// Number of budgets in a sweep.
    #[arg(long, value_name = "N", default_value_t = 10)]
    sweep_points: usize,
    /// Time limit of each ILP solve, seconds.
    #[arg(long, value_name = "S", default_value_t = planner::DEFAULT_TIME_LIMIT_S)]
    time_limit_s: f64,
    #[command(flatten)]
    gap: GapArgs,
    /// Solver for single solves: auto (each group's least Omega with no budget; with one, the
    /// knapsack DP up to 64 groups and the expanding-core DP beyond; with more, HiGHS), highs,
    /// knapsack, or core (the expanding-core DP for one budget).
    #[arg(long, value_enum, default_value = "auto")]
    engine: EngineArg,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(Debug, Args)]
pub(super) struct HasbArgs {
    /// Supernet manifest (JSON).
    manifest: PathBuf,
    /// Width of each layer's preference around its sensitivity (fraction of the bit range).
    #[arg(long, default_value_t = HasbParams::default().sigma)]
    sigma: f64,
    /// Probability mass spread uniformly over every allowed bit.
    #[arg(long, default_value_t = HasbParams::default().floor)]
    floor: f64,
}

pub(super) fn plan(args: PlanArgs) -> Result<u8, Failure> {
    let manifest = load_manifest(&args.manifest)?;
    let device = match &args.device {
        Some(p) => Some(DeviceProfile::from_json(&read(p, "device profile")?).map_err(in_file(p))?),
        None => None,
    };
    let problem = Problem::new(&manifest, device.as_ref())?;
    let sweep_cost = args
        .sweep_cost
        .or(args.pareto)
        .map_or(CostKind::Size, CostKind::from);
    let request = PlanRequest {
        budgets: Budgets {
            max_size_bytes: args.max_size_bytes,
            max_bops: args.max_bops,
            max_latency_ms: args.max_latency_ms,
            max_avg_bits: args.max_avg_bits,
        },
        pareto: args.pareto.map(CostKind::from),
        points: args.points,
        paper_pool: args.pool.contains(&PoolArg::Paper),
        sweep: args.pool.contains(&PoolArg::Sweep).then_some(Sweep {
            cost: sweep_cost,
            points: args.sweep_points,
        }),
        time_limit_s: args.time_limit_s,
        mip_gap: args.gap.mip_gap,
        engine: match args.engine {
            EngineArg::Auto => Engine::Auto,
            EngineArg::Highs => Engine::Highs,
            EngineArg::Knapsack => Engine::Knapsack,
            EngineArg::Core => Engine::Core,
        },
    };
    let result = planner::plan(&problem, &request)?;
    print!("{}", output::render_plan(&problem, &result, args.format));
    Ok(if result.status == PlanStatus::Infeasible {
        EXIT_INFEASIBLE
    } else {
        0
    })
}

pub(super) fn hasb(args: HasbArgs) -> Result<u8, Failure> {
    if !(args.sigma > 0.0 && args.sigma.is_finite()) {
        return Err(Failure::invalid(format!(
            "--sigma must be positive, not {}",
            args.sigma
        )));
    }
    if !(0.0..=1.0).contains(&args.floor) {
        return Err(Failure::invalid(format!(
            "--floor must be within 0..=1, not {}",
            args.floor
        )));
    }
    let manifest = load_manifest(&args.manifest)?;
    let probs = planner::sampling_probabilities(
        &manifest,
        planner::HasbParams {
            sigma: args.sigma,
            floor: args.floor,
        },
    )?;
    let doc: serde_json::Map<String, serde_json::Value> = probs
        .iter()
        .map(|lp| {
            let p: serde_json::Map<String, serde_json::Value> = lp
                .probabilities
                .iter()
                .map(|(b, p)| (b.to_string(), serde_json::json!(p)))
                .collect();
            (
                lp.layer.clone(),
                serde_json::json!({"sensitivity": lp.sensitivity, "probabilities": p}),
            )
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&doc).expect("JSON"));
    Ok(0)
}
