//! The fleet plan job: plans every device of a stored fleet, optionally measures the chosen
//! configurations and gates them on accuracy, and stores the fleet plan document.

use super::evaluate::measure;
use super::{blocking, start_plan, Ctx, JobError, Outcome};
use crate::api::FleetPlanBody;
use crate::store::{self, now_ms};
use planner::solve::fleet::FleetPlan;
use serde_json::Value;
use std::collections::HashMap;

/// A fleet plan: plan every device, then (when asked) measure each distinct chosen configuration
/// not stored yet, and store the table.
pub(super) async fn run(ctx: &Ctx) -> Result<Outcome, JobError> {
    let state = &ctx.state;
    let id = start_plan(ctx).await?;
    let Ok(row) = crate::api::fleet_plan_row(&state.db, &id).await else {
        return Ok(Outcome::Cancelled("the fleet plan was deleted".into()));
    };
    let body: FleetPlanBody = serde_json::from_str(&row.options)
        .map_err(|e| JobError::permanent(format!("stored fleet plan request: {e}")))?;
    let fleet = planner::solve::fleet::Fleet::from_json(&row.fleet)?;
    let manifest = state.manifest(&row.supernet_id).await?;
    let options = body.options(state.config.max_solve_time_s);
    let m = manifest.clone();
    let planned =
        blocking(move || planner::solve::fleet::plan_fleet(&m, &fleet, &options)).await??;
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
    store_fleet_result(ctx, &id, &doc).await?;
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
    let keys: Vec<String> = configs
        .iter()
        .map(|b| crate::planning::bits_key(b))
        .collect();
    if let Some(o) = measure(ctx, supernet_id, &keys, false, body.batch_size, 1).await? {
        return Ok(Some(o));
    }
    let metrics: HashMap<String, Value> = store::measurements(&ctx.state.db, supernet_id, false)
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

/// The finished document, with the job's progress at its end, in one transaction.
async fn store_fleet_result(ctx: &Ctx, id: &str, doc: &Value) -> Result<(), sqlx::Error> {
    let mut tx = ctx.state.db.write.begin().await?;
    sqlx::query("UPDATE fleet_plans SET status = 'ready', result = ?, updated_at = ? WHERE id = ?")
        .bind(doc.to_string())
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE jobs SET progress_done = progress_total, updated_at = ? WHERE id = ?")
        .bind(now_ms())
        .bind(&ctx.job.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
