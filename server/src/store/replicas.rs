//! Several replicas on one database: replica heartbeats, per-application leases and the owners
//! of running syncs. Every replica of one PostgreSQL runs the same loops; these rows decide which
//! one acts.
//!
//! - A replica registers with a random id at start and beats every [`HEARTBEAT_MS`]; one not
//!   seen for [`REPLICA_TIMEOUT_MS`] is gone.
//! - An application is reconciled only by the holder of its lease ([`Store::try_lease`]); the
//!   holder renews its leases with each heartbeat, so a lease is free at most
//!   [`REPLICA_TIMEOUT_MS`] after its owner died.
//! - A sync records its owner; its heartbeat moves with the owner's. Only syncs whose heartbeat
//!   stopped are closed as `interrupted` ([`Store::interrupt_orphaned_syncs`]).

use super::{Store, StoreError};
use crate::clock::Millis;

/// How often a replica says it is alive and renews its leases (milliseconds).
pub const HEARTBEAT_MS: i64 = 5_000;
/// A replica (and its leases and running syncs) not seen for this long is gone (milliseconds).
pub const REPLICA_TIMEOUT_MS: i64 = 15_000;

/// A replica as the database knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReplicaRecord {
    pub id: String,
    pub host: String,
    pub started_at: Millis,
    pub seen_at: Millis,
}

/// A running sync closed because its replica stopped beating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupted {
    pub sync: i64,
    pub application: String,
    pub owner: Option<String>,
}

impl Store {
    /// This process's replica id (random per start; recorded on the syncs it runs).
    pub fn replica_id(&self) -> &str {
        &self.replica
    }

