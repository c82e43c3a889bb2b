//! What a real API server's round trip through its Go types does to a built-in object on
//! every write (dry runs included), driven by the kind's OpenAPI schema:
//!
//! * `resource.Quantity` values are written in canonical form ([`super::quantity`]);
//! * optional maps and lists that are empty (`nodeSelector: {}`, `args: []`, `env: []`,
//!   ConfigMap `data: {}`, `labels: {}`) and `null`s are dropped, as Go's `omitempty` does;
//!   RBAC `rules` is the exception the API server writes as `null` when empty;
//! * struct fields that are not pointers (the schema marks them `default: {}`) are always
//!   present, as `{}` when nothing is set (`resources: {}`, Service `status.loadBalancer: {}`);
//! * fields the kind does not declare are dropped.
//!
//! Int-or-string values stay as written. Defaults are filled in first ([`super::defaults`]);
//! custom resources are pruned to their CRD's structural schema and get its defaults.

use serde_json::{Map, Value};

use super::defaults;
use super::kinds::ResourceType;
use super::quantity;
use crate::cluster::schema::Node;

/// Why a value cannot be decoded (the API server's decoding error, e.g. a malformed quantity).
pub type Invalid = String;

/// Normalises a built-in object in place (custom resources only lose `null`s).
pub fn normalize(rt: &ResourceType, obj: &mut Value) -> Result<(), Invalid> {
    match rt.schema() {
        Some(root) if !rt.custom => {
            defaults::builtin(rt, obj);
            norm(root, obj, false, &mut String::new())?;
        }
        Some(root) => {
            // A custom resource: pruned to its structural schema, then defaulted by it; its
            // metadata is an ObjectMeta like any other.
            defaults::prune(root, obj);
            drop_nulls(obj);
            defaults::structural(root, obj);
            if let (Some(meta_ty), Some(meta)) = (root.field("metadata"), obj.get_mut("metadata")) {
                norm(meta_ty, meta, false, &mut String::from(".metadata"))?;
            }
        }
        None => drop_nulls(obj),
    }
    if rt.group == "rbac.authorization.k8s.io" && matches!(rt.kind.as_str(), "Role" | "ClusterRole")
    {
        // `rules` has no omitempty: an empty or missing list is written as null.
        if let Some(m) = obj.as_object_mut() {
            if m.get("rules")
                .is_none_or(|r| r.as_array().is_some_and(Vec::is_empty))
            {
                m.insert("rules".into(), Value::Null);
            }
        }
    }
    Ok(())
}

fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, c| !c.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

