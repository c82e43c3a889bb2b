//! The dashboard's ports: what the application, approvals and diff pages read, and the
//! decisions people take there. Every call about one application is judged in its project
//! (`auth::guard::authorize`, the same check the guard applies to REST routes) and goes
//! through the same workflow functions as the REST API.

use std::convert::Infallible;
use std::time::Duration;

use app::api::ports::{Catalog, Workflow};
use app::model::{
    AppDetail, AppError, AppListPage, AppListQuery, DiffField, DiffQuery, DiffResource, DiffView,
    HistoryEntry, HistoryPage, PinView, PolicyView, RequestList, RequestView, ResourceView,
    RevisionView,
};
use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::ports::store_error;
use super::{internal_error, AppState};
use crate::auth::guard::{authorize, while_valid, ClientIp, Credential};
use crate::auth::policy::Action;
use crate::auth::visibility::Visibility;
use crate::auth::Principal;
use crate::engine::decisions::{self as workflow, Deps};
use crate::store::{AppSource, RequestStatus, SyncRequest};

/// Applications shown per page of the list.
pub const PAGE_SIZE: i64 = 50;

/// The person behind the current server-function call, where they come from, and the path.
fn caller() -> Result<(Principal, String, String), AppError> {
    let parts = leptos::prelude::use_context::<axum::http::request::Parts>()
        .ok_or_else(|| AppError::Internal("request-missing".into()))?;
    let principal = parts
        .extensions
        .get::<Principal>()
        .cloned()
        .ok_or(AppError::Unauthorized)?;
    let ip = parts
        .extensions
        .get::<ClientIp>()
        .map(|ClientIp(ip)| ip.clone())
        .unwrap_or_else(|| "unknown".into());
    Ok((principal, ip, parts.uri.path().to_owned()))
}

/// What the caller of the current server function may see (attached by the guard).
pub(super) fn caller_visibility() -> Result<Visibility, AppError> {
    let parts = leptos::prelude::use_context::<axum::http::request::Parts>()
        .ok_or_else(|| AppError::Internal("request-missing".into()))?;
    parts
        .extensions
        .get::<Visibility>()
        .cloned()
        .ok_or(AppError::Unauthorized)
}

/// The caller, allowed to take `action` about application `app`.
pub(super) async fn allowed(
    state: &AppState,
    action: Action,
    app: Option<&str>,
) -> Result<(Principal, String), AppError> {
    let (principal, ip, path) = caller()?;
    let auth = axum::extract::FromRef::from_ref(state);
    authorize(&auth, &principal, action, app, "POST", &path, &ip).await?;
    Ok((principal, ip))
}

fn deps(state: &AppState) -> Deps<'_> {
    Deps {
        store: &state.store,
        clusters: &state.clusters,
        locks: &state.app_locks,
        queue: &state.queue,
    }
}

async fn source(state: &AppState, name: &str) -> Result<AppSource, AppError> {
    state
        .store
        .app_source(name)
        .await
        .map_err(store_error)?
        .ok_or_else(|| AppError::NotFound(format!("application {name}")))
}

fn short(sha: &str) -> &str {
    app::model::short_revision(sha)
}

/// A JSON value as a diff line shows it: strings bare, everything else as compact JSON.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Why `principal` may not take `action` in `project` (without recording anything: this only
/// decides what the page offers; the action itself is checked again when taken).
fn role_gap(
    state: &AppState,
    principal: &Principal,
    action: Action,
    project: &str,
) -> Option<String> {
    let needed = action.role_under(&state.settings.auth);
    let held = principal.role_in(&state.settings.auth, Some(project));
    held.is_none_or(|r| r < needed).then(|| {
        format!(
            "needs role {} in project {project}; you have {}",
            needed.as_str(),
            held.map_or("no role", |r| r.as_str())
        )
    })
}

