//! Decisions people make: approve or reject a sync request (role checked by the guard; here the
//! policy's groups and four-eyes), run an approved request exactly once (claimed in one
//! conditional UPDATE, so two replicas or two clicks never apply twice), roll back to a
//! known-good revision, unpin. Errors are [`EngineError`]s; the HTTP layer maps them.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;

use super::EngineError;
use crate::auth::Principal;
use crate::clock;
use crate::cluster::client::ClusterClient;
use crate::reconcile::{self, AppLocks};
use crate::store::{RequestStatus, Store, SyncRequest};

/// What a decision needs from the running service.
pub struct Deps<'a> {
    pub store: &'a Store,
    pub clusters: &'a HashMap<String, Arc<ClusterClient>>,
    pub locks: &'a AppLocks,
    /// The reconcile queue: after a decision the application is compared again at once.
    pub queue: &'a super::WorkQueue,
}

fn short(sha: &str) -> &str {
    app::model::short_revision(sha)
}

async fn request(deps: &Deps<'_>, id: i64) -> Result<SyncRequest, EngineError> {
    deps.store
        .sync_request(id)
        .await?
        .ok_or_else(|| EngineError::NotFound(format!("sync request {id}")))
}

/// Whether `who` may approve `req` beyond their role: the policy's groups, four-eyes on the
/// commit's verified signer (or, for a commit without one, its author line; by e-mail) and on a
/// rollback's requester, one approval per person. The
/// error says why not, in words the UI shows next to the disabled button.
pub async fn may_approve(
    store: &Store,
    who: &Principal,
    req: &SyncRequest,
    source: &crate::store::AppSource,
) -> Result<(), EngineError> {
    let policy = &source.approvals;
    if !policy.groups.is_empty() && !who.groups.iter().any(|g| policy.groups.contains(g)) {
        return Err(EngineError::Forbidden(format!(
            "approvers of {} must be in one of the groups {}",
            req.application,
            policy.groups.join(", ")
        )));
    }
    // Four-eyes: the author of the change does not approve it. The request is bound to the
    // branch tip, which can be another application's commit: the newest commit touching this
    // application's path counts too.
    let email = store.user(&who.id).await?.and_then(|u| u.email);
    if let (Some(mine), "revision") = (&email, req.cause.as_str()) {
        let mut commits = vec![req.revision.clone()];
        if let Some((sha, _, _)) = store
            .last_app_change(&req.application, &source.repository, &req.revision)
            .await?
        {
            commits.push(sha);
        }
        // A verified signature names who made the change; the author line is whatever the
        // pusher typed, so it counts only for commits without a verified signer.
        let signatures = store.signatures_of(&req.application, &commits).await?;
        for sha in commits {
            if let Some(signer) = signatures.get(&sha).and_then(|v| v.signer_email()) {
                if signer.eq_ignore_ascii_case(mine) {
                    return Err(EngineError::Forbidden(format!(
                        "you signed commit {} ({signer}); someone else must approve it",
                        short(&sha)
                    )));
                }
                continue;
            }
            let author = store.commit_author_email(&source.repository, &sha).await?;
            if author
                .as_ref()
                .is_some_and(|a| a.eq_ignore_ascii_case(mine))
            {
                return Err(EngineError::Forbidden(format!(
                    "you authored commit {} ({}); someone else must approve it",
                    short(&sha),
                    author.unwrap_or_default()
                )));
            }
        }
    }
    if req.requested_by.as_deref() == Some(who.id.as_str()) {
        return Err(EngineError::Forbidden(
            "you requested this rollback; someone else must approve it".into(),
        ));
    }
    if req.approvals.iter().any(|a| !a.void && a.user_id == who.id) {
        return Err(EngineError::Conflict(format!(
            "you already approved sync request {}",
            req.id
        )));
    }
    Ok(())
}

