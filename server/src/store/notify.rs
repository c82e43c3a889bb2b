//! Timeline events and the notification outbox, written together; deliveries per target.

use sqlx::Row;

use super::{Store, StoreError};
use crate::clock::Millis;
use crate::domain::triggers::{safe_detail, trigger_of, Trigger};

type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// An outbox event not yet given its deliveries.
#[derive(Debug, Clone)]
pub struct NotificationEvent {
    pub id: i64,
    pub trigger: String,
    pub application: String,
    pub project: String,
}

/// A delivery due for an attempt, with its event.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub target: String,
    pub attempts: i64,
    pub next_attempt_at: Millis,
    pub idempotency_key: String,
    pub trigger: String,
    pub application: String,
    pub project: String,
    pub timeline_id: i64,
    pub occurred_at: Millis,
    pub message: String,
    pub detail: serde_json::Value,
}

/// A delivery as the admin page shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeliveryRecord {
    pub id: i64,
    pub target: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Millis,
    pub last_attempt_at: Option<Millis>,
    pub last_error: Option<String>,
    pub delivered_at: Option<Millis>,
    pub trigger: String,
    pub application: String,
    pub timeline_id: i64,
    pub occurred_at: Millis,
    pub message: String,
}

/// Appends a timeline row and, when it fires a trigger, its outbox row, in `tx`.
pub(super) async fn insert_event(
    tx: &mut Tx,
    app: &str,
    kind: &str,
    message: &str,
    detail: &serde_json::Value,
    now: Millis,
) -> Result<i64, StoreError> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO timeline (application, kind, occurred_at, message, detail)
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(app)
    .bind(kind)
    .bind(now)
    .bind(message)
    .bind(detail.to_string())
    .fetch_one(&mut **tx)
    .await?;
    if let Some(trigger) = trigger_of(kind, detail) {
        enqueue(tx, trigger, app, id, message, detail, now).await?;
    }
    Ok(id)
}

