//! Helm chart rendering through the real `helm template` (Helm 4).
//!
//! **What is checked out.** The chart directory (whole) and each values file (one file each,
//! with the symlinks passed to reach it), through the same validated, handle-relative checkout
//! as Kustomize: a values file or chart path that leaves the repository — by `..` or through a
//! symlink — fails the render naming it, and a symlink in the chart that leaves the repository
//! fails the checkout.
//!
//! **Dependencies.** Vendored `charts/` are used as they are. When `Chart.yaml` declares
//! dependencies that `charts/` lacks, `helm dependency build` fetches what `Chart.lock` pins
//! (HTTP(S) and `oci://` repositories) into a cache keyed by the SHA-256 of `Chart.lock` and
//! `Chart.yaml` (`<cache_dir>/helm-dependencies/<digest>/`), once, under the render timeout:
//! the only network access of a render. The archives are then copied into the checkout.
//!
//! **Rendering.** `helm template <release> <chart> --namespace <ns> --skip-tests` with
//! `--include-crds` (or `--skip-crds`), the values files, then the inline values, then `--set`
//! and `--set-string` (later wins, as in Argo CD), and the cluster's capabilities
//! (`--kube-version`, `--api-versions`). Helm runs under a timeout in a bubblewrap sandbox
//! holding only the checkout (read-only), the inline values, the Helm binary and an empty
//! `/tmp`, with no network and an empty environment, so `lookup` finds no cluster and a chart
//! cannot read the host. Template errors (`required`, `fail`, bad YAML) fail the render with
//! Helm's message, which names the template file.
//!
//! **Hooks.** Test hooks (`test`, `test-success`, `test-failure`) are left out; hooks that
//! only run on delete or rollback (`pre-delete`, `post-delete`, `pre-rollback`,
//! `post-rollback`) are left out; `pre-install`/`pre-upgrade` and `post-install`/`post-upgrade`
//! hooks are kept and ordered by [`hook_phase`] (see `cluster::client::sync_order`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use sha2::{Digest, Sha256};

pub use crate::domain::source::HelmOptions;

use super::{Limits, RenderError, Sandbox};

/// Where the checkout appears inside the sandbox.
const SANDBOX_REPO: &str = "/repo";
/// Where the Helm binary appears inside the sandbox.
const SANDBOX_BIN: &str = "/bin/helm";
/// Where the inline values and the chart archive appear inside the sandbox.
const SANDBOX_INPUT: &str = "/input";

/// What a chart may ask the cluster (`.Capabilities`): the Kubernetes version (`v1.31.2`) and
/// the API versions (`group/version` and `group/version/Kind`, core as `v1`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub kube_version: String,
    pub api_versions: Vec<String>,
}

/// Where a chart comes from for one render.
pub(super) enum ChartInput<'a> {
    /// A directory of the checkout (relative to its root).
    Checkout { dir: &'a Path, chart: &'a Path },
    /// A chart archive (`.tgz`) fetched from a chart repository.
    Archive(&'a Path),
}

