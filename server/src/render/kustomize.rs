//! Kustomize rendering.
//!
//! **What is checked out.** Not the whole repository: the part the application's
//! kustomization can reach, so that limits apply to what it reads and a large file, a hostile
//! symlink or a kustomization with a remote base elsewhere in the repository does not stop
//! this application. Starting from the application path, a directory is a *root* and is
//! checked out whole; every string value of its kustomization file that names an existing path
//! of the repository (relative to the root, or absolute under the sandbox's `/repo`; `..` and
//! symlinks followed as the file system follows them, never above the repository) adds that
//! path: a directory as a new root (its kustomization read in turn), a file on its own, and
//! every symlink passed on the way. Symlinks inside a root add their targets the same way.
//! This over-approximates what Kustomize can open (`LoadRestrictionsRootOnly` confines file
//! reads to the roots; bases and components are directories the kustomization names): a
//! string that only looks like a path adds a little more, never less. Anything not reached is
//! absent from the checkout, so a read of it fails (Kustomize names the path) rather than
//! succeeding with other content.
//!
//! **Limits.** Within the selection: at most `10 × max_files` entries and `max_total_bytes` of
//! content. A file over `max_file_bytes` is not written: an empty directory of its name stands
//! in its place, so that any read of it fails (a directory cannot be read as a file, nor
//! loaded as a kustomization without one) while an unreferenced large file costs nothing. When
//! Kustomize fails on such a file, the render fails with [`RenderError::FileTooLarge`] naming
//! it.
//!
//! **Safety.** The selection is written into a fresh temporary directory through a directory
//! handle (`cap_std::fs::Dir`), one validated name at a time, so no write can land outside it
//! whatever the tree holds (names are single path components, symlinks are only created, never
//! followed, while writing; a symlink that leaves the repository or passes through another
//! symlink fails the render). Kustomize then runs under a timeout in a bubblewrap sandbox whose
//! file system is that checkout (read-only) and the Kustomize binary, with no network:
//! `resources: [../../../etc]` finds nothing of the host and `git::https://…` bases cannot be
//! fetched. What Kustomize may read is decided by what it can see (and by its own
//! `LoadRestrictionsRootOnly` for files), not by matching strings: the selection above only
//! decides what is left out.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use cap_std::fs::{Dir, OpenOptions};
use git2::{ObjectType, Repository, Tree, TreeEntry};
use serde_json::Value;

use super::{Limits, RenderError, Sandbox};

/// Where the checkout appears inside the sandbox.
const SANDBOX_REPO: &str = "/repo";
/// Where the Kustomize binary appears inside the sandbox.
const SANDBOX_BIN: &str = "/bin/kustomize-renderer";

pub(super) fn build(
    repo: &Repository,
    root: &Tree<'_>,
    app_path: &Path,
    limits: &Limits,
) -> Result<String, RenderError> {
    let tmp = tempfile::tempdir().map_err(|e| RenderError::Kustomize {
        message: format!("temporary directory: {e}"),
    })?;
    let checkout_dir = tmp.path().join("repo");
    std::fs::create_dir(&checkout_dir).map_err(io("the checkout directory"))?;
    let selection = reachable(repo, root, app_path, limits)?;
    let skipped = checkout_selected(repo, root, &checkout_dir, limits, &selection)?;

    let timeout = limits.kustomize_timeout.as_secs().max(1).to_string();
    let mut cmd = Command::new("timeout");
    // Nothing of Tidemark's environment (database URL, keys, tokens) reaches the render, not
    // even the sandbox's own init process.
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .args(["--kill-after=2", &timeout]);
    let shown_root: String;
    match limits.kustomize_sandbox {
        Sandbox::Bwrap => {
            let binary = resolve_binary(&limits.kustomize_command)?;
            let bwrap = find_on_path("bwrap").ok_or_else(|| RenderError::Kustomize {
                message: "Kustomize renders run in a bubblewrap sandbox (git.kustomize_sandbox = \
                          \"bwrap\") but `bwrap` is not installed: apt-get install bubblewrap"
                    .into(),
            })?;
            cmd.arg(bwrap)
                .args([
                    "--unshare-all",
                    "--die-with-parent",
                    "--new-session",
                    "--cap-drop",
                    "ALL",
                    "--clearenv",
                    "--setenv",
                    "HOME",
                    "/nonexistent",
                    "--setenv",
                    "KUBECONFIG",
                    "/dev/null",
                    // A minimal /dev (null, urandom, …); no /proc: nothing of the host's
                    // processes or mount table is visible.
                    "--dev",
                    "/dev",
                    "--ro-bind",
                ])
                .arg(&binary)
                .arg(SANDBOX_BIN)
                .arg("--ro-bind")
                .arg(&checkout_dir)
                .args([SANDBOX_REPO, "--chdir", SANDBOX_REPO, SANDBOX_BIN]);
            shown_root = format!("{SANDBOX_REPO}/");
            kustomize_args(&mut cmd, &limits.kustomize_command);
            cmd.arg(relative_target(app_path));
        }
        Sandbox::None => {
            cmd.arg(&limits.kustomize_command);
            kustomize_args(&mut cmd, &limits.kustomize_command);
            cmd.arg(checkout_dir.join(app_path))
                .env("KUBECONFIG", "/dev/null");
            shown_root = format!("{}/", checkout_dir.display());
        }
    }
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| RenderError::Kustomize {
            message: format!("cannot run {}: {e}", limits.kustomize_command),
        })?;
    if output.status.code() == Some(124) || output.status.code() == Some(137) {
        return Err(RenderError::Kustomize {
            message: format!("timed out after {timeout}s"),
        });
    }
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message = stderr
            .replace(&shown_root, "")
            .replace(&checkout_dir.display().to_string(), "")
            .trim()
            .to_owned();
        return Err(failure(message, &skipped, limits));
    }
    if output.stdout.len() as u64 > limits.max_total_bytes {
        return Err(RenderError::TooLarge {
            limit: limits.max_total_bytes,
        });
    }
    String::from_utf8(output.stdout).map_err(|_| RenderError::Kustomize {
        message: "output is not UTF-8".into(),
    })
}

