//! Desired vs live, as pure functions: per-resource status (Synced / OutOfSync / Missing /
//! Extraneous) and field-level changes. Only fields present in the desired object are compared,
//! so everything the API server adds (status, managedFields, uid, defaults) is ignored; ignore
//! rules (JSON pointers per group/kind/name) drop more. Live content the desired object does not
//! name never leaves this module: where the desired and live types differ the live side reads as
//! a summary (`(object with 3 keys)`), lists of maps show only the fields the desired items name,
//! and a changed Secret value (`data`, `stringData`, the last-applied annotation) reads "(changed)".

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::cluster::schema::{ListType, Node};

pub mod predicted;

/// Identity of a Kubernetes object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectRef {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    /// The identity of an object (empty strings for what it lacks).
    pub fn of(obj: &Value) -> Self {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        Self {
            group: api_version
                .rsplit_once('/')
                .map_or("", |(g, _)| g)
                .to_owned(),
            kind: obj["kind"].as_str().unwrap_or_default().to_owned(),
            namespace: obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            name: obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        }
    }

    fn is_secret(&self) -> bool {
        self.group.is_empty() && self.kind == "Secret"
    }
}

/// How one resource compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ResourceStatus {
    Synced,
    OutOfSync,
    /// In Git, not in the cluster.
    Missing,
    /// In Tidemark's inventory for the application, no longer in Git, still in the cluster.
    Extraneous,
}

/// One differing field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// `.spec.template.spec.containers[name=web].image`
    pub path: String,
    /// RFC 6901 pointer into the desired object (ignore rules match on it).
    pub pointer: String,
    pub desired: Option<Value>,
    pub live: Option<Value>,
}

/// The comparison of one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceDiff {
    pub object: ObjectRef,
    pub status: ResourceStatus,
    pub changes: Vec<FieldChange>,
    /// How the resource was compared: [`DRY_RUN`], or [`PURE`] with the reason a dry run was
    /// not possible; empty for Missing and Extraneous resources.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub compared_by: String,
}

/// `compared_by` of a server-side apply dry run compared with the live object.
pub const DRY_RUN: &str = "server-side apply dry run";
/// `compared_by` prefix of an object of a Git-declared application outside its project's
/// bounds: never applied and not read (so neither drift nor in sync).
pub const OUTSIDE_BOUNDS: &str = "not compared, outside the project's bounds";
/// `compared_by` prefix of the desired object compared with the live one field by field.
pub const PURE: &str = "desired fields only";

/// Fields to leave out of comparisons, for the objects the rule selects (`None` = any).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IgnoreRule {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    /// JSON pointers, e.g. `/spec/replicas`; a pointer also covers everything below it.
    pub json_pointers: Vec<String>,
}

impl IgnoreRule {
    /// Whether the rule applies to `o`.
    pub fn selects(&self, o: &ObjectRef) -> bool {
        self.group.as_ref().is_none_or(|g| *g == o.group)
            && self.kind.as_ref().is_none_or(|k| *k == o.kind)
            && self.name.as_ref().is_none_or(|n| *n == o.name)
    }
}

/// Compares every desired object with its live counterpart, and reports inventory objects that
/// left Git but remain live. Sorted by object identity.
pub fn compare(
    desired: &[Value],
    live: &BTreeMap<ObjectRef, Value>,
    inventory: &BTreeSet<ObjectRef>,
    ignore: &[IgnoreRule],
) -> Vec<ResourceDiff> {
    let mut out = Vec::with_capacity(desired.len());
    let mut wanted = BTreeSet::new();
    for d in desired {
        let object = ObjectRef::of(d);
        wanted.insert(object.clone());
        let pointers: Vec<&str> = ignore
            .iter()
            .filter(|r| r.selects(&object))
            .flat_map(|r| r.json_pointers.iter().map(String::as_str))
            .collect();
        let diff = match live.get(&object) {
            None => ResourceDiff {
                object,
                status: ResourceStatus::Missing,
                changes: Vec::new(),
                compared_by: String::new(),
            },
            Some(l) => {
                let changes = diff_object(&object, d, l, &pointers);
                let status = if changes.is_empty() {
                    ResourceStatus::Synced
                } else {
                    ResourceStatus::OutOfSync
                };
                ResourceDiff {
                    object,
                    status,
                    changes,
                    compared_by: PURE.to_owned(),
                }
            }
        };
        out.push(diff);
    }
    for object in inventory
        .iter()
        .filter(|o| !wanted.contains(*o) && live.contains_key(*o))
    {
        out.push(ResourceDiff {
            object: object.clone(),
            status: ResourceStatus::Extraneous,
            changes: Vec::new(),
            compared_by: String::new(),
        });
    }
    out.sort_by(|a, b| a.object.cmp(&b.object));
    out
}

