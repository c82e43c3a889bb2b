//! Server-side diff: each test is a kind of fault the compare had (issue 18, items 1–3), with
//! the example from a public bug report and other cases of the same kind. They run on the
//! real control plane with `TIDEMARK_TEST_KUBECONFIG` (`make test-kube`) and on the sandbox
//! otherwise.

use serde_json::{json, Value};
use server::diff::{ResourceDiff, ResourceStatus};
use server::reconcile;
use server::store::SyncStatus;

use super::{fixture_any, Fixture};

/// Replaces the application's manifests with its Namespace and `yaml` (one file) and fetches
/// the new commit.
pub(super) async fn commit(f: &Fixture, yaml: &str) {
    let ns = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {}}}\n---\n",
        f.ns
    );
    f.repo
        .write("apps/guestbook/app.yaml", &format!("{ns}{yaml}"));
    f.repo.write("apps/guestbook/extra.yaml", "");
    f.repo.commit("change");
    f.git.sync_repository("demo").await.unwrap();
}

pub(super) async fn app(f: &Fixture) -> server::store::AppSource {
    f.store.app_source("guestbook").await.unwrap().unwrap()
}

pub(super) async fn compare(f: &Fixture) -> Vec<ResourceDiff> {
    let app = app(f).await;
    let (_, _, desired) = reconcile::desired(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    reconcile::compare(&f.store, &f.cluster, &app, &desired, &app.ignore)
        .await
        .unwrap()
}

pub(super) async fn sync(f: &Fixture) {
    let (status, results) = super::sync_target(f, "guestbook").await;
    assert_eq!(status, SyncStatus::Succeeded, "{results:?}");
}

pub(super) fn of<'a>(diffs: &'a [ResourceDiff], kind: &str) -> &'a ResourceDiff {
    diffs
        .iter()
        .find(|d| d.object.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} in {diffs:?}"))
}

pub(super) fn assert_synced(diffs: &[ResourceDiff]) {
    for d in diffs {
        assert_eq!(
            d.status,
            ResourceStatus::Synced,
            "{} {}: {:?} ({})",
            d.object.kind,
            d.object.name,
            d.changes,
            d.compared_by
        );
    }
}

pub(super) fn deployment(ns: &str, pod_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n{pod_spec}"
    )
}

/// Kind 1: values the API server normalises, defaults or drops.
#[tokio::test]
async fn values_the_api_server_normalises_defaults_or_drops_are_not_drift() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let pod = "      nodeSelector: {}\n      tolerations: []\n      containers:\n      - name: web\n        image: nginx:1.27\n        args: []\n        env: []\n        resources:\n          requests: {cpu: 1000m, memory: 1024Mi, ephemeral-storage: 2048Ki}\n          limits: {cpu: '2.5', memory: 1.5Gi, ephemeral-storage: 1e9}\n";
    let yaml = format!(
        "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: 8080}}]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: empty, namespace: {ns}, labels: {{}}, annotations: {{}}, creationTimestamp: null}}\ndata: {{}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: token, namespace: {ns}}}\nstringData: {{token: s3cr3t}}\ntype: Opaque\n---\napiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: nightly, namespace: {ns}}}\nspec:\n  schedule: '0 3 * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers: [{{name: job, image: 'busybox:1', resources: {{requests: {{memory: 0.5Gi}}}}}}]\nstatus: {{}}\n",
        deployment(&f.ns, pod),
        ns = f.ns
    );
    commit(&f, &yaml).await;
    sync(&f).await;
    let diffs = compare(&f).await;
    assert_synced(&diffs);
    assert!(
        diffs.iter().all(|d| d.compared_by == server::diff::DRY_RUN),
        "{diffs:?}"
    );
}

/// Kind 2: fields Git removed (labels, annotations, list items) are drift, and a sync removes
/// them.
#[tokio::test]
async fn fields_removed_from_git_are_drift_until_a_sync_removes_them() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let with = |extra_meta: &str, env: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {ns}{extra_meta}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.27\n        env: [{{name: KEEP, value: '1'}}{env}]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {ns}}}\ndata: {{mode: fast{cm}}}\n",
            ns = f.ns,
            cm = if env.is_empty() { "" } else { ", legacy: 'yes'" },
        )
    };
    commit(
        &f,
        &with(
            ", labels: {tier: web}, annotations: {team: a}",
            ", {name: FEATURE_X, value: '1'}",
        ),
    )
    .await;
    sync(&f).await;
    assert_synced(&compare(&f).await);

    commit(&f, &with("", "")).await;
    let diffs = compare(&f).await;
    let web = of(&diffs, "Deployment");
    assert_eq!(web.status, ResourceStatus::OutOfSync, "{web:?}");
    let removed: Vec<&str> = web
        .changes
        .iter()
        .filter(|c| c.desired.is_none())
        .map(|c| c.path.as_str())
        .collect();
    for path in [
        ".metadata.labels",
        ".metadata.annotations",
        ".spec.template.spec.containers[name=web].env[name=FEATURE_X]",
    ] {
        assert!(
            removed.iter().any(|r| r.starts_with(path)),
            "{path} not in {removed:?}"
        );
    }
    let cm = of(&diffs, "ConfigMap");
    assert_eq!(cm.status, ResourceStatus::OutOfSync, "{cm:?}");
    assert_eq!(cm.changes[0].path, ".data.legacy");

    sync(&f).await;
    assert_synced(&compare(&f).await);
    let deploys: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(f.kube.clone(), &f.ns);
    let live = serde_json::to_value(deploys.get("web").await.unwrap()).unwrap();
    assert_eq!(live["metadata"]["labels"], Value::Null, "{live}");
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "KEEP", "value": "1"}])
    );
}

