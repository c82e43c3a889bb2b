//! Field sets for server-side apply, typed by the kind's OpenAPI schema as the API server's
//! structured merge does it: which fields a manager owns (`managedFields`, FieldsV1), merging
//! an applied configuration into the live object, comparing two objects, removing fields.
//!
//! The schema ([`Ty`], from [`crate::cluster::schema`]) decides the shape of every value:
//!
//! * lists are associative when the schema says so (`x-kubernetes-list-type: map` keyed by
//!   `x-kubernetes-list-map-keys`, a key field's schema `default` standing in when an item
//!   omits it, e.g. a port's `protocol: TCP`; `set` for lists of scalars; or the older patch
//!   merge key), otherwise atomic (owned and replaced as a whole);
//! * maps and structs are granular (each key owned on its own) unless
//!   `x-kubernetes-map-type: atomic` (a label selector, `nodeSelector`);
//! * values without a schema (no OpenAPI, `x-kubernetes-preserve-unknown-fields`) are deduced
//!   from their shape: maps granular, lists atomic.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value};

use crate::cluster::schema::{ListType, Node};

/// The schema of a value (`None`: untyped, deduced from the value).
pub type Ty<'a> = Option<Node<'a>>;

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// A map key or struct field.
    Field(String),
    /// An item of an associative list, identified by its key fields as a JSON object, e.g.
    /// `{"containerPort":80,"protocol":"TCP"}`.
    Key(String),
    /// An item of a set, identified by its JSON value, e.g. `"kubernetes"`.
    Value(String),
}

/// A path from the object root.
pub type Path = Vec<Step>;
/// A set of owned paths.
pub type FieldSet = BTreeSet<Path>;

/// How a value is walked.
enum Shape<'a> {
    /// A scalar, an atomic list or an atomic map: one field.
    Leaf,
    /// A granular map or struct.
    Map(Ty<'a>),
    /// An associative list: its keys (`None`: a set) and item schema.
    List(Option<Vec<String>>, Ty<'a>),
}

fn shape<'a>(ty: Ty<'a>, v: &Value) -> Shape<'a> {
    match v {
        Value::Object(_) => match ty {
            Some(n) if n.map_type() == Some("atomic") => Shape::Leaf,
            _ => Shape::Map(ty),
        },
        Value::Array(_) => match ty.and_then(|n| n.list_type()) {
            Some(ListType::Map(keys)) => Shape::List(Some(keys), ty.and_then(|n| n.items())),
            Some(ListType::Set) => Shape::List(None, ty.and_then(|n| n.items())),
            _ => Shape::Leaf,
        },
        _ => Shape::Leaf,
    }
}

/// The schema of `key` in a map or struct, and whether it is a declared struct field.
fn field<'a>(ty: Ty<'a>, key: &str) -> (Ty<'a>, bool) {
    match ty {
        None => (None, false),
        Some(n) => (n.field(key), n.raw()["properties"].get(key).is_some()),
    }
}

/// The path step of a list item: its key fields (or, in a set, its value).
fn item_step(keys: &Option<Vec<String>>, items: Ty<'_>, item: &Value) -> Result<Step, String> {
    let Some(keys) = keys else {
        return Ok(Step::Value(item.to_string()));
    };
    let mut key = Map::new();
    for k in keys {
        let v = match item.get(k).filter(|v| !v.is_null()) {
            Some(v) => v.clone(),
            None => match items
                .and_then(|n| n.field(k))
                .map(|f| &f.raw()["default"])
                .filter(|d| !d.is_null())
            {
                Some(d) => d.clone(),
                None => {
                    return Err(format!(
                    "associative list with keys has an element that omits key field {k:?} (and doesn't have default value)"
                ))
                }
            },
        };
        key.insert(k.clone(), v);
    }
    Ok(Step::Key(Value::Object(key).to_string()))
}

