//! Several replicas (real `tidemark serve` processes) on one PostgreSQL: leases, syncs owned by
//! replicas, claims of approved requests, and a single process per SQLite file.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use server::store::{Store, SyncStatus};

use crate::git::GitRepo;
use crate::helpers::{bearer_client, cli_token, Process, TestDb};
use crate::sandbox::TestCluster;

/// Auto-sync applications in the fleet (plus one manual application with two approvals).
const FLEET: usize = 30;

/// ConfigMaps per application: enough that a kill often lands mid-sync.
const OBJECTS: usize = 12;

fn fleet_manifest(app: &str, revision: usize) -> String {
    let mut out = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {app}}}\n");
    for i in 0..OBJECTS {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings-{i}}}\ndata: {{revision: \"{revision}\"}}\n"
        ));
    }
    out
}

fn write_fleet(repo: &GitRepo, revision: usize) {
    for i in 0..FLEET {
        let app = format!("fleet-{i}");
        repo.write(
            &format!("apps/{app}/app.yaml"),
            &fleet_manifest(&app, revision),
        );
    }
    repo.write("apps/gated/app.yaml", &fleet_manifest("gated", revision));
}

fn config(work: &std::path::Path, db: &str, repo: &GitRepo, cluster: &str) -> std::path::PathBuf {
    let mut toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"{db}\"\n[git]\ncache_dir = \"{cache}\"\n\
         [reconcile]\ninterval_secs = 30\nconcurrency = 4\n\
         [[repositories]]\nname = \"fleet\"\nurl = \"{repo}\"\nfetch_interval_secs = 1\n\
         [[clusters]]\nname = \"sandbox\"\nurl = \"{cluster}\"\n",
        cache = work.join("git").display(),
        repo = repo.url(),
    );
    for i in 0..FLEET {
        toml.push_str(&format!(
            "[[applications]]\nname = \"fleet-{i}\"\nrepository = \"fleet\"\npath = \"apps/fleet-{i}\"\n\
             cluster = \"sandbox\"\nnamespace = \"fleet-{i}\"\nsync_policy = \"auto\"\nprune = true\n\
             [applications.approvals]\nrequired = 0\n"
        ));
    }
    toml.push_str(
        "[[applications]]\nname = \"gated\"\nrepository = \"fleet\"\npath = \"apps/gated\"\n\
         cluster = \"sandbox\"\nnamespace = \"gated\"\nsync_policy = \"manual\"\n\
         [applications.approvals]\nrequired = 2\nsync_on_approval = false\n",
    );
    // Each replica gets its own Git cache (a pod's emptyDir): only the database is shared.
    let path = work.join("tidemark.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// The revision (commit) each application has deployed, from the store.
async fn deployed(store: &Store) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    for app in store.app_sources().await.unwrap() {
        let last = store.last_successful_sync(&app.name).await.unwrap();
        out.insert(app.name, last.map(|(rev, _)| rev));
    }
    out
}

