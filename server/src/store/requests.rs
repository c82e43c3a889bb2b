//! The approval aggregate: sync requests bound to (revision, digest) and their approvals. Each
//! decision is one transaction that first claims the pending row with a conditional UPDATE, so
//! concurrent deciders serialise and exactly one of them sees the request become approved.

use sqlx::Row;

use super::{append_audit, AuditEvent, Store, StoreError};
use crate::clock::Millis;
pub use app::model::RequestStatus;

/// A sync request with its (non-void and void) approvals.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SyncRequest {
    pub id: i64,
    pub application: String,
    pub revision: String,
    pub digest: String,
    pub cause: String,
    pub requested_by: Option<String>,
    pub required: i64,
    pub status: RequestStatus,
    pub created_at: Millis,
    pub decided_at: Option<Millis>,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub sync_id: Option<i64>,
    pub superseded_by: Option<i64>,
    pub approvals: Vec<Approval>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Approval {
    pub user_id: String,
    pub user_name: String,
    pub at: Millis,
    pub void: bool,
}

/// What `ensure_sync_request` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestChange {
    /// An open request for this digest already exists (it keeps its revision and approvals).
    Unchanged(i64),
    /// A new pending request; `superseded` names the one it replaced (its approvals voided).
    Created { id: i64, superseded: Option<i64> },
}

/// Why a decision was refused (mapped to 404 / 409 by the caller).
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    #[error("no sync request {0}")]
    NotFound(i64),
    #[error("sync request {id} is {status}, not pending")]
    NotPending { id: i64, status: RequestStatus },
    #[error("you already approved sync request {0}")]
    AlreadyApproved(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for DecisionError {
    fn from(e: sqlx::Error) -> Self {
        DecisionError::Store(StoreError::Query(e))
    }
}

/// The result of an approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    pub approvals: i64,
    pub required: i64,
    /// This approval completed the request (it is now `approved`).
    pub complete: bool,
}

const COLUMNS: &str = "id, application, revision, digest, cause, requested_by, required, status, created_at, decided_at, decided_by, reason, sync_id, superseded_by";

fn request_from(r: &sqlx::any::AnyRow) -> Result<SyncRequest, StoreError> {
    Ok(SyncRequest {
        id: r.try_get("id")?,
        application: r.try_get("application")?,
        revision: r.try_get("revision")?,
        digest: r.try_get("digest")?,
        cause: r.try_get("cause")?,
        requested_by: r.try_get("requested_by")?,
        required: r.try_get("required")?,
        status: {
            let text: String = r.try_get("status")?;
            text.parse().map_err(|_| StoreError::Corrupt {
                column: "sync_requests.status",
                value: text,
            })?
        },
        created_at: r.try_get("created_at")?,
        decided_at: r.try_get("decided_at")?,
        decided_by: r.try_get("decided_by")?,
        reason: r.try_get("reason")?,
        sync_id: r.try_get("sync_id")?,
        superseded_by: r.try_get("superseded_by")?,
        approvals: Vec::new(),
    })
}

