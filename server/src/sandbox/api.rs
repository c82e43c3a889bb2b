//! The sandbox's HTTP surface: discovery documents, resource URLs, verbs, watch streams and
//! `Status` errors, as `kube` and `kubectl` expect them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use serde_json::{json, Value};

use super::kinds::ResourceType;
use super::openapi;
use super::selector::{FieldSelector, LabelSelector};
use super::world::{ApiError, Part, PatchKind, WriteCtx};
use super::Sandbox;
use crate::clock;

pub(super) fn router(sandbox: Sandbox) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/api", get(core_versions))
        .route("/apis", get(group_list))
        .route("/api/{*rest}", any(core))
        .route("/apis/{*rest}", any(groups))
        .route("/openapi/v3", get(openapi_index))
        .route("/openapi/v3/{*path}", get(openapi_document))
        .fallback(|| async { page_not_found() })
        .with_state(sandbox)
}

/// What the API server answers for a path it does not serve at all (an unknown API group, a
/// CRD's group before the CRD exists): plain text, not a `Status`.
fn page_not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "404 page not found",
    )
        .into_response()
}

/// `GET /openapi/v3`: the group-versions with their documents' hashed URLs.
async fn openapi_index(State(sb): State<Sandbox>) -> Response {
    let custom = sb.world().crd_documents();
    ok(
        StatusCode::OK,
        openapi::index(openapi::builtin().iter().chain(custom.iter())),
    )
}

