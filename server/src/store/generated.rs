//! Applications declared in Git (app of apps, directory generators): the catalog rows a
//! generator owns and the last run of each directory generator.

use serde_json::json;
use sqlx::Row;

use super::{Store, StoreError};
use crate::clock::Millis;
use crate::config::ApplicationSettings;

/// One application as a generator declares it.
#[derive(Debug, Clone)]
pub struct DeclaredApp {
    pub settings: ApplicationSettings,
    /// Canonical JSON of the definition it came from: an unchanged one writes nothing.
    pub spec: String,
    /// Where Git declares it: `apps/web.yaml#0` or the directory `apps/web`.
    pub origin: String,
}

/// A definition Git declares that Tidemark did not accept, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RefusedApp {
    /// The application's name, when the definition has one.
    pub name: String,
    pub origin: String,
    pub reason: String,
}

/// What one generator run changed in the catalog (names, sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GeneratedChanges {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub retired: Vec<String>,
    /// Names taken by an application declared elsewhere (tidemark.toml, the API, another
    /// generator).
    pub refused: Vec<RefusedApp>,
}

impl GeneratedChanges {
    /// Nothing created, updated, retired or refused.
    pub fn is_empty(&self) -> bool {
        self.created.is_empty()
            && self.updated.is_empty()
            && self.retired.is_empty()
            && self.refused.is_empty()
    }
}

/// The last run of a directory generator (`GET /api/v1/generators`).
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct GeneratorRun {
    pub name: String,
    /// The commit it ran on (full SHA).
    pub revision: Option<String>,
    /// Applications it declares, sorted.
    pub applications: Vec<String>,
    pub refused: Vec<RefusedApp>,
    /// Why it could not run (an unknown revision, an unreadable tree).
    pub error: Option<String>,
    /// Milliseconds since the epoch.
    pub updated_at: Millis,
    /// The settings JSON it ran with (internal: a changed template runs it again).
    #[serde(skip)]
    pub settings: String,
}

fn origin_of(source: &str, generator: Option<&str>) -> String {
    match (source, generator) {
        (_, Some(g)) => format!("declared in Git by {g}"),
        ("config", _) => "declared in tidemark.toml".into(),
        _ => "created through the API".into(),
    }
}

