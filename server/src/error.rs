//! The one error shape of the wire: `{"error": {"code", "message", "fields", "details"}}`.

use crate::store::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use planner::FieldError;
use serde_json::{json, Value};

/// A failed request: its HTTP status, a stable machine code, words for people, and (for
/// validation errors) every offending field by JSON path.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub fields: Vec<FieldError>,
    pub details: Option<Box<Value>>,
    /// Seconds to wait before trying again (`Retry-After`), for 503s of a busy service.
    pub retry_after_s: Option<u32>,
}

pub type ApiResult<T> = Result<T, ApiError>;

/// What a busy 503 tells a client to wait, seconds.
const BUSY_RETRY_AFTER_S: u32 = 2;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            fields: Vec::new(),
            details: None,
            retry_after_s: None,
        }
    }

    /// 503: the service already runs as many of `what` as it allows (`flag`); try again later.
    pub fn busy(what: &str, limit: usize, flag: &str) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("the service already runs {limit} {what} at once ({flag}); try again shortly"),
        );
        e.retry_after_s = Some(BUSY_RETRY_AFTER_S);
        e
    }

    pub fn not_found(what: &str, id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} {id:?} does not exist"),
        )
    }

    /// A request that does not validate; `path` names the offending field.
    pub fn invalid(path: impl Into<String>, reason: impl Into<String>) -> ApiError {
        let field = FieldError::new(path, reason);
        let mut e = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("the request is invalid: {field}"),
        );
        e.fields.push(field);
        e
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// A server fault: logged in full, returned without its details.
    pub fn internal(context: &str, error: impl std::fmt::Display) -> ApiError {
        tracing::error!("{context}: {error}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error (logged on the server)",
        )
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(Box::new(details));
        self
    }

    /// Puts `what: ` before the message.
    pub fn prefix_message(mut self, what: &str) -> ApiError {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// Prefixes every field path with `prefix` (e.g. `device.` for an embedded device profile).
    pub fn under(mut self, prefix: &str) -> ApiError {
        for f in &mut self.fields {
            f.path = if f.path.is_empty() {
                prefix.trim_end_matches('.').to_string()
            } else {
                format!("{prefix}{}", f.path)
            };
        }
        self
    }
}

impl From<planner::Error> for ApiError {
    fn from(e: planner::Error) -> ApiError {
        match e {
            planner::Error::Invalid { what, errors } => {
                let message = format!(
                    "{what} is invalid: {}",
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                ApiError {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    code: "invalid",
                    message,
                    fields: errors,
                    details: None,
                    retry_after_s: None,
                }
            }
            planner::Error::TooLarge(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "too_large", m)
            }
            planner::Error::Runtime(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "runtime", m)
            }
            // Only a request's own deadline or its dropped future stops a solve it runs.
            planner::Error::Stopped(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", m)
            }
            other => ApiError::internal("planner", other),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound { what, id } => ApiError::not_found(what, &id),
            other => ApiError::internal("store", other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "code": self.code,
            "message": self.message,
            "fields": self.fields,
            "details": self.details,
        }});
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after_s {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        response
    }
}
