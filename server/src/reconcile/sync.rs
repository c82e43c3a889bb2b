//! Syncing: the desired objects of an application (placed in namespaces, marked with the
//! tracking annotation), applied in order — CustomResourceDefinitions established and
//! discovered before the resources of their kinds — then pruned, deleting only what is still
//! this application's.
//!
//! Ownership. Every object Tidemark applies carries the annotation [`TRACKING_ANNOTATION`]
//! with the value [`tracking_id`] (`<application>:<group>/<kind>:<namespace>/<name>`). An
//! object declared by two applications is kept by the one whose id is on the live object (or,
//! for an object applied before the annotation existed, the one whose inventory holds it); the
//! other reports a conflict on both timelines and does not apply it. Prune deletes an inventory
//! object only when its live annotation is this application's id — or it has none (applied
//! before the annotation existed) — and no other application declares it; otherwise the
//! object is dropped from the inventory and reported as kept.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{
    close_drift, inventory_key, inventory_object, item_of, ReconcileError, ResourceResult,
};
use crate::clock;
use crate::cluster::client::{sync_order, ClusterClient, ClusterError};
use crate::diff::ObjectRef;
use crate::render::helm::{hook_phase, HookPhase};
use crate::store::{Actor, AppSource, NewSync, Store, SyncStatus};

pub use crate::domain::tracking::TRACKING_ANNOTATION;

/// How long a sync waits for the CustomResourceDefinitions it applied to be Established and
/// discovered before it applies the resources of their kinds.
pub const CRD_ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);

/// A conflict already on an application's timeline is not written again within this long.
const CONFLICT_REPEAT_MS: i64 = 60 * 60 * 1000;

/// The tracking annotation's value for `object` applied by application `app`:
/// `<application>:<group>/<kind>:<namespace>/<name>` (empty group for the core API, empty
/// namespace for cluster-scoped objects).
pub fn tracking_id(app: &str, object: &ObjectRef) -> String {
    format!(
        "{app}:{}/{}:{}/{}",
        object.group, object.kind, object.namespace, object.name
    )
}

/// Whose a live object is, by its tracking annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mark {
    /// The annotation is this application's id for this object.
    Ours,
    /// No annotation (made by hand, or applied before Tidemark marked objects).
    Unmarked,
    /// The annotation names another application (`app`), or another object (a copy).
    Other { app: String, value: String },
}

fn mark_of(live: &Value, app: &str, object: &ObjectRef) -> Mark {
    match live["metadata"]["annotations"][TRACKING_ANNOTATION].as_str() {
        None => Mark::Unmarked,
        Some(value) if value == tracking_id(app, object) => Mark::Ours,
        Some(value) => Mark::Other {
            app: value.split_once(':').map_or(value, |(a, _)| a).to_owned(),
            value: value.to_owned(),
        },
    }
}

