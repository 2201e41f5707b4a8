//! Device profiles, fleets, and fleet plans (a job whose result is one row per device).
//!
//! Handlers parse, call the planner and the store, and serialise; planning a fleet is
//! `crate::fleet`'s.

use super::{bad_query, ApiJson, ApiQuery};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::fleet::FleetPlanBody;
use crate::store::{json_column, DeviceRow, FleetDevice, FleetPlanRow, FleetRow, StoreError};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use planner::solve::fleet::{DeviceSpec, Fleet};
use serde::Deserialize;
use serde_json::{json, Value};

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

/// `POST /v1/devices`: a device document (a device profile plus budgets, weight_bits,
/// activation_bits, high_bit_layers).
pub async fn create_device(
    State(state): State<AppState>,
    ApiJson(spec): ApiJson<Value>,
) -> ApiResult<Response> {
    let name = check_device(&spec, "")?;
    let id = state.db.insert_device(&name, &spec).await?;
    Ok((
        StatusCode::CREATED,
        Json(state.db.device(&id).await?.to_json()),
    )
        .into_response())
}

pub async fn list_devices(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let rows = state.db.devices().await?;
    Ok(Json(
        json!({"devices": rows.iter().map(DeviceRow::to_json).collect::<Vec<_>>()}),
    ))
}

pub async fn get_device(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.db.device(&id).await?.to_json()))
}

/// `DELETE /v1/devices/{id}`: refused (409) while a fleet lists the device.
pub async fn delete_device(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let fleets = state.db.delete_device(&id).await?;
    if !fleets.is_empty() {
        return Err(ApiError::conflict(format!(
            "device {id:?} is in fleets {fleets:?}; delete or change them first"
        ))
        .with_details(json!({"fleets": fleets})));
    }
    Ok(Json(json!({"deleted": id, "with": {}})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetBody {
    name: String,
    /// Stored device ids, or device documents (stored as new devices).
    devices: Vec<Value>,
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
    let max = state.config.max_fleet_devices;
    if body.devices.len() > max {
        return Err(ApiError::invalid(
            "devices",
            format!(
                "lists {} devices, more than the {max} a fleet may hold here (--max-fleet-devices)",
                body.devices.len()
            ),
        ));
    }
    let names = device_names(&state, &body.devices).await?;
    let devices: Vec<FleetDevice> = body
        .devices
        .iter()
        .zip(&names)
        .map(|(d, name)| match d {
            Value::String(id) => FleetDevice::Stored(id),
            spec => FleetDevice::New { name, spec },
        })
        .collect();
    let id = state.db.insert_fleet(&body.name, &devices).await?;
    Ok((
        StatusCode::CREATED,
        Json(state.db.fleet(&id).await?.to_json()),
    )
        .into_response())
}

/// The name of each device a fleet lists: a stored device by id, or a device document (checked).
/// Unknown ids, invalid documents and duplicate names are one 422 naming each `devices[i]`.
async fn device_names(state: &AppState, devices: &[Value]) -> ApiResult<Vec<String>> {
    let mut errors = Vec::new();
    let mut names = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        match d {
            Value::String(id) => match state.db.device(id).await {
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
    let fleets = state.db.fleets().await?;
    Ok(Json(
        json!({"fleets": fleets.iter().map(FleetRow::to_json).collect::<Vec<_>>()}),
    ))
}

pub async fn get_fleet(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.db.fleet(&id).await?.to_json()))
}

/// `DELETE /v1/fleets/{id}`: the fleet (its devices stay; fleet plans keep their snapshot).
pub async fn delete_fleet(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    state.db.delete_fleet(&id).await?;
    Ok(Json(json!({"deleted": id, "with": {}})))
}

/// `POST /v1/supernets/{id}/fleet-plans`: checks the fleet against the supernet (a lookup table
/// missing a layer is a 422 naming the device and the layer), then queues the job.
pub async fn create_fleet_plan(
    State(state): State<AppState>,
    Path(supernet_id): Path<String>,
    ApiJson(body): ApiJson<FleetPlanBody>,
) -> ApiResult<Response> {
    let manifest = state.manifest(&supernet_id).await?;
    let doc = match state.db.fleet(&body.fleet_id).await {
        Ok(fleet) => fleet.document(),
        Err(e @ StoreError::NotFound { .. }) => {
            return Err(ApiError::invalid("fleet_id", e.to_string()))
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(a) = body.min_accuracy {
        if !(0.0..=1.0).contains(&a) {
            return Err(ApiError::invalid("min_accuracy", "must be within 0..=1"));
        }
    }
    super::check_batch_size(body.batch_size)?;
    crate::search::check_evaluations(body.evaluations)?;
    let max_time = state.config.max_solve_time_s;
    for (field, limit) in [
        ("time_limit_s", body.time_limit_s),
        ("neighbour_time_limit_s", Some(body.neighbour_time_limit_s)),
    ] {
        if limit.is_some_and(|t| !(t > 0.0 && t <= max_time)) {
            return Err(ApiError::invalid(
                field,
                format!("must be within (0, {max_time}] s (--max-solve-time-s)"),
            ));
        }
    }
    body.options(max_time).check()?;
    let fleet = Fleet::from_value(doc.clone()).map_err(|e| ApiError::from(e).under("fleet."))?;
    fleet
        .check(&manifest)
        .map_err(|e| ApiError::from(e).under("fleet."))?;
    if body.measures() {
        let s = state.db.supernet(&supernet_id).await?;
        if !s.measurable() {
            return Err(ApiError::conflict(format!(
                "measuring needs the supernet's model and validation set (PUT /v1/supernets/{supernet_id}/model and /validation)"
            )));
        }
    }
    let _queueing = state.admit_job().await?;
    // Progress: the planning, each device's choice measured, then the search's measurements.
    let devices = fleet.devices.len();
    let steps = 1
        + if body.measures() { devices } else { 0 }
        + if body.search { body.evaluations } else { 0 };
    let v = queue_fleet_plan(&state, &supernet_id, &body, &doc, steps as i64).await?;
    Ok((StatusCode::ACCEPTED, Json(v)).into_response())
}

/// Stores the fleet plan as pending, with a snapshot of the fleet (`doc`) and the job that plans
/// it; returns the plan as stored, with its job.
async fn queue_fleet_plan(
    state: &AppState,
    supernet_id: &str,
    body: &FleetPlanBody,
    doc: &Value,
    steps: i64,
) -> ApiResult<Value> {
    let options = serde_json::to_string(body).expect("JSON");
    let (plan, job) = state
        .db
        .queue_fleet_plan(supernet_id, &body.fleet_id, doc, &options, steps)
        .await?;
    state.jobs.wake.notify_one();
    let mut v = plan.to_json();
    v["job"] = job.to_json();
    Ok(v)
}

pub async fn list_fleet_plans(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    state.db.supernet(&id).await?;
    let rows = state.db.fleet_plans_of(&id).await?;
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
    let row = state.db.fleet_plan(&id).await?;
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
        other => Err(bad_query("format", format!("{other:?} is not json or csv"))),
    }
}