/// Runs `helm template` for one application (see the module docs). `release` and `namespace`
/// are the defaults for the release name and namespace; `values_files` are paths inside the
/// checkout (already checked). Returns Helm's output (multi-document YAML).
///
/// Errors: [`RenderError::Helm`] with Helm's message (sandbox paths removed) or a timeout;
/// [`RenderError::TooLarge`] when the output exceeds the total limit.
pub(super) fn template(
    input: ChartInput<'_>,
    values_files: &[PathBuf],
    options: &HelmOptions,
    release: &str,
    namespace: &str,
    caps: Option<&Capabilities>,
    limits: &Limits,
) -> Result<String, RenderError> {
    let tmp = tempfile::tempdir().map_err(|e| helm_err(format!("temporary directory: {e}")))?;
    let input_dir = tmp.path().join("input");
    std::fs::create_dir(&input_dir).map_err(|e| helm_err(format!("input directory: {e}")))?;
    let inline = options.values.as_ref().filter(|v| !v.is_empty());
    if let Some(values) = inline {
        // JSON is YAML: Helm reads it as a values file.
        std::fs::write(
            input_dir.join("values.json"),
            serde_json::to_vec(values).unwrap_or_default(),
        )
        .map_err(|e| helm_err(format!("inline values: {e}")))?;
    }
    let (host_repo, shown) = match &input {
        ChartInput::Checkout { dir, .. } => (Some(dir.to_path_buf()), dir.display().to_string()),
        ChartInput::Archive(path) => {
            std::fs::copy(path, input_dir.join("chart.tgz"))
                .map_err(|e| helm_err(format!("chart archive: {e}")))?;
            (None, String::new())
        }
    };
    let sandboxed = limits.kustomize_sandbox == Sandbox::Bwrap;
    // Paths as Helm sees them.
    let (repo_root, input_root) = if sandboxed {
        (PathBuf::from(SANDBOX_REPO), PathBuf::from(SANDBOX_INPUT))
    } else {
        (
            host_repo.clone().unwrap_or_default(),
            input_dir.to_path_buf(),
        )
    };
    let release = options.release_name.as_deref().unwrap_or(release);
    let namespace = options.namespace.as_deref().unwrap_or(namespace);
    // Every value goes in as `--flag=value` and the positionals after `--`: nothing an option
    // holds can be read as another flag.
    let mut args: Vec<String> = vec![
        "template".into(),
        format!("--namespace={namespace}"),
        "--skip-tests".into(),
    ];
    args.push(if options.skip_crds {
        "--skip-crds".into()
    } else {
        "--include-crds".into()
    });
    for f in values_files {
        args.push(format!("--values={}", repo_root.join(f).display()));
    }
    if inline.is_some() {
        args.push(format!(
            "--values={}",
            input_root.join("values.json").display()
        ));
    }
    for (k, v) in &options.set {
        let v = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        args.push(format!("--set={k}={}", escape_set(&v)));
    }
    for (k, v) in &options.set_string {
        args.push(format!("--set-string={k}={}", escape_set(v)));
    }
    let kube_version = options
        .kube_version
        .clone()
        .or_else(|| caps.map(|c| c.kube_version.clone()))
        .filter(|v| !v.is_empty());
    if let Some(v) = kube_version {
        args.push(format!("--kube-version={v}"));
    }
    let api_versions: &[String] = if options.api_versions.is_empty() {
        caps.map(|c| c.api_versions.as_slice()).unwrap_or(&[])
    } else {
        &options.api_versions
    };
    if !api_versions.is_empty() {
        args.push(format!("--api-versions={}", api_versions.join(",")));
    }
    args.push("--".into());
    args.push(release.into());
    args.push(match &input {
        ChartInput::Checkout { chart, .. } => repo_root.join(chart).display().to_string(),
        ChartInput::Archive(_) => input_root.join("chart.tgz").display().to_string(),
    });
    let output = run(
        &args,
        limits,
        host_repo.as_deref(),
        &input_dir,
        tmp.path(),
        false,
    )?;
    if !output.status.success() {
        let message = clean(&output.stderr, &shown, &input_dir);
        return Err(helm_err(message));
    }
    if output.stdout.len() as u64 > limits.max_total_bytes {
        return Err(RenderError::TooLarge {
            limit: limits.max_total_bytes,
        });
    }
    String::from_utf8(output.stdout).map_err(|_| helm_err("output is not UTF-8".into()))
}

