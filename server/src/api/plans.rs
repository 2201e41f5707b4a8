//! Plans, their candidates, evaluations of candidates, and exports.
//!
//! Handlers parse, call `crate::planning` and the store, and serialise; solving is the planner's.

use super::{bad_query, ApiJson, ApiQuery};
use crate::app::{AppState, Gate};
use crate::error::{ApiError, ApiResult};
use crate::planning::{self, Created, PlanBody};
use crate::store::{
    CandidateFilter, CandidatePage, CandidateRow, EvaluateWork, PlanRow, PlanStatus, Work, SORTS,
};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeSet;

pub async fn list(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    state.db.supernet(&id).await?;
    let rows = state.db.plans_of(&id).await?;
    Ok(Json(
        json!({"plans": rows.iter().map(PlanRow::to_json).collect::<Vec<_>>()}),
    ))
}

pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(state.db.plan(&id).await?.to_json()))
}

/// `POST /v1/supernets/{id}/plans`. Small plans are solved at once: 201 with the plan and its
/// first candidates by rank (at most a default page; `candidate_count` is the total, and
/// `GET /v1/plans/{id}/candidates` pages through them), or 422 with the smallest achievable values
/// when the budgets cannot be met. Big pools, or `"async": true`, answer 202 with the pending plan
/// and the job that solves it.
pub async fn create(
    State(state): State<AppState>,
    Path(supernet_id): Path<String>,
    ApiJson(body): ApiJson<PlanBody>,
) -> ApiResult<Response> {
    match planning::create(&state, &supernet_id, &body).await? {
        Created::Queued { plan, job } => {
            let mut v = plan.to_json();
            v["job"] = job.to_json();
            Ok((StatusCode::ACCEPTED, Json(v)).into_response())
        }
        Created::Ready { plan } => {
            let plan_id = plan.id.clone();
            let manifest = state.manifest(&supernet_id).await?;
            let mut v = plan.to_json();
            let names = layer_names(&manifest);
            let first = CandidatePage {
                sort: 0,
                descending: false,
                limit: DEFAULT_PAGE,
                offset: 0,
                filter: CandidateFilter::default(),
                activations: false,
            };
            let (_, rows) = state.db.candidate_page(&plan_id, &first).await?;
            v["candidates"] = json!(rows.iter().map(|c| c.to_json(&names)).collect::<Vec<_>>());
            Ok((StatusCode::CREATED, Json(v)).into_response())
        }
    }
}

fn layer_names(m: &planner::Manifest) -> Vec<String> {
    m.layers.iter().map(|l| l.name.clone()).collect()
}

/// `DELETE /v1/plans/{id}`: the plan and its candidates (a running job is cancelled);
/// evaluations stay, they belong to the supernet's bit configurations.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let plan = state.db.plan(&id).await?;
    if let Some(search) = state.db.search_holding(&plan).await? {
        return Err(ApiError::conflict(format!(
            "plan {id:?} holds the points of search {search:?}: delete the search \
             (DELETE /v1/searches/{search}), which takes its plan with it"
        )));
    }
    let jobs = state.db.delete_plan(&id).await?;
    for j in &jobs {
        state.jobs.changed(j);
    }
    Ok(Json(
        json!({"deleted": id, "with": {"candidates": plan.candidates, "jobs_cancelled": jobs.len()}}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChoiceBody {
    candidate_id: Option<String>,
}

/// `PUT /v1/plans/{id}/choice`: marks one candidate as the one to ship (null clears it).
pub async fn choose(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ChoiceBody>,
) -> ApiResult<Json<Value>> {
    state.db.plan(&id).await?;
    if let Some(c) = &body.candidate_id {
        let owner = state.db.candidate_plan(c).await?;
        if owner.as_deref() != Some(id.as_str()) {
            return Err(ApiError::invalid(
                "candidate_id",
                format!("{c:?} is not a candidate of plan {id:?}"),
            ));
        }
    }
    state.db.choose(&id, body.candidate_id.as_deref()).await?;
    Ok(Json(state.db.plan(&id).await?.to_json()))
}

/// Sorting, filtering and paging of a plan's candidates.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateQuery {
    sort: Option<String>,
    order: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
    /// Only candidates with (true) or without (false) a measurement.
    evaluated: Option<bool>,
    /// Which measurements to join: with activations fake-quantized or not (default).
    activations: Option<bool>,
    max_omega: Option<f64>,
    max_size_bytes: Option<f64>,
    max_bops: Option<f64>,
    max_latency_ms: Option<f64>,
    max_avg_bits: Option<f64>,
    min_accuracy: Option<f64>,
    min_agreement_fp32: Option<f64>,
    /// How each candidate's `bits` is spelled (default: an object by layer name).
    bits: Option<BitsLayout>,
}

/// `bits` as an object by layer name, or as a list in manifest layer order (a fifth of the bytes
/// on a deep network: what a client drawing tens of thousands of candidates asks for).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BitsLayout {
    #[default]
    Object,
    List,
}

const MAX_PAGE: i64 = 10_000;
/// Candidates a page holds unless a query gives `limit`.
const DEFAULT_PAGE: i64 = 1000;

/// `GET /v1/plans/{id}/candidates`.
pub async fn candidates(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<CandidateQuery>,
) -> ApiResult<Response> {
    let plan = state.db.plan(&id).await?;
    let page = page_of(&q)?;
    let (total, rows) = state.db.candidate_page(&id, &page).await?;
    let names = layer_names(&*state.manifest(&plan.supernet_id).await?);
    let head = (id.as_str(), total, page.offset, page.limit);
    Ok(match q.bits.unwrap_or_default() {
        BitsLayout::Object => {
            let listed = rows.iter().map(|c| c.to_json(&names)).collect();
            Json(CandidatesPage::new(head, listed)).into_response()
        }
        BitsLayout::List => {
            let bits: Vec<Vec<u8>> = rows.iter().map(|c| c.bit_list()).collect();
            let listed = rows.iter().zip(&bits).map(|(c, b)| c.body(b)).collect();
            Json(CandidatesPage::new(head, listed)).into_response()
        }
    })
}

/// A page of candidates, serialized as it is (no map per candidate).
#[derive(Serialize)]
struct CandidatesPage<'a, T> {
    plan_id: &'a str,
    total: i64,
    offset: i64,
    limit: i64,
    candidates: Vec<T>,
}

