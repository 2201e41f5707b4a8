//! Device profiles, fleets, and fleet plans (a job whose result is one row per device).
//!
//! Handlers parse, call the planner and the store, and serialise; planning a fleet is
//! `crate::fleet`'s.

use super::{ApiJson, ApiQuery};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::store::{self, json_column, new_id, now_ms, rfc3339};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use planner::solve::fleet::{DeviceSpec, Fleet, FleetOptions};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, sqlx::FromRow)]
struct DeviceRow {
    id: String,
    name: String,
    spec: String,
    created_at: i64,
}

impl DeviceRow {
    fn to_json(&self) -> Value {
        json!({"id": self.id, "name": self.name, "spec": json_column(&self.spec), "created_at": rfc3339(self.created_at)})
    }
}

/// Checks a device document; errors carry `prefix` on their paths.
fn check_device(spec: &Value, prefix: &str) -> ApiResult<String> {
    match DeviceSpec::from_value(spec.clone(), prefix) {
        Ok(d) => Ok(d.name().to_string()),
        Err(errors) => Err(planner::Error::Invalid {
            what: "device",
            errors,
        }
        .into()),
    }
}

async fn insert_device(
    tx: &mut sqlx::SqliteConnection,
    name: &str,
    spec: &Value,
) -> Result<String, sqlx::Error> {
    let id = new_id("dev");
    sqlx::query("INSERT INTO devices (id, name, spec, created_at) VALUES (?, ?, ?, ?)")
        .bind(&id)
        .bind(name)
        .bind(spec.to_string())
        .bind(now_ms())
        .execute(tx)
        .await?;
    Ok(id)
}

async fn device_row(state: &AppState, id: &str) -> ApiResult<DeviceRow> {
    sqlx::query_as::<_, DeviceRow>("SELECT id, name, spec, created_at FROM devices WHERE id = ?")
        .bind(id)
        .fetch_optional(&state.db.read)
        .await?
        .ok_or_else(|| ApiError::not_found("device", id))
}

/// `POST /v1/devices`: a device document (a device profile plus budgets, weight_bits,
/// activation_bits, high_bit_layers).
pub async fn create_device(
    State(state): State<AppState>,
    ApiJson(spec): ApiJson<Value>,
) -> ApiResult<Response> {
    let name = check_device(&spec, "")?;
    let mut tx = state.db.write.begin().await?;
    let id = insert_device(&mut tx, &name, &spec).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(device_row(&state, &id).await?.to_json()),
    )
        .into_response())
}

pub async fn list_devices(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let rows = sqlx::query_as::<_, DeviceRow>(
        "SELECT id, name, spec, created_at FROM devices ORDER BY created_at DESC, id DESC",
    )
    .fetch_all(&state.db.read)
    .await?;
    Ok(Json(
        json!({"devices": rows.iter().map(DeviceRow::to_json).collect::<Vec<_>>()}),
    ))
}

pub async fn get_device(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(device_row(&state, &id).await?.to_json()))
}

