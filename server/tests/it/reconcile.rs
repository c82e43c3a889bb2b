//! Compare and sync end to end: Git (real `git`) → rendered snapshot → sandbox over HTTP.

use serde_json::json;
use server::cluster::client::ClusterClient;
use server::config::{ApplicationSettings, ClusterSettings, RepositorySettings, Settings};
use server::diff::ResourceStatus;
use server::git::sources::GitSources;
use server::reconcile;
use server::store::{DeclaredCatalog, Store, SyncStatus};

use crate::git::GitRepo;
use crate::helpers::TestDb;
use crate::sandbox::TestCluster;

const APP: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: guestbook}\n---\n\
apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: 'nginx:1.27'}]}\n---\n\
apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData: {password: hunter2}\n";
const EXTRA: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: fast}\n";

struct Fixture {
    settings: Settings,
    _db: TestDb,
    _cluster: TestCluster,
    _cache: tempfile::TempDir,
    repo: GitRepo,
    store: Store,
    git: std::sync::Arc<GitSources>,
    cluster: ClusterClient,
    kube: kube::Client,
}

async fn fixture() -> Fixture {
    let db = TestDb::sqlite();
    let c = TestCluster::sandbox().await;
    let cache = tempfile::tempdir().unwrap();
    let repo = GitRepo::new();
    repo.write("apps/guestbook/app.yaml", APP)
        .write("apps/guestbook/extra.yaml", EXTRA);
    repo.commit("guestbook");
    let mut s: Settings = db.settings();
    s.git.cache_dir = cache.path().to_path_buf();
    s.repositories = vec![RepositorySettings::new("demo", repo.url())];
    s.clusters = vec![ClusterSettings {
        name: "sandbox".into(),
        url: c.url.clone(),
    }];
    s.applications = vec![ApplicationSettings {
        name: "guestbook".into(),
        project: "demo".into(),
        repository: "demo".into(),
        path: "apps/guestbook".into(),
        revision: "main".into(),
        cluster: "sandbox".into(),
        namespace: "guestbook".into(),
        sync_policy: app::model::SyncPolicy::Manual,
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
    let cluster = ClusterClient::connect(&s.clusters[0]).unwrap();
    let kube = c.client.clone();
    Fixture {
        settings: s,
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
    let f = fixture().await;
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
    assert!(
        before.iter().all(|d| d.status == ResourceStatus::Missing),
        "{before:?}"
    );

    let (id, status, results) = reconcile::sync(
        &f.store, &f.cluster, &app, &sha, &digest, &desired, true, "manual", "ada",
    )
    .await
    .unwrap();
    assert_eq!(status, SyncStatus::Succeeded, "{results:?}");
    assert_eq!(results[0].object, "Namespace guestbook");
    let synced = reconcile::compare(&f.store, &f.cluster, &app, &desired, &[])
        .await
        .unwrap();
    assert!(
        synced.iter().all(|d| d.status == ResourceStatus::Synced),
        "{synced:?}"
    );

    // Someone scales by hand: drift on .spec.replicas, with both values.
    let deploys: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(f.kube.clone(), "guestbook");
    deploys
        .patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
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
        &f.store, &f.cluster, &app, &sha2, &digest2, &desired2, true, "manual", "ada",
    )
    .await
    .unwrap();
    assert_eq!(status, SyncStatus::Succeeded);
    assert!(
        results
            .iter()
            .any(|r| r.action == "pruned" && r.object == "ConfigMap guestbook/settings"),
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
    // Placement needs the kind: an unknown kind stops before anything is applied.
    let err = reconcile::desired(&f.store, &f.cluster, &app)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not serve Gadget"), "{err}");

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
        &f.store, &f.cluster, &app, &sha, &digest, &desired, true, "manual", "ada",
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
        requested_by: "ada",
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
        &f.store, &f.cluster, &app, &sha, &digest, &desired, false, "manual", "ada",
    )
    .await
    .unwrap();
    let body: serde_json::Value = server
        .get("/api/v1/applications/guestbook/diff")
        .await
        .json()
        .await
        .unwrap();
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