fn norm(
    ty: Node<'_>,
    v: &mut Value,
    in_resource_list: bool,
    at: &mut String,
) -> Result<(), Invalid> {
    if ty.is_quantity() {
        if !v.is_null() {
            let canonical = quantity::canonical(v, in_resource_list).ok_or_else(|| {
                tracing::debug!(field = %at, value = %v, "not a quantity");
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'".to_owned()
            })?;
            *v = Value::String(canonical);
        }
        return Ok(());
    }
    match v {
        Value::Object(m) => {
            let raw = ty.raw();
            if let Some(props) = raw["properties"].as_object() {
                let open = raw.get("additionalProperties").is_some();
                if !open {
                    m.retain(|k, _| props.contains_key(k));
                }
                let required: Vec<&str> = raw["required"]
                    .as_array()
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let keys: Vec<String> = m.keys().cloned().collect();
                for k in keys {
                    let Some(child_ty) = ty.field(&k) else {
                        continue;
                    };
                    let len = at.len();
                    at.push('.');
                    at.push_str(&k);
                    if let Some(child) = m.get_mut(&k) {
                        norm(child_ty, child, false, at)?;
                    }
                    at.truncate(len);
                    let drop = match &m[&k] {
                        Value::Null => true,
                        Value::Array(a) => a.is_empty() && !required.contains(&k.as_str()),
                        Value::Object(o) => {
                            o.is_empty() && child_ty.is_map() && !required.contains(&k.as_str())
                        }
                        _ => false,
                    };
                    if drop {
                        m.remove(&k);
                    }
                }
                materialize(ty, m, at)?;
            } else if let Some(value_ty) = ty.field("") {
                // A map (`additionalProperties`): a map of quantities is a ResourceList.
                let resource_list = value_ty.is_quantity();
                for (k, child) in m.iter_mut() {
                    if child.is_null() {
                        // Decoded into the map's value type: its zero value.
                        *child = match value_ty.raw()["type"].as_str() {
                            _ if resource_list => Value::String("0".into()),
                            Some("string") => Value::String(String::new()),
                            Some("integer") | Some("number") => Value::from(0),
                            Some("boolean") => Value::Bool(false),
                            Some("object") => Value::Object(Map::new()),
                            _ => Value::Null,
                        };
                    }
                    let len = at.len();
                    at.push('.');
                    at.push_str(k);
                    norm(value_ty, child, resource_list, at)?;
                    at.truncate(len);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_ty) = ty.items() {
                for (i, item) in items.iter_mut().enumerate() {
                    let len = at.len();
                    at.push_str(&format!("[{i}]"));
                    norm(item_ty, item, false, at)?;
                    at.truncate(len);
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Adds the struct fields that are not pointers (`default: {}`) as `{}` when absent.
fn materialize(ty: Node<'_>, m: &mut Map<String, Value>, at: &mut String) -> Result<(), Invalid> {
    let Some(props) = ty.raw()["properties"].as_object() else {
        return Ok(());
    };
    for (k, p) in props {
        if m.contains_key(k) || p.get("default") != Some(&Value::Object(Map::new())) {
            continue;
        }
        let Some(child_ty) = ty.field(k) else {
            continue;
        };
        if child_ty.raw()["properties"].is_object() {
            let mut child = Value::Object(Map::new());
            norm(child_ty, &mut child, false, at)?;
            m.insert(k.clone(), child);
        }
    }
    Ok(())
}

/// The zero value of a built-in kind as the API server's Go types write it: its non-pointer
/// structs as `{}` (what a create compares against when it records field ownership).
pub fn zero(rt: &ResourceType) -> Value {
    let mut obj = Value::Object(Map::new());
    if let (Some(root), false) = (rt.schema(), rt.custom) {
        let _ = norm(root, &mut obj, false, &mut String::new());
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::kinds;
    use serde_json::json;

    fn rt(kind: &str) -> ResourceType {
        kinds::builtins()
            .into_iter()
            .find(|t| t.kind == kind)
            .unwrap()
    }

    #[test]
    fn empty_optional_fields_are_dropped_and_quantities_canonical() {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {}, "annotations": {}, "finalizers": []},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"nodeSelector": {},
                "containers": [{"name": "web", "image": "nginx", "args": [], "env": [],
                    "ports": [{"containerPort": 80}],
                    "resources": {"requests": {"cpu": "1000m", "memory": "1024Mi"}, "limits": {}}}]}}}});
        normalize(&rt("Deployment"), &mut d).unwrap();
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(d["metadata"], json!({"name": "web"}));
        assert_eq!(d["spec"]["replicas"], json!(0));
        assert!(d["spec"]["template"]["spec"].get("nodeSelector").is_none());
        assert!(c.get("args").is_none() && c.get("env").is_none());
        assert_eq!(
            c["resources"],
            json!({"requests": {"cpu": "1", "memory": "1Gi"}})
        );
        assert_eq!(d["spec"]["strategy"]["type"], json!("RollingUpdate"));
        assert_eq!(c["imagePullPolicy"], json!("Always"));
        assert_eq!(d["status"], json!({}));
    }

    #[test]
    fn non_pointer_structs_are_written_even_when_empty() {
        let mut s = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}});
        normalize(&rt("Service"), &mut s).unwrap();
        assert_eq!(s["spec"], json!({}));
        assert_eq!(s["status"], json!({"loadBalancer": {}}));
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}, "binaryData": {}});
        normalize(&rt("ConfigMap"), &mut cm).unwrap();
        assert_eq!(
            cm,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
        );
        let mut role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r"}, "rules": []});
        normalize(&rt("ClusterRole"), &mut role).unwrap();
        assert_eq!(role["rules"], Value::Null);
    }

    #[test]
    fn a_malformed_quantity_is_invalid() {
        let mut p = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "p"},
            "spec": {"resources": {"requests": {"storage": "lots"}}}});
        let e = normalize(&rt("PersistentVolumeClaim"), &mut p).unwrap_err();
        assert!(
            e.starts_with("quantities must match the regular expression"),
            "{e}"
        );
    }
}
