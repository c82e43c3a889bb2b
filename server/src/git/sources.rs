//! The Git engine: one poller per repository (interval, or at once on a trigger from a webhook
//! or a refresh), each run fetching the mirror, ingesting every application's history and
//! rendering its target revision into a stored snapshot. Failures are recorded on the
//! repository and the applications' timelines, with credentials redacted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use git2::Oid;
use serde_json::json;
use tokio::sync::mpsc;

use super::charts::{ChartRepository, VersionRange};
use super::generators;
use super::history;
use super::signatures::{self, KeyError, TrustedKeys};
use super::{GitError, Mirror};
use crate::clock;
use crate::cluster::client::ClusterClient;
use crate::config::{RepositoryKind, Settings};
use crate::render::{self, Capabilities, Limits};
use crate::store::{AppSource, IngestReport, RefusedApp, SignatureRow, Store, StoreError};

/// Why a sync of one repository stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one application's ingest did.
#[derive(Debug, Clone, Default)]
pub struct AppIngest {
    pub tip: String,
    pub report: IngestReport,
    pub rendered: Option<Result<String, String>>,
}

/// All configured repositories and their pollers.
pub struct GitSources {
    store: Store,
    mirrors: HashMap<String, Arc<Mirror>>,
    /// Chart repository entries (`type = "helm"`), one per chart.
    charts: HashMap<String, Arc<ChartRepository>>,
    /// The connected clusters, for Helm's `.Capabilities` (set once at start).
    clusters: std::sync::OnceLock<Arc<HashMap<String, Arc<ClusterClient>>>>,
    intervals: HashMap<String, Duration>,
    limits: Limits,
    triggers: std::sync::Mutex<HashMap<String, mpsc::Sender<String>>>,
    /// Trusted key entries per (repository, project), and the loaded keys (content-addressed
    /// on disk under the cache directory).
    trust: Trust,
    /// What applications declared in Git are checked against (repositories, clusters, project
    /// bounds) and the directory generators.
    declaring: Arc<Settings>,
}

/// The trusted keys of each (repository, project), loaded once.
struct Trust {
    repository_entries: HashMap<String, Vec<String>>,
    project_entries: HashMap<String, Vec<String>>,
    cache_dir: std::path::PathBuf,
    timeout: Duration,
    loaded: std::sync::Mutex<HashMap<Vec<String>, Arc<TrustedKeys>>>,
}

impl Trust {
    /// The keys `app` trusts, a key error reported as a Git error of its repository.
    fn keys_of(&self, app: &AppSource) -> Result<Arc<TrustedKeys>, GitError> {
        self.keys(&app.repository, &app.project)
            .map_err(|e| GitError::Git {
                repo: app.repository.clone(),
                message: e.to_string(),
            })
    }

    fn keys(&self, repository: &str, project: &str) -> Result<Arc<TrustedKeys>, KeyError> {
        // The repository's entries, then the project's (as `Settings::trusted_keys`).
        let mut entries = self
            .repository_entries
            .get(repository)
            .cloned()
            .unwrap_or_default();
        entries.extend(
            self.project_entries
                .get(project)
                .cloned()
                .unwrap_or_default(),
        );
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(keys) = loaded.get(&entries) {
            return Ok(keys.clone());
        }
        let keys = Arc::new(TrustedKeys::load(&entries, &self.cache_dir, self.timeout)?);
        loaded.insert(entries, keys.clone());
        Ok(keys)
    }
}

/// Commits verified per ingest at most (beyond the new ones): older verdicts against changed
/// keys are re-evaluated this many at a time, newest first.
const RECHECK_BATCH: i64 = 200;

/// The paths whose commits are the application's history: its path, and for a chart the values
/// files it names elsewhere in the repository (resolved from the chart directory as written;
/// one that would climb above the repository is left out, its render fails anyway).
fn watched_paths(app: &AppSource) -> Vec<String> {
    let mut out = vec![app.path.clone()];
    for file in &app.render.helm.values_files {
        let mut at: Vec<&str> = app.path.split('/').filter(|s| !s.is_empty()).collect();
        let mut inside = !file.starts_with('/');
        for part in file.split('/') {
            match part {
                "" | "." => {}
                ".." => inside &= at.pop().is_some(),
                p => at.push(p),
            }
        }
        let joined = at.join("/");
        if inside && !joined.is_empty() && !out.contains(&joined) {
            out.push(joined);
        }
    }
    out
}

/// Chart versions kept in an application's history per poll (newest first).
const CHART_HISTORY: usize = 200;

/// The capabilities to render with, and why there are none when the cluster failed.
fn split_caps(
    caps: &Option<Result<Capabilities, String>>,
) -> (Option<&Capabilities>, Option<&str>) {
    match caps {
        Some(Ok(c)) => (Some(c), None),
        Some(Err(e)) => (None, Some(e.as_str())),
        None => (None, None),
    }
}

/// Prefix of a repository's poll lease in `app_leases` (application names cannot contain `:`).
pub const REPOSITORY_LEASE: &str = "repository:";

