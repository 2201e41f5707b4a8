//! Supernets: a manifest, then its ONNX model and validation set as content-addressed blobs.
//!
//! Handlers check and store; measuring a supernet is a job's (`crate::jobs::sensitivity`).

use super::{ApiJson, ApiQuery};
use crate::app::{AppState, Gate};
use crate::error::{ApiError, ApiResult};
use crate::store::{Deleted, SensitivityWork, Upload, Work};
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
    let rows = state.db.supernets().await?;
    Ok(Json(json!({
        "supernets": rows.iter().map(|r| r.to_json(false)).collect::<Vec<_>>()
    })))
}

pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(state.db.supernet(&id).await?.to_json(true)))
}

/// `POST /v1/supernets`: the body is a manifest; answers 201 with the stored supernet and any
/// warnings (fields it does not read, traces priced as not free).
pub async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let max = state.config.max_layers;
    if let Some(layers) = body["layers"].as_array().filter(|l| l.len() > max) {
        return Err(ApiError::invalid(
            "layers",
            format!(
                "lists {} layers, more than the {max} a manifest may hold here (--max-layers)",
                layers.len()
            ),
        ));
    }
    let manifest = Manifest::from_value(body)?;
    let id = state.db.insert_supernet(&manifest).await?;
    let mut v = state.db.supernet(&id).await?.to_json(true);
    v["warnings"] = json!(manifest.warnings);
    Ok((StatusCode::CREATED, Json(v)).into_response())
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
    let (dependents, unfinished) = match state.db.delete_supernet(&id, q.cascade).await? {
        Deleted::Refused(d) => {
            return Err(ApiError::conflict(format!(
                "supernet {id:?} has {} plans, {} candidates, {} evaluations, {} fleet plans, {} \
                 searches and {} jobs; delete with ?cascade=true to remove them too",
                d.plans, d.candidates, d.evaluations, d.fleet_plans, d.searches, d.jobs
            ))
            .with_details(json!({ "would_delete": dependents_json(&d) })))
        }
        Deleted::Removed {
            dependents,
            unfinished_jobs,
        } => (dependents, unfinished_jobs),
    };
    for job in &unfinished {
        state.jobs.changed(job);
    }
    state.forget_supernet(&id);
    collect_garbage(&state).await?;
    Ok(Json(
        json!({"deleted": id, "with": dependents_json(&dependents)}),
    ))
}

fn dependents_json(d: &crate::store::Dependents) -> Value {
    json!({
        "plans": d.plans,
        "candidates": d.candidates,
        "evaluations": d.evaluations,
        "fleet_plans": d.fleet_plans,
        "searches": d.searches,
        "jobs": d.jobs,
    })
}

/// Deletes blobs no supernet refers to and no upload has pinned (rows, then files), apart from
/// uploads placing theirs.
pub async fn collect_garbage(state: &AppState) -> ApiResult<()> {
    let _gate = state.blobs.gate().lock().await;
    for hash in state.db.collect_blob_rows().await? {
        state.blobs.remove(&hash).await;
    }
    Ok(())
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
    let place = state.admit(Gate::Upload)?;
    state.db.supernet(id).await?;
    let received = state
        .blobs
        .receive(body, state.config.max_upload_bytes, what.field())
        .await?;
    // Placed and pinned together, apart from garbage collection: it cannot delete the file
    // between its rename and its (pinned) row.
    let stored = {
        let _gate = state.blobs.gate().lock().await;
        let stored = state.blobs.place(received).await?;
        state.db.insert_blob(&stored.hash, stored.bytes).await?;
        stored
    };
    let checked = check_upload(state, id, what, &stored.hash, place).await;
    let samples = match checked {
        Ok(samples) => samples,
        Err(e) => {
            state.db.unpin_blob(&stored.hash).await?;
            collect_garbage(state).await?;
            return Err(e);
        }
    };
    // The sample count is the set's as the model reads it, so a model upload recounts it too.
    let attached = state
        .db
        .attach_blob(id, what, &stored.hash, samples)
        .await?;
    if !attached {
        collect_garbage(state).await?;
        return Err(ApiError::not_found("supernet", id));
    }
    collect_garbage(state).await?;
    Ok(Json(state.db.supernet(id).await?.to_json(false)))
}

/// Parses the uploaded file and checks it fits; returns the sample count of the validation set
/// (as the model reads it, when both are present).
async fn check_upload(
    state: &AppState,
    id: &str,
    what: Upload,
    hash: &str,
    place: tokio::sync::OwnedSemaphorePermit,
) -> ApiResult<Option<usize>> {
    let manifest = state.manifest(id).await?;
    let row = state.db.supernet(id).await?;
    let bytes = state.blobs.read(hash).await?;
    let other = match what {
        Upload::Model => row.data_hash.clone(),
        Upload::Validation => row.model_hash.clone(),
    };
    let other = match other {
        Some(h) => Some(state.blobs.read(&h).await?),
        None => None,
    };
    let max_npz_bytes = state.config.max_npz_bytes;
    tokio::task::spawn_blocking(move || {
        // The upload's place is held by the parsing, which a dropped request does not stop.
        let _place = place;
        let (model_bytes, data_bytes) = match what {
            Upload::Model => (Some(bytes), other),
            Upload::Validation => (other, Some(bytes)),
        };
        let data = data_bytes
            .map(|b| ValidationSet::from_npz_within(&b, max_npz_bytes))
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
    #[serde(default = "crate::planning::default_batch_size")]
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
    let supernet = state.db.supernet(&id).await?;
    if !supernet.measurable() {
        return Err(ApiError::conflict(format!(
            "supernet {id:?} needs its ONNX model and validation set before its sensitivity can be \
             measured (PUT /v1/supernets/{id}/model and /validation)"
        )));
    }
    let manifest = state.manifest(&id).await?;
    let _queueing = state.admit_job().await?;
    let total: usize = manifest.layers.iter().map(|l| l.choices().len()).sum();
    let work = Work::Sensitivity(SensitivityWork {
        metric: body.metric,
        batch_size: body.batch_size,
    });
    let job = state
        .db
        .queue_job_alone(&id, &work, total)
        .await?
        .map_err(|job| {
            ApiError::conflict(format!(
            "supernet {id:?} already has a sensitivity job in progress ({job}); cancel it or wait"
        ))
            .with_details(json!({ "job_id": job }))
        })?;
    state.jobs.wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(job.to_json())).into_response())
}

pub async fn get_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let row = state.db.supernet(&id).await?;
    let hash = row.model_hash.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("supernet {id:?} has no model yet (PUT /v1/supernets/{id}/model)"),
        )
    })?;
    let (body, len) = state.blobs.stream(&hash).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (header::ETAG, format!("\"{hash}\"")),
        ],
        body,
    )
        .into_response())
}
