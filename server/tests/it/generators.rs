//! Applications declared in Git: a directory generator and an app of apps against a real
//! repository made with `git`, on both backends — applications come and go with directories
//! and definitions, history stays, project bounds refuse with the reason, the ledger names the
//! generator.

use server::config::{DestinationBound, GeneratorSettings, ProjectSettings, Settings};
use server::git::sources::GitSources;
use server::store::{AppOrigin, Store};

use crate::git::{declared, GitRepo};
use crate::helpers::TestDb;

fn configmap(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: v\n")
}

fn definition(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: tidemark.dev/v1\nkind: Application\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

fn settings(repo: &GitRepo, db: &TestDb, cache: &std::path::Path) -> Settings {
    let mut s = db.settings();
    s.git.cache_dir = cache.to_path_buf();
    s.repositories = vec![server::config::RepositorySettings::new(
        "platform",
        repo.url(),
    )];
    s.clusters = vec![server::config::ClusterSettings {
        name: "sandbox".into(),
        url: "http://127.0.0.1:6443".into(),
        ..Default::default()
    }];
    let toml = r#"
        name = "root"
        project = "team"
        repository = "platform"
        path = "root"
        cluster = "sandbox"
        namespace = "team-root"
    "#;
    s.applications = vec![toml::from_str(toml).unwrap()];
    s.projects = vec![ProjectSettings {
        name: "team".into(),
        source_repositories: vec!["platform".into()],
        destinations: vec![DestinationBound {
            cluster: "sandbox".into(),
            namespace: "team-*".into(),
        }],
        ..Default::default()
    }];
    let template = r#"
        cluster = "sandbox"
        namespace = "team-{{name}}"
        sync_policy = "auto"
    "#;
    s.generators = vec![GeneratorSettings {
        name: "apps".into(),
        project: "team".into(),
        repository: "platform".into(),
        revision: "main".into(),
        path_glob: "apps/*".into(),
        template: toml::from_str(template).unwrap(),
    }];
    s
}

async fn active(store: &Store) -> Vec<(String, String)> {
    store.generated_applications().await.unwrap()
}

#[tokio::test]
async fn generators_create_update_and_retire_applications_as_git_changes_within_project_bounds() {
    for db in TestDb::both().await {
        let repo = GitRepo::new();
        let cache = tempfile::tempdir().unwrap();
        repo.write("apps/web/cm.yaml", &configmap("web"));
        repo.write("apps/api/cm.yaml", &configmap("api"));
        repo.write("apps/.hidden/cm.yaml", &configmap("hidden"));
        repo.write("apps/README.md", "not a directory");
        repo.write(
            "root/apps.yaml",
            &[
                definition("extra", "  path: apps/web\n  cluster: sandbox\n  namespace: team-extra\n"),
                definition("escape", "  path: apps/web\n  cluster: sandbox\n  namespace: kube-system\n"),
                definition("elsewhere", "  project: default\n  path: apps/web\n  cluster: sandbox\n  namespace: team-x\n"),
                definition("typo", "  path: apps/web\n  cluster: sandbox\n  namespace: team-typo\n  sync_polcy: auto\n"),
                definition("root", "  path: apps/web\n  cluster: sandbox\n  namespace: team-root\n"),
            ]
            .join("---\n"),
        );
        repo.write("root/cm.yaml", &configmap("root-owned"));
        let first = repo.commit("platform");
        let s = settings(&repo, &db, cache.path());
        let store = declared(&db, &s).await;
        let git = GitSources::new(store.clone(), &s);

        let out = git.sync_repository("platform").await.unwrap();
        assert_eq!(
            active(&store).await,
            [
                ("api".to_owned(), "generator/apps".to_owned()),
                ("extra".to_owned(), "application/root".to_owned()),
                ("web".to_owned(), "generator/apps".to_owned()),
            ],
            "on {}",
            db.url
        );
        // The generated applications were ingested in the same fetch.
        let ingested: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            ingested.contains(&"web") && ingested.contains(&"extra"),
            "{ingested:?}"
        );
        let web = store.app_source("web").await.unwrap().unwrap();
        assert_eq!(
            (
                web.path.as_str(),
                web.namespace.as_str(),
                web.auto_sync,
                web.project.as_str()
            ),
            ("apps/web", "team-web", true, "team")
        );
        assert_eq!(
            store.app_origin("web").await.unwrap(),
            Some(AppOrigin::Git("generator/apps".into()))
        );
        // The root's own objects are its render; its definitions are not.
        let (_, root_render) = store
            .rendered_snapshot("root", &first)
            .await
            .unwrap()
            .unwrap();
        let root_objects: Vec<serde_json::Value> = serde_json::from_str(&root_render).unwrap();
        assert_eq!(root_objects.len(), 1, "{root_objects:?}");
        assert_eq!(root_objects[0]["kind"], "ConfigMap");

        // Refusals, with the reason, on the root's timeline and in the ledger.
        let timeline = store.timeline("root", 50).await.unwrap();
        let refused: Vec<&String> = timeline
            .iter()
            .filter(|(k, _)| k == "generator_refused")
            .map(|(_, m)| m)
            .collect();
        let has = |name: &str, why: &str| {
            refused
                .iter()
                .any(|m| m.contains(&format!("refused {name} ")) && m.contains(why))
        };
        assert!(
            has(
                "escape",
                "namespace `kube-system` is not among project `team`'s destinations"
            ),
            "{refused:#?}"
        );
        assert!(
            has("elsewhere", "belongs to project `team`"),
            "{refused:#?}"
        );
        assert!(has("typo", "sync_polcy"), "{refused:#?}");
        assert!(has("root", "cannot declare itself"), "{refused:#?}");
        assert!(
            timeline
                .iter()
                .any(|(k, m)| k == "generated" && m.contains("created") && m.contains("extra")),
            "{timeline:?}"
        );
        let audit = store.audit_rows(0, 200).await.unwrap();
        let by = |actor: &str, action: &str, target: &str, outcome: &str| {
            audit.iter().any(|r| {
                r.event.actor_id == actor
                    && r.event.action == action
                    && r.event.target == target
                    && r.event.outcome == outcome
            })
        };
        assert!(by(
            "git:generator/apps",
            "application_create",
            "application:web",
            "success"
        ));
        assert!(by(
            "git:application/root",
            "application_create",
            "application:extra",
            "success"
        ));
        assert!(by(
            "git:application/root",
            "application_declare",
            "application:escape",
            "refused"
        ));
        let run = store.generator_run("apps").await.unwrap().unwrap();
        assert_eq!(run.revision.as_deref(), Some(first.as_str()));
        assert_eq!(run.applications, ["api", "web"]);

        // Nothing changed in Git: nothing is written again.
        let rows = store.audit_rows(0, 500).await.unwrap().len();
        git.sync_repository("platform").await.unwrap();
        assert_eq!(store.audit_rows(0, 500).await.unwrap().len(), rows);

        // A directory goes, another comes; a definition goes, another changes.
        repo.git(&["rm", "-q", "-r", "apps/api"]);
        repo.write("apps/db/cm.yaml", &configmap("db"));
        repo.write(
            "root/apps.yaml",
            &definition(
                "extra",
                "  path: apps/db\n  cluster: sandbox\n  namespace: team-extra\n",
            ),
        );
        let second = repo.commit("api out, db in");
        git.sync_repository("platform").await.unwrap();
        assert_eq!(
            active(&store).await,
            [
                ("db".to_owned(), "generator/apps".to_owned()),
                ("extra".to_owned(), "application/root".to_owned()),
                ("web".to_owned(), "generator/apps".to_owned()),
            ],
            "on {}",
            db.url
        );
        assert_eq!(
            store.app_source("extra").await.unwrap().unwrap().path,
            "apps/db"
        );
        assert_eq!(store.app_origin("api").await.unwrap(), None);
        // The retired application's history stays.
        let api_timeline = store.timeline("api", 20).await.unwrap();
        assert!(
            api_timeline
                .iter()
                .any(|(_, m)| m.contains("retired by generator/apps")),
            "{api_timeline:?}"
        );
        assert!(
            by_again(
                &store,
                "git:generator/apps",
                "application_retire",
                "application:api"
            )
            .await
        );
        assert!(
            by_again(
                &store,
                "git:application/root",
                "application_update",
                "application:extra"
            )
            .await
        );
        let run = store.generator_run("apps").await.unwrap().unwrap();
        assert_eq!(run.revision.as_deref(), Some(second.as_str()));

        // A definition edited into something refused keeps the application as it was.
        repo.write(
            "root/apps.yaml",
            &definition(
                "extra",
                "  path: apps/db\n  cluster: sandbox\n  namespace: kube-system\n",
            ),
        );
        repo.commit("extra out of bounds");
        git.sync_repository("platform").await.unwrap();
        assert_eq!(
            store.app_source("extra").await.unwrap().unwrap().namespace,
            "team-extra"
        );
        repo.write(
            "root/apps.yaml",
            &definition(
                "extra",
                "  path: apps/db\n  cluster: sandbox\n  namespace: team-extra\n",
            ),
        );
        repo.commit("extra back in bounds");
        git.sync_repository("platform").await.unwrap();

        // A directory named like an application declared elsewhere is refused, not taken over.
        repo.write("apps/root/cm.yaml", &configmap("x"));
        repo.commit("a directory named like the root");
        git.sync_repository("platform").await.unwrap();
        let run = store.generator_run("apps").await.unwrap().unwrap();
        assert!(
            run.refused
                .iter()
                .any(|r| r.name == "root" && r.reason.contains("declared in tidemark.toml")),
            "{:?}",
            run.refused
        );
        assert_eq!(
            store.app_origin("root").await.unwrap(),
            Some(AppOrigin::Config)
        );
        store.close().await;
        db.drop_db().await;
    }
}

