//! Reconcile throughput and commit → applied latency of the work-queue engine, for several
//! worker counts and replica counts, on the in-process sandbox cluster and PostgreSQL.
//!
//! The fleet: 1,000 auto-sync applications (each its own Namespace object + 1 ConfigMap) in one
//! Git repository made with the `git` CLI (`fetch_interval_secs = 1`,
//! `[reconcile] interval_secs = 300`). Each configuration gets a fresh repository, a fresh
//! sandbox and a fresh PostgreSQL database (dropped at the end), and runs one or several
//! `server::startup::Application`s in this process (same settings but the Git cache dir, all
//! built before any starts, each on its own task with `run_until_stopped`, stopped through its
//! shutdown future):
//!
//! - concurrency 1, 4 and 16 with one replica (concurrency 1: the baseline of the ratios);
//! - concurrency 4 with three replicas; concurrency 16 with three replicas when the run is still
//!   within its time budget (about 7 minutes spent).
//!
//! Per configuration:
//!
//! 1. reconcile throughput: from the start of the replicas until every application has a
//!    succeeded sync and a status row (SQL counts on a separate pool every 100 ms), as
//!    applications/s. Every application's first target is rendered before the replicas start,
//!    by one pass of the Git poller's code (`GitSources::sync_repository`, timed and printed):
//!    from a cold start, that single sequential pass (10–30 s for 1,000 applications here) and
//!    not the workers decides when the last application is synced, and every configuration but
//!    the baseline measures the same Git pass. `REPLICAS_BENCH_COLD=1` measures the cold start
//!    instead (first clone, ingest and render included).
//! 2. commit → applied latency: once no application was compared for 1 s, one commit changes
//!    the ConfigMap of 100 applications (every tenth); the commit time is `server::clock::now()`
//!    right after `git commit`. Every 50 ms the bench reads the `syncs` table until each of the
//!    100 has a succeeded sync of the new revision; p50 and p99 of (finished_at − commit time).
//!    It also counts the applications compared after the commit: the poller renders and
//!    announces every application of the repository whose branch tip moved, changed or not.
//!
//! One run per configuration (no medians). Ratios are against the baseline measured in the same
//! run. A configuration that does not converge within its timeout (throughput 300 s, latency
//! 120 s) is reported as such with how far it got; the bench goes on.
//!
//! `cargo bench -p server --bench replicas`
//!
//! Needs PostgreSQL at postgres://postgres@127.0.0.1:5432/postgres (override with
//! `TIDEMARK_TEST_POSTGRES_URL`; start the local one with `scripts/start-postgres.sh`) and the
//! `git` CLI. `REPLICAS_BENCH_APPS` changes the number of applications (default 1000) for a
//! quick try; `RUST_LOG=warn` shows the engine's warnings.
//!
//! The measurement takes about 4–5 minutes on the 2-core development machine with 1,000
//! applications (plus the release build). Every replica runs in this one process: three
//! replicas share the same 2 cores and the same PostgreSQL as one, so they show the cost of
//! the leases, not the capacity more machines would add.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use server::config::{DatabaseUrl, Settings};
use server::git::sources::GitSources;
use server::sandbox::{Sandbox, SandboxOptions};
use server::startup::Application;
use server::store::{DeclaredCatalog, Store};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::Connection;

/// Applications whose ConfigMap the measured commit changes.
const CHANGED: usize = 100;
/// How long the first sync of every application may take.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the 100 changed applications may take to apply the new commit.
const LATENCY_TIMEOUT: Duration = Duration::from_secs(120);
/// No comparison for this long: the engine is idle before the measured commit.
const QUIET: Duration = Duration::from_secs(1);
/// The longest wait for the engine to go idle before the measured commit.
const QUIET_TIMEOUT: Duration = Duration::from_secs(20);
/// Past this much of the run, the optional configuration (16 workers × 3 replicas) is skipped.
const OPTIONAL_BUDGET: Duration = Duration::from_secs(420);

#[derive(Clone, Copy)]
struct Config {
    concurrency: usize,
    replicas: usize,
    optional: bool,
}

impl Config {
    fn label(&self) -> String {
        format!(
            "concurrency {}, {} replica{}",
            self.concurrency,
            self.replicas,
            if self.replicas == 1 { "" } else { "s" }
        )
    }
}

