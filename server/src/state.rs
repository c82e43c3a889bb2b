//! What the HTTP layer and the authentication guard share, in its own module so that neither
//! imports the other's internals: the guard's view of the running service ([`AuthState`]) and
//! the one way an unexpected failure becomes an opaque error ([`internal_error`]).

use std::sync::Arc;

use app::model::AppError;

use crate::config::Settings;
use crate::store::Store;

/// What the guard needs: the store (sessions, tokens, users), the settings (auth, roles) and
/// the public origin for CSRF checks. Built from the HTTP layer's state.
#[derive(Clone)]
pub struct AuthState {
    pub store: Store,
    pub settings: Arc<Settings>,
    /// `scheme://host[:port]` of `server.public_url`, for Origin checks.
    pub public_origin: Option<String>,
}

/// Logs an unexpected failure once and returns an opaque error with a reference to that log line.
pub fn internal_error(e: &dyn std::error::Error) -> AppError {
    let reference = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    tracing::error!(%reference, error = %e, "internal error");
    AppError::Internal(reference)
}
