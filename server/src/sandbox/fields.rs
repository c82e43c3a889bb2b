//! Field sets for server-side apply: which fields a manager owns (`managedFields`, FieldsV1),
//! merging an applied configuration into the live object, conflicts and removal.
//!
//! Lists of maps whose items all carry `name` (else `containerPort`, else `port`) are treated
//! as associative lists keyed by that field, as Kubernetes does for containers, env, volumes
//! and ports; any other list is atomic (owned and replaced as a whole).

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// A map key.
    Field(String),
    /// An item of an associative list, identified by its key map as JSON, e.g. `{"name":"web"}`.
    Key(String),
}

/// A path from the object root.
pub type Path = Vec<Step>;
/// A set of owned paths.
pub type FieldSet = BTreeSet<Path>;

const LIST_KEYS: [&str; 3] = ["name", "containerPort", "port"];

/// The key field of an associative list, or `None` for an atomic list.
fn list_key(items: &[Value]) -> Option<&'static str> {
    if items.is_empty() {
        return None;
    }
    LIST_KEYS.into_iter().find(|key| {
        items
            .iter()
            .all(|i| i.get(*key).is_some_and(|k| k.is_string() || k.is_number()))
    })
}

fn item_key(item: &Value, key: &str) -> String {
    let mut m = Map::new();
    m.insert(key.to_owned(), item[key].clone());
    Value::Object(m).to_string()
}

/// Top-level and metadata fields that are never owned by anyone.
fn ignored(path: &[Step]) -> bool {
    match path {
        [Step::Field(f)] => matches!(f.as_str(), "apiVersion" | "kind"),
        [Step::Field(m), Step::Field(f)] if m == "metadata" => !matches!(
            f.as_str(),
            "labels" | "annotations" | "finalizers" | "ownerReferences"
        ),
        _ => false,
    }
}

/// Every path `obj` sets: leaves (scalars, atomic lists, empty maps) and associative-list items.
pub fn field_set(obj: &Value) -> FieldSet {
    let mut set = FieldSet::new();
    walk(obj, &mut Vec::new(), &mut set);
    set
}

fn walk(v: &Value, path: &mut Path, set: &mut FieldSet) {
    if ignored(path) {
        return;
    }
    match v {
        Value::Object(map) if !map.is_empty() || path.is_empty() => {
            for (k, child) in map {
                path.push(Step::Field(k.clone()));
                walk(child, path, set);
                path.pop();
            }
        }
        Value::Array(items) => match list_key(items) {
            Some(key) => {
                for item in items {
                    path.push(Step::Key(item_key(item, key)));
                    set.insert(path.clone());
                    walk(item, path, set);
                    path.pop();
                }
            }
            None => {
                set.insert(path.clone());
            }
        },
        _ => {
            set.insert(path.clone());
        }
    }
}

/// The value at `path`, if present.
pub fn get<'a>(obj: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let mut cur = obj;
    for step in path {
        cur = match step {
            Step::Field(f) => cur.get(f)?,
            Step::Key(k) => find_item(cur.as_array()?, k)?,
        };
    }
    Some(cur)
}

fn find_item<'a>(items: &'a [Value], key: &str) -> Option<&'a Value> {
    let key: Map<String, Value> = serde_json::from_str(key).ok()?;
    items
        .iter()
        .find(|i| key.iter().all(|(k, v)| i.get(k) == Some(v)))
}

/// Whether `path` names a leaf of `obj` (compared by value), as opposed to a map or list item.
fn is_leaf_in(obj: &Value, path: &[Step]) -> bool {
    !matches!(path.last(), Some(Step::Key(_)))
        && match get(obj, path) {
            Some(Value::Object(m)) => m.is_empty(),
            Some(_) => true,
            None => false,
        }
}

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
        }
    }
    out
}

/// Merges an applied configuration into the live object: maps merge key by key, associative
/// lists merge item by item (applied order first, then live-only items), everything else is
/// replaced by the applied value.
pub fn merge(live: &Value, applied: &Value) -> Value {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            let mut out = l.clone();
            for (k, av) in a {
                let merged = match l.get(k) {
                    Some(lv) => merge(lv, av),
                    None => av.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(a)) => match list_key(a) {
            Some(key) if list_key(l).is_some() || l.is_empty() => {
                let mut out: Vec<Value> = a
                    .iter()
                    .map(|ai| match find_item(l, &item_key(ai, key)) {
                        Some(li) => merge(li, ai),
                        None => ai.clone(),
                    })
                    .collect();
                for li in l {
                    if li.get(key).is_some() && find_item(a, &item_key(li, key)).is_none() {
                        out.push(li.clone());
                    }
                }
                Value::Array(out)
            }
            _ => applied.clone(),
        },
        _ => applied.clone(),
    }
}

/// Removes `path` from `obj`, then any map or list left empty on the way up that nobody owns.
pub fn remove(obj: &mut Value, path: &[Step], owned: &FieldSet) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    if let Some(container) = get_mut(obj, parent) {
        match (last, container) {
            (Step::Field(f), Value::Object(m)) => {
                m.remove(f);
            }
            (Step::Key(k), Value::Array(items)) => {
                if let Some(pos) =
                    find_item(items, k).and_then(|found| items.iter().position(|i| i == found))
                {
                    items.remove(pos);
                }
            }
            _ => return,
        }
    }
    let parent_empty = match get(obj, parent) {
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    };
    if parent.len() > 1 && parent_empty && !owned.contains(parent) {
        remove(obj, parent, owned);
    }
}

