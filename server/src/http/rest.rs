//! REST API v1: applications, their status, resources, diff, timeline and commits (keyset-paged),
//! refresh and sync. Every handler is a plain function of the state; the guard
//! (`auth::guard`) has already checked the caller's role and the request's Origin, and attaches
//! the caller as a `Principal` extension.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{internal_error, openapi, AppState};
use crate::auth::guard::ClientIp;
use crate::auth::visibility::Visibility;
use crate::auth::Principal;
use crate::clock;
use app::model::AppError;

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    cursor: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/v1/applications/{name}/commits?cursor=&limit=`
#[utoipa::path(get, path = "/api/v1/applications/{name}/commits", tag = "applications",
    params(("name" = String, Path, description = "Application name"), ("cursor" = Option<String>, Query, description = "`next` of the previous page"),
        ("limit" = Option<u32>, Query, description = "Commits per page (1-500, default 50)")),
    responses((status = 200, description = "The application's commits with signature verdicts, newest first", body = crate::http::openapi::CommitPage), crate::http::openapi::Errors))]
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
        let (mut items, next) = state
            .store
            .app_commits(&name, page.cursor.as_deref(), page.limit.unwrap_or(50))
            .await
            .map_err(|e| internal_error(&e))?;
        let shas: Vec<String> = items.iter().map(|c| c.sha.clone()).collect();
        let mut signatures = state
            .store
            .signatures_of(&name, &shas)
            .await
            .map_err(|e| internal_error(&e))?;
        for c in &mut items {
            c.signature = signatures.remove(&c.sha);
        }
        Ok(Json(openapi::CommitPage { items, next }))
    }
    .await;
    match result {
        Ok(body) => body.into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /api/v1/applications/{name}/refresh`: fetch the application's repository now.
#[utoipa::path(post, path = "/api/v1/applications/{name}/refresh", tag = "applications", params(("name" = String, Path, description = "Application name")),
    responses((status = 202, description = "A fetch of the repository is scheduled", body = crate::http::openapi::RefreshAnswer), crate::http::openapi::Errors))]
pub async fn refresh(State(state): State<AppState>, Path(name): Path<String>) -> Response {
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
        Json(openapi::RefreshAnswer {
            status: "fetch scheduled".into(),
            repository: source.repository,
        }),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub struct DiffQuery {
    from: Option<String>,
    to: Option<String>,
}

/// `GET /api/v1/applications/{name}/diff?from=&to=`: between two stored revisions (per resource
/// and field); without them, every resource of the target revision compared with
/// the cluster (status and field changes; Secret values redacted).
#[utoipa::path(get, path = "/api/v1/applications/{name}/diff", tag = "applications",
    params(("name" = String, Path, description = "Application name"), ("from" = Option<String>, Query, description = "A stored revision (with `to`)"),
        ("to" = Option<String>, Query, description = "A stored revision (with `from`)")),
    responses((status = 200, description = "Per resource and field; Secret values redacted", body = crate::http::openapi::DiffAnswer), crate::http::openapi::Errors))]
pub async fn diff(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<DiffQuery>,
) -> Response {
    match (q.from.as_deref(), q.to.as_deref()) {
        (Some(from), Some(to)) => {
            return match crate::engine::decisions::diff_revisions(&state.store, &name, from, to)
                .await
            {
                Ok(body) => Json(body).into_response(),
                Err(e) => AppError::from(e).into_response(),
            }
        }
        (None, None) => {}
        _ => {
            return AppError::BadRequest("give both `from` and `to` revisions, or neither".into())
                .into_response()
        }
    }
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
            crate::reconcile::compare(&state.store, &cluster, &source, &desired, &source.ignore)
                .await?;
        Ok::<_, crate::reconcile::ReconcileError>(openapi::DiffAnswer {
            revision: Some(revision),
            digest: Some(digest),
            from: None,
            to: None,
            resources: serde_json::to_value(resources).unwrap_or_default(),
        })
    }
    .await;
    respond(result.map_err(reconcile_error))
}

/// What a failed comparison or sync tells the caller: not rendered yet (409), the cluster does
/// not answer (503), anything else opaque.
pub(super) fn reconcile_error(e: crate::reconcile::ReconcileError) -> AppError {
    crate::engine::EngineError::from(e).into()
}

