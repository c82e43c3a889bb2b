//! The Git engine against repositories made with the real `git` CLI: history, rendering,
//! safety limits, ingest into the store (both backends), REST and webhooks.

use std::path::{Path, PathBuf};
use std::process::Command;

use git2::Repository;
use hmac::{KeyInit, Mac};
use serde_json::{json, Value};
use server::config::{RepositorySettings, Settings};
use server::git::history;
use server::git::sources::GitSources;
use server::render::{self, Limits, RenderError};

use crate::helpers::{TestDb, TestServer};

/// A working repository driven by the `git` CLI, with deterministic commit times.
pub struct GitRepo {
    pub dir: tempfile::TempDir,
    tick: std::cell::Cell<i64>,
}

impl Default for GitRepo {
    fn default() -> Self {
        Self::new()
    }
}

impl GitRepo {
    pub fn new() -> Self {
        let repo = Self {
            dir: tempfile::tempdir().unwrap(),
            tick: std::cell::Cell::new(1_700_000_000),
        };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["config", "user.name", "Ada Dev"]);
        repo.git(&["config", "user.email", "ada@example.com"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.path().display())
    }

    pub fn git(&self, args: &[&str]) -> String {
        self.tick.set(self.tick.get() + 60);
        let date = format!("{} +0000", self.tick.get());
        let out = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", self.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    pub fn write(&self, path: &str, content: &str) -> &Self {
        let full = self.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
        self
    }

    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    pub fn log(&self, rev: &str, path: &str) -> Vec<String> {
        let out = self.git(&["log", "--format=%H", rev, "--", path]);
        out.lines().map(str::to_owned).collect()
    }

    fn open(&self) -> Repository {
        Repository::open(self.path()).unwrap()
    }
}

fn configmap(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: \"{value}\"\n"
    )
}

fn walk(repo: &GitRepo, rev: &str, path: &str) -> Vec<String> {
    let r = repo.open();
    let tip = r
        .revparse_single(rev)
        .unwrap()
        .peel_to_commit()
        .unwrap()
        .id();
    history::touching(&r, tip, path, None)
        .unwrap()
        .into_iter()
        .map(|c| c.sha)
        .collect()
}

#[test]
fn history_matches_git_log_for_the_path_including_merges() {
    let repo = GitRepo::new();
    repo.write("apps/a/one.yaml", &configmap("one", "1"))
        .write("apps/b/cm.yaml", &configmap("b", "1"));
    repo.commit("base");
    repo.write("apps/b/cm.yaml", &configmap("b", "2"));
    repo.commit("b only");
    // A feature branch changes a; main changes a differently in another file; the merge
    // differs from both parents at apps/a and is listed.
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.write("apps/a/two.yaml", &configmap("two", "1"));
    repo.commit("feature: add two");
    repo.git(&["checkout", "-q", "main"]);
    repo.write("apps/a/one.yaml", &configmap("one", "2"));
    repo.commit("main: change one");
    repo.git(&["merge", "-q", "--no-ff", "-m", "merge feature", "feature"]);
    // A merge that only brings changes outside apps/a is left out.
    repo.git(&["checkout", "-q", "-b", "other"]);
    repo.write("apps/b/cm.yaml", &configmap("b", "3"));
    repo.commit("other: b");
    repo.git(&["checkout", "-q", "main"]);
    repo.git(&["merge", "-q", "--no-ff", "-m", "merge other", "other"]);
    repo.git(&["tag", "v1"]);
    repo.write("apps/a/one.yaml", &configmap("one", "3"));
    repo.commit("after tag");

    for path in ["apps/a", "apps/b", "apps", ""] {
        let git_path = if path.is_empty() { "." } else { path };
        assert_eq!(
            walk(&repo, "main", path),
            repo.log("main", git_path),
            "path {path:?}"
        );
    }
    assert_eq!(walk(&repo, "v1", "apps/a"), repo.log("v1", "apps/a"));
    let titles: Vec<String> = {
        let r = repo.open();
        let tip = r.revparse_single("main").unwrap().id();
        history::touching(&r, tip, "apps/a", None)
            .unwrap()
            .into_iter()
            .map(|c| c.title)
            .collect()
    };
    assert!(titles.contains(&"merge feature".to_string()), "{titles:?}");
    assert!(!titles.contains(&"merge other".to_string()), "{titles:?}");
}

