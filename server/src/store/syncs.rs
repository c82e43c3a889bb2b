//! The sync aggregate: write-ahead sync records (exactly one terminal state each) and the
//! inventory of applied objects.

use serde_json::Value;
use sqlx::Row;

use super::{Store, StoreError};
use crate::clock::Millis;

pub use app::model::SyncStatus;

/// A stored sync record.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SyncRecord {
    pub id: i64,
    pub application: String,
    pub revision: String,
    pub digest: String,
    pub cause: String,
    pub requested_by: String,
    pub status: SyncStatus,
    pub started_at: Millis,
    pub finished_at: Option<Millis>,
    pub results: Value,
    pub message: Option<String>,
}

/// What starts a sync.
#[derive(Debug, Clone)]
pub struct NewSync<'a> {
    pub application: &'a str,
    pub revision: &'a str,
    pub digest: &'a str,
    pub cause: &'a str,
    /// Who asked; recorded as `requested_by` and as the actor of the sync's audit row.
    pub actor: &'a super::Actor,
    /// The revision's signature verdict at deploy time (kept with the sync and in its audit
    /// row; later key rotation does not rewrite it).
    pub signature: Option<&'a app::model::SignatureVerdict>,
}

/// One object in an application's inventory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InventoryItem {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl Store {
    /// Writes a sync ahead of applying anything, with its audit row in the same transaction;
    /// returns its id. The sync is owned by this replica (its heartbeat keeps it alive). At most
    /// one sync of an application runs at a time, across replicas: a second one is refused with
    /// [`StoreError::SyncRunning`] and writes nothing.
    pub async fn begin_sync(&self, s: NewSync<'_>, now: Millis) -> Result<i64, StoreError> {
        let mut tx = self.write_tx().await?;
        let inserted: Result<i64, sqlx::Error> = sqlx::query_scalar(
            "INSERT INTO syncs (application, revision, digest, cause, requested_by, status, started_at, owner, heartbeat_at, signature)
             VALUES ($1, $2, $3, $4, $5, 'running', $6, $7, $6, $8) RETURNING id",
        )
        .bind(s.application)
        .bind(s.revision)
        .bind(s.digest)
        .bind(s.cause)
        .bind(&s.actor.id)
        .bind(now)
        .bind(self.replica_id())
        .bind(s.signature.and_then(|v| serde_json::to_string(v).ok()))
        .fetch_one(&mut *tx)
        .await;
        let id = match inserted {
            Ok(id) => id,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                drop(tx);
                let running: Option<i64> = sqlx::query_scalar(
                    "SELECT id FROM syncs WHERE application = $1 AND status = 'running'",
                )
                .bind(s.application)
                .fetch_optional(&self.pool)
                .await?;
                return Err(StoreError::SyncRunning {
                    application: s.application.to_owned(),
                    sync: running,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let event = s.actor.event(
            "sync",
            &format!("application:{}", s.application),
            "started",
            serde_json::json!({"sync": id, "revision": s.revision, "digest": s.digest, "cause": s.cause, "signature": s.signature}),
            now,
        );
        let seq = super::append_audit(&mut tx, &event).await?;
        sqlx::query("UPDATE syncs SET audit_seq = $1 WHERE id = $2")
            .bind(seq)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Closes a running sync and records its outcome in the audit ledger (linked to the row
    /// that recorded its start), in one transaction. Returns false (and changes nothing) when it
    /// is already closed: no sync ever gets two terminal records.
    pub async fn finish_sync(
        &self,
        id: i64,
        status: SyncStatus,
        results: &Value,
        message: Option<&str>,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE syncs SET status = $1, results = $2, message = $3, finished_at = $4
             WHERE id = $5 AND status = 'running'",
        )
        .bind(status.as_str())
        .bind(results.to_string())
        .bind(message)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        append_sync_outcome(&mut tx, id, status, results, message, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The newest syncs of an application.
    pub async fn syncs(&self, app: &str, limit: u32) -> Result<Vec<SyncRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, application, revision, digest, cause, requested_by, status, started_at, finished_at, results, message
             FROM syncs WHERE application = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(app)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let results: String = r.try_get("results")?;
                let status: String = r.try_get("status")?;
                Ok(SyncRecord {
                    id: r.try_get("id")?,
                    application: r.try_get("application")?,
                    revision: r.try_get("revision")?,
                    digest: r.try_get("digest")?,
                    cause: r.try_get("cause")?,
                    requested_by: r.try_get("requested_by")?,
                    status: status.parse().map_err(|_| StoreError::Corrupt {
                        column: "syncs.status",
                        value: status.clone(),
                    })?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                    results: serde_json::from_str(&results).unwrap_or(Value::Null),
                    message: r.try_get("message")?,
                })
            })
            .collect()
    }

    /// A sync's per-resource results (JSON) and who asked for it.
    pub async fn sync_results(&self, id: i64) -> Result<Option<(Value, String)>, StoreError> {
        let row = sqlx::query("SELECT results, requested_by FROM syncs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let results: String = r.try_get("results")?;
            Ok((
                serde_json::from_str(&results).unwrap_or(Value::Null),
                r.try_get("requested_by")?,
            ))
        })
        .transpose()
    }

    /// Adds applied objects to the application's inventory.
    pub async fn add_to_inventory(
        &self,
        app: &str,
        items: &[InventoryItem],
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        for i in items {
            sqlx::query(
                "INSERT INTO inventory (application, api_version, kind, namespace, name, applied_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (application, api_version, kind, namespace, name) DO UPDATE SET applied_at = excluded.applied_at",
            )
            .bind(app)
            .bind(&i.api_version)
            .bind(&i.kind)
            .bind(&i.namespace)
            .bind(&i.name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes pruned objects from the inventory.
    pub async fn remove_from_inventory(
        &self,
        app: &str,
        items: &[InventoryItem],
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        for i in items {
            sqlx::query(
                "DELETE FROM inventory WHERE application = $1 AND api_version = $2 AND kind = $3
                   AND namespace = $4 AND name = $5",
            )
            .bind(app)
            .bind(&i.api_version)
            .bind(&i.kind)
            .bind(&i.namespace)
            .bind(&i.name)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The applications whose inventory holds the object `kind` `namespace`/`name` of API
    /// group `group` (in any version), sorted.
    pub async fn inventory_holders(
        &self,
        group: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT application, api_version FROM inventory WHERE kind = $1 AND namespace = $2 AND name = $3
             ORDER BY application",
        )
        .bind(kind)
        .bind(namespace)
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        let mut apps = Vec::new();
        for r in &rows {
            let api_version: String = r.try_get("api_version")?;
            if api_version.rsplit_once('/').map_or("", |(g, _)| g) == group {
                apps.push(r.try_get("application")?);
            }
        }
        apps.dedup();
        Ok(apps)
    }

    /// What every active application on `cluster` declares now: `(application, namespace,
    /// snapshot)` for its current target — its pin, else its rendered target revision — as
    /// stored (Secret values may be sealed: only identities are read from it). Applications
    /// without a rendered target are left out.
    pub async fn cluster_targets(
        &self,
        cluster: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.name, a.namespace, s.content FROM applications a
               LEFT JOIN pins p ON p.application = a.name
               LEFT JOIN app_git_state g ON g.application = a.name
               JOIN snapshots s ON s.digest = COALESCE(p.digest, g.target_digest)
             WHERE a.retired_at IS NULL AND a.cluster = $1
             ORDER BY a.name",
        )
        .bind(cluster)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("name")?,
                    r.try_get("namespace")?,
                    r.try_get("content")?,
                ))
            })
            .collect()
    }

    /// Everything Tidemark has applied for the application and not pruned, sorted.
    pub async fn inventory(&self, app: &str) -> Result<Vec<InventoryItem>, StoreError> {
        let rows = sqlx::query(
            "SELECT api_version, kind, namespace, name FROM inventory WHERE application = $1
             ORDER BY api_version, kind, namespace, name",
        )
        .bind(app)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(InventoryItem {
                    api_version: r.try_get("api_version")?,
                    kind: r.try_get("kind")?,
                    namespace: r.try_get("namespace")?,
                    name: r.try_get("name")?,
                })
            })
            .collect()
    }
}

