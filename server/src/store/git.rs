//! The Git aggregate: commits, per-application history (with reachability), rendered snapshots
//! (content-addressed), fetch state and timeline events.

use std::sync::Arc;

use sqlx::Row;

use super::{Store, StoreError};
use crate::clock::Millis;
use crate::secrets::{self, Keyring};

/// One commit as Tidemark stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub sha: String,
    pub parents: Vec<String>,
    pub author_name: String,
    pub author_email: String,
    pub committer_name: String,
    pub committer_email: String,
    /// Committer time, milliseconds since the epoch.
    pub committed_at: i64,
    pub title: String,
    pub body: String,
}

/// Rows per multi-row INSERT. Measured (benches/git_ingest.rs, 10,000 commits into SQLite):
/// 20 rows 290 ms, 50 rows 230 ms, 500 rows 970 ms — binding cost grows faster than the
/// parameter count, so batches stay small.
const BATCH: usize = 50;

/// `($1,$2,…),($n+1,…)` for a multi-row INSERT (`$n` works on SQLite and PostgreSQL alike).
fn placeholders(rows: usize, cols: usize) -> String {
    let mut out = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        out.push_str(if r == 0 { "(" } else { ",(" });
        for c in 0..cols {
            if c > 0 {
                out.push(',');
            }
            out.push('$');
            out.push_str(&(r * cols + c + 1).to_string());
        }
        out.push(')');
    }
    out
}

/// Stored commits of an application: (all, unreachable).
async fn history_counts(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    app: &str,
) -> Result<(i64, i64), StoreError> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS total, COUNT(CASE WHEN reachable = 0 THEN 1 END) AS unreachable
         FROM app_commits WHERE application = $1",
    )
    .bind(app)
    .fetch_one(&mut **tx)
    .await?;
    Ok((row.try_get("total")?, row.try_get("unreachable")?))
}

/// A page from rows fetched with `LIMIT limit + 1`: the first `limit` rows, and the cursor of the
/// last one when there are more.
pub(super) fn keyset_page<T>(
    mut items: Vec<T>,
    limit: i64,
    cursor: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let more = items.len() as i64 > limit;
    items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next = if more { items.last().map(cursor) } else { None };
    (items, next)
}

/// Where an application's Git ingest stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppGitState {
    pub ingested_tip: Option<String>,
    pub target_sha: Option<String>,
    pub target_digest: Option<String>,
    pub last_error: Option<String>,
    /// The revision at which this app of apps' declarations were held (read again on the next
    /// fetch), if any.
    pub declarations_held: Option<String>,
    /// What this app of apps' last reading refused (said once).
    pub declaration_refusals: Vec<super::RefusedApp>,
}

/// One stored commit of an application's history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct StoredCommit {
    pub sha: String,
    pub parents: Vec<String>,
    pub author_name: String,
    pub author_email: String,
    pub committer_name: String,
    pub committer_email: String,
    pub committed_at: Millis,
    pub title: String,
    pub body: String,
    pub reachable: bool,
    /// The signature verdict against the application's current trusted keys (`None`: not
    /// checked yet). Filled by callers that show it.
    pub signature: Option<app::model::SignatureVerdict>,
}

/// One event of an application's timeline.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    pub id: i64,
    pub kind: String,
    pub occurred_at: Millis,
    pub message: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// How an ingest changed the stored history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestReport {
    pub new_commits: usize,
    pub now_unreachable: usize,
}

/// An application as the Git engine needs it.
#[derive(Debug, Clone)]
pub struct AppSource {
    pub name: String,
    pub repository: String,
    pub path: String,
    pub revision: String,
    pub cluster: String,
    pub namespace: String,
    pub auto_sync: bool,
    pub self_heal: bool,
    pub prune: bool,
    pub ignore: Vec<crate::diff::IgnoreRule>,
    pub approvals: crate::config::ApprovalPolicy,
    pub project: String,
    /// How live objects are compared.
    pub compare: crate::config::CompareOptions,
    /// Only verified (signed by a trusted key) revisions are synced: the application's own
    /// `require_signed` or its project's.
    pub require_signed: bool,
    /// How the path is rendered (`None`: detected) and the Helm options.
    pub render: RenderOptions,
    /// For an application declared in Git (app of apps, generator): its project's bounds, which
    /// every object it syncs must fall within (`None`: declared in tidemark.toml or through the
    /// API, trusted as written; a project without bounds gives empty ones).
    pub bounds: Option<crate::config::DeclaredBounds>,
}

