//! Signature verdicts of commits and signed tags, per set of trusted keys (`trust_digest`), the
//! keys each application is checked against now, and project deploy policies.

use std::collections::HashMap;

use app::model::{SignatureStatus, SignatureVerdict};
use sqlx::Row;

use super::{Store, StoreError};
use crate::clock::Millis;

/// One verdict to store: on commit `sha`, or on the annotated tag object `sha` named
/// `tag_name` that points at commit `tagged`.
#[derive(Debug, Clone)]
pub struct SignatureRow {
    pub sha: String,
    pub tag: Option<(String, String)>,
    pub verdict: SignatureVerdict,
}

fn verdict_of(r: &sqlx::any::AnyRow) -> Result<SignatureVerdict, StoreError> {
    let status: String = r.try_get("status")?;
    let tag_name: Option<String> = r.try_get("tag_name")?;
    Ok(SignatureVerdict {
        status: status.parse().map_err(|_| StoreError::Corrupt {
            column: "commit_signatures.status",
            value: status.clone(),
        })?,
        method: r.try_get("method")?,
        signer: r.try_get("signer")?,
        fingerprint: r.try_get("fingerprint")?,
        via: tag_name.map(|t| format!("tag {t}")),
        detail: r.try_get("detail")?,
    })
}

/// Of a commit's own verdict and those of tags pointing at it, the one that vouches most
/// (verified first, then the commit's own).
fn best(verdicts: impl IntoIterator<Item = SignatureVerdict>) -> Option<SignatureVerdict> {
    let rank = |v: &SignatureVerdict| match (v.status, v.via.is_some()) {
        (SignatureStatus::Verified, false) => 0,
        (SignatureStatus::Verified, true) => 1,
        (_, false) => 2,
        (_, true) => 3,
    };
    verdicts.into_iter().min_by_key(rank)
}

const COLUMNS: &str = "sha, tagged, tag_name, status, method, signer, fingerprint, detail";