pub(super) fn respond<T: serde::Serialize>(result: Result<T, AppError>) -> Response {
    match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn source_of(state: &AppState, name: &str) -> Result<crate::store::AppSource, AppError> {
    state
        .store
        .app_source(name)
        .await
        .map_err(|e| internal_error(&e))?
        .ok_or_else(|| AppError::NotFound(format!("application {name}")))
}

/// `GET /api/v1/applications`
///
/// Only the applications of the projects the caller may see ([`Visibility`]).
#[utoipa::path(get, path = "/api/v1/applications", tag = "applications",
    responses((status = 200, description = "Applications the caller may see, by name", body = [app::model::AppSummary]), crate::http::openapi::Errors))]
pub async fn applications(
    State(state): State<AppState>,
    Extension(visibility): Extension<Visibility>,
) -> Response {
    respond(
        state
            .store
            .application_page(
                &app::model::AppListQuery::default(),
                i64::from(i32::MAX),
                visibility.projects(),
            )
            .await
            .map(|page| page.items)
            .map_err(|e| internal_error(&e)),
    )
}

/// An application's Helm options as the API shows them: inline values, `set` and `set_string`
/// by key only (values may hold secrets). `null` when none are set.
fn helm_shown(helm: &crate::domain::source::HelmOptions) -> serde_json::Value {
    if helm.is_default() {
        return serde_json::Value::Null;
    }
    let mut shown = helm.clone();
    let hidden = serde_json::Value::String("(hidden)".into());
    shown.values = shown
        .values
        .map(|m| m.into_iter().map(|(k, _)| (k, hidden.clone())).collect());
    for v in shown.set.values_mut() {
        *v = hidden.clone();
    }
    for v in shown.set_string.values_mut() {
        *v = "(hidden)".into();
    }
    serde_json::to_value(shown).unwrap_or(serde_json::Value::Null)
}

/// `GET /api/v1/applications/{name}`: the application with its last comparison and open drift.
#[utoipa::path(get, path = "/api/v1/applications/{name}", tag = "applications", params(("name" = String, Path, description = "Application name")),
    responses((status = 200, description = "The application with its last comparison", body = crate::http::openapi::ApplicationDetail), crate::http::openapi::Errors))]
pub async fn application(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let result = async {
        let source = source_of(&state, &name).await?;
        let summary = state
            .store
            .application_summary(&name)
            .await
            .map_err(|e| internal_error(&e))?
            .ok_or_else(|| AppError::NotFound(format!("application {name}")))?;
        let status = state
            .store
            .app_status(&name)
            .await
            .map_err(|e| internal_error(&e))?;
        let drift = state
            .store
            .open_drift(&name)
            .await
            .map_err(|e| internal_error(&e))?;
        let (target_signature, held_back) = target_signature(&state, &source).await?;
        Ok(openapi::ApplicationDetail {
            application: summary,
            status: status.map(|s| openapi::AppStatusView {
                sync_status: s.sync_status,
                health: s.health,
                health_message: s.health_message,
                target_revision: s.target_sha,
                deployed_revision: s.deployed_sha,
                compared_at: s.compared_at,
            }),
            open_drift: drift.map(|d| openapi::OpenDriftView {
                id: d.id,
                since: d.opened_at,
            }),
            pinned: state
                .store
                .pin_of(&name)
                .await
                .map_err(|e| internal_error(&e))?,
            require_signed: source.require_signed,
            source: source.render.source,
            helm: helm_shown(&source.render.helm),
            target_signature,
            held_back,
            declared_by: state
                .store
                .generator_of(&name)
                .await
                .map_err(|e| internal_error(&e))?,
        })
    }
    .await;
    respond(result)
}

