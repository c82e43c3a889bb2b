//! Chart repositories: a chart's versions from an HTTP(S) repository's `index.yaml` or an OCI
//! registry, the version an application's range selects, and the chart archive of a version.
//! All network access goes through the real `helm` (`helm repo update`, `helm pull`,
//! `helm show chart`) with Helm's homes under `<cache_dir>/helm-repositories/<name>/` and the
//! repository's credentials written there (mode 0600), never on a command line.
//!
//! Archives are kept under that directory by version and checked against the index's SHA-256
//! digest; a rendered version is stored like a Git revision, so a version the repository no
//! longer serves still diffs and rolls back.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{Auth, GitError};
use crate::config::RepositorySettings;

/// A Helm version constraint (Masterminds semver, as Helm reads `--version`): exact (`6.1.0`,
/// `=6.1.0`, `v6.1.0`), comparisons (`>=1.2 <2.0`, `>=1.2, <2.0`), `^1.2`, `~1.2`, wildcards
/// (`1.2.x`, `1.*`, `*`), hyphen ranges (`1.2 - 1.4`), `!=1.3.0` and alternatives (`||`).
#[derive(Debug, Clone)]
pub struct VersionRange {
    text: String,
    alternatives: Vec<(semver::VersionReq, Vec<semver::Version>)>,
}

impl VersionRange {
    /// Parses a constraint. Errors: a message naming the part that is not understood.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the chart version is empty (use `*` for the newest)".into());
        }
        let mut alternatives = Vec::new();
        for alt in text.split("||") {
            let mut tokens: Vec<String> = Vec::new();
            let mut pending_op = String::new();
            for raw in alt.split(|c: char| c == ',' || c.is_whitespace()) {
                if raw.is_empty() {
                    continue;
                }
                if raw.chars().all(|c| "<>=!~^".contains(c)) {
                    pending_op.push_str(raw);
                    continue;
                }
                tokens.push(format!("{}{raw}", std::mem::take(&mut pending_op)));
            }
            if !pending_op.is_empty() {
                return Err(format!("`{text}`: `{pending_op}` has no version"));
            }
            // Hyphen ranges: `1.2 - 1.4`.
            let mut i = 0;
            let mut comparators: Vec<String> = Vec::new();
            let mut excluded = Vec::new();
            while i < tokens.len() {
                if i + 2 < tokens.len() && tokens[i + 1] == "-" {
                    comparators.push(format!(">={}", strip_v(&tokens[i])));
                    comparators.push(format!("<={}", strip_v(&tokens[i + 2])));
                    i += 3;
                    continue;
                }
                let t = &tokens[i];
                if let Some(v) = t.strip_prefix("!=") {
                    excluded.push(
                        lenient(v).ok_or_else(|| format!("`{text}`: `{v}` is not a version"))?,
                    );
                } else if t.starts_with(|c: char| c.is_ascii_digit() || c == 'v' || c == 'V') {
                    let v = strip_v(t);
                    if v.contains(['x', 'X', '*']) {
                        comparators.push(v.to_owned());
                    } else if v.split('.').count() < 3 {
                        // Helm reads `6.1` as `6.1.x` (the semver crate as `^6.1`).
                        comparators.push(format!("~{v}"));
                    } else {
                        comparators.push(format!("={v}"));
                    }
                } else {
                    let op_end = t.find(|c: char| !"<>=~^".contains(c)).unwrap_or(t.len());
                    comparators.push(format!("{}{}", &t[..op_end], strip_v(&t[op_end..])));
                }
                i += 1;
            }
            let req = if comparators.is_empty() {
                semver::VersionReq::STAR
            } else {
                semver::VersionReq::parse(&comparators.join(", "))
                    .map_err(|e| format!("`{text}` is not a chart version or range: {e}"))?
            };
            alternatives.push((req, excluded));
        }
        Ok(Self {
            text: text.to_owned(),
            alternatives,
        })
    }

    /// Whether `version` (a chart's `version`, `v` prefix allowed) satisfies the constraint.
    pub fn matches(&self, version: &str) -> bool {
        let Some(v) = lenient(version) else {
            return false;
        };
        self.alternatives
            .iter()
            .any(|(req, excluded)| req.matches(&v) && !excluded.contains(&v))
    }

    /// The constraint as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn strip_v(s: &str) -> &str {
    s.strip_prefix(['v', 'V']).unwrap_or(s)
}

/// A chart version as semver (`v` prefix allowed; `1.2` read as `1.2.0`).
fn lenient(s: &str) -> Option<semver::Version> {
    let s = strip_v(s.trim());
    semver::Version::parse(s).ok().or_else(|| {
        let parts = s.split('.').count();
        match parts {
            1 => semver::Version::parse(&format!("{s}.0.0")).ok(),
            2 => semver::Version::parse(&format!("{s}.0")).ok(),
            _ => None,
        }
    })
}

