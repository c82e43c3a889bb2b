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
    reconcile_interval: std::time::Duration,
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

        let generated_admin_password =
            crate::auth::local::bootstrap_admin(&store, &settings.auth, crate::clock::now())
                .await?;

        // Syncs a crash cut short are closed as interrupted, once, before anything else runs.
        for app in store.interrupt_running_syncs(crate::clock::now()).await? {
            let message = "sync interrupted: Tidemark stopped while it ran; the application will be compared again";
            store
                .add_timeline(
                    &app,
                    "sync_interrupted",
                    message,
                    &serde_json::json!({}),
                    crate::clock::now(),
                )
                .await?;
            tracing::warn!(%app, "sync interrupted by a restart");
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
        let addr = settings.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { addr, source })?;

        let leptos_options = LeptosOptions::builder()
            .output_name("tidemark")
            .site_root(settings.server.site_root.to_string_lossy().into_owned())
            .site_pkg_dir("pkg")
            .site_addr(local)
            .build();
        let git = GitSources::new(store.clone(), &settings);
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
            reconcile_interval: std::time::Duration::from_secs(
                settings.reconcile.interval_secs.max(1),
            ),
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
        // A change seen by any cluster watch wakes the reconcile loop, like a new revision does.
        for cluster in self.clusters.values() {
            let (events, wake) = (cluster.events(), self.git.changes());
            pollers.push(tokio::spawn(async move {
                loop {
                    events.notified().await;
                    wake.notify_one();
                }
            }));
        }
        pollers.push(crate::reconcile::spawn_loop(
            self.store.clone(),
            self.clusters.clone(),
            self.reconcile_interval,
            self.git.changes(),
            self.app_locks.clone(),
            self.metrics.clone(),
        ));
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
        served?;
        self.store.close().await;
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
