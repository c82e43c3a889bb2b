//! Change events: which application's timeline or status just changed, for live pages on every
//! replica. On PostgreSQL a write sends `NOTIFY tidemark_changes, '<application>'` (inside the
//! writing transaction, so it is delivered on commit) and every replica LISTENs and re-broadcasts
//! to its open pages; on SQLite (one process) the broadcast is in-process. Pages re-read what
//! they show on an event, so a lost event (a lagging receiver, a dropped listener connection)
//! costs only freshness: receivers hear [`Change::All`] then.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::{Backend, Store, StoreError};

/// The PostgreSQL channel carrying application names.
pub const CHANNEL: &str = "tidemark_changes";

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// This application's timeline, status or requests.
    App(Arc<str>),
    /// A new target of this application was rendered (the reconciler wants to know).
    Target(Arc<str>),
    /// Unknown: events may have been lost; re-read everything.
    All,
}

impl Change {
    /// Whether a page showing `app` should re-read.
    pub fn concerns(&self, app: &str) -> bool {
        match self {
            Change::App(a) | Change::Target(a) => &**a == app,
            Change::All => true,
        }
    }

    /// The NOTIFY payload: `a <app>` or `t <app>`.
    fn payload(&self) -> String {
        match self {
            Change::App(a) => format!("a {a}"),
            Change::Target(a) => format!("t {a}"),
            Change::All => "*".to_owned(),
        }
    }

    fn parse(payload: &str) -> Change {
        match payload.split_once(' ') {
            Some(("a", app)) => Change::App(app.into()),
            Some(("t", app)) => Change::Target(app.into()),
            _ => Change::All,
        }
    }
}

/// The in-process side of the feed; cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct Feed {
    tx: broadcast::Sender<Change>,
    backend: Backend,
    /// The database URL, for the LISTEN connection (PostgreSQL only; never logged).
    url: Arc<str>,
}

impl Feed {
    /// On SQLite, every store of one file in this process shares one broadcast (a CLI-less
    /// process has one store, but tests and tools open several).
    pub(super) fn new(backend: Backend, url: &str) -> Self {
        static SQLITE_FEEDS: std::sync::Mutex<
            std::collections::BTreeMap<String, broadcast::Sender<Change>>,
        > = std::sync::Mutex::new(std::collections::BTreeMap::new());
        let tx = if backend == Backend::Sqlite {
            let mut feeds = SQLITE_FEEDS.lock().unwrap_or_else(|p| p.into_inner());
            feeds.retain(|_, tx| tx.receiver_count() > 0 || tx.strong_count() > 1);
            feeds
                .entry(url.to_owned())
                .or_insert_with(|| broadcast::channel(1024).0)
                .clone()
        } else {
            broadcast::channel(1024).0
        };
        Self {
            tx,
            backend,
            url: url.into(),
        }
    }

    pub(super) fn url(&self) -> String {
        self.url.to_string()
    }

    /// After a committed write on SQLite, tells this process's pages (PostgreSQL's NOTIFY did).
    pub(super) fn committed(&self, app: &str) {
        if self.backend == Backend::Sqlite {
            let _ = self.tx.send(Change::App(app.into()));
        }
    }
}

/// Queues the NOTIFY of `app` in a PostgreSQL transaction (delivered when it commits); a no-op
/// on SQLite, where [`Feed::committed`] follows the commit.
pub(super) async fn notify_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    app: &str,
) -> Result<(), sqlx::Error> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(Change::App(app.into()).payload())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

impl Store {
    /// Subscribes to change events (see the module docs).
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.tx.subscribe()
    }

    /// Announces that `app` changed, outside any transaction.
    pub async fn publish(&self, app: &str) -> Result<(), StoreError> {
        self.send(Change::App(app.into())).await
    }

    /// Announces that a new target of `app` was rendered: the replica reconciling it compares
    /// again at once.
    pub async fn publish_target(&self, app: &str) -> Result<(), StoreError> {
        self.send(Change::Target(app.into())).await
    }

    async fn send(&self, change: Change) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => {
                let _ = self.changes.tx.send(change);
            }
            Backend::Postgres => {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(change.payload())
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// On PostgreSQL, LISTENs on [`CHANNEL`] and re-broadcasts to this process, reconnecting
    /// after a failure (each reconnect broadcasts [`Change::All`]: events may have been lost).
    /// `None` on SQLite, where nothing needs listening.
    pub fn spawn_change_listener(&self) -> Option<tokio::task::JoinHandle<()>> {
        if self.backend != Backend::Postgres {
            return None;
        }
        let feed = self.changes.clone();
        Some(tokio::spawn(async move {
            loop {
                match sqlx::postgres::PgListener::connect(&feed.url).await {
                    Ok(mut listener) => {
                        if let Err(e) = listener.listen(CHANNEL).await {
                            tracing::warn!(error = %e, "cannot LISTEN for changes; retrying");
                        } else {
                            let _ = feed.tx.send(Change::All);
                            loop {
                                match listener.try_recv().await {
                                    Ok(Some(n)) => {
                                        let _ = feed.tx.send(Change::parse(n.payload()));
                                    }
                                    // The connection dropped and was re-established: events
                                    // in between are lost.
                                    Ok(None) => {
                                        let _ = feed.tx.send(Change::All);
                                    }
                                    Err(e) => {
                                        tracing::warn!(error = %e, "change listener failed; reconnecting");
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot connect the change listener; retrying")
                    }
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        }))
    }
}
