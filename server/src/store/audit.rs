//! The audit ledger: one row per action or auth event, chained by
//! `hash = SHA-256(prev_hash ‖ canonical row)` and written in the same transaction as the change
//! it records; the head (`audit_head`, outside the table) is checked by `audit_verify`.

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Store, StoreError};
use crate::clock::Millis;

/// One audit ledger row before it is chained.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub at: Millis,
    pub actor_id: String,
    pub actor_name: String,
    pub auth_method: String,
    pub action: String,
    pub target: String,
    /// JSON object; never holds secrets (callers pass only names, reasons and outcomes).
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub source_ip: String,
    pub outcome: String,
}

/// Who did something, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `local:NAME`, `oidc:SUBJECT`, `token:NAME`, `cli:USER` or `system:tidemark`.
    pub id: String,
    pub name: String,
    /// `local`, `oidc`, `token`, `cli` or `system`.
    pub method: String,
    pub source_ip: String,
}

impl Actor {
    /// Tidemark itself (auto-sync, self-heal).
    pub fn system() -> Self {
        Self {
            id: "system:tidemark".into(),
            name: "Tidemark".into(),
            method: "system".into(),
            source_ip: "local".into(),
        }
    }

    /// An event by this actor.
    pub fn event(
        &self,
        action: &str,
        target: &str,
        outcome: &str,
        details: serde_json::Value,
        at: Millis,
    ) -> AuditEvent {
        AuditEvent {
            at,
            actor_id: self.id.clone(),
            actor_name: self.name.clone(),
            auth_method: self.method.clone(),
            action: action.into(),
            target: target.into(),
            details,
            source_ip: self.source_ip.clone(),
            outcome: outcome.into(),
        }
    }
}

/// A stored audit row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
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

/// Lower-case hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What `audit_verify` found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AuditVerification {
    pub ok: bool,
    /// The last sequence number whose row and chain up to it are intact.
    pub verified_through: i64,
    /// The first sequence number that is missing, altered, out of order or cut off.
    pub first_bad: Option<i64>,
    pub problem: Option<String>,
}

/// Filters of the audit listing and export (all optional, combined with AND).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct AuditFilter {
    /// `actor_id`, e.g. `local:admin` or `oidc:SUBJECT`.
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Rows whose target is `application:NAME`.
    pub application: Option<String>,
    /// Milliseconds since the epoch, inclusive.
    pub since: Option<Millis>,
    /// Milliseconds since the epoch, exclusive.
    pub until: Option<Millis>,
    /// Only rows about applications of these projects (`None`: every row, including those
    /// about no application such as sign-ins and tokens). Set from the caller's
    /// the caller's `auth::visibility::Visibility`, never from a query string.
    #[serde(skip)]
    pub projects: Option<Vec<String>>,
}

fn row_from(r: &sqlx::any::AnyRow) -> Result<AuditRow, StoreError> {
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
            details: serde_json::from_str(&details).map_err(|_| StoreError::Corrupt {
                column: "audit_log.details",
                value: details.clone(),
            })?,
            source_ip: r.try_get("source_ip")?,
            outcome: r.try_get("outcome")?,
        },
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

const COLUMNS: &str = "seq, at, actor_id, actor_name, auth_method, action, target, details, source_ip, outcome, prev_hash, hash";

impl Store {
    /// Appends one event in its own transaction; returns its sequence number.
    pub async fn audit(&self, event: &AuditEvent) -> Result<i64, StoreError> {
        let mut tx = self.write_tx().await?;
        let seq = append_audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// Rows with `seq > after`, oldest first, at most `limit`.
    pub async fn audit_rows(&self, after: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_from).collect()
    }