/// The items of a list by step, first occurrence only, in order; an error for an item without
/// its keys, or (when `unique`) for a repeated key.
fn index<'v>(
    keys: &Option<Vec<String>>,
    items: Ty<'_>,
    list: &'v [Value],
    unique: bool,
    path: &[Step],
) -> Result<Vec<(Step, &'v Value)>, String> {
    let mut out: Vec<(Step, &Value)> = Vec::with_capacity(list.len());
    let mut seen = BTreeSet::new();
    for item in list {
        let step = item_step(keys, items, item).map_err(|e| format!("{}: {e}", display(path)))?;
        if !seen.insert(step.clone()) {
            if unique {
                return Err(format!(
                    "{}: duplicate entries for key {}",
                    display(path),
                    display(&[step])
                ));
            }
            continue;
        }
        out.push((step, item));
    }
    Ok(out)
}

// ---- field sets ---------------------------------------------------------------------------

/// Every field `obj` sets: leaves (scalars, atomic lists and maps, empty maps, nulls), list
/// items, and map keys that are not declared struct fields.
///
/// With `strict`, a value that does not fit its schema is an error, as the API server's
/// "failed to create typed patch object" (`.spec.foo: field not declared in schema`).
pub fn field_set(ty: Ty<'_>, obj: &Value, strict: bool) -> Result<FieldSet, String> {
    let mut set = FieldSet::new();
    let mut path = Vec::new();
    to_set(ty, obj, &mut path, &mut set, strict)?;
    set.remove(&Vec::new());
    Ok(set)
}

/// The schema's scalar type mismatches `v` (a typed conversion error), if it does.
fn type_error(ty: Ty<'_>, v: &Value) -> Option<String> {
    let n = ty?;
    if v.is_null() || n.is_quantity() || n.is_int_or_string() {
        return None;
    }
    let got = match v {
        Value::Object(_) => "map",
        Value::Array(_) => "list",
        Value::String(_) => "string",
        Value::Number(_) => "numeric",
        Value::Bool(_) => "boolean",
        Value::Null => return None,
    };
    let want = match n.raw()["type"].as_str()? {
        "object" => "map",
        "array" => "list",
        "integer" | "number" => "numeric",
        "string" => "string",
        "boolean" => "boolean",
        _ => return None,
    };
    (want != got).then(|| {
        if want == "numeric" {
            format!("expected numeric (int or float), got {got}")
        } else {
            format!("expected {want}, got {got}")
        }
    })
}

fn to_set(
    ty: Ty<'_>,
    v: &Value,
    path: &mut Path,
    set: &mut FieldSet,
    strict: bool,
) -> Result<(), String> {
    if strict {
        if let Some(e) = type_error(ty, v) {
            return Err(format!("{}: {e}", display(path)));
        }
    }
    match shape(ty, v) {
        Shape::Leaf => {
            set.insert(path.clone());
        }
        Shape::Map(ty) => {
            let Value::Object(m) = v else { return Ok(()) };
            for (k, child) in m {
                let (cty, declared) = field(ty, k);
                if strict && cty.is_none() && !open(ty) {
                    path.push(Step::Field(k.clone()));
                    let e = format!("{}: field not declared in schema", display(path));
                    path.pop();
                    return Err(e);
                }
                path.push(Step::Field(k.clone()));
                to_set(cty, child, path, set, strict)?;
                let empty = child.is_null() || child.as_object().is_some_and(Map::is_empty);
                if empty || !declared {
                    set.insert(path.clone());
                }
                path.pop();
            }
        }
        Shape::List(keys, items) => {
            let Value::Array(list) = v else { return Ok(()) };
            let mut seen = BTreeSet::new();
            let mut repeated = BTreeSet::new();
            for item in list {
                let step =
                    item_step(&keys, items, item).map_err(|e| format!("{}: {e}", display(path)))?;
                if !seen.insert(step.clone()) {
                    repeated.insert(step);
                }
            }
            for item in list {
                let step = item_step(&keys, items, item)?;
                path.push(step.clone());
                if !repeated.contains(&step) {
                    to_set(items, item, path, set, strict)?;
                }
                set.insert(path.clone());
                path.pop();
            }
        }
    }
    Ok(())
}