/// A cheap deterministic sequence for kill times and victims (no extra crate).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_killed_at_random_sync_every_revision_once_and_apply_an_approval_once() {
    let trials: usize = std::env::var("TIDEMARK_REPLICA_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let c = TestCluster::sandbox().await;
    let db = TestDb::postgres().await;
    let repo = GitRepo::new();
    write_fleet(&repo, 0);
    let mut revisions = vec![repo.commit("revision 0")];
    let works: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let configs: Vec<_> = works
        .iter()
        .map(|w| config(w.path(), &db.url, &repo, &c.url))
        .collect();
    // Migrate once, so the token commands below do not race the replicas' migrations.
    let store = db.store().await;
    let mut replicas: Vec<Process> = configs.iter().map(|c| Process::start(c)).collect();
    let (ta, tb) = (
        cli_token(&configs[0], "approver-a"),
        cli_token(&configs[0], "approver-b"),
    );
    let mut seed = Lcg(0x7e1d_e3a4);
    let mut killed = 0;
    for trial in 1..=trials {
        write_fleet(&repo, trial);
        revisions.push(repo.commit(&format!("revision {trial}")));
        // Kill one replica at a random moment of this revision's fetch, render and sync.
        tokio::time::sleep(Duration::from_millis(200 + seed.next(2_500))).await;
        let victim = seed.next(3) as usize;
        let fresh = Process::start(&configs[victim]);
        std::mem::replace(&mut replicas[victim], fresh).kill();
        killed += 1;
    }
    let last = revisions.last().unwrap().clone();

    // Every auto-sync application converges on the last revision (leases of killed replicas
    // are taken over within 15 s).
    let started = Instant::now();
    loop {
        let now = deployed(&store).await;
        let behind: Vec<_> = now
            .iter()
            .filter(|(app, rev)| app.starts_with("fleet-") && rev.as_deref() != Some(last.as_str()))
            .collect();
        if behind.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "after {killed} kills, not converged in 120 s: {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The manual application: two approvals sent at the same instant to two replicas, then
    // "sync now" at the same instant on all three: applied once.
    let (a, b) = (bearer_client(&ta), bearer_client(&tb));
    let request = loop {
        let r: serde_json::Value = a
            .get(format!(
                "{}/api/v1/sync-requests?application=gated&status=pending",
                replicas[0].base
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(req) = r["items"]
            .as_array()
            .and_then(|i| i.first())
            .filter(|q| q["revision"] == last.as_str())
        {
            break req["id"].as_i64().unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "no request for {last}: {r}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let approve = |client: &reqwest::Client, base: &str| {
        client
            .post(format!("{base}/api/v1/sync-requests/{request}/approve"))
            .send()
    };
    let (ra, rb) = tokio::join!(
        approve(&a, &replicas[0].base),
        approve(&b, &replicas[1].base)
    );
    assert_eq!(
        (ra.unwrap().status().as_u16(), rb.unwrap().status().as_u16()),
        (200, 200)
    );
    let run = |client: reqwest::Client, base: String| async move {
        client
            .post(format!("{base}/api/v1/sync-requests/{request}/sync"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let (r0, r1, r2) = tokio::join!(
        run(a.clone(), replicas[0].base.clone()),
        run(b.clone(), replicas[1].base.clone()),
        run(a.clone(), replicas[2].base.clone())
    );
    let mut codes = vec![r0, r1, r2];
    codes.sort();
    assert_eq!(codes, vec![200, 409, 409], "exactly one run applies");

    // Sync records: no revision of any application synced twice, none left running, and
    // every interrupted sync belonged to a killed replica (live ones are never interrupted).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let live: BTreeSet<String> = store
        .live_replicas(server::clock::now())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(live.len(), 3, "{live:?}");
    let mut interrupted = 0;
    for app in store.app_sources().await.unwrap() {
        let syncs = store.syncs(&app.name, 1000).await.unwrap();
        let mut per_revision: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &syncs {
            assert_ne!(
                s.status,
                SyncStatus::Running,
                "{} left running: {s:?}",
                app.name
            );
            if s.status == SyncStatus::Succeeded {
                *per_revision.entry(s.revision.as_str()).or_default() += 1;
            }
            if s.status == SyncStatus::Interrupted {
                interrupted += 1;
            }
        }
        for (rev, n) in &per_revision {
            assert_eq!(*n, 1, "{} synced {rev} {n} times: {syncs:?}", app.name);
        }
        assert_eq!(
            per_revision.get(last.as_str()),
            Some(&1),
            "{}: {syncs:?}",
            app.name
        );
    }
    let owners = store.interrupted_sync_owners().await.unwrap();
    assert!(
        owners
            .iter()
            .all(|o| o.as_ref().is_none_or(|o| !live.contains(o))),
        "a live replica's sync was interrupted: {owners:?} (live {live:?})"
    );
    let chain = store.audit_verify().await.unwrap();
    assert!(chain.ok && chain.verified_through > 0, "{chain:?}");
    eprintln!(
        "{trials} trials, {killed} kills, {interrupted} syncs interrupted by a kill, {} revisions",
        revisions.len()
    );
    drop(replicas);
    store.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_second_process_on_one_sqlite_file_refuses_to_start() {
    let db = TestDb::sqlite();
    let first = server::startup::Application::build(db.settings())
        .await
        .unwrap();
    let second = server::startup::Application::build(db.settings()).await;
    let Err(e) = second else {
        panic!("two processes on one SQLite file")
    };
    let message = e.to_string();
    assert!(
        message.contains("in use by another Tidemark process") && message.contains("PostgreSQL"),
        "{message}"
    );
    drop(first);
    // Once the first is gone, the file is free again.
    server::startup::Application::build(db.settings())
        .await
        .unwrap();
}