impl GitSources {
    /// Mirrors for every configured repository (nothing is fetched yet).
    pub fn new(store: Store, settings: &Settings) -> Arc<Self> {
        let cache = &settings.git.cache_dir;
        let mut limits = settings.git.limits();
        limits.helm_repositories = settings
            .repositories
            .iter()
            .filter(|r| r.kind == RepositoryKind::Helm && !r.url.starts_with("oci://"))
            .map(|r| {
                let auth = r.auth();
                let name = r.name.clone();
                render::HelmRepositoryAuth {
                    url: r.url.clone(),
                    username: r.username.clone(),
                    password: Arc::new(move || auth.secret(&name).ok().flatten()),
                }
            })
            .collect();
        Arc::new(Self {
            store,
            mirrors: settings
                .repositories
                .iter()
                .filter(|r| r.kind == RepositoryKind::Git)
                .map(|r| (r.name.clone(), Mirror::new(cache, r)))
                .collect(),
            charts: settings
                .repositories
                .iter()
                .filter(|r| r.kind == RepositoryKind::Helm)
                .map(|r| {
                    (
                        r.name.clone(),
                        Arc::new(ChartRepository::new(cache, r, &limits)),
                    )
                })
                .collect(),
            clusters: std::sync::OnceLock::new(),
            intervals: settings
                .repositories
                .iter()
                .map(|r| {
                    (
                        r.name.clone(),
                        Duration::from_secs(r.fetch_interval_secs.max(1)),
                    )
                })
                .collect(),
            limits,
            triggers: std::sync::Mutex::new(HashMap::new()),
            trust: Trust {
                repository_entries: settings
                    .repositories
                    .iter()
                    .map(|r| (r.name.clone(), r.trusted_keys.clone()))
                    .collect(),
                project_entries: settings
                    .projects
                    .iter()
                    .map(|p| (p.name.clone(), p.trusted_keys.clone()))
                    .collect(),
                cache_dir: settings.git.cache_dir.clone(),
                timeout: Duration::from_secs(settings.git.signature_timeout_secs.max(1)),
                loaded: std::sync::Mutex::new(HashMap::new()),
            },
            declaring: Arc::new(settings.clone()),
        })
    }

    /// Loads every configured set of trusted keys once: an entry that cannot be read or is not
    /// a key fails here, naming it.
    pub fn check_trusted_keys(&self, settings: &Settings) -> Result<(), KeyError> {
        for r in &settings.repositories {
            self.trust.keys(&r.name, "")?;
            for p in &settings.projects {
                self.trust.keys(&r.name, &p.name)?;
            }
        }
        for a in &settings.applications {
            let keys = self.trust.keys(&a.repository, &a.project)?;
            if keys.count > 0 {
                tracing::info!(app = %a.name, keys = keys.count, digest = %&keys.digest[..12], "trusted signing keys");
            }
        }
        let loaded: Vec<Arc<TrustedKeys>> = self
            .trust
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for keys in loaded {
            keys.check_tools().map_err(|message| KeyError {
                entry: format!("{} keys", keys.count),
                message,
            })?;
        }
        Ok(())
    }

    /// Says on `app`'s timeline that the keys it trusts changed.
    async fn keys_changed(
        &self,
        app: &str,
        keys: &TrustedKeys,
        now: clock::Millis,
    ) -> Result<(), StoreError> {
        self.store
            .add_timeline(
                app,
                "trusted_keys_changed",
                &format!(
                    "trusted signing keys changed ({} keys): pending revisions are checked again; deployed history keeps its verdicts",
                    keys.count
                ),
                &json!({"trust_digest": keys.digest}),
                now,
            )
            .await
    }

    /// Points every application at the keys it trusts now, before anything is reconciled: a
    /// key removed from the configuration stops counting at the restart, not at the next
    /// successful fetch. Until its revisions are checked against the new keys, an application
    /// with `require_signed` deploys nothing (it waits; nothing is recorded).
    pub async fn apply_trusted_keys(&self) -> Result<(), SyncError> {
        let now = clock::now();
        for app in self.store.app_sources().await? {
            let keys = self.trust.keys_of(&app)?;
            let previous = self
                .store
                .set_trust_digest(&app.name, &keys.digest, now)
                .await?;
            if previous.is_some_and(|p| p != keys.digest) {
                self.keys_changed(&app.name, &keys, now).await?;
            }
        }
        Ok(())
    }

