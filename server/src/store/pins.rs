//! Pins and rollback targets: the known-good revisions (synced and healthy) with their stored
//! snapshots, and the pin a rollback sets.

use sqlx::Row;

use super::{append_audit, AuditEvent, Store, StoreError};
use crate::clock::Millis;

/// An application held at a revision by a rollback.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Pin {
    pub revision: String,
    pub digest: String,
    pub pinned_by: String,
    pub pinned_name: String,
    pub pinned_at: Millis,
    pub reason: String,
}

/// A revision that synced and became healthy: a rollback target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct KnownGood {
    pub sync_id: i64,
    pub revision: String,
    pub digest: String,
    pub deployed_at: Millis,
    pub healthy_at: Millis,
    pub deployed_by: String,
    pub title: Option<String>,
    pub author_name: Option<String>,
}

impl Store {
    /// Known-good revisions, newest first, one entry per (revision, digest).
    pub async fn known_good_revisions(&self, app: &str) -> Result<Vec<KnownGood>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.id, s.revision, s.digest, s.finished_at, s.healthy_at, s.requested_by, c.title, c.author_name
             FROM syncs s
             JOIN applications a ON a.name = s.application
             LEFT JOIN commits c ON c.repository = a.repository AND c.sha = s.revision
             WHERE s.application = $1 AND s.healthy_at IS NOT NULL
             ORDER BY s.id DESC",
        )
        .bind(app)
        .fetch_all(&self.pool)
        .await?;
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for r in &rows {
            let (revision, digest): (String, String) =
                (r.try_get("revision")?, r.try_get("digest")?);
            if !seen.insert((revision.clone(), digest.clone())) {
                continue;
            }
            out.push(KnownGood {
                sync_id: r.try_get("id")?,
                revision,
                digest,
                deployed_at: r
                    .try_get::<Option<i64>, _>("finished_at")?
                    .unwrap_or_default(),
                healthy_at: r.try_get("healthy_at")?,
                deployed_by: r.try_get("requested_by")?,
                title: r.try_get("title")?,
                author_name: r.try_get("author_name")?,
            });
        }
        Ok(out)
    }

    /// A stored snapshot's canonical JSON by digest.
    pub async fn snapshot(&self, digest: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT content FROM snapshots WHERE digest = $1")
                .bind(digest)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn pin_of(&self, app: &str) -> Result<Option<Pin>, StoreError> {
        let row = sqlx::query(
            "SELECT revision, digest, pinned_by, pinned_name, pinned_at, reason FROM pins WHERE application = $1",
        )
        .bind(app)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Pin {
                revision: r.try_get("revision")?,
                digest: r.try_get("digest")?,
                pinned_by: r.try_get("pinned_by")?,
                pinned_name: r.try_get("pinned_name")?,
                pinned_at: r.try_get("pinned_at")?,
                reason: r.try_get("reason")?,
            })
        })
        .transpose()
    }

    /// Pins the application (replacing an earlier pin) with its audit row, in one transaction;
    /// the application's open sync request, if any, is superseded.
    pub async fn pin(&self, app: &str, pin: &Pin, audit: &AuditEvent) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO pins (application, revision, digest, pinned_by, pinned_name, pinned_at, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (application) DO UPDATE SET revision = excluded.revision, digest = excluded.digest,
                 pinned_by = excluded.pinned_by, pinned_name = excluded.pinned_name,
                 pinned_at = excluded.pinned_at, reason = excluded.reason, long_notified_at = NULL",
        )
        .bind(app)
        .bind(&pin.revision)
        .bind(&pin.digest)
        .bind(&pin.pinned_by)
        .bind(&pin.pinned_name)
        .bind(pin.pinned_at)
        .bind(&pin.reason)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE sync_requests SET status = 'superseded', decided_at = $1,
                 reason = 'the application was rolled back and pinned'
             WHERE application = $2 AND status IN ('pending', 'approved') AND cause <> 'rollback'",
        )
        .bind(pin.pinned_at)
        .bind(app)
        .execute(&mut *tx)
        .await?;
        append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes the pin with its audit row; false (nothing written) when there was none.
    pub async fn unpin(&self, app: &str, audit: &AuditEvent) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("DELETE FROM pins WHERE application = $1")
            .bind(app)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }
}