/// Approves request `id` as `who`. Refuses people outside the policy's groups and the author of
/// the commit (matched by e-mail). When this approval completes the request and the policy
/// says so, the sync runs now. Returns the request as it ends up.
pub async fn approve(
    deps: &Deps<'_>,
    who: &Principal,
    ip: &str,
    id: i64,
) -> Result<SyncRequest, EngineError> {
    let req = request(deps, id).await?;
    let source = deps
        .store
        .app_source(&req.application)
        .await?
        .ok_or_else(|| EngineError::NotFound(format!("application {}", req.application)))?;
    may_approve(deps.store, who, &req, &source).await?;
    let policy = &source.approvals;
    let now = clock::now();
    let event = who.actor(ip).event(
        "approve",
        &format!("application:{}", req.application),
        "success",
        json!({"request": id, "revision": req.revision, "digest": req.digest}),
        now,
    );
    let approved = deps
        .store
        .approve_request(id, &who.id, &who.display_name, &event, now)
        .await?;
    let message = format!(
        "{} approved sync request #{id} for {} ({} of {})",
        who.display_name,
        short(&req.revision),
        approved.approvals,
        approved.required
    );
    deps.store
        .add_timeline(
            &req.application,
            "approval",
            &message,
            &json!({"request": id, "by": who.id, "approvals": approved.approvals, "required": approved.required}),
            now,
        )
        .await
        ?;
    if approved.complete && policy.sync_on_approval {
        run_approved(deps, who, ip, id).await?;
    }
    deps.queue.enqueue(&req.application);
    request(deps, id).await
}

/// Rejects request `id` with a reason.
pub async fn reject(
    deps: &Deps<'_>,
    who: &Principal,
    ip: &str,
    id: i64,
    reason: &str,
) -> Result<SyncRequest, EngineError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(EngineError::Invalid("a rejection needs a reason".into()));
    }
    let req = request(deps, id).await?;
    let now = clock::now();
    let event = who.actor(ip).event(
        "reject",
        &format!("application:{}", req.application),
        "success",
        json!({"request": id, "revision": req.revision, "reason": reason}),
        now,
    );
    deps.store
        .reject_request(id, &who.id, reason, &event, now)
        .await?;
    deps.store
        .add_timeline(
            &req.application,
            "sync_request_rejected",
            &format!(
                "{} rejected sync request #{id} for {}: {reason}",
                who.display_name,
                short(&req.revision)
            ),
            &json!({"request": id, "by": who.id, "reason": reason}),
            now,
        )
        .await?;
    request(deps, id).await
}

/// Runs the sync of an approved request (once: only an `approved` request is run, and it is
/// closed as `synced` or `failed`). The application's target must still render the approved
/// digest (a newer revision that renders the same objects is what was approved); otherwise
/// nothing is applied.
pub async fn run_approved(
    deps: &Deps<'_>,
    who: &Principal,
    ip: &str,
    id: i64,
) -> Result<(), EngineError> {
    let req = request(deps, id).await?;
    if req.status != RequestStatus::Approved {
        return Err(EngineError::Conflict(format!(
            "sync request {id} is {}, not approved",
            req.status
        )));
    }
    let source = deps
        .store
        .app_source(&req.application)
        .await?
        .ok_or_else(|| EngineError::NotFound(format!("application {}", req.application)))?;
    // The claim: exactly one replica or click runs an approved request.
    if !deps.store.claim_approved(id).await? {
        return Err(EngineError::Conflict(format!(
            "sync request {id} is already being run"
        )));
    }
    let result = run_claimed(deps, who, ip, id, &req, &source).await;
    deps.queue.enqueue(&req.application);
    if result.is_err() {
        // Not run (the request is still `approved`): someone may run it again.
        deps.store.release_claim(id).await?;
    }
    result
}

/// [`run_approved`] once the request is claimed.
async fn run_claimed(
    deps: &Deps<'_>,
    who: &Principal,
    ip: &str,
    id: i64,
    req: &SyncRequest,
    source: &crate::store::AppSource,
) -> Result<(), EngineError> {
    if req.cause == "rollback" {
        let target = deps
            .store
            .known_good_revisions(&source.name)
            .await?
            .into_iter()
            .find(|k| k.revision == req.revision && k.digest == req.digest)
            .ok_or_else(|| {
                EngineError::Conflict(format!("{} is no longer known-good", short(&req.revision)))
            })?;
        let reason = req.reason.clone().unwrap_or_default();
        let done = apply_rollback(deps, who, ip, source, &target, &reason).await?;
        let ok = done["status"] == "succeeded";
        deps.store
            .finish_request(
                id,
                if ok {
                    RequestStatus::Synced
                } else {
                    RequestStatus::Failed
                },
                done["sync"].as_i64(),
                None,
            )
            .await?;
        return Ok(());
    }
    let cluster = deps
        .clusters
        .get(&source.cluster)
        .cloned()
        .ok_or_else(|| EngineError::NotFound(format!("cluster {}", source.cluster)))?;
    let _guard = deps.locks.lock(&source.name).await;
    let (revision, digest, desired) = reconcile::desired(deps.store, &cluster, source).await?;
    if digest != req.digest {
        deps.store
            .finish_request(
                id,
                RequestStatus::Failed,
                None,
                Some("the target moved after approval; a new request was opened"),
            )
            .await?;
        return Err(EngineError::Conflict(format!(
            "the target of {} moved after approval; approve the new request",
            req.application
        )));
    }
    let (sync_id, status, _) = reconcile::sync(
        deps.store,
        &cluster,
        source,
        &revision,
        &digest,
        &desired,
        source.prune,
        "approved",
        &who.actor(ip),
    )
    .await?;
    let outcome = if status == crate::store::SyncStatus::Succeeded {
        RequestStatus::Synced
    } else {
        RequestStatus::Failed
    };
    deps.store
        .finish_request(id, outcome, Some(sync_id), None)
        .await?;
    Ok(())
}

