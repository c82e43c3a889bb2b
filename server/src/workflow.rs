//! Approvals: who may approve a sync request (role checked by the guard; here the policy's
//! groups and four-eyes), recording each decision, and running the approved sync exactly once.

use std::collections::HashMap;
use std::sync::Arc;

use app::model::AppError;
use serde_json::json;

use crate::auth::Principal;
use crate::clock;
use crate::cluster::client::ClusterClient;
use crate::http::internal_error;
use crate::reconcile::{self, AppLocks, ReconcileError};
use crate::store::{DecisionError, Store, SyncRequest};

/// What a decision needs from the running service.
pub struct Deps<'a> {
    pub store: &'a Store,
    pub clusters: &'a HashMap<String, Arc<ClusterClient>>,
    pub locks: &'a AppLocks,
}

fn decision_error(e: DecisionError) -> AppError {
    match e {
        DecisionError::NotFound(id) => AppError::NotFound(format!("sync request {id}")),
        DecisionError::NotPending { .. } | DecisionError::AlreadyApproved(_) => {
            AppError::Conflict(e.to_string())
        }
        DecisionError::Store(e) => internal_error(&e),
    }
}

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

async fn request(deps: &Deps<'_>, id: i64) -> Result<SyncRequest, AppError> {
    deps.store
        .sync_request(id)
        .await
        .map_err(|e| internal_error(&e))?
        .ok_or_else(|| AppError::NotFound(format!("sync request {id}")))
}

/// Approves request `id` as `who`. Refuses people outside the policy's groups and the author of
/// the commit (matched by e-mail). When this approval completes the request and the policy
/// says so, the sync runs now. Returns the request as it ends up.
pub async fn approve(
    deps: &Deps<'_>,
    who: &Principal,
    ip: &str,
    id: i64,
) -> Result<SyncRequest, AppError> {
    let req = request(deps, id).await?;
    let source = deps
        .store
        .app_source(&req.application)
        .await
        .map_err(|e| internal_error(&e))?
        .ok_or_else(|| AppError::NotFound(format!("application {}", req.application)))?;
    let policy = &source.approvals;
    if !policy.groups.is_empty() && !who.groups.iter().any(|g| policy.groups.contains(g)) {
        return Err(AppError::Forbidden(format!(
            "approvers of {} must be in one of the groups {}",
            req.application,
            policy.groups.join(", ")
        )));
    }
    // Four-eyes: the commit's author does not approve their own change.
    let email = deps
        .store
        .user(&who.id)
        .await
        .map_err(|e| internal_error(&e))?
        .and_then(|u| u.email);
    let author = deps
        .store
        .commit_author_email(&source.repository, &req.revision)
        .await
        .map_err(|e| internal_error(&e))?;
    if let (Some(mine), Some(author)) = (&email, &author) {
        if mine.eq_ignore_ascii_case(author) && req.cause == "revision" {
            return Err(AppError::Forbidden(format!(
                "you authored commit {} ({author}); someone else must approve it",
                short(&req.revision)
            )));
        }
    }
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
        .await
        .map_err(decision_error)?;
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
        .map_err(|e| internal_error(&e))?;
    if approved.complete && policy.sync_on_approval {
        run_approved(deps, who, ip, id).await?;
    }
    request(deps, id).await
}

/// Rejects request `id` with a reason.
pub async fn reject(
    deps: &Deps<'_>,
    who: &Principal,
    ip: &str,
    id: i64,
    reason: &str,
) -> Result<SyncRequest, AppError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(AppError::BadRequest("a rejection needs a reason".into()));
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
        .await
        .map_err(decision_error)?;
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
        .await
        .map_err(|e| internal_error(&e))?;
    request(deps, id).await
}

/// Runs the sync of an approved request (once: only an `approved` request is run, and it is
/// closed as `synced` or `failed`). The application's target must still be the approved
/// (revision, digest); otherwise nothing is applied.
pub async fn run_approved(
    deps: &Deps<'_>,
    who: &Principal,
    ip: &str,
    id: i64,
) -> Result<(), AppError> {
    let req = request(deps, id).await?;
    if req.status != "approved" {
        return Err(AppError::Conflict(format!(
            "sync request {id} is {}, not approved",
            req.status
        )));
    }
    let source = deps
        .store
        .app_source(&req.application)
        .await
        .map_err(|e| internal_error(&e))?
        .ok_or_else(|| AppError::NotFound(format!("application {}", req.application)))?;
    let cluster = deps
        .clusters
        .get(&source.cluster)
        .cloned()
        .ok_or_else(|| AppError::NotFound(format!("cluster {}", source.cluster)))?;
    let _guard = deps.locks.lock(&source.name).await;
    let reconcile_err = |e: ReconcileError| match e {
        ReconcileError::Cluster(e) => AppError::Unavailable(e.to_string()),
        other => internal_error(&other),
    };
    let (revision, digest, desired) = reconcile::desired(deps.store, &cluster, &source)
        .await
        .map_err(reconcile_err)?;
    if revision != req.revision || digest != req.digest {
        deps.store
            .finish_request(
                id,
                "failed",
                None,
                Some("the target moved after approval; a new request was opened"),
            )
            .await
            .map_err(|e| internal_error(&e))?;
        return Err(AppError::Conflict(format!(
            "the target of {} moved after approval; approve the new request",
            req.application
        )));
    }
    let (sync_id, status, _) = reconcile::sync(
        deps.store,
        &cluster,
        &source,
        &revision,
        &digest,
        &desired,
        source.prune,
        "approved",
        &who.actor(ip),
    )
    .await
    .map_err(reconcile_err)?;
    let outcome = if status == crate::store::SyncStatus::Succeeded {
        "synced"
    } else {
        "failed"
    };
    deps.store
        .finish_request(id, outcome, Some(sync_id), None)
        .await
        .map_err(|e| internal_error(&e))?;
    Ok(())
}
