//! The API server's own schema, as it publishes it in OpenAPI v3 (`GET /openapi/v3` for the
//! index, `GET /openapi/v3/apis/<group>/<version>` or `/openapi/v3/api/v1` per group-version):
//! which lists are associative and by which keys (`x-kubernetes-list-type: map` with
//! `x-kubernetes-list-map-keys`, or the older `x-kubernetes-patch-merge-key`), which are atomic
//! or sets, which values are `resource.Quantity`. Tidemark and the sandbox read list keys from
//! here, never from a fixed list of field names.
//!
//! A document is kept as parsed JSON; [`Node`]s walk it lazily, following `$ref` and the
//! `allOf: [{$ref}]` wrapper the API server uses for defaulted references.

use std::collections::HashMap;

use serde_json::Value;

/// The `$ref` name of `resource.Quantity` schemas.
pub const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/// How a list merges under server-side apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole (the default for lists without a list type).
    Atomic,
    /// A set of scalars: items are their own keys.
    Set,
    /// Items identified by these fields (`x-kubernetes-list-map-keys`, or the patch merge key).
    Map(Vec<String>),
}

/// One parsed OpenAPI v3 document of a group-version.
#[derive(Debug, Default)]
pub struct GroupVersionSchema {
    schemas: serde_json::Map<String, Value>,
    /// kind → schema name, from `x-kubernetes-group-version-kind`.
    kinds: HashMap<String, String>,
}

/// A schema inside a document (resolved through `$ref`s); `name` is the last `$ref` followed.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    doc: &'a GroupVersionSchema,
    schema: &'a Value,
    name: Option<&'a str>,
}

impl GroupVersionSchema {
    /// Parses a document as `GET /openapi/v3/...` returns it. `group_version` (`v1`,
    /// `apps/v1`) selects which kinds of the document are its own (documents also hold kinds
    /// of other groups they reference). Never fails: a document without schemas has no kinds.
    pub fn parse(doc: &Value, group_version: &str) -> Self {
        let schemas = doc["components"]["schemas"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let (group, version) = group_version
            .rsplit_once('/')
            .unwrap_or(("", group_version));
        let mut kinds = HashMap::new();
        for (name, s) in &schemas {
            for gvk in s["x-kubernetes-group-version-kind"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                if gvk["group"].as_str().unwrap_or_default() == group
                    && gvk["version"].as_str() == Some(version)
                {
                    if let Some(kind) = gvk["kind"].as_str() {
                        kinds.insert(kind.to_owned(), name.clone());
                    }
                }
            }
        }
        Self { schemas, kinds }
    }

    /// The schema of a kind's objects, if the document defines the kind.
    pub fn kind(&self, kind: &str) -> Option<Node<'_>> {
        let name = self.kinds.get(kind)?;
        let schema = self.schemas.get(name)?;
        Some(
            Node {
                doc: self,
                schema,
                name: Some(name),
            }
            .resolved(),
        )
    }

    /// The kinds the document defines for its group-version.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }
}

impl<'a> Node<'a> {
    /// Follows `$ref` (and a single-element `allOf` wrapping one) to the schema it names.
    fn resolved(mut self) -> Self {
        for _ in 0..32 {
            let target = self.schema["$ref"].as_str().or_else(|| {
                match self.schema["allOf"].as_array().map(Vec::as_slice) {
                    Some([one]) => one["$ref"].as_str(),
                    _ => None,
                }
            });
            let Some(name) = target.and_then(|r| r.strip_prefix("#/components/schemas/")) else {
                return self;
            };
            match self.doc.schemas.get_key_value(name) {
                Some((name, schema)) => {
                    self.schema = schema;
                    self.name = Some(name);
                }
                None => return self,
            }
        }
        self
    }

    fn child(&self, schema: &'a Value) -> Node<'a> {
        Node {
            doc: self.doc,
            schema,
            name: None,
        }
        .resolved()
    }

    /// The schema of field `name` of an object (a declared property, or the value schema of a
    /// map with `additionalProperties`).
    pub fn field(&self, name: &str) -> Option<Node<'a>> {
        if let Some(p) = self.schema["properties"].get(name) {
            return Some(self.child(p));
        }
        match self.schema.get("additionalProperties") {
            Some(v) if v.is_object() => Some(self.child(v)),
            _ => None,
        }
    }

