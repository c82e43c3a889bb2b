//! The first page and a deep page of the timeline and of the audit ledger over 1,000,000 events
//! each, through the store (what the API serves) vs a raw indexed SELECT of the same rows on the
//! same kind of pool, on SQLite and on PostgreSQL. Medians, p99 and ratios from one run.
//!
//! `cargo bench -p server --bench history_pages` (`HISTORY_EVENTS=100000` for a quicker run;
//! PostgreSQL from `TIDEMARK_TEST_POSTGRES_URL`, default postgres://postgres@127.0.0.1:5432/postgres).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::json;
use server::config::{
    ApplicationSettings, ClusterSettings, DatabaseSettings, DatabaseUrl, RepositorySettings,
};
use server::store::{audit_hash, AuditEvent, AuditFilter, DeclaredCatalog, Store, AUDIT_GENESIS};
use sqlx::Connection;

const ROUNDS: usize = 300;

/// (median, p99)
type Timing = (Duration, Duration);
const PAGE: u32 = 50;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

async fn time<F, Fut>(mut f: F) -> Timing
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    for _ in 0..20 {
        assert_eq!(f().await, PAGE as usize);
    }
    let mut samples = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let n = f().await;
        samples.push(t.elapsed());
        assert_eq!(n, PAGE as usize);
    }
    (
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.99),
    )
}

async fn fill(store: &Store, raw: &sqlx::AnyPool, events: usize) {
    let repos = vec![RepositorySettings::new("bench", "file:///nowhere")];
    let clusters = vec![ClusterSettings {
        name: "sandbox".into(),
        url: "http://127.0.0.1:6443".into(),
        ..Default::default()
    }];
    let apps = vec![ApplicationSettings {
        name: "bench".into(),
        project: "default".into(),
        repository: "bench".into(),
        path: "apps/bench".into(),
        revision: "main".into(),
        cluster: "sandbox".into(),
        namespace: "bench".into(),
        sync_policy: app::model::SyncPolicy::Auto,
        self_heal: false,
        prune: false,
        ignore: Vec::new(),
        approvals: Default::default(),
        compare: Default::default(),
        require_signed: false,
        source: None,
        helm: Default::default(),
    }];
    store
        .sync_declared(
            DeclaredCatalog {
                repositories: &repos,
                clusters: &clusters,
                applications: &apps,
            },
            0,
        )
        .await
        .unwrap();
    let kinds = [
        "commit",
        "sync",
        "drift_opened",
        "drift_closed",
        "approval",
        "health",
    ];
    let mut prev = AUDIT_GENESIS.to_owned();
    let batch = 1_000;
    for start in (0..events).step_by(batch) {
        let end = (start + batch).min(events);
        let mut tx = raw.begin().await.unwrap();
        let mut sql = String::from(
            "INSERT INTO timeline (application, kind, occurred_at, message, detail) VALUES ",
        );
        for (k, _) in (start..end).enumerate() {
            let b = k * 4;
            sql.push_str(&format!(
                "{}('bench', ${}, ${}, ${}, ${})",
                if k == 0 { "" } else { ", " },
                b + 1,
                b + 2,
                b + 3,
                b + 4
            ));
        }
        let mut q = sqlx::query(&sql);
        for i in start..end {
            q = q
                .bind(kinds[i % kinds.len()])
                .bind(1_700_000_000_000_i64 + (i as i64) * 1_000)
                .bind(format!(
                    "event {i}: something happened to the bench application"
                ))
                .bind(json!({"i": i}).to_string());
        }
        q.execute(&mut *tx).await.unwrap();

        let mut sql = String::from(
            "INSERT INTO audit_log (seq, at, actor_id, actor_name, auth_method, action, target, details, source_ip, outcome, prev_hash, hash) VALUES ",
        );
        for (k, _) in (start..end).enumerate() {
            let b = k * 12;
            let params: Vec<String> = (1..=12).map(|p| format!("${}", b + p)).collect();
            sql.push_str(&format!(
                "{}({})",
                if k == 0 { "" } else { ", " },
                params.join(", ")
            ));
        }
        let mut q = sqlx::query(&sql);
        for i in start..end {
            let seq = i as i64 + 1;
            let e = AuditEvent {
                at: 1_700_000_000_000 + (i as i64) * 1_000,
                actor_id: format!("oidc:user-{}", i % 50),
                actor_name: format!("User {}", i % 50),
                auth_method: "oidc".into(),
                action: ["sync", "approve", "sign_in", "rollback"][i % 4].into(),
                target: "application:bench".into(),
                details: json!({"i": i}),
                source_ip: "10.0.0.1".into(),
                outcome: "success".into(),
            };
            let hash = audit_hash(&prev, seq, &e);
            q = q
                .bind(seq)
                .bind(e.at)
                .bind(e.actor_id)
                .bind(e.actor_name)
                .bind(e.auth_method)
                .bind(e.action)
                .bind(e.target)
                .bind(e.details.to_string())
                .bind(e.source_ip)
                .bind(e.outcome)
                .bind(prev.clone())
                .bind(hash.clone());
            prev = hash;
        }
        q.execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
    }
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(events as i64)
        .bind(&prev)
        .execute(raw)
        .await
        .unwrap();
    // Fresh statistics, as a long-running database would have.
    let _ = sqlx::query("ANALYZE").execute(raw).await;
}

