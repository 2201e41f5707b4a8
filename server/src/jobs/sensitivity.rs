//! The sensitivity job: each layer of a supernet alone at each of its bit-widths, measured on the
//! supernet's model and validation set ([`planner::eval::ingest::measure_sensitivity`]), then stored in
//! the supernet's manifest so later plans use it as their objective.
//!
//! The pass runs on a blocking thread; it reports each measurement through a watch channel the
//! job forwards to the job row (at most every [`REPORT_EVERY`]), and it stops at the next
//! measurement when the job is cancelled or the server shuts down. Nothing is stored until the
//! whole pass has finished, so a stopped pass leaves the manifest as it was.

use super::{Ctx, Inputs, JobError, Outcome};
use crate::store::SensitivityWork;
use planner::eval::ingest::SensitivityOptions;
use planner::eval::sensitivity::Progress;
use planner::eval::Timings;
use planner::Manifest;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often progress reaches the job row.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// Raises its flag when dropped.
#[derive(Default)]
struct Abandon(Arc<AtomicBool>);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What a finished pass returns: the manifest with its measured sensitivity, and where the time
/// went.
type Measured = planner::Result<(Manifest, Timings)>;

pub(super) async fn run(ctx: &Ctx, work: &SensitivityWork) -> Result<Outcome, JobError> {
    let supernet_id = ctx.supernet_id()?;
    let inputs = Inputs::load(&ctx.state, &supernet_id).await?;
    let (model_hash, data_hash) = (inputs.model_hash.clone(), inputs.data_hash.clone());
    let options = SensitivityOptions {
        metric: work.metric,
        batch_size: work.batch_size,
    };
    let (report, mut reports) = watch::channel::<Option<Progress>>(None);
    // Set when this function returns early (a database error while reporting): the pass stops at
    // its next measurement instead of running on, uncancellable, past its permit.
    let abandoned = Abandon::default();
    let pass = start_pass(ctx, inputs, options, report, abandoned.0.clone());
    let (manifest, timings) = match follow(ctx, pass, &mut reports).await? {
        Err(planner::Error::Stopped(why)) => return stopped(ctx, &reports, &why).await,
        other => other?,
    };
    if let Some(o) = ctx.checkpoint() {
        return Ok(o);
    }
    let measured: usize = manifest.layers.iter().map(|l| l.choices().len()).sum();
    store_manifest(
        ctx,
        &supernet_id,
        (&model_hash, &data_hash),
        &manifest,
        measured,
    )
    .await?;
    Ok(Outcome::Done(format!(
        "{measured} measurements of {} layers ({}) in {:.1} s: plans now use measured sensitivity",
        manifest.layers.len(),
        work.metric.as_str(),
        (timings.reference_ms + timings.session_ms + timings.inference_ms + timings.rewrite_ms)
            / 1e3
    )))
}

/// Starts the pass on a blocking thread. It publishes each measurement on `report`, waits the
/// configured evaluation pause, and stops at the next measurement once the job should stop
/// (cancelled, overdue, lost, the worker shutting down) or `gone` is raised.
fn start_pass(
    ctx: &Ctx,
    inputs: Inputs,
    options: SensitivityOptions,
    report: watch::Sender<Option<Progress>>,
    gone: Arc<AtomicBool>,
) -> JoinHandle<Measured> {
    let stops = ctx.stops.clone();
    let shutdown = ctx.shutdown.clone();
    let pause = ctx.state.config.eval_pause();
    tokio::task::spawn_blocking(move || {
        let (backend, model, data) = inputs.open()?;
        planner::eval::ingest::measure_sensitivity(
            &backend,
            &model,
            &inputs.manifest,
            data,
            options,
            |p| {
                report.send_replace(Some(p));
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
                let stop = stops.any() || *shutdown.borrow() || gone.load(Ordering::SeqCst);
                if stop {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
    })
}

/// Waits for the pass to finish, forwarding its latest measurement to the job row at most every
/// [`REPORT_EVERY`].
async fn follow(
    ctx: &Ctx,
    mut pass: JoinHandle<Measured>,
    reports: &mut watch::Receiver<Option<Progress>>,
) -> Result<Measured, JobError> {
    let mut reporting = true;
    loop {
        tokio::select! {
            done = &mut pass => return done.map_err(|e| JobError {
                message: format!("sensitivity task: {e}"),
                retryable: true,
            }),
            changed = reports.changed(), if reporting => {
                if changed.is_err() {
                    // The pass has dropped its reporter: it is finishing.
                    reporting = false;
                    continue;
                }
                let latest = reports.borrow_and_update().clone();
                if let Some(p) = latest {
                    let message = format!(
                        "{} of {} measured ({} at {} bits), about {:.0} s left",
                        p.done, p.total, p.layer_name, p.bits, p.eta_s()
                    );
                    ctx.progress(p.done, &message).await?;
                }
                tokio::time::sleep(REPORT_EVERY).await;
            }
        }
    }
}

/// The outcome of a pass that stopped at a measurement: the progress it reached is recorded with
/// the reason, and the job is cancelled unless the server is shutting down.
async fn stopped(
    ctx: &Ctx,
    reports: &watch::Receiver<Option<Progress>>,
    why: &str,
) -> Result<Outcome, JobError> {
    let outcome = match ctx.checkpoint() {
        Some(Outcome::Cancelled(_)) | None => Outcome::Cancelled(format!("cancelled: {why}")),
        Some(other) => other,
    };
    if !matches!(outcome, Outcome::Lost) {
        let done = reports.borrow().as_ref().map_or(0, |p| p.done);
        ctx.progress(done, why).await?;
    }
    Ok(outcome)
}

/// Stores the measured manifest with the job's final progress in one transaction, only while the
/// supernet still has the model and validation set that were measured (their hashes).
async fn store_manifest(
    ctx: &Ctx,
    supernet_id: &str,
    (model_hash, data_hash): (&str, &str),
    manifest: &Manifest,
    measured: usize,
) -> Result<(), JobError> {
    let stored = ctx
        .state
        .db
        .store_measured_manifest(
            supernet_id,
            (model_hash, data_hash),
            manifest,
            ctx.held(),
            measured,
        )
        .await?;
    if !stored {
        return Err(JobError::permanent(
            "the supernet was deleted, or its model or validation set replaced, while it was \
             measured: nothing stored (measure it again)",
        ));
    }
    Ok(())
}
