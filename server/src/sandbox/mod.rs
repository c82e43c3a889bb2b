//! `tidemark sandbox`: a small Kubernetes API server (in-memory, optionally persisted to a JSON
//! file) that Tidemark, the `kube` client and `kubectl` talk to over real HTTP. It serves
//! discovery, OpenAPI v3 (the real API server's documents), CRUD, server-side apply typed by
//! those schemas with field ownership and dry runs, the API server's normalisation of written
//! values, watch and simulated workload status for the built-in kinds Tidemark deploys and for
//! CRDs. See `docs/sandbox.md`.

mod api;
pub mod defaults;
pub mod fields;
pub mod kinds;
pub mod normalize;
pub mod openapi;
pub mod quantity;
pub mod selector;
pub mod status;
pub mod validate;
pub mod world;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::clock;
use world::World;

/// Why the sandbox could not start.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot read sandbox state {path}: {reason}")]
    State { path: PathBuf, reason: String },
    #[error("cannot write sandbox state {path}: {source}")]
    Persist {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sandbox server failed: {0}")]
    Serve(std::io::Error),
}

/// How the sandbox behaves.
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    /// JSON file the state is loaded from at start and saved to after changes.
    pub state_file: Option<PathBuf>,
    /// Delay before simulated workloads report ready (zero: at once).
    pub ready_delay: Duration,
}

/// A running sandbox cluster; clones share one state.
#[derive(Clone)]
pub struct Sandbox {
    world: Arc<Mutex<World>>,
    options: Arc<SandboxOptions>,
}

impl Sandbox {
    /// A sandbox with the state file's content (when it exists) or an empty cluster.
    pub fn new(options: SandboxOptions) -> Result<Self, SandboxError> {
        let now = clock::now();
        let mut world = match &options.state_file {
            Some(path) if path.exists() => load(path, now)?,
            _ => World::new(now),
        };
        world.ready_delay_ms = u64::try_from(options.ready_delay.as_millis()).unwrap_or(u64::MAX);
        Ok(Self {
            world: Arc::new(Mutex::new(world)),
            options: Arc::new(options),
        })
    }

    /// The API server as an axum router (also usable in-process as a tower `Service`, e.g.
    /// with `kube::Client::new(router, "default")`).
    pub fn router(&self) -> axum::Router {
        api::router(self.clone())
    }

    /// Locks the state. Never held across an `.await`.
    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the timers that turn freshly written workloads ready after the configured delay.
    pub(crate) fn schedule_readiness(&self) {
        let pending = std::mem::take(&mut self.world().pending_ready);
        for (key, generation) in pending {
            let sandbox = self.clone();
            let delay = self.options.ready_delay;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                sandbox.world().mark_ready(&key, generation, clock::now());
            });
        }
    }

    /// Writes the state file now if anything changed since the last save.
    pub fn persist(&self) -> Result<(), SandboxError> {
        let Some(path) = &self.options.state_file else {
            return Ok(());
        };
        let snapshot = {
            let mut world = self.world();
            if !world.dirty {
                return Ok(());
            }
            world.dirty = false;
            world.snapshot()
        };
        let err = |source| SandboxError::Persist {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(&snapshot).map_err(|e| err(std::io::Error::other(e)))?;
        std::fs::write(&tmp, bytes).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// Serves HTTP on `listener` until `shutdown`, saving the state every half second when it
    /// changed and once more at the end.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), SandboxError> {
        let saver = {
            let sandbox = self.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                loop {
                    tick.tick().await;
                    if let Err(e) = sandbox.persist() {
                        tracing::error!(error = %e, "sandbox state not saved");
                    }
                }
            })
        };
        let served = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await;
        saver.abort();
        self.persist()?;
        served.map_err(SandboxError::Serve)
    }
}

fn load(path: &Path, now: clock::Millis) -> Result<World, SandboxError> {
    let fail = |reason: String| SandboxError::State {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let snapshot: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| fail(e.to_string()))?;
    World::restore(&snapshot, now).map_err(fail)
}