/// Makes sure the chart at `chart_dir` (a directory on disk, in the checkout) has its
/// dependencies: when `Chart.yaml` declares some that `charts/` lacks, copies them from the
/// cache keyed by the lock, running `helm dependency build` there first when needed.
///
/// Errors: [`RenderError::Helm`] naming the missing lock, Helm's message, or an I/O failure.
pub(super) fn ensure_dependencies(
    chart_dir: &Path,
    shown_chart: &str,
    limits: &Limits,
) -> Result<(), RenderError> {
    let chart_yaml = std::fs::read_to_string(chart_dir.join("Chart.yaml"))
        .map_err(|e| helm_err(format!("{shown_chart}/Chart.yaml: {e}")))?;
    let meta: Value = serde_saphyr::from_str(&chart_yaml).map_err(|e| {
        helm_err(format!(
            "{shown_chart}/Chart.yaml: {}",
            super::first_line(&e.to_string())
        ))
    })?;
    let deps = meta["dependencies"].as_array().cloned().unwrap_or_default();
    if deps.is_empty() {
        return Ok(());
    }
    let vendored: Vec<String> = std::fs::read_dir(chart_dir.join("charts"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let missing = deps.iter().any(|d| {
        let name = d["name"].as_str().unwrap_or_default();
        let local = d["repository"]
            .as_str()
            .is_some_and(|r| r.is_empty() || r.starts_with("file://"));
        !local
            && !vendored
                .iter()
                .any(|f| f == name || (f.starts_with(&format!("{name}-")) && f.ends_with(".tgz")))
    });
    if !missing {
        return Ok(());
    }
    let lock = std::fs::read_to_string(chart_dir.join("Chart.lock")).map_err(|_| {
        helm_err(format!(
            "{shown_chart}: Chart.yaml declares dependencies that charts/ does not hold and there \
             is no Chart.lock to fetch them by (run `helm dependency update` and commit \
             Chart.lock, or vendor charts/)"
        ))
    })?;
    let Some(cache_root) = limits.helm_dependency_cache.as_ref() else {
        return Err(helm_err(format!(
            "{shown_chart}: dependencies are not vendored and no dependency cache is configured"
        )));
    };
    let mut hasher = Sha256::new();
    hasher.update(chart_yaml.as_bytes());
    hasher.update([0u8]);
    hasher.update(lock.as_bytes());
    let digest = hex(&hasher.finalize());
    let cached = cache_root.join(&digest[..32]);
    let done = cached.join("charts");
    if !done.is_dir() {
        std::fs::create_dir_all(cache_root)
            .map_err(|e| helm_err(format!("dependency cache: {e}")))?;
        let work = tempfile::tempdir_in(cache_root)
            .map_err(|e| helm_err(format!("dependency cache: {e}")))?;
        std::fs::write(work.path().join("Chart.yaml"), &chart_yaml)
            .and_then(|_| std::fs::write(work.path().join("Chart.lock"), &lock))
            .map_err(|e| helm_err(format!("dependency cache: {e}")))?;
        let repos = dependency_repositories(&deps, &limits.helm_repositories)?;
        let config = work.path().join(".helm");
        std::fs::create_dir_all(&config).map_err(|e| helm_err(format!("dependency cache: {e}")))?;
        std::fs::write(config.join("repositories.yaml"), repos)
            .map_err(|e| helm_err(format!("dependency cache: {e}")))?;
        let out = run_dependency_build(work.path(), limits)?;
        if !out.status.success() {
            let message = clean(&out.stderr, &work.path().display().to_string(), work.path());
            return Err(helm_err(format!(
                "{shown_chart}: fetching dependencies failed: {message}"
            )));
        }
        std::fs::create_dir_all(&cached).map_err(|e| helm_err(format!("dependency cache: {e}")))?;
        // Another render of the same lock may have finished first: its result is as good.
        if let Err(e) = std::fs::rename(work.path().join("charts"), &done) {
            if !done.is_dir() {
                return Err(helm_err(format!("dependency cache: {e}")));
            }
        }
    }
    // Into the checkout, through a handle: `charts` may not be a symlink out of it.
    let dir = cap_std::fs::Dir::open_ambient_dir(chart_dir, cap_std::ambient_authority())
        .map_err(|e| helm_err(format!("checkout: {e}")))?;
    if !dir.exists("charts") {
        dir.create_dir("charts")
            .map_err(|e| helm_err(format!("{shown_chart}/charts: {e}")))?;
    }
    let charts = dir
        .open_dir("charts")
        .map_err(|e| helm_err(format!("{shown_chart}/charts: {e}")))?;
    for entry in std::fs::read_dir(&done).map_err(|e| helm_err(format!("dependency cache: {e}")))? {
        let entry = entry.map_err(|e| helm_err(format!("dependency cache: {e}")))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if super::check_component(&name).is_err() || charts.exists(&name) {
            continue;
        }
        let bytes =
            std::fs::read(entry.path()).map_err(|e| helm_err(format!("dependency cache: {e}")))?;
        charts
            .write(&name, bytes)
            .map_err(|e| helm_err(format!("{shown_chart}/charts/{name}: {e}")))?;
    }
    Ok(())
}

/// A `repositories.yaml` naming each HTTP(S) dependency repository (Helm's `dependency build`
/// only fetches from repositories it knows), with the credentials of a declared chart
/// repository of the same URL.
fn dependency_repositories(
    deps: &[Value],
    known: &[HelmRepositoryAuth],
) -> Result<String, RenderError> {
    let mut entries = Vec::new();
    for (i, d) in deps.iter().enumerate() {
        let Some(url) = d["repository"].as_str() else {
            continue;
        };
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            continue;
        }
        let mut entry = serde_json::json!({"name": format!("tidemark-{i}"), "url": url});
        if let Some(auth) = known
            .iter()
            .find(|k| k.url.trim_end_matches('/') == url.trim_end_matches('/'))
        {
            if let Some(user) = &auth.username {
                entry["username"] = Value::String(user.clone());
            }
            if let Some(password) = (auth.password)() {
                entry["password"] = Value::String(password);
            }
        }
        entries.push(entry);
    }
    Ok(serde_json::json!({"apiVersion": "", "repositories": entries}).to_string())
}

/// Credentials of a declared chart repository, for dependency fetches from the same URL.
#[derive(Clone)]
pub struct HelmRepositoryAuth {
    pub url: String,
    pub username: Option<String>,
    /// Reads the password (from its environment variable or file) when it is needed.
    pub password: std::sync::Arc<dyn Fn() -> Option<String> + Send + Sync>,
}

impl std::fmt::Debug for HelmRepositoryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelmRepositoryAuth")
            .field("url", &self.url)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

fn run_dependency_build(work: &Path, limits: &Limits) -> Result<std::process::Output, RenderError> {
    run(
        &["dependency".into(), "build".into(), ".".into()],
        limits,
        None,
        work,
        work,
        true,
    )
}

/// Runs Helm with `args` under the timeout, sandboxed unless the sandbox is off. `repo` is
/// bound read-only at `/repo`, `input` at `/input` (read-only; read-write and the working
/// directory for a dependency build, `network`). Helm's homes are in an empty `/tmp`.
fn run(
    args: &[String],
    limits: &Limits,
    repo: Option<&Path>,
    input: &Path,
    scratch: &Path,
    network: bool,
) -> Result<std::process::Output, RenderError> {
    let timeout = limits.helm_timeout.as_secs().max(1).to_string();
    let mut cmd = Command::new("timeout");
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .args(["--kill-after=2", &timeout]);
    let binary = super::resolve_helm(&limits.helm_command)?;
    match limits.kustomize_sandbox {
        Sandbox::Bwrap => {
            let bwrap = super::kustomize::find_on_path("bwrap").ok_or_else(|| {
                helm_err("Helm renders run in a bubblewrap sandbox but `bwrap` is not installed: apt-get install bubblewrap".into())
            })?;
            cmd.arg(bwrap).args(["--unshare-all"]);
            if network {
                cmd.arg("--share-net");
            }
            cmd.args([
                "--die-with-parent",
                "--new-session",
                "--cap-drop",
                "ALL",
                "--clearenv",
                "--setenv",
                "HOME",
                "/tmp",
                "--setenv",
                "KUBECONFIG",
                "/dev/null",
                "--setenv",
                "HELM_CACHE_HOME",
                "/tmp/cache",
                "--setenv",
                "HELM_DATA_HOME",
                "/tmp/data",
                "--dev",
                "/dev",
                "--tmpfs",
                "/tmp",
                "--ro-bind",
            ])
            .arg(&binary)
            .arg(SANDBOX_BIN);
            if let Some(repo) = repo {
                cmd.arg("--ro-bind").arg(repo).arg(SANDBOX_REPO);
            }
            if network {
                cmd.args(["--setenv", "HELM_CONFIG_HOME", "/input/.helm"])
                    .args([
                        "--setenv",
                        "HELM_REPOSITORY_CONFIG",
                        "/input/.helm/repositories.yaml",
                    ])
                    .arg("--bind")
                    .arg(input)
                    .arg(SANDBOX_INPUT)
                    .args(["--ro-bind-try", "/etc/ssl", "/etc/ssl"])
                    .args(["--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"])
                    .args(["--ro-bind-try", "/etc/hosts", "/etc/hosts"])
                    .args(["--chdir", SANDBOX_INPUT]);
            } else {
                cmd.args(["--setenv", "HELM_CONFIG_HOME", "/tmp/config"])
                    .arg("--ro-bind")
                    .arg(input)
                    .arg(SANDBOX_INPUT)
                    .args(["--chdir", "/tmp"]);
            }
            cmd.arg(SANDBOX_BIN);
        }
        Sandbox::None => {
            let homes = scratch.join(".helm-home");
            cmd.arg(&binary)
                .env("HOME", &homes)
                .env("KUBECONFIG", "/dev/null")
                .env("HELM_CACHE_HOME", homes.join("cache"))
                .env("HELM_DATA_HOME", homes.join("data"))
                .current_dir(input);
            if network {
                cmd.env("HELM_CONFIG_HOME", input.join(".helm")).env(
                    "HELM_REPOSITORY_CONFIG",
                    input.join(".helm/repositories.yaml"),
                );
            } else {
                cmd.env("HELM_CONFIG_HOME", homes.join("config"));
            }
        }
    }
    cmd.args(args);
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| helm_err(format!("cannot run helm: {e}")))?;
    if matches!(output.status.code(), Some(124) | Some(137)) {
        return Err(helm_err(format!("timed out after {timeout}s")));
    }
    Ok(output)
}

