//! Identity and access: who is asking (a browser session from local or OIDC sign-in, or an API
//! token) and what they may do (roles from bindings). `guard` is the one place every request
//! passes through; `policy` is the one table saying what each route needs.

pub mod guard;
pub mod local;
pub mod oidc;
pub mod policy;
pub mod sessions;
pub mod tokens;
pub mod visibility;

use app::model::Role;
use serde::{Deserialize, Serialize};

use crate::config::AuthSettings;
use crate::store::{Actor, AuditEvent};

/// How a principal proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    Local,
    Oidc,
    Token,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Local => "local",
            AuthMethod::Oidc => "oidc",
            AuthMethod::Token => "token",
        }
    }
}

/// The bootstrap account, admin everywhere by construction.
pub const BOOTSTRAP_ADMIN: &str = "admin";

/// A signed-in person or an API token, as attached to each request by the guard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// `local:NAME`, `oidc:SUBJECT` or `token:NAME`.
    pub id: String,
    /// What `user = ...` bindings match.
    pub username: String,
    pub display_name: String,
    pub method: AuthMethod,
    /// OIDC groups (empty for local accounts and tokens).
    pub groups: Vec<String>,
    /// An API token's fixed role and optional project.
    pub grant: Option<(Role, Option<String>)>,
}

impl Principal {
    /// The role this principal holds for an application of `project`; for requests about no
    /// particular application (`None`), project-scoped grants count as `viewer` at most.
    pub fn role_in(&self, auth: &AuthSettings, project: Option<&str>) -> Option<Role> {
        let scoped = |role: Role, scope: Option<&str>| match (scope, project) {
            (None, _) => Some(role),
            (Some(s), Some(p)) if s == p => Some(role),
            (Some(_), None) => Some(role.min(Role::Viewer)),
            (Some(_), Some(_)) => None,
        };
        if let Some((role, scope)) = &self.grant {
            return scoped(*role, scope.as_deref());
        }
        if self.method == AuthMethod::Local && self.username == BOOTSTRAP_ADMIN {
            return Some(Role::Admin);
        }
        self.bindings(auth)
            .filter_map(|b| scoped(b.role, b.project.as_deref()))
            .chain(auth.default_role)
            .max()
    }

    /// The bindings naming this principal (by one of its groups or its user name).
    fn bindings<'a>(
        &'a self,
        auth: &'a AuthSettings,
    ) -> impl Iterator<Item = &'a crate::config::RoleBinding> + 'a {
        auth.bindings.iter().filter(|b| match (&b.group, &b.user) {
            (Some(g), _) => self.groups.iter().any(|mine| mine == g),
            (None, Some(u)) => *u == self.username,
            (None, None) => false,
        })
    }

    /// The projects whose applications this principal may see; `None` means all of them.
    pub fn visible_projects(&self, auth: &AuthSettings) -> Option<Vec<String>> {
        if let Some((_, scope)) = &self.grant {
            return scope.clone().map(|p| vec![p]);
        }
        if (self.method == AuthMethod::Local && self.username == BOOTSTRAP_ADMIN)
            || auth.default_role.is_some()
        {
            return None;
        }
        let mut projects = Vec::new();
        for b in self.bindings(auth) {
            match &b.project {
                None => return None,
                Some(p) => projects.push(p.clone()),
            }
        }
        Some(projects)
    }

    /// The highest role held anywhere (what the user menu shows).
    pub fn highest_role(&self, auth: &AuthSettings) -> Option<Role> {
        if let Some((role, _)) = &self.grant {
            return Some(*role);
        }
        if self.method == AuthMethod::Local && self.username == BOOTSTRAP_ADMIN {
            return Some(Role::Admin);
        }
        self.bindings(auth)
            .map(|b| b.role)
            .chain(auth.default_role)
            .max()
    }

    pub fn view(&self, auth: &AuthSettings) -> app::model::Viewer {
        app::model::Viewer {
            username: self.username.clone(),
            display_name: self.display_name.clone(),
            method: self.method.as_str().to_owned(),
            role: self.highest_role(auth),
        }
    }

    /// This principal as the ledger's actor, seen from `source_ip`.
    pub fn actor(&self, source_ip: &str) -> Actor {
        Actor {
            id: self.id.clone(),
            name: self.display_name.clone(),
            method: self.method.as_str().to_owned(),
            source_ip: source_ip.to_owned(),
        }
    }

    /// An audit row with this principal as the actor.
    pub fn audit(
        &self,
        action: &str,
        target: &str,
        outcome: &str,
        details: serde_json::Value,
        source_ip: &str,
    ) -> AuditEvent {
        self.actor(source_ip)
            .event(action, target, outcome, details, crate::clock::now())
    }
}

/// The longest user name a sign-in accepts, and the most of a claimed name the ledger records.
pub const MAX_USERNAME_CHARS: usize = 128;

/// Whether `name` could name an account: at most [`MAX_USERNAME_CHARS`] characters, none of
/// them control characters. Anything else is refused before the database is asked.
pub fn plausible_username(name: &str) -> bool {
    name.chars().count() <= MAX_USERNAME_CHARS && !name.chars().any(char::is_control)
}

