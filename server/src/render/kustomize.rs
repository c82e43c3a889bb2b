//! Kustomize rendering. The revision's whole tree is checked out into a fresh temporary
//! directory through a directory handle (`cap_std::fs::Dir`), one validated name at a time, so
//! no write can land outside it whatever the tree holds (names are single path components,
//! symlinks are only created, never followed, while writing). Kustomize then runs under a
//! timeout in a bubblewrap sandbox whose file system is that checkout (read-only) and the
//! Kustomize binary, with no network: `resources: [../../../etc]` finds nothing of the host and
//! `git::https://…` bases cannot be fetched. What Kustomize may read is decided by what it can
//! see (and by its own `LoadRestrictionsRootOnly` for files), not by matching strings.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cap_std::fs::{Dir, OpenOptions};
use git2::{ObjectType, Repository, Tree};

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
    checkout_into(repo, root, &checkout_dir, limits)?;

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
        return Err(RenderError::Kustomize { message });
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

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// See [`super::checkout`].
pub(super) fn checkout_into(
    repo: &Repository,
    root: &Tree<'_>,
    dest: &Path,
    limits: &Limits,
) -> Result<(), RenderError> {
    let dir = Dir::open_ambient_dir(dest, cap_std::ambient_authority())
        .map_err(io("the checkout directory"))?;
    let mut budget = CheckoutBudget { files: 0, bytes: 0 };
    checkout(repo, root, root, &dir, Path::new(""), limits, &mut budget)
}

struct CheckoutBudget {
    files: usize,
    bytes: u64,
}

/// Writes `tree` into `dir` (which is `rel` inside the checkout). Every name is validated by
/// [`super::entry_name`] and used as a single component relative to a directory handle;
/// directories and files are created new (a name given twice is an error, never an
/// overwrite) and symlinks are created last in each directory, so nothing written here follows
/// a link.
#[allow(clippy::too_many_arguments)]
fn checkout(
    repo: &Repository,
    root: &Tree<'_>,
    tree: &Tree<'_>,
    dir: &Dir,
    rel: &Path,
    limits: &Limits,
    budget: &mut CheckoutBudget,
) -> Result<(), RenderError> {
    let mut links = Vec::new();
    for entry in tree.iter() {
        let name = super::entry_name(&entry, rel)?;
        let rel_path = rel.join(name);
        let shown = rel_path.display().to_string();
        match (entry.kind(), entry.filemode()) {
            (Some(ObjectType::Tree), _) => {
                dir.create_dir(name).map_err(io(&shown))?;
                let sub = dir.open_dir(name).map_err(io(&shown))?;
                checkout(
                    repo,
                    root,
                    &repo.find_tree(entry.id())?,
                    &sub,
                    &rel_path,
                    limits,
                    budget,
                )?;
            }
            (Some(ObjectType::Blob), mode) => {
                budget.files += 1;
                if budget.files > limits.max_files * 10 {
                    return Err(RenderError::TooManyFiles {
                        limit: limits.max_files * 10,
                    });
                }
                let (size, _) = repo.odb()?.read_header(entry.id())?;
                if size as u64 > limits.max_file_bytes {
                    // Large non-manifest files are irrelevant to kustomize; manifests are not.
                    if super::is_manifest(name) {
                        return Err(RenderError::FileTooLarge {
                            file: shown,
                            size: size as u64,
                            limit: limits.max_file_bytes,
                        });
                    }
                    continue;
                }
                budget.bytes += size as u64;
                if budget.bytes > limits.max_total_bytes {
                    return Err(RenderError::TooLarge {
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
