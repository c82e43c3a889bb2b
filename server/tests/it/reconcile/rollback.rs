//! Known-good revisions, rollback (also from sealed renders, without Git), pinning and
//! unpinning, and rollbacks that wait for an approval. The decisions run on SQLite and on
//! PostgreSQL.

use serde_json::json;
use server::config::ApprovalPolicy;
use server::git::sources::GitSources;
use server::reconcile::{self, ReconcileError};
use server::store::{StoreError, SyncStatus};

use super::{
    ada, app_in, approvers, decide, fixture_any_on, fixture_approvals_on, needs_approvals, Fixture,
    APP,
};
use crate::helpers::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_applies_a_known_good_snapshot_without_git_and_pins_until_unpinned() {
    for db in TestDb::both().await {
        let f = fixture_any_on(db, app::model::SyncPolicy::Auto, true).await;
        let app = f.store.app_source("guestbook").await.unwrap().unwrap();
        let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
            kube::Api::namespaced(f.kube.clone(), &f.ns);
        let replicas = || async { deployments.get("web").await.unwrap().spec.replicas.unwrap() };
        // One reconcile step; None while a sync runs: once the server below has started, its
        // own engine reconciles the application too, and one sync runs at a time.
        let step = || async {
            match reconcile::reconcile_app(&f.store, &f.cluster, &app).await {
                Err(ReconcileError::Store(StoreError::SyncRunning { .. })) => None,
                other => Some(other.unwrap()),
            }
        };
        // Reconcile until synced and healthy (at once on a sandbox; on a real cluster the
        // Deployment's pods must become Ready on the kwok nodes first).
        let settle = || async {
            for _ in 0..300 {
                if let Some(o) = step().await {
                    if o.sync_status == "Synced"
                        && o.health == server::cluster::health::Health::Healthy
                        // One more step records the known-good revision.
                        && step().await.is_some()
                    {
                        return;
                    }
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
        let changed: Vec<&serde_json::Value> =
            diff["resources"].as_array().unwrap().iter().collect();
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
        let viewer =
            crate::helpers::bearer_client(&server.token(app::model::Role::Viewer, None).await);
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
        // A controller may write the object between the read and the replace (409): read again.
        for attempt in 1.. {
            let mut scaled = deployments.get("web").await.unwrap();
            scaled.spec.replicas = Some(9);
            scaled.metadata.managed_fields = None;
            match deployments
                .replace("web", &Default::default(), &scaled)
                .await
            {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 409 && attempt < 10 => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await
                }
                Err(e) => panic!("replace: {e}"),
            }
        }
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
        drop(server);
        f.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_can_make_rollbacks_wait_for_someone_elses_approval() {
    for db in TestDb::both().await {
        let policy = ApprovalPolicy {
            rollback: true,
            ..needs_approvals(1)
        };
        let f = fixture_approvals_on(db, app::model::SyncPolicy::Auto, false, policy).await;
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
        drop(server);
        f.close().await;
    }
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
    for db in TestDb::both().await {
        let f = fixture_approvals_on(
            db,
            app::model::SyncPolicy::Manual,
            false,
            needs_approvals(0),
        )
        .await;
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
        f.close().await;
    }
}