/// The verdict on `app`'s target revision (the pinned one when pinned) and, under
/// `require_signed` when it may not be deployed, why (the message the application page shows).
pub(super) async fn target_signature(
    state: &AppState,
    app: &crate::store::AppSource,
) -> Result<(Option<app::model::SignatureVerdict>, Option<String>), AppError> {
    let pinned = state
        .store
        .pin_of(&app.name)
        .await
        .map_err(|e| internal_error(&e))?;
    let target = match pinned {
        Some(pin) => Some(pin.revision),
        None => {
            state
                .store
                .app_git_state(&app.name)
                .await
                .map_err(|e| internal_error(&e))?
                .target_sha
        }
    };
    let Some(sha) = target else {
        return Ok((None, None));
    };
    match crate::reconcile::signature_gate(&state.store, app, &sha).await {
        Ok(verdict) => Ok((verdict, None)),
        Err(crate::reconcile::ReconcileError::Unverified(why)) => {
            let verdict = state
                .store
                .revision_signature(&app.name, &sha)
                .await
                .map_err(|e| internal_error(&e))?;
            Ok((verdict, Some(why)))
        }
        Err(e) => Err(reconcile_error(e)),
    }
}

/// `GET /api/v1/applications/{name}/resources`: each resource's status and health from the last
/// comparison.
#[utoipa::path(get, path = "/api/v1/applications/{name}/resources", tag = "applications", params(("name" = String, Path, description = "Application name")),
    responses((status = 200, description = "Resources from the last comparison", body = crate::http::openapi::ResourcesAnswer), crate::http::openapi::Errors))]
pub async fn resources(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let result = async {
        source_of(&state, &name).await?;
        let status = state
            .store
            .app_status(&name)
            .await
            .map_err(|e| internal_error(&e))?;
        Ok(openapi::ResourcesAnswer {
            resources: status.map(|s| s.resources).unwrap_or_else(|| json!([])),
        })
    }
    .await;
    respond(result)
}

#[derive(Debug, Deserialize)]
pub struct TimelineQuery {
    cursor: Option<String>,
    limit: Option<u32>,
    /// Comma-separated kinds, e.g. `sync,drift_opened`.
    kinds: Option<String>,
}

/// `GET /api/v1/applications/{name}/timeline?cursor=&limit=&kinds=`
#[utoipa::path(get, path = "/api/v1/applications/{name}/timeline", tag = "applications",
    params(("name" = String, Path, description = "Application name"), ("cursor" = Option<String>, Query, description = "`next` of the previous page"),
        ("limit" = Option<u32>, Query, description = "Entries per page (1-500, default 50)"),
        ("kinds" = Option<String>, Query, description = "Comma-separated kinds, e.g. `sync,drift_opened`")),
    responses((status = 200, description = "The timeline, newest first", body = crate::http::openapi::TimelinePage), crate::http::openapi::Errors))]
pub async fn timeline(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<TimelineQuery>,
) -> Response {
    let result = async {
        source_of(&state, &name).await?;
        let kinds: Vec<String> = q
            .kinds
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect();
        let (items, next) = state
            .store
            .timeline_page(&name, q.cursor.as_deref(), q.limit.unwrap_or(50), &kinds)
            .await
            .map_err(|e| internal_error(&e))?;
        Ok(openapi::TimelinePage { items, next })
    }
    .await;
    respond(result)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncBody {
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/v1/applications/{name}/sync` (`{"dry_run": true}` previews: the exact diff the UI
/// shows, nothing applied).
#[utoipa::path(post, path = "/api/v1/applications/{name}/sync", tag = "applications", params(("name" = String, Path, description = "Application name")),
    request_body(content = Option<SyncBody>, description = "`{\"dry_run\": true}` previews; no body syncs"),
    responses((status = 200, description = "The sync's outcome, or the preview", body = crate::http::openapi::SyncAnswer), crate::http::openapi::Errors))]
