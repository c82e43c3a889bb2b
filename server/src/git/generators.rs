//! Applications declared in Git.
//!
//! - **App of apps**: any application's render may hold application definitions —
//!   `apiVersion: tidemark.dev/v1`, `kind: Application`, `metadata.name`, and a `spec` with the
//!   fields of `[[applications]]` (`repository` defaults to the root's, `project` to the
//!   root's). They are never applied to a cluster; when the root's Git revision changes they
//!   create, update and retire applications (generator `application/ROOT`).
//! - **Directory generator** (`[[generators]]`): every directory matching `path_glob` at the
//!   generator's revision is one application named after the directory, its other fields from
//!   `template` (generator `generator/NAME`).
//!
//! What Git may declare is bounded per project (`[[projects]] source_repositories`,
//! `destinations`: Argo CD's AppProject source and destination rules); a definition outside
//! them, in another project than its root's, invalid, or naming an application declared
//! elsewhere is refused with the reason — on the root's timeline, in the generator's last run,
//! and in the audit ledger. Nothing else changes then.

use git2::{ObjectType, Oid, Repository};
use serde_json::{Map, Value};

use crate::config::{ApplicationSettings, GeneratorSettings, Settings};
use crate::store::{Actor, DeclaredApp, RefusedApp};

/// The API group and version of an application definition.
pub const API_VERSION: &str = "tidemark.dev/v1";

/// Most applications one generator or app of apps may declare (a glob matching a whole
/// monorepo stops here).
pub const MAX_APPLICATIONS: usize = 500;

/// Most app-of-apps levels below an application of tidemark.toml or the API: an application
/// declared this deep declares nothing.
pub const MAX_NESTING: usize = 3;

/// Whether `obj` is an application definition (`tidemark.dev/v1` `Application`).
pub fn is_definition(obj: &Value) -> bool {
    obj.get("apiVersion").and_then(Value::as_str) == Some(API_VERSION)
        && obj.get("kind").and_then(Value::as_str) == Some("Application")
}

/// The generator id of an app of apps rooted at `root`.
pub fn root_id(root: &str) -> String {
    format!("application/{root}")
}

/// The generator id of a `[[generators]]` entry.
pub fn generator_id(name: &str) -> String {
    format!("generator/{name}")
}

/// The audit ledger's actor for a generator id: `git:<id>`, method `git`.
pub fn actor(id: &str) -> Actor {
    Actor {
        id: format!("git:{id}"),
        name: id.to_owned(),
        method: "git".into(),
        source_ip: "git".into(),
    }
}

/// Reads one definition of an app of apps whose root is in project `root_project`, reads
/// repository `root_repository` and requires signed revisions or not (`root_signed`: then so
/// does every application it declares, whatever the definition says). Errors: the reason it
/// cannot be an application.
pub fn from_definition(
    obj: &Value,
    origin: &str,
    (root_project, root_repository, root_signed): (&str, &str, bool),
    settings: &Settings,
) -> Result<DeclaredApp, RefusedApp> {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let refuse = |reason: String| RefusedApp {
        name: name.clone(),
        origin: origin.to_owned(),
        reason,
    };
    let mut spec = match obj.get("spec") {
        Some(Value::Object(m)) => m.clone(),
        None => Map::new(),
        Some(_) => return Err(refuse("`spec` must be a mapping".into())),
    };
    if spec.contains_key("name") {
        return Err(refuse(
            "the name is `metadata.name`, not `spec.name`".into(),
        ));
    }
    spec.insert("name".into(), Value::String(name.clone()));
    spec.entry("project")
        .or_insert_with(|| Value::String(root_project.to_owned()));
    spec.entry("repository")
        .or_insert_with(|| Value::String(root_repository.to_owned()));
    if root_signed {
        spec.insert("require_signed".into(), Value::Bool(true));
    }
    declared(Value::Object(spec), origin, root_project, settings).map_err(refuse)
}