/// Field changes between one desired object and its live state, without a schema.
pub fn diff_object(
    object: &ObjectRef,
    desired: &Value,
    live: &Value,
    ignore: &[&str],
) -> Vec<FieldChange> {
    diff_fields(object, desired, live, None, ignore)
}

/// The pure compare of one resource: the fields the desired object names, compared with the
/// live object (list items matched by the keys `schema` declares; quantities by value; an
/// empty map or list in Git matches an absent live field, as the API server drops them).
/// `reason` says why no dry run was used; it is kept in `compared_by`.
pub fn pure(
    object: ObjectRef,
    desired: &Value,
    live: &Value,
    schema: Option<Node<'_>>,
    ignore: &[&str],
    reason: &str,
) -> ResourceDiff {
    let changes = diff_fields(&object, desired, live, schema, ignore);
    ResourceDiff {
        object,
        status: if changes.is_empty() {
            ResourceStatus::Synced
        } else {
            ResourceStatus::OutOfSync
        },
        changes,
        compared_by: format!("{PURE} ({reason})"),
    }
}

/// [`diff_object`] with the kind's schema, if known.
pub fn diff_fields(
    object: &ObjectRef,
    desired: &Value,
    live: &Value,
    schema: Option<Node<'_>>,
    ignore: &[&str],
) -> Vec<FieldChange> {
    let mut folded = if object.is_secret() {
        secret_as_data(desired)
    } else {
        desired.clone()
    };
    let tracked = live["metadata"]["annotations"]
        .get(crate::domain::tracking::TRACKING_ANNOTATION)
        .is_some();
    if let Some(meta) = folded
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .filter(|_| !tracked)
    {
        predicted::without_tracking(meta);
    }
    let desired = &folded;
    let mut changes = Vec::new();
    let mut path = Vec::new();
    walk(desired, Some(live), schema, &mut path, &mut changes);
    changes.retain(|c| !ignore.iter().any(|p| covers(p, &c.pointer)));
    if object.is_secret() {
        for c in &mut changes {
            if SECRET_POINTERS.iter().any(|p| covers(p, &c.pointer)) {
                c.desired = c
                    .desired
                    .as_ref()
                    .map(|_| Value::String("(changed)".into()));
                c.live = c.live.as_ref().map(|_| Value::String("(changed)".into()));
            }
        }
    }
    changes
}

/// Where a Secret keeps its values: `kubectl apply` copies the whole Secret, values included,
/// into the last-applied annotation.
const SECRET_POINTERS: [&str; 3] = [
    "/data",
    "/stringData",
    "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration",
];

/// Whether ignore pointer `p` covers `pointer` (equal, or a parent of it).
fn covers(p: &str, pointer: &str) -> bool {
    pointer == p || (pointer.starts_with(p) && pointer.as_bytes().get(p.len()) == Some(&b'/'))
}

/// One step of the path being walked; labels are only formatted when a change is reported.
#[derive(Clone)]
enum Seg<'a> {
    Key(&'a str),
    /// A list item, shown by its key fields (`name=web`).
    Item {
        index: usize,
        label: String,
    },
}