async fn enqueue(
    tx: &mut Tx,
    trigger: Trigger,
    app: &str,
    timeline_id: i64,
    message: &str,
    detail: &serde_json::Value,
    now: Millis,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO notification_events
             (idempotency_key, trigger_name, application, project, timeline_id, occurred_at, message, detail)
         SELECT $1, $2, name, project, $3, $4, $5, $6 FROM applications WHERE name = $7",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(trigger.as_str())
    .bind(timeline_id)
    .bind(now)
    .bind(message)
    .bind(safe_detail(detail).to_string())
    .bind(app)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Appends an event to an application's timeline; a notifiable one (see
    /// [`crate::domain::triggers::trigger_of`]) gets its outbox row in the same transaction.
    pub async fn add_timeline(
        &self,
        app: &str,
        kind: &str,
        message: &str,
        detail: &serde_json::Value,
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        insert_event(&mut tx, app, kind, message, detail, now).await?;
        super::changes::notify_in(&mut tx, self.backend, app).await?;
        tx.commit().await?;
        self.changes.committed(app);
        Ok(())
    }

    /// Adds a timeline event unless `app`'s newest event of `kind` carries the same values of
    /// `keys` in its detail: a condition every loop finds again is said once. Returns whether
    /// it was added.
    pub async fn add_timeline_once(
        &self,
        app: &str,
        kind: &str,
        message: &str,
        detail: &serde_json::Value,
        keys: &[&str],
        now: Millis,
    ) -> Result<bool, StoreError> {
        let last = self.last_timeline_detail(app, kind).await?;
        if last.is_some_and(|l| keys.iter().all(|k| l[*k] == detail[*k])) {
            return Ok(false);
        }
        self.add_timeline(app, kind, message, detail, now).await?;
        Ok(true)
    }

    /// The detail of `app`'s newest timeline event of `kind`, if any.
    pub async fn last_timeline_detail(
        &self,
        app: &str,
        kind: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let detail: Option<String> = sqlx::query_scalar(
            "SELECT detail FROM timeline WHERE application = $1 AND kind = $2
             ORDER BY occurred_at DESC, id DESC LIMIT 1",
        )
        .bind(app)
        .bind(kind)
        .fetch_optional(&self.pool)
        .await?;
        Ok(detail.and_then(|d| serde_json::from_str(&d).ok()))
    }

    /// Drift episodes open longer than `after_ms` get one `drift_stale` event each.
    pub async fn fire_stale_drift(&self, now: Millis, after_ms: i64) -> Result<usize, StoreError> {
        let rows = sqlx::query(
            "SELECT id, application, opened_at FROM drift_episodes
             WHERE closed_at IS NULL AND stale_notified_at IS NULL AND opened_at <= $1",
        )
        .bind(now.saturating_sub(after_ms))
        .fetch_all(&self.pool)
        .await?;
        let mut fired = 0;
        for r in rows {
            let (id, app, opened_at): (i64, String, i64) = (
                r.try_get("id")?,
                r.try_get("application")?,
                r.try_get("opened_at")?,
            );
            let mut tx = self.write_tx().await?;
            let claimed = sqlx::query(
                "UPDATE drift_episodes SET stale_notified_at = $1
                 WHERE id = $2 AND closed_at IS NULL AND stale_notified_at IS NULL",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed == 1 {
                let message = format!(
                    "drift still open after {} (since {})",
                    crate::clock::duration_text(now - opened_at),
                    crate::clock::rfc3339(opened_at)
                );
                let detail = serde_json::json!({"episode": id, "opened_at": opened_at});
                insert_event(&mut tx, &app, "drift_stale", &message, &detail, now).await?;
                fired += 1;
            }
            tx.commit().await?;
            self.publish(&app).await?;
        }
        Ok(fired)
    }

    /// Pins older than `after_ms` get one `pinned_long` event each (a new pin starts over).
    pub async fn fire_long_pins(&self, now: Millis, after_ms: i64) -> Result<usize, StoreError> {
        let rows = sqlx::query(
            "SELECT application, revision, pinned_name, pinned_at, reason FROM pins
             WHERE long_notified_at IS NULL AND pinned_at <= $1",
        )
        .bind(now.saturating_sub(after_ms))
        .fetch_all(&self.pool)
        .await?;
        let mut fired = 0;
        for r in rows {
            let app: String = r.try_get("application")?;
            let revision: String = r.try_get("revision")?;
            let pinned_at: i64 = r.try_get("pinned_at")?;
            let (by, reason): (String, String) = (r.try_get("pinned_name")?, r.try_get("reason")?);
            let mut tx = self.write_tx().await?;
            let claimed = sqlx::query(
                "UPDATE pins SET long_notified_at = $1
                 WHERE application = $2 AND pinned_at = $3 AND long_notified_at IS NULL",
            )
            .bind(now)
            .bind(&app)
            .bind(pinned_at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed == 1 {
                let short = app::model::short_revision(&revision);
                let message = format!(
                    "pinned to {short} for {} by {by} ({reason}); new revisions are not deployed until someone unpins",
                    crate::clock::duration_text(now - pinned_at)
                );
                let detail = serde_json::json!({"revision": revision, "opened_at": pinned_at});
                insert_event(&mut tx, &app, "pinned_long", &message, &detail, now).await?;
                fired += 1;
            }
            tx.commit().await?;
            self.publish(&app).await?;
        }
        Ok(fired)
    }

    /// Outbox events that have no deliveries yet, oldest first.
    pub async fn unrouted_notifications(
        &self,
        limit: i64,
    ) -> Result<Vec<NotificationEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, trigger_name, application, project FROM notification_events
             WHERE routed_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NotificationEvent {
                    id: r.try_get("id")?,
                    trigger: r.try_get("trigger_name")?,
                    application: r.try_get("application")?,
                    project: r.try_get("project")?,
                })
            })
            .collect()
    }

    /// Creates the event's deliveries (once per target, whoever routes it) and marks it routed.
    pub async fn route_notification(
        &self,
        event: i64,
        targets: &[String],
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        for target in targets {
            sqlx::query(
                "INSERT INTO notification_deliveries (event_id, target, status, attempts, next_attempt_at)
                 VALUES ($1, $2, 'pending', 0, $3) ON CONFLICT (event_id, target) DO NOTHING",
            )
            .bind(event)
            .bind(target)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE notification_events SET routed_at = $1 WHERE id = $2")
            .bind(now)
            .bind(event)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Pending deliveries to `target` whose next attempt is due, oldest event first.
    pub async fn due_deliveries(
        &self,
        target: &str,
        now: Millis,
        limit: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, d.target, d.attempts, d.next_attempt_at, e.idempotency_key, e.trigger_name,
                    e.application, e.project, e.timeline_id, e.occurred_at, e.message, e.detail
             FROM notification_deliveries d JOIN notification_events e ON e.id = d.event_id
             WHERE d.status = 'pending' AND d.target = $1 AND d.next_attempt_at <= $2
             ORDER BY d.event_id, d.id LIMIT $3",
        )
        .bind(target)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let detail: String = r.try_get("detail")?;
                Ok(Delivery {
                    id: r.try_get("id")?,
                    target: r.try_get("target")?,
                    attempts: r.try_get("attempts")?,
                    next_attempt_at: r.try_get("next_attempt_at")?,
                    idempotency_key: r.try_get("idempotency_key")?,
                    trigger: r.try_get("trigger_name")?,
                    application: r.try_get("application")?,
                    project: r.try_get("project")?,
                    timeline_id: r.try_get("timeline_id")?,
                    occurred_at: r.try_get("occurred_at")?,
                    message: r.try_get("message")?,
                    detail: serde_json::from_str(&detail).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Gives up the pending deliveries of targets not in `configured` (removed from the config).
    pub async fn abandon_unconfigured(
        &self,
        configured: &[&str],
        now: Millis,
    ) -> Result<u64, StoreError> {
        let placeholders: Vec<String> = (0..configured.len())
            .map(|i| format!("${}", i + 2))
            .collect();
        let filter = if configured.is_empty() {
            String::new()
        } else {
            format!(" AND target NOT IN ({})", placeholders.join(", "))
        };
        let sql = format!(
            "UPDATE notification_deliveries SET status = 'failed',
                 last_error = 'the target is no longer configured', last_attempt_at = $1
             WHERE status = 'pending'{filter}"
        );
        let mut query = sqlx::query(&sql).bind(now);
        for name in configured {
            query = query.bind(*name);
        }
        Ok(query.execute(&self.pool).await?.rows_affected())
    }

    /// Takes a due delivery for one attempt by moving its next attempt to `lease_until`; false
    /// when another sender took it first.
    pub async fn claim_delivery(
        &self,
        id: i64,
        expected_next: Millis,
        lease_until: Millis,
    ) -> Result<bool, StoreError> {
        let claimed = sqlx::query(
            "UPDATE notification_deliveries SET next_attempt_at = $1
             WHERE id = $2 AND status = 'pending' AND next_attempt_at = $3",
        )
        .bind(lease_until)
        .bind(id)
        .bind(expected_next)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(claimed == 1)
    }

    pub async fn delivery_succeeded(
        &self,
        id: i64,
        attempts: i64,
        now: Millis,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE notification_deliveries SET status = 'delivered', attempts = $1,
                 last_attempt_at = $2, delivered_at = $2 WHERE id = $3",
        )
        .bind(attempts)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a failed attempt: retried at `retry`, or given up (`failed`) when `None`.
    pub async fn delivery_failed(
        &self,
        id: i64,
        attempts: i64,
        error: &str,
        retry: Option<Millis>,
        now: Millis,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE notification_deliveries SET status = $1, attempts = $2, last_attempt_at = $3,
                 last_error = $4, next_attempt_at = $5 WHERE id = $6",
        )
        .bind(if retry.is_some() { "pending" } else { "failed" })
        .bind(attempts)
        .bind(now)
        .bind(error)
        .bind(retry.unwrap_or(now))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes finished deliveries (delivered or given up) last touched before `before`, and the
    /// events left without deliveries; pending ones are kept whatever their age.
    pub async fn purge_notifications(&self, before: Millis) -> Result<u64, StoreError> {
        let mut tx = self.write_tx().await?;
        let deliveries = sqlx::query(
            "DELETE FROM notification_deliveries
             WHERE status <> 'pending' AND COALESCE(delivered_at, last_attempt_at, 0) < $1",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "DELETE FROM notification_events
             WHERE routed_at IS NOT NULL AND routed_at < $1
               AND NOT EXISTS (SELECT 1 FROM notification_deliveries d WHERE d.event_id = notification_events.id)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(deliveries)
    }

    /// How many deliveries are pending, failed (given up) and delivered.
    pub async fn delivery_counts(&self) -> Result<(i64, i64, i64), StoreError> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM notification_deliveries GROUP BY status",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut counts = (0, 0, 0);
        for r in rows {
            let (status, n): (String, i64) = (r.try_get("status")?, r.try_get("n")?);
            match status.as_str() {
                "pending" => counts.0 = n,
                "failed" => counts.1 = n,
                _ => counts.2 = n,
            }
        }
        Ok(counts)
    }

    /// The latest deliveries (newest event first), optionally only those not delivered.
    pub async fn recent_deliveries(
        &self,
        limit: i64,
        undelivered_only: bool,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, d.target, d.status, d.attempts, d.next_attempt_at, d.last_attempt_at,
                    d.last_error, d.delivered_at, e.trigger_name, e.application, e.timeline_id,
                    e.occurred_at, e.message
             FROM notification_deliveries d JOIN notification_events e ON e.id = d.event_id
             WHERE ($1 = 0 OR d.status <> 'delivered')
             ORDER BY d.id DESC LIMIT $2",
        )
        .bind(i64::from(undelivered_only))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeliveryRecord {
                    id: r.try_get("id")?,
                    target: r.try_get("target")?,
                    status: r.try_get("status")?,
                    attempts: r.try_get("attempts")?,
                    next_attempt_at: r.try_get("next_attempt_at")?,
                    last_attempt_at: r.try_get("last_attempt_at")?,
                    last_error: r.try_get("last_error")?,
                    delivered_at: r.try_get("delivered_at")?,
                    trigger: r.try_get("trigger_name")?,
                    application: r.try_get("application")?,
                    timeline_id: r.try_get("timeline_id")?,
                    occurred_at: r.try_get("occurred_at")?,
                    message: r.try_get("message")?,
                })
            })
            .collect()
    }
}