fn is_crd(o: &Value) -> bool {
    o["kind"] == "CustomResourceDefinition"
        && o["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("apiextensions.k8s.io/"))
}

/// The scope each CustomResourceDefinition in `objects` declares for its kind:
/// `(group, kind)` → namespaced.
fn declared_scopes(objects: &[Value]) -> HashMap<(String, String), bool> {
    objects
        .iter()
        .filter(|o| is_crd(o))
        .filter_map(|crd| {
            let group = crd["spec"]["group"].as_str()?;
            let kind = crd["spec"]["names"]["kind"].as_str()?;
            let namespaced = crd["spec"]["scope"].as_str() != Some("Cluster");
            Some(((group.to_owned(), kind.to_owned()), namespaced))
        })
        .collect()
}

fn group_of(o: &Value) -> &str {
    o["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .rsplit_once('/')
        .map_or("", |(g, _)| g)
}

/// Objects placed in `namespace` where they have none (scope from the CRDs among them, else
/// from discovery; see [`ClusterClient::place`]).
async fn place_objects(
    cluster: &ClusterClient,
    objects: Vec<Value>,
    namespace: &str,
) -> Result<Vec<Value>, ClusterError> {
    let scopes = declared_scopes(&objects);
    let mut placed = Vec::with_capacity(objects.len());
    for o in objects {
        let kind = o["kind"].as_str().unwrap_or_default().to_owned();
        let declared = scopes.get(&(group_of(&o).to_owned(), kind)).copied();
        placed.push(cluster.place(o, namespace, declared).await?);
    }
    Ok(placed)
}

/// The desired objects of the application's current target (from the stored snapshot: no Git
/// needed, Secret data decrypted for the cluster), placed in their namespaces and marked with
/// the tracking annotation. A pinned application's target is its pin.
pub async fn desired(
    store: &Store,
    cluster: &ClusterClient,
    app: &AppSource,
) -> Result<(String, String, Vec<Value>), ReconcileError> {
    if let Some(pin) = store.pin_of(&app.name).await? {
        let content = store
            .snapshot_to_apply(&pin.digest)
            .await?
            .ok_or_else(|| ReconcileError::CorruptSnapshot(pin.digest.clone()))?;
        let objects = place_all(cluster, &content, &pin.digest, app).await?;
        return Ok((pin.revision, pin.digest, objects));
    }
    let state = store.app_git_state(&app.name).await?;
    let sha = state
        .target_sha
        .ok_or_else(|| ReconcileError::NotRendered(app.name.clone()))?;
    let (digest, content) = store
        .render_to_apply(&app.name, &sha)
        .await?
        .ok_or_else(|| ReconcileError::NotRendered(app.name.clone()))?;
    let placed = place_all(cluster, &content, &digest, app).await?;
    Ok((sha, digest, placed))
}

/// A snapshot's objects as application `app` applies them: placed in its namespace where they
/// have none, Secret `stringData` folded into `data`, and marked with the tracking annotation. A kind the cluster does not serve yet is
/// placed by the scope a CustomResourceDefinition in the snapshot declares (else as written);
/// only an unreachable cluster fails this.
pub async fn place_all(
    cluster: &ClusterClient,
    content: &str,
    digest: &str,
    app: &AppSource,
) -> Result<Vec<Value>, ReconcileError> {
    let objects: Vec<Value> = serde_json::from_str(content)
        .map_err(|_| ReconcileError::CorruptSnapshot(digest.to_owned()))?;
    let mut placed = place_objects(cluster, objects, &app.namespace).await?;
    for o in &mut placed {
        // Applied as stored: server-side apply records ownership of `stringData` keys, never
        // of the `data` keys they become, so a key Git drops would stay live forever.
        if o["apiVersion"] == "v1" && o["kind"] == "Secret" {
            *o = crate::diff::secret_as_data(o);
        }
        let id = tracking_id(&app.name, &ObjectRef::of(o));
        if !o["metadata"]["annotations"].is_object() {
            o["metadata"]["annotations"] = json!({});
        }
        o["metadata"]["annotations"][TRACKING_ANNOTATION] = Value::String(id);
    }
    Ok(placed)
}

/// What the other applications on the cluster declare, read once per sync when first needed.
struct Others<'a> {
    store: &'a Store,
    cluster: &'a ClusterClient,
    app: &'a AppSource,
    declared: Option<BTreeMap<ObjectRef, BTreeSet<String>>>,
}

impl<'a> Others<'a> {
    fn new(store: &'a Store, cluster: &'a ClusterClient, app: &'a AppSource) -> Self {
        Self {
            store,
            cluster,
            app,
            declared: None,
        }
    }

    /// The other applications whose current target declares `object`.
    async fn declaring(&mut self, object: &ObjectRef) -> Result<Vec<String>, ReconcileError> {
        if self.declared.is_none() {
            let mut declared: BTreeMap<ObjectRef, BTreeSet<String>> = BTreeMap::new();
            for (name, namespace, content) in self.store.cluster_targets(&self.app.cluster).await? {
                if name == self.app.name {
                    continue;
                }
                let Ok(objects) = serde_json::from_str::<Vec<Value>>(&content) else {
                    tracing::warn!(app = %name, "stored snapshot is unreadable; ignored for ownership");
                    continue;
                };
                for o in place_objects(self.cluster, objects, &namespace).await? {
                    declared
                        .entry(ObjectRef::of(&o))
                        .or_default()
                        .insert(name.clone());
                }
            }
            self.declared = Some(declared);
        }
        Ok(self
            .declared
            .as_ref()
            .and_then(|d| d.get(object))
            .map(|apps| apps.iter().cloned().collect())
            .unwrap_or_default())
    }
}

/// Whether this application may apply a desired object.
enum Claim {
    Apply,
    /// Another application declares it and keeps it (`why`: how that was decided).
    Conflict {
        owner: String,
        why: &'static str,
    },
    Failed(String),
}

async fn claim(
    others: &mut Others<'_>,
    cluster: &ClusterClient,
    app: &AppSource,
    obj: &Value,
) -> Result<Claim, ReconcileError> {
    let object = ObjectRef::of(obj);
    let live = match cluster.get(obj).await {
        Ok(Some(live)) => live,
        Ok(None) | Err(ClusterError::UnknownKind { .. }) => return Ok(Claim::Apply),
        Err(e) => return Ok(Claim::Failed(e.to_string())),
    };
    match mark_of(&live, &app.name, &object) {
        Mark::Ours => Ok(Claim::Apply),
        Mark::Other { app: owner, .. } => {
            if owner != app.name && others.declaring(&object).await?.contains(&owner) {
                Ok(Claim::Conflict {
                    owner,
                    why: "its tracking annotation is on the live object",
                })
            } else {
                // The application named on it no longer declares it: taken over.
                Ok(Claim::Apply)
            }
        }
        Mark::Unmarked => {
            let declaring = others.declaring(&object).await?;
            if declaring.is_empty() {
                return Ok(Claim::Apply);
            }
            // Applied before Tidemark marked objects: whoever applied it keeps it.
            let holders = others
                .store
                .inventory_holders(&object.group, &object.kind, &object.namespace, &object.name)
                .await?;
            if holders.contains(&app.name) {
                return Ok(Claim::Apply);
            }
            Ok(match declaring.into_iter().find(|a| holders.contains(a)) {
                Some(owner) => Claim::Conflict {
                    owner,
                    why: "it applied the object first",
                },
                None => Claim::Apply,
            })
        }
    }
}

/// Writes a conflict on `app`'s timeline, unless the same one is its latest conflict of the
/// last hour (a retrying sync does not flood it).
async fn record_conflict(
    store: &Store,
    app: &str,
    message: &str,
    detail: &Value,
    now: clock::Millis,
) -> Result<(), ReconcileError> {
    let (latest, _) = store
        .timeline_page(app, None, 1, &["conflict".to_owned()])
        .await?;
    let repeated = latest.first().is_some_and(|e| {
        now - e.occurred_at < CONFLICT_REPEAT_MS
            && e.detail["object"] == detail["object"]
            && e.detail["owner"] == detail["owner"]
            && e.detail["claimant"] == detail["claimant"]
    });
    if !repeated {
        store
            .add_timeline(app, "conflict", message, detail, now)
            .await?;
    }
    Ok(())
}

fn describe(o: &Value) -> String {
    format!("{} {}", o["kind"].as_str().unwrap_or("?"), display_name(o))
}

fn display_name(o: &Value) -> String {
    match o["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{ns}/{}", o["metadata"]["name"].as_str().unwrap_or("?")),
        None => o["metadata"]["name"].as_str().unwrap_or("?").to_owned(),
    }
}