/// The application a directory generator declares for directory `dir`. Errors: why not.
pub fn from_directory(
    dir: &str,
    generator: &GeneratorSettings,
    settings: &Settings,
) -> Result<DeclaredApp, RefusedApp> {
    let name = dir.rsplit('/').next().unwrap_or(dir).to_owned();
    let refuse = |reason: String| RefusedApp {
        name: name.clone(),
        origin: dir.to_owned(),
        reason,
    };
    let template =
        serde_json::to_value(&generator.template).map_err(|e| refuse(format!("template: {e}")))?;
    let Value::Object(mut spec) = substitute(template, &name, dir) else {
        return Err(refuse("template must be a table".into()));
    };
    for fixed in ["name", "path", "repository", "revision", "project"] {
        if spec.contains_key(fixed) {
            return Err(refuse(format!(
                "template sets `{fixed}`; the generator sets it (`{fixed}` of [[generators]] or the directory)"
            )));
        }
    }
    spec.insert("name".into(), Value::String(name.clone()));
    spec.insert("path".into(), Value::String(dir.to_owned()));
    spec.insert(
        "repository".into(),
        Value::String(generator.repository.clone()),
    );
    spec.insert("revision".into(), Value::String(generator.revision.clone()));
    spec.insert("project".into(), Value::String(generator.project.clone()));
    declared(Value::Object(spec), dir, &generator.project, settings).map_err(refuse)
}

/// `{{name}}` and `{{path}}` replaced in every string of `v`.
fn substitute(v: Value, name: &str, path: &str) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace("{{name}}", name).replace("{{path}}", path)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|i| substitute(i, name, path))
                .collect(),
        ),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, substitute(v, name, path)))
                .collect(),
        ),
        other => other,
    }
}

/// Parses, validates and bounds-checks one declared application (`spec` holds every field).
fn declared(
    spec: Value,
    origin: &str,
    expected_project: &str,
    settings: &Settings,
) -> Result<DeclaredApp, String> {
    let canonical = crate::render::canonical_json(&spec);
    let mut app: ApplicationSettings =
        serde_path_to_error::deserialize(spec).map_err(|e| match e.path().to_string() {
            p if p == "." => e.inner().to_string(),
            p => format!("{p}: {}", e.inner()),
        })?;
    if app.project != expected_project {
        return Err(format!(
            "project `{}`: what this generator declares belongs to project `{expected_project}`",
            app.project
        ));
    }
    let mut repositories = settings.repositories.clone();
    app.resolve_chart_source(&mut repositories, false)
        .and_then(|()| app.check(&settings.repositories, &settings.clusters))
        .map_err(|(field, message)| format!("{field}: {message}"))?;
    within_bounds(&app, settings)?;
    Ok(DeclaredApp {
        settings: app,
        spec: canonical,
        origin: origin.to_owned(),
    })
}

/// Whether `pattern` (with `*` for any run of characters) matches `value`.
fn matches(pattern: &str, value: &str) -> bool {
    glob::Pattern::new(pattern).is_ok_and(|p| p.matches(value))
}

/// Checks `app` against its project's bounds for applications declared in Git.
///
/// Errors: the reason, naming the project setting that refuses it.
pub fn within_bounds(app: &ApplicationSettings, settings: &Settings) -> Result<(), String> {
    let project = settings.projects.iter().find(|p| p.name == app.project);
    let Some(project) = project else {
        return Err(format!(
            "project `{}` sets no bounds for applications declared in Git (add [[projects]] with source_repositories and destinations)",
            app.project
        ));
    };
    if !project
        .source_repositories
        .iter()
        .any(|r| matches(r, &app.repository))
    {
        return Err(format!(
            "repository `{}` is not among project `{}`'s source_repositories",
            app.repository, project.name
        ));
    }
    let namespaces = std::iter::once(app.namespace.as_str()).chain(app.helm.namespace.as_deref());
    for namespace in namespaces {
        if !project
            .destinations
            .iter()
            .any(|d| matches(&d.cluster, &app.cluster) && matches(&d.namespace, namespace))
        {
            return Err(format!(
                "destination cluster `{}` namespace `{namespace}` is not among project `{}`'s destinations",
                app.cluster, project.name
            ));
        }
    }
    Ok(())
}

