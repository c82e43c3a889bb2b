//! The server's implementations of the UI's port traits.

use std::sync::Arc;

use app::api::ports::{Identity, Ledger, Ports};
use app::model::{
    AppError, AuditEntry, AuditQuery, AuditView, DeliveriesView, DeliveryView, SignInOptions,
    TargetView, Viewer,
};
use async_trait::async_trait;

use super::AppState;
use crate::store::{Store, StoreError};

/// The ports handed to every SSR render and server function.
pub fn ports(state: &AppState) -> Ports {
    Ports {
        catalog: Arc::new(ConsoleCatalog::new(state.clone())),
        workflow: Arc::new(ConsoleWorkflow(state.clone())),
        identity: Arc::new(RequestIdentity(state.settings.clone())),
        ledger: Arc::new(StoreLedger {
            store: state.store.clone(),
            state: state.clone(),
        }),
    }
}

/// The Notifications tab: targets from the settings, deliveries from the store (admins).
async fn notifications(state: &AppState, undelivered_only: bool) -> Result<String, AppError> {
    super::console::allowed(state, crate::auth::policy::Action::ViewDeliveries, None).await?;
    let store = &state.store;
    let rows = store
        .recent_deliveries(100, undelivered_only)
        .await
        .map_err(store_error)?;
    let (pending, failed, delivered) = store.delivery_counts().await.map_err(store_error)?;
    let settings = &state.settings.notifications;
    let targets = settings
        .targets
        .iter()
        .map(|t| TargetView {
            name: t.name.clone(),
            kind: format!("{:?}", t.kind).to_lowercase(),
            subscriptions: settings
                .subscriptions
                .iter()
                .filter(|s| s.target == t.name)
                .map(crate::notify::describe_subscription)
                .collect(),
        })
        .collect();
    let view = DeliveriesView {
        targets,
        deliveries: rows
            .into_iter()
            .map(|d| DeliveryView {
                id: d.id,
                target: d.target,
                status: d.status,
                attempts: d.attempts,
                trigger: d.trigger,
                application: d.application,
                entry: format!("e{}", d.timeline_id),
                occurred_at: d.occurred_at,
                last_attempt_at: d.last_attempt_at,
                next_attempt_at: d.next_attempt_at,
                last_error: d.last_error,
            })
            .collect(),
        pending,
        failed,
        delivered,
        now: crate::clock::now(),
    };
    Ok(app::pages::notifications::render(view, undelivered_only))
}

/// The ledger through the store; the chain's verification is the one shared with the REST
/// check (`AppState::audit_verified`).
struct StoreLedger {
    store: Store,
    state: AppState,
}

#[async_trait]
impl Ledger for StoreLedger {
    async fn audit(&self, q: AuditQuery) -> Result<AuditView, AppError> {
        if q.view != "notifications" {
            super::console::allowed(&self.state, crate::auth::policy::Action::View, None).await?;
        }
        if q.view == "notifications" {
            let html = notifications(&self.state, q.show == "undelivered").await?;
            return Ok(AuditView {
                entries: Vec::new(),
                next: None,
                chain_ok: true,
                verified_through: 0,
                first_bad: None,
                problem: None,
                notifications: Some(html),
            });
        }
        let some = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        let filter = crate::store::AuditFilter {
            actor: some(&q.actor),
            action: some(&q.action),
            application: some(&q.application),
            since: None,
            until: None,
            projects: super::console::caller_visibility()?
                .projects()
                .map(<[String]>::to_vec),
        };
        let cursor = some(&q.cursor);
        if cursor.as_deref().is_some_and(|c| c.parse::<i64>().is_err()) {
            return Err(AppError::BadRequest(
                "that page link is not valid any more".into(),
            ));
        }
        let (rows, next) = self
            .store
            .audit_page(&filter, cursor.as_deref(), 50)
            .await
            .map_err(store_error)?;
        let verification = self
            .state
            .audit_verified
            .get(&self.store)
            .await
            .map_err(store_error)?;
        Ok(AuditView {
            entries: rows
                .into_iter()
                .map(|r| AuditEntry {
                    seq: r.seq,
                    at: crate::clock::rfc3339(r.event.at),
                    actor_id: r.event.actor_id,
                    actor_name: r.event.actor_name,
                    auth_method: r.event.auth_method,
                    action: r.event.action,
                    target: r.event.target,
                    outcome: r.event.outcome,
                    source_ip: r.event.source_ip,
                    details: r.event.details.to_string(),
                })
                .collect(),
            next,
            chain_ok: verification.ok,
            verified_through: verification.verified_through,
            first_bad: verification.first_bad,
            problem: verification.problem,
            notifications: None,
        })
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

pub use super::console::{ConsoleCatalog, ConsoleWorkflow};

pub(super) fn store_error(e: StoreError) -> AppError {
    match e {
        StoreError::Connect { .. } => AppError::Unavailable("the database does not answer".into()),
        other => internal_error(&other),
    }
}

pub use crate::state::internal_error;

/// The one conversion from the engine's errors to HTTP: the person's messages pass through;
/// store and corruption failures are logged under a reference and hidden.
impl From<crate::engine::EngineError> for AppError {
    fn from(e: crate::engine::EngineError) -> Self {
        use crate::engine::EngineError as E;
        match e {
            E::NotFound(what) => AppError::NotFound(what),
            E::Invalid(m) => AppError::BadRequest(m),
            E::Forbidden(m) => AppError::Forbidden(m),
            E::Conflict(m) => AppError::Conflict(m),
            E::Unavailable(m) => AppError::Unavailable(m),
            E::Store(e) => store_error(e),
            e @ E::Corrupt(_) => internal_error(&e),
        }
    }
}
