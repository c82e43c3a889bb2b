//! The live resource tree: an application's objects and their descendants by
//! `metadata.ownerReferences` (Deployment → ReplicaSet → Pod, Job → Pod, StatefulSet →
//! ControllerRevision, Service → EndpointSlice…), read from the watch caches — never a request
//! per page view. Descendants are the kinds in [`CHILD_KINDS`], watched cluster-wide from the
//! first use (the event recorder starts them at start-up).
//!
//! The tree is built by [`build`], a pure function; [`ClusterClient::descendants_of`] gathers
//! its input and [`ClusterClient::application_of`] walks the other way (an object up to the
//! application whose tracking annotation one of its owners carries).

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::{json, Value};

use super::client::{ClusterClient, ClusterError};
use super::health::{self, Health};

/// Kinds that controllers create for an application's objects: `(apiVersion, kind)`. A kind
/// the cluster does not serve is skipped.
pub const CHILD_KINDS: &[(&str, &str)] = &[
    ("apps/v1", "ReplicaSet"),
    ("v1", "Pod"),
    ("batch/v1", "Job"),
    ("apps/v1", "ControllerRevision"),
    ("discovery.k8s.io/v1", "EndpointSlice"),
];

/// How deep owner chains are followed (CronJob → Job → Pod is 2; cycles are cut anyway).
pub const MAX_DEPTH: usize = 6;

/// One node of the tree, as REST returns it and the page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TreeNode {
    pub api_version: String,
    pub kind: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
    /// Empty for an object Git declares that does not exist.
    pub uid: String,
    pub health: Health,
    /// Why it has that health ("2 of 3 pods available", "CrashLoopBackOff").
    pub message: String,
    /// A short status word for summaries: a Pod's phase or its container's waiting/terminated
    /// reason, a workload's "ready/desired"; empty for other kinds.
    pub status: String,
    /// `metadata.creationTimestamp` (RFC 3339), empty when missing.
    pub created: String,
    /// Declared in Git (a root), or created by a controller (a descendant).
    pub in_git: bool,
    pub children: Vec<TreeNode>,
}

impl TreeNode {
    /// Nodes in this subtree, itself included.
    pub fn count(&self) -> usize {
        1 + self.children.iter().map(TreeNode::count).sum::<usize>()
    }
}

/// A short status word for `obj` (see [`TreeNode::status`]).
pub fn status_word(obj: &Value, health: Health) -> String {
    let status = &obj["status"];
    match obj["kind"].as_str().unwrap_or_default() {
        "Pod" => {
            let containers = status["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(
                    status["initContainerStatuses"]
                        .as_array()
                        .into_iter()
                        .flatten(),
                );
            for c in containers {
                if let Some(r) = c["state"]["waiting"]["reason"].as_str() {
                    return r.to_owned();
                }
                if let Some(r) = c["state"]["terminated"]["reason"].as_str() {
                    if r != "Completed" {
                        return r.to_owned();
                    }
                }
            }
            if obj["metadata"]["deletionTimestamp"].is_string() {
                return "Terminating".into();
            }
            status["phase"].as_str().unwrap_or("Pending").to_owned()
        }
        "ReplicaSet" | "StatefulSet" | "Deployment" => format!(
            "{}/{} ready",
            status["readyReplicas"].as_i64().unwrap_or(0),
            obj["spec"]["replicas"].as_i64().unwrap_or(1)
        ),
        // Nothing to add to the health for other kinds.
        _ => {
            let _ = health;
            String::new()
        }
    }
}

