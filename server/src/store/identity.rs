//! The identity aggregate: users, browser sessions, API tokens and failed sign-ins.

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

/// The answer of [`Store::reserve_login_attempt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginReservation {
    /// The attempt may check its password; `ids` are its rows in `login_failures`, one per key
    /// in the order given.
    Granted { ids: Vec<i64> },
    /// The key at index `key` of the limits is at its maximum; `first_at` is its oldest
    /// attempt within the window (ms), from which the wait is computed.
    Refused {
        key: usize,
        first_at: Option<Millis>,
    },
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
    /// Creates or replaces a local account's display name and password hash. Setting the
    /// password of an existing account (a reset, from the CLI or `auth.admin_password`) ends
    /// every session signed in before `now`, on every replica (see
    /// [`Store::sessions_valid_after`]).
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
                 password_hash = excluded.password_hash,
                 sessions_valid_after = excluded.created_at",
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

    /// The instant (ms) before which the user's sessions are void because the password was
    /// set since; `None` for unknown users and accounts never reset.
    pub async fn sessions_valid_after(&self, user_id: &str) -> Result<Option<Millis>, StoreError> {
        let row = sqlx::query("SELECT sessions_valid_after FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get("sessions_valid_after")?,
            None => None,
        })
    }

    /// Records a successful sign-in's time on the user.
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
        sqlx::query("DELETE FROM login_throttle WHERE touched_at < $1")
            .bind(failures_before)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- API tokens -----------------------------------------------------------------------

    /// Stores a new token (and its audit row, in the same transaction); `Ok(false)` when a
    /// live token already has this name.
    pub async fn token_create(
        &self,
        name: &str,
        token_hash: &str,
        role: &str,
        project: Option<&str>,
        audit: Option<&super::AuditEvent>,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "INSERT INTO api_tokens (name, token_hash, role, project, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(token_hash)
        .bind(role)
        .bind(project)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        if let Some(audit) = audit {
            super::append_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(true)
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

    /// Revokes the live token of this name (with its audit row); false when there is none.
    pub async fn token_revoke(
        &self,
        name: &str,
        audit: Option<&super::AuditEvent>,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        if let Some(audit) = audit {
            super::append_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(true)
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

    /// Reserves one sign-in attempt under every key of `limits` (`(key, max)` pairs, e.g. the
    /// user and the client address), atomically: within one transaction each key's lock row is
    /// taken (always in the order given, so two attempts cannot deadlock), the attempts since
    /// `since` are counted, and only if every key is below its `max` is an attempt recorded
    /// under each key. Parallel attempts queue on the lock, so N of them cost exactly what N
    /// sequential ones do. The recorded rows count as failures until the caller releases them
    /// ([`Store::release_login_attempts`]) or clears the key after a success.
    pub async fn reserve_login_attempt(
        &self,
        limits: &[(&str, i64)],
        since: Millis,
        now: Millis,
    ) -> Result<LoginReservation, StoreError> {
        let mut tx = self.write_tx().await?;
        for (index, (key, max)) in limits.iter().enumerate() {
            sqlx::query(
                "INSERT INTO login_throttle (key, touched_at) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET touched_at = excluded.touched_at",
            )
            .bind(*key)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let row = sqlx::query(
                "SELECT COUNT(*) AS n, MIN(at) AS first FROM login_failures
                 WHERE key = $1 AND at >= $2",
            )
            .bind(*key)
            .bind(since)
            .fetch_one(&mut *tx)
            .await?;
            let (count, first): (i64, Option<Millis>) = (row.try_get("n")?, row.try_get("first")?);
            if count >= *max {
                // Nothing recorded: a refused attempt costs no other key a slot.
                tx.rollback().await?;
                return Ok(LoginReservation::Refused {
                    key: index,
                    first_at: first,
                });
            }
        }
        let mut ids = Vec::with_capacity(limits.len());
        for (key, _) in limits {
            let row =
                sqlx::query("INSERT INTO login_failures (key, at) VALUES ($1, $2) RETURNING id")
                    .bind(*key)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
            ids.push(row.try_get("id")?);
        }
        tx.commit().await?;
        Ok(LoginReservation::Granted { ids })
    }

    /// Gives back attempts reserved by [`Store::reserve_login_attempt`] (after a success).
    pub async fn release_login_attempts(&self, ids: &[i64]) -> Result<(), StoreError> {
        for id in ids {
            sqlx::query("DELETE FROM login_failures WHERE id = $1")
                .bind(*id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Failed (or in-flight) sign-ins recorded under `key` since `since`: how many, and the
    /// time of the oldest.
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

    /// Records one failed sign-in under each key at `now`.
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

    /// Forgets every failed sign-in under `key` (a successful sign-in clears its user's).
    pub async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