    /// Records this replica as alive (insert or refresh).
    pub async fn register_replica(&self, host: &str, now: Millis) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO replicas (id, host, started_at, seen_at) VALUES ($1, $2, $3, $3)
             ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
        )
        .bind(self.replica_id())
        .bind(host)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// One heartbeat: this replica, its running syncs and its leases are alive until
    /// `now + REPLICA_TIMEOUT_MS`. Replicas silent for a day are forgotten.
    pub async fn heartbeat(&self, now: Millis) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE replicas SET seen_at = $1 WHERE id = $2")
            .bind(now)
            .bind(self.replica_id())
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE syncs SET heartbeat_at = $1 WHERE owner = $2 AND status = 'running'")
            .bind(now)
            .bind(self.replica_id())
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE app_leases SET expires_at = $1 WHERE owner = $2")
            .bind(now + REPLICA_TIMEOUT_MS)
            .bind(self.replica_id())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM replicas WHERE seen_at < $1")
            .bind(now - 24 * 3_600_000)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replicas seen within [`REPLICA_TIMEOUT_MS`] of `now`, oldest first.
    pub async fn live_replicas(&self, now: Millis) -> Result<Vec<ReplicaRecord>, StoreError> {
        use sqlx::Row;
        let rows = sqlx::query(
            "SELECT id, host, started_at, seen_at FROM replicas WHERE seen_at >= $1 ORDER BY started_at, id",
        )
        .bind(now - REPLICA_TIMEOUT_MS)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReplicaRecord {
                    id: r.try_get("id")?,
                    host: r.try_get("host")?,
                    started_at: r.try_get("started_at")?,
                    seen_at: r.try_get("seen_at")?,
                })
            })
            .collect()
    }

    /// Takes or keeps the lease of `app` for this replica: true when this replica holds it
    /// until `now + REPLICA_TIMEOUT_MS`; false while another live replica holds it.
    pub async fn try_lease(&self, app: &str, now: Millis) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO app_leases (application, owner, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (application) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
             WHERE app_leases.owner = excluded.owner OR app_leases.expires_at < $4",
        )
        .bind(app)
        .bind(self.replica_id())
        .bind(now + REPLICA_TIMEOUT_MS)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether this replica holds the lease of `app` at `now`.
    pub async fn holds_lease(&self, app: &str, now: Millis) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM app_leases WHERE application = $1 AND owner = $2 AND expires_at >= $3",
        )
        .bind(app)
        .bind(self.replica_id())
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// How many leases this replica holds, and how many live replicas share the applications:
    /// a replica takes a free lease only while it holds less than its fair share.
    pub async fn lease_share(&self, now: Millis) -> Result<(i64, i64, i64), StoreError> {
        let mine: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM app_leases l JOIN applications a ON a.name = l.application
             WHERE l.owner = $1 AND l.expires_at >= $2",
        )
        .bind(self.replica_id())
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        let replicas: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM replicas WHERE seen_at >= $1")
            .bind(now - REPLICA_TIMEOUT_MS)
            .fetch_one(&self.pool)
            .await?;
        let apps: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM applications")
            .fetch_one(&self.pool)
            .await?;
        Ok((mine, replicas.max(1), apps))
    }

    /// Applications whose lease expired (their owner is gone) or that have none: candidates for
    /// this replica to take over.
    pub async fn unleased_applications(&self, now: Millis) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT a.name FROM applications a LEFT JOIN app_leases l ON l.application = a.name
             WHERE l.application IS NULL OR l.expires_at < $1 ORDER BY a.name",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Gives up this replica's lease of `app` (it holds more than its share), so a replica with
    /// room takes it over.
    pub async fn release_lease(&self, app: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM app_leases WHERE application = $1 AND owner = $2")
            .bind(app)
            .bind(self.replica_id())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets every replica and lease (a single-process SQLite start: whoever held them is
    /// gone).
    pub async fn forget_replicas(&self) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM app_leases")
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM replicas")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Gives up this replica's leases (graceful shutdown), so others take over at once.
    pub async fn release_leases(&self) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM app_leases WHERE owner = $1")
            .bind(self.replica_id())
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM replicas WHERE id = $1")
            .bind(self.replica_id())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Closes as `interrupted` the running syncs of other replicas whose heartbeat is older than
    /// `stale_before` (or that never had an owner), and releases their requests' claims; returns
    /// them. A live replica's syncs are never touched.
    pub async fn interrupt_orphaned_syncs(
        &self,
        stale_before: Millis,
        now: Millis,
    ) -> Result<Vec<Interrupted>, StoreError> {
        use sqlx::Row;
        let rows = sqlx::query(
            "SELECT id, application, owner FROM syncs
             WHERE status = 'running' AND (owner IS NULL OR owner <> $1)
               AND COALESCE(heartbeat_at, started_at) < $2",
        )
        .bind(self.replica_id())
        .bind(stale_before)
        .fetch_all(&self.pool)
        .await?;
        let mut closed = Vec::new();
        for r in rows {
            let found = Interrupted {
                sync: r.try_get("id")?,
                application: r.try_get("application")?,
                owner: r.try_get("owner")?,
            };
            let mut tx = self.write_tx().await?;
            let done = sqlx::query(
                "UPDATE syncs SET status = 'interrupted', finished_at = $1,
                     message = 'the replica running this sync stopped; the application is compared again'
                 WHERE id = $2 AND status = 'running' AND COALESCE(heartbeat_at, started_at) < $3",
            )
            .bind(now)
            .bind(found.sync)
            .bind(stale_before)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                super::syncs::append_sync_outcome(
                    &mut tx,
                    found.sync,
                    super::SyncStatus::Interrupted,
                    &serde_json::json!([]),
                    Some("the replica running this sync stopped"),
                    now,
                )
                .await?;
                // An approved request this sync ran is free to be run again.
                sqlx::query(
                    "UPDATE sync_requests SET claimed_by = NULL
                     WHERE application = $1 AND status = 'approved' AND claimed_by IS NOT NULL AND claimed_by <> $2",
                )
                .bind(&found.application)
                .bind(self.replica_id())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                closed.push(found);
            }
        }
        Ok(closed)
    }

    /// The owners of syncs closed as interrupted (`None`: written before syncs had owners).
    pub async fn interrupted_sync_owners(&self) -> Result<Vec<Option<String>>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT owner FROM syncs WHERE status = 'interrupted' ORDER BY id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Claims approved request `id` for this replica to run: true for exactly one caller,
    /// however many replicas or clicks ask at once.
    pub async fn claim_approved(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sync_requests SET claimed_by = $1
             WHERE id = $2 AND status = 'approved' AND claimed_by IS NULL",
        )
        .bind(self.replica_id())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a claimed request back (the run could not start), so it can be run again.
    pub async fn release_claim(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sync_requests SET claimed_by = NULL WHERE id = $1 AND claimed_by = $2 AND status = 'approved'",
        )
        .bind(id)
        .bind(self.replica_id())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