fn node_of(obj: &Value, in_git: bool) -> TreeNode {
    let a = health::assess(Some(obj));
    let m = &obj["metadata"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    TreeNode {
        api_version: s(&obj["apiVersion"]),
        kind: s(&obj["kind"]),
        namespace: s(&m["namespace"]),
        name: s(&m["name"]),
        uid: s(&m["uid"]),
        status: status_word(obj, a.health),
        health: a.health,
        message: a.message,
        created: s(&m["creationTimestamp"]),
        in_git,
        children: Vec::new(),
    }
}

/// Builds the tree: one root per declared object (`identity` as Git writes it, `live` as the
/// cluster has it, `None` when missing), each with the objects of `pool` whose ownerReferences
/// name it (by uid), recursively to [`MAX_DEPTH`]. Children are sorted by kind, then name. An
/// object owned by two roots appears under both; a cycle is cut where it repeats.
pub fn build(roots: &[(Value, Option<Value>)], pool: &[Value]) -> Vec<TreeNode> {
    let mut by_owner: HashMap<&str, Vec<&Value>> = HashMap::new();
    for obj in pool {
        for owner in obj["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(uid) = owner["uid"].as_str() {
                by_owner.entry(uid).or_default().push(obj);
            }
        }
    }
    fn grow(
        node: &mut TreeNode,
        by_owner: &HashMap<&str, Vec<&Value>>,
        seen: &mut HashSet<String>,
        depth: usize,
    ) {
        if depth >= MAX_DEPTH || node.uid.is_empty() {
            return;
        }
        let Some(children) = by_owner.get(node.uid.as_str()) else {
            return;
        };
        for child in children {
            let mut c = node_of(child, false);
            if !seen.insert(c.uid.clone()) {
                continue;
            }
            grow(&mut c, by_owner, seen, depth + 1);
            seen.remove(&c.uid);
            node.children.push(c);
        }
        node.children
            .sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
    }
    roots
        .iter()
        .map(|(identity, live)| {
            let mut node = match live {
                Some(l) => node_of(l, true),
                None => {
                    let mut n = node_of(identity, true);
                    let a = health::assess(None);
                    n.health = a.health;
                    n.message = a.message;
                    n.status = "Missing".into();
                    n.uid.clear();
                    n.created.clear();
                    n
                }
            };
            let mut seen = HashSet::from([node.uid.clone()]);
            grow(&mut node, &by_owner, &mut seen, 0);
            node
        })
        .collect()
}

