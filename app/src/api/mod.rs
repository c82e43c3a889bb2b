//! Server functions: thin calls from the UI to the engine through the port traits.
//!
//! Under `ssr` this module also defines those traits; the `server` crate implements them and
//! provides a [`ports::Ports`] value in the Leptos context of every request.

#[cfg(feature = "ssr")]
pub mod ports;

use leptos::prelude::*;

/// Gives a failed call its HTTP status (404, 403, 409…) instead of a generic 500, for callers
/// that read status codes (scripts, tests, the browser's network panel).
#[cfg(feature = "ssr")]
fn answer<T>(result: Result<T, AppError>) -> Result<T, AppError> {
    if let Err(e) = &result {
        if let Some(options) = use_context::<leptos_axum::ResponseOptions>() {
            options.set_status(
                axum::http::StatusCode::from_u16(e.status_code())
                    .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
            );
        }
    }
    result
}

use crate::model::{
    AppDetail, AppError, AppListPage, AppListQuery, AuditQuery, AuditView, DiffQuery, DiffView,
    HistoryPage, RequestList, RevisionView, SignInOptions, Viewer,
};

/// One page of the Applications list.
#[server(prefix = "/_fn", endpoint = "application_page")]
pub async fn application_page(
    #[server(default)] query: AppListQuery,
) -> Result<AppListPage, AppError> {
    answer(
        async {
            ports::Ports::from_context()?
                .catalog
                .application_page(query)
                .await
        }
        .await,
    )
}

/// Header, banners, open request and resources of one application.
#[server(prefix = "/_fn", endpoint = "application_detail")]
pub async fn application_detail(name: String) -> Result<AppDetail, AppError> {
    answer(
        async {
            ports::Ports::from_context()?
                .catalog
                .application(&name)
                .await
        }
        .await,
    )
}

/// A page of an application's timeline; `kinds` is comma-separated (empty: all).
#[server(prefix = "/_fn", endpoint = "application_history")]
pub async fn application_history(
    name: String,
    kinds: String,
    cursor: String,
) -> Result<HistoryPage, AppError> {
    answer(
        async {
            let kinds: Vec<String> = kinds
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect();
            ports::Ports::from_context()?
                .catalog
                .history(&name, &kinds, &cursor)
                .await
        }
        .await,
    )
}

/// Git against live, or two revisions.
#[server(prefix = "/_fn", endpoint = "application_diff")]
pub async fn application_diff(name: String, query: DiffQuery) -> Result<DiffView, AppError> {
    answer(
        async {
            ports::Ports::from_context()?
                .catalog
                .diff(&name, query)
                .await
        }
        .await,
    )
}

/// Known-good revisions of an application (rollback targets).
#[server(prefix = "/_fn", endpoint = "known_good")]
pub async fn known_good(name: String) -> Result<Vec<RevisionView>, AppError> {
    answer(async { ports::Ports::from_context()?.catalog.revisions(&name).await }.await)
}

/// Open sync requests across applications (the Approvals page).
#[server(prefix = "/_fn", endpoint = "open_requests")]
pub async fn open_requests() -> Result<RequestList, AppError> {
    answer(async { ports::Ports::from_context()?.catalog.open_requests().await }.await)
}

/// Approve a sync request.
#[server(prefix = "/_fn", endpoint = "approve")]
pub async fn approve(request: i64) -> Result<String, AppError> {
    answer(
        async {
            ports::Ports::from_context()?
                .workflow
                .approve(request)
                .await
        }
        .await,
    )
}

/// Reject a sync request, saying why.
#[server(prefix = "/_fn", endpoint = "reject")]
pub async fn reject(request: i64, reason: String) -> Result<String, AppError> {
    answer(
        async {
            ports::Ports::from_context()?
                .workflow
                .reject(request, &reason)
                .await
        }
        .await,
    )
}

/// Run an approved request that waits for a click.
#[server(prefix = "/_fn", endpoint = "sync_now")]
pub async fn sync_now(request: i64) -> Result<String, AppError> {
    answer(
        async {
            ports::Ports::from_context()?
                .workflow
                .sync_now(request)
                .await
        }
        .await,
    )
}

/// Roll back to a known-good revision and pin it.
#[server(prefix = "/_fn", endpoint = "rollback")]
pub async fn rollback(name: String, revision: String, reason: String) -> Result<String, AppError> {
    answer(
        async {
            ports::Ports::from_context()?
                .workflow
                .rollback(&name, &revision, &reason)
                .await
        }
        .await,
    )
}

/// Remove a rollback pin: the application follows Git again.
#[server(prefix = "/_fn", endpoint = "unpin")]
pub async fn unpin(name: String) -> Result<String, AppError> {
    answer(async { ports::Ports::from_context()?.workflow.unpin(&name).await }.await)
}

/// The signed-in person (`None` when anonymous): the user menu.
#[server(prefix = "/_fn", endpoint = "whoami")]
pub async fn whoami() -> Result<Option<Viewer>, AppError> {
    Ok(ports::Ports::from_context()?.identity.current())
}

/// What the sign-in page offers (single sign-on button, local form).
#[server(prefix = "/_fn", endpoint = "login_options")]
pub async fn login_options() -> Result<SignInOptions, AppError> {
    Ok(ports::Ports::from_context()?.identity.sign_in_options())
}

/// One page of the audit ledger and the chain's state (the Audit page).
#[server(prefix = "/_fn", endpoint = "audit_page")]
pub async fn audit_page(query: AuditQuery) -> Result<AuditView, AppError> {
    answer(async { ports::Ports::from_context()?.ledger.audit(query).await }.await)
}

/// The Tree tab as server-rendered HTML: the live resource tree (filtered by `kind` and
/// `health`), and the live manifest of `node` (`apiVersion|kind|namespace|name`, with
/// `managedFields` when `managed`) or the log of `logs` (`namespace/pod`, `container`).
#[server(prefix = "/_fn", endpoint = "application_tree")]
pub async fn application_tree(
    name: String,
    kind: String,
    health: String,
    node: String,
    logs: String,
    container: String,
    managed: bool,
) -> Result<String, AppError> {
    answer(
        async {
            ports::Ports::from_context()?
                .catalog
                .tree(&name, [kind, health, node, logs, container], managed)
                .await
        }
        .await,
    )
}

/// Restart a workload or delete a pod of the application's tree (a plain form on the Tree tab).
#[server(prefix = "/_fn", endpoint = "resource_action")]
pub async fn resource_action(
    name: String,
    action: String,
    api_version: String,
    kind: String,
    namespace: String,
    object: String,
    reason: String,
) -> Result<String, AppError> {
    answer(
        async {
            ports::Ports::from_context()?
                .workflow
                .resource_action(
                    &name,
                    [action, api_version, kind, namespace, object, reason],
                )
                .await
        }
        .await,
    )
}
