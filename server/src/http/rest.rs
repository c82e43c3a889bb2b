//! REST API v1: an application's commits (keyset-paged), an immediate refresh, and its diff
//! against the cluster.
//!
//! Until sign-in exists (identity issue) these endpoints are open; refresh only schedules a
//! fetch, and it is refused when the request carries a foreign `Origin`.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{internal_error, AppState};
use crate::clock;
use app::model::AppError;

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    cursor: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/v1/applications/{name}/commits?cursor=&limit=`
pub async fn commits(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(page): Query<PageQuery>,
) -> Response {
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
        let (items, next) = state
            .store
            .app_commits(&name, page.cursor.as_deref(), page.limit.unwrap_or(50))
            .await
            .map_err(|e| internal_error(&e))?;
        Ok(Json(json!({"items": items, "next": next})))
    }
    .await;
    match result {
        Ok(body) => body.into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /api/v1/applications/{name}/refresh`: fetch the application's repository now.
pub async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if !super::same_origin(&headers, state.public_origin.as_deref()) {
        return AppError::Forbidden("cross-origin request refused".into()).into_response();
    }
    let source = match state.store.app_source(&name).await {
        Ok(Some(s)) => s,
        Ok(None) => return AppError::NotFound(format!("application {name}")).into_response(),
        Err(e) => return internal_error(&e).into_response(),
    };
    state.git.trigger(&source.repository, "refresh requested");
    let detail = json!({"repository": source.repository});
    if let Err(e) = state
        .store
        .add_timeline(
            &name,
            "refresh",
            "fetch requested (refresh)",
            &detail,
            clock::now(),
        )
        .await
    {
        return internal_error(&e).into_response();
    }
    (
        StatusCode::ACCEPTED,
        Json(json!({"status": "fetch scheduled", "repository": source.repository})),
    )
        .into_response()
}

/// `GET /api/v1/applications/{name}/diff`: every resource of the target revision compared with
/// the cluster (status and field changes; Secret values redacted).
pub async fn diff(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let source = match state.store.app_source(&name).await {
        Ok(Some(s)) => s,
        Ok(None) => return AppError::NotFound(format!("application {name}")).into_response(),
        Err(e) => return internal_error(&e).into_response(),
    };
    let Some(cluster) = state.clusters.get(&source.cluster).cloned() else {
        return AppError::NotFound(format!("cluster {}", source.cluster)).into_response();
    };
    let result = async {
        let (revision, digest, desired) =
            crate::reconcile::desired(&state.store, &cluster, &source).await?;
        let resources =
            crate::reconcile::compare(&state.store, &cluster, &source, &desired, &[]).await?;
        Ok::<_, crate::reconcile::ReconcileError>(
            json!({"revision": revision, "digest": digest, "resources": resources}),
        )
    }
    .await;
    match result {
        Ok(body) => Json(body).into_response(),
        Err(crate::reconcile::ReconcileError::NotRendered(app)) => {
            AppError::Conflict(format!("application {app} has no rendered revision yet"))
                .into_response()
        }
        Err(crate::reconcile::ReconcileError::Cluster(e)) => {
            AppError::Unavailable(e.to_string()).into_response()
        }
        Err(e) => internal_error(&e).into_response(),
    }
}
