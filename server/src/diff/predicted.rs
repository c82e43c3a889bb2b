//! Predicted vs live: the comparison behind server-side diff. `predicted` is what the API
//! server answered to a server-side apply dry run of the desired object (so defaults,
//! normalised values, fields the applier no longer sets and webhook mutations are already the
//! server's own); it is compared with the live object field by field, both sides in full.
//!
//! Left out: what every write rewrites (`metadata.resourceVersion`, `generation`,
//! `managedFields`) and `status`; changes to fields whose live value belongs to a field
//! manager the application tolerates (an autoscaler on `spec.replicas`); ignore rules. List
//! items are matched by the keys the API's schema declares (`x-kubernetes-list-map-keys`);
//! lists the schema calls atomic, or that no schema describes, compare as a whole.
//!
//! Secret values (`data`, `stringData`, the last-applied annotation) read `(changed)` on both
//! sides, never their value.

use serde_json::{Map, Value};

use super::{covers, FieldChange, ObjectRef, SECRET_POINTERS};
use crate::cluster::schema::{ListType, Node};
use crate::domain::tracking::TRACKING_ANNOTATION;

/// The kubectl field managers whose fields `kubectl apply --server-side` (≥ 1.26) and Flux take
/// over from a client-side apply: Tidemark does the same before it applies.
pub const CLIENT_SIDE_APPLY_MANAGERS: [&str; 2] =
    ["kubectl-client-side-apply", "before-first-apply"];

/// Whether a managedFields entry is kubectl's client-side apply (one of
/// [`CLIENT_SIDE_APPLY_MANAGERS`], an `Update` of the main resource).
pub fn is_client_side_apply(entry: &Value) -> bool {
    entry["manager"]
        .as_str()
        .is_some_and(|m| CLIENT_SIDE_APPLY_MANAGERS.contains(&m))
        && entry["operation"].as_str() == Some("Update")
        && entry["subresource"].as_str().is_none_or(str::is_empty)
}

/// Whether any of `obj`'s managedFields entries is kubectl's client-side apply.
pub fn has_client_side_apply(obj: &Value) -> bool {
    obj["metadata"]["managedFields"]
        .as_array()
        .is_some_and(|m| m.iter().any(is_client_side_apply))
}

/// Metadata every write rewrites: never compared.
const VOLATILE_METADATA: [&str; 3] = ["resourceVersion", "generation", "managedFields"];

/// What the comparison of one object may consult besides the two objects.
#[derive(Clone, Copy, Default)]
pub struct Context<'a> {
    /// The kind's schema from the API server's OpenAPI (list keys); `None`: lists compare whole.
    pub schema: Option<Node<'a>>,
    /// The live object's `metadata.managedFields`.
    pub managed_fields: Option<&'a Value>,
    /// Field managers whose fields are not drift (e.g. `kube-controller-manager` for an
    /// autoscaler's `spec.replicas`).
    pub ignore_managers: &'a [String],
    /// JSON pointers (into the predicted object) to leave out.
    pub ignore_pointers: &'a [&'a str],
}

/// One step of a path, in the three spellings a change needs.
#[derive(Clone)]
struct Step {
    /// `.spec` / `[name=web]`
    shown: String,
    /// `/spec` / `/0`
    pointer: String,
    /// `f:spec` / `k:{"name":"web"}` / `v:"a"`
    field: String,
}

/// Field changes from `live` to `predicted` (empty: the apply would change nothing).
pub fn changes(
    object: &ObjectRef,
    predicted: &Value,
    live: &Value,
    cx: &Context<'_>,
) -> Vec<FieldChange> {
    // An object synced before the tracking annotation existed lacks it: not drift (the next
    // sync adds it). A tracking annotation changed by hand is.
    let tracked = live["metadata"]["annotations"]
        .get(TRACKING_ANNOTATION)
        .is_some();
    let (p, l) = (comparable(predicted, !tracked), comparable(live, false));
    if p == l {
        return Vec::new();
    }
    let mut out = Vec::new();
    walk(Some(&p), Some(&l), cx.schema, &mut Vec::new(), &mut out);
    out.retain(|(c, fields)| {
        let ignored = cx.ignore_pointers.iter().any(|ip| covers(ip, &c.pointer));
        let tolerated = c.live.is_some()
            && cx
                .managed_fields
                .is_some_and(|m| owned_by_ignored(m, fields, cx.ignore_managers));
        !ignored && !tolerated
    });
    let mut out: Vec<FieldChange> = out.into_iter().map(|(c, _)| c).collect();
    if object.is_secret() {
        for c in &mut out {
            // A change above a value (`.metadata.annotations` as a whole, when the prediction
            // has none left) carries the value inside it: redact it as well.
            if SECRET_POINTERS
                .iter()
                .any(|sp| covers(sp, &c.pointer) || covers(&c.pointer, sp))
            {
                let redact = |v: &mut Option<Value>| {
                    if v.is_some() {
                        *v = Some(Value::String("(changed)".into()));
                    }
                };
                redact(&mut c.desired);
                redact(&mut c.live);
            }
        }
    }
    out
}

