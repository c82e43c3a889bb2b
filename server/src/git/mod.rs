//! Git: bare mirrors in a cache directory (git2), fetched with configured credentials, one
//! fetch per repository at a time; revision resolution and per-application history.

pub mod charts;
pub mod generators;
pub mod history;
pub mod signatures;
pub mod sources;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use git2::{Cred, CredentialType, FetchOptions, Oid, RemoteCallbacks, Repository};

use crate::config::RepositorySettings;

/// Errors of the Git layer. Messages never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("fetching {repo} failed: {message}")]
    Fetch { repo: String, message: String },
    #[error("revision `{revision}` not found in {repo}")]
    UnknownRevision { repo: String, revision: String },
    #[error("repository {repo} has not been fetched yet")]
    NotFetched { repo: String },
    #[error("git error in {repo}: {message}")]
    Git { repo: String, message: String },
    #[error("cannot read credential for {repo}: {message}")]
    Credential { repo: String, message: String },
}

/// How to authenticate to a remote, resolved from config (secrets read at fetch time).
#[derive(Clone, Default)]
pub struct Auth {
    pub username: Option<String>,
    /// Password or token: from an environment variable or a file.
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ssh_key_file: Option<PathBuf>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("username", &self.username)
            .field("password_env", &self.password_env)
            .field("password_file", &self.password_file)
            .field("ssh_key_file", &self.ssh_key_file)
            .finish()
    }
}

/// A bare mirror of one configured repository.
pub struct Mirror {
    pub name: String,
    pub url: String,
    auth: Auth,
    path: PathBuf,
    /// Serialises fetches (and history walks that must see a consistent ref set).
    pub(crate) lock: tokio::sync::Mutex<()>,
}

impl Mirror {
    /// A mirror of `repo` under `cache_dir/<name>.git` (created on first fetch).
    pub fn new(cache_dir: &Path, repo: &RepositorySettings) -> Arc<Self> {
        Arc::new(Self {
            name: repo.name.clone(),
            url: repo.url.clone(),
            auth: repo.auth(),
            path: cache_dir.join(format!("{}.git", repo.name)),
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Fetches every branch and tag (force, prune) from the remote. Returns the secret-free
    /// error message of the remote on failure.
    #[tracing::instrument(skip_all, fields(repo = %self.name), err)]
    pub async fn fetch(self: &Arc<Self>) -> Result<(), GitError> {
        let _guard = self.lock.lock().await;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.fetch_blocking())
            .await
            .map_err(|e| GitError::Fetch {
                repo: self.name.clone(),
                message: e.to_string(),
            })?
    }

    pub(crate) fn fetch_blocking(&self) -> Result<(), GitError> {
        let repo = match Repository::open_bare(&self.path) {
            Ok(r) => r,
            Err(_) => {
                std::fs::create_dir_all(&self.path).map_err(|e| self.git_err(e.to_string()))?;
                Repository::init_bare(&self.path)
                    .map_err(|e| self.git_err(e.message().to_owned()))?
            }
        };
        let secret = self.secret()?;
        let mut callbacks = RemoteCallbacks::new();
        let auth = self.auth.clone();
        let secret_for_cb = secret.clone();
        let mut attempts = 0;
        callbacks.credentials(move |_url, username_from_url, allowed| {
            attempts += 1;
            if attempts > 3 {
                return Err(git2::Error::from_str("authentication failed"));
            }
            let user = auth
                .username
                .as_deref()
                .or(username_from_url)
                .unwrap_or("git");
            if allowed.contains(CredentialType::SSH_KEY) {
                if let Some(key) = &auth.ssh_key_file {
                    return Cred::ssh_key(user, None, key, secret_for_cb.as_deref());
                }
            }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                if let Some(secret) = &secret_for_cb {
                    return Cred::userpass_plaintext(user, secret);
                }
            }
            Err(git2::Error::from_str(
                "no credentials configured for this repository",
            ))
        });
        let mut options = FetchOptions::new();
        options.remote_callbacks(callbacks);
        options.prune(git2::FetchPrune::On);
        options.download_tags(git2::AutotagOption::None);
        let mut remote = repo
            .remote_anonymous(&self.url)
            .map_err(|e| self.fetch_err(e.message(), secret.as_deref()))?;
        remote
            .fetch(
                &["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
                Some(&mut options),
                None,
            )
            .map_err(|e| self.fetch_err(e.message(), secret.as_deref()))?;
        Ok(())
    }

    fn secret(&self) -> Result<Option<String>, GitError> {
        self.auth.secret(&self.name)
    }
}

impl Auth {
    /// The password or token (from its environment variable or file), if one is configured.
    ///
    /// Errors: [`GitError::Credential`] naming `repo` and the variable or file.
    pub fn secret(&self, repo: &str) -> Result<Option<String>, GitError> {
        let cred_err = |message: String| GitError::Credential {
            repo: repo.to_owned(),
            message,
        };
        if let Some(var) = &self.password_env {
            return std::env::var(var)
                .map(Some)
                .map_err(|_| cred_err(format!("environment variable {var} is not set")));
        }
        if let Some(file) = &self.password_file {
            return std::fs::read_to_string(file)
                .map(|s| Some(s.trim().to_owned()))
                .map_err(|e| cred_err(format!("{}: {e}", file.display())));
        }
        Ok(None)
    }
}

impl Mirror {
    fn git_err(&self, message: String) -> GitError {
        GitError::Git {
            repo: self.name.clone(),
            message,
        }
    }

    fn fetch_err(&self, message: &str, secret: Option<&str>) -> GitError {
        GitError::Fetch {
            repo: self.name.clone(),
            message: redact(message, secret),
        }
    }

    /// Opens the mirror (after at least one successful fetch).
    pub fn open(&self) -> Result<Repository, GitError> {
        Repository::open_bare(&self.path).map_err(|_| GitError::NotFetched {
            repo: self.name.clone(),
        })
    }

    /// Resolves a branch, tag or (abbreviated) commit id to a commit.
    pub fn resolve(&self, repo: &Repository, revision: &str) -> Result<Oid, GitError> {
        let unknown = || GitError::UnknownRevision {
            repo: self.name.clone(),
            revision: revision.to_owned(),
        };
        for reference in [
            format!("refs/heads/{revision}"),
            format!("refs/tags/{revision}"),
        ] {
            if let Ok(r) = repo.find_reference(&reference) {
                return r.peel_to_commit().map(|c| c.id()).map_err(|_| unknown());
            }
        }
        if revision.len() >= 7 && revision.chars().all(|c| c.is_ascii_hexdigit()) {
            if let Ok(obj) = repo.revparse_single(revision) {
                return obj.peel_to_commit().map(|c| c.id()).map_err(|_| unknown());
            }
        }
        Err(unknown())
    }
}

/// Removes credentials from a message: `scheme://user:secret@host` userinfo and the secret.
pub fn redact(message: &str, secret: Option<&str>) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("***@");
                rest = &tail[at + 1..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    match secret.filter(|s| !s.is_empty()) {
        Some(s) => out.replace(s, "***"),
        None => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_removes_userinfo_and_the_secret() {
        let m = "failed to connect to https://bot:tok3n@git.example/r.git: token tok3n rejected";
        let r = redact(m, Some("tok3n"));
        assert!(!r.contains("tok3n") && !r.contains("bot:"), "{r}");
        assert!(r.contains("https://***@git.example/r.git"), "{r}");
        assert_eq!(redact("plain /path/x", None), "plain /path/x");
    }
}
