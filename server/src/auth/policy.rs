//! The one table of what each route needs. Anything not listed here needs `viewer` to read and
//! `admin` to change (deny by default).

use app::model::Role;
use axum::http::Method;

/// What a request may need before it reaches its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Static files: no identity work at all.
    Asset,
    /// Anyone; the principal is still attached when there is one (sign-in page, user menu).
    /// Webhooks are public here and check their own signatures.
    Public,
    /// The action's role, within the application's project when the route names one.
    Act(Action),
    /// Signed in; the handler authorizes its action itself, once, through the same
    /// `guard::authorize` (server functions: their arguments — which application — are in the
    /// body, which the guard does not read).
    SignedIn,
}

/// Things people do, each needing a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    View,
    Refresh,
    Sync,
    Approve,
    Reject,
    Rollback,
    Pin,
    Unpin,
    ManageApplications,
    ManageTokens,
    ManageSettings,
    /// The Notifications page: targets and deliveries (error messages of other systems).
    ViewDeliveries,
    /// Pod logs (role configurable: `auth.logs_role`, default deployer).
    ReadLogs,
    /// Restart a workload, delete a pod (resource actions on the live tree).
    ResourceAction,
}

impl Action {
    pub fn role(self) -> Role {
        match self {
            Action::View => Role::Viewer,
            Action::Refresh
            | Action::Sync
            | Action::Approve
            | Action::Reject
            | Action::Rollback
            | Action::Pin
            | Action::Unpin
            | Action::ReadLogs
            | Action::ResourceAction => Role::Deployer,
            Action::ManageApplications
            | Action::ManageTokens
            | Action::ManageSettings
            | Action::ViewDeliveries => Role::Admin,
        }
    }

    /// The role this action needs under `auth` (pod logs: `auth.logs_role`; the rest fixed).
    pub fn role_under(self, auth: &crate::config::AuthSettings) -> Role {
        match self {
            Action::ReadLogs => auth.logs_role,
            other => other.role(),
        }
    }

    /// How the 403 message names it: "Syncing needs the deployer role".
    pub fn phrase(self) -> &'static str {
        match self {
            Action::View => "Viewing this",
            Action::Refresh => "Refreshing from Git",
            Action::Sync => "Syncing",
            Action::Approve => "Approving",
            Action::Reject => "Rejecting",
            Action::Rollback => "Rolling back",
            Action::Pin => "Pinning",
            Action::Unpin => "Unpinning",
            Action::ManageApplications => "Managing applications",
            Action::ManageTokens => "Managing API tokens",
            Action::ManageSettings => "Changing settings",
            Action::ViewDeliveries => "Viewing notification deliveries",
            Action::ReadLogs => "Reading pod logs",
            Action::ResourceAction => "Restarting workloads and deleting pods",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::View => "view",
            Action::Refresh => "refresh",
            Action::Sync => "sync",
            Action::Approve => "approve",
            Action::Reject => "reject",
            Action::Rollback => "rollback",
            Action::Pin => "pin",
            Action::Unpin => "unpin",
            Action::ManageApplications => "manage_applications",
            Action::ManageTokens => "manage_tokens",
            Action::ManageSettings => "manage_settings",
            Action::ViewDeliveries => "view_deliveries",
            Action::ReadLogs => "read_logs",
            Action::ResourceAction => "resource_action",
        }
    }
}

