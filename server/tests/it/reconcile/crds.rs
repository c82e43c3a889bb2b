//! A CustomResourceDefinition and resources of its kind in one application (issue 18, item 5):
//! on a cluster that does not serve the kind yet the resources are Missing, a sync applies the
//! CRD, waits until it is Established, discovers again and applies them — also when rolling
//! back to a revision whose CRD was pruned meanwhile, and after a restart. A resource whose kind
//! nothing defines fails alone, with the reason. Each test uses its own API group (CRDs are
//! cluster-wide; tests run side by side on one real cluster) and deletes its CRDs at the end
//! (they are labelled `tidemark-test=true`).

use kube::api::{Api, DeleteParams, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{json, Value};
use server::cluster::client::ClusterClient;
use server::diff::ResourceStatus;
use server::reconcile::{self, ResourceResult};
use server::store::SyncStatus;

use super::{fixture_any, Fixture};

/// A fresh API group for one test.
fn fresh_group() -> String {
    format!(
        "t{}.tidemark.test",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// A CRD of `group` (JSON, which is YAML too).
fn crd(group: &str, kind: &str, plural: &str, scope: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}"), "labels": {"tidemark-test": "true"}},
        "spec": {
            "group": group,
            "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(),
                      "listKind": format!("{kind}List")},
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object",
                                     "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    })
}

/// Two CRDs of `group`: namespaced `Widget` and cluster-scoped `Realm`.
fn crds(group: &str) -> String {
    format!(
        "{}\n---\n{}\n",
        crd(group, "Widget", "widgets", "Namespaced"),
        crd(group, "Realm", "realms", "Cluster")
    )
}

/// A Widget written without a namespace and a Realm (cluster-scoped).
fn resources(group: &str) -> String {
    format!(
        "apiVersion: {group}/v1\nkind: Widget\nmetadata: {{name: w1}}\nspec: {{size: 3}}\n---\n\
         apiVersion: {group}/v1\nkind: Realm\nmetadata: {{name: r1}}\nspec: {{zone: eu}}\n"
    )
}

fn api(f: &Fixture, group: &str, kind: &str, plural: &str, ns: Option<&str>) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", kind), plural);
    match ns {
        Some(ns) => Api::namespaced_with(f.kube.clone(), ns, &ar),
        None => Api::all_with(f.kube.clone(), &ar),
    }
}

fn crd_api(f: &Fixture) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    );
    Api::all_with(f.kube.clone(), &ar)
}

/// Deletes the test's CRDs and waits until they (and their resources) are gone.
async fn delete_crds(f: &Fixture, group: &str) {
    let crds = crd_api(f);
    for plural in ["widgets", "realms"] {
        let _ = crds
            .delete(&format!("{plural}.{group}"), &DeleteParams::background())
            .await;
    }
    wait_crds_gone(f, group).await;
}

async fn wait_crds_gone(f: &Fixture, group: &str) {
    let crds = crd_api(f);
    for _ in 0..600 {
        let mut left = 0;
        for plural in ["widgets", "realms"] {
            if crds
                .get_opt(&format!("{plural}.{group}"))
                .await
                .unwrap()
                .is_some()
            {
                left += 1;
            }
        }
        if left == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the CRDs of {group} were not deleted within 60 s");
}

async fn sync_with(
    f: &Fixture,
    cluster: &ClusterClient,
    (sha, digest, desired): (&String, &String, &Vec<Value>),
    cause: &str,
) -> (SyncStatus, Vec<ResourceResult>) {
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    let (_, status, results) = reconcile::sync(
        &f.store,
        cluster,
        &app,
        sha,
        digest,
        desired,
        true,
        cause,
        &super::ada(),
    )
    .await
    .unwrap();
    (status, results)
}

fn result<'a>(results: &'a [ResourceResult], object: &str) -> &'a ResourceResult {
    results
        .iter()
        .find(|r| r.object == object)
        .unwrap_or_else(|| panic!("no result for {object}: {results:?}"))
}