fn render_at(repo: &GitRepo, path: &str, limits: &Limits) -> Result<render::Rendered, RenderError> {
    let r = repo.open();
    let head = r.head().unwrap().peel_to_commit().unwrap().id();
    render::render(&r, head, path, "default", limits)
}

#[test]
fn plain_yaml_renders_sorted_and_the_digest_ignores_formatting() {
    let repo = GitRepo::new();
    repo.write(
        "apps/web/all.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec: {replicas: 2}\n---\n# comment only\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n",
    )
    .write("apps/web/nested/cm.json", r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cfg","namespace":"shop"},"data":{"a":"1"}}"#)
    .write("apps/web/README.md", "not a manifest")
    .write("apps/other/cm.yaml", &configmap("elsewhere", "x"));
    repo.commit("web");
    let first = render_at(&repo, "apps/web", &Limits::default()).unwrap();
    let kinds: Vec<&str> = first
        .objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["ConfigMap", "Service", "Deployment"]);

    // Same objects, other formatting and key order: same digest.
    repo.write("apps/web/all.yaml", "kind: Deployment\napiVersion: apps/v1\nspec:\n  replicas: 2\nmetadata:\n  namespace: shop\n  name: web\n---\nkind: Service\napiVersion: v1\nmetadata:\n  name: web\n  namespace: shop\n");
    repo.commit("reformat");
    let second = render_at(&repo, "apps/web", &Limits::default()).unwrap();
    assert_eq!(first.digest, second.digest);
    assert_eq!(first.canonical, second.canonical);
}

#[test]
fn kustomize_renders_a_base_with_an_overlay() {
    let repo = GitRepo::new();
    repo.write("apps/podinfo/base/kustomization.yaml", "resources:\n  - deploy.yaml\n")
        .write(
            "apps/podinfo/base/deploy.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: podinfo}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: podinfo}}\n  template:\n    metadata: {labels: {app: podinfo}}\n    spec: {containers: [{name: podinfo, image: 'ghcr.io/stefanprodan/podinfo:6.0.0'}]}\n",
        )
        .write(
            "apps/podinfo/overlays/prod/kustomization.yaml",
            "resources:\n  - ../../base\nnamespace: podinfo\nnamePrefix: prod-\nreplicas:\n  - name: podinfo\n    count: 3\n",
        );
    repo.commit("podinfo");
    let r = render_at(&repo, "apps/podinfo/overlays/prod", &Limits::default()).unwrap();
    assert_eq!(r.objects.len(), 1);
    assert_eq!(r.objects[0]["metadata"]["name"], "prod-podinfo");
    assert_eq!(r.objects[0]["metadata"]["namespace"], "podinfo");
    assert_eq!(r.objects[0]["spec"]["replicas"], 3);
}