pub async fn sync(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Path(name): Path<String>,
    body: Option<Json<SyncBody>>,
) -> Response {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let result = async {
        let source = source_of(&state, &name).await?;
        let cluster = state
            .clusters
            .get(&source.cluster)
            .cloned()
            .ok_or_else(|| AppError::NotFound(format!("cluster {}", source.cluster)))?;
        let _guard = state.app_locks.lock(&source.name).await;
        let (revision, digest, desired) =
            crate::reconcile::desired(&state.store, &cluster, &source)
                .await
                .map_err(reconcile_error)?;
        // A preview of a sync that would be refused says so, as the sync would.
        crate::reconcile::bounds_gate(&source, &desired).map_err(reconcile_error)?;
        if !body.dry_run && !source.auto_sync && source.approvals.required > 0 {
            let pending = state
                .store
                .sync_requests(None, Some(&source.name), None, 1)
                .await
                .map_err(|e| internal_error(&e))?;
            let hint = pending
                .first()
                .filter(|r| r.status.is_open())
                .map(|r| {
                    format!(
                        ": approve sync request #{} (POST /api/v1/sync-requests/{}/approve)",
                        r.id, r.id
                    )
                })
                .unwrap_or_default();
            return Err(AppError::Conflict(format!(
                "application {} syncs after {} approval(s){hint}",
                source.name, source.approvals.required
            )));
        }
        if body.dry_run {
            let resources = crate::reconcile::compare(
                &state.store,
                &cluster,
                &source,
                &desired,
                &source.ignore,
            )
            .await
            .map_err(reconcile_error)?;
            return Ok(openapi::SyncAnswer {
                dry_run: Some(true),
                revision,
                digest: Some(digest),
                resources: Some(serde_json::to_value(resources).unwrap_or_default()),
                sync: None,
                status: None,
                results: None,
            });
        }
        let (id, status, results) = crate::reconcile::sync(
            &state.store,
            &cluster,
            &source,
            &revision,
            &digest,
            &desired,
            source.prune,
            "manual",
            &principal.actor(&ip),
        )
        .await
        .map_err(reconcile_error)?;
        state.queue.enqueue(&source.name);
        Ok(openapi::SyncAnswer {
            dry_run: None,
            revision,
            digest: None,
            resources: None,
            sync: Some(id),
            status: Some(status.to_string()),
            results: Some(serde_json::to_value(results).unwrap_or_default()),
        })
    }
    .await;
    respond(result)
}