/// What one configuration measured.
struct Outcome {
    config: Config,
    /// Applications synced once with a status row, and the time it took (or the timeout).
    converged: usize,
    converge_time: Duration,
    /// How long the pass rendering every first target took (before the replicas started).
    prerender: Option<Duration>,
    /// When the last application's first target was rendered (since the replicas started).
    rendered: Option<Duration>,
    /// How long the engine took to go idle after converging (or `None`: it never did).
    quiet_after: Option<Duration>,
    /// Commit → applied latencies of the changed applications that applied it (ms).
    latencies: Vec<i64>,
    /// Applications compared (status written) between the commit and the end of the latency
    /// phase.
    compared_after_commit: i64,
    /// Per replica (in start order): leases held after the first sync of everything, and
    /// succeeded syncs run.
    leases: Vec<i64>,
    syncs: Vec<i64>,
    /// Interrupted or failed syncs (none expected).
    bad_syncs: i64,
}

impl Outcome {
    fn apps_per_s(&self, apps: usize) -> Option<f64> {
        (self.converged == apps).then(|| apps as f64 / self.converge_time.as_secs_f64())
    }

    /// Over the applications that applied the commit (all of them unless said otherwise).
    fn percentile(&self, p: f64) -> Option<i64> {
        percentile(&self.latencies, p)
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Bench",
            "-c",
            "user.email=bench@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn app_name(i: usize) -> String {
    format!("app-{i:04}")
}

fn manifest(app: &str, revision: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {app}}}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{revision: \"{revision}\"}}\n"
    )
}

/// A repository with one directory per application, in one commit.
fn make_repo(dir: &Path, apps: usize) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    for i in 0..apps {
        let app = app_name(i);
        let d = dir.join("apps").join(&app);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("app.yaml"), manifest(&app, "0")).unwrap();
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "fleet"]);
}

/// The fleet's configuration file, as an operator would write it.
fn write_config(path: &Path, repo: &Path, cluster: &str, apps: usize, concurrency: usize) {
    let mut toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [reconcile]\ninterval_secs = 300\nconcurrency = {concurrency}\n\
         [[repositories]]\nname = \"fleet\"\nurl = \"file://{repo}\"\nfetch_interval_secs = 1\n\
         [[clusters]]\nname = \"sandbox\"\nurl = \"{cluster}\"\n",
        repo = repo.display(),
    );
    for i in 0..apps {
        let app = app_name(i);
        toml.push_str(&format!(
            "[[applications]]\nname = \"{app}\"\nrepository = \"fleet\"\npath = \"apps/{app}\"\n\
             cluster = \"sandbox\"\nnamespace = \"{app}\"\nsync_policy = \"auto\"\nprune = true\n\
             [applications.approvals]\nrequired = 0\n"
        ));
    }
    std::fs::write(path, toml).unwrap();
}

fn postgres_admin_url() -> String {
    std::env::var("TIDEMARK_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh database; returns its name and URL.
async fn create_database() -> (String, String) {
    let admin = postgres_admin_url();
    let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL does not answer at {admin} ({e}). Start it with \
             `scripts/start-postgres.sh` or point TIDEMARK_TEST_POSTGRES_URL at a server."
        )
    });
    let name = format!("tidemark_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&name);
    (name, url.to_string())
}

async fn drop_database(name: &str) {
    let mut conn = PgConnection::connect(&postgres_admin_url()).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar::<_, Option<i64>>(sql)
        .fetch_one(pool)
        .await
        .unwrap()
        .unwrap_or(0)
}

