//! Persistence over sqlx: embedded SQLite (default) or PostgreSQL, chosen by the URL scheme.
//!
//! Queries are written once in the SQL both dialects accept (`$1` placeholders, `ON CONFLICT`,
//! BIGINT millisecond timestamps); each dialect has its own migration directory.

mod audit;
mod catalog;
mod changes;
mod generated;
mod git;
mod identity;
mod notify;
mod pins;
mod replicas;
mod requests;
mod signatures;
mod status;
mod syncs;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, ConnectOptions, Connection};

use crate::config::{DatabaseSettings, DatabaseUrl};

pub(crate) use audit::{append_audit, hex};
pub use audit::{
    audit_hash, Actor, AuditEvent, AuditFilter, AuditRow, AuditVerification, AUDIT_GENESIS,
};
pub use catalog::{AppOrigin, DeclaredCatalog};
pub use changes::Change;
pub use generated::{DeclaredApp, GeneratedChanges, GeneratorRun, RefusedApp};
pub use git::{
    AppGitState, AppSource, CommitInfo, IngestReport, RenderOptions, StoredCommit, TimelineEntry,
};
pub use identity::{LoginReservation, TokenRecord, UserRecord};
pub use notify::{Delivery, DeliveryRecord, NotificationEvent};
pub use pins::{KnownGood, Pin};
pub use replicas::{Interrupted, ReplicaRecord, HEARTBEAT_MS, REPLICA_TIMEOUT_MS};
pub use requests::{Approval, Approved, DecisionError, RequestChange, RequestStatus, SyncRequest};
pub use signatures::SignatureRow;
pub use status::{AppStatus, OpenDrift};
pub use syncs::{InventoryItem, NewSync, SyncRecord, SyncStatus};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// Which database engine backs the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Errors of the persistence layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("malformed database.url `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot open database {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("unexpected value in column {column}: {value}")]
    Corrupt { column: &'static str, value: String },
    /// Another process serves this SQLite file (SQLite is one process; use PostgreSQL for
    /// several replicas).
    #[error("{path} is in use by another Tidemark process (lock file {lock}); SQLite serves one process at a time — stop the other one, or use PostgreSQL to run several replicas")]
    InUse { path: String, lock: String },
    /// Another sync of the application is running (on this or another replica).
    #[error("a sync of {application} is already running{}", sync.map(|id| format!(" (sync #{id})")).unwrap_or_default())]
    SyncRunning {
        application: String,
        sync: Option<i64>,
    },
    /// Secret data of a stored render could not be sealed or opened (missing or wrong key).
    #[error(transparent)]
    Secrets(#[from] crate::secrets::SecretsError),
}

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Seals Secret data in stored renders (see `git.rs`); `None`: stored in plaintext.
    secrets: Option<std::sync::Arc<crate::secrets::Keyring>>,
    /// This process's replica id (`replicas.rs`), random per [`Store::connect`].
    replica: std::sync::Arc<str>,
    /// Applications whose timeline or status changed (`changes.rs`).
    changes: changes::Feed,
}

impl Store {
    /// Opens the database named by the settings (creating an SQLite file and its directory if
    /// missing) and checks that it answers, within `connect_timeout_secs`.
    #[tracing::instrument(skip_all, fields(url = %settings.url), err)]
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = parse_url(&settings.url)?;
        let timeout = Duration::from_secs(settings.connect_timeout_secs.max(1));
        let connect_err = |reason: String| StoreError::Connect {
            url: settings.url.to_string(),
            reason,
        };

        if backend == Backend::Sqlite {
            prepare_sqlite_file(&url).await.map_err(connect_err)?;
        }
        // One direct connection first: it reports the real cause (refused, auth, missing
        // file) where a pool would only say that it timed out.
        let options = AnyConnectOptions::from_str(&url).map_err(|e| StoreError::BadUrl {
            url: settings.url.to_string(),
            reason: e.to_string(),
        })?;
        let options = options.disable_statement_logging();
        match tokio::time::timeout(timeout, options.connect()).await {
            Err(_) => {
                return Err(connect_err(format!(
                    "no answer within {}s",
                    timeout.as_secs()
                )))
            }
            Ok(Err(e)) => return Err(connect_err(describe(&e))),
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(timeout)
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            backend,
            secrets: None,
            replica: uuid::Uuid::new_v4().simple().to_string().into(),
            changes: changes::Feed::new(backend, &url),
        })
    }

    /// Applies pending migrations of this backend's dialect; a no-op when up to date.
    #[tracing::instrument(skip_all, err)]
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    /// Round-trips a trivial query (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// A transaction that will write. On SQLite it takes the write lock up front (`BEGIN
    /// IMMEDIATE`): a deferred transaction that reads first and then writes fails at once with
    /// "database is locked" when another connection is writing, instead of waiting its turn.
    pub(crate) async fn write_tx(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// On SQLite, takes the database's process lock (`<file>.lock`, an exclusive advisory
    /// lock held as long as the returned file is open): a second `tidemark serve` on the same
    /// file refuses to start with [`StoreError::InUse`]. `None` on PostgreSQL and in-memory.
    pub fn lock_single_process(&self) -> Result<Option<std::fs::File>, StoreError> {
        if self.backend != Backend::Sqlite {
            return Ok(None);
        }
        let path = sqlite_path(&self.changes.url())
            .unwrap_or_default()
            .to_owned();
        if path.is_empty() || path == ":memory:" {
            return Ok(None);
        }
        let lock = format!("{path}.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(|e| StoreError::Connect {
                url: path.clone(),
                reason: format!("cannot open the lock file {lock}: {e}"),
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse { path, lock }),
            Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Connect {
                url: path,
                reason: format!("cannot lock {lock}: {e}"),
            }),
        }
    }

    /// The engine behind this store.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection (graceful shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// SQL for "the application named by `column` is in one of `projects`", appending the
