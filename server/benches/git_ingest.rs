//! Git ingest benchmarks, with the baseline measured in the same run:
//! 1. full history ingest of one application in a generated 100,000-commit repository (walk +
//!    store into SQLite) vs `git log --format=%H main -- <path>` (target: ≤ 2×);
//! 2. fetch + ingest (+ render) of one new commit through the engine (target: < 100 ms).
//!
//! `cargo bench -p server --bench git_ingest` (set `GIT_INGEST_COMMITS` for another size).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use server::config::{
    ApplicationSettings, ClusterSettings, DatabaseUrl, RepositorySettings, Settings,
};
use server::git::history;
use server::git::sources::GitSources;
use server::store::{DeclaredCatalog, Store};

const APPS: usize = 10;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
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

/// A repository whose commit i changes `apps/app-(i % 10)/cm.yaml`, built with fast-import.
fn generate(dir: &Path, commits: usize) {
    git(dir, &["init", "-q", "-b", "main"]);
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let stdin = child.stdin.as_mut().unwrap();
        let mut w = std::io::BufWriter::new(stdin);
        for i in 1..=commits {
            let msg = format!("change {i}\n");
            let app = i % APPS;
            let content = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-{app}\ndata:\n  rev: \"{i}\"\n");
            writeln!(
                w,
                "commit refs/heads/main\nmark :{i}\ncommitter Bench <bench@example.com> {} +0000",
                1_600_000_000 + i
            )
            .unwrap();
            write!(w, "data {}\n{msg}", msg.len()).unwrap();
            if i > 1 {
                writeln!(w, "from :{}", i - 1).unwrap();
            }
            write!(
                w,
                "M 644 inline apps/app-{app}/cm.yaml\ndata {}\n{content}\n",
                content.len()
            )
            .unwrap();
        }
    }
    assert!(child.wait().unwrap().success());
    git(dir, &["reset", "-q", "--hard", "main"]);
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn settings(repo: &Path, db: &Path, cache: &Path) -> Settings {
    let mut s = Settings::load(None, Vec::new()).unwrap();
    s.database.url = DatabaseUrl::new(format!("sqlite://{}", db.display()));
    s.git.cache_dir = cache.to_path_buf();
    s.repositories = vec![RepositorySettings::new(
        "bench",
        format!("file://{}", repo.display()),
    )];
    s.clusters = vec![ClusterSettings {
        name: "c".into(),
        url: "http://127.0.0.1:1".into(),
        ..Default::default()
    }];
    s.applications = vec![ApplicationSettings {
        name: "app-7".into(),
        project: "bench".into(),
        repository: "bench".into(),
        path: "apps/app-7".into(),
        revision: "main".into(),
        cluster: "c".into(),
        namespace: "bench".into(),
        sync_policy: app::model::SyncPolicy::Manual,
        self_heal: false,
        prune: false,
        ignore: Vec::new(),
        approvals: Default::default(),
        compare: Default::default(),
        require_signed: false,
        source: None,
        helm: Default::default(),
    }];
    s
}

async fn store_for(s: &Settings) -> Store {
    let store = Store::connect(&s.database).await.unwrap();
    store.migrate().await.unwrap();
    let catalog = DeclaredCatalog {
        repositories: &s.repositories,
        clusters: &s.clusters,
        applications: &s.applications,
    };
    store.sync_declared(catalog, 0).await.unwrap();
    store
}

#[tokio::main]
async fn main() {
    let commits: usize = std::env::var("GIT_INGEST_COMMITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let work = tempfile::tempdir().unwrap();
    let repo_dir = work.path().join("repo");
    std::fs::create_dir_all(&repo_dir).unwrap();
    let started = Instant::now();
    generate(&repo_dir, commits);
    println!("generated {commits} commits in {:.1?}", started.elapsed());

    // Baseline: git log on the same repository and path.
    let mut baseline = Vec::new();
    let mut expected = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let out = git(
            &repo_dir,
            &["log", "--format=%H", "main", "--", "apps/app-7"],
        );
        baseline.push(t.elapsed());
        expected = out.lines().count();
    }

    // Tidemark: walk + store, each round into a fresh database.
    let mut walk_only = Vec::new();
    let mut ingest = Vec::new();
    for round in 0..3 {
        let s = settings(
            &repo_dir,
            &work.path().join(format!("db-{round}.sqlite")),
            &work.path().join("cache"),
        );
        let store = store_for(&s).await;
        let t = Instant::now();
        let repo = git2::Repository::open(&repo_dir).unwrap();
        let tip = repo.revparse_single("main").unwrap().id();
        let found = history::touching(&repo, tip, "apps/app-7", None).unwrap();
        walk_only.push(t.elapsed());
        assert_eq!(found.len(), expected, "walk must list what git log lists");
        let s0 = Instant::now();
        store
            .ingest_history("app-7", "bench", &found, true, &tip.to_string(), 0)
            .await
            .unwrap();
        ingest.push(t.elapsed());
        if std::env::var("GIT_INGEST_VERBOSE").is_ok() {
            println!("  (store only: {:.1?})", s0.elapsed());
        }
        store.close().await;
    }
    let (b, w, i) = (median(baseline), median(walk_only), median(ingest));
    println!("history of one path ({expected} of {commits} commits), median of 3:");
    println!("  git log --format=%H -- path   {b:>10.1?}  ratio 1.00");
    println!(
        "  walk (git2, simplification)   {w:>10.1?}  ratio {:.2}",
        w.as_secs_f64() / b.as_secs_f64()
    );
    println!(
        "  walk + store (SQLite)         {i:>10.1?}  ratio {:.2}  (target <= 2.00)",
        i.as_secs_f64() / b.as_secs_f64()
    );

    if std::env::var("GIT_INGEST_SKIP_ENGINE").is_ok() {
        return;
    }
    // Fetch + ingest + render of one new commit through the engine (mirror already synced).
    let s = settings(
        &repo_dir,
        &work.path().join("db-engine.sqlite"),
        &work.path().join("cache-engine"),
    );
    let store = store_for(&s).await;
    let sources = GitSources::new(store.clone(), &s);
    let t = Instant::now();
    sources.sync_repository("bench").await.unwrap();
    println!(
        "first sync (clone + full ingest + render): {:.1?}",
        t.elapsed()
    );
    let mut one = Vec::new();
    for n in 0..5 {
        let file = repo_dir.join("apps/app-7/cm.yaml");
        std::fs::write(&file, format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-7\ndata:\n  rev: \"new-{n}\"\n")).unwrap();
        git(
            &repo_dir,
            &[
                "-c",
                "user.name=B",
                "-c",
                "user.email=b@example.com",
                "commit",
                "-q",
                "-am",
                "one more",
            ],
        );
        let t = Instant::now();
        let out = sources.sync_repository("bench").await.unwrap();
        one.push(t.elapsed());
        assert_eq!(out[0].1.report.new_commits, 1);
    }
    println!(
        "fetch + ingest + render of one new commit, median of 5: {:.1?} (target < 100 ms)",
        median(one)
    );
}
