//! The server's implementations of the UI's port traits.

use std::sync::Arc;

use app::api::ports::{Catalog, Identity, Ports};
use app::model::{AppError, AppSummary, SignInOptions, Viewer};
use async_trait::async_trait;

use super::AppState;
use crate::store::{Store, StoreError};

/// The ports handed to every SSR render and server function.
pub fn ports(state: &AppState) -> Ports {
    Ports {
        catalog: Arc::new(StoreCatalog(state.store.clone())),
        identity: Arc::new(RequestIdentity(state.settings.clone())),
    }
}

/// Reads the principal the guard attached to the current request.
struct RequestIdentity(Arc<crate::config::Settings>);

impl Identity for RequestIdentity {
    fn current(&self) -> Option<Viewer> {
        let parts = leptos::prelude::use_context::<axum::http::request::Parts>()?;
        parts
            .extensions
            .get::<crate::auth::Principal>()
            .map(|p| p.view(&self.0.auth))
    }

    fn sign_in_options(&self) -> SignInOptions {
        SignInOptions {
            sso: self.0.auth.oidc.as_ref().map(|o| o.display_name.clone()),
            local: self.0.auth.local_login,
        }
    }
}

struct StoreCatalog(Store);

#[async_trait]
impl Catalog for StoreCatalog {
    async fn list_applications(&self) -> Result<Vec<AppSummary>, AppError> {
        self.0.list_applications().await.map_err(store_error)
    }
}

fn store_error(e: StoreError) -> AppError {
    match e {
        StoreError::Connect { .. } => AppError::Unavailable("the database does not answer".into()),
        other => internal_error(&other),
    }
}

/// Logs an unexpected failure once and returns an opaque error with a reference to that log line.
pub fn internal_error(e: &dyn std::error::Error) -> AppError {
    let reference = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    tracing::error!(%reference, error = %e, "internal error");
    AppError::Internal(reference)
}