/// An object without what is never compared: `status`, what every write rewrites, and — with
/// `untracked` — Tidemark's tracking annotation.
pub fn comparable(obj: &Value, untracked: bool) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("status");
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in VOLATILE_METADATA {
                meta.remove(k);
            }
            if untracked {
                without_tracking(meta);
            }
        }
    }
    o
}

/// Removes Tidemark's tracking annotation from `metadata` (and `annotations` if it is left
/// empty).
pub(super) fn without_tracking(meta: &mut Map<String, Value>) {
    let emptied = meta
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
        .is_some_and(|a| a.remove(TRACKING_ANNOTATION).is_some() && a.is_empty());
    if emptied {
        meta.remove("annotations");
    }
}

fn push(
    path: &[Step],
    desired: Option<&Value>,
    live: Option<&Value>,
) -> (FieldChange, Vec<String>) {
    (
        FieldChange {
            path: path.iter().map(|s| s.shown.as_str()).collect(),
            pointer: path.iter().map(|s| s.pointer.as_str()).collect(),
            desired: desired.cloned(),
            live: live.cloned(),
        },
        path.iter().map(|s| s.field.clone()).collect(),
    )
}

fn escape(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

fn walk(
    p: Option<&Value>,
    l: Option<&Value>,
    node: Option<Node<'_>>,
    path: &mut Vec<Step>,
    out: &mut Vec<(FieldChange, Vec<String>)>,
) {
    match (p, l) {
        (Some(Value::Object(pm)), Some(Value::Object(lm))) => {
            let keys: std::collections::BTreeSet<&String> = pm.keys().chain(lm.keys()).collect();
            for k in keys {
                let (pv, lv) = (pm.get(k), lm.get(k));
                if pv == lv {
                    continue;
                }
                path.push(Step {
                    shown: format!(".{k}"),
                    pointer: format!("/{}", escape(k)),
                    field: format!("f:{k}"),
                });
                walk(pv, lv, node.and_then(|n| n.field(k)), path, out);
                path.pop();
            }
        }
        (Some(Value::Array(pa)), Some(Value::Array(la))) => {
            match node.and_then(|n| n.list_type()) {
                Some(ListType::Map(keys)) if all_keyed(pa, &keys) && all_keyed(la, &keys) => {
                    let items = node.and_then(|n| n.items());
                    let key_of = |v: &Value| -> Map<String, Value> {
                        keys.iter()
                            .filter_map(|k| v.get(k).map(|x| (k.clone(), x.clone())))
                            .collect()
                    };
                    let before = out.len();
                    let mut seen = Vec::new();
                    for (i, pi) in pa.iter().enumerate() {
                        let key = key_of(pi);
                        let li = la.iter().find(|x| key_of(x) == key);
                        seen.push(key.clone());
                        if li == Some(pi) {
                            continue;
                        }
                        path.push(item_step(i, &key));
                        walk(Some(pi), li, items, path, out);
                        path.pop();
                    }
                    for (i, li) in la.iter().enumerate() {
                        let key = key_of(li);
                        if !seen.contains(&key) {
                            path.push(item_step(i, &key));
                            walk(None, Some(li), items, path, out);
                            path.pop();
                        }
                    }
                    // The same items in another order: server-side apply stores the applied
                    // order (`$(A)` in env sees only what comes before it), so this is a change.
                    if out.len() == before && pa != la {
                        out.push(push(path, p, l));
                    }
                }
                _ => out.push(push(path, p, l)),
            }
        }
        (p, l) => {
            if p != l {
                out.push(push(path, p, l));
            }
        }
    }
}

fn all_keyed(items: &[Value], keys: &[String]) -> bool {
    items.iter().all(|i| i.is_object())
        && items
            .iter()
            .all(|i| keys.iter().any(|k| i.get(k).is_some()))
}

fn item_step(index: usize, key: &Map<String, Value>) -> Step {
    let label = key
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.as_str().map_or_else(|| v.to_string(), str::to_owned)
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    Step {
        shown: format!("[{label}]"),
        pointer: format!("/{index}"),
        field: format!("k:{}", Value::Object(key.clone())),
    }
}

/// Whether the field at `fields` (FieldsV1 steps) belongs, in `managed_fields`, to one of
/// `managers` (an owner of the field itself, or of an atomic value above it).
fn owned_by_ignored(managed_fields: &Value, fields: &[String], managers: &[String]) -> bool {
    owners(managed_fields, fields)
        .iter()
        .any(|m| managers.iter().any(|x| x == m))
}

/// The managers owning the field at `fields` (FieldsV1 steps), status subresource excluded.
pub fn owners<'a>(managed_fields: &'a Value, fields: &[String]) -> Vec<&'a str> {
    let mut found = Vec::new();
    for entry in managed_fields
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        if entry["subresource"].as_str() == Some("status") {
            continue;
        }
        let Some(manager) = entry["manager"].as_str() else {
            continue;
        };
        let mut node = &entry["fieldsV1"];
        let mut owns = true;
        for f in fields {
            match node.get(f.as_str()) {
                Some(next) => node = next,
                // An empty set at a prefix owns the whole (atomic) value below it.
                None if node.as_object().is_some_and(Map::is_empty) => break,
                None => {
                    owns = false;
                    break;
                }
            }
        }
        if owns && !std::ptr::eq(node, &entry["fieldsV1"]) {
            found.push(manager);
        }
    }
    found
}

