//! Command-line interface. Exit codes: 0 success, 2 invalid input (message on stderr),
//! 3 infeasible budgets, 1 anything else.

use crate::output::{self, Format};
use clap::{Args, Parser, Subcommand, ValueEnum};
use planner::{
    Budgets, CostKind, DeviceProfile, Divergence, Engine, Manifest, PlanRequest, PlanStatus,
    Problem, Sweep,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit code for invalid input.
pub const EXIT_INVALID: u8 = 2;
/// Exit code for budgets no assignment can meet.
pub const EXIT_INFEASIBLE: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "bitplan",
    version,
    about = "Mixed-precision search and deployment planner for quantized supernets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Choose a bit-width per layer under budgets; optionally a Pareto front or a candidate pool.
    Plan(PlanArgs),
    /// Per-layer bit sampling probabilities for supernet training (Hessian-aware).
    Hasb(HasbArgs),
    /// Write a reproducible synthetic manifest (resnet18, resnet50, or random:N) to stdout.
    Synth(SynthArgs),
    /// Measure a candidate (a bit-width per layer) with ONNX Runtime on a validation set.
    Evaluate(EvaluateArgs),
    /// Fill the manifest's `perturbation` with ||Q_b(W)-W||^2 measured from the model's weights.
    Measure(MeasureArgs),
    /// Derive a manifest from an ONNX model (weights, MACs at an input shape) and Hessian traces.
    Manifest(ManifestArgs),
    /// Write a candidate as a deployable QDQ ONNX model (int8 weights + DequantizeLinear) and its
    /// bit configuration as JSON.
    Export(ExportArgs),
    /// Plan every device of a fleet (budgets, supported bits, latency model, high-bit layers);
    /// optionally measure the chosen configurations and gate them on accuracy.
    Fleet(FleetArgs),
    /// Run the service: REST API, job runner and SQLite store in a data directory.
    Serve(crate::serve::ServeArgs),
}

