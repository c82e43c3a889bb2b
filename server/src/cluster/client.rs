//! One Kubernetes cluster as Tidemark uses it: kinds resolved by discovery (cached, refreshed on
//! a miss so a CRD applied earlier in the same sync is found), live objects read from a
//! watch-backed cache per kind (one LIST+WATCH per kind for the whole cluster, never a request
//! per compare), desired objects server-side applied with field manager `tidemark`, pruned
//! objects deleted. Every watch event signals [`ClusterClient::events`] so the reconciler can
//! compare again at once. Reads see Tidemark's own writes immediately (an overlay of recent
//! applies and deletes is used until the watch has caught up).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Scope;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::Value;

use crate::config::ClusterSettings;

/// The field manager of every Tidemark apply.
pub const FIELD_MANAGER: &str = "tidemark";

/// Errors talking to a cluster, with the API server's own message.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ClusterError {
    #[error("cluster {cluster}: {message}")]
    Connect { cluster: String, message: String },
    #[error("cluster {cluster} does not serve {kind} in {api_version}")]
    UnknownKind {
        cluster: String,
        api_version: String,
        kind: String,
    },
    #[error("{object}: {message} ({reason})")]
    Api {
        object: String,
        code: u16,
        reason: String,
        message: String,
    },
}

/// How long a recent write shadows the watch cache at most.
const OVERLAY_TTL: Duration = Duration::from_secs(10);

/// `(apiVersion, kind, namespace, name)`
type Key = (String, String, String, String);

/// The reflector store of one watched kind.
type Cache = Store<DynamicObject>;

/// A connected cluster.
pub struct ClusterClient {
    pub name: String,
    pub(super) client: kube::Client,
    kinds: tokio::sync::RwLock<HashMap<(String, String), (ApiResource, bool)>>,
    /// One reflector per kind (`None`: the kind cannot be watched; read directly).
    caches: tokio::sync::Mutex<HashMap<(String, String), Option<Cache>>>,
    /// Tidemark's own recent writes (`None` = deleted), until the watch shows them.
    recent: std::sync::Mutex<HashMap<Key, (Option<String>, Instant)>>,
    /// Applications (by tracking annotation) whose objects the watches saw change.
    events: tokio::sync::broadcast::Sender<Arc<str>>,
    watches: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Dry runs, OpenAPI schemas (see `predict.rs`).
    pub(super) predictions: super::predict::Predictions,
    /// What Helm charts may ask of this cluster, read at most every [`CAPABILITIES_TTL`].
    capabilities: tokio::sync::Mutex<Option<(Instant, crate::render::Capabilities)>>,
}

/// How long the cluster's version and API list are reused for Helm renders.
pub const CAPABILITIES_TTL: Duration = Duration::from_secs(300);

