//! What an application looks like in its cluster right now, and the actions people take on
//! its live objects: the resource tree ([`tree`]), one object's live manifest beside the
//! desired one ([`manifest`]), pod logs ([`pod_log`]), restart and pod deletion ([`act`]).
//!
//! Every function is about objects **in the application's tree** (its objects and their
//! descendants): a name outside it is `NotFound`, so a viewer of one application cannot read
//! or act on other objects of the cluster through it. Secret values never leave: live and
//! desired Secrets show `data`/`stringData` values and kubectl's last-applied copy as
//! `(redacted)`.

use serde::Serialize;
use serde_json::{json, Value};

use super::EngineError;
use crate::cluster::client::{ClusterClient, ClusterError};
use crate::cluster::tree::{self, TreeNode};
use crate::store::{AppSource, Store};

/// What stands for a Secret's value in every live view.
pub const REDACTED: &str = "(redacted)";

/// The status word of a declared object that exists but is not this application's.
pub const NOT_OURS: &str = "Not this application's";

/// An object's identity as the tree, REST and forms name it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectName {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub namespace: String,
    pub name: String,
}

impl ObjectName {
    fn reference(&self) -> Value {
        let mut r = json!({"apiVersion": self.api_version, "kind": self.kind,
                           "metadata": {"name": self.name}});
        if !self.namespace.is_empty() {
            r["metadata"]["namespace"] = self.namespace.clone().into();
        }
        r
    }

    fn is(&self, n: &TreeNode) -> bool {
        n.api_version == self.api_version
            && n.kind == self.kind
            && n.namespace == self.namespace
            && n.name == self.name
    }