/// `GET /openapi/v3/api/v1`, `/openapi/v3/apis/<group>/<version>`.
async fn openapi_document(State(sb): State<Sandbox>, Path(path): Path<String>) -> Response {
    let path = path.trim_matches('/');
    let body = match openapi::builtin().iter().find(|d| d.path == path) {
        Some(d) => d.body.clone(),
        None => match sb
            .world()
            .crd_documents()
            .into_iter()
            .find(|d| d.path == path)
        {
            Some(d) => d.body,
            None => return StatusCode::NOT_FOUND.into_response(),
        },
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn ok(code: StatusCode, body: Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error(e: ApiError) -> Response {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    ok(code, e.status())
}

async fn version() -> Response {
    ok(
        StatusCode::OK,
        json!({
            "major": "1", "minor": "32", "gitVersion": "v1.32.0-tidemark-sandbox",
            "gitCommit": "", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "n/a", "compiler": "rustc", "platform": "linux/amd64"
        }),
    )
}

async fn core_versions() -> Response {
    ok(
        StatusCode::OK,
        json!({"kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}),
    )
}

/// Groups and their versions, in first-seen order.
fn groups_of(types: &[ResourceType]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for t in types.iter().filter(|t| !t.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == t.group) {
            Some((_, versions)) if !versions.contains(&t.version) => {
                versions.push(t.version.clone())
            }
            Some(_) => {}
            None => out.push((t.group.clone(), vec![t.version.clone()])),
        }
    }
    out
}

fn group_doc(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": vs, "preferredVersion": vs[0]})
}

async fn group_list(State(sb): State<Sandbox>) -> Response {
    let groups: Vec<Value> = groups_of(sb.world().types())
        .iter()
        .map(|(g, vs)| group_doc(g, vs))
        .collect();
    ok(
        StatusCode::OK,
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
    )
}

fn resource_list(sb: &Sandbox, group: &str, version: &str) -> Response {
    let world = sb.world();
    let types: Vec<&ResourceType> = world
        .types()
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .collect();
    if types.is_empty() {
        return error(ApiError::resource_not_found(&format!("{group}/{version}")));
    }
    let resources: Vec<Value> = types.iter().flat_map(|t| t.discovery_entries()).collect();
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    ok(
        StatusCode::OK,
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// What a resource URL addresses.
struct Target {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn resolve(sb: &Sandbox, group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, more @ ..]
            if !(more.is_empty() && matches!(*plural, "status" | "finalize")) =>
        {
            (Some((*ns).to_owned()), [&[*plural][..], more].concat())
        }
        _ => (None, rest.to_vec()),
    };
    let plural = rest
        .first()
        .ok_or_else(|| ApiError::resource_not_found("missing resource"))?;
    if rest.len() > 3 {
        return Err(ApiError::resource_not_found(&rest.join("/")));
    }
    let rt = sb
        .world()
        .find_type(group, version, plural)
        .ok_or_else(|| ApiError::resource_not_found(&format!("{plural} in {group}/{version}")))?;
    if namespace.is_some() && !rt.namespaced {
        return Err(ApiError::resource_not_found(&format!(
            "{} is cluster-scoped",
            rt.plural
        )));
    }
    Ok(Target {
        rt,
        namespace,
        name: rest.get(1).map(|s| (*s).to_owned()),
        sub: rest.get(2).map(|s| (*s).to_owned()),
    })
}

#[derive(Clone)]
struct Request {
    method: Method,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
}

async fn core(
    State(sb): State<Sandbox>,
    method: Method,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match parts.as_slice() {
        ["v1"] => resource_list(&sb, "", "v1"),
        ["v1", rest @ ..] => {
            let req = Request {
                method,
                query: parse_query(query),
                headers,
                body,
            };
            match resolve(&sb, "", "v1", rest) {
                Ok(target) => handle(sb, target, req).await,
                Err(e) => error(e),
            }
        }
        _ => error(ApiError::resource_not_found(&rest)),
    }
}

async fn groups(
    State(sb): State<Sandbox>,
    method: Method,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let groups = groups_of(sb.world().types());
    if let Some(group) = parts.first() {
        if !groups.iter().any(|(g, _)| g == group) {
            return page_not_found();
        }
    }
    match parts.as_slice() {
        [group] => match groups.iter().find(|(g, _)| g == group) {
            Some((g, vs)) => ok(StatusCode::OK, group_doc(g, vs)),
            None => page_not_found(),
        },
        [group, version] => resource_list(&sb, group, version),
        [group, version, rest @ ..] => {
            let req = Request {
                method,
                query: parse_query(query),
                headers,
                body,
            };
            match resolve(&sb, group, version, rest) {
                Ok(target) => handle(sb, target, req).await,
                Err(e) => error(e),
            }
        }
        [] => group_list(State(sb)).await,
    }
}

fn parse_query(raw: Option<String>) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| v == "true" || v == "1")
}

/// The field manager: `?fieldManager=`, else the client's user agent product (`kubectl`).
fn manager(req: &Request) -> String {
    if let Some(m) = req.query.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.clone();
    }
    req.headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_owned()
}

fn parse_body(req: &Request) -> Result<Value, ApiError> {
    let ctype = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ctype.contains("protobuf") || ctype.contains("cbor") {
        return Err(ApiError::unsupported_media_type(format!(
            "the sandbox speaks JSON and YAML only, not {ctype}"
        )));
    }
    let text = std::str::from_utf8(&req.body)
        .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    if ctype.contains("yaml") {
        serde_saphyr::from_str::<Value>(text)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else {
        serde_json::from_str::<Value>(text)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))
    }
}

async fn handle(sb: Sandbox, t: Target, req: Request) -> Response {
    if t.sub.as_deref() == Some("log") && t.rt.kind == "Pod" && t.rt.group.is_empty() {
        return pod_log(&sb, &t, &req);
    }
    let result = if req.method == Method::GET && t.name.is_none() && flag(&req.query, "watch") {
        return watch(sb, t, req).await;
    } else {
        dispatch(&sb, &t, &req)
    };
    sb.schedule_readiness();
    match result {
        Ok((code, body)) => ok(code, body),
        Err(e) => error(e),
    }
}

fn dispatch(sb: &Sandbox, t: &Target, req: &Request) -> Result<(StatusCode, Value), ApiError> {
    let ns = t.namespace.clone().unwrap_or_default();
    let ctx = WriteCtx {
        manager: manager(req),
        dry_run: req.query.get("dryRun").is_some_and(|v| v == "All"),
        now: clock::now(),
    };
    let part = match t.sub.as_deref() {
        None => Part::Main,
        Some("status") if t.rt.status_subresource => Part::Status,
        Some("scale") if t.rt.scale_subresource => return scale(sb, t, req, &ctx),
        Some(other) => {
            return Err(ApiError::resource_not_found(&format!(
                "{}/{other}",
                t.rt.plural
            )))
        }
    };
    let rt = &t.rt;
    let mut world = sb.world();
    match (&req.method, &t.name) {
        (&Method::GET, Some(name)) => Ok((StatusCode::OK, world.get(rt, &ns, name)?)),
        (&Method::GET, None) => {
            let labels =
                LabelSelector::parse(req.query.get("labelSelector").map_or("", String::as_str))
                    .map_err(ApiError::bad_request)?;
            let fields =
                FieldSelector::parse(req.query.get("fieldSelector").map_or("", String::as_str))
                    .map_err(ApiError::bad_request)?;
            let items = world.list(rt, t.namespace.as_deref(), &labels, &fields);
            Ok((
                StatusCode::OK,
                json!({
                    "kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(),
                    "metadata": {"resourceVersion": world.resource_version().to_string()},
                    "items": items
                }),
            ))
        }
        (&Method::POST, None) => {
            let body = parse_body(req)?;
            let created = world.create(rt, t.namespace.as_deref(), body, &ctx)?;
            Ok((StatusCode::CREATED, created))
        }
        (&Method::PUT, Some(name)) => Ok((
            StatusCode::OK,
            world.replace(rt, &ns, name, parse_body(req)?, part, &ctx)?,
        )),
        (&Method::PATCH, Some(name)) => {
            let ctype = req
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let kind = match ctype.split(';').next().unwrap_or("").trim() {
                "application/apply-patch+yaml" | "application/apply-patch+json" => {
                    PatchKind::Apply { force: flag(&req.query, "force") }
                }
                "application/merge-patch+json" => PatchKind::Merge,
                "application/strategic-merge-patch+json" => PatchKind::Strategic,
                other => {
                    return Err(ApiError::unsupported_media_type(format!(
                        "the sandbox does not support patches of type {other:?} (supported: apply, merge, strategic merge)"
                    )))
                }
            };
            let body = parse_body(req)?;
            let created = world.get(rt, &ns, name).is_err();
            let obj = world.patch(rt, &ns, name, kind, body, part, &ctx)?;
            Ok((
                if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                obj,
            ))
        }
        (&Method::DELETE, Some(name)) => {
            let opts = if req.body.is_empty() {
                json!({})
            } else {
                parse_body(req)?
            };
            let ctx = WriteCtx {
                dry_run: ctx.dry_run
                    || opts["dryRun"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|v| v == "All")),
                ..ctx
            };
            Ok((
                StatusCode::OK,
                world.delete(rt, &ns, name, &opts["preconditions"], &ctx)?,
            ))
        }
        (&Method::DELETE, None) => {
            let labels =
                LabelSelector::parse(req.query.get("labelSelector").map_or("", String::as_str))
                    .map_err(ApiError::bad_request)?;
            let victims = world.list(
                rt,
                t.namespace.as_deref(),
                &labels,
                &FieldSelector::default(),
            );
            let mut items = Vec::new();
            for v in victims {
                let vns = v["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let vname = v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                items.push(world.delete(rt, &vns, &vname, &Value::Null, &ctx)?);
            }
            Ok((
                StatusCode::OK,
                json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(),
                "metadata": {"resourceVersion": world.resource_version().to_string()}, "items": items}),
            ))
        }
        (m, _) => Err(ApiError::method_not_allowed(format!(
            "{m} is not allowed on this URL"
        ))),
    }
}

