//! Desired manifests at a revision, read straight from the object database: plain YAML/JSON
//! files under the application path (multi-document), or Kustomize when the path holds a
//! `kustomization.yaml`. Output: the objects sorted canonically and the SHA-256 of that form.
//!
//! Safety: nothing outside the application path is read for plain rendering (symlinks that
//! leave it, `..` and absolute paths are errors naming the file); file size, file count, total
//! size and YAML alias expansion are bounded; remote Kustomize bases are refused; any error
//! fails the whole render (no partial output).

mod canonical;
pub mod helm;
mod kustomize;
mod yaml;

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use git2::{ObjectType, Oid, Repository, Tree};
use serde_json::Value;

pub use crate::domain::source::{HelmOptions, SourceType};
pub use canonical::{canonical_json, digest};
pub use helm::{Capabilities, HelmRepositoryAuth};

/// Bounds on what one render may read and produce.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_file_bytes: u64,
    pub max_files: usize,
    pub max_total_bytes: u64,
    pub kustomize_timeout: Duration,
    /// Program that renders Kustomize: `kubectl` (as `kubectl kustomize`) or `kustomize`.
    pub kustomize_command: String,
    /// How the Kustomize and Helm processes are isolated from the host.
    pub kustomize_sandbox: Sandbox,
    /// The Helm 4 binary (`helm` on `PATH`, or a path).
    pub helm_command: String,
    /// Longest one `helm template` (or dependency fetch) may take.
    pub helm_timeout: Duration,
    /// Where fetched chart dependencies are kept, by lock digest (`None`: not fetched).
    pub helm_dependency_cache: Option<PathBuf>,
    /// Credentials of declared chart repositories, used for dependency fetches from them.
    pub helm_repositories: Vec<HelmRepositoryAuth>,
}

/// Isolation of the Kustomize process. Kustomize follows `resources:` to any directory and
/// fetches remote bases itself, so what it may read is decided by what it can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sandbox {
    /// bubblewrap (`bwrap`): new user, mount, network, PID and IPC namespaces; the file system
    /// holds only the repository checkout (read-only) and the Kustomize binary, so `../..`
    /// finds nothing of the host and remote bases have no network.
    #[default]
    Bwrap,
    /// No isolation (unsafe; for hosts where user namespaces are not available).
    None,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_bytes: 5 * 1024 * 1024,
            max_files: 2_000,
            max_total_bytes: 50 * 1024 * 1024,
            kustomize_timeout: Duration::from_secs(30),
            kustomize_command: "kubectl".into(),
            kustomize_sandbox: Sandbox::Bwrap,
            helm_command: "helm".into(),
            helm_timeout: Duration::from_secs(60),
            helm_dependency_cache: None,
            helm_repositories: Vec::new(),
        }
    }
}

/// What an application renders, beyond its repository and revision.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The application's name (Helm's default release name).
    pub app: &'a str,
    /// Path of the application in the repository (`""`: the root).
    pub path: &'a str,
    /// The destination namespace (see [`render`]).
    pub namespace: &'a str,
    /// `None`: detected from the files at the path.
    pub source: Option<SourceType>,
    pub helm: &'a HelmOptions,
    /// The target cluster's capabilities, for charts that ask (`None`: Helm's defaults).
    pub capabilities: Option<&'a Capabilities>,
    /// Why the cluster could not be asked for them: a chart that does not give both
    /// `kube_version` and `api_versions` itself then fails to render, naming this.
    pub capabilities_error: Option<&'a str>,
}

impl Source<'_> {
    /// The capabilities a chart renders against, or the error when they are needed and the
    /// cluster could not give them.
    fn chart_capabilities(&self) -> Result<Option<&Capabilities>, RenderError> {
        let given = self.helm.kube_version.is_some() && !self.helm.api_versions.is_empty();
        match (self.capabilities, self.capabilities_error) {
            (None, Some(e)) if !given => Err(RenderError::Helm {
                message: format!(
                    "cannot read the cluster's version and API list for the chart's \
                     .Capabilities ({e}); set helm.kube_version and helm.api_versions to render \
                     without the cluster"
                ),
            }),
            (caps, _) => Ok(caps),
        }
    }
}

