//! `bitplan evaluate` and `bitplan export`: one candidate (a bit-width per layer, from BITS.json)
//! measured with ONNX Runtime, or written as a deployable QDQ model.

use super::{
    check_batch_size, in_file, load_data, load_manifest, load_model, read_json, Failure,
    RuntimeArgs,
};
use crate::output::{self, Format};
use clap::Args;
use planner::Problem;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub(super) struct EvaluateArgs {
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
pub(super) struct ExportArgs {
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

/// Reads BITS.json into a bit-width per manifest layer, checked against ties, pins and allowed bits.
fn load_bits(path: &Path, problem: &Problem) -> Result<Vec<u8>, Failure> {
    let doc = read_json(path, "bit configuration")?;
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

pub(super) fn evaluate(args: EvaluateArgs) -> Result<u8, Failure> {
    let manifest = load_manifest(&args.manifest)?;
    let problem = Problem::new(&manifest, None)?;
    let bits = load_bits(&args.bits, &problem)?;
    let model = load_model(&args.model)?;
    let data = load_data(&args.data)?;
    check_batch_size(args.batch_size)?;
    let backend = args.runtime.backend()?;
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

pub(super) fn export(args: ExportArgs) -> Result<u8, Failure> {
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