    /// "Deployment/web" (with the namespace: "Deployment shop/web").
    pub fn describe(&self) -> String {
        if self.namespace.is_empty() {
            format!("{}/{}", self.kind, self.name)
        } else {
            format!("{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

fn cluster_error(e: ClusterError) -> EngineError {
    match e {
        ClusterError::Api { code: 404, .. } => EngineError::NotFound(e.to_string()),
        ClusterError::Api { code: 403, .. } | ClusterError::Api { code: 400, .. } => {
            EngineError::Invalid(e.to_string())
        }
        other => EngineError::Unavailable(other.to_string()),
    }
}

/// The application's desired objects (as applied: placed and tracked), from its target render
/// (or its pin).
async fn desired(
    store: &Store,
    cluster: &ClusterClient,
    source: &AppSource,
) -> Result<Vec<Value>, EngineError> {
    match crate::reconcile::desired(store, cluster, source).await {
        Ok((_, _, objects)) => Ok(objects),
        Err(crate::reconcile::ReconcileError::NotRendered(_)) => Ok(Vec::new()),
        Err(e) => Err(EngineError::Unavailable(e.to_string())),
    }
}

/// The application's live tree: one root per desired object (hooks included), each with its
/// descendants from the watch caches. Empty before the first render.
pub async fn tree(
    store: &Store,
    cluster: &ClusterClient,
    source: &AppSource,
) -> Result<Vec<TreeNode>, EngineError> {
    Ok(live_tree(store, cluster, source).await?.nodes)
}

/// The live tree and the desired objects it was built from: read once, for a page that shows
/// the tree and a panel of one of its objects ([`manifest_in`], [`log_target_in`]).
pub struct LiveTree {
    pub nodes: Vec<TreeNode>,
    desired: Vec<Value>,
}

/// [`tree`], keeping the desired objects.
pub async fn live_tree(
    store: &Store,
    cluster: &ClusterClient,
    source: &AppSource,
) -> Result<LiveTree, EngineError> {
    let desired = desired(store, cluster, source).await?;
    let nodes = tree_of(cluster, source, &desired).await?;
    Ok(LiveTree { nodes, desired })
}

/// [`tree`] over desired objects the caller has already read.
async fn tree_of(
    cluster: &ClusterClient,
    source: &AppSource,
    desired: &[Value],
) -> Result<Vec<TreeNode>, EngineError> {
    let mut roots = Vec::with_capacity(desired.len());
    let mut foreign = Vec::new();
    let mut outside = Vec::new();
    for obj in desired.iter().cloned() {
        // Declared in Git and outside the project's bounds: never this application's, not read.
        if let Some(Err(why)) = source
            .bounds
            .as_ref()
            .map(|b| b.admits(&source.cluster, &obj))
        {
            outside.push((roots.len(), why));
            roots.push((obj, None));
            continue;
        }
        let live = match cluster.get(&obj).await {
            Ok(live) => live,
            // A kind the cluster does not serve yet (its CRD comes later): missing.
            Err(ClusterError::UnknownKind { .. }) => None,
            Err(e) => return Err(cluster_error(e)),
        };
        // Only an object this application applied (its tracking annotation names this
        // application and this object) is shown live — not one Git merely names: a render is
        // not approved or deployed yet, and the object may be someone else's.
        let id = crate::reconcile::tracking_id(&source.name, &crate::diff::ObjectRef::of(&obj));
        let ours = live.as_ref().is_none_or(|l| {
            l["metadata"]["annotations"][crate::domain::tracking::TRACKING_ANNOTATION].as_str()
                == Some(id.as_str())
        });
        if !ours {
            foreign.push(roots.len());
            roots.push((obj, None));
        } else {
            roots.push((obj, live));
        }
    }
    let uids: Vec<String> = roots
        .iter()
        .filter_map(|(_, live)| live.as_ref())
        .filter_map(|l| l["metadata"]["uid"].as_str().map(str::to_owned))
        .collect();
    let pool = cluster.descendants_of(&uids).await;
    let mut nodes = tree::build(&roots, &pool);
    for i in foreign {
        let n = &mut nodes[i];
        n.health = crate::cluster::health::Health::Unknown;
        n.status = NOT_OURS.into();
        n.message = "exists, but was not applied by this application (its tracking annotation names another owner, or none): not shown until a sync takes it over".into();
    }
    for (i, why) in outside {
        let n = &mut nodes[i];
        n.health = crate::cluster::health::Health::Unknown;
        n.status = NOT_OURS.into();
        n.message = format!("outside the project's bounds, never applied nor read: {why}");
    }
    Ok(nodes)
}

/// The node named `name` in `nodes` (depth first).
pub fn find<'a>(nodes: &'a [TreeNode], name: &ObjectName) -> Option<&'a TreeNode> {
    nodes.iter().find_map(|n| {
        if name.is(n) {
            Some(n)
        } else {
            find(&n.children, name)
        }
    })
}

/// Replaces every Secret value (and kubectl's last-applied copy, which holds them) with
/// [`REDACTED`]; other kinds are returned as they are.
pub fn redact_secret(mut obj: Value) -> Value {
    if obj["kind"] != "Secret" || obj["apiVersion"].as_str().is_none_or(|v| v != "v1") {
        return obj;
    }
    for field in ["data", "stringData"] {
        if let Some(map) = obj[field].as_object_mut() {
            for v in map.values_mut() {
                *v = REDACTED.into();
            }
        }
    }
    if let Some(a) = obj["metadata"]["annotations"].as_object_mut() {
        if let Some(v) = a.get_mut("kubectl.kubernetes.io/last-applied-configuration") {
            *v = REDACTED.into();
        }
    }
    obj
}

/// One object of the tree as it is live and as Git wants it.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub object: ObjectName,
    /// The live object read from the API server now (`None`: it does not exist).
    pub live: Option<Value>,
    /// The desired object (`None` for descendants, which Git does not declare).
    pub desired: Option<Value>,
    /// Whether `live` still holds `metadata.managedFields`.
    pub managed_fields: bool,
}

/// The live manifest of `name` (read from the API server, not the cache): `managedFields`
/// removed unless `managed_fields`, Secret values redacted. `NotFound` when the object is not
/// in the application's tree.
pub async fn manifest(
    store: &Store,
    cluster: &ClusterClient,
    source: &AppSource,
    name: &ObjectName,
    managed_fields: bool,
) -> Result<Manifest, EngineError> {
    let tree = live_tree(store, cluster, source).await?;
    manifest_in(cluster, source, &tree, name, managed_fields).await
}

/// [`manifest`] of an object of a tree already read.
pub async fn manifest_in(
    cluster: &ClusterClient,
    source: &AppSource,
    tree: &LiveTree,
    name: &ObjectName,
    managed_fields: bool,
) -> Result<Manifest, EngineError> {
    let nodes = &tree.nodes;
    let desired = tree.desired.iter().find(|o| {
        o["apiVersion"] == name.api_version.as_str()
            && o["kind"] == name.kind.as_str()
            && o["metadata"]["name"] == name.name.as_str()
            && o["metadata"]["namespace"].as_str().unwrap_or_default() == name.namespace
    });
    let Some(node) = find(nodes, name) else {
        return Err(EngineError::NotFound(format!(
            "{} in application {}",
            name.describe(),
            source.name
        )));
    };
    if node.status == NOT_OURS {
        return Err(EngineError::Conflict(format!(
            "{} exists, but was not applied by application {}: its live state is not shown",
            name.describe(),
            source.name
        )));
    }
    let live = cluster
        .get_direct(&name.reference())
        .await
        .map_err(cluster_error)?
        .map(|mut l| {
            if !managed_fields {
                if let Some(m) = l["metadata"].as_object_mut() {
                    m.remove("managedFields");
                }
            }
            redact_secret(l)
        });
    Ok(Manifest {
        object: name.clone(),
        live,
        desired: desired.cloned().map(redact_secret),
        managed_fields,
    })
}

/// What a log request asks for.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct LogQuery {
    /// The container (the pod's first when empty).
    #[serde(default)]
    pub container: String,
    /// Last lines (default 500, at most 10,000).
    pub tail: Option<i64>,
    /// Only lines newer than this many seconds.
    pub since_seconds: Option<i64>,
    /// Keep the answer open and send lines as they are written (SSE).
    #[serde(default)]
    pub follow: bool,
    /// Send as a file (`Content-Disposition: attachment`).
    #[serde(default)]
    pub download: bool,
}