/// Why a revision could not be rendered. Each names the file at fault where there is one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("invalid application path `{path}`: {reason}")]
    BadAppPath { path: String, reason: String },
    #[error("{path} does not exist at this revision")]
    MissingPath { path: String },
    #[error("{file}: {reason}")]
    UnsafePath { file: String, reason: String },
    #[error("{file} is {size} bytes, over the {limit}-byte limit per file")]
    FileTooLarge { file: String, size: u64, limit: u64 },
    #[error("more than {limit} manifest files under the application path")]
    TooManyFiles { limit: usize },
    #[error("the rendered manifests exceed {limit} bytes")]
    TooLarge { limit: u64 },
    /// The files a kustomization can reach (see the Kustomize module) exceed the total limit.
    #[error("the files the kustomization can read exceed {limit} bytes")]
    CheckoutTooLarge { limit: u64 },
    #[error("{file}: invalid YAML: {message}")]
    Yaml { file: String, message: String },
    #[error("{file}: document {doc} is not a Kubernetes object: {reason}")]
    NotAnObject {
        file: String,
        doc: usize,
        reason: String,
    },
    #[error("{object} is defined twice ({first} and {second})")]
    Duplicate {
        object: String,
        first: String,
        second: String,
    },
    #[error("kustomize: {message}")]
    Kustomize { message: String },
    /// `helm template` (or a dependency fetch) failed; Helm's message names the template.
    #[error("helm: {message}")]
    Helm { message: String },
    #[error("git: {0}")]
    Git(String),
}

impl From<git2::Error> for RenderError {
    fn from(e: git2::Error) -> Self {
        RenderError::Git(e.message().to_owned())
    }
}

/// A render: objects in canonical order, their canonical JSON and its SHA-256 (hex).
#[derive(Debug, Clone)]
pub struct Rendered {
    pub objects: Vec<Value>,
    pub canonical: String,
    pub digest: String,
    /// Application definitions (`apiVersion: tidemark.dev/v1`, `kind: Application`) found in
    /// the render, each with its origin (`file#document`): they declare applications (app of
    /// apps, see [`crate::git::generators`]) and are never applied to a cluster, so they are
    /// not in `objects`, `canonical` or `digest`.
    pub definitions: Vec<(String, Value)>,
}

/// Renders the application at `app_path` as of `commit`. `namespace` is the application's
/// destination namespace: an object without one is placed there later (by the cluster client),
/// so for the duplicate check `dup` without a namespace and `dup` in `namespace` are the same
/// object (a [`RenderError::Duplicate`] naming both files). The objects themselves are returned
/// as written, namespace or not; the digest does not depend on `namespace`.
///
/// Errors: every [`RenderError`]; any error fails the whole render.
pub fn render(
    repo: &Repository,
    commit: Oid,
    app_path: &str,
    namespace: &str,
    limits: &Limits,
) -> Result<Rendered, RenderError> {
    let helm = HelmOptions::default();
    render_source(
        repo,
        commit,
        &Source {
            app: "",
            path: app_path,
            namespace,
            source: None,
            helm: &helm,
            capabilities: None,
            capabilities_error: None,
        },
        limits,
    )
}

/// Whether `path` at `commit` renders as a Helm chart: `explicit` says so, or (when `None`) the
/// directory holds a `Chart.yaml`. `false` when the path or commit is missing (the render then
/// reports that). Lets callers ask the cluster for `.Capabilities` only for charts.
pub fn is_chart(repo: &Repository, commit: Oid, path: &str, explicit: Option<SourceType>) -> bool {
    if let Some(kind) = explicit {
        return kind == SourceType::Helm;
    }
    let Ok(app_path) = clean_app_path(path) else {
        return false;
    };
    let Ok(root) = repo.find_commit(commit).and_then(|c| c.tree()) else {
        return false;
    };
    if app_path.as_os_str().is_empty() {
        return root.get_name("Chart.yaml").is_some();
    }
    root.get_path(&app_path.join("Chart.yaml")).is_ok()
}

