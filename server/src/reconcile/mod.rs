//! Reconciliation: comparing an application's desired snapshot with the cluster, and syncing
//! (ordered server-side apply, then prune of inventory objects no longer in Git that are still
//! this application's; `sync.rs`), with every sync written ahead and closed exactly once. The
//! engine's scheduler (`engine::scheduler`) decides when each application is reconciled.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{json, Value};

mod sync;

pub use sync::{desired, place_all, sync, tracking_id, CRD_ESTABLISH_TIMEOUT, TRACKING_ANNOTATION};

use crate::clock;
use crate::cluster::client::{ClusterClient, ClusterError};
use crate::cluster::health::{self, Assessment, Health};
use crate::diff::{self, IgnoreRule, ObjectRef, ResourceDiff, ResourceStatus};
use crate::domain::plan;
use crate::store::{
    Actor, AppSource, AppStatus, InventoryItem, OpenDrift, RequestChange, Store, StoreError,
    SyncStatus,
};

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
    /// `require_signed` and the revision is not signed by a trusted key: nothing is applied.
    #[error("{0}")]
    Unverified(String),
    /// An application declared in Git would sync objects outside its project's bounds:
    /// nothing is applied.
    #[error("{0}")]
    OutsideProject(String),
}

impl ReconcileError {
    /// The `kind` label of `tidemark_reconcile_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            ReconcileError::Store(_) => "store",
            ReconcileError::Cluster(_) => "cluster",
            ReconcileError::NotRendered(_) => "render",
            ReconcileError::CorruptSnapshot(_) => "snapshot",
            ReconcileError::Unverified(_) => "unverified",
            ReconcileError::OutsideProject(_) => "bounds",
        }
    }
}

/// One lock per application, so the loop and a person never sync the same application at once.
#[derive(Clone, Default)]
pub struct AppLocks(
    std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
    >,
);

impl AppLocks {
    /// Waits for and holds the application's lock until the guard is dropped.
    pub async fn lock(&self, app: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let mutex = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(app.to_owned()).or_default().clone()
        };
        mutex.lock_owned().await
    }
}

/// A synced revision counts as known-good only if the application became healthy within this.
pub const KNOWN_GOOD_TIMEOUT_MS: i64 = 5 * 60 * 1000;

/// What a sync did to one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceResult {
    pub object: String,
    pub action: &'static str,
    pub message: Option<String>,
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
    Ok(observe(store, cluster, app, desired, ignore).await?.0)
}