/// Most lines one request returns.
pub const MAX_TAIL: i64 = 10_000;

/// Checks that `namespace/pod` is a Pod in the application's tree and returns the container
/// to read (the first one of the pod when `query.container` is empty), all its containers and
/// the `kube` log parameters.
pub async fn log_target(
    store: &Store,
    cluster: &ClusterClient,
    source: &AppSource,
    namespace: &str,
    pod: &str,
    query: &LogQuery,
) -> Result<(String, Vec<String>, kube::api::LogParams), EngineError> {
    let nodes = tree(store, cluster, source).await?;
    log_target_in(cluster, source, &nodes, namespace, pod, query).await
}

/// [`log_target`] in a tree already read.
pub async fn log_target_in(
    cluster: &ClusterClient,
    source: &AppSource,
    nodes: &[TreeNode],
    namespace: &str,
    pod: &str,
    query: &LogQuery,
) -> Result<(String, Vec<String>, kube::api::LogParams), EngineError> {
    let name = ObjectName {
        api_version: "v1".into(),
        kind: "Pod".into(),
        namespace: namespace.into(),
        name: pod.into(),
    };
    match find(nodes, &name) {
        None => {
            return Err(EngineError::NotFound(format!(
                "pod {namespace}/{pod} in application {}",
                source.name
            )))
        }
        // Git naming a pod does not make its logs this application's to read.
        Some(node) if node.status == NOT_OURS => {
            return Err(EngineError::Conflict(format!(
                "pod {namespace}/{pod} exists, but was not applied by application {}: its logs are not shown",
                source.name
            )))
        }
        Some(_) => {}
    }
    let live = cluster
        .get(&name.reference())
        .await
        .map_err(cluster_error)?
        .ok_or_else(|| EngineError::NotFound(format!("pod {namespace}/{pod}")))?;
    let containers: Vec<String> = live["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            live["spec"]["initContainers"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    let container = if query.container.is_empty() {
        containers.first().cloned().unwrap_or_default()
    } else if containers.contains(&query.container) {
        query.container.clone()
    } else {
        return Err(EngineError::NotFound(format!(
            "container {} in pod {namespace}/{pod} (it has: {})",
            query.container,
            containers.join(", ")
        )));
    };
    if query.tail.is_some_and(|t| t < 0) || query.since_seconds.is_some_and(|s| s <= 0) {
        return Err(EngineError::Invalid(
            "tail must be 0 or more and since_seconds 1 or more".into(),
        ));
    }
    let params = kube::api::LogParams {
        container: Some(container.clone()).filter(|c| !c.is_empty()),
        tail_lines: Some(query.tail.unwrap_or(500).min(MAX_TAIL)),
        since_seconds: query.since_seconds,
        // At most 4 MiB per answer (a follow stream is not limited).
        limit_bytes: (!query.follow).then_some(4 << 20),
        follow: query.follow,
        ..Default::default()
    };
    Ok((container, containers, params))
}

