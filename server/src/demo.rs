//! The demo supernet: the digits CNN (a real trained network with measured Double Rounding
//! errors), its model and 540 held-out images, compiled into the binary. Loading it stores the
//! supernet, plans the exact size/Omega front and queues the front's evaluation, so a new user
//! sees real plans and measured accuracies within a minute.

use crate::app::AppState;
use crate::planning::{self, Created, PlanBody};
use anyhow::Context;
use planner::{CostKind, Manifest};

pub const MANIFEST: &str = include_str!("../../examples/digits-cnn.manifest.json");
pub const MODEL: &[u8] = include_bytes!("../../testdata/digits-cnn/digits_cnn.onnx");
pub const VALIDATION: &[u8] = include_bytes!("../../testdata/digits-cnn/digits_val.npz");

/// Loads the demo unless a supernet of its name exists. Returns the supernet id.
pub async fn load(state: &AppState) -> anyhow::Result<String> {
    let manifest = Manifest::from_json(MANIFEST).context("demo manifest")?;
    let existing: Option<String> =
        sqlx::query_scalar("SELECT id FROM supernets WHERE name = ? ORDER BY created_at LIMIT 1")
            .bind(&manifest.name)
            .fetch_optional(&state.db.read)
            .await?;
    if let Some(id) = existing {
        tracing::info!("demo supernet {:?} already loaded as {id}", manifest.name);
        return Ok(id);
    }
    let id = crate::api::create_supernet(state, &manifest)
        .await
        .map_err(|e| anyhow::anyhow!("demo supernet: {}", e.message))?;
    let samples = planner::eval::npz::ValidationSet::from_npz(VALIDATION)?.len();
    let mut hashes = Vec::new();
    for bytes in [MODEL, VALIDATION] {
        let stored = state
            .blobs
            .put_bytes(bytes.to_vec())
            .await
            .map_err(|e| anyhow::anyhow!("demo blob: {}", e.message))?;
        sqlx::query("INSERT OR IGNORE INTO blobs (hash, bytes, created_at) VALUES (?, ?, ?)")
            .bind(&stored.hash)
            .bind(stored.bytes as i64)
            .bind(crate::store::now_ms())
            .execute(&state.db.write)
            .await?;
        hashes.push(stored.hash);
    }
    sqlx::query(
        "UPDATE supernets SET model_hash = ?, data_hash = ?, data_samples = ? WHERE id = ?",
    )
    .bind(&hashes[0])
    .bind(&hashes[1])
    .bind(samples as i64)
    .bind(&id)
    .execute(&state.db.write)
    .await?;
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
        "demo loaded: supernet {id}, plan {plan_id} (exact size front), evaluation job {job}"
    );
    Ok(id)
}
