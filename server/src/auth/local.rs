//! Local accounts: argon2id password hashes, the bootstrap `admin`, and sign-in throttled per
//! user and per client address, each attempt counted in the database before its password is
//! checked.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use super::{AuthMethod, Principal, BOOTSTRAP_ADMIN};
use crate::clock::Millis;
use crate::config::AuthSettings;
use crate::store::{LoginReservation, Store, StoreError};

/// Why a local sign-in did not succeed (messages are shown to the person signing in).
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("wrong user name or password")]
    BadCredentials,
    #[error("too many failed sign-ins; try again in {retry_after_secs} seconds")]
    Throttled { retry_after_secs: i64 },
    #[error("local sign-in is switched off; use single sign-on")]
    Disabled,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// An argon2id PHC string for `password` with a fresh salt.
pub async fn hash_password(password: &str) -> Result<String, SignInError> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(super::random_token(16).as_bytes())
            .map_err(|e| SignInError::Hash(e.to_string()))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| SignInError::Hash(e.to_string()))
    })
    .await
    .map_err(|e| SignInError::Hash(e.to_string()))?
}

/// Whether `password` matches the PHC string (constant-time inside argon2).
pub async fn verify_password(hash: &str, password: &str) -> bool {
    let (hash, password) = (hash.to_owned(), password.to_owned());
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// A random password people can type: 24 characters of base64url (144 bits).
pub fn generate_password() -> String {
    super::random_token(18)
}

/// Creates the bootstrap `admin` on first start. With `auth.admin_password` set, the account
/// takes that password (setting it again resets a lost one); without it, a generated password
/// is returned so the caller can print it once.
pub async fn bootstrap_admin(
    store: &Store,
    auth: &AuthSettings,
    now: Millis,
) -> Result<Option<String>, SignInError> {
    if !auth.local_login {
        return Ok(None);
    }
    let existing = store.local_user(BOOTSTRAP_ADMIN).await?;
    match (existing, &auth.admin_password) {
        (None, Some(pw)) => {
            let hash = hash_password(pw.expose()).await?;
            store
                .upsert_local_user(BOOTSTRAP_ADMIN, "Administrator", &hash, now)
                .await?;
            Ok(None)
        }
        (None, None) => {
            let pw = generate_password();
            let hash = hash_password(&pw).await?;
            store
                .upsert_local_user(BOOTSTRAP_ADMIN, "Administrator", &hash, now)
                .await?;
            Ok(Some(pw))
        }
        (Some(user), Some(pw)) => {
            let current = user.password_hash.unwrap_or_default();
            if !verify_password(&current, pw.expose()).await {
                let hash = hash_password(pw.expose()).await?;
                store
                    .upsert_local_user(BOOTSTRAP_ADMIN, &user.display_name, &hash, now)
                    .await?;
                tracing::info!("bootstrap admin password reset from auth.admin_password");
            }
            Ok(None)
        }
        (Some(_), None) => Ok(None),
    }
}

/// Checks a local user name and password, throttled per user name and per client address.
/// The attempt is reserved (counted and recorded, atomically, under both keys) before the
/// password is checked, so N parallel attempts cost exactly what N sequential ones do: with a
/// limit of 5, at most 5 passwords are checked however many requests arrive at once. A failure
/// keeps its reservation as the recorded failure, so neither a retry storm nor a restart
/// resets the count; a success clears the user's failures and gives back its address slot.
pub async fn sign_in(
    store: &Store,
    auth: &AuthSettings,
    username: &str,
    password: &str,
    client_ip: &str,
    now: Millis,
) -> Result<Principal, SignInError> {
    if !auth.local_login {
        return Err(SignInError::Disabled);
    }
    let window = i64::try_from(auth.failure_window_minutes.max(1) * 60_000).unwrap_or(i64::MAX);
    let user_key = format!("user:{}", username.to_lowercase());
    let ip_key = format!("ip:{client_ip}");
    let limits = [
        (
            user_key.as_str(),
            i64::from(auth.max_failures_per_user.max(1)),
        ),
        (ip_key.as_str(), i64::from(auth.max_failures_per_ip.max(1))),
    ];
    // A name no account can have is a failure of the address only (no per-name key for
    // arbitrary text), and no password is checked.
    let plausible = super::plausible_username(username);
    let limits = if plausible { &limits[..] } else { &limits[1..] };
    let reserved = match store
        .reserve_login_attempt(limits, now.saturating_sub(window), now)
        .await?
    {
        LoginReservation::Granted { ids } => ids,
        LoginReservation::Refused { first_at, .. } => {
            let retry = first_at.map_or(window, |f| f + window - now);
            return Err(SignInError::Throttled {
                retry_after_secs: (retry / 1000).max(1),
            });
        }
    };
    if !plausible {
        return Err(SignInError::BadCredentials);
    }
    let user = store.local_user(username).await?;
    let hash = user.as_ref().and_then(|u| u.password_hash.clone());
    // Without an account, still spend the time of one verification (no user enumeration).
    static DUMMY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    let dummy = DUMMY
        .get_or_try_init(|| async { hash_password(&generate_password()).await })
        .await?;
    let ok = verify_password(hash.as_deref().unwrap_or(dummy), password).await && hash.is_some();
    let Some(user) = user.filter(|_| ok) else {
        // The reservation stays: it is this failure's record.
        return Err(SignInError::BadCredentials);
    };
    store.clear_login_failures(&user_key).await?;
    // The address's reservation is the one after the user's (see `limits`).
    store
        .release_login_attempts(reserved.get(1..).unwrap_or(&[]))
        .await?;
    store.touch_login(&user.id, now).await?;
    Ok(Principal {
        id: user.id,
        username: user.username,
        display_name: user.display_name,
        method: AuthMethod::Local,
        groups: Vec::new(),
        grant: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_only_their_password_and_are_salted() {
        let a = hash_password("correct horse").await.unwrap();
        let b = hash_password("correct horse").await.unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify_password(&a, "correct horse").await);
        assert!(!verify_password(&a, "correct horse ").await);
        assert!(!verify_password("not a hash", "x").await);
        assert_eq!(generate_password().len(), 24);
    }
}