/// How an application is rendered, as stored in `applications.render_options`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RenderOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::domain::source::SourceType>,
    #[serde(skip_serializing_if = "crate::domain::source::HelmOptions::is_default")]
    pub helm: crate::domain::source::HelmOptions,
}

impl RenderOptions {
    /// The options of a configured (or API-declared) application, as a JSON text.
    pub fn of(app: &crate::config::ApplicationSettings) -> String {
        serde_json::to_string(&RenderOptions {
            source: app.source,
            helm: app.helm.clone(),
        })
        .unwrap_or_else(|_| "{}".into())
    }
}

fn app_source(r: &sqlx::any::AnyRow) -> Result<AppSource, StoreError> {
    let policy: String = r.try_get("sync_policy")?;
    Ok(AppSource {
        name: r.try_get("name")?,
        repository: r.try_get("repository")?,
        path: r.try_get("path")?,
        revision: r.try_get("target_revision")?,
        cluster: r.try_get("cluster")?,
        namespace: r.try_get("namespace")?,
        auto_sync: policy == "auto",
        self_heal: r.try_get::<i64, _>("self_heal")? != 0,
        prune: r.try_get::<i64, _>("prune")? != 0,
        ignore: {
            let rules: String = r.try_get("ignore_rules")?;
            serde_json::from_str(&rules).map_err(|_| StoreError::Corrupt {
                column: "applications.ignore_rules",
                value: rules,
            })?
        },
        approvals: {
            let policy: String = r.try_get("approval_policy")?;
            serde_json::from_str(&policy).map_err(|_| StoreError::Corrupt {
                column: "applications.approval_policy",
                value: policy,
            })?
        },
        project: r.try_get("project")?,
        compare: {
            let options: String = r.try_get("compare_options")?;
            serde_json::from_str(&options).map_err(|_| StoreError::Corrupt {
                column: "applications.compare_options",
                value: options,
            })?
        },
        require_signed: r.try_get::<i64, _>("require_signed")? != 0
            || r.try_get::<i64, _>("project_require_signed")? != 0,
        render: {
            let options: String = r.try_get("render_options")?;
            serde_json::from_str(&options).map_err(|_| StoreError::Corrupt {
                column: "applications.render_options",
                value: options,
            })?
        },
        bounds: match r.try_get::<Option<String>, _>("generator")? {
            None => None,
            Some(_) => match r.try_get::<Option<String>, _>("project_bounds")? {
                None => Some(Default::default()),
                Some(bounds) => {
                    Some(
                        serde_json::from_str(&bounds).map_err(|_| StoreError::Corrupt {
                            column: "project_policies.declared_bounds",
                            value: bounds,
                        })?,
                    )
                }
            },
        },
    })
}

const APP_SOURCE_COLUMNS: &str =
    "name, project, repository, path, target_revision, cluster, namespace, sync_policy, self_heal, prune, ignore_rules, approval_policy, compare_options, require_signed, render_options, generator,
     COALESCE((SELECT pp.require_signed FROM project_policies pp WHERE pp.project = applications.project), 0) AS project_require_signed,
     (SELECT pp.declared_bounds FROM project_policies pp WHERE pp.project = applications.project) AS project_bounds";

impl Store {
    /// Active applications reading from `repository`.
    pub async fn apps_of_repository(&self, repository: &str) -> Result<Vec<AppSource>, StoreError> {
        let sql = format!(
            "SELECT {APP_SOURCE_COLUMNS} FROM applications WHERE repository = $1 AND retired_at IS NULL ORDER BY name"
        );
        let rows = sqlx::query(&sql)
            .bind(repository)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(app_source).collect()
    }