/// Whether a map's schema accepts keys it does not declare (no schema, a map with
/// `additionalProperties`, or `x-kubernetes-preserve-unknown-fields`).
fn open(ty: Ty<'_>) -> bool {
    ty.is_none_or(|n| {
        let raw = n.raw();
        raw.get("properties").is_none()
            || raw.get("additionalProperties").is_some()
            || raw["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true)
    })
}

/// `set` with the declared struct fields on the way to its paths (`spec`, `spec.template`…):
/// what a removal must keep when anything below them is still owned.
pub fn with_named_ancestors(ty: Ty<'_>, set: &FieldSet) -> FieldSet {
    let mut out = set.clone();
    for path in set {
        let mut t = ty;
        for (i, step) in path.iter().enumerate() {
            match step {
                Step::Field(k) => {
                    let (child, declared) = field(t, k);
                    if declared && i + 1 < path.len() {
                        out.insert(path[..=i].to_vec());
                    }
                    t = child;
                }
                _ => t = t.and_then(|n| n.items()),
            }
        }
    }
    out
}

// ---- merge --------------------------------------------------------------------------------

/// Merges an applied configuration into the live object: granular maps key by key,
/// associative lists item by item (shared items in the applied order, live-only items kept in
/// place), everything else replaced by the applied value.
pub fn merge(ty: Ty<'_>, live: &Value, applied: &Value) -> Result<Value, String> {
    merge_at(ty, Some(live), applied, &mut Vec::new())
}

fn merge_at(ty: Ty<'_>, l: Option<&Value>, r: &Value, path: &mut Path) -> Result<Value, String> {
    let Some(l) = l else {
        return Ok(r.clone());
    };
    match shape(ty, r) {
        Shape::Leaf => Ok(r.clone()),
        Shape::Map(ty) => {
            let (Some(lm), Some(rm)) = (l.as_object(), r.as_object()) else {
                return Ok(r.clone());
            };
            let mut out = lm.clone();
            for (k, rv) in rm {
                path.push(Step::Field(k.clone()));
                let merged = merge_at(field(ty, k).0, lm.get(k), rv, path)?;
                path.pop();
                out.insert(k.clone(), merged);
            }
            Ok(Value::Object(out))
        }
        Shape::List(keys, items) => {
            let (Some(la), Some(ra)) = (l.as_array(), r.as_array()) else {
                return Ok(r.clone());
            };
            let lhs = index(&keys, items, la, false, path)?;
            let rhs = index(&keys, items, ra, true, path)?;
            let lmap: HashMap<&Step, &Value> = lhs.iter().map(|(s, v)| (s, *v)).collect();
            let rmap: HashMap<&Step, &Value> = rhs.iter().map(|(s, v)| (s, *v)).collect();
            // Items both sides have, in the applied order: the live list is walked in step with
            // the applied one so that live-only items keep their place between them.
            let shared: Vec<&Step> = rhs
                .iter()
                .map(|(s, _)| s)
                .filter(|s| lmap.contains_key(s))
                .collect();
            let mut next_shared = shared.into_iter();
            let mut wanted = next_shared.next();
            let mut done: BTreeSet<&Step> = BTreeSet::new();
            let mut out = Vec::with_capacity(lhs.len().max(rhs.len()));
            let (mut li, mut ri) = (0, 0);
            let merge_item = |step: &Step, path: &mut Path| -> Result<Value, String> {
                path.push(step.clone());
                let v = match rmap.get(step) {
                    Some(rv) => merge_at(items, lmap.get(step).copied(), rv, path),
                    None => Ok(lmap[step].clone()),
                };
                path.pop();
                v
            };
            while li < lhs.len() || ri < rhs.len() {
                if li < lhs.len() && ri < rhs.len() {
                    let (ls, rs) = (&lhs[li].0, &rhs[ri].0);
                    if ls == rs {
                        out.push(merge_item(ls, path)?);
                        done.insert(ls);
                        li += 1;
                        ri += 1;
                        wanted = next_shared.next();
                        continue;
                    }
                    if rmap.contains_key(ls) && wanted.is_some_and(|w| w != ls) {
                        li += 1;
                        continue;
                    }
                }
                if li < lhs.len() {
                    let ls = &lhs[li].0;
                    if !rmap.contains_key(ls) {
                        out.push(merge_item(ls, path)?);
                        li += 1;
                        continue;
                    } else if done.contains(ls) {
                        li += 1;
                    }
                }
                if ri < rhs.len() {
                    let rs = &rhs[ri].0;
                    out.push(merge_item(rs, path)?);
                    done.insert(rs);
                    ri += 1;
                    if wanted == Some(rs) {
                        wanted = next_shared.next();
                    }
                }
            }
            Ok(Value::Array(out))
        }
    }
}

// ---- compare ------------------------------------------------------------------------------

/// What changed from one object to another, field by field.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// Fields (and list items, maps and lists) the new object has and the old one lacks.
    pub added: FieldSet,
    /// Leaves with a different value.
    pub modified: FieldSet,
    /// Fields the old object has and the new one lacks.
    pub removed: FieldSet,
}