/// A sync request as the pages show it, with what `principal` may do about it.
async fn request_view(
    state: &AppState,
    principal: &Principal,
    req: SyncRequest,
    source: &AppSource,
) -> Result<RequestView, AppError> {
    let why_not = match role_gap(state, principal, Action::Approve, &source.project) {
        Some(gap) => Some(gap),
        None if req.status == RequestStatus::Approved => None,
        None => workflow::may_approve(&state.store, principal, &req, source)
            .await
            .err()
            .map(|e| match e {
                crate::engine::EngineError::Forbidden(m)
                | crate::engine::EngineError::Conflict(m) => m,
                other => AppError::from(other).to_string(),
            }),
    };
    // The branch tip may be another application's commit: name this application's last change.
    let commit = match state
        .store
        .last_app_change(&req.application, &source.repository, &req.revision)
        .await
        .map_err(store_error)?
    {
        Some((_, title, author)) => Some((title, author)),
        None => state
            .store
            .commit_summary(&source.repository, &req.revision)
            .await
            .map_err(store_error)?,
    };
    let requested_by = match &req.requested_by {
        Some(id) => Some(display_name(state, id).await?),
        None => None,
    };
    let signature = state
        .store
        .revision_signature(&source.name, &req.revision)
        .await
        .map_err(store_error)?;
    Ok(RequestView {
        id: req.id,
        application: req.application,
        revision: req.revision,
        title: commit.as_ref().map(|(t, _)| t.clone()),
        author: commit.map(|(_, a)| a),
        cause: req.cause,
        status: req.status,
        required: req.required,
        approvals: req
            .approvals
            .into_iter()
            .filter(|a| !a.void)
            .map(|a| (a.user_name, a.at))
            .collect(),
        created_at: req.created_at,
        requested_by,
        why_not,
        signature: signature.as_ref().map(Into::into),
    })
}

async fn display_name(state: &AppState, actor_id: &str) -> Result<String, AppError> {
    Ok(state
        .store
        .user(actor_id)
        .await
        .map_err(store_error)?
        .map(|u| u.display_name)
        .unwrap_or_else(|| crate::store::actor_display_name(actor_id)))
}

/// The open request of an application: pending, or approved and waiting for "sync now".
async fn open_request(state: &AppState, app: &str) -> Result<Option<SyncRequest>, AppError> {
    Ok(state
        .store
        .sync_requests(None, Some(app), None, 5)
        .await
        .map_err(store_error)?
        .into_iter()
        .find(|r| {
            r.status == RequestStatus::Pending
                || (r.status == RequestStatus::Approved && r.sync_id.is_none())
        }))
}

/// How long a page of the Applications list is reused. The list is a snapshot anyway (it does
/// not update live); one second of reuse keeps the database out of the hot path when many
/// people (or one dashboard on a wall) load it at once.
const LIST_TTL: Duration = Duration::from_secs(1);

type ListKey = (AppListQuery, Option<Vec<String>>);

/// The dashboard's read side.
pub struct ConsoleCatalog {
    state: AppState,
    lists: std::sync::Mutex<std::collections::HashMap<ListKey, (std::time::Instant, AppListPage)>>,
}

impl ConsoleCatalog {
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            lists: Default::default(),
        }
    }

    fn cached(&self, key: &ListKey) -> Option<AppListPage> {
        let lists = self.lists.lock().ok()?;
        lists
            .get(key)
            .filter(|(at, _)| at.elapsed() < LIST_TTL)
            .map(|(_, page)| page.clone())
    }

    fn remember(&self, key: ListKey, page: &AppListPage) {
        if let Ok(mut lists) = self.lists.lock() {
            if lists.len() >= 256 {
                lists.retain(|_, (at, _)| at.elapsed() < LIST_TTL);
                if lists.len() >= 256 {
                    lists.clear();
                }
            }
            lists.insert(key, (std::time::Instant::now(), page.clone()));
        }
    }
}

#[async_trait]
impl Catalog for ConsoleCatalog {
    async fn application_page(&self, query: AppListQuery) -> Result<AppListPage, AppError> {
        allowed(&self.state, Action::View, None).await?;
        // People with project-scoped roles see only those projects' applications.
        let only = caller_visibility()?.projects().map(<[String]>::to_vec);
        let key = (query, only);
        if let Some(page) = self.cached(&key) {
            return Ok(page);
        }
        let page = self
            .state
            .store
            .application_page(&key.0, PAGE_SIZE, key.1.as_deref())
            .await
            .map_err(store_error)?;
        self.remember(key, &page);
        Ok(page)
    }

