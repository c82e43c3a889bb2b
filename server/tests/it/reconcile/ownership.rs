//! Which application an object is (issue 18, item 6): every applied object carries the
//! tracking annotation; prune deletes only what is still this application's; an object two
//! applications declare is a conflict on both timelines and only one applies it; objects
//! applied before the annotation existed are pruned by their application once.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use server::config::ApplicationSettings;
use server::reconcile::{self, ResourceResult, TRACKING_ANNOTATION};
use server::store::{DeclaredCatalog, SyncStatus};

use super::{fixture_any, Fixture};

/// ConfigMap `shared` with one value.
fn shared(value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: shared}}\ndata: {{owner: {value}}}\n"
    )
}

const FRONT: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: front}\ndata: {x: '1'}\n";

/// The fixture with a second application, `storefront` (path `apps/storefront`, same cluster
/// and namespace as `guestbook`), and `guestbook` synced once.
async fn two_apps(guestbook_shared: bool, storefront_shared: bool) -> Fixture {
    let mut f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    if guestbook_shared {
        f.repo
            .write("apps/guestbook/shared.yaml", &shared("guestbook"));
    }
    f.repo.write("apps/storefront/front.yaml", FRONT);
    if storefront_shared {
        f.repo
            .write("apps/storefront/shared.yaml", &shared("storefront"));
    }
    f.repo.commit("storefront");
    let storefront = ApplicationSettings {
        name: "storefront".into(),
        path: "apps/storefront".into(),
        ..f.settings.applications[0].clone()
    };
    f.settings.applications.push(storefront);
    let catalog = DeclaredCatalog {
        repositories: &f.settings.repositories,
        clusters: &f.settings.clusters,
        applications: &f.settings.applications,
    };
    f.store.sync_declared(catalog, 0).await.unwrap();
    f.git.sync_repository("demo").await.unwrap();
    let (status, results) = sync(&f, "guestbook").await;
    assert_eq!(status, SyncStatus::Succeeded, "{results:?}");
    f
}

/// Syncs the application's current target, pruning.
async fn sync(f: &Fixture, name: &str) -> (SyncStatus, Vec<ResourceResult>) {
    super::sync_target(f, name).await
}

fn configmaps(f: &Fixture) -> Api<ConfigMap> {
    Api::namespaced(f.kube.clone(), &f.ns)
}

/// The live ConfigMap: (uid, tracking annotation, data.owner).
async fn live(f: &Fixture, name: &str) -> Option<(String, Option<String>, Option<String>)> {
    let cm = configmaps(f).get_opt(name).await.unwrap()?;
    Some((
        cm.metadata.uid.clone().unwrap(),
        cm.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TRACKING_ANNOTATION).cloned()),
        cm.data.as_ref().and_then(|d| d.get("owner").cloned()),
    ))
}

fn find<'a>(results: &'a [ResourceResult], object: &str) -> Option<&'a ResourceResult> {
    results.iter().find(|r| r.object == object)
}

async fn inventory_has(f: &Fixture, app: &str, name: &str) -> bool {
    f.store
        .inventory(app)
        .await
        .unwrap()
        .iter()
        .any(|i| i.kind == "ConfigMap" && i.name == name)
}

async fn conflicts(f: &Fixture, app: &str) -> Vec<server::store::TimelineEntry> {
    f.store
        .timeline_page(app, None, 50, &["conflict".to_owned()])
        .await
        .unwrap()
        .0
}

async fn last_sync_event(f: &Fixture, app: &str) -> String {
    let (events, _) = f
        .store
        .timeline_page(app, None, 1, &["sync".to_owned()])
        .await
        .unwrap();
    events[0].message.clone()
}

/// Commits `shared.yaml` moving from guestbook to storefront.
async fn move_shared(f: &Fixture) {
    f.repo.git(&["rm", "-q", "apps/guestbook/shared.yaml"]);
    f.repo
        .write("apps/storefront/shared.yaml", &shared("storefront"));
    f.repo.commit("shared moves to storefront");
    f.git.sync_repository("demo").await.unwrap();
}