/// Compares two versions of an object.
pub fn compare(ty: Ty<'_>, old: &Value, new: &Value) -> Comparison {
    let mut out = Comparison::default();
    compare_at(ty, Some(old), Some(new), &mut Vec::new(), &mut out);
    out.added.remove(&Vec::new());
    out.removed.remove(&Vec::new());
    out
}

fn empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    }
}

fn compare_at(
    ty: Ty<'_>,
    l: Option<&Value>,
    r: Option<&Value>,
    path: &mut Path,
    out: &mut Comparison,
) {
    let Some(v) = r.or(l) else { return };
    let leaf = |out: &mut Comparison, path: &Path| {
        match (l, r) {
            (None, _) => out.added.insert(path.clone()),
            (_, None) => out.removed.insert(path.clone()),
            (Some(a), Some(b)) if a != b => out.modified.insert(path.clone()),
            _ => false,
        };
    };
    match shape(ty, v) {
        Shape::Leaf => return leaf(out, path),
        _ if empty(l) && empty(r) => return leaf(out, path),
        Shape::Map(ty) => {
            let (lm, rm) = (l.and_then(Value::as_object), r.and_then(Value::as_object));
            let keys: BTreeSet<&String> =
                lm.iter().chain(rm.iter()).flat_map(|m| m.keys()).collect();
            for k in keys {
                path.push(Step::Field(k.clone()));
                compare_at(
                    field(ty, k).0,
                    lm.and_then(|m| m.get(k)),
                    rm.and_then(|m| m.get(k)),
                    path,
                    out,
                );
                path.pop();
            }
        }
        Shape::List(keys, items) => {
            let empty_list: Vec<Value> = Vec::new();
            let la = l.and_then(Value::as_array).unwrap_or(&empty_list);
            let ra = r.and_then(Value::as_array).unwrap_or(&empty_list);
            let lhs = index(&keys, items, la, false, path).unwrap_or_default();
            let rhs = index(&keys, items, ra, false, path).unwrap_or_default();
            let lmap: HashMap<&Step, &Value> = lhs.iter().map(|(s, v)| (s, *v)).collect();
            let rmap: HashMap<&Step, &Value> = rhs.iter().map(|(s, v)| (s, *v)).collect();
            let mut steps: Vec<&Step> = lhs.iter().map(|(s, _)| s).collect();
            steps.extend(rhs.iter().map(|(s, _)| s).filter(|s| !lmap.contains_key(s)));
            for s in steps {
                path.push(s.clone());
                compare_at(items, lmap.get(s).copied(), rmap.get(s).copied(), path, out);
                path.pop();
            }
        }
    }
    if l.is_none() {
        out.added.insert(path.clone());
    } else if r.is_none() {
        out.removed.insert(path.clone());
    }
}

