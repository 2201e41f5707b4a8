//! Plans, their candidates, evaluations of candidates, and exports.
//!
//! Handlers parse, call `crate::planning` and the store, and serialise; solving is the planner's.

use super::{ApiJson, ApiQuery};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::planning::{self, Created, PlanBody};
use crate::store::{self, new_id, now_ms, CandidateRow, CANDIDATE_SELECT};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::sqlite::SqliteArguments;
use sqlx::Arguments;
use std::collections::BTreeSet;

pub async fn list(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    store::supernet(&state.db, &id).await?;
    let rows = store::plans_of(&state.db, &id).await?;
    Ok(Json(
        json!({"plans": rows.iter().map(store::PlanRow::to_json).collect::<Vec<_>>()}),
    ))
}

pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(store::plan(&state.db, &id).await?.to_json()))
}

/// `POST /v1/supernets/{id}/plans`. Small plans are solved at once: 201 with the plan and its
/// candidates (422 with the smallest achievable values when the budgets cannot be met). Big
/// pools, or `"async": true`, answer 202 with the pending plan and the job that solves it.
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
            v["candidates"] = json!(load_candidates(&state, &plan_id, false)
                .await?
                .iter()
                .map(|c| c.to_json(&names, false))
                .collect::<Vec<_>>());
            Ok((StatusCode::CREATED, Json(v)).into_response())
        }
    }
}

fn layer_names(m: &planner::Manifest) -> Vec<String> {
    m.layers.iter().map(|l| l.name.clone()).collect()
}

async fn load_candidates(
    state: &AppState,
    plan_id: &str,
    activations: bool,
) -> ApiResult<Vec<CandidateRow>> {
    Ok(
        sqlx::query_as::<_, CandidateRow>(sqlx::AssertSqlSafe(format!(
            "{CANDIDATE_SELECT} WHERE c.plan_id = ? ORDER BY c.position"
        )))
        .bind(activations)
        .bind(plan_id)
        .fetch_all(&state.db.read)
        .await?,
    )
}