/// Rolls `app` back to a known-good revision: applies its stored snapshot (no Git needed), then
/// pins the application there with the reason. Returns the sync and the pin.
pub async fn rollback(
    deps: &Deps<'_>,
    who: &Principal,
    ip: &str,
    app: &str,
    revision: &str,
    reason: &str,
) -> Result<serde_json::Value, EngineError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(EngineError::Invalid("a rollback needs a reason".into()));
    }
    // A commit by its SHA or a prefix of at least 7 hex digits; a chart version exactly.
    let sha_prefix = revision.len() >= 7 && revision.bytes().all(|b| b.is_ascii_hexdigit());
    if revision.is_empty()
        || (revision.len() < 7 && revision.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(EngineError::Invalid(
            "name the revision by its commit SHA (at least 7 characters) or its chart version"
                .into(),
        ));
    }
    let source = deps
        .store
        .app_source(app)
        .await?
        .ok_or_else(|| EngineError::NotFound(format!("application {app}")))?;
    let known = deps.store.known_good_revisions(app).await?;
    let target = known
        .iter()
        .find(|k| k.revision == revision || (sha_prefix && k.revision.starts_with(revision)))
        .ok_or_else(|| {
            EngineError::Conflict(format!(
                "{} is not a known-good revision of {app} (one that synced and became healthy); see GET /api/v1/applications/{app}/revisions",
                short(revision)
            ))
        })?
        .clone();
    // `require_signed`: a known-good revision deployed before the policy (or under older keys)
    // is refused now, before anyone is asked to approve it.
    reconcile::signature_gate(deps.store, &source, &target.revision).await?;
    let policy = &source.approvals;
    if policy.rollback && policy.required > 0 {
        let now = clock::now();
        let event = who.actor(ip).event(
            "rollback_request",
            &format!("application:{app}"),
            "pending",
            json!({"revision": target.revision, "digest": target.digest, "reason": reason}),
            now,
        );
        let id = deps
            .store
            .open_rollback_request(
                app,
                &target.revision,
                &target.digest,
                reason,
                &who.id,
                i64::from(policy.required),
                &event,
                now,
            )
            .await?;
        deps.store
            .add_timeline(
                app,
                "rollback_requested",
                &format!("{} asked to roll back to {}: {reason}; sync request #{id} waits for {} approval(s)", who.display_name, short(&target.revision), policy.required),
                &json!({"request": id, "revision": target.revision, "by": who.id, "reason": reason, "approvers": policy.groups}),
                now,
            )
            .await
            ?;
        return Ok(
            json!({"request": id, "status": "pending", "required": policy.required, "revision": target.revision}),
        );
    }
    apply_rollback(deps, who, ip, &source, &target, reason).await
}