#[derive(Debug, Args)]
struct FleetArgs {
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
    #[arg(long, default_value_t = 2)]
    neighbours: usize,
    /// Step between those budgets, as a fraction of the device's budget.
    #[arg(long, default_value_t = 0.1)]
    step: f64,
    /// Time limit of each ILP solve for a device's choice, seconds.
    #[arg(long, default_value_t = planner::DEFAULT_TIME_LIMIT_S)]
    time_limit_s: f64,
    /// Time limit of each ILP solve for a neighbour, seconds (a neighbour stopped there reports
    /// its status and gap).
    #[arg(long, default_value_t = 0.05)]
    neighbour_time_limit_s: f64,
    #[command(flatten)]
    gap: GapArgs,
    #[arg(long, default_value_t = planner::eval::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

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
struct PlanArgs {
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
    /// Solver for single solves: auto (knapsack DP for <= 1 bounded cost, else HiGHS), highs, knapsack.
    #[arg(long, value_enum, default_value = "auto")]
    engine: EngineArg,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

/// How close to the optimum an ILP solve must prove its plan.
#[derive(Debug, Args)]
struct GapArgs {
    /// Relative gap at which each ILP solve may stop, in [0, 1): 0 proves every optimum; 1e-4
    /// accepts a plan proven within 0.01% of it (status within_gap).
    #[arg(
        long,
        value_name = "X",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    mip_gap: f64,
}

#[derive(Debug, Args)]
struct RuntimeArgs {
    /// The ONNX Runtime shared library (default: beside the executable, then .cache/onnxruntime-*/
    /// in the executable's folder or an ancestor, where scripts/setup leaves it).
    #[arg(long, env = "BITPLAN_ORT_LIB", value_name = "PATH")]
    ort_lib: Option<PathBuf>,
    /// Intra-op threads per inference session.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Debug, Args)]
struct EvaluateArgs {
    /// Supernet manifest (JSON); its layers link their ONNX weights with `weight`.
    manifest: PathBuf,
    /// The fp32 (or int8 QDQ) ONNX model.
    #[arg(long, value_name = "MODEL.onnx")]
    model: PathBuf,
    /// Validation set: .npz with `x` (or an array per model input, named like it) and optional
    /// integer labels `y`.
    #[arg(long, value_name = "VAL.npz")]
    data: PathBuf,
    /// Bit configuration: {"<layer>": bits, ...} (or a plan candidate with a `bits` object).
    #[arg(long, value_name = "BITS.json")]
    bits: PathBuf,
    #[arg(long, default_value_t = planner::eval::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    /// Also fake-quantize each planned layer's input activations at the manifest's
    /// activation_bits, with ranges calibrated on the validation set (min/max).
    #[arg(long)]
    quantize_activations: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(Debug, Args)]
struct ManifestArgs {
    /// The ONNX model.
    model: PathBuf,
    /// Traces: {"<layer|tensor|node>": trace} or {"<name>": {"hessian_trace": x}} (or
    /// hessian_trace_per_param, with an optional hessian_trace_stderr). Without traces and
    /// --data the manifest is structure only: it cannot be planned until its sensitivity is
    /// measured (here with --data, or by the service's sensitivity job).
    #[arg(long, value_name = "TRACES.json")]
    traces: Option<PathBuf>,
    /// Calibration set (.npz with `x`, or for a model with several inputs an array named like
    /// each; `y` labels): every layer gets a measured `sensitivity` (its output divergence alone
    /// at each bit-width, the rest fp32), the planner's objective; MACs are counted at its shapes.
    #[arg(long, value_name = "CALIB.npz")]
    data: Option<PathBuf>,
    /// The divergence sensitivity is measured in: kl (classifiers) or mse (relative output MSE).
    #[arg(long, value_enum, default_value = "kl")]
    metric: MetricArg,
    /// Samples per inference batch of the sensitivity pass.
    #[arg(long, default_value_t = planner::eval::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    /// The model output to score when it has several (default: the first); written into the
    /// manifest, so evaluations and the service score it too.
    #[arg(long, value_name = "NAME")]
    output: Option<String>,
    /// Input shape for the MAC count, e.g. 1,3,224,224 (default: one calibration sample's, else
    /// the model's with dynamic dims as 1, which is warned of).
    #[arg(long, value_name = "DIMS", value_delimiter = ',')]
    input_shape: Option<Vec<usize>>,
    /// Candidate bit-widths.
    #[arg(long, value_delimiter = ',', default_value = "8,6,5,4,3,2")]
    bits: Vec<u8>,
    /// Manifest name (default: the model file's stem).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum MetricArg {
    Kl,
    Mse,
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// Supernet manifest (JSON); its layers link their ONNX weights with `weight`.
    manifest: PathBuf,
    #[arg(long, value_name = "MODEL.onnx")]
    model: PathBuf,
    /// Bit configuration: {"<layer>": bits, ...} (or a plan candidate with a `bits` object).
    #[arg(long, value_name = "BITS.json")]
    bits: PathBuf,
    /// Where to write the QDQ model.
    #[arg(long, value_name = "OUT.onnx")]
    out: PathBuf,
    /// Where to write the bit configuration (default: OUT with extension .bits.json).
    #[arg(long, value_name = "CONFIG.json")]
    config_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct MeasureArgs {
    /// Supernet manifest (JSON); its layers link their ONNX weights with `weight`.
    manifest: PathBuf,
    #[arg(long, value_name = "MODEL.onnx")]
    model: PathBuf,
}

#[derive(Debug, Args)]
struct HasbArgs {
    /// Supernet manifest (JSON).
    manifest: PathBuf,
    /// Width of each layer's preference around its sensitivity (fraction of the bit range).
    #[arg(long, default_value_t = 0.3)]
    sigma: f64,
    /// Probability mass spread uniformly over every allowed bit.
    #[arg(long, default_value_t = 0.1)]
    floor: f64,
}

#[derive(Debug, Args)]
struct SynthArgs {
    /// resnet18, resnet50, or random:N
    kind: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// A failure, with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    fn invalid(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_INVALID,
            message: message.into(),
        }
    }
}

impl From<planner::Error> for Failure {
    fn from(e: planner::Error) -> Failure {
        let code = match e {
            planner::Error::Invalid { .. } | planner::Error::TooLarge(_) => EXIT_INVALID,
            _ => 1,
        };
        let message = match &e {
            planner::Error::Invalid { what, errors } => {
                let mut m = format!("{what} is invalid:");
                for f in errors {
                    m.push_str(&format!("\n  {f}"));
                }
                m
            }
            other => other.to_string(),
        };
        Failure { code, message }
    }
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Plan(args) => plan(args),
        Command::Hasb(args) => hasb(args),
        Command::Synth(args) => synth(args),
        Command::Evaluate(args) => evaluate(args),
        Command::Measure(args) => measure(args),
        Command::Export(args) => export(args),
        Command::Manifest(args) => manifest(args),
        Command::Fleet(args) => fleet(args),
        Command::Serve(args) => crate::serve::run(args).map_err(|e| Failure {
            code: 1,
            message: format!("{e:#}"),
        }),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("bitplan: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn read(path: &Path, what: &str) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::invalid(format!("cannot read {what} {}: {e}", path.display())))
}

/// Reads and checks a manifest; what it accepted with a warning goes to stderr.
fn load_manifest(path: &Path) -> Result<Manifest, Failure> {
    let manifest = Manifest::from_json(&read(path, "manifest")?).map_err(in_file(path))?;
    for w in &manifest.warnings {
        eprintln!(
            "bitplan: warning: {}: {}: {}",
            path.display(),
            w.path,
            w.message
        );
    }
    Ok(manifest)
}

fn plan(args: PlanArgs) -> Result<u8, Failure> {
    let manifest = load_manifest(&args.manifest)?;
    let device = match &args.device {
        Some(p) => Some(
            DeviceProfile::from_json(&read(p, "device profile")?).map_err(|e| {
                let mut f = Failure::from(e);
                f.message = format!("{}: {}", p.display(), f.message);
                f
            })?,
        ),
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

fn hasb(args: HasbArgs) -> Result<u8, Failure> {
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

fn synth(args: SynthArgs) -> Result<u8, Failure> {
    let m = match args.kind.as_str() {
        "resnet18" => planner::problem::synth::resnet18(args.seed),
        "resnet50" => planner::problem::synth::resnet50(args.seed),
        other => match other
            .strip_prefix("random:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) if n > 0 => planner::problem::synth::random(n, args.seed),
            _ => {
                return Err(Failure::invalid(format!(
                    "unknown synthetic manifest {other:?}: expected resnet18, resnet50 or random:N"
                )))
            }
        },
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&m.to_json()).expect("JSON")
    );
    Ok(0)
}

fn read_bytes(path: &Path, what: &str) -> Result<Vec<u8>, Failure> {
    std::fs::read(path)
        .map_err(|e| Failure::invalid(format!("cannot read {what} {}: {e}", path.display())))
}

/// Prefixes a planner error with the file it came from.
fn in_file(path: &Path) -> impl Fn(planner::Error) -> Failure + '_ {
    move |e| {
        let mut f = Failure::from(e);
        f.message = format!("{}: {}", path.display(), f.message);
        f
    }
}

fn load_data(path: &Path) -> Result<planner::eval::npz::ValidationSet, Failure> {
    planner::eval::npz::ValidationSet::from_npz(&read_bytes(path, "validation set")?)
        .map_err(in_file(path))
}

fn load_model(path: &Path) -> Result<planner::eval::onnx::OnnxModel, Failure> {
    planner::eval::onnx::OnnxModel::from_path(path).map_err(in_file(path))
}

fn ort_library(flag: &Option<PathBuf>) -> Result<PathBuf, Failure> {
    crate::runtime::ort_library(flag.as_deref()).map_err(|message| Failure { code: 1, message })
}

/// Reads BITS.json into a bit-width per manifest layer, checked against ties, pins and allowed bits.
fn load_bits(path: &Path, problem: &Problem) -> Result<Vec<u8>, Failure> {
    let text = read(path, "bit configuration")?;
    let doc: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Failure::invalid(format!("{}: malformed JSON: {e}", path.display())))?;
    let map = doc.get("bits").unwrap_or(&doc).as_object().ok_or_else(|| {
        Failure::invalid(format!(
            "{}: expected an object {{\"<layer>\": bits}}",
            path.display()
        ))
    })?;
    let m = &problem.manifest;
    let mut problems = Vec::new();
    for name in map.keys() {
        if m.layer_index(name).is_none() {
            problems.push(format!("{name}: not a layer of manifest {:?}", m.name));
        }
    }
    let mut bits = Vec::with_capacity(m.layers.len());
    for l in &m.layers {
        match map.get(&l.name).map(|v| v.as_u64()) {
            Some(Some(b)) if (1..=u64::from(planner::MAX_BITS)).contains(&b) => bits.push(b as u8),
            Some(_) => problems.push(format!("{}: must be a bit-width", l.name)),
            None => problems.push(format!(
                "{}: missing (every layer needs a bit-width)",
                l.name
            )),
        }
    }
    if problems.is_empty() {
        problem.candidate_from_bits(&bits).map_err(in_file(path))?;
        Ok(bits)
    } else {
        Err(Failure::invalid(format!(
            "{}: bit configuration is invalid:\n  {}",
            path.display(),
            problems.join("\n  ")
        )))
    }
}

fn evaluate(args: EvaluateArgs) -> Result<u8, Failure> {
    let manifest = load_manifest(&args.manifest)?;
    let problem = Problem::new(&manifest, None)?;
    let bits = load_bits(&args.bits, &problem)?;
    let model = load_model(&args.model)?;
    let data = load_data(&args.data)?;
    if args.batch_size == 0 {
        return Err(Failure::invalid("--batch-size must be at least 1"));
    }
    let backend = planner::eval::ort_backend::OrtBackend::new(
        &ort_library(&args.runtime.ort_lib)?,
        args.runtime.threads,
    )?;
    let options = planner::eval::EvalOptions {
        batch_size: args.batch_size,
        quantize_activations: args.quantize_activations,
    };
    let mut evaluator = planner::eval::Evaluator::new(&backend, &model, &manifest, data, options)?;
    let metrics = evaluator.evaluate(&bits)?;
    print!(
        "{}",
        output::render_metrics(&problem, &bits, &metrics, &evaluator.timings, args.format)
    );
    Ok(0)
}

fn measure(args: MeasureArgs) -> Result<u8, Failure> {
    let manifest = load_manifest(&args.manifest)?;
    let model = load_model(&args.model)?;
    let measured = planner::eval::onnx::measure_perturbations(&model, &manifest)
        .map_err(in_file(&args.manifest))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&measured.to_json()).expect("JSON")
    );
    Ok(0)
}

fn export(args: ExportArgs) -> Result<u8, Failure> {
    let manifest = load_manifest(&args.manifest)?;
    let problem = Problem::new(&manifest, None)?;
    let bits = load_bits(&args.bits, &problem)?;
    let model = load_model(&args.model)?;
    // A model whose weights live beside it is written the same way: OUT.onnx and OUT.onnx.data.
    let (qdq, external) = if planner::eval::external::has_external_data(&model.proto) {
        let name = format!(
            "{}.data",
            args.out
                .file_name()
                .map_or("model.onnx".into(), |n| n.to_string_lossy())
        );
        let (qdq, blob) =
            planner::eval::export::export_qdq_external(&model, &manifest, &bits, &name)?;
        (qdq, Some((args.out.with_file_name(&name), blob)))
    } else {
        (
            planner::eval::export::export_qdq(&model, &manifest, &bits)?,
            None,
        )
    };
    let config_path = args
        .config_out
        .clone()
        .unwrap_or_else(|| args.out.with_extension("bits.json"));
    let config = manifest.bits_json(&bits);
    let write = |path: &Path, bytes: &[u8]| {
        std::fs::write(path, bytes).map_err(|e| Failure {
            code: 1,
            message: format!("cannot write {}: {e}", path.display()),
        })
    };
    if let Some((path, blob)) = &external {
        write(path, blob)?;
        eprintln!(
            "bitplan: wrote {} ({} bytes of weights the model refers to)",
            path.display(),
            blob.len()
        );
    }
    write(&args.out, &qdq)?;
    write(
        &config_path,
        (serde_json::to_string_pretty(&config).expect("JSON") + "\n").as_bytes(),
    )?;
    eprintln!(
        "bitplan: wrote {} ({} bytes) and {}",
        args.out.display(),
        qdq.len(),
        config_path.display()
    );
    Ok(0)
}

fn manifest(args: ManifestArgs) -> Result<u8, Failure> {
    let model = load_model(&args.model)?;
    let traces: Option<serde_json::Value> =
        match &args.traces {
            Some(path) => Some(serde_json::from_str(&read(path, "traces")?).map_err(|e| {
                Failure::invalid(format!("{}: malformed JSON: {e}", path.display()))
            })?),
            None => None,
        };
    let data = match &args.data {
        Some(path) => Some(load_data(path)?),
        None => None,
    };
    if args.batch_size == 0 {
        return Err(Failure::invalid("--batch-size must be at least 1"));
    }
    if let Some(output) = &args.output {
        model.scored_output(Some(output))?;
    }
    let (sample, shape_warnings) =
        planner::eval::ingest::mac_sample(&model, args.input_shape.as_deref(), data.as_ref())
            .map_err(in_file(args.data.as_deref().unwrap_or(&args.model)))?;
    let name = args.name.unwrap_or_else(|| {
        args.model
            .file_stem()
            .map_or("model".into(), |s| s.to_string_lossy().into_owned())
    });
    let backend = planner::eval::ort_backend::OrtBackend::new(
        &ort_library(&args.runtime.ort_lib)?,
        args.runtime.threads,
    )?;
    let traces_file = args.traces.clone().unwrap_or_default();
    let source = planner::eval::ingest::Source {
        model: &model,
        name: &name,
        traces: traces.as_ref(),
        sample: &sample,
        output: args.output.as_deref(),
        bits: &args.bits,
    };
    let mut m = match data {
        None => planner::eval::ingest::derive_manifest(&backend, &source)
            .map_err(in_file(&traces_file))?,
        Some(data) => {
            let options = planner::eval::ingest::SensitivityOptions {
                metric: match args.metric {
                    MetricArg::Kl => Divergence::Kl,
                    MetricArg::Mse => Divergence::Mse,
                },
                batch_size: args.batch_size,
            };
            let mut report = ProgressReport::new("sensitivity");
            let (m, t) =
                planner::eval::ingest::measure_manifest(&backend, &source, data, options, |p| {
                    report.update(p);
                    std::ops::ControlFlow::Continue(())
                })?;
            eprintln!(
                "bitplan: sensitivity: session builds {:.1} s, inference {:.1} s over {} segment runs, reference pass {:.1} s",
                t.session_ms / 1e3,
                t.inference_ms / 1e3,
                t.segment_runs,
                t.reference_ms / 1e3
            );
            m
        }
    };
    m.warnings.splice(0..0, shape_warnings);
    for w in &m.warnings {
        eprintln!("bitplan: warning: {}: {}", w.path, w.message);
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&m.to_json()).expect("JSON")
    );
    Ok(0)
}

/// Progress of a long pass on stderr, at most twice a second, with the time left.
struct ProgressReport {
    what: &'static str,
    last: Option<std::time::Instant>,
}

impl ProgressReport {
    fn new(what: &'static str) -> Self {
        ProgressReport { what, last: None }
    }

    fn update(&mut self, p: planner::eval::sensitivity::Progress) {
        let due = self
            .last
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_millis(500));
        if due || p.done == p.total {
            self.last = Some(std::time::Instant::now());
            eprintln!(
                "bitplan: {}: {}/{} ({} at {} bits), {:.1} s, about {:.0} s left",
                self.what,
                p.done,
                p.total,
                p.layer_name,
                p.bits,
                p.elapsed_s,
                p.eta_s()
            );
        }
    }
}

fn fleet(args: FleetArgs) -> Result<u8, Failure> {
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
        let backend = planner::eval::ort_backend::OrtBackend::new(
            &ort_library(&args.runtime.ort_lib)?,
            args.runtime.threads,
        )?;
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
