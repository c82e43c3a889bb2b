//! Compare and sync end to end: Git (real `git`) → rendered snapshot → sandbox over HTTP.

mod compare;
mod compare_more;
mod crds;
mod ownership;

use serde_json::json;
use server::cluster::client::ClusterClient;
use server::config::{ApplicationSettings, ClusterSettings, RepositorySettings, Settings};
use server::diff::ResourceStatus;
use server::git::sources::GitSources;
use server::reconcile;
use server::store::{DeclaredCatalog, Store, SyncStatus};

use crate::git::GitRepo;
use crate::helpers::Process;
use crate::helpers::TestDb;
use crate::sandbox::TestCluster;

pub(crate) const APP: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: guestbook}\n---\n\
apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: 'nginx:1.27'}]}\n---\n\
apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData: {password: hunter2}\n";
const EXTRA: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: fast}\n";

pub(crate) struct Fixture {
    pub settings: Settings,
    /// The application's namespace: `guestbook` on a sandbox, the test's own fresh namespace
    /// on a real cluster (`TIDEMARK_TEST_KUBECONFIG`), where tests run side by side.
    pub ns: String,
    _db: TestDb,
    _cluster: TestCluster,
    _cache: tempfile::TempDir,
    pub repo: GitRepo,
    pub store: Store,
    pub git: std::sync::Arc<GitSources>,
    pub cluster: ClusterClient,
    pub kube: kube::Client,
}

async fn fixture() -> Fixture {
    fixture_with(app::model::SyncPolicy::Manual, false).await
}

pub(crate) async fn fixture_with(policy: app::model::SyncPolicy, self_heal: bool) -> Fixture {
    // Direct syncs in these tests: no approvals needed.
    let direct = server::config::ApprovalPolicy {
        required: 0,
        ..Default::default()
    };
    fixture_approvals(policy, self_heal, direct).await
}

pub(crate) async fn fixture_approvals(
    policy: app::model::SyncPolicy,
    self_heal: bool,
    approvals: server::config::ApprovalPolicy,
) -> Fixture {
    fixture_on(TestCluster::sandbox().await, policy, self_heal, approvals).await
}

/// A fixture on the cluster under test: the real one named by `TIDEMARK_TEST_KUBECONFIG` (the
/// control plane `make test` builds), else a sandbox. For tests whose assertions hold on any
/// conformant cluster.
pub(crate) async fn fixture_any(policy: app::model::SyncPolicy, self_heal: bool) -> Fixture {
    let direct = server::config::ApprovalPolicy {
        required: 0,
        ..Default::default()
    };
    fixture_on(TestCluster::start().await, policy, self_heal, direct).await
}

/// [`APP`] deployed to namespace `ns`.
pub(crate) fn app_in(ns: &str) -> String {
    APP.replace(
        "kind: Namespace\nmetadata: {name: guestbook}",
        &format!("kind: Namespace\nmetadata: {{name: {ns}}}"),
    )
}

async fn fixture_on(
    c: TestCluster,
    policy: app::model::SyncPolicy,
    self_heal: bool,
    approvals: server::config::ApprovalPolicy,
) -> Fixture {
    let db = TestDb::sqlite();
    let ns = if c.sandbox.is_some() {
        "guestbook".to_owned()
    } else {
        c.ns.clone()
    };
    let cache = tempfile::tempdir().unwrap();
    let repo = GitRepo::new();
    repo.write("apps/guestbook/app.yaml", &app_in(&ns))
        .write("apps/guestbook/extra.yaml", EXTRA);
    repo.commit("guestbook");
    let mut s: Settings = db.settings();
    s.git.cache_dir = cache.path().to_path_buf();
    s.repositories = vec![RepositorySettings::new("demo", repo.url())];
    s.clusters = vec![match &c.sandbox {
        Some(_) => ClusterSettings {
            name: "sandbox".into(),
            url: c.url.clone(),
            ..Default::default()
        },
        None => ClusterSettings {
            name: "sandbox".into(),
            kubeconfig: std::env::var_os("TIDEMARK_TEST_KUBECONFIG").map(Into::into),
            ..Default::default()
        },
    }];
    s.applications = vec![ApplicationSettings {
        name: "guestbook".into(),
        project: "demo".into(),
        repository: "demo".into(),
        path: "apps/guestbook".into(),
        revision: "main".into(),
        cluster: "sandbox".into(),
        namespace: ns.clone(),
        sync_policy: policy,
        self_heal,
        prune: true,
        ignore: Vec::new(),
        approvals,
        compare: Default::default(),
    }];
    let store = db.store().await;
    let catalog = DeclaredCatalog {
        repositories: &s.repositories,
        clusters: &s.clusters,
        applications: &s.applications,
    };
    store.sync_declared(catalog, 0).await.unwrap();
    let git = GitSources::new(store.clone(), &s);
    git.sync_repository("demo").await.unwrap();
    let cluster = ClusterClient::connect(&s.clusters[0]).await.unwrap();
    let kube = c.client.clone();
    Fixture {
        settings: s,
        ns,
        _db: db,
        _cluster: c,
        _cache: cache,
        repo,
        store,
        git,
        cluster,
        kube,
    }
}