/// `autoscaling/v1` Scale for `/scale`: GET, PUT and PATCH of `spec.replicas`.
fn scale(
    sb: &Sandbox,
    t: &Target,
    req: &Request,
    ctx: &WriteCtx,
) -> Result<(StatusCode, Value), ApiError> {
    let ns = t.namespace.clone().unwrap_or_default();
    let name = t
        .name
        .clone()
        .ok_or_else(|| ApiError::resource_not_found("scale needs a name"))?;
    let mut world = sb.world();
    let obj = world.get(&t.rt, &ns, &name)?;
    let as_scale = |o: &Value| {
        json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": o["metadata"]["name"], "namespace": o["metadata"]["namespace"],
                "uid": o["metadata"]["uid"], "resourceVersion": o["metadata"]["resourceVersion"],
                "creationTimestamp": o["metadata"]["creationTimestamp"]},
            "spec": {"replicas": o["spec"]["replicas"].as_i64().unwrap_or(1)},
            "status": {"replicas": o["status"]["replicas"].as_i64().unwrap_or(0)}})
    };
    let replicas = match req.method {
        Method::GET => return Ok((StatusCode::OK, as_scale(&obj))),
        Method::PUT => parse_body(req)?["spec"]["replicas"].clone(),
        Method::PATCH => super::world::merge_patch(&as_scale(&obj), &parse_body(req)?)["spec"]
            ["replicas"]
            .clone(),
        _ => {
            return Err(ApiError::method_not_allowed(
                "scale supports GET, PUT and PATCH",
            ))
        }
    };
    if !replicas.is_i64() || replicas.as_i64().is_some_and(|r| r < 0) {
        return Err(ApiError::invalid(
            &t.rt,
            &name,
            "spec.replicas: Invalid value: must be a non-negative integer",
        ));
    }
    let patch = json!({"spec": {"replicas": replicas}});
    let updated = world.patch(&t.rt, &ns, &name, PatchKind::Merge, patch, Part::Main, ctx)?;
    Ok((StatusCode::OK, as_scale(&updated)))
}

