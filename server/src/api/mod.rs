//! The HTTP API: routes under `/v1/`, health, metrics and the OpenAPI document.
//! Every failure, including malformed bodies, unknown routes and wrong methods, answers with the
//! one error shape of [`ApiError`].

mod fleets;
mod jobs;
mod plans;
mod searches;
mod supernets;
mod web;

pub use plans::queue_evaluation;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::{header, request::Parts, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde::de::DeserializeOwned;
use sha2::Digest;
use std::time::Instant;
use subtle::ConstantTimeEq;

/// Largest `batch_size` a request may ask for.
const MAX_BATCH_SIZE: usize = 65_536;

/// A request's `batch_size`, checked against `1..=MAX_BATCH_SIZE`.
fn check_batch_size(batch_size: usize) -> Result<(), ApiError> {
    if (1..=MAX_BATCH_SIZE).contains(&batch_size) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "batch_size",
            format!("must be within 1..={MAX_BATCH_SIZE}"),
        ))
    }
}

/// The OpenAPI 3.1 contract, served at `/openapi.yaml`.
pub const OPENAPI_YAML: &str = include_str!("../../../openapi.yaml");

/// The whole router, with auth, metrics, body limits and timeouts.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/", get(web::index))
        .route("/ui/app.js", get(web::app_js))
        .route("/ui/app.css", get(web::app_css))
        .route("/ui/chart.js", get(web::chart_js))
        .route("/ui/search.js", get(web::search_js))
        .route("/ui/plan.js", get(web::plan_js))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.yaml", get(openapi))
        .route(
            "/v1/supernets",
            get(supernets::list).post(supernets::create),
        )
        .route(
            "/v1/supernets/{id}",
            get(supernets::get).delete(supernets::delete),
        )
        .route(
            "/v1/supernets/{id}/sensitivity",
            post(supernets::measure_sensitivity),
        )
        .route(
            "/v1/supernets/{id}/plans",
            get(plans::list).post(plans::create),
        )
        .route("/v1/plans/{id}", get(plans::get).delete(plans::delete))
        .route("/v1/plans/{id}/choice", put(plans::choose))
        .route("/v1/plans/{id}/candidates", get(plans::candidates))
        .route("/v1/plans/{id}/evaluations", post(plans::evaluate))
        .route("/v1/candidates/{id}", get(plans::candidate))
        .route("/v1/candidates/{id}/config", get(plans::config))
        .route("/v1/candidates/{id}/model.onnx", get(plans::export_model))
        .route(
            "/v1/devices",
            get(fleets::list_devices).post(fleets::create_device),
        )
        .route(
            "/v1/devices/{id}",
            get(fleets::get_device).delete(fleets::delete_device),
        )
        .route(
            "/v1/fleets",
            get(fleets::list_fleets).post(fleets::create_fleet),
        )
        .route(
            "/v1/fleets/{id}",
            get(fleets::get_fleet).delete(fleets::delete_fleet),
        )
        .route(
            "/v1/supernets/{id}/fleet-plans",
            get(fleets::list_fleet_plans).post(fleets::create_fleet_plan),
        )
        .route("/v1/fleet-plans/{id}", get(fleets::get_fleet_plan))
        .route(
            "/v1/supernets/{id}/searches",
            get(searches::list).post(searches::create),
        )
        .route(
            "/v1/searches/{id}",
            get(searches::get).delete(searches::delete),
        )
        .route("/v1/jobs", get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .layer(DefaultBodyLimit::max(state.config.max_json_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), timeout));
    Router::new()
        .merge(api)
        .merge(streaming_routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(state.clone(), check_origin))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The routes outside the JSON body limit and the request timeout.
fn streaming_routes() -> Router<AppState> {
    Router::new()
        // Long-lived: no request timeout.
        .route("/v1/jobs/{id}/events", get(jobs::events))
        // Uploads stream to disk under their own size limit.
        .route(
            "/v1/supernets/{id}/model",
            put(supernets::put_model).get(supernets::get_model),
        )
        .route(
            "/v1/supernets/{id}/validation",
            put(supernets::put_validation),
        )
}