/// [`compare`], also returning the live objects it read. Each desired object with a live
/// counterpart is compared by server-side diff ([`compare_one`]); a kind the cluster does not
/// serve yet (its CRD is in the same application) reads as Missing.
pub async fn observe(
    store: &Store,
    cluster: &ClusterClient,
    app: &AppSource,
    desired: &[Value],
    ignore: &[IgnoreRule],
) -> Result<(Vec<ResourceDiff>, BTreeMap<ObjectRef, Value>), ReconcileError> {
    let inventory = store.inventory(&app.name).await?;
    let ignored_managers = app.compare.ignored_managers();
    let mut live = BTreeMap::new();
    let mut out = Vec::with_capacity(desired.len());
    for o in desired {
        // Helm hooks run on each sync and are not part of the compared state (as in Argo CD):
        // a finished migration Job is neither drift nor health.
        if crate::render::helm::hook_phase(o).is_some() {
            continue;
        }
        let object = ObjectRef::of(o);
        // Declared in Git and outside the project's bounds: never applied, and not read either
        // (Git naming an object must not show its live state to this application's viewers).
        if let Some(Err(why)) = app.bounds.as_ref().map(|b| b.admits(&app.cluster, o)) {
            out.push(ResourceDiff {
                object,
                status: ResourceStatus::OutOfSync,
                changes: Vec::new(),
                compared_by: format!("{}: {why}", diff::OUTSIDE_BOUNDS),
            });
            continue;
        }
        let found = match cluster.get(o).await {
            Ok(found) => found,
            Err(ClusterError::UnknownKind { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        match found {
            None => out.push(ResourceDiff {
                object,
                status: ResourceStatus::Missing,
                changes: Vec::new(),
                compared_by: String::new(),
            }),
            Some(l) => {
                out.push(compare_one(cluster, o, &l, ignore, &ignored_managers).await);
                live.insert(object, l);
            }
        }
    }
    let wanted: BTreeSet<ObjectRef> = desired.iter().map(ObjectRef::of).collect();
    for item in &inventory {
        let key = inventory_key(item);
        if wanted.contains(&key) {
            continue;
        }
        match cluster.get(&inventory_object(item)).await {
            Ok(Some(l)) => {
                out.push(ResourceDiff {
                    object: key.clone(),
                    status: ResourceStatus::Extraneous,
                    changes: Vec::new(),
                    compared_by: String::new(),
                });
                live.insert(key, l);
            }
            Ok(None) | Err(ClusterError::UnknownKind { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    out.sort_by(|a, b| a.object.cmp(&b.object));
    Ok((out, live))
}

/// Server-side diff of one object: the API server's answer to a dry-run apply of `desired`
/// compared with `live` (list keys from the server's OpenAPI schema; fields kubectl's
/// client-side apply owns and Git no longer sets count as removed, as the next sync removes
/// them). Where the dry run is refused, the pure compare of the fields Git names, saying why.
pub async fn compare_one(
    cluster: &ClusterClient,
    desired: &Value,
    live: &Value,
    ignore: &[IgnoreRule],
    ignored_managers: &[String],
) -> ResourceDiff {
    let object = ObjectRef::of(desired);
    let pointers: Vec<&str> = ignore
        .iter()
        .filter(|r| r.selects(&object))
        .flat_map(|r| r.json_pointers.iter().map(String::as_str))
        .collect();
    let api_version = desired["apiVersion"].as_str().unwrap_or_default();
    let schema = cluster.schema(api_version, &object.kind).await;
    let root = schema.as_ref().and_then(|s| s.kind(&object.kind));
    match cluster.predict(desired, live).await {
        Ok((predicted, fresher)) => {
            // The watch cache may lag the object the dry run saw: compare with that one.
            let live = fresher.as_ref().unwrap_or(live);
            let managed = &live["metadata"]["managedFields"];
            let taken_over;
            let predicted: &Value = if diff::predicted::has_client_side_apply(live) {
                taken_over =
                    diff::predicted::after_client_side_takeover(&predicted, desired, managed);
                &taken_over
            } else {
                &predicted
            };
            let cx = diff::predicted::Context {
                schema: root,
                managed_fields: Some(managed),
                ignore_managers: ignored_managers,
                ignore_pointers: &pointers,
            };
            let changes = diff::predicted::changes(&object, predicted, live, &cx);
            ResourceDiff {
                object,
                status: if changes.is_empty() {
                    ResourceStatus::Synced
                } else {
                    ResourceStatus::OutOfSync
                },
                changes,
                compared_by: diff::DRY_RUN.to_owned(),
            }
        }
        Err(e) => {
            // A refusal may quote a field's value: for Secrets only the reason is kept.
            let why = match &e {
                ClusterError::Api { reason, .. } if object.kind == "Secret" => {
                    format!("dry run refused: {reason}")
                }
                ClusterError::Api {
                    reason, message, ..
                } => format!("dry run refused: {message} ({reason})"),
                other => format!("dry run failed: {other}"),
            };
            diff::pure(object, desired, live, root, &pointers, &why)
        }
    }
}

pub async fn close_drift(
    store: &Store,
    app: &str,
    open: &OpenDrift,
    reason: &str,
    now: i64,
) -> Result<(), StoreError> {
    if store.close_drift_episode(open.id, reason, now).await? {
        let secs = (now - open.opened_at).max(0) / 1000;
        let how = match reason {
            "self_healed" => "self-healed",
            "reverted" => "reverted in cluster",
            "rollback" => "closed by a rollback",
            _ => "closed by a sync",
        };
        let message = format!("drift episode ended: {how} after {secs}s");
        store
            .add_timeline(
                app,
                "drift_closed",
                &message,
                &json!({"episode": open.id, "reason": reason}),
                now,
            )
            .await?;
    }
    Ok(())
}

/// The signature verdict on `revision` of `app`: against its current keys, or — when that is
/// not `verified` — the verified verdict a successful sync of that revision recorded at deploy
/// time (`None`: not checked yet). Under `require_signed` anything but a verified revision is
/// refused with a message saying why; otherwise the verdict is only returned (recorded with the
/// sync).
pub async fn signature_gate(
    store: &Store,
    app: &AppSource,
    revision: &str,
) -> Result<Option<app::model::SignatureVerdict>, ReconcileError> {
    let mut verdict = store.revision_signature(&app.name, revision).await?;
    if !verdict.as_ref().is_some_and(|v| v.is_verified()) {
        // History keeps its verdict: a revision deployed under a verified signature stays
        // deployable (a rollback to it) after its key is retired.
        if let Some(then) = store.deployed_signature(&app.name, revision).await? {
            verdict = Some(then);
        }
    }
    if app.require_signed && !verdict.as_ref().is_some_and(|v| v.is_verified()) {
        return Err(ReconcileError::Unverified(unverified_message(
            app,
            revision,
            verdict.as_ref(),
        )));
    }
    Ok(verdict)
}

/// For an application declared in Git: every object of `desired` within its project's bounds,
/// else [`ReconcileError::OutsideProject`] naming the first few that are not (nothing is
/// applied then: Argo CD refuses such a sync whole as well).
pub fn bounds_gate(app: &AppSource, desired: &[serde_json::Value]) -> Result<(), ReconcileError> {
    let Some(bounds) = &app.bounds else {
        return Ok(());
    };
    let refused: Vec<String> = desired
        .iter()
        .filter_map(|o| bounds.admits(&app.cluster, o).err())
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    let shown = refused
        .iter()
        .take(5)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    let more = match refused.len() {
        n if n > 5 => format!(" (and {} more)", n - 5),
        _ => String::new(),
    };
    Err(ReconcileError::OutsideProject(format!(
        "{} is declared in Git and {} of its {} objects fall outside project `{}`'s bounds, so nothing is applied: {shown}{more}",
        app.name,
        refused.len(),
        desired.len(),
        app.project
    )))
}

/// `revision 1a2b3c4 of web is not deployed: unsigned (require_signed: only commits signed by a
/// trusted key are synced)`.
pub fn unverified_message(
    app: &AppSource,
    revision: &str,
    verdict: Option<&app::model::SignatureVerdict>,
) -> String {
    let why = match verdict {
        Some(v) => {
            let mut why = v.describe();
            if let Some(detail) = v.detail.as_deref().filter(|_| !v.is_verified()) {
                why = format!("{why}: {detail}");
            }
            why
        }
        None => "its signature has not been checked yet".to_owned(),
    };
    format!(
        "revision {} of {} is not deployed: {why} (require_signed: only commits signed by a trusted key are synced)",
        app::model::short_revision(revision),
        app.name
    )
}

/// Records, once per revision and verdict, that `app`'s target is blocked by `require_signed`
/// (a timeline entry that notifies), and closes a pending request (nothing it could approve
/// would be applied); the deployed revision stays.
async fn record_blocked(
    store: &Store,
    app: &AppSource,
    sha: &str,
    verdict: Option<&app::model::SignatureVerdict>,
    now: clock::Millis,
) -> Result<(), ReconcileError> {
    // Not checked yet against the current keys (just after a restart with new keys): wait,
    // closing nothing and telling nobody; the check comes with the next fetch.
    let Some(verdict) = verdict else {
        return Ok(());
    };
    let verdict = Some(verdict);
    close_open_request(
        store,
        app,
        "its target revision is not signed by a trusted key (require_signed)",
        now,
    )
    .await?;
    let status = verdict.map(|v| v.status.as_str()).unwrap_or("unchecked");
    let last = store
        .last_timeline_detail(&app.name, "revision_blocked")
        .await?;
    if last
        .as_ref()
        .is_some_and(|d| d["revision"] == sha && d["signature"] == status)
    {
        return Ok(());
    }
    store
        .add_timeline(
            &app.name,
            "revision_blocked",
            &unverified_message(app, sha, verdict),
            &json!({"revision": sha, "signature": status, "fingerprint": verdict.and_then(|v| v.fingerprint.clone())}),
            now,
        )
        .await?;
    Ok(())
}

/// An automated sync (or an approval request) refused by [`bounds_gate`]: a `sync_refused`
/// timeline entry, once per rendered target and reason (the reconcile loop tries every
/// interval).
async fn record_outside_project(
    store: &Store,
    app: &AppSource,
    digest: &str,
    why: &str,
    now: clock::Millis,
) -> Result<(), ReconcileError> {
    store
        .add_timeline_once(
            &app.name,
            "sync_refused",
            why,
            &json!({"digest": digest, "reason": "bounds", "why": why}),
            &["digest", "why"],
            now,
        )
        .await?;
    Ok(())
}

/// What one reconcile step found and did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub sync_status: &'static str,
    pub health: Health,
    /// The sync this step ran, if any.
    pub synced: Option<(i64, SyncStatus)>,
    /// Whether a drift episode is open after this step.
    pub drifting: bool,
}

/// One reconcile of one application: **observe** (its target, the live objects, the last
/// sync, the open drift episode, the pin), **assess** and **plan** (`domain::plan`, pure), then
/// **execute** the steps (drift episodes, approval requests, sync) and record status, health and
/// known-good. Deterministic given the store and the cluster; the scheduler decides when.
#[tracing::instrument(skip_all, fields(app = %app.name))]
pub async fn reconcile_app(
    store: &Store,
    cluster: &ClusterClient,
    app: &AppSource,
) -> Result<Outcome, ReconcileError> {
    // Observe.
    let (sha, digest, desired_objects) = desired(store, cluster, app).await?;
    let (mut diffs, mut live) = observe(store, cluster, app, &desired_objects, &app.ignore).await?;
    let deployed = store.last_successful_sync(&app.name).await?;
    let open = store.open_drift(&app.name).await?;
    let pinned = store.pin_of(&app.name).await?.is_some();
    let verdict = store.revision_signature(&app.name, &sha).await?;
    let now = clock::now();

    // Assess and plan.
    // Declared in Git with objects outside its project's bounds: nothing to sync or approve
    // (as an unverified target), said once. Those objects are not compared, so they are no
    // drift (bounds tightened after a deploy open no episode); a target not deployed yet is
    // out of sync, and the sync it needs is refused below.
    let outside = bounds_gate(app, &desired_objects)
        .err()
        .map(|e| e.to_string());
    let new_revision = deployed.as_ref().is_none_or(|(_, d)| *d != digest);
    let compared_out = diffs.iter().any(|d| {
        d.status != ResourceStatus::Synced && !d.compared_by.starts_with(diff::OUTSIDE_BOUNDS)
    });
    let assessment = plan::assess(
        compared_out || (outside.is_some() && new_revision),
        new_revision,
    );
    let policy = plan::Policy {
        auto_sync: app.auto_sync,
        self_heal: app.self_heal,
        approvals_required: app.approvals.required,
        require_signed: app.require_signed,
    };
    let target_verified = verdict.as_ref().is_some_and(|v| v.is_verified());
    let steps = plan::plan(
        &assessment,
        open.is_some(),
        pinned,
        target_verified,
        &policy,
    );

    // Execute.
    let mut synced = None;
    for step in steps {
        if let (Some(why), plan::Step::RequestApproval(_) | plan::Step::Sync(_)) = (&outside, step)
        {
            record_outside_project(store, app, &digest, why, now).await?;
            close_open_request(
                store,
                app,
                "its target is outside the project's bounds",
                now,
            )
            .await?;
            continue;
        }
        match step {
            plan::Step::OpenDriftEpisode => open_drift(store, app, &diffs, now).await?,
            plan::Step::CloseDriftEpisode => {
                if let Some(open) = &open {
                    close_drift(store, &app.name, open, "reverted", now).await?;
                }
            }
            plan::Step::RequestApproval(cause) => {
                request_approval(store, app, &sha, &digest, cause, now).await?
            }
            plan::Step::CloseOpenRequest => {
                close_open_request(store, app, "the application is in sync again", now).await?
            }
            plan::Step::HoldUnverified => {
                record_blocked(store, app, &sha, verdict.as_ref(), now).await?
            }
            plan::Step::Sync(cause) => {
                let result = sync(
                    store,
                    cluster,
                    app,
                    &sha,
                    &digest,
                    &desired_objects,
                    app.prune,
                    cause.as_str(),
                    &Actor::system(),
                )
                .await;
                match result {
                    Ok((id, status, _)) => {
                        synced = Some((id, status));
                        (diffs, live) =
                            observe(store, cluster, app, &desired_objects, &app.ignore).await?;
                    }
                    Err(ReconcileError::OutsideProject(why)) => {
                        record_outside_project(store, app, &digest, &why, now).await?
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    let (sync_status, app_health) =
        record_status(store, app, &sha, &desired_objects, &diffs, &live, now).await?;
    Ok(Outcome {
        sync_status,
        health: app_health,
        synced,
        drifting: store.open_drift(&app.name).await?.is_some(),
    })
}

/// Opens a drift episode naming the resources that differ (one open episode per application:
/// none if another reconcile opened it a moment ago).
async fn open_drift(
    store: &Store,
    app: &AppSource,
    diffs: &[ResourceDiff],
    now: clock::Millis,
) -> Result<(), ReconcileError> {
    let drifted: Vec<&ResourceDiff> = diffs
        .iter()
        .filter(|d| d.status != ResourceStatus::Synced)
        .collect();
    if let Some(id) = store
        .open_drift_episode(&app.name, &json!(drifted), now)
        .await?
    {
        let names: Vec<String> = drifted
            .iter()
            .map(|d| format!("{} {}", d.object.kind, d.object.name))
            .collect();
        let message = format!(
            "drift detected: {} differ from the last sync ({})",
            drifted.len(),
            names.join(", ")
        );
        let detail = json!({"episode": id, "resources": drifted});
        store
            .add_timeline(&app.name, "drift_opened", &message, &detail, now)
            .await?;
    }
    Ok(())
}

/// Records what the reconcile found: per-resource status and health, the application's health
/// (a change goes on the timeline) and known-good when synced and healthy. Returns the sync
/// status ("Synced"/"OutOfSync") and health.
async fn record_status(
    store: &Store,
    app: &AppSource,
    sha: &str,
    desired_objects: &[Value],
    diffs: &[ResourceDiff],
    live: &BTreeMap<ObjectRef, Value>,
    now: clock::Millis,
) -> Result<(&'static str, Health), ReconcileError> {
    let assessments: Vec<(ObjectRef, Assessment)> = desired_objects
        .iter()
        // Hooks are not part of the application's health (see `observe`).
        .filter(|o| crate::render::helm::hook_phase(o).is_none())
        .map(|o| {
            (
                ObjectRef::of(o),
                health::assess(live.get(&ObjectRef::of(o))),
            )
        })
        .collect();
    let app_health = health::worst(assessments.iter().map(|(_, a)| a));
    let worst_message = assessments
        .iter()
        .filter(|(_, a)| a.health == app_health && app_health != Health::Healthy)
        .map(|(o, a)| format!("{} {}: {}", o.kind, o.name, a.message))
        .next()
        .unwrap_or_default();
    let in_sync = diffs.iter().all(|d| d.status == ResourceStatus::Synced);
    let resources: Vec<Value> = diffs
        .iter()
        .map(|d| {
            let a = assessments
                .iter()
                .find(|(o, _)| *o == d.object)
                .map(|(_, a)| a.clone());
            json!({"object": d.object, "status": d.status, "changes": d.changes,
                   "health": a.as_ref().map(|a| a.health), "health_message": a.map(|a| a.message)})
        })
        .collect();
    let deployed_sha = store
        .last_successful_sync(&app.name)
        .await?
        .map(|(rev, _)| rev);
    let sync_status = if in_sync { "Synced" } else { "OutOfSync" };
    let previous = store.app_status(&app.name).await?;
    let health_name = format!("{app_health:?}");
    if previous.as_ref().is_some_and(|p| p.health != health_name) {
        // The resource that made it so: "Healthy → Degraded: Deployment/web:
        // ProgressDeadlineExceeded …" (none when it became Healthy).
        let cause = assessments
            .iter()
            .find(|(_, a)| a.health == app_health && app_health != Health::Healthy);
        let mut message = format!(
            "health changed: {} → {health_name}",
            previous.as_ref().map(|p| p.health.as_str()).unwrap_or("?")
        );
        let mut detail = json!({"health": app_health});
        if let Some((o, a)) = cause {
            message.push_str(&format!(": {}/{}: {}", o.kind, o.name, a.message));
            detail["cause"] = json!({"kind": o.kind, "namespace": o.namespace, "name": o.name,
                                     "message": a.message});
        }
        store
            .add_timeline(&app.name, "health", &message, &detail, now)
            .await?;
    }
    let status = AppStatus {
        sync_status: sync_status.into(),
        health: health_name,
        health_message: worst_message,
        target_sha: Some(sha.to_owned()),
        deployed_sha,
        resources: Value::Array(resources),
        compared_at: now,
    };
    store.save_status(&app.name, &status).await?;
    if app_health == Health::Healthy && in_sync {
        if let Some(revision) = store
            .mark_known_good(&app.name, now, KNOWN_GOOD_TIMEOUT_MS)
            .await?
        {
            let short = if revision.contains('.') {
                revision.as_str()
            } else {
                &revision[..revision.len().min(12)]
            };
            let message = format!("{short} is known-good: synced and healthy");
            store
                .add_timeline(
                    &app.name,
                    "known_good",
                    &message,
                    &json!({"revision": revision}),
                    now,
                )
                .await?;
        }
    }
    Ok((sync_status, app_health))
}

/// Manual applications with approvals: an out-of-sync target (new revision or drift) has one
/// open sync request bound to (revision, digest).
async fn request_approval(
    store: &Store,
    app: &AppSource,
    sha: &str,
    digest: &str,
    cause: plan::RequestCause,
    now: clock::Millis,
) -> Result<(), ReconcileError> {
    let short = app::model::short_revision(sha);
    let required = i64::from(app.approvals.required);
    let RequestChange::Created { id, superseded } = store
        .ensure_sync_request(&app.name, sha, digest, cause.as_str(), required, now)
        .await?
    else {
        return Ok(());
    };
    if let Some(old) = superseded {
        let voided = store
            .sync_request(old)
            .await?
            .map(|r| r.approvals.len())
            .unwrap_or(0);
        let message = match voided {
            0 => format!("sync request #{old} superseded by #{id}: the target moved"),
            n => format!("sync request #{old} superseded by #{id}: the target moved; its approvals are void ({n})"),
        };
        store
            .add_timeline(
                &app.name,
                "sync_request_superseded",
                &message,
                &json!({"request": old, "superseded_by": id, "voided_approvals": voided, "revision": sha}),
                now,
            )
            .await?;
    }
    let why = match cause {
        plan::RequestCause::Drift => "to undo drift",
        plan::RequestCause::Revision => "for a new revision",
    };
    let signed = match store.revision_signature(&app.name, sha).await? {
        Some(v) => format!(", {}", v.describe()),
        None => String::new(),
    };
    store
        .add_timeline(
            &app.name,
            "sync_requested",
            &format!("sync request #{id} {why} (deploys {short}{signed}) waits for {required} approval(s)"),
            &json!({"request": id, "revision": sha, "digest": digest, "cause": cause.as_str(), "required": required, "approvers": app.approvals.groups}),
            now,
        )
        .await?;
    Ok(())
}

/// A pending request has nothing left to approve (in sync again, or its target is held back).
async fn close_open_request(
    store: &Store,
    app: &AppSource,
    why: &str,
    now: clock::Millis,
) -> Result<(), ReconcileError> {
    if let Some(id) = store.close_pending_request(&app.name, why, now).await? {
        store
            .add_timeline(
                &app.name,
                "sync_request_superseded",
                &format!("sync request #{id} closed: {why}"),
                &json!({"request": id}),
                now,
            )
            .await?;
    }
    Ok(())
}