fn display(path: &[Seg<'_>]) -> (String, String) {
    let mut shown = String::new();
    let mut pointer = String::new();
    for s in path {
        match s {
            Seg::Key(k) => {
                shown.push('.');
                shown.push_str(k);
                pointer.push('/');
                pointer.push_str(&k.replace('~', "~0").replace('/', "~1"));
            }
            Seg::Item { index, label } => {
                shown.push_str(&format!("[{label}]"));
                pointer.push_str(&format!("/{index}"));
            }
        }
    }
    (shown, pointer)
}

fn push_change(
    path: &[Seg<'_>],
    desired: Option<&Value>,
    live: Option<&Value>,
    out: &mut Vec<FieldChange>,
) {
    let (path, pointer) = display(path);
    out.push(FieldChange {
        path,
        pointer,
        desired: desired.cloned(),
        live: live.cloned(),
    });
}

const LIST_KEYS: [&str; 3] = ["name", "containerPort", "port"];

fn list_key(items: &[Value]) -> Option<&'static str> {
    (!items.is_empty())
        .then(|| {
            LIST_KEYS.into_iter().find(|k| {
                items
                    .iter()
                    .all(|i| i.get(*k).is_some_and(|v| v.is_string() || v.is_number()))
            })
        })
        .flatten()
}

/// The key fields of a list's items: from the schema when there is one (`None` for atomic
/// lists and sets), else guessed from the names shared by every item (no schema published).
fn keys_of(items: &[Value], node: Option<Node<'_>>) -> Option<Vec<String>> {
    match node.and_then(|n| n.list_type()) {
        Some(ListType::Map(keys)) => items
            .iter()
            .all(|i| keys.iter().any(|k| i.get(k).is_some()))
            .then_some(keys),
        Some(_) => None,
        None if node.is_some() => None,
        None => list_key(items).map(|k| vec![k.to_owned()]),
    }
}

fn label(item: &Value, keys: &[String]) -> String {
    keys.iter()
        .filter_map(|k| {
            item.get(k).map(|v| {
                format!(
                    "{k}={}",
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                )
            })
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn is_empty_collection(v: &Value) -> bool {
    v.as_object().is_some_and(serde_json::Map::is_empty) || v.as_array().is_some_and(Vec::is_empty)
}

fn walk<'a>(
    desired: &'a Value,
    live: Option<&Value>,
    node: Option<Node<'_>>,
    path: &mut Vec<Seg<'a>>,
    out: &mut Vec<FieldChange>,
) {
    match (desired, live) {
        // The API server drops empty optional maps and lists (`nodeSelector: {}`, `args: []`)
        // and nulls (`creationTimestamp: null` in generated manifests).
        (d, None) if (is_empty_collection(d) || d.is_null()) && !path.is_empty() => {}
        (Value::Null, Some(_)) if !path.is_empty() => {}
        (_, None) => push_change(path, Some(desired), None, out),
        (Value::Object(d), Some(Value::Object(l))) => {
            for (k, dv) in d {
                if path.is_empty() && matches!(k.as_str(), "status") {
                    continue;
                }
                path.push(Seg::Key(k));
                walk(dv, l.get(k), node.and_then(|n| n.field(k)), path, out);
                path.pop();
            }
        }
        (Value::Array(d), Some(Value::Array(l))) => match keys_of(d, node) {
            Some(keys) => {
                let items = node.and_then(|n| n.items());
                for (index, item) in d.iter().enumerate() {
                    // Keys the desired item leaves out are defaulted by the server
                    // (`protocol: TCP`): match on the ones it names.
                    let matches = |other: &Value| {
                        keys.iter()
                            .filter_map(|k| item.get(k).map(|v| (k, v)))
                            .all(|(k, v)| other.get(k).is_some_and(|ov| same_scalar(v, ov)))
                    };
                    // Duplicate keys (accepted by the API server with a warning, refused by
                    // server-side apply): the n-th desired item of a key pairs with the n-th
                    // live one.
                    let nth = d[..index].iter().filter(|e| matches(e)).count();
                    let counterpart = l.iter().filter(|li| matches(li)).nth(nth);
                    path.push(Seg::Item {
                        index,
                        label: label(item, &keys),
                    });
                    walk(item, counterpart, items, path, out);
                    path.pop();
                }
            }
            None => {
                let items = node.and_then(|n| n.items());
                let equal =
                    d.len() == l.len() && d.iter().zip(l).all(|(a, b)| contained(a, b, items));
                if !equal {
                    push_change(
                        path,
                        Some(desired),
                        live.map(|l| shape(desired, l)).as_ref(),
                        out,
                    );
                }
            }
        },
        (d, Some(l)) => {
            let same = if node.is_some_and(|n| n.is_quantity()) {
                same_quantity(d, l)
            } else {
                same_scalar(d, l)
            };
            if !same {
                push_change(path, Some(d), Some(&masked(d, l)), out);
            }
        }
    }
}

/// Whether two `resource.Quantity` values are the same amount (`1000m` = `1`, `1024Mi` =
/// `1Gi`); values that do not parse compare as written.
fn same_quantity(a: &Value, b: &Value) -> bool {
    match (quantity(a), quantity(b)) {
        (Some(x), Some(y)) => x == y,
        _ => same_scalar(a, b),
    }
}

/// A quantity as an exact fraction: (numerator, denominator), reduced.
fn quantity(v: &Value) -> Option<(i128, i128)> {
    let text = match v {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (neg, number) = match number.strip_prefix('-') {
        Some(n) => (true, n),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() || whole.len() + frac.len() > 30 {
        return None;
    }
    let digits: i128 = format!("{whole}{frac}").parse().ok()?;
    let (mut num, mut den) = (digits, 10i128.checked_pow(u32::try_from(frac.len()).ok()?)?);
    let pow = |b: i128, e: u32| b.checked_pow(e);
    let (mul, div) = match suffix {
        "" => (1, 1),
        "n" => (1, pow(10, 9)?),
        "u" => (1, pow(10, 6)?),
        "m" => (1, 1000),
        "k" => (1000, 1),
        "M" => (pow(10, 6)?, 1),
        "G" => (pow(10, 9)?, 1),
        "T" => (pow(10, 12)?, 1),
        "P" => (pow(10, 15)?, 1),
        "E" => (pow(10, 18)?, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        s if s.starts_with(['e', 'E']) => {
            let e: i32 = s[1..].parse().ok()?;
            if e >= 0 {
                (pow(10, e.unsigned_abs())?, 1)
            } else {
                (1, pow(10, e.unsigned_abs())?)
            }
        }
        _ => return None,
    };
    num = num.checked_mul(mul)?;
    den = den.checked_mul(div)?;
    let g = gcd(num, den);
    if neg {
        num = -num;
    }
    Some((num / g, den / g))
}

fn gcd(a: i128, b: i128) -> i128 {
    let (mut a, mut b) = (a.abs(), b.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// The live value as a change may show it: itself when it is a scalar comparable with the
/// desired one, a summary of its type and size otherwise (never a subtree the desired object
/// did not name).
fn masked(desired: &Value, live: &Value) -> Value {
    let comparable = |v: &Value| matches!(v, Value::String(_) | Value::Number(_));
    let same_type = std::mem::discriminant(desired) == std::mem::discriminant(live);
    if !live.is_object()
        && !live.is_array()
        && (same_type || (comparable(desired) && comparable(live)))
    {
        live.clone()
    } else {
        summary(live)
    }
}

/// What a value is, without what it holds: `(object with 3 keys)`, `(list of 2 items)`.
fn summary(v: &Value) -> Value {
    let plural = |n: usize, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    Value::String(match v {
        Value::Object(m) => format!("(object with {})", plural(m.len(), "key")),
        Value::Array(a) => format!("(list of {})", plural(a.len(), "item")),
        Value::String(_) => "(string)".to_owned(),
        Value::Number(_) => "(number)".to_owned(),
        Value::Bool(_) => "(boolean)".to_owned(),
        Value::Null => "(null)".to_owned(),
    })
}

/// A live value cut to the shape of its desired counterpart: maps keep only the keys the
/// desired map names, list items follow the desired item at their index (extra items show
/// only if scalar), mismatched types read as a summary.
fn shape(desired: &Value, live: &Value) -> Value {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => Value::Object(
            l.iter()
                .filter_map(|(k, lv)| d.get(k).map(|dv| (k.clone(), shape(dv, lv))))
                .collect(),
        ),
        (Value::Array(d), Value::Array(l)) => Value::Array(
            l.iter()
                .enumerate()
                .map(|(i, lv)| match d.get(i) {
                    Some(dv) => shape(dv, lv),
                    None if lv.is_object() || lv.is_array() => summary(lv),
                    None => lv.clone(),
                })
                .collect(),
        ),
        _ => masked(desired, live),
    }
}

/// Whether every field of `desired` is present and equal in `live` (lists of maps compare
/// their items this way too).
fn contained(desired: &Value, live: &Value, node: Option<Node<'_>>) -> bool {
    let mut changes = Vec::new();
    walk(desired, Some(live), node, &mut Vec::new(), &mut changes);
    changes.is_empty()
}

fn same_scalar(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        // YAML authors write `"80"` where the API stores 80 (and the reverse for strings).
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) => {
            n.to_string() == *s
        }
        _ => a == b,
    }
}

/// A Secret with `stringData` folded into base64 `data`, as the API server stores it (a
/// `stringData` or `data` that is not a map is left as written).
pub fn secret_as_data(desired: &Value) -> Value {
    let mut d = desired.clone();
    let Some(m) = d.as_object_mut() else {
        return d;
    };
    // A `stringData` or `data` that is not a map stays as written (and differs from the live one).
    let foldable = m.get("stringData").is_some_and(Value::is_object)
        && m.get("data").is_none_or(|v| v.is_object() || v.is_null());
    if !foldable {
        return d;
    }
    if let Some(Value::Object(string_data)) = m.remove("stringData") {
        let data = m
            .entry("data")
            .and_modify(|v| {
                if v.is_null() {
                    *v = Value::Object(serde_json::Map::new());
                }
            })
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if let Some(data) = data.as_object_mut() {
            for (k, v) in string_data {
                let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                data.insert(k, Value::String(base64(text.as_bytes())));
            }
        }
    }
    d
}

/// Standard base64 (with padding), as Secret `data` values are stored.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(image: &str, replicas: i64) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 80}]}]}}}})
    }

    fn live_of(desired: &Value) -> Value {
        // What an API server returns: desired plus server-set and defaulted fields.
        let mut l = desired.clone();
        l["metadata"]["uid"] = json!("u-1");
        l["metadata"]["resourceVersion"] = json!("42");
        l["metadata"]["managedFields"] = json!([{"manager": "tidemark"}]);
        l["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] =
            json!("/dev/termination-log");
        l["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"] = json!("TCP");
        l["spec"]["progressDeadlineSeconds"] = json!(600);
        l["status"] = json!({"availableReplicas": 2});
        l
    }

    fn one(desired: Value, live: Option<Value>, ignore: &[IgnoreRule]) -> ResourceDiff {
        let mut map = BTreeMap::new();
        if let Some(l) = live {
            map.insert(ObjectRef::of(&l), l);
        }
        compare(&[desired], &map, &BTreeSet::new(), ignore).remove(0)
    }

    #[test]
    fn server_set_and_defaulted_fields_are_not_drift() {
        let d = deploy("nginx:1", 2);
        let r = one(d.clone(), Some(live_of(&d)), &[]);
        assert_eq!(r.status, ResourceStatus::Synced, "{:?}", r.changes);
    }

    #[test]
    fn changed_fields_are_reported_with_paths_and_values() {
        let d = deploy("nginx:2", 3);
        let r = one(d, Some(live_of(&deploy("nginx:1", 2))), &[]);
        assert_eq!(r.status, ResourceStatus::OutOfSync);
        let paths: Vec<(&str, &str)> = r
            .changes
            .iter()
            .map(|c| (c.path.as_str(), c.pointer.as_str()))
            .collect();
        assert_eq!(
            paths,
            [
                (".spec.replicas", "/spec/replicas"),
                (
                    ".spec.template.spec.containers[name=web].image",
                    "/spec/template/spec/containers/0/image"
                ),
            ]
        );
        assert_eq!(r.changes[1].desired, Some(json!("nginx:2")));
        assert_eq!(r.changes[1].live, Some(json!("nginx:1")));
    }

    #[test]
    fn missing_and_extraneous_resources() {
        let d = deploy("nginx:1", 1);
        assert_eq!(one(d.clone(), None, &[]).status, ResourceStatus::Missing);

        let old = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "old", "namespace": "shop"}});
        let live: BTreeMap<_, _> = [
            (ObjectRef::of(&old), old.clone()),
            (ObjectRef::of(&d), live_of(&d)),
        ]
        .into();
        let inventory: BTreeSet<_> = [ObjectRef::of(&old), ObjectRef::of(&d)].into();
        let statuses: Vec<_> = compare(&[d], &live, &inventory, &[])
            .into_iter()
            .map(|r| (r.object.name, r.status))
            .collect();
        assert_eq!(
            statuses,
            [
                ("old".to_string(), ResourceStatus::Extraneous),
                ("web".to_string(), ResourceStatus::Synced)
            ]
        );
    }

    #[test]
    fn ignore_rules_drop_fields_for_the_objects_they_select() {
        let rule = IgnoreRule {
            kind: Some("Deployment".into()),
            json_pointers: vec!["/spec/replicas".into()],
            ..Default::default()
        };
        let r = one(
            deploy("nginx:1", 5),
            Some(live_of(&deploy("nginx:1", 2))),
            &[rule],
        );
        assert_eq!(r.status, ResourceStatus::Synced);
        let other = IgnoreRule {
            name: Some("not-web".into()),
            json_pointers: vec!["/spec".into()],
            ..Default::default()
        };
        assert_eq!(
            one(
                deploy("nginx:1", 5),
                Some(live_of(&deploy("nginx:1", 2))),
                &[other]
            )
            .status,
            ResourceStatus::OutOfSync
        );
    }

    #[test]
    fn secret_values_never_appear_in_a_diff() {
        let desired = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop"},
                             "stringData": {"password": "hunter2", "user": "app"}});
        let live = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop"},
                          "data": {"password": base64(b"old-secret"), "user": base64(b"app")}});
        let r = one(desired.clone(), Some(live), &[]);
        assert_eq!(r.status, ResourceStatus::OutOfSync);
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            !text.contains("hunter2")
                && !text.contains(&base64(b"hunter2"))
                && !text.contains(&base64(b"old-secret")),
            "{text}"
        );
        assert_eq!(r.changes.len(), 1);
        assert_eq!(r.changes[0].path, ".data.password");
        assert_eq!(r.changes[0].desired, Some(json!("(changed)")));

        let same = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop"},
                          "data": {"password": base64(b"hunter2"), "user": base64(b"app")}});
        assert_eq!(one(desired, Some(same), &[]).status, ResourceStatus::Synced);
    }

    /// A live Secret as `kubectl apply` leaves it: its values, and the whole object again in
    /// the last-applied annotation.
    fn applied_secret() -> Value {
        let last = r#"{"apiVersion":"v1","kind":"Secret","data":{"password":"aHVudGVyMg=="}}"#;
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "db", "namespace": "payments", "uid": "u-1",
                            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last, "team": "pay"},
                            "labels": {"app": "db"}},
               "data": {"password": "aHVudGVyMg=="}, "type": "Opaque"})
    }

    fn secret(extra: Value) -> Value {
        let mut s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "payments"}});
        for (k, v) in extra.as_object().unwrap() {
            if k == "metadata" {
                for (mk, mv) in v.as_object().unwrap() {
                    s["metadata"][mk] = mv.clone();
                }
            } else {
                s[k] = v.clone();
            }
        }
        s
    }

    fn assert_no_live_values(r: &ResourceDiff) {
        let text = serde_json::to_string(r).unwrap();
        for leak in [
            "aHVudGVyMg",
            "last-applied-configuration\":",
            "\\\"kind",
            "Opaque",
            "pay\"",
            "u-1",
        ] {
            assert!(!text.contains(leak), "{leak} in {text}");
        }
    }

    #[test]
    fn a_scalar_where_the_live_object_has_a_map_shows_a_summary_not_the_map() {
        for (hostile, pointer, summary) in [
            (
                json!({"metadata": {"annotations": "x"}}),
                "/metadata/annotations",
                "(object with 2 keys)",
            ),
            (
                json!({"metadata": {"annotations": ["x"]}}),
                "/metadata/annotations",
                "(object with 2 keys)",
            ),
            (
                json!({"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": {"a": 1}}}}),
                "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration",
                "(changed)",
            ),
            (
                json!({"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x"}}}),
                "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration",
                "(changed)",
            ),
            (json!({"data": "x"}), "/data", "(changed)"),
            (
                json!({"data": null, "stringData": {"a": "b"}}),
                "/data/a",
                "(changed)",
            ),
            (
                json!({"data": 1, "stringData": {"a": "b"}}),
                "/data",
                "(changed)",
            ),
            (json!({"stringData": "x"}), "/stringData", "(changed)"),
        ] {
            let r = one(secret(hostile.clone()), Some(applied_secret()), &[]);
            assert_no_live_values(&r);
            let c = r
                .changes
                .iter()
                .find(|c| c.pointer == pointer)
                .unwrap_or_else(|| panic!("{hostile}: {:?}", r.changes));
            match c.live.as_ref() {
                None => assert_eq!(c.desired, Some(json!(summary)), "{hostile}"),
                Some(live) => assert_eq!(live, &json!(summary), "{hostile}"),
            }
        }
        // Any kind: a ConfigMap's data, a Deployment's containers.
        let cm = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data});
        let r = one(
            cm(json!("x")),
            Some(cm(json!({"token": "s3cr3t", "url": "u"}))),
            &[],
        );
        assert_eq!(r.changes[0].live, Some(json!("(object with 2 keys)")));
        assert_eq!(r.changes[0].desired, Some(json!("x")));
        let r = one(
            cm(json!({"token": {"a": 1}})),
            Some(cm(json!({"token": "s3cr3t"}))),
            &[],
        );
        assert_eq!(r.changes[0].live, Some(json!("(string)")));
        let d = deploy("nginx:1", 1);
        let mut hostile = d.clone();
        hostile["spec"]["template"]["spec"]["containers"] = json!("x");
        let mut live = live_of(&d);
        live["spec"]["template"]["spec"]["containers"][0]["env"] =
            json!([{"name": "KEY", "value": "s3cr3t"}]);
        let text = serde_json::to_string(&one(hostile, Some(live), &[])).unwrap();
        assert!(
            text.contains("(list of 1 item)") && !text.contains("s3cr3t"),
            "{text}"
        );
    }

    #[test]
    fn lists_without_a_key_show_only_the_fields_the_desired_items_name() {
        let pod = |containers: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}});
        let live = pod(
            json!([{"image": "a", "env": [{"name": "K", "value": "s3cr3t"}]},
                              {"image": "b", "args": ["--token=s3cr3t"]}]),
        );
        for desired in [
            json!([]),
            json!([{"image": "c"}]),
            json!([{"image": "a"}, "x"]),
            json!(["x", "y", "z"]),
        ] {
            let r = one(pod(desired.clone()), Some(live.clone()), &[]);
            let text = serde_json::to_string(&r).unwrap();
            assert!(!text.contains("s3cr3t"), "{desired}: {text}");
            assert_eq!(r.status, ResourceStatus::OutOfSync);
        }
        let r = one(pod(json!([{"image": "c"}])), Some(live), &[]);
        assert_eq!(
            r.changes[0].live,
            Some(json!([{"image": "a"}, "(object with 2 keys)"]))
        );
        // Lists of scalars still show both sides.
        let args = |a: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"args": a}});
        let r = one(args(json!(["a"])), Some(args(json!(["a", "b"]))), &[]);
        assert_eq!(r.changes[0].live, Some(json!(["a", "b"])));
    }

    #[test]
    fn numbers_and_numeric_strings_compare_by_value() {
        let d = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": 80, "targetPort": "8080"}]}});
        let l = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": 80.0, "targetPort": 8080, "protocol": "TCP"}]}});
        assert_eq!(one(d, Some(l), &[]).status, ResourceStatus::Synced);
    }

    #[test]
    fn the_pure_compare_reads_empty_and_null_fields_as_the_api_server_stores_them() {
        let pod = |spec: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "creationTimestamp": null}, "spec": spec});
        let live = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "creationTimestamp": "2026-11-30T00:00:00Z"},
                          "spec": {"containers": [{"name": "a", "image": "x", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}});
        let desired = pod(
            json!({"nodeSelector": {}, "tolerations": [], "containers": [{"name": "a", "image": "x", "args": [],
                   "resources": {"requests": {"cpu": "1000m", "memory": "1024Mi"}}}]}),
        );
        let schema = crate::cluster::schema::GroupVersionSchema::parse(
            &json!({"components": {"schemas": {
                "Pod": {"type": "object", "properties": {"spec": {"$ref": "#/components/schemas/PodSpec"}},
                        "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "Pod"}]},
                "PodSpec": {"type": "object", "properties": {"containers": {"type": "array", "items": {"$ref": "#/components/schemas/Container"},
                            "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}}},
                "Container": {"type": "object", "properties": {"resources": {"type": "object", "properties": {"requests": {"type": "object",
                              "additionalProperties": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.api.resource.Quantity"}}}}}},
                "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": "string"}}}}),
            "v1",
        );
        let r = pure(
            ObjectRef::of(&desired),
            &desired,
            &live,
            schema.kind("Pod"),
            &[],
            "test",
        );
        assert_eq!(r.status, ResourceStatus::Synced, "{:?}", r.changes);
        assert_eq!(r.compared_by, "desired fields only (test)");
    }

    #[test]
    fn quantities_compare_by_amount() {
        for (a, b) in [
            ("1000m", "1"),
            ("1024Mi", "1Gi"),
            ("0.5", "500m"),
            ("1e3", "1k"),
            ("2048Ki", "2Mi"),
            ("1.5Gi", "1536Mi"),
            ("0.1", "100m"),
        ] {
            assert!(same_quantity(&json!(a), &json!(b)), "{a} = {b}");
        }
        assert!(same_quantity(&json!(1), &json!("1")));
        assert!(!same_quantity(&json!("1"), &json!("1001m")));
        assert!(!same_quantity(&json!("1Gi"), &json!("1G")));
        assert!(!same_quantity(&json!("bogus"), &json!("1")));
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}

/// How one resource differs between two stored snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotDiff {
    pub object: ObjectRef,
    /// `added`, `removed` or `changed` (unchanged resources are left out).
    pub change: &'static str,
    pub fields: Vec<FieldDelta>,
}

/// One field between two snapshots (Secret data reads `(changed)`, never its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldDelta {
    pub path: String,
    pub from: Option<Value>,
    pub to: Option<Value>,
}

/// Per resource and field, what changed from snapshot `from` to snapshot `to`: resources
/// `added`, `removed` or `changed` (with the fields that differ), sorted by identity; equal
/// resources are left out. Pass snapshots with Secret values opened: a Secret is compared as
/// the API server stores it (`stringData` folded into base64 `data`, base64 read as Go reads
/// it, an empty `data` dropped), so an equal value is no change whatever form either revision
/// writes it in; a Secret value that did change reads `(changed)`, never itself.
pub fn between(from: &[Value], to: &[Value]) -> Vec<SnapshotDiff> {
    /// Where a Secret holds its values (the last-applied annotation copies them).
    const VALUES: [&str; 3] = [
        "/data",
        "/stringData",
        "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration",
    ];
    fn is_secret(o: &ObjectRef) -> bool {
        o.group.is_empty() && o.kind == "Secret"
    }
    /// Standard base64 as Go decodes a `[]byte` field (line breaks ignored, padding required),
    /// written back canonically; `None` when it is not base64.
    fn canonical_base64(s: &str) -> Option<String> {
        use base64::Engine;
        let compact: String = s.chars().filter(|c| *c != '\n' && *c != '\r').collect();
        let engine = base64::engine::general_purpose::STANDARD;
        engine
            .decode(compact)
            .ok()
            .map(|bytes| engine.encode(bytes))
    }
    /// A Secret as the API server stores it; values that are not a map stay as written.
    fn stored_secret(o: &Value) -> Value {
        let mut o = o.clone();
        let Some(m) = o.as_object_mut() else {
            return o;
        };
        let map_or_absent = |v: Option<&Value>| v.is_none_or(|v| v.is_object() || v.is_null());
        if !map_or_absent(m.get("data")) || !map_or_absent(m.get("stringData")) {
            return o;
        }
        let string_data = m.remove("stringData");
        let mut data = match m.remove("data") {
            Some(Value::Object(d)) => d,
            _ => serde_json::Map::new(),
        };
        for v in data.values_mut() {
            if let Some(c) = v.as_str().and_then(canonical_base64) {
                *v = Value::String(c);
            }
        }
        if let Some(Value::Object(sd)) = string_data {
            for (k, v) in sd {
                let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                data.insert(k, Value::String(base64(text.as_bytes())));
            }
        }
        if !data.is_empty() {
            m.insert("data".into(), Value::Object(data));
        }
        o
    }
    let index = |objs: &[Value]| -> BTreeMap<ObjectRef, Value> {
        objs.iter()
            .map(|o| {
                let r = ObjectRef::of(o);
                let o = if is_secret(&r) {
                    stored_secret(o)
                } else {
                    o.clone()
                };
                (r, o)
            })
            .collect()
    };
    // Whatever the field walk shows, a Secret's values never leave as themselves.
    let shown = |object: &ObjectRef, pointer: &str, v: Option<Value>| {
        let value = is_secret(object)
            && VALUES.iter().any(|p| {
                pointer == *p
                    || (pointer.starts_with(p) && pointer.as_bytes().get(p.len()) == Some(&b'/'))
            });
        if value {
            v.map(|_| Value::String("(changed)".into()))
        } else {
            v
        }
    };
    let (a, b) = (index(from), index(to));
    let mut out = Vec::new();
    for (object, new) in &b {
        match a.get(object) {
            None => out.push(SnapshotDiff {
                object: object.clone(),
                change: "added",
                fields: Vec::new(),
            }),
            Some(old) => {
                // Fields of `to` that differ from `from`, then fields only `from` has.
                let mut fields: Vec<FieldDelta> = diff_object(object, new, old, &[])
                    .into_iter()
                    .map(|c| FieldDelta {
                        from: shown(object, &c.pointer, c.live),
                        to: shown(object, &c.pointer, c.desired),
                        path: c.path,
                    })
                    .collect();
                fields.extend(
                    diff_object(object, old, new, &[])
                        .into_iter()
                        .filter(|c| c.live.is_none())
                        .map(|c| FieldDelta {
                            from: shown(object, &c.pointer, c.desired),
                            to: None,
                            path: c.path,
                        }),
                );
                if !fields.is_empty() {
                    out.push(SnapshotDiff {
                        object: object.clone(),
                        change: "changed",
                        fields,
                    });
                }
            }
        }
    }
    for object in a.keys().filter(|o| !b.contains_key(*o)) {
        out.push(SnapshotDiff {
            object: object.clone(),
            change: "removed",
            fields: Vec::new(),
        });
    }
    out.sort_by(|x, y| x.object.cmp(&y.object));
    out
}