/// `DELETE /v1/plans/{id}`: the plan and its candidates (a running job is cancelled);
/// evaluations stay, they belong to the supernet's bit configurations.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let plan = store::plan(&state.db, &id).await?;
    let mut tx = state.db.write.begin().await?;
    let jobs: Vec<String> = sqlx::query_scalar(
        "UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE plan_id = ? \
         AND status IN ('queued', 'running') RETURNING id",
    )
    .bind(now_ms())
    .bind(&id)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE jobs SET status = 'cancelled', finished_at = ?, message = 'plan deleted' \
         WHERE plan_id = ? AND status = 'queued'",
    )
    .bind(now_ms())
    .bind(&id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM plans WHERE id = ?")
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    for j in &jobs {
        state.jobs.cancel(j);
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
    store::plan(&state.db, &id).await?;
    if let Some(c) = &body.candidate_id {
        let owner: Option<String> =
            sqlx::query_scalar("SELECT plan_id FROM candidates WHERE id = ?")
                .bind(c)
                .fetch_optional(&state.db.read)
                .await?;
        if owner.as_deref() != Some(id.as_str()) {
            return Err(ApiError::invalid(
                "candidate_id",
                format!("{c:?} is not a candidate of plan {id:?}"),
            ));
        }
    }
    sqlx::query("UPDATE plans SET chosen_candidate_id = ?, updated_at = ? WHERE id = ?")
        .bind(&body.candidate_id)
        .bind(now_ms())
        .bind(&id)
        .execute(&state.db.write)
        .await?;
    Ok(Json(store::plan(&state.db, &id).await?.to_json()))
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
}

/// Sort keys and their columns.
const SORTS: [(&str, &str); 14] = [
    ("rank", "c.position"),
    ("omega", "c.omega"),
    ("size_bytes", "c.size_bytes"),
    ("bops", "c.bops"),
    ("avg_bits", "c.avg_bits"),
    ("latency_ms", "c.latency_ms"),
    ("accuracy", "e.accuracy"),
    ("agreement_fp32", "e.agreement_fp32"),
    ("kl_fp32", "e.kl_fp32"),
    ("sqnr_db", "e.sqnr_db"),
    ("cosine_mean", "e.cosine_mean"),
    ("cosine_min", "e.cosine_min"),
    ("rel_l2", "e.rel_l2"),
    ("measured_latency_ms", "e.latency_ms"),
];

const MAX_PAGE: i64 = 10_000;
/// Candidates a page holds unless a query gives `limit`.
const DEFAULT_PAGE: i64 = 1000;

/// `GET /v1/plans/{id}/candidates`.
pub async fn candidates(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<CandidateQuery>,
) -> ApiResult<Json<Value>> {
    let plan = store::plan(&state.db, &id).await?;
    let Page {
        column,
        order,
        limit,
        offset,
    } = Page::of(&q)?;
    let filter = CandidateFilter::of(&q)?;
    let filters = &filter.sql;
    let activations = q.activations.unwrap_or(false);
    let count_args = filter.arguments(activations, &id)?;
    let mut page_args = count_args.clone();
    Arguments::add(&mut page_args, limit).map_err(sqlx::Error::Encode)?;
    Arguments::add(&mut page_args, offset).map_err(sqlx::Error::Encode)?;
    let sql = format!(
        "{CANDIDATE_SELECT}{filters} ORDER BY ({column} IS NULL), {column} {order}, c.position LIMIT ? OFFSET ?"
    );
    let rows = sqlx::query_as_with::<_, CandidateRow, _>(sqlx::AssertSqlSafe(sql), page_args)
        .fetch_all(&state.db.read)
        .await?;
    let count_sql = format!(
        "SELECT COUNT(*) FROM candidates c LEFT JOIN evaluations e ON e.supernet_id = c.supernet_id \
         AND e.bits = c.bits AND e.quantize_activations = ?{filters}"
    );
    let total = sqlx::query_scalar_with::<_, i64, _>(sqlx::AssertSqlSafe(count_sql), count_args)
        .fetch_one(&state.db.read)
        .await?;
    let names = layer_names(&*state.manifest(&plan.supernet_id).await?);
    Ok(Json(json!({
        "plan_id": id,
        "total": total,
        "offset": offset,
        "limit": limit,
        "candidates": rows.iter().map(|c| c.to_json(&names, activations)).collect::<Vec<_>>(),
    })))
}

/// Which page of a plan's candidates a query asks for: the sort column and direction, the page
/// size and where it starts.
struct Page {
    column: &'static str,
    order: &'static str,
    limit: i64,
    offset: i64,
}

impl Page {
    /// The page a query asks for, each parameter checked (400 naming it).
    fn of(q: &CandidateQuery) -> Result<Page, ApiError> {
        let sort = q.sort.as_deref().unwrap_or("rank");
        let column = SORTS
            .iter()
            .find(|(k, _)| *k == sort)
            .map(|(_, c)| *c)
            .ok_or_else(|| {
                bad_query(
                    "sort",
                    format!(
                        "unknown sort key {sort:?}; one of {}",
                        SORTS.map(|(k, _)| k).join(", ")
                    ),
                )
            })?;
        let order = match q.order.as_deref().unwrap_or("asc") {
            "asc" => "ASC",
            "desc" => "DESC",
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
        Ok(Page {
            column,
            order,
            limit,
            offset,
        })
    }
}

/// The candidates a query keeps: SQL from ` WHERE c.plan_id = ?` on, made of fixed fragments,
/// and the bound values of its thresholds in placeholder order.
struct CandidateFilter {
    sql: String,
    values: Vec<f64>,
}

impl CandidateFilter {
    /// The filter a query asks for; a threshold that is not a finite number is a 400 naming it.
    fn of(q: &CandidateQuery) -> Result<CandidateFilter, ApiError> {
        let mut sql = String::from(" WHERE c.plan_id = ?");
        let mut values: Vec<f64> = Vec::new();
        for (value, fragment, name) in [
            (q.max_omega, " AND c.omega <= ?", "max_omega"),
            (q.max_size_bytes, " AND c.size_bytes <= ?", "max_size_bytes"),
            (q.max_bops, " AND c.bops <= ?", "max_bops"),
            (q.max_latency_ms, " AND c.latency_ms <= ?", "max_latency_ms"),
            (q.max_avg_bits, " AND c.avg_bits <= ?", "max_avg_bits"),
            (q.min_accuracy, " AND e.accuracy >= ?", "min_accuracy"),
            (
                q.min_agreement_fp32,
                " AND e.agreement_fp32 >= ?",
                "min_agreement_fp32",
            ),
        ] {
            if let Some(v) = value {
                if !v.is_finite() {
                    return Err(bad_query(name, "must be a finite number"));
                }
                sql.push_str(fragment);
                values.push(v);
            }
        }
        match q.evaluated {
            Some(true) => sql.push_str(" AND e.created_at IS NOT NULL"),
            Some(false) => sql.push_str(" AND e.created_at IS NULL"),
            None => {}
        }
        Ok(CandidateFilter { sql, values })
    }

    /// The values a query joined on evaluations and filtered by this binds, in placeholder
    /// order: which measurements to join, the plan, then each threshold.
    fn arguments(&self, activations: bool, plan_id: &str) -> Result<SqliteArguments, sqlx::Error> {
        let mut args = SqliteArguments::default();
        Arguments::add(&mut args, activations).map_err(sqlx::Error::Encode)?;
        Arguments::add(&mut args, plan_id).map_err(sqlx::Error::Encode)?;
        for v in &self.values {
            Arguments::add(&mut args, *v).map_err(sqlx::Error::Encode)?;
        }
        Ok(args)
    }
}

fn bad_query(name: &str, reason: impl Into<String>) -> ApiError {
    let mut e = ApiError::invalid(name, reason);
    e.status = StatusCode::BAD_REQUEST;
    e.code = "invalid_query";
    e
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
    let row = store::candidate(&state.db, &id, activations).await?;
    let names = layer_names(&*state.manifest(&row.supernet_id).await?);
    Ok(Json(row.to_json(&names, activations)))
}

/// `GET /v1/candidates/{id}/config`: the bit configuration to ship, as a JSON download.
pub async fn config(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let row = store::candidate(&state.db, &id, false).await?;
    let manifest = state.manifest(&row.supernet_id).await?;
    let bits = manifest.bits_json(&row.bit_list());
    let body = json!({
        "supernet_id": row.supernet_id,
        "supernet": manifest.name,
        "candidate_id": row.id,
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
    let row = store::candidate(&state.db, &id, false).await?;
    let supernet = store::supernet(&state.db, &row.supernet_id).await?;
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
    #[serde(default = "super::default_batch")]
    batch_size: usize,
}

/// `POST /v1/plans/{id}/evaluations`: a job that measures the candidates on the supernet's
/// validation set. Bit configurations measured before (by any plan) are not measured again.
pub async fn evaluate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<EvaluateBody>,
) -> ApiResult<Response> {
    let job_id = queue_evaluation(
        &state,
        &id,
        body.candidate_ids.as_deref(),
        body.quantize_activations,
        body.batch_size,
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(store::job(&state.db, &job_id).await?.to_json()),
    )
        .into_response())
}

/// Queues the evaluation of a ready plan's candidates (all when `candidate_ids` is `None`);
/// returns the job id.
pub async fn queue_evaluation(
    state: &AppState,
    plan_id: &str,
    candidate_ids: Option<&[String]>,
    quantize_activations: bool,
    batch_size: usize,
) -> ApiResult<String> {
    let plan = store::plan(&state.db, plan_id).await?;
    if plan.status != "ready" {
        return Err(ApiError::conflict(format!(
            "plan {plan_id:?} is {}: only a ready plan's candidates can be evaluated",
            plan.status
        )));
    }
    super::check_batch_size(batch_size)?;
    let supernet = store::supernet(&state.db, &plan.supernet_id).await?;
    if supernet.model_hash.is_none() || supernet.data_hash.is_none() {
        return Err(ApiError::conflict(format!(
            "supernet {:?} needs its ONNX model and validation set before evaluation \
             (PUT /v1/supernets/{}/model and /validation)",
            supernet.id, supernet.id
        )));
    }
    let rows = load_candidates(state, plan_id, quantize_activations).await?;
    let chosen = chosen_candidates(&rows, candidate_ids, plan_id)?;
    // Distinct configurations, in the order asked.
    let mut seen = BTreeSet::new();
    let bits: Vec<&str> = chosen
        .iter()
        .map(|r| r.bits.as_str())
        .filter(|b| seen.insert(*b))
        .collect();
    let payload = json!({
        "bits": bits,
        "quantize_activations": quantize_activations,
        "batch_size": batch_size,
    });
    let job_id = new_id("job");
    let mut tx = state.db.write.begin().await?;
    store::insert_job(
        &mut tx,
        &job_id,
        "evaluate",
        &plan.supernet_id,
        Some(plan_id),
        &payload,
        bits.len() as i64,
    )
    .await?;
    tx.commit().await?;
    state.jobs.wake.notify_one();
    Ok(job_id)
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
        Some(ids) => ids
            .iter()
            .enumerate()
            .map(|(i, cid)| {
                rows.iter().find(|r| &r.id == cid).ok_or_else(|| {
                    ApiError::invalid(
                        format!("candidate_ids[{i}]"),
                        format!("{cid:?} is not a candidate of plan {plan_id:?}"),
                    )
                })
            })
            .collect(),
    }
}