/// Applies a known-good revision's stored snapshot, pins the application there and records it.
async fn apply_rollback(
    deps: &Deps<'_>,
    who: &Principal,
    ip: &str,
    source: &crate::store::AppSource,
    target: &crate::store::KnownGood,
    reason: &str,
) -> Result<serde_json::Value, EngineError> {
    let app = source.name.as_str();
    let content = deps
        .store
        .snapshot_to_apply(&target.digest)
        .await?
        .ok_or_else(|| {
            EngineError::Conflict(format!(
                "the snapshot of {} is gone",
                short(&target.revision)
            ))
        })?;
    let cluster = deps
        .clusters
        .get(&source.cluster)
        .cloned()
        .ok_or_else(|| EngineError::NotFound(format!("cluster {}", source.cluster)))?;
    let _guard = deps.locks.lock(&source.name).await;
    let objects = reconcile::place_all(&cluster, &content, &target.digest, source).await?;
    let (sync_id, status, results) = reconcile::sync(
        deps.store,
        &cluster,
        source,
        &target.revision,
        &target.digest,
        &objects,
        source.prune,
        "rollback",
        &who.actor(ip),
    )
    .await?;
    if status != crate::store::SyncStatus::Succeeded {
        return Ok(
            json!({"sync": sync_id, "status": status, "revision": target.revision, "results": results, "pinned": null}),
        );
    }
    let now = clock::now();
    let pin = crate::store::Pin {
        revision: target.revision.clone(),
        digest: target.digest.clone(),
        pinned_by: who.id.clone(),
        pinned_name: who.display_name.clone(),
        pinned_at: now,
        reason: reason.to_owned(),
    };
    let event = who.actor(ip).event(
        "rollback",
        &format!("application:{app}"),
        "success",
        json!({"revision": target.revision, "digest": target.digest, "sync": sync_id, "reason": reason, "pinned": true}),
        now,
    );
    deps.store.pin(app, &pin, &event).await?;
    if let Some(open) = deps.store.open_drift(app).await? {
        reconcile::close_drift(deps.store, app, &open, "rollback", now).await?;
    }
    let title = target.title.clone().unwrap_or_default();
    deps.store
        .add_timeline(
            app,
            "rollback",
            &format!(
                "{} rolled back to {} \"{title}\" and pinned it: {reason}",
                who.display_name,
                short(&target.revision)
            ),
            &json!({"revision": target.revision, "sync": sync_id, "by": who.id, "reason": reason}),
            now,
        )
        .await?;
    deps.queue.enqueue(app);
    Ok(
        json!({"sync": sync_id, "status": status, "revision": target.revision, "results": results, "pinned": pin}),
    )
}

/// Removes the pin: the application follows its normal policy again.
pub async fn unpin(
    deps: &Deps<'_>,
    who: &Principal,
    ip: &str,
    app: &str,
) -> Result<serde_json::Value, EngineError> {
    let pin = deps
        .store
        .pin_of(app)
        .await?
        .ok_or_else(|| EngineError::Conflict(format!("application {app} is not pinned")))?;
    let now = clock::now();
    let event = who.actor(ip).event(
        "unpin",
        &format!("application:{app}"),
        "success",
        json!({"revision": pin.revision, "pinned_by": pin.pinned_by, "pinned_at": pin.pinned_at}),
        now,
    );
    if !deps.store.unpin(app, &event).await? {
        return Err(EngineError::Conflict(format!(
            "application {app} is not pinned"
        )));
    }
    deps.store
        .add_timeline(
            app,
            "unpinned",
            &format!(
                "{} unpinned {} (pinned at {}): the normal sync policy applies again",
                who.display_name,
                short(&pin.revision),
                clock::rfc3339(pin.pinned_at)
            ),
            &json!({"revision": pin.revision, "by": who.id}),
            now,
        )
        .await?;
    deps.queue.enqueue(app);
    Ok(json!({"unpinned": app, "revision": pin.revision}))
}

/// Per resource and field, how two stored revisions of `app` differ (Secret values redacted).
pub async fn diff_revisions(
    store: &Store,
    app: &str,
    from: &str,
    to: &str,
) -> Result<serde_json::Value, EngineError> {
    let mut snapshots = Vec::new();
    // Secret values opened, so that an equal value compares equal whatever form it takes
    // (`stringData` or `data`); the diff redacts them. Without the key, both as stored.
    let mut open = true;
    while snapshots.len() < 2 {
        let rev = if snapshots.is_empty() { from } else { to };
        let row = if open {
            store.render_to_apply(app, rev).await
        } else {
            store.rendered_snapshot(app, rev).await
        };
        let (digest, content) = match row {
            Err(crate::store::StoreError::Secrets(_)) if open => {
                open = false;
                snapshots.clear();
                continue;
            }
            other => other?.ok_or_else(|| {
                EngineError::NotFound(format!("no stored rendering of {app} at revision {rev}"))
            })?,
        };
        let objects: Vec<serde_json::Value> = serde_json::from_str(&content)
            .map_err(|_| EngineError::Corrupt(format!("snapshot {digest}")))?;
        snapshots.push((digest, objects));
    }
    let resources = crate::diff::between(&snapshots[0].1, &snapshots[1].1);
    Ok(
        json!({"from": {"revision": from, "digest": snapshots[0].0}, "to": {"revision": to, "digest": snapshots[1].0}, "resources": resources}),
    )
}