async fn measure(label: &str, url: &str, events: usize) {
    sqlx::any::install_default_drivers();
    let store = Store::connect(&DatabaseSettings {
        url: DatabaseUrl::new(url),
        ..Default::default()
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let raw = sqlx::any::AnyPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .unwrap();
    let started = Instant::now();
    fill(&store, &raw, events).await;
    println!(
        "{label}: filled {events} timeline events and {events} audit rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let deep = events * 9 / 10;
    let row = sqlx::query_as::<_, (i64, i64)>(
        "SELECT occurred_at, id FROM timeline WHERE application = 'bench' ORDER BY occurred_at DESC, id DESC LIMIT 1 OFFSET $1",
    )
    .bind(deep as i64)
    .fetch_one(&raw)
    .await
    .unwrap();
    let timeline_cursor = format!("{}:{}", row.0, row.1);
    let audit_cursor = (events - deep) as i64;

    let raw_timeline = |at: i64, id: i64| {
        let raw = raw.clone();
        async move {
            sqlx::query(
                "SELECT id, kind, occurred_at, message, detail FROM timeline
                 WHERE application = $1 AND (occurred_at, id) < ($2, $3)
                 ORDER BY occurred_at DESC, id DESC LIMIT $4",
            )
            .bind("bench")
            .bind(at)
            .bind(id)
            .bind(i64::from(PAGE))
            .fetch_all(&raw)
            .await
            .unwrap()
            .len()
        }
    };
    let raw_audit = |before: i64| {
        let raw = raw.clone();
        async move {
            sqlx::query(
                "SELECT seq, at, actor_id, actor_name, auth_method, action, target, details, source_ip, outcome, prev_hash, hash
                 FROM audit_log WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
            )
            .bind(before)
            .bind(i64::from(PAGE))
            .fetch_all(&raw)
            .await
            .unwrap()
            .len()
        }
    };
    let cases: Vec<(&str, Timing, Timing)> = vec![
        (
            "timeline first page",
            time(|| async {
                store
                    .timeline_page("bench", None, PAGE, &[])
                    .await
                    .unwrap()
                    .0
                    .len()
            })
            .await,
            time(|| raw_timeline(i64::MAX, i64::MAX)).await,
        ),
        (
            "timeline deep page (90%)",
            time(|| async {
                store
                    .timeline_page("bench", Some(&timeline_cursor), PAGE, &[])
                    .await
                    .unwrap()
                    .0
                    .len()
            })
            .await,
            time(|| raw_timeline(row.0, row.1)).await,
        ),
        (
            "audit first page",
            time(|| async {
                store
                    .audit_page(&AuditFilter::default(), None, PAGE)
                    .await
                    .unwrap()
                    .0
                    .len()
            })
            .await,
            time(|| raw_audit(i64::MAX)).await,
        ),
        (
            "audit deep page (90%)",
            time(|| async {
                store
                    .audit_page(
                        &AuditFilter::default(),
                        Some(&audit_cursor.to_string()),
                        PAGE,
                    )
                    .await
                    .unwrap()
                    .0
                    .len()
            })
            .await,
            time(|| raw_audit(audit_cursor)).await,
        ),
    ];
    for (name, (median, p99), (raw_median, raw_p99)) in cases {
        println!(
            "{label:<10} {name:<26} store median {:>7.3} ms p99 {:>7.3} ms | raw SELECT median {:>7.3} ms p99 {:>7.3} ms | ratio {:.2}",
            median.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            raw_median.as_secs_f64() * 1e3,
            raw_p99.as_secs_f64() * 1e3,
            median.as_secs_f64() / raw_median.as_secs_f64()
        );
    }
    raw.close().await;
    store.close().await;
}

fn main() {
    let events: usize = std::env::var("HISTORY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = format!("sqlite://{}/bench.db", dir.path().display());
        measure("SQLite", &sqlite, events).await;

        let admin = std::env::var("TIDEMARK_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("tidemark_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let mut url = url::Url::parse(&admin).unwrap();
        url.set_path(&name);
        measure("PostgreSQL", url.as_str(), events).await;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await
            .unwrap();
    });
}
