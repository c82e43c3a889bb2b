//! What a hostile repository can do to the host: tree entries named as paths, Kustomize bases
//! and resources that reach the host's files or the network. Repositories are made with the
//! real `git` CLI (raw trees with `git hash-object -t tree --literally`), renders run the real
//! `kubectl kustomize` in its sandbox.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use server::render::{self, Limits, RenderError};

use crate::git::GitRepo;

fn configmap(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  a: \"1\"\n")
}

/// Writes a raw tree object holding exactly `entries` (mode, name bytes, object id), with no
/// validation by Git, and returns its id.
fn raw_tree(repo: &GitRepo, entries: &[(&str, &[u8], &str)]) -> String {
    let mut bytes = Vec::new();
    for (mode, name, id) in entries {
        bytes.extend_from_slice(mode.as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(name);
        bytes.push(0);
        bytes.extend_from_slice(&hex(id));
    }
    let mut child = std::process::Command::new("git")
        .args(["hash-object", "-t", "tree", "--literally", "-w", "--stdin"])
        .current_dir(repo.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn hex(id: &str) -> Vec<u8> {
    (0..id.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&id[i..i + 2], 16).unwrap())
        .collect()
}

fn blob(repo: &GitRepo, content: &str) -> String {
    let file = repo.path().join(".blob-input");
    std::fs::write(&file, content).unwrap();
    let id = repo.git(&["hash-object", "-w", ".blob-input"]);
    std::fs::remove_file(file).unwrap();
    id
}

/// Commits `tree` as the new tip of `main`.
fn commit_tree(repo: &GitRepo, tree: &str) {
    let commit = repo.git(&["commit-tree", tree, "-m", "hostile tree"]);
    repo.git(&["update-ref", "refs/heads/main", &commit]);
}

fn render_head(repo: &GitRepo, path: &str) -> Result<render::Rendered, RenderError> {
    let r = git2::Repository::open(repo.path()).unwrap();
    let head = r.head().unwrap().peel_to_commit().unwrap().id();
    render::render(&r, head, path, "default", &Limits::default())
}

/// Names that are not one plain path component, each as the name of a file inside
/// `apps/x/evil/`, for a Kustomize application (`apps/x` has a kustomization) and a plain one.
#[test]
fn tree_entry_names_that_are_not_one_path_component_fail_the_render_and_write_nothing() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("pwned");
    // Enough `..` to reach `/` from any temporary checkout, then the absolute target.
    let escape = format!(
        "{}{}",
        "../".repeat(30),
        target.display().to_string().trim_start_matches('/')
    );
    let hostile: Vec<Vec<u8>> = vec![
        escape.clone().into_bytes(),
        b"..".to_vec(),
        b".".to_vec(),
        b"a/b.yaml".to_vec(),
        b"../x.yaml".to_vec(),
        b".git".to_vec(),
        b".GiT".to_vec(),
        b"".to_vec(),
        b"bad\xffname.yaml".to_vec(),
        b"line\nbreak.yaml".to_vec(),
    ];
    for name in &hostile {
        for kustomize in [true, false] {
            let repo = GitRepo::new();
            let payload = blob(&repo, &configmap("payload"));
            let evil = raw_tree(&repo, &[("100644", name, &payload)]);
            let cm = blob(&repo, &configmap("ok"));
            let mut app: Vec<(&str, &[u8], String)> = vec![
                ("100644", b"cm.yaml", cm.clone()),
                ("40000", b"evil", evil.clone()),
            ];
            let kust = blob(&repo, "resources: [cm.yaml]\n");
            if kustomize {
                app.push(("100644", b"kustomization.yaml", kust));
            }
            let app: Vec<(&str, &[u8], &str)> =
                app.iter().map(|(m, n, i)| (*m, *n, i.as_str())).collect();
            let app_tree = raw_tree(&repo, &app);
            let apps = raw_tree(&repo, &[("40000", b"x", &app_tree)]);
            let root = raw_tree(&repo, &[("40000", b"apps", &apps)]);
            commit_tree(&repo, &root);

            let shown = String::from_utf8_lossy(name).escape_default().to_string();
            let err = render_head(&repo, "apps/x").unwrap_err();
            // libgit2 itself refuses to parse a tree with an empty name.
            assert!(
                matches!(&err, RenderError::UnsafePath { file, reason }
                    if file.starts_with("apps/x/evil") && reason.starts_with("tree entry name"))
                    || (name.is_empty() && matches!(&err, RenderError::Git(_))),
                "name {shown:?} (kustomize: {kustomize}): {err}"
            );
            assert!(
                !target.exists(),
                "name {shown:?} wrote {}",
                target.display()
            );
        }
    }
}

/// A tiny HTTP server on loopback that counts the requests it is sent (each answered with a
/// ConfigMap), standing in for any address a repository could make Kustomize fetch from.
fn counting_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let body = configmap("fetched");
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, hits)
}

