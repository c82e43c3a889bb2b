//! Pure types and decisions shared by the engine, the store and the adapters: no sqlx, axum,
//! kube or git2 here, nothing of the crate but other `domain` modules (import rules:
//! `docs/architecture.md`, checked by `scripts/check-architecture.sh`).

pub mod plan;
pub mod source;
pub mod tracking;
pub mod triggers;
