//! `AppError`: the one error type server functions and REST handlers return to callers.
//!
//! Internal failures are logged once on the server and reach the user only as an opaque
//! reference, never with their cause (which could carry a connection string or a Secret).

use serde::{Deserialize, Serialize};

/// What went wrong, in terms a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AppError {
    /// The named thing does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request is malformed; the message says which part.
    #[error("invalid request: {0}")]
    BadRequest(String),
    /// The caller is not signed in.
    #[error("sign-in required")]
    Unauthorized,
    /// The caller may not do this; the message says why.
    #[error("not allowed: {0}")]
    Forbidden(String),
    /// The request raced with another change (stale form, superseded revision).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A dependency (database, cluster, Git) is unavailable right now.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// A server-side failure; details are in the server log under this reference.
    #[error("internal error (reference {0})")]
    Internal(String),
    /// The call never reached a handler (network failure, bad encoding).
    #[error("request failed: {0}")]
    Transport(String),
}

impl AppError {
    /// The HTTP status this error maps to (kept here so REST and server fns agree).
    pub fn status_code(&self) -> u16 {
        match self {
            AppError::NotFound(_) => 404,
            AppError::BadRequest(_) | AppError::Transport(_) => 400,
            AppError::Unauthorized => 401,
            AppError::Forbidden(_) => 403,
            AppError::Conflict(_) => 409,
            AppError::Unavailable(_) => 503,
            AppError::Internal(_) => 500,
        }
    }

    /// A short machine-readable kind, used in JSON bodies and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            AppError::NotFound(_) => "not_found",
            AppError::BadRequest(_) => "bad_request",
            AppError::Unauthorized => "unauthorized",
            AppError::Forbidden(_) => "forbidden",
            AppError::Conflict(_) => "conflict",
            AppError::Unavailable(_) => "unavailable",
            AppError::Internal(_) => "internal",
            AppError::Transport(_) => "transport",
        }
    }
}

impl leptos::server_fn::error::FromServerFnError for AppError {
    type Encoder = leptos::server_fn::codec::JsonEncoding;

    fn from_server_fn_error(value: leptos::server_fn::error::ServerFnErrorErr) -> Self {
        AppError::Transport(value.to_string())
    }
}

#[cfg(feature = "ssr")]
impl axum::response::IntoResponse for AppError {
    fn into_response(self) -> axum::response::Response {
        let status = axum::http::StatusCode::from_u16(self.status_code())
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::Json(serde_json_body(&self));
        (status, body).into_response()
    }
}

#[cfg(feature = "ssr")]
fn serde_json_body(err: &AppError) -> std::collections::BTreeMap<&'static str, String> {
    std::collections::BTreeMap::from([
        ("error", err.kind().to_string()),
        ("message", err.to_string()),
    ])
}