/// Kind 3: list items are matched by the keys of the API's own schema.
#[tokio::test]
async fn list_items_are_matched_by_the_keys_the_schema_declares() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    // One volume mounted twice (keyed by mountPath) and one port number on two protocols
    // (keyed by containerPort + protocol): a guessed key (`name`, `containerPort`) pairs the
    // wrong items.
    let pod = "      volumes: [{name: conf, configMap: {name: conf}}]\n      hostAliases: [{ip: 10.0.0.1, hostnames: [a, b]}]\n      containers:\n      - name: dns\n        image: coredns:1.11\n        ports: [{containerPort: 53, protocol: UDP, name: dns}, {containerPort: 53, protocol: TCP, name: dns-tcp}]\n        volumeMounts:\n        - {name: conf, mountPath: /etc/app/a.conf, subPath: a.conf}\n        - {name: conf, mountPath: /etc/app/b.conf, subPath: b.conf}\n";
    commit(&f, &deployment(&f.ns, pod)).await;
    sync(&f).await;
    assert_synced(&compare(&f).await);

    // A change inside one keyed item names that item.
    let changed = pod.replace("subPath: b.conf", "subPath: c.conf");
    commit(&f, &deployment(&f.ns, &changed)).await;
    let diffs = compare(&f).await;
    let web = of(&diffs, "Deployment");
    let paths: Vec<&str> = web.changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        [".spec.template.spec.containers[name=dns].volumeMounts[mountPath=/etc/app/b.conf].subPath"],
        "{web:?}"
    );
}

/// Kind 1 (who decides): fields a controller owns are not drift unless the application opts
/// in; a person's change is.
#[tokio::test]
async fn fields_other_managers_own_are_drift_only_when_the_application_opts_in() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let pod = "      containers: [{name: web, image: 'nginx:1.27'}]\n";
    commit(&f, &deployment(&f.ns, pod)).await;
    sync(&f).await;
    assert_synced(&compare(&f).await);

    // An autoscaler writes spec.replicas through the scale subresource as kube-controller-manager.
    let scale = format!(
        "/apis/apps/v1/namespaces/{}/deployments/web/scale?fieldManager=kube-controller-manager",
        f.ns
    );
    let request = http::Request::patch(scale)
        .header("Content-Type", "application/merge-patch+json")
        .body(serde_json::to_vec(&json!({"spec": {"replicas": 4}})).unwrap())
        .unwrap();
    f.kube.request::<Value>(request).await.unwrap();
    super::wait_seen(&f.cluster, &f.ns, |w| {
        w.is_some_and(|w| w["spec"]["replicas"] == 4)
    })
    .await;
    assert_synced(&compare(&f).await);

    // The application opts in: the autoscaler's replicas are drift too.
    let mut settings = f.settings.applications[0].clone();
    settings.compare.drift_from_all_managers = true;
    let catalog = server::store::DeclaredCatalog {
        repositories: &f.settings.repositories,
        clusters: &f.settings.clusters,
        applications: std::slice::from_ref(&settings),
    };
    f.store.sync_declared(catalog, 1).await.unwrap();
    let diffs = compare(&f).await;
    let web = of(&diffs, "Deployment");
    assert_eq!(web.status, ResourceStatus::OutOfSync);
    assert_eq!(
        (web.changes[0].path.as_str(), web.changes[0].live.clone()),
        (".spec.replicas", Some(json!(4)))
    );

    // Without the opt-in, a person's change (any other manager) is drift.
    let catalog = server::store::DeclaredCatalog {
        repositories: &f.settings.repositories,
        clusters: &f.settings.clusters,
        applications: &f.settings.applications,
    };
    f.store.sync_declared(catalog, 2).await.unwrap();
    let deploys: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(f.kube.clone(), &f.ns);
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.28"}]}}}});
    deploys
        .patch(
            "web",
            &kube::api::PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &kube::api::Patch::Strategic(patch),
        )
        .await
        .unwrap();
    super::wait_seen(&f.cluster, &f.ns, |w| {
        w.is_some_and(|w| w["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28")
    })
    .await;
    let diffs = compare(&f).await;
    let web = of(&diffs, "Deployment");
    let paths: Vec<&str> = web.changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        [".spec.template.spec.containers[name=web].image"],
        "{web:?}"
    );
}