    /// The schema of a list's items.
    pub fn items(&self) -> Option<Node<'a>> {
        self.schema.get("items").map(|i| self.child(i))
    }

    /// How this list merges; `None` if the node is not a list.
    pub fn list_type(&self) -> Option<ListType> {
        if self.schema["type"].as_str() != Some("array") && self.schema.get("items").is_none() {
            return None;
        }
        let keys = |v: &Value| -> Option<Vec<String>> {
            let keys: Vec<String> = v
                .as_array()?
                .iter()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect();
            (!keys.is_empty()).then_some(keys)
        };
        Some(
            match self.schema["x-kubernetes-list-type"].as_str() {
                Some("map") => keys(&self.schema["x-kubernetes-list-map-keys"]).map(ListType::Map),
                Some("set") => Some(ListType::Set),
                Some(_) => Some(ListType::Atomic),
                None => self.schema["x-kubernetes-patch-merge-key"]
                    .as_str()
                    .map(|k| ListType::Map(vec![k.to_owned()])),
            }
            .unwrap_or(ListType::Atomic),
        )
    }

    /// Whether values here are `resource.Quantity` strings (`"1"`, `"500m"`, `"1Gi"`).
    pub fn is_quantity(&self) -> bool {
        self.name == Some(QUANTITY)
    }

    /// Whether the value is an int-or-string (`format: int-or-string`, or
    /// `x-kubernetes-int-or-string`).
    pub fn is_int_or_string(&self) -> bool {
        self.schema["format"].as_str() == Some("int-or-string")
            || self.schema["x-kubernetes-int-or-string"].as_bool() == Some(true)
    }

    /// Whether the value is a map with arbitrary keys (`additionalProperties`) rather than a
    /// struct.
    pub fn is_map(&self) -> bool {
        self.schema.get("additionalProperties").is_some() && self.schema.get("properties").is_none()
    }

    /// `x-kubernetes-map-type` (`atomic` or `granular`), if declared.
    pub fn map_type(&self) -> Option<&'a str> {
        self.schema["x-kubernetes-map-type"].as_str()
    }

    /// The `$ref` name of this schema, if it was reached through one.
    pub fn name(&self) -> Option<&'a str> {
        self.name
    }

    /// The raw schema.
    pub fn raw(&self) -> &'a Value {
        self.schema
    }
}

/// Follows a path of field names and list-item steps from a kind's root: `Some(name)` is a
/// field, `None` a list item.
pub fn at<'a>(root: Node<'a>, path: &[Option<&str>]) -> Option<Node<'a>> {
    let mut n = root;
    for step in path {
        n = match step {
            Some(f) => n.field(f)?,
            None => n.items()?,
        };
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A document shaped as the API server publishes it (descriptions left out).
    fn doc() -> Value {
        json!({"components": {"schemas": {
            "io.k8s.api.apps.v1.Deployment": {
                "type": "object",
                "properties": {"spec": {"default": {}, "allOf": [{"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"}]}},
                "x-kubernetes-group-version-kind": [{"group": "apps", "kind": "Deployment", "version": "v1"}]
            },
            "io.k8s.api.apps.v1.DeploymentSpec": {"type": "object", "properties": {
                "template": {"allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodTemplateSpec"}]}}},
            "io.k8s.api.core.v1.PodTemplateSpec": {"type": "object", "properties": {
                "spec": {"allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}]}}},
            "io.k8s.api.core.v1.PodSpec": {"type": "object", "properties": {
                "containers": {"type": "array", "items": {"allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"}]},
                               "x-kubernetes-list-map-keys": ["name"], "x-kubernetes-list-type": "map"},
                "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}, "x-kubernetes-map-type": "atomic"}}},
            "io.k8s.api.core.v1.Container": {"type": "object", "properties": {
                "args": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "atomic"},
                "ports": {"type": "array", "items": {"$ref": "#/components/schemas/io.k8s.api.core.v1.ContainerPort"},
                          "x-kubernetes-list-map-keys": ["containerPort", "protocol"], "x-kubernetes-list-type": "map"},
                "volumeMounts": {"type": "array", "items": {"$ref": "#/components/schemas/io.k8s.api.core.v1.VolumeMount"},
                                 "x-kubernetes-list-map-keys": ["mountPath"], "x-kubernetes-list-type": "map", "x-kubernetes-patch-merge-key": "mountPath"},
                "env": {"type": "array", "items": {"type": "object"}, "x-kubernetes-patch-merge-key": "name"},
                "resources": {"$ref": "#/components/schemas/io.k8s.api.core.v1.ResourceRequirements"}}},
            "io.k8s.api.core.v1.ResourceRequirements": {"type": "object", "properties": {
                "limits": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.api.resource.Quantity"}}}},
            "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": "string"}
        }}})
    }

    #[test]
    fn list_types_and_quantities_come_from_the_document() {
        let d = GroupVersionSchema::parse(&doc(), "apps/v1");
        let root = d.kind("Deployment").unwrap();
        assert!(d.kind("Pod").is_none());
        let containers = at(
            root,
            &[
                Some("spec"),
                Some("template"),
                Some("spec"),
                Some("containers"),
            ],
        )
        .unwrap();
        assert_eq!(
            containers.list_type(),
            Some(ListType::Map(vec!["name".into()]))
        );
        let c = containers.items().unwrap();
        assert_eq!(
            c.field("ports").unwrap().list_type(),
            Some(ListType::Map(vec![
                "containerPort".into(),
                "protocol".into()
            ]))
        );
        assert_eq!(
            c.field("volumeMounts").unwrap().list_type(),
            Some(ListType::Map(vec!["mountPath".into()]))
        );
        assert_eq!(
            c.field("env").unwrap().list_type(),
            Some(ListType::Map(vec!["name".into()]))
        );
        assert_eq!(c.field("args").unwrap().list_type(), Some(ListType::Atomic));
        assert!(c.field("args").unwrap().items().is_some());
        let cpu = at(c, &[Some("resources"), Some("limits"), Some("cpu")]).unwrap();
        assert!(cpu.is_quantity());
        let pod_spec = at(root, &[Some("spec"), Some("template"), Some("spec")]).unwrap();
        assert!(pod_spec.field("nodeSelector").unwrap().is_map());
        assert_eq!(
            pod_spec.field("nodeSelector").unwrap().map_type(),
            Some("atomic")
        );
        assert!(pod_spec.field("unknown").is_none());
    }
}