    async fn application(&self, name: &str) -> Result<AppDetail, AppError> {
        let state = &self.state;
        let (principal, _) = allowed(state, Action::View, Some(name)).await?;
        let source = source(state, name).await?;
        let summary = state
            .store
            .application_summary(name)
            .await
            .map_err(store_error)?
            .ok_or_else(|| AppError::NotFound(format!("application {name}")))?;
        let status = state.store.app_status(name).await.map_err(store_error)?;
        let pin = match state.store.pin_of(name).await.map_err(store_error)? {
            Some(p) => Some(PinView {
                revision: p.revision,
                by: p.pinned_name,
                at: p.pinned_at,
                reason: p.reason,
            }),
            None => None,
        };
        let drift_since = state
            .store
            .open_drift(name)
            .await
            .map_err(store_error)?
            .map(|d| d.opened_at);
        let request = match open_request(state, name).await? {
            Some(r) => Some(request_view(state, &principal, r, &source).await?),
            None => None,
        };
        let resources = status
            .as_ref()
            .and_then(|s| s.resources.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|r| {
                let object = r.get("object").cloned().unwrap_or(Value::Null);
                ResourceView {
                    group: text(&object, "group"),
                    kind: text(&object, "kind"),
                    namespace: text(&object, "namespace"),
                    name: text(&object, "name"),
                    status: text(r, "status"),
                    health: r.get("health").and_then(Value::as_str).map(str::to_owned),
                    health_message: r
                        .get("health_message")
                        .and_then(Value::as_str)
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned),
                    changes: r
                        .get("changes")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len),
                }
            })
            .collect();
        let policy = &source.approvals;
        let (target_signature, held_back) = super::rest::target_signature(state, &source).await?;
        Ok(AppDetail {
            summary,
            deployed_sha: status.as_ref().and_then(|s| s.deployed_sha.clone()),
            compared_at: status.as_ref().map(|s| s.compared_at),
            policy: PolicyView {
                auto_sync: source.auto_sync,
                self_heal: source.self_heal,
                prune: source.prune,
                approvals_required: if source.auto_sync { 0 } else { policy.required },
                approval_groups: policy.groups.clone(),
                sync_on_approval: policy.sync_on_approval,
                require_signed: source.require_signed,
                rollback_needs_approval: policy.rollback && policy.required > 0,
            },
            pin,
            drift_since,
            request,
            resources,
            rollback_why_not: role_gap(state, &principal, Action::Rollback, &source.project),
            target_signature: target_signature.as_ref().map(Into::into),
            held_back,
            now: crate::clock::now(),
        })
    }

    async fn history(
        &self,
        name: &str,
        kinds: &[String],
        cursor: &str,
    ) -> Result<HistoryPage, AppError> {
        let state = &self.state;
        allowed(state, Action::View, Some(name)).await?;
        source(state, name).await?;
        if !cursor.is_empty() && !cursor.contains('|') {
            return Err(AppError::BadRequest(
                "that page link is not valid any more".into(),
            ));
        }
        let (items, next) = state
            .store
            .history_page(name, (!cursor.is_empty()).then_some(cursor), 30, kinds)
            .await
            .map_err(store_error)?;
        let shas: Vec<String> = items
            .iter()
            .filter(|i| i.kind == "commit")
            .map(|i| text(&i.detail, "sha"))
            .collect();
        let mut signatures = state
            .store
            .signatures_of(name, &shas)
            .await
            .map_err(store_error)?;
        let mut entries = Vec::with_capacity(items.len());
        for item in items {
            let number = |key: &str| item.detail.get(key).and_then(Value::as_i64);
            let mut links = super::fold::Links {
                request: number("request"),
                sync: (item.kind == "sync").then(|| number("sync")).flatten(),
                request_sync: None,
            };
            if matches!(item.kind.as_str(), "sync_requested" | "rollback_requested") {
                if let Some(id) = links.request {
                    links.request_sync = state
                        .store
                        .sync_request(id)
                        .await
                        .map_err(store_error)?
                        .and_then(|r| r.sync_id);
                }
            }
            let (key, revision) = if item.kind == "commit" {
                let sha = text(&item.detail, "sha");
                (format!("c{sha}"), Some(sha))
            } else {
                let rev = item
                    .detail
                    .get("revision")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                (format!("e{}", item.id), rev)
            };
            let mut message = item.message;
            let mut results = Vec::new();
            if item.kind == "sync" {
                if let Some(id) = item.detail.get("sync").and_then(Value::as_i64) {
                    if let Some((res, by)) =
                        state.store.sync_results(id).await.map_err(store_error)?
                    {
                        message = format!("{message} · by {}", display_name(state, &by).await?);
                        results = res
                            .as_array()
                            .map(|list| {
                                list.iter()
                                    .map(|r| {
                                        (text(r, "action"), text(r, "object"), text(r, "message"))
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                    }
                }
            }
            let signature = match (&revision, item.kind == "commit") {
                (Some(sha), true) => signatures.remove(sha),
                _ => None,
            };
            entries.push((
                HistoryEntry {
                    signature: signature.as_ref().map(Into::into),
                    summary: String::new(),
                    children: Vec::new(),
                    key,
                    kind: item.kind,
                    at: item.occurred_at,
                    message,
                    revision,
                    results,
                },
                links,
            ));
        }
        Ok(HistoryPage {
            entries: super::fold::fold(entries),
            next,
            now: crate::clock::now(),
        })
    }

    async fn diff(&self, name: &str, query: DiffQuery) -> Result<DiffView, AppError> {
        let state = &self.state;
        allowed(state, Action::View, Some(name)).await?;
        let source = source(state, name).await?;
        let (from, to) = (query.from.trim(), query.to.trim());
        if !from.is_empty() || !to.is_empty() {
            if from.is_empty() || to.is_empty() {
                return Err(AppError::BadRequest(
                    "choose both revisions to compare".into(),
                ));
            }
            let body = workflow::diff_revisions(&state.store, name, from, to).await?;
            let resources: Vec<DiffResource> = body["resources"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|r| DiffResource {
                    kind: text(&r["object"], "kind"),
                    namespace: text(&r["object"], "namespace"),
                    name: text(&r["object"], "name"),
                    status: text(r, "change"),
                    compared_by: String::new(),
                    fields: r["fields"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|f| DiffField {
                            path: text(f, "path"),
                            before: f.get("from").filter(|v| !v.is_null()).map(show),
                            after: f.get("to").filter(|v| !v.is_null()).map(show),
                        })
                        .collect(),
                })
                .collect();
            return Ok(DiffView {
                mode: "revisions".into(),
                before_label: short(from).to_owned(),
                after_label: short(to).to_owned(),
                compared: resources.len(),
                resources,
            });
        }
        let cluster = state
            .clusters
            .get(&source.cluster)
            .cloned()
            .ok_or_else(|| AppError::NotFound(format!("cluster {}", source.cluster)))?;
        let (revision, _digest, desired) =
            crate::reconcile::desired(&state.store, &cluster, &source)
                .await
                .map_err(super::rest::reconcile_error)?;
        let diffs =
            crate::reconcile::compare(&state.store, &cluster, &source, &desired, &source.ignore)
                .await
                .map_err(super::rest::reconcile_error)?;
        let compared = diffs.len();
        let resources = diffs
            .into_iter()
            .filter(|d| d.status != crate::diff::ResourceStatus::Synced)
            .map(|d| DiffResource {
                kind: d.object.kind.clone(),
                namespace: d.object.namespace.clone(),
                name: d.object.name.clone(),
                status: format!("{:?}", d.status),
                compared_by: d.compared_by.clone(),
                fields: d
                    .changes
                    .iter()
                    .map(|c| DiffField {
                        path: c.path.clone(),
                        before: c.live.as_ref().map(show),
                        after: c.desired.as_ref().map(show),
                    })
                    .collect(),
            })
            .collect();
        Ok(DiffView {
            mode: "live".into(),
            before_label: "live cluster".into(),
            after_label: format!("predicted from Git {}", short(&revision)),
            resources,
            compared,
        })
    }

    async fn revisions(&self, name: &str) -> Result<Vec<RevisionView>, AppError> {
        let state = &self.state;
        allowed(state, Action::View, Some(name)).await?;
        source(state, name).await?;
        let running = match state.store.pin_of(name).await.map_err(store_error)? {
            Some(pin) => Some(pin.revision),
            None => state
                .store
                .app_status(name)
                .await
                .map_err(store_error)?
                .and_then(|s| s.deployed_sha),
        };
        let known = state
            .store
            .known_good_revisions(name)
            .await
            .map_err(store_error)?;
        let shas: Vec<String> = known.iter().map(|k| k.revision.clone()).collect();
        let signatures = state
            .store
            .signatures_of(name, &shas)
            .await
            .map_err(store_error)?;
        let mut out = Vec::with_capacity(known.len());
        for k in known {
            // Its verdict now, or the verified one it was deployed under (history keeps it).
            let mut signature = signatures.get(&k.revision).cloned();
            if !signature.as_ref().is_some_and(|v| v.is_verified()) {
                if let Some(then) = state
                    .store
                    .deployed_signature(name, &k.revision)
                    .await
                    .map_err(store_error)?
                {
                    signature = Some(then);
                }
            }
            out.push(RevisionView {
                signature: signature.as_ref().map(Into::into),
                current: running.as_deref() == Some(k.revision.as_str()),
                deployed_by: display_name(state, &k.deployed_by).await?,
                revision: k.revision,
                title: k.title,
                author: k.author_name,
                deployed_at: k.deployed_at,
            });
        }
        Ok(out)
    }

    async fn tree(
        &self,
        name: &str,
        [kind, health, node, logs, container]: [String; 5],
        managed: bool,
    ) -> Result<String, AppError> {
        use super::tree_html::{self, Panel, Rights};
        use crate::engine::live;
        let state = &self.state;
        let (principal, ip) = allowed(state, Action::View, Some(name)).await?;
        let source = source(state, name).await?;
        let cluster = state
            .clusters
            .get(&source.cluster)
            .cloned()
            .ok_or_else(|| AppError::NotFound(format!("cluster {}", source.cluster)))?;
        // Read once: the tree and the panel of one of its objects.
        let tree = live::live_tree(&state.store, &cluster, &source).await?;
        let filter = super::live::TreeFilter { kind, health };
        let shown = filter.apply(tree.nodes.clone());
        let rights = Rights {
            act: role_gap(state, &principal, Action::ResourceAction, &source.project).is_none(),
            logs: role_gap(state, &principal, Action::ReadLogs, &source.project).is_none(),
        };
        let panel = if !node.is_empty() {
            let parts: Vec<&str> = node.splitn(4, '|').collect();
            match parts.as_slice() {
                [api_version, kind, namespace, object] => {
                    let object = live::ObjectName {
                        api_version: (*api_version).into(),
                        kind: (*kind).into(),
                        namespace: (*namespace).into(),
                        name: (*object).into(),
                    };
                    match live::manifest_in(&cluster, &source, &tree, &object, managed).await {
                        Ok(m) => Panel::Manifest(m),
                        Err(e) => Panel::Error(AppError::from(e).to_string()),
                    }
                }
                _ => Panel::Error("node names an object as apiVersion|kind|namespace|name".into()),
            }
        } else if let Some((namespace, pod)) = logs.split_once('/') {
            // Reading logs needs its own role; a denial is audited like every other.
            allowed(state, Action::ReadLogs, Some(name)).await?;
            let query = live::LogQuery {
                container,
                tail: Some(200),
                ..Default::default()
            };
            match live::log_target_in(&cluster, &source, &tree.nodes, namespace, pod, &query).await
            {
                Ok((container, containers, params)) => {
                    let event = principal.actor(&ip).event(
                        "pod_logs",
                        &format!("application:{name}"),
                        "success",
                        serde_json::json!({"pod": format!("{namespace}/{pod}"), "container": container,
                                           "tail": 200, "follow": false}),
                        crate::clock::now(),
                    );
                    state.store.audit(&event).await.map_err(store_error)?;
                    match live::pod_log(&cluster, namespace, pod, &params).await {
                        Ok(text) => Panel::Logs {
                            namespace: namespace.into(),
                            pod: pod.into(),
                            container,
                            containers,
                            text,
                        },
                        Err(e) => Panel::Error(AppError::from(e).to_string()),
                    }
                }
                Err(e) => Panel::Error(AppError::from(e).to_string()),
            }
        } else {
            Panel::None
        };
        Ok(tree_html::tab(
            name,
            &shown,
            &tree.nodes,
            &filter.kind,
            &filter.health,
            &panel,
            rights,
            crate::clock::now(),
        ))
    }

    async fn open_requests(&self) -> Result<RequestList, AppError> {
        let state = &self.state;
        let (principal, _) = allowed(state, Action::View, None).await?;
        let visibility = caller_visibility()?;
        let only = visibility.projects();
        let mut open = state
            .store
            .sync_requests(Some(RequestStatus::Pending), None, only, 500)
            .await
            .map_err(store_error)?;
        open.extend(
            state
                .store
                .sync_requests(Some(RequestStatus::Approved), None, only, 500)
                .await
                .map_err(store_error)?
                .into_iter()
                .filter(|r| r.sync_id.is_none()),
        );
        open.sort_by_key(|r| std::cmp::Reverse(r.id));
        let mut out = Vec::with_capacity(open.len());
        for req in open {
            let Some(source) = state
                .store
                .app_source(&req.application)
                .await
                .map_err(store_error)?
            else {
                continue;
            };
            // People see the requests of the projects they can see.
            if !visibility.allows(&source.project) {
                continue;
            }
            out.push(request_view(state, &principal, req, &source).await?);
        }
        Ok(RequestList {
            items: out,
            now: crate::clock::now(),
        })
    }
}

/// The dashboard's decisions.
pub struct ConsoleWorkflow(pub AppState);

impl ConsoleWorkflow {
    async fn request_app(&self, id: i64) -> Result<String, AppError> {
        Ok(self
            .0
            .store
            .sync_request(id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| AppError::NotFound(format!("sync request {id}")))?
            .application)
    }
}

fn outcome(req: &SyncRequest) -> String {
    let given = req.approvals.iter().filter(|a| !a.void).count();
    match req.status.as_str() {
        "synced" => format!(
            "Sync request #{} approved ({given} of {}) and synced (sync #{}).",
            req.id,
            req.required,
            req.sync_id.unwrap_or_default()
        ),
        "failed" => format!(
            "Sync request #{} approved, but the sync failed: see the timeline.",
            req.id
        ),
        "approved" => format!(
            "Sync request #{} approved ({given} of {}); it waits for “Sync now”.",
            req.id, req.required
        ),
        _ => format!(
            "Approved: {given} of {} approvals for sync request #{}.",
            req.required, req.id
        ),
    }
}

#[async_trait]
impl Workflow for ConsoleWorkflow {
    async fn approve(&self, request: i64) -> Result<String, AppError> {
        let app = self.request_app(request).await?;
        let (who, ip) = allowed(&self.0, Action::Approve, Some(&app)).await?;
        let req = workflow::approve(&deps(&self.0), &who, &ip, request).await?;
        Ok(outcome(&req))
    }

    async fn reject(&self, request: i64, reason: &str) -> Result<String, AppError> {
        let app = self.request_app(request).await?;
        let (who, ip) = allowed(&self.0, Action::Reject, Some(&app)).await?;
        workflow::reject(&deps(&self.0), &who, &ip, request, reason).await?;
        Ok(format!("Sync request #{request} rejected."))
    }

    async fn sync_now(&self, request: i64) -> Result<String, AppError> {
        let app = self.request_app(request).await?;
        let (who, ip) = allowed(&self.0, Action::Sync, Some(&app)).await?;
        workflow::run_approved(&deps(&self.0), &who, &ip, request).await?;
        let req = self
            .0
            .store
            .sync_request(request)
            .await
            .map_err(store_error)?
            .ok_or_else(|| AppError::NotFound(format!("sync request {request}")))?;
        Ok(outcome(&req))
    }

    async fn rollback(&self, app: &str, revision: &str, reason: &str) -> Result<String, AppError> {
        let (who, ip) = allowed(&self.0, Action::Rollback, Some(app)).await?;
        let body =
            workflow::rollback(&deps(&self.0), &who, &ip, app, revision, reason.trim()).await?;
        if let Some(id) = body.get("request").and_then(Value::as_i64) {
            return Ok(format!(
                "Rollback to {} requested as sync request #{id}: someone else must approve it.",
                short(revision)
            ));
        }
        let status = body
            .get("status")
            .map(|s| show(s).to_lowercase())
            .unwrap_or_default();
        Ok(format!(
            "Rolled back to {} (sync {status}); {app} is pinned there until someone unpins it.",
            short(revision)
        ))
    }

    async fn resource_action(&self, app: &str, form: [String; 6]) -> Result<String, AppError> {
        let (who, ip) = allowed(&self.0, Action::ResourceAction, Some(app)).await?;
        let [action, api_version, kind, namespace, name, reason] = form;
        let action = match action.as_str() {
            "restart" => crate::engine::live::ResourceAction::Restart,
            "delete" => crate::engine::live::ResourceAction::Delete,
            other => {
                return Err(AppError::BadRequest(format!(
                    "unknown action {other:?}: restart or delete"
                )))
            }
        };
        let body = super::live::ActionBody {
            action,
            object: crate::engine::live::ObjectName {
                api_version,
                kind,
                namespace,
                name,
            },
            reason,
        };
        super::live::run_action(&self.0, &who, &ip, app, &body).await
    }

    async fn unpin(&self, app: &str) -> Result<String, AppError> {
        let (who, ip) = allowed(&self.0, Action::Unpin, Some(app)).await?;
        workflow::unpin(&deps(&self.0), &who, &ip, app).await?;
        Ok(format!("{app} is unpinned and follows Git again."))
    }
}

/// `GET /api/v1/applications/{name}/events`: Server-Sent Events, one `changed` event whenever
/// the application's history or status moves, so open pages update without a reload. The
/// stream re-reads on the store's change events (PostgreSQL LISTEN/NOTIFY across replicas,
/// in-process on SQLite) and at least every 15 s; the database is the source. The stream lives only
/// as long as the credential that opened it (`guard::while_valid`): signing out, a session
/// expiring or being invalidated, or revoking the token ends it within seconds.
pub async fn events(
    State(state): State<AppState>,
    credential: Option<axum::Extension<Credential>>,
    Path(name): Path<String>,
) -> Response {
    let Some(axum::Extension(credential)) = credential else {
        return AppError::Unauthorized.into_response();
    };
    match state.store.app_source(&name).await {
        Ok(Some(_)) => {}
        Ok(None) => return AppError::NotFound(format!("application {name}")).into_response(),
        Err(e) => return internal_error(&e).into_response(),
    }
    let state_for_checks = state.clone();
    let changes = state.store.changes();
    let stream = futures_util::stream::unfold(
        (state, name, None::<(i64, i64, Option<i64>)>, changes),
        |(state, name, last, mut changes)| async move {
            loop {
                let history = state.store.history_version(&name).await.ok();
                let compared = state
                    .store
                    .app_status(&name)
                    .await
                    .ok()
                    .flatten()
                    .map(|s| (s.sync_status, s.health, s.deployed_sha));
                let version = history
                    .map(|(events, commits)| (events, commits, compared.as_ref().map(fingerprint)));
                match (last, version) {
                    (_, None) => {}
                    (None, Some(v)) => {
                        let event = Event::default().event("ready").data(v.0.to_string());
                        return Some((Ok::<_, Infallible>(event), (state, name, Some(v), changes)));
                    }
                    (Some(prev), Some(v)) if prev != v => {
                        let event = Event::default().event("changed").data(v.0.to_string());
                        return Some((Ok(event), (state, name, Some(v), changes)));
                    }
                    _ => {}
                }
                wait_for_change(&mut changes, &name).await;
            }
        },
    );
    Sse::new(while_valid(
        axum::extract::FromRef::from_ref(&state_for_checks),
        credential,
        stream,
    ))
    .keep_alive(KeepAlive::default())
    .into_response()
}

/// Waits until the store announces a change that concerns `app`, or 15 s.
async fn wait_for_change(
    changes: &mut tokio::sync::broadcast::Receiver<crate::store::Change>,
    app: &str,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, changes.recv()).await {
            Err(_) => return,
            Ok(Ok(change)) if change.concerns(app) => return,
            Ok(Ok(_)) => {}
            // Lagged: events were lost, re-read. Closed: the store is shutting down.
            Ok(Err(_)) => return,
        }
    }
}

fn fingerprint(s: &(String, String, Option<String>)) -> i64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    i64::from_ne_bytes(h.finish().to_ne_bytes())
}
