//! REST for an application's live state (see `engine::live`):
//!
//! - `GET  /api/v1/applications/{name}/tree` — the resource tree (`{"application", "nodes":
//!   [TreeNode], "count"}`); `?kind=Pod&health=Degraded` keeps matching nodes and their
//!   ancestors.
//! - `GET  /api/v1/applications/{name}/live?apiVersion=&kind=&namespace=&name=&managed_fields=`
//!   — one object of the tree, live (from the API server) and desired, Secret values redacted.
//! - `GET  /api/v1/applications/{name}/pods/{namespace}/{pod}/logs?container=&tail=&since_seconds=&follow=&download=`
//!   — `text/plain` (or an attachment, or Server-Sent Events `line` with `follow=true`); role
//!   `auth.logs_role` (default deployer); every read is an audit row.
//! - `POST /api/v1/applications/{name}/resources/actions` `{"action": "restart"|"delete",
//!   "apiVersion", "kind", "namespace", "name", "reason"?}` — deployer; audit row and timeline
//!   entry.
//! - Kubernetes Events are timeline entries: `GET …/timeline?kinds=kube_event,kube_warning`.

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::{internal_error, AppState};
use crate::auth::guard::{while_valid, ClientIp, Credential};
use crate::auth::Principal;
use crate::cluster::tree::TreeNode;
use crate::engine::live::{self, LogQuery, ObjectName, ResourceAction};
use crate::store::AppSource;
use app::model::AppError;

async fn app_and_cluster(
    state: &AppState,
    name: &str,
) -> Result<
    (
        AppSource,
        std::sync::Arc<crate::cluster::client::ClusterClient>,
    ),
    AppError,
> {
    let source = state
        .store
        .app_source(name)
        .await
        .map_err(|e| internal_error(&e))?
        .ok_or_else(|| AppError::NotFound(format!("application {name}")))?;
    let cluster = state
        .clusters
        .get(&source.cluster)
        .cloned()
        .ok_or_else(|| AppError::NotFound(format!("cluster {}", source.cluster)))?;
    Ok((source, cluster))
}

/// Filters of the tree.
#[derive(Debug, Default, Deserialize)]
pub struct TreeFilter {
    /// Keep nodes of this kind (and their ancestors).
    #[serde(default)]
    pub kind: String,
    /// Keep nodes of this health (`Healthy`, `Progressing`, `Degraded`, `Missing`, `Unknown`).
    #[serde(default)]
    pub health: String,
}

impl TreeFilter {
    /// Whether no filter is set.
    pub fn is_empty(&self) -> bool {
        self.kind.is_empty() && self.health.is_empty()
    }

    fn matches(&self, n: &TreeNode) -> bool {
        (self.kind.is_empty() || n.kind.eq_ignore_ascii_case(&self.kind))
            && (self.health.is_empty()
                || format!("{:?}", n.health).eq_ignore_ascii_case(&self.health))
    }

    /// The nodes that match, with their ancestors (and a matching node's whole subtree).
    pub fn apply(&self, nodes: Vec<TreeNode>) -> Vec<TreeNode> {
        if self.is_empty() {
            return nodes;
        }
        nodes
            .into_iter()
            .filter_map(|mut n| {
                if self.matches(&n) {
                    return Some(n);
                }
                n.children = self.apply(std::mem::take(&mut n.children));
                (!n.children.is_empty()).then_some(n)
            })
            .collect()
    }
}

/// `GET /api/v1/applications/{name}/tree`
#[utoipa::path(get, path = "/api/v1/applications/{name}/tree", tag = "applications",
    params(("name" = String, Path, description = "Application name"), ("kind" = Option<String>, Query, description = "Keep nodes of this kind (and their ancestors)"),
        ("health" = Option<String>, Query, description = "Keep nodes of this health")),
    responses((status = 200, description = "Declared objects with their descendants", body = crate::http::openapi::TreeAnswer), crate::http::openapi::Errors))]
pub async fn tree(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(filter): Query<TreeFilter>,
) -> Response {
    let result = async {
        let (source, cluster) = app_and_cluster(&state, &name).await?;
        let nodes = live::tree(&state.store, &cluster, &source).await?;
        let nodes = filter.apply(nodes);
        let count: usize = nodes.iter().map(TreeNode::count).sum();
        Ok::<_, AppError>(Json(super::openapi::TreeAnswer {
            application: name,
            nodes: serde_json::to_value(nodes).unwrap_or_default(),
            count,
        }))
    }
    .await;
    match result {
        Ok(body) => body.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Query of the live manifest.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveQuery {
    #[serde(flatten)]
    pub object: ObjectName,
    /// Keep `metadata.managedFields` (hidden by default).
    #[serde(default, rename = "managed_fields")]
    pub managed_fields: bool,
}

/// `GET /api/v1/applications/{name}/live`
#[utoipa::path(get, path = "/api/v1/applications/{name}/live", tag = "applications",
    params(("name" = String, Path, description = "Application name"), ("apiVersion" = String, Query), ("kind" = String, Query), ("namespace" = Option<String>, Query), ("name" = String, Query),
        ("managed_fields" = Option<bool>, Query, description = "Keep metadata.managedFields")),
    responses((status = 200, description = "The live object beside the desired one (Secret values redacted)", body = Object), crate::http::openapi::Errors))]