/// project names to `params` as numbered placeholders (`$n`, numbered from `params.len() + 1`).
/// An empty list matches nothing. `prefix` is put before the application's name in `column`
/// (e.g. `application:` for audit targets).
pub fn sql_in_projects(
    column: &str,
    prefix: &str,
    projects: &[String],
    params: &mut Vec<String>,
) -> String {
    if projects.is_empty() {
        return "1 = 0".into();
    }
    let placeholders: Vec<String> = projects
        .iter()
        .map(|p| {
            params.push(p.clone());
            format!("${}", params.len())
        })
        .collect();
    let name = if prefix.is_empty() {
        "v.name".to_owned()
    } else {
        format!("'{}' || v.name", prefix.replace('\'', "''"))
    };
    format!(
        "{column} IN (SELECT {name} FROM applications v WHERE v.project IN ({}))",
        placeholders.join(", ")
    )
}

/// Checks the scheme and normalises the URL for the driver (`mode=rwc` for SQLite).
/// A readable name for an actor id when no user record names it: `system:tidemark` is
/// "Tidemark", `local:ann` is "ann", `token:ci` is "token ci".
pub fn actor_display_name(id: &str) -> String {
    match id.split_once(':') {
        Some(("system", _)) => "Tidemark".into(),
        Some(("token", name)) => format!("token {name}"),
        Some((_, name)) => name.into(),
        None => id.into(),
    }
}

fn parse_url(url: &DatabaseUrl) -> Result<(Backend, String), StoreError> {
    let raw = url.expose();
    let bad = |reason: &str| StoreError::BadUrl {
        url: url.to_string(),
        reason: reason.to_owned(),
    };
    let scheme = raw
        .split_once(':')
        .map(|(s, _)| s)
        .ok_or_else(|| bad("expected sqlite://PATH or postgres://USER@HOST:PORT/DB"))?;
    match scheme {
        "sqlite" => {
            let path = sqlite_path(raw).ok_or_else(|| bad("expected sqlite://PATH"))?;
            if path.is_empty() {
                return Err(bad("the SQLite file path is empty"));
            }
            let sep = if raw.contains('?') { '&' } else { '?' };
            let url = if raw.contains("mode=") {
                raw.to_owned()
            } else {
                format!("{raw}{sep}mode=rwc")
            };
            Ok((Backend::Sqlite, url))
        }
        "postgres" | "postgresql" => {
            let parsed = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
            if parsed.host_str().unwrap_or_default().is_empty() {
                return Err(bad("the PostgreSQL host is missing"));
            }
            Ok((Backend::Postgres, raw.to_owned()))
        }
        other => Err(bad(&format!(
            "unsupported scheme `{other}` (expected sqlite:// or postgres://)"
        ))),
    }
}

fn sqlite_path(raw: &str) -> Option<&str> {
    let rest = raw
        .strip_prefix("sqlite://")
        .or_else(|| raw.strip_prefix("sqlite:"))?;
    Some(rest.split('?').next().unwrap_or_default())
}

/// Creates the SQLite file's directory and switches the file to WAL once (WAL is persistent).
async fn prepare_sqlite_file(url: &str) -> Result<(), String> {
    let path = sqlite_path(url).unwrap_or_default();
    if path == ":memory:" {
        return Ok(());
    }
    if let Some(dir) = std::path::Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .disable_statement_logging();
    let conn = options.connect().await.map_err(|e| describe(&e))?;
    let _ = conn.close().await;
    Ok(())
}

/// A one-line, secret-free description of a connection error.
fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Tls(_) => "TLS handshake failed".to_owned(),
        sqlx::Error::Configuration(c) => c.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_selects_the_backend() {
        let (b, url) = parse_url(&DatabaseUrl::new("sqlite://data/x.db")).unwrap();
        assert_eq!(b, Backend::Sqlite);
        assert_eq!(url, "sqlite://data/x.db?mode=rwc");
        let (b, _) = parse_url(&DatabaseUrl::new("postgres://u@127.0.0.1:5432/t")).unwrap();
        assert_eq!(b, Backend::Postgres);
    }

    #[test]
    fn malformed_urls_are_explained_without_the_password() {
        for url in [
            "mysql://u:pw@h/db",
            "nonsense",
            "sqlite://",
            "postgres://u:pw@/db",
        ] {
            let err = parse_url(&DatabaseUrl::new(url)).unwrap_err().to_string();
            assert!(err.starts_with("malformed database.url"), "{err}");
            assert!(!err.contains(":pw@"), "{err}");
        }
    }
}