/// `--set` splits on unescaped commas: a value's commas are escaped.
fn escape_set(v: &str) -> String {
    v.replace('\\', "\\\\").replace(',', "\\,")
}

/// Helm's stderr without sandbox or temporary paths, at most 2 KiB.
fn clean(stderr: &[u8], host_root: &str, input: &Path) -> String {
    let mut s = String::from_utf8_lossy(stderr).into_owned();
    for p in [
        format!("{SANDBOX_REPO}/"),
        format!("{SANDBOX_INPUT}/"),
        format!("{host_root}/"),
        format!("{}/", input.display()),
    ] {
        if p.len() > 1 {
            s = s.replace(&p, "");
        }
    }
    let s = s.trim();
    let s = s.strip_prefix("Error: ").unwrap_or(s);
    let mut out: String = s.chars().take(2048).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

fn helm_err(message: String) -> RenderError {
    RenderError::Helm { message }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// When a Helm hook is applied relative to the application's other objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HookPhase {
    /// `pre-install` / `pre-upgrade`: before the other objects (Argo CD's PreSync).
    PreSync,
    /// `post-install` / `post-upgrade`: after them (Argo CD's PostSync).
    PostSync,
}

/// The phase and weight (`helm.sh/hook-weight`, default 0) of a Helm hook object; `None` for an
/// object that is not a hook (or a `crd-install` hook, applied as a plain object).
pub fn hook_phase(obj: &Value) -> Option<(HookPhase, i64)> {
    let hooks = obj["metadata"]["annotations"]["helm.sh/hook"].as_str()?;
    let weight = obj["metadata"]["annotations"]["helm.sh/hook-weight"]
        .as_str()
        .and_then(|w| w.trim().parse().ok())
        .unwrap_or(0);
    let kinds: Vec<&str> = hooks.split(',').map(str::trim).collect();
    if kinds
        .iter()
        .any(|k| *k == "pre-install" || *k == "pre-upgrade")
    {
        Some((HookPhase::PreSync, weight))
    } else if kinds
        .iter()
        .any(|k| *k == "post-install" || *k == "post-upgrade")
    {
        Some((HookPhase::PostSync, weight))
    } else {
        None
    }
}

/// Whether Helm's output object is left out: a test hook, or a hook that only runs on delete
/// or rollback (Tidemark never uninstalls or rolls back a Helm release).
pub(super) fn left_out(obj: &Value) -> bool {
    let Some(hooks) = obj["metadata"]["annotations"]["helm.sh/hook"].as_str() else {
        return false;
    };
    let kinds: Vec<&str> = hooks.split(',').map(str::trim).collect();
    let runs = |k: &&str| {
        matches!(
            *k,
            "pre-install" | "post-install" | "pre-upgrade" | "post-upgrade" | "crd-install"
        )
    };
    !kinds.iter().any(runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hooked(h: &str, w: Option<&str>) -> Value {
        let mut a = json!({"helm.sh/hook": h});
        if let Some(w) = w {
            a["helm.sh/hook-weight"] = json!(w);
        }
        json!({"kind": "Job", "metadata": {"name": "j", "annotations": a}})
    }

    #[test]
    fn hooks_map_to_phases_and_tests_are_left_out() {
        assert_eq!(
            hook_phase(&hooked("pre-install,pre-upgrade", Some("-5"))),
            Some((HookPhase::PreSync, -5))
        );
        assert_eq!(
            hook_phase(&hooked("post-upgrade", None)),
            Some((HookPhase::PostSync, 0))
        );
        assert!(left_out(&hooked("test", None)));
        assert!(left_out(&hooked("test-success", None)));
        assert!(left_out(&hooked("pre-delete", None)));
        assert!(!left_out(&hooked("pre-delete,post-install", None)));
        assert!(!left_out(
            &json!({"kind": "ConfigMap", "metadata": {"name": "c"}})
        ));
        assert_eq!(hook_phase(&hooked("crd-install", None)), None);
    }

    #[test]
    fn set_values_escape_commas() {
        assert_eq!(escape_set("a,b\\c"), "a\\,b\\\\c");
    }
}
