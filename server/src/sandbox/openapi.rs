//! OpenAPI v3, as the API server publishes it: `GET /openapi/v3` (an index of group-versions
//! with hashed URLs) and `GET /openapi/v3/api/v1`, `/openapi/v3/apis/<group>/<version>`.
//!
//! The built-in documents are the real API server's, captured by `scripts/sandbox-openapi.sh`
//! (descriptions left out, only the schemas the served kinds reach, schemas shared between
//! group-versions stored once in `openapi/shared.json`). Applied CRDs publish their versions'
//! schemas as a real server does (`<reversed group>.<version>.<Kind>`, `metadata` as
//! `ObjectMeta`). The same documents give the sandbox its list keys, atomic maps and quantity
//! fields (through [`crate::cluster::schema`]).

use std::sync::{Arc, OnceLock};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha512};

use crate::cluster::schema::GroupVersionSchema;

const SHARED: &str = include_str!("openapi/shared.json");

/// (group-version, captured document) of every built-in group-version the sandbox serves.
const BUILTIN: [(&str, &str); 6] = [
    ("v1", include_str!("openapi/core-v1.json")),
    ("apps/v1", include_str!("openapi/apps-v1.json")),
    ("batch/v1", include_str!("openapi/batch-v1.json")),
    (
        "networking.k8s.io/v1",
        include_str!("openapi/networking.k8s.io-v1.json"),
    ),
    (
        "rbac.authorization.k8s.io/v1",
        include_str!("openapi/rbac.authorization.k8s.io-v1.json"),
    ),
    (
        "apiextensions.k8s.io/v1",
        include_str!("openapi/apiextensions.k8s.io-v1.json"),
    ),
];

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// One group-version's document, ready to serve.
#[derive(Debug)]
pub struct Document {
    /// `api/v1`, `apis/apps/v1`: the key in the index and the URL under `/openapi/v3/`.
    pub path: String,
    /// The JSON body.
    pub body: String,
    /// Upper-case hex SHA-512 of the body (the `?hash=` of the index's URL).
    pub hash: String,
    /// The parsed schemas.
    pub schema: Arc<GroupVersionSchema>,
}

impl Document {
    fn new(api_version: &str, doc: &Value) -> Self {
        let body = doc.to_string();
        let hash = Sha512::digest(body.as_bytes())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        Self {
            path: path_of(api_version),
            body,
            hash,
            schema: Arc::new(GroupVersionSchema::parse(doc, api_version)),
        }
    }
}

/// `api/v1` for `v1`, `apis/apps/v1` for `apps/v1`.
pub fn path_of(api_version: &str) -> String {
    if api_version.contains('/') {
        format!("apis/{api_version}")
    } else {
        format!("api/{api_version}")
    }
}

fn shared() -> &'static Map<String, Value> {
    static SHARED_SCHEMAS: OnceLock<Map<String, Value>> = OnceLock::new();
    SHARED_SCHEMAS.get_or_init(|| serde_json::from_str(SHARED).unwrap_or_default())
}

/// The built-in documents (parsed once).
pub fn builtin() -> &'static [Document] {
    static DOCS: OnceLock<Vec<Document>> = OnceLock::new();
    DOCS.get_or_init(|| {
        BUILTIN
            .iter()
            .map(|(gv, text)| {
                let stored: Value = serde_json::from_str(text).unwrap_or_default();
                let mut schemas = stored["components"]["schemas"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                for name in stored["x-tidemark-shared-schemas"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    if let Some(s) = shared().get(name) {
                        schemas.insert(name.to_owned(), s.clone());
                    }
                }
                let doc = json!({
                    "openapi": stored["openapi"],
                    "info": {"title": stored["info"]["title"], "version": stored["info"]["version"]},
                    "paths": stored["paths"],
                    "components": {"schemas": schemas},
                });
                Document::new(gv, &doc)
            })
            .collect()
    })
}

/// The schemas of a built-in group-version (`v1`, `apps/v1`).
pub fn builtin_schema(api_version: &str) -> Option<Arc<GroupVersionSchema>> {
    let path = path_of(api_version);
    builtin()
        .iter()
        .find(|d| d.path == path)
        .map(|d| d.schema.clone())
}

/// `com.example` for `example.com`: the prefix of a CRD's schema names.
fn reversed(group: &str) -> String {
    group.split('.').rev().collect::<Vec<_>>().join(".")
}

