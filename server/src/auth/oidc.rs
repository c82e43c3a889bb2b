//! OpenID Connect sign-in: authorization code + PKCE (S256) + state + nonce, each from a
//! CSPRNG; the ID token validated fully (signature from the provider's JWKS with an asymmetric
//! allow-list, `iss`, `aud` containing our client id and no untrusted audience, `azp`, `exp` and
//! `iat` with a small skew, nonce). Discovery (and so the JWKS) is fetched per sign-in, which
//! follows key rotation without a cache to invalidate.

use std::time::Duration;

use base64::Engine;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AuthMethod, Principal};
use crate::clock::{self, Millis};
use crate::config::{OidcSettings, Settings};

/// Session key of a sign-in in progress.
pub const PENDING: &str = "oidc_pending";
/// Clock skew tolerated on `exp` and `iat`.
const SKEW_MS: i64 = 60_000;
/// How long a started sign-in may take.
const PENDING_TTL_MS: i64 = 10 * 60_000;

/// A sign-in between the redirect to the provider and its callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingLogin {
    state: String,
    nonce: String,
    pkce_verifier: String,
    pub next: String,
    started_at: Millis,
}

/// Why single sign-on failed. `code()` names the message the sign-in page shows.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("single sign-on is not configured")]
    NotConfigured,
    #[error("the identity provider could not be reached: {0}")]
    Provider(String),
    #[error(
        "no sign-in is in progress in this browser (expired, already used, or started elsewhere)"
    )]
    NoPendingLogin,
    #[error(
        "the sign-in response does not belong to the sign-in this browser started (state mismatch)"
    )]
    StateMismatch,
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    #[error("the identity provider did not accept the authorization code: {0}")]
    Exchange(String),
    #[error("the ID token was rejected: {0}")]
    InvalidToken(String),
}

impl OidcError {
    pub fn code(&self) -> &'static str {
        match self {
            OidcError::NotConfigured => "sso_off",
            OidcError::Provider(_) => "provider_unreachable",
            OidcError::NoPendingLogin => "stale",
            OidcError::StateMismatch => "state",
            OidcError::Refused(_) => "refused",
            OidcError::Exchange(_) => "exchange",
            OidcError::InvalidToken(_) => "token",
        }
    }
}

/// What the provider sent to the callback.
#[derive(Debug, Default, Deserialize)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// A successful sign-in.
pub struct SignedInWithOidc {
    pub principal: Principal,
    pub email: Option<String>,
    pub id_token: String,
    pub next: String,
}

fn http_client() -> Result<reqwest::Client, OidcError> {
    // No redirects: the token and JWKS endpoints must answer themselves (SSRF hygiene).
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| OidcError::Provider(e.to_string()))
}

fn oidc(settings: &Settings) -> Result<&OidcSettings, OidcError> {
    settings.auth.oidc.as_ref().ok_or(OidcError::NotConfigured)
}

fn callback_url(settings: &Settings) -> String {
    format!(
        "{}/auth/oidc/callback",
        settings
            .server
            .public_url
            .as_deref()
            .unwrap_or_default()
            .trim_end_matches('/')
    )
}

fn client_secret(o: &OidcSettings) -> Result<Option<ClientSecret>, OidcError> {
    if let Some(s) = &o.client_secret {
        return Ok(Some(ClientSecret::new(s.expose().to_owned())));
    }
    match &o.client_secret_file {
        Some(path) => std::fs::read_to_string(path)
            .map(|s| Some(ClientSecret::new(s.trim().to_owned())))
            .map_err(|e| OidcError::Provider(format!("cannot read client_secret_file: {e}"))),
        None => Ok(None),
    }
}

async fn discover(
    o: &OidcSettings,
    http: &reqwest::Client,
) -> Result<CoreProviderMetadata, OidcError> {
    let issuer =
        IssuerUrl::new(o.issuer_url.clone()).map_err(|e| OidcError::Provider(e.to_string()))?;
    CoreProviderMetadata::discover_async(issuer, http)
        .await
        .map_err(|e| OidcError::Provider(describe(&e)))
}

fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Begins a sign-in: remembers state, nonce and PKCE verifier in the session and returns the
/// provider's authorization URL.
pub async fn start(
    settings: &Settings,
    session: &tower_sessions::Session,
    next: String,
) -> Result<String, OidcError> {
    let o = oidc(settings)?;
    let http = http_client()?;
    let meta = discover(o, &http).await?;
    let redirect =
        RedirectUrl::new(callback_url(settings)).map_err(|e| OidcError::Provider(e.to_string()))?;
    let client = CoreClient::from_provider_metadata(
        meta,
        ClientId::new(o.client_id.clone()),
        client_secret(o)?,
    )
    .set_redirect_uri(redirect);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client.authorize_url(
        CoreAuthenticationFlow::AuthorizationCode,
        CsrfToken::new_random,
        Nonce::new_random,
    );
    for scope in o.scopes.iter().filter(|s| *s != "openid") {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
    let pending = PendingLogin {
        state: state.secret().clone(),
        nonce: nonce.secret().clone(),
        pkce_verifier: verifier.secret().clone(),
        next,
        started_at: clock::now(),
    };
    session
        .insert(PENDING, pending)
        .await
        .map_err(|e| OidcError::Provider(format!("session store: {e}")))?;
    Ok(url.to_string())
}

/// Completes a sign-in from the provider's callback. The pending sign-in is consumed first, so
/// a callback URL cannot be replayed.
pub async fn finish(
    settings: &Settings,
    session: &tower_sessions::Session,
    callback: Callback,
) -> Result<SignedInWithOidc, OidcError> {
    let o = oidc(settings)?;
    let pending: PendingLogin = session
        .remove(PENDING)
        .await
        .ok()
        .flatten()
        .ok_or(OidcError::NoPendingLogin)?;
    let now = clock::now();
    if now - pending.started_at > PENDING_TTL_MS {
        return Err(OidcError::NoPendingLogin);
    }
    let state = callback.state.unwrap_or_default();
    if !constant_time_eq(state.as_bytes(), pending.state.as_bytes()) {
        return Err(OidcError::StateMismatch);
    }
    if let Some(error) = callback.error {
        let detail = callback.error_description.unwrap_or_default();
        return Err(OidcError::Refused(
            format!("{error} {detail}").trim().to_owned(),
        ));
    }
    let code = callback
        .code
        .ok_or_else(|| OidcError::Refused("no authorization code in the response".into()))?;

    let http = http_client()?;
    let meta = discover(o, &http).await?;
    let redirect =
        RedirectUrl::new(callback_url(settings)).map_err(|e| OidcError::Provider(e.to_string()))?;
    let client_id = ClientId::new(o.client_id.clone());
    let client = CoreClient::from_provider_metadata(meta, client_id.clone(), client_secret(o)?)
        .set_redirect_uri(redirect);
    let response = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| OidcError::Exchange(e.to_string()))?
        .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
        .request_async(&http)
        .await
        .map_err(|e| OidcError::Exchange(describe(&e)))?;
    let _ = response.access_token();
    let id_token = response
        .id_token()
        .ok_or_else(|| OidcError::InvalidToken("the provider returned no ID token".into()))?;

    let algs = o
        .allowed_algs
        .iter()
        .filter_map(|a| {
            serde_json::from_value::<CoreJwsSigningAlgorithm>(Value::String(a.clone())).ok()
        })
        .collect::<Vec<_>>();
    let skewed_now =
        move || chrono::DateTime::from_timestamp_millis(clock::now() - SKEW_MS).unwrap_or_default();
    let verifier = client
        .id_token_verifier()
        .set_allowed_algs(algs)
        .set_time_fn(skewed_now)
        .set_issue_time_verifier_fn(|iat| {
            let iat = iat.timestamp_millis();
            let now = clock::now();
            if iat > now + SKEW_MS {
                Err(format!(
                    "issued in the future ({} s ahead)",
                    (iat - now) / 1000
                ))
            } else if now - iat > 60 * 60_000 {
                Err("issued more than an hour ago".into())
            } else {
                Ok(())
            }
        });
    let nonce = Nonce::new(pending.nonce.clone());
    let claims = id_token
        .claims(&verifier, &nonce)
        .map_err(|e| OidcError::InvalidToken(e.to_string()))?;
    // `azp`: when present it must be us; with several audiences it must be present.
    match claims.authorized_party() {
        Some(azp) if *azp != client_id => {
            return Err(OidcError::InvalidToken(format!(
                "authorized party `{}` is not this client",
                azp.as_str()
            )))
        }
        None if claims.audiences().len() > 1 => {
            return Err(OidcError::InvalidToken(
                "several audiences but no authorized party (azp)".into(),
            ))
        }
        _ => {}
    }
    let subject = claims.subject().as_str().to_owned();

    // The signature is verified: read the custom claims (groups, user name) from the payload.
    let raw = id_token.to_string();
    let payload: Value = raw
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let text = |key: &str| {
        payload
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let email = text("email");
    let username = text(&o.username_claim)
        .or_else(|| email.clone())
        .unwrap_or_else(|| subject.clone());
    let display_name = text("name").unwrap_or_else(|| username.clone());
    let groups = match payload.get(&o.groups_claim) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    };
    Ok(SignedInWithOidc {
        principal: Principal {
            id: format!("oidc:{subject}"),
            username,
            display_name,
            method: AuthMethod::Oidc,
            groups,
            grant: None,
        },
        email,
        id_token: raw,
        next: pending.next,
    })
}

/// The provider's RP-initiated logout URL, when it offers one.
pub async fn end_session_url(settings: &Settings, id_token: Option<&str>) -> Option<String> {
    let o = settings.auth.oidc.as_ref()?;
    let http = http_client().ok()?;
    let doc: Value = http
        .get(format!(
            "{}/.well-known/openid-configuration",
            o.issuer_url.trim_end_matches('/')
        ))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let endpoint = doc.get("end_session_endpoint")?.as_str()?;
    let mut url = url::Url::parse(endpoint).ok()?;
    let back = format!(
        "{}/login?signed_out=1",
        settings.server.public_url.as_deref()?.trim_end_matches('/')
    );
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("client_id", &o.client_id);
        q.append_pair("post_logout_redirect_uri", &back);
        if let Some(hint) = id_token {
            q.append_pair("id_token_hint", hint);
        }
    }
    Some(url.to_string())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