/// One version of a chart, as the repository lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartVersion {
    pub version: String,
    /// When it was published (index `created`), milliseconds since the epoch.
    pub created_ms: Option<i64>,
    /// SHA-256 of the archive (hex), when the index gives one.
    pub digest: Option<String>,
    pub app_version: Option<String>,
    pub description: Option<String>,
}

/// One `[[repositories]]` entry of `type = "helm"`: a chart in a chart repository.
pub struct ChartRepository {
    pub name: String,
    pub url: String,
    pub chart: String,
    auth: Auth,
    dir: PathBuf,
    helm_command: String,
    timeout: Duration,
    /// `--plain-http` for an OCI registry without TLS.
    plain_http: bool,
    /// Serialises Helm runs on this entry's homes.
    pub(crate) lock: tokio::sync::Mutex<()>,
}

/// The name the repository has in the entry's own `repositories.yaml`.
const REPO_ALIAS: &str = "tidemark";

impl ChartRepository {
    /// An entry for `repo` (`chart` must be set; checked by the configuration).
    pub fn new(
        cache_dir: &Path,
        repo: &RepositorySettings,
        limits: &crate::render::Limits,
    ) -> Self {
        Self {
            name: repo.name.clone(),
            url: repo.url.trim_end_matches('/').to_owned(),
            chart: repo.chart.clone().unwrap_or_default(),
            auth: repo.auth(),
            dir: cache_dir.join("helm-repositories").join(&repo.name),
            helm_command: limits.helm_command.clone(),
            timeout: limits.helm_timeout,
            plain_http: repo.plain_http,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    fn is_oci(&self) -> bool {
        self.url.starts_with("oci://")
    }

    fn fetch_err(&self, message: &str, secret: Option<&str>) -> GitError {
        GitError::Fetch {
            repo: self.name.clone(),
            message: super::redact(message, secret),
        }
    }

    /// Runs Helm on this entry's homes (credentials written to its config first).
    fn helm(
        &self,
        args: &[&str],
        secret: Option<&str>,
        stdin: Option<&str>,
    ) -> Result<std::process::Output, GitError> {
        let io =
            |e: std::io::Error| self.fetch_err(&format!("{}: {e}", self.dir.display()), secret);
        let config = self.dir.join("config");
        std::fs::create_dir_all(&config).map_err(io)?;
        let mut entry = serde_json::json!({"name": REPO_ALIAS, "url": self.url});
        if let Some(user) = &self.auth.username {
            entry["username"] = Value::String(user.clone());
        }
        if let Some(password) = secret {
            entry["password"] = Value::String(password.to_owned());
        }
        let repos = serde_json::json!({"apiVersion": "", "repositories": [entry]}).to_string();
        write_private(&config.join("repositories.yaml"), &repos).map_err(io)?;
        let binary = crate::render::resolve_helm(&self.helm_command)
            .map_err(|e| self.fetch_err(&e.to_string(), secret))?;
        let plain: &[&str] = if self.plain_http && self.is_oci() {
            &["--plain-http"]
        } else {
            &[]
        };
        let mut cmd = Command::new("timeout");
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.dir.join("home"))
            .env("HELM_CACHE_HOME", self.dir.join("cache"))
            .env("HELM_DATA_HOME", self.dir.join("data"))
            .env("HELM_CONFIG_HOME", &config)
            .env("HELM_REPOSITORY_CONFIG", config.join("repositories.yaml"))
            .env("HELM_REGISTRY_CONFIG", config.join("registry.json"))
            .env("KUBECONFIG", "/dev/null")
            .args(["--kill-after=2", &self.timeout.as_secs().max(1).to_string()])
            .arg(binary)
            .args(args)
            .args(plain)
            .current_dir(&self.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd.spawn().map_err(io)?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use std::io::Write;
            let _ = pipe.write_all(text.as_bytes());
        }
        let out = child.wait_with_output().map_err(io)?;
        if matches!(out.status.code(), Some(124) | Some(137)) {
            return Err(self.fetch_err(
                &format!("helm timed out after {}s", self.timeout.as_secs()),
                secret,
            ));
        }
        if !out.status.success() {
            // Helm names the cause before its final `Error:` line (`helm repo update` on
            // stdout: a 401, a TLS or DNS error).
            let stdout = String::from_utf8_lossy(&out.stdout);
            let cause = stdout
                .split_once("...Unable")
                .map(|(_, rest)| format!("Unable{rest}"))
                .unwrap_or_default();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let both = format!("{cause}\n{stderr}");
            let lines: Vec<&str> = both
                .lines()
                .map(|l| l.trim().trim_start_matches("Error: "))
                .filter(|l| !l.is_empty())
                .collect();
            let mut message: String = lines.join(" ").chars().take(1024).collect();
            if message.is_empty() {
                message = "helm failed".into();
            }
            return Err(self.fetch_err(&message, secret));
        }
        Ok(out)
    }

    /// OCI registries take credentials through `helm registry login` (once per fetch).
    fn oci_login(&self, secret: Option<&str>) -> Result<(), GitError> {
        let (Some(user), Some(password)) = (&self.auth.username, secret) else {
            return Ok(());
        };
        let host = self
            .url
            .trim_start_matches("oci://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        self.helm(
            &[
                "registry",
                "login",
                &host,
                "--username",
                user,
                "--password-stdin",
            ],
            secret,
            Some(password),
        )
        .map(|_| ())
    }

    /// The chart's versions satisfying `range`, newest first (at most `limit`): from a fresh
    /// `index.yaml` (HTTP(S)), or — an OCI registry has no index — the one version Helm
    /// resolves for the range (`helm show chart`).
    ///
    /// Errors: [`GitError::Fetch`] with Helm's message (credentials redacted),
    /// [`GitError::UnknownRevision`] when no version satisfies the range.
    pub fn versions_blocking(
        &self,
        range: &VersionRange,
        limit: usize,
    ) -> Result<Vec<ChartVersion>, GitError> {
        let secret = self.auth.secret(&self.name)?;
        let secret = secret.as_deref();
        let mut out = if self.is_oci() {
            self.oci_login(secret)?;
            let reference = format!("{}/{}", self.url, self.chart);
            let shown = self.helm(
                &["show", "chart", &reference, "--version", range.as_str()],
                secret,
                None,
            )?;
            let meta: Value = serde_saphyr::from_str(&String::from_utf8_lossy(&shown.stdout))
                .map_err(|e| self.fetch_err(&format!("Chart.yaml of {reference}: {e}"), secret))?;
            meta["version"]
                .as_str()
                .map(|v| ChartVersion {
                    version: v.to_owned(),
                    created_ms: None,
                    digest: None,
                    app_version: meta["appVersion"].as_str().map(str::to_owned),
                    description: meta["description"].as_str().map(str::to_owned),
                })
                .into_iter()
                .collect()
        } else {
            self.helm(&["repo", "update", REPO_ALIAS], secret, None)?;
            let index = self
                .dir
                .join("cache/repository")
                .join(format!("{REPO_ALIAS}-index.yaml"));
            let text = std::fs::read_to_string(&index)
                .map_err(|e| self.fetch_err(&format!("index.yaml: {e}"), secret))?;
            parse_index(&text, &self.chart)
                .map_err(|e| self.fetch_err(&format!("index.yaml: {e}"), secret))?
        };
        out.retain(|v| range.matches(&v.version));
        out.sort_by_key(|v| std::cmp::Reverse(lenient(&v.version)));
        out.truncate(limit);
        if out.is_empty() {
            return Err(GitError::UnknownRevision {
                repo: self.name.clone(),
                revision: format!("{} {}", self.chart, range.as_str()),
            });
        }
        Ok(out)
    }

    /// The archive of `version` (downloaded once, kept under the entry's directory and, when
    /// the index gives a digest, checked against it).
    ///
    /// Errors: [`GitError::Fetch`] (download, digest mismatch).
    pub fn archive_blocking(&self, version: &ChartVersion) -> Result<PathBuf, GitError> {
        let secret = self.auth.secret(&self.name)?;
        let secret = secret.as_deref();
        crate::render::check_component(&version.version).map_err(|why| {
            self.fetch_err(
                &format!("chart version `{}` {why}", version.version),
                secret,
            )
        })?;
        let dest = self.dir.join("archives").join(&version.version);
        let archive = dest.join(format!("{}-{}.tgz", self.chart, version.version));
        if archive.is_file() && self.digest_ok(&archive, version) {
            return Ok(archive);
        }
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::create_dir_all(&dest)
            .map_err(|e| self.fetch_err(&format!("{}: {e}", dest.display()), secret))?;
        let dest_s = dest.display().to_string();
        let reference = if self.is_oci() {
            self.oci_login(secret)?;
            format!("{}/{}", self.url, self.chart)
        } else {
            format!("{REPO_ALIAS}/{}", self.chart)
        };
        self.helm(
            &[
                "pull",
                &reference,
                "--version",
                &version.version,
                "--destination",
                &dest_s,
            ],
            secret,
            None,
        )?;
        if !archive.is_file() {
            return Err(self.fetch_err(
                &format!(
                    "helm pull did not write {}-{}.tgz",
                    self.chart, version.version
                ),
                secret,
            ));
        }
        if !self.digest_ok(&archive, version) {
            let _ = std::fs::remove_dir_all(&dest);
            return Err(self.fetch_err(
                &format!(
                    "{} {}: the archive does not match the index's digest",
                    self.chart, version.version
                ),
                secret,
            ));
        }
        Ok(archive)
    }

    fn digest_ok(&self, archive: &Path, version: &ChartVersion) -> bool {
        let Some(want) = &version.digest else {
            return true;
        };
        std::fs::read(archive)
            .map(|bytes| {
                use sha2::Digest;
                let got: String = sha2::Sha256::digest(&bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                got.eq_ignore_ascii_case(want.trim_start_matches("sha256:"))
            })
            .unwrap_or(false)
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// The versions of `chart` in a repository index (`entries.<chart>[]`).
///
/// Errors: a message when the text is not an index or does not list the chart.
pub fn parse_index(text: &str, chart: &str) -> Result<Vec<ChartVersion>, String> {
    let mut options = serde_saphyr::Options::default();
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = usize::MAX / 2;
    budget.max_events = usize::MAX / 2;
    options.budget = Some(budget);
    let index: Value =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| e.to_string())?;
    let entries = index["entries"][chart]
        .as_array()
        .ok_or_else(|| format!("the repository does not serve a chart named `{chart}`"))?;
    Ok(entries
        .iter()
        .filter_map(|e| {
            let version = e["version"].as_str()?.to_owned();
            let created_ms = e["created"]
                .as_str()
                .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                .map(|t| t.timestamp_millis());
            Some(ChartVersion {
                version,
                created_ms,
                digest: e["digest"].as_str().map(str::to_owned),
                app_version: e["appVersion"].as_str().map(str::to_owned),
                description: e["description"].as_str().map(str::to_owned),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(range: &str, v: &str) -> bool {
        VersionRange::parse(range).unwrap().matches(v)
    }

    #[test]
    fn helm_constraints_read_as_helm_reads_them() {
        // Exact means exact (the semver crate's bare version would be a caret).
        assert!(m("6.1.0", "6.1.0"));
        assert!(!m("6.1.0", "6.1.1"));
        assert!(m("v6.1.0", "6.1.0"));
        assert!(m("6.1", "6.1.4"));
        assert!(!m("6.1", "6.9.0"));
        assert!(m("^6.0", "6.9.2"));
        assert!(!m("^6.0", "7.0.0"));
        assert!(m("~1.2", "1.2.9"));
        assert!(!m("~1.2", "1.3.0"));
        assert!(m(">=1.2 <2.0", "1.9.0"));
        assert!(m(">= 1.2, < 2.0", "1.2.0"));
        assert!(!m(">=1.2 <2.0", "2.0.0"));
        assert!(m("1.2.x", "1.2.7"));
        assert!(!m("1.2.x", "1.3.0"));
        assert!(m("*", "0.0.1"));
        assert!(m("1.2.0 - 1.4.0", "1.4.0"));
        assert!(!m("1.2.0 - 1.4.0", "1.4.1"));
        assert!(!m("1.2.0 - 1.4.0", "1.1.9"));
        assert!(m("^1.0 || ^3.0", "3.1.0"));
        assert!(!m("^1.0 || ^3.0", "2.1.0"));
        assert!(!m("^1.0, !=1.3.0", "1.3.0"));
        assert!(m("^1.0, !=1.3.0", "1.3.1"));
        // Prereleases only when asked for.
        assert!(!m("^1.0", "1.5.0-rc.1"));
        assert!(VersionRange::parse("").is_err());
        assert!(VersionRange::parse(">=").is_err());
        assert!(VersionRange::parse("main").is_err());
    }

    #[test]
    fn index_lists_versions_with_dates_and_digests() {
        let text = r#"apiVersion: v1
entries:
  web:
  - version: 1.1.0
    created: "2026-11-01T10:00:00Z"
    digest: abc
    urls: [web-1.1.0.tgz]
  - version: 1.0.0
    created: "2026-10-01T10:00:00.123456789+02:00"
    urls: [web-1.0.0.tgz]
"#;
        let v = parse_index(text, "web").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].digest.as_deref(), Some("abc"));
        assert_eq!(v[0].created_ms, Some(1_793_527_200_000));
        assert!(parse_index(text, "api").unwrap_err().contains("`api`"));
    }
}
