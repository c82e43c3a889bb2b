//! The cluster side: health assessment of live objects (pure). The kube adapters (discovery,
//! server-side apply, inventory, watch cache) join this module with the reconciler.

pub mod client;
pub mod health;
pub mod predict;
pub mod schema;
pub mod tree;