/// Renders `source` as of `commit`: as [`render`], with the source type detected (or given)
/// and a Helm chart rendered through `helm template` (see [`helm`]).
///
/// Errors: every [`RenderError`]; any error fails the whole render.
pub fn render_source(
    repo: &Repository,
    commit: Oid,
    source: &Source<'_>,
    limits: &Limits,
) -> Result<Rendered, RenderError> {
    let app_path = clean_app_path(source.path)?;
    let namespace = source.namespace;
    let root = repo.find_commit(commit)?.tree()?;
    let tree = if app_path.as_os_str().is_empty() {
        root.clone()
    } else {
        let entry = root
            .get_path(&app_path)
            .map_err(|_| RenderError::MissingPath {
                path: app_path.display().to_string(),
            })?;
        if entry.kind() != Some(ObjectType::Tree) {
            return Err(RenderError::MissingPath {
                path: format!("{} (a directory)", app_path.display()),
            });
        }
        repo.find_tree(entry.id())?
    };
    let is_kustomize = ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .any(|n| tree.get_name(n).is_some());
    let kind = source
        .source
        .unwrap_or(if tree.get_name("Chart.yaml").is_some() {
            SourceType::Helm
        } else if is_kustomize {
            SourceType::Kustomize
        } else {
            SourceType::Directory
        });
    let mut docs: Vec<(String, usize, Value)> = Vec::new();
    match kind {
        SourceType::Helm => {
            if tree.get_name("Chart.yaml").is_none() {
                return Err(RenderError::MissingPath {
                    path: format!("{}/Chart.yaml", app_path.display()),
                });
            }
            source.chart_capabilities()?;
            let text =
                kustomize::helm_checkout_and_template(repo, &root, &app_path, source, limits)?;
            parse_helm_output(&text, &mut docs)?;
        }
        SourceType::Kustomize => {
            let text = kustomize::build(repo, &root, &app_path, limits)?;
            parse_into(&text, "kustomize output", &mut docs)?;
        }
        SourceType::Directory => {
            let mut budget = Budget { files: 0, bytes: 0 };
            read_tree(
                repo,
                &root,
                &tree,
                &app_path,
                &app_path,
                limits,
                &mut budget,
                &mut docs,
            )?;
        }
    }
    finish(docs, limits, namespace)
}

/// Renders a chart archive fetched from a chart repository (see [`helm`]).
///
/// Errors: every [`RenderError`] (Helm's own as [`RenderError::Helm`]).
pub fn render_chart_archive(
    archive: &Path,
    source: &Source<'_>,
    limits: &Limits,
) -> Result<Rendered, RenderError> {
    if !source.helm.values_files.is_empty() {
        return Err(RenderError::Helm {
            message: "values_files need a chart in Git; a chart from a chart repository takes \
                      inline `values`, `set` and `set_string`"
                .into(),
        });
    }
    source.chart_capabilities()?;
    let size = std::fs::metadata(archive)
        .map(|m| m.len())
        .map_err(|e| RenderError::Helm {
            message: format!("chart archive: {e}"),
        })?;
    if size > limits.max_total_bytes {
        return Err(RenderError::TooLarge {
            limit: limits.max_total_bytes,
        });
    }
    let text = helm::template(
        helm::ChartInput::Archive(archive),
        &[],
        source.helm,
        source.app,
        source.namespace,
        source.capabilities,
        limits,
    )?;
    let mut docs = Vec::new();
    parse_helm_output(&text, &mut docs)?;
    finish(docs, limits, source.namespace)
}

/// Reads `helm template`'s output, each document named by its `# Source:` template, leaving
/// out test hooks and delete/rollback hooks ([`helm::left_out`]).
fn parse_helm_output(
    text: &str,
    docs: &mut Vec<(String, usize, Value)>,
) -> Result<(), RenderError> {
    let mut all = Vec::new();
    parse_into(text, "helm template output", &mut all)?;
    // Name each document by the template it came from, for duplicate errors.
    let sources: Vec<&str> = text
        .split("\n---")
        .map(|d| {
            d.lines()
                .find_map(|l| l.strip_prefix("# Source: "))
                .unwrap_or("helm template output")
        })
        .collect();
    for (file, doc, obj) in all {
        if helm::left_out(&obj) {
            continue;
        }
        let named = sources
            .get(doc.saturating_sub(1))
            .map_or(file, |s| (*s).to_owned());
        docs.push((named, doc, obj));
    }
    Ok(())
}

