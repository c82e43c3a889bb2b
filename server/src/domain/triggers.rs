//! Which timeline events are worth telling people about, and what of an event's detail a
//! message may carry. Pure: no I/O.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// What happened, as subscriptions name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A drift episode opened (live state diverged from the last sync).
    DriftOpened,
    /// A drift episode is still open after `drift_stale_after`.
    DriftStale,
    SyncFailed,
    /// Opt-in: only subscriptions that list it get it.
    SyncSucceeded,
    /// Health became Degraded.
    HealthDegraded,
    /// A sync (or rollback) request waits for approvals.
    ApprovalRequested,
    /// A request with approvals was superseded by a new revision; its approvals are void.
    ApprovalVoided,
    RollbackPerformed,
    /// An application has been pinned by a rollback for longer than `pinned_after`.
    PinnedLong,
    /// `require_signed` holds back a target revision that is not signed by a trusted key.
    RevisionBlocked,
    /// An application declared in Git would sync objects outside its project's bounds: nothing
    /// was applied.
    SyncRefused,
    /// An app of apps or a directory generator declared an application that was refused (out of
    /// bounds, invalid, a name taken), or its declarations were held.
    DeclarationRefused,
}

impl Trigger {
    pub const ALL: [Trigger; 12] = [
        Trigger::DriftOpened,
        Trigger::DriftStale,
        Trigger::SyncFailed,
        Trigger::SyncSucceeded,
        Trigger::HealthDegraded,
        Trigger::ApprovalRequested,
        Trigger::ApprovalVoided,
        Trigger::RollbackPerformed,
        Trigger::PinnedLong,
        Trigger::RevisionBlocked,
        Trigger::SyncRefused,
        Trigger::DeclarationRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::DriftOpened => "drift_opened",
            Trigger::DriftStale => "drift_stale",
            Trigger::SyncFailed => "sync_failed",
            Trigger::SyncSucceeded => "sync_succeeded",
            Trigger::HealthDegraded => "health_degraded",
            Trigger::ApprovalRequested => "approval_requested",
            Trigger::ApprovalVoided => "approval_voided",
            Trigger::RollbackPerformed => "rollback_performed",
            Trigger::PinnedLong => "pinned_long",
            Trigger::RevisionBlocked => "revision_blocked",
            Trigger::SyncRefused => "sync_refused",
            Trigger::DeclarationRefused => "declaration_refused",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// A short human title ("Sync failed").
    pub fn title(self) -> &'static str {
        match self {
            Trigger::DriftOpened => "Drift detected",
            Trigger::DriftStale => "Drift still open",
            Trigger::SyncFailed => "Sync failed",
            Trigger::SyncSucceeded => "Sync succeeded",
            Trigger::HealthDegraded => "Health degraded",
            Trigger::ApprovalRequested => "Approval requested",
            Trigger::ApprovalVoided => "Approvals voided",
            Trigger::RollbackPerformed => "Rolled back",
            Trigger::PinnedLong => "Pinned for long",
            Trigger::RevisionBlocked => "Unverified revision held back",
            Trigger::SyncRefused => "Sync refused: outside the project's bounds",
            Trigger::DeclarationRefused => "Application definition refused",
        }
    }
}

/// The trigger a timeline event fires, if any.
pub fn trigger_of(kind: &str, detail: &Value) -> Option<Trigger> {
    match kind {
        "drift_opened" => Some(Trigger::DriftOpened),
        "drift_stale" => Some(Trigger::DriftStale),
        "sync" => match detail["status"].as_str() {
            Some("failed") => Some(Trigger::SyncFailed),
            Some("succeeded") => Some(Trigger::SyncSucceeded),
            _ => None,
        },
        "health" => {
            (detail["health"].as_str() == Some("Degraded")).then_some(Trigger::HealthDegraded)
        }
        "sync_requested" | "rollback_requested" => Some(Trigger::ApprovalRequested),
        "sync_request_superseded" => (detail["superseded_by"].is_i64()
            && detail["voided_approvals"].as_i64().unwrap_or(0) > 0)
            .then_some(Trigger::ApprovalVoided),
        "rollback" => Some(Trigger::RollbackPerformed),
        "pinned_long" => Some(Trigger::PinnedLong),
        "revision_blocked" => Some(Trigger::RevisionBlocked),
        "sync_refused" => Some(Trigger::SyncRefused),
        "generator_refused" => Some(Trigger::DeclarationRefused),
        _ => None,
    }
}

/// The fields of a timeline event's detail a message may carry: identifiers and states, never
/// resource contents (a drift's changes could hold a Secret's fields) — drifted resources are
/// named, not shown.
pub fn safe_detail(detail: &Value) -> Value {
    const SCALARS: [&str; 14] = [
        "sync",
        "status",
        "episode",
        "request",
        "superseded_by",
        "voided_approvals",
        "revision",
        "health",
        "required",
        "cause",
        "opened_at",
        "signature",
        "signer",
        "fingerprint",
    ];
    let mut out = Map::new();
    for key in SCALARS {
        if let Some(v) = detail.get(key).filter(|v| !v.is_object() && !v.is_array()) {
            out.insert(key.to_owned(), v.clone());
        }
    }
    // Approver groups: names from the policy.
    if let Some(groups) = detail["approvers"].as_array() {
        let names: Vec<Value> = groups.iter().filter(|g| g.is_string()).cloned().collect();
        out.insert("approvers".into(), Value::Array(names));
    }
    if let Some(resources) = detail["resources"].as_array() {
        let names: Vec<Value> = resources
            .iter()
            .map(|r| {
                let o = &r["object"];
                let ns = o["namespace"].as_str().filter(|n| !n.is_empty());
                let name = o["name"].as_str().unwrap_or("?");
                json!(format!(
                    "{} {}{}",
                    o["kind"].as_str().unwrap_or("?"),
                    ns.map(|n| format!("{n}/")).unwrap_or_default(),
                    name
                ))
            })
            .collect();
        out.insert("resources".into(), Value::Array(names));
    }
    Value::Object(out)
}