/// `DELETE /v1/devices/{id}`: refused (409) while a fleet lists the device.
pub async fn delete_device(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    device_row(&state, &id).await?;
    let fleets: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT fleet_id FROM fleet_devices WHERE device_id = ?")
            .bind(&id)
            .fetch_all(&state.db.read)
            .await?;
    if !fleets.is_empty() {
        return Err(ApiError::conflict(format!(
            "device {id:?} is in fleets {fleets:?}; delete or change them first"
        ))
        .with_details(json!({"fleets": fleets})));
    }
    sqlx::query("DELETE FROM devices WHERE id = ?")
        .bind(&id)
        .execute(&state.db.write)
        .await?;
    Ok(Json(json!({"deleted": id, "with": {}})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetBody {
    name: String,
    /// Stored device ids, or device documents (stored as new devices).
    devices: Vec<Value>,
}

/// The fleet document of a stored fleet: `{"name", "devices": [device documents]}`, with ids.
async fn fleet_doc(state: &AppState, id: &str) -> ApiResult<(Value, Vec<String>)> {
    let name: String = sqlx::query_scalar("SELECT name FROM fleets WHERE id = ?")
        .bind(id)
        .fetch_optional(&state.db.read)
        .await?
        .ok_or_else(|| ApiError::not_found("fleet", id))?;
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT d.id, d.spec FROM fleet_devices f JOIN devices d ON d.id = f.device_id WHERE f.fleet_id = ? ORDER BY f.position",
    )
    .bind(id)
    .fetch_all(&state.db.read)
    .await?;
    let ids = rows.iter().map(|(i, _)| i.clone()).collect();
    let devices: Vec<Value> = rows.iter().map(|(_, s)| json_column(s)).collect();
    Ok((json!({"name": name, "devices": devices}), ids))
}

async fn fleet_json(state: &AppState, id: &str) -> ApiResult<Value> {
    let (doc, ids) = fleet_doc(state, id).await?;
    let created: i64 = sqlx::query_scalar("SELECT created_at FROM fleets WHERE id = ?")
        .bind(id)
        .fetch_one(&state.db.read)
        .await?;
    let devices: Vec<Value> = doc["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .zip(&ids)
        .map(|(spec, id)| json!({"id": id, "name": spec["name"], "spec": spec}))
        .collect();
    Ok(json!({"id": id, "name": doc["name"], "devices": devices, "created_at": rfc3339(created)}))
}

/// `POST /v1/fleets`: a named list of devices (ids of stored devices, or device documents,
/// which are stored too). A fleet file (`{"name", "devices": [...]}`) can be posted as it is.
pub async fn create_fleet(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<FleetBody>,
) -> ApiResult<Response> {
    if body.name.trim().is_empty() {
        return Err(ApiError::invalid("name", "must not be empty"));
    }
    if body.devices.is_empty() {
        return Err(ApiError::invalid(
            "devices",
            "must list at least one device",
        ));
    }
    let names = device_names(&state, &body.devices).await?;
    let id = new_id("fleet");
    let mut tx = state.db.write.begin().await?;
    sqlx::query("INSERT INTO fleets (id, name, created_at) VALUES (?, ?, ?)")
        .bind(&id)
        .bind(&body.name)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
    for (i, d) in body.devices.iter().enumerate() {
        let device_id = match d {
            Value::String(s) => s.clone(),
            spec => insert_device(&mut tx, &names[i], spec).await?,
        };
        sqlx::query("INSERT INTO fleet_devices (fleet_id, position, device_id) VALUES (?, ?, ?)")
            .bind(&id)
            .bind(i as i64)
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(fleet_json(&state, &id).await?)).into_response())
}

/// The name of each device a fleet lists: a stored device by id, or a device document (checked).
/// Unknown ids, invalid documents and duplicate names are one 422 naming each `devices[i]`.
async fn device_names(state: &AppState, devices: &[Value]) -> ApiResult<Vec<String>> {
    let mut errors = Vec::new();
    let mut names = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        match d {
            Value::String(id) => match device_row(state, id).await {
                Ok(row) => names.push(row.name),
                Err(_) => errors.push(planner::FieldError::new(
                    format!("devices[{i}]"),
                    format!("no device {id:?}"),
                )),
            },
            Value::Object(_) => match check_device(d, &format!("devices[{i}].")) {
                Ok(name) => names.push(name),
                Err(e) => errors.extend(e.fields),
            },
            _ => errors.push(planner::FieldError::new(
                format!("devices[{i}]"),
                "must be a device id or a device document",
            )),
        }
    }
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            errors.push(planner::FieldError::new(
                format!("devices[{i}]"),
                format!("duplicate device name {n:?}"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(planner::Error::Invalid {
            what: "fleet",
            errors,
        }
        .into());
    }
    Ok(names)
}

pub async fn list_fleets(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id FROM fleets ORDER BY created_at DESC, id DESC")
            .fetch_all(&state.db.read)
            .await?;
    let mut out = Vec::new();
    for id in ids {
        out.push(fleet_json(&state, &id).await?);
    }
    Ok(Json(json!({"fleets": out})))
}

pub async fn get_fleet(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(fleet_json(&state, &id).await?))
}

/// `DELETE /v1/fleets/{id}`: the fleet (its devices stay; fleet plans keep their snapshot).
pub async fn delete_fleet(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    fleet_doc(&state, &id).await?;
    sqlx::query("DELETE FROM fleets WHERE id = ?")
        .bind(&id)
        .execute(&state.db.write)
        .await?;
    Ok(Json(json!({"deleted": id, "with": {}})))
}

/// The body of `POST /v1/supernets/{id}/fleet-plans`, stored as the plan's options.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetPlanBody {
    pub fleet_id: String,
    /// Measure each device's choice on the supernet's validation set.
    #[serde(default)]
    pub evaluate: bool,
    /// Gate: a device below this accuracy fails (implies `evaluate`).
    #[serde(default)]
    pub min_accuracy: Option<f64>,
    #[serde(default = "default_neighbours")]
    pub neighbours: usize,
    #[serde(default = "default_step")]
    pub step: f64,
    #[serde(default)]
    pub time_limit_s: Option<f64>,
    #[serde(default = "default_neighbour_limit")]
    pub neighbour_time_limit_s: f64,
    #[serde(default)]
    pub mip_gap: f64,
    #[serde(default = "super::default_batch")]
    pub batch_size: usize,
}

fn default_neighbours() -> usize {
    FleetOptions::default().neighbours
}
fn default_step() -> f64 {
    FleetOptions::default().step
}
fn default_neighbour_limit() -> f64 {
    FleetOptions::default().neighbour_time_limit_s
}

impl FleetPlanBody {
    pub fn options(&self, max_time_s: f64) -> planner::solve::fleet::FleetOptions {
        planner::solve::fleet::FleetOptions {
            neighbours: self.neighbours,
            step: self.step,
            time_limit_s: self
                .time_limit_s
                .unwrap_or(crate::planning::default_time_limit_s(max_time_s)),
            neighbour_time_limit_s: self.neighbour_time_limit_s,
            mip_gap: self.mip_gap,
        }
    }

    pub fn measures(&self) -> bool {
        self.evaluate || self.min_accuracy.is_some()
    }
}

#[derive(Debug, sqlx::FromRow)]
pub struct FleetPlanRow {
    pub id: String,
    pub supernet_id: String,
    pub fleet_id: String,
    pub fleet: String,
    pub options: String,
    pub status: String,
    pub job_id: Option<String>,
    pub result: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl FleetPlanRow {
    fn to_json(&self) -> Value {
        let result = self.result.as_deref().map(json_column);
        let passed = result.as_ref().map(crate::fleet::all_pass);
        json!({
            "id": self.id,
            "supernet_id": self.supernet_id,
            "fleet_id": self.fleet_id,
            "fleet": json_column(&self.fleet)["name"],
            "status": self.status,
            "request": json_column(&self.options),
            "job_id": self.job_id,
            "passed": passed,
            "result": result,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        })
    }
}

pub async fn fleet_plan_row(db: &store::Db, id: &str) -> ApiResult<FleetPlanRow> {
    fleet_plan_row_on(&db.read, id).await
}

/// A fleet plan as `executor` sees it (a transaction sees its own uncommitted rows).
async fn fleet_plan_row_on<'e>(
    executor: impl sqlx::SqliteExecutor<'e>,
    id: &str,
) -> ApiResult<FleetPlanRow> {
    sqlx::query_as::<_, FleetPlanRow>(
        "SELECT id, supernet_id, fleet_id, fleet, options, status, job_id, result, created_at, updated_at \
         FROM fleet_plans WHERE id = ?",
    )
    .bind(id)
    .fetch_optional(executor)
    .await?
    .ok_or_else(|| ApiError::not_found("fleet plan", id))
}

/// `POST /v1/supernets/{id}/fleet-plans`: checks the fleet against the supernet (a lookup table
/// missing a layer is a 422 naming the device and the layer), then queues the job.
pub async fn create_fleet_plan(
    State(state): State<AppState>,
    Path(supernet_id): Path<String>,
    ApiJson(body): ApiJson<FleetPlanBody>,
) -> ApiResult<Response> {
    let manifest = state.manifest(&supernet_id).await?;
    let (doc, _) = fleet_doc(&state, &body.fleet_id).await.map_err(|e| {
        if e.code == "not_found" {
            ApiError::invalid("fleet_id", e.message)
        } else {
            e
        }
    })?;
    if let Some(a) = body.min_accuracy {
        if !(0.0..=1.0).contains(&a) {
            return Err(ApiError::invalid("min_accuracy", "must be within 0..=1"));
        }
    }
    super::check_batch_size(body.batch_size)?;
    let max_time = state.config.max_solve_time_s;
    if body
        .time_limit_s
        .is_some_and(|t| !(t > 0.0 && t <= max_time))
    {
        return Err(ApiError::invalid(
            "time_limit_s",
            format!("must be within (0, {max_time}] s"),
        ));
    }
    body.options(max_time).check()?;
    let fleet = Fleet::from_value(doc.clone()).map_err(|e| ApiError::from(e).under("fleet."))?;
    fleet
        .check(&manifest)
        .map_err(|e| ApiError::from(e).under("fleet."))?;
    if body.measures() {
        let s = store::supernet(&state.db, &supernet_id).await?;
        if s.model_hash.is_none() || s.data_hash.is_none() {
            return Err(ApiError::conflict(format!(
                "measuring needs the supernet's model and validation set (PUT /v1/supernets/{supernet_id}/model and /validation)"
            )));
        }
    }
    let v = queue_fleet_plan(&state, &supernet_id, &body, &doc).await?;
    Ok((StatusCode::ACCEPTED, Json(v)).into_response())
}

/// Stores the fleet plan as pending, with a snapshot of the fleet (`doc`) and the job that plans
/// it; returns the plan as stored, with its job.
async fn queue_fleet_plan(
    state: &AppState,
    supernet_id: &str,
    body: &FleetPlanBody,
    doc: &Value,
) -> ApiResult<Value> {
    let id = new_id("fleetplan");
    let job_id = new_id("job");
    let now = now_ms();
    let mut tx = state.db.write.begin().await?;
    sqlx::query(
        "INSERT INTO fleet_plans (id, supernet_id, fleet_id, fleet, options, status, job_id, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
    )
    .bind(&id)
    .bind(supernet_id)
    .bind(&body.fleet_id)
    .bind(doc.to_string())
    .bind(serde_json::to_string(body).expect("JSON"))
    .bind(&job_id)
    .bind(now)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    store::insert_job(
        &mut tx,
        &job_id,
        "fleet",
        supernet_id,
        Some(&id),
        &json!({}),
        1,
    )
    .await?;
    // Read inside the transaction: after the commit the runner may already have claimed the job.
    let mut v = fleet_plan_row_on(&mut *tx, &id).await?.to_json();
    v["job"] = store::job_on(&mut *tx, &job_id).await?.to_json();
    tx.commit().await?;
    state.jobs.wake.notify_one();
    Ok(v)
}

pub async fn list_fleet_plans(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    store::supernet(&state.db, &id).await?;
    let rows = sqlx::query_as::<_, FleetPlanRow>(
        "SELECT id, supernet_id, fleet_id, fleet, options, status, job_id, result, created_at, updated_at \
         FROM fleet_plans WHERE supernet_id = ? ORDER BY created_at DESC, id DESC",
    )
    .bind(&id)
    .fetch_all(&state.db.read)
    .await?;
    Ok(Json(
        json!({"fleet_plans": rows.iter().map(FleetPlanRow::to_json).collect::<Vec<_>>()}),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatQuery {
    format: Option<String>,
}

/// `GET /v1/fleet-plans/{id}`: the plan with its result, or `?format=csv` for the table as CSV
/// (the same columns as `bitplan fleet --format csv`).
pub async fn get_fleet_plan(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<FormatQuery>,
) -> ApiResult<Response> {
    let row = fleet_plan_row(&state.db, &id).await?;
    match q.format.as_deref().unwrap_or("json") {
        "json" => Ok(Json(row.to_json()).into_response()),
        "csv" => {
            let Some(result) = row.result.as_deref().map(json_column) else {
                return Err(ApiError::conflict(format!(
                    "fleet plan {id:?} is {}: no table yet",
                    row.status
                )));
            };
            Ok((
                [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
                crate::output::render_fleet(&result, crate::output::Format::Csv),
            )
                .into_response())
        }
        other => {
            let mut e = ApiError::invalid("format", format!("{other:?} is not json or csv"));
            e.status = StatusCode::BAD_REQUEST;
            e.code = "invalid_query";
            Err(e)
        }
    }
}