#[tokio::test]
async fn sync_applies_git_and_compare_reports_drift_then_prune_removes_what_left_git() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    let (sha, digest, desired) = reconcile::desired(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    let statuses = |diffs: &[server::diff::ResourceDiff]| {
        diffs
            .iter()
            .map(|d| (d.object.kind.clone(), d.status))
            .collect::<Vec<_>>()
    };

    let before = reconcile::compare(&f.store, &f.cluster, &app, &desired, &[])
        .await
        .unwrap();
    // (On a real cluster the test's namespace exists already.)
    assert!(
        before
            .iter()
            .all(|d| d.status == ResourceStatus::Missing || d.object.kind == "Namespace"),
        "{before:?}"
    );

    let (id, status, results) = reconcile::sync(
        &f.store,
        &f.cluster,
        &app,
        &sha,
        &digest,
        &desired,
        true,
        "manual",
        &ada(),
    )
    .await
    .unwrap();
    assert_eq!(status, SyncStatus::Succeeded, "{results:?}");
    assert_eq!(results[0].object, format!("Namespace {}", f.ns));
    let synced = reconcile::compare(&f.store, &f.cluster, &app, &desired, &[])
        .await
        .unwrap();
    assert!(
        synced.iter().all(|d| d.status == ResourceStatus::Synced),
        "{synced:?}"
    );

    // Someone scales by hand: drift on .spec.replicas, with both values.
    scale_by_hand(&f, 5).await;
    let drift = reconcile::compare(&f.store, &f.cluster, &app, &desired, &[])
        .await
        .unwrap();
    let web = drift
        .iter()
        .find(|d| d.object.kind == "Deployment")
        .unwrap();
    assert_eq!(web.status, ResourceStatus::OutOfSync);
    assert_eq!(
        (
            web.changes[0].path.as_str(),
            web.changes[0].desired.clone(),
            web.changes[0].live.clone()
        ),
        (".spec.replicas", Some(json!(2)), Some(json!(5)))
    );
    // Secret values never appear in a comparison.
    assert!(!serde_json::to_string(&drift).unwrap().contains("hunter2"));

    // The ConfigMap leaves Git: Extraneous until a pruning sync deletes it.
    f.repo.git(&["rm", "-q", "apps/guestbook/extra.yaml"]);
    f.repo.commit("drop settings");
    f.git.sync_repository("demo").await.unwrap();
    let (sha2, digest2, desired2) = reconcile::desired(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    assert_ne!(sha2, sha);
    let before_prune = reconcile::compare(&f.store, &f.cluster, &app, &desired2, &[])
        .await
        .unwrap();
    assert!(
        statuses(&before_prune).contains(&("ConfigMap".to_string(), ResourceStatus::Extraneous)),
        "{before_prune:?}"
    );
    let (_, status, results) = reconcile::sync(
        &f.store,
        &f.cluster,
        &app,
        &sha2,
        &digest2,
        &desired2,
        true,
        "manual",
        &ada(),
    )
    .await
    .unwrap();
    assert_eq!(status, SyncStatus::Succeeded);
    assert!(
        results
            .iter()
            .any(|r| r.action == "pruned" && r.object == format!("ConfigMap {}/settings", f.ns)),
        "{results:?}"
    );
    let after = reconcile::compare(&f.store, &f.cluster, &app, &desired2, &[])
        .await
        .unwrap();
    assert!(
        after.iter().all(|d| d.status == ResourceStatus::Synced),
        "{after:?}"
    );

    let syncs = f.store.syncs("guestbook", 10).await.unwrap();
    assert_eq!(syncs.len(), 2);
    assert!(syncs.iter().all(|s| s.finished_at.is_some()));
    assert_eq!(syncs[1].id, id);
}

#[tokio::test]
async fn a_failing_resource_fails_the_sync_with_the_api_message_and_prunes_nothing() {
    let f = fixture().await;
    f.repo.write(
        "apps/guestbook/gadget.yaml",
        "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g}\n",
    );
    f.repo.commit("unknown kind");
    f.git.sync_repository("demo").await.unwrap();
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    // A kind nothing serves is placed as written (in the application's namespace); applying it
    // fails for that resource alone (see `crds::a_resource_of_a_kind_nothing_defines_...`).
    let (_, _, desired) = reconcile::desired(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    let gadget = desired.iter().find(|o| o["kind"] == "Gadget").unwrap();
    assert_eq!(gadget["metadata"]["namespace"], "guestbook");

    // A kind that exists but an object the API refuses: that resource fails, others apply.
    f.repo.git(&["rm", "-q", "apps/guestbook/gadget.yaml"]);
    f.repo.write(
        "apps/guestbook/bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name}\n",
    );
    f.repo.commit("invalid name");
    f.git.sync_repository("demo").await.unwrap();
    let (sha, digest, desired) = reconcile::desired(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    let (_, status, results) = reconcile::sync(
        &f.store,
        &f.cluster,
        &app,
        &sha,
        &digest,
        &desired,
        true,
        "manual",
        &ada(),
    )
    .await
    .unwrap();
    assert_eq!(status, SyncStatus::Failed);
    let bad = results.iter().find(|r| r.action == "failed").unwrap();
    assert!(
        bad.message.as_deref().unwrap().contains("RFC 1123"),
        "{bad:?}"
    );
    assert!(results.iter().all(|r| r.action != "pruned"));
    let syncs = f.store.syncs("guestbook", 1).await.unwrap();
    assert_eq!(syncs[0].status, SyncStatus::Failed);
    assert_eq!(syncs[0].message.as_deref(), Some("1 of 5 resources failed"));
}

#[tokio::test]
async fn the_diff_endpoint_compares_the_target_with_the_cluster_and_a_restart_interrupts_running_syncs(
) {
    let f = fixture().await;
    // A sync left running, as a crash would leave it.
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    let new = server::store::NewSync {
        application: "guestbook",
        revision: "abc",
        digest: "d",
        cause: "manual",
        actor: &ada(),
    };
    let running = f.store.begin_sync(new, 1).await.unwrap();

    let server = crate::helpers::TestServer::start(f.settings.clone()).await;
    let syncs = f.store.syncs("guestbook", 1).await.unwrap();
    assert_eq!(
        (syncs[0].id, syncs[0].status),
        (running, SyncStatus::Interrupted)
    );
    let events = f.store.timeline("guestbook", 10).await.unwrap();
    assert!(
        events.iter().any(|(k, _)| k == "sync_interrupted"),
        "{events:?}"
    );

    let body: serde_json::Value = server
        .get("/api/v1/applications/guestbook/diff")
        .await
        .json()
        .await
        .unwrap();
    let statuses: Vec<&str> = body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["Missing"; 4], "{body}");
    let (sha, digest, desired) = reconcile::desired(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    reconcile::sync(
        &f.store,
        &f.cluster,
        &app,
        &sha,
        &digest,
        &desired,
        false,
        "manual",
        &ada(),
    )
    .await
    .unwrap();
    // The server reads through its own watch cache: it converges within moments.
    let mut body = serde_json::Value::Null;
    for _ in 0..250 {
        body = server
            .get("/api/v1/applications/guestbook/diff")
            .await
            .json()
            .await
            .unwrap();
        if body["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "Synced")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        body["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "Synced"),
        "{body}"
    );
    assert_eq!(body["digest"], digest);
    assert!(!body.to_string().contains("hunter2"));
    assert_eq!(
        server.get("/api/v1/applications/nope/diff").await.status(),
        404
    );
}

/// Changes the Deployment behind Tidemark's back, then waits until Tidemark's watch cache has
/// seen it (the cache is eventually consistent, within milliseconds here).
pub(crate) async fn scale_by_hand(f: &Fixture, replicas: i64) {
    let deploys: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(f.kube.clone(), &f.ns);
    let patch = kube::api::Patch::Merge(json!({"spec": {"replicas": replicas}}));
    deploys
        .patch("web", &kube::api::PatchParams::default(), &patch)
        .await
        .unwrap();
    wait_seen(&f.cluster, &f.ns, |web| {
        web.is_some_and(|w| w["spec"]["replicas"] == replicas)
    })
    .await;
}

/// Waits until the cluster client's view of Deployment guestbook/web satisfies `ok`.
async fn wait_seen(
    cluster: &ClusterClient,
    ns: &str,
    ok: impl Fn(Option<&serde_json::Value>) -> bool,
) {
    let web = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns}});
    for _ in 0..250 {
        if ok(cluster.get(&web).await.unwrap().as_ref()) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the watch cache did not catch up");
}

async fn live_replicas(f: &Fixture) -> i32 {
    let deploys: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(f.kube.clone(), &f.ns);
    deploys.get("web").await.unwrap().spec.replicas.unwrap()
}

#[tokio::test]
async fn auto_sync_deploys_each_new_revision_and_reports_health() {
    use server::cluster::health::Health;
    let f = fixture_with(app::model::SyncPolicy::Auto, false).await;
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    let first = reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    assert_eq!(first.synced.map(|s| s.1), Some(SyncStatus::Succeeded));
    assert_eq!(
        (first.sync_status, first.health),
        ("Synced", Health::Healthy)
    );
    // Nothing changed: nothing to do.
    assert_eq!(
        reconcile::reconcile_app(&f.store, &f.cluster, &app)
            .await
            .unwrap()
            .synced,
        None
    );

    // A new commit with an image that never becomes available: deployed, and Degraded.
    let broken = APP.replace("nginx:1.27", "nginx:broken");
    f.repo.write("apps/guestbook/app.yaml", &broken);
    let sha = f.repo.commit("bad image");
    f.git.sync_repository("demo").await.unwrap();
    let second = reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    assert_eq!(second.synced.map(|s| s.1), Some(SyncStatus::Succeeded));
    assert_eq!(second.health, Health::Degraded);
    let status = f.store.app_status("guestbook").await.unwrap().unwrap();
    assert_eq!(status.deployed_sha.as_deref(), Some(sha.as_str()));
    assert!(
        status.health_message.contains("Deployment web"),
        "{}",
        status.health_message
    );
    let timeline = f.store.timeline("guestbook", 20).await.unwrap();
    assert!(
        timeline
            .iter()
            .any(|(k, m)| k == "health" && m.contains("Healthy → Degraded")),
        "{timeline:?}"
    );
    // Only the healthy revision is known-good (a rollback target); the broken one is not.
    let good = f.store.known_good("guestbook").await.unwrap();
    assert_eq!(good.len(), 1);
    assert_ne!(good[0].1, sha);
}

#[tokio::test]
async fn drift_opens_an_episode_that_closes_when_reverted_in_the_cluster_or_by_a_sync() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    let (sha, digest, desired) = reconcile::desired(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    reconcile::sync(
        &f.store,
        &f.cluster,
        &app,
        &sha,
        &digest,
        &desired,
        true,
        "manual",
        &ada(),
    )
    .await
    .unwrap();
    assert!(
        !reconcile::reconcile_app(&f.store, &f.cluster, &app)
            .await
            .unwrap()
            .drifting
    );

    scale_by_hand(&f, 5).await;
    let o = reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    assert!(
        o.drifting && o.synced.is_none(),
        "manual policy never syncs by itself: {o:?}"
    );
    assert_eq!(o.sync_status, "OutOfSync");
    // Still drifting: no second episode.
    reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    scale_by_hand(&f, 2).await;
    assert!(
        !reconcile::reconcile_app(&f.store, &f.cluster, &app)
            .await
            .unwrap()
            .drifting
    );

    scale_by_hand(&f, 7).await;
    assert!(
        reconcile::reconcile_app(&f.store, &f.cluster, &app)
            .await
            .unwrap()
            .drifting
    );
    reconcile::sync(
        &f.store,
        &f.cluster,
        &app,
        &sha,
        &digest,
        &desired,
        true,
        "manual",
        &ada(),
    )
    .await
    .unwrap();
    assert!(f.store.open_drift("guestbook").await.unwrap().is_none());

    let timeline = f.store.timeline("guestbook", 30).await.unwrap();
    let drift: Vec<&str> = timeline
        .iter()
        .rev()
        .filter(|(k, _)| k.starts_with("drift"))
        .map(|(_, m)| m.as_str())
        .collect();
    assert_eq!(drift.len(), 4, "{drift:?}");
    assert!(
        drift[0].starts_with("drift detected: 1 differ") && drift[0].contains("Deployment web"),
        "{drift:?}"
    );
    assert!(drift[1].contains("reverted in cluster"), "{drift:?}");
    assert!(drift[3].contains("closed by a sync"), "{drift:?}");
}

#[tokio::test]
async fn self_heal_reapplies_git_and_closes_the_episode() {
    let f = fixture_any(app::model::SyncPolicy::Auto, true).await;
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    scale_by_hand(&f, 9).await;
    let o = reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    assert_eq!(o.synced.map(|s| s.1), Some(SyncStatus::Succeeded));
    assert!(!o.drifting);
    assert_eq!(o.sync_status, "Synced");
    assert_eq!(live_replicas(&f).await, 2);
    let syncs = f.store.syncs("guestbook", 1).await.unwrap();
    assert_eq!(syncs[0].cause, "self_heal");
    let timeline = f.store.timeline("guestbook", 10).await.unwrap();
    assert!(
        timeline
            .iter()
            .any(|(k, m)| k == "drift_closed" && m.contains("self-healed")),
        "{timeline:?}"
    );
}

#[tokio::test]
async fn a_running_tidemark_deploys_an_auto_application_and_follows_new_commits() {
    let f = fixture_with(app::model::SyncPolicy::Auto, true).await;
    let mut settings = f.settings.clone();
    settings.reconcile.interval_secs = 3600; // only the "new revision" signal and the first tick drive it
    let server = crate::helpers::TestServer::start(settings).await;
    wait_deployed(&f.store, None).await;
    assert_eq!(live_replicas(&f).await, 2);

    // A change in the cluster is seen by the watch and self-healed at once (the interval is an
    // hour here, so only the watch event can trigger it).
    let deploys: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(f.kube.clone(), "guestbook");
    let started = std::time::Instant::now();
    deploys
        .patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"replicas": 7}})),
        )
        .await
        .unwrap();
    let mut healed = false;
    for _ in 0..150 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if live_replicas(&f).await == 2 {
            healed = true;
            break;
        }
    }
    assert!(healed, "not self-healed within 3 s");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));

    f.repo.write(
        "apps/guestbook/app.yaml",
        &APP.replace("replicas: 2", "replicas: 4"),
    );
    let sha = f.repo.commit("scale to 4");
    // The server's own poller runs hourly here; a refresh through the API triggers it, and
    // the new render wakes the reconciler.
    let refresh = server
        .client
        .post(format!(
            "{}/api/v1/applications/guestbook/refresh",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(refresh.status(), 202);
    wait_deployed(&f.store, Some(&sha)).await;
    assert_eq!(live_replicas(&f).await, 4);
}

/// Waits until the application is Synced (at `sha`, when given) as the running server sees it.
pub(crate) async fn wait_deployed(store: &Store, sha: Option<&str>) {
    for _ in 0..100 {
        if let Ok(Some(s)) = store.app_status("guestbook").await {
            if s.sync_status == "Synced"
                && sha.is_none_or(|want| s.deployed_sha.as_deref() == Some(want))
            {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let status = store.app_status("guestbook").await.unwrap();
    let syncs = store.syncs("guestbook", 5).await.unwrap();
    let events = store.timeline("guestbook", 20).await.unwrap();
    let git = store.app_git_state("guestbook").await.unwrap();
    panic!("guestbook did not reach Synced at {sha:?}: git {git:?} status at {:?} {} syncs, events {events:?}", status.map(|s| (s.target_sha, s.compared_at)), syncs.len());
}

#[tokio::test]
async fn the_rest_api_previews_syncs_and_pages_the_timeline() {
    let f = fixture().await;
    let server = crate::helpers::TestServer::start(f.settings.clone()).await;
    let url = |p: &str| format!("{}/api/v1/applications{p}", server.base);
    let client = server.client.clone();

    let list: serde_json::Value = client
        .get(url(""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["name"], "guestbook");

    // Dry run: the diff, nothing applied.
    let preview: serde_json::Value = client
        .post(url("/guestbook/sync"))
        .json(&json!({"dry_run": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        preview["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "Missing"),
        "{preview}"
    );
    assert!(f.store.syncs("guestbook", 1).await.unwrap().is_empty());

    let foreign = client
        .post(url("/guestbook/sync"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    assert_eq!(
        client
            .post(url("/nope/sync"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let done: serde_json::Value = client
        .post(url("/guestbook/sync"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(live_replicas(&f).await, 2);

    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    let detail: serde_json::Value = client
        .get(url("/guestbook"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["status"]["sync_status"], "Synced", "{detail}");
    assert_eq!(detail["status"]["health"], "Healthy");
    let resources: serde_json::Value = client
        .get(url("/guestbook/resources"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resources["resources"].as_array().unwrap().len(), 4);
    assert!(!resources.to_string().contains("hunter2"));

    let page: serde_json::Value = client
        .get(url("/guestbook/timeline?limit=1&kinds=sync"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(
        page["items"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("sync of"),
        "{page}"
    );
    assert!(page["next"].is_null(), "one sync only: {page}");
    // Drift adds a second event, so a page of one has a next page.
    scale_by_hand(&f, 3).await;
    reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    let all: serde_json::Value = client
        .get(url("/guestbook/timeline?limit=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let next = all["next"].as_str().unwrap().to_owned();
    let older: serde_json::Value = client
        .get(url(&format!("/guestbook/timeline?limit=1&cursor={next}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["items"][0]["kind"], "drift_opened", "{all}");
    assert_ne!(older["items"][0]["kind"], "drift_opened", "{older}");
    assert!(older["items"][0]["id"].as_i64().unwrap() < all["items"][0]["id"].as_i64().unwrap());
}

#[tokio::test]
async fn ignore_rules_keep_hand_scaled_replicas_out_of_drift() {
    let mut f = fixture().await;
    f.settings.applications[0].ignore = vec![server::diff::IgnoreRule {
        kind: Some("Deployment".into()),
        json_pointers: vec!["/spec/replicas".into()],
        ..Default::default()
    }];
    let s = &f.settings;
    let catalog = DeclaredCatalog {
        repositories: &s.repositories,
        clusters: &s.clusters,
        applications: &s.applications,
    };
    f.store.sync_declared(catalog, 1).await.unwrap();
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    assert_eq!(app.ignore.len(), 1);
    let (sha, digest, desired) = reconcile::desired(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    reconcile::sync(
        &f.store,
        &f.cluster,
        &app,
        &sha,
        &digest,
        &desired,
        true,
        "manual",
        &ada(),
    )
    .await
    .unwrap();
    scale_by_hand(&f, 6).await;
    let o = reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    assert_eq!((o.sync_status, o.drifting), ("Synced", false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_cut_short_by_a_killed_process_is_closed_once_as_interrupted_after_restart() {
    let c = TestCluster::sandbox().await;
    let work = tempfile::tempdir().unwrap();
    let repo = GitRepo::new();
    let mut many = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: guestbook}\n");
    for i in 0..1500 {
        many.push_str(&format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}}}\ndata: {{i: \"{i}\"}}\n"));
    }
    repo.write("apps/guestbook/many.yaml", &many);
    repo.commit("1500 config maps");
    let db = work.path().join("tidemark.db");
    let config = work.path().join("tidemark.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"sqlite://{db}\"\n[git]\ncache_dir = \"{cache}\"\n\
             [reconcile]\ninterval_secs = 3600\n\
             [[repositories]]\nname = \"demo\"\nurl = \"{repo}\"\n\
             [[clusters]]\nname = \"sandbox\"\nurl = \"{cluster}\"\n\
             [[applications]]\nname = \"guestbook\"\nrepository = \"demo\"\npath = \"apps/guestbook\"\ncluster = \"sandbox\"\nnamespace = \"guestbook\"\n\
             [applications.approvals]\nrequired = 0\n",
            db = db.display(),
            cache = work.path().join("git").display(),
            repo = repo.url(),
            cluster = c.url,
        ),
    )
    .unwrap();

    let token = crate::helpers::cli_token(&config, "ci");
    let client = crate::helpers::bearer_client(&token);
    let first = Process::start(&config);
    // Wait for the first render, then start a sync and kill the process while it runs.
    for _ in 0..200 {
        let r = client
            .get(format!("{}/api/v1/applications/guestbook/diff", first.base))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let url = format!("{}/api/v1/applications/guestbook/sync", first.base);
    let sync_client = client.clone();
    tokio::spawn(async move {
        let _ = sync_client.post(url).send().await;
    });
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(c.client.clone(), "guestbook");
    for _ in 0..400 {
        if cms
            .list(&Default::default())
            .await
            .map(|l| l.items.len())
            .unwrap_or(0)
            >= 50
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    drop(first); // SIGKILL, mid-sync
    let applied = cms.list(&Default::default()).await.unwrap().items.len();
    assert!(
        (50..1500).contains(&applied),
        "the kill must land mid-sync (applied {applied})"
    );

    let store = Store::connect(&server::config::DatabaseSettings {
        url: server::config::DatabaseUrl::new(format!("sqlite://{}", db.display())),
        ..Default::default()
    })
    .await
    .unwrap();
    let before = store.syncs("guestbook", 10).await.unwrap();
    assert_eq!((before.len(), before[0].status), (1, SyncStatus::Running));

    let second = Process::start(&config);
    let after = store.syncs("guestbook", 10).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].status, SyncStatus::Interrupted);
    let closed_at = after[0].finished_at;
    // The application is compared again (first tick of the loop) and the record stays closed once.
    for _ in 0..200 {
        if store.app_status("guestbook").await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let status = store.app_status("guestbook").await.unwrap().unwrap();
    assert_eq!(status.sync_status, "OutOfSync");
    drop(second);
    let third = Process::start(&config);
    let again = store.syncs("guestbook", 10).await.unwrap();
    assert_eq!(
        (again.len(), again[0].status, again[0].finished_at),
        (1, SyncStatus::Interrupted, closed_at)
    );
    let events = store.timeline("guestbook", 50).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|(k, _)| k == "sync_interrupted")
            .count(),
        1
    );
    drop(third);
}

#[tokio::test]
async fn applications_can_be_created_and_edited_through_the_api_but_config_ones_are_read_only() {
    let f = fixture().await;
    let server = crate::helpers::TestServer::start(f.settings.clone()).await;
    let client = server.client.clone();
    let url = format!("{}/api/v1/applications", server.base);
    let send = |method: reqwest::Method, path: &str, body: &serde_json::Value| {
        let req = client.request(method, format!("{url}{path}")).json(body);
        async move { req.send().await.unwrap() }
    };
    let (post, put) = (reqwest::Method::POST, reqwest::Method::PUT);
    let mut body = json!({"name": "guestbook-staging", "repository": "demo", "path": "apps/guestbook",
                          "cluster": "sandbox", "namespace": "staging", "sync_policy": "auto", "prune": true});

    assert_eq!(send(post.clone(), "", &body).await.status(), 201);
    assert_eq!(send(post.clone(), "", &body).await.status(), 409);
    let listed: serde_json::Value = client.get(&url).send().await.unwrap().json().await.unwrap();
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["name"] == "guestbook-staging" && a["sync_policy"] == "auto"));

    body["namespace"] = json!("staging-2");
    assert_eq!(
        send(put.clone(), "/guestbook-staging", &body)
            .await
            .status(),
        200
    );
    assert_eq!(
        f.store
            .app_source("guestbook-staging")
            .await
            .unwrap()
            .unwrap()
            .namespace,
        "staging-2"
    );

    // Bad input changes nothing and says what is wrong.
    for (field, value) in [
        ("path", json!("../etc")),
        ("repository", json!("nope")),
        ("namespace", json!("Bad NS")),
    ] {
        let mut bad = body.clone();
        bad[field] = value;
        let r = send(put.clone(), "/guestbook-staging", &bad).await;
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains(field));
    }
    assert_eq!(
        f.store
            .app_source("guestbook-staging")
            .await
            .unwrap()
            .unwrap()
            .namespace,
        "staging-2"
    );
    let mut unknown_key = body.clone();
    unknown_key["sync_polcy"] = json!("auto");
    assert!(send(post.clone(), "", &unknown_key)
        .await
        .status()
        .is_client_error());

    let mut declared = body.clone();
    declared["name"] = json!("guestbook");
    assert_eq!(
        send(put.clone(), "/guestbook", &declared).await.status(),
        409
    );
    let mut missing = body.clone();
    missing["name"] = json!("ghost");
    assert_eq!(send(put, "/ghost", &missing).await.status(), 404);
    let foreign = client
        .post(&url)
        .header("origin", "https://evil.example")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
}

/// A person as the ledger records them.
fn ada() -> server::store::Actor {
    server::store::Actor {
        id: "local:ada".into(),
        name: "Ada".into(),
        method: "local".into(),
        source_ip: "127.0.0.1".into(),
    }
}

// ---- approvals ----------------------------------------------------------------------------

/// A server on the fixture's settings with deployers alice, bob, dave and ada (whose e-mail is
/// the fixture repository's author), each signed in through the local form.
pub(crate) async fn approvers(
    f: &Fixture,
) -> (
    crate::helpers::TestServer,
    std::collections::HashMap<&'static str, reqwest::Client>,
) {
    let mut settings = f.settings.clone();
    settings.auth.bindings = ["alice", "bob", "dave", "ada"]
        .into_iter()
        .map(|u| server::config::RoleBinding {
            group: None,
            user: Some(u.into()),
            role: app::model::Role::Deployer,
            project: None,
        })
        .collect();
    let server = crate::helpers::TestServer::start(settings).await;
    let mut clients = std::collections::HashMap::new();
    for name in ["alice", "bob", "dave", "ada"] {
        let hash = server::auth::local::hash_password("password-1")
            .await
            .unwrap();
        server
            .store
            .upsert_local_user(name, name, &hash, 0)
            .await
            .unwrap();
        clients.insert(name, server.browser_signed_in(name, "password-1").await);
    }
    let pool = sqlx::SqlitePool::connect(&server.db_url).await.unwrap();
    sqlx::query("UPDATE users SET email = 'ada@example.com' WHERE id = 'local:ada'")
        .execute(&pool)
        .await
        .unwrap();
    (server, clients)
}

pub(crate) async fn decide(
    server: &crate::helpers::TestServer,
    client: &reqwest::Client,
    id: i64,
    verb: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = client
        .post(format!("{}/api/v1/sync-requests/{id}/{verb}", server.base))
        .header("origin", &server.base);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_m_approvals_with_four_eyes_run_the_sync_exactly_once() {
    let policy = server::config::ApprovalPolicy {
        required: 2,
        ..Default::default()
    };
    let f = fixture_approvals(app::model::SyncPolicy::Manual, false, policy).await;
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    let (server, people) = approvers(&f).await;

    let pending: serde_json::Value = server
        .client
        .get(format!(
            "{}/api/v1/sync-requests?status=pending",
            server.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = pending["items"].as_array().unwrap();
    assert_eq!(
        items.len(),
        1,
        "one request, however often it is compared: {pending}"
    );
    let id = items[0]["id"].as_i64().unwrap();
    assert_eq!(
        (items[0]["cause"].as_str(), items[0]["required"].as_i64()),
        (Some("revision"), Some(2))
    );

    // A direct sync is refused while approvals are required.
    let direct = server
        .client
        .post(format!(
            "{}/api/v1/applications/guestbook/sync",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 409);
    assert!(direct
        .text()
        .await
        .unwrap()
        .contains(&format!("approve sync request #{id}")));

    // Four-eyes: the commit's author may not approve it.
    let (status, body) = decide(&server, &people["ada"], id, "approve", None).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("you authored commit"),
        "{body}"
    );

    let (status, body) = decide(&server, &people["alice"], id, "approve", None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("pending")),
        "{body}"
    );
    let (status, body) = decide(&server, &people["alice"], id, "approve", None).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("already approved"));

    // Two approvers at the same instant: one completes the request, the other finds it decided.
    let (a, b) = tokio::join!(
        decide(&server, &people["bob"], id, "approve", None),
        decide(&server, &people["dave"], id, "approve", None)
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    let done = if a.0 == 200 { a.1 } else { b.1 };
    assert_eq!(done["status"], "synced", "{done}");
    let syncs = f.store.syncs("guestbook", 10).await.unwrap();
    assert_eq!(
        syncs.iter().filter(|s| s.cause == "approved").count(),
        1,
        "{syncs:?}"
    );
    assert_eq!(done["sync_id"].as_i64(), Some(syncs[0].id));
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(f.kube.clone(), "guestbook");
    assert!(deployments.get_opt("web").await.unwrap().is_some());

    // In sync now: no new request; the ledger holds the approvals and the sync, chained.
    reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    assert!(f
        .store
        .sync_requests(Some("pending"), None, None, 10)
        .await
        .unwrap()
        .is_empty());
    let rows = f.store.audit_rows(0, 100).await.unwrap();
    let actions: Vec<&str> = rows.iter().map(|r| r.event.action.as_str()).collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "approve").count(),
        2,
        "{actions:?}"
    );
    assert!(actions.contains(&"sync"));
    assert!(f.store.audit_verify().await.unwrap().ok);
}

#[tokio::test]
async fn a_new_commit_supersedes_the_request_and_voids_its_approvals_and_rejection_needs_a_reason()
{
    let policy = server::config::ApprovalPolicy {
        required: 2,
        ..Default::default()
    };
    let f = fixture_approvals(app::model::SyncPolicy::Manual, false, policy).await;
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    let (server, people) = approvers(&f).await;
    let first = f
        .store
        .sync_requests(Some("pending"), None, None, 1)
        .await
        .unwrap()[0]
        .id;
    assert_eq!(
        decide(&server, &people["alice"], first, "approve", None)
            .await
            .0,
        200
    );

    f.repo.write(
        "apps/guestbook/app.yaml",
        &APP.replace("replicas: 2", "replicas: 4"),
    );
    f.repo.commit("scale to 4");
    f.git.sync_repository("demo").await.unwrap();
    reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();

    let old = f.store.sync_request(first).await.unwrap().unwrap();
    assert_eq!(old.status, "superseded");
    assert!(
        old.approvals.iter().all(|a| a.void) && old.approvals.len() == 1,
        "{old:?}"
    );
    let second = old.superseded_by.unwrap();
    let new = f.store.sync_request(second).await.unwrap().unwrap();
    assert_eq!((new.status.as_str(), new.approvals.len()), ("pending", 0));
    assert_ne!(new.revision, old.revision);
    let (status, _) = decide(&server, &people["bob"], first, "approve", None).await;
    assert_eq!(status, 409, "a superseded request cannot be approved");
    let timeline = f.store.timeline("guestbook", 50).await.unwrap();
    assert!(
        timeline
            .iter()
            .any(|(kind, message)| kind == "sync_request_superseded"
                && message.contains("approvals are void")),
        "{timeline:?}"
    );

    // The same revision rendered differently also supersedes (bound to the digest).
    let change = f
        .store
        .ensure_sync_request(
            "guestbook",
            &new.revision,
            "another-digest",
            "revision",
            2,
            1,
        )
        .await
        .unwrap();
    let third = match change {
        server::store::RequestChange::Created { id, superseded } => {
            assert_eq!(superseded, Some(second));
            id
        }
        other => panic!("{other:?}"),
    };

    // Rejection needs a reason; then the request is closed.
    let (status, body) = decide(
        &server,
        &people["bob"],
        third,
        "reject",
        Some(json!({"reason": "  "})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = decide(&server, &people["bob"], third, "reject", None).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = decide(
        &server,
        &people["bob"],
        third,
        "reject",
        Some(json!({"reason": "wrong replicas"})),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str(), body["reason"].as_str()),
        (200, Some("rejected"), Some("wrong replicas"))
    );
    assert_eq!(
        decide(&server, &people["alice"], third, "approve", None)
            .await
            .0,
        409
    );
    let viewer = crate::helpers::bearer_client(&server.token(app::model::Role::Viewer, None).await);
    let denied = viewer
        .post(format!(
            "{}/api/v1/sync-requests/{third}/approve",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    assert!(denied
        .text()
        .await
        .unwrap()
        .contains("Approving needs the deployer role in project demo"));
}

// ---- rollback and pinning -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_applies_a_known_good_snapshot_without_git_and_pins_until_unpinned() {
    let f = fixture_any(app::model::SyncPolicy::Auto, true).await;
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(f.kube.clone(), &f.ns);
    let replicas = || async { deployments.get("web").await.unwrap().spec.replicas.unwrap() };
    // Reconcile until synced and healthy (at once on a sandbox; on a real cluster the
    // Deployment's pods must become Ready on the kwok nodes first).
    let settle = || async {
        for _ in 0..300 {
            let o = reconcile::reconcile_app(&f.store, &f.cluster, &app)
                .await
                .unwrap();
            if o.sync_status == "Synced" && o.health == server::cluster::health::Health::Healthy {
                // One more step records the known-good revision.
                reconcile::reconcile_app(&f.store, &f.cluster, &app)
                    .await
                    .unwrap();
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the application did not become synced and healthy within 30 s");
    };
    settle().await;
    let v1 = f
        .store
        .app_git_state("guestbook")
        .await
        .unwrap()
        .target_sha
        .unwrap();
    assert_eq!(replicas().await, 2);

    // v2: more replicas, another Secret value.
    f.repo.write(
        "apps/guestbook/app.yaml",
        &app_in(&f.ns)
            .replace("replicas: 2", "replicas: 4")
            .replace("hunter2", "hunter3"),
    );
    let v2 = f.repo.commit("scale to 4");
    f.git.sync_repository("demo").await.unwrap();
    settle().await;
    assert_eq!(replicas().await, 4);
    let known: Vec<String> = f
        .store
        .known_good_revisions("guestbook")
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.revision)
        .collect();
    assert_eq!(
        known,
        vec![v2.clone(), v1.clone()],
        "both synced and became healthy"
    );

    let server = crate::helpers::TestServer::start(f.settings.clone()).await;
    let deployer =
        crate::helpers::bearer_client(&server.token(app::model::Role::Deployer, None).await);
    let url = |p: &str| format!("{}/api/v1/applications/guestbook{p}", server.base);

    // The diff between the two revisions, per resource and field, with no Secret value in it.
    let diff = deployer
        .get(url(&format!("/diff?from={v1}&to={v2}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!diff.contains("hunter"), "{diff}");
    let diff: serde_json::Value = serde_json::from_str(&diff).unwrap();
    let changed: Vec<&serde_json::Value> = diff["resources"].as_array().unwrap().iter().collect();
    let web = changed
        .iter()
        .find(|r| r["object"]["kind"] == "Deployment")
        .unwrap();
    assert_eq!(
        web["fields"][0],
        json!({"path": ".spec.replicas", "from": 2, "to": 4})
    );
    let secret = changed
        .iter()
        .find(|r| r["object"]["kind"] == "Secret")
        .unwrap();
    assert_eq!(secret["fields"][0]["to"], "(changed)");

    // Git becomes unreachable: the repository directory and Tidemark's mirror are deleted (a
    // copy is kept to bring the repository back later in this test).
    let away = f.repo.path().with_extension("copy");
    let copied = std::process::Command::new("cp")
        .args([
            "-a",
            f.repo.path().to_str().unwrap(),
            away.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::remove_dir_all(f.repo.path()).unwrap();
    std::fs::remove_dir_all(&f.settings.git.cache_dir).unwrap();
    assert!(
        f.git.sync_repository("demo").await.is_err(),
        "Git is unreachable"
    );

    let bad = [
        (json!({"revision": v1, "reason": " "}), 400),
        (json!({"revision": "0000000", "reason": "x"}), 409),
        (json!({"revision": v1}), 422),
    ];
    for (body, status) in bad {
        let resp = deployer
            .post(url("/rollback"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{body}");
    }
    let viewer = crate::helpers::bearer_client(&server.token(app::model::Role::Viewer, None).await);
    assert_eq!(
        viewer
            .post(url("/rollback"))
            .json(&json!({"revision": v1, "reason": "x"}))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );

    let done: serde_json::Value = deployer
        .post(url("/rollback"))
        .json(&json!({"revision": &v1[..10], "reason": "v2 breaks checkout"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["pinned"]["reason"], "v2 breaks checkout");
    assert_eq!(replicas().await, 2);
    let detail: serde_json::Value = deployer
        .get(url(""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["pinned"]["revision"], v1.as_str());

    // Pinned: a new commit is ingested but not deployed; self-heal enforces the pinned snapshot.
    std::fs::rename(&away, f.repo.path()).unwrap();
    f.repo.write(
        "apps/guestbook/app.yaml",
        &app_in(&f.ns).replace("replicas: 2", "replicas: 6"),
    );
    let v3 = f.repo.commit("scale to 6");
    f.git.sync_repository("demo").await.unwrap();
    settle().await;
    assert_eq!(
        f.store
            .app_git_state("guestbook")
            .await
            .unwrap()
            .target_sha
            .as_deref(),
        Some(v3.as_str())
    );
    assert_eq!(replicas().await, 2, "pinned: v3 not deployed");
    let mut scaled = deployments.get("web").await.unwrap();
    scaled.spec.replicas = Some(9);
    scaled.metadata.managed_fields = None;
    deployments
        .replace("web", &Default::default(), &scaled)
        .await
        .unwrap();
    settle().await;
    assert_eq!(replicas().await, 2, "self-heal keeps the pinned snapshot");

    // Unpin: the normal policy resumes and auto-sync deploys v3.
    let resp = deployer.post(url("/unpin")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        deployer.post(url("/unpin")).send().await.unwrap().status(),
        409
    );
    settle().await;
    assert_eq!(replicas().await, 6);

    let timeline = f.store.timeline("guestbook", 100).await.unwrap();
    let kinds: Vec<&str> = timeline.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        kinds.contains(&"rollback") && kinds.contains(&"unpinned"),
        "{kinds:?}"
    );
    assert!(
        timeline.iter().any(|(k, m)| k == "not_deployed_pinned"
            && m.contains("pinned at")
            && m.contains("v2 breaks checkout")),
        "{timeline:?}"
    );
    let actions: Vec<String> = f
        .store
        .audit_rows(0, 500)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event.action)
        .collect();
    assert!(actions.contains(&"rollback".to_owned()) && actions.contains(&"unpin".to_owned()));
    assert!(f.store.audit_verify().await.unwrap().ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_can_make_rollbacks_wait_for_someone_elses_approval() {
    let policy = server::config::ApprovalPolicy {
        required: 1,
        rollback: true,
        ..Default::default()
    };
    let f = fixture_approvals(app::model::SyncPolicy::Auto, false, policy).await;
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    let settle = || async {
        for _ in 0..3 {
            reconcile::reconcile_app(&f.store, &f.cluster, &app)
                .await
                .unwrap();
        }
    };
    settle().await;
    let v1 = f
        .store
        .app_git_state("guestbook")
        .await
        .unwrap()
        .target_sha
        .unwrap();
    f.repo.write(
        "apps/guestbook/app.yaml",
        &APP.replace("replicas: 2", "replicas: 4"),
    );
    f.repo.commit("scale to 4");
    f.git.sync_repository("demo").await.unwrap();
    settle().await;
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(f.kube.clone(), "guestbook");
    let replicas = || async { deployments.get("web").await.unwrap().spec.replicas.unwrap() };
    assert_eq!(replicas().await, 4);

    let (server, people) = approvers(&f).await;
    let asked: serde_json::Value = people["alice"]
        .post(format!(
            "{}/api/v1/applications/guestbook/rollback",
            server.base
        ))
        .header("origin", &server.base)
        .json(&json!({"revision": v1, "reason": "checkout errors"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(asked["status"], "pending", "{asked}");
    let id = asked["request"].as_i64().unwrap();
    settle().await;
    assert_eq!(replicas().await, 4, "nothing applied before approval");
    assert_eq!(
        f.store.sync_request(id).await.unwrap().unwrap().status,
        "pending",
        "the loop leaves it alone"
    );

    let (status, body) = decide(&server, &people["alice"], id, "approve", None).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("you requested this rollback"));
    let (status, body) = decide(&server, &people["bob"], id, "approve", None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("synced")),
        "{body}"
    );
    assert_eq!(replicas().await, 2);
    let pin = f.store.pin_of("guestbook").await.unwrap().unwrap();
    assert_eq!(
        (pin.revision.as_str(), pin.reason.as_str()),
        (v1.as_str(), "checkout errors")
    );
}

#[tokio::test]
async fn an_approved_request_can_wait_for_a_sync_now_click() {
    let policy = server::config::ApprovalPolicy {
        required: 1,
        sync_on_approval: false,
        ..Default::default()
    };
    let f = fixture_approvals(app::model::SyncPolicy::Manual, false, policy).await;
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    let (server, people) = approvers(&f).await;
    let id = f
        .store
        .sync_requests(Some("pending"), None, None, 1)
        .await
        .unwrap()[0]
        .id;
    let (status, body) = decide(&server, &people["alice"], id, "approve", None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    assert_eq!(
        f.store
            .sync_requests(None, None, None, 10)
            .await
            .unwrap()
            .len(),
        1,
        "no second request while it waits"
    );
    assert!(f.store.syncs("guestbook", 10).await.unwrap().is_empty());
    let (status, body) = decide(&server, &people["bob"], id, "sync", None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("synced")),
        "{body}"
    );
    let (status, _) = decide(&server, &people["bob"], id, "sync", None).await;
    assert_eq!(status, 409, "runs once");
    assert_eq!(f.store.syncs("guestbook", 10).await.unwrap().len(), 1);
}

// ---- dashboard ----------------------------------------------------------------------------

/// Calls a server function the way a browser form does (URL-encoded body, same Origin).
async fn server_fn(
    server: &crate::helpers::TestServer,
    client: &reqwest::Client,
    name: &str,
    body: &str,
) -> (u16, String) {
    let resp = client
        .post(format!("{}/_fn/{name}", server.base))
        .header("origin", &server.base)
        .header("accept", "application/json")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn page(client: &reqwest::Client, server: &crate::helpers::TestServer, path: &str) -> String {
    let resp = client
        .get(format!("{}{path}", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    resp.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_requests_timeline_diff_and_decides_through_server_functions() {
    let policy = server::config::ApprovalPolicy {
        required: 2,
        ..Default::default()
    };
    let f = fixture_approvals(app::model::SyncPolicy::Manual, false, policy).await;
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    let (server, people) = approvers(&f).await;
    let id = f
        .store
        .sync_requests(Some("pending"), None, None, 1)
        .await
        .unwrap()[0]
        .id;
    let head = f
        .store
        .app_git_state("guestbook")
        .await
        .unwrap()
        .target_sha
        .unwrap();

    // The list: one row with its pending approvals; filters and keyset paging on the server.
    let list = page(&people["alice"], &server, "/applications").await;
    assert!(list.contains(r#"data-app="guestbook""#), "{list}");
    assert!(list.contains("0 of 2"), "pending approvals shown: {list}");
    let none = page(&people["alice"], &server, "/applications?health=Degraded").await;
    assert!(
        none.contains("No application matches these filters"),
        "{none}"
    );
    let after = page(&people["alice"], &server, "/applications?after=guestbook").await;
    assert!(!after.contains(r#"data-app="guestbook""#));

    // Someone whose role is limited to another project does not see this one in the list.
    let other = crate::helpers::bearer_client(
        &server.token(app::model::Role::Deployer, Some("shop")).await,
    );
    assert!(!page(&other, &server, "/applications")
        .await
        .contains(r#"data-app="guestbook""#));
    // The author sees why they cannot approve; another deployer gets the buttons.
    let ada = page(&people["ada"], &server, "/applications/guestbook").await;
    assert!(ada.contains("you authored commit"), "{ada}");
    assert!(!ada.contains(r#"data-testid="approve""#));
    let alice = page(&people["alice"], &server, "/applications/guestbook").await;
    assert!(alice.contains(&format!("Sync request #{id}")), "{alice}");
    assert!(alice.contains(r#"data-testid="approve""#));
    assert!(alice.contains(&head[..7]), "target revision in the header");
    assert!(
        alice.contains(r#"data-kind="commit""#),
        "commits on the timeline: {alice}"
    );
    assert!(alice.contains(r#"data-kind="sync_requested""#), "{alice}");

    // A viewer token may read but not decide: 403, recorded, nothing changed.
    let viewer = crate::helpers::bearer_client(&server.token(app::model::Role::Viewer, None).await);
    let (status, body) = server_fn(&server, &viewer, "approve", &format!("request={id}")).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("needs the deployer role in project demo"),
        "{body}"
    );
    let (status, body) =
        server_fn(&server, &people["ada"], "approve", &format!("request={id}")).await;
    assert_eq!(status, 403, "four-eyes holds through the UI too: {body}");

    let (status, body) = server_fn(
        &server,
        &people["alice"],
        "approve",
        &format!("request={id}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("1 of 2"), "{body}");
    let approvals = page(&people["bob"], &server, "/approvals").await;
    assert!(
        approvals.contains(&format!("Sync request #{id}")),
        "{approvals}"
    );
    assert!(approvals.contains("Approved by: alice"), "{approvals}");
    let (status, body) =
        server_fn(&server, &people["bob"], "approve", &format!("request={id}")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("synced"), "{body}");
    let approvals = page(&people["bob"], &server, "/approvals").await;
    assert!(
        approvals.contains("Nothing is waiting for approval"),
        "{approvals}"
    );

    // Timeline: the approvals and the sync with its per-resource results; filters by kind.
    let timeline = page(
        &people["bob"],
        &server,
        "/applications/guestbook?tab=timeline",
    )
    .await;
    assert!(timeline.contains(r#"data-kind="approval""#), "{timeline}");
    assert!(timeline.contains(r#"data-kind="sync""#), "{timeline}");
    assert!(timeline.contains("resource results"), "{timeline}");
    let only_syncs = page(
        &people["bob"],
        &server,
        "/applications/guestbook?tab=timeline&kinds=syncs",
    )
    .await;
    assert!(only_syncs.contains(r#"data-kind="sync""#));
    assert!(
        !only_syncs.contains(r#"data-kind="commit""#),
        "{only_syncs}"
    );

    // Resources and the live diff after the sync.
    reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    let resources = page(
        &people["bob"],
        &server,
        "/applications/guestbook?tab=resources",
    )
    .await;
    assert!(
        resources.contains(r#"data-resource="Deployment/guestbook/web""#),
        "{resources}"
    );
    let diff = page(&people["bob"], &server, "/applications/guestbook?tab=diff").await;
    assert!(diff.contains("The cluster matches Git"), "{diff}");

    // Rollback from the dialog's form: pinned banner, then unpin.
    let dialog = page(
        &people["bob"],
        &server,
        &format!("/applications/guestbook?dialog=rollback&revision={head}"),
    )
    .await;
    assert!(
        dialog.contains(r#"data-testid="rollback-dialog""#),
        "{dialog}"
    );
    assert!(dialog.contains("running now"), "{dialog}");
    let (status, body) = server_fn(
        &server,
        &people["bob"],
        "rollback",
        &format!("name=guestbook&revision={head}&reason="),
    )
    .await;
    assert_eq!(status, 400, "a rollback needs a reason: {body}");
    let (status, body) = server_fn(
        &server,
        &people["bob"],
        "rollback",
        &format!("name=guestbook&revision={head}&reason=bad+release"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("pinned"), "{body}");
    let pinned = page(&people["bob"], &server, "/applications/guestbook").await;
    assert!(
        pinned.contains(r#"data-testid="pinned-banner""#),
        "{pinned}"
    );
    assert!(pinned.contains("bad release"), "{pinned}");
    let (status, body) = server_fn(&server, &people["bob"], "unpin", "name=guestbook").await;
    assert_eq!(status, 200, "{body}");
    assert!(!page(&people["bob"], &server, "/applications/guestbook")
        .await
        .contains(r#"data-testid="pinned-banner""#));

    // Unknown application: a clear error, not a crash.
    let (status, body) =
        server_fn(&server, &people["bob"], "application_detail", "name=nope").await;
    assert_eq!(status, 404, "{body}");

    // Live updates: the event stream says it is ready, then reports a change.
    let mut events = people["bob"]
        .get(format!(
            "{}/api/v1/applications/guestbook/events",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let first = events.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event: ready"));
    f.store
        .add_timeline("guestbook", "refresh", "poke", &serde_json::json!({}), 1)
        .await
        .unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), events.chunk())
        .await
        .expect("a change within 5 s")
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&next).contains("event: changed"),
        "{next:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_eyes_checks_the_applications_own_change_when_the_tip_is_another_commit() {
    let policy = server::config::ApprovalPolicy {
        required: 1,
        ..Default::default()
    };
    let f = fixture_approvals(app::model::SyncPolicy::Manual, false, policy).await;
    // guestbook's change is ada's (the fixture's commit); the tip is someone else's, elsewhere.
    f.repo.write("docs/README.md", "hello\n");
    f.repo.git(&["add", "-A"]);
    f.repo.git(&[
        "-c",
        "user.name=Zed",
        "-c",
        "user.email=zed@example.com",
        "commit",
        "-qm",
        "docs",
    ]);
    f.git.sync_repository("demo").await.unwrap();
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    let (server, people) = approvers(&f).await;
    let req = f
        .store
        .sync_requests(Some("pending"), None, None, 1)
        .await
        .unwrap()[0]
        .clone();
    assert_eq!(
        req.revision,
        f.repo.git(&["rev-parse", "HEAD"]),
        "the request is bound to the tip, an unrelated commit"
    );
    let (status, body) = decide(&server, &people["ada"], req.id, "approve", None).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("you authored commit"),
        "{body}"
    );
    let (status, body) = decide(&server, &people["bob"], req.id, "approve", None).await;
    assert_eq!(status, 200, "{body}");
}

/// The password the sandbox holds in Secret guestbook/db.
async fn cluster_password(f: &Fixture) -> String {
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(f.kube.clone(), "guestbook");
    let s = secrets.get("db").await.unwrap();
    if let Some(v) = s.data.as_ref().and_then(|d| d.get("password")) {
        return String::from_utf8(v.0.clone()).unwrap();
    }
    s.string_data.unwrap()["password"].clone()
}

#[tokio::test]
async fn encrypted_renders_sync_and_roll_back_without_git_and_a_wrong_key_changes_nothing() {
    let f = fixture().await;
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    let key = |b: u8| {
        Some(std::sync::Arc::new(
            server::secrets::Keyring::new("k1", &[b; 32], &[]).unwrap(),
        ))
    };
    // The fixture rendered without a key (a plaintext row); a start with a key seals it.
    let store = f.store.clone().with_secrets(key(1));
    assert_eq!(store.seal_stored_renders().await.unwrap(), 1);
    let digest = f
        .store
        .app_git_state("guestbook")
        .await
        .unwrap()
        .target_digest
        .unwrap();
    let stored = f.store.snapshot(&digest).await.unwrap().unwrap();
    assert!(!stored.contains("hunter2") && stored.contains("tidemark:enc:v1:k1:"));

    let sync = |desired: (String, String, Vec<serde_json::Value>)| {
        let (store, f, app) = (&store, &f, &app);
        async move {
            let (sha, digest, objects) = desired;
            let (_, status, results) = reconcile::sync(
                store,
                &f.cluster,
                app,
                &sha,
                &digest,
                &objects,
                true,
                "manual",
                &ada(),
            )
            .await
            .unwrap();
            assert_eq!(status, SyncStatus::Succeeded, "{results:?}");
        }
    };
    let v1 = reconcile::desired(&store, &f.cluster, &app).await.unwrap();
    let v1_digest = v1.1.clone();
    let v1_sha = v1.0.clone();
    sync(v1).await;
    assert_eq!(cluster_password(&f).await, "hunter2");

    // v2 with another value, rendered by an engine holding the key: sealed when written.
    f.repo.write(
        "apps/guestbook/app.yaml",
        &APP.replace("hunter2", "hunter3"),
    );
    f.repo.commit("rotate the password");
    GitSources::new(store.clone(), &f.settings)
        .sync_repository("demo")
        .await
        .unwrap();
    sync(reconcile::desired(&store, &f.cluster, &app).await.unwrap()).await;
    assert_eq!(cluster_password(&f).await, "hunter3");

    // Git goes away; the rollback to v1 (a pin) is applied from the sealed stored render.
    std::fs::remove_dir_all(f.repo.path()).unwrap();
    let pin = server::store::Pin {
        revision: v1_sha.clone(),
        digest: v1_digest.clone(),
        pinned_by: "local:ada".into(),
        pinned_name: "Ada".into(),
        pinned_at: server::clock::now(),
        reason: "bad password".into(),
    };
    let audit = server::store::AuditEvent {
        at: server::clock::now(),
        actor_id: "local:ada".into(),
        actor_name: "Ada".into(),
        auth_method: "local".into(),
        action: "rollback".into(),
        target: "application:guestbook".into(),
        details: json!({}),
        source_ip: "127.0.0.1".into(),
        outcome: "success".into(),
    };
    store.pin("guestbook", &pin, &audit).await.unwrap();
    let pinned = reconcile::desired(&store, &f.cluster, &app).await.unwrap();
    assert_eq!(
        (pinned.0.as_str(), pinned.1.as_str()),
        (v1_sha.as_str(), v1_digest.as_str())
    );
    sync(pinned).await;
    assert_eq!(cluster_password(&f).await, "hunter2");

    // A wrong or missing key: a clear error before anything is applied.
    let syncs_before = store.syncs("guestbook", 100).await.unwrap().len();
    let wrong = f.store.clone().with_secrets(key(2));
    let err = reconcile::desired(&wrong, &f.cluster, &app)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("wrong key"), "{err}");
    let err = reconcile::desired(&f.store, &f.cluster, &app)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no key is configured"), "{err}");
    let err = reconcile::reconcile_app(&wrong, &f.cluster, &app)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("wrong key"), "{err}");
    assert_eq!(cluster_password(&f).await, "hunter2");
    assert_eq!(
        store.syncs("guestbook", 100).await.unwrap().len(),
        syncs_before
    );
}

/// Syncs application `name`'s current target (pruning, as a person): its status and results.
pub(crate) async fn sync_target(
    f: &Fixture,
    name: &str,
) -> (SyncStatus, Vec<reconcile::ResourceResult>) {
    let app = f.store.app_source(name).await.unwrap().unwrap();
    let (sha, digest, desired) = reconcile::desired(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    let (_, status, results) = reconcile::sync(
        &f.store,
        &f.cluster,
        &app,
        &sha,
        &digest,
        &desired,
        true,
        "manual",
        &ada(),
    )
    .await
    .unwrap();
    (status, results)
}