/// Text an unauthenticated caller chose, as the ledger may hold it: at most `max` characters,
/// control characters replaced by U+FFFD (no forged lines in logs or exports).
pub fn ledger_text(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

/// An audit row for someone not (yet) signed in, e.g. a failed sign-in. The claimed name is
/// cut to [`MAX_USERNAME_CHARS`] and stripped of control characters: anyone can send one.
pub fn anonymous_audit(
    claimed: &str,
    method: AuthMethod,
    action: &str,
    outcome: &str,
    details: serde_json::Value,
    source_ip: &str,
) -> AuditEvent {
    let claimed = &ledger_text(claimed, MAX_USERNAME_CHARS);
    AuditEvent {
        at: crate::clock::now(),
        actor_id: format!("anonymous:{claimed}"),
        actor_name: claimed.to_owned(),
        auth_method: method.as_str().to_owned(),
        action: action.to_owned(),
        target: "tidemark".to_owned(),
        details,
        source_ip: source_ip.to_owned(),
        outcome: outcome.to_owned(),
    }
}

/// Random bytes from a CSPRNG, base64url without padding.
pub fn random_token(bytes: usize) -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    // ThreadRng: ChaCha12 seeded from the operating system, a CSPRNG.
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RoleBinding;

    #[test]
    fn claimed_names_are_bounded_and_stripped_before_they_reach_the_ledger() {
        assert!(plausible_username("ada") && plausible_username(&"é".repeat(128)));
        assert!(!plausible_username(&"a".repeat(129)));
        assert!(!plausible_username("ada\nFAKE sign_in success"));
        assert!(!plausible_username("ada\u{7f}"));
        let event = anonymous_audit(
            &format!("ev\r\nil{}", "x".repeat(10_000)),
            AuthMethod::Local,
            "sign_in",
            "failure",
            serde_json::json!({}),
            "10.0.0.1",
        );
        assert_eq!(event.actor_name.chars().count(), MAX_USERNAME_CHARS);
        assert!(event.actor_name.starts_with("ev\u{FFFD}\u{FFFD}ilxx"));
        assert_eq!(event.actor_id, format!("anonymous:{}", event.actor_name));
    }

    fn person(username: &str, groups: &[&str]) -> Principal {
        Principal {
            id: format!("oidc:{username}"),
            username: username.into(),
            display_name: username.into(),
            method: AuthMethod::Oidc,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            grant: None,
        }
    }

    fn bind(
        group: Option<&str>,
        user: Option<&str>,
        role: Role,
        project: Option<&str>,
    ) -> RoleBinding {
        RoleBinding {
            group: group.map(Into::into),
            user: user.map(Into::into),
            role,
            project: project.map(Into::into),
        }
    }

    #[test]
    fn bindings_grant_the_highest_matching_role_within_their_project() {
        let auth = AuthSettings {
            bindings: vec![
                bind(Some("devs"), None, Role::Viewer, None),
                bind(Some("web-ops"), None, Role::Deployer, Some("web")),
                bind(None, Some("carol"), Role::Admin, None),
            ],
            ..AuthSettings::default()
        };
        let dev = person("dave", &["devs"]);
        assert_eq!(dev.role_in(&auth, Some("web")), Some(Role::Viewer));
        let op = person("olga", &["web-ops"]);
        assert_eq!(op.role_in(&auth, Some("web")), Some(Role::Deployer));
        assert_eq!(op.role_in(&auth, Some("payments")), None);
        assert_eq!(op.role_in(&auth, None), Some(Role::Viewer));
        assert_eq!(op.highest_role(&auth), Some(Role::Deployer));
        assert_eq!(
            person("carol", &[]).role_in(&auth, Some("x")),
            Some(Role::Admin)
        );
        assert_eq!(person("nobody", &["other"]).role_in(&auth, None), None);
        let open = AuthSettings {
            default_role: Some(Role::Viewer),
            ..AuthSettings::default()
        };
        assert_eq!(
            person("nobody", &[]).role_in(&open, Some("x")),
            Some(Role::Viewer)
        );
    }

    #[test]
    fn only_the_local_bootstrap_account_is_implicitly_admin() {
        let auth = AuthSettings::default();
        let mut admin = person(BOOTSTRAP_ADMIN, &[]);
        assert_eq!(
            admin.role_in(&auth, None),
            None,
            "an OIDC user named admin is nobody special"
        );
        admin.method = AuthMethod::Local;
        assert_eq!(admin.role_in(&auth, Some("p")), Some(Role::Admin));
    }

    #[test]
    fn project_tokens_act_only_in_their_project() {
        let auth = AuthSettings::default();
        let mut t = person("ci", &[]);
        t.method = AuthMethod::Token;
        t.grant = Some((Role::Deployer, Some("web".into())));
        assert_eq!(t.role_in(&auth, Some("web")), Some(Role::Deployer));
        assert_eq!(t.role_in(&auth, Some("db")), None);
        assert_eq!(t.role_in(&auth, None), Some(Role::Viewer));
    }
}