#[test]
fn kustomize_cannot_reach_the_network_or_the_hosts_files() {
    let (port, hits) = counting_server();
    let url = format!("http://127.0.0.1:{port}/cm.yaml");

    // A directory of the host with a kustomization of its own.
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        host_dir.path().join("kustomization.yaml"),
        "resources: [secret-cm.yaml]\n",
    )
    .unwrap();
    std::fs::write(
        host_dir.path().join("secret-cm.yaml"),
        configmap("host-secret"),
    )
    .unwrap();
    let host_rel = format!(
        "{}{}",
        "../".repeat(30),
        host_dir
            .path()
            .display()
            .to_string()
            .trim_start_matches('/')
    );

    let cases = [
        format!("resources: [cm.yaml, {url}]\n"),
        format!("resources: [cm.yaml]\ntransformers: [{url}]\n"),
        format!("resources: [cm.yaml]\nconfigurations: [{url}]\n"),
        format!("resources: [cm.yaml]\ncrds: [{url}]\n"),
        "resources: [cm.yaml, 'git::https://example.com/org/repo//path']\n".to_owned(),
        format!("resources: [cm.yaml, 'git::http://127.0.0.1:{port}/org/repo//path']\n"),
        format!("resources: [cm.yaml, '{host_rel}']\n"),
        format!("components: ['{host_rel}']\nresources: [cm.yaml]\n"),
        format!(
            "resources: [cm.yaml]\nconfigMapGenerator:\n- name: g\n  files: ['{}/secret-cm.yaml']\n",
            host_dir.path().display()
        ),
    ];
    for kustomization in cases {
        let repo = GitRepo::new();
        repo.write("apps/k/kustomization.yaml", &kustomization)
            .write("apps/k/cm.yaml", &configmap("local"));
        repo.commit("reach out");
        let result = render_head(&repo, "apps/k");
        let err = match result {
            Ok(r) => panic!("{kustomization} rendered: {}", r.canonical),
            Err(e) => e,
        };
        assert!(
            matches!(
                err,
                RenderError::Kustomize { .. } | RenderError::UnsafePath { .. }
            ),
            "{kustomization}: {err}"
        );
        assert!(
            !err.to_string().contains("host-secret"),
            "{kustomization}: {err}"
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "Kustomize reached the network"
    );

    // What stays allowed: bases anywhere inside the repository, symlinks within it.
    let repo = GitRepo::new();
    repo.write("base/kustomization.yaml", "resources: [cm.yaml]\n")
        .write("base/cm.yaml", &configmap("from-base"))
        .write(
            "apps/k/kustomization.yaml",
            "resources: [../../base, local.yaml]\n",
        )
        .write("apps/k/files/real.yaml", &configmap("linked"));
    std::os::unix::fs::symlink("files/real.yaml", repo.path().join("apps/k/local.yaml")).unwrap();
    repo.commit("in-repo base");
    let r = render_head(&repo, "apps/k").unwrap();
    let names: Vec<&str> = r
        .objects
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["from-base", "linked"]);
}

/// A symlink chain that is inside the repository by its text but leaves it once the links are
/// followed (`sub/b -> ..`, `sub/a -> b/..`) reads nothing of the host.
#[test]
fn symlink_chains_do_not_leave_the_checkout() {
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(host_dir.path().join("host.yaml"), configmap("host-file")).unwrap();
    let repo = GitRepo::new();
    repo.write("apps/k/cm.yaml", &configmap("local"));
    std::fs::create_dir_all(repo.path().join("apps/k/sub")).unwrap();
    std::os::unix::fs::symlink("..", repo.path().join("apps/k/sub/b")).unwrap();
    std::os::unix::fs::symlink("b/../..", repo.path().join("apps/k/sub/a")).unwrap();
    let through = format!(
        "sub/a/{}{}/host.yaml",
        "../".repeat(30),
        host_dir
            .path()
            .display()
            .to_string()
            .trim_start_matches('/')
    );
    repo.write(
        "apps/k/kustomization.yaml",
        &format!("resources: [cm.yaml, '{through}']\n"),
    );
    repo.commit("chain");
    match render_head(&repo, "apps/k") {
        Ok(r) => assert!(!r.canonical.contains("host-file"), "{}", r.canonical),
        Err(e) => assert!(!e.to_string().contains("host-file"), "{e}"),
    }
    assert!(Path::new(&host_dir.path().join("host.yaml")).exists());
}

