//! The guard every request passes through (SSR pages, server functions, REST, SSE): refuses
//! cross-site state changes, finds the principal (API token or session), enforces the policy
//! table's role within the application's project, and records denials in the audit ledger.
//! Session timeouts are one pure decision (`session_verdict`); long-lived responses re-check
//! their credential while they run (`while_valid`).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower_sessions::Session;

use super::policy::{self, Action, Rule};
use super::visibility::Visibility;
use super::{sessions, tokens, AuthMethod, Principal};
use crate::clock::{self, Millis};
use crate::state::AuthState;
use app::model::AppError;

/// The session key holding the signed-in principal.
pub const SIGNED_IN: &str = "signed_in";

/// What a session remembers about its sign-in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedIn {
    pub principal: Principal,
    pub login_at: Millis,
    pub seen_at: Millis,
    /// The raw ID token, kept only as `id_token_hint` for RP-initiated logout.
    pub id_token: Option<String>,
}

/// The client's address as Tidemark saw it (the TCP peer).
#[derive(Debug, Clone)]
pub struct ClientIp(pub String);

pub fn client_ip(req: &Request) -> String {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The middleware.
pub async fn guard(State(state): State<AuthState>, mut req: Request, next: Next) -> Response {
    let pattern = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let rule = policy::rule(&method, pattern.as_deref(), &path);
    if rule == Rule::Asset && (method == Method::GET || method == Method::HEAD) {
        return next.run(req).await;
    }

    // CSRF: a state change must come from this site.
    if !is_safe(&method) && !same_site(req.headers(), state.public_origin.as_deref()) {
        tracing::warn!(%path, origin = ?req.headers().get(header::ORIGIN), "cross-site request refused");
        return AppError::Forbidden(
            "cross-site request refused: the Origin of this request is not this site".into(),
        )
        .into_response();
    }

    let ip = client_ip(&req);
    req.extensions_mut().insert(ClientIp(ip.clone()));
    let session = req.extensions().get::<Session>().cloned();
    let (principal, credential) = match resolve(&state, req.headers(), session.as_ref()).await {
        Ok(Some((p, c))) => (Some(p), Some(c)),
        Ok(None) => (None, None),
        Err(response) => return response,
    };
    if let Some(credential) = credential {
        req.extensions_mut().insert(credential);
    }
    let wants_json = path.starts_with("/api/") || path.starts_with("/_fn/");

    let action = match rule {
        Rule::Asset | Rule::Public => {
            if let Some(p) = principal {
                let visibility = Visibility::of(&p, &state.settings.auth);
                req.extensions_mut().insert(visibility);
                req.extensions_mut().insert(p);
            }
            return next.run(req).await;
        }
        Rule::Act(action) => Some(action),
        Rule::SignedIn => None,
    };
    let Some(principal) = principal else {
        if wants_json {
            let mut response = AppError::Unauthorized.into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
        let next_url = req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        let target: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("next", &next_url)
            .finish();
        return Redirect::to(&format!("/login?{target}")).into_response();
    };

    // Server functions authorize themselves, once (their application is in the body).
    let Some(action) = action else {
        let visibility = Visibility::of(&principal, &state.settings.auth);
        req.extensions_mut().insert(visibility);
        req.extensions_mut().insert(principal);
        return next.run(req).await;
    };

    // Routes about one application are judged within its project (a sync request belongs to
    // its application).
    let mut app = pattern
        .as_deref()
        .and_then(|p| path_param(p, &path, "name"));
    if let Some(id) = pattern
        .as_deref()
        .filter(|p| p.starts_with("/api/v1/sync-requests/{id}"))
        .and_then(|p| path_param(p, &path, "id"))
    {
        match id.parse::<i64>() {
            Ok(id) => match state.store.sync_request(id).await {
                Ok(Some(r)) => app = Some(r.application),
                Ok(None) => {
                    return AppError::NotFound(format!("sync request {id}")).into_response()
                }
                Err(e) => return crate::state::internal_error(&e).into_response(),
            },
            Err(_) => {
                return AppError::BadRequest(format!("`{id}` is not a sync request id"))
                    .into_response()
            }
        }
    }
    match authorize(
        &state,
        &principal,
        action,
        app.as_deref(),
        method.as_str(),
        &path,
        &ip,
    )
    .await
    {
        Ok(()) => {
            let visibility = Visibility::of(&principal, &state.settings.auth);
            req.extensions_mut().insert(visibility);
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(AppError::Forbidden(message)) if !wants_json => forbidden_page(&principal, &message),
        Err(e) => e.into_response(),
    }
}

/// Whether `principal` may take `action` (within the project of application `app`, when the
/// request is about one). A denial is recorded in the ledger and explained: "Syncing needs the
/// deployer role in project demo; you have viewer". The guard calls it for REST routes (the
/// application is in the path); server functions call it themselves, once (it is in the body).
pub async fn authorize(
    state: &AuthState,
    principal: &Principal,
    action: Action,
    app: Option<&str>,
    method: &str,
    path: &str,
    ip: &str,
) -> Result<(), AppError> {
    if app.is_some_and(|a| a.contains('%')) {
        return Err(AppError::BadRequest(
            "application names are letters, digits and `-`".into(),
        ));
    }
    let project = match app {
        Some(name) => state
            .store
            .application_project(name)
            .await
            .map_err(|e| crate::state::internal_error(&e))?,
        None => None,
    };
    let target = app.map_or_else(|| path.to_owned(), |a| format!("application:{a}"));
    authorize_in_project(
        state,
        principal,
        action,
        project.as_deref(),
        &target,
        method,
        path,
        ip,
    )
    .await
}

/// Whether `principal` may take `action` within `project` (`None`: outside any project), for
/// requests that name a project themselves (an application body moving it to another project).
/// A denial is recorded against `target` and explained like [`authorize`]'s.
#[allow(clippy::too_many_arguments)]
pub async fn authorize_in_project(
    state: &AuthState,
    principal: &Principal,
    action: Action,
    project: Option<&str>,
    target: &str,
    method: &str,
    path: &str,
    ip: &str,
) -> Result<(), AppError> {
    let needed = action.role_under(&state.settings.auth);
    let held = principal.role_in(&state.settings.auth, project);
    if held.is_some_and(|r| r >= needed) {
        return Ok(());
    }
    // Denied: record it, then say which role is needed.
    let scope = project
        .map(|p| format!(" in project {p}"))
        .unwrap_or_default();
    let message = format!(
        "{} needs the {} role{scope}; you have {}",
        action.phrase(),
        needed.as_str(),
        held.map_or("no role", |r| r.as_str())
    );
    let event = principal.audit(
        "access_denied",
        target,
        "denied",
        json!({"action": action.as_str(), "needs": needed.as_str(), "has": held.map(|r| r.as_str()),
               "method": method, "path": path, "project": project}),
        ip,
    );
    if let Err(e) = state.store.audit(&event).await {
        tracing::error!(error = %e, "could not record a denial in the audit ledger");
    }
    Err(AppError::Forbidden(message))
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether a state-changing request comes from this site. With a session cookie the browser
/// must prove it: a matching `Origin`, or `Sec-Fetch-Site: same-origin`. Without one (scripts
/// with tokens, webhooks) a foreign `Origin` is still refused.
pub fn same_site(headers: &HeaderMap, public_origin: Option<&str>) -> bool {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let has_cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|c| {
            c.split(';')
                .any(|kv| kv.trim().starts_with(&format!("{}=", sessions::COOKIE)))
        });
    match get("origin") {
        Some(origin) => match public_origin {
            Some(ours) => origin.eq_ignore_ascii_case(ours),
            None => get("host").is_some_and(|host| {
                origin
                    .split_once("://")
                    .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host))
            }),
        },
        None => match get("sec-fetch-site") {
            Some(site) => site == "same-origin" || (!has_cookie && site == "none"),
            None => !has_cookie,
        },
    }
}

/// How a request proved who it is, kept so a long-lived response (an SSE stream) can check
/// again later that the proof still holds ([`still_valid`], [`while_valid`]).
#[derive(Clone)]
pub enum Credential {
    /// A browser session, by its tower-sessions id.
    Session { id: String },
    /// An API token (the secret as presented; never logged).
    Token { bearer: String },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Session { .. } => f.write_str("Credential::Session(..)"),
            Credential::Token { .. } => f.write_str("Credential::Token(..)"),
        }
    }
}

