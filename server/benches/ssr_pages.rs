//! Server-side rendering of the Applications page (one page of 50) with 10,000 applications,
//! measured with a load generator (`wrk`) against Tidemark's full HTTP stack (guard with a bearer
//! token, SSR, store queries on SQLite) and, in the same run, against a static axum handler
//! serving the very same bytes as the baseline. Prints requests/s, median and p99 latency and the
//! ratios; targets: p99 < 50 ms and >= 1,000 requests/s.
//!
//! `make build` first (the page links the built WASM); then
//! `cargo bench -p server --bench ssr_pages` (`SSR_APPS`, `SSR_SECONDS`, `SSR_CONNECTIONS`, a
//! comma-separated list, default `8,16`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use app::model::{Role, SyncPolicy};
use leptos::prelude::LeptosOptions;
use server::config::{
    ApplicationSettings, ClusterSettings, DatabaseSettings, DatabaseUrl, RepositorySettings,
    Settings,
};
use server::http::AppState;
use server::store::{Actor, AppStatus, DeclaredCatalog, Store};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What wrk reports: requests/s, median and p99 latency (ms).
#[derive(Debug, Clone, Copy)]
struct Load {
    rps: f64,
    p50: f64,
    p99: f64,
}

fn millis(s: &str) -> f64 {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => f64::NAN,
    }
}

fn wrk(url: &str, token: &str, seconds: u64, connections: u64) -> Load {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-H",
            &format!("Authorization: Bearer {token}"),
            url,
        ])
        .output()
        .expect("wrk (apt-get install wrk; scripts/setup.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Non-2xx"), "errors under load:\n{text}");
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no `{prefix}` in wrk output:\n{text}"))
    };
    Load {
        rps: field("Requests/sec:").parse().unwrap(),
        p50: millis(&field("50%")),
        p99: millis(&field("99%")),
    }
}

async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

