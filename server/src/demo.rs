//! The demo supernet: the digits CNN (a real trained network with measured Double Rounding
//! errors), its model and 540 held-out images, compiled into the binary. Loading it stores the
//! supernet, plans the exact size/Omega front and queues the front's evaluation, so a new user
//! sees real plans and measured accuracies within a minute.

use crate::app::AppState;
use crate::planning::{self, Created, PlanBody};
use crate::store::Upload;
use anyhow::Context;
use planner::{CostKind, Manifest};

pub const MANIFEST: &str = include_str!("../../examples/digits-cnn.manifest.json");
pub const MODEL: &[u8] = include_bytes!("../../testdata/digits-cnn/digits_cnn.onnx");
pub const VALIDATION: &[u8] = include_bytes!("../../testdata/digits-cnn/digits_val.npz");

/// Loads the demo unless a supernet of its name exists. Returns the supernet id.
pub async fn load(state: &AppState) -> anyhow::Result<String> {
    let manifest = Manifest::from_json(MANIFEST).context("demo manifest")?;
    if let Some(id) = state.db.supernet_named(&manifest.name).await? {
        tracing::info!("demo supernet {:?} already loaded as {id}", manifest.name);
        return Ok(id);
    }
    let id = state.db.insert_supernet(&manifest).await?;
    let samples = planner::eval::npz::ValidationSet::from_npz(VALIDATION)?.len();
    for (what, bytes) in [(Upload::Model, MODEL), (Upload::Validation, VALIDATION)] {
        let stored = state
            .blobs
            .put_bytes(bytes.to_vec())
            .await
            .map_err(|e| anyhow::anyhow!("demo blob: {}", e.message))?;
        state.db.insert_blob(&stored.hash, stored.bytes).await?;
        state
            .db
            .attach_blob(&id, what, &stored.hash, Some(samples))
            .await?;
    }
    let body = PlanBody {
        pareto: Some(CostKind::Size),
        ..PlanBody::default()
    };
    let created = planning::create(state, &id, &body)
        .await
        .map_err(|e| anyhow::anyhow!("demo plan: {}", e.message))?;
    let plan_id = match created {
        Created::Ready { plan } => plan.id,
        Created::Queued { plan, .. } => plan.id,
    };
    let job = crate::api::queue_evaluation(
        state,
        &plan_id,
        None,
        false,
        planner::eval::DEFAULT_BATCH_SIZE,
    )
    .await
    .map_err(|e| anyhow::anyhow!("demo evaluation: {}", e.message))?;
    tracing::info!(
        "demo loaded: supernet {id}, plan {plan_id} (exact size front), evaluation job {}",
        job.id
    );
    Ok(id)
}