/// A session's idle and absolute timeouts, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimeouts {
    /// Longest allowed silence between two requests.
    pub idle_ms: Millis,
    /// Longest allowed time since sign-in.
    pub absolute_ms: Millis,
}

impl SessionTimeouts {
    /// From `auth.session_idle_minutes` and `auth.session_absolute_minutes` (at least 1 each).
    pub fn from_settings(auth: &crate::config::AuthSettings) -> Self {
        let minutes = |m: u64| i64::try_from(m.max(1).saturating_mul(60_000)).unwrap_or(i64::MAX);
        Self {
            idle_ms: minutes(auth.session_idle_minutes),
            absolute_ms: minutes(auth.session_absolute_minutes),
        }
    }

    /// How stale the stored last-seen time may get before a request rewrites it: a sixtieth
    /// of the idle timeout, between one second and one minute (1 s for a 1-minute timeout,
    /// 1 min from a 1-hour one up). A session never outlives `idle_ms` after its last request
    /// and ends at most this much earlier.
    pub fn refresh_after_ms(&self) -> Millis {
        (self.idle_ms / 60).clamp(1_000, 60_000)
    }
}

/// What a request at some instant makes of a session's sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionVerdict {
    /// Idle too long, alive too long, or signed in before the account's password was reset.
    Expired,
    /// Valid; the stored last-seen time is recent enough.
    Valid,
    /// Valid; record this request as the last-seen time (a session write).
    ValidRefresh,
}

