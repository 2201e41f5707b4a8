//! Supernets: a manifest, then its ONNX model and validation set as content-addressed blobs.
//!
//! Handlers check and store; measuring a supernet is a job's (`crate::jobs::sensitivity`).

use super::{ApiJson, ApiQuery};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::store::{self, new_id, now_ms};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use planner::eval::npz::ValidationSet;
use planner::eval::onnx::OnnxModel;
use planner::Manifest;
use serde::Deserialize;
use serde_json::{json, Value};

pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let rows = store::supernets(&state.db).await?;
    Ok(Json(json!({
        "supernets": rows.iter().map(|r| r.to_json(false)).collect::<Vec<_>>()
    })))
}

pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(store::supernet(&state.db, &id).await?.to_json(true)))
}

/// `POST /v1/supernets`: the body is a manifest; answers 201 with the stored supernet and any
/// warnings (fields it does not read, traces priced as not free).
pub async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let manifest = Manifest::from_value(body)?;
    let id = create_supernet(&state, &manifest).await?;
    let mut v = store::supernet(&state.db, &id).await?.to_json(true);
    v["warnings"] = json!(manifest.warnings);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// Stores a checked manifest as a new supernet.
pub async fn create_supernet(state: &AppState, manifest: &Manifest) -> ApiResult<String> {
    let id = new_id("sn");
    sqlx::query(
        "INSERT INTO supernets (id, name, manifest, layers, params, created_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&id)
    .bind(&manifest.name)
    .bind(manifest.to_json().to_string())
    .bind(manifest.layers.len() as i64)
    .bind(manifest.total_params() as i64)
    .bind(now_ms())
    .execute(&state.db.write)
    .await?;
    Ok(id)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    #[serde(default)]
    cascade: bool,
}

/// `DELETE /v1/supernets/{id}`: refuses (409, with counts) while plans, evaluations or jobs
/// depend on it, unless `?cascade=true`; then reports what went with it.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> ApiResult<Json<Value>> {
    store::supernet(&state.db, &id).await?;
    // One transaction: what is counted is what is deleted.
    let mut tx = state.db.write.begin().await?;
    let dependents = dependents(&mut tx, &id).await?;
    let has_any = dependents.values().any(|n| n.as_i64().unwrap_or(0) > 0);
    if has_any && !q.cascade {
        return Err(ApiError::conflict(format!(
            "supernet {id:?} has {} plans, {} candidates, {} evaluations, {} fleet plans and {} jobs; \
             delete with ?cascade=true to remove them too",
            dependents["plans"], dependents["candidates"], dependents["evaluations"],
            dependents["fleet_plans"], dependents["jobs"]
        ))
        .with_details(json!({ "would_delete": dependents })));
    }
    let running: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM jobs WHERE supernet_id = ? AND status IN ('queued', 'running')",
    )
    .bind(&id)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM supernets WHERE id = ?")
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    for job in &running {
        state.jobs.cancel(job);
    }
    for job in &running {
        state.jobs.changed(job);
    }
    state.forget_manifest(&id);
    collect_garbage(&state).await?;
    Ok(Json(json!({"deleted": id, "with": dependents})))
}

async fn dependents(
    tx: &mut sqlx::SqliteConnection,
    id: &str,
) -> ApiResult<serde_json::Map<String, Value>> {
    let mut out = serde_json::Map::new();
    for (name, sql) in [
        ("plans", "SELECT COUNT(*) FROM plans WHERE supernet_id = ?"),
        (
            "candidates",
            "SELECT COUNT(*) FROM candidates WHERE supernet_id = ?",
        ),
        (
            "evaluations",
            "SELECT COUNT(*) FROM evaluations WHERE supernet_id = ?",
        ),
        ("jobs", "SELECT COUNT(*) FROM jobs WHERE supernet_id = ?"),
        (
            "fleet_plans",
            "SELECT COUNT(*) FROM fleet_plans WHERE supernet_id = ?",
        ),
    ] {
        let n: i64 = sqlx::query_scalar(sql).bind(id).fetch_one(&mut *tx).await?;
        out.insert(name.into(), json!(n));
    }
    Ok(out)
}

/// Deletes blobs no supernet refers to (rows, then files).
pub async fn collect_garbage(state: &AppState) -> ApiResult<()> {
    let orphans: Vec<String> = sqlx::query_scalar(
        "DELETE FROM blobs WHERE hash NOT IN (SELECT model_hash FROM supernets WHERE model_hash IS NOT NULL \
         UNION SELECT data_hash FROM supernets WHERE data_hash IS NOT NULL) RETURNING hash",
    )
    .fetch_all(&state.db.write)
    .await?;
    for hash in orphans {
        state.blobs.remove(&hash).await;
    }
    Ok(())
}

/// Which upload: the ONNX model or the validation set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    Model,
    Validation,
}

impl Upload {
    fn field(self) -> &'static str {
        match self {
            Upload::Model => "model",
            Upload::Validation => "validation",
        }
    }
}

pub async fn put_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Json<Value>> {
    upload(&state, &id, Upload::Model, body).await
}

pub async fn put_validation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Json<Value>> {
    upload(&state, &id, Upload::Validation, body).await
}

