//! The resource types the sandbox serves: built-in kinds and kinds registered by CRDs.

use std::sync::Arc;

use serde_json::{json, Value};

use super::openapi;
use crate::cluster::schema::{GroupVersionSchema, Node};

/// The OpenAPI schemas of a type's group-version (shared by the types of one document;
/// equal when they are the same document).
#[derive(Debug, Clone)]
pub struct Schemas(pub Arc<GroupVersionSchema>);

impl PartialEq for Schemas {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Schemas {}

/// One served resource type (a kind at a group/version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    /// Served with `/status` (writes to the main resource ignore `status`).
    pub status_subresource: bool,
    /// Served with `/scale` (`spec.replicas`).
    pub scale_subresource: bool,
    /// The group-version's OpenAPI schemas (`None`: no schema, every value is untyped).
    pub schemas: Option<Schemas>,
    /// Registered by a CRD (else a built-in kind: a Go struct on a real API server, whose
    /// values are normalised on write).
    pub custom: bool,
}

impl ResourceType {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The schema of this kind's objects, if its group-version publishes one.
    pub fn schema(&self) -> Option<Node<'_>> {
        self.schemas.as_ref()?.0.kind(&self.kind)
    }

    /// `deployments.apps`, or `pods` for the core group (the `resource` of error details).
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The entries of this type in an `APIResourceList` (the resource and its subresources).
    pub fn discovery_entries(&self) -> Vec<Value> {
        let verbs = json!([
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch"
        ]);
        let mut out = vec![json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": verbs,
            "shortNames": self.short_names,
        })];
        if self.status_subresource {
            out.push(json!({"name": format!("{}/status", self.plural), "singularName": "",
                "namespaced": self.namespaced, "kind": self.kind, "verbs": ["get", "patch", "update"]}));
        }
        if self.scale_subresource {
            out.push(
                json!({"name": format!("{}/scale", self.plural), "singularName": "",
                "namespaced": self.namespaced, "group": "autoscaling", "version": "v1",
                "kind": "Scale", "verbs": ["get", "patch", "update"]}),
            );
        }
        out
    }
}

fn builtin(
    group: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    short: &[&str],
    status: bool,
    scale: bool,
) -> ResourceType {
    ResourceType {
        group: group.into(),
        version: "v1".into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        status_subresource: status,
        scale_subresource: scale,
        schemas: openapi::builtin_schema(&if group.is_empty() {
            "v1".to_owned()
        } else {
            format!("{group}/v1")
        })
        .map(Schemas),
        custom: false,
    }
}

/// The built-in kinds, in discovery order.
pub fn builtins() -> Vec<ResourceType> {
    vec![
        builtin("", "Namespace", "namespaces", false, &["ns"], true, false),
        builtin("", "ConfigMap", "configmaps", true, &["cm"], false, false),
        builtin("", "Secret", "secrets", true, &[], false, false),
        builtin("", "Service", "services", true, &["svc"], true, false),
        builtin(
            "",
            "ServiceAccount",
            "serviceaccounts",
            true,
            &["sa"],
            false,
            false,
        ),
        builtin("", "Pod", "pods", true, &["po"], true, false),
        builtin(
            "",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            true,
            &["pvc"],
            true,
            false,
        ),
        builtin(
            "apps",
            "Deployment",
            "deployments",
            true,
            &["deploy"],
            true,
            true,
        ),
        builtin(
            "apps",
            "StatefulSet",
            "statefulsets",
            true,
            &["sts"],
            true,
            true,
        ),
        builtin(
            "apps",
            "DaemonSet",
            "daemonsets",
            true,
            &["ds"],
            true,
            false,
        ),
        builtin(
            "apps",
            "ReplicaSet",
            "replicasets",
            true,
            &["rs"],
            true,
            true,
        ),
        builtin("batch", "Job", "jobs", true, &[], true, false),
        builtin("batch", "CronJob", "cronjobs", true, &["cj"], true, false),
        builtin(
            "networking.k8s.io",
            "Ingress",
            "ingresses",
            true,
            &["ing"],
            true,
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "Role",
            "roles",
            true,
            &[],
            false,
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "RoleBinding",
            "rolebindings",
            true,
            &[],
            false,
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "ClusterRole",
            "clusterroles",
            false,
            &[],
            false,
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            &[],
            false,
            false,
        ),
        builtin(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            &["crd", "crds"],
            true,
            false,
        ),
    ]
}

/// The resource types a CustomResourceDefinition object declares (one per served version).
pub fn from_crd(crd: &Value) -> Result<Vec<ResourceType>, String> {
    let spec = &crd["spec"];
    let text = |v: &Value, what: &str| {
        v.as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| format!("spec.{what}: Required value"))
    };
    let group = text(&spec["group"], "group")?;
    let kind = text(&spec["names"]["kind"], "names.kind")?;
    let plural = text(&spec["names"]["plural"], "names.plural")?;
    let singular = spec["names"]["singular"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| kind.to_lowercase());
    let namespaced = match spec["scope"].as_str() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        _ => return Err("spec.scope: Unsupported value: must be Namespaced or Cluster".into()),
    };
    let expected_name = format!("{plural}.{group}");
    if crd["metadata"]["name"].as_str() != Some(expected_name.as_str()) {
        return Err(format!("metadata.name: Invalid value: must be spec.names.plural+\".\"+spec.group ({expected_name})"));
    }
    let short_names: Vec<String> = spec["names"]["shortNames"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let versions = spec["versions"]
        .as_array()
        .filter(|v| !v.is_empty())
        .ok_or("spec.versions: Required value")?;
    let docs = openapi::crd_documents(crd);
    let mut out = Vec::new();
    for v in versions {
        if v["served"].as_bool() == Some(false) {
            continue;
        }
        let version = text(&v["name"], "versions[].name")?;
        let path = openapi::path_of(&format!("{group}/{version}"));
        out.push(ResourceType {
            group: group.clone(),
            version,
            kind: kind.clone(),
            plural: plural.clone(),
            singular: singular.clone(),
            namespaced,
            short_names: short_names.clone(),
            status_subresource: v["subresources"]["status"].is_object(),
            scale_subresource: v["subresources"]["scale"].is_object(),
            schemas: docs
                .iter()
                .find(|d| d.path == path)
                .map(|d| Schemas(d.schema.clone())),
            custom: true,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crd_declares_one_type_per_served_version() {
        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Cluster",
                "names": {"kind": "Widget", "plural": "widgets", "shortNames": ["wd"]},
                "versions": [{"name": "v1", "served": true, "subresources": {"status": {}}},
                             {"name": "v0", "served": false}]}
        });
        let types = from_crd(&crd).unwrap();
        assert_eq!(types.len(), 1);
        assert_eq!(types[0].api_version(), "example.com/v1");
        assert!(!types[0].namespaced && types[0].status_subresource);
        assert_eq!(types[0].singular, "widget");
    }

    #[test]
    fn a_crd_with_a_mismatched_name_is_invalid() {
        let crd = json!({"metadata": {"name": "nope"}, "spec": {"group": "g.io", "scope": "Namespaced",
            "names": {"kind": "K", "plural": "ks"}, "versions": [{"name": "v1", "served": true}]}});
        assert!(from_crd(&crd).unwrap_err().contains("metadata.name"));
    }
}