/// Directories of `tip`'s tree matching `path_glob` (one glob per path component), sorted,
/// at most [`MAX_APPLICATIONS`] + 1 (the caller reports the overflow).
///
/// Errors: Git's, reading a tree.
pub fn matching_directories(
    repo: &Repository,
    tip: Oid,
    path_glob: &str,
) -> Result<Vec<String>, git2::Error> {
    let patterns: Vec<glob::Pattern> = path_glob
        .split('/')
        .filter(|c| !c.is_empty())
        .map(|c| glob::Pattern::new(c).map_err(|e| git2::Error::from_str(&e.to_string())))
        .collect::<Result<_, _>>()?;
    let root = repo.find_commit(tip)?.tree()?;
    let mut level: Vec<(String, git2::Tree<'_>)> = vec![(String::new(), root)];
    for pattern in &patterns {
        let mut next = Vec::new();
        for (prefix, tree) in &level {
            for entry in tree.iter() {
                let Ok(name) = entry.name() else { continue };
                if entry.kind() != Some(ObjectType::Tree)
                    || name.starts_with('.')
                    || !pattern.matches(name)
                {
                    continue;
                }
                let path = if prefix.is_empty() {
                    name.to_owned()
                } else {
                    format!("{prefix}/{name}")
                };
                next.push((path, repo.find_tree(entry.id())?));
                // Over the limit at any level: the caller reports it and changes nothing
                // (a truncated list would retire applications).
                if next.len() > MAX_APPLICATIONS {
                    return Ok(next.into_iter().map(|(p, _)| p).collect());
                }
            }
        }
        level = next;
    }
    let mut out: Vec<String> = level.into_iter().map(|(p, _)| p).collect();
    out.sort();
    out.truncate(MAX_APPLICATIONS + 1);
    Ok(out)
}

/// Checks the `[[generators]]` entries: unique names (lowercase letters, digits, `-`), a
/// declared Git repository, a relative `path_glob` of valid patterns without `..`.
/// `Err((key, message))`.
pub fn check_settings(settings: &Settings) -> Result<(), (String, String)> {
    for (i, g) in settings.generators.iter().enumerate() {
        let at = |field: &str| format!("generators[{i}].{field}");
        if g.name.is_empty()
            || g.name.len() > 63
            || !g
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err((
                at("name"),
                format!("`{}` must be lowercase letters, digits and `-`", g.name),
            ));
        }
        if settings.generators[..i].iter().any(|o| o.name == g.name) {
            return Err((at("name"), format!("`{}` is declared twice", g.name)));
        }
        if !settings
            .repositories
            .iter()
            .any(|r| r.name == g.repository && r.kind == crate::config::RepositoryKind::Git)
        {
            return Err((
                at("repository"),
                format!("no Git repository named `{}` is declared", g.repository),
            ));
        }
        let bad_glob = g.path_glob.trim().is_empty()
            || g.path_glob.starts_with('/')
            || g.path_glob.split('/').any(|c| c == ".." || c == ".")
            || g.path_glob
                .split('/')
                .any(|c| glob::Pattern::new(c).is_err());
        if bad_glob {
            return Err((
                at("path_glob"),
                format!(
                    "`{}` must be a relative glob like `apps/*`, without `..`",
                    g.path_glob
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        toml::from_str(
            r#"
            [[repositories]]
            name = "platform"
            url = "file:///x"
            [[clusters]]
            name = "c"
            url = "http://127.0.0.1:1"
            [[projects]]
            name = "team"
            source_repositories = ["platform"]
            destinations = [{ cluster = "c", namespace = "team-*" }]
            "#,
        )
        .unwrap()
    }

    /// A root under `require_signed` passes it on: a definition cannot opt its application out.
    #[test]
    fn applications_declared_by_a_signed_root_require_signed_revisions_too() {
        let obj = serde_json::json!({"apiVersion": API_VERSION, "kind": "Application",
            "metadata": {"name": "web"},
            "spec": {"path": "apps/web", "cluster": "c", "namespace": "team-web", "require_signed": false}});
        let s = settings();
        let signed = from_definition(&obj, "root/a.yaml", ("team", "platform", true), &s).unwrap();
        assert!(signed.settings.require_signed);
        let unsigned =
            from_definition(&obj, "root/a.yaml", ("team", "platform", false), &s).unwrap();
        assert!(!unsigned.settings.require_signed);
        // The stored spec differs too, so turning the root's policy on updates its children.
        assert_ne!(signed.spec, unsigned.spec);
    }
}
