//! Port traits: what the UI needs from the engine, sized to the capability.

use std::sync::Arc;

use async_trait::async_trait;

use crate::model::{AppError, AppSummary, AuditQuery, AuditView, SignInOptions, Viewer};

/// Read access to the applications Tidemark knows about.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// Every active application, sorted by name.
    async fn list_applications(&self) -> Result<Vec<AppSummary>, AppError>;
}

/// Who is asking, and how people can sign in.
pub trait Identity: Send + Sync + 'static {
    /// The signed-in person of the current request (`None`: anonymous).
    fn current(&self) -> Option<Viewer>;
    /// What the sign-in page offers.
    fn sign_in_options(&self) -> SignInOptions;
}

/// Read access to the audit ledger.
#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// One page (newest first) matching the filters, with the chain's verification.
    async fn audit(&self, query: AuditQuery) -> Result<AuditView, AppError>;
}

/// The set of ports the server provides to every SSR render and server function call.
#[derive(Clone)]
pub struct Ports {
    pub catalog: Arc<dyn Catalog>,
    pub identity: Arc<dyn Identity>,
    pub ledger: Arc<dyn Ledger>,
}

impl Ports {
    /// The ports of the current request; missing ports are a wiring bug, reported opaquely.
    pub fn from_context() -> Result<Self, AppError> {
        leptos::prelude::use_context::<Ports>().ok_or_else(|| {
            tracing::error!("Ports missing from the Leptos context");
            AppError::Internal("ports-missing".into())
        })
    }
}
