//! The server's implementations of the UI's port traits.

use std::sync::Arc;

use app::api::ports::{Catalog, Ports};
use app::model::{AppError, AppSummary};
use async_trait::async_trait;

use super::AppState;
use crate::store::{Store, StoreError};

/// The ports handed to every SSR render and server function.
pub fn ports(state: &AppState) -> Ports {
    Ports {
        catalog: Arc::new(StoreCatalog(state.store.clone())),
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
