//! The identity aggregate: users, browser sessions, API tokens, failed sign-ins, and the
//! append side of the audit ledger (a hash chain written in the caller's transaction).

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Store, StoreError};
use crate::clock::Millis;

/// A person known to Tidemark (local account or OIDC subject).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    pub method: String,
    pub password_hash: Option<String>,
}

/// A live (not revoked) API token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenRecord {
    pub name: String,
    pub role: String,
    pub project: Option<String>,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
}

/// One audit ledger row before it is chained.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEvent {
    pub at: Millis,
    pub actor_id: String,
    pub actor_name: String,
    pub auth_method: String,
    pub action: String,
    pub target: String,
    /// JSON object; never holds secrets (callers pass only names, reasons and outcomes).
    pub details: serde_json::Value,
    pub source_ip: String,
    pub outcome: String,
}

/// A stored audit row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRow {
    pub seq: i64,
    #[serde(flatten)]
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

/// The genesis `prev_hash` of the ledger.
pub const AUDIT_GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `SHA-256(prev_hash ‖ canonical row)`, hex. The canonical row is the JSON of the sequence
/// number and the event's fields in declaration order (details re-serialised with sorted keys).
pub fn audit_hash(prev_hash: &str, seq: i64, e: &AuditEvent) -> String {
    let canonical = serde_json::json!([
        seq,
        e.at,
        e.actor_id,
        e.actor_name,
        e.auth_method,
        e.action,
        e.target,
        e.details,
        e.source_ip,
        e.outcome
    ]);
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical.to_string().as_bytes());
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn user_from_row(r: &sqlx::any::AnyRow) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        display_name: r.try_get("display_name")?,
        email: r.try_get("email")?,
        method: r.try_get("method")?,
        password_hash: r.try_get("password_hash")?,
    })
}

