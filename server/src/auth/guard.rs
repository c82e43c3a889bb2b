//! The guard every request passes through (SSR pages, server functions, REST, SSE): refuses
//! cross-site state changes, finds the principal (API token or session), enforces the policy
//! table's role within the application's project, and records denials in the audit ledger.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower_sessions::Session;

use super::policy::{self, Action, Rule};
use super::{sessions, tokens, Principal};
use crate::clock::{self, Millis};
use crate::http::AppState;
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
pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
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
    let principal = match resolve(&state, req.headers(), session.as_ref()).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let wants_json = path.starts_with("/api/") || path.starts_with("/_fn/");

    let action = match rule {
        Rule::Asset | Rule::Public => {
            if let Some(p) = principal {
                req.extensions_mut().insert(p);
            }
            return next.run(req).await;
        }
        Rule::Act(action) => action,
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
                Err(e) => return crate::http::internal_error(&e).into_response(),
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
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(AppError::Forbidden(message)) if !wants_json => forbidden_page(&principal, &message),
        Err(e) => e.into_response(),
    }
}

/// Whether `principal` may take `action` (within the project of application `app`, when the
/// request is about one). A denial is recorded in the ledger and explained: "Syncing needs the
/// deployer role in project demo; you have viewer". Server functions about one application
/// call this themselves (the guard cannot see their arguments).
pub async fn authorize(
    state: &AppState,
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
            .map_err(|e| crate::http::internal_error(&e))?,
        None => None,
    };
    let needed = action.role();
    let held = principal.role_in(&state.settings.auth, project.as_deref());
    if held.is_some_and(|r| r >= needed) {
        return Ok(());
    }
    // Denied: record it, then say which role is needed.
    let scope = project
        .as_deref()
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
        &app.map_or_else(|| path.to_owned(), |a| format!("application:{a}")),
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

/// The principal behind a request: a bearer token (which must be valid when present) or the
/// session's sign-in (unless it has been idle or alive too long).
async fn resolve(
    state: &AppState,
    headers: &HeaderMap,
    session: Option<&Session>,
) -> Result<Option<Principal>, Response> {
    let now = clock::now();
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let bearer = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .trim();
        return match tokens::authenticate(&state.store, bearer, now).await {
            Ok(Some(p)) => Ok(Some(p)),
            Ok(None) => Err((
                StatusCode::UNAUTHORIZED,
                axum::Json(
                    json!({"error": "unauthorized", "message": "invalid or revoked API token"}),
                ),
            )
                .into_response()),
            Err(e) => Err(crate::http::internal_error(&e).into_response()),
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
    let auth = &state.settings.auth;
    let minutes = |m: u64| i64::try_from(m.max(1) * 60_000).unwrap_or(i64::MAX);
    if now - signed.login_at > minutes(auth.session_absolute_minutes)
        || now - signed.seen_at > minutes(auth.session_idle_minutes)
    {
        let _ = session.flush().await;
        return Ok(None);
    }
    // Activity keeps the session alive (a write at most once a minute).
    if now - signed.seen_at > 60_000 {
        let principal = signed.principal.clone();
        let refreshed = SignedIn {
            seen_at: now,
            ..signed
        };
        if let Err(e) = session.insert(SIGNED_IN, refreshed).await {
            tracing::warn!(error = %e, "could not refresh the session");
        }
        return Ok(Some(principal));
    }
    Ok(Some(signed.principal))
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
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
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