/// `kubectl kustomize` or `kustomize build`, with Kustomize's own restriction that files
/// (patches, generator inputs) come from within each kustomization's root.
fn kustomize_args(cmd: &mut Command, program: &str) {
    if program.ends_with("kubectl") {
        cmd.arg("kustomize");
    } else {
        cmd.arg("build");
    }
    cmd.args(["--load-restrictor", "LoadRestrictionsRootOnly"]);
}

fn relative_target(app_path: &Path) -> PathBuf {
    if app_path.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        app_path.to_path_buf()
    }
}

/// The executable `program` names: a path, or the first file of that name on `PATH` that is
/// a binary (version-manager shims are shell scripts that cannot run inside the sandbox, so
/// they are skipped). The result is canonical (symlinks resolved).
///
/// Errors: [`RenderError::Kustomize`] when no binary is found.
pub fn resolve_binary(program: &str) -> Result<PathBuf, RenderError> {
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![PathBuf::from(program)]
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(program)).collect())
            .unwrap_or_default()
    };
    let mut scripts = Vec::new();
    for candidate in candidates {
        let Ok(real) = std::fs::canonicalize(&candidate) else {
            continue;
        };
        if !real.is_file() {
            continue;
        }
        let mut magic = [0u8; 2];
        let read = std::fs::File::open(&real)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok();
        if read && &magic == b"#!" {
            scripts.push(candidate.display().to_string());
            continue;
        }
        return Ok(real);
    }
    let skipped = if scripts.is_empty() {
        String::new()
    } else {
        format!(" (skipped scripts: {})", scripts.join(", "))
    };
    Err(RenderError::Kustomize {
        message: format!(
            "no `{program}` binary found{skipped}; set git.kustomize_command to the path of \
             kubectl or kustomize"
        ),
    })
}

pub(super) fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Why Kustomize failed: a file left out for its size when Kustomize names it (or names
/// nothing else and files were left out), else Kustomize's own message.
fn failure(message: String, skipped: &[Skipped], limits: &Limits) -> RenderError {
    if let Some(s) = skipped.iter().find(|s| message.contains(&s.path)) {
        return RenderError::FileTooLarge {
            file: s.path.clone(),
            size: s.size,
            limit: limits.max_file_bytes,
        };
    }
    if skipped.is_empty() {
        return RenderError::Kustomize { message };
    }
    let names: Vec<&str> = skipped.iter().take(5).map(|s| s.path.as_str()).collect();
    RenderError::Kustomize {
        message: format!(
            "{message} (not checked out, over the {}-byte limit per file: {}{})",
            limits.max_file_bytes,
            names.join(", "),
            if skipped.len() > names.len() {
                ", …"
            } else {
                ""
            }
        ),
    }
}

/// The names Kustomize looks for in a directory.
const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// What of the repository a Kustomize render checks out (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Selection {
    /// Directories checked out whole (`""`: the whole repository).
    roots: BTreeSet<PathBuf>,
    /// Single files and symlinks, with the directories that lead to them.
    entries: BTreeSet<PathBuf>,
}