    /// Every active application.
    pub async fn app_sources(&self) -> Result<Vec<AppSource>, StoreError> {
        let sql = format!(
            "SELECT {APP_SOURCE_COLUMNS} FROM applications WHERE retired_at IS NULL ORDER BY name"
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(app_source).collect()
    }

    /// One active application's source, if it exists.
    pub async fn app_source(&self, name: &str) -> Result<Option<AppSource>, StoreError> {
        let sql = format!(
            "SELECT {APP_SOURCE_COLUMNS} FROM applications WHERE name = $1 AND retired_at IS NULL"
        );
        let row = sqlx::query(&sql)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(app_source).transpose()
    }

    /// The application's ingest state (default when never ingested).
    pub async fn app_git_state(&self, app: &str) -> Result<AppGitState, StoreError> {
        let row = sqlx::query(
            "SELECT ingested_tip, target_sha, target_digest, last_error, declarations_held, declaration_refusals FROM app_git_state WHERE application = $1",
        )
        .bind(app)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => AppGitState {
                ingested_tip: r.try_get("ingested_tip")?,
                target_sha: r.try_get("target_sha")?,
                target_digest: r.try_get("target_digest")?,
                last_error: r.try_get("last_error")?,
                declarations_held: r.try_get("declarations_held")?,
                declaration_refusals: match r
                    .try_get::<Option<String>, _>("declaration_refusals")?
                {
                    None => Vec::new(),
                    Some(t) => serde_json::from_str(&t).map_err(|_| StoreError::Corrupt {
                        column: "app_git_state.declaration_refusals",
                        value: t,
                    })?,
                },
            },
            None => AppGitState::default(),
        })
    }

    /// Records what app of apps `app`'s reading refused.
    pub async fn set_declaration_refusals(
        &self,
        app: &str,
        refused: &[super::RefusedApp],
        now: Millis,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO app_git_state (application, declaration_refusals, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (application) DO UPDATE SET declaration_refusals = excluded.declaration_refusals",
        )
        .bind(app)
        .bind(serde_json::to_string(refused).unwrap_or_else(|_| "[]".into()))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that app of apps `app`'s declarations at `revision` were held (`None`: applied).
    pub async fn set_declarations_held(
        &self,
        app: &str,
        revision: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO app_git_state (application, declarations_held, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (application) DO UPDATE SET declarations_held = excluded.declarations_held",
        )
        .bind(app)
        .bind(revision)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores the commits of one walk of an application's history, in one transaction.
    /// `full` walks (first ingest, or after a force push) also mark every stored commit the
    /// walk did not reach as unreachable; incremental walks only add.
    #[tracing::instrument(skip_all, fields(app = %app, commits = commits.len()), err)]
    pub async fn ingest_history(
        &self,
        app: &str,
        repository: &str,
        commits: &[CommitInfo],
        full: bool,
        tip: &str,
        now: Millis,
    ) -> Result<IngestReport, StoreError> {
        let mut tx = self.write_tx().await?;
        let (before, unreachable_before) = history_counts(&mut tx, app).await?;
        if full {
            sqlx::query("UPDATE app_commits SET reachable = 0 WHERE application = $1")
                .bind(app)
                .execute(&mut *tx)
                .await?;
        }
        for chunk in commits.chunks(BATCH) {
            let sql = format!(
                "INSERT INTO commits (repository, sha, parents, author_name, author_email, committer_name,
                 committer_email, committed_at, title, body) VALUES {} ON CONFLICT (repository, sha) DO NOTHING",
                placeholders(chunk.len(), 10)
            );
            let mut q = sqlx::query(&sql);
            for c in chunk {
                q = q
                    .bind(repository)
                    .bind(&c.sha)
                    .bind(c.parents.join(" "))
                    .bind(&c.author_name)
                    .bind(&c.author_email)
                    .bind(&c.committer_name)
                    .bind(&c.committer_email)
                    .bind(c.committed_at)
                    .bind(&c.title)
                    .bind(&c.body);
            }
            q.execute(&mut *tx).await?;

            let sql = format!(
                "INSERT INTO app_commits (application, repository, sha, committed_at, reachable, first_seen_at)
                 VALUES {} ON CONFLICT (application, sha) DO UPDATE SET reachable = 1",
                placeholders(chunk.len(), 6)
            );
            let mut q = sqlx::query(&sql);
            for c in chunk {
                q = q
                    .bind(app)
                    .bind(repository)
                    .bind(&c.sha)
                    .bind(c.committed_at)
                    .bind(1i64)
                    .bind(now);
            }
            q.execute(&mut *tx).await?;
        }
        sqlx::query(
            "INSERT INTO app_git_state (application, ingested_tip, last_error, updated_at) VALUES ($1, $2, NULL, $3)
             ON CONFLICT (application) DO UPDATE SET ingested_tip = excluded.ingested_tip,
                 last_error = NULL, updated_at = excluded.updated_at",
        )
        .bind(app)
        .bind(tip)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let (after, unreachable_after) = history_counts(&mut tx, app).await?;
        tx.commit().await?;
        Ok(IngestReport {
            new_commits: usize::try_from(after - before).unwrap_or(0),
            now_unreachable: usize::try_from(unreachable_after - unreachable_before).unwrap_or(0),
        })
    }

    /// A page of an application's history, newest first. `cursor` is the `next` of the previous
    /// page.
    pub async fn app_commits(
        &self,
        app: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<StoredCommit>, Option<String>), StoreError> {
        let limit = i64::from(limit.clamp(1, 500));
        let (at, sha) = match cursor.and_then(|c| c.split_once(':')) {
            Some((at, sha)) => (at.parse::<i64>().unwrap_or(i64::MAX), sha.to_owned()),
            None => (i64::MAX, String::new()),
        };
        let rows = sqlx::query(
            "SELECT c.sha, c.parents, c.author_name, c.author_email, c.committer_name, c.committer_email,
                    c.committed_at, c.title, c.body, ac.reachable
             FROM app_commits ac JOIN commits c ON c.repository = ac.repository AND c.sha = ac.sha
             WHERE ac.application = $1
               AND (ac.committed_at < $2 OR (ac.committed_at = $2 AND ($3 = '' OR ac.sha < $3)))
             ORDER BY ac.committed_at DESC, ac.sha DESC
             LIMIT $4",
        )
        .bind(app)
        .bind(at)
        .bind(&sha)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        let items = rows
            .iter()
            .map(|r| {
                let parents: String = r.try_get("parents")?;
                Ok(StoredCommit {
                    sha: r.try_get("sha")?,
                    parents: parents.split_whitespace().map(str::to_owned).collect(),
                    author_name: r.try_get("author_name")?,
                    author_email: r.try_get("author_email")?,
                    committer_name: r.try_get("committer_name")?,
                    committer_email: r.try_get("committer_email")?,
                    committed_at: r.try_get("committed_at")?,
                    title: r.try_get("title")?,
                    body: r.try_get("body")?,
                    reachable: r.try_get::<i64, _>("reachable")? != 0,
                    signature: None,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(keyset_page(items, limit, |c| {
            format!("{}:{}", c.committed_at, c.sha)
        }))
    }

    /// This store with a keyring: from now on it seals the Secret data of renders it saves and
    /// opens sealed renders for applying. `None` keeps Secret data in plaintext.
    pub fn with_secrets(mut self, keyring: Option<Arc<Keyring>>) -> Self {
        self.secrets = keyring;
        self
    }

    /// Stores a render: the snapshot once per digest, and which revision produced it. Also
    /// records the revision as the application's current target. With a keyring, the
    /// snapshot's Secret values are sealed (`canonical` and `digest` are the plaintext render's;
    /// the digest approvals bind to does not depend on the key), and a plaintext snapshot
    /// stored earlier under the same digest is replaced by the sealed one.
    pub async fn save_render(
        &self,
        app: &str,
        sha: &str,
        digest: &str,
        canonical: &str,
        objects: usize,
        now: Millis,
    ) -> Result<(), StoreError> {
        let (content, key_id) = match &self.secrets {
            Some(ring) => (
                ring.seal(digest, canonical)?,
                Some(ring.active_id().to_owned()),
            ),
            None => (canonical.to_owned(), None),
        };
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO snapshots (digest, content, objects, created_at, key_id) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (digest) DO UPDATE SET content = excluded.content, key_id = excluded.key_id
                 WHERE snapshots.key_id IS NULL AND excluded.key_id IS NOT NULL",
        )
        .bind(digest)
        .bind(&content)
        .bind(i64::try_from(objects).unwrap_or(i64::MAX))
        .bind(now)
        .bind(key_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO renders (application, sha, digest, rendered_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (application, sha) DO UPDATE SET digest = excluded.digest, rendered_at = excluded.rendered_at",
        )
        .bind(app)
        .bind(sha)
        .bind(digest)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO app_git_state (application, target_sha, target_digest, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (application) DO UPDATE SET target_sha = excluded.target_sha,
                 target_digest = excluded.target_digest, updated_at = excluded.updated_at",
        )
        .bind(app)
        .bind(sha)
        .bind(digest)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The stored render of a revision, to apply to the cluster: `(digest, canonical JSON)` with
    /// Secret values opened; works without Git. Errors (`StoreError::Secrets`) when the render
    /// was sealed with a key that is not configured or not the right one.
    pub async fn render_to_apply(
        &self,
        app: &str,
        sha: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT s.digest, s.content, s.key_id FROM renders r JOIN snapshots s ON s.digest = r.digest
             WHERE r.application = $1 AND r.sha = $2",
        )
        .bind(app)
        .bind(sha)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let digest: String = r.try_get("digest")?;
            let content = self.open_row(&r, &digest)?;
            Ok((digest, content))
        })
        .transpose()
    }

    /// A stored snapshot's canonical JSON by digest, to apply to the cluster (a rollback or a
    /// pin): Secret values opened, as [`Store::render_to_apply`].
    pub async fn snapshot_to_apply(&self, digest: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT content, key_id FROM snapshots WHERE digest = $1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| self.open_row(&r, digest)).transpose()
    }

    fn open_row(&self, r: &sqlx::any::AnyRow, digest: &str) -> Result<String, StoreError> {
        let content: String = r.try_get("content")?;
        let key_id: Option<String> = r.try_get("key_id")?;
        Ok(secrets::open(
            self.secrets.as_deref(),
            digest,
            &content,
            key_id.as_deref(),
        )?)
    }

    /// Seals, with the active key, every stored snapshot not sealed by it yet: plaintext ones
    /// written before a key was configured, and ones sealed by an older key (rotation). A
    /// snapshot that cannot be opened (its key is missing or wrong) is left as it is and
    /// logged. Returns how many were rewritten; a no-op without a keyring.
    #[tracing::instrument(skip_all, err)]
    pub async fn seal_stored_renders(&self) -> Result<usize, StoreError> {
        let Some(ring) = self.secrets.clone() else {
            return Ok(0);
        };
        let active = ring.active_id().to_owned();
        let (mut after, mut rewritten) = (String::new(), 0);
        loop {
            let rows = sqlx::query(
                "SELECT digest, content, key_id FROM snapshots
                 WHERE (key_id IS NULL OR key_id <> $1) AND digest > $2 ORDER BY digest LIMIT 50",
            )
            .bind(&active)
            .bind(&after)
            .fetch_all(&self.pool)
            .await?;
            let Some(last) = rows.last() else {
                return Ok(rewritten);
            };
            after = last.try_get("digest")?;
            for r in &rows {
                let digest: String = r.try_get("digest")?;
                let old_key: Option<String> = r.try_get("key_id")?;
                let sealed = self
                    .open_row(r, &digest)
                    .and_then(|plain| Ok(ring.seal(&digest, &plain)?));
                let sealed = match sealed {
                    Ok(sealed) => sealed,
                    Err(e) => {
                        tracing::error!(%digest, error = %e, "stored render left as it is: cannot re-encrypt its Secret data");
                        continue;
                    }
                };
                let done = sqlx::query(
                    "UPDATE snapshots SET content = $1, key_id = $2 WHERE digest = $3 AND COALESCE(key_id, '') = $4",
                )
                .bind(&sealed)
                .bind(&active)
                .bind(&digest)
                .bind(old_key.unwrap_or_default())
                .execute(&self.pool)
                .await?;
                rewritten += usize::try_from(done.rows_affected()).unwrap_or(0);
            }
        }
    }

    /// The stored render of a revision as stored: `(digest, canonical JSON)`, Secret values
    /// sealed when a key was configured (for display and diffs, which redact them anyway);
    /// works without Git. To apply, use [`Store::render_to_apply`].
    pub async fn rendered_snapshot(
        &self,
        app: &str,
        sha: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT s.digest, s.content FROM renders r JOIN snapshots s ON s.digest = r.digest
             WHERE r.application = $1 AND r.sha = $2",
        )
        .bind(app)
        .bind(sha)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get("digest")?, r.try_get("content")?)))
            .transpose()
    }

    /// Number of distinct stored snapshots (content addressing check).
    pub async fn snapshot_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM snapshots")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Records the outcome of a fetch of `repository`.
    pub async fn record_fetch(
        &self,
        repository: &str,
        error: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError> {
        match error {
            None => {
                sqlx::query(
                    "INSERT INTO repository_state (repository, last_fetch_at) VALUES ($1, $2)
                     ON CONFLICT (repository) DO UPDATE SET last_fetch_at = excluded.last_fetch_at,
                         last_error = NULL, last_error_at = NULL",
                )
                .bind(repository)
                .bind(now)
                .execute(&self.pool)
                .await?
            }
            Some(message) => {
                sqlx::query(
                    "INSERT INTO repository_state (repository, last_error, last_error_at) VALUES ($1, $2, $3)
                     ON CONFLICT (repository) DO UPDATE SET last_error = excluded.last_error,
                         last_error_at = excluded.last_error_at",
                )
                .bind(repository)
                .bind(message)
                .bind(now)
                .execute(&self.pool)
                .await?
            }
        };
        Ok(())
    }

    /// The last fetch error of a repository, if the last fetch failed.
    pub async fn repository_error(&self, repository: &str) -> Result<Option<String>, StoreError> {
        let error: Option<Option<String>> =
            sqlx::query_scalar("SELECT last_error FROM repository_state WHERE repository = $1")
                .bind(repository)
                .fetch_optional(&self.pool)
                .await?;
        Ok(error.flatten())
    }

    /// Records an application-level Git error (unknown revision, render failure).
    pub async fn record_app_error(
        &self,
        app: &str,
        error: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO app_git_state (application, last_error, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (application) DO UPDATE SET last_error = excluded.last_error, updated_at = excluded.updated_at",
        )
        .bind(app)
        .bind(error)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A page of an application's timeline, newest first (by time, then id), optionally only
    /// some kinds. `cursor` is the `next` of the previous page.
    pub async fn timeline_page(
        &self,
        app: &str,
        cursor: Option<&str>,
        limit: u32,
        kinds: &[String],
    ) -> Result<(Vec<TimelineEntry>, Option<String>), StoreError> {
        let limit = i64::from(limit.clamp(1, 500));
        // Keyset on (occurred_at, id), newest first; the cursor is "<occurred_at>:<id>".
        let (at, id) = cursor
            .and_then(|c| c.split_once(':'))
            .and_then(|(a, i)| Some((a.parse::<i64>().ok()?, i.parse::<i64>().ok()?)))
            .unwrap_or((i64::MAX, i64::MAX));
        let mut sql = String::from(
            "SELECT id, kind, occurred_at, message, detail FROM timeline
             WHERE application = $1 AND (occurred_at, id) < ($2, $3)",
        );
        if !kinds.is_empty() {
            let list: Vec<String> = (0..kinds.len()).map(|i| format!("${}", i + 5)).collect();
            sql.push_str(&format!(" AND kind IN ({})", list.join(", ")));
        }
        sql.push_str(" ORDER BY occurred_at DESC, id DESC LIMIT $4");
        let mut q = sqlx::query(&sql)
            .bind(app)
            .bind(at)
            .bind(id)
            .bind(limit + 1);
        for k in kinds {
            q = q.bind(k);
        }
        let rows = q.fetch_all(&self.pool).await?;
        let items = rows
            .iter()
            .map(|r| {
                let detail: String = r.try_get("detail")?;
                Ok(TimelineEntry {
                    id: r.try_get("id")?,
                    kind: r.try_get("kind")?,
                    occurred_at: r.try_get("occurred_at")?,
                    message: r.try_get("message")?,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(keyset_page(items, limit, |e| {
            format!("{}:{}", e.occurred_at, e.id)
        }))
    }

    /// A page of the whole history of an application, newest first: its timeline events merged
    /// with the commits touching its path (kind `commit`). `kinds` filters (empty: all). The
    /// cursor keeps each stream's position: `<events>|<commits>`, each empty (start), `~`
    /// (exhausted) or that stream's own cursor.
    pub async fn history_page(
        &self,
        app: &str,
        cursor: Option<&str>,
        limit: u32,
        kinds: &[String],
    ) -> Result<(Vec<TimelineEntry>, Option<String>), StoreError> {
        let limit = limit.clamp(1, 200);
        let (ev_cursor, co_cursor) = cursor.and_then(|c| c.split_once('|')).unwrap_or(("", ""));
        let want_commits = kinds.is_empty() || kinds.iter().any(|k| k == "commit");
        let event_kinds: Vec<String> = kinds.iter().filter(|k| *k != "commit").cloned().collect();
        let want_events = kinds.is_empty() || !event_kinds.is_empty();
        let some = |c: &str| (!c.is_empty()).then(|| c.to_owned());
        let (events, ev_next) = if want_events && ev_cursor != "~" {
            self.timeline_page(app, some(ev_cursor).as_deref(), limit, &event_kinds)
                .await?
        } else {
            (Vec::new(), None)
        };
        let (commits, co_next) = if want_commits && co_cursor != "~" {
            self.app_commits(app, some(co_cursor).as_deref(), limit)
                .await?
        } else {
            (Vec::new(), None)
        };
        let commits: Vec<TimelineEntry> = commits
            .into_iter()
            .map(|c| {
                let gone = if c.reachable {
                    ""
                } else {
                    " (no longer on the branch)"
                };
                TimelineEntry {
                    id: 0,
                    kind: "commit".into(),
                    occurred_at: c.committed_at,
                    message: format!("{} by {}{gone}", c.title, c.author_name),
                    detail: serde_json::json!({"sha": c.sha, "author_email": c.author_email}),
                }
            })
            .collect();
        // Merge newest first and keep `limit`; each stream resumes after what was shown.
        let (mut e, mut c) = (0, 0);
        let mut out = Vec::new();
        while out.len() < limit as usize && (e < events.len() || c < commits.len()) {
            let take_event = match (events.get(e), commits.get(c)) {
                (Some(ev), Some(co)) => ev.occurred_at >= co.occurred_at,
                (Some(_), None) => true,
                _ => false,
            };
            if take_event {
                out.push(events[e].clone());
                e += 1;
            } else {
                out.push(commits[c].clone());
                c += 1;
            }
        }
        let resume = |shown: usize, all: usize, next: &Option<String>, was: &str, key: String| {
            if shown == all && next.is_none() {
                "~".to_owned()
            } else if shown > 0 {
                key
            } else {
                was.to_owned()
            }
        };
        let ev_key = e
            .checked_sub(1)
            .map(|i| format!("{}:{}", events[i].occurred_at, events[i].id))
            .unwrap_or_default();
        let co_key = c
            .checked_sub(1)
            .and_then(|i| {
                commits[i]
                    .detail
                    .get("sha")
                    .and_then(|s| s.as_str())
                    .map(|sha| format!("{}:{sha}", commits[i].occurred_at))
            })
            .unwrap_or_default();
        let ev_pos = resume(
            e,
            events.len(),
            &ev_next,
            if want_events { ev_cursor } else { "~" },
            ev_key,
        );
        let co_pos = resume(
            c,
            commits.len(),
            &co_next,
            if want_commits { co_cursor } else { "~" },
            co_key,
        );
        let next = (ev_pos != "~" || co_pos != "~").then(|| format!("{ev_pos}|{co_pos}"));
        Ok((out, next))
    }

    /// A fingerprint of an application's history (newest event id, commit count): it changes
    /// whenever something is added, so live views know when to reload.
    pub async fn history_version(&self, app: &str) -> Result<(i64, i64), StoreError> {
        let events: Option<i64> =
            sqlx::query_scalar("SELECT MAX(id) FROM timeline WHERE application = $1")
                .bind(app)
                .fetch_one(&self.pool)
                .await?;
        let commits: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM app_commits WHERE application = $1")
                .bind(app)
                .fetch_one(&self.pool)
                .await?;
        Ok((events.unwrap_or(0), commits))
    }

    /// The newest timeline events of an application: `(kind, message)`, newest first.
    pub async fn timeline(
        &self,
        app: &str,
        limit: u32,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, message FROM timeline WHERE application = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(app)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("kind")?, r.try_get("message")?)))
            .collect()
    }
}
