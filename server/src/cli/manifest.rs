//! The commands that write a manifest to stdout: `bitplan manifest` (derived from an ONNX model,
//! with traces or measured sensitivity), `bitplan measure` (perturbations from the model's
//! weights) and `bitplan synth` (synthetic).

use super::{
    check_batch_size, in_file, load_data, load_manifest, load_model, read_json, Failure,
    RuntimeArgs,
};
use clap::{Args, ValueEnum};
use planner::eval::ingest::{SensitivityOptions, Source};
use planner::eval::npz::ValidationSet;
use planner::eval::ort_backend::OrtBackend;
use planner::{Divergence, Manifest};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub(super) struct ManifestArgs {
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
    #[arg(long, value_delimiter = ',', default_values_t = planner::DEFAULT_BITS)]
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

impl From<MetricArg> for Divergence {
    fn from(m: MetricArg) -> Divergence {
        match m {
            MetricArg::Kl => Divergence::Kl,
            MetricArg::Mse => Divergence::Mse,
        }
    }
}

#[derive(Debug, Args)]
pub(super) struct MeasureArgs {
    /// Supernet manifest (JSON); its layers link their ONNX weights with `weight`.
    manifest: PathBuf,
    #[arg(long, value_name = "MODEL.onnx")]
    model: PathBuf,
}

#[derive(Debug, Args)]
pub(super) struct SynthArgs {
    /// resnet18, resnet50, or random:N
    kind: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub(super) fn manifest(args: ManifestArgs) -> Result<u8, Failure> {
    let model = load_model(&args.model)?;
    let traces = match &args.traces {
        Some(path) => Some(read_json(path, "traces")?),
        None => None,
    };
    let data = match &args.data {
        Some(path) => Some(load_data(path)?),
        None => None,
    };
    check_batch_size(args.batch_size)?;
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
    let backend = args.runtime.backend()?;
    let traces_file = args.traces.clone().unwrap_or_default();
    let source = Source {
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
            let options = SensitivityOptions {
                metric: args.metric.into(),
                batch_size: args.batch_size,
            };
            measured_manifest(&backend, &source, data, options)?
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

/// The manifest with every layer's sensitivity measured on `data`; progress, then where the time
/// went, on stderr.
fn measured_manifest(
    backend: &OrtBackend,
    source: &Source,
    data: ValidationSet,
    options: SensitivityOptions,
) -> Result<Manifest, Failure> {
    let mut report = ProgressReport::new("sensitivity");
    let (m, t) = planner::eval::ingest::measure_manifest(backend, source, data, options, |p| {
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
    Ok(m)
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

pub(super) fn measure(args: MeasureArgs) -> Result<u8, Failure> {
    let manifest = load_manifest(&args.manifest)?;
    let model = load_model(&args.model)?;
    let measured = planner::eval::ingest::measure_perturbations(&model, &manifest)
        .map_err(in_file(&args.manifest))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&measured.to_json()).expect("JSON")
    );
    Ok(0)
}

pub(super) fn synth(args: SynthArgs) -> Result<u8, Failure> {
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