impl Store {
    /// What declared an active application in Git (`application/ROOT`, `generator/NAME`), or
    /// `None` (tidemark.toml, the API, or no such application).
    pub async fn generator_of(&self, name: &str) -> Result<Option<String>, StoreError> {
        let g: Option<Option<String>> = sqlx::query_scalar(
            "SELECT generator FROM applications WHERE name = $1 AND retired_at IS NULL",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(g.flatten())
    }

    /// Makes the active applications of `generator` equal to `declared`, in one transaction:
    /// creates new ones, rewrites changed ones (or ones retired earlier), retires those no longer
    /// declared (history kept). A name already taken by an application declared elsewhere is
    /// refused. Each change gets an audit row by `actor` and a timeline entry on the
    /// application; with `root`, a summary entry on the root's timeline too. Applications named in
    /// `refused` (still declared, but refused this time) are kept as they were.
    ///
    /// Errors: [`StoreError`] only; nothing is written then.
    pub async fn apply_generated(
        &self,
        generator: &str,
        actor: &super::Actor,
        revision: &str,
        (declared, refused): (&[DeclaredApp], &[String]),
        root: Option<&str>,
        now: Millis,
    ) -> Result<GeneratedChanges, StoreError> {
        let mut changes = GeneratedChanges::default();
        let mut tx = self.write_tx().await?;
        let short = app::model::short_revision(revision);
        let mut touched: Vec<String> = Vec::new();
        let mut kept: Vec<&str> = Vec::new();
        for d in declared {
            let app = &d.settings;
            let row = sqlx::query(
                "SELECT source, generator, declared_spec, retired_at FROM applications WHERE name = $1",
            )
            .bind(&app.name)
            .fetch_optional(&mut *tx)
            .await?;
            let verb = match row {
                None => "create",
                Some(r) => {
                    let source: String = r.try_get("source")?;
                    let owner: Option<String> = r.try_get("generator")?;
                    let spec: Option<String> = r.try_get("declared_spec")?;
                    let retired: Option<i64> = r.try_get("retired_at")?;
                    // Only this generator's own rows: a retired application declared elsewhere
                    // (tidemark.toml, the API, another generator) keeps its history to itself.
                    if owner.as_deref() != Some(generator) {
                        changes.refused.push(RefusedApp {
                            name: app.name.clone(),
                            origin: d.origin.clone(),
                            reason: format!(
                                "application {} {} ({})",
                                app.name,
                                if retired.is_none() {
                                    "already exists"
                                } else {
                                    "existed before"
                                },
                                origin_of(&source, owner.as_deref())
                            ),
                        });
                        continue;
                    }
                    if retired.is_some() {
                        "create"
                    } else if spec.as_deref() != Some(d.spec.as_str()) {
                        "update"
                    } else {
                        kept.push(&app.name);
                        continue;
                    }
                }
            };
            if !super::catalog::upsert_application(&mut tx, app, Some((generator, &d.spec)), now)
                .await?
            {
                // Taken since it was read (another replica, another generator).
                changes.refused.push(RefusedApp {
                    name: app.name.clone(),
                    origin: d.origin.clone(),
                    reason: format!("application {} was just declared elsewhere", app.name),
                });
                continue;
            }
            kept.push(&app.name);
            let event = actor.event(
                &format!("application_{verb}"),
                &format!("application:{}", app.name),
                "success",
                json!({"generator": generator, "origin": d.origin, "revision": revision,
                       "project": app.project, "repository": app.repository, "path": app.path,
                       "cluster": app.cluster, "namespace": app.namespace}),
                now,
            );
            super::append_audit(&mut tx, &event).await?;
            let done = if verb == "create" {
                "created"
            } else {
                "updated"
            };
            super::notify::insert_event(
                &mut tx,
                &app.name,
                "application",
                &format!(
                    "application {done} by {generator} from {} at {short}",
                    d.origin
                ),
                &json!({"generator": generator, "origin": d.origin, "revision": revision}),
                now,
            )
            .await?;
            touched.push(app.name.clone());
            if verb == "create" {
                changes.created.push(app.name.clone());
            } else {
                changes.updated.push(app.name.clone());
            }
        }
        let active: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM applications WHERE generator = $1 AND retired_at IS NULL ORDER BY name",
        )
        .bind(generator)
        .fetch_all(&mut *tx)
        .await?;
        for name in active {
            // A definition that is still there but refused (a typo, out of bounds) keeps the
            // application as it was: only a definition that is gone retires it.
            if kept.contains(&name.as_str()) || refused.contains(&name) {
                continue;
            }
            retire_in(
                &mut tx,
                &name,
                actor,
                json!({"generator": generator, "revision": revision}),
                &format!("application retired by {generator}: no longer declared at {short}"),
                now,
            )
            .await?;
            touched.push(name.clone());
            changes.retired.push(name);
        }
        // What a retired application declared goes with it (history kept), level by level.
        let mut parents = changes.retired.clone();
        while let Some(parent) = parents.pop() {
            let declared_by = format!("application/{parent}");
            let children: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM applications WHERE generator = $1 AND retired_at IS NULL ORDER BY name",
            )
            .bind(&declared_by)
            .fetch_all(&mut *tx)
            .await?;
            for child in children {
                retire_in(
                    &mut tx,
                    &child,
                    actor,
                    json!({"generator": declared_by, "revision": revision, "with": parent}),
                    &format!("application retired with {parent}, which declared it, at {short}"),
                    now,
                )
                .await?;
                touched.push(child.clone());
                changes.retired.push(child.clone());
                parents.push(child);
            }
        }
        if let Some(root) = root {
            for (verb, names) in [
                ("created", &changes.created),
                ("updated", &changes.updated),
                ("retired", &changes.retired),
            ] {
                if !names.is_empty() {
                    super::notify::insert_event(
                        &mut tx,
                        root,
                        "generated",
                        &format!("{verb} at {short}: {}", names.join(", ")),
                        &json!({"revision": revision, verb: names}),
                        now,
                    )
                    .await?;
                }
            }
            touched.push(root.to_owned());
        }
        for name in &touched {
            super::changes::notify_in(&mut tx, self.backend, name).await?;
        }
        tx.commit().await?;
        for name in &touched {
            self.changes.committed(name);
        }
        changes.created.sort();
        changes.updated.sort();
        Ok(changes)
    }

    /// Retires the active applications declared by a directory generator not among
    /// `generators` (ids) or by an app of apps whose root is not active; each gets an audit
    /// row by Tidemark and a timeline entry. Returns their names.
    pub async fn retire_orphaned_generated(
        &self,
        generators: &[String],
        now: Millis,
    ) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT a.name, a.generator FROM applications a WHERE a.generator IS NOT NULL AND a.retired_at IS NULL
             ORDER BY a.name",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut retired = Vec::new();
        for (name, generator) in rows {
            let orphaned = match generator.split_once('/') {
                Some(("application", root)) => self.application_project(root).await?.is_none(),
                _ => !generators.contains(&generator),
            };
            if !orphaned {
                continue;
            }
            let mut tx = self.write_tx().await?;
            retire_in(
                &mut tx,
                &name,
                &super::Actor::system(),
                json!({"generator": generator, "reason": "its generator is gone"}),
                &format!("application retired: {generator} no longer exists"),
                now,
            )
            .await?;
            tx.commit().await?;
            retired.push(name);
        }
        // A generator configured again later runs afresh.
        let runs: Vec<String> = sqlx::query_scalar("SELECT name FROM generators")
            .fetch_all(&self.pool)
            .await?;
        for run in runs {
            if !generators.contains(&format!("generator/{run}")) {
                sqlx::query("DELETE FROM generators WHERE name = $1")
                    .bind(&run)
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(retired)
    }

    /// The last run of directory generator `name`, if it ran.
    pub async fn generator_run(&self, name: &str) -> Result<Option<GeneratorRun>, StoreError> {
        let row = sqlx::query(
            "SELECT name, revision, settings, applications, refused, error, updated_at FROM generators WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| run_of(&r)).transpose()
    }

    /// Every directory generator that ran, by name.
    pub async fn generator_runs(&self) -> Result<Vec<GeneratorRun>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, revision, settings, applications, refused, error, updated_at FROM generators ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_of).collect()
    }

    /// Records a directory generator's run.
    pub async fn record_generator_run(&self, run: &GeneratorRun) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO generators (name, revision, settings, applications, refused, error, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (name) DO UPDATE SET revision = excluded.revision, settings = excluded.settings,
                 applications = excluded.applications, refused = excluded.refused,
                 error = excluded.error, updated_at = excluded.updated_at",
        )
        .bind(&run.name)
        .bind(&run.revision)
        .bind(&run.settings)
        .bind(serde_json::to_string(&run.applications).unwrap_or_else(|_| "[]".into()))
        .bind(serde_json::to_string(&run.refused).unwrap_or_else(|_| "[]".into()))
        .bind(&run.error)
        .bind(run.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Active applications declared in Git, as `(name, generator)`, by name.
    pub async fn generated_applications(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT name, generator FROM applications WHERE generator IS NOT NULL AND retired_at IS NULL ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Retires application `name` in `tx`: the row, an `application_retire` audit row by `actor`
/// with `details`, and `message` on its timeline.
async fn retire_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    name: &str,
    actor: &super::Actor,
    details: serde_json::Value,
    message: &str,
    now: Millis,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE applications SET retired_at = $1, updated_at = $1 WHERE name = $2")
        .bind(now)
        .bind(name)
        .execute(&mut **tx)
        .await?;
    let event = actor.event(
        "application_retire",
        &format!("application:{name}"),
        "success",
        details.clone(),
        now,
    );
    super::append_audit(tx, &event).await?;
    super::notify::insert_event(tx, name, "application", message, &details, now).await?;
    Ok(())
}

fn run_of(r: &sqlx::any::AnyRow) -> Result<GeneratorRun, StoreError> {
    let list = |column: &'static str| -> Result<String, StoreError> { Ok(r.try_get(column)?) };
    let applications = list("applications")?;
    let refused = list("refused")?;
    Ok(GeneratorRun {
        name: r.try_get("name")?,
        revision: r.try_get("revision")?,
        settings: r.try_get("settings")?,
        applications: serde_json::from_str(&applications).map_err(|_| StoreError::Corrupt {
            column: "generators.applications",
            value: applications.clone(),
        })?,
        refused: serde_json::from_str(&refused).map_err(|_| StoreError::Corrupt {
            column: "generators.refused",
            value: refused.clone(),
        })?,
        error: r.try_get("error")?,
        updated_at: r.try_get("updated_at")?,
    })
}
