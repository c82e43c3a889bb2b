//! What the application, approvals and diff pages show (serde only, no I/O).

use serde::{Deserialize, Serialize};

use super::AppSummary;

/// Filters and position of the Applications list (empty strings mean "any").
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AppListQuery {
    /// Free text: every word must appear in the name, project, repository, path, cluster or
    /// namespace.
    pub q: String,
    pub project: String,
    /// `Synced`, `OutOfSync` or `Unknown` (never compared counts as `Unknown`).
    pub status: String,
    /// `Healthy`, `Progressing`, `Degraded`, `Missing` or `Unknown`.
    pub health: String,
    /// The name of the last application of the previous page (keyset).
    pub after: String,
}

/// One page (by name) of the Applications list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppListPage {
    pub items: Vec<AppSummary>,
    /// `after` of the next page.
    pub next: Option<String>,
    /// How many applications match the filters.
    pub total: i64,
    /// Every project, for the filter.
    pub projects: Vec<String>,
    /// The server's clock (ms) when this was read: relative times are computed against it.
    pub now: i64,
}

/// An application's sync policy as the header shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyView {
    pub auto_sync: bool,
    pub self_heal: bool,
    pub prune: bool,
    /// Approvals a manual sync needs (0: deployers sync directly).
    pub approvals_required: u32,
    pub approval_groups: Vec<String>,
    pub sync_on_approval: bool,
    pub rollback_needs_approval: bool,
    /// Only revisions signed by a trusted key are synced (`require_signed`).
    pub require_signed: bool,
}

/// A rollback pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinView {
    pub revision: String,
    pub by: String,
    pub at: i64,
    pub reason: String,
}

/// A sync request with what the viewer may do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestView {
    pub id: i64,
    pub application: String,
    pub revision: String,
    /// The commit's subject line, when Tidemark has the commit.
    pub title: Option<String>,
    pub author: Option<String>,
    /// `revision`, `drift` or `rollback`.
    pub cause: String,
    /// `pending` or `approved` (waiting for "sync now").
    pub status: super::RequestStatus,
    pub required: i64,
    /// Who approved so far (display names) and when (ms).
    pub approvals: Vec<(String, i64)>,
    pub created_at: i64,
    pub requested_by: Option<String>,
    /// `None`: the viewer may approve and reject; otherwise why not.
    pub why_not: Option<String>,
    /// Who signed the revision it deploys, as verified now (`None`: not checked yet).
    pub signature: Option<super::SignatureBadgeView>,
}

/// One resource of the last comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceView {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `Synced`, `OutOfSync`, `Missing` or `Extraneous`.
    pub status: String,
    pub health: Option<String>,
    pub health_message: Option<String>,
    /// How many fields differ from Git.
    pub changes: usize,
}

impl ResourceView {
    /// `Kind/namespace/name`: how links select one resource's diff.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// Everything the application page's header, banners and Resources tab show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppDetail {
    pub summary: AppSummary,
    pub deployed_sha: Option<String>,
    pub compared_at: Option<i64>,
    pub policy: PolicyView,
    pub pin: Option<PinView>,
    pub drift_since: Option<i64>,
    pub request: Option<RequestView>,
    pub resources: Vec<ResourceView>,
    /// `None`: the viewer may roll back (and unpin); otherwise why not.
    pub rollback_why_not: Option<String>,
    /// The verdict on the target revision's signature (`None`: not checked yet).
    pub target_signature: Option<super::SignatureBadgeView>,
    /// Under `require_signed`, why the target revision is not deployed.
    pub held_back: Option<String>,
    pub now: i64,
}

/// One line of an application's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Unique within the timeline (`e<id>` for events, `c<sha>` for commits).
    pub key: String,
    pub kind: String,
    pub at: i64,
    pub message: String,
    /// For commits: the SHA; for syncs: per-resource results as `(action, object, message)`.
    pub revision: Option<String>,
    pub results: Vec<(String, String, String)>,
    /// For commits: the signature verdict (`None`: not checked yet).
    pub signature: Option<super::SignatureBadgeView>,
    /// Entries folded under this one, newest first: a sync request's approvals, the sync it
    /// caused and the health that followed; or, for a `superseded_run`, the requests.
    pub children: Vec<HistoryEntry>,
    /// For a card: what it holds, in words ("2 × Approved · Sync · Health").
    pub summary: String,
}

/// A page of the timeline, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    pub entries: Vec<HistoryEntry>,
    pub next: Option<String>,
    pub now: i64,
}

/// Open sync requests across applications (the Approvals page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestList {
    pub items: Vec<RequestView>,
    pub now: i64,
}

/// Which comparison the Diff tab shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffQuery {
    /// Both empty: Git (the target) against the live cluster.
    pub from: String,
    pub to: String,
}

/// One differing field: `before` is live (or the `from` revision), `after` is Git (or `to`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffField {
    pub path: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// One resource of a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffResource {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Live: `OutOfSync`, `Missing`, `Extraneous`, `Synced`; revisions: `added`, `removed`,
    /// `changed`.
    pub status: String,
    pub fields: Vec<DiffField>,
    /// Live compare only: how the resource was compared (`server-side apply dry run`, or
    /// `desired fields only (…why…)`); empty for revisions and Missing/Extraneous resources.
    #[serde(default)]
    pub compared_by: String,
}