/// The log of a pod of the application (see [`log_target`]), at most [`MAX_TAIL`] lines.
pub async fn pod_log(
    cluster: &ClusterClient,
    namespace: &str,
    pod: &str,
    params: &kube::api::LogParams,
) -> Result<String, EngineError> {
    cluster
        .pod_log(namespace, pod, params)
        .await
        .map_err(cluster_error)
}

/// An action on a live object of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResourceAction {
    /// `kubectl rollout restart` of a Deployment, StatefulSet or DaemonSet.
    Restart,
    /// Delete a Pod (its controller makes a new one).
    Delete,
}

impl ResourceAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceAction::Restart => "restart",
            ResourceAction::Delete => "delete",
        }
    }
}

/// Runs `action` on `name`, which must be in the application's tree and of a kind the action
/// applies to; returns the sentence for the timeline ("restarted Deployment shop/web").
/// `at` is the time written into the restart annotation.
pub async fn act(
    store: &Store,
    cluster: &ClusterClient,
    source: &AppSource,
    action: ResourceAction,
    name: &ObjectName,
    at: crate::clock::Millis,
) -> Result<String, EngineError> {
    let allowed = match action {
        ResourceAction::Restart => {
            name.api_version == "apps/v1"
                && matches!(
                    name.kind.as_str(),
                    "Deployment" | "StatefulSet" | "DaemonSet"
                )
        }
        ResourceAction::Delete => name.api_version == "v1" && name.kind == "Pod",
    };
    if !allowed {
        return Err(EngineError::Invalid(match action {
            ResourceAction::Restart => format!(
                "{} cannot be restarted: only Deployments, StatefulSets and DaemonSets can",
                name.describe()
            ),
            ResourceAction::Delete => {
                format!("{} cannot be deleted here: only Pods can", name.describe())
            }
        }));
    }
    let nodes = tree(store, cluster, source).await?;
    let Some(node) = find(&nodes, name) else {
        return Err(EngineError::NotFound(format!(
            "{} in application {}",
            name.describe(),
            source.name
        )));
    };
    // Git naming an object does not make it this application's to restart or delete.
    if node.status == NOT_OURS {
        return Err(EngineError::Conflict(format!(
            "{} exists, but was not applied by application {}: it cannot be acted on from here",
            name.describe(),
            source.name
        )));
    }
    match action {
        ResourceAction::Restart => {
            let stamp = crate::clock::rfc3339(at);
            cluster
                .restart(&name.reference(), &stamp)
                .await
                .map_err(cluster_error)?;
            Ok(format!("restarted {}", name.describe()))
        }
        ResourceAction::Delete => {
            cluster
                .delete(&name.reference())
                .await
                .map_err(cluster_error)?;
            Ok(format!("deleted {}", name.describe()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_with_their_last_applied_copy_and_others_kept() {
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"p\":\"aHVudGVyMg==\"}}",
                "team": "shop"}},
            "data": {"p": "aHVudGVyMg=="}, "stringData": {"q": "hunter2"}});
        let r = redact_secret(secret);
        assert_eq!(r["data"]["p"], REDACTED);
        assert_eq!(r["stringData"]["q"], REDACTED);
        assert_eq!(
            r["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
            REDACTED
        );
        assert_eq!(r["metadata"]["annotations"]["team"], "shop");
        assert!(!r.to_string().contains("aHVudGVyMg") && !r.to_string().contains("hunter2"));
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1"}});
        assert_eq!(redact_secret(cm.clone()), cm);
    }
}