#[test]
fn unsafe_or_oversized_input_fails_the_whole_render_naming_the_file() {
    let repo = GitRepo::new();
    repo.write("apps/ok/cm.yaml", &configmap("ok", "1"));
    repo.write("secret.yaml", &configmap("outside", "x"));
    std::os::unix::fs::symlink("../../secret.yaml", repo.path().join("apps/ok/link.yaml")).unwrap();
    repo.commit("symlink out");
    let err = render_at(&repo, "apps/ok", &Limits::default()).unwrap_err();
    assert!(
        matches!(&err, RenderError::UnsafePath { file, .. } if file == "apps/ok/link.yaml"),
        "{err}"
    );

    for bad in ["../etc", "/etc", "apps/../.."] {
        assert!(
            matches!(
                render_at(&repo, bad, &Limits::default()),
                Err(RenderError::BadAppPath { .. })
            ),
            "{bad}"
        );
    }

    let repo = GitRepo::new();
    repo.write(
        "apps/x/big.yaml",
        &format!("{}\n# {}\n", configmap("big", "1"), "x".repeat(4096)),
    );
    repo.commit("big");
    let small = Limits {
        max_file_bytes: 1024,
        ..Limits::default()
    };
    let err = render_at(&repo, "apps/x", &small).unwrap_err();
    assert!(
        matches!(&err, RenderError::FileTooLarge { file, .. } if file == "apps/x/big.yaml"),
        "{err}"
    );

    let repo = GitRepo::new();
    for i in 0..5 {
        repo.write(
            &format!("apps/x/{i}.yaml"),
            &configmap(&format!("c{i}"), "1"),
        );
    }
    repo.commit("many");
    let few = Limits {
        max_files: 3,
        ..Limits::default()
    };
    assert!(matches!(
        render_at(&repo, "apps/x", &few),
        Err(RenderError::TooManyFiles { limit: 3 })
    ));

    let repo = GitRepo::new();
    let mut laughs = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\ndata:\n  a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
    let mut prev = "a";
    for n in names {
        laughs.push_str(&format!("  {n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
        prev = n;
    }
    repo.write("apps/x/lol.yaml", &laughs);
    repo.commit("billion laughs");
    let err = render_at(&repo, "apps/x", &Limits::default()).unwrap_err();
    assert!(
        matches!(&err, RenderError::Yaml { file, .. } if file == "apps/x/lol.yaml"),
        "{err}"
    );

    let repo = GitRepo::new();
    repo.write("apps/x/good.yaml", &configmap("good", "1"))
        .write("apps/x/broken.yaml", "apiVersion: v1\nkind: [unclosed\n");
    repo.commit("bad yaml");
    let err = render_at(&repo, "apps/x", &Limits::default()).unwrap_err();
    assert!(
        matches!(&err, RenderError::Yaml { file, .. } if file == "apps/x/broken.yaml"),
        "{err}"
    );

    let repo = GitRepo::new();
    repo.write(
        "apps/x/nokind.yaml",
        "apiVersion: v1\nmetadata: {name: x}\n",
    );
    repo.commit("no kind");
    assert!(matches!(
        render_at(&repo, "apps/x", &Limits::default()),
        Err(RenderError::NotAnObject { .. })
    ));

    let repo = GitRepo::new();
    repo.write(
        "apps/k/kustomization.yaml",
        "resources:\n  - https://github.com/evil/base?ref=main\n",
    );
    repo.commit("remote base");
    let err = render_at(&repo, "apps/k", &Limits::default()).unwrap_err();
    // Refused by the sandbox (no network), not by matching the URL: see security.rs.
    assert!(matches!(err, RenderError::Kustomize { .. }), "{err}");
}

fn settings_for(repo: &GitRepo, db: &TestDb, cache: &Path) -> Settings {
    let mut s = db.settings();
    s.git.cache_dir = cache.to_path_buf();
    s.repositories = vec![RepositorySettings::new("demo", repo.url())];
    s.clusters = vec![server::config::ClusterSettings {
        name: "sandbox".into(),
        url: "http://127.0.0.1:6443".into(),
        ..Default::default()
    }];
    s.applications = vec![server::config::ApplicationSettings {
        name: "guestbook".into(),
        project: "demo".into(),
        repository: "demo".into(),
        path: "apps/guestbook".into(),
        revision: "main".into(),
        cluster: "sandbox".into(),
        namespace: "guestbook".into(),
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

pub(crate) async fn declared(db: &TestDb, s: &Settings) -> server::store::Store {
    let store = db.store().await;
    let catalog = server::store::DeclaredCatalog {
        repositories: &s.repositories,
        clusters: &s.clusters,
        applications: &s.applications,
    };
    store.sync_declared(catalog, 0).await.unwrap();
    store
}

#[tokio::test]
async fn ingest_is_incremental_and_a_force_push_marks_commits_unreachable_without_deleting_them() {
    for db in TestDb::both().await {
        let repo = GitRepo::new();
        let cache = tempfile::tempdir().unwrap();
        repo.write("apps/guestbook/cm.yaml", &configmap("gb", "1"));
        let first = repo.commit("first");
        repo.write("apps/guestbook/cm.yaml", &configmap("gb", "2"));
        let second = repo.commit("second");
        repo.write("README.md", "docs");
        repo.commit("docs only");
        let settings = settings_for(&repo, &db, cache.path());
        let store = declared(&db, &settings).await;
        let git = GitSources::new(store.clone(), &settings);

        let out = git.sync_repository("demo").await.unwrap();
        assert_eq!(out[0].1.report.new_commits, 2, "on {}", db.url);
        let (page, _) = store.app_commits("guestbook", None, 10).await.unwrap();
        assert_eq!(
            page.iter().map(|c| c.sha.clone()).collect::<Vec<_>>(),
            [second.clone(), first.clone()]
        );
        assert_eq!(page[0].author_email, "ada@example.com");
        assert!(matches!(out[0].1.rendered, Some(Ok(_))));

        // Fast-forward: only the new commit is walked and added.
        repo.write("apps/guestbook/cm.yaml", &configmap("gb", "3"));
        let third = repo.commit("third");
        let out = git.sync_repository("demo").await.unwrap();
        assert_eq!(out[0].1.report.new_commits, 1);

        // Force push: second and third disappear from main; they stay stored, unreachable.
        repo.git(&["reset", "-q", "--hard", &first]);
        repo.write("apps/guestbook/cm.yaml", &configmap("gb", "rewritten"));
        let rewritten = repo.commit("rewritten");
        let out = git.sync_repository("demo").await.unwrap();
        assert_eq!(out[0].1.report.now_unreachable, 2, "on {}", db.url);
        let (page, _) = store.app_commits("guestbook", None, 10).await.unwrap();
        let state: Vec<(String, bool)> =
            page.iter().map(|c| (c.sha.clone(), c.reachable)).collect();
        assert_eq!(
            state,
            [
                (rewritten, true),
                (third, false),
                (second, false),
                (first, true)
            ],
            "on {}",
            db.url
        );
        let events = store.timeline("guestbook", 5).await.unwrap();
        assert!(
            events
                .iter()
                .any(|(k, m)| k == "force_push" && m.contains("2 commits")),
            "{events:?}"
        );
        store.close().await;
        db.drop_db().await;
    }
}

#[tokio::test]
async fn a_rendered_revision_is_served_from_the_store_after_the_repository_is_gone() {
    let db = TestDb::sqlite();
    let repo = GitRepo::new();
    let cache = tempfile::tempdir().unwrap();
    repo.write("apps/guestbook/cm.yaml", &configmap("gb", "1"));
    let sha = repo.commit("first");
    let settings = settings_for(&repo, &db, cache.path());
    let store = declared(&db, &settings).await;
    let git = GitSources::new(store.clone(), &settings);
    let out = git.sync_repository("demo").await.unwrap();
    let Some(Ok(digest)) = out[0].1.rendered.clone() else {
        panic!("not rendered: {out:?}")
    };

    // Identical content at a new revision is stored once.
    repo.write("README.md", "x");
    repo.git(&["commit", "-q", "--allow-empty", "-am", "same manifests"]);
    git.sync_repository("demo").await.unwrap();
    assert_eq!(store.snapshot_count().await.unwrap(), 1);

    drop(repo);
    std::fs::remove_dir_all(cache.path()).unwrap();
    let (stored_digest, content) = store
        .rendered_snapshot("guestbook", &sha)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored_digest, digest);
    let objects: Vec<Value> = serde_json::from_str(&content).unwrap();
    assert_eq!(objects[0]["metadata"]["name"], "gb");
    assert_eq!(server::render::digest(&content), digest);
}

#[tokio::test]
async fn an_unreachable_remote_is_reported_on_the_application_without_credentials() {
    let db = TestDb::sqlite();
    let cache = tempfile::tempdir().unwrap();
    let repo = GitRepo::new();
    let mut settings = settings_for(&repo, &db, cache.path());
    // HTTPS (libgit2 must be built with TLS): the failure is the connection, not the transport.
    settings.repositories[0].url = "https://bot:hunter2@127.0.0.1:9/nope.git".into();
    let store = declared(&db, &settings).await;
    let git = GitSources::new(store.clone(), &settings);
    let err = git.sync_repository("demo").await.unwrap_err().to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(
        !err.contains("TLS stream") && !err.contains("unsupported URL protocol"),
        "{err}"
    );
    let events = store.timeline("guestbook", 5).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "git_error");
    assert!(
        events[0].1.contains("fetching demo failed") && !events[0].1.contains("hunter2"),
        "{events:?}"
    );
    // The same failure again does not flood the timeline.
    let _ = git.sync_repository("demo").await;
    assert_eq!(store.timeline("guestbook", 5).await.unwrap().len(), 1);
}

async fn git_server(
    db: &TestDb,
    repo: &GitRepo,
    cache: &Path,
    secret_file: Option<PathBuf>,
) -> TestServer {
    let mut settings = settings_for(repo, db, cache);
    settings.repositories[0].webhook_secret_file = secret_file;
    settings.repositories[0].fetch_interval_secs = 3600;
    settings.git.webhook_rate_per_minute = 3;
    TestServer::start(settings).await
}

#[tokio::test]
async fn the_commits_endpoint_pages_with_a_cursor_and_refresh_fetches_at_once() {
    let db = TestDb::sqlite();
    let repo = GitRepo::new();
    let cache = tempfile::tempdir().unwrap();
    for i in 0..5 {
        repo.write("apps/guestbook/cm.yaml", &configmap("gb", &i.to_string()));
        repo.commit(&format!("change {i}"));
    }
    let server = git_server(&db, &repo, cache.path(), None).await;
    // The poller's first run fetches at start; wait for the history to appear.
    let url = format!(
        "{}/api/v1/applications/guestbook/commits?limit=2",
        server.base
    );
    let mut page: Value = json!({});
    for _ in 0..100 {
        page = server
            .client
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if page["items"].as_array().is_some_and(|i| i.len() == 2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(page["items"][0]["title"], "change 4");
    let next = page["next"].as_str().unwrap().to_owned();
    let page2: Value = server
        .client
        .get(format!("{url}&cursor={next}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page2["items"][0]["title"], "change 2");

    let missing = server
        .client
        .get(format!("{}/api/v1/applications/nope/commits", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    repo.write("apps/guestbook/cm.yaml", &configmap("gb", "new"));
    repo.commit("change 5");
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
    let mut newest = String::new();
    for _ in 0..100 {
        let p: Value = server
            .client
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        newest = p["items"][0]["title"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if newest == "change 5" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(newest, "change 5");
    let foreign = server
        .client
        .post(format!(
            "{}/api/v1/applications/guestbook/refresh",
            server.base
        ))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn webhooks_check_each_providers_signature_before_doing_anything() {
    let db = TestDb::sqlite();
    let repo = GitRepo::new();
    repo.write("apps/guestbook/cm.yaml", &configmap("gb", "1"));
    repo.commit("first");
    let cache = tempfile::tempdir().unwrap();
    let secret_dir = tempfile::tempdir().unwrap();
    let secret_file = secret_dir.path().join("secret");
    std::fs::write(&secret_file, "whsec\n").unwrap();
    let server = git_server(&db, &repo, cache.path(), Some(secret_file)).await;
    let body = serde_json::to_vec(
        &json!({"ref": "refs/heads/main", "repository": {"clone_url": repo.url()},
        "project": {"git_http_url": repo.url()}}),
    )
    .unwrap();
    let good = hmac_hex("whsec", &body);
    let bad = hmac_hex("wrong", &body);
    let post = |provider: &str, header: Option<(&str, String)>, body: Vec<u8>| {
        let mut req = server
            .client
            .post(format!("{}/api/v1/webhooks/{provider}", server.base))
            .body(body);
        if let Some((name, value)) = header {
            req = req.header(name, value);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let cases = [
        (
            "github",
            "x-hub-signature-256",
            format!("sha256={good}"),
            format!("sha256={bad}"),
        ),
        (
            "gitlab",
            "x-gitlab-token",
            "whsec".to_string(),
            "nope".to_string(),
        ),
        ("gitea", "x-gitea-signature", good.clone(), bad.clone()),
    ];
    for (provider, header, right, wrong) in &cases {
        assert_eq!(
            post(provider, Some((header, right.clone())), body.clone()).await,
            202,
            "{provider} good"
        );
        assert_eq!(
            post(provider, Some((header, wrong.clone())), body.clone()).await,
            401,
            "{provider} bad"
        );
        assert_eq!(
            post(provider, None, body.clone()).await,
            401,
            "{provider} missing"
        );
    }
    // The rate limit (3 per minute in this test) is now reached for the repository.
    let generic = Some(("x-tidemark-signature", format!("sha256={good}")));
    assert_eq!(post("generic", generic.clone(), body.clone()).await, 429);
    assert_eq!(
        post(
            "generic",
            Some(("x-tidemark-signature", format!("sha256={bad}"))),
            body.clone()
        )
        .await,
        401
    );
    assert_eq!(post("generic", None, body.clone()).await, 401);

    // Valid signature, repository Tidemark does not manage: accepted, nothing happens.
    let other = serde_json::to_vec(
        &json!({"repository": {"clone_url": "https://git.example/unknown.git"}}),
    )
    .unwrap();
    let sig = hmac_hex("whsec", &other);
    assert_eq!(
        post(
            "github",
            Some(("x-hub-signature-256", format!("sha256={sig}"))),
            other
        )
        .await,
        202
    );

    // Oversized bodies are refused before they are read.
    let huge = vec![b' '; 2 * 1024 * 1024];
    assert_eq!(
        post(
            "github",
            Some(("x-hub-signature-256", "sha256=00".into())),
            huge
        )
        .await,
        413
    );

    let events = server
        .client
        .get(format!(
            "{}/api/v1/applications/guestbook/commits",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let store = db.store().await;
    let timeline = store.timeline("guestbook", 20).await.unwrap();
    assert!(
        timeline
            .iter()
            .any(|(k, m)| k == "webhook" && m == "fetch triggered by GitHub push"),
        "{timeline:?}"
    );
    assert_eq!(timeline.iter().filter(|(k, _)| k == "webhook").count(), 3);
}

const SECRET_APP: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\n\
stringData: {password: hunter2-at-rest}\ndata: {token: dG9rLWVuLXZhbHVl}\n---\n\
apiVersion: v1\nkind: ConfigMap\nmetadata: {name: gb}\ndata: {mode: fast}\n";

/// Every snapshot row as stored: `(content, key_id)`, read with raw SQL.
async fn snapshot_rows(db: &TestDb) -> Vec<(String, Option<String>)> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT content, key_id FROM snapshots ORDER BY created_at, digest")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows
}

fn ring(
    active: (&str, u8),
    older: &[(&str, u8)],
) -> Option<std::sync::Arc<server::secrets::Keyring>> {
    let older: Vec<(String, [u8; 32])> = older
        .iter()
        .map(|(id, b)| (id.to_string(), [*b; 32]))
        .collect();
    Some(std::sync::Arc::new(
        server::secrets::Keyring::new(active.0, &[active.1; 32], &older).unwrap(),
    ))
}

#[tokio::test]
async fn secret_values_are_encrypted_at_rest_on_both_backends_and_keys_rotate() {
    for db in TestDb::both().await {
        let repo = GitRepo::new();
        let cache = tempfile::tempdir().unwrap();
        // Written before a key was configured: a plaintext row, as every row was until now.
        repo.write(
            "apps/guestbook/app.yaml",
            &SECRET_APP.replace("hunter2-at-rest", "legacy-value"),
        );
        let legacy = repo.commit("legacy");
        let settings = settings_for(&repo, &db, cache.path());
        let plain = declared(&db, &settings).await;
        GitSources::new(plain.clone(), &settings)
            .sync_repository("demo")
            .await
            .unwrap();
        assert!(snapshot_rows(&db).await[0].0.contains("legacy-value"));

        // With key k1: the row holds no Secret value; the digest is the plaintext render's.
        repo.write("apps/guestbook/app.yaml", SECRET_APP);
        let v1 = repo.commit("with a secret");
        let want = render_at(&repo, "apps/guestbook", &Limits::default())
            .unwrap()
            .digest;
        let k1 = plain.clone().with_secrets(ring(("k1", 1), &[]));
        let out = GitSources::new(k1.clone(), &settings)
            .sync_repository("demo")
            .await
            .unwrap();
        assert_eq!(out[0].1.rendered, Some(Ok(want.clone())), "on {}", db.url);
        let rows = snapshot_rows(&db).await;
        let (content, key_id) = rows.last().unwrap();
        assert_eq!(key_id.as_deref(), Some("k1"));
        assert!(!content.contains("hunter2-at-rest"), "{content}");
        assert!(!content.contains("dG9rLWVuLXZhbHVl"), "{content}");
        assert!(content.contains("tidemark:enc:v1:k1:") && content.contains("\"mode\":\"fast\""));
        // Display reads the stored form; applying opens it; the old plaintext row still reads.
        let (_, shown) = k1
            .rendered_snapshot("guestbook", &v1)
            .await
            .unwrap()
            .unwrap();
        assert!(!shown.contains("hunter2-at-rest"));
        let (digest, applied) = k1.render_to_apply("guestbook", &v1).await.unwrap().unwrap();
        assert_eq!(digest, want);
        assert!(applied.contains("hunter2-at-rest") && applied.contains("dG9rLWVuLXZhbHVl"));
        assert!(k1
            .render_to_apply("guestbook", &legacy)
            .await
            .unwrap()
            .unwrap()
            .1
            .contains("legacy-value"));

        // Missing or wrong key: a clear error, nothing returned.
        let err = plain
            .render_to_apply("guestbook", &v1)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no key is configured"), "{err}");
        let wrong = plain.clone().with_secrets(ring(("k1", 9), &[]));
        let err = wrong
            .render_to_apply("guestbook", &v1)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("key `k1`: wrong key"), "{err}");

        // Rotation: k2 active, k1 kept. Old rows still open; new writes use k2.
        let k2 = plain.clone().with_secrets(ring(("k2", 2), &[("k1", 1)]));
        assert!(k2
            .render_to_apply("guestbook", &v1)
            .await
            .unwrap()
            .unwrap()
            .1
            .contains("hunter2-at-rest"));
        repo.write(
            "apps/guestbook/app.yaml",
            &SECRET_APP.replace("hunter2-at-rest", "rotated-value"),
        );
        let v2 = repo.commit("new secret value");
        GitSources::new(k2.clone(), &settings)
            .sync_repository("demo")
            .await
            .unwrap();
        let ids: Vec<Option<String>> = snapshot_rows(&db).await.into_iter().map(|r| r.1).collect();
        assert_eq!(
            ids,
            [None, Some("k1".into()), Some("k2".into())],
            "on {}",
            db.url
        );
        // At start (startup.rs) every row not sealed by the active key is sealed anew: after
        // that, k1 can go.
        assert_eq!(k2.seal_stored_renders().await.unwrap(), 2);
        let rows = snapshot_rows(&db).await;
        assert!(
            rows.iter().all(|r| r.1.as_deref() == Some("k2")),
            "{rows:?}"
        );
        assert!(!rows
            .iter()
            .any(|r| r.0.contains("legacy-value") || r.0.contains("hunter2-at-rest")));
        let only_k2 = plain.clone().with_secrets(ring(("k2", 2), &[]));
        for (sha, value) in [
            (&legacy, "legacy-value"),
            (&v1, "hunter2-at-rest"),
            (&v2, "rotated-value"),
        ] {
            let (_, c) = only_k2
                .render_to_apply("guestbook", sha)
                .await
                .unwrap()
                .unwrap();
            assert!(c.contains(value), "{c}");
        }
        assert_eq!(only_k2.seal_stored_renders().await.unwrap(), 0);
        plain.close().await;
        db.drop_db().await;
    }
}