// ---- removal ------------------------------------------------------------------------------

/// `obj` without the fields and list items in `paths` (each with everything below it). A map
/// or list emptied by the removal is removed from its parent too (the API server writes it
/// as `null`, which decoding drops).
pub fn remove_items(ty: Ty<'_>, obj: &Value, paths: &FieldSet) -> Value {
    remove_at(ty, obj, paths, &mut Vec::new()).unwrap_or(Value::Object(Map::new()))
}

fn under(paths: &FieldSet, path: &Path) -> bool {
    paths
        .range(path.clone()..)
        .next()
        .is_some_and(|p| p.starts_with(path))
}

fn remove_at(ty: Ty<'_>, v: &Value, paths: &FieldSet, path: &mut Path) -> Option<Value> {
    match (shape(ty, v), v) {
        (Shape::Map(ty), Value::Object(m)) if !m.is_empty() => {
            let mut out = Map::new();
            for (k, child) in m {
                path.push(Step::Field(k.clone()));
                if !paths.contains(path) {
                    let kept = if under(paths, path) {
                        remove_at(field(ty, k).0, child, paths, path).unwrap_or(Value::Null)
                    } else {
                        child.clone()
                    };
                    // Emptied by the removal: gone (the API server writes it as null).
                    if !kept.is_null() || child.is_null() {
                        out.insert(k.clone(), kept);
                    }
                }
                path.pop();
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        (Shape::List(keys, items), Value::Array(list)) if !list.is_empty() => {
            let mut out = Vec::new();
            for item in list {
                let Ok(step) = item_step(&keys, items, item) else {
                    out.push(item.clone());
                    continue;
                };
                path.push(step);
                if !paths.contains(path) {
                    if under(paths, path) {
                        if let Some(kept) = remove_at(items, item, paths, path) {
                            out.push(kept);
                        }
                    } else {
                        out.push(item.clone());
                    }
                }
                path.pop();
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
        _ => Some(v.clone()),
    }
}

// ---- paths --------------------------------------------------------------------------------

/// Human path as Kubernetes prints it in conflicts: `.spec.containers[name="web"].image`.
pub fn display(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Field(f) => {
                out.push('.');
                out.push_str(f);
            }
            Step::Key(k) => {
                let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let inner: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push('[');
                out.push_str(&inner.join(","));
                out.push(']');
            }
            Step::Value(v) => {
                out.push_str("[=");
                out.push_str(v);
                out.push(']');
            }
        }
    }
    out
}

/// Encodes a set as FieldsV1 (`{"f:spec":{"f:replicas":{}}}`, `"."` marks an owned inner node).
pub fn to_fields_v1(set: &FieldSet) -> Value {
    #[derive(Default)]
    struct Node {
        owned: bool,
        children: BTreeMap<String, Node>,
    }
    fn encode(node: &Node) -> Value {
        let mut map: Map<String, Value> = node
            .children
            .iter()
            .map(|(k, c)| (k.clone(), encode(c)))
            .collect();
        if node.owned && !map.is_empty() {
            map.insert(".".into(), Value::Object(Map::new()));
        }
        Value::Object(map)
    }
    let mut root = Node::default();
    for path in set {
        let mut node = &mut root;
        for step in path {
            let key = match step {
                Step::Field(f) => format!("f:{f}"),
                Step::Key(k) => format!("k:{k}"),
                Step::Value(v) => format!("v:{v}"),
            };
            node = node.children.entry(key).or_default();
        }
        node.owned = true;
    }
    encode(&root)
}

/// Decodes FieldsV1 back into a set.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    let mut set = FieldSet::new();
    fn go(v: &Value, path: &mut Path, set: &mut FieldSet) {
        let Some(map) = v.as_object() else { return };
        if map.is_empty() && !path.is_empty() {
            set.insert(path.clone());
            return;
        }
        for (k, child) in map {
            let step = if k == "." {
                set.insert(path.clone());
                continue;
            } else if let Some(f) = k.strip_prefix("f:") {
                Step::Field(f.to_owned())
            } else if let Some(key) = k.strip_prefix("k:") {
                // Normalised (sorted keys, no spaces) so that it compares with computed keys.
                match serde_json::from_str::<Value>(key) {
                    Ok(parsed) => Step::Key(parsed.to_string()),
                    Err(_) => Step::Key(key.to_owned()),
                }
            } else if let Some(value) = k.strip_prefix("v:") {
                match serde_json::from_str::<Value>(value) {
                    Ok(parsed) => Step::Value(parsed.to_string()),
                    Err(_) => Step::Value(value.to_owned()),
                }
            } else {
                continue;
            };
            path.push(step);
            go(child, path, set);
            path.pop();
        }
    }
    go(v, &mut Vec::new(), &mut set);
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::openapi;
    use serde_json::json;

    fn deployment_schema() -> std::sync::Arc<crate::cluster::schema::GroupVersionSchema> {
        openapi::builtin_schema("apps/v1").unwrap()
    }

    fn deploy(image: &str, replicas: Option<i64>) -> Value {
        let mut d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "web", "image": image,
                "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}],
                "volumeMounts": [{"name": "conf", "mountPath": "/etc/app/a.conf", "subPath": "a.conf"},
                                 {"name": "conf", "mountPath": "/etc/app/b.conf", "subPath": "b.conf"}]}]}}}
        });
        if let Some(r) = replicas {
            d["spec"]["replicas"] = json!(r);
        }
        d
    }

    fn shown(set: &FieldSet) -> Vec<String> {
        set.iter().map(|p| display(p)).collect()
    }

    #[test]
    fn field_sets_follow_the_schema_list_keys_and_atomic_maps() {
        let schemas = deployment_schema();
        let ty = schemas.kind("Deployment");
        let set = field_set(ty, &deploy("nginx:1", Some(2)), true).unwrap();
        let s = shown(&set);
        for want in [
            ".spec.replicas",
            ".spec.selector",
            r#".spec.template.spec.containers[name="web"]"#,
            r#".spec.template.spec.containers[name="web"].ports[containerPort=80,protocol="TCP"]"#,
            r#".spec.template.spec.containers[name="web"].ports[containerPort=53,protocol="UDP"].protocol"#,
            r#".spec.template.spec.containers[name="web"].volumeMounts[mountPath="/etc/app/a.conf"].subPath"#,
            r#".spec.template.spec.containers[name="web"].volumeMounts[mountPath="/etc/app/b.conf"]"#,
            ".metadata.labels.app",
        ] {
            assert!(s.contains(&want.to_string()), "{want} not in {s:?}");
        }
        // The selector is an atomic map: its keys are not fields of their own.
        assert!(!s.iter().any(|p| p.starts_with(".spec.selector.")));
        // The port's defaulted protocol is part of its key but not a field the applier set.
        assert!(!s.contains(
            &r#".spec.template.spec.containers[name="web"].ports[containerPort=80,protocol="TCP"].protocol"#
                .to_string()
        ));
    }

    #[test]
    fn undeclared_fields_and_wrong_types_do_not_make_a_typed_object() {
        let schemas = deployment_schema();
        let ty = schemas.kind("Deployment");
        let mut d = deploy("nginx:1", None);
        d["spec"]["foo"] = json!(1);
        assert_eq!(
            field_set(ty, &d, true).unwrap_err(),
            ".spec.foo: field not declared in schema"
        );
        let mut d = deploy("nginx:1", None);
        d["spec"]["replicas"] = json!("2");
        assert_eq!(
            field_set(ty, &d, true).unwrap_err(),
            ".spec.replicas: expected numeric (int or float), got string"
        );
    }

    #[test]
    fn fields_v1_round_trips() {
        let schemas = deployment_schema();
        let set = field_set(
            schemas.kind("Deployment"),
            &deploy("nginx:1", Some(2)),
            true,
        )
        .unwrap();
        let encoded = to_fields_v1(&set);
        assert_eq!(encoded["f:spec"]["f:replicas"], json!({}));
        assert_eq!(
            encoded["f:spec"]["f:template"]["f:spec"]["f:containers"][r#"k:{"name":"web"}"#]["."],
            json!({})
        );
        assert_eq!(from_fields_v1(&encoded), set);
    }

    #[test]
    fn merge_keeps_fields_the_applier_does_not_mention_and_items_in_place() {
        let schemas = deployment_schema();
        let ty = schemas.kind("Deployment");
        let mut live = deploy("nginx:1", Some(2));
        live["spec"]["template"]["spec"]["containers"][0]["resources"] =
            json!({"limits": {"cpu": "1"}});
        live["spec"]["template"]["spec"]["containers"][0]["env"] = json!([{"name": "A", "value": "1"}, {"name": "LIVE", "value": "x"}, {"name": "B", "value": "2"}]);
        let mut applied = deploy("nginx:2", None);
        applied["spec"]["template"]["spec"]["containers"][0]["env"] = json!([{"name": "B", "value": "3"}, {"name": "A", "value": "1"}, {"name": "C", "value": "4"}]);
        let merged = merge(ty, &live, &applied).unwrap();
        let c = &merged["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(merged["spec"]["replicas"], json!(2));
        assert_eq!(c["image"], json!("nginx:2"));
        assert_eq!(c["resources"]["limits"]["cpu"], json!("1"));
        let names: Vec<&str> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["LIVE", "B", "A", "C"]);
    }

    #[test]
    fn comparisons_mark_added_maps_and_items_but_not_existing_structs() {
        let schemas = deployment_schema();
        let ty = schemas.kind("Deployment");
        let old = json!({"metadata": {}, "spec": {"template": {"metadata": {}, "spec": {}}}});
        let new = deploy("nginx:1", None);
        let c = compare(ty, &old, &new);
        let added = shown(&c.added);
        assert!(added.contains(&".metadata.labels".to_string()));
        assert!(added.contains(&".spec.template.spec.containers".to_string()));
        assert!(!added.contains(&".spec".to_string()));
        assert!(!added.contains(&".spec.template".to_string()));
        let c = compare(ty, &new, &deploy("nginx:2", None));
        assert_eq!(
            shown(&c.modified),
            [r#".spec.template.spec.containers[name="web"].image"#]
        );
    }

    #[test]
    fn removing_items_drops_containers_left_empty() {
        let schemas = deployment_schema();
        let ty = schemas.kind("Deployment");
        let d = deploy("nginx:1", Some(2));
        let label: Path = vec![
            Step::Field("metadata".into()),
            Step::Field("labels".into()),
            Step::Field("app".into()),
        ];
        let mount: Path = field_set(ty, &d, true)
            .unwrap()
            .into_iter()
            .find(|p| display(p).ends_with(r#"[mountPath="/etc/app/a.conf"]"#))
            .unwrap();
        let out = remove_items(ty, &d, &[label, mount].into());
        assert!(out["metadata"].get("labels").is_none());
        let mounts = &out["spec"]["template"]["spec"]["containers"][0]["volumeMounts"];
        assert_eq!(mounts.as_array().unwrap().len(), 1);
        assert_eq!(mounts[0]["subPath"], json!("b.conf"));
    }
}