async fn health(State(state): State<AppState>) -> ApiResult<Response> {
    state.db.ping().await?;
    Ok(
        axum::Json(serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
            .into_response(),
    )
}

async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let jobs = state.db.job_counts().await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&jobs),
    )
        .into_response())
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML).into_response()
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Refuses (403) a request addressed to a host the service does not answer to (a web page whose
/// name resolves to 127.0.0.1: DNS rebinding), and a write a browser sends from another origin
/// (a page posting to the service). No CORS headers are sent, so other origins cannot read
/// responses either.
async fn check_origin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (host, origin) = {
        let text = |name| {
            req.headers()
                .get(name)
                .map(|v: &header::HeaderValue| v.to_str().unwrap_or("\u{fffd}").to_string())
        };
        (text(header::HOST), text(header::ORIGIN))
    };
    if let Some(h) = &host {
        if !state.config.host_allowed(h) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_host",
                format!(
                    "this service does not answer to host {h:?}; name it with --allowed-hosts \
                     (BITPLAN_ALLOWED_HOSTS) to allow it"
                ),
            )
            .into_response();
        }
    }
    let read = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if let (false, Some(origin)) = (read, origin) {
        let authority = origin.split_once("://").map_or("", |(_, a)| a);
        let same = host
            .as_deref()
            .is_some_and(|h| h.eq_ignore_ascii_case(authority));
        if !same {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_origin",
                format!("writes from another origin ({origin}) are refused"),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Writes need the bearer token when one is configured; reads too with `--protect-reads`.
/// `/healthz` and the dashboard's static files stay open.
async fn authorize(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = &state.config.api_token else {
        return next.run(req).await;
    };
    let read = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    // Probes and the dashboard's static files (which hold no data) stay open.
    let public = matches!(
        req.uri().path(),
        "/healthz"
            | "/"
            | "/ui/app.js"
            | "/ui/app.css"
            | "/ui/chart.js"
            | "/ui/plan.js"
            | "/ui/search.js"
    );
    if public || (read && !state.config.protect_reads) {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Digests of equal length, compared in constant time: neither the token nor its length leaks.
    let digest = |t: &str| sha2::Sha256::digest(t.as_bytes());
    match given {
        Some(g) if bool::from(digest(g).ct_eq(&digest(token))) => next.run(req).await,
        _ => {
            let mut resp = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this request needs the header `Authorization: Bearer <BITPLAN_API_TOKEN>`",
            )
            .into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("header"));
            resp
        }
    }
}

/// Counts and times every request by its route template.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    state
        .metrics
        .request(&method, &route, status, started.elapsed().as_secs_f64());
    if status >= 500 {
        tracing::warn!("{method} {route} -> {status}");
    }
    resp
}

async fn timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.config.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than {} s", limit.as_secs_f64()),
        )
        .into_response(),
    }
}

/// A JSON body, parsed with the path of any offending field; malformed JSON is a 400 in the
/// API's error shape, a body over the JSON limit a 413.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json") || ct.contains("+json"));
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON (Content-Type: application/json)",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let status = e.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "bad_body"
            };
            ApiError::new(status, code, e.body_text())
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses JSON naming the offending field's path on a type mismatch.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            ApiError::invalid(
                if path == "." { String::new() } else { path },
                inner.to_string(),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {inner}"),
            )
        }
    })
}

/// A query parameter that does not validate: 400, naming it.
fn bad_query(name: &str, reason: impl Into<String>) -> ApiError {
    let mut e = ApiError::invalid(name, reason);
    e.status = StatusCode::BAD_REQUEST;
    e.code = "invalid_query";
    e
}

/// Query parameters, refused with the parameter's name when one does not parse.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| bad_query(&e.path().to_string(), e.into_inner().to_string()))
    }
}