/// Adds `anyOf: [integer, string]` next to `x-kubernetes-int-or-string`, as the published
/// CRD schemas have it.
fn publish_int_or_string(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
                && !m.contains_key("anyOf")
            {
                m.insert(
                    "anyOf".into(),
                    json!([{"type": "integer"}, {"type": "string"}]),
                );
            }
            for (_, child) in m.iter_mut() {
                publish_int_or_string(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(publish_int_or_string),
        _ => {}
    }
}

/// Names of the schemas `schema` reaches through `$ref`s in `within`.
fn reachable(schema: &Value, within: &Map<String, Value>, found: &mut Vec<String>) {
    match schema {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "$ref" {
                    let Some(name) = v
                        .as_str()
                        .and_then(|r| r.strip_prefix("#/components/schemas/"))
                    else {
                        continue;
                    };
                    if !found.iter().any(|f| f == name) {
                        found.push(name.to_owned());
                        if let Some(s) = within.get(name) {
                            reachable(s, within, found);
                        }
                    }
                } else {
                    reachable(v, within, found);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| reachable(i, within, found)),
        _ => {}
    }
}

/// The OpenAPI v3 document of one served version of a CRD (`version` is its entry in
/// `spec.versions`), shaped as a real API server publishes it.
pub fn crd_document(crd: &Value, version: &Value) -> (String, Value) {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let v = version["name"].as_str().unwrap_or_default();
    let kind = spec["names"]["kind"].as_str().unwrap_or_default();
    let list_kind = spec["names"]["listKind"]
        .as_str()
        .map_or_else(|| format!("{kind}List"), str::to_owned);
    let plural = spec["names"]["plural"].as_str().unwrap_or_default();
    let api_version = format!("{group}/{v}");
    let prefix = format!("{}.{v}", reversed(group));
    let name = format!("{prefix}.{kind}");
    let gvk = |k: &str| json!([{"group": group, "kind": k, "version": v}]);

    let mut schema = version["schema"]["openAPIV3Schema"].clone();
    if !schema.is_object() {
        schema = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    }
    publish_int_or_string(&mut schema);
    schema["type"] = json!("object");
    schema["properties"]["apiVersion"] = json!({"type": "string"});
    schema["properties"]["kind"] = json!({"type": "string"});
    schema["properties"]["metadata"] =
        json!({"allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}]});
    schema["x-kubernetes-group-version-kind"] = gvk(kind);
    let list = json!({
        "type": "object", "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{name}")}},
            "kind": {"type": "string"},
            "metadata": {"allOf": [{"$ref": format!("#/components/schemas/{LIST_META}")}]}
        },
        "x-kubernetes-group-version-kind": gvk(&list_kind),
    });
    let mut schemas = Map::new();
    let mut meta = Vec::new();
    for root in [OBJECT_META, LIST_META] {
        meta.push(root.to_owned());
        if let Some(s) = shared().get(root) {
            reachable(s, shared(), &mut meta);
        }
    }
    for m in meta {
        if let Some(s) = shared().get(&m) {
            schemas.insert(m, s.clone());
        }
    }
    schemas.insert(name.clone(), schema);
    schemas.insert(format!("{prefix}.{list_kind}"), list);

    let namespaced = spec["scope"].as_str() == Some("Namespaced");
    let base = if namespaced {
        format!("/apis/{group}/{v}/namespaces/{{namespace}}/{plural}")
    } else {
        format!("/apis/{group}/{v}/{plural}")
    };
    let param = |n: &str| json!({"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    let patch = json!({
        "operationId": format!("patch{kind}"),
        "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation"),
            {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}],
        "responses": {"200": {"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}}},
        "x-kubernetes-action": "patch",
        "x-kubernetes-group-version-kind": {"group": group, "version": v, "kind": kind},
    });
    let mut paths = Map::new();
    paths.insert(format!("{base}/{{name}}"), json!({"patch": patch}));
    let doc = json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    });
    (api_version, doc)
}

/// The documents of every served version of a CRD.
pub fn crd_documents(crd: &Value) -> Vec<Document> {
    crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"].as_bool() != Some(false))
        .map(|v| {
            let (gv, doc) = crd_document(crd, v);
            Document::new(&gv, &doc)
        })
        .collect()
}

/// The index `GET /openapi/v3` returns for these documents.
pub fn index<'a>(docs: impl Iterator<Item = &'a Document>) -> Value {
    let mut paths = Map::new();
    for d in docs {
        paths.insert(
            d.path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{}?hash={}", d.path, d.hash)}),
        );
    }
    json!({ "paths": paths })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::schema::ListType;
    use crate::sandbox::kinds;

    #[test]
    fn every_builtin_kind_has_its_schema() {
        for rt in kinds::builtins() {
            let schema = builtin_schema(&rt.api_version())
                .unwrap_or_else(|| panic!("no document for {}", rt.api_version()));
            assert!(schema.kind(&rt.kind).is_some(), "no schema for {}", rt.kind);
        }
    }

    #[test]
    fn list_keys_and_quantities_come_from_the_captured_documents() {
        let apps = builtin_schema("apps/v1").unwrap();
        let d = apps.kind("Deployment").unwrap();
        let c = crate::cluster::schema::at(
            d,
            &[
                Some("spec"),
                Some("template"),
                Some("spec"),
                Some("containers"),
                None,
            ],
        )
        .unwrap();
        assert_eq!(
            c.field("volumeMounts").unwrap().list_type(),
            Some(ListType::Map(vec!["mountPath".into()]))
        );
        assert_eq!(
            c.field("ports").unwrap().list_type(),
            Some(ListType::Map(vec![
                "containerPort".into(),
                "protocol".into()
            ]))
        );
        let cpu = crate::cluster::schema::at(c, &[Some("resources"), Some("limits"), Some("cpu")])
            .unwrap();
        assert!(cpu.is_quantity());
    }

    #[test]
    fn a_crd_publishes_its_schema_under_its_reversed_group() {
        let crd = json!({"spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets"},
            "versions": [{"name": "v1", "served": true, "schema": {"openAPIV3Schema": {"type": "object",
                "properties": {"spec": {"type": "object", "properties": {
                    "items": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                              "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
                    "port": {"x-kubernetes-int-or-string": true}}}}}}}]}});
        let docs = crd_documents(&crd);
        assert_eq!(docs[0].path, "apis/example.com/v1");
        let doc: Value = serde_json::from_str(&docs[0].body).unwrap();
        let w = &doc["components"]["schemas"]["com.example.v1.Widget"];
        assert_eq!(
            w["x-kubernetes-group-version-kind"][0]["kind"],
            json!("Widget")
        );
        assert!(w["properties"]["spec"]["properties"]["port"]["anyOf"].is_array());
        assert!(doc["components"]["schemas"][OBJECT_META].is_object());
        let items = docs[0].schema.kind("Widget").unwrap();
        let items = crate::cluster::schema::at(items, &[Some("spec"), Some("items")]).unwrap();
        assert_eq!(items.list_type(), Some(ListType::Map(vec!["name".into()])));
    }
}
