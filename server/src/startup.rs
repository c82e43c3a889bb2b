//! Start-up as a library: `Application::build` wires settings into a running service, so tests
//! start exactly what `tidemark serve` starts (on port 0).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use leptos::prelude::LeptosOptions;
use tokio::net::TcpListener;

use crate::cluster::client::ClusterClient;
use crate::config::Settings;
use crate::git::sources::GitSources;
use crate::http::{self, AppState};
use crate::store::{DeclaredCatalog, Store, StoreError};
use crate::telemetry::Metrics;

/// Finished (delivered or given-up) notification deliveries are kept this long.
const NOTIFICATIONS_KEPT_MS: i64 = 30 * 24 * 3_600_000;

/// Why Tidemark could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot prepare the bootstrap admin: {0}")]
    Admin(#[from] crate::auth::local::SignInError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::client::ClusterError),
    #[error(transparent)]
    Notify(#[from] crate::notify::TargetError),
    #[error(transparent)]
    Secrets(#[from] crate::secrets::SecretsError),
    #[error(transparent)]
    TrustedKeys(#[from] crate::git::signatures::KeyError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A built, bound, not-yet-serving Tidemark.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    store: Store,
    git: Arc<GitSources>,
    clusters: Arc<std::collections::HashMap<String, Arc<ClusterClient>>>,
    app_locks: crate::reconcile::AppLocks,
    queue: crate::engine::WorkQueue,
    reconcile_interval: std::time::Duration,
    reconcile_concurrency: usize,
    /// Held while serving (SQLite: the database's process lock).
    process_lock: Option<std::fs::File>,
    metrics: Arc<Metrics>,
    notifier: crate::notify::Notifier,
    public_url: String,
    generated_admin_password: Option<String>,
}

impl Application {
    /// Opens and migrates the store, records the declared catalog and binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let keyring = crate::secrets::Keyring::from_settings(&settings.secrets)?;
        if keyring.is_none() {
            tracing::warn!("{}", crate::secrets::NO_KEY_WARNING);
        }
        if settings.git.kustomize_sandbox == crate::render::Sandbox::None {
            tracing::warn!(
                "git.kustomize_sandbox = \"none\": Kustomize renders are not isolated; a \
                 repository can make Kustomize read this host's directories and fetch remote \
                 bases. Use \"bwrap\" wherever user namespaces are available."
            );
        }
        let store = Store::connect(&settings.database)
            .await?
            .with_secrets(keyring.map(Arc::new));
        store.migrate().await?;
        let sealed = store.seal_stored_renders().await?;
        if sealed > 0 {
            tracing::info!(
                sealed,
                "stored renders re-encrypted with the active secrets key"
            );
        }
        store
            .sync_declared(
                DeclaredCatalog {
                    repositories: &settings.repositories,
                    clusters: &settings.clusters,
                    applications: &settings.applications,
                },
                crate::clock::now(),
            )
            .await?;
        store.sync_project_policies(&settings.projects).await?;
        // Applications of a generator that is no longer configured, or of a root that is no
        // longer active, are retired (their history stays).
        let generators: Vec<String> = settings
            .generators
            .iter()
            .map(|g| crate::git::generators::generator_id(&g.name))
            .collect();
        store
            .retire_orphaned_generated(&generators, crate::clock::now())
            .await?;

        let generated_admin_password =
            crate::auth::local::bootstrap_admin(&store, &settings.auth, crate::clock::now())
                .await?;

        // SQLite serves one process: a second one on the same file stops here.
        let process_lock = store.lock_single_process()?;
        let now = crate::clock::now();
        if process_lock.is_some() {
            // Every lease and running sync in the file is a previous process's.
            store.forget_replicas().await?;
        }
        store.register_replica(&host_name(), now).await?;
        // Syncs cut short by a crash are closed as interrupted, once: on SQLite all of them;
        // on PostgreSQL only those whose replica stopped beating (others are still running).
        let stale_before = if process_lock.is_some() {
            now + 1
        } else {
            now - crate::store::REPLICA_TIMEOUT_MS
        };
        for gone in store.interrupt_orphaned_syncs(stale_before, now).await? {
            crate::engine::scheduler::interrupted(&store, &gone).await?;
        }
        let mut clusters = std::collections::HashMap::new();
        for c in &settings.clusters {
            let client = ClusterClient::connect(c)
                .await
                .map_err(StartupError::Cluster)?;
            clusters.insert(c.name.clone(), Arc::new(client));
        }

        let clusters = Arc::new(clusters);
        let app_locks = crate::reconcile::AppLocks::default();
        let queue = crate::engine::WorkQueue::default();
        let addr = settings.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { addr, source })?;

        // A release build (`cargo leptos build --release`, `hash-files`) names its JS, WASM and
        // CSS by content hash and lists the hashes in `hash.txt`, beside the binary or in the
        // site root; without one (a debug build) the plain names are used.
        let hash_file = crate::http::assets::hash_file(&settings.server.site_root);
        let leptos_options = LeptosOptions::builder()
            .output_name("tidemark")
            .site_root(settings.server.site_root.to_string_lossy().into_owned())
            .site_pkg_dir("pkg")
            .site_addr(local)
            .hash_files(hash_file.is_some())
            .hash_file(
                hash_file
                    .map(|p| std::sync::Arc::from(p.to_string_lossy().as_ref()))
                    .unwrap_or_else(|| std::sync::Arc::from("hash.txt")),
            )
            .build();
        let git = GitSources::new(store.clone(), &settings);
        git.set_clusters(clusters.clone());
        // A trusted key that cannot be read or parsed stops the start, naming it.
        git.check_trusted_keys(&settings)?;
        git.apply_trusted_keys().await.map_err(|e| match e {
            crate::git::sources::SyncError::Store(e) => StartupError::Store(e),
            other => StartupError::TrustedKeys(crate::git::signatures::KeyError {
                entry: "trusted keys".into(),
                message: other.to_string(),
            }),
        })?;
        let public_origin = settings
            .server
            .public_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| u.origin().ascii_serialization());
        let public_url = settings
            .server
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{local}"));
        let metrics = Arc::new(Metrics::new());
        let notifier = crate::notify::Notifier::build(
            store.clone(),
            &settings.notifications,
            &public_url,
            metrics.clone(),
            &|var| std::env::var(var).ok(),
        )?;
        let state = AppState {
            leptos_options,
            store: store.clone(),
            metrics: metrics.clone(),
            settings: Arc::new(settings.clone()),
            git: git.clone(),
            clusters: clusters.clone(),
            app_locks: app_locks.clone(),
            queue: queue.clone(),
            webhook_limits: Arc::default(),
            public_origin,
            audit_verified: Arc::default(),
        };
        Ok(Self {
            listener,
            router: http::router(state),
            store,
            git,
            clusters,
            app_locks,
            queue,
            reconcile_interval: std::time::Duration::from_secs(
                settings.reconcile.interval_secs.max(1),
            ),
            reconcile_concurrency: settings.reconcile.concurrency,
            process_lock,
            metrics,
            notifier,
            public_url,
            generated_admin_password,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The bootstrap admin's password when it was generated by this start (print it once).
    pub fn generated_admin_password(&self) -> Option<&str> {
        self.generated_admin_password.as_deref()
    }

    /// The URL to print for people.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests and closes the store.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let mut pollers = self.git.spawn();
        // Live pages on every replica hear of changes (PostgreSQL LISTEN; in-process on SQLite).
        pollers.extend(self.store.spawn_change_listener());
        let scheduler = crate::engine::Scheduler::new(
            self.store.clone(),
            self.clusters.clone(),
            self.queue.clone(),
            self.app_locks.clone(),
            self.metrics.clone(),
            self.reconcile_interval,
            self.reconcile_concurrency,
        );
        pollers.extend(scheduler.spawn());
        scheduler.enqueue_all(std::time::Duration::ZERO).await;
        // Kubernetes Events about applications' objects go onto their timelines.
        for cluster in self.clusters.values() {
            pollers.push(crate::engine::kube_events::spawn(
                self.store.clone(),
                cluster.clone(),
            ));
        }
        // Notifications go out on their own task: a failing target never holds up the loop.
        pollers.push(self.notifier.spawn());
        // Expired sessions, old sign-in failures and finished notification deliveries older
        // than 30 days are deleted every ten minutes.
        let store = self.store.clone();
        pollers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
            loop {
                tick.tick().await;
                let now = crate::clock::now();
                if let Err(e) = store.purge_identity(now, now - 24 * 3_600_000).await {
                    tracing::warn!(error = %e, "could not purge expired sessions");
                }
                if let Err(e) = store.purge_notifications(now - NOTIFICATIONS_KEPT_MS).await {
                    tracing::warn!(error = %e, "could not purge old notification deliveries");
                }
                if let Err(e) = store.forget_kube_events(now - 2 * 86_400_000).await {
                    tracing::warn!(error = %e, "could not forget old Kubernetes events");
                }
            }
        }));
        let served = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        for poller in pollers {
            poller.abort();
        }
        // Other replicas take this one's applications over at once.
        if let Err(e) = self.store.release_leases().await {
            tracing::warn!(error = %e, "could not release leases");
        }
        served?;
        self.store.close().await;
        drop(self.process_lock);
        Ok(())
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested: draining requests");
}

/// This machine's name (pod name in Kubernetes), for the replicas table; "unknown" if unset.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
