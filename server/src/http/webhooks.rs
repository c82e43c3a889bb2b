//! Git webhooks: GitHub (`X-Hub-Signature-256`), GitLab (`X-Gitlab-Token`), Gitea and Forgejo
//! (`X-Gitea-Signature` / `X-Forgejo-Signature`) and a generic HMAC (`X-Tidemark-Signature:
//! sha256=…`). The signature is checked against each repository's secret before the body is
//! parsed; bodies over 1 MiB are refused before buffering; a valid delivery for a repository
//! Tidemark does not know answers 202 and does nothing; accepted deliveries are rate-limited per
//! repository and appear on the applications' timelines.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{KeyInit, Mac};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::{internal_error, AppState};
use crate::clock;
use crate::config::RepositorySettings;

/// Largest accepted webhook body.
pub const MAX_BODY: usize = 1024 * 1024;

/// Accepted deliveries per repository in the last minute.
#[derive(Default)]
pub struct RateLimiter {
    recent: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimiter {
    fn allow(&self, repository: &str, per_minute: u32) -> bool {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let q = recent.entry(repository.to_owned()).or_default();
        let now = Instant::now();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
        {
            q.pop_front();
        }
        if q.len() >= per_minute as usize {
            return false;
        }
        q.push_back(now);
        true
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Provider {
    GitHub,
    GitLab,
    Gitea,
    Generic,
}

impl Provider {
    fn label(self) -> &'static str {
        match self {
            Provider::GitHub => "GitHub",
            Provider::GitLab => "GitLab",
            Provider::Gitea => "Gitea",
            Provider::Generic => "webhook",
        }
    }
}

/// The pure steps of [`receive`] for one repository secret, in its order: the provider's
/// name, its proof header, the proof against `secret`, the body as JSON, the repository URLs
/// it names. `Err` is the status [`receive`] would answer. Used by the fuzz targets
/// (`tools/fuzz`) and tests; never panics, whatever the input.
pub fn inspect_delivery(
    provider: &str,
    headers: &HeaderMap,
    secret: &str,
    body: &[u8],
) -> Result<Vec<String>, StatusCode> {
    let provider = match provider {
        "github" => Provider::GitHub,
        "gitlab" => Provider::GitLab,
        "gitea" | "forgejo" => Provider::Gitea,
        "generic" => Provider::Generic,
        _ => return Err(StatusCode::NOT_FOUND),
    };
    let proof = signature(provider, headers).ok_or(StatusCode::UNAUTHORIZED)?;
    if !verify(provider, secret, &proof, body) {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let payload: Value = serde_json::from_slice(body).map_err(|_| StatusCode::BAD_REQUEST)?;
    Ok(payload_urls(&payload))
}

fn reply(code: StatusCode, message: &str) -> Response {
    (code, Json(json!({"status": message}))).into_response()
}

/// `POST /api/v1/webhooks/{provider}`
pub async fn receive(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let provider = match provider.as_str() {
        "github" => Provider::GitHub,
        "gitlab" => Provider::GitLab,
        "gitea" | "forgejo" => Provider::Gitea,
        "generic" => Provider::Generic,
        _ => {
            return reply(
                StatusCode::NOT_FOUND,
                "unknown webhook provider (github, gitlab, gitea, forgejo, generic)",
            )
        }
    };
    let Some(proof) = signature(provider, &headers) else {
        return reply(StatusCode::UNAUTHORIZED, "missing signature");
    };
    // Repositories whose secret verifies this exact body.
    let verified: Vec<&RepositorySettings> = state
        .settings
        .repositories
        .iter()
        .filter(|r| {
            r.webhook_secret()
                .is_some_and(|secret| verify(provider, &secret, &proof, &body))
        })
        .collect();
    if verified.is_empty() {
        return reply(
            StatusCode::UNAUTHORIZED,
            "signature does not match any repository's webhook secret",
        );
    }
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return reply(StatusCode::BAD_REQUEST, "the body is not JSON"),
    };
    let event = headers
        .get("x-github-event")
        .or_else(|| headers.get("x-gitea-event"))
        .or_else(|| headers.get("x-gitlab-event"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("push");
    if event == "ping" {
        return reply(StatusCode::OK, "pong");
    }
    let urls = payload_urls(&payload);
    let targets: Vec<&RepositorySettings> = verified
        .into_iter()
        .filter(|r| {
            urls.iter().any(|u| same_repo(u, &r.url))
                || urls.is_empty() && payload["repository"].as_str() == Some(r.name.as_str())
        })
        .collect();
    if targets.is_empty() {
        return reply(
            StatusCode::ACCEPTED,
            "no configured repository matches this delivery; nothing to do",
        );
    }
    let mut triggered = Vec::new();
    for repo in targets {
        if !state
            .webhook_limits
            .allow(&repo.name, state.settings.git.webhook_rate_per_minute)
        {
            return reply(
                StatusCode::TOO_MANY_REQUESTS,
                "too many webhook deliveries for this repository; try again in a minute",
            );
        }
        let message = format!("fetch triggered by {} {event}", provider.label());
        state.git.trigger(&repo.name, &message);
        let apps = match state.store.apps_of_repository(&repo.name).await {
            Ok(apps) => apps,
            Err(e) => return internal_error(&e).into_response(),
        };
        for app in apps {
            let detail =
                json!({"repository": repo.name, "provider": provider.label(), "event": event});
            if let Err(e) = state
                .store
                .add_timeline(&app.name, "webhook", &message, &detail, clock::now())
                .await
            {
                return internal_error(&e).into_response();
            }
        }
        triggered.push(repo.name.clone());
    }
    (
        StatusCode::ACCEPTED,
        Json(json!({"status": "fetch scheduled", "repositories": triggered})),
    )
        .into_response()
}

/// The provider's proof header (token or hex signature without its `sha256=` prefix).
fn signature(provider: Provider, headers: &HeaderMap) -> Option<String> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    match provider {
        Provider::GitHub => get("x-hub-signature-256")
            .and_then(|v| v.strip_prefix("sha256="))
            .map(str::to_owned),
        Provider::GitLab => get("x-gitlab-token").map(str::to_owned),
        Provider::Gitea => get("x-gitea-signature")
            .or_else(|| get("x-forgejo-signature"))
            .map(str::to_owned),
        Provider::Generic => get("x-tidemark-signature")
            .and_then(|v| v.strip_prefix("sha256="))
            .map(str::to_owned),
    }
}

fn verify(provider: Provider, secret: &str, proof: &str, body: &[u8]) -> bool {
    if provider == Provider::GitLab {
        return secret.as_bytes().ct_eq(proof.as_bytes()).into();
    }
    let Ok(expected) = hex_decode(proof) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

fn hex_decode(s: &str) -> Result<Vec<u8>, ()> {
    let digit = |b: u8| char::from(b).to_digit(16).ok_or(());
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err(());
    }
    bytes
        .chunks_exact(2)
        .map(|pair| u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).map_err(|_| ()))
        .collect()
}

/// Every repository URL a push payload names (GitHub, Gitea/Forgejo, GitLab, generic).
fn payload_urls(p: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (obj, keys) in [
        (
            &p["repository"],
            &["clone_url", "ssh_url", "html_url", "git_url", "url"][..],
        ),
        (
            &p["project"],
            &[
                "git_http_url",
                "git_ssh_url",
                "web_url",
                "http_url",
                "ssh_url",
            ][..],
        ),
    ] {
        for k in keys {
            if let Some(u) = obj[k].as_str() {
                out.push(u.to_owned());
            }
        }
    }
    if let Some(u) = p["repository_url"].as_str() {
        out.push(u.to_owned());
    }
    out
}

/// Whether two remote URLs name the same repository (scheme, credentials, `.git` and case of
/// the host ignored; `git@host:path` equals `ssh://git@host/path`).
pub fn same_repo(a: &str, b: &str) -> bool {
    fn norm(u: &str) -> String {
        let u = u.trim().trim_end_matches('/').trim_end_matches(".git");
        let rest = u.split_once("://").map_or(u, |(_, r)| r);
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        let rest = rest.replacen(':', "/", usize::from(!u.contains("://")));
        let (host, path) = rest.split_once('/').unwrap_or((&rest, ""));
        let host = host.split(':').next().unwrap_or(host);
        format!("{}/{}", host.to_lowercase(), path)
    }
    norm(a) == norm(b)
}

/// Refuses oversized bodies from their declared length, before any byte is buffered.
pub async fn limit_body(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            "webhook bodies are limited to 1 MiB",
        );
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_urls_compare_by_host_and_path() {
        assert!(same_repo(
            "https://github.com/acme/app.git",
            "git@github.com:acme/app"
        ));
        assert!(same_repo(
            "https://token@GitHub.com/acme/app/",
            "ssh://git@github.com:22/acme/app.git"
        ));
        assert!(!same_repo(
            "https://github.com/acme/app",
            "https://github.com/acme/other"
        ));
    }

    #[test]
    fn hmac_signatures_verify_only_with_the_right_secret() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let sig: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(verify(Provider::GitHub, "s3cret", &sig, body));
        assert!(!verify(Provider::GitHub, "other", &sig, body));
        assert!(!verify(Provider::GitHub, "s3cret", "zz", body));
        assert!(verify(Provider::GitLab, "tok", "tok", body));
        assert!(!verify(Provider::GitLab, "tok", "to", body));
    }

    #[test]
    fn proofs_that_are_not_hex_are_refused_without_panicking() {
        // Multi-byte characters used to be sliced at byte offsets (a panic at a non-boundary).
        for proof in ["a\u{e9}1", "\u{e9}\u{e9}", "+1", "-1", "0x", "\u{1F600}00"] {
            assert_eq!(hex_decode(proof), Err(()), "{proof:?}");
            assert!(!verify(Provider::GitHub, "s", proof, b"{}"));
        }
        assert_eq!(hex_decode("00ff10"), Ok(vec![0, 255, 16]));
    }
}
