//! Jobs: cheap status polls, cancellation, and a server-sent events stream of progress.
//!
//! Handlers read and flag jobs; running them is `crate::jobs`'.

use super::ApiQuery;
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::store::{self, now_ms, JobRow, JOB_COLUMNS};
use axum::extract::{Path, State};
use axum::http::StatusCode;
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

const STATUSES: [&str; 5] = ["queued", "running", "succeeded", "failed", "cancelled"];

pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<JobQuery>,
) -> ApiResult<Json<Value>> {
    if let Some(s) = &q.status {
        if !STATUSES.contains(&s.as_str()) {
            let mut e = ApiError::invalid("status", format!("one of {}", STATUSES.join(", ")));
            e.status = StatusCode::BAD_REQUEST;
            e.code = "invalid_query";
            return Err(e);
        }
    }
    let limit = q.limit.unwrap_or(DEFAULT_JOB_PAGE).clamp(1, MAX_JOB_PAGE);
    let rows = sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE (?1 IS NULL OR status = ?1) \
         AND (?2 IS NULL OR supernet_id = ?2) ORDER BY created_at DESC, id DESC LIMIT ?3"
    )))
    .bind(&q.status)
    .bind(&q.supernet_id)
    .bind(limit)
    .fetch_all(&state.db.read)
    .await?;
    Ok(Json(
        json!({"jobs": rows.iter().map(JobRow::to_json).collect::<Vec<_>>()}),
    ))
}

pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(store::job(&state.db, &id).await?.to_json()))
}

/// `POST /v1/jobs/{id}/cancel`: a queued job is cancelled at once; a running one stops at its next
/// checkpoint (between two candidates), keeping what it already stored. Idempotent.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let job = store::job(&state.db, &id).await?;
    if !job.is_terminal() {
        let now = now_ms();
        let mut tx = state.db.write.begin().await?;
        sqlx::query(
            "UPDATE jobs SET status = 'cancelled', cancel_requested = 1, finished_at = ?, \
             updated_at = ?, message = 'cancelled before it started' WHERE id = ? AND status = 'queued'",
        )
        .bind(now)
        .bind(now)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ? AND status = 'running'")
            .bind(now)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        for sql in [
            "UPDATE plans SET status = 'cancelled', updated_at = ? WHERE job_id = ? AND status = 'pending'",
            "UPDATE fleet_plans SET status = 'cancelled', updated_at = ? WHERE job_id = ? AND status = 'pending'",
        ] {
            sqlx::query(sql).bind(now).bind(&id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        state.jobs.cancel(&id);
        state.jobs.changed(&id);
    }
    Ok(Json(store::job(&state.db, &id).await?.to_json()))
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
    store::job(&state.db, &id).await?;
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
            let job = match store::job(&w.state.db, &w.id).await {
                Ok(j) => j,
                Err(e) => {
                    // The job vanished (its supernet was deleted): say so and end.
                    w.done = true;
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
                let kind = if job.is_terminal() {
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