/// Marks request `id` superseded (with why) and voids its approvals, inside `tx`.
async fn supersede(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: i64,
    reason: &str,
    now: Millis,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE sync_requests SET status = 'superseded', decided_at = $1, reason = $2 WHERE id = $3",
    )
    .bind(now)
    .bind(reason)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE approvals SET void = 1 WHERE request_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    /// Makes sure the application has an open request for what `digest` renders: an open one
    /// with the same digest is kept as it is, approvals included, whatever `revision` is now (a
    /// new branch tip that renders the same objects, such as a commit outside the application's
    /// path or one that only edits a comment, is not a new deployment: the request keeps the
    /// revision it was opened for, whose change its approvers reviewed); one with another
    /// digest is superseded (its approvals voided) by a new request for (revision, digest). A
    /// requested rollback holds the slot until it is decided.
    pub async fn ensure_sync_request(
        &self,
        app: &str,
        revision: &str,
        digest: &str,
        cause: &str,
        required: i64,
        now: Millis,
    ) -> Result<RequestChange, StoreError> {
        let mut tx = self.write_tx().await?;
        // The open request: pending, or approved and waiting for its sync.
        let pending = sqlx::query(
            "SELECT id, revision, digest, cause FROM sync_requests
             WHERE application = $1 AND status IN ('pending', 'approved') ORDER BY id DESC LIMIT 1",
        )
        .bind(app)
        .fetch_optional(&mut *tx)
        .await?;
        let mut superseded = None;
        if let Some(p) = pending {
            let (id, rev, dig): (i64, String, String) = (
                p.try_get("id")?,
                p.try_get("revision")?,
                p.try_get("digest")?,
            );
            // A requested rollback holds the slot until it is decided.
            let rollback = p.try_get::<String, _>("cause")? == "rollback";
            // Bound to the digest: only another rendering voids the approvals.
            if dig == digest || rollback {
                return Ok(RequestChange::Unchanged(id));
            }
            let reason = if rev == revision {
                "the target was rendered differently"
            } else {
                "the target moved to a revision that renders differently"
            };
            supersede(&mut tx, id, reason, now).await?;
            superseded = Some(id);
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO sync_requests (application, revision, digest, cause, required, status, created_at)
             VALUES ($1, $2, $3, $4, $5, 'pending', $6) RETURNING id",
        )
        .bind(app)
        .bind(revision)
        .bind(digest)
        .bind(cause)
        .bind(required.max(1))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(old) = superseded {
            sqlx::query("UPDATE sync_requests SET superseded_by = $1 WHERE id = $2")
                .bind(id)
                .bind(old)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(RequestChange::Created { id, superseded })
    }

    /// Opens a rollback request (the application's open request, if any, is superseded by it).
    #[allow(clippy::too_many_arguments)]
    pub async fn open_rollback_request(
        &self,
        app: &str,
        revision: &str,
        digest: &str,
        reason: &str,
        requested_by: &str,
        required: i64,
        audit: &AuditEvent,
        now: Millis,
    ) -> Result<i64, StoreError> {
        let mut tx = self.write_tx().await?;
        let open: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM sync_requests WHERE application = $1 AND status IN ('pending', 'approved')",
        )
        .bind(app)
        .fetch_all(&mut *tx)
        .await?;
        for id in &open {
            supersede(&mut tx, *id, "a rollback was requested", now).await?;
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO sync_requests (application, revision, digest, cause, requested_by, required, status, created_at, reason)
             VALUES ($1, $2, $3, 'rollback', $4, $5, 'pending', $6, $7) RETURNING id",
        )
        .bind(app)
        .bind(revision)
        .bind(digest)
        .bind(requested_by)
        .bind(required.max(1))
        .bind(now)
        .bind(reason)
        .fetch_one(&mut *tx)
        .await?;
        for old in &open {
            sqlx::query("UPDATE sync_requests SET superseded_by = $1 WHERE id = $2")
                .bind(id)
                .bind(old)
                .execute(&mut *tx)
                .await?;
        }
        append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Supersedes the application's pending request without a replacement (the application
    /// is in sync again); returns its id.
    pub async fn close_pending_request(
        &self,
        app: &str,
        reason: &str,
        now: Millis,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.write_tx().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM sync_requests WHERE application = $1 AND status IN ('pending', 'approved')
                 AND cause <> 'rollback' ORDER BY id DESC LIMIT 1",
        )
        .bind(app)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = id {
            supersede(&mut tx, id, reason, now).await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    pub async fn sync_request(&self, id: i64) -> Result<Option<SyncRequest>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM sync_requests WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(mut req) = row.as_ref().map(request_from).transpose()? else {
            return Ok(None);
        };
        req.approvals = self.approvals_of(id).await?;
        Ok(Some(req))
    }

    async fn approvals_of(&self, id: i64) -> Result<Vec<Approval>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, user_name, at, void FROM approvals WHERE request_id = $1 ORDER BY at, user_id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Approval {
                    user_id: r.try_get("user_id")?,
                    user_name: r.try_get("user_name")?,
                    at: r.try_get("at")?,
                    void: r.try_get::<i64, _>("void")? != 0,
                })
            })
            .collect()
    }

    /// Requests, newest first, optionally of one status and/or application.
    ///
    /// `only`: the projects whose applications' requests may be returned (`None`: all); see
    /// the caller's visibility (`auth::visibility`).
    pub async fn sync_requests(
        &self,
        status: Option<RequestStatus>,
        app: Option<&str>,
        only: Option<&[String]>,
        limit: i64,
    ) -> Result<Vec<SyncRequest>, StoreError> {
        let mut params = vec![
            status
                .map(RequestStatus::as_str)
                .unwrap_or_default()
                .to_owned(),
            app.unwrap_or_default().to_owned(),
        ];
        let scope = match only {
            Some(projects) => format!(
                " AND {}",
                super::sql_in_projects("application", "", projects, &mut params)
            ),
            None => String::new(),
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM sync_requests
             WHERE ($1 = '' OR status = $1) AND ($2 = '' OR application = $2){scope}
             ORDER BY id DESC LIMIT ${}",
            params.len() + 1
        );
        let mut query = sqlx::query(&sql);
        for p in &params {
            query = query.bind(p);
        }
        let rows = query
            .bind(limit.clamp(1, 1000))
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut req = request_from(r)?;
            req.approvals = self.approvals_of(req.id).await?;
            out.push(req);
        }
        Ok(out)
    }

    /// Records one approval (and its audit row) if the request is still pending; completes the
    /// request when the approvals reach its `required`.
    pub async fn approve_request(
        &self,
        id: i64,
        user_id: &str,
        user_name: &str,
        audit: &AuditEvent,
        now: Millis,
    ) -> Result<Approved, DecisionError> {
        let mut tx = self.write_tx().await?;
        // Claim the row first (a row lock on PostgreSQL; SQLite's write transaction already
        // serialises): a concurrent decision waits here and then sees the new state.
        let claimed = sqlx::query(
            "UPDATE sync_requests SET status = status WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() == 0 {
            drop(tx);
            return Err(self.not_pending(id).await);
        }
        let inserted = sqlx::query(
            "INSERT INTO approvals (request_id, user_id, user_name, at) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(user_id)
        .bind(user_name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(DecisionError::AlreadyApproved(id));
        }
        let row = sqlx::query(
            "SELECT r.required, (SELECT COUNT(*) FROM approvals a WHERE a.request_id = r.id AND a.void = 0) AS n
             FROM sync_requests r WHERE r.id = $1",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let (required, approvals): (i64, i64) = (row.try_get("required")?, row.try_get("n")?);
        let complete = approvals >= required;
        if complete {
            sqlx::query(
                "UPDATE sync_requests SET status = 'approved', decided_at = $1, decided_by = $2 WHERE id = $3",
            )
            .bind(now)
            .bind(user_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(Approved {
            approvals,
            required,
            complete,
        })
    }

    /// Rejects a pending request with a reason (and its audit row).
    pub async fn reject_request(
        &self,
        id: i64,
        user_id: &str,
        reason: &str,
        audit: &AuditEvent,
        now: Millis,
    ) -> Result<(), DecisionError> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE sync_requests SET status = 'rejected', decided_at = $1, decided_by = $2, reason = $3
             WHERE id = $4 AND status = 'pending'",
        )
        .bind(now)
        .bind(user_id)
        .bind(reason)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            drop(tx);
            return Err(self.not_pending(id).await);
        }
        append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records the sync an approved request ran, once.
    pub async fn finish_request(
        &self,
        id: i64,
        status: RequestStatus,
        sync_id: Option<i64>,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sync_requests SET status = $1, sync_id = $2, reason = COALESCE($3, reason)
             WHERE id = $4 AND status = 'approved'",
        )
        .bind(status.as_str())
        .bind(sync_id)
        .bind(reason)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The author e-mail of a commit (four-eyes: authors do not approve their own change).
    pub async fn commit_author_email(
        &self,
        repository: &str,
        sha: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT author_email FROM commits WHERE repository = $1 AND sha = $2",
        )
        .bind(repository)
        .bind(sha)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The newest commit touching `app`'s path at or before `sha` (what a request for `sha`
    /// changes in this application): its SHA, subject line and author name. A `sha` Tidemark
    /// did not store touches no application path: then the newest change overall.
    pub async fn last_app_change(
        &self,
        app: &str,
        repository: &str,
        sha: &str,
    ) -> Result<Option<(String, String, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT c.sha, c.title, c.author_name
             FROM app_commits ac JOIN commits c ON c.repository = ac.repository AND c.sha = ac.sha
             WHERE ac.application = $1 AND ac.reachable = 1
               AND ac.committed_at <= COALESCE(
                   (SELECT committed_at FROM commits WHERE repository = $2 AND sha = $3),
                   9223372036854775807)
             ORDER BY ac.committed_at DESC, ac.sha DESC LIMIT 1",
        )
        .bind(app)
        .bind(repository)
        .bind(sha)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok((
                r.try_get("sha")?,
                r.try_get("title")?,
                r.try_get("author_name")?,
            ))
        })
        .transpose()
    }

    /// A commit's subject line and author name.
    pub async fn commit_summary(
        &self,
        repository: &str,
        sha: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT title, author_name FROM commits WHERE repository = $1 AND sha = $2",
        )
        .bind(repository)
        .bind(sha)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get("title")?, r.try_get("author_name")?)))
            .transpose()
    }

    async fn not_pending(&self, id: i64) -> DecisionError {
        match self.sync_request(id).await {
            Ok(Some(r)) => DecisionError::NotPending {
                id,
                status: r.status,
            },
            Ok(None) => DecisionError::NotFound(id),
            Err(e) => DecisionError::Store(e),
        }
    }
}
