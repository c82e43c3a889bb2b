//! The engine: use cases over the adapters (store, cluster, Git), between the HTTP layer and
//! them. `scheduler.rs`: the reconcile work queue, workers, backoff, leases and the replica
//! heartbeat. `decisions.rs`: approve, reject, run an approved request, roll back, unpin.
//!
//! The engine never imports the web framework or the HTTP layer: its errors are
//! [`EngineError`]s, which the HTTP layer turns into responses in one place (`http::ports`).

pub mod decisions;
pub mod kube_events;
pub mod live;
pub mod scheduler;

pub use decisions::Deps;
pub use scheduler::{Scheduler, WorkQueue};

use crate::reconcile::ReconcileError;
use crate::store::{DecisionError, StoreError};

/// Why a use case did not happen. The message of every variant but `Store`/`Corrupt` is meant
/// for the person who asked (it names what to do next); those two are logged, not shown.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The named thing (an application, a request, a cluster) does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The input is malformed or incomplete (a rollback without a reason).
    #[error("{0}")]
    Invalid(String),
    /// This person may not do this; the message says why (four-eyes, approver groups).
    #[error("{0}")]
    Forbidden(String),
    /// The state moved (already approved, target moved, a sync is running, not pinned).
    #[error("{0}")]
    Conflict(String),
    /// A cluster or Git is unreachable right now.
    #[error("{0}")]
    Unavailable(String),
    /// Stored data is unreadable (a snapshot, a column).
    #[error("corrupt {0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            e @ StoreError::SyncRunning { .. } => EngineError::Conflict(e.to_string()),
            other => EngineError::Store(other),
        }
    }
}

impl From<DecisionError> for EngineError {
    fn from(e: DecisionError) -> Self {
        match e {
            DecisionError::NotFound(id) => EngineError::NotFound(format!("sync request {id}")),
            DecisionError::NotPending { .. } | DecisionError::AlreadyApproved(_) => {
                EngineError::Conflict(e.to_string())
            }
            DecisionError::Store(e) => e.into(),
        }
    }
}

impl From<ReconcileError> for EngineError {
    fn from(e: ReconcileError) -> Self {
        match e {
            ReconcileError::Store(e) => e.into(),
            ReconcileError::Cluster(e) => EngineError::Unavailable(e.to_string()),
            ReconcileError::NotRendered(app) => {
                EngineError::Conflict(format!("application {app} has no rendered revision yet"))
            }
            ReconcileError::CorruptSnapshot(digest) => {
                EngineError::Corrupt(format!("snapshot {digest}"))
            }
            ReconcileError::Unverified(why) => EngineError::Conflict(why),
            ReconcileError::OutsideProject(why) => EngineError::Conflict(why),
        }
    }
}