impl Selection {
    /// The whole tree.
    fn everything() -> Self {
        Self {
            roots: BTreeSet::from([PathBuf::new()]),
            entries: BTreeSet::new(),
        }
    }

    /// Whether directory `dir` holds something selected below it.
    fn leads_to(&self, dir: &Path) -> bool {
        self.roots
            .iter()
            .chain(self.entries.iter())
            .any(|p| p.starts_with(dir))
    }
}

/// How many symlinks one path may pass through (as Linux's `MAXSYMLINKS`).
const MAX_LINK_HOPS: u32 = 40;

/// Where paths lead within the repository, as the file system resolves them in the checkout.
struct Resolver<'r, 't> {
    repo: &'r Repository,
    root: &'r Tree<'t>,
}

impl Resolver<'_, '_> {
    fn entry(&self, path: &Path) -> Option<TreeEntry<'static>> {
        if path.as_os_str().is_empty() {
            return None;
        }
        self.root.get_path(path).ok()
    }

    fn is_link(&self, path: &Path) -> bool {
        self.entry(path).is_some_and(|e| e.filemode() == 0o120000)
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.as_os_str().is_empty()
            || self
                .entry(path)
                .is_some_and(|e| e.kind() == Some(ObjectType::Tree))
    }

    /// The target of the symlink at `path` (at most `PATH_MAX`, 4096 bytes, like a real one).
    fn link_target(&self, path: &Path) -> Option<String> {
        let entry = self.entry(path)?;
        let (size, _) = self.repo.odb().ok()?.read_header(entry.id()).ok()?;
        if size > 4096 {
            return None;
        }
        let blob = self.repo.find_blob(entry.id()).ok()?;
        Some(String::from_utf8_lossy(blob.content()).into_owned())
    }

    /// `path` with a symlink at its end followed until it is not one (each link passed is
    /// added to `links`). `None` when a link leaves the repository or the chain is too long.
    fn follow(
        &self,
        mut path: PathBuf,
        links: &mut Vec<PathBuf>,
        hops: &mut u32,
    ) -> Option<PathBuf> {
        while self.is_link(&path) {
            *hops += 1;
            if *hops > MAX_LINK_HOPS {
                return None;
            }
            let target = self.link_target(&path)?;
            links.push(path.clone());
            let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
            path = self.walk(&parent, &target, links, hops)?;
        }
        Some(path)
    }

    /// Where `rel` leads from directory `from`: `.` skipped, `..` climbs (never above the
    /// repository), a symlink before the last component is followed (the links passed are
    /// added to `links`); the last component is not followed. `None` for absolute paths, paths
    /// that leave the repository or name nothing.
    fn walk(
        &self,
        from: &Path,
        rel: &str,
        links: &mut Vec<PathBuf>,
        hops: &mut u32,
    ) -> Option<PathBuf> {
        let mut cur = from.to_path_buf();
        let components: Vec<Component<'_>> = Path::new(rel).components().collect();
        for (i, c) in components.iter().enumerate() {
            match c {
                Component::Normal(name) => {
                    let name = name.to_str()?;
                    super::check_component(name).ok()?;
                    cur.push(name);
                    self.entry(&cur)?;
                    if i + 1 < components.len() {
                        cur = self.follow(cur, links, hops)?;
                        if !self.is_dir(&cur) {
                            return None;
                        }
                    }
                }
                Component::CurDir => {}
                Component::ParentDir => {
                    if !cur.pop() {
                        return None;
                    }
                }
                Component::RootDir | Component::Prefix(_) => return None,
            }
        }
        Some(cur)
    }
}

/// Adds what `reference` (a string of the kustomization in `dir`) names to `selection`: a
/// directory becomes a root to visit (`queue`), a file an entry, with every symlink on the way.
fn add_reference(
    resolver: &Resolver<'_, '_>,
    dir: &Path,
    reference: &str,
    selection: &mut Selection,
    queue: &mut Vec<PathBuf>,
) {
    let reference = reference.trim();
    if reference.is_empty() || reference.len() > 4096 || reference.contains('\n') {
        return;
    }
    let (from, rel) = match reference.strip_prefix(SANDBOX_REPO) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            (PathBuf::new(), rest.trim_start_matches('/'))
        }
        _ if reference.starts_with('/') => return,
        _ => (dir.to_path_buf(), reference),
    };
    let mut links = Vec::new();
    let mut hops = 0;
    let Some(named) = resolver.walk(&from, rel, &mut links, &mut hops) else {
        return;
    };
    add_path(resolver, named, links, hops, selection, queue);
}

