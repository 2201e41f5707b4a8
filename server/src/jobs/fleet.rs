//! The fleet plan job: plans every device of a stored fleet, optionally measures the chosen
//! configurations, gates them on accuracy, or gates them on the measured front (a search, then
//! each device's best measured configuration), and stores the fleet plan document.

use super::evaluate::measure;
use super::search::{prior_losses, StoredMeasure};
use super::{blocking, Ctx, Inputs, JobError, Outcome};
use crate::fleet::FleetPlanBody;
use crate::store::{bits_key, StoreError};
use planner::eval::{EvalOptions, Evaluator};
use planner::solve::fleet::FleetPlan;
use planner::solve::search::Search;
use serde_json::Value;
use std::collections::HashMap;

/// A fleet plan: plan every device, then (when asked) measure each distinct chosen configuration
/// not stored yet, and store the table.
pub(super) async fn run(ctx: &Ctx) -> Result<Outcome, JobError> {
    let state = &ctx.state;
    let id = ctx.plan_id()?;
    let row = match state.db.fleet_plan(&id).await {
        Ok(row) => row,
        Err(StoreError::NotFound { .. }) => {
            return Ok(Outcome::Cancelled("the fleet plan was deleted".into()))
        }
        Err(e) => return Err(e.into()),
    };
    // Its table is stored before the job is marked done: a job run again after that (its worker
    // lost between the two) has nothing left to do, and measures nothing again.
    if row.result.is_some() {
        return Ok(Outcome::Done("the fleet plan's table is stored".into()));
    }
    let body: FleetPlanBody = serde_json::from_str(&row.options)
        .map_err(|e| JobError::permanent(format!("stored fleet plan request: {e}")))?;
    let fleet = planner::solve::fleet::Fleet::from_json(&row.fleet)?;
    let manifest = state.manifest(&row.supernet_id).await?;
    let options = body.options(state.config.max_solve_time_s);
    let (m, f, halt) = (manifest.clone(), fleet.clone(), ctx.halt());
    let planned =
        blocking(move || planner::solve::fleet::plan_fleet_halting(&m, &f, &options, &halt))
            .await?;
    // Stopped by the job's halt: end as the checkpoint says (cancelled, overdue, ...).
    if let Some(o) = ctx.checkpoint() {
        return Ok(o);
    }
    let mut planned = planned?;
    state.metrics.solve(planned.time_ms / 1e3);
    let searched = if body.search {
        match search_fleet(ctx, &row.supernet_id, &body, &fleet, &mut planned).await? {
            Ok(searched) => Some(searched),
            Err(stopped) => return Ok(stopped),
        }
    } else {
        None
    };
    let mut doc = planned.to_json(&manifest);
    if let Some((found, before)) = searched {
        crate::fleet::mark_search(&mut doc, before, body.metric, &found);
    }
    if body.measures() {
        // After a search every choice is measured already.
        let measure_first = !body.search;
        if let Some(o) = attach_measurements(
            ctx,
            &row.supernet_id,
            &body,
            &planned,
            &mut doc,
            measure_first,
        )
        .await?
        {
            return Ok(o);
        }
    }
    if let Some(o) = ctx.checkpoint() {
        return Ok(o);
    }
    let passed = crate::fleet::all_pass(&doc);
    state.db.store_fleet_result(&id, &doc, ctx.held()).await?;
    Ok(Outcome::Done(format!(
        "{} devices planned in {:.0} ms; {}",
        planned.devices.len(),
        planned.time_ms,
        if passed {
            "every device passes"
        } else {
            "some devices fail"
        }
    )))
}