fn get_mut<'a>(obj: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    let mut cur = obj;
    for step in path {
        cur = match step {
            Step::Field(f) => cur.get_mut(f)?,
            Step::Key(k) => {
                let items = cur.as_array_mut()?;
                let key: Map<String, Value> = serde_json::from_str(k).ok()?;
                items
                    .iter_mut()
                    .find(|i| key.iter().all(|(kk, v)| i.get(kk) == Some(v)))?
            }
        };
    }
    Some(cur)
}

/// Leaf paths of `new` whose value differs from `old` (or that `old` lacks).
pub fn changed_leaves(old: &Value, new: &Value) -> FieldSet {
    field_set(new)
        .into_iter()
        .filter(|p| !is_leaf_in(new, p) || get(old, p) != get(new, p))
        .filter(|p| is_leaf_in(new, p) || get(old, p).is_none())
        .collect()
}

/// Leaf paths of `applied` owned in `other` whose live value differs from the applied one.
pub fn conflicts(
    live: &Value,
    applied: &Value,
    applied_set: &FieldSet,
    other: &FieldSet,
) -> Vec<Path> {
    applied_set
        .intersection(other)
        .filter(|p| is_leaf_in(applied, p) && get(live, p) != get(applied, p))
        .cloned()
        .collect()
}

/// Encodes a set as FieldsV1 (`{"f:spec":{"f:replicas":{}}}`, `"."` marks an owned inner node).
pub fn to_fields_v1(set: &FieldSet) -> Value {
    #[derive(Default)]
    struct Node {
        owned: bool,
        children: std::collections::BTreeMap<String, Node>,
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
            if k == "." {
                set.insert(path.clone());
            } else if let Some(f) = k.strip_prefix("f:") {
                path.push(Step::Field(f.to_owned()));
                go(child, path, set);
                path.pop();
            } else if let Some(key) = k.strip_prefix("k:") {
                path.push(Step::Key(key.to_owned()));
                go(child, path, set);
                path.pop();
            }
        }
    }
    go(v, &mut Vec::new(), &mut set);
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(image: &str, replicas: Option<i64>) -> Value {
        let mut d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}
        });
        if let Some(r) = replicas {
            d["spec"]["replicas"] = json!(r);
        }
        d
    }

    #[test]
    fn field_sets_cover_leaves_and_keyed_items_but_not_identity() {
        let set = field_set(&deploy("nginx:1", Some(2)));
        let shown: Vec<String> = set.iter().map(|p| display(p)).collect();
        assert!(shown.contains(&".spec.replicas".to_string()), "{shown:?}");
        assert!(
            shown.contains(&r#".spec.template.spec.containers[name="web"]"#.to_string()),
            "{shown:?}"
        );
        assert!(shown.contains(&r#".spec.template.spec.containers[name="web"].image"#.to_string()));
        assert!(shown.contains(&".metadata.labels.app".to_string()));
        assert!(!shown.iter().any(|s| s == ".metadata.name" || s == ".kind"));
    }

    #[test]
    fn fields_v1_round_trips() {
        let set = field_set(&deploy("nginx:1", Some(2)));
        let encoded = to_fields_v1(&set);
        assert_eq!(encoded["f:spec"]["f:replicas"], json!({}));
        assert_eq!(
            encoded["f:spec"]["f:template"]["f:spec"]["f:containers"][r#"k:{"name":"web"}"#]["."],
            json!({})
        );
        assert_eq!(from_fields_v1(&encoded), set);
    }

    #[test]
    fn merge_keeps_fields_the_applier_does_not_mention() {
        let mut live = deploy("nginx:1", Some(2));
        live["spec"]["template"]["spec"]["containers"][0]["resources"] =
            json!({"limits": {"cpu": "1"}});
        let merged = merge(&live, &deploy("nginx:2", None));
        assert_eq!(merged["spec"]["replicas"], json!(2));
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"][0]["image"],
            json!("nginx:2")
        );
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            json!("1")
        );
    }

    #[test]
    fn conflicts_are_owned_leaves_with_a_different_value() {
        let live = deploy("nginx:1", Some(3));
        let applied = deploy("nginx:1", Some(2));
        let mine = field_set(&applied);
        let theirs: FieldSet = [vec![
            Step::Field("spec".into()),
            Step::Field("replicas".into()),
        ]]
        .into();
        let found = conflicts(&live, &applied, &mine, &theirs);
        assert_eq!(
            found.iter().map(|p| display(p)).collect::<Vec<_>>(),
            [".spec.replicas"]
        );
        assert!(conflicts(&live, &deploy("nginx:1", Some(3)), &mine, &theirs).is_empty());
    }

    #[test]
    fn removing_the_last_child_removes_unowned_parents() {
        let mut obj = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": {"y": 1}}});
        remove(
            &mut obj,
            &[
                Step::Field("spec".into()),
                Step::Field("x".into()),
                Step::Field("y".into()),
            ],
            &FieldSet::new(),
        );
        assert_eq!(obj["spec"], json!({}));
        remove(
            &mut obj,
            &[
                Step::Field("metadata".into()),
                Step::Field("labels".into()),
                Step::Field("a".into()),
            ],
            &FieldSet::new(),
        );
        assert!(obj["metadata"].get("labels").is_none());
    }
}