    /// Starts one poller per repository; they stop when the returned handles are dropped
    /// with the runtime or aborted.
    pub fn spawn(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut handles = Vec::new();
        for name in self.mirrors.keys().chain(self.charts.keys()) {
            let (tx, mut rx) = mpsc::channel::<String>(16);
            self.triggers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.clone(), tx);
            let this = self.clone();
            let name = name.clone();
            let interval = self
                .intervals
                .get(&name)
                .copied()
                .unwrap_or(Duration::from_secs(60));
            handles.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let lease = format!("{REPOSITORY_LEASE}{name}");
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            // With several replicas, one polls each repository (a webhook's
                            // fetch runs wherever it arrived).
                            match this.store.try_lease(&lease, clock::now()).await {
                                Ok(true) => {}
                                Ok(false) => continue,
                                Err(e) => {
                                    tracing::warn!(repo = %name, error = %e, "cannot take the repository's poll lease");
                                    continue;
                                }
                            }
                        }
                        reason = rx.recv() => {
                            let Some(reason) = reason else { return };
                            tracing::info!(repo = %name, %reason, "fetch triggered");
                            while rx.try_recv().is_ok() {} // coalesce a burst of triggers
                        }
                    }
                    if let Err(e) = this.sync_repository(&name).await {
                        tracing::warn!(repo = %name, error = %e, "repository sync failed");
                    }
                }
            }));
        }
        handles
    }

    /// Asks the repository's poller to fetch now. False when the repository is unknown or
    /// its poller is not running.
    pub fn trigger(&self, repository: &str, reason: &str) -> bool {
        let triggers = self.triggers.lock().unwrap_or_else(|p| p.into_inner());
        match triggers.get(repository) {
            Some(tx) => {
                let _ = tx.try_send(reason.to_owned());
                true
            }
            None => false,
        }
    }

    /// Names of the configured repositories.
    pub fn repositories(&self) -> impl Iterator<Item = &str> {
        self.mirrors
            .keys()
            .chain(self.charts.keys())
            .map(String::as_str)
    }

    /// The connected clusters, whose version and API list Helm charts are rendered against.
    pub fn set_clusters(&self, clusters: Arc<HashMap<String, Arc<ClusterClient>>>) {
        let _ = self.clusters.set(clusters);
    }

    /// `.Capabilities` for rendering `app`: not asked when the application gives both itself
    /// or is not a chart; else its cluster's (cached by the client). `Err` carries why the
    /// cluster could not be asked (the render fails only if it is a chart).
    async fn capabilities_for(&self, app: &AppSource) -> Option<Result<Capabilities, String>> {
        let helm = &app.render.helm;
        if helm.kube_version.is_some() && !helm.api_versions.is_empty() {
            return None;
        }
        if app
            .render
            .source
            .is_some_and(|s| s != render::SourceType::Helm)
        {
            return None;
        }
        let client = self.clusters.get()?.get(&app.cluster)?.clone();
        Some(client.capabilities().await.map_err(|e| e.to_string()))
    }

    /// Fetches `repository` and ingests every application reading from it. A fetch failure is
    /// recorded on the repository and on each application's timeline.
    // Errors are logged once, by the poller (or returned to the caller).
    #[tracing::instrument(skip(self))]
    pub async fn sync_repository(
        &self,
        repository: &str,
    ) -> Result<Vec<(String, AppIngest)>, SyncError> {
        if let Some(chart) = self.charts.get(repository) {
            return self.sync_chart_repository(chart.clone()).await;
        }
        let mirror = self
            .mirrors
            .get(repository)
            .ok_or_else(|| GitError::NotFetched {
                repo: repository.to_owned(),
            })?
            .clone();
        let apps = self.store.apps_of_repository(repository).await?;
        let _guard = mirror.lock.lock().await;
        let fetched = {
            let m = mirror.clone();
            tokio::task::spawn_blocking(move || m.fetch_blocking())
                .await
                .map_err(|e| GitError::Fetch {
                    repo: repository.to_owned(),
                    message: e.to_string(),
                })?
        };
        let now = clock::now();
        if let Err(e) = fetched {
            let message = e.to_string();
            let previous = self.store.repository_error(repository).await?;
            self.store
                .record_fetch(repository, Some(&message), now)
                .await?;
            if previous.as_deref() != Some(message.as_str()) {
                for app in &apps {
                    self.store
                        .add_timeline(
                            &app.name,
                            "git_error",
                            &message,
                            &json!({"repository": repository}),
                            now,
                        )
                        .await?;
                }
            }
            return Err(e.into());
        }
        let recovered = self.store.repository_error(repository).await?.is_some();
        self.store.record_fetch(repository, None, now).await?;
        self.run_generators(&mirror, repository).await?;
        // Generators may have added applications of this repository.
        let mut apps = self.store.apps_of_repository(repository).await?;
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        // An app of apps may declare (or redeclare) applications of this repository while it
        // is ingested: they are ingested in the same fetch (a few rounds, for roots declaring
        // roots); one ingested already is ingested again when what it renders changed.
        for _round in 0..4 {
            apps.retain(|a| !seen.contains(&ingest_key(a)));
            if apps.is_empty() {
                break;
            }
            for listed in std::mem::take(&mut apps) {
                // Read again: a root ingested earlier in this round may have redeclared it
                // (or retired it, or moved it to another repository).
                let Some(app) = self.store.app_source(&listed.name).await? else {
                    continue;
                };
                if app.repository != repository || !seen.insert(ingest_key(&app)) {
                    continue;
                }
                if recovered {
                    self.store
                        .add_timeline(
                            &app.name,
                            "git_recovered",
                            &format!("fetching {repository} works again"),
                            &json!({}),
                            now,
                        )
                        .await?;
                }
                match self.ingest_app(&mirror, &app).await {
                    Ok(result) => out.push((app.name.clone(), result)),
                    Err(SyncError::Git(e)) => {
                        let message = e.to_string();
                        self.store
                            .record_app_error(&app.name, Some(&message), now)
                            .await?;
                        self.store
                            .add_timeline(&app.name, "git_error", &message, &json!({}), now)
                            .await?;
                    }
                    Err(e) => return Err(e),
                }
            }
            apps = self.store.apps_of_repository(repository).await?;
        }
        Ok(out)
    }

    /// Walks the application's history from its target revision and renders that revision
    /// unless its snapshot is already stored.
    async fn ingest_app(
        &self,
        mirror: &Arc<Mirror>,
        app: &AppSource,
    ) -> Result<AppIngest, SyncError> {
        let state = self.store.app_git_state(&app.name).await?;
        let (m, a, limits) = (mirror.clone(), app.clone(), self.limits.clone());
        let previous = state.ingested_tip.clone();
        // A revision whose declarations were held is rendered and read again (a verdict may
        // have come, a policy changed) until they are applied.
        let already_rendered = state
            .target_sha
            .clone()
            .filter(|sha| state.declarations_held.as_deref() != Some(sha.as_str()));
        let previous_digest = state.target_digest.clone();
        // The cluster is asked for `.Capabilities` only when a chart is about to be rendered.
        let (m2, a2, rendered_sha) = (mirror.clone(), app.clone(), already_rendered.clone());
        let renders_chart = tokio::task::spawn_blocking(move || {
            let repo = m2.open().ok()?;
            let tip = m2.resolve(&repo, &a2.revision).ok()?;
            Some(
                rendered_sha.as_deref() != Some(tip.to_string().as_str())
                    && render::is_chart(&repo, tip, &a2.path, a2.render.source),
            )
        })
        .await
        .ok()
        .flatten()
        .unwrap_or(false);
        let caps = if renders_chart {
            self.capabilities_for(app).await
        } else {
            None
        };
        type Walk = (
            String,
            Vec<history::CommitInfo>,
            bool,
            Option<Result<render::Rendered, render::RenderError>>,
        );
        let walked: Result<Walk, GitError> = tokio::task::spawn_blocking(move || {
            let repo = m.open()?;
            let tip = m.resolve(&repo, &a.revision)?;
            let git = |e: git2::Error| GitError::Git {
                repo: m.name.clone(),
                message: e.message().to_owned(),
            };
            let tip_s = tip.to_string();
            let (commits, full) = if previous.as_deref() == Some(tip_s.as_str()) {
                (Vec::new(), false)
            } else {
                // Incremental only when the previous tip is an ancestor (fast-forward).
                let hide = previous
                    .and_then(|p| Oid::from_str(&p).ok())
                    .filter(|old| repo.graph_descendant_of(tip, *old).unwrap_or(false));
                let full = hide.is_none();
                let watched = watched_paths(&a);
                let watched: Vec<&str> = watched.iter().map(String::as_str).collect();
                (
                    history::touching_any(&repo, tip, &watched, hide).map_err(git)?,
                    full,
                )
            };
            let rendered = (already_rendered.as_deref() != Some(tip_s.as_str())).then(|| {
                let (caps, caps_error) = split_caps(&caps);
                render::render_source(
                    &repo,
                    tip,
                    &render::Source {
                        app: &a.name,
                        path: &a.path,
                        namespace: &a.namespace,
                        source: a.render.source,
                        helm: &a.render.helm,
                        capabilities: caps,
                        capabilities_error: caps_error,
                    },
                    &limits,
                )
            });
            Ok((tip_s, commits, full, rendered))
        })
        .await
        .map_err(|e| GitError::Git {
            repo: app.repository.clone(),
            message: e.to_string(),
        })?;
        let (tip, commits, full, rendered) = walked?;
        let now = clock::now();
        let report = if commits.is_empty() && !full {
            IngestReport::default()
        } else {
            self.store
                .ingest_history(&app.name, &app.repository, &commits, full, &tip, now)
                .await?
        };
        // Signatures before the target is announced: a reconcile must find its verdict.
        self.check_signatures(mirror, app, &tip, now).await?;
        if report.now_unreachable > 0 {
            let message = format!(
                "{} commits are no longer reachable from {} (force push)",
                report.now_unreachable, app.revision
            );
            self.store
                .add_timeline(&app.name, "force_push", &message, &json!({"tip": tip}), now)
                .await?;
        }
        if let Some(Ok(r)) = &rendered {
            self.declare_from_root(app, &state, &tip, &r.definitions)
                .await?;
        }
        let rendered = self
            .store_render(
                app,
                &tip,
                rendered,
                previous_digest,
                state.last_error.clone(),
                now,
            )
            .await?;
        Ok(AppIngest {
            tip,
            report,
            rendered,
        })
    }

    /// The applications `root`'s render at `tip` declares (app of apps): created, updated,
    /// retired; refusals on the root's timeline and in the audit ledger. A root that declares
    /// nothing and never did writes nothing.
    async fn declare_from_root(
        &self,
        root: &AppSource,
        state: &crate::store::AppGitState,
        tip: &str,
        definitions: &[(String, serde_json::Value)],
    ) -> Result<(), SyncError> {
        let id = generators::root_id(&root.name);
        if definitions.is_empty()
            && !self
                .store
                .generated_applications()
                .await?
                .iter()
                .any(|(_, g)| *g == id)
        {
            // Nothing declared any more: a refusal said before is forgotten, so the same bad
            // definition coming back is said again.
            if !state.declaration_refusals.is_empty() {
                self.store
                    .set_declaration_refusals(&root.name, &[], clock::now())
                    .await?;
            }
            return Ok(());
        }
        // A root's declarations are held whole (nothing created, updated or retired) when its
        // revision is not one it may deploy, it declares too many, or it sits too deep.
        let held = match crate::reconcile::signature_gate(&self.store, root, tip).await {
            Err(crate::reconcile::ReconcileError::Unverified(why)) => Some((why, true)),
            Err(crate::reconcile::ReconcileError::Store(e)) => return Err(e.into()),
            Err(e) => Some((e.to_string(), true)),
            Ok(_) if definitions.len() > generators::MAX_APPLICATIONS => Some((
                format!(
                    "it holds {} application definitions; at most {} are read",
                    definitions.len(),
                    generators::MAX_APPLICATIONS
                ),
                false,
            )),
            Ok(_) if !definitions.is_empty() && self.nesting(&root.name).await? >= generators::MAX_NESTING => {
                Some((
                    format!(
                    "{} is itself declared {} levels below an application of tidemark.toml or the API; at most {} levels are followed",
                    root.name,
                    generators::MAX_NESTING,
                    generators::MAX_NESTING
                    ),
                    false,
                ))
            }
            Ok(_) => None,
        };
        if let Some((why, again)) = held {
            return self.hold_declarations(root, &id, tip, &why, again).await;
        }
        if state.declarations_held.is_some() {
            self.store
                .set_declarations_held(&root.name, None, clock::now())
                .await?;
        }
        let mut accepted = Vec::new();
        let mut refused = Vec::new();
        for (origin, obj) in definitions {
            match generators::from_definition(
                obj,
                origin,
                (&root.project, &root.repository, root.require_signed),
                &self.declaring,
            ) {
                Ok(d) if d.settings.name == root.name => refused.push(RefusedApp {
                    name: d.settings.name,
                    origin: origin.clone(),
                    reason: "an application cannot declare itself".into(),
                }),
                Ok(d) => accepted.push(d),
                Err(r) => refused.push(r),
            }
        }
        let previous = &state.declaration_refusals;
        let changes = self
            .apply_declared(&id, tip, accepted, refused, Some(&root.name), previous)
            .await?;
        if changes.refused != *previous {
            self.store
                .set_declaration_refusals(&root.name, &changes.refused, clock::now())
                .await?;
        }
        Ok(())
    }

    /// How many app-of-apps levels declare `name` (0: declared in tidemark.toml or through the
    /// API, or not at all).
    async fn nesting(&self, name: &str) -> Result<usize, SyncError> {
        let mut depth = 0;
        let mut name = name.to_owned();
        while depth <= generators::MAX_NESTING {
            match self.store.generator_of(&name).await? {
                Some(g) => {
                    depth += 1;
                    match g.strip_prefix("application/") {
                        Some(parent) => name = parent.to_owned(),
                        None => break,
                    }
                }
                None => break,
            }
        }
        Ok(depth)
    }

    /// Leaves what root `root` declared as it was, saying why on its timeline and in the audit
    /// ledger (as the generator `id`). With `again` (a signature verdict, which a new key or
    /// policy can change), the revision is read again on each fetch until it is applied.
    async fn hold_declarations(
        &self,
        root: &AppSource,
        id: &str,
        tip: &str,
        why: &str,
        again: bool,
    ) -> Result<(), SyncError> {
        let now = clock::now();
        if again {
            self.store
                .set_declarations_held(&root.name, Some(tip), now)
                .await?;
        }
        let message = format!(
            "declarations at {} not applied (applications stay as they were): {why}",
            app::model::short_revision(tip)
        );
        // Read again on each fetch: said once per revision and reason.
        let said = self
            .store
            .add_timeline_once(
                &root.name,
                "generator_refused",
                &message,
                &json!({"revision": tip, "held": true, "reason": why}),
                &["held", "revision", "reason"],
                now,
            )
            .await?;
        if said {
            let event = generators::actor(id).event(
                "application_declare",
                &format!("application:{}", root.name),
                "refused",
                json!({"generator": id, "revision": tip, "reason": why}),
                now,
            );
            self.store.audit(&event).await?;
        }
        Ok(())
    }

    /// Applies one generator run: the catalog changes, then each refusal as an audit row by
    /// the generator and, for an app of apps, a timeline entry on the root — except those the
    /// `previous` run refused the same way (a refusal is said once, not at every commit).
    async fn apply_declared(
        &self,
        id: &str,
        tip: &str,
        accepted: Vec<crate::store::DeclaredApp>,
        mut refused: Vec<RefusedApp>,
        root: Option<&str>,
        previous: &[RefusedApp],
    ) -> Result<crate::store::GeneratedChanges, SyncError> {
        let now = clock::now();
        let actor = generators::actor(id);
        let refused_names: Vec<String> = refused.iter().map(|r| r.name.clone()).collect();
        let mut changes = self
            .store
            .apply_generated(id, &actor, tip, (&accepted, &refused_names), root, now)
            .await?;
        refused.append(&mut changes.refused);
        for r in refused.iter().filter(|r| !previous.contains(r)) {
            let event = actor.event(
                "application_declare",
                &format!("application:{}", r.name),
                "refused",
                json!({"generator": id, "origin": r.origin, "revision": tip, "reason": r.reason}),
                now,
            );
            self.store.audit(&event).await?;
            if let Some(root) = root {
                let message = format!(
                    "refused {} from {} at {}: {}",
                    if r.name.is_empty() {
                        "a definition"
                    } else {
                        &r.name
                    },
                    r.origin,
                    app::model::short_revision(tip),
                    r.reason
                );
                self.store
                    .add_timeline(
                        root,
                        "generator_refused",
                        &message,
                        &json!({"origin": r.origin, "revision": tip, "name": r.name}),
                        now,
                    )
                    .await?;
            }
        }
        changes.refused = refused;
        Ok(changes)
    }

    /// Runs the directory generators reading `repository` whose revision or settings changed
    /// since their last run.
    async fn run_generators(
        &self,
        mirror: &Arc<Mirror>,
        repository: &str,
    ) -> Result<(), SyncError> {
        let generators: Vec<_> = self
            .declaring
            .generators
            .iter()
            .filter(|g| g.repository == repository)
            .cloned()
            .collect();
        for g in generators {
            let settings_json = serde_json::to_string(&g).unwrap_or_default();
            let (m, glob, revision) = (mirror.clone(), g.path_glob.clone(), g.revision.clone());
            let walked =
                tokio::task::spawn_blocking(move || -> Result<(String, Vec<String>), String> {
                    let repo = m.open().map_err(|e| e.to_string())?;
                    let tip = m.resolve(&repo, &revision).map_err(|e| e.to_string())?;
                    let dirs = generators::matching_directories(&repo, tip, &glob)
                        .map_err(|e| e.message().to_owned())?;
                    Ok((tip.to_string(), dirs))
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            let last = self.store.generator_run(&g.name).await?;
            let mut run = crate::store::GeneratorRun {
                name: g.name.clone(),
                settings: settings_json,
                updated_at: clock::now(),
                ..Default::default()
            };
            match walked {
                Err(error) => {
                    run.error = Some(error);
                    if let Some(last) = last {
                        run.revision = last.revision;
                        run.applications = last.applications;
                        run.refused = last.refused;
                    }
                }
                Ok((tip, dirs)) => {
                    if last.as_ref().is_some_and(|l| {
                        l.error.is_none()
                            && l.revision.as_deref() == Some(tip.as_str())
                            && l.settings == run.settings
                    }) {
                        continue;
                    }
                    let id = generators::generator_id(&g.name);
                    if dirs.len() > generators::MAX_APPLICATIONS {
                        run.error = Some(format!(
                            "`{}` matches more than {} directories; nothing was changed",
                            g.path_glob,
                            generators::MAX_APPLICATIONS
                        ));
                        run.revision = Some(tip);
                    } else {
                        let mut accepted = Vec::new();
                        let mut refused = Vec::new();
                        for dir in &dirs {
                            match generators::from_directory(dir, &g, &self.declaring) {
                                Ok(d) => accepted.push(d),
                                Err(r) => refused.push(r),
                            }
                        }
                        // Two directories with one name (`envs/*/apps/*`): both are refused.
                        let mut names: HashMap<String, usize> = HashMap::new();
                        for d in &accepted {
                            *names.entry(d.settings.name.clone()).or_default() += 1;
                        }
                        let (unique, twice): (Vec<_>, Vec<_>) = accepted
                            .into_iter()
                            .partition(|d| names[&d.settings.name] == 1);
                        accepted = unique;
                        refused.extend(twice.into_iter().map(|d| RefusedApp {
                            name: d.settings.name.clone(),
                            origin: d.origin,
                            reason: format!(
                                "more than one directory is named `{}`",
                                d.settings.name
                            ),
                        }));
                        let changes = self
                            .apply_declared(
                                &id,
                                &tip,
                                accepted,
                                refused,
                                None,
                                last.as_ref().map_or(&[][..], |l| &l.refused),
                            )
                            .await?;
                        if !changes.is_empty() {
                            tracing::info!(generator = %g.name, created = ?changes.created, updated = ?changes.updated, retired = ?changes.retired, refused = changes.refused.len(), "generator ran");
                        }
                        run.applications = self
                            .store
                            .generated_applications()
                            .await?
                            .into_iter()
                            .filter(|(_, gen)| *gen == id)
                            .map(|(name, _)| name)
                            .collect();
                        run.refused = changes.refused;
                        run.revision = Some(tip);
                    }
                }
            }
            self.store.record_generator_run(&run).await?;
        }
        Ok(())
    }

    /// Stores a render of `tip` (or records why it failed, once per message), tells a pinned
    /// application's timeline about a target it will not deploy, and announces a new target.
    async fn store_render(
        &self,
        app: &AppSource,
        tip: &str,
        rendered: Option<Result<render::Rendered, render::RenderError>>,
        previous_digest: Option<String>,
        previous_error: Option<String>,
        now: clock::Millis,
    ) -> Result<Option<Result<String, String>>, SyncError> {
        Ok(match rendered {
            None => None,
            Some(Ok(r)) => {
                self.store
                    .save_render(
                        &app.name,
                        tip,
                        &r.digest,
                        &r.canonical,
                        r.objects.len(),
                        now,
                    )
                    .await?;
                self.store.record_app_error(&app.name, None, now).await?;
                // A pinned application keeps its pin: say so where people look, once per
                // rendering (a new tip that renders as the previous one is no news).
                if let Some(pin) = self.store.pin_of(&app.name).await? {
                    if pin.digest != r.digest
                        && previous_digest.as_deref() != Some(r.digest.as_str())
                    {
                        let message = format!(
                            "new target {} not deployed: pinned at {} by {} ({})",
                            app::model::short_revision(tip),
                            app::model::short_revision(&pin.revision),
                            pin.pinned_name,
                            pin.reason
                        );
                        self.store
                            .add_timeline(
                                &app.name,
                                "not_deployed_pinned",
                                &message,
                                &json!({"revision": tip, "pinned": pin.revision}),
                                now,
                            )
                            .await?;
                    }
                }
                // The replica holding the application's lease compares it now — when the
                // objects changed: a commit elsewhere in the repository moves the tip of every
                // application but renders most of them as before.
                if previous_digest.as_deref() != Some(r.digest.as_str()) {
                    self.store.publish_target(&app.name).await?;
                }
                Some(Ok(r.digest))
            }
            Some(Err(e)) => {
                let message = format!(
                    "rendering {} failed: {e}",
                    tip.get(..12).filter(|_| tip.len() == 40).unwrap_or(tip)
                );
                // The same failure on every poll is one timeline entry, not one per poll (the
                // error as it was before this poll's ingest).
                let previous = previous_error;
                self.store
                    .record_app_error(&app.name, Some(&message), now)
                    .await?;
                if previous.as_deref() != Some(message.as_str()) {
                    self.store
                        .add_timeline(
                            &app.name,
                            "render_error",
                            &message,
                            &json!({"revision": tip}),
                            now,
                        )
                        .await?;
                }
                Some(Err(e.to_string()))
            }
        })
    }

    /// Polls one chart repository entry: for each application following it, the chart's
    /// versions in the application's range (history: a version is a revision, dated by its
    /// publication), the newest as the target, rendered from its archive unless stored. A
    /// repository that cannot be read is recorded on the entry and, once per message, on the
    /// applications' timelines.
    async fn sync_chart_repository(
        &self,
        chart: Arc<ChartRepository>,
    ) -> Result<Vec<(String, AppIngest)>, SyncError> {
        let repository = chart.name.clone();
        let apps = self.store.apps_of_repository(&repository).await?;
        let _guard = chart.lock.lock().await;
        let mut out = Vec::new();
        let mut fetch_error: Option<String> = None;
        let previous_error = self.store.repository_error(&repository).await?;
        for app in apps {
            let now = clock::now();
            match self.ingest_chart_app(&chart, &app).await {
                Ok(result) => out.push((app.name.clone(), result)),
                Err(SyncError::Git(e)) => {
                    let message = e.to_string();
                    match &e {
                        GitError::Fetch { message, .. } => {
                            fetch_error.get_or_insert(message.clone());
                        }
                        GitError::Credential { .. } => {
                            fetch_error.get_or_insert(message.clone());
                        }
                        _ => {}
                    }
                    let previous = self.store.app_git_state(&app.name).await?.last_error;
                    self.store
                        .record_app_error(&app.name, Some(&message), now)
                        .await?;
                    if previous.as_deref() != Some(message.as_str())
                        && previous_error.as_deref() != Some(message.as_str())
                    {
                        self.store
                            .add_timeline(
                                &app.name,
                                "git_error",
                                &message,
                                &json!({"repository": repository}),
                                now,
                            )
                            .await?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.store
            .record_fetch(&repository, fetch_error.as_deref(), clock::now())
            .await?;
        match fetch_error {
            Some(message) => Err(SyncError::Git(GitError::Fetch {
                repo: repository,
                message,
            })),
            None => Ok(out),
        }
    }

    async fn ingest_chart_app(
        &self,
        chart: &Arc<ChartRepository>,
        app: &AppSource,
    ) -> Result<AppIngest, SyncError> {
        let range = VersionRange::parse(&app.revision).map_err(|e| GitError::UnknownRevision {
            repo: chart.name.clone(),
            revision: e,
        })?;
        let state = self.store.app_git_state(&app.name).await?;
        let blocking_err = |e: tokio::task::JoinError| GitError::Fetch {
            repo: chart.name.clone(),
            message: e.to_string(),
        };
        let c = chart.clone();
        let versions =
            tokio::task::spawn_blocking(move || c.versions_blocking(&range, CHART_HISTORY))
                .await
                .map_err(blocking_err)??;
        let tip = versions[0].clone();
        let now = clock::now();
        let commits: Vec<history::CommitInfo> = versions
            .iter()
            .map(|v| history::CommitInfo {
                sha: v.version.clone(),
                parents: Vec::new(),
                author_name: String::new(),
                author_email: String::new(),
                committer_name: chart.url.clone(),
                committer_email: String::new(),
                committed_at: v.created_ms.unwrap_or(now),
                title: format!("{} {}", chart.chart, v.version),
                body: [
                    v.app_version.as_ref().map(|a| format!("app version {a}")),
                    v.description.clone(),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("\n"),
            })
            .collect();
        // An OCI registry lists only the resolved version: earlier ones stay in the history.
        let full = !chart.url.starts_with("oci://");
        let report = self
            .store
            .ingest_history(
                &app.name,
                &app.repository,
                &commits,
                full,
                &tip.version,
                now,
            )
            .await?;
        if report.now_unreachable > 0 {
            let message = format!(
                "{} chart versions of {} in {} are no longer served by the repository (their stored renders still roll back)",
                report.now_unreachable,
                chart.chart,
                app.revision
            );
            self.store
                .add_timeline(
                    &app.name,
                    "force_push",
                    &message,
                    &json!({"tip": tip.version}),
                    now,
                )
                .await?;
        }
        let rendered = if state.target_sha.as_deref() == Some(tip.version.as_str()) {
            None
        } else {
            let caps = self.capabilities_for(app).await;
            let (c, a, limits, v) = (chart.clone(), app.clone(), self.limits.clone(), tip.clone());
            let archive = tokio::task::spawn_blocking(move || c.archive_blocking(&v))
                .await
                .map_err(blocking_err)??;
            Some(
                tokio::task::spawn_blocking(move || {
                    let (caps, caps_error) = split_caps(&caps);
                    render::render_chart_archive(
                        &archive,
                        &render::Source {
                            app: &a.name,
                            path: "",
                            namespace: &a.namespace,
                            source: Some(render::SourceType::Helm),
                            helm: &a.render.helm,
                            capabilities: caps,
                            capabilities_error: caps_error,
                        },
                        &limits,
                    )
                })
                .await
                .map_err(blocking_err)?,
            )
        };
        let rendered = self
            .store_render(
                app,
                &tip.version,
                rendered,
                state.target_digest.clone(),
                state.last_error.clone(),
                now,
            )
            .await?;
        if rendered.is_some() || state.ingested_tip.as_deref() != Some(tip.version.as_str()) {
            tracing::info!(app = %app.name, chart = %chart.chart, version = %tip.version, "chart version");
        }
        Ok(AppIngest {
            tip: tip.version,
            report,
            rendered,
        })
    }

    /// Verifies the signatures of `app`'s commits against its trusted keys: the tip (and the
    /// annotated tag it was reached through, when the revision is a tag pointing at it), then
    /// commits without a verdict against the current keys, newest first, [`RECHECK_BATCH`] at a
    /// time. A commit that could not be checked now (a tool failed) gets no verdict and is
    /// checked again next time. The verdicts are stored before the application switches to the
    /// keys; when the keys changed, the timeline says so and the application is compared again
    /// (its pending revision may now pass or fail `require_signed`).
    async fn check_signatures(
        &self,
        mirror: &Arc<Mirror>,
        app: &AppSource,
        tip: &str,
        now: clock::Millis,
    ) -> Result<(), SyncError> {
        let keys = self.trust.keys_of(app)?;
        let mut shas = self
            .store
            .unchecked_commits(&app.name, &keys.digest, RECHECK_BATCH)
            .await?;
        if !shas.iter().any(|s| s == tip)
            && !self
                .store
                .has_signature(&app.repository, tip, &keys.digest)
                .await?
        {
            shas.push(tip.to_owned());
        }
        let (m, revision, tip_s) = (mirror.clone(), app.revision.clone(), tip.to_owned());
        let k = keys.clone();
        let (rows, failed) = tokio::task::spawn_blocking(
            move || -> Result<(Vec<SignatureRow>, Vec<String>), GitError> {
                let repo = m.open()?;
                let mut rows = Vec::with_capacity(shas.len() + 1);
                let mut failed = Vec::new();
                for sha in shas {
                    let Ok(id) = Oid::from_str(&sha) else {
                        continue;
                    };
                    match signatures::verify_commit(&repo, id, &k) {
                        Ok(verdict) => rows.push(SignatureRow {
                            sha,
                            tag: None,
                            verdict,
                        }),
                        Err(why) => failed.push(format!("{sha}: {why}")),
                    }
                }
                // A tag vouches only for the commit it points at, and only when the
                // application's revision is that tag.
                if let Some((tag, commit)) = signatures::tag_object(&repo, &revision) {
                    if commit.to_string() == tip_s {
                        match signatures::verify_tag(&repo, tag, &k) {
                            Some(Ok(verdict)) => rows.push(SignatureRow {
                                sha: tag.to_string(),
                                tag: Some((revision.clone(), tip_s.clone())),
                                verdict,
                            }),
                            Some(Err(why)) => failed.push(format!("tag {revision}: {why}")),
                            None => {}
                        }
                    }
                }
                Ok((rows, failed))
            },
        )
        .await
        .map_err(|e| GitError::Git {
            repo: app.repository.clone(),
            message: e.to_string(),
        })??;
        if let Some(first) = failed.first() {
            tracing::warn!(app = %app.name, count = failed.len(), first = %first, "signatures not checked now; checked again on the next fetch");
        }
        self.store
            .save_signatures(&app.repository, &keys.digest, &rows, now)
            .await?;
        let tip_checked = rows
            .iter()
            .any(|r| r.sha == tip || r.tag.as_ref().is_some_and(|(_, c)| c == tip));
        let previous = self
            .store
            .set_trust_digest(&app.name, &keys.digest, now)
            .await?;
        if previous.is_some_and(|p| p != keys.digest) {
            self.keys_changed(&app.name, &keys, now).await?;
            self.store.publish_target(&app.name).await?;
        } else if tip_checked && app.require_signed {
            // Its target's verdict is new: an application waiting on it is compared now.
            self.store.publish_target(&app.name).await?;
        }
        Ok(())
    }
}

/// What makes an application's ingest differ: its name and what it renders (Helm reads the
/// namespace and the cluster's capabilities too).
fn ingest_key(app: &AppSource) -> String {
    format!(
        "{}\0{}\0{}\0{}\0{}\0{}\0{}",
        app.name,
        app.repository,
        app.path,
        app.revision,
        app.namespace,
        app.cluster,
        serde_json::to_string(&app.render).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(path: &str, files: &[&str]) -> AppSource {
        let mut render = crate::store::RenderOptions::default();
        render.helm.values_files = files.iter().map(|f| (*f).to_owned()).collect();
        AppSource {
            name: "a".into(),
            repository: "r".into(),
            path: path.into(),
            revision: "main".into(),
            cluster: "c".into(),
            namespace: "n".into(),
            auto_sync: false,
            self_heal: false,
            prune: false,
            ignore: Vec::new(),
            approvals: Default::default(),
            project: "p".into(),
            compare: Default::default(),
            require_signed: false,
            render,
            bounds: None,
        }
    }

    #[test]
    fn a_charts_history_watches_its_values_files_elsewhere() {
        assert_eq!(
            watched_paths(&app(
                "charts/web",
                &[
                    "values-prod.yaml",
                    "../../envs/prod/web.yaml",
                    "../../../x.yaml",
                    "/etc/x"
                ]
            )),
            [
                "charts/web",
                "charts/web/values-prod.yaml",
                "envs/prod/web.yaml"
            ]
        );
        assert_eq!(watched_paths(&app("apps/a", &[])), ["apps/a"]);
    }
}