fn main() {
    let apps = env("SSR_APPS", 10_000) as usize;
    let seconds = env("SSR_SECONDS", 10);
    let connections: Vec<u64> = std::env::var("SSR_CONNECTIONS")
        .unwrap_or_else(|_| "8,16".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let db = DatabaseSettings {
            url: DatabaseUrl::new(format!("sqlite://{}", dir.path().join("ssr.db").display())),
            ..Default::default()
        };
        let store = Store::connect(&db).await.unwrap();
        store.migrate().await.unwrap();

        let mut settings = Settings::load(None, Vec::new()).unwrap();
        settings.database = db;
        settings.git.cache_dir = dir.path().join("git");
        settings.server.site_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/site");
        settings.repositories = vec![RepositorySettings::new("bench", "file:///nowhere")];
        settings.clusters = vec![ClusterSettings {
            name: "sandbox".into(),
            url: "http://127.0.0.1:6443".into(),
            ..Default::default()
        }];
        settings.applications = (0..apps)
            .map(|i| ApplicationSettings {
                name: format!("app-{i:05}"),
                project: ["web", "payments", "data", "platform"][i % 4].into(),
                repository: "bench".into(),
                path: format!("apps/app-{i:05}"),
                revision: "main".into(),
                cluster: "sandbox".into(),
                namespace: format!("ns-{}", i % 50),
                sync_policy: if i % 3 == 0 { SyncPolicy::Auto } else { SyncPolicy::Manual },
                self_heal: false,
                prune: false,
                ignore: Vec::new(),
                approvals: Default::default(),
                compare: Default::default(),
                require_signed: false,
                source: None,
                helm: Default::default(),
            })
            .collect();
        let started = std::time::Instant::now();
        store
            .sync_declared(
                DeclaredCatalog {
                    repositories: &settings.repositories,
                    clusters: &settings.clusters,
                    applications: &settings.applications,
                },
                0,
            )
            .await
            .unwrap();
        for (i, app) in settings.applications.iter().enumerate() {
            let status = AppStatus {
                sync_status: if i % 7 == 0 { "OutOfSync" } else { "Synced" }.into(),
                health: if i % 11 == 0 { "Degraded" } else { "Healthy" }.into(),
                health_message: String::new(),
                target_sha: Some(format!("{i:040x}")),
                deployed_sha: Some(format!("{i:040x}")),
                resources: serde_json::json!([]),
                compared_at: 0,
            };
            store.save_status(&app.name, &status).await.unwrap();
        }
        eprintln!("filled {apps} applications in {:.1?}", started.elapsed());
        let t = std::time::Instant::now();
        for _ in 0..20 {
            store
                .application_page(&Default::default(), 50, None)
                .await
                .unwrap();
        }
        eprintln!("store page: {:.2?} per call", t.elapsed() / 20);

        let token = server::auth::tokens::create(
            &store,
            &Actor::system(),
            "bench",
            Role::Admin,
            None,
            0,
        )
        .await
        .unwrap();

        let state = AppState {
            leptos_options: LeptosOptions::builder()
                .output_name("tidemark")
                .site_root(settings.server.site_root.to_string_lossy().into_owned())
                .site_pkg_dir("pkg")
                .build(),
            store: store.clone(),
            metrics: Arc::new(server::telemetry::Metrics::new()),
            settings: Arc::new(settings.clone()),
            git: server::git::sources::GitSources::new(store.clone(), &settings),
            clusters: Arc::default(),
            app_locks: Default::default(),
            queue: server::engine::WorkQueue::default(),
            webhook_limits: Arc::default(),
            public_origin: None,
            audit_verified: Arc::default(),
        };
        let tidemark = serve(server::http::router(state)).await;
        let url = format!("http://{tidemark}/applications");
        let page = reqwest::Client::new()
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let bytes = page.bytes().await.unwrap();
        let html = String::from_utf8_lossy(&bytes);
        assert!(html.contains("app-00049") && !html.contains("app-00050\""), "one page of 50");
        assert!(html.contains(&format!("{apps} applications match")), "{html}");

        // One request at a time: the service time without queueing.
        let client = reqwest::Client::new();
        let mut serial = Vec::new();
        for _ in 0..100 {
            let t = std::time::Instant::now();
            let r = client.get(&url).bearer_auth(&token).send().await.unwrap();
            r.bytes().await.unwrap();
            serial.push(t.elapsed());
        }
        serial.sort();

        let body = bytes.clone();
        let baseline = serve(axum::Router::new().route(
            "/applications",
            axum::routing::get(move || {
                let body = body.clone();
                async move { ([("content-type", "text/html; charset=utf-8")], body) }
            }),
        ))
        .await;

        println!(
            "SSR Applications page, {apps} applications, page of 50 ({} bytes), wrk -t2 -d{seconds}s; one request alone: {:.2?}",
            bytes.len(),
            serial[50]
        );
        for c in connections {
            let base = wrk(&format!("http://{baseline}/applications"), &token, seconds, c);
            let ours = wrk(&url, &token, seconds, c);
            println!("  {c} connections");
            println!(
                "    static axum handler (same bytes): {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
                base.rps, base.p50, base.p99
            );
            println!(
                "    Tidemark (guard + SSR + SQLite):  {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
                ours.rps, ours.p50, ours.p99
            );
            println!(
                "    ratio: throughput {:.3} of baseline, p99 {:.1}x baseline; targets p99 < 50 ms and >= 1,000 req/s: {}",
                ours.rps / base.rps,
                ours.p99 / base.p99,
                if ours.p99 < 50.0 && ours.rps >= 1000.0 { "met" } else { "NOT MET" }
            );
        }

        // /metrics: the per-application gauges are read from the store at each scrape.
        let metrics_url = format!("http://{tidemark}/metrics");
        let (mut scrapes, mut queries, mut size) = (Vec::new(), Vec::new(), 0);
        for _ in 0..20 {
            let t = std::time::Instant::now();
            store.app_gauges().await.unwrap();
            queries.push(t.elapsed());
            let t = std::time::Instant::now();
            let text = client.get(&metrics_url).send().await.unwrap().text().await.unwrap();
            scrapes.push(t.elapsed());
            size = text.len();
        }
        scrapes.sort();
        queries.sort();
        println!(
            "/metrics at {apps} applications ({size} bytes): scrape median {:.2?}, its store query alone {:.2?} (ratio {:.2})",
            scrapes[10],
            queries[10],
            scrapes[10].as_secs_f64() / queries[10].as_secs_f64()
        );
    });
}
