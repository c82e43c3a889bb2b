//! Which applications' rows a caller may read. The guard attaches a [`Visibility`] to every
//! request with a principal, and every list, export, page and server function that returns
//! rows about applications (applications, sync requests, audit rows, open requests) filters
//! by it: a project-scoped person or token never reads another project's data through a list,
//! whatever the query string asks for.

use serde::{Deserialize, Serialize};

use super::Principal;
use crate::config::AuthSettings;

/// The projects whose applications a caller may see.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Visibility {
    /// Every project (unscoped roles, the bootstrap admin, a `default_role`).
    All,
    /// Only these projects (possibly none: a signed-in person without any binding).
    Projects(Vec<String>),
}

impl Visibility {
    /// What `principal` may see under `auth`'s bindings: an API token's project, or the
    /// projects of the bindings naming the person (any unscoped binding, the bootstrap admin
    /// or a `default_role` means all).
    pub fn of(principal: &Principal, auth: &AuthSettings) -> Self {
        match principal.visible_projects(auth) {
            None => Visibility::All,
            Some(mut projects) => {
                projects.sort();
                projects.dedup();
                Visibility::Projects(projects)
            }
        }
    }

    /// Whether rows of an application in `project` may be shown.
    pub fn allows(&self, project: &str) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Projects(p) => p.iter().any(|mine| mine == project),
        }
    }

    /// The projects to filter by in a query; `None` means no filter.
    pub fn projects(&self) -> Option<&[String]> {
        match self {
            Visibility::All => None,
            Visibility::Projects(p) => Some(p),
        }
    }

    /// Whether this caller sees every project (and so rows about no application: sign-ins,
    /// tokens, settings).
    pub fn is_all(&self) -> bool {
        matches!(self, Visibility::All)
    }
}

pub use crate::store::sql_in_projects;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_are_matched_exactly_and_none_matches_nothing() {
        let v = Visibility::Projects(vec!["web".into()]);
        assert!(v.allows("web"));
        assert!(!v.allows("web2") && !v.allows("ops") && !v.allows(""));
        assert!(Visibility::All.allows("ops"));
        let mut params = vec!["x".to_owned()];
        let sql = sql_in_projects("target", "application:", &["web".into()], &mut params);
        assert_eq!(
            sql,
            "target IN (SELECT 'application:' || v.name FROM applications v WHERE v.project IN ($2))"
        );
        assert_eq!(params, ["x", "web"]);
        assert_eq!(
            sql_in_projects("application", "", &[], &mut params),
            "1 = 0"
        );
    }
}
