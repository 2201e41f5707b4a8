//! The evaluation job: measures bit configurations of a supernet on its validation set, storing
//! each result in its own transaction with the job's progress. Fleet plans measure through it too.

use super::{blocking, progress, write_progress, Ctx, Inputs, JobError, Outcome};
use crate::store::now_ms;
use planner::eval::{EvalOptions, Evaluator, Metrics};
use serde::Deserialize;
use std::collections::HashSet;
use std::time::Instant;

#[derive(Debug, Deserialize)]
struct EvaluatePayload {
    bits: Vec<String>,
    quantize_activations: bool,
    batch_size: usize,
}

pub(super) async fn run(ctx: &Ctx) -> Result<Outcome, JobError> {
    let payload: EvaluatePayload = ctx.payload()?;
    let supernet_id = ctx.supernet_id()?;
    let total = payload.bits.len();
    if let Some(o) = measure(
        ctx,
        &supernet_id,
        &payload.bits,
        payload.quantize_activations,
        payload.batch_size,
        0,
    )
    .await?
    {
        return Ok(o);
    }
    Ok(Outcome::Done(format!("{total} of {total} measured")))
}

/// Measures the configurations (bits keys) not stored yet for the supernet, committing each
/// result with the job's progress (`offset` steps of the job come before these). Returns the
/// outcome when a checkpoint stops it (cancelled, or the server stopping).
pub(super) async fn measure(
    ctx: &Ctx,
    supernet_id: &str,
    keys: &[String],
    quantize_activations: bool,
    batch_size: usize,
    offset: usize,
) -> Result<Option<Outcome>, JobError> {
    let state = &ctx.state;
    // What is already stored is never measured again (by this job before a crash, or any other).
    let measured: HashSet<String> = sqlx::query_scalar(
        "SELECT bits FROM evaluations WHERE supernet_id = ? AND quantize_activations = ?",
    )
    .bind(supernet_id)
    .bind(quantize_activations)
    .fetch_all(&state.db.read)
    .await?
    .into_iter()
    .collect();
    let remaining: Vec<&String> = keys.iter().filter(|b| !measured.contains(*b)).collect();
    let total = offset + keys.len();
    let mut done = total - remaining.len();
    progress(ctx, done, &format!("{done} of {total} done")).await?;
    if remaining.is_empty() {
        return Ok(None);
    }
    let inputs = Inputs::load(state, supernet_id).await?;
    let options = EvalOptions {
        batch_size,
        quantize_activations,
    };
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
        done += 1;
        store_evaluation(ctx, supernet_id, key, &metrics, done, total).await?;
        let pause = state.config.eval_pause();
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    Ok(None)
}

/// One candidate's result and the job's progress, in one transaction.
async fn store_evaluation(
    ctx: &Ctx,
    supernet_id: &str,
    bits: &str,
    m: &Metrics,
    done: usize,
    total: usize,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    let finite = |v: f64| v.is_finite().then_some(v);
    let mut tx = ctx.state.db.write.begin().await?;
    sqlx::query(
        "INSERT OR IGNORE INTO evaluations (supernet_id, bits, quantize_activations, accuracy, \
         agreement_fp32, kl_fp32, agreement_highest, kl_highest, sqnr_db, cosine_mean, cosine_min, \
         rel_l2, latency_ms, samples, batch_size, job_id, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(supernet_id)
    .bind(bits)
    .bind(m.activations_quantized)
    .bind(m.accuracy)
    .bind(m.agreement_fp32)
    .bind(m.kl_fp32)
    .bind(m.agreement_highest)
    .bind(m.kl_highest)
    .bind(finite(m.sqnr_db))
    .bind(finite(m.cosine_mean))
    .bind(finite(m.cosine_min))
    .bind(finite(m.rel_l2))
    .bind(m.latency_ms)
    .bind(m.samples as i64)
    .bind(m.batch_size as i64)
    .bind(&ctx.job.id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let message = format!("{done} of {total} measured");
    write_progress(&mut *tx, &ctx.job.id, done, &message, now).await?;
    tx.commit().await?;
    ctx.state.jobs.changed(&ctx.job.id);
    Ok(())
}