/// Reads one manifest text (multi-document YAML or JSON, `kind: List` flattened) as a render:
/// every document must be a Kubernetes object, none twice; `file` names it in errors. The
/// manifest reader of [`render`], on its own (fuzzing, tools).
///
/// Errors: [`RenderError::Yaml`], [`RenderError::NotAnObject`], [`RenderError::Duplicate`],
/// [`RenderError::TooLarge`].
pub fn read_manifests(text: &str, file: &str, limits: &Limits) -> Result<Rendered, RenderError> {
    let mut docs = Vec::new();
    parse_into(text, file, &mut docs)?;
    finish(docs, limits, "")
}

/// Writes the whole of `tree` under `dest` (an existing, empty directory) as the Kustomize
/// render writes what it selects: names validated, nothing written outside `dest`, symlinks
/// created but never followed, at most `10 × max_files` files and `max_total_bytes` in all; a
/// file over `max_file_bytes` is left out (an empty directory of its name stands in its place).
///
/// Errors name the file at fault: [`RenderError::UnsafePath`], [`RenderError::TooManyFiles`],
/// [`RenderError::CheckoutTooLarge`], [`RenderError::Kustomize`] (an I/O error).
pub fn checkout(
    repo: &Repository,
    tree: &Tree<'_>,
    dest: &Path,
    limits: &Limits,
) -> Result<(), RenderError> {
    kustomize::checkout_into(repo, tree, dest, limits).map(|_| ())
}

/// The Helm binary `program` names (a path, or the first binary of that name on `PATH`).
///
/// Errors: [`RenderError::Helm`] when none is found.
pub fn resolve_helm(program: &str) -> Result<PathBuf, RenderError> {
    kustomize::resolve_binary(program).map_err(|_| RenderError::Helm {
        message: format!(
            "no `{program}` binary found; install Helm 4 (scripts/setup.sh) or set git.helm_command"
        ),
    })
}

/// Normalises the configured path: relative, no `..`, no `.` segments.
fn clean_app_path(path: &str) -> Result<PathBuf, RenderError> {
    let bad = |reason: &str| RenderError::BadAppPath {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let p = Path::new(path.trim_end_matches('/'));
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            Component::ParentDir => return Err(bad("`..` is not allowed")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(bad("must be relative to the repository root"))
            }
        }
    }
    Ok(out)
}

struct Budget {
    files: usize,
    bytes: u64,
}

