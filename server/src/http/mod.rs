//! Router assembly: Leptos pages and server functions, health, readiness and metrics.

pub mod assets;
mod audit;
mod auth;
mod console;
mod fold;
mod live;
pub mod openapi;
mod ports;
mod requests;
mod rest;
pub mod tree_html;
pub mod webhooks;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::DefaultBodyLimit;
use axum::extract::{FromRef, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use leptos::prelude::*;
use leptos_axum::{generate_route_list, LeptosRoutes};

use crate::cluster::client::ClusterClient;
use crate::config::Settings;
use crate::git::sources::GitSources;
use crate::store::Store;
use crate::telemetry::Metrics;

pub use audit::VerificationCache;
pub use ports::internal_error;

/// Everything a request handler may need; provided to SSR and server functions as context.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<Settings>,
    pub git: Arc<GitSources>,
    /// One client per configured cluster, by name.
    pub clusters: Arc<std::collections::HashMap<String, Arc<ClusterClient>>>,
    /// Held while an application syncs (shared with the reconcile loop).
    pub app_locks: crate::reconcile::AppLocks,
    /// The reconcile work queue: a person's action compares the application again at once.
    pub queue: crate::engine::WorkQueue,
    pub webhook_limits: Arc<webhooks::RateLimiter>,
    /// `scheme://host[:port]` of `server.public_url`, for Origin checks.
    pub public_origin: Option<String>,
    /// The ledger's last chain verification, shared by the REST check and the Audit page.
    pub audit_verified: Arc<VerificationCache>,
}

impl axum::extract::FromRef<AppState> for crate::state::AuthState {
    fn from_ref(s: &AppState) -> Self {
        crate::state::AuthState {
            store: s.store.clone(),
            settings: s.settings.clone(),
            public_origin: s.public_origin.clone(),
        }
    }
}

/// Builds the complete HTTP service.
pub fn router(state: AppState) -> Router {
    let routes = generate_route_list(app::App);
    let ports = ports::ports(&state);
    let context = move || provide_context(ports.clone());
    let shell = {
        let options = state.leptos_options.clone();
        move || app::shell(options.clone())
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/auth/login", post(auth::login))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/oidc/start", get(auth::oidc_start))
        .route("/auth/oidc/callback", get(auth::oidc_callback))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/api/v1/applications",
            get(rest::applications).post(rest::create_application),
        )
        .route(
            "/api/v1/applications/{name}",
            get(rest::application).put(rest::update_application),
        )
        .route(
            "/api/v1/applications/{name}/resources",
            get(rest::resources),
        )
        .route("/api/v1/applications/{name}/timeline", get(rest::timeline))
        .route("/api/v1/applications/{name}/sync", post(rest::sync))
        .route("/api/v1/applications/{name}/commits", get(rest::commits))
        .route("/api/v1/applications/{name}/diff", get(rest::diff))
        .route("/api/v1/applications/{name}/refresh", post(rest::refresh))
        .route(
            "/api/v1/applications/{name}/revisions",
            get(requests::revisions),
        )
        .route(
            "/api/v1/applications/{name}/rollback",
            post(requests::rollback),
        )
        .route("/api/v1/applications/{name}/unpin", post(requests::unpin))
        .route("/api/v1/applications/{name}/events", get(console::events))
        .route("/api/v1/applications/{name}/tree", get(live::tree))
        .route("/api/v1/applications/{name}/live", get(live::manifest))
        .route(
            "/api/v1/applications/{name}/pods/{namespace}/{pod}/logs",
            get(live::logs),
        )
        .route(
            "/api/v1/applications/{name}/resources/actions",
            post(live::action),
        )
        .route("/api/v1/generators", get(rest::generators))
        .route("/api/v1/openapi.json", get(openapi::openapi_json))
        .route("/api/v1/sync-requests", get(requests::list))
        .route(
            "/api/v1/sync-requests/{id}/approve",
            post(requests::approve),
        )
        .route("/api/v1/sync-requests/{id}/reject", post(requests::reject))
        .route("/api/v1/sync-requests/{id}/sync", post(requests::sync))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/notifications/deliveries", get(audit::deliveries))
        .route("/api/v1/audit/verify", get(audit::verify))
        .route(
            "/api/v1/webhooks/{provider}",
            post(webhooks::receive)
                .layer(DefaultBodyLimit::max(webhooks::MAX_BODY))
                .layer(middleware::from_fn(webhooks::limit_body)),
        )
        .nest(
            "/pkg",
            assets::pkg(
                std::path::Path::new(state.leptos_options.site_root.as_ref()),
                state.leptos_options.hash_files,
            ),
        )
        .leptos_routes_with_context(&state, routes, context.clone(), shell)
        .fallback(leptos_axum::file_and_error_handler_with_context::<
            AppState,
            _,
        >(context, app::shell))
        // Every error of /api/ is JSON (`{"error", "message"}`), axum's rejections too.
        .layer(middleware::from_fn(openapi::json_errors))
        // Inner to outer: the guard sees the session, metrics see every answer.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::guard::guard,
        ))
        .layer(crate::auth::sessions::layer(
            state.store.clone(),
            &state.settings,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            track_requests,
        ))
        .layer(middleware::from_fn(assets::html_no_cache))
        // Dynamic answers (HTML, JSON, CSV/JSONL exports) compressed as the browser accepts;
        // live update streams (SSE) and precompressed files are left as they are.
        .layer(tower_http::compression::CompressionLayer::new())
        .with_state(state)
}

/// The process is up.
async fn healthz() -> &'static str {
    "ok\n"
}

/// The process can serve: the database answers within two seconds.
async fn readyz(State(store): State<Store>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database timed out\n").into_response(),
    }
}

/// Prometheus exposition; per-application gauges are read from the store at each scrape (a
/// store failure leaves them as they were and is logged).
async fn metrics(
    State(metrics): State<Arc<Metrics>>,
    State(store): State<Store>,
) -> impl IntoResponse {
    match store.app_gauges().await {
        Ok(apps) => metrics.set_apps(&apps, crate::clock::now()),
        Err(e) => tracing::warn!(error = %e, "cannot read application state for /metrics"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
}

/// Counts and times every request by its matched route pattern.
async fn track_requests(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = match req.extensions().get::<MatchedPath>() {
        Some(path) => path.as_str().to_owned(),
        None if req.uri().path().starts_with("/pkg/") => "/pkg/{file}".to_owned(),
        None => "fallback".to_owned(),
    };
    let response = next.run(req).await;
    metrics.observe_request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
