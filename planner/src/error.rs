//! The planner's error type: every failure names what was wrong and where.

use serde::Serialize;
use std::fmt;

/// One problem found in an input, located by its JSON path (`layers[3].pin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON path of the offending value, e.g. `layers[2].hessian_trace`.
    pub path: String,
    /// Why the value was refused, in words a user can act on.
    pub reason: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

/// Everything that can go wrong in the planner.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input (manifest, device profile, budgets, bit configuration) was refused; every problem is listed.
    #[error("{what} is invalid: {}", join(.errors))]
    Invalid {
        what: &'static str,
        errors: Vec<FieldError>,
    },
    /// The solver failed in a way that is not an answer (not infeasibility, not a time limit).
    #[error("solver failure: {0}")]
    Solver(String),
    /// The inference runtime could not be loaded, or refused a model or an input.
    #[error("{0}")]
    Runtime(String),
    /// The exact enumeration would exceed its memory bound.
    #[error("{0}")]
    TooLarge(String),
    /// The caller asked a long computation to stop (its progress callback said so).
    #[error("stopped at the caller's request: {0}")]
    Stopped(String),
}

impl Error {
    /// A single-field validation error.
    pub fn invalid(what: &'static str, path: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            what,
            errors: vec![FieldError::new(path, reason)],
        }
    }

    /// `Ok` when `errors` is empty, else a validation error of `what` carrying all of them.
    pub fn check(what: &'static str, errors: Vec<FieldError>) -> Result<()> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid { what, errors })
        }
    }

    /// The field errors, when this is a validation error.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            Error::Invalid { errors, .. } => errors,
            _ => &[],
        }
    }
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The planner's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Parses JSON into `T`, reporting the JSON path of the first value serde refused.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    text: &str,
) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let path = if path == "." { String::new() } else { path };
        let reason = if inner.is_syntax() || inner.is_eof() {
            format!(
                "malformed JSON at line {} column {}: {}",
                inner.line(),
                inner.column(),
                strip_position(&inner.to_string())
            )
        } else {
            strip_position(&inner.to_string())
        };
        Error::invalid(what, path, reason)
    })
}

/// serde_json appends " at line L column C"; the path already locates the value.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}
