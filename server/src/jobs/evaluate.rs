//! The evaluation job: measures bit configurations of a supernet on its validation set, storing
//! each result in its own transaction with the job's progress. Fleet plans measure through it too.

use super::{blocking, Ctx, Inputs, JobError, Outcome};
use crate::store::{EvaluateWork, NewEvaluation};
use planner::eval::{EvalOptions, Evaluator};
use std::time::Instant;

pub(super) async fn run(ctx: &Ctx, work: &EvaluateWork) -> Result<Outcome, JobError> {
    let supernet_id = ctx.supernet_id()?;
    let total = work.bits.len();
    let options = EvalOptions {
        batch_size: work.batch_size,
        quantize_activations: work.quantize_activations,
    };
    if let Some(o) = measure(ctx, &supernet_id, &work.bits, options, 0).await? {
        return Ok(o);
    }
    Ok(Outcome::Done(format!("{total} of {total} measured")))
}

/// Measures the configurations (bits keys) not stored yet for the supernet, committing each
/// result with the job's progress (`offset` steps of the job come before these). Returns the
/// outcome when a checkpoint stops it (cancelled, or the worker stopping).
pub(super) async fn measure(
    ctx: &Ctx,
    supernet_id: &str,
    keys: &[String],
    options: EvalOptions,
    offset: usize,
) -> Result<Option<Outcome>, JobError> {
    let state = &ctx.state;
    // What is already stored is never measured again (by this job before a crash, or any other).
    let measured = state
        .db
        .measured(supernet_id, options.quantize_activations)
        .await?;
    let remaining: Vec<&String> = keys.iter().filter(|b| !measured.contains(*b)).collect();
    let total = offset + keys.len();
    let mut done = total - remaining.len();
    // Progress never goes back: a job resumed past these steps (a fleet plan's search) counts
    // its budget from it.
    if done as i64 >= ctx.job.progress_done {
        ctx.progress(done, &format!("{done} of {total} done"))
            .await?;
    }
    if remaining.is_empty() {
        return Ok(None);
    }
    let inputs = Inputs::load(state, supernet_id).await?;
    let mut evaluator = blocking(move || {
        let (backend, model, data) = inputs.open()?;
        Evaluator::new(&backend, &model, &inputs.manifest, data, options)
    })
    .await??;
    for key in remaining {
        if let Some(o) = ctx.checkpoint() {
            return Ok(Some(o));
        }
        let bits: Vec<u8> = serde_json::from_str(key)
            .map_err(|e| JobError::permanent(format!("stored bits {key}: {e}")))?;
        let started = Instant::now();
        let (back, metrics) = blocking(move || {
            let m = evaluator.evaluate(&bits);
            (evaluator, m)
        })
        .await?;
        evaluator = back;
        let metrics = metrics?;
        state.metrics.evaluation(started.elapsed().as_secs_f64());
        if let Some(o) = ctx.checkpoint().filter(|o| matches!(o, Outcome::Lost)) {
            // Another worker holds the job now: what it measures is stored by it.
            return Ok(Some(o));
        }
        done += 1;
        let evaluation = NewEvaluation {
            supernet_id,
            bits: key,
            metrics: &metrics,
        };
        let message = format!("{done} of {total} measured");
        state
            .db
            .store_evaluation(&evaluation, ctx.held(), done, &message)
            .await?;
        state.jobs.changed(&ctx.job.id);
        let pause = state.config.eval_pause();
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    Ok(None)
}