async fn run_config(config: Config, apps: usize, cold: bool) -> Outcome {
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    make_repo(&repo, apps);

    let sandbox = Sandbox::new(SandboxOptions::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cluster_url = format!("http://{}", listener.local_addr().unwrap());
    let (stop_sandbox, stopped) = tokio::sync::oneshot::channel::<()>();
    let sandbox_task = tokio::spawn(sandbox.serve(listener, async {
        let _ = stopped.await;
    }));

    let (db_name, db_url) = create_database().await;
    let config_file = work.path().join("tidemark.toml");
    write_config(&config_file, &repo, &cluster_url, apps, config.concurrency);
    let mut settings = Settings::load(Some(&config_file), Vec::new()).unwrap();
    settings.database.url = DatabaseUrl::new(&db_url);

    // Every application's first target rendered before the replicas start (one pass of the Git
    // poller's code), unless the cold start is asked for.
    let mut prerender = None;
    if !cold {
        let store = Store::connect(&settings.database).await.unwrap();
        store.migrate().await.unwrap();
        store
            .sync_declared(
                DeclaredCatalog {
                    repositories: &settings.repositories,
                    clusters: &settings.clusters,
                    applications: &settings.applications,
                },
                server::clock::now(),
            )
            .await
            .unwrap();
        let mut s = settings.clone();
        s.git.cache_dir = work.path().join("git-prerender");
        let sources = GitSources::new(store.clone(), &s);
        let t = Instant::now();
        let ingested = sources.sync_repository("fleet").await.unwrap();
        prerender = Some(t.elapsed());
        let rendered = ingested
            .iter()
            .filter(|(_, i)| matches!(i.rendered, Some(Ok(_))))
            .count();
        assert_eq!(rendered, apps, "every application renders");
        drop(sources);
        store.close().await;
    }

    // Build every replica first (each registers itself), so they share the work from the start.
    let mut built = Vec::new();
    for r in 0..config.replicas {
        let mut s = settings.clone();
        s.git.cache_dir = work.path().join(format!("git-{r}"));
        built.push(Application::build(s).await.unwrap());
    }
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&db_url)
        .await
        .unwrap();
    let replica_ids: Vec<String> =
        sqlx::query_scalar("SELECT id FROM replicas ORDER BY started_at, id")
            .fetch_all(&pool)
            .await
            .unwrap();

    let started = Instant::now();
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for app in built {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        stops.push(tx);
        tasks.push(tokio::spawn(app.run_until_stopped(async {
            let _ = rx.await;
        })));
    }

    // (1) Every application synced once, with a status row.
    let mut rendered = None;
    let converged = loop {
        let synced = scalar(
            &pool,
            "SELECT COUNT(DISTINCT application) FROM syncs WHERE status = 'succeeded'",
        )
        .await;
        let statuses = scalar(&pool, "SELECT COUNT(*) FROM app_status").await;
        if rendered.is_none() {
            let targets = scalar(
                &pool,
                "SELECT COUNT(*) FROM app_git_state WHERE target_sha IS NOT NULL",
            )
            .await;
            if targets as usize >= apps {
                rendered = Some(started.elapsed());
            }
        }
        let done = synced.min(statuses) as usize;
        if done >= apps || started.elapsed() > CONVERGE_TIMEOUT {
            break done;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let converge_time = started.elapsed();

    let mut leases = Vec::new();
    for id in &replica_ids {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM app_leases l JOIN applications a ON a.name = l.application
             WHERE l.owner = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
        leases.push(n);
    }

    // (2) Once idle, one commit changes 100 applications' ConfigMaps.
    let mut latencies = Vec::new();
    let mut quiet_after = None;
    let mut compared_after_commit = 0;
    if converged >= apps {
        let t = Instant::now();
        while t.elapsed() < QUIET_TIMEOUT {
            let last = scalar(&pool, "SELECT MAX(compared_at) FROM app_status").await;
            if server::clock::now() - last >= QUIET.as_millis() as i64 {
                quiet_after = Some(t.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let stride = (apps / CHANGED).max(1);
        let changed: BTreeSet<String> = (0..apps)
            .step_by(stride)
            .take(CHANGED)
            .map(app_name)
            .collect();
        for app in &changed {
            std::fs::write(
                repo.join("apps").join(app).join("app.yaml"),
                manifest(app, "1"),
            )
            .unwrap();
        }
        git(&repo, &["commit", "-q", "-am", "change 100 applications"]);
        let committed_at = server::clock::now();
        let revision = git(&repo, &["rev-parse", "HEAD"]).trim().to_owned();
        let t = Instant::now();
        let mut applied: BTreeMap<String, i64> = BTreeMap::new();
        while applied.len() < changed.len() && t.elapsed() < LATENCY_TIMEOUT {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let rows: Vec<(String, Option<i64>)> = sqlx::query_as(
                "SELECT application, MIN(finished_at) FROM syncs
                 WHERE status = 'succeeded' AND revision = $1 GROUP BY application",
            )
            .bind(&revision)
            .fetch_all(&pool)
            .await
            .unwrap();
            for (app, finished) in rows {
                if let (true, Some(f)) = (changed.contains(&app), finished) {
                    applied.insert(app, f);
                }
            }
        }
        latencies = applied.values().map(|f| f - committed_at).collect();
        latencies.sort_unstable();
        compared_after_commit =
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM app_status WHERE compared_at >= $1")
                .bind(committed_at)
                .fetch_one(&pool)
                .await
                .unwrap();
    }

    let mut syncs = Vec::new();
    for id in &replica_ids {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM syncs WHERE owner = $1 AND status = 'succeeded'",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
        syncs.push(n);
    }
    let bad_syncs = scalar(
        &pool,
        "SELECT COUNT(*) FROM syncs WHERE status IN ('failed', 'interrupted')",
    )
    .await;

    for stop in stops {
        let _ = stop.send(());
    }
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(30), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("  a replica stopped with an error: {e}"),
            Ok(Err(e)) => eprintln!("  a replica's task failed: {e}"),
            Err(_) => eprintln!("  a replica did not stop within 30 s"),
        }
    }
    pool.close().await;
    let _ = stop_sandbox.send(());
    let _ = sandbox_task.await;
    drop_database(&db_name).await;

    Outcome {
        config,
        converged,
        converge_time,
        prerender,
        rendered,
        quiet_after,
        latencies,
        compared_after_commit,
        leases,
        syncs,
        bad_syncs,
    }
}

fn ms(v: Option<i64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v} ms"))
}

fn ratio(v: Option<f64>, base: Option<f64>) -> String {
    match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("x{:.1}", v / b),
        _ => "x-".to_owned(),
    }
}

fn summary(o: &Outcome, apps: usize, base: Option<&Outcome>) -> String {
    let throughput = match o.apps_per_s(apps) {
        Some(r) => format!(
            "{r:.0} apps/s ({})",
            ratio(Some(r), base.and_then(|b| b.apps_per_s(apps)))
        ),
        None => format!(
            "DID NOT CONVERGE: {}/{apps} synced in {:.0?}",
            o.converged, o.converge_time
        ),
    };
    let latency = if o.converged < apps {
        "commit→applied not measured".to_owned()
    } else {
        let mut s = format!(
            "commit→applied p50 {} p99 {}",
            ms(o.percentile(50.0)),
            ms(o.percentile(99.0))
        );
        if o.latencies.len() < CHANGED.min(apps) {
            s.push_str(&format!(
                " (ONLY {}/{} applied within {:.0?})",
                o.latencies.len(),
                CHANGED.min(apps),
                LATENCY_TIMEOUT
            ));
        }
        s
    };
    format!("{}: {throughput}, {latency}", o.config.label())
}

#[tokio::main]
async fn main() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let apps: usize = std::env::var("REPLICAS_BENCH_APPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let cold = std::env::var_os("REPLICAS_BENCH_COLD").is_some();
    let configs = [
        (1, 1, false),
        (4, 1, false),
        (16, 1, false),
        (4, 3, false),
        (16, 3, true),
    ]
    .map(|(concurrency, replicas, optional)| Config {
        concurrency,
        replicas,
        optional,
    });
    println!(
        "{apps} auto-sync applications (Namespace + ConfigMap each), one Git repository \
         (fetch every 1 s), reconcile interval 300 s, sandbox cluster, PostgreSQL; {}; \
         commit→applied over {} applications changed in one commit",
        if cold {
            "cold start: throughput includes the first clone, ingest and render"
        } else {
            "first targets rendered before the replicas start"
        },
        CHANGED.min(apps)
    );
    let run_started = Instant::now();
    let mut outcomes: Vec<Outcome> = Vec::new();
    for config in configs {
        if config.optional && run_started.elapsed() > OPTIONAL_BUDGET {
            println!(
                "{}: skipped ({:.0?} spent, budget for optional configurations {:.0?})",
                config.label(),
                run_started.elapsed(),
                OPTIONAL_BUDGET
            );
            continue;
        }
        let t = Instant::now();
        let o = run_config(config, apps, cold).await;
        println!("{}", summary(&o, apps, outcomes.first()));
        let rendered = match (o.prerender, o.rendered) {
            (Some(p), _) => format!("targets rendered beforehand in {p:.1?}"),
            (None, Some(r)) => format!("all targets rendered {r:.1?} after the start"),
            (None, None) => "targets never all rendered".to_owned(),
        };
        println!(
            "  first sync of all {:.1?} after the start ({rendered}); idle {} later; \
             {} applications compared after the commit ({} changed); leases per replica {:?}; \
             succeeded syncs per replica {:?}; failed/interrupted syncs {}; configuration took {:.0?}",
            o.converge_time,
            o.quiet_after
                .map_or_else(|| "never".to_owned(), |q| format!("{q:.1?}")),
            o.compared_after_commit,
            CHANGED.min(apps),
            o.leases,
            o.syncs,
            o.bad_syncs,
            t.elapsed(),
        );
        outcomes.push(o);
    }

    let base = outcomes.first();
    println!();
    println!(
        "{:<28} {:>9} {:>7} {:>10} {:>8} {:>10} {:>10}",
        "configuration", "first all", "apps/s", "ratio", "applied", "p50", "p99"
    );
    for o in &outcomes {
        let apps_per_s = o.apps_per_s(apps);
        println!(
            "{:<28} {:>9} {:>7} {:>10} {:>8} {:>10} {:>10}",
            o.config.label(),
            format!("{:.1?}", o.converge_time),
            apps_per_s.map_or_else(|| "-".to_owned(), |r| format!("{r:.0}")),
            ratio(apps_per_s, base.and_then(|b| b.apps_per_s(apps))),
            format!("{}/{}", o.latencies.len(), CHANGED.min(apps)),
            ms(o.percentile(50.0)),
            ms(o.percentile(99.0)),
        );
    }
    println!(
        "baseline: concurrency 1, 1 replica; total {:.0?}",
        run_started.elapsed()
    );
}
