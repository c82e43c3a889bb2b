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
        // A commit elsewhere in the repository: the same refusals are not said again.
        let said = refusals(&store, "root").await;
        repo.write("docs/README.md", "unrelated");
        repo.commit("docs");
        git.sync_repository("platform").await.unwrap();
        let again = refusals(&store, "root").await;
        assert_eq!(again, said, "on {}", db.url);
        let declares = |rows: &[server::store::AuditRow]| {
            rows.iter()
                .filter(|r| r.event.action == "application_declare")
                .count()
        };
        assert_eq!(
            declares(&store.audit_rows(0, 500).await.unwrap()),
            declares(&audit),
            "on {}",
            db.url
        );

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
        // Its target is the new path's render at once, not the old path's until the next commit
        // (`extra` was ingested before `root` redeclared it in this very fetch).
        let state = store.app_git_state("extra").await.unwrap();
        assert_eq!(state.target_sha.as_deref(), Some(second.as_str()));
        let (_, extra_render) = store
            .rendered_snapshot("extra", &second)
            .await
            .unwrap()
            .unwrap();
        assert!(
            extra_render.contains("\"name\":\"db\"") && !extra_render.contains("\"name\":\"web\""),
            "{extra_render}"
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

fn timeline_of(entries: &[(String, String)], kind: &str) -> Vec<String> {
    entries
        .iter()
        .filter(|(k, _)| k == kind)
        .map(|(_, m)| m.clone())
        .collect()
}

/// The `generator_refused` messages on `app`'s timeline (newest 100).
async fn refusals(store: &Store, app: &str) -> Vec<String> {
    timeline_of(
        &store.timeline(app, 100).await.unwrap(),
        "generator_refused",
    )
}

/// An app of apps is held whole — nothing created, updated or retired, the reason on its
/// timeline — when its revision is unsigned under `require_signed`, when it holds more than 500
/// definitions, or when it is itself declared three levels deep (a chain of roots stops).
#[tokio::test]
async fn an_app_of_apps_is_held_when_unsigned_too_large_or_nested_too_deep() {
    for db in TestDb::both().await {
        let repo = GitRepo::new();
        let cache = tempfile::tempdir().unwrap();
        let level = |name: &str, next: &str| {
            definition(
                name,
                &format!("  path: {next}\n  cluster: sandbox\n  namespace: team-{name}\n"),
            )
        };
        repo.write("root/apps.yaml", &level("l1", "l1"));
        repo.write("l1/apps.yaml", &level("l2", "l2"));
        repo.write("l2/apps.yaml", &level("l3", "l3"));
        repo.write("l3/apps.yaml", &level("l4", "l4"));
        repo.write("l4/cm.yaml", &configmap("l4"));
        repo.commit("a chain of roots");
        let mut s = settings(&repo, &db, cache.path());
        s.generators.clear();
        let store = declared(&db, &s).await;
        store.sync_project_policies(&s.projects).await.unwrap();
        let git = GitSources::new(store.clone(), &s);
        git.sync_repository("platform").await.unwrap();
        let chain: Vec<(String, String)> = ["l1", "l2", "l3"]
            .iter()
            .zip(["root", "l1", "l2"])
            .map(|(a, r)| ((*a).to_owned(), format!("application/{r}")))
            .collect();
        assert_eq!(active(&store).await, chain, "on {}", db.url);
        let held = refusals(&store, "l3").await;
        assert!(
            held.iter().any(|m| m.contains("at most 3 levels")),
            "{held:?}"
        );

        // 501 definitions: none is read, and l1 is not retired for want of its definition.
        let many: Vec<String> = (0..501).map(|i| level(&format!("m{i}"), "l4")).collect();
        repo.write("root/apps.yaml", &many.join("---\n"));
        repo.commit("too many");
        git.sync_repository("platform").await.unwrap();
        assert_eq!(active(&store).await, chain, "on {}", db.url);
        let held = refusals(&store, "root").await;
        assert!(
            held.iter()
                .any(|m| m.contains("501 application definitions; at most 500")),
            "{held:?}"
        );

        // Under `require_signed`, an unsigned revision of the root changes nothing either.
        repo.write("root/apps.yaml", &level("l1", "l1"));
        repo.commit("back to one");
        git.sync_repository("platform").await.unwrap();
        let mut signed = s.clone();
        signed.projects[0].require_signed = true;
        store.sync_project_policies(&signed.projects).await.unwrap();
        repo.git(&["rm", "-q", "root/apps.yaml"]);
        repo.write("root/cm.yaml", &configmap("root"));
        repo.commit("drop l1, unsigned");
        git.sync_repository("platform").await.unwrap();
        assert_eq!(active(&store).await, chain, "on {}", db.url);
        let held = refusals(&store, "root").await;
        assert!(
            held.iter()
                .any(|m| m.contains("not applied") && m.contains("unsigned")),
            "{held:?}"
        );
        let audit = store.audit_rows(0, 500).await.unwrap();
        assert!(audit
            .iter()
            .any(|r| r.event.actor_id == "git:application/root"
                && r.event.action == "application_declare"
                && r.event.target == "application:root"
                && r.event.outcome == "refused"));
        // Read again on each fetch, said once.
        git.sync_repository("platform").await.unwrap();
        let again = refusals(&store, "root").await;
        assert_eq!(again.len(), held.len(), "{again:?}");
        // The policy lifted (in production: a key trusted, a verdict come): the same revision's
        // declarations apply at the next fetch, without a new commit.
        store.sync_project_policies(&s.projects).await.unwrap();
        git.sync_repository("platform").await.unwrap();
        assert!(active(&store).await.is_empty(), "on {}", db.url);
        let l3 = store.timeline("l3", 50).await.unwrap();
        assert!(
            l3.iter()
                .any(|(_, m)| m.contains("retired with l2, which declared it")),
            "{l3:?}"
        );
        // The definition comes back: the whole chain comes back, with its history.
        repo.write("root/apps.yaml", &level("l1", "l1"));
        repo.commit("l1 again");
        git.sync_repository("platform").await.unwrap();
        assert_eq!(active(&store).await, chain, "on {}", db.url);
        store.close().await;
        db.drop_db().await;
    }
}

/// Directory generators: two directories with one name are both refused (neither wins by
/// order), more than 500 matches change nothing and say why, and a generator removed from the
/// configuration has its applications retired and its last run forgotten at start.
#[tokio::test]
async fn a_generator_refuses_duplicate_names_stops_at_500_and_is_forgotten_when_removed() {
    let db = TestDb::sqlite();
    let repo = GitRepo::new();
    let cache = tempfile::tempdir().unwrap();
    repo.write("teams/a/web/cm.yaml", &configmap("a-web"));
    repo.write("teams/b/web/cm.yaml", &configmap("b-web"));
    repo.write("teams/a/api/cm.yaml", &configmap("api"));
    for i in 0..501 {
        repo.write(&format!("many/d{i}/cm.yaml"), &configmap(&format!("d{i}")));
    }
    let first = repo.commit("teams");
    let mut s = settings(&repo, &db, cache.path());
    s.applications.clear();
    let template = s.generators[0].template.clone();
    s.generators = ["teams/*/*", "many/*"]
        .iter()
        .zip(["teams", "many"])
        .map(|(glob, name)| GeneratorSettings {
            name: name.into(),
            project: "team".into(),
            repository: "platform".into(),
            revision: "main".into(),
            path_glob: (*glob).into(),
            template: template.clone(),
        })
        .collect();
    let store = declared(&db, &s).await;
    let git = GitSources::new(store.clone(), &s);
    git.sync_repository("platform").await.unwrap();
    assert_eq!(
        active(&store).await,
        [("api".to_owned(), "generator/teams".to_owned())]
    );
    let run = store.generator_run("teams").await.unwrap().unwrap();
    let dupes: Vec<&str> = run
        .refused
        .iter()
        .filter(|r| r.name == "web")
        .map(|r| r.origin.as_str())
        .collect();
    assert_eq!(dupes, ["teams/a/web", "teams/b/web"], "{:?}", run.refused);
    let many = store.generator_run("many").await.unwrap().unwrap();
    assert_eq!(many.revision.as_deref(), Some(first.as_str()));
    assert!(
        many.error.as_deref().is_some_and(|e| e.contains("500")),
        "{many:?}"
    );
    assert!(many.applications.is_empty());

    // `teams` leaves the configuration: at start its application is retired, its run forgotten.
    store
        .retire_orphaned_generated(&["generator/many".to_owned()], 1)
        .await
        .unwrap();
    assert!(active(&store).await.is_empty());
    assert!(store.generator_run("teams").await.unwrap().is_none());
    assert!(store.generator_run("many").await.unwrap().is_some());
    store.close().await;
}

/// Every object a Git-declared application syncs stays within its project's bounds — an object
/// naming another namespace, or a cluster-scoped kind the project does not list, stops the whole
/// sync (automated: a `sync_refused` entry, once; by hand: a refusal naming the objects) — on the
/// cluster under test (the real control plane in `make test`).
#[tokio::test]
async fn git_declared_applications_sync_only_objects_within_their_project_bounds() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let c = crate::sandbox::TestCluster::start().await;
    let ns = c.ns.clone();
    let db = TestDb::sqlite();
    let repo = GitRepo::new();
    let cache = tempfile::tempdir().unwrap();
    let role = format!("tidemark-test-{ns}-reader");
    repo.write("apps/ok/cm.yaml", &configmap("ok"));
    repo.write("apps/web/cm.yaml", &configmap("web"));
    repo.write(
        "apps/web/stray.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: stray\n  namespace: kube-system\ndata:\n  k: v\n",
    );
    repo.write("apps/admin/cm.yaml", &configmap("admin"));
    repo.write(
        "apps/admin/role.yaml",
        &format!("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {role}\nrules: []\n"),
    );
    // A CustomResourceDefinition in Git cannot make a served cluster-scoped kind namespaced
    // (and so within the destinations), even where the project lets Git make CRDs.
    repo.write(
        "apps/forge/crd.yaml",
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: clusterroles.rbac.authorization.k8s.io\nspec:\n  group: rbac.authorization.k8s.io\n  scope: Namespaced\n  names: {kind: ClusterRole, plural: clusterroles}\n  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}]\n",
    );
    repo.write(
        "apps/forge/role.yaml",
        &format!("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {role}-forged\n  namespace: {ns}\nrules: []\n"),
    );
    repo.commit("four applications");
    let mut s = settings(&repo, &db, cache.path());
    s.applications.clear();
    s.clusters = vec![c.cluster_settings("sandbox")];
    s.projects[0].destinations[0].namespace = ns.clone();
    s.projects[0].cluster_resources = vec![server::config::ResourceKindBound {
        group: "apiextensions.k8s.io".into(),
        kind: "CustomResourceDefinition".into(),
    }];
    s.generators[0].template = toml::from_str(&format!(
        "cluster = \"sandbox\"\nnamespace = \"{ns}\"\nsync_policy = \"auto\"\n"
    ))
    .unwrap();
    let store = declared(&db, &s).await;
    store.sync_project_policies(&s.projects).await.unwrap();
    let git = GitSources::new(store.clone(), &s);
    git.sync_repository("platform").await.unwrap();
    let cluster = server::cluster::client::ClusterClient::connect(&s.clusters[0])
        .await
        .unwrap();
    let cluster = std::sync::Arc::new(cluster);
    let reconcile = |name: &'static str| {
        let (store, cluster) = (store.clone(), cluster.clone());
        async move {
            let app = store.app_source(name).await.unwrap().unwrap();
            server::reconcile::reconcile_app(&store, &cluster, &app)
                .await
                .unwrap()
        }
    };
    for name in ["ok", "web", "admin", "forge"] {
        reconcile(name).await;
    }
    let cms: kube::Api<ConfigMap> = kube::Api::namespaced(c.client.clone(), &ns);
    let roles: kube::Api<ClusterRole> = kube::Api::all(c.client.clone());
    assert!(cms.get_opt("ok").await.unwrap().is_some());
    // Nothing of a refused sync is applied, not even its objects that are within bounds.
    assert!(cms.get_opt("web").await.unwrap().is_none());
    assert!(cms.get_opt("admin").await.unwrap().is_none());
    let system: kube::Api<ConfigMap> = kube::Api::namespaced(c.client.clone(), "kube-system");
    assert!(system.get_opt("stray").await.unwrap().is_none());
    assert!(roles.get_opt(&role).await.unwrap().is_none());
    assert!(roles
        .get_opt(&format!("{role}-forged"))
        .await
        .unwrap()
        .is_none());
    let refused = |name: &'static str| {
        let store = store.clone();
        async move { timeline_of(&store.timeline(name, 50).await.unwrap(), "sync_refused") }
    };
    let web = refused("web").await;
    assert_eq!(web.len(), 1, "{web:?}");
    assert!(
        web[0].contains("ConfigMap kube-system/stray") && web[0].contains("nothing is applied"),
        "{web:?}"
    );
    let admin = refused("admin").await;
    assert!(
        admin.len() == 1
            && admin[0].contains("ClusterRole")
            && admin[0].contains("cluster_resources"),
        "{admin:?}"
    );
    let forge = refused("forge").await;
    assert!(
        forge.len() == 1
            && forge[0].contains("ClusterRole")
            && forge[0].contains("cluster_resources"),
        "{forge:?}"
    );
    // Every interval tries again; the timeline says it once per target.
    reconcile("web").await;
    assert_eq!(refused("web").await.len(), 1);
    // By hand: refused with the reason, nothing applied.
    let app = store.app_source("web").await.unwrap().unwrap();
    let (revision, digest, desired) = server::reconcile::desired(&store, &cluster, &app)
        .await
        .unwrap();
    let by_hand = server::reconcile::sync(
        &store,
        &cluster,
        &app,
        &revision,
        &digest,
        &desired,
        false,
        "manual",
        &server::store::Actor::system(),
    )
    .await;
    assert!(
        matches!(&by_hand, Err(server::reconcile::ReconcileError::OutsideProject(why)) if why.contains("kube-system")),
        "{by_hand:?}"
    );
    assert!(cms.get_opt("web").await.unwrap().is_none());
    // Nor is it read: the diff names it as not compared.
    let diffs = server::reconcile::compare(&store, &cluster, &app, &desired, &app.ignore)
        .await
        .unwrap();
    let stray = diffs.iter().find(|d| d.object.name == "stray").unwrap();
    assert_eq!(stray.status, server::diff::ResourceStatus::OutOfSync);
    assert!(
        stray
            .compared_by
            .starts_with("not compared, outside the project's bounds")
            && stray.changes.is_empty(),
        "{stray:?}"
    );

    // The project lists ClusterRole: the admin application syncs, its ClusterRole included.
    s.projects[0]
        .cluster_resources
        .push(server::config::ResourceKindBound {
            group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
        });
    store.sync_project_policies(&s.projects).await.unwrap();
    reconcile("admin").await;
    assert!(cms.get_opt("admin").await.unwrap().is_some());
    assert!(roles.get_opt(&role).await.unwrap().is_some());
    roles.delete(&role, &Default::default()).await.unwrap();
    store.close().await;
}