/// Every field path (FieldsV1 steps) a FieldsV1 set names as a leaf (`{}`), or with `.` (the
/// item itself).
pub fn leaves(fields: &Value) -> Vec<Vec<String>> {
    fn go(node: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        let Some(m) = node.as_object() else { return };
        if (m.is_empty() || m.contains_key(".")) && !path.is_empty() {
            out.push(path.clone());
        }
        for (k, v) in m {
            if k == "." {
                continue;
            }
            path.push(k.clone());
            go(v, path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    go(fields, &mut Vec::new(), &mut out);
    out
}

/// Whether `obj` sets the field at `fields` (FieldsV1 steps).
pub fn sets(obj: &Value, fields: &[String]) -> bool {
    let mut v = obj;
    for f in fields {
        v = match step_into(v, f) {
            Some(next) => next,
            None => return false,
        };
    }
    true
}

fn step_into<'a>(v: &'a Value, f: &str) -> Option<&'a Value> {
    if let Some(name) = f.strip_prefix("f:") {
        return v.get(name);
    }
    let items = v.as_array()?;
    if let Some(key) = f.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(key).ok()?;
        // A manifest may leave out key fields the server defaults (`protocol: TCP`): an item
        // matches if every key field it names is equal and it names one at least.
        return items.iter().find(|i| {
            key.iter().any(|(k, _)| i.get(k).is_some())
                && key.iter().all(|(k, kv)| i.get(k).is_none_or(|iv| iv == kv))
        });
    }
    if let Some(val) = f.strip_prefix("v:") {
        let val: Value = serde_json::from_str(val).ok()?;
        return items.iter().find(|i| **i == val);
    }
    if let Some(i) = f.strip_prefix("i:") {
        return items.get(i.parse::<usize>().ok()?);
    }
    None
}

/// Removes the field at `fields` (FieldsV1 steps) from `obj`, if present; maps and lists left
/// empty by the removal are removed too, as the API server drops them. Whether it was present.
pub fn remove(obj: &mut Value, fields: &[String]) -> bool {
    match fields {
        [] => false,
        [last] => remove_step(obj, last),
        [first, rest @ ..] => {
            let Some(child) = step_into_mut(obj, first) else {
                return false;
            };
            let removed = remove(child, rest);
            if removed && is_empty(child) {
                remove_step(obj, first);
            }
            removed
        }
    }
}

fn is_empty(v: &Value) -> bool {
    v.as_object().is_some_and(Map::is_empty) || v.as_array().is_some_and(Vec::is_empty)
}

fn step_into_mut<'a>(v: &'a mut Value, f: &str) -> Option<&'a mut Value> {
    if let Some(name) = f.strip_prefix("f:") {
        return v.get_mut(name);
    }
    let items = v.as_array_mut()?;
    if let Some(key) = f.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(key).ok()?;
        return items
            .iter_mut()
            .find(|i| key.iter().all(|(k, kv)| i.get(k) == Some(kv)));
    }
    if let Some(val) = f.strip_prefix("v:") {
        let val: Value = serde_json::from_str(val).ok()?;
        return items.iter_mut().find(|i| **i == val);
    }
    None
}