impl Store {
    /// Stores verdicts against the keys `trust_digest` (an existing verdict is replaced).
    pub async fn save_signatures(
        &self,
        repository: &str,
        trust_digest: &str,
        rows: &[SignatureRow],
        now: Millis,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for row in rows {
            let v = &row.verdict;
            sqlx::query(
                "INSERT INTO commit_signatures (repository, sha, trust_digest, tagged, tag_name, status, method, signer, fingerprint, detail, checked_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (repository, sha, trust_digest) DO UPDATE SET tagged = excluded.tagged,
                     tag_name = excluded.tag_name, status = excluded.status, method = excluded.method,
                     signer = excluded.signer, fingerprint = excluded.fingerprint,
                     detail = excluded.detail, checked_at = excluded.checked_at",
            )
            .bind(repository)
            .bind(&row.sha)
            .bind(trust_digest)
            .bind(row.tag.as_ref().map(|(_, commit)| commit.as_str()))
            .bind(row.tag.as_ref().map(|(name, _)| name.as_str()))
            .bind(v.status.as_str())
            .bind(v.method.as_deref())
            .bind(v.signer.as_deref())
            .bind(v.fingerprint.as_deref())
            .bind(v.detail.as_deref())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records the keys `app`'s revisions are checked against now. Returns the previous digest.
    pub async fn set_trust_digest(
        &self,
        app: &str,
        trust_digest: &str,
        now: Millis,
    ) -> Result<Option<String>, StoreError> {
        let previous: Option<Option<String>> =
            sqlx::query_scalar("SELECT trust_digest FROM app_git_state WHERE application = $1")
                .bind(app)
                .fetch_optional(&self.pool)
                .await?;
        let previous = previous.flatten();
        if previous.as_deref() != Some(trust_digest) {
            sqlx::query(
                "INSERT INTO app_git_state (application, trust_digest, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (application) DO UPDATE SET trust_digest = excluded.trust_digest,
                     updated_at = excluded.updated_at",
            )
            .bind(app)
            .bind(trust_digest)
            .bind(now)
            .execute(&self.pool)
            .await?;
        }
        Ok(previous)
    }

    /// Commits of `app`'s history (reachable ones, newest first) with no verdict against
    /// `trust_digest` yet, at most `limit`.
    pub async fn unchecked_commits(
        &self,
        app: &str,
        trust_digest: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT ac.sha FROM app_commits ac
             WHERE ac.application = $1 AND ac.reachable = 1
               AND NOT EXISTS (SELECT 1 FROM commit_signatures s
                   WHERE s.repository = ac.repository AND s.sha = ac.sha AND s.trust_digest = $2)
             ORDER BY ac.committed_at DESC, ac.sha DESC LIMIT $3",
        )
        .bind(app)
        .bind(trust_digest)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether a verdict on `sha` against `trust_digest` is stored.
    pub async fn has_signature(
        &self,
        repository: &str,
        sha: &str,
        trust_digest: &str,
    ) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM commit_signatures WHERE repository = $1 AND sha = $2 AND trust_digest = $3",
        )
        .bind(repository)
        .bind(sha)
        .bind(trust_digest)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    /// The verdicts on `shas` as `app` sees them now (against its current keys; a signed tag
    /// pointing at a commit vouches for it). Commits not checked yet are absent.
    pub async fn signatures_of(
        &self,
        app: &str,
        shas: &[String],
    ) -> Result<HashMap<String, SignatureVerdict>, StoreError> {
        let mut out = HashMap::new();
        if shas.is_empty() {
            return Ok(out);
        }
        let marks: Vec<String> = (0..shas.len()).map(|i| format!("${}", i + 2)).collect();
        let list = marks.join(", ");
        let sql = format!(
            "SELECT {COLUMNS} FROM commit_signatures s
             JOIN applications a ON a.name = $1 AND a.repository = s.repository
             JOIN app_git_state g ON g.application = a.name AND g.trust_digest = s.trust_digest
             WHERE s.sha IN ({list}) OR s.tagged IN ({list})"
        );
        let mut q = sqlx::query(&sql).bind(app);
        for sha in shas {
            q = q.bind(sha);
        }
        let mut found: HashMap<String, Vec<SignatureVerdict>> = HashMap::new();
        for row in q.fetch_all(&self.pool).await? {
            let tagged: Option<String> = row.try_get("tagged")?;
            let sha = tagged.unwrap_or(row.try_get("sha")?);
            found.entry(sha).or_default().push(verdict_of(&row)?);
        }
        for (sha, verdicts) in found {
            if let Some(v) = best(verdicts) {
                out.insert(sha, v);
            }
        }
        Ok(out)
    }

    /// The verdict on revision `sha` of `app` now, if it was checked against its current keys.
    pub async fn revision_signature(
        &self,
        app: &str,
        sha: &str,
    ) -> Result<Option<SignatureVerdict>, StoreError> {
        Ok(self
            .signatures_of(app, &[sha.to_owned()])
            .await?
            .remove(sha))
    }

    /// Makes the stored project policies (`require_signed`, the bounds of Git-declared
    /// applications) equal to the configured ones.
    pub async fn sync_project_policies(
        &self,
        projects: &[crate::config::ProjectSettings],
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM project_policies")
            .execute(&mut *tx)
            .await?;
        for p in projects {
            sqlx::query(
                "INSERT INTO project_policies (project, require_signed, declared_bounds) VALUES ($1, $2, $3)
                 ON CONFLICT (project) DO UPDATE SET require_signed = excluded.require_signed,
                     declared_bounds = excluded.declared_bounds",
            )
            .bind(&p.name)
            .bind(i64::from(p.require_signed))
            .bind(serde_json::to_string(&p.declared_bounds()).unwrap_or_else(|_| "{}".into()))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The verified verdict `revision` of `app` was last deployed under (a succeeded sync that
    /// recorded one), if any: history keeps the verdict it had at deploy time.
    pub async fn deployed_signature(
        &self,
        app: &str,
        revision: &str,
    ) -> Result<Option<SignatureVerdict>, StoreError> {
        let rows: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT signature FROM syncs
             WHERE application = $1 AND revision = $2 AND status = 'succeeded' AND signature IS NOT NULL
             ORDER BY id DESC LIMIT 20",
        )
        .bind(app)
        .bind(revision)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .flatten()
            .filter_map(|t| serde_json::from_str::<SignatureVerdict>(&t).ok())
            .find(SignatureVerdict::is_verified)
            .map(|mut v| {
                v.detail = Some("verified when it was deployed".into());
                v
            }))
    }

    /// The verdict a sync deployed under, as recorded then.
    pub async fn sync_signature(&self, sync: i64) -> Result<Option<SignatureVerdict>, StoreError> {
        let text: Option<Option<String>> =
            sqlx::query_scalar("SELECT signature FROM syncs WHERE id = $1")
                .bind(sync)
                .fetch_optional(&self.pool)
                .await?;
        Ok(text.flatten().and_then(|t| serde_json::from_str(&t).ok()))
    }
}