/// Every GET route of the REST API, as `server/src/http/mod.rs` declares them (so a new list
/// route cannot be added without this test walking it).
fn declared_get_routes() -> Vec<String> {
    let source = include_str!("../../src/http/mod.rs");
    let mut routes = Vec::new();
    let mut rest = source;
    while let Some(i) = rest.find(".route(") {
        rest = &rest[i + ".route(".len()..];
        let Some(start) = rest.find('"') else { break };
        let after = &rest[start + 1..];
        let Some(end) = after.find('"') else { break };
        let path = &after[..end];
        let stop = [".route(", ".leptos_routes", ".fallback("]
            .iter()
            .filter_map(|m| after.find(m))
            .min()
            .unwrap_or(after.len());
        let call = &after[end..stop];
        if call.contains("get(") {
            routes.push(path.to_owned());
        }
    }
    routes
}

/// A deployer token of project `web` reads nothing of project `ops` through any list, export,
/// page or per-application route; an admin token reads both (so the check can fail).
#[tokio::test]
async fn project_scoped_callers_read_only_their_projects_through_every_route() {
    use crate::helpers::{bearer_client, catalog, TestDb, TestServer};
    use app::model::Role;

    for db in TestDb::both().await {
        let mut settings = db.settings();
        catalog(&mut settings);
        settings.applications[0].project = "web".into(); // guestbook
        settings.applications[1].project = "ops".into(); // podinfo
        let server = TestServer::start(settings).await;
        let now = server::clock::now();
        // Rows of both projects: a pending sync request and audit rows each.
        for app in ["guestbook", "podinfo"] {
            server
                .store
                .ensure_sync_request(app, &"a".repeat(40), &"d".repeat(64), "commit", 1, now)
                .await
                .unwrap();
            let event = server::store::Actor::system().event(
                "sync",
                &format!("application:{app}"),
                "started",
                serde_json::json!({"note": format!("row-of-{app}")}),
                now,
            );
            server.store.audit(&event).await.unwrap();
        }

        let scoped = bearer_client(&server.token(Role::Deployer, Some("web")).await);
        let lists = [
            "/api/v1/applications",
            "/api/v1/sync-requests",
            "/api/v1/sync-requests?application=podinfo",
            "/api/v1/sync-requests?status=pending",
            "/api/v1/audit",
            "/api/v1/audit?application=podinfo",
            "/api/v1/audit?format=jsonl",
            "/api/v1/audit?format=csv",
            "/api/v1/audit?format=csv&application=podinfo",
            "/",
            "/applications",
            "/approvals",
            "/audit",
            "/audit?application=podinfo",
        ];
        for path in lists {
            let url = format!("{}{path}", server.base);
            let admin = server.client.get(&url).send().await.unwrap();
            assert!(admin.status().is_success(), "{path}: {}", admin.status());
            let admin_body = admin.text().await.unwrap();
            let resp = scoped.get(&url).send().await.unwrap();
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
            let body = resp.text().await.unwrap();
            // A page echoes its own filter (`?application=podinfo` in the form): there, look
            // for the rows themselves.
            let leaks: &[&str] = if path.contains("podinfo") {
                &[
                    "row-of-podinfo",
                    "application:podinfo",
                    "\"application\":\"podinfo\"",
                ]
            } else {
                &["podinfo"]
            };
            for leak in leaks {
                assert!(
                    !body.contains(leak),
                    "{path} leaks project ops ({leak}): {body}"
                );
            }
            if !path.contains("podinfo") {
                assert!(
                    admin_body.contains("podinfo"),
                    "{path}: admin sees ops rows"
                );
                assert!(
                    path == "/audit"
                        || path.starts_with("/api/v1/audit")
                        || body.contains("guestbook"),
                    "{path}: the scoped caller sees its own project"
                );
            }
        }
        // Per-application routes about an ops application are refused.
        let mut walked: Vec<&str> = lists.iter().map(|p| p.split('?').next().unwrap()).collect();
        let per_app = [
            "/api/v1/applications/{name}",
            "/api/v1/applications/{name}/resources",
            "/api/v1/applications/{name}/timeline",
            "/api/v1/applications/{name}/commits",
            "/api/v1/applications/{name}/diff",
            "/api/v1/applications/{name}/revisions",
            "/api/v1/applications/{name}/events",
            "/api/v1/applications/{name}/tree",
            "/api/v1/applications/{name}/live",
            "/api/v1/applications/{name}/pods/{namespace}/{pod}/logs",
        ];
        for route in per_app {
            let path = route
                .replace("{name}", "podinfo")
                .replace("{namespace}", "podinfo")
                .replace("{pod}", "web-1");
            let resp = scoped
                .get(format!("{}{path}", server.base))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 403, "{path}");
            assert!(!resp.text().await.unwrap().contains("row-of-podinfo"));
            walked.push(route);
        }
        // Routes that return no application rows.
        walked.extend([
            "/healthz",
            "/readyz",
            "/metrics",
            "/auth/oidc/start",
            "/auth/oidc/callback",
            "/api/v1/audit/verify",
            "/api/v1/notifications/deliveries",
            "/api/v1/openapi.json",
            // No generators here; its project filter is tested in generators.rs.
            "/api/v1/generators",
        ]);
        let resp = scoped
            .get(format!("{}/api/v1/notifications/deliveries", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        for route in declared_get_routes() {
            assert!(
                walked.contains(&route.as_str()),
                "GET {route} is not walked by this test: add it"
            );
        }
        drop(server);
        db.drop_db().await;
    }
}

/// A symlink whose target passes through another symlink (`d1/up -> ..`, then
/// `app/x -> ../d1/up/../secret`) is inside the repository by its text only: refused in
/// Kustomize checkouts and plain renders alike. And nothing of Tidemark's environment reaches
/// the Kustomize process.
#[test]
fn symlinks_through_symlinks_are_refused_and_the_environment_stays_outside() {
    for kustomize in [true, false] {
        let repo = GitRepo::new();
        repo.write("apps/k/cm.yaml", &configmap("local"));
        if kustomize {
            repo.write("apps/k/kustomization.yaml", "resources: [cm.yaml]\n");
        }
        std::fs::create_dir_all(repo.path().join("d1")).unwrap();
        std::os::unix::fs::symlink("..", repo.path().join("d1/up")).unwrap();
        std::os::unix::fs::symlink("../../d1/up/../x.yaml", repo.path().join("apps/k/x.yaml"))
            .unwrap();
        repo.commit("link through a link");
        let err = render_head(&repo, "apps/k").unwrap_err();
        assert!(
            matches!(&err, RenderError::UnsafePath { file, .. } if file == "apps/k/x.yaml"),
            "kustomize: {kustomize}: {err}"
        );
    }

    // A generator reading an environment variable sees none of Tidemark's.
    std::env::set_var("TIDEMARK_TEST_CANARY", "canary-value-7f3a");
    let repo = GitRepo::new();
    repo.write(
        "apps/k/kustomization.yaml",
        "configMapGenerator:\n- name: env\n  envs: [vars.env]\n",
    )
    .write("apps/k/vars.env", "TIDEMARK_TEST_CANARY\nHOME\n");
    repo.commit("env generator");
    let rendered = render_head(&repo, "apps/k").unwrap();
    assert!(
        !rendered.canonical.contains("canary-value-7f3a"),
        "{}",
        rendered.canonical
    );
}

/// A Secret whose `data` is not a map, with `stringData` beside it, used to panic the sandbox's
/// request handler (found by the review of the diff's same pattern): it answers now (as the API
/// server does), and keeps serving.
#[tokio::test]
async fn the_sandbox_answers_a_secret_with_malformed_data() {
    let c = crate::sandbox::TestCluster::sandbox().await;
    let secrets: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        c.client.clone(),
        "default",
        &kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&()),
    );
    for data in [
        serde_json::json!(1),
        serde_json::json!("x"),
        serde_json::json!([1]),
    ] {
        let body = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "odd"}, "data": data, "stringData": {"a": "b"}});
        let result = secrets
            .patch(
                "odd",
                &kube::api::PatchParams::apply("test").force(),
                &kube::api::Patch::Apply(body),
            )
            .await;
        match result {
            Ok(_) => {}
            // A real API server refuses it as the sandbox now does: 500 "failed to create
            // typed patch object (…): .data: expected map" — an answer, not a dropped request.
            Err(kube::Error::Api(status)) => assert!(
                status.code < 500
                    || status
                        .message
                        .contains("failed to create typed patch object"),
                "{status:?}"
            ),
            Err(e) => panic!("the sandbox did not answer: {e}"),
        }
    }
    // Still serving.
    secrets.list(&Default::default()).await.unwrap();
}