/// Waits for the CRDs this sync applied (`(result index, CRD)`); one that does not become
/// Established turns its result into a failure.
async fn establish(
    cluster: &ClusterClient,
    crds: &mut Vec<(usize, &Value)>,
    results: &mut [ResourceResult],
) {
    let deadline = Instant::now() + CRD_ESTABLISH_TIMEOUT;
    for (index, crd) in crds.drain(..) {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(e) = cluster.wait_established(crd, left).await {
            results[index].action = "failed";
            results[index].message = Some(e.to_string());
            continue;
        }
        // Its schema (list keys for the compare) is published a moment later.
        cluster
            .await_published_schema(crd, Duration::from_secs(5))
            .await;
    }
}

/// The reason an apply failed, with what to do about a kind the cluster does not serve.
fn apply_failure(e: &ClusterError, crd_declared: bool) -> String {
    match e {
        ClusterError::UnknownKind { .. } if crd_declared => {
            format!("{e}: its CustomResourceDefinition in this application is not ready")
        }
        ClusterError::UnknownKind { .. } => format!(
            "{e}: no CustomResourceDefinition in this application defines it and the cluster has none"
        ),
        _ => e.to_string(),
    }
}

/// Applies the desired objects in order (Namespaces, CRDs — each waited for until Established
/// and discovered —, the rest), records each result and the inventory, then — when `prune` is
/// set and everything applied — deletes inventory objects no longer desired that are still
/// this application's, in reverse order. An object another application keeps is a conflict:
/// not applied, written on both timelines, and the sync fails. Written ahead as `running`;
/// closed once.
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
    actor: &Actor,
) -> Result<(i64, SyncStatus, Vec<ResourceResult>), ReconcileError> {
    // `require_signed`: nothing unverified is applied, whoever asks (auto, a click, an approval,
    // a rollback). The verdict at deploy time is kept with the sync.
    let signature = super::signature_gate(store, app, revision).await?;
    // Declared in Git: every object within the project's bounds, or nothing is applied.
    super::bounds_gate(app, desired)?;
    let new = NewSync {
        application: &app.name,
        revision,
        digest,
        cause,
        actor,
        signature: signature.as_ref(),
    };
    let id = store.begin_sync(new, clock::now()).await?;
    let mut results: Vec<ResourceResult> = Vec::new();
    let mut applied = Vec::new();
    let mut conflicts = Vec::new();
    let mut others = Others::new(store, cluster, app);
    let scopes = declared_scopes(desired);
    let mut crds: Vec<(usize, &Value)> = Vec::new();
    // PreSync hooks applied and not yet finished: the rest waits for them (Argo CD's phases).
    let mut pre_hooks: Vec<&Value> = Vec::new();
    for obj in sync_order(desired) {
        let object = describe(obj);
        if !crds.is_empty() && !is_crd(obj) && obj["kind"] != "Namespace" {
            establish(cluster, &mut crds, &mut results).await;
        }
        let phase = hook_phase(obj).map(|(p, _)| p);
        if phase != Some(HookPhase::PreSync) && !pre_hooks.is_empty() {
            if let Err((hook, message)) = wait_for_hooks(cluster, &mut pre_hooks).await {
                results.push(ResourceResult {
                    object: hook,
                    action: "failed",
                    message: Some(format!(
                        "{message}; the sync stopped before the application's other objects"
                    )),
                });
                break;
            }
        }
        let claim = match claim(&mut others, cluster, app, obj).await {
            Ok(c) => c,
            Err(e) => Claim::Failed(format!("cannot tell which application keeps it: {e}")),
        };
        match claim {
            Claim::Apply => {}
            Claim::Conflict { owner, why } => {
                results.push(ResourceResult {
                    object,
                    action: "conflict",
                    message: Some(format!(
                        "application {owner} declares it too and keeps it ({why}); not applied"
                    )),
                });
                conflicts.push((ObjectRef::of(obj), owner));
                continue;
            }
            Claim::Failed(message) => {
                results.push(ResourceResult {
                    object,
                    action: "failed",
                    message: Some(message),
                });
                continue;
            }
        }
        if phase.is_some() && recreated_before_sync(obj) {
            // Helm's (and Argo CD's) default `before-hook-creation`: a hook runs anew on every
            // sync, so its previous object is deleted first (a Job's template is immutable) —
            // only once the claim says the object is this application's.
            if let Err(e) = recreate(cluster, obj).await {
                results.push(ResourceResult {
                    object,
                    action: "failed",
                    message: Some(format!("cannot delete the previous hook object: {e}")),
                });
                continue;
            }
        }
        // Fields kubectl's client-side apply owns become Tidemark's first, so that this apply
        // removes what Git no longer declares (as `kubectl apply --server-side` does).
        if let Err(e) = cluster.take_over_client_side_apply(obj).await {
            tracing::warn!(object = %object, error = %e, "cannot take over client-side apply fields");
        }
        let mut outcome = cluster.apply(obj, false).await;
        if let Err(ClusterError::Api { code: 404, .. }) = &outcome {
            // The kind was discovered before its CRD went away (or came back): discover again.
            let group = group_of(obj);
            if !group.is_empty() {
                cluster.forget_group(group).await;
                outcome = cluster.apply(obj, false).await;
            }
        }
        match outcome {
            Ok(_) => {
                applied.push(item_of(obj));
                if phase == Some(HookPhase::PreSync) {
                    pre_hooks.push(obj);
                }
                results.push(ResourceResult {
                    object,
                    action: "applied",
                    message: None,
                });
                if is_crd(obj) {
                    crds.push((results.len() - 1, obj));
                }
            }
            Err(e) => {
                let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
                let declared = scopes.contains_key(&(group_of(obj).to_owned(), kind));
                results.push(ResourceResult {
                    object,
                    action: "failed",
                    message: Some(apply_failure(&e, declared)),
                });
            }
        }
    }
    establish(cluster, &mut crds, &mut results).await;
    store
        .add_to_inventory(&app.name, &applied, clock::now())
        .await?;
    let failed = results
        .iter()
        .any(|r| r.action == "failed" || r.action == "conflict");
    if prune && !failed {
        prune_stale(store, cluster, app, desired, &mut others, &mut results).await?;
    }
    let failures = results
        .iter()
        .filter(|r| r.action == "failed" || r.action == "conflict")
        .count();
    let status = if failures > 0 {
        SyncStatus::Failed
    } else {
        SyncStatus::Succeeded
    };
    let message = (failures > 0).then(|| {
        let mut m = format!("{failures} of {} resources failed", results.len());
        if !conflicts.is_empty() {
            m.push_str(&format!(
                " ({} declared by another application too)",
                conflicts.len()
            ));
        }
        m
    });
    let now = clock::now();
    store
        .finish_sync(id, status, &json!(results), message.as_deref(), now)
        .await?;
    let short = if revision.contains('.') {
        revision
    } else {
        &revision[..revision.len().min(12)]
    };
    let kept = results.iter().filter(|r| r.action == "kept").count();
    let kept_note = match kept {
        0 => String::new(),
        n => format!("; {n} left to another application, not pruned"),
    };
    let summary = match &message {
        None => format!(
            "sync of {short} succeeded ({} resources{kept_note})",
            results.len()
        ),
        Some(m) => format!("sync of {short} failed: {m}"),
    };
    // Who vouched for what was deployed (only when the commit is signed at all).
    let summary = match signature.as_ref().filter(|v| v.method.is_some()) {
        Some(v) => format!("{summary} · {}", v.describe()),
        None => summary,
    };
    store
        .add_timeline(
            &app.name,
            "sync",
            &summary,
            &json!({"sync": id, "status": status, "signature": signature.as_ref().map(|v| v.status.as_str()), "signer": signature.as_ref().and_then(|v| v.signer.clone())}),
            now,
        )
        .await?;
    for (object, owner) in &conflicts {
        let name = format!("{} {}", object.kind, display_ref(object));
        let detail = json!({"object": object, "owner": owner, "claimant": app.name, "sync": id});
        let mine = format!(
            "conflict: {name} is declared by application {owner} too, which keeps it; not applied by this sync"
        );
        record_conflict(store, &app.name, &mine, &detail, now).await?;
        let theirs = format!(
            "conflict: application {} declares {name} too; this application keeps it and {} did not apply it",
            app.name, app.name
        );
        record_conflict(store, owner, &theirs, &detail, now).await?;
    }
    if status == SyncStatus::Succeeded {
        if let Some(open) = store.open_drift(&app.name).await? {
            let reason = match cause {
                "self_heal" => "self_healed",
                "rollback" => "rollback",
                _ => "synced",
            };
            close_drift(store, &app.name, &open, reason, now).await?;
        }
    }
    Ok((id, status, results))
}