impl Store {
    /// Records that Kubernetes Event `event_uid` (with its `count`) is on `app`'s timeline (at
    /// `now`, the Event's own time; the row's `seen_at` is the wall clock) and,
    /// only when it is news (an unknown uid or a higher count), adds the timeline entry — in one
    /// transaction, so two replicas watching the same event write it once. Returns whether the
    /// entry was added.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_kube_event(
        &self,
        app: &str,
        event_uid: &str,
        count: i64,
        kind: &str,
        message: &str,
        detail: &serde_json::Value,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let changed = sqlx::query(
            "INSERT INTO kube_events (application, event_uid, count, seen_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (application, event_uid) DO UPDATE SET count = excluded.count, seen_at = excluded.seen_at
             WHERE kube_events.count < excluded.count",
        )
        .bind(app)
        .bind(event_uid)
        .bind(count)
        .bind(crate::clock::now())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(false);
        }
        insert_event(&mut tx, app, kind, message, detail, now).await?;
        super::changes::notify_in(&mut tx, self.backend, app).await?;
        tx.commit().await?;
        self.changes.committed(app);
        Ok(true)
    }

    /// Forgets recorded Kubernetes Events last seen before `before` (the timeline keeps them).
    pub async fn forget_kube_events(&self, before: Millis) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM kube_events WHERE seen_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}