/// Reconciling an unchanged application asks the API server nothing: dry-run answers are
/// cached by (desired object, live version), and status updates are not a new version.
#[tokio::test]
async fn an_unchanged_application_is_compared_without_dry_runs() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    sync(&f).await;
    // On a real cluster the deployment controller writes to the new Deployment once (its
    // revision annotation, a real change); then the rollout only updates status.
    let mut calls = f.cluster.dry_run_calls();
    for _ in 0..50 {
        assert_synced(&compare(&f).await);
        let now = f.cluster.dry_run_calls();
        if now == calls {
            break;
        }
        calls = now;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    for _ in 0..3 {
        assert_synced(&compare(&f).await);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert_eq!(f.cluster.dry_run_calls(), calls);
    // A change to one live object costs a dry run (a few if a controller writes meanwhile).
    super::scale_by_hand(&f, 3).await;
    let diffs = compare(&f).await;
    assert_eq!(of(&diffs, "Deployment").status, ResourceStatus::OutOfSync);
    let spent = f.cluster.dry_run_calls() - calls;
    assert!((1..=3).contains(&spent), "{spent} dry runs");
    // Secret values never show.
    assert!(!serde_json::to_string(&diffs).unwrap().contains("hunter2"));
}

/// Kind 2, the kubectl variant: an object first made with client-side `kubectl apply` keeps
/// the fields Git later removed unless Tidemark takes over kubectl's fields (as `kubectl apply
/// --server-side` and Flux do). Needs `kubectl` and the real API server's client-side apply
/// (strategic merge), so it runs with `TIDEMARK_TEST_KUBECONFIG` only.
#[tokio::test]
async fn fields_a_client_side_kubectl_apply_set_and_git_removed_are_removed_by_the_sync() {
    let Some(kubeconfig) = std::env::var_os("TIDEMARK_TEST_KUBECONFIG") else {
        eprintln!("skipped: needs a real API server (TIDEMARK_TEST_KUBECONFIG)");
        return;
    };
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let manifest = |extra_meta: &str, env: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {ns}{extra_meta}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.27\n        env: [{{name: KEEP, value: '1'}}{env}]\n",
            ns = f.ns
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.yaml");
    std::fs::write(
        &file,
        manifest(
            ", labels: {tier: web}, annotations: {team: a}",
            ", {name: FEATURE_X, value: '1'}",
        ),
    )
    .unwrap();
    let out = std::process::Command::new("kubectl")
        .env("KUBECONFIG", &kubeconfig)
        .args(["apply", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    super::wait_seen(&f.cluster, &f.ns, |w| w.is_some()).await;

    // Git declares the object without the three fields.
    commit(&f, &manifest("", "")).await;
    let diffs = compare(&f).await;
    let web = of(&diffs, "Deployment");
    assert_eq!(web.status, ResourceStatus::OutOfSync, "{web:?}");
    let removed: Vec<&str> = web
        .changes
        .iter()
        .filter(|c| c.desired.is_none())
        .map(|c| c.path.as_str())
        .collect();
    for path in [
        ".metadata.labels",
        ".metadata.annotations",
        ".spec.template.spec.containers[name=web].env[name=FEATURE_X]",
    ] {
        assert!(
            removed.iter().any(|r| r.starts_with(path)),
            "{path} not in {removed:?}"
        );
    }

    sync(&f).await;
    let deploys: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(f.kube.clone(), &f.ns);
    let live = serde_json::to_value(deploys.get("web").await.unwrap()).unwrap();
    assert_eq!(live["metadata"]["labels"], Value::Null, "{live}");
    assert!(
        live["metadata"]["annotations"].get("team").is_none(),
        "{live}"
    );
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "KEEP", "value": "1"}])
    );
    assert_synced(&compare(&f).await);
}

/// Kind 2 through the reconciler: an auto-sync application deploys a commit that only removes
/// fields (it compared Synced before, so the commit was never deployed).
#[tokio::test]
async fn an_auto_sync_application_deploys_a_commit_that_only_removes_fields() {
    let f = fixture_any(app::model::SyncPolicy::Auto, false).await;
    let pod = |env: &str| {
        format!("      containers:\n      - name: web\n        image: nginx:1.27\n        env: [{{name: KEEP, value: '1'}}{env}]\n")
    };
    commit(
        &f,
        &deployment(&f.ns, &pod(", {name: FEATURE_X, value: '1'}")),
    )
    .await;
    let app = app(&f).await;
    let outcome = reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    assert_eq!(outcome.synced.map(|s| s.1), Some(SyncStatus::Succeeded));

    commit(&f, &deployment(&f.ns, &pod(""))).await;
    let outcome = reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    assert_eq!(
        outcome.synced.map(|s| s.1),
        Some(SyncStatus::Succeeded),
        "{outcome:?}"
    );
    let deploys: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(f.kube.clone(), &f.ns);
    let live = serde_json::to_value(deploys.get("web").await.unwrap()).unwrap();
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "KEEP", "value": "1"}])
    );
    assert_synced(&compare(&f).await);
}
