//! Compare and sync end to end: Git (real `git`) → rendered snapshot → sandbox over HTTP.
//!
//! The tests are split by subject into the submodules below; this file holds only the fixtures
//! they share (and that `manifests.rs` and `notify.rs` use).

mod api;
mod approvals;
mod cli_client;
mod compare;
mod compare_more;
mod crds;
mod dashboard;
mod drift;
mod ownership;
mod rollback;
mod sync;

use serde_json::json;
use server::cluster::client::ClusterClient;
use server::config::{ApplicationSettings, ApprovalPolicy, RepositorySettings, Settings};
use server::git::sources::GitSources;
use server::reconcile;
use server::store::{DeclaredCatalog, RequestStatus, Store, SyncStatus};

use crate::git::GitRepo;
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
    db: TestDb,
    _cluster: TestCluster,
    _cache: tempfile::TempDir,
    pub repo: GitRepo,
    pub store: Store,
    pub git: std::sync::Arc<GitSources>,
    pub cluster: ClusterClient,
    pub kube: kube::Client,
}

impl Fixture {
    /// Closes the store and drops the database: a PostgreSQL database outlives the fixture
    /// otherwise (tests that loop over [`TestDb::both`] call this at the end of each round).
    pub(crate) async fn close(self) {
        // Bounded: a connection never given back to the pool would otherwise hang the test.
        let closed =
            tokio::time::timeout(std::time::Duration::from_secs(10), self.store.close()).await;
        self.db.drop_db().await;
        assert!(
            closed.is_ok(),
            "the fixture's store did not close within 10 s: a connection was not returned"
        );
    }
}

/// An approval policy needing `required` approvals (0: direct syncs), defaults otherwise.
pub(crate) fn needs_approvals(required: u32) -> ApprovalPolicy {
    ApprovalPolicy {
        required,
        ..Default::default()
    }
}

/// A manual application on a sandbox and SQLite, synced directly (no approvals).
async fn fixture() -> Fixture {
    fixture_with(app::model::SyncPolicy::Manual, false).await
}

/// On a sandbox and SQLite; direct syncs in these tests: no approvals needed.
pub(crate) async fn fixture_with(policy: app::model::SyncPolicy, self_heal: bool) -> Fixture {
    fixture_approvals(policy, self_heal, needs_approvals(0)).await
}

/// On a sandbox and SQLite, with this approval policy.
pub(crate) async fn fixture_approvals(
    policy: app::model::SyncPolicy,
    self_heal: bool,
    approvals: ApprovalPolicy,
) -> Fixture {
    fixture_approvals_on(TestDb::sqlite(), policy, self_heal, approvals).await
}

/// On a sandbox and the database `db` (one of [`TestDb::both`]), with this approval policy.
/// A manual application needing two approvals, compared once (its sync request is open).
pub(crate) async fn gated(db: TestDb) -> (Fixture, server::store::AppSource) {
    let f = fixture_approvals_on(
        db,
        app::model::SyncPolicy::Manual,
        false,
        needs_approvals(2),
    )
    .await;
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    (f, app)
}

pub(crate) async fn fixture_approvals_on(
    db: TestDb,
    policy: app::model::SyncPolicy,
    self_heal: bool,
    approvals: ApprovalPolicy,
) -> Fixture {
    let c = TestCluster::sandbox().await;
    fixture_on(db, c, policy, self_heal, approvals).await
}

/// A fixture on the cluster under test: the real one named by `TIDEMARK_TEST_KUBECONFIG` (the
/// control plane `make test` builds), else a sandbox. For tests whose assertions hold on any
/// conformant cluster. SQLite, direct syncs.
pub(crate) async fn fixture_any(policy: app::model::SyncPolicy, self_heal: bool) -> Fixture {
    fixture_any_on(TestDb::sqlite(), policy, self_heal).await
}

/// [`fixture_any`] on the database `db` (one of [`TestDb::both`]).
pub(crate) async fn fixture_any_on(
    db: TestDb,
    policy: app::model::SyncPolicy,
    self_heal: bool,
) -> Fixture {
    let c = TestCluster::start().await;
    fixture_on(db, c, policy, self_heal, needs_approvals(0)).await
}

/// [`APP`] deployed to namespace `ns`.
pub(crate) fn app_in(ns: &str) -> String {
    APP.replace(
        "kind: Namespace\nmetadata: {name: guestbook}",
        &format!("kind: Namespace\nmetadata: {{name: {ns}}}"),
    )
}

/// guestbook ([`APP`] and [`EXTRA`], committed to a new repository) on cluster `c`, declared
/// in a new store on `db` and fetched.
async fn fixture_on(
    db: TestDb,
    c: TestCluster,
    policy: app::model::SyncPolicy,
    self_heal: bool,
    approvals: ApprovalPolicy,
) -> Fixture {
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
    s.clusters = vec![c.cluster_settings("sandbox")];
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
        require_signed: false,
        source: None,
        helm: Default::default(),
    }];
    let store = db.store().await;
    // Shown with a failing test's output: which backend it ran on.
    eprintln!("fixture on {:?}", store.backend());
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
        db,
        _cluster: c,
        _cache: cache,
        repo,
        store,
        git,
        cluster,
        kube,
    }
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

/// A person as the ledger records them.
fn ada() -> server::store::Actor {
    server::store::Actor {
        id: "local:ada".into(),
        name: "Ada".into(),
        method: "local".into(),
        source_ip: "127.0.0.1".into(),
    }
}

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
    // One hash for all four (hashing is deliberately slow).
    let hash = server::auth::local::hash_password("password-1")
        .await
        .unwrap();
    for name in ["alice", "bob", "dave", "ada"] {
        server
            .store
            .upsert_local_user(name, name, &hash, 0)
            .await
            .unwrap();
        clients.insert(name, server.browser_signed_in(name, "password-1").await);
    }
    // On either backend (the fixture's database may be SQLite or PostgreSQL).
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&server.db_url).await.unwrap();
    sqlx::query("UPDATE users SET email = 'ada@example.com' WHERE id = 'local:ada'")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    (server, clients)
}

/// The pending sync requests (of guestbook: the fixture declares no other application), newest
/// first.
pub(crate) async fn pending_requests(f: &Fixture) -> Vec<server::store::SyncRequest> {
    f.store
        .sync_requests(Some(RequestStatus::Pending), None, None, 10)
        .await
        .unwrap()
}

/// Waits until a pending sync request satisfies `ok` (the server's engine opens it), and returns
/// it.
pub(crate) async fn wait_pending(
    f: &Fixture,
    ok: impl Fn(&server::store::SyncRequest) -> bool,
) -> server::store::SyncRequest {
    for _ in 0..200 {
        if let Some(r) = pending_requests(f).await.into_iter().find(&ok) {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "no such pending request within 10 s: {:?}",
        pending_requests(f).await
    );
}

/// Asks the server to fetch guestbook's repository now (a new target wakes its engine).
pub(crate) async fn refresh(server: &crate::helpers::TestServer) {
    let resp = server
        .client
        .post(format!(
            "{}/api/v1/applications/guestbook/refresh",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
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
        .header("origin", &server.base)
        .timeout(std::time::Duration::from_secs(30));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(serde_json::Value::Null),
    )
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
