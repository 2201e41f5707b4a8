//! Jobs: cheap status polls, cancellation, and a server-sent events stream of progress.
//!
//! Handlers read and flag jobs; running them is `crate::jobs`'.

use super::{bad_query, ApiQuery};
use crate::app::AppState;
use crate::error::ApiResult;
use crate::store::{JobRow, JobStatus};
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast;

/// Jobs a list holds unless a query gives `limit`, and the most it may ask for.
const DEFAULT_JOB_PAGE: i64 = 100;
const MAX_JOB_PAGE: i64 = 1000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    status: Option<String>,
    supernet_id: Option<String>,
    limit: Option<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<JobQuery>,
) -> ApiResult<Json<Value>> {
    let status = q
        .status
        .as_deref()
        .map(str::parse::<JobStatus>)
        .transpose()
        .map_err(|e| bad_query("status", e))?;
    let limit = q.limit.unwrap_or(DEFAULT_JOB_PAGE).clamp(1, MAX_JOB_PAGE);
    let rows = state
        .db
        .jobs(status, q.supernet_id.as_deref(), limit)
        .await?;
    Ok(Json(
        json!({"jobs": rows.iter().map(JobRow::to_json).collect::<Vec<_>>()}),
    ))
}

pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(state.db.job(&id).await?.to_json()))
}

/// `POST /v1/jobs/{id}/cancel`: a queued job is cancelled at once; a running one stops at its next
/// checkpoint (between two candidates), keeping what it already stored. Idempotent.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let job = state.db.cancel_job(&id).await?;
    state.jobs.changed(&id);
    Ok(Json(job.to_json()))
}

struct Watch {
    state: AppState,
    id: String,
    rx: broadcast::Receiver<String>,
    stopping: tokio::sync::watch::Receiver<bool>,
    last: Option<Value>,
    done: bool,
}

/// `GET /v1/jobs/{id}/events`: `progress` events carrying the job body whenever it changes, then
/// one `done` event when it ends; the stream closes after it.
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    state.db.job(&id).await?;
    let watch = Watch {
        rx: state.jobs.changed.subscribe(),
        stopping: state.jobs.stopping.subscribe(),
        state,
        id,
        last: None,
        done: false,
    };
    let stream = stream::unfold(watch, |mut w| async move {
        if w.done {
            return None;
        }
        loop {
            let job = match w.state.db.job(&w.id).await {
                Ok(j) => j,
                Err(e) => {
                    // The job vanished (its supernet was deleted): say so and end.
                    w.done = true;
                    let e = crate::error::ApiError::from(e);
                    let body = json!({"error": {"code": e.code, "message": e.message}});
                    return Some((
                        Ok(Event::default().event("error").data(body.to_string())),
                        w,
                    ));
                }
            };
            let body = job.to_json();
            if w.last.as_ref() != Some(&body) {
                w.last = Some(body.clone());
                let kind = if job.status.is_terminal() {
                    w.done = true;
                    "done"
                } else {
                    "progress"
                };
                return Some((Ok(Event::default().event(kind).data(body.to_string())), w));
            }
            // Wait for a change to this job (or poll once a second as a backstop).
            let deadline = tokio::time::sleep(Duration::from_secs(1));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => break,
                    // The server is shutting down: end the stream so the connection can close.
                    _ = w.stopping.wait_for(|s| *s) => return None,
                    msg = w.rx.recv() => match msg {
                        Ok(changed) if changed == w.id => break,
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