#[tokio::test]
async fn every_applied_object_names_its_application_in_the_tracking_annotation() {
    let f = two_apps(true, false).await;
    let (_, annotation, _) = live(&f, "shared").await.unwrap();
    assert_eq!(
        annotation.as_deref(),
        Some(format!("guestbook:/ConfigMap:{}/shared", f.ns).as_str())
    );
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(f.kube.clone(), &f.ns);
    let web = deployments.get("web").await.unwrap();
    assert_eq!(
        web.metadata.annotations.unwrap()[TRACKING_ANNOTATION],
        format!("guestbook:apps/Deployment:{}/web", f.ns)
    );
    // The compare sees it too: the desired objects carry it.
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    let (_, _, desired) = reconcile::desired(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    let ns = desired.iter().find(|o| o["kind"] == "Namespace").unwrap();
    assert_eq!(
        ns["metadata"]["annotations"][TRACKING_ANNOTATION],
        format!("guestbook:/Namespace:/{}", f.ns)
    );
}

/// The example: `shared` moves from guestbook to storefront; storefront syncs, then
/// guestbook prunes — and must leave `shared` alone.
#[tokio::test]
async fn prune_leaves_an_object_another_application_took_over() {
    let f = two_apps(true, false).await;
    let (uid, _, _) = live(&f, "shared").await.unwrap();
    move_shared(&f).await;

    let (status, results) = sync(&f, "storefront").await;
    assert_eq!(status, SyncStatus::Succeeded, "{results:?}");
    assert_eq!(
        find(&results, &format!("ConfigMap {}/shared", f.ns))
            .unwrap()
            .action,
        "applied",
        "guestbook no longer declares it: storefront takes it over"
    );

    let (status, results) = sync(&f, "guestbook").await;
    assert_eq!(status, SyncStatus::Succeeded, "{results:?}");
    let kept = find(&results, &format!("ConfigMap {}/shared", f.ns)).unwrap();
    assert_eq!(kept.action, "kept", "{results:?}");
    assert!(
        kept.message.as_deref().unwrap().contains("storefront"),
        "{kept:?}"
    );
    let (now, annotation, owner) = live(&f, "shared").await.unwrap();
    assert_eq!(now, uid, "never deleted, never made again");
    assert_eq!(owner.as_deref(), Some("storefront"));
    assert_eq!(
        annotation.as_deref(),
        Some(format!("storefront:/ConfigMap:{}/shared", f.ns).as_str())
    );
    assert!(!inventory_has(&f, "guestbook", "shared").await);
    let summary = last_sync_event(&f, "guestbook").await;
    assert!(summary.contains("left to another application"), "{summary}");

    // Once dropped from guestbook's inventory it is not reported again.
    let (_, results) = sync(&f, "guestbook").await;
    assert!(find(&results, &format!("ConfigMap {}/shared", f.ns)).is_none());
}

/// The other order: guestbook prunes first, while the live object still names it but
/// storefront's target declares it.
#[tokio::test]
async fn prune_leaves_an_object_another_application_declares_before_it_synced() {
    let f = two_apps(true, false).await;
    let (uid, _, _) = live(&f, "shared").await.unwrap();
    move_shared(&f).await;

    let (status, results) = sync(&f, "guestbook").await;
    assert_eq!(status, SyncStatus::Succeeded, "{results:?}");
    let kept = find(&results, &format!("ConfigMap {}/shared", f.ns)).unwrap();
    assert_eq!(kept.action, "kept", "{results:?}");
    assert!(
        kept.message
            .as_deref()
            .unwrap()
            .contains("application storefront declares it"),
        "{kept:?}"
    );
    assert!(!inventory_has(&f, "guestbook", "shared").await);

    let (status, results) = sync(&f, "storefront").await;
    assert_eq!(status, SyncStatus::Succeeded, "{results:?}");
    let (now, annotation, owner) = live(&f, "shared").await.unwrap();
    assert_eq!(now, uid, "never deleted");
    assert_eq!(
        annotation.as_deref(),
        Some(format!("storefront:/ConfigMap:{}/shared", f.ns).as_str())
    );
    assert_eq!(owner.as_deref(), Some("storefront"));
}

/// Both applications declare `shared`: the one whose annotation is on the live object keeps
/// it; the other does not apply it, its sync fails, and both timelines say so (once).
#[tokio::test]
async fn an_object_two_applications_declare_is_a_conflict_on_both_timelines_and_applied_by_one() {
    let f = two_apps(true, true).await;
    let object = format!("ConfigMap {}/shared", f.ns);

    let (status, results) = sync(&f, "storefront").await;
    assert_eq!(status, SyncStatus::Failed, "{results:?}");
    let conflict = find(&results, &object).unwrap();
    assert_eq!(conflict.action, "conflict", "{results:?}");
    assert!(
        conflict.message.as_deref().unwrap().contains("guestbook"),
        "{conflict:?}"
    );
    // Everything else of storefront was applied.
    assert_eq!(
        find(&results, &format!("ConfigMap {}/front", f.ns))
            .unwrap()
            .action,
        "applied"
    );
    let (_, annotation, owner) = live(&f, "shared").await.unwrap();
    assert_eq!(
        owner.as_deref(),
        Some("guestbook"),
        "not applied by storefront"
    );
    assert!(annotation.unwrap().starts_with("guestbook:"));
    assert!(!inventory_has(&f, "storefront", "shared").await);
    for app in ["guestbook", "storefront"] {
        let events = conflicts(&f, app).await;
        assert_eq!(events.len(), 1, "{app}: {events:?}");
        assert!(events[0].message.contains("shared"), "{events:?}");
        assert_eq!(events[0].detail["owner"], "guestbook");
        assert_eq!(events[0].detail["claimant"], "storefront");
    }
    let summary = last_sync_event(&f, "storefront").await;
    assert!(
        summary.contains("declared by another application"),
        "{summary}"
    );

    // guestbook keeps applying it; a retried storefront sync does not write the conflict again.
    let (status, _) = sync(&f, "guestbook").await;
    assert_eq!(status, SyncStatus::Succeeded);
    let (status, _) = sync(&f, "storefront").await;
    assert_eq!(status, SyncStatus::Failed);
    assert_eq!(
        live(&f, "shared").await.unwrap().2.as_deref(),
        Some("guestbook")
    );
    for app in ["guestbook", "storefront"] {
        assert_eq!(conflicts(&f, app).await.len(), 1, "{app}");
    }

    // guestbook lets go of it (not pruned: storefront declares it); then storefront takes it.
    f.repo.git(&["rm", "-q", "apps/guestbook/shared.yaml"]);
    f.repo.commit("guestbook lets go");
    f.git.sync_repository("demo").await.unwrap();
    let (status, results) = sync(&f, "guestbook").await;
    assert_eq!(status, SyncStatus::Succeeded, "{results:?}");
    assert_eq!(find(&results, &object).unwrap().action, "kept");
    let (status, results) = sync(&f, "storefront").await;
    assert_eq!(status, SyncStatus::Succeeded, "{results:?}");
    let (_, annotation, owner) = live(&f, "shared").await.unwrap();
    assert_eq!(owner.as_deref(), Some("storefront"));
    assert!(annotation.unwrap().starts_with("storefront:"));
}

/// Objects applied before Tidemark marked them (in the inventory, no annotation): pruned by
/// their application once when no other application declares them; kept when another does; and
/// the application that applied one keeps it against a second one declaring it.
#[tokio::test]
async fn objects_applied_before_the_annotation_are_pruned_once_unless_another_application_declares_them(
) {
    let f = two_apps(true, false).await;
    // As a Tidemark before the annotation left them: no tracking annotation.
    for name in ["settings", "shared"] {
        let patch = json!({"metadata": {"annotations": {TRACKING_ANNOTATION: null}}});
        configmaps(&f)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        assert_eq!(live(&f, name).await.unwrap().1, None);
    }
    let cm = |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": f.ns}});
    for _ in 0..250 {
        let seen = f.cluster.get(&cm("shared")).await.unwrap().unwrap();
        if seen["metadata"]["annotations"][TRACKING_ANNOTATION].is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // storefront declares `shared` too: guestbook applied it first (its inventory), it keeps it.
    f.repo
        .write("apps/storefront/shared.yaml", &shared("storefront"));
    f.repo.commit("storefront wants shared too");
    f.git.sync_repository("demo").await.unwrap();
    let (status, results) = sync(&f, "storefront").await;
    assert_eq!(status, SyncStatus::Failed, "{results:?}");
    assert_eq!(
        find(&results, &format!("ConfigMap {}/shared", f.ns))
            .unwrap()
            .action,
        "conflict"
    );
    assert_eq!(
        live(&f, "shared").await.unwrap().2.as_deref(),
        Some("guestbook")
    );

    // Both leave guestbook's Git: `settings` (nobody else declares it) is pruned, `shared`
    // (storefront declares it) is kept.
    let (shared_uid, _, _) = live(&f, "shared").await.unwrap();
    f.repo.git(&[
        "rm",
        "-q",
        "apps/guestbook/shared.yaml",
        "apps/guestbook/extra.yaml",
    ]);
    f.repo.commit("guestbook drops both");
    f.git.sync_repository("demo").await.unwrap();
    let (status, results) = sync(&f, "guestbook").await;
    assert_eq!(status, SyncStatus::Succeeded, "{results:?}");
    assert_eq!(
        find(&results, &format!("ConfigMap {}/settings", f.ns))
            .unwrap()
            .action,
        "pruned"
    );
    assert_eq!(
        find(&results, &format!("ConfigMap {}/shared", f.ns))
            .unwrap()
            .action,
        "kept"
    );
    assert!(live(&f, "settings").await.is_none());
    assert_eq!(live(&f, "shared").await.unwrap().0, shared_uid);

    // Once: a `settings` made again by hand is no longer guestbook's to prune.
    configmaps(&f)
        .create(
            &Default::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "settings"}, "data": {"by": "hand"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let (status, results) = sync(&f, "guestbook").await;
    assert_eq!(status, SyncStatus::Succeeded, "{results:?}");
    assert!(find(&results, &format!("ConfigMap {}/settings", f.ns)).is_none());
    assert!(live(&f, "settings").await.is_some());
}
