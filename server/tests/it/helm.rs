//! Helm charts end to end with the real `helm` (v4): a chart made with `helm create` in a Git
//! repository made with `git` (values files, inline values, `set`, the cluster's
//! capabilities, hooks), dependencies and a chart repository served on loopback (`helm
//! package` + `helm repo index` behind a static HTTP server), new versions in range moving the
//! target, template errors, values files escaping the repository, and a rollback to a version
//! the repository no longer serves — on the sandbox over HTTP and SQLite.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use server::cluster::client::ClusterClient;
use server::config::{ApplicationSettings, ClusterSettings, RepositorySettings, Settings};
use server::git::sources::GitSources;
use server::reconcile;
use server::render::{self, HelmOptions, Limits, RenderError};
use server::store::{DeclaredCatalog, Store};

use crate::git::GitRepo;
use crate::helpers::TestDb;
use crate::sandbox::TestCluster;

/// Runs `helm` with its homes in `home` (nothing of the user's).
fn helm(home: &Path, dir: &Path, args: &[&str]) -> String {
    let out = Command::new("helm")
        .args(args)
        .current_dir(dir)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("helm is installed (scripts/setup.sh)");
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `helm create web` into `dir/<at>`, edited: a pre-install/pre-upgrade migration Job (weight
/// -1), a pre-delete hook (left out by Tidemark), a ConfigMap showing the capabilities, and a
/// template that fails on `broken`.
fn make_chart(home: &Path, dir: &Path, at: &str) {
    let parent = dir.join(at).parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&parent).unwrap();
    helm(home, &parent, &["create", "web"]);
    let chart = dir.join(at);
    std::fs::rename(parent.join("web"), &chart).ok();
    std::fs::write(
        chart.join("templates/migrate.yaml"),
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {{ include "web.fullname" . }}-migrate
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "-1"
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: migrate, image: {{ .Values.migrateImage | default "busybox:1.36" | quote }}, command: ["true"]}]
"#,
    )
    .unwrap();
    std::fs::write(
        chart.join("templates/cleanup.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cleanup\n  annotations: {helm.sh/hook: pre-delete}\n",
    )
    .unwrap();
    std::fs::write(
        chart.join("templates/caps.yaml"),
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "web.fullname" . }}-caps
data:
  kube: {{ .Capabilities.KubeVersion.Version | quote }}
  deployments: {{ .Capabilities.APIVersions.Has "apps/v1/Deployment" | quote }}
  namespace: {{ .Release.Namespace | quote }}
  team: {{ .Values.team | default "none" | quote }}
"#,
    )
    .unwrap();
    std::fs::write(
        chart.join("templates/fail.yaml"),
        "{{- if .Values.broken }}{{ fail \"broken is set: refusing to render\" }}{{- end }}\n",
    )
    .unwrap();
}

/// A sandbox cluster, SQLite, a Git repository and a chart repository directory served on
/// loopback.
struct HelmFixture {
    settings: Settings,
    _db: TestDb,
    cluster_guard: TestCluster,
    _cache: tempfile::TempDir,
    repo: GitRepo,
    home: tempfile::TempDir,
    charts: tempfile::TempDir,
    charts_url: String,
    store: Store,
    cluster: std::sync::Arc<ClusterClient>,
}

/// Serves `dir` over HTTP on loopback (as a chart repository's static host does).
async fn serve_dir(dir: &Path) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback_service(tower_http::services::ServeDir::new(dir));
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    url
}

async fn fixture() -> HelmFixture {
    let db = TestDb::sqlite();
    let c = TestCluster::sandbox().await;
    let cache = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let charts = tempfile::tempdir().unwrap();
    let charts_url = serve_dir(charts.path()).await;
    let repo = GitRepo::new();
    let mut s: Settings = db.settings();
    s.git.cache_dir = cache.path().to_path_buf();
    s.repositories = vec![RepositorySettings::new("demo", repo.url())];
    s.clusters = vec![ClusterSettings {
        name: "sandbox".into(),
        url: c.url.clone(),
        ..Default::default()
    }];
    let store = db.store().await;
    let cluster = std::sync::Arc::new(ClusterClient::connect(&s.clusters[0]).await.unwrap());
    HelmFixture {
        settings: s,
        _db: db,
        cluster_guard: c,
        _cache: cache,
        repo,
        home,
        charts,
        charts_url,
        store,
        cluster,
    }
}

