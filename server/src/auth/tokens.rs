//! API tokens for scripts and CI: `tdm_` + 256 random bits, shown once, stored as SHA-256
//! (the secret is high-entropy, so a fast hash is enough), sent as `Authorization: Bearer`.

use app::model::Role;
use sha2::{Digest, Sha256};

use super::{AuthMethod, Principal};
use crate::clock::Millis;
use crate::store::{Actor, Store, StoreError};

const PREFIX: &str = "tdm_";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token name `{0}` must be 1-64 letters, digits, `-`, `_` or `.`")]
    BadName(String),
    #[error("a token named `{0}` already exists; revoke it first")]
    Exists(String),
    #[error("no live token is named `{0}`")]
    Unknown(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Creates a token and returns its secret (the only time it is visible).
pub async fn create(
    store: &Store,
    actor: &Actor,
    name: &str,
    role: Role,
    project: Option<&str>,
    now: Millis,
) -> Result<String, TokenError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(TokenError::BadName(name.to_owned()));
    }
    let secret = format!("{PREFIX}{}", super::random_token(32));
    let event = actor.event(
        "token_create",
        &format!("token:{name}"),
        "success",
        serde_json::json!({"role": role.as_str(), "project": project}),
        now,
    );
    if !store
        .token_create(
            name,
            &digest(&secret),
            role.as_str(),
            project,
            Some(&event),
            now,
        )
        .await?
    {
        return Err(TokenError::Exists(name.to_owned()));
    }
    Ok(secret)
}

pub async fn revoke(
    store: &Store,
    actor: &Actor,
    name: &str,
    now: Millis,
) -> Result<(), TokenError> {
    let event = actor.event(
        "token_revoke",
        &format!("token:{name}"),
        "success",
        serde_json::json!({}),
        now,
    );
    if store.token_revoke(name, Some(&event), now).await? {
        Ok(())
    } else {
        Err(TokenError::Unknown(name.to_owned()))
    }
}

/// The principal a bearer token stands for; `None` when it is unknown or revoked.
pub async fn authenticate(
    store: &Store,
    bearer: &str,
    now: Millis,
) -> Result<Option<Principal>, StoreError> {
    if !bearer.starts_with(PREFIX) {
        return Ok(None);
    }
    let Some(token) = store.token_use(&digest(bearer), now).await? else {
        return Ok(None);
    };
    let role: Role = token.role.parse().map_err(|_| StoreError::Corrupt {
        column: "api_tokens.role",
        value: token.role.clone(),
    })?;
    Ok(Some(Principal {
        id: format!("token:{}", token.name),
        username: token.name.clone(),
        display_name: format!("token {}", token.name),
        method: AuthMethod::Token,
        groups: Vec::new(),
        grant: Some((role, token.project)),
    }))
}
