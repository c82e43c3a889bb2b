//! Port traits: what the UI needs from the engine, sized to the capability.
//!
//! Implementations judge the caller themselves for anything about one application (its
//! project decides the role), the same way the HTTP guard does for REST routes.

use std::sync::Arc;

use async_trait::async_trait;

use crate::model::{
    AppDetail, AppError, AppListPage, AppListQuery, AuditQuery, AuditView, DiffQuery, DiffView,
    HistoryPage, RequestList, RevisionView, SignInOptions, Viewer,
};

/// Read access to the applications Tidemark knows about.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// One page of the Applications list.
    async fn application_page(&self, query: AppListQuery) -> Result<AppListPage, AppError>;
    /// The application page's header, banners, open request and resources.
    async fn application(&self, name: &str) -> Result<AppDetail, AppError>;
    /// A page of the application's timeline (commits and events), newest first.
    async fn history(
        &self,
        name: &str,
        kinds: &[String],
        cursor: &str,
    ) -> Result<HistoryPage, AppError>;
    /// Git against live (empty query) or two revisions.
    async fn diff(&self, name: &str, query: DiffQuery) -> Result<DiffView, AppError>;
    /// Known-good revisions: rollback targets.
    async fn revisions(&self, name: &str) -> Result<Vec<RevisionView>, AppError>;
    /// Sync requests waiting for a decision (or a "sync now"), across applications.
    async fn open_requests(&self) -> Result<RequestList, AppError>;
    /// The Tree tab's HTML: `[kind, health, node, logs, container]` (see
    /// `api::application_tree`).
    async fn tree(&self, name: &str, query: [String; 5], managed: bool)
        -> Result<String, AppError>;
}

/// Decisions people take: each one checked, recorded in the ledger, and answered with a
/// sentence saying what happened.
#[async_trait]
pub trait Workflow: Send + Sync + 'static {
    async fn approve(&self, request: i64) -> Result<String, AppError>;
    async fn reject(&self, request: i64, reason: &str) -> Result<String, AppError>;
    async fn sync_now(&self, request: i64) -> Result<String, AppError>;
    async fn rollback(&self, app: &str, revision: &str, reason: &str) -> Result<String, AppError>;
    async fn unpin(&self, app: &str) -> Result<String, AppError>;
    /// `[action, apiVersion, kind, namespace, name, reason]` on an object of `app`'s tree.
    async fn resource_action(&self, app: &str, form: [String; 6]) -> Result<String, AppError>;
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
    /// One page (newest first) matching the filters, with the chain's verification; or, with
    /// `view=notifications`, what Tidemark told whom (admins only).
    async fn audit(&self, query: AuditQuery) -> Result<AuditView, AppError>;
}

/// The set of ports the server provides to every SSR render and server function call.
#[derive(Clone)]
pub struct Ports {
    pub catalog: Arc<dyn Catalog>,
    pub workflow: Arc<dyn Workflow>,
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