fn display_ref(o: &ObjectRef) -> String {
    if o.namespace.is_empty() {
        o.name.clone()
    } else {
        format!("{}/{}", o.namespace, o.name)
    }
}

/// Deletes the inventory objects no longer desired that are still this application's (their
/// tracking annotation is its id, or — applied before the annotation existed — they have none)
/// and that no other application declares, in reverse apply order. The others are dropped from
/// the inventory and reported as `kept`; ones already gone are dropped as `pruned`.
async fn prune_stale(
    store: &Store,
    cluster: &ClusterClient,
    app: &AppSource,
    desired: &[Value],
    others: &mut Others<'_>,
    results: &mut Vec<ResourceResult>,
) -> Result<(), ReconcileError> {
    let wanted: BTreeSet<ObjectRef> = desired.iter().map(ObjectRef::of).collect();
    let stale: Vec<Value> = store
        .inventory(&app.name)
        .await?
        .iter()
        .filter(|i| !wanted.contains(&inventory_key(i)))
        .map(inventory_object)
        .collect();
    let mut done = Vec::new();
    for obj in sync_order(&stale).into_iter().rev() {
        let object = describe(obj);
        let key = ObjectRef::of(obj);
        let mut result = |action: &'static str, message: Option<String>| {
            results.push(ResourceResult {
                object: object.clone(),
                action,
                message,
            });
        };
        let live = match cluster.get_direct(obj).await {
            Ok(live) => live,
            Err(ClusterError::UnknownKind { .. }) => None,
            Err(e) => {
                result("failed", Some(e.to_string()));
                continue;
            }
        };
        let Some(live) = live else {
            done.push(item_of(obj));
            result("pruned", Some("already gone".into()));
            continue;
        };
        let declaring = match others.declaring(&key).await {
            Ok(d) => d,
            Err(e) => {
                result(
                    "failed",
                    Some(format!("cannot tell which application keeps it: {e}")),
                );
                continue;
            }
        };
        let keep = match mark_of(&live, &app.name, &key) {
            Mark::Other { app: owner, value } if owner != app.name => Some(format!(
                "not pruned: application {owner} manages it now ({TRACKING_ANNOTATION}: {value})"
            )),
            Mark::Other { value, .. } => Some(format!(
                "not pruned: its {TRACKING_ANNOTATION} names another object ({value})"
            )),
            _ if !declaring.is_empty() => Some(format!(
                "not pruned: application {} declares it",
                declaring.join(", ")
            )),
            _ => None,
        };
        if let Some(reason) = keep {
            done.push(item_of(obj));
            result("kept", Some(reason));
            continue;
        }
        match cluster.delete_unchanged(obj, &live).await {
            Ok(()) => {
                done.push(item_of(obj));
                result("pruned", None);
            }
            Err(e @ ClusterError::Api { code: 409, .. }) => result(
                "failed",
                Some(format!(
                    "{e}: it changed since it was read; compared again at the next sync"
                )),
            ),
            Err(e) => result("failed", Some(e.to_string())),
        }
    }
    store.remove_from_inventory(&app.name, &done).await?;
    Ok(())
}

