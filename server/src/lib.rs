//! Tidemark's server: configuration, the store, the HTTP host and (in later modules) the engine
//! and its adapters. `main.rs` is a thin CLI over [`startup::Application`].

pub mod auth;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod diff;
pub mod domain;
pub mod engine;
pub mod git;
pub mod http;
pub mod notify;
pub mod reconcile;
pub mod render;
pub mod sandbox;
pub mod secrets;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