/// The session decision as a pure function of times (ms): a sign-in at `login_at` last seen
/// at `seen_at`, judged at `now`, for an account whose sessions before `valid_after` are void.
/// The idle gap is measured from the last recorded request and is exact: `idle_ms` of silence
/// is allowed, a millisecond more is not.
pub fn session_verdict(
    timeouts: SessionTimeouts,
    login_at: Millis,
    seen_at: Millis,
    valid_after: Option<Millis>,
    now: Millis,
) -> SessionVerdict {
    if now - login_at > timeouts.absolute_ms
        || now - seen_at > timeouts.idle_ms
        || valid_after.is_some_and(|t| login_at < t)
    {
        SessionVerdict::Expired
    } else if now - seen_at >= timeouts.refresh_after_ms() {
        SessionVerdict::ValidRefresh
    } else {
        SessionVerdict::Valid
    }
}

/// The verdict on a stored sign-in at `now`, reading the account's reset time for local
/// accounts (other principals have no password to reset).
async fn judge(
    state: &AuthState,
    signed: &SignedIn,
    now: Millis,
) -> Result<SessionVerdict, crate::store::StoreError> {
    let valid_after = match signed.principal.method {
        AuthMethod::Local => {
            state
                .store
                .sessions_valid_after(&signed.principal.id)
                .await?
        }
        AuthMethod::Oidc | AuthMethod::Token => None,
    };
    Ok(session_verdict(
        SessionTimeouts::from_settings(&state.settings.auth),
        signed.login_at,
        signed.seen_at,
        valid_after,
        now,
    ))
}

/// The principal behind a request and its credential: a bearer token (which must be valid
/// when present) or the session's sign-in (unless it has been idle or alive too long, or the
/// account's password was reset since).
async fn resolve(
    state: &AuthState,
    headers: &HeaderMap,
    session: Option<&Session>,
) -> Result<Option<(Principal, Credential)>, Response> {
    let now = clock::now();
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let bearer = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .trim();
        return match tokens::authenticate(&state.store, bearer, now).await {
            Ok(Some(p)) => Ok(Some((
                p,
                Credential::Token {
                    bearer: bearer.to_owned(),
                },
            ))),
            Ok(None) => Err((
                StatusCode::UNAUTHORIZED,
                axum::Json(
                    json!({"error": "unauthorized", "message": "invalid or revoked API token"}),
                ),
            )
                .into_response()),
            Err(e) => Err(crate::state::internal_error(&e).into_response()),
        };
    }
    let Some(session) = session else {
        return Ok(None);
    };
    let signed: SignedIn = match session.get(SIGNED_IN).await {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable session ignored");
            return Ok(None);
        }
    };
    let Some(id) = session.id().map(|id| id.to_string()) else {
        return Ok(None);
    };
    let credential = Credential::Session { id };
    match judge(state, &signed, now).await {
        Err(e) => Err(crate::state::internal_error(&e).into_response()),
        Ok(SessionVerdict::Expired) => {
            let _ = session.flush().await;
            Ok(None)
        }
        Ok(SessionVerdict::Valid) => Ok(Some((signed.principal, credential))),
        Ok(SessionVerdict::ValidRefresh) => {
            // Activity keeps the session alive; the write also renews the record's and the
            // cookie's expiry (tower-sessions' `OnInactivity`), which thus track `seen_at`.
            let principal = signed.principal.clone();
            let refreshed = SignedIn {
                seen_at: now,
                ..signed
            };
            if let Err(e) = session.insert(SIGNED_IN, refreshed).await {
                tracing::warn!(error = %e, "could not refresh the session");
            }
            Ok(Some((principal, credential)))
        }
    }
}