/// Longest a sync waits for its PreSync hooks (a migration Job) to finish.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(600);

/// Whether a hook's previous object is deleted before it is applied: Helm's
/// `helm.sh/hook-delete-policy` includes `before-hook-creation`, or is not set (Helm's and Argo
/// CD's default).
fn recreated_before_sync(obj: &Value) -> bool {
    obj["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
        .as_str()
        .is_none_or(|p| p.split(',').any(|p| p.trim() == "before-hook-creation"))
}

/// Deletes `obj`'s live counterpart and waits (up to 60 s) until the API server no longer
/// has it.
async fn recreate(cluster: &ClusterClient, obj: &Value) -> Result<(), ClusterError> {
    if cluster.get_direct(obj).await?.is_none() {
        return Ok(());
    }
    cluster.delete(obj).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if cluster.get_direct(obj).await?.is_none() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(ClusterError::Api {
        object: describe(obj),
        code: 0,
        reason: "Timeout".into(),
        message: "still being deleted after 60 s".into(),
    })
}

/// Waits until every hook in `hooks` is healthy (a Job complete, a Pod succeeded; other kinds
/// as their health rules say), then empties the list. `Err((object, why))` for the first that
/// fails (Degraded) or is not finished within [`HOOK_TIMEOUT`].
async fn wait_for_hooks(
    cluster: &ClusterClient,
    hooks: &mut Vec<&Value>,
) -> Result<(), (String, String)> {
    let deadline = Instant::now() + HOOK_TIMEOUT;
    for hook in hooks.drain(..) {
        loop {
            let live = cluster
                .get_direct(hook)
                .await
                .map_err(|e| (describe(hook), format!("PreSync hook: {e}")))?;
            let assessment = crate::cluster::health::assess(live.as_ref());
            match assessment.health {
                crate::cluster::health::Health::Healthy => break,
                crate::cluster::health::Health::Degraded => {
                    return Err((
                        describe(hook),
                        format!("PreSync hook failed: {}", assessment.message),
                    ))
                }
                _ if Instant::now() >= deadline => {
                    return Err((
                        describe(hook),
                        format!(
                            "PreSync hook not finished after {} s ({})",
                            HOOK_TIMEOUT.as_secs(),
                            assessment.message
                        ),
                    ))
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(annotation: Option<&str>) -> Value {
        let mut o = json!({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "shared", "namespace": "shop"}});
        if let Some(a) = annotation {
            o["metadata"]["annotations"] = json!({ TRACKING_ANNOTATION: a });
        }
        o
    }

    #[test]
    fn the_tracking_id_names_the_application_and_the_object() {
        let o = cm(None);
        assert_eq!(
            tracking_id("a", &ObjectRef::of(&o)),
            "a:/ConfigMap:shop/shared"
        );
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                         "metadata": {"name": "widgets.example.com"}});
        assert_eq!(
            tracking_id("a", &ObjectRef::of(&crd)),
            "a:apiextensions.k8s.io/CustomResourceDefinition:/widgets.example.com"
        );
    }

    #[test]
    fn the_live_annotation_decides_whose_an_object_is() {
        let key = ObjectRef::of(&cm(None));
        assert_eq!(mark_of(&cm(None), "a", &key), Mark::Unmarked);
        assert_eq!(
            mark_of(&cm(Some("a:/ConfigMap:shop/shared")), "a", &key),
            Mark::Ours
        );
        assert_eq!(
            mark_of(&cm(Some("b:/ConfigMap:shop/shared")), "a", &key),
            Mark::Other {
                app: "b".into(),
                value: "b:/ConfigMap:shop/shared".into()
            }
        );
        // Copied from another object: not this object's id, even with this application's name.
        assert!(matches!(
            mark_of(&cm(Some("a:/ConfigMap:shop/other")), "a", &key),
            Mark::Other { app, .. } if app == "a"
        ));
    }

    #[test]
    fn crds_in_the_set_declare_the_scope_of_their_kinds() {
        let objects = vec![
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                   "metadata": {"name": "widgets.example.com"},
                   "spec": {"group": "example.com", "scope": "Namespaced",
                            "names": {"kind": "Widget", "plural": "widgets"}}}),
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                   "metadata": {"name": "realms.example.com"},
                   "spec": {"group": "example.com", "scope": "Cluster",
                            "names": {"kind": "Realm", "plural": "realms"}}}),
            json!({"apiVersion": "example.com/v1", "kind": "CustomResourceDefinition",
                   "metadata": {"name": "not-a-crd"}}),
        ];
        let scopes = declared_scopes(&objects);
        assert_eq!(scopes.len(), 2);
        assert_eq!(
            scopes.get(&("example.com".into(), "Widget".into())),
            Some(&true)
        );
        assert_eq!(
            scopes.get(&("example.com".into(), "Realm".into())),
            Some(&false)
        );
    }
}
