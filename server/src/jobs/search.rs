//! The search job: plan, measure, refit, re-plan on a supernet's model and validation set
//! ([`planner::solve::search`]). Each measurement is stored as an evaluation, with the job's
//! progress, as it is made, so a search resumed after a crash (or any later plan, fleet or
//! search) reuses it; what the supernet measured before is given to the search and never
//! measured again. The rounds and the measured front are stored with the search at the end.

use super::{blocking, Ctx, Inputs, JobError, Outcome};
use crate::search::{document, predicted, Measured, SearchBody, SearchPlan};
use crate::store::{bits_key, Held, NewEvaluation, StoreError};
use planner::eval::{EvalOptions, Evaluator};
use std::collections::HashMap;

pub(super) async fn run(ctx: &Ctx) -> Result<Outcome, JobError> {
    let state = &ctx.state;
    let id = ctx.plan_id()?;
    let row = match state.db.search(&id).await {
        Ok(row) => row,
        Err(StoreError::NotFound { .. }) => {
            return Ok(Outcome::Cancelled("the search was deleted".into()))
        }
        Err(e) => return Err(e.into()),
    };
    let body: SearchBody = serde_json::from_str(&row.request)
        .map_err(|e| JobError::permanent(format!("stored search request: {e}")))?;
    let inputs = Inputs::load(state, &row.supernet_id).await?;
    let (problem, mut request) = body.prepare(&inputs.manifest)?;
    // Measurements this job made before a restart are in the store and count against its
    // budget. The loop is given them (with all the supernet's others) and measures only new
    // ones; a baseline asks again for its same points, answered from the store.
    let made_before = usize::try_from(ctx.job.progress_done).unwrap_or(0);
    if body.method == crate::search::Method::Search {
        request.evaluations = body.evaluations.saturating_sub(made_before);
    }
    let stored = state.db.measurements(&row.supernet_id, false).await?;
    let mut prior = Vec::with_capacity(stored.len());
    for m in &stored {
        let bits: Vec<u8> = serde_json::from_str(&m.bits)
            .map_err(|e| JobError::permanent(format!("stored bits {}: {e}", m.bits)))?;
        if let Ok(loss) = body.metric.loss(&Measured::from(m)) {
            prior.push((bits, loss));
        }
    }
    let known: HashMap<Vec<u8>, f64> = prior.iter().cloned().collect();
    let total = body.evaluations;
    let (db, jobs, metrics) = (state.db.clone(), state.jobs.clone(), state.metrics.clone());
    let (job_id, owner, supernet_id) = (
        ctx.job.id.clone(),
        ctx.owner.clone(),
        row.supernet_id.clone(),
    );
    let (halt, handle) = (ctx.halt(), tokio::runtime::Handle::current());
    let options = EvalOptions {
        batch_size: body.batch_size,
        quantize_activations: false,
    };
    let method = body.method;
    let pause = state.config.eval_pause();
    let searched = blocking(move || -> planner::Result<_> {
        let (backend, model, data) = inputs.open()?;
        let mut evaluator = Evaluator::new(&backend, &model, &inputs.manifest, data, options)?;
        let mut made = made_before;
        let found = body.run(
            &problem,
            &request,
            &prior,
            &mut |c| {
                if let Some(&loss) = known.get(&c.bits) {
                    return Ok(loss);
                }
                let started = std::time::Instant::now();
                let m = evaluator.evaluate(&c.bits)?;
                metrics.evaluation(started.elapsed().as_secs_f64());
                made = (made + 1).min(total);
                let key = bits_key(&c.bits);
                let evaluation = NewEvaluation {
                    supernet_id: &supernet_id,
                    bits: &key,
                    metrics: &m,
                };
                let held = Held {
                    id: &job_id,
                    owner: &owner,
                };
                let message = format!("{made} of {total} measured");
                handle
                    .block_on(db.store_evaluation(&evaluation, held, made, &message))
                    .map_err(|e| planner::Error::Runtime(e.to_string()))?;
                jobs.changed(&job_id);
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
                body.metric
                    .loss(&Measured::from(&m))
                    .map_err(planner::Error::Runtime)
            },
            &halt,
        )?;
        let predicted = predicted(&problem, &request, &found, &halt)?;
        Ok((found, problem, predicted))
    })
    .await?;
    // Stopped by the job's halt, or its lease lost: end as the checkpoint says.
    if let Some(o) = ctx.checkpoint() {
        return Ok(o);
    }
    let (found, problem, predicted) = searched?;
    let measured: HashMap<Vec<u8>, Measured> = state
        .db
        .measurements(&row.supernet_id, false)
        .await?
        .iter()
        .filter_map(|m| Some((serde_json::from_str(&m.bits).ok()?, Measured::from(m))))
        .collect();
    let request: SearchBody = serde_json::from_str(&row.request)
        .map_err(|e| JobError::permanent(format!("stored search request: {e}")))?;
    let plan = SearchPlan::new(
        &problem,
        &found,
        &predicted,
        &request,
        &id,
        &row.supernet_id,
    );
    let doc = document(
        &problem,
        &found,
        &measured,
        request.pareto,
        method,
        &predicted,
        Some(&plan),
    );
    state
        .db
        .store_search_result(&id, &doc, &plan.plan, ctx.held())
        .await?;
    Ok(Outcome::Done(format!(
        "{} measured ({} reused) in {} rounds; {} on the measured front",
        found.evaluations,
        found.reused,
        found.rounds.len(),
        found.front.len()
    )))
}