#[tokio::test]
async fn a_crd_and_its_resources_in_one_application_are_missing_then_synced_after_it_is_established(
) {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let group = fresh_group();
    f.repo
        .write("apps/guestbook/crds.yaml", &crds(&group))
        .write("apps/guestbook/widgets.yaml", &resources(&group));
    f.repo.commit("widgets");
    f.git.sync_repository("demo").await.unwrap();
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();

    // The cluster serves neither kind yet: no error, each placed by its CRD's scope.
    let (sha, digest, desired) = reconcile::desired(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    let find = |kind: &str| {
        desired
            .iter()
            .find(|o| o["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {desired:?}"))
    };
    assert_eq!(find("Widget")["metadata"]["namespace"], f.ns.as_str());
    assert!(find("Realm")["metadata"].get("namespace").is_none());

    let before = reconcile::compare(&f.store, &f.cluster, &app, &desired, &[])
        .await
        .unwrap();
    for kind in ["Widget", "Realm", "CustomResourceDefinition"] {
        let d = before.iter().find(|d| d.object.kind == kind).unwrap();
        assert_eq!(d.status, ResourceStatus::Missing, "{d:?}");
    }

    let (status, results) = sync_with(&f, &f.cluster, (&sha, &digest, &desired), "manual").await;
    assert_eq!(status, SyncStatus::Succeeded, "{results:?}");
    // CRDs first, the resources of their kinds after them.
    let position = |object: &str| results.iter().position(|r| r.object == object).unwrap();
    assert!(
        position(&format!("CustomResourceDefinition widgets.{group}"))
            < position(&format!("Widget {}/w1", f.ns))
    );
    let widget = api(&f, &group, "Widget", "widgets", Some(&f.ns))
        .get("w1")
        .await
        .unwrap();
    assert_eq!(widget.data["spec"]["size"], 3);
    let realm = api(&f, &group, "Realm", "realms", None)
        .get("r1")
        .await
        .unwrap();
    assert_eq!(realm.data["spec"]["zone"], "eu");

    let after = reconcile::compare(&f.store, &f.cluster, &app, &desired, &[])
        .await
        .unwrap();
    for kind in ["Widget", "Realm"] {
        let d = after.iter().find(|d| d.object.kind == kind).unwrap();
        assert_eq!(d.status, ResourceStatus::Synced, "{d:?}");
    }

    // The resources leave Git: pruned before their CRDs, which leave after them.
    f.repo.git(&[
        "rm",
        "-q",
        "apps/guestbook/crds.yaml",
        "apps/guestbook/widgets.yaml",
    ]);
    f.repo.commit("no widgets");
    f.git.sync_repository("demo").await.unwrap();
    let (sha2, digest2, desired2) = reconcile::desired(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    let (status, results) = sync_with(&f, &f.cluster, (&sha2, &digest2, &desired2), "manual").await;
    assert_eq!(status, SyncStatus::Succeeded, "{results:?}");
    let pruned = |object: &str| {
        results
            .iter()
            .position(|r| r.object == object && r.action == "pruned")
            .unwrap_or_else(|| panic!("{object} not pruned: {results:?}"))
    };
    assert!(
        pruned(&format!("Widget {}/w1", f.ns))
            < pruned(&format!("CustomResourceDefinition widgets.{group}"))
    );
    wait_crds_gone(&f, &group).await;
}

#[tokio::test]
async fn a_resource_of_a_kind_nothing_defines_fails_alone_with_the_reason() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let group = fresh_group();
    // A Gadget: no CRD in the application defines it and the cluster serves no such kind.
    f.repo.write(
        "apps/guestbook/gadget.yaml",
        &format!(
            "apiVersion: {group}/v1\nkind: Gadget\nmetadata: {{name: g1}}\nspec: {{on: true}}\n"
        ),
    );
    f.repo.commit("a gadget");
    f.git.sync_repository("demo").await.unwrap();
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    let (sha, digest, desired) = reconcile::desired(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    let gadget = desired.iter().find(|o| o["kind"] == "Gadget").unwrap();
    // Its scope is unknown: it keeps the application's namespace.
    assert_eq!(gadget["metadata"]["namespace"], f.ns.as_str());
    let before = reconcile::compare(&f.store, &f.cluster, &app, &desired, &[])
        .await
        .unwrap();
    let d = before.iter().find(|d| d.object.kind == "Gadget").unwrap();
    assert_eq!(d.status, ResourceStatus::Missing);

    let (status, results) = sync_with(&f, &f.cluster, (&sha, &digest, &desired), "manual").await;
    assert_eq!(status, SyncStatus::Failed);
    let failed = result(&results, &format!("Gadget {}/g1", f.ns));
    assert_eq!(failed.action, "failed");
    let message = failed.message.as_deref().unwrap();
    assert!(
        message.contains(&format!("does not serve Gadget in {group}/v1"))
            && message.contains("no CustomResourceDefinition"),
        "{message}"
    );
    // Everything else was applied.
    assert!(
        results
            .iter()
            .filter(|r| r.object != failed.object)
            .all(|r| r.action == "applied"),
        "{results:?}"
    );

    // Over REST: a comparison and a per-resource failure, not a 503 for the whole application.
    let server = crate::helpers::TestServer::start(f.settings.clone()).await;
    let deployer =
        crate::helpers::bearer_client(&server.token(app::model::Role::Deployer, None).await);
    let url = |p: &str| format!("{}/api/v1/applications/guestbook{p}", server.base);
    let diff = deployer.get(url("/diff")).send().await.unwrap();
    assert_eq!(diff.status().as_u16(), 200);
    let diff: Value = diff.json().await.unwrap();
    let gadget = diff["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["object"]["kind"] == "Gadget")
        .unwrap();
    assert_eq!(gadget["status"], "Missing");
    let sync = deployer.post(url("/sync")).send().await.unwrap();
    assert_eq!(sync.status().as_u16(), 200);
    let sync: Value = sync.json().await.unwrap();
    assert_eq!(sync["status"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_to_a_revision_whose_crd_was_pruned_applies_it_again_also_after_a_restart() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let group = fresh_group();
    f.repo
        .write("apps/guestbook/crds.yaml", &crds(&group))
        .write("apps/guestbook/widgets.yaml", &resources(&group));
    f.repo.commit("widgets");
    f.git.sync_repository("demo").await.unwrap();
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    let (sha1, digest1, desired1) = reconcile::desired(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    let (status, results) = sync_with(&f, &f.cluster, (&sha1, &digest1, &desired1), "manual").await;
    assert_eq!(status, SyncStatus::Succeeded, "{results:?}");

    f.repo.git(&[
        "rm",
        "-q",
        "apps/guestbook/crds.yaml",
        "apps/guestbook/widgets.yaml",
    ]);
    f.repo.commit("no widgets");
    f.git.sync_repository("demo").await.unwrap();
    let widgets = api(&f, &group, "Widget", "widgets", Some(&f.ns));

    // `restarted`: a new client (a restarted Tidemark) that never saw the kinds.
    for restarted in [false, true] {
        // The revision without them: the resources and the CRDs are pruned.
        let (sha2, digest2, desired2) = reconcile::desired(&f.store, &f.cluster, &app)
            .await
            .unwrap();
        let (status, results) =
            sync_with(&f, &f.cluster, (&sha2, &digest2, &desired2), "manual").await;
        assert_eq!(status, SyncStatus::Succeeded, "{results:?}");
        assert_eq!(
            result(
                &results,
                &format!("CustomResourceDefinition widgets.{group}")
            )
            .action,
            "pruned"
        );
        wait_crds_gone(&f, &group).await;

        // Roll back to the first revision's stored snapshot, as a rollback does.
        let client = ClusterClient::connect(&f.settings.clusters[0])
            .await
            .unwrap();
        let cluster = if restarted { &client } else { &f.cluster };
        let content = f.store.snapshot_to_apply(&digest1).await.unwrap().unwrap();
        let objects = reconcile::place_all(cluster, &content, &digest1, &app)
            .await
            .unwrap();
        assert_eq!(objects, desired1, "placed as before");
        let (status, results) =
            sync_with(&f, cluster, (&sha1, &digest1, &objects), "rollback").await;
        assert_eq!(
            status,
            SyncStatus::Succeeded,
            "restarted: {restarted}: {results:?}"
        );
        assert_eq!(widgets.get("w1").await.unwrap().data["spec"]["size"], 3);
        let compared = reconcile::compare(&f.store, cluster, &app, &objects, &[])
            .await
            .unwrap();
        let widget = compared.iter().find(|d| d.object.kind == "Widget").unwrap();
        assert_eq!(widget.status, ResourceStatus::Synced, "{widget:?}");
    }
    delete_crds(&f, &group).await;
}

/// A real API server does not establish a CRD whose names another CRD already uses: the sync
/// says so for that CRD, without waiting for the time-out.
/// (The sandbox does not check CRD names: real cluster only.)
#[tokio::test]
async fn a_crd_whose_names_are_taken_fails_with_the_api_servers_reason() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    if f._cluster.sandbox.is_some() {
        return;
    }
    let group = fresh_group();
    // `gizmos` claims the kind (and singular) of `widgets`, which the cluster already serves.
    let taken = crd(&group, "Widget", "widgets", "Namespaced");
    crd_api(&f)
        .patch(
            &format!("widgets.{group}"),
            &kube::api::PatchParams::apply("test").force(),
            &kube::api::Patch::Apply(&taken),
        )
        .await
        .unwrap();
    let gizmos = crd(&group, "Widget", "gizmos", "Namespaced");
    f.repo
        .write("apps/guestbook/gizmos.yaml", &gizmos.to_string());
    f.repo.commit("gizmos");
    f.git.sync_repository("demo").await.unwrap();
    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    let (sha, digest, desired) = reconcile::desired(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (status, results) = sync_with(&f, &f.cluster, (&sha, &digest, &desired), "manual").await;
    assert!(started.elapsed() < reconcile::CRD_ESTABLISH_TIMEOUT);
    assert_eq!(status, SyncStatus::Failed);
    let crd = result(
        &results,
        &format!("CustomResourceDefinition gizmos.{group}"),
    );
    assert_eq!(crd.action, "failed", "{results:?}");
    assert!(
        crd.message
            .as_deref()
            .unwrap()
            .contains("names are not accepted"),
        "{crd:?}"
    );
    let _ = crd_api(&f)
        .delete(&format!("gizmos.{group}"), &DeleteParams::background())
        .await;
    delete_crds(&f, &group).await;
}