impl DiffResource {
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// A comparison, ready to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffView {
    /// "live" or "revisions".
    pub mode: String,
    pub before_label: String,
    pub after_label: String,
    /// Only resources that differ.
    pub resources: Vec<DiffResource>,
    /// Resources compared in all.
    pub compared: usize,
}

/// A known-good revision (rollback target).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionView {
    pub revision: String,
    pub title: Option<String>,
    pub author: Option<String>,
    pub deployed_by: String,
    pub deployed_at: i64,
    /// What is running now.
    pub current: bool,
    /// The signature verdict against the current trusted keys (`None`: not checked).
    pub signature: Option<super::SignatureBadgeView>,
}

/// The timeline's filter groups: key (in links), label, and the event kinds they select.
pub const TIMELINE_GROUPS: &[(&str, &str, &[&str])] = &[
    (
        "commits",
        "Commits & signatures",
        &["commit", "revision_blocked", "trusted_keys_changed"],
    ),
    (
        "syncs",
        "Syncs",
        &["sync", "sync_interrupted", "conflict", "sync_refused"],
    ),
    (
        "approvals",
        "Requests & approvals",
        &[
            "sync_requested",
            "approval",
            "sync_request_rejected",
            "sync_request_superseded",
            "rollback_requested",
        ],
    ),
    (
        "drift",
        "Drift",
        &["drift_opened", "drift_stale", "drift_closed"],
    ),
    (
        "rollbacks",
        "Rollbacks & pins",
        &["rollback", "unpinned", "not_deployed_pinned", "pinned_long"],
    ),
    ("health", "Health", &["health", "known_good"]),
    (
        "git",
        "Git & config",
        &[
            "git_error",
            "git_recovered",
            "render_error",
            "force_push",
            "webhook",
            "refresh",
            "application",
            "generated",
            "generator_refused",
        ],
    ),
    (
        "kubernetes",
        "Kubernetes events",
        &["kube_event", "kube_warning", "resource_action"],
    ),
];

/// How a timeline kind is shown: an icon (decorative), a label (always shown, so meaning never
/// rests on colour) and a tone for the stylesheet.
pub fn timeline_style(kind: &str) -> (&'static str, &'static str, &'static str) {
    match kind {
        "commit" => ("●", "Commit", "info"),
        "superseded_run" => ("↷", "Superseded", "unknown"),
        "revision_blocked" => ("⊘", "Not deployed: unverified", "bad"),
        "trusted_keys_changed" => ("⚿", "Trusted keys changed", "info"),
        "sync" => ("⟳", "Sync", "ok"),
        "sync_interrupted" => ("⚠", "Sync interrupted", "warn"),
        "conflict" => ("⚠", "Conflict", "bad"),
        "sync_refused" => ("⊘", "Not synced: outside project", "bad"),
        "sync_requested" => ("◇", "Sync requested", "info"),
        "approval" => ("✔", "Approved", "ok"),
        "sync_request_rejected" => ("✖", "Rejected", "bad"),
        "sync_request_superseded" => ("↷", "Superseded", "unknown"),
        "rollback_requested" => ("↶", "Rollback requested", "warn"),
        "drift_opened" => ("≠", "Drift", "warn"),
        "drift_stale" => ("≠", "Drift still open", "warn"),
        "drift_closed" => ("=", "Drift ended", "ok"),
        "rollback" => ("↶", "Rollback", "warn"),
        "unpinned" => ("⚲", "Unpinned", "info"),
        "not_deployed_pinned" | "pinned_long" => ("⚲", "Held by pin", "warn"),
        "health" => ("♥", "Health", "info"),
        "known_good" => ("★", "Known good", "ok"),
        "git_error" | "render_error" => ("⚠", "Git problem", "bad"),
        "git_recovered" => ("✔", "Git recovered", "ok"),
        "force_push" => ("⚠", "Force push", "warn"),
        "webhook" => ("↯", "Webhook", "unknown"),
        "refresh" => ("↻", "Refresh", "unknown"),
        "application" => ("✎", "Application", "unknown"),
        "generated" => ("⊕", "Declared in Git", "info"),
        "generator_refused" => ("⊘", "Definition refused", "bad"),
        "kube_event" => ("☸", "Kubernetes event", "unknown"),
        "kube_warning" => ("⚠", "Kubernetes warning", "bad"),
        "resource_action" => ("⚙", "Resource action", "warn"),
        _ => ("•", "Event", "unknown"),
    }
}

/// One notification delivery (an event to one target) as the Notifications page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryView {
    pub id: i64,
    pub target: String,
    /// pending | delivered | failed (given up).
    pub status: String,
    pub attempts: i64,
    pub trigger: String,
    pub application: String,
    /// The timeline entry the message links to (`e<id>`).
    pub entry: String,
    pub occurred_at: i64,
    pub last_attempt_at: Option<i64>,
    /// Pending: when the next attempt is due.
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
}

/// A configured target and what it is subscribed to (never its URL or credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetView {
    pub name: String,
    /// webhook | slack | email
    pub kind: String,
    /// One line per subscription: "project web · sync_failed, drift_opened".
    pub subscriptions: Vec<String>,
}

/// The Notifications page (admins): targets and the latest deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveriesView {
    pub targets: Vec<TargetView>,
    pub deliveries: Vec<DeliveryView>,
    /// Counts over all deliveries: pending (will be retried), failed (given up), delivered.
    pub pending: i64,
    pub failed: i64,
    pub delivered: i64,
    pub now: i64,
}