/// What a sync did, per result action (`applied`, `pruned`, `failed`, `conflict`, `kept`, …),
/// and the first failure's message: the `details` of its outcome row.
pub fn sync_outcome_counts(results: &Value, message: Option<&str>) -> (Value, Option<String>) {
    let mut counts = serde_json::Map::new();
    let mut first_error = None;
    for r in results.as_array().into_iter().flatten() {
        let action = r["action"].as_str().unwrap_or("unknown");
        let n = counts.get(action).and_then(Value::as_i64).unwrap_or(0);
        counts.insert(action.to_owned(), Value::from(n + 1));
        if first_error.is_none() && action == "failed" {
            first_error = Some(format!(
                "{}: {}",
                r["object"].as_str().unwrap_or("?"),
                r["message"].as_str().unwrap_or("failed")
            ));
        }
    }
    (
        Value::Object(counts),
        first_error.or_else(|| message.map(str::to_owned)),
    )
}

/// Appends the audit row of a sync's outcome (`succeeded`, `failed`, `interrupted`): the same
/// actor as its start row, with `started_seq` naming that row, the revision and cause, counts
/// per result and the first error. Messages never carry resource contents.
pub(super) async fn append_sync_outcome(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: i64,
    status: SyncStatus,
    results: &Value,
    message: Option<&str>,
    now: Millis,
) -> Result<(), StoreError> {
    let row = sqlx::query(
        "SELECT s.application, s.revision, s.digest, s.cause, s.audit_seq, s.signature,
                a.actor_id, a.actor_name, a.auth_method, a.source_ip
         FROM syncs s LEFT JOIN audit_log a ON a.seq = s.audit_seq
         WHERE s.id = $1",
    )
    .bind(id)
    .fetch_one(&mut **tx)
    .await?;
    let (counts, first_error) = sync_outcome_counts(results, message);
    let cause: String = row.try_get("cause")?;
    let event = super::AuditEvent {
        at: now,
        actor_id: row
            .try_get::<Option<String>, _>("actor_id")?
            .unwrap_or_else(|| "system".into()),
        actor_name: row
            .try_get::<Option<String>, _>("actor_name")?
            .unwrap_or_else(|| "Tidemark".into()),
        auth_method: row
            .try_get::<Option<String>, _>("auth_method")?
            .unwrap_or_else(|| "system".into()),
        action: "sync".into(),
        target: format!("application:{}", row.try_get::<String, _>("application")?),
        details: serde_json::json!({
            "sync": id,
            "started_seq": row.try_get::<Option<i64>, _>("audit_seq")?,
            "revision": row.try_get::<String, _>("revision")?,
            "digest": row.try_get::<String, _>("digest")?,
            "cause": cause,
            "counts": counts,
            "first_error": first_error,
            "signature": row
                .try_get::<Option<String>, _>("signature")?
                .and_then(|t| serde_json::from_str::<Value>(&t).ok()),
        }),
        source_ip: row
            .try_get::<Option<String>, _>("source_ip")?
            .unwrap_or_default(),
        outcome: status.as_str().into(),
    };
    super::append_audit(tx, &event).await?;
    Ok(())
}
