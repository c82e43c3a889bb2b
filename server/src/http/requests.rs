//! Sync requests over REST: list, approve, reject (with a reason), and "sync now" for an
//! approved request whose policy waits for a click.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use super::rest::respond;
use super::{internal_error, AppState};
use crate::auth::guard::ClientIp;
use crate::auth::visibility::Visibility;
use crate::auth::Principal;
use crate::engine::decisions::{self as workflow, Deps};
use crate::store::RequestStatus;
use app::model::AppError;

fn deps(state: &AppState) -> Deps<'_> {
    Deps {
        store: &state.store,
        clusters: &state.clusters,
        locks: &state.app_locks,
        queue: &state.queue,
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    application: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/v1/sync-requests?status=pending&application=`: newest first, only requests of
/// applications in the projects the caller may see.
#[utoipa::path(get, path = "/api/v1/sync-requests", tag = "sync requests",
    params(("status" = Option<String>, Query, description = "pending, approved, rejected, superseded, synced or failed"),
        ("application" = Option<String>, Query, description = "Only this application's"),
        ("limit" = Option<i64>, Query, description = "At most this many (default 100)")),
    responses((status = 200, description = "Sync requests, newest first", body = crate::http::openapi::RequestList), crate::http::openapi::Errors))]
pub async fn list(
    State(state): State<AppState>,
    Extension(visibility): Extension<Visibility>,
    Query(q): Query<ListQuery>,
) -> Response {
    let status = match q
        .status
        .as_deref()
        .map(str::parse::<RequestStatus>)
        .transpose()
    {
        Ok(status) => status,
        Err(e) => return AppError::BadRequest(e).into_response(),
    };
    respond(
        state
            .store
            .sync_requests(
                status,
                q.application.as_deref(),
                visibility.projects(),
                q.limit.unwrap_or(100),
            )
            .await
            .map(|items| super::openapi::RequestList { items })
            .map_err(|e| internal_error(&e)),
    )
}

/// `POST /api/v1/sync-requests/{id}/approve`
#[utoipa::path(post, path = "/api/v1/sync-requests/{id}/approve", tag = "sync requests", params(("id" = i64, Path, description = "Sync request id")),
    responses((status = 200, description = "The request after the approval (synced when it was the last one needed)", body = crate::store::SyncRequest), crate::http::openapi::Errors))]
pub async fn approve(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Path(id): Path<i64>,
) -> Response {
    respond(
        workflow::approve(&deps(&state), &who, &ip, id)
            .await
            .map_err(AppError::from),
    )
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectBody {
    reason: String,
}

/// `POST /api/v1/sync-requests/{id}/reject` with `{"reason": "..."}`
#[utoipa::path(post, path = "/api/v1/sync-requests/{id}/reject", tag = "sync requests", params(("id" = i64, Path, description = "Sync request id")),
    request_body(content = RejectBody, description = "Why (kept in the audit ledger)"),
    responses((status = 200, description = "The rejected request", body = crate::store::SyncRequest), crate::http::openapi::Errors))]
pub async fn reject(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Path(id): Path<i64>,
    body: Option<Json<RejectBody>>,
) -> Response {
    let Some(Json(body)) = body else {
        return AppError::BadRequest("a rejection needs a JSON body {\"reason\": \"...\"}".into())
            .into_response();
    };
    respond(
        workflow::reject(&deps(&state), &who, &ip, id, &body.reason)
            .await
            .map_err(AppError::from),
    )
}

/// `POST /api/v1/sync-requests/{id}/sync`: run an approved request now.
#[utoipa::path(post, path = "/api/v1/sync-requests/{id}/sync", tag = "sync requests", params(("id" = i64, Path, description = "Sync request id")),
    responses((status = 200, description = "Runs an approved request; the request as it ends", body = crate::store::SyncRequest), crate::http::openapi::Errors))]
pub async fn sync(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Path(id): Path<i64>,
) -> Response {
    let d = deps(&state);
    let result = async {
        workflow::run_approved(&d, &who, &ip, id).await?;
        state
            .store
            .sync_request(id)
            .await
            .map_err(|e| internal_error(&e))
    }
    .await;
    respond(result)
}

/// `GET /api/v1/applications/{name}/revisions`: known-good revisions (rollback targets).
#[utoipa::path(get, path = "/api/v1/applications/{name}/revisions", tag = "applications", params(("name" = String, Path, description = "Application name")),
    responses((status = 200, description = "Known-good revisions (rollback targets) and the pin", body = crate::http::openapi::RevisionsAnswer), crate::http::openapi::Errors))]
pub async fn revisions(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let result = async {
        if state
            .store
            .app_source(&name)
            .await
            .map_err(|e| internal_error(&e))?
            .is_none()
        {
            return Err(AppError::NotFound(format!("application {name}")));
        }
        let items = state
            .store
            .known_good_revisions(&name)
            .await
            .map_err(|e| internal_error(&e))?;
        let pin = state
            .store
            .pin_of(&name)
            .await
            .map_err(|e| internal_error(&e))?;
        Ok(super::openapi::RevisionsAnswer { items, pinned: pin })
    }
    .await;
    respond(result)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    revision: String,
    reason: String,
}

/// `POST /api/v1/applications/{name}/rollback` with `{"revision": SHA, "reason": "..."}`
#[utoipa::path(post, path = "/api/v1/applications/{name}/rollback", tag = "applications", params(("name" = String, Path, description = "Application name")),
    request_body(content = RollbackBody, description = "A known-good revision (full or short SHA) and why"),
    responses((status = 200, description = "The rollback's sync (or the sync request it opened)", body = Object), crate::http::openapi::Errors))]
pub async fn rollback(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Path(name): Path<String>,
    body: Option<Json<RollbackBody>>,
) -> Response {
    let Some(Json(body)) = body else {
        return AppError::BadRequest(
            "a rollback needs a JSON body {\"revision\": ..., \"reason\": ...}".into(),
        )
        .into_response();
    };
    respond(
        workflow::rollback(
            &deps(&state),
            &who,
            &ip,
            &name,
            &body.revision,
            &body.reason,
        )
        .await
        .map_err(AppError::from),
    )
}

/// `POST /api/v1/applications/{name}/unpin`
#[utoipa::path(post, path = "/api/v1/applications/{name}/unpin", tag = "applications", params(("name" = String, Path, description = "Application name")),
    responses((status = 200, description = "The application follows Git again", body = Object), crate::http::openapi::Errors))]
pub async fn unpin(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Path(name): Path<String>,
) -> Response {
    respond(
        workflow::unpin(&deps(&state), &who, &ip, &name)
            .await
            .map_err(AppError::from),
    )
}