fn remove_step(v: &mut Value, f: &str) -> bool {
    if let Some(name) = f.strip_prefix("f:") {
        return v.as_object_mut().and_then(|m| m.remove(name)).is_some();
    }
    let Some(items) = v.as_array_mut() else {
        return false;
    };
    let before = items.len();
    if let Some(key) = f.strip_prefix("k:") {
        if let Ok(key) = serde_json::from_str::<Map<String, Value>>(key) {
            items.retain(|i| !key.iter().all(|(k, kv)| i.get(k) == Some(kv)));
        }
    } else if let Some(val) = f.strip_prefix("v:") {
        if let Ok(val) = serde_json::from_str::<Value>(val) {
            items.retain(|i| *i != val);
        }
    }
    items.len() != before
}

/// The object an apply of `desired` would leave once Tidemark has taken over the fields
/// kubectl's client-side apply owns (as `kubectl apply --server-side` ≥ 1.26 and Flux do): the
/// fields kubectl applied — named in its last-applied annotation — that only client-side apply
/// owns and `desired` no longer sets are removed from `predicted`. Fields the client-side
/// managers own only because the API server defaulted them are kept: the real apply removes
/// and defaults them again. `managed_fields` are the live object's.
pub fn after_client_side_takeover(
    predicted: &Value,
    desired: &Value,
    managed_fields: &Value,
) -> Value {
    let entries = managed_fields
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let Some(applied) = predicted["metadata"]["annotations"][LAST_APPLIED]
        .as_str()
        .and_then(|a| serde_json::from_str::<Value>(a).ok())
    else {
        return predicted.clone();
    };
    // Secrets: what kubectl wrote as `stringData` is stored (and owned) as `data`.
    let secret = predicted["kind"] == "Secret"
        && !predicted["apiVersion"]
            .as_str()
            .is_some_and(|v| v.contains('/'));
    let fold = |v: &Value| {
        if secret {
            super::secret_as_data(v)
        } else {
            v.clone()
        }
    };
    let (applied, desired) = (fold(&applied), fold(desired));
    let mut out = predicted.clone();
    for e in entries.iter().filter(|e| is_client_side_apply(e)) {
        for field in leaves(&e["fieldsV1"]) {
            // The annotation itself is not in its own record, yet kubectl applied it.
            let is_record = field.len() == 3 && field[2] == format!("f:{LAST_APPLIED}");
            if !(is_record || sets(&applied, &field)) || sets(&desired, &field) {
                continue;
            }
            let shared = entries.iter().any(|o| {
                !is_client_side_apply(o)
                    && o["subresource"].as_str() != Some("status")
                    && o["manager"].as_str() != Some(crate::cluster::client::FIELD_MANAGER)
                    && owners(&Value::Array(vec![o.clone()]), &field).len() == 1
            });
            if !shared {
                remove(&mut out, &field);
            }
        }
    }
    out
}