    /// One page of matching rows, newest first, keyset-paged by sequence number (`cursor` is the
    /// last `seq` of the previous page).
    pub async fn audit_page(
        &self,
        filter: &AuditFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<AuditRow>, Option<String>), StoreError> {
        let limit = i64::from(limit.clamp(1, 10_000));
        let mut sql = format!("SELECT {COLUMNS} FROM audit_log WHERE 1 = 1");
        let mut text: Vec<String> = Vec::new();
        let mut numbers: Vec<(String, i64)> = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        // Placeholders are numbered in bind order: strings first, then numbers.
        for (column, value) in [
            ("actor_id", filter.actor.clone()),
            ("action", filter.action.clone()),
            (
                "target",
                filter
                    .application
                    .as_ref()
                    .map(|a| format!("application:{a}")),
            ),
        ] {
            if let Some(v) = value {
                sql.push_str(&format!(" AND {column} = {}", next()));
                text.push(v);
            }
        }
        if let Some(projects) = &filter.projects {
            if projects.is_empty() {
                sql.push_str(" AND 1 = 0");
            } else {
                let placeholders: Vec<String> = projects
                    .iter()
                    .map(|p| {
                        text.push(p.clone());
                        next()
                    })
                    .collect();
                sql.push_str(&format!(
                    " AND target IN (SELECT 'application:' || v.name FROM applications v WHERE v.project IN ({}))",
                    placeholders.join(", ")
                ));
            }
        }
        if let Some(c) = cursor {
            let seq: i64 = c.parse().map_err(|_| StoreError::Corrupt {
                column: "cursor",
                value: c.to_owned(),
            })?;
            numbers.push((format!(" AND seq < {}", next()), seq));
        }
        if let Some(since) = filter.since {
            numbers.push((format!(" AND at >= {}", next()), since));
        }
        if let Some(until) = filter.until {
            numbers.push((format!(" AND at < {}", next()), until));
        }
        for (clause, _) in &numbers {
            sql.push_str(clause);
        }
        sql.push_str(&format!(" ORDER BY seq DESC LIMIT {}", next()));
        let mut query = sqlx::query(&sql);
        for t in &text {
            query = query.bind(t);
        }
        for (_, v) in &numbers {
            query = query.bind(*v);
        }
        let rows = query.bind(limit + 1).fetch_all(&self.pool).await?;
        let items = rows.iter().map(row_from).collect::<Result<Vec<_>, _>>()?;
        Ok(super::git::keyset_page(items, limit, |r| r.seq.to_string()))
    }

    /// Walks the whole chain: every sequence number present once and in order, every row
    /// linking to the previous hash and hashing to its own, and the table's end matching the
    /// head kept in `audit_head` (a cut-off tail or a rewritten head is caught there).
    pub async fn audit_verify(&self) -> Result<AuditVerification, StoreError> {
        let bad = |through: i64, seq: i64, problem: String| AuditVerification {
            ok: false,
            verified_through: through,
            first_bad: Some(seq),
            problem: Some(problem),
        };
        let (mut last, mut prev) = (0_i64, AUDIT_GENESIS.to_owned());
        loop {
            let rows = self.audit_rows(last, 5_000).await?;
            if rows.is_empty() {
                break;
            }
            for r in rows {
                let expected = last + 1;
                if r.seq != expected {
                    return Ok(bad(
                        last,
                        expected,
                        format!("row #{expected} is missing (the next row is #{})", r.seq),
                    ));
                }
                if r.prev_hash != prev {
                    return Ok(bad(
                        last,
                        r.seq,
                        format!("row #{} does not link to row #{last}", r.seq),
                    ));
                }
                if r.hash != audit_hash(&prev, r.seq, &r.event) {
                    return Ok(bad(
                        last,
                        r.seq,
                        format!(
                            "row #{} was altered (its hash does not match its content)",
                            r.seq
                        ),
                    ));
                }
                last = r.seq;
                prev = r.hash;
            }
        }
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        let (head_seq, head_hash): (i64, String) = (head.try_get("seq")?, head.try_get("hash")?);
        if head_seq > last {
            return Ok(bad(
                last,
                last + 1,
                format!("rows #{}..#{head_seq} were removed from the end", last + 1),
            ));
        }
        if head_seq < last || head_hash != prev {
            return Ok(bad(
                last,
                head_seq.min(last),
                format!("the head (#{head_seq}) does not match the last row (#{last})"),
            ));
        }
        Ok(AuditVerification {
            ok: true,
            verified_through: last,
            first_bad: None,
            problem: None,
        })
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
