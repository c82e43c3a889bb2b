//! One file per page; each page owns its resources and actions.

pub mod application;
pub mod applications;
pub mod approvals;
pub mod audit;
pub mod login;
pub mod not_found;
#[cfg(feature = "ssr")]
pub mod notifications;