impl<'a, T> CandidatesPage<'a, T> {
    /// `head`: the plan's id, its candidate count, the page's offset and limit.
    fn new((plan_id, total, offset, limit): (&'a str, i64, i64, i64), candidates: Vec<T>) -> Self {
        CandidatesPage {
            plan_id,
            total,
            offset,
            limit,
            candidates,
        }
    }
}

/// The page of a plan's candidates a query asks for, each parameter checked (400 naming it).
fn page_of(q: &CandidateQuery) -> Result<CandidatePage, ApiError> {
    let sort_key = q.sort.as_deref().unwrap_or("rank");
    let sort = SORTS
        .iter()
        .position(|(k, _)| *k == sort_key)
        .ok_or_else(|| {
            bad_query(
                "sort",
                format!(
                    "unknown sort key {sort_key:?}; one of {}",
                    SORTS.map(|(k, _)| k).join(", ")
                ),
            )
        })?;
    let descending = match q.order.as_deref().unwrap_or("asc") {
        "asc" => false,
        "desc" => true,
        other => return Err(bad_query("order", format!("{other:?} is not asc or desc"))),
    };
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(bad_query("limit", format!("must be within 1..={MAX_PAGE}")));
    }
    let offset = q.offset.unwrap_or(0);
    if offset < 0 {
        return Err(bad_query("offset", "must not be negative"));
    }
    let finite = |v: Option<f64>, name: &str| match v {
        Some(x) if !x.is_finite() => Err(bad_query(name, "must be a finite number")),
        _ => Ok(v),
    };
    let filter = CandidateFilter {
        max_omega: finite(q.max_omega, "max_omega")?,
        max_size_bytes: finite(q.max_size_bytes, "max_size_bytes")?,
        max_bops: finite(q.max_bops, "max_bops")?,
        max_latency_ms: finite(q.max_latency_ms, "max_latency_ms")?,
        max_avg_bits: finite(q.max_avg_bits, "max_avg_bits")?,
        min_accuracy: finite(q.min_accuracy, "min_accuracy")?,
        min_agreement_fp32: finite(q.min_agreement_fp32, "min_agreement_fp32")?,
        evaluated: q.evaluated,
    };
    Ok(CandidatePage {
        sort,
        descending,
        limit,
        offset,
        filter,
        activations: q.activations.unwrap_or(false),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsQuery {
    activations: Option<bool>,
}

pub async fn candidate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<MetricsQuery>,
) -> ApiResult<Json<Value>> {
    let activations = q.activations.unwrap_or(false);
    let row = state.db.candidate(&id, activations).await?;
    let names = layer_names(&*state.manifest(&row.supernet_id).await?);
    Ok(Json(row.to_json(&names)))
}

/// `GET /v1/candidates/{id}/config`: the bit configuration to ship, as a JSON download.
pub async fn config(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let row = state.db.candidate(&id, false).await?;
    let manifest = state.manifest(&row.supernet_id).await?;
    let bits = manifest.bits_json(&row.bit_list());
    let body = json!({
        "supernet_id": row.supernet_id,
        "supernet": manifest.name,
        "candidate_id": row.fields.id,
        "bits": bits,
    });
    Ok((
        [(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{id}.bits.json\""),
        )],
        Json(body),
    )
        .into_response())
}

/// `GET /v1/candidates/{id}/model.onnx`: the deployable QDQ model (int8 storage, per-channel
/// DequantizeLinear at each layer's planned bits).
pub async fn export_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let place = state.admit(Gate::Export)?;
    let row = state.db.candidate(&id, false).await?;
    let supernet = state.db.supernet(&row.supernet_id).await?;
    let hash = supernet.model_hash.ok_or_else(|| {
        ApiError::conflict(format!(
            "supernet {:?} has no model: PUT /v1/supernets/{}/model first",
            supernet.id, supernet.id
        ))
    })?;
    let model = state.blobs.read(&hash).await?;
    let manifest = state.manifest(&row.supernet_id).await?;
    let bits = row.bit_list();
    let qdq = tokio::task::spawn_blocking(move || {
        // Held by the blocking work, which a dropped request does not stop.
        let _place = place;
        let model = planner::eval::onnx::OnnxModel::from_bytes(&model)?;
        planner::eval::export::export_qdq(&model, &manifest, &bits)
    })
    .await
    .map_err(|e| ApiError::internal("export task", e))??;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.qdq.onnx\""),
            ),
        ],
        qdq,
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateBody {
    /// Which candidates; all of the plan's when absent.
    #[serde(default)]
    candidate_ids: Option<Vec<String>>,
    #[serde(default)]
    quantize_activations: bool,
    #[serde(default = "crate::planning::default_batch_size")]
    batch_size: usize,
}