pub async fn manifest(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<LiveQuery>,
) -> Response {
    let result = async {
        let (source, cluster) = app_and_cluster(&state, &name).await?;
        Ok::<_, AppError>(
            live::manifest(&state.store, &cluster, &source, &q.object, q.managed_fields).await?,
        )
    }
    .await;
    match result {
        Ok(m) => Json(m).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /api/v1/applications/{name}/pods/{namespace}/{pod}/logs`
pub async fn logs(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    credential: Option<Extension<Credential>>,
    Path((name, namespace, pod)): Path<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    let result = async {
        let (source, cluster) = app_and_cluster(&state, &name).await?;
        let (container, _, params) =
            live::log_target(&state.store, &cluster, &source, &namespace, &pod, &q).await?;
        let event = principal.actor(&ip).event(
            "pod_logs",
            &format!("application:{name}"),
            "success",
            json!({"pod": format!("{namespace}/{pod}"), "container": container,
                   "tail": params.tail_lines, "since_seconds": params.since_seconds,
                   "follow": q.follow}),
            crate::clock::now(),
        );
        state
            .store
            .audit(&event)
            .await
            .map_err(|e| internal_error(&e))?;
        Ok::<_, AppError>((source, cluster, container, params))
    }
    .await;
    let (_, cluster, container, params) = match result {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if q.follow {
        let Some(Extension(credential)) = credential else {
            return AppError::Unauthorized.into_response();
        };
        let reader = match cluster.pod_log_stream(&namespace, &pod, &params).await {
            Ok(r) => r,
            Err(e) => {
                return AppError::from(crate::engine::EngineError::Unavailable(e.to_string()))
                    .into_response()
            }
        };
        use futures_util::{AsyncBufReadExt, StreamExt};
        let lines = reader.lines().map(|l| {
            Ok::<_, Infallible>(Event::default().event("line").data(l.unwrap_or_default()))
        });
        return Sse::new(while_valid(
            axum::extract::FromRef::from_ref(&state),
            credential,
            lines,
        ))
        .keep_alive(KeepAlive::default())
        .into_response();
    }
    match live::pod_log(&cluster, &namespace, &pod, &params).await {
        Ok(text) => {
            let mut response =
                ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response();
            if q.download {
                let file = format!("{namespace}_{pod}_{container}.log").replace(
                    |c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)),
                    "_",
                );
                if let Ok(v) = format!("attachment; filename=\"{file}\"").parse() {
                    response
                        .headers_mut()
                        .insert(header::CONTENT_DISPOSITION, v);
                }
            }
            response
        }
        Err(e) => AppError::from(e).into_response(),
    }
}

/// Body of a resource action.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionBody {
    pub action: ResourceAction,
    #[serde(flatten)]
    pub object: ObjectName,
    /// Why (kept in the audit row and on the timeline).
    #[serde(default)]
    pub reason: String,
}

/// Runs a resource action for `principal` and records it (audit row, timeline entry); the
/// answer is the sentence for people. Shared by REST and the dashboard's form.
pub async fn run_action(
    state: &AppState,
    principal: &Principal,
    ip: &str,
    app: &str,
    body: &ActionBody,
) -> Result<String, AppError> {
    let (source, cluster) = app_and_cluster(state, app).await?;
    let now = crate::clock::now();
    let target = format!("application:{app}");
    let details =
        json!({"action": body.action.as_str(), "object": body.object, "reason": body.reason});
    let outcome = live::act(
        &state.store,
        &cluster,
        &source,
        body.action,
        &body.object,
        now,
    )
    .await;
    let actor = principal.actor(ip);
    let audit_outcome = if outcome.is_ok() {
        "success"
    } else {
        "failure"
    };
    let mut audit_details = details.clone();
    if let Err(e) = &outcome {
        audit_details["error"] = e.to_string().into();
    }
    state
        .store
        .audit(&actor.event(
            &format!("resource_{}", body.action.as_str()),
            &target,
            audit_outcome,
            audit_details,
            now,
        ))
        .await
        .map_err(|e| internal_error(&e))?;
    let said = outcome?;
    let mut message = format!("{said} (by {})", principal.display_name);
    if !body.reason.trim().is_empty() {
        message.push_str(&format!(": {}", body.reason.trim()));
    }
    state
        .store
        .add_timeline(app, "resource_action", &message, &details, now)
        .await
        .map_err(|e| internal_error(&e))?;
    Ok(message)
}

/// `POST /api/v1/applications/{name}/resources/actions`
#[utoipa::path(post, path = "/api/v1/applications/{name}/resources/actions", tag = "applications", params(("name" = String, Path, description = "Application name")),
    request_body(content = ActionBody, description = "Restart a Deployment/StatefulSet/DaemonSet or delete a Pod of the tree"),
    responses((status = 200, description = "Done", body = crate::http::openapi::ActionAnswer), crate::http::openapi::Errors))]
pub async fn action(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Path(name): Path<String>,
    body: Result<Json<ActionBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return AppError::BadRequest(
            "expected {\"action\": \"restart\"|\"delete\", \"apiVersion\", \"kind\", \"namespace\", \"name\", \"reason\"}"
                .into(),
        )
        .into_response();
    };
    match run_action(&state, &principal, &ip, &name, &body).await {
        Ok(message) => (
            StatusCode::OK,
            Json(super::openapi::ActionAnswer { message }),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}