/// Sums up a group of sibling nodes: "12 Pods: 11 Running, 1 CrashLoopBackOff" (statuses by
/// count, then name).
pub fn summarize(kind: &str, nodes: &[&TreeNode]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for n in nodes {
        let status = if n.status.is_empty() {
            format!("{:?}", n.health)
        } else {
            n.status.clone()
        };
        match counts.iter_mut().find(|(s, _)| *s == status) {
            Some((_, c)) => *c += 1,
            None => counts.push((status, 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let parts: Vec<String> = counts.iter().map(|(s, c)| format!("{c} {s}")).collect();
    format!(
        "{} {}{}: {}",
        nodes.len(),
        kind,
        if nodes.len() == 1 { "" } else { "s" },
        parts.join(", ")
    )
}

/// Keeps in the watch cache only what the tree, health, logs and owner walks read of an object
/// a controller made (a descendant kind with a controller owner and without Tidemark's tracking
/// annotation): no
/// `managedFields`, a Pod's spec cut to its containers' names and images and its node, a
/// ControllerRevision without its `data`. Objects Git declares (tracked) are kept whole — the
/// compare reads them. The live manifest is read from the API server, never from here.
pub fn trim_descendant(o: &mut kube::api::DynamicObject) {
    let Some((api_version, kind)) = o
        .types
        .as_ref()
        .map(|t| (t.api_version.clone(), t.kind.clone()))
    else {
        return;
    };
    if !CHILD_KINDS
        .iter()
        .any(|(v, k)| *v == api_version && *k == kind)
    {
        return;
    }
    // Only what a controller made: a controller owner and no tracking annotation. An object
    // Git declares (tracked, or unmarked before its first sync) is kept whole for the compare.
    let tracked = o
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(crate::domain::tracking::TRACKING_ANNOTATION));
    let controlled = o
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|refs| refs.iter().any(|r| r.controller == Some(true)));
    if tracked || !controlled {
        return;
    }
    o.metadata.managed_fields = None;
    if let Some(a) = o.metadata.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    match kind.as_str() {
        "Pod" => {
            let containers = |list: &Value| -> Value {
                Value::Array(
                    list.as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| json!({"name": c["name"], "image": c["image"]}))
                        .collect(),
                )
            };
            let spec = &o.data["spec"];
            let trimmed = json!({
                "containers": containers(&spec["containers"]),
                "initContainers": containers(&spec["initContainers"]),
                "nodeName": spec["nodeName"],
            });
            o.data["spec"] = trimmed;
        }
        "ReplicaSet" | "Job" => {
            // The pod template is the bulk; the tree reads replicas and status.
            if let Some(spec) = o.data["spec"].as_object_mut() {
                spec.remove("template");
            }
        }
        "ControllerRevision" => {
            if let Some(d) = o.data.as_object_mut() {
                d.remove("data");
            }
        }
        _ => {}
    }
}

impl ClusterClient {
    /// The cached descendants of the objects with uids `roots`: objects of the kinds in
    /// [`CHILD_KINDS`] whose ownerReferences name one of them, then theirs, to [`MAX_DEPTH`]
    /// (starting the watches on first use; kinds the cluster does not serve are skipped). Only
    /// the matches are copied out of the caches.
    pub async fn descendants_of(&self, roots: &[String]) -> Vec<Value> {
        let mut states = Vec::new();
        for (api_version, kind) in CHILD_KINDS {
            if let Ok((ar, _)) = self.resolve(api_version, kind).await {
                if let Some(cache) = self.cache(&ar).await {
                    states.push(cache.state());
                }
            }
        }
        let mut wanted: HashSet<&str> = roots.iter().map(String::as_str).collect();
        let mut seen: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        for _ in 0..MAX_DEPTH {
            let mut next: HashSet<&str> = HashSet::new();
            for obj in states.iter().flatten() {
                let owned = obj
                    .metadata
                    .owner_references
                    .as_ref()
                    .is_some_and(|refs| refs.iter().any(|r| wanted.contains(r.uid.as_str())));
                let Some(uid) = obj.metadata.uid.as_deref() else {
                    continue;
                };
                if owned && seen.insert(uid.to_owned()) {
                    next.insert(uid);
                    out.push(serde_json::to_value(&**obj).unwrap_or(Value::Null));
                }
            }
            if next.is_empty() {
                break;
            }
            wanted = next;
        }
        out
    }

    /// Starts the watches of [`CHILD_KINDS`] (at start-up, so events about pods find their
    /// application at once).
    pub async fn watch_descendants(&self) {
        for (api_version, kind) in CHILD_KINDS {
            if let Ok((ar, _)) = self.resolve(api_version, kind).await {
                let _ = self.cache(&ar).await;
            }
        }
    }

    /// The application `obj` belongs to: its own tracking annotation, or that of the nearest
    /// owner carrying one (controller owners first), following at most [`MAX_DEPTH`] owners
    /// through the watch caches. `obj` needs only `apiVersion`, `kind` and
    /// `metadata.{namespace,name}`.
    pub async fn application_of(&self, obj: &Value) -> Option<String> {
        let mut current = self.get(obj).await.ok()??;
        for _ in 0..MAX_DEPTH {
            // The annotation counts only on the object it names (a copy on another object, or
            // one written by hand for someone else's application, does not).
            let m = &current["metadata"];
            if let Some(app) = m["annotations"][crate::domain::tracking::TRACKING_ANNOTATION]
                .as_str()
                .and_then(|v| {
                    crate::domain::tracking::application_of_object(
                        v,
                        current["apiVersion"].as_str().unwrap_or_default(),
                        current["kind"].as_str().unwrap_or_default(),
                        m["namespace"].as_str().unwrap_or_default(),
                        m["name"].as_str().unwrap_or_default(),
                    )
                })
            {
                return Some(app.to_owned());
            }
            let owners = current["metadata"]["ownerReferences"].as_array()?.clone();
            let owner = owners
                .iter()
                .find(|o| o["controller"] == true)
                .or_else(|| owners.first())?;
            let reference = json!({
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "metadata": {"namespace": current["metadata"]["namespace"], "name": owner["name"]},
            });
            current = self.get(&reference).await.ok()??;
        }
        None
    }

    /// Restarts a Deployment, StatefulSet or DaemonSet as `kubectl rollout restart` does: sets
    /// `spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"]` to `at`
    /// (RFC 3339) with field manager `tidemark-actions`, which Tidemark's syncs never own — so
    /// the next sync keeps it and the compare does not count it as drift.
    pub async fn restart(&self, obj: &Value, at: &str) -> Result<Value, ClusterError> {
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": at}}}}});
        self.patch_as(obj, &patch, ACTIONS_FIELD_MANAGER).await
    }
}

/// The field manager of resource actions (restart); never Tidemark's sync manager.
pub const ACTIONS_FIELD_MANAGER: &str = "tidemark-actions";

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(kind: &str, name: &str, uid: &str, owner: Option<&str>, status: Value) -> Value {
        let mut o = json!({"apiVersion": "v1", "kind": kind,
            "metadata": {"name": name, "namespace": "web", "uid": uid, "creationTimestamp": "2026-12-01T00:00:00Z"},
            "status": status});
        if let Some(owner) = owner {
            o["metadata"]["ownerReferences"] =
                json!([{"uid": owner, "kind": "X", "name": "x", "controller": true}]);
        }
        o
    }

    #[test]
    fn descendants_hang_under_their_owners_and_missing_roots_have_none() {
        let deploy = obj("Deployment", "web", "d1", None, json!({}));
        let missing = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "web"}});
        let pool = vec![
            obj(
                "ReplicaSet",
                "web-1",
                "r1",
                Some("d1"),
                json!({"readyReplicas": 1}),
            ),
            obj(
                "Pod",
                "web-1-b",
                "p2",
                Some("r1"),
                json!({"phase": "Running", "containerStatuses": [{"state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
            ),
            obj(
                "Pod",
                "web-1-a",
                "p1",
                Some("r1"),
                json!({"phase": "Running"}),
            ),
            obj(
                "Pod",
                "other",
                "p9",
                Some("zz"),
                json!({"phase": "Running"}),
            ),
            // A cycle (an object owning its owner) is cut, not followed forever.
            obj("Pod", "loop", "r1", Some("p1"), json!({})),
        ];
        let tree = build(
            &[(deploy.clone(), Some(deploy)), (missing.clone(), None)],
            &pool,
        );
        assert_eq!(tree.len(), 2);
        let rs = &tree[0].children[0];
        assert_eq!(
            (rs.kind.as_str(), rs.name.as_str()),
            ("ReplicaSet", "web-1")
        );
        let pods: Vec<&str> = rs.children.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(pods, ["web-1-a", "web-1-b"]);
        assert_eq!(rs.children[1].status, "CrashLoopBackOff");
        assert_eq!(rs.children[1].health, Health::Degraded);
        assert!(!rs.in_git && tree[0].in_git);
        assert_eq!(tree[0].count(), 4);
        assert_eq!(tree[1].health, Health::Missing);
        assert!(tree[1].children.is_empty() && tree[1].uid.is_empty());
    }

    #[test]
    fn sibling_groups_are_summed_up_by_status() {
        let pods: Vec<TreeNode> = ["Running", "Running", "CrashLoopBackOff", "Running"]
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut n = node_of(
                    &obj(
                        "Pod",
                        &format!("p{i}"),
                        &format!("u{i}"),
                        None,
                        json!({"phase": "Running"}),
                    ),
                    false,
                );
                n.status = (*s).into();
                n
            })
            .collect();
        let refs: Vec<&TreeNode> = pods.iter().collect();
        assert_eq!(
            summarize("Pod", &refs),
            "4 Pods: 3 Running, 1 CrashLoopBackOff"
        );
    }
}