/// kubectl's record of the configuration it last applied client-side.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj() -> ObjectRef {
        ObjectRef {
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: "web".into(),
        }
    }

    #[test]
    fn equal_objects_and_volatile_metadata_are_no_change() {
        let p = json!({"metadata": {"name": "web", "resourceVersion": "2", "generation": 2}, "spec": {"a": 1}, "status": {"x": 1}});
        let l = json!({"metadata": {"name": "web", "resourceVersion": "1", "generation": 1}, "spec": {"a": 1}, "status": {"x": 2}});
        assert!(changes(&obj(), &p, &l, &Context::default()).is_empty());
    }

    #[test]
    fn a_missing_tracking_annotation_is_not_drift_a_changed_one_is() {
        let p = json!({"metadata": {"name": "web", "annotations": {TRACKING_ANNOTATION: "a:apps/Deployment:shop/web"}}});
        let l = json!({"metadata": {"name": "web"}});
        assert!(changes(&obj(), &p, &l, &Context::default()).is_empty());
        let p = json!({"metadata": {"name": "web", "annotations": {TRACKING_ANNOTATION: "a", "team": "x"}}});
        let c = changes(&obj(), &p, &l, &Context::default());
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].desired, Some(json!({"team": "x"})));
        // Changed by hand: drift.
        let p = json!({"metadata": {"name": "web", "annotations": {TRACKING_ANNOTATION: "a"}}});
        let l = json!({"metadata": {"name": "web", "annotations": {TRACKING_ANNOTATION: "b"}}});
        let c = changes(&obj(), &p, &l, &Context::default());
        assert_eq!(
            c[0].path,
            format!(".metadata.annotations.{TRACKING_ANNOTATION}")
        );
    }

    #[test]
    fn removed_fields_and_lists_without_schema_show_as_changes() {
        let p = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"args": ["a"]}});
        let l = json!({"metadata": {"labels": {"app": "web", "tier": "web"}}, "spec": {"args": ["a", "b"]}});
        let c = changes(&obj(), &p, &l, &Context::default());
        let shown: Vec<(&str, Option<&Value>, Option<&Value>)> = c
            .iter()
            .map(|c| (c.path.as_str(), c.desired.as_ref(), c.live.as_ref()))
            .collect();
        assert_eq!(
            shown,
            [
                (".metadata.labels.tier", None, Some(&json!("web"))),
                (".spec.args", Some(&json!(["a"])), Some(&json!(["a", "b"]))),
            ]
        );
        assert_eq!(c[0].pointer, "/metadata/labels/tier");
    }

    #[test]
    fn owners_follow_fields_v1_and_atomic_prefixes() {
        let mf = json!([
            {"manager": "tidemark", "operation": "Apply", "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}}}}}}}},
            {"manager": "kube-controller-manager", "operation": "Update", "subresource": "scale", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
            {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:spec": {"f:args": {}}}},
            {"manager": "x", "operation": "Update", "subresource": "status", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
        ]);
        let f = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            owners(&mf, &f(&["f:spec", "f:replicas"])),
            ["kube-controller-manager"]
        );
        assert_eq!(
            owners(
                &mf,
                &f(&[
                    "f:spec",
                    "f:template",
                    "f:spec",
                    "f:containers",
                    "k:{\"name\":\"web\"}",
                    "f:image"
                ])
            ),
            ["tidemark"]
        );
        assert_eq!(
            owners(&mf, &f(&["f:spec", "f:args", "i:0"])),
            ["kubectl-edit"]
        );
        assert!(owners(&mf, &f(&["f:spec", "f:paused"])).is_empty());
    }

    #[test]
    fn client_side_fields_git_no_longer_sets_are_predicted_removed() {
        let desired = json!({"metadata": {"name": "web", "labels": {"app": "web"}},
                             "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx",
                                      "ports": [{"containerPort": 80}]}]}}}});
        let applied = json!({"metadata": {"name": "web", "labels": {"app": "web", "tier": "web"}, "annotations": {"team": "a"}},
                             "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx",
                                      "ports": [{"containerPort": 80}], "env": [{"name": "FEATURE_X", "value": "1"}]}]}}}});
        let predicted = json!({"metadata": {"name": "web", "labels": {"app": "web", "tier": "web"},
                                            "annotations": {"team": "a", LAST_APPLIED: applied.to_string()}},
                               "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "web", "image": "nginx",
                                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                        "env": [{"name": "FEATURE_X", "value": "1"}]}]}}}});
        let mf = json!([
            {"manager": "kubectl-client-side-apply", "operation": "Update", "fieldsV1": {
                "f:metadata": {"f:labels": {".": {}, "f:app": {}, "f:tier": {}},
                               "f:annotations": {".": {}, "f:team": {}, format!("f:{LAST_APPLIED}"): {}}},
                "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:name": {}, "f:image": {},
                    "f:ports": {".": {}, "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}, "f:protocol": {}}},
                    "f:env": {".": {}, "k:{\"name\":\"FEATURE_X\"}": {".": {}, "f:name": {}, "f:value": {}}}}}}}}}},
            {"manager": "tidemark", "operation": "Apply", "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}}}
        ]);
        let after = after_client_side_takeover(&predicted, &desired, &mf);
        // Defaulted fields (replicas, the port's protocol) stay: the server defaults them again.
        assert_eq!(
            after,
            json!({"metadata": {"name": "web", "labels": {"app": "web"}},
                   "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "web", "image": "nginx",
                            "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}}})
        );
        // Without kubectl's record nothing is known to be applied: nothing removed.
        let mut bare = predicted.clone();
        bare["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove(LAST_APPLIED);
        assert_eq!(after_client_side_takeover(&bare, &desired, &mf), bare);
    }
}
