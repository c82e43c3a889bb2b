//! The catalog aggregate: repositories, clusters and applications.

use app::model::{AppListPage, AppListQuery, AppSummary, SyncPolicy};
use sqlx::Row;

use super::{Store, StoreError};
use crate::clock::Millis;
use crate::config::{ApplicationSettings, ClusterSettings, RepositorySettings};

/// What `tidemark.toml` declares; stored as `source = 'config'`.
#[derive(Debug, Clone, Copy)]
pub struct DeclaredCatalog<'a> {
    pub repositories: &'a [RepositorySettings],
    pub clusters: &'a [ClusterSettings],
    pub applications: &'a [ApplicationSettings],
}

/// Whether an application name is free, declared in config, or created through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppOrigin {
    Config,
    Api,
    /// Declared in Git by this generator (`application/ROOT`, `generator/NAME`).
    Git(String),
}

/// Forgets the render of application `app`'s current target when what it renders (repository,
/// path, revision, render options, and — for Helm's `.Release.Namespace` and `.Capabilities` —
/// namespace and cluster) changed, or it was retired: the next ingest renders it afresh instead
/// of keeping the old objects until the next commit. Run after the row is rewritten, with the
/// values it had.
async fn forget_render_if_moved(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    app: &ApplicationSettings,
    before: Option<&(RenderedAs, bool)>,
) -> Result<(), StoreError> {
    if before.is_none_or(|(b, retired)| !retired && *b == RenderedAs::of(app)) {
        return Ok(());
    }
    // The digest too, so the new render is announced as a new target; the refusals, so a
    // revived or moved app of apps says them again.
    sqlx::query(
        "UPDATE app_git_state SET target_sha = NULL, target_digest = NULL, declaration_refusals = NULL
         WHERE application = $1",
    )
        .bind(&app.name)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// What an application's render depends on, besides its Git revision.
#[derive(Debug, PartialEq, Eq, sqlx::FromRow)]
struct RenderedAs {
    repository: String,
    path: String,
    target_revision: String,
    render_options: String,
    namespace: String,
    cluster: String,
}

impl RenderedAs {
    fn of(app: &ApplicationSettings) -> Self {
        Self {
            repository: app.repository.clone(),
            path: app.path.clone(),
            target_revision: app.revision.clone(),
            render_options: super::RenderOptions::of(app),
            namespace: app.namespace.clone(),
            cluster: app.cluster.clone(),
        }
    }

    /// The stored values of application `name`, if it exists, and whether it is retired (a
    /// retired application brought back renders afresh too: an app of apps declares again what
    /// was retired with it).
    async fn read(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        name: &str,
    ) -> Result<Option<(Self, bool)>, StoreError> {
        let row = sqlx::query(
            "SELECT repository, path, target_revision, render_options, namespace, cluster, retired_at
             FROM applications WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?;
        row.map(|r| {
            let retired: Option<i64> = r.try_get("retired_at")?;
            Ok((<Self as sqlx::FromRow<_>>::from_row(&r)?, retired.is_some()))
        })
        .transpose()
    }
}

/// Writes an application owned by the API (`generated: None`) or declared in Git by
/// `generated = Some((generator, declared_spec))`, creating it or rewriting it (and bringing it
/// back if it was retired). The caller has checked who may own the name; for a generated one the
/// write itself checks again (another replica may have taken the name since): `false` when the
/// name belongs to something else and nothing was written.
pub(super) async fn upsert_application(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    app: &ApplicationSettings,
    generated: Option<(&str, &str)>,
    now: Millis,
) -> Result<bool, StoreError> {
    let before = RenderedAs::read(tx, &app.name).await?;
    let owned = if generated.is_some() {
        " WHERE applications.generator = excluded.generator"
    } else {
        ""
    };
    let written = sqlx::query(&format!(
        "INSERT INTO applications (name, project, repository, path, target_revision, cluster, namespace,
             sync_policy, self_heal, prune, ignore_rules, approval_policy, compare_options, require_signed, render_options, source, generator, declared_spec, created_at, updated_at, retired_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $13, $14, $15, $16, 'api', $17, $18, $12, $12, NULL)
         ON CONFLICT (name) DO UPDATE SET project = excluded.project, repository = excluded.repository,
             path = excluded.path, target_revision = excluded.target_revision, cluster = excluded.cluster,
             namespace = excluded.namespace, sync_policy = excluded.sync_policy, self_heal = excluded.self_heal,
             prune = excluded.prune, ignore_rules = excluded.ignore_rules,
             approval_policy = excluded.approval_policy, compare_options = excluded.compare_options,
             require_signed = excluded.require_signed, render_options = excluded.render_options,
             source = 'api', generator = excluded.generator, declared_spec = excluded.declared_spec,
             updated_at = excluded.updated_at, retired_at = NULL{owned}",
    ))
    .bind(&app.name)
    .bind(&app.project)
    .bind(&app.repository)
    .bind(&app.path)
    .bind(&app.revision)
    .bind(&app.cluster)
    .bind(&app.namespace)
    .bind(app.sync_policy.as_str())
    .bind(i64::from(app.self_heal))
    .bind(i64::from(app.prune))
    .bind(serde_json::to_string(&app.ignore).unwrap_or_else(|_| "[]".into()))
    .bind(now)
    .bind(serde_json::to_string(&app.approvals).unwrap_or_else(|_| "{}".into()))
    .bind(serde_json::to_string(&app.compare).unwrap_or_else(|_| "{}".into()))
    .bind(i64::from(app.require_signed))
    .bind(super::RenderOptions::of(app))
    .bind(generated.map(|g| g.0))
    .bind(generated.map(|g| g.1))
    .execute(&mut **tx)
    .await?;
    if written.rows_affected() == 0 {
        return Ok(false);
    }
    forget_render_if_moved(tx, app, before.as_ref()).await?;
    Ok(true)
}

impl Store {
    /// Where an active application comes from, if it exists.
    /// The project of an active application (`None`: no such application).
    pub async fn application_project(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT project FROM applications WHERE name = $1 AND retired_at IS NULL",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn app_origin(&self, name: &str) -> Result<Option<AppOrigin>, StoreError> {
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT source, generator FROM applications WHERE name = $1 AND retired_at IS NULL",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(s, generator)| match generator {
            Some(g) => AppOrigin::Git(g),
            None if s == "config" => AppOrigin::Config,
            None => AppOrigin::Api,
        }))
    }

    /// Creates (or, with `replace`, rewrites) an application owned by the API. The caller has
    /// validated it, checked that the name is not declared in config, and authorized the actor
    /// in both the current project and `app.project` (the one it may move to).
    pub async fn save_api_application(
        &self,
        app: &ApplicationSettings,
        audit: &super::AuditEvent,
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        upsert_application(&mut tx, app, None, now).await?;
        super::append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Makes the stored config-declared catalog equal to `declared`, in one transaction:
    /// upserts every entry, retires config-declared applications that are no longer declared
    /// (their history stays) and brings back ones that are declared again.
    #[tracing::instrument(skip_all, fields(apps = declared.applications.len()), err)]
    pub async fn sync_declared(
        &self,
        declared: DeclaredCatalog<'_>,
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        for repo in declared.repositories {
            sqlx::query(
                "INSERT INTO repositories (name, url, source, created_at, updated_at)
                 VALUES ($1, $2, 'config', $3, $3)
                 ON CONFLICT (name) DO UPDATE SET url = excluded.url, source = 'config',
                     updated_at = excluded.updated_at",
            )
            .bind(&repo.name)
            .bind(&repo.url)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        for cluster in declared.clusters {
            sqlx::query(
                "INSERT INTO clusters (name, url, source, created_at, updated_at)
                 VALUES ($1, $2, 'config', $3, $3)
                 ON CONFLICT (name) DO UPDATE SET url = excluded.url, source = 'config',
                     updated_at = excluded.updated_at",
            )
            .bind(&cluster.name)
            .bind(&cluster.url)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        for app in declared.applications {
            let before = RenderedAs::read(&mut tx, &app.name).await?;
            sqlx::query(
                "INSERT INTO applications (name, project, repository, path, target_revision,
                     cluster, namespace, sync_policy, self_heal, prune, ignore_rules, approval_policy, compare_options, require_signed, render_options, source, created_at, updated_at, retired_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $10, $11, $12, $13, $14, $15, $16, 'config', $9, $9, NULL)
                 ON CONFLICT (name) DO UPDATE SET project = excluded.project,
                     repository = excluded.repository, path = excluded.path,
                     target_revision = excluded.target_revision, cluster = excluded.cluster,
                     namespace = excluded.namespace, sync_policy = excluded.sync_policy,
                     self_heal = excluded.self_heal, prune = excluded.prune, ignore_rules = excluded.ignore_rules,
                     approval_policy = excluded.approval_policy, compare_options = excluded.compare_options,
                     require_signed = excluded.require_signed, render_options = excluded.render_options, source = 'config', generator = NULL, declared_spec = NULL, updated_at = excluded.updated_at, retired_at = NULL",
            )
            .bind(&app.name)
            .bind(&app.project)
            .bind(&app.repository)
            .bind(&app.path)
            .bind(&app.revision)
            .bind(&app.cluster)
            .bind(&app.namespace)
            .bind(app.sync_policy.as_str())
            .bind(now)
            .bind(i64::from(app.self_heal))
            .bind(i64::from(app.prune))
            .bind(serde_json::to_string(&app.ignore).unwrap_or_else(|_| "[]".into()))
            .bind(serde_json::to_string(&app.approvals).unwrap_or_else(|_| "{}".into()))
            .bind(serde_json::to_string(&app.compare).unwrap_or_else(|_| "{}".into()))
            .bind(i64::from(app.require_signed))
            .bind(super::RenderOptions::of(app))
            .execute(&mut *tx)
            .await?;
            forget_render_if_moved(&mut tx, app, before.as_ref()).await?;
        }
        let active: Vec<(String,)> = sqlx::query_as(
            "SELECT name FROM applications WHERE source = 'config' AND retired_at IS NULL",
        )
        .fetch_all(&mut *tx)
        .await?;
        for (name,) in active {
            if !declared.applications.iter().any(|a| a.name == name) {
                sqlx::query(
                    "UPDATE applications SET retired_at = $1, updated_at = $1 WHERE name = $2",
                )
                .bind(now)
                .bind(&name)
                .execute(&mut *tx)
                .await?;
                tracing::info!(app = %name, "application no longer declared in config: retired");
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every active (not retired) application, sorted by name.
    #[tracing::instrument(skip_all, err)]
    pub async fn list_applications(&self) -> Result<Vec<AppSummary>, StoreError> {
        let page = self
            .application_page(&AppListQuery::default(), i64::from(i32::MAX), None)
            .await?;
        Ok(page.items)
    }

    /// One active application's summary.
    pub async fn application_summary(&self, name: &str) -> Result<Option<AppSummary>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SUMMARY_COLUMNS} FROM applications a {SUMMARY_JOINS} WHERE a.retired_at IS NULL AND a.name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(summary_from).transpose()
    }

    /// One page (by name) of the active applications matching the filters, with the total
    /// that match and every project (for the filter).
    #[tracing::instrument(skip_all, err)]
    /// `only`: the projects the reader may see (`None`: all).
    pub async fn application_page(
        &self,
        q: &AppListQuery,
        limit: i64,
        only: Option<&[String]>,
    ) -> Result<AppListPage, StoreError> {
        let limit = limit.max(1);
        // The filters, as SQL with numbered parameters shared by the page and the count.
        let mut filter = String::from("a.retired_at IS NULL");
        let mut params: Vec<String> = Vec::new();
        let param = |value: String, params: &mut Vec<String>| {
            params.push(value);
            format!("${}", params.len())
        };
        for word in q.q.split_whitespace().take(8) {
            let escaped = word
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            let p = param(format!("%{escaped}%"), &mut params);
            filter.push_str(&format!(
                " AND LOWER(a.name || ' ' || a.project || ' ' || a.repository || ' ' || a.path || ' ' || a.cluster || ' ' || a.namespace) LIKE {p} ESCAPE '\\'"
            ));
        }
        if let Some(projects) = only {
            if projects.is_empty() {
                filter.push_str(" AND 1 = 0");
            }
            let list: Vec<String> = projects
                .iter()
                .map(|p| param(p.clone(), &mut params))
                .collect();
            if !list.is_empty() {
                filter.push_str(&format!(" AND a.project IN ({})", list.join(", ")));
            }
        }
        if !q.project.is_empty() {
            let p = param(q.project.clone(), &mut params);
            filter.push_str(&format!(" AND a.project = {p}"));
        }
        if !q.status.is_empty() {
            let p = param(q.status.clone(), &mut params);
            filter.push_str(&format!(" AND COALESCE(st.sync_status, 'Unknown') = {p}"));
        }
        if !q.health.is_empty() {
            let p = param(q.health.clone(), &mut params);
            filter.push_str(&format!(" AND COALESCE(st.health, 'Unknown') = {p}"));
        }
        // The status join only when a filter needs it: counting 10,000 rows stays cheap.
        let status_join = if q.status.is_empty() && q.health.is_empty() {
            ""
        } else {
            "LEFT JOIN app_status st ON st.application = a.name"
        };
        let count_sql = format!("SELECT COUNT(*) FROM applications a {status_join} WHERE {filter}");
        let mut page_filter = filter.clone();
        if !q.after.is_empty() {
            let p = param(q.after.clone(), &mut params);
            page_filter.push_str(&format!(" AND a.name > {p}"));
        }
        let limit_param = params.len() + 1;
        // The page's names first (walking the name index, stopping at the limit), then the
        // summary columns for those rows only.
        let page_sql = format!(
            "SELECT {SUMMARY_COLUMNS}
             FROM (SELECT a.name FROM applications a {status_join} WHERE {page_filter}
                   ORDER BY a.name LIMIT ${limit_param}) pg
             JOIN applications a ON a.name = pg.name {SUMMARY_JOINS}
             ORDER BY a.name"
        );
        let mut page = sqlx::query(&page_sql);
        for p in &params {
            page = page.bind(p.clone());
        }
        let rows = page.bind(limit + 1).fetch_all(&self.pool).await?;
        let items = rows
            .iter()
            .map(summary_from)
            .collect::<Result<Vec<_>, StoreError>>()?;
        let (items, next) = super::git::keyset_page(items, limit, |a| a.name.clone());
        let mut count = sqlx::query_scalar::<_, i64>(&count_sql);
        for p in params
            .iter()
            .take(params.len() - usize::from(!q.after.is_empty()))
        {
            count = count.bind(p.clone());
        }
        let total = count.fetch_one(&self.pool).await?;
        // Distinct projects by skipping through the (project, name) index: one lookup per
        // project instead of a scan of every application. Retired applications' projects may
        // show up; choosing one just lists nothing.
        let projects: Vec<String> = sqlx::query_scalar(
            "WITH RECURSIVE p(project) AS (
                 SELECT MIN(project) FROM applications
                 UNION ALL
                 SELECT (SELECT MIN(project) FROM applications WHERE project > p.project)
                 FROM p WHERE p.project IS NOT NULL)
             SELECT project FROM p WHERE project IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        let projects = projects
            .into_iter()
            .filter(|p| only.is_none_or(|only| only.contains(p)))
            .collect();
        Ok(AppListPage {
            items,
            next,
            total,
            projects,
            now: crate::clock::now(),
        })
    }
}

/// The columns of an application summary, up to the WHERE clause.
/// The columns of an application summary (`a` is the application).
const SUMMARY_COLUMNS: &str = "a.name, a.project, a.repository, r.url AS repo_url, a.path, a.render_options, a.generator, a.target_revision,
                    a.cluster, a.namespace, a.sync_policy, g.target_sha,
                    COALESCE(rs.last_error, g.last_error) AS git_error,
                    st.sync_status, st.health, st.health_message,
                    p.revision AS pinned_revision,
                    ls.requested_by AS deploy_by, u.display_name AS deploy_by_name, ls.finished_at AS deploy_at,
                    sr.id AS request_id, sr.required AS request_required,
                    (SELECT MIN(d.opened_at) FROM drift_episodes d WHERE d.application = a.name AND d.closed_at IS NULL) AS drift_since,
                    (SELECT COUNT(*) FROM approvals ap WHERE ap.request_id = sr.id AND ap.void = 0) AS request_approvals";

/// What the summary joins to `applications a`.
const SUMMARY_JOINS: &str = "JOIN repositories r ON r.name = a.repository
             LEFT JOIN app_git_state g ON g.application = a.name
             LEFT JOIN repository_state rs ON rs.repository = a.repository
             LEFT JOIN app_status st ON st.application = a.name
             LEFT JOIN pins p ON p.application = a.name
             LEFT JOIN syncs ls ON ls.id = (SELECT MAX(s.id) FROM syncs s WHERE s.application = a.name AND s.status = 'succeeded')
             LEFT JOIN users u ON u.id = ls.requested_by
             LEFT JOIN sync_requests sr ON sr.application = a.name AND sr.status = 'pending'";

/// Where an application's manifests come from, as its page says it (see
/// `AppSummary::source`). Inline values are not shown (they may hold secrets).
fn source_label(repository: &str, url: &str, path: &str, o: &super::RenderOptions) -> String {
    use crate::domain::source::SourceType;
    if let Some(chart) = &o.helm.chart {
        return format!("Helm chart {chart} from {url}");
    }
    let at = if path.is_empty() {
        repository.to_owned()
    } else {
        format!("{repository} / {path}")
    };
    let helm = o.source == Some(SourceType::Helm) || !o.helm.is_default();
    match o.source {
        _ if helm && !o.helm.values_files.is_empty() => format!(
            "{at} · Helm chart, values from {}",
            o.helm.values_files.join(", ")
        ),
        _ if helm => format!("{at} · Helm chart"),
        Some(SourceType::Kustomize) => format!("{at} · Kustomize"),
        Some(SourceType::Directory) => format!("{at} · plain manifests"),
        _ => at,
    }
}

fn summary_from(row: &sqlx::any::AnyRow) -> Result<AppSummary, StoreError> {
    let policy: String = row.try_get("sync_policy")?;
    let deploy_by: Option<String> = row.try_get("deploy_by")?;
    let deploy_by_name: Option<String> = row.try_get("deploy_by_name")?;
    let request: Option<i64> = row.try_get("request_id")?;
    let repository: String = row.try_get("repository")?;
    let repo_url: String = row.try_get("repo_url")?;
    let path: String = row.try_get("path")?;
    let options: String = row.try_get("render_options")?;
    let options: super::RenderOptions =
        serde_json::from_str(&options).map_err(|_| StoreError::Corrupt {
            column: "applications.render_options",
            value: options,
        })?;
    Ok(AppSummary {
        name: row.try_get("name")?,
        project: row.try_get("project")?,
        source: {
            let label = source_label(&repository, &repo_url, &path, &options);
            match row.try_get::<Option<String>, _>("generator")? {
                Some(g) => format!("{label} · declared in Git by {g}"),
                None => label,
            }
        },
        repository,
        repo_url,
        path,
        target_revision: row.try_get("target_revision")?,
        cluster: row.try_get("cluster")?,
        namespace: row.try_get("namespace")?,
        sync_policy: policy
            .parse::<SyncPolicy>()
            .map_err(|_| StoreError::Corrupt {
                column: "applications.sync_policy",
                value: policy,
            })?,
        target_sha: row.try_get("target_sha")?,
        git_error: row.try_get("git_error")?,
        sync_status: row.try_get("sync_status")?,
        health: row.try_get("health")?,
        health_message: row.try_get("health_message")?,
        pinned: row
            .try_get::<Option<String>, _>("pinned_revision")?
            .is_some(),
        last_deploy_by: deploy_by
            .map(|id| deploy_by_name.unwrap_or_else(|| super::actor_display_name(&id))),
        last_deploy_at: row.try_get("deploy_at")?,
        drift_since: row.try_get("drift_since")?,
        pending: match request {
            Some(id) => Some((
                id,
                row.try_get("request_approvals")?,
                row.try_get("request_required")?,
            )),
            None => None,
        },
    })
}