/// `POST /v1/plans/{id}/evaluations`: a job that measures the candidates on the supernet's
/// validation set. Bit configurations measured before (by any plan) are not measured again.
pub async fn evaluate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<EvaluateBody>,
) -> ApiResult<Response> {
    let job = queue_evaluation(
        &state,
        &id,
        body.candidate_ids.as_deref(),
        body.quantize_activations,
        body.batch_size,
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(job.to_json())).into_response())
}

/// Queues the evaluation of a ready plan's candidates (all when `candidate_ids` is `None`);
/// returns the job.
pub async fn queue_evaluation(
    state: &AppState,
    plan_id: &str,
    candidate_ids: Option<&[String]>,
    quantize_activations: bool,
    batch_size: usize,
) -> ApiResult<crate::store::JobRow> {
    let plan = state.db.plan(plan_id).await?;
    if plan.status != PlanStatus::Ready {
        return Err(ApiError::conflict(format!(
            "plan {plan_id:?} is {}: only a ready plan's candidates can be evaluated",
            plan.status
        )));
    }
    super::check_batch_size(batch_size)?;
    let supernet = state.db.supernet(&plan.supernet_id).await?;
    if !supernet.measurable() {
        return Err(ApiError::conflict(format!(
            "supernet {:?} needs its ONNX model and validation set before evaluation \
             (PUT /v1/supernets/{}/model and /validation)",
            supernet.id, supernet.id
        )));
    }
    let rows = state
        .db
        .candidates_of(plan_id, quantize_activations)
        .await?;
    let chosen = chosen_candidates(&rows, candidate_ids, plan_id)?;
    let _queueing = state.admit_job().await?;
    // Distinct configurations, in the order asked.
    let mut seen = BTreeSet::new();
    let bits: Vec<String> = chosen
        .iter()
        .map(|r| r.fields.bits.clone())
        .filter(|b| seen.insert(b.clone()))
        .collect();
    let total = bits.len();
    let work = Work::Evaluate(EvaluateWork {
        bits,
        quantize_activations,
        batch_size,
    });
    let job = state
        .db
        .queue_job(&plan.supernet_id, Some(plan_id), &work, total)
        .await?;
    state.jobs.wake.notify_one();
    Ok(job)
}

/// The plan's candidates an evaluation asks for, in the order asked: all of them when
/// `candidate_ids` is `None`; an empty list or an id not of the plan is a 422 naming it.
fn chosen_candidates<'a>(
    rows: &'a [CandidateRow],
    candidate_ids: Option<&[String]>,
    plan_id: &str,
) -> ApiResult<Vec<&'a CandidateRow>> {
    match candidate_ids {
        None => Ok(rows.iter().collect()),
        Some([]) => Err(ApiError::invalid(
            "candidate_ids",
            "must not be empty (omit it for all)",
        )),
        Some(ids) if ids.len() > MAX_PAGE as usize => Err(ApiError::invalid(
            "candidate_ids",
            format!("lists {} candidates, more than {MAX_PAGE}", ids.len()),
        )),
        Some(ids) => {
            let by_id: std::collections::HashMap<&str, &CandidateRow> =
                rows.iter().map(|r| (r.fields.id.as_str(), r)).collect();
            ids.iter()
                .enumerate()
                .map(|(i, cid)| {
                    by_id.get(cid.as_str()).copied().ok_or_else(|| {
                        ApiError::invalid(
                            format!("candidate_ids[{i}]"),
                            format!("{cid:?} is not a candidate of plan {plan_id:?}"),
                        )
                    })
                })
                .collect()
        }
    }
}
