//! Data shared by the browser and the server (serde only, no I/O).

mod console;
mod error;
mod signature;
mod status;

pub use console::*;
pub use error::AppError;
pub use signature::{SignatureBadgeView, SignatureVerdict};
pub use status::{RequestStatus, SignatureStatus, SyncStatus};

/// A revision as people read it: a Git commit SHA (more than seven hex digits) shortened to its first
/// seven characters, anything else (a chart version such as `6.1.0`) whole.
pub fn short_revision(revision: &str) -> &str {
    let is_sha = revision.len() > 7 && revision.bytes().all(|b| b.is_ascii_hexdigit());
    if is_sha {
        &revision[..7]
    } else {
        revision
    }
}

use serde::{Deserialize, Serialize};

/// How an application is brought in line with Git.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncPolicy {
    /// A person asks for (and approves) each sync.
    Manual,
    /// Tidemark syncs as soon as Git moves.
    Auto,
}

impl SyncPolicy {
    /// The stable lower-case name used in config, the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncPolicy::Manual => "manual",
            SyncPolicy::Auto => "auto",
        }
    }
}

impl std::str::FromStr for SyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "manual" => Ok(SyncPolicy::Manual),
            "auto" => Ok(SyncPolicy::Auto),
            other => Err(format!(
                "unknown sync policy `{other}` (expected manual or auto)"
            )),
        }
    }
}

/// What a person may do. Ordered: each role can do everything the ones before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees applications, timelines, diffs and the audit ledger.
    Viewer,
    /// Also syncs, refreshes, approves, rejects, rolls back, pins and unpins.
    Deployer,
    /// Also manages applications, API tokens and settings.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "deployer" => Ok(Role::Deployer),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role `{other}` (expected viewer, deployer or admin)"
            )),
        }
    }
}

/// The signed-in person as the pages show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Viewer {
    pub username: String,
    pub display_name: String,
    /// `local`, `oidc` or `token`.
    pub method: String,
    /// The highest role this person holds anywhere (`None`: signed in without a role).
    pub role: Option<Role>,
}

/// How the sign-in page should look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignInOptions {
    /// Label of the single sign-on button, when OIDC is configured.
    pub sso: Option<String>,
    /// Whether the local username/password form is offered.
    pub local: bool,
}

/// One audit ledger row as the Audit page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    /// RFC 3339, UTC.
    pub at: String,
    pub actor_id: String,
    pub actor_name: String,
    pub auth_method: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub source_ip: String,
    /// The details as compact JSON.
    pub details: String,
}

/// Filters of the Audit page (empty strings mean "any").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    pub actor: String,
    pub action: String,
    pub application: String,
    pub cursor: String,
    /// `notifications`: the Notifications tab (admins) instead of the ledger.
    #[serde(default)]
    pub view: String,
    /// With `view=notifications`: `undelivered` shows only deliveries not delivered.
    #[serde(default)]
    pub show: String,
}

/// One page of the ledger with the chain's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditView {
    pub entries: Vec<AuditEntry>,
    /// Cursor of the next (older) page.
    pub next: Option<String>,
    /// Whether the whole chain verified.
    pub chain_ok: bool,
    pub verified_through: i64,
    pub first_bad: Option<i64>,
    pub problem: Option<String>,
    /// The Notifications tab, rendered on the server (its tables never reach the WASM).
    #[serde(default)]
    pub notifications: Option<String>,
}

/// One row of the Applications list.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSummary {
    pub name: String,
    pub project: String,
    pub repository: String,
    pub repo_url: String,
    pub path: String,
    /// Where the manifests come from, worded on the server: `examples / apps/guestbook`,
    /// `demo / charts/shop · Helm chart, values from ../../envs/demo/shop.yaml`, `Helm chart web
    /// from https://charts.example`.
    #[serde(default)]
    pub source: String,
    pub target_revision: String,
    pub cluster: String,
    pub namespace: String,
    pub sync_policy: SyncPolicy,
    /// The commit the target revision resolved to at the last successful ingest.
    pub target_sha: Option<String>,
    /// Why Tidemark cannot follow Git for this application right now (fetch or render error).
    pub git_error: Option<String>,
    /// `Synced`, `OutOfSync` or `Unknown`; `None` before the first comparison.
    pub sync_status: Option<String>,
    /// `Healthy`, `Progressing`, `Degraded`, `Missing` or `Unknown`.
    pub health: Option<String>,
    /// Why the application is not healthy (its worst resource).
    pub health_message: Option<String>,
    /// Held at a revision by a rollback.
    #[serde(default)]
    pub pinned: bool,
    /// The last successful sync: who asked (display name) and when (ms since the epoch).
    #[serde(default)]
    pub last_deploy_by: Option<String>,
    #[serde(default)]
    pub last_deploy_at: Option<i64>,
    /// The open sync request: its id, approvals so far and approvals needed.
    #[serde(default)]
    #[cfg_attr(feature = "ssr", schema(value_type = Option<Vec<i64>>))]
    pub pending: Option<(i64, i64, i64)>,
    /// When the open drift episode began (live state differs from the last sync).
    #[serde(default)]
    pub drift_since: Option<i64>,
}

impl AppSummary {
    /// Whether a free-text filter (case-insensitive, every word must match) selects this row.
    pub fn matches(&self, query: &str) -> bool {
        let haystack = format!(
            "{} {} {} {} {} {}",
            self.name, self.project, self.repository, self.path, self.cluster, self.namespace
        )
        .to_lowercase();
        query
            .split_whitespace()
            .all(|word| haystack.contains(&word.to_lowercase()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guestbook() -> AppSummary {
        AppSummary {
            name: "guestbook".into(),
            project: "demo".into(),
            repository: "examples".into(),
            repo_url: "https://git.example/examples.git".into(),
            path: "apps/guestbook".into(),
            source: "examples / apps/guestbook".into(),
            target_revision: "main".into(),
            cluster: "sandbox".into(),
            namespace: "web".into(),
            sync_policy: SyncPolicy::Manual,
            target_sha: None,
            git_error: None,
            sync_status: None,
            health: None,
            health_message: None,
            pinned: false,
            last_deploy_by: None,
            last_deploy_at: None,
            pending: None,
            drift_since: None,
        }
    }

    #[test]
    fn filter_matches_every_word_case_insensitively() {
        let app = guestbook();
        assert!(app.matches(""));
        assert!(app.matches("GUEST"));
        assert!(app.matches("demo web"));
        assert!(!app.matches("demo podinfo"));
    }

    #[test]
    fn sync_policy_round_trips_through_its_name() {
        for policy in [SyncPolicy::Manual, SyncPolicy::Auto] {
            assert_eq!(policy.as_str().parse::<SyncPolicy>(), Ok(policy));
        }
        assert!("sometimes".parse::<SyncPolicy>().is_err());
    }
}