/// The gate on the measured front: the planned choices measured (and stored), then a search
/// with every stored measurement reused and each new one stored as it is made (counted after
/// the planning step and a step per device, so a job resumed after a crash stays within its
/// budget); then each device's choice becomes its best measured configuration within its
/// budgets. Returns the search and each device's planned bits, or the outcome when a checkpoint
/// stops it.
async fn search_fleet(
    ctx: &Ctx,
    supernet_id: &str,
    body: &FleetPlanBody,
    fleet: &planner::solve::fleet::Fleet,
    plan: &mut FleetPlan,
) -> Result<Result<(Search, Vec<Option<Value>>), Outcome>, JobError> {
    let state = &ctx.state;
    let keys: Vec<String> = crate::fleet::distinct_configs(plan)
        .iter()
        .map(|b| bits_key(b))
        .collect();
    let options = EvalOptions {
        batch_size: body.batch_size,
        quantize_activations: false,
    };
    if let Some(o) = measure(ctx, supernet_id, &keys, options, 1).await? {
        return Ok(Err(o));
    }
    // A metric the stored measurements cannot give (accuracy without labels) fails here, before
    // any measurement is spent on the search.
    if let Some(m) = state
        .db
        .measurements(supernet_id, false)
        .await?
        .iter()
        .find(|m| keys.contains(&m.bits))
    {
        body.metric
            .loss(&crate::search::Measured::from(m))
            .map_err(|e| JobError::permanent(format!("metric: {e}")))?;
    }
    let search = crate::fleet::fleet_search(body.evaluations, body.metric, body.batch_size);
    let inputs = Inputs::load(state, supernet_id).await?;
    let manifest = inputs.manifest.clone();
    let (problem, mut request) = search.prepare(&manifest)?;
    // The search's steps follow the planning and a measurement per device at most: fixed by
    // the fleet, so a resumed job (whose re-planning may choose differently) counts the same.
    let offset = 1 + fleet.devices.len();
    let made_before = usize::try_from(ctx.job.progress_done)
        .unwrap_or(0)
        .saturating_sub(offset);
    request.evaluations = body.evaluations.saturating_sub(made_before);
    let prior = prior_losses(state, supernet_id, body.metric).await?;
    let mut measurer = StoredMeasure::new(ctx, supernet_id, &prior, body.metric, offset);
    measurer.made = made_before;
    measurer.total = body.evaluations;
    let halt = ctx.halt();
    let found = blocking(move || {
        let found = (|| -> planner::Result<Search> {
            let (backend, model, data) = inputs.open()?;
            let mut evaluator = Evaluator::new(&backend, &model, &inputs.manifest, data, options)?;
            request.output = search.output_model(&problem, &mut evaluator, &halt)?;
            search.run(
                &problem,
                &request,
                &prior,
                &mut |c| measurer.measure(&mut evaluator, c),
                &halt,
            )
        })();
        measurer.settle(found)
    })
    .await?;
    if let Some(o) = ctx.checkpoint() {
        return Ok(Err(o));
    }
    let found = found?;
    let measured = prior_losses(state, supernet_id, body.metric).await?;
    let before = crate::fleet::choose_measured(&manifest, fleet, plan, &measured)?;
    Ok(Ok((found, before)))
}

/// Measures each distinct chosen configuration not stored yet (with `measure_first`), then
/// attaches the stored metrics (and the accuracy gate) to the fleet plan document. Returns the
/// outcome when a checkpoint stops the measuring.
async fn attach_measurements(
    ctx: &Ctx,
    supernet_id: &str,
    body: &FleetPlanBody,
    planned: &FleetPlan,
    doc: &mut Value,
    measure_first: bool,
) -> Result<Option<Outcome>, JobError> {
    let configs = crate::fleet::distinct_configs(planned);
    let keys: Vec<String> = configs.iter().map(|b| bits_key(b)).collect();
    let options = EvalOptions {
        batch_size: body.batch_size,
        quantize_activations: false,
    };
    if measure_first {
        if let Some(o) = measure(ctx, supernet_id, &keys, options, 1).await? {
            return Ok(Some(o));
        }
    }
    let metrics: HashMap<String, Value> = ctx
        .state
        .db
        .measurements(supernet_id, false)
        .await?
        .into_iter()
        .map(|m| (m.bits.clone(), m.to_json()))
        .collect();
    let by_bits: HashMap<Vec<u8>, Value> = configs
        .into_iter()
        .zip(keys)
        .filter_map(|(b, k)| metrics.get(&k).map(|m| (b, m.clone())))
        .collect();
    crate::fleet::attach_metrics(doc, planned, &by_bits, body.min_accuracy);
    doc["evaluated_configs"] = serde_json::json!(by_bits.len());
    Ok(None)
}