/// `POST /api/v1/applications` (create) and `PUT /api/v1/applications/{name}` (replace):
/// applications owned by the API; those declared in `tidemark.toml` are read-only here.
/// The guard judged the caller in the application's current project; the project the body
/// names is judged here (an admin of one project cannot move or create applications into
/// another).
async fn save_application(
    state: &AppState,
    principal: &Principal,
    ip: &str,
    (method, path): (&str, &str),
    mut app: crate::config::ApplicationSettings,
    create: bool,
) -> Response {
    let mut repositories = state.settings.repositories.clone();
    if let Err((field, message)) = app.resolve_chart_source(&mut repositories, false) {
        return AppError::BadRequest(format!("{field}: {message}")).into_response();
    }
    if let Err((field, message)) = app.check(&state.settings.repositories, &state.settings.clusters)
    {
        return AppError::BadRequest(format!("{field}: {message}")).into_response();
    }
    let actor = principal.actor(ip);
    let result = async {
        let current = state
            .store
            .application_project(&app.name)
            .await
            .map_err(|e| internal_error(&e))?;
        if create || current.as_deref() != Some(app.project.as_str()) {
            crate::auth::guard::authorize_in_project(
                &axum::extract::FromRef::from_ref(state),
                principal,
                crate::auth::policy::Action::ManageApplications,
                Some(&app.project),
                &format!("application:{}", app.name),
                method,
                path,
                ip,
            )
            .await?;
        }
        match (
            state
                .store
                .app_origin(&app.name)
                .await
                .map_err(|e| internal_error(&e))?,
            create,
        ) {
            (Some(crate::store::AppOrigin::Config), _) => {
                return Err(AppError::Conflict(format!(
                    "application {} is declared in tidemark.toml; change it there",
                    app.name
                )))
            }
            (Some(crate::store::AppOrigin::Git(generator)), _) => {
                return Err(AppError::Conflict(format!(
                    "application {} is declared in Git by {generator}; change it there",
                    app.name
                )))
            }
            (Some(_), true) => {
                return Err(AppError::Conflict(format!(
                    "application {} already exists",
                    app.name
                )))
            }
            (None, false) => return Err(AppError::NotFound(format!("application {}", app.name))),
            _ => {}
        }
        let now = clock::now();
        let verb = if create { "create" } else { "update" };
        let event = actor.event(
            &format!("application_{verb}"),
            &format!("application:{}", app.name),
            "success",
            json!({"project": app.project, "repository": app.repository, "path": app.path,
                   "revision": app.revision, "cluster": app.cluster, "namespace": app.namespace,
                   "sync_policy": app.sync_policy.as_str(), "self_heal": app.self_heal, "prune": app.prune}),
            now,
        );
        state
            .store
            .save_api_application(&app, &event, now)
            .await
            .map_err(|e| internal_error(&e))?;
        let verb = if create { "created" } else { "updated" };
        let detail = json!({"application": app.name});
        state
            .store
            .add_timeline(
                &app.name,
                "application",
                &format!("application {verb} through the API"),
                &detail,
                now,
            )
            .await
            .map_err(|e| internal_error(&e))?;
        state.git.trigger(&app.repository, "application saved");
        Ok(verb)
    }
    .await;
    match result {
        Ok("created") => (
            StatusCode::CREATED,
            Json(openapi::SaveAnswer {
                status: "created".into(),
                name: app.name,
            }),
        )
            .into_response(),
        Ok(_) => Json(openapi::SaveAnswer {
            status: "updated".into(),
            name: app.name,
        })
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /api/v1/applications`
#[utoipa::path(post, path = "/api/v1/applications", tag = "applications",
    request_body(content = Object, description = "The fields of `[[applications]]` (name, project, repository, path, revision, cluster, namespace, sync_policy, self_heal, prune, ignore, approvals, compare, require_signed, source, helm)"),
    responses((status = 201, description = "Created", body = crate::http::openapi::SaveAnswer), crate::http::openapi::Errors))]
pub async fn create_application(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Json(app): Json<crate::config::ApplicationSettings>,
) -> Response {
    let route = ("POST", "/api/v1/applications");
    save_application(&state, &principal, &ip, route, app, true).await
}

/// `PUT /api/v1/applications/{name}`
#[utoipa::path(put, path = "/api/v1/applications/{name}", tag = "applications", params(("name" = String, Path, description = "Application name")),
    request_body(content = Object, description = "The application's fields, as for POST"),
    responses((status = 200, description = "Updated", body = crate::http::openapi::SaveAnswer), crate::http::openapi::Errors))]
pub async fn update_application(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Path(name): Path<String>,
    Json(app): Json<crate::config::ApplicationSettings>,
) -> Response {
    if app.name != name {
        return AppError::BadRequest(format!("the body names `{}`, the URL `{name}`", app.name))
            .into_response();
    }
    let path = format!("/api/v1/applications/{name}");
    save_application(&state, &principal, &ip, ("PUT", &path), app, false).await
}

/// `GET /api/v1/generators`: what declares applications in Git, in the caller's projects.
/// `{"generators": [{name, project, repository, revision, path_glob, last_run}],
/// "roots": [{root, applications}]}` — `last_run` (revision, applications, refused with
/// reasons, error, updated_at in ms) is `null` before the first fetch; a root is an
/// application whose definitions declare others.
#[utoipa::path(get, path = "/api/v1/generators", tag = "generators",
    responses((status = 200, description = "Directory generators with their last run, and apps of apps", body = crate::http::openapi::GeneratorsAnswer), crate::http::openapi::Errors))]
pub async fn generators(
    State(state): State<AppState>,
    Extension(visibility): Extension<Visibility>,
) -> Response {
    let result = async {
        let visible = |project: &str| {
            visibility
                .projects()
                .is_none_or(|p| p.iter().any(|v| v == project))
        };
        let mut out = Vec::new();
        for g in &state.settings.generators {
            if !visible(&g.project) {
                continue;
            }
            let run = state
                .store
                .generator_run(&g.name)
                .await
                .map_err(|e| internal_error(&e))?;
            out.push(openapi::GeneratorView {
                name: g.name.clone(),
                project: g.project.clone(),
                repository: g.repository.clone(),
                revision: g.revision.clone(),
                path_glob: g.path_glob.clone(),
                last_run: run,
            });
        }
        let mut roots: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (name, generator) in state
            .store
            .generated_applications()
            .await
            .map_err(|e| internal_error(&e))?
        {
            if let Some(root) = generator.strip_prefix("application/") {
                let project = state
                    .store
                    .application_project(root)
                    .await
                    .map_err(|e| internal_error(&e))?;
                if project.as_deref().is_some_and(visible) {
                    roots.entry(root.to_owned()).or_default().push(name);
                }
            }
        }
        let roots: Vec<_> = roots
            .into_iter()
            .map(|(root, applications)| openapi::RootView { root, applications })
            .collect();
        Ok(openapi::GeneratorsAnswer {
            generators: out,
            roots,
        })
    }
    .await;
    respond(result)
}
