//! Searches: `POST /v1/supernets/{id}/searches` queues a job that plans, measures, refits and
//! plans again within an evaluation budget; the search row holds the request and, once done,
//! its rounds and measured front. The loop is `crate::search`'s and the planner's.

use super::ApiJson;
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::search::SearchBody;
use crate::store::SearchRow;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// `POST /v1/supernets/{id}/searches`: checks the request against the supernet and answers 202
/// with the pending search and its job.
pub async fn create(
    State(state): State<AppState>,
    Path(supernet_id): Path<String>,
    ApiJson(body): ApiJson<SearchBody>,
) -> ApiResult<Response> {
    let manifest = state.manifest(&supernet_id).await?;
    body.prepare(&manifest)?;
    super::check_batch_size(body.batch_size)?;
    let supernet = state.db.supernet(&supernet_id).await?;
    if !supernet.measurable() {
        return Err(ApiError::conflict(format!(
            "a search measures: supernet {supernet_id:?} needs its model and validation set \
             (PUT /v1/supernets/{supernet_id}/model and /validation)"
        )));
    }
    let request = serde_json::to_value(&body).expect("JSON");
    let _queueing = state.admit_job().await?;
    let (search, job) = state
        .db
        .queue_search(&supernet_id, &request, body.evaluations)
        .await?;
    state.jobs.wake.notify_one();
    let mut v = search.to_json();
    v["job"] = job.to_json();
    Ok((StatusCode::ACCEPTED, Json(v)).into_response())
}

/// `GET /v1/supernets/{id}/searches`: the supernet's searches, newest first, each result
/// without its points and predicted front (`GET /v1/searches/{id}` has them).
pub async fn list(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    state.db.supernet(&id).await?;
    let rows = state.db.searches_of(&id).await?;
    Ok(Json(
        json!({"searches": rows.iter().map(SearchRow::to_summary_json).collect::<Vec<_>>()}),
    ))
}

/// `GET /v1/searches/{id}`: the search, with its result once its job is done.
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(state.db.search(&id).await?.to_json()))
}

/// `DELETE /v1/searches/{id}`: the search and the plan holding its points (a running job is
/// cancelled); its measurements stay, they belong to the supernet's bit configurations.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let deleted = state.db.delete_search(&id).await?;
    for j in &deleted.jobs {
        state.jobs.changed(j);
    }
    Ok(Json(json!({
        "deleted": id,
        "with": {
            "plan": deleted.plan_id,
            "candidates": deleted.candidates,
            "jobs_cancelled": deleted.jobs.len(),
        },
    })))
}