async fn by_again(store: &Store, actor: &str, action: &str, target: &str) -> bool {
    store
        .audit_rows(0, 500)
        .await
        .unwrap()
        .iter()
        .any(|r| r.event.actor_id == actor && r.event.action == action && r.event.target == target)
}

#[tokio::test]
async fn declared_applications_are_shown_over_rest_and_cannot_be_changed_there() {
    let db = TestDb::sqlite();
    let repo = GitRepo::new();
    let cache = tempfile::tempdir().unwrap();
    repo.write("apps/web/cm.yaml", &configmap("web"));
    repo.write(
        "root/apps.yaml",
        &[
            definition(
                "extra",
                "  path: apps/web\n  cluster: sandbox\n  namespace: team-extra\n",
            ),
            definition(
                "escape",
                "  path: apps/web\n  cluster: sandbox\n  namespace: kube-system\n",
            ),
        ]
        .join("---\n"),
    );
    repo.commit("platform");
    let s = settings(&repo, &db, cache.path());
    let server = crate::helpers::TestServer::start(s).await;
    let get = |path: &'static str| {
        let (client, base) = (server.client.clone(), server.base.clone());
        async move {
            let resp = client.get(format!("{base}{path}")).send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<serde_json::Value>().await.unwrap())
        }
    };
    let mut generators = serde_json::Value::Null;
    for _ in 0..100 {
        let (_, v) = get("/api/v1/generators").await;
        if v["generators"][0]["last_run"]["revision"].is_string()
            && v["roots"][0]["applications"] == serde_json::json!(["extra"])
        {
            generators = v;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(generators["generators"][0]["name"], "apps", "{generators}");
    assert_eq!(
        generators["generators"][0]["last_run"]["applications"],
        serde_json::json!(["web"])
    );
    assert_eq!(generators["roots"][0]["root"], "root");
    // A caller scoped to another project sees neither.
    let other =
        crate::helpers::bearer_client(&server.token(app::model::Role::Viewer, Some("other")).await);
    let scoped: serde_json::Value = other
        .get(format!("{}/api/v1/generators", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(scoped, serde_json::json!({"generators": [], "roots": []}));
    let (status, web) = get("/api/v1/applications/web").await;
    assert_eq!(status, 200, "{web}");
    assert_eq!(web["declared_by"], "generator/apps");
    assert_eq!(
        web["application"]["source"],
        "platform / apps/web · declared in Git by generator/apps"
    );
    let (_, timeline) = get("/api/v1/applications/root/timeline").await;
    assert!(
        timeline["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "generator_refused"
                && e["message"].as_str().unwrap().contains("kube-system")),
        "{timeline}"
    );
    // Declared in Git: the API refuses to change it, naming the generator.
    let body = serde_json::json!({"name": "web", "project": "team", "repository": "platform",
        "path": "apps/web", "cluster": "sandbox", "namespace": "team-web"});
    let resp = server
        .client
        .put(format!("{}/api/v1/applications/web", server.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let err: serde_json::Value = resp.json().await.unwrap();
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("declared in Git by generator/apps"),
        "{err}"
    );
    // The framework's own rejections are JSON too.
    let resp = server
        .client
        .post(format!("{}/api/v1/applications", server.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(err["error"], "bad_request", "{err}");
}
