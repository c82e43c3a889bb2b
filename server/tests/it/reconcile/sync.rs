//! Syncs: apply and prune, a failing resource, auto-sync of new revisions, the write-ahead
//! record a restart closes as interrupted (also after a killed process).

use serde_json::json;
use server::diff::ResourceStatus;
use server::reconcile;
use server::store::{Store, SyncStatus};

use super::{
    ada, fixture, fixture_any, fixture_with, live_replicas, scale_by_hand, sync_target,
    wait_deployed, APP,
};
use crate::git::GitRepo;
use crate::helpers::Process;
use crate::sandbox::TestCluster;

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
    let (status, results) = sync_target(&f, "guestbook").await;
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
        signature: None,
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