fn application(name: &str, path: &str, helm: HelmOptions) -> ApplicationSettings {
    ApplicationSettings {
        name: name.into(),
        project: "demo".into(),
        repository: "demo".into(),
        path: path.into(),
        revision: "main".into(),
        cluster: "sandbox".into(),
        namespace: name.into(),
        sync_policy: app::model::SyncPolicy::Auto,
        self_heal: false,
        prune: true,
        ignore: Vec::new(),
        approvals: Default::default(),
        compare: Default::default(),
        require_signed: false,
        source: None,
        helm,
    }
}

impl HelmFixture {
    /// Declares `apps` (chart sources resolved as the configuration loader does) and returns a
    /// Git engine that knows the cluster.
    async fn declare(&mut self, apps: Vec<ApplicationSettings>) -> std::sync::Arc<GitSources> {
        let mut resolved = Vec::new();
        for mut a in apps {
            a.resolve_chart_source(&mut self.settings.repositories, true)
                .unwrap();
            a.check(&self.settings.repositories, &self.settings.clusters)
                .unwrap();
            resolved.push(a);
        }
        self.settings.applications = resolved;
        let catalog = DeclaredCatalog {
            repositories: &self.settings.repositories,
            clusters: &self.settings.clusters,
            applications: &self.settings.applications,
        };
        self.store.sync_declared(catalog, 0).await.unwrap();
        let git = GitSources::new(self.store.clone(), &self.settings);
        let mut clusters = std::collections::HashMap::new();
        clusters.insert("sandbox".to_owned(), self.cluster.clone());
        git.set_clusters(std::sync::Arc::new(clusters));
        git
    }

    /// The objects of `app`'s stored render of its target revision.
    async fn target_objects(&self, app: &str) -> (String, Vec<Value>) {
        let state = self.store.app_git_state(app).await.unwrap();
        assert_eq!(state.last_error, None, "{app} rendered");
        let rev = state.target_sha.expect("a target revision");
        let (_, content) = self
            .store
            .rendered_snapshot(app, &rev)
            .await
            .unwrap()
            .expect("a stored render");
        (rev, serde_json::from_str(&content).unwrap())
    }

    /// Packages the chart at `chart_dir` as `version` (replicas `replicas`) into the chart
    /// repository and re-indexes it, dated `created` (RFC 3339).
    fn publish(&self, chart_dir: &Path, version: &str, replicas: u32) {
        let chart_yaml = chart_dir.join("Chart.yaml");
        let text = std::fs::read_to_string(&chart_yaml).unwrap();
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("version:") {
                    format!("version: {version}")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&chart_yaml, text + "\n").unwrap();
        let values = chart_dir.join("values.yaml");
        let v = std::fs::read_to_string(&values).unwrap();
        let v = regex_replace_line(&v, "replicaCount:", &format!("replicaCount: {replicas}"));
        std::fs::write(&values, v).unwrap();
        helm(
            self.home.path(),
            self.charts.path(),
            &["package", chart_dir.to_str().unwrap(), "-d", "."],
        );
        self.reindex();
    }

    fn reindex(&self) {
        helm(
            self.home.path(),
            self.charts.path(),
            &["repo", "index", ".", "--url", &self.charts_url],
        );
    }