/// Every route with a rule other than the defaults, by method and axum route pattern (or
/// server-function path).
const TABLE: &[(&str, &str, Rule)] = &[
    ("GET", "/healthz", Rule::Public),
    ("GET", "/readyz", Rule::Public),
    ("GET", "/metrics", Rule::Public),
    ("GET", "/login", Rule::Public),
    ("POST", "/auth/login", Rule::Public),
    ("POST", "/auth/logout", Rule::Public),
    ("GET", "/auth/oidc/start", Rule::Public),
    ("GET", "/auth/oidc/callback", Rule::Public),
    ("POST", "/_fn/whoami", Rule::Public),
    ("POST", "/_fn/login_options", Rule::Public),
    // Server functions: signed in here; each function authorizes its action once, within the
    // application's project when it is about one (`http::console::allowed`).
    ("POST", "/_fn/application_page", Rule::SignedIn),
    ("POST", "/_fn/open_requests", Rule::SignedIn),
    ("POST", "/_fn/audit_page", Rule::SignedIn),
    (
        "GET",
        "/api/v1/notifications/deliveries",
        Rule::Act(Action::ViewDeliveries),
    ),
    ("POST", "/_fn/application_detail", Rule::SignedIn),
    ("POST", "/_fn/application_history", Rule::SignedIn),
    ("POST", "/_fn/application_diff", Rule::SignedIn),
    ("POST", "/_fn/known_good", Rule::SignedIn),
    ("POST", "/_fn/approve", Rule::SignedIn),
    ("POST", "/_fn/reject", Rule::SignedIn),
    ("POST", "/_fn/sync_now", Rule::SignedIn),
    ("POST", "/_fn/rollback", Rule::SignedIn),
    ("POST", "/_fn/unpin", Rule::SignedIn),
    ("POST", "/_fn/resource_action", Rule::SignedIn),
    ("POST", "/_fn/application_tree", Rule::SignedIn),
    (
        "GET",
        "/api/v1/applications/{name}/pods/{namespace}/{pod}/logs",
        Rule::Act(Action::ReadLogs),
    ),
    (
        "POST",
        "/api/v1/applications/{name}/resources/actions",
        Rule::Act(Action::ResourceAction),
    ),
    ("POST", "/api/v1/webhooks/{provider}", Rule::Public),
    (
        "POST",
        "/api/v1/applications",
        Rule::Act(Action::ManageApplications),
    ),
    (
        "PUT",
        "/api/v1/applications/{name}",
        Rule::Act(Action::ManageApplications),
    ),
    (
        "POST",
        "/api/v1/applications/{name}/sync",
        Rule::Act(Action::Sync),
    ),
    (
        "POST",
        "/api/v1/applications/{name}/refresh",
        Rule::Act(Action::Refresh),
    ),
    (
        "POST",
        "/api/v1/applications/{name}/rollback",
        Rule::Act(Action::Rollback),
    ),
    (
        "POST",
        "/api/v1/applications/{name}/unpin",
        Rule::Act(Action::Unpin),
    ),
    (
        "POST",
        "/api/v1/sync-requests/{id}/approve",
        Rule::Act(Action::Approve),
    ),
    (
        "POST",
        "/api/v1/sync-requests/{id}/reject",
        Rule::Act(Action::Reject),
    ),
    (
        "POST",
        "/api/v1/sync-requests/{id}/sync",
        Rule::Act(Action::Sync),
    ),
];

/// The rule for a request. `pattern` is axum's matched route, `None` for the fallback (static
/// files and the not-found page).
pub fn rule(method: &Method, pattern: Option<&str>, path: &str) -> Rule {
    let Some(pattern) = pattern else {
        return Rule::Asset;
    };
    // Server functions are mounted per function; match them by their path.
    let key = if path.starts_with("/_fn/") {
        path
    } else {
        pattern
    };
    if let Some((_, _, rule)) = TABLE
        .iter()
        .find(|(m, p, _)| *m == method.as_str() && *p == key)
    {
        return *rule;
    }
    if method == Method::GET || method == Method::HEAD {
        Rule::Act(Action::View)
    } else {
        Rule::Act(Action::ManageSettings)
    }
}

/// Every mutating route the table knows, for tests that walk them all.
pub fn mutating_routes() -> impl Iterator<Item = (&'static str, &'static str, Action)> {
    TABLE.iter().filter_map(|(m, p, r)| match r {
        Rule::Act(a) if *m != "GET" && !matches!(a, Action::View | Action::ViewDeliveries) => {
            Some((*m, *p, *a))
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_routes_need_viewer_to_read_and_admin_to_change() {
        assert_eq!(
            rule(&Method::GET, Some("/approvals"), "/approvals"),
            Rule::Act(Action::View)
        );
        assert_eq!(
            rule(
                &Method::DELETE,
                Some("/api/v1/applications/{name}"),
                "/api/v1/applications/x"
            ),
            Rule::Act(Action::ManageSettings)
        );
        assert_eq!(
            rule(&Method::POST, Some("/_fn/{*rest}"), "/_fn/some_new_fn"),
            Rule::Act(Action::ManageSettings)
        );
        assert_eq!(rule(&Method::GET, None, "/pkg/tidemark.js"), Rule::Asset);
        assert_eq!(
            rule(
                &Method::POST,
                Some("/api/v1/applications/{name}/sync"),
                "/x"
            ),
            Rule::Act(Action::Sync)
        );
    }
}