/// Adds `path` (followed if it is a symlink) and the symlinks passed to reach it.
fn add_path(
    resolver: &Resolver<'_, '_>,
    path: PathBuf,
    mut links: Vec<PathBuf>,
    mut hops: u32,
    selection: &mut Selection,
    queue: &mut Vec<PathBuf>,
) {
    let target = resolver.follow(path.clone(), &mut links, &mut hops);
    selection.entries.extend(links);
    match target {
        Some(t) if resolver.is_dir(&t) => queue.push(t),
        Some(t) => {
            selection.entries.insert(t);
        }
        None => {
            // A link that leads nowhere (or out): checked out as it is, and refused there if
            // it leaves the repository.
            selection.entries.insert(path);
        }
    }
}

/// Every string value of a kustomization (where paths are named), at most 4 KiB each.
fn strings_of(v: &Value, out: &mut Vec<String>) {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) if s.len() <= 4096 => out.push(s.clone()),
            Value::Array(items) => stack.extend(items),
            Value::Object(m) => stack.extend(m.values()),
            _ => {}
        }
    }
}

/// The part of the repository the kustomization at `app_path` can reach (see the module docs).
///
/// Errors: [`RenderError::TooManyFiles`] when the directories to check out hold more than
/// `10 × max_files` entries; [`RenderError::UnsafePath`] for a name in them that is not one
/// path component.
pub(super) fn reachable(
    repo: &Repository,
    root: &Tree<'_>,
    app_path: &Path,
    limits: &Limits,
) -> Result<Selection, RenderError> {
    let resolver = Resolver { repo, root };
    let mut selection = Selection::default();
    let mut queue = vec![app_path.to_path_buf()];
    let mut scanned: Vec<PathBuf> = Vec::new();
    let mut visited = 0usize;
    let max_entries = limits.max_files * 10;
    while let Some(dir) = queue.pop() {
        if !selection.roots.insert(dir.clone()) {
            continue;
        }
        let tree = if dir.as_os_str().is_empty() {
            root.clone()
        } else {
            match root.get_path(&dir) {
                Ok(e) if e.kind() == Some(ObjectType::Tree) => repo.find_tree(e.id())?,
                _ => continue,
            }
        };
        // What its kustomization names (read through a symlink as Kustomize would).
        for name in KUSTOMIZATION_FILES {
            let mut links = Vec::new();
            let mut hops = 0;
            let Some(file) = resolver.follow(dir.join(name), &mut links, &mut hops) else {
                continue;
            };
            let Some(entry) = resolver.entry(&file) else {
                continue;
            };
            if entry.kind() != Some(ObjectType::Blob) {
                continue;
            }
            let (size, _) = repo.odb()?.read_header(entry.id())?;
            if size as u64 > limits.max_file_bytes {
                continue;
            }
            let blob = repo.find_blob(entry.id())?;
            let Ok(text) = std::str::from_utf8(blob.content()) else {
                continue;
            };
            // Unreadable: Kustomize says why when it reads it.
            let Ok(doc) = serde_saphyr::from_str::<Value>(text) else {
                continue;
            };
            let mut strings = Vec::new();
            strings_of(&doc, &mut strings);
            for s in strings {
                add_reference(&resolver, &dir, &s, &mut selection, &mut queue);
            }
        }
        // Where the symlinks inside it lead, once per subtree.
        if scanned.iter().any(|s| dir.starts_with(s)) {
            continue;
        }
        scanned.push(dir.clone());
        let mut dirs = vec![(tree, dir.clone())];
        while let Some((tree, rel)) = dirs.pop() {
            for entry in tree.iter() {
                visited += 1;
                if visited > max_entries {
                    return Err(RenderError::TooManyFiles { limit: max_entries });
                }
                let name = super::entry_name(&entry, &rel)?;
                let path = rel.join(name);
                match (entry.kind(), entry.filemode()) {
                    // A subtree scanned as a root of its own is not walked twice.
                    (Some(ObjectType::Tree), _) if !scanned.contains(&path) => {
                        dirs.push((repo.find_tree(entry.id())?, path));
                    }
                    (Some(ObjectType::Blob), 0o120000) => {
                        add_path(&resolver, path, Vec::new(), 0, &mut selection, &mut queue)
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(selection)
}

/// Checks out a Helm chart (the directory at `chart_dir`, whole) and its values files (each
/// resolved from the chart directory as the file system would, never above the repository),
/// fetches missing dependencies, and runs `helm template` (see [`super::helm`]).
///
/// Errors: [`RenderError::UnsafePath`] for a values file that leaves the repository (by `..`,
/// an absolute path or a symlink), [`RenderError::MissingPath`] for one that does not exist,
/// the checkout's errors, and Helm's ([`RenderError::Helm`]).
pub(super) fn helm_checkout_and_template(
    repo: &Repository,
    root: &Tree<'_>,
    chart_dir: &Path,
    source: &super::Source<'_>,
    limits: &Limits,
) -> Result<String, RenderError> {
    let resolver = Resolver { repo, root };
    let mut selection = Selection::default();
    selection.roots.insert(chart_dir.to_path_buf());
    let mut values = Vec::new();
    for file in &source.helm.values_files {
        let shown = chart_dir.join(file).display().to_string();
        let leaves = || RenderError::UnsafePath {
            file: shown.clone(),
            reason: format!("values file `{file}` leaves the repository"),
        };
        // Lexically first: absolute, or more `..` than the chart is deep.
        if file.starts_with('/') || file.trim().is_empty() {
            return Err(leaves());
        }
        let mut depth = chart_dir.components().count() as i64;
        for c in Path::new(file).components() {
            match c {
                Component::ParentDir => depth -= 1,
                Component::Normal(_) => depth += 1,
                Component::CurDir => {}
                _ => return Err(leaves()),
            }
            if depth < 0 {
                return Err(leaves());
            }
        }
        let mut links = Vec::new();
        let mut hops = 0;
        let Some(named) = resolver.walk(chart_dir, file, &mut links, &mut hops) else {
            // Lexically inside: missing, or a directory symlink on the way leads out.
            if links.is_empty() {
                return Err(RenderError::MissingPath {
                    path: format!("values file {shown}"),
                });
            }
            return Err(leaves());
        };
        let target = resolver
            .follow(named, &mut links, &mut hops)
            .ok_or_else(leaves)?;
        if resolver.is_dir(&target) {
            return Err(RenderError::UnsafePath {
                file: shown,
                reason: "values file is a directory".into(),
            });
        }
        selection.entries.extend(links);
        selection.entries.insert(target.clone());
        values.push(target);
    }
    let tmp = tempfile::tempdir().map_err(|e| RenderError::Helm {
        message: format!("temporary directory: {e}"),
    })?;
    let checkout_dir = tmp.path().join("repo");
    std::fs::create_dir(&checkout_dir).map_err(io("the checkout directory"))?;
    let skipped = checkout_selected(repo, root, &checkout_dir, limits, &selection)?;
    if let Some(s) = skipped
        .iter()
        .find(|s| values.iter().any(|v| Path::new(&s.path) == v))
    {
        return Err(RenderError::FileTooLarge {
            file: s.path.clone(),
            size: s.size,
            limit: limits.max_file_bytes,
        });
    }
    super::helm::ensure_dependencies(
        &checkout_dir.join(chart_dir),
        &chart_dir.display().to_string(),
        limits,
    )?;
    super::helm::template(
        super::helm::ChartInput::Checkout {
            dir: &checkout_dir,
            chart: chart_dir,
        },
        &values,
        source.helm,
        source.app,
        source.namespace,
        source.capabilities,
        limits,
    )
}

/// See [`super::checkout`]: the whole tree.
pub(super) fn checkout_into(
    repo: &Repository,
    root: &Tree<'_>,
    dest: &Path,
    limits: &Limits,
) -> Result<Vec<Skipped>, RenderError> {
    checkout_selected(repo, root, dest, limits, &Selection::everything())
}

/// A file not checked out for its size (an empty directory stands in its place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Skipped {
    /// Its path in the repository.
    pub(super) path: String,
    /// Its size in bytes.
    pub(super) size: u64,
}

/// Writes the `selection` of `root` under `dest` (an existing, empty directory). Returns the
/// files left out for their size.
fn checkout_selected(
    repo: &Repository,
    root: &Tree<'_>,
    dest: &Path,
    limits: &Limits,
    selection: &Selection,
) -> Result<Vec<Skipped>, RenderError> {
    let dir = Dir::open_ambient_dir(dest, cap_std::ambient_authority())
        .map_err(io("the checkout directory"))?;
    let mut budget = CheckoutBudget {
        files: 0,
        bytes: 0,
        skipped: Vec::new(),
    };
    let whole = selection.roots.contains(Path::new(""));
    checkout(
        repo,
        root,
        root,
        &dir,
        Path::new(""),
        whole,
        selection,
        limits,
        &mut budget,
    )?;
    Ok(budget.skipped)
}

struct CheckoutBudget {
    files: usize,
    bytes: u64,
    skipped: Vec<Skipped>,
}

/// Writes `tree` into `dir` (which is `rel` inside the checkout): everything when `whole`
/// (`rel` is inside a root of the selection), else only what the selection names or leads to.
/// Every name written is validated by [`super::entry_name`] and used as a single component
/// relative to a directory handle; directories and files are created new (a name given twice
/// is an error, never an overwrite) and symlinks are created last in each directory, so
/// nothing written here follows a link.
#[allow(clippy::too_many_arguments)]
fn checkout(
    repo: &Repository,
    root: &Tree<'_>,
    tree: &Tree<'_>,
    dir: &Dir,
    rel: &Path,
    whole: bool,
    selection: &Selection,
    limits: &Limits,
    budget: &mut CheckoutBudget,
) -> Result<(), RenderError> {
    let mut links = Vec::new();
    for entry in tree.iter() {
        let name = if whole {
            super::entry_name(&entry, rel)?
        } else {
            // Outside the roots a name is only looked at if it is selected, and selected
            // paths are made of valid names.
            match super::entry_name(&entry, rel) {
                Ok(name) => name,
                Err(_) => continue,
            }
        };
        let rel_path = rel.join(name);
        let shown = rel_path.display().to_string();
        let inside = whole || selection.roots.contains(&rel_path);
        let wanted = inside || selection.entries.contains(&rel_path);
        match (entry.kind(), entry.filemode()) {
            (Some(ObjectType::Tree), _) => {
                if !inside && !selection.leads_to(&rel_path) {
                    continue;
                }
                dir.create_dir(name).map_err(io(&shown))?;
                let sub = dir.open_dir(name).map_err(io(&shown))?;
                checkout(
                    repo,
                    root,
                    &repo.find_tree(entry.id())?,
                    &sub,
                    &rel_path,
                    inside,
                    selection,
                    limits,
                    budget,
                )?;
            }
            (Some(ObjectType::Blob), mode) if wanted => {
                budget.files += 1;
                if budget.files > limits.max_files * 10 {
                    return Err(RenderError::TooManyFiles {
                        limit: limits.max_files * 10,
                    });
                }
                let (size, _) = repo.odb()?.read_header(entry.id())?;
                let size = size as u64;
                if size > limits.max_file_bytes {
                    // In its place an empty directory: reading it fails, and names it.
                    dir.create_dir(name).map_err(io(&shown))?;
                    budget.skipped.push(Skipped { path: shown, size });
                    continue;
                }
                budget.bytes += size;
                if budget.bytes > limits.max_total_bytes {
                    return Err(RenderError::CheckoutTooLarge {
                        limit: limits.max_total_bytes,
                    });
                }
                let blob = repo.find_blob(entry.id())?;
                if mode == 0o120000 {
                    let target = String::from_utf8_lossy(blob.content()).into_owned();
                    if super::resolve_link(root, rel, &target).is_none() {
                        return Err(RenderError::UnsafePath {
                            file: shown,
                            reason: format!(
                                "symlink to `{target}` leaves the repository or passes through \
                                 another symlink"
                            ),
                        });
                    }
                    links.push((name.to_owned(), target, shown));
                } else {
                    let mut file = dir
                        .open_with(name, OpenOptions::new().write(true).create_new(true))
                        .map_err(io(&shown))?;
                    file.write_all(blob.content()).map_err(io(&shown))?;
                }
            }
            _ => {}
        }
    }
    for (name, target, shown) in links {
        dir.symlink(&target, &name).map_err(io(&shown))?;
    }
    Ok(())
}

fn io(file: &str) -> impl Fn(std::io::Error) -> RenderError + '_ {
    move |e| RenderError::Kustomize {
        message: format!("writing {file}: {e}"),
    }
}