impl Drop for ClusterClient {
    fn drop(&mut self) {
        for task in self
            .watches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

fn key_of(obj: &Value) -> Key {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (
        s(&obj["apiVersion"]),
        s(&obj["kind"]),
        s(&obj["metadata"]["namespace"]),
        s(&obj["metadata"]["name"]),
    )
}

/// Whether the watch cache already reflects a write Tidemark made (`written`: the
/// resourceVersion it wrote, `None` for a delete).
fn caught_up(cached: Option<&Value>, written: Option<&str>) -> bool {
    match (cached, written) {
        (None, None) => true,
        (Some(c), Some(w)) => {
            let c = c["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default();
            match (c.parse::<u64>(), w.parse::<u64>()) {
                (Ok(c), Ok(w)) => c >= w,
                _ => c == w,
            }
        }
        _ => false,
    }
}

pub(super) fn describe(obj: &Value) -> String {
    let ns = obj["metadata"]["namespace"]
        .as_str()
        .map(|n| format!("{n}/"))
        .unwrap_or_default();
    format!(
        "{} {ns}{}",
        obj["kind"].as_str().unwrap_or("?"),
        obj["metadata"]["name"].as_str().unwrap_or("?")
    )
}

impl ClusterClient {
    /// A client for the configured cluster: a URL, a kubeconfig (and context) or the in-cluster
    /// service account.
    pub async fn connect(settings: &ClusterSettings) -> Result<Self, ClusterError> {
        let fail = |message: String| ClusterError::Connect {
            cluster: settings.name.clone(),
            message,
        };
        let config = if let Some(path) = &settings.kubeconfig {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| fail(format!("cannot read kubeconfig {}: {e}", path.display())))?;
            let options = kube::config::KubeConfigOptions {
                context: settings.context.clone(),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| fail(format!("kubeconfig {}: {e}", path.display())))?
        } else if settings.in_cluster {
            kube::Config::incluster().map_err(|e| fail(format!("in-cluster configuration: {e}")))?
        } else {
            let url = settings
                .url
                .parse()
                .map_err(|e| fail(format!("invalid url {}: {e}", settings.url)))?;
            kube::Config::new(url)
        };
        let client = kube::Client::try_from(config).map_err(|e| fail(e.to_string()))?;
        Ok(Self::with_client(&settings.name, client))
    }

    /// Wraps an existing client (in-process sandbox, tests).
    pub fn with_client(name: &str, client: kube::Client) -> Self {
        Self {
            name: name.to_owned(),
            client,
            kinds: tokio::sync::RwLock::new(HashMap::new()),
            caches: tokio::sync::Mutex::new(HashMap::new()),
            recent: std::sync::Mutex::new(HashMap::new()),
            events: tokio::sync::broadcast::channel(4096).0,
            watches: std::sync::Mutex::new(Vec::new()),
            predictions: super::predict::Predictions::default(),
            capabilities: tokio::sync::Mutex::new(None),
        }
    }

    /// The cluster's Kubernetes version (`v1.31.2`) and API versions — each served
    /// `group/version` (`v1` for core) and `group/version/Kind` — as Helm's `.Capabilities`
    /// (Argo CD passes the same). Read by discovery (`/version`, `/api`, `/apis` and each group
    /// version's resource list), kept for [`CAPABILITIES_TTL`].
    ///
    /// Errors: [`ClusterError::Connect`] when discovery fails (a group version that fails to
    /// list its resources contributes only its `group/version`).
    pub async fn capabilities(&self) -> Result<crate::render::Capabilities, ClusterError> {
        let mut cached = self.capabilities.lock().await;
        if let Some((at, caps)) = cached.as_ref() {
            if at.elapsed() < CAPABILITIES_TTL {
                return Ok(caps.clone());
            }
        }
        let fail = |e: kube::Error| ClusterError::Connect {
            cluster: self.name.clone(),
            message: format!("discovery: {e}"),
        };
        let version = self.client.apiserver_version().await.map_err(fail)?;
        let mut versions: Vec<String> = Vec::new();
        let core = self.client.list_core_api_versions().await.map_err(fail)?;
        for v in &core.versions {
            versions.push(v.clone());
            if let Ok(list) = self.client.list_core_api_resources(v).await {
                for r in list.resources.iter().filter(|r| !r.name.contains('/')) {
                    versions.push(format!("{v}/{}", r.kind));
                }
            }
        }
        let groups = self.client.list_api_groups().await.map_err(fail)?;
        for g in &groups.groups {
            for gv in &g.versions {
                versions.push(gv.group_version.clone());
                if let Ok(list) = self
                    .client
                    .list_api_group_resources(&gv.group_version)
                    .await
                {
                    for r in list.resources.iter().filter(|r| !r.name.contains('/')) {
                        versions.push(format!("{}/{}", gv.group_version, r.kind));
                    }
                }
            }
        }
        versions.sort();
        versions.dedup();
        let caps = crate::render::Capabilities {
            kube_version: version.git_version,
            api_versions: versions,
        };
        *cached = Some((Instant::now(), caps.clone()));
        Ok(caps)
    }

    /// The underlying `kube` client (for watches of kinds Tidemark does not apply, e.g. Events).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The applications whose objects the watches see change (added, modified, deleted), named
    /// by each object's tracking annotation (`tidemark.dev/tracking-id: <app>:…`); objects
    /// without one (pods, replica sets, hand-made objects) are not reported. A lagging receiver
    /// should treat every application as changed.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<Arc<str>> {
        self.events.subscribe()
    }

    /// The watch cache of a kind, started on first use (`None` if it cannot be watched).
    pub(super) async fn cache(&self, ar: &ApiResource) -> Option<Store<DynamicObject>> {
        let key = (ar.api_version.clone(), ar.kind.clone());
        let mut caches = self.caches.lock().await;
        if let Some(found) = caches.get(&key) {
            return found.clone();
        }
        let writer = reflector::store::Writer::<DynamicObject>::new(ar.clone());
        let reader = writer.as_reader();
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), ar);
        // A real API server sends list items without apiVersion/kind (only the list has them):
        // give every cached object its own, as a GET would.
        let types = kube::api::TypeMeta {
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
        };
        let stream = reflector::reflector(
            writer,
            watcher::watcher(api, watcher::Config::default())
                .default_backoff()
                .modify(move |o: &mut DynamicObject| {
                    // Tidemark's own managedFields entry and status entries are most of an
                    // object's size and never consulted; other managers' entries say who owns
                    // a drifted field.
                    if let Some(entries) = o.metadata.managed_fields.as_mut() {
                        entries.retain(|e| {
                            e.manager.as_deref() != Some(FIELD_MANAGER)
                                && e.subresource.as_deref() != Some("status")
                        });
                    }
                    if o.types.is_none() {
                        o.types = Some(types.clone());
                    }
                    super::tree::trim_descendant(o);
                }),
        );
        let events = self.events.clone();
        let cluster = self.name.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => {
                        let object = match &event {
                            watcher::Event::Apply(o)
                            | watcher::Event::Delete(o)
                            | watcher::Event::InitApply(o) => Some(o),
                            watcher::Event::Init | watcher::Event::InitDone => None,
                        };
                        if let Some(app) = object.and_then(tracked_application) {
                            let _ = events.send(app.into());
                        }
                    }
                    Err(e) => tracing::warn!(%cluster, error = %e, "watch failed; retrying"),
                }
            }
        });
        let ready = tokio::time::timeout(Duration::from_secs(10), reader.wait_until_ready()).await;
        let cache = match ready {
            Ok(Ok(())) => {
                self.watches
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(task);
                Some(reader)
            }
            _ => {
                task.abort();
                tracing::warn!(cluster = %self.name, kind = %ar.kind, "cannot watch this kind; reading it directly");
                None
            }
        };
        caches.insert(key, cache.clone());
        cache
    }

    fn remember(&self, obj: &Value, written: Option<String>) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.retain(|_, (_, at)| at.elapsed() < OVERLAY_TTL);
        recent.insert(key_of(obj), (written, Instant::now()));
    }

    /// The served resource for `apiVersion` + `kind`, and whether it is namespaced.
    pub async fn resolve(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, bool), ClusterError> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(found) = self.kinds.read().await.get(&key) {
            return Ok(found.clone());
        }
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let unknown = || ClusterError::UnknownKind {
            cluster: self.name.clone(),
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        };
        let (ar, caps) = match kube::discovery::pinned_kind(&self.client, &gvk).await {
            Ok(found) => found,
            Err(kube::Error::Api(s)) if s.code == 404 => return Err(unknown()),
            Err(kube::Error::Discovery(_)) => return Err(unknown()),
            Err(e) => {
                return Err(ClusterError::Connect {
                    cluster: self.name.clone(),
                    message: e.to_string(),
                })
            }
        };
        let resolved = (ar, caps.scope == Scope::Namespaced);
        self.kinds.write().await.insert(key, resolved.clone());
        Ok(resolved)
    }

    async fn api_for(&self, obj: &Value) -> Result<Api<DynamicObject>, ClusterError> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let (ar, namespaced) = self.resolve(api_version, kind).await?;
        Ok(match (namespaced, obj["metadata"]["namespace"].as_str()) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &ar),
            _ => Api::all_with(self.client.clone(), &ar),
        })
    }

    fn api_error(obj: &Value, e: kube::Error) -> ClusterError {
        match e {
            kube::Error::Api(s) => ClusterError::Api {
                object: describe(obj),
                code: s.code,
                reason: s.reason.clone(),
                message: s.message.clone(),
            },
            other => ClusterError::Api {
                object: describe(obj),
                code: 0,
                reason: "Transport".into(),
                message: other.to_string(),
            },
        }
    }

    /// The live object named by `obj`'s identity, if it exists: from the watch cache, or — for
    /// an object Tidemark itself just wrote and the watch has not shown yet — that write.
    pub async fn get(&self, obj: &Value) -> Result<Option<Value>, ClusterError> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let (ar, namespaced) = self.resolve(api_version, kind).await?;
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let Some(cache) = self.cache(&ar).await else {
            return self.get_direct(obj).await;
        };
        let mut reference = reflector::ObjectRef::<DynamicObject>::new_with(name, ar.clone());
        if namespaced {
            reference = reference.within(obj["metadata"]["namespace"].as_str().unwrap_or_default());
        }
        let cached = cache
            .get(&reference)
            .map(|o| serde_json::to_value(&*o).unwrap_or(Value::Null));
        let key = key_of(obj);
        let lagging = {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            match recent.get(&key) {
                Some((written, at))
                    if at.elapsed() < OVERLAY_TTL
                        && !caught_up(cached.as_ref(), written.as_deref()) =>
                {
                    true
                }
                Some(_) => {
                    recent.remove(&key);
                    false
                }
                None => false,
            }
        };
        if lagging {
            // Tidemark just wrote this object and the watch has not shown it yet: read it fresh.
            return self.get_direct(obj).await;
        }
        Ok(cached)
    }

    /// The live object read straight from the API server.
    pub async fn get_direct(&self, obj: &Value) -> Result<Option<Value>, ClusterError> {
        let api = self.api_for(obj).await?;
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        match api.get_opt(name).await {
            Ok(found) => Ok(found.map(|o| serde_json::to_value(o).unwrap_or(Value::Null))),
            Err(e) => Err(Self::api_error(obj, e)),
        }
    }

    /// Server-side applies `obj` as `tidemark`, taking over fields other managers changed
    /// (Git is the source of truth). `dry_run` returns the result without storing it.
    pub async fn apply(&self, obj: &Value, dry_run: bool) -> Result<Value, ClusterError> {
        let api = self.api_for(obj).await?;
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let mut params = PatchParams::apply(FIELD_MANAGER).force();
        params.dry_run = dry_run;
        match api.patch(name, &params, &Patch::Apply(obj)).await {
            Ok(o) => {
                let applied = serde_json::to_value(o).unwrap_or(Value::Null);
                if !dry_run {
                    let rv = applied["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    self.remember(obj, Some(rv));
                }
                Ok(applied)
            }
            Err(e) => Err(Self::api_error(obj, e)),
        }
    }

    /// Applies a JSON merge patch (RFC 7386) to the live object named by `obj`; a
    /// `metadata.resourceVersion` in the patch makes it conditional (409 if the object moved on).
    pub async fn merge_patch(&self, obj: &Value, patch: &Value) -> Result<Value, ClusterError> {
        let api = self.api_for(obj).await?;
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(o) => {
                let patched = serde_json::to_value(o).unwrap_or(Value::Null);
                let rv = patched["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                self.remember(obj, Some(rv));
                Ok(patched)
            }
            Err(e) => Err(Self::api_error(obj, e)),
        }
    }

    /// Applies a JSON merge patch as field manager `manager` (resource actions).
    pub async fn patch_as(
        &self,
        obj: &Value,
        patch: &Value,
        manager: &str,
    ) -> Result<Value, ClusterError> {
        let api = self.api_for(obj).await?;
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let params = PatchParams {
            field_manager: Some(manager.to_owned()),
            ..Default::default()
        };
        match api.patch(name, &params, &Patch::Merge(patch)).await {
            Ok(o) => Ok(serde_json::to_value(o).unwrap_or(Value::Null)),
            Err(e) => Err(Self::api_error(obj, e)),
        }
    }

    /// A pod's log through the `pods/log` subresource: the last `tail` lines (all when `None`)
    /// of `container` (the pod's only one when `None`), since `since_seconds` ago.
    pub async fn pod_log(
        &self,
        namespace: &str,
        pod: &str,
        params: &kube::api::LogParams,
    ) -> Result<String, ClusterError> {
        let api: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.client.clone(), namespace);
        let obj =
            serde_json::json!({"kind": "Pod", "metadata": {"namespace": namespace, "name": pod}});
        api.logs(pod, params)
            .await
            .map_err(|e| Self::api_error(&obj, e))
    }

    /// A pod's log as it is written (`follow`), line by line.
    pub async fn pod_log_stream(
        &self,
        namespace: &str,
        pod: &str,
        params: &kube::api::LogParams,
    ) -> Result<impl futures_util::AsyncBufRead + Send + 'static, ClusterError> {
        let api: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.client.clone(), namespace);
        let obj =
            serde_json::json!({"kind": "Pod", "metadata": {"namespace": namespace, "name": pod}});
        api.log_stream(pod, params)
            .await
            .map_err(|e| Self::api_error(&obj, e))
    }

    /// Deletes the object; an object already gone is not an error.
    pub async fn delete(&self, obj: &Value) -> Result<(), ClusterError> {
        let api = self.api_for(obj).await?;
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {
                self.remember(obj, None);
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(Self::api_error(obj, e)),
        }
    }

    /// Fills in `namespace` on namespaced objects that have none; removes it from
    /// cluster-scoped ones. The scope is discovered; for a kind the cluster does not serve yet it
    /// is `declared` (by a CustomResourceDefinition in the same desired set, which is what the
    /// cluster serves once it is applied); an object of a kind neither serves nor declares keeps
    /// the namespace it was written with, or gets `default_namespace` (applying it then fails for
    /// that object alone, with the reason).
    pub async fn place(
        &self,
        mut obj: Value,
        default_namespace: &str,
        declared: Option<bool>,
    ) -> Result<Value, ClusterError> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
        // What the cluster serves wins: a CustomResourceDefinition in the snapshot cannot
        // change a served kind's scope (the API server would not either), so it cannot dress a
        // cluster-scoped object up as namespaced.
        let namespaced = match self.resolve(&api_version, &kind).await {
            Ok((_, namespaced)) => namespaced,
            Err(ClusterError::UnknownKind { .. }) => declared.unwrap_or(true),
            Err(e) => return Err(e),
        };
        if namespaced {
            if obj["metadata"]["namespace"]
                .as_str()
                .is_none_or(str::is_empty)
            {
                obj["metadata"]["namespace"] = Value::String(default_namespace.to_owned());
            }
        } else if let Some(meta) = obj["metadata"].as_object_mut() {
            meta.remove("namespace");
        }
        Ok(obj)
    }

    /// Forgets every kind of an API group that discovery resolved, so the next use asks the
    /// API server again (after a CustomResourceDefinition of the group was applied: its kinds,
    /// versions or scope may have changed, or it was deleted and made again).
    pub async fn forget_group(&self, group: &str) {
        self.kinds.write().await.retain(|(api_version, _), _| {
            api_version.rsplit_once('/').map_or("", |(g, _)| g) != group
        });
    }

    /// Waits until the CustomResourceDefinition `crd` (as applied) is Established and
    /// discovery serves each of its served versions, for at most `timeout`. Fails at once when
    /// the API server does not accept its names (`NamesAccepted=False`, e.g. a plural another
    /// CRD uses) or it is being deleted; on time-out, names the conditions it last had.
    pub async fn wait_established(
        &self,
        crd: &Value,
        timeout: Duration,
    ) -> Result<(), ClusterError> {
        let deadline = Instant::now() + timeout;
        let failed = |reason: &str, message: String| ClusterError::Api {
            object: describe(crd),
            code: 0,
            reason: reason.to_owned(),
            message,
        };
        let mut last = "not found".to_owned();
        loop {
            if let Some(live) = self.get_direct(crd).await? {
                if live["metadata"]["deletionTimestamp"].is_string() {
                    return Err(failed(
                        "Terminating",
                        "is being deleted (with its custom resources); sync again once it is gone"
                            .into(),
                    ));
                }
                let conditions = live["status"]["conditions"].as_array().cloned();
                let condition = |kind: &str| {
                    conditions
                        .iter()
                        .flatten()
                        .find(|c| c["type"] == kind)
                        .cloned()
                };
                if condition("Established").is_some_and(|c| c["status"] == "True") {
                    break;
                }
                if let Some(names) = condition("NamesAccepted").filter(|c| c["status"] == "False") {
                    return Err(failed(
                        "NamesNotAccepted",
                        format!(
                            "its names are not accepted: {}",
                            names["message"].as_str().unwrap_or("no reason given")
                        ),
                    ));
                }
                last = conditions
                    .iter()
                    .flatten()
                    .map(|c| {
                        format!(
                            "{}={}{}",
                            c["type"].as_str().unwrap_or("?"),
                            c["status"].as_str().unwrap_or("?"),
                            c["message"]
                                .as_str()
                                .filter(|m| !m.is_empty())
                                .map(|m| format!(" ({m})"))
                                .unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                if last.is_empty() {
                    "no conditions yet".clone_into(&mut last);
                }
            }
            if Instant::now() >= deadline {
                return Err(failed(
                    "Timeout",
                    format!("not Established within {}s: {last}", timeout.as_secs()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Established: discover the group again until every served version is listed.
        let group = crd["spec"]["group"].as_str().unwrap_or_default();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
        self.forget_group(group).await;
        let versions = crd["spec"]["versions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for version in versions.iter().filter(|v| v["served"] != false) {
            let api_version = format!("{group}/{}", version["name"].as_str().unwrap_or_default());
            loop {
                match self.resolve(&api_version, kind).await {
                    Ok(_) => break,
                    Err(ClusterError::UnknownKind { .. }) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(ClusterError::UnknownKind { .. }) => {
                        return Err(failed(
                            "Timeout",
                            format!(
                                "Established, but discovery did not list {kind} in {api_version} within {}s",
                                timeout.as_secs()
                            ),
                        ))
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Deletes the object only if it is still exactly `live` (same uid and resourceVersion):
    /// an object someone changed since it was read — another application taking it over — is
    /// left alone (a 409 error). An object already gone is not an error.
    pub async fn delete_unchanged(&self, obj: &Value, live: &Value) -> Result<(), ClusterError> {
        let api = self.api_for(obj).await?;
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let params = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: text(&live["metadata"]["uid"]),
                resource_version: text(&live["metadata"]["resourceVersion"]),
            }),
            ..DeleteParams::background()
        };
        match api.delete(name, &params).await {
            Ok(_) => {
                self.remember(obj, None);
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(Self::api_error(obj, e)),
        }
    }
}

/// Apply order: Namespaces, then CustomResourceDefinitions, then Helm `pre-install` /
/// `pre-upgrade` hooks (by `helm.sh/hook-weight`), then ServiceAccounts, then everything else,
/// then `post-install` / `post-upgrade` hooks (by weight) — Argo CD's PreSync, Sync and
/// PostSync phases in one pass (each group keeps its canonical order). Prune runs in the
/// reverse of this order.
pub fn sync_order(objects: &[Value]) -> Vec<&Value> {
    use crate::render::helm::{hook_phase, HookPhase};
    let rank = |o: &Value| match (o["kind"].as_str(), hook_phase(o)) {
        (Some("Namespace"), _) => (0, 0),
        (Some("CustomResourceDefinition"), _) => (1, 0),
        (_, Some((HookPhase::PreSync, weight))) => (2, weight),
        // Before a token Secret that names it (the token controller deletes a token Secret
        // whose ServiceAccount does not exist yet).
        (Some("ServiceAccount"), _) => (3, 0),
        (_, Some((HookPhase::PostSync, weight))) => (5, weight),
        _ => (4, 0),
    };
    let mut ordered: Vec<&Value> = objects.iter().collect();
    ordered.sort_by_key(|o| rank(o));
    ordered
}

/// The application a live object belongs to, by its tracking annotation (`<app>:<group>/…`).
fn tracked_application(o: &DynamicObject) -> Option<&str> {
    o.metadata
        .annotations
        .as_ref()?
        .get(crate::domain::tracking::TRACKING_ANNOTATION)
        .and_then(|v| crate::domain::tracking::application_of(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn namespaces_and_crds_are_applied_first() {
        let objs = vec![
            json!({"kind": "ConfigMap", "metadata": {"name": "a"}}),
            json!({"kind": "CustomResourceDefinition", "metadata": {"name": "w.example.com"}}),
            json!({"kind": "Deployment", "metadata": {"name": "b"}}),
            json!({"kind": "Namespace", "metadata": {"name": "shop"}}),
        ];
        let kinds: Vec<&str> = sync_order(&objs)
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "CustomResourceDefinition",
                "ConfigMap",
                "Deployment"
            ]
        );
    }

    #[test]
    fn helm_hooks_run_before_and_after_by_weight() {
        let hook = |name: &str, hook: &str, weight: &str| {
            json!({"kind": "Job", "metadata": {"name": name, "annotations": {
                "helm.sh/hook": hook, "helm.sh/hook-weight": weight}}})
        };
        let objs = vec![
            json!({"kind": "ConfigMap", "metadata": {"name": "a"}}),
            hook("post", "post-upgrade,post-install", "0"),
            hook("migrate", "pre-upgrade", "5"),
            hook("schema", "pre-install,pre-upgrade", "-1"),
            json!({"kind": "Namespace", "metadata": {"name": "shop"}}),
        ];
        let names: Vec<&str> = sync_order(&objs)
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["shop", "schema", "migrate", "a", "post"]);
    }
}
