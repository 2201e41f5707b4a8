//! The fleet plan job: plans every device of a stored fleet, optionally measures the chosen
//! configurations and gates them on accuracy, and stores the fleet plan document.

use super::evaluate::measure;
use super::{blocking, Ctx, JobError, Outcome};
use crate::fleet::FleetPlanBody;
use crate::store::{bits_key, StoreError};
use planner::eval::EvalOptions;
use planner::solve::fleet::FleetPlan;
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
    let body: FleetPlanBody = serde_json::from_str(&row.options)
        .map_err(|e| JobError::permanent(format!("stored fleet plan request: {e}")))?;
    let fleet = planner::solve::fleet::Fleet::from_json(&row.fleet)?;
    let manifest = state.manifest(&row.supernet_id).await?;
    let options = body.options(state.config.max_solve_time_s);
    let (m, halt) = (manifest.clone(), ctx.halt());
    let planned =
        blocking(move || planner::solve::fleet::plan_fleet_halting(&m, &fleet, &options, &halt))
            .await?;
    // Stopped by the job's halt: end as the checkpoint says (cancelled, overdue, ...).
    if let Some(o) = ctx.checkpoint() {
        return Ok(o);
    }
    let planned = planned?;
    state.metrics.solve(planned.time_ms / 1e3);
    let mut doc = planned.to_json(&manifest);
    if body.measures() {
        if let Some(o) =
            attach_measurements(ctx, &row.supernet_id, &body, &planned, &mut doc).await?
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

/// Measures each distinct chosen configuration not stored yet, then attaches the stored metrics
/// (and the accuracy gate) to the fleet plan document. Returns the outcome when a checkpoint
/// stops the measuring.
async fn attach_measurements(
    ctx: &Ctx,
    supernet_id: &str,
    body: &FleetPlanBody,
    planned: &FleetPlan,
    doc: &mut Value,
) -> Result<Option<Outcome>, JobError> {
    let configs = crate::fleet::distinct_configs(planned);
    let keys: Vec<String> = configs.iter().map(|b| bits_key(b)).collect();
    let options = EvalOptions {
        batch_size: body.batch_size,
        quantize_activations: false,
    };
    if let Some(o) = measure(ctx, supernet_id, &keys, options, 1).await? {
        return Ok(Some(o));
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