/// Streams an upload to the blob store, checks it against the manifest (and the other file, when
/// present), then points the supernet at it. A refused upload leaves the supernet as it was.
async fn upload(state: &AppState, id: &str, what: Upload, body: Body) -> ApiResult<Json<Value>> {
    store::supernet(&state.db, id).await?;
    let stored = state
        .blobs
        .put_stream(body, state.config.max_upload_bytes, what.field())
        .await?;
    sqlx::query("INSERT OR IGNORE INTO blobs (hash, bytes, created_at) VALUES (?, ?, ?)")
        .bind(&stored.hash)
        .bind(stored.bytes as i64)
        .bind(now_ms())
        .execute(&state.db.write)
        .await?;
    let checked = check_upload(state, id, what, &stored.hash).await;
    let samples = match checked {
        Ok(samples) => samples,
        Err(e) => {
            collect_garbage(state).await?;
            return Err(e);
        }
    };
    // The sample count is the set's as the model reads it, so a model upload recounts it too.
    let sql = match what {
        Upload::Model => {
            "UPDATE supernets SET model_hash = ?, data_samples = COALESCE(?, data_samples) WHERE id = ?"
        }
        Upload::Validation => "UPDATE supernets SET data_hash = ?, data_samples = ? WHERE id = ?",
    };
    let updated = sqlx::query(sql)
        .bind(&stored.hash)
        .bind(samples.map(|s| s as i64))
        .bind(id)
        .execute(&state.db.write)
        .await?;
    if updated.rows_affected() == 0 {
        collect_garbage(state).await?;
        return Err(ApiError::not_found("supernet", id));
    }
    collect_garbage(state).await?;
    Ok(Json(store::supernet(&state.db, id).await?.to_json(false)))
}

/// Parses the uploaded file and checks it fits; returns the sample count of the validation set
/// (as the model reads it, when both are present).
async fn check_upload(
    state: &AppState,
    id: &str,
    what: Upload,
    hash: &str,
) -> ApiResult<Option<usize>> {
    let manifest = state.manifest(id).await?;
    let row = store::supernet(&state.db, id).await?;
    let bytes = state.blobs.read(hash).await?;
    let other = match what {
        Upload::Model => row.data_hash.clone(),
        Upload::Validation => row.model_hash.clone(),
    };
    let other = match other {
        Some(h) => Some(state.blobs.read(&h).await?),
        None => None,
    };
    tokio::task::spawn_blocking(move || {
        let (model_bytes, data_bytes) = match what {
            Upload::Model => (Some(bytes), other),
            Upload::Validation => (other, Some(bytes)),
        };
        let data = data_bytes
            .map(|b| ValidationSet::from_npz(&b))
            .transpose()
            .map_err(|e| ApiError::from(e).under("validation."))?;
        if let Some(b) = model_bytes {
            let model = OnnxModel::from_bytes(&b).map_err(|e| ApiError::from(e).under("model."))?;
            model
                .require_external_data()
                .map_err(|e| ApiError::from(e).under("model."))?;
            model
                .link_layers(&manifest)
                .map_err(|e| ApiError::from(e).under("model."))?;
            model
                .scored_output(manifest.output.as_deref())
                .map_err(|e| ApiError::from(e).under("manifest."))?;
            if let Some(d) = &data {
                let bound = d
                    .bind(&model)
                    .map_err(|e| ApiError::from(e).under("validation."))?;
                return Ok(Some(bound.len()));
            }
        }
        Ok(data.map(|d| d.len()))
    })
    .await
    .map_err(|e| ApiError::internal("upload check", e))?
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensitivityBody {
    #[serde(default)]
    metric: planner::Divergence,
    #[serde(default = "super::default_batch")]
    batch_size: usize,
}

/// `POST /v1/supernets/{id}/sensitivity`: queues the measurement of every layer's sensitivity on
/// the supernet's model and validation set; answers 202 with the job. One such job per supernet
/// at a time (409 names the one running).
pub async fn measure_sensitivity(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SensitivityBody>,
) -> ApiResult<Response> {
    super::check_batch_size(body.batch_size)?;
    let supernet = store::supernet(&state.db, &id).await?;
    if supernet.model_hash.is_none() || supernet.data_hash.is_none() {
        return Err(ApiError::conflict(format!(
            "supernet {id:?} needs its ONNX model and validation set before its sensitivity can be \
             measured (PUT /v1/supernets/{id}/model and /validation)"
        )));
    }
    let manifest = state.manifest(&id).await?;
    let total: usize = manifest.layers.iter().map(|l| l.choices().len()).sum();
    let payload = json!({"metric": body.metric, "batch_size": body.batch_size});
    let job_id = new_id("job");
    let mut tx = state.db.write.begin().await?;
    let running: Option<String> = sqlx::query_scalar(
        "SELECT id FROM jobs WHERE supernet_id = ? AND kind = 'sensitivity' \
         AND status IN ('queued', 'running') LIMIT 1",
    )
    .bind(&id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(job) = running {
        return Err(ApiError::conflict(format!(
            "supernet {id:?} already has a sensitivity job in progress ({job}); cancel it or wait"
        ))
        .with_details(json!({ "job_id": job })));
    }
    store::insert_job(
        &mut tx,
        &job_id,
        "sensitivity",
        &id,
        None,
        &payload,
        total as i64,
    )
    .await?;
    tx.commit().await?;
    state.jobs.wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(store::job(&state.db, &job_id).await?.to_json()),
    )
        .into_response())
}

pub async fn get_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let row = store::supernet(&state.db, &id).await?;
    let hash = row.model_hash.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("supernet {id:?} has no model yet (PUT /v1/supernets/{id}/model)"),
        )
    })?;
    let bytes = state.blobs.read(&hash).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::ETAG, format!("\"{hash}\"")),
        ],
        bytes,
    )
        .into_response())
}
