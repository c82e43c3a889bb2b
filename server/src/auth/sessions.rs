//! tower-sessions records in Tidemark's own database (SQLite or PostgreSQL through the store),
//! and the session layer with Tidemark's cookie settings.

use std::str::FromStr;

use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};
use tower_sessions::{Expiry, SessionManagerLayer};

use crate::clock::Millis;
use crate::config::Settings;
use crate::store::Store;

/// The session cookie's name.
pub const COOKIE: &str = "tidemark_session";

/// Session records in the `sessions` table.
#[derive(Debug, Clone)]
pub struct DbSessionStore {
    store: Store,
}

impl DbSessionStore {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

fn millis(record: &Record) -> Millis {
    i64::try_from(record.expiry_date.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn backend(e: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

#[async_trait::async_trait]
impl SessionStore for DbSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let data = serde_json::to_string(&record.data)
            .map_err(|e| session_store::Error::Encode(e.to_string()))?;
        // 128-bit random ids collide only in theory; retry rather than overwrite.
        while !self
            .store
            .session_create(&record.id.to_string(), &data, millis(record))
            .await
            .map_err(backend)?
        {
            record.id = Id::default();
        }
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let data = serde_json::to_string(&record.data)
            .map_err(|e| session_store::Error::Encode(e.to_string()))?;
        self.store
            .session_save(&record.id.to_string(), &data, millis(record))
            .await
            .map_err(backend)
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let Some((data, expires_at)) = self
            .store
            .session_load(&id.to_string(), crate::clock::now())
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let data =
            serde_json::from_str(&data).map_err(|e| session_store::Error::Decode(e.to_string()))?;
        let expiry_date =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(expires_at) * 1_000_000)
                .map_err(|e| session_store::Error::Decode(e.to_string()))?;
        Ok(Some(Record {
            id: Id::from_str(&id.to_string())
                .map_err(|e| session_store::Error::Decode(e.to_string()))?,
            data,
            expiry_date,
        }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.store
            .session_delete(&id.to_string())
            .await
            .map_err(backend)
    }
}

/// The session layer: HttpOnly, SameSite=Lax (Strict would drop the cookie on the OIDC
/// callback), Secure when `public_url` is https, expiring after the idle timeout (the guard
/// refreshes it on activity and enforces the absolute timeout).
pub fn layer(store: Store, settings: &Settings) -> SessionManagerLayer<DbSessionStore> {
    let secure = settings
        .server
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    let idle = i64::try_from(settings.auth.session_idle_minutes.max(1)).unwrap_or(480);
    SessionManagerLayer::new(DbSessionStore::new(store))
        .with_name(COOKIE)
        .with_http_only(true)
        .with_same_site(tower_sessions::cookie::SameSite::Lax)
        .with_secure(secure)
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(time::Duration::minutes(idle)))
}
