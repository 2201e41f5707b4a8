//! Command-line interface. Exit codes: 0 success, 2 invalid input (message on stderr),
//! 3 infeasible budgets, 1 anything else. This module owns the parser, the exit codes and the
//! file loading the subcommands share; each group of subcommands lives in its own module.

mod fleet;
mod manifest;
mod model;
mod plan;
mod search;

use clap::{Args, Parser, Subcommand};
use planner::eval::ort_backend::OrtBackend;
use planner::Manifest;
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
    Plan(plan::PlanArgs),
    /// Per-layer bit sampling probabilities for supernet training (Hessian-aware).
    Hasb(plan::HasbArgs),
    /// Write a reproducible synthetic manifest (resnet18, resnet50, or random:N) to stdout.
    Synth(manifest::SynthArgs),
    /// Measure a candidate (a bit-width per layer) with ONNX Runtime on a validation set.
    Evaluate(model::EvaluateArgs),
    /// Fill the manifest's `perturbation` with ||Q_b(W)-W||^2 measured from the model's weights.
    Measure(manifest::MeasureArgs),
    /// Derive a manifest from an ONNX model (weights, MACs at an input shape) and Hessian traces.
    Manifest(manifest::ManifestArgs),
    /// Write a candidate as a deployable QDQ ONNX model (int8 weights + DequantizeLinear) and its
    /// bit configuration as JSON.
    Export(model::ExportArgs),
    /// The measured Pareto front within an evaluation budget: plan, measure with ONNX Runtime,
    /// refit the objective to what was measured, plan again.
    Search(search::SearchArgs),
    /// Plan every device of a fleet (budgets, supported bits, latency model, high-bit layers);
    /// optionally measure the chosen configurations and gate them on accuracy.
    Fleet(fleet::FleetArgs),
    /// Run the service: REST API, worker processes and SQLite store in a data directory.
    Serve(crate::serve::ServeArgs),
    /// Run jobs from a data directory's store (`bitplan serve` starts its own workers).
    Worker(crate::worker::WorkerCommand),
}

/// How close to the optimum an ILP solve must prove its plan.
#[derive(Debug, Args)]
struct GapArgs {
    /// Relative gap at which each ILP solve may stop, in [0, 1): 0 proves every optimum; 1e-4
    /// accepts a plan proven within 0.01% of it (status within_gap).
    #[arg(
        long,
        value_name = "X",
        default_value_t = planner::PlanRequest::default().mip_gap,
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
    #[arg(long, default_value_t = crate::app::Config::EVAL_THREADS)]
    threads: usize,
}

impl RuntimeArgs {
    /// ONNX Runtime from `--ort-lib` (or where it is found), with `--threads` per session.
    fn backend(&self) -> Result<OrtBackend, Failure> {
        Ok(OrtBackend::new(&ort_library(&self.ort_lib)?, self.threads)?)
    }
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
        Command::Plan(args) => plan::plan(args),
        Command::Hasb(args) => plan::hasb(args),
        Command::Synth(args) => manifest::synth(args),
        Command::Evaluate(args) => model::evaluate(args),
        Command::Search(args) => search::run(args),
        Command::Measure(args) => manifest::measure(args),
        Command::Export(args) => model::export(args),
        Command::Manifest(args) => manifest::manifest(args),
        Command::Fleet(args) => fleet::fleet(args),
        Command::Serve(args) => crate::serve::run(args).map_err(|e| Failure {
            code: 1,
            message: format!("{e:#}"),
        }),
        Command::Worker(args) => crate::worker::run(args).map_err(|e| Failure {
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

/// Reads a JSON document.
fn read_json(path: &Path, what: &str) -> Result<serde_json::Value, Failure> {
    serde_json::from_str(&read(path, what)?)
        .map_err(|e| Failure::invalid(format!("{}: malformed JSON: {e}", path.display())))
}

fn check_batch_size(batch_size: usize) -> Result<(), Failure> {
    if batch_size == 0 {
        return Err(Failure::invalid("--batch-size must be at least 1"));
    }
    Ok(())
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
