//! The status aggregate: each application's last comparison and its drift episodes.

use serde_json::Value;
use sqlx::Row;

use super::{Store, StoreError};
use crate::clock::Millis;

/// An application's last comparison with the cluster.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AppStatus {
    pub sync_status: String,
    pub health: String,
    pub health_message: String,
    pub target_sha: Option<String>,
    pub deployed_sha: Option<String>,
    pub resources: Value,
    pub compared_at: Millis,
}

/// An open drift episode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenDrift {
    pub id: i64,
    pub opened_at: Millis,
}

impl Store {
    /// Records the latest comparison.
    pub async fn save_status(&self, app: &str, s: &AppStatus) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO app_status (application, sync_status, health, health_message, target_sha, deployed_sha, resources, compared_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (application) DO UPDATE SET sync_status = excluded.sync_status, health = excluded.health,
                 health_message = excluded.health_message, target_sha = excluded.target_sha,
                 deployed_sha = excluded.deployed_sha, resources = excluded.resources, compared_at = excluded.compared_at",
        )
        .bind(app)
        .bind(&s.sync_status)
        .bind(&s.health)
        .bind(&s.health_message)
        .bind(&s.target_sha)
        .bind(&s.deployed_sha)
        .bind(s.resources.to_string())
        .bind(s.compared_at)
        .execute(&self.pool)
        .await?;
        self.publish(app).await
    }

    /// The latest comparison, if the application was ever compared.
    pub async fn app_status(&self, app: &str) -> Result<Option<AppStatus>, StoreError> {
        let row = sqlx::query(
            "SELECT sync_status, health, health_message, target_sha, deployed_sha, resources, compared_at
             FROM app_status WHERE application = $1",
        )
        .bind(app)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let resources: String = r.try_get("resources")?;
            Ok(AppStatus {
                sync_status: r.try_get("sync_status")?,
                health: r.try_get("health")?,
                health_message: r.try_get("health_message")?,
                target_sha: r.try_get("target_sha")?,
                deployed_sha: r.try_get("deployed_sha")?,
                resources: serde_json::from_str(&resources).unwrap_or(Value::Null),
                compared_at: r.try_get("compared_at")?,
            })
        })
        .transpose()
    }

    /// The revision and digest of the application's last successful sync.
    pub async fn last_successful_sync(
        &self,
        app: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT revision, digest FROM syncs WHERE application = $1 AND status = 'succeeded' ORDER BY id DESC LIMIT 1",
        )
        .bind(app)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get("revision")?, r.try_get("digest")?)))
            .transpose()
    }

    /// Marks the application's last successful sync known-good when it became healthy within
    /// `timeout_ms` of finishing. Returns the revision newly marked, if any.
    pub async fn mark_known_good(
        &self,
        app: &str,
        now: Millis,
        timeout_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT id, revision, finished_at, healthy_at FROM syncs
             WHERE application = $1 AND status = 'succeeded' ORDER BY id DESC LIMIT 1",
        )
        .bind(app)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let healthy_at: Option<i64> = r.try_get("healthy_at")?;
        let finished_at: Option<i64> = r.try_get("finished_at")?;
        if healthy_at.is_some() || finished_at.is_none_or(|f| now - f > timeout_ms) {
            return Ok(None);
        }
        let id: i64 = r.try_get("id")?;
        sqlx::query("UPDATE syncs SET healthy_at = $1 WHERE id = $2 AND healthy_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(Some(r.try_get("revision")?))
    }

    /// Known-good revisions (synced and then healthy), newest first: `(sync id, revision, when)`.
    pub async fn known_good(&self, app: &str) -> Result<Vec<(i64, String, Millis)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, revision, healthy_at FROM syncs WHERE application = $1 AND healthy_at IS NOT NULL ORDER BY id DESC",
        )
        .bind(app)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("revision")?,
                    r.try_get("healthy_at")?,
                ))
            })
            .collect()
    }

    /// The application's open drift episode, if any.
    pub async fn open_drift(&self, app: &str) -> Result<Option<OpenDrift>, StoreError> {
        let row = sqlx::query(
            "SELECT id, opened_at FROM drift_episodes WHERE application = $1 AND closed_at IS NULL",
        )
        .bind(app)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(OpenDrift {
                id: r.try_get("id")?,
                opened_at: r.try_get("opened_at")?,
            })
        })
        .transpose()
    }

    /// Opens a drift episode with the drifted resources at onset; `None` when one is already
    /// open (at most one per application, enforced by the schema).
    pub async fn open_drift_episode(
        &self,
        app: &str,
        changes: &Value,
        now: Millis,
    ) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO drift_episodes (application, opened_at, changes) VALUES ($1, $2, $3)
             ON CONFLICT (application) WHERE closed_at IS NULL DO NOTHING RETURNING id",
        )
        .bind(app)
        .bind(now)
        .bind(changes.to_string())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Closes an open episode (no-op when already closed).
    pub async fn close_drift_episode(
        &self,
        id: i64,
        reason: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE drift_episodes SET closed_at = $1, close_reason = $2 WHERE id = $3 AND closed_at IS NULL",
        )
        .bind(now)
        .bind(reason)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Store {
    /// Every live application's state for `/metrics`.
    pub async fn app_gauges(&self) -> Result<Vec<crate::telemetry::AppGauges>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.name, a.project, s.sync_status, s.health,
                (SELECT MIN(d.opened_at) FROM drift_episodes d
                  WHERE d.application = a.name AND d.closed_at IS NULL) AS drift_since,
                (SELECT COUNT(*) FROM sync_requests r
                  WHERE r.application = a.name AND r.status = 'pending') AS pending,
                (SELECT COUNT(*) FROM pins p WHERE p.application = a.name) AS pinned,
                (SELECT MAX(y.finished_at) FROM syncs y
                  WHERE y.application = a.name AND y.status = 'succeeded') AS last_synced_at
             FROM applications a LEFT JOIN app_status s ON s.application = a.name
             WHERE a.retired_at IS NULL ORDER BY a.name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(crate::telemetry::AppGauges {
                    application: r.try_get("name")?,
                    project: r.try_get("project")?,
                    sync_status: r
                        .try_get::<Option<String>, _>("sync_status")?
                        .unwrap_or_else(|| "Unknown".into()),
                    health: r
                        .try_get::<Option<String>, _>("health")?
                        .unwrap_or_else(|| "Unknown".into()),
                    drift_since: r.try_get("drift_since")?,
                    pending_requests: r.try_get("pending")?,
                    pinned: r.try_get::<i64, _>("pinned")? > 0,
                    last_synced_at: r.try_get("last_synced_at")?,
                })
            })
            .collect()
    }
}
