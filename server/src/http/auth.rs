//! Sign-in and sign-out endpoints: the local form, single sign-on start and callback, sign-out.
//! Plain HTML form posts and redirects, so they work before (and without) the WASM.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;
use serde_json::json;
use tower_sessions::Session;

use super::{internal_error, AppState};
use crate::auth::guard::{ClientIp, SignedIn, SIGNED_IN};
use crate::auth::local::{self, SignInError};
use crate::auth::{anonymous_audit, ledger_text, oidc, AuthMethod, Principal};
use crate::clock;
use crate::store::AuditEvent;

/// Only same-site paths: `/x`, never `//host` or `/\host`.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && !n.starts_with("/login")
                && !n.starts_with("/auth/")
                && !n.chars().any(char::is_control) =>
        {
            n.to_owned()
        }
        _ => "/applications".to_owned(),
    }
}

fn login_redirect(error: &str, next: &str, extra: &[(&str, String)]) -> Response {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("error", error);
    for (k, v) in extra {
        q.append_pair(k, v);
    }
    if next != "/applications" {
        q.append_pair("next", next);
    }
    Redirect::to(&format!("/login?{}", q.finish())).into_response()
}

async fn record(state: &AppState, event: AuditEvent) {
    if let Err(e) = state.store.audit(&event).await {
        tracing::error!(error = %e, action = %event.action, "could not write the audit ledger");
    }
}

/// Starts a fresh session for `principal` (new id: no session fixation).
async fn establish(
    session: &Session,
    principal: Principal,
    id_token: Option<String>,
) -> Result<(), tower_sessions::session::Error> {
    session.cycle_id().await?;
    let now = clock::now();
    session
        .insert(
            SIGNED_IN,
            SignedIn {
                principal,
                login_at: now,
                seen_at: now,
                id_token,
            },
        )
        .await
}

#[derive(Debug, Deserialize)]
pub struct LocalForm {
    username: String,
    password: String,
    next: Option<String>,
}

/// `POST /auth/login` (form): local user name and password.
pub async fn login(
    State(state): State<AppState>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    session: Session,
    Form(form): Form<LocalForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let username = form.username.trim();
    let result = local::sign_in(
        &state.store,
        &state.settings.auth,
        username,
        &form.password,
        &ip,
        clock::now(),
    )
    .await;
    match result {
        Ok(principal) => {
            let event = principal.audit("sign_in", "tidemark", "success", json!({}), &ip);
            if let Err(e) = establish(&session, principal, None).await {
                return internal_error(&e).into_response();
            }
            record(&state, event).await;
            Redirect::to(&next).into_response()
        }
        Err(e) => {
            let (code, extra) = match &e {
                SignInError::BadCredentials => ("bad_credentials", vec![]),
                SignInError::Throttled { retry_after_secs } => {
                    ("throttled", vec![("retry", retry_after_secs.to_string())])
                }
                SignInError::Disabled => ("local_off", vec![]),
                SignInError::Store(_) | SignInError::Hash(_) => {
                    return internal_error(&e).into_response()
                }
            };
            record(
                &state,
                anonymous_audit(
                    username,
                    AuthMethod::Local,
                    "sign_in",
                    "failure",
                    json!({"reason": code}),
                    &ip,
                ),
            )
            .await;
            login_redirect(code, &next, &extra)
        }
    }
}

/// `POST /auth/logout`: ends the session here and, for single sign-on, at the provider too.
pub async fn logout(
    State(state): State<AppState>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    session: Session,
) -> Response {
    let signed: Option<SignedIn> = session.get(SIGNED_IN).await.ok().flatten();
    let _ = session.flush().await;
    let Some(signed) = signed else {
        return Redirect::to("/login").into_response();
    };
    record(
        &state,
        signed
            .principal
            .audit("sign_out", "tidemark", "success", json!({}), &ip),
    )
    .await;
    if signed.principal.method == AuthMethod::Oidc {
        if let Some(url) = oidc::end_session_url(&state.settings, signed.id_token.as_deref()).await
        {
            return Redirect::to(&url).into_response();
        }
    }
    Redirect::to("/login?signed_out=1").into_response()
}

#[derive(Debug, Deserialize)]
pub struct StartQuery {
    next: Option<String>,
}

/// `GET /auth/oidc/start?next=`: redirect to the provider.
pub async fn oidc_start(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<StartQuery>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    match oidc::start(&state.settings, &session, next.clone()).await {
        Ok(url) => Redirect::to(&url).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "single sign-on could not start");
            login_redirect(e.code(), &next, &[])
        }
    }
}

/// `GET /auth/oidc/callback?code=&state=`: validate and sign in.
pub async fn oidc_callback(
    State(state): State<AppState>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    session: Session,
    Query(callback): Query<oidc::Callback>,
) -> Response {
    match oidc::finish(&state.settings, &session, callback).await {
        Ok(done) => {
            let user = crate::store::UserRecord {
                id: done.principal.id.clone(),
                username: done.principal.username.clone(),
                display_name: done.principal.display_name.clone(),
                email: done.email.clone(),
                method: "oidc".into(),
                password_hash: None,
            };
            if let Err(e) = state.store.upsert_oidc_user(&user, clock::now()).await {
                return internal_error(&e).into_response();
            }
            let event = done.principal.audit(
                "sign_in",
                "tidemark",
                "success",
                json!({"groups": done.principal.groups}),
                &ip,
            );
            if let Err(e) = establish(&session, done.principal, Some(done.id_token)).await {
                return internal_error(&e).into_response();
            }
            record(&state, event).await;
            Redirect::to(&done.next).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "single sign-on rejected");
            record(
                &state,
                anonymous_audit(
                    "unknown",
                    AuthMethod::Oidc,
                    "sign_in",
                    "failure",
                    // The provider's `error_description` comes from the query string.
                    json!({"reason": e.code(), "detail": ledger_text(&e.to_string(), 512)}),
                    &ip,
                ),
            )
            .await;
            login_redirect(e.code(), "/applications", &[])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(
            safe_next(Some("/applications?q=web")),
            "/applications?q=web"
        );
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "/login",
            "x",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/applications", "{bad}");
        }
        assert_eq!(safe_next(None), "/applications");
    }
}
