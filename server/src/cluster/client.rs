//! One Kubernetes cluster as Tidemark uses it: kinds resolved by discovery (cached, refreshed on
//! a miss so a CRD applied earlier in the same sync is found), live objects read, desired
//! objects server-side applied with field manager `tidemark`, pruned objects deleted.

use std::collections::HashMap;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Scope;
use serde_json::Value;

use crate::config::ClusterSettings;

/// The field manager of every Tidemark apply.
pub const FIELD_MANAGER: &str = "tidemark";

/// Errors talking to a cluster, with the API server's own message.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ClusterError {
    #[error("cluster {cluster}: {message}")]
    Connect { cluster: String, message: String },
    #[error("cluster {cluster} does not serve {kind} in {api_version}")]
    UnknownKind {
        cluster: String,
        api_version: String,
        kind: String,
    },
    #[error("{object}: {message} ({reason})")]
    Api {
        object: String,
        code: u16,
        reason: String,
        message: String,
    },
}

/// A connected cluster.
pub struct ClusterClient {
    pub name: String,
    client: kube::Client,
    kinds: tokio::sync::RwLock<HashMap<(String, String), (ApiResource, bool)>>,
}

fn describe(obj: &Value) -> String {
    let ns = obj["metadata"]["namespace"]
        .as_str()
        .map(|n| format!("{n}/"))
        .unwrap_or_default();
    format!(
        "{} {ns}{}",
        obj["kind"].as_str().unwrap_or("?"),
        obj["metadata"]["name"].as_str().unwrap_or("?")
    )
}

impl ClusterClient {
    /// A client for the configured cluster: a URL, a kubeconfig (and context) or the in-cluster
    /// service account.
    pub async fn connect(settings: &ClusterSettings) -> Result<Self, ClusterError> {
        let fail = |message: String| ClusterError::Connect {
            cluster: settings.name.clone(),
            message,
        };
        let config = if let Some(path) = &settings.kubeconfig {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| fail(format!("cannot read kubeconfig {}: {e}", path.display())))?;
            let options = kube::config::KubeConfigOptions {
                context: settings.context.clone(),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| fail(format!("kubeconfig {}: {e}", path.display())))?
        } else if settings.in_cluster {
            kube::Config::incluster().map_err(|e| fail(format!("in-cluster configuration: {e}")))?
        } else {
            let url = settings
                .url
                .parse()
                .map_err(|e| fail(format!("invalid url {}: {e}", settings.url)))?;
            kube::Config::new(url)
        };
        let client = kube::Client::try_from(config).map_err(|e| fail(e.to_string()))?;
        Ok(Self::with_client(&settings.name, client))
    }

    /// Wraps an existing client (in-process sandbox, tests).
    pub fn with_client(name: &str, client: kube::Client) -> Self {
        Self {
            name: name.to_owned(),
            client,
            kinds: tokio::sync::RwLock::new(HashMap::new()),
        }
    }

    /// The served resource for `apiVersion` + `kind`, and whether it is namespaced.
    pub async fn resolve(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, bool), ClusterError> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(found) = self.kinds.read().await.get(&key) {
            return Ok(found.clone());
        }
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let unknown = || ClusterError::UnknownKind {
            cluster: self.name.clone(),
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        };
        let (ar, caps) = match kube::discovery::pinned_kind(&self.client, &gvk).await {
            Ok(found) => found,
            Err(kube::Error::Api(s)) if s.code == 404 => return Err(unknown()),
            Err(kube::Error::Discovery(_)) => return Err(unknown()),
            Err(e) => {
                return Err(ClusterError::Connect {
                    cluster: self.name.clone(),
                    message: e.to_string(),
                })
            }
        };
        let resolved = (ar, caps.scope == Scope::Namespaced);
        self.kinds.write().await.insert(key, resolved.clone());
        Ok(resolved)
    }

    async fn api_for(&self, obj: &Value) -> Result<Api<DynamicObject>, ClusterError> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let (ar, namespaced) = self.resolve(api_version, kind).await?;
        Ok(match (namespaced, obj["metadata"]["namespace"].as_str()) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &ar),
            _ => Api::all_with(self.client.clone(), &ar),
        })
    }

    fn api_error(obj: &Value, e: kube::Error) -> ClusterError {
        match e {
            kube::Error::Api(s) => ClusterError::Api {
                object: describe(obj),
                code: s.code,
                reason: s.reason.clone(),
                message: s.message.clone(),
            },
            other => ClusterError::Api {
                object: describe(obj),
                code: 0,
                reason: "Transport".into(),
                message: other.to_string(),
            },
        }
    }

    /// The live object named by `obj`'s identity, if it exists.
    pub async fn get(&self, obj: &Value) -> Result<Option<Value>, ClusterError> {
        let api = self.api_for(obj).await?;
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        match api.get_opt(name).await {
            Ok(found) => Ok(found.map(|o| serde_json::to_value(o).unwrap_or(Value::Null))),
            Err(e) => Err(Self::api_error(obj, e)),
        }
    }

    /// Server-side applies `obj` as `tidemark`, taking over fields other managers changed
    /// (Git is the source of truth). `dry_run` returns the result without storing it.
    pub async fn apply(&self, obj: &Value, dry_run: bool) -> Result<Value, ClusterError> {
        let api = self.api_for(obj).await?;
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let mut params = PatchParams::apply(FIELD_MANAGER).force();
        params.dry_run = dry_run;
        match api.patch(name, &params, &Patch::Apply(obj)).await {
            Ok(o) => Ok(serde_json::to_value(o).unwrap_or(Value::Null)),
            Err(e) => Err(Self::api_error(obj, e)),
        }
    }

    /// Deletes the object; an object already gone is not an error.
    pub async fn delete(&self, obj: &Value) -> Result<(), ClusterError> {
        let api = self.api_for(obj).await?;
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(Self::api_error(obj, e)),
        }
    }

    /// Fills in `namespace` on namespaced objects that have none; removes it from
    /// cluster-scoped ones.
    pub async fn place(
        &self,
        mut obj: Value,
        default_namespace: &str,
    ) -> Result<Value, ClusterError> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
        let (_, namespaced) = self.resolve(&api_version, &kind).await?;
        if namespaced {
            if obj["metadata"]["namespace"]
                .as_str()
                .is_none_or(str::is_empty)
            {
                obj["metadata"]["namespace"] = Value::String(default_namespace.to_owned());
            }
        } else if let Some(meta) = obj["metadata"].as_object_mut() {
            meta.remove("namespace");
        }
        Ok(obj)
    }
}

/// Apply order: Namespaces, then CustomResourceDefinitions, then everything else (each group
/// keeps its canonical order). Prune runs in the reverse of this order.
pub fn sync_order(objects: &[Value]) -> Vec<&Value> {
    let rank = |o: &Value| match o["kind"].as_str() {
        Some("Namespace") => 0,
        Some("CustomResourceDefinition") => 1,
        _ => 2,
    };
    let mut ordered: Vec<&Value> = objects.iter().collect();
    ordered.sort_by_key(|o| rank(o));
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn namespaces_and_crds_are_applied_first() {
        let objs = vec![
            json!({"kind": "ConfigMap", "metadata": {"name": "a"}}),
            json!({"kind": "CustomResourceDefinition", "metadata": {"name": "w.example.com"}}),
            json!({"kind": "Deployment", "metadata": {"name": "b"}}),
            json!({"kind": "Namespace", "metadata": {"name": "shop"}}),
        ];
        let kinds: Vec<&str> = sync_order(&objs)
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "CustomResourceDefinition",
                "ConfigMap",
                "Deployment"
            ]
        );
    }
}