/// Whether `credential` still proves who the request's principal is at `now`: the session
/// record exists (not signed out), its sign-in has not expired (idle, absolute, password
/// reset), or the API token is not revoked. Does not count as activity: an open stream alone
/// does not keep a session alive.
pub async fn still_valid(
    state: &AuthState,
    credential: &Credential,
    now: Millis,
) -> Result<bool, crate::store::StoreError> {
    match credential {
        Credential::Token { bearer } => Ok(tokens::authenticate(&state.store, bearer, now)
            .await?
            .is_some()),
        Credential::Session { id } => {
            let Some((data, _)) = state.store.session_load(id, now).await? else {
                return Ok(false);
            };
            let signed = serde_json::from_str::<serde_json::Value>(&data)
                .ok()
                .and_then(|mut v| v.get_mut(SIGNED_IN).map(serde_json::Value::take))
                .and_then(|v| serde_json::from_value::<SignedIn>(v).ok());
            let Some(signed) = signed else {
                return Ok(false);
            };
            Ok(judge(state, &signed, now).await? != SessionVerdict::Expired)
        }
    }
}

/// How often a long-lived response re-checks its credential when it has nothing to send.
pub const STREAM_RECHECK: std::time::Duration = std::time::Duration::from_secs(3);

/// `inner`, ended as soon as `credential` stops being valid: checked before each item and at
/// least every [`STREAM_RECHECK`] while `inner` is quiet. A check that cannot reach the
/// database ends the stream too (the client reconnects and is judged afresh).
pub fn while_valid<S>(
    state: AuthState,
    credential: Credential,
    inner: S,
) -> impl futures_util::Stream<Item = S::Item> + Send + 'static
where
    S: futures_util::Stream + Send + 'static,
    S::Item: Send,
{
    use futures_util::StreamExt;
    let mut ticker = tokio::time::interval(STREAM_RECHECK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let check = |state: &AuthState, credential: &Credential| {
        let (state, credential) = (state.clone(), credential.clone());
        async move {
            match still_valid(&state, &credential, clock::now()).await {
                Ok(valid) => valid,
                Err(e) => {
                    tracing::warn!(error = %e, "stream credential check failed; ending the stream");
                    false
                }
            }
        }
    };
    futures_util::stream::unfold(
        (state, credential, inner.boxed(), ticker),
        move |(state, credential, mut inner, mut ticker)| async move {
            loop {
                tokio::select! {
                    item = inner.next() => {
                        let item = item?;
                        if !check(&state, &credential).await {
                            return None;
                        }
                        return Some((item, (state, credential, inner, ticker)));
                    }
                    _ = ticker.tick() => {
                        if !check(&state, &credential).await {
                            return None;
                        }
                    }
                }
            }
        },
    )
}

/// The value of `{name}` in `path` for the route `pattern`.
fn path_param(pattern: &str, path: &str, name: &str) -> Option<String> {
    let wanted = format!("{{{name}}}");
    pattern
        .split('/')
        .zip(path.split('/'))
        .find(|(p, _)| *p == wanted)
        .map(|(_, v)| v.to_owned())
}

fn escape(s: &str) -> String {
    html_escape::encode_quoted_attribute(s).into_owned()
}

/// The 403 page: who you are, what is needed, what to do.
fn forbidden_page(principal: &Principal, message: &str) -> Response {
    let body = format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Not allowed · Tidemark</title><link rel="stylesheet" href="/pkg/tidemark.css"><link rel="icon" href="/favicon.svg"></head>
<body><main class="page narrow" id="forbidden">
<h1>Not allowed</h1>
<p class="lead">Signed in as <strong>{name}</strong>. {message}.</p>
<p>Ask an administrator to bind your user or one of your groups to that role (<code>[[auth.bindings]]</code> in <code>tidemark.toml</code>).</p>
<div class="actions"><a class="button" href="/applications">Back to applications</a>
<form method="post" action="/auth/logout" class="inline"><button type="submit">Sign out</button></form></div>
</main></body></html>"#,
        name = escape(&principal.display_name),
        message = escape(message),
    );
    (StatusCode::FORBIDDEN, Html(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn cookie_bearing_requests_must_prove_they_are_same_origin() {
        let ours = Some("https://tidemark.example");
        let cookie = ("cookie", "theme=dark; tidemark_session=abc");
        assert!(same_site(
            &headers(&[cookie, ("origin", "https://tidemark.example")]),
            ours
        ));
        assert!(!same_site(
            &headers(&[cookie, ("origin", "https://evil.example")]),
            ours
        ));
        assert!(!same_site(
            &headers(&[cookie, ("origin", "https://x.tidemark.example")]),
            ours
        ));
        assert!(
            !same_site(&headers(&[cookie]), ours),
            "no Origin, no Sec-Fetch-Site"
        );
        assert!(!same_site(
            &headers(&[cookie, ("sec-fetch-site", "same-site")]),
            ours
        ));
        assert!(same_site(
            &headers(&[cookie, ("sec-fetch-site", "same-origin")]),
            ours
        ));
        // Scripts without a cookie: fine unless they claim a foreign Origin.
        assert!(same_site(&headers(&[]), ours));
        assert!(!same_site(
            &headers(&[("origin", "https://evil.example")]),
            ours
        ));
        // Without public_url the Host header decides.
        let local = headers(&[
            cookie,
            ("host", "127.0.0.1:3000"),
            ("origin", "http://127.0.0.1:3000"),
        ]);
        assert!(same_site(&local, None));
    }

    /// Replays requests at `times` (ms after sign-in at 0) the way `resolve` handles them;
    /// returns the instant of the first request refused as expired.
    fn first_expiry(
        timeouts: SessionTimeouts,
        times: impl IntoIterator<Item = Millis>,
    ) -> Option<Millis> {
        let mut seen_at = 0;
        for now in times {
            match session_verdict(timeouts, 0, seen_at, None, now) {
                SessionVerdict::Expired => return Some(now),
                SessionVerdict::ValidRefresh => seen_at = now,
                SessionVerdict::Valid => {}
            }
        }
        None
    }

    fn one_minute_idle() -> SessionTimeouts {
        SessionTimeouts::from_settings(&crate::config::AuthSettings {
            session_idle_minutes: 1,
            session_absolute_minutes: 24 * 60,
            ..Default::default()
        })
    }

    #[test]
    fn an_active_session_with_a_one_minute_idle_timeout_never_expires() {
        // A request every 20 s for 5 minutes (the old once-a-minute refresh died at 80 s).
        let every_20s = (1..=15).map(|i| i * 20_000);
        assert_eq!(first_expiry(one_minute_idle(), every_20s), None);
        // Even a request every 59 s, and irregular gaps up to the full minute, keep it alive.
        assert_eq!(
            first_expiry(one_minute_idle(), (1..=5).map(|i| i * 59_000)),
            None
        );
        let irregular = [1_000, 61_000, 62_500, 122_500, 182_000, 183_000, 243_000];
        assert_eq!(first_expiry(one_minute_idle(), irregular), None);
    }

    #[test]
    fn a_gap_longer_than_the_idle_timeout_expires_the_session() {
        assert_eq!(
            first_expiry(one_minute_idle(), [20_000, 40_000, 101_000]),
            Some(101_000),
            "61 s after the last request"
        );
        assert_eq!(first_expiry(one_minute_idle(), [61_000]), Some(61_000));
        // Exactness: the stored time is at most a second stale with a one-minute timeout, so
        // the session survives a full idle period after any request that refreshed it.
        let t = one_minute_idle();
        assert_eq!(t.refresh_after_ms(), 1_000);
        assert_eq!(first_expiry(t, [1_000, 61_000]), None);
        let eight_hours = SessionTimeouts {
            idle_ms: 8 * 3_600_000,
            absolute_ms: i64::MAX,
        };
        assert_eq!(eight_hours.refresh_after_ms(), 60_000);
    }

    #[test]
    fn the_absolute_timeout_and_a_password_reset_end_even_busy_sessions() {
        let t = SessionTimeouts {
            idle_ms: 60_000,
            absolute_ms: 120_000,
        };
        assert_eq!(first_expiry(t, (1..=20).map(|i| i * 10_000)), Some(130_000));
        assert_eq!(
            session_verdict(t, 1_000, 1_000, Some(1_001), 2_000),
            SessionVerdict::Expired,
            "signed in before the reset"
        );
        assert_eq!(
            session_verdict(t, 1_001, 1_001, Some(1_001), 2_000),
            SessionVerdict::Valid,
            "signed in at or after the reset"
        );
    }

    #[test]
    fn path_params_come_from_the_matching_segment() {
        assert_eq!(
            path_param(
                "/api/v1/applications/{name}/sync",
                "/api/v1/applications/web/sync",
                "name"
            ),
            Some("web".into())
        );
        assert_eq!(
            path_param("/api/v1/applications", "/api/v1/applications", "name"),
            None
        );
    }
}