    /// Reconciles `app` until it is synced and healthy and its known-good revision recorded
    /// (its namespace made first: charts do not hold their own namespace).
    async fn settle(&self, app: &str) {
        let source = self.store.app_source(app).await.unwrap().unwrap();
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(self.cluster_guard.client.clone());
        if namespaces
            .get_opt(&source.namespace)
            .await
            .unwrap()
            .is_none()
        {
            let ns =
                serde_json::from_value(json!({"metadata": {"name": source.namespace}})).unwrap();
            namespaces.create(&Default::default(), &ns).await.unwrap();
        }
        let mut last = None;
        for _ in 0..100 {
            let o = reconcile::reconcile_app(&self.store, &self.cluster, &source)
                .await
                .unwrap();
            last = Some(format!("{o:?}"));
            if o.sync_status == "Synced" && o.health == server::cluster::health::Health::Healthy {
                reconcile::reconcile_app(&self.store, &self.cluster, &source)
                    .await
                    .unwrap();
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("{app} did not become synced and healthy: {last:?}");
    }
}

fn regex_replace_line(text: &str, prefix: &str, with: &str) -> String {
    text.lines()
        .map(|l| {
            if l.starts_with(prefix) {
                with.to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_in_git_renders_with_values_files_inline_values_set_capabilities_and_hooks() {
    let mut f = fixture().await;
    make_chart(f.home.path(), f.repo.path(), "charts/web");
    // Per-environment values elsewhere in the repository.
    f.repo.write(
        "envs/prod/values.yaml",
        "replicaCount: 3\nteam: from-file\n",
    );
    f.repo.commit("web chart");
    let helm = HelmOptions {
        release_name: Some("web".into()),
        values_files: vec!["../../envs/prod/values.yaml".into()],
        values: Some(
            json!({"team": "payments", "podAnnotations": {"owner": "payments"}})
                .as_object()
                .unwrap()
                .clone(),
        ),
        set: [("image.tag".to_owned(), json!("1.27.3"))].into(),
        set_string: [("podLabels.build".to_owned(), "0042".to_owned())].into(),
        ..Default::default()
    };
    let git = f
        .declare(vec![application("shop", "charts/web", helm)])
        .await;
    git.sync_repository("demo").await.unwrap();
    let (_, objects) = f.target_objects("shop").await;

    let deploy = find(&objects, "Deployment", "web").expect("the chart's Deployment");
    // Values file over the chart's defaults; inline values over the file; `set` last.
    assert_eq!(deploy["spec"]["replicas"], 3);
    let pod = &deploy["spec"]["template"];
    assert_eq!(pod["metadata"]["annotations"]["owner"], "payments");
    assert_eq!(
        pod["metadata"]["labels"]["build"], "0042",
        "set_string keeps a string"
    );
    assert_eq!(pod["spec"]["containers"][0]["image"], "nginx:1.27.3");
    let caps = find(&objects, "ConfigMap", "web-caps").unwrap();
    assert_eq!(caps["data"]["team"], "payments");
    assert_eq!(caps["data"]["namespace"], "shop");
    // The cluster's own version and API list, read by discovery.
    let version: Value = reqwest::get(format!("{}/version", f.cluster_guard.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(caps["data"]["kube"], version["gitVersion"]);
    assert_eq!(caps["data"]["deployments"], "true");
    // Hooks: the migration Job is kept (applied before the rest), test and delete hooks are not.
    let job = find(&objects, "Job", "web-migrate").expect("pre-upgrade hook kept");
    assert_eq!(
        job["metadata"]["annotations"]["helm.sh/hook"],
        "pre-install,pre-upgrade"
    );
    assert!(find(&objects, "ConfigMap", "cleanup").is_none());
    assert!(
        !objects.iter().any(|o| o["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.contains("test-connection"))),
        "test hooks are left out"
    );

    // Synced to the cluster like any application.
    f.settle("shop").await;
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(f.cluster_guard.client.clone(), "shop");
    assert_eq!(deployments.get("web").await.unwrap().spec.replicas, Some(3));

    let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> =
        kube::Api::namespaced(f.cluster_guard.client.clone(), "shop");
    let job_image = || async {
        let job = serde_json::to_value(jobs.get("web-migrate").await.unwrap()).unwrap();
        job["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(job_image().await, "busybox:1.36");
    // A sync with a new migration image: the hook runs anew (its Job, whose template is
    // immutable, is deleted and created again before the rest is applied). As in Argo CD, a
    // change to hooks alone is no drift: hooks run when a sync does.
    f.repo.write(
        "envs/prod/values.yaml",
        "replicaCount: 2\nteam: from-file\nmigrateImage: busybox:1.37\n",
    );
    f.repo.commit("new migration image");
    git.sync_repository("demo").await.unwrap();
    f.settle("shop").await;
    assert_eq!(job_image().await, "busybox:1.37");
    // The history holds commits to the values file too (it is outside the chart).
    let (history, _) = f.store.app_commits("shop", None, 50).await.unwrap();
    let titles: Vec<&str> = history.iter().map(|c| c.title.as_str()).collect();
    assert_eq!(titles, ["new migration image", "web chart"]);
    // A failing PreSync hook stops the sync before the Deployment changes.
    f.repo.write(
        "envs/prod/values.yaml",
        "replicaCount: 4\nteam: from-file\nmigrateImage: busybox:broken\n",
    );
    f.repo.commit("broken migration");
    git.sync_repository("demo").await.unwrap();
    let source = f.store.app_source("shop").await.unwrap().unwrap();
    let outcome = reconcile::reconcile_app(&f.store, &f.cluster, &source)
        .await
        .unwrap();
    assert!(
        matches!(outcome.synced, Some((_, server::store::SyncStatus::Failed))),
        "{outcome:?}"
    );
    assert_eq!(
        deployments.get("web").await.unwrap().spec.replicas,
        Some(2),
        "the Deployment waits for the PreSync hook"
    );
    let syncs = f.store.syncs("shop", 1).await.unwrap();
    let results = format!("{:?}", f.store.sync_results(syncs[0].id).await.unwrap());
    assert!(results.contains("PreSync hook failed"), "{results}");

    // A template error: on the timeline with Helm's message and the template file; the
    // deployed revision stays.
    f.repo.write(
        "envs/prod/values.yaml",
        "replicaCount: 3\nteam: from-file\nmigrateImage: busybox:broken\nbroken: true\n",
    );
    f.repo.commit("break it");
    git.sync_repository("demo").await.unwrap();
    let state = f.store.app_git_state("shop").await.unwrap();
    let error = state.last_error.expect("the render failed");
    assert!(
        error.contains("broken is set: refusing to render"),
        "{error}"
    );
    assert!(error.contains("templates/fail.yaml"), "{error}");
    assert!(!error.contains("/repo/"), "no sandbox paths: {error}");
    let timeline = f.store.timeline("shop", 50).await.unwrap();
    assert!(
        timeline
            .iter()
            .any(|(kind, message)| kind == "render_error" && message.contains("broken is set")),
        "{timeline:?}"
    );
}

/// Renders `path` of the repository at HEAD with `helm` options, without a cluster.
fn render_at(
    repo: &GitRepo,
    path: &str,
    helm: &HelmOptions,
) -> Result<render::Rendered, RenderError> {
    let r = git2::Repository::open(repo.path()).unwrap();
    let head = r.head().unwrap().peel_to_commit().unwrap().id();
    render::render_source(
        &r,
        head,
        &render::Source {
            app: "shop",
            path,
            namespace: "shop",
            source: None,
            helm,
            capabilities: None,
            capabilities_error: None,
        },
        &Limits::default(),
    )
}

#[tokio::test]
async fn values_files_never_leave_the_repository_and_errors_name_the_file() {
    let f = fixture().await;
    make_chart(f.home.path(), f.repo.path(), "charts/web");
    f.repo.write("envs/ok.yaml", "replicaCount: 2\n");
    std::os::unix::fs::symlink("/etc/passwd", f.repo.path().join("envs/passwd.yaml")).unwrap();
    std::os::unix::fs::symlink("/etc", f.repo.path().join("envs/etc")).unwrap();
    std::os::unix::fs::symlink("../..", f.repo.path().join("envs/up")).unwrap();
    f.repo.commit("chart and hostile links");
    let with = |files: &[&str]| HelmOptions {
        values_files: files.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    };
    let ok = render_at(&f.repo, "charts/web", &with(&["../../envs/ok.yaml"])).unwrap();
    assert_eq!(
        find(&ok.objects, "Deployment", "shop-web").unwrap()["spec"]["replicas"],
        2
    );
    for (files, what) in [
        (vec!["../../../etc/passwd"], "leaves the repository"),
        (vec!["/etc/passwd"], "leaves the repository"),
        (vec!["../../envs/passwd.yaml"], "leaves the repository"),
        (vec!["../../envs/etc/passwd"], "leaves the repository"),
        (vec!["../../envs/up/etc/passwd"], "leaves the repository"),
        (vec!["missing.yaml"], "does not exist"),
    ] {
        let err = render_at(&f.repo, "charts/web", &with(&files))
            .expect_err(&format!("{files:?} is refused"))
            .to_string();
        assert!(err.contains(what), "{files:?}: {err}");
        assert!(
            !err.contains("root:x:0"),
            "no file content in errors: {err}"
        );
    }
    // A symlink inside the chart that leaves the repository fails the checkout, naming it.
    std::os::unix::fs::symlink(
        "/etc/hostname",
        f.repo.path().join("charts/web/templates/host.yaml"),
    )
    .unwrap();
    f.repo.commit("template link out");
    let err = render_at(&f.repo, "charts/web", &HelmOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("charts/web/templates/host.yaml"), "{err}");
    // Without Chart.yaml, `source = "helm"` is an error naming the file; and a chart whose
    // `required` value is missing names the template.
    let r = git2::Repository::open(f.repo.path()).unwrap();
    let head = r.head().unwrap().peel_to_commit().unwrap().id();
    let err = render::render_source(
        &r,
        head,
        &render::Source {
            app: "shop",
            path: "envs",
            namespace: "shop",
            source: Some(render::SourceType::Helm),
            helm: &HelmOptions::default(),
            capabilities: None,
            capabilities_error: None,
        },
        &Limits::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("envs/Chart.yaml"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_are_fetched_by_their_lock_into_a_cache_and_vendored_ones_need_no_network() {
    let mut f = fixture().await;
    // A library chart published to the loopback chart repository.
    let work = tempfile::tempdir().unwrap();
    helm(f.home.path(), work.path(), &["create", "redis"]);
    f.publish(&work.path().join("redis"), "0.3.0", 1);
    make_chart(f.home.path(), f.repo.path(), "charts/web");
    let chart_yaml = f.repo.path().join("charts/web/Chart.yaml");
    let mut text = std::fs::read_to_string(&chart_yaml).unwrap();
    text.push_str(&format!(
        "dependencies:\n- name: redis\n  version: \"~0.3\"\n  repository: {}\n",
        f.charts_url
    ));
    std::fs::write(&chart_yaml, text).unwrap();
    // The lock, as `helm dependency update` writes it; the fetched archive is not committed.
    helm(
        f.home.path(),
        &f.repo.path().join("charts/web"),
        &["dependency", "update", "."],
    );
    std::fs::remove_dir_all(f.repo.path().join("charts/web/charts")).unwrap();
    f.repo.commit("web needs redis");
    let git = f
        .declare(vec![application(
            "shop",
            "charts/web",
            HelmOptions::default(),
        )])
        .await;
    git.sync_repository("demo").await.unwrap();
    let (_, objects) = f.target_objects("shop").await;
    assert!(
        find(&objects, "Deployment", "shop-redis").is_some(),
        "the dependency rendered"
    );
    let cached = f.settings.git.cache_dir.join("helm-dependencies");
    let entries: Vec<_> = std::fs::read_dir(&cached).unwrap().flatten().collect();
    assert_eq!(entries.len(), 1, "one cache entry per lock");
    assert!(entries[0].path().join("charts/redis-0.3.0.tgz").is_file());

    // The repository goes away: a change elsewhere in the chart renders from the cache.
    std::fs::remove_file(f.charts.path().join("redis-0.3.0.tgz")).unwrap();
    f.repo.write(
        "charts/web/values.yaml",
        &std::fs::read_to_string(f.repo.path().join("charts/web/values.yaml"))
            .unwrap()
            .replace("replicaCount: 1", "replicaCount: 2"),
    );
    f.repo.commit("two replicas");
    git.sync_repository("demo").await.unwrap();
    let (_, objects) = f.target_objects("shop").await;
    assert_eq!(
        find(&objects, "Deployment", "shop-web").unwrap()["spec"]["replicas"],
        2
    );

    // A dependency missing from charts/ without a lock is a clear error.
    std::fs::remove_file(f.repo.path().join("charts/web/Chart.lock")).unwrap();
    f.repo.commit("drop the lock");
    git.sync_repository("demo").await.unwrap();
    let error = f
        .store
        .app_git_state("shop")
        .await
        .unwrap()
        .last_error
        .unwrap();
    assert!(error.contains("no Chart.lock"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_repository_versions_are_revisions_and_a_removed_version_still_rolls_back() {
    let mut f = fixture().await;
    let work = tempfile::tempdir().unwrap();
    helm(f.home.path(), work.path(), &["create", "web"]);
    let chart = work.path().join("web");
    f.publish(&chart, "1.0.0", 1);
    f.publish(&chart, "1.1.0", 2);
    f.publish(&chart, "2.0.0", 5);
    let app = application(
        "shop",
        "",
        HelmOptions {
            chart: Some("web".into()),
            repo_url: Some(f.charts_url.clone()),
            version: Some("^1.0".into()),
            set: [("fullnameOverride".to_owned(), json!("web"))].into(),
            ..Default::default()
        },
    );
    let git = f.declare(vec![app]).await;
    let repository = f.settings.applications[0].repository.clone();
    assert!(repository.starts_with("web-"), "{repository}");
    git.sync_repository(&repository).await.unwrap();
    let (rev, objects) = f.target_objects("shop").await;
    assert_eq!(
        rev, "1.1.0",
        "the newest version in ^1.0 (2.0.0 is outside)"
    );
    assert_eq!(
        find(&objects, "Deployment", "web").unwrap()["spec"]["replicas"],
        2
    );
    // The history lists the versions in range with their publication dates.
    let (history, _) = f.store.app_commits("shop", None, 50).await.unwrap();
    let versions: Vec<&str> = history.iter().map(|c| c.sha.as_str()).collect();
    assert_eq!(versions, ["1.1.0", "1.0.0"]);
    assert!(history.iter().all(|c| c.committed_at > 1_700_000_000_000));
    assert_eq!(history[0].title, "web 1.1.0");
    f.settle("shop").await;

    // A new version in range moves the target and (auto-sync) is deployed.
    f.publish(&chart, "1.2.0", 3);
    git.sync_repository(&repository).await.unwrap();
    assert_eq!(f.target_objects("shop").await.0, "1.2.0");
    f.settle("shop").await;
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(f.cluster_guard.client.clone(), "shop");
    let replicas = || async { deployments.get("web").await.unwrap().spec.replicas };
    assert_eq!(replicas().await, Some(3));

    // The repository drops 1.1.0: the timeline says so; its stored render still diffs and
    // rolls back.
    std::fs::remove_file(f.charts.path().join("web-1.1.0.tgz")).unwrap();
    std::fs::remove_file(f.charts.path().join("index.yaml")).unwrap();
    f.reindex();
    git.sync_repository(&repository).await.unwrap();
    let timeline = f.store.timeline("shop", 50).await.unwrap();
    assert!(
        timeline
            .iter()
            .any(|(_, message)| message.contains("no longer served by the repository")),
        "{timeline:?}"
    );
    let server = crate::helpers::TestServer::start(f.settings.clone()).await;
    let deployer =
        crate::helpers::bearer_client(&server.token(app::model::Role::Deployer, None).await);
    let url = |p: &str| format!("{}/api/v1/applications/shop{p}", server.base);
    let diff: Value = deployer
        .get(url("/diff?from=1.1.0&to=1.2.0"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let web = diff["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["object"]["kind"] == "Deployment")
        .unwrap()
        .clone();
    assert!(
        web["fields"]
            .as_array()
            .unwrap()
            .contains(&json!({"path": ".spec.replicas", "from": 2, "to": 3})),
        "{web}"
    );
    let resp = deployer
        .post(url("/rollback"))
        .json(&json!({"revision": "1.1.0", "reason": "1.2.0 pages on-call"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    for _ in 0..100 {
        if replicas().await == Some(2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(replicas().await, Some(2), "rolled back to 1.1.0's render");
    // A prefix of a chart version is not a revision.
    let resp = deployer
        .post(url("/rollback"))
        .json(&json!({"revision": "1.1", "reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
}

/// A CNCF Distribution registry (`distribution-registry`, built by scripts/setup.sh) on a free
/// loopback port, storing under `dir`; killed on drop.
struct Registry {
    child: std::process::Child,
    addr: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn registry(dir: &Path) -> Registry {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\nlog:\n  level: error\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let child = Command::new("distribution-registry")
        .args(["serve", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("distribution-registry is installed (scripts/setup.sh)");
    for _ in 0..100 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Registry { child, addr }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_chart_versions_resolve_through_helm_and_stay_in_the_history() {
    let mut f = fixture().await;
    let reg_dir = tempfile::tempdir().unwrap();
    let reg = registry(reg_dir.path()).await;
    let work = tempfile::tempdir().unwrap();
    helm(f.home.path(), work.path(), &["create", "web"]);
    let chart = work.path().join("web");
    let push = |f: &HelmFixture, version: &str, replicas: u32| {
        f.publish(&chart, version, replicas);
        let archive = f.charts.path().join(format!("web-{version}.tgz"));
        helm(
            f.home.path(),
            work.path(),
            &[
                "push",
                archive.to_str().unwrap(),
                &format!("oci://{}/charts", reg.addr),
                "--plain-http",
            ],
        );
    };
    push(&f, "1.0.0", 1);
    push(&f, "1.1.0", 2);
    push(&f, "2.0.0", 4);
    let url = format!("oci://{}/charts", reg.addr);
    let mut declared = RepositorySettings::new("registry", url.clone());
    declared.kind = server::config::RepositoryKind::Helm;
    declared.plain_http = true;
    f.settings.repositories.push(declared);
    let app = application(
        "shop",
        "",
        HelmOptions {
            chart: Some("web".into()),
            repo_url: Some(url),
            version: Some("~1.0 || ~1.1".into()),
            ..Default::default()
        },
    );
    let git = f.declare(vec![app]).await;
    let repository = f.settings.applications[0].repository.clone();
    git.sync_repository(&repository).await.unwrap();
    let (rev, objects) = f.target_objects("shop").await;
    assert_eq!(rev, "1.1.0");
    assert_eq!(
        find(&objects, "Deployment", "shop-web").unwrap()["spec"]["replicas"],
        2
    );
    push(&f, "1.1.1", 3);
    git.sync_repository(&repository).await.unwrap();
    assert_eq!(f.target_objects("shop").await.0, "1.1.1");
    // A registry lists no history: the versions seen stay in it.
    let (history, _) = f.store.app_commits("shop", None, 50).await.unwrap();
    let versions: Vec<&str> = history.iter().map(|c| c.sha.as_str()).collect();
    assert!(
        versions.contains(&"1.1.1") && versions.contains(&"1.1.0"),
        "{versions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_repository_credentials_come_from_a_file_and_never_reach_an_error() {
    let mut f = fixture().await;
    let work = tempfile::tempdir().unwrap();
    helm(f.home.path(), work.path(), &["create", "web"]);
    f.publish(&work.path().join("web"), "1.0.0", 1);
    // The same files behind basic auth (user `ci`, password `s3cret-Token`).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = f.charts.path().to_path_buf();
    // The index names archives by the open server's URL: re-index for this one.
    helm(
        f.home.path(),
        &served,
        &["repo", "index", ".", "--url", &url],
    );
    let guard = axum::middleware::from_fn(
        |req: axum::extract::Request, next: axum::middleware::Next| async move {
            use base64::Engine;
            let want = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("ci:s3cret-Token")
            );
            if req
                .headers()
                .get("authorization")
                .is_some_and(|h| h.as_bytes() == want.as_bytes())
            {
                next.run(req).await
            } else {
                axum::http::StatusCode::UNAUTHORIZED.into_response()
            }
        },
    );
    use axum::response::IntoResponse;
    let app = axum::Router::new()
        .fallback_service(tower_http::services::ServeDir::new(&served))
        .layer(guard);
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("password");
    std::fs::write(&password_file, "wrong-Passw0rd\n").unwrap();
    let mut declared = RepositorySettings::new("private", url.clone());
    declared.kind = server::config::RepositoryKind::Helm;
    declared.username = Some("ci".into());
    declared.password_file = Some(password_file.clone());
    f.settings.repositories.push(declared);
    let app = application(
        "shop",
        "",
        HelmOptions {
            chart: Some("web".into()),
            repo_url: Some(url),
            ..Default::default()
        },
    );
    let git = f.declare(vec![app]).await;
    let repository = f.settings.applications[0].repository.clone();
    let err = git
        .sync_repository(&repository)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("401") || err.contains("nauthorized"), "{err}");
    assert!(!err.contains("wrong-Passw0rd"), "{err}");
    let stored = f
        .store
        .repository_error(&repository)
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.contains("wrong-Passw0rd"), "{stored}");
    let timeline = f.store.timeline("shop", 10).await.unwrap();
    assert!(
        timeline.iter().all(|(_, m)| !m.contains("wrong-Passw0rd")),
        "{timeline:?}"
    );
    // The right password (read from the file at fetch time): the chart deploys.
    std::fs::write(&password_file, "s3cret-Token\n").unwrap();
    git.sync_repository(&repository).await.unwrap();
    assert_eq!(f.target_objects("shop").await.0, "1.0.0");
    // Helm's homes hold the password only in a file only Tidemark's user can read.
    let repos_file = f
        .settings
        .git
        .cache_dir
        .join("helm-repositories")
        .join(&repository)
        .join("config/repositories.yaml");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&repos_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o077, 0, "{mode:o}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_options_over_rest_are_checked_stored_rendered_and_shown_without_values() {
    let mut f = fixture().await;
    make_chart(f.home.path(), f.repo.path(), "charts/web");
    f.repo.write("envs/qa.yaml", "replicaCount: 2\n");
    f.repo.commit("web chart");
    f.declare(Vec::new()).await;
    let server = crate::helpers::TestServer::start(f.settings.clone()).await;
    let admin = crate::helpers::bearer_client(&server.token(app::model::Role::Admin, None).await);
    let url = format!("{}/api/v1/applications", server.base);
    let body = |helm: Value| {
        json!({"name": "qa", "project": "demo", "repository": "demo", "path": "charts/web",
               "cluster": "sandbox", "namespace": "qa", "helm": helm})
    };
    // Refused with the field named, nothing stored.
    for (helm, field) in [
        (
            json!({"values_files": ["/etc/passwd"]}),
            "helm.values_files",
        ),
        (
            json!({"chart": "web", "repo_url": "ftp://x"}),
            "helm.repo_url",
        ),
        (
            json!({"chart": "web", "repo_url": "https://charts.example"}),
            "helm.chart",
        ),
        (json!({"unknown": true}), "unknown"),
        (
            json!({"release_name": "--set-file=x=/etc/passwd"}),
            "helm.release_name",
        ),
        (json!({"namespace": "--output-dir=/tmp"}), "helm.namespace"),
        (json!({"kube_version": "--debug"}), "helm.kube_version"),
    ] {
        let resp = admin
            .post(&url)
            .json(&body(helm.clone()))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert!(status == 400 || status == 422, "{helm}: {status} {text}");
        assert!(text.contains(field), "{helm}: {text}");
    }
    assert!(f.store.app_source("qa").await.unwrap().is_none());
    let helm = json!({"values_files": ["../../envs/qa.yaml"], "values": {"team": "qa-secret-team"},
                      "set": {"image.tag": "1.27.9"}});
    let resp = admin.post(&url).json(&body(helm)).send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    let source = f.store.app_source("qa").await.unwrap().unwrap();
    assert_eq!(source.render.helm.values_files, ["../../envs/qa.yaml"]);
    GitSources::new(f.store.clone(), &f.settings)
        .sync_repository("demo")
        .await
        .unwrap();
    let (_, objects) = f.target_objects("qa").await;
    let deploy = find(&objects, "Deployment", "qa-web").unwrap();
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27.9"
    );
    let shown: Value = admin
        .get(format!("{url}/qa"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["helm"]["values_files"], json!(["../../envs/qa.yaml"]));
    assert_eq!(shown["helm"]["values"], json!({"team": "(hidden)"}));
    assert_eq!(shown["helm"]["set"], json!({"image.tag": "(hidden)"}));
    assert_eq!(
        shown["application"]["source"],
        "demo / charts/web · Helm chart, values from ../../envs/qa.yaml"
    );
    assert!(!shown.to_string().contains("qa-secret-team"));
}