fn is_manifest(name: &str) -> bool {
    !name.starts_with('.')
        && [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

#[allow(clippy::too_many_arguments)]
fn read_tree(
    repo: &Repository,
    root: &Tree<'_>,
    tree: &Tree<'_>,
    dir: &Path,
    app_path: &Path,
    limits: &Limits,
    budget: &mut Budget,
    docs: &mut Vec<(String, usize, Value)>,
) -> Result<(), RenderError> {
    for entry in tree.iter() {
        let name = entry_name(&entry, dir)?.to_owned();
        let file = dir.join(&name);
        let shown = file.display().to_string();
        match (entry.kind(), entry.filemode()) {
            (Some(ObjectType::Tree), _) => {
                let sub = repo.find_tree(entry.id())?;
                read_tree(repo, root, &sub, &file, app_path, limits, budget, docs)?;
            }
            (Some(ObjectType::Blob), 0o120000) => {
                if !is_manifest(&name) {
                    continue;
                }
                // A symlink: its target must stay inside the application path.
                let target =
                    String::from_utf8_lossy(repo.find_blob(entry.id())?.content()).into_owned();
                let resolved = resolve_link(root, dir, &target)
                    .filter(|r| r.starts_with(app_path))
                    .ok_or_else(|| RenderError::UnsafePath {
                        file: shown.clone(),
                        reason: format!("symlink to `{target}` leaves the application path"),
                    })?;
                let target_entry =
                    root.get_path(&resolved)
                        .map_err(|_| RenderError::UnsafePath {
                            file: shown.clone(),
                            reason: format!("symlink target `{target}` does not exist"),
                        })?;
                if target_entry.filemode() == 0o120000
                    || target_entry.kind() != Some(ObjectType::Blob)
                {
                    return Err(RenderError::UnsafePath {
                        file: shown,
                        reason: "symlink must point to a regular file".into(),
                    });
                }
                read_blob(repo, target_entry.id(), &shown, limits, budget, docs)?;
            }
            (Some(ObjectType::Blob), _) if is_manifest(&name) => {
                read_blob(repo, entry.id(), &shown, limits, budget, docs)?
            }
            _ => {}
        }
    }
    Ok(())
}

/// The name of a Git tree entry, which must be one plain path component: UTF-8, not empty,
/// not `.` or `..`, no `/` or NUL, and not `.git` in any letter case (Git itself refuses to
/// check those out). Git's object format allows any bytes in a name (a tree made with
/// `git hash-object -t tree --literally` can name an entry `../../etc/x`), so every name read
/// from a tree goes through here before it is joined to a path.
///
/// Errors: [`RenderError::UnsafePath`] naming the directory (`dir`) and the entry as Git
/// stores it (lossy UTF-8, control characters escaped).
pub fn entry_name<'e>(entry: &'e git2::TreeEntry<'_>, dir: &Path) -> Result<&'e str, RenderError> {
    let bytes = entry.name_bytes();
    let bad = |reason: &str| RenderError::UnsafePath {
        file: dir
            .join(String::from_utf8_lossy(bytes).escape_default().to_string())
            .display()
            .to_string(),
        reason: format!("tree entry name {reason}"),
    };
    let name = std::str::from_utf8(bytes).map_err(|_| bad("is not UTF-8"))?;
    match check_component(name) {
        Ok(()) => Ok(name),
        Err(reason) => Err(bad(reason)),
    }
}

/// Why `name` is not one plain path component (see [`entry_name`]).
pub fn check_component(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("is empty")
    } else if name == "." || name == ".." {
        Err("is `.` or `..`")
    } else if name.contains('/') {
        Err("contains a path separator")
    } else if name.chars().any(char::is_control) {
        Err("contains a control character")
    } else if name.eq_ignore_ascii_case(".git") {
        Err("is `.git`")
    } else {
        Ok(())
    }
}

/// Where a symlink in directory `dir` (a path of real directories of `root`) pointing to
/// `target` leads within the repository. `None` when the target is absolute, climbs above the
/// repository root, or passes through another symlink on the way (`d/up -> ..` then
/// `x -> d/up/../..`): read lexically, such a target stays inside, but on disk the inner link
/// is followed first and the path leaves the checkout. A symlink as the *last* component is
/// fine: it is checked on its own.
fn resolve_link(root: &Tree<'_>, dir: &Path, target: &str) -> Option<PathBuf> {
    if target.starts_with('/') {
        return None;
    }
    let mut out = dir.to_path_buf();
    let components: Vec<Component<'_>> = Path::new(target).components().collect();
    for (i, c) in components.iter().enumerate() {
        match c {
            Component::Normal(s) => {
                out.push(s);
                let last = i + 1 == components.len();
                if !last && root.get_path(&out).is_ok_and(|e| e.filemode() == 0o120000) {
                    return None;
                }
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

fn read_blob(
    repo: &Repository,
    id: Oid,
    file: &str,
    limits: &Limits,
    budget: &mut Budget,
    docs: &mut Vec<(String, usize, Value)>,
) -> Result<(), RenderError> {
    budget.files += 1;
    if budget.files > limits.max_files {
        return Err(RenderError::TooManyFiles {
            limit: limits.max_files,
        });
    }
    // The header gives the size without inflating the object.
    let (size, _) = repo.odb()?.read_header(id)?;
    let size = size as u64;
    if size > limits.max_file_bytes {
        return Err(RenderError::FileTooLarge {
            file: file.to_owned(),
            size,
            limit: limits.max_file_bytes,
        });
    }
    budget.bytes += size;
    if budget.bytes > limits.max_total_bytes {
        return Err(RenderError::TooLarge {
            limit: limits.max_total_bytes,
        });
    }
    let blob = repo.find_blob(id)?;
    let text = std::str::from_utf8(blob.content()).map_err(|_| RenderError::Yaml {
        file: file.to_owned(),
        message: "not UTF-8 text".into(),
    })?;
    parse_into(text, file, docs)
}

/// Parses a multi-document YAML (or JSON) text as kubectl reads it (see [`yaml`]: YAML 1.1
/// plain scalars, `0400` is 256); `kind: List` documents are flattened. Documents are numbered
/// by their place in the text, empty ones included.
fn parse_into(
    text: &str,
    file: &str,
    docs: &mut Vec<(String, usize, Value)>,
) -> Result<(), RenderError> {
    let yaml_error = |message: &str| RenderError::Yaml {
        file: file.to_owned(),
        message: first_line(message),
    };
    // First the YAML 1.2 reader with its budgets (events, nodes, anchors, alias replay,
    // documents) and its error messages; only a text it accepts is read again, by scalar style.
    serde_saphyr::from_multiple_with_options::<Value>(text, yaml_options())
        .map_err(|e| yaml_error(&e.to_string()))?;
    let parsed = yaml::documents(text).map_err(|e| yaml_error(&e))?;
    for (i, doc) in parsed.into_iter().enumerate() {
        match doc {
            Value::Null => {}
            Value::Object(ref m)
                if m.get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.ends_with("List"))
                    && m.get("items").is_some() =>
            {
                for item in m
                    .get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    docs.push((file.to_owned(), i + 1, item));
                }
            }
            other => docs.push((file.to_owned(), i + 1, other)),
        }
    }
    Ok(())
}

/// The parser's defaults (alias and anchor budgets against "billion laughs"), with room for
/// generated files holding many documents. Non-finite floats pass as text: whether `1e400` is a
/// string (kubectl) or `.inf` an error is [`yaml`]'s to say.
fn yaml_options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::AsString;
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = 20_000;
    options.budget = Some(budget);
    options
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}

/// (group, kind, namespace, name): the canonical sort key of an object.
type ObjectKey = (String, String, String, String);

/// `Kind.group namespace/name`, as errors show an object.
fn shown_object((g, k, ns, n): &ObjectKey) -> String {
    let group = if g.is_empty() {
        String::new()
    } else {
        format!(".{g}")
    };
    let ns = if ns.is_empty() {
        String::new()
    } else {
        format!("{ns}/")
    };
    format!("{k}{group} {ns}{n}")
}

/// Sorts the objects canonically, refuses one defined twice and digests the result. For the
/// duplicate check an object without a namespace is in `namespace` (where it will be applied);
/// the sort key and the objects keep the namespace as written.
fn finish(
    docs: Vec<(String, usize, Value)>,
    limits: &Limits,
    namespace: &str,
) -> Result<Rendered, RenderError> {
    let mut keyed: Vec<(ObjectKey, Value)> = Vec::with_capacity(docs.len());
    let mut seen: std::collections::HashMap<ObjectKey, String> =
        std::collections::HashMap::with_capacity(docs.len());
    let mut definitions = Vec::new();
    for (file, doc, obj) in docs {
        let not_object = |reason: &str| RenderError::NotAnObject {
            file: file.clone(),
            doc,
            reason: reason.to_owned(),
        };
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| not_object("apiVersion is missing"))?;
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .ok_or_else(|| not_object("kind is missing"))?;
        let name = obj["metadata"]
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| not_object("metadata.name is missing"))?;
        let written_ns = obj["metadata"]
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let key = (
            group.to_owned(),
            kind.to_owned(),
            written_ns.to_owned(),
            name.to_owned(),
        );
        let placed_ns = if written_ns.is_empty() {
            namespace
        } else {
            written_ns
        };
        let placed = (
            group.to_owned(),
            kind.to_owned(),
            placed_ns.to_owned(),
            name.to_owned(),
        );
        let origin = format!("{file}#{doc}");
        if let Some(first) = seen.get(&placed) {
            return Err(RenderError::Duplicate {
                object: shown_object(&placed),
                first: first.clone(),
                second: origin,
            });
        }
        if crate::git::generators::is_definition(&obj) {
            definitions.push((origin.clone(), obj));
            seen.insert(placed, origin);
            continue;
        }
        seen.insert(placed, origin);
        keyed.push((key, obj));
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let objects: Vec<Value> = keyed.into_iter().map(|(_, o)| o).collect();
    let canonical = canonical_json(&Value::Array(objects.clone()));
    if canonical.len() as u64 > limits.max_total_bytes {
        return Err(RenderError::TooLarge {
            limit: limits.max_total_bytes,
        });
    }
    let digest = digest(&canonical);
    Ok(Rendered {
        objects,
        canonical,
        digest,
        definitions,
    })
}
