//! Kustomize rendering: the revision's tree is written to a temporary directory (bounded like a
//! plain render; symlinks must stay inside the repository), remote bases are refused, and
//! `kubectl kustomize` (or `kustomize build`) runs under a timeout.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use git2::{ObjectType, Repository, Tree};

use super::{Limits, RenderError};

pub(super) fn build(
    repo: &Repository,
    root: &Tree<'_>,
    app_path: &Path,
    limits: &Limits,
) -> Result<String, RenderError> {
    let dir = tempfile::tempdir().map_err(|e| RenderError::Kustomize {
        message: format!("temporary directory: {e}"),
    })?;
    let mut files = 0usize;
    let mut bytes = 0u64;
    checkout(
        repo,
        root,
        dir.path(),
        Path::new(""),
        limits,
        &mut files,
        &mut bytes,
    )?;
    refuse_remote_bases(dir.path())?;

    let target = dir.path().join(app_path);
    let timeout = limits.kustomize_timeout.as_secs().max(1).to_string();
    let mut cmd = Command::new("timeout");
    cmd.args(["--kill-after=2", &timeout, &limits.kustomize_command]);
    if limits.kustomize_command.ends_with("kubectl") {
        cmd.arg("kustomize");
    } else {
        cmd.arg("build");
    }
    let output = cmd
        .arg(&target)
        .env("KUBECONFIG", "/dev/null")
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
            .replace(&dir.path().display().to_string(), "")
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

fn checkout(
    repo: &Repository,
    tree: &Tree<'_>,
    base: &Path,
    rel: &Path,
    limits: &Limits,
    files: &mut usize,
    bytes: &mut u64,
) -> Result<(), RenderError> {
    for entry in tree.iter() {
        let name = entry.name().unwrap_or_default();
        let rel_path = rel.join(name);
        let shown = rel_path.display().to_string();
        let dest = base.join(&rel_path);
        match (entry.kind(), entry.filemode()) {
            (Some(ObjectType::Tree), _) => {
                std::fs::create_dir_all(&dest).map_err(io(&shown))?;
                checkout(
                    repo,
                    &repo.find_tree(entry.id())?,
                    base,
                    &rel_path,
                    limits,
                    files,
                    bytes,
                )?;
            }
            (Some(ObjectType::Blob), mode) => {
                *files += 1;
                if *files > limits.max_files * 10 {
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
                *bytes += size as u64;
                if *bytes > limits.max_total_bytes {
                    return Err(RenderError::TooLarge {
                        limit: limits.max_total_bytes,
                    });
                }
                let blob = repo.find_blob(entry.id())?;
                if mode == 0o120000 {
                    let target = String::from_utf8_lossy(blob.content()).into_owned();
                    if super::resolve_link(rel, &target).is_none() {
                        return Err(RenderError::UnsafePath {
                            file: shown,
                            reason: format!("symlink to `{target}` leaves the repository"),
                        });
                    }
                    std::os::unix::fs::symlink(&target, &dest).map_err(io(&shown))?;
                } else {
                    std::fs::write(&dest, blob.content()).map_err(io(&shown))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn io(file: &str) -> impl Fn(std::io::Error) -> RenderError + '_ {
    move |e| RenderError::Kustomize {
        message: format!("writing {file}: {e}"),
    }
}

/// Fails when any kustomization refers to a remote base (URL, `github.com/…`, `git@…`).
fn refuse_remote_bases(dir: &Path) -> Result<(), RenderError> {
    for file in kustomizations(dir) {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap_or_default();
        for key in ["resources", "bases", "components"] {
            for item in doc[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str())
            {
                let remote = item.contains("://")
                    || item.starts_with("github.com/")
                    || item.starts_with("git@")
                    || item.starts_with("gitlab.com/");
                if remote {
                    let shown = file
                        .strip_prefix(dir)
                        .unwrap_or(&file)
                        .display()
                        .to_string();
                    return Err(RenderError::UnsafePath {
                        file: shown,
                        reason: format!("remote base `{item}` is not allowed"),
                    });
                }
            }
        }
    }
    Ok(())
}

fn kustomizations(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir {
                stack.push(path);
            } else if matches!(
                entry.file_name().to_str(),
                Some("kustomization.yaml" | "kustomization.yml" | "Kustomization")
            ) {
                out.push(path);
            }
        }
    }
    out
}
