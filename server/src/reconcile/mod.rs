//! Reconciliation: comparing an application's desired snapshot with the cluster, and syncing
//! (ordered server-side apply, then prune of inventory objects no longer in Git), with every sync
//! written ahead and closed exactly once. The scheduling loop joins this module next.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{json, Value};

use crate::clock;
use crate::cluster::client::{sync_order, ClusterClient, ClusterError};
use crate::diff::{self, IgnoreRule, ObjectRef, ResourceDiff};
use crate::store::{AppSource, InventoryItem, NewSync, Store, StoreError, SyncStatus};

/// Why a reconcile step could not run at all (per-resource failures are results, not errors).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("application {0} has no rendered revision yet")]
    NotRendered(String),
    #[error("stored snapshot {0} is unreadable")]
    CorruptSnapshot(String),
}

/// What a sync did to one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceResult {
    pub object: String,
    pub action: &'static str,
    pub message: Option<String>,
}

/// The desired objects of the application's current target (from the stored snapshot: no Git
/// needed), placed in their namespaces.
pub async fn desired(
    store: &Store,
    cluster: &ClusterClient,
    app: &AppSource,
) -> Result<(String, String, Vec<Value>), ReconcileError> {
    let state = store.app_git_state(&app.name).await?;
    let sha = state
        .target_sha
        .ok_or_else(|| ReconcileError::NotRendered(app.name.clone()))?;
    let (digest, content) = store
        .rendered_snapshot(&app.name, &sha)
        .await?
        .ok_or_else(|| ReconcileError::NotRendered(app.name.clone()))?;
    let objects: Vec<Value> = serde_json::from_str(&content)
        .map_err(|_| ReconcileError::CorruptSnapshot(digest.clone()))?;
    let mut placed = Vec::with_capacity(objects.len());
    for o in objects {
        placed.push(cluster.place(o, &app.namespace).await?);
    }
    Ok((sha, digest, placed))
}

fn inventory_key(i: &InventoryItem) -> ObjectRef {
    ObjectRef {
        group: i
            .api_version
            .rsplit_once('/')
            .map_or("", |(g, _)| g)
            .to_owned(),
        kind: i.kind.clone(),
        namespace: i.namespace.clone(),
        name: i.name.clone(),
    }
}

fn inventory_object(i: &InventoryItem) -> Value {
    let mut o = json!({"apiVersion": i.api_version, "kind": i.kind, "metadata": {"name": i.name}});
    if !i.namespace.is_empty() {
        o["metadata"]["namespace"] = json!(i.namespace);
    }
    o
}

fn item_of(o: &Value) -> InventoryItem {
    InventoryItem {
        api_version: o["apiVersion"].as_str().unwrap_or_default().to_owned(),
        kind: o["kind"].as_str().unwrap_or_default().to_owned(),
        namespace: o["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        name: o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    }
}

/// Compares desired with live: every desired object, and inventory objects no longer desired.
pub async fn compare(
    store: &Store,
    cluster: &ClusterClient,
    app: &AppSource,
    desired: &[Value],
    ignore: &[IgnoreRule],
) -> Result<Vec<ResourceDiff>, ReconcileError> {
    let inventory = store.inventory(&app.name).await?;
    let mut live = BTreeMap::new();
    for o in desired {
        if let Some(l) = cluster.get(o).await? {
            live.insert(ObjectRef::of(o), l);
        }
    }
    let wanted: BTreeSet<ObjectRef> = desired.iter().map(ObjectRef::of).collect();
    let mut inv = BTreeSet::new();
    for item in &inventory {
        let key = inventory_key(item);
        if !wanted.contains(&key) {
            match cluster.get(&inventory_object(item)).await {
                Ok(Some(l)) => {
                    live.insert(key.clone(), l);
                }
                Ok(None) | Err(ClusterError::UnknownKind { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        inv.insert(key);
    }
    Ok(diff::compare(desired, &live, &inv, ignore))
}

/// Applies the desired objects in order (Namespaces, CRDs, the rest), records each result and
/// the inventory, then — when `prune` is set and everything applied — deletes inventory
/// objects no longer desired, in reverse order. Written ahead as `running`; closed once.
#[allow(clippy::too_many_arguments)]
pub async fn sync(
    store: &Store,
    cluster: &ClusterClient,
    app: &AppSource,
    revision: &str,
    digest: &str,
    desired: &[Value],
    prune: bool,
    cause: &str,
    requested_by: &str,
) -> Result<(i64, SyncStatus, Vec<ResourceResult>), ReconcileError> {
    let new = NewSync {
        application: &app.name,
        revision,
        digest,
        cause,
        requested_by,
    };
    let id = store.begin_sync(new, clock::now()).await?;
    let mut results = Vec::new();
    let mut applied = Vec::new();
    for obj in sync_order(desired) {
        let object = format!(
            "{} {}",
            obj["kind"].as_str().unwrap_or("?"),
            display_name(obj)
        );
        match cluster.apply(obj, false).await {
            Ok(_) => {
                applied.push(item_of(obj));
                results.push(ResourceResult {
                    object,
                    action: "applied",
                    message: None,
                });
            }
            Err(e) => results.push(ResourceResult {
                object,
                action: "failed",
                message: Some(e.to_string()),
            }),
        }
    }
    store
        .add_to_inventory(&app.name, &applied, clock::now())
        .await?;
    let failed = results.iter().any(|r| r.action == "failed");
    if prune && !failed {
        let wanted: BTreeSet<ObjectRef> = desired.iter().map(ObjectRef::of).collect();
        let stale: Vec<Value> = store
            .inventory(&app.name)
            .await?
            .iter()
            .filter(|i| !wanted.contains(&inventory_key(i)))
            .map(inventory_object)
            .collect();
        let mut pruned = Vec::new();
        for obj in sync_order(&stale).into_iter().rev() {
            let object = format!(
                "{} {}",
                obj["kind"].as_str().unwrap_or("?"),
                display_name(obj)
            );
            match cluster.delete(obj).await {
                Ok(()) => {
                    pruned.push(item_of(obj));
                    results.push(ResourceResult {
                        object,
                        action: "pruned",
                        message: None,
                    });
                }
                Err(e) => results.push(ResourceResult {
                    object,
                    action: "failed",
                    message: Some(e.to_string()),
                }),
            }
        }
        store.remove_from_inventory(&app.name, &pruned).await?;
    }
    let failed = results.iter().any(|r| r.action == "failed");
    let status = if failed {
        SyncStatus::Failed
    } else {
        SyncStatus::Succeeded
    };
    let message = failed.then(|| {
        let n = results.iter().filter(|r| r.action == "failed").count();
        format!("{n} of {} resources failed", results.len())
    });
    let now = clock::now();
    store
        .finish_sync(id, status, &json!(results), message.as_deref(), now)
        .await?;
    let short = &revision[..revision.len().min(12)];
    let summary = match &message {
        None => format!("sync of {short} succeeded ({} resources)", results.len()),
        Some(m) => format!("sync of {short} failed: {m}"),
    };
    store
        .add_timeline(
            &app.name,
            "sync",
            &summary,
            &json!({"sync": id, "status": status}),
            now,
        )
        .await?;
    Ok((id, status, results))
}

fn display_name(o: &Value) -> String {
    match o["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{ns}/{}", o["metadata"]["name"].as_str().unwrap_or("?")),
        None => o["metadata"]["name"].as_str().unwrap_or("?").to_owned(),
    }
}