impl Store {
    /// Creates or replaces a local account's display name and password hash.
    pub async fn upsert_local_user(
        &self,
        username: &str,
        display_name: &str,
        password_hash: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (id, username, display_name, method, password_hash, created_at)
             VALUES ($1, $2, $3, 'local', $4, $5)
             ON CONFLICT (id) DO UPDATE SET display_name = excluded.display_name,
                 password_hash = excluded.password_hash",
        )
        .bind(format!("local:{username}"))
        .bind(username)
        .bind(display_name)
        .bind(password_hash)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records an OIDC subject's latest profile and sign-in time.
    pub async fn upsert_oidc_user(&self, u: &UserRecord, now: Millis) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (id, username, display_name, email, method, created_at, last_login_at)
             VALUES ($1, $2, $3, $4, 'oidc', $5, $5)
             ON CONFLICT (id) DO UPDATE SET username = excluded.username,
                 display_name = excluded.display_name, email = excluded.email,
                 last_login_at = excluded.last_login_at",
        )
        .bind(&u.id)
        .bind(&u.username)
        .bind(&u.display_name)
        .bind(&u.email)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A local account by name.
    pub async fn local_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE id = $1")
            .bind(format!("local:{username}"))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Any user by id.
    pub async fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    pub async fn touch_login(&self, user_id: &str, now: Millis) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET last_login_at = $1 WHERE id = $2")
            .bind(now)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- sessions -------------------------------------------------------------------------

    /// Inserts a new session; false when the id is taken.
    pub async fn session_create(
        &self,
        id: &str,
        data: &str,
        expires_at: Millis,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO sessions (id, data, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(data)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn session_save(
        &self,
        id: &str,
        data: &str,
        expires_at: Millis,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id, data, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at",
        )
        .bind(id)
        .bind(data)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session's data and expiry, unless it expired.
    pub async fn session_load(
        &self,
        id: &str,
        now: Millis,
    ) -> Result<Option<(String, Millis)>, StoreError> {
        let row =
            sqlx::query("SELECT data, expires_at FROM sessions WHERE id = $1 AND expires_at > $2")
                .bind(id)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            Some(r) => Some((r.try_get("data")?, r.try_get("expires_at")?)),
            None => None,
        })
    }

    pub async fn session_delete(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes expired sessions and sign-in failures older than `failures_before`.
    pub async fn purge_identity(
        &self,
        now: Millis,
        failures_before: Millis,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM login_failures WHERE at < $1")
            .bind(failures_before)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- API tokens -----------------------------------------------------------------------

    /// Stores a new token; `Ok(false)` when a live token already has this name.
    pub async fn token_create(
        &self,
        name: &str,
        token_hash: &str,
        role: &str,
        project: Option<&str>,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO api_tokens (name, token_hash, role, project, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(token_hash)
        .bind(role)
        .bind(project)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The live token with this hash, marking it used.
    pub async fn token_use(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT name, role, project, created_at, last_used_at FROM api_tokens
             WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let token = TokenRecord {
            name: r.try_get("name")?,
            role: r.try_get("role")?,
            project: r.try_get("project")?,
            created_at: r.try_get("created_at")?,
            last_used_at: r.try_get("last_used_at")?,
        };
        // At most one write a minute per token.
        if token.last_used_at.is_none_or(|t| now - t > 60_000) {
            sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE token_hash = $2")
                .bind(now)
                .bind(token_hash)
                .execute(&self.pool)
                .await?;
        }
        Ok(Some(token))
    }

    /// Revokes the live token of this name; false when there is none.
    pub async fn token_revoke(&self, name: &str, now: Millis) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, role, project, created_at, last_used_at FROM api_tokens
             WHERE revoked_at IS NULL ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TokenRecord {
                    name: r.try_get("name")?,
                    role: r.try_get("role")?,
                    project: r.try_get("project")?,
                    created_at: r.try_get("created_at")?,
                    last_used_at: r.try_get("last_used_at")?,
                })
            })
            .collect()
    }

    // ---- sign-in throttling ---------------------------------------------------------------

    /// Failed sign-ins recorded under `key` since `since`.
    pub async fn login_failures(
        &self,
        key: &str,
        since: Millis,
    ) -> Result<(i64, Option<Millis>), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(at) AS first FROM login_failures WHERE key = $1 AND at >= $2",
        )
        .bind(key)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("n")?, row.try_get("first")?))
    }

    pub async fn add_login_failure(&self, keys: &[&str], now: Millis) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        for key in keys {
            sqlx::query("INSERT INTO login_failures (key, at) VALUES ($1, $2)")
                .bind(*key)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- audit ledger ---------------------------------------------------------------------

    /// Rows with `seq > after`, oldest first, at most `limit`.
    pub async fn audit_rows(&self, after: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, actor_id, actor_name, auth_method, action, target, details, source_ip,
                 outcome, prev_hash, hash
             FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let details: String = r.try_get("details")?;
                Ok(AuditRow {
                    seq: r.try_get("seq")?,
                    event: AuditEvent {
                        at: r.try_get("at")?,
                        actor_id: r.try_get("actor_id")?,
                        actor_name: r.try_get("actor_name")?,
                        auth_method: r.try_get("auth_method")?,
                        action: r.try_get("action")?,
                        target: r.try_get("target")?,
                        details: serde_json::from_str(&details).map_err(|_| {
                            StoreError::Corrupt {
                                column: "audit_log.details",
                                value: details.clone(),
                            }
                        })?,
                        source_ip: r.try_get("source_ip")?,
                        outcome: r.try_get("outcome")?,
                    },
                    prev_hash: r.try_get("prev_hash")?,
                    hash: r.try_get("hash")?,
                })
            })
            .collect()
    }

    /// Appends one event in its own transaction; returns its sequence number.
    pub async fn audit(&self, event: &AuditEvent) -> Result<i64, StoreError> {
        let mut tx = self.write_tx().await?;
        let seq = append_audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(seq)
    }
}

/// Appends one event inside `tx` (the same transaction as the change it records). The head
/// row is updated first, which serialises concurrent appends on both backends.
pub(crate) async fn append_audit(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    event: &AuditEvent,
) -> Result<i64, StoreError> {
    let head = sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
        .fetch_one(&mut **tx)
        .await?;
    let seq: i64 = head.try_get("seq")?;
    let prev: String = head.try_get("hash")?;
    let hash = audit_hash(&prev, seq, event);
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor_id, actor_name, auth_method, action, target, details,
             source_ip, outcome, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(seq)
    .bind(event.at)
    .bind(&event.actor_id)
    .bind(&event.actor_name)
    .bind(&event.auth_method)
    .bind(&event.action)
    .bind(&event.target)
    .bind(event.details.to_string())
    .bind(&event.source_ip)
    .bind(&event.outcome)
    .bind(&prev)
    .bind(&hash)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
        .bind(&hash)
        .execute(&mut **tx)
        .await?;
    Ok(seq)
}
