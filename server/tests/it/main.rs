//! The server's one integration-test binary (link time dominates on 2 cores: add modules here,
//! not new binaries).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit;
mod auth;
mod cli;
mod cluster;
mod deploy;
mod generators;
pub mod git;
mod helm;
mod helpers;
mod http;
mod kubectl;
mod live;
mod manifests;
mod notify;
mod reconcile;
mod replicas;
mod sandbox;
mod scheduler;
mod security;
mod signatures;
mod store;