/// `?watch=true`: newline-delimited JSON events, BOOKMARKs when asked, ended by
/// `timeoutSeconds` (default 30 min) or when the client goes away.
async fn watch(sb: Sandbox, t: Target, req: Request) -> Response {
    let labels =
        match LabelSelector::parse(req.query.get("labelSelector").map_or("", String::as_str)) {
            Ok(l) => l,
            Err(e) => return error(ApiError::bad_request(e)),
        };
    let fields =
        match FieldSelector::parse(req.query.get("fieldSelector").map_or("", String::as_str)) {
            Ok(f) => f,
            Err(e) => return error(ApiError::bad_request(e)),
        };
    let since = match req.query.get("resourceVersion").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(rv) => Some(rv),
            Err(_) => {
                return error(ApiError::bad_request(format!(
                    "invalid resourceVersion {v:?}"
                )))
            }
        },
    };
    let bookmarks = flag(&req.query, "allowWatchBookmarks");
    let timeout = req
        .query
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let subscribed = sb.world().watch_from(&t.rt, since);
    let (backlog, mut rx) = match subscribed {
        Ok(s) => s,
        Err(e) => return error(e),
    };
    let rt = t.rt.clone();
    let namespace = t.namespace.clone();
    let selected = move |e: &super::world::Event| {
        namespace.as_ref().is_none_or(|ns| e.key.namespace == *ns)
            && fields.matches(&e.object)
            && labels.matches(&super::world::labels_of(&e.object))
    };
    let line = {
        let rt = rt.clone();
        move |kind: &str, object: &Value| {
            let mut o = object.clone();
            o["apiVersion"] = json!(rt.api_version());
            let mut l = json!({"type": kind, "object": o}).to_string();
            l.push('\n');
            Bytes::from(l)
        }
    };
    let (tx, out) = tokio::sync::mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        for e in backlog.iter().filter(|e| selected(e)) {
            if tx.send(line(e.kind.as_str(), &e.object)).await.is_err() {
                return;
            }
        }
        let second = Duration::from_secs(1);
        let mut bookmark = tokio::time::interval_at(tokio::time::Instant::now() + second, second);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = bookmark.tick(), if bookmarks => {
                    let rv = sb.world().resource_version().to_string();
                    let obj = json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": {"resourceVersion": rv}});
                    if tx.send(line("BOOKMARK", &obj)).await.is_err() { return; }
                }
                event = rx.recv() => match event {
                    Ok(e) => {
                        let same_type = e.key.group == rt.group && e.key.plural == rt.plural;
                        if same_type && selected(&e) && tx.send(line(e.kind.as_str(), &e.object)).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let status = ApiError::gone("watch fell behind; list again").status();
                        let _ = tx.send(line("ERROR", &status)).await;
                        return;
                    }
                    Err(_) => return,
                },
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(out, |mut out| async move {
        out.recv().await.map(|b| (Ok::<_, Infallible>(b), out))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| error(ApiError::bad_request("cannot start watch")))
}

/// Lines the sandbox's pods have logged before anyone asks.
const LOG_LINES: i64 = 50;

/// `GET …/pods/{name}/log`: synthetic lines — `<RFC 3339 time> <container> line <n>: GET
/// /healthz 200` — so pod logs work without a kubelet. `container` must be one of the pod's
/// (required when it has several, as the API server requires), `tailLines` keeps the last
/// lines, `follow=true` then writes one more line per second until the client goes.
fn pod_log(sb: &Sandbox, t: &Target, req: &Request) -> Response {
    if req.method != Method::GET {
        return error(ApiError::bad_request("pods/log supports GET only"));
    }
    let ns = t.namespace.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    let pod = match sb.world().get(&t.rt, &ns, &name) {
        Ok(p) => p,
        Err(e) => return error(e),
    };
    let containers: Vec<String> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    let container = match req.query.get("container") {
        Some(c) if containers.contains(c) => c.clone(),
        Some(c) => {
            return error(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )))
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return error(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )))
        }
    };
    let tail = req
        .query
        .get("tailLines")
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(LOG_LINES)
        .clamp(0, LOG_LINES);
    let line = move |n: i64| {
        format!(
            "{} {container} line {n}: GET /healthz 200\n",
            clock::rfc3339(clock::now())
        )
    };
    let history: String = (LOG_LINES - tail + 1..=LOG_LINES).map(&line).collect();
    let text = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !flag(&req.query, "follow") {
        return (StatusCode::OK, text, history).into_response();
    }
    let stream = futures_util::stream::unfold(0i64, move |n| {
        let (line, history) = (line.clone(), history.clone());
        async move {
            if n > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Some((Ok::<_, Infallible>(Bytes::from(line(LOG_LINES + n))), n + 1))
            } else {
                Some((Ok(Bytes::from(history.clone())), 1))
            }
        }
    });
    (StatusCode::OK, text, Body::from_stream(stream)).into_response()
}
