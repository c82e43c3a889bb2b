//! Sandbox conformance: the `kube` client (typed and dynamic) against the sandbox over real
//! HTTP, plus in-process through its tower service. Set `TIDEMARK_TEST_KUBECONFIG` to run the
//! cluster-agnostic checks against a real cluster instead.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind, Status};
use kube::discovery::Discovery;
use kube::Client;
use serde_json::{json, Value};
use server::sandbox::{Sandbox, SandboxOptions};

/// The cluster under test: a sandbox on a free TCP port (stopped when dropped), or the real
/// cluster named by `TIDEMARK_TEST_KUBECONFIG` for the cluster-agnostic tests.
pub struct TestCluster {
    pub url: String,
    pub client: Client,
    /// The namespace this test works in (`default` on a sandbox, a fresh one on a real cluster,
    /// labelled `tidemark-test=true` for clean-up with `kubectl delete ns -l tidemark-test=true`).
    pub ns: String,
    pub sandbox: Option<Sandbox>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestCluster {
    /// The cluster for a test whose assertions hold on any conformant cluster.
    pub async fn start() -> Self {
        match std::env::var("TIDEMARK_TEST_KUBECONFIG") {
            Ok(path) => Self::real(&path).await,
            Err(_) => Self::sandbox().await,
        }
    }

    /// A sandbox, always: for tests of sandbox-only features (simulated status, state file).
    pub async fn sandbox() -> Self {
        Self::with(SandboxOptions::default()).await
    }

    pub async fn with(options: SandboxOptions) -> Self {
        let sandbox = Sandbox::new(options).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(sandbox.clone().serve(listener, async {
            let _ = rx.await;
        }));
        let config = kube::Config::new(url.parse().unwrap());
        let client = Client::try_from(config).unwrap();
        Self {
            url,
            client,
            ns: "default".into(),
            sandbox: Some(sandbox),
            stop: Some(tx),
        }
    }

    async fn real(kubeconfig: &str) -> Self {
        let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        let url = config.cluster_url.to_string();
        let client = Client::try_from(config).unwrap();
        let ns = format!(
            "tidemark-test-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let nss: Api<Namespace> = Api::all(client.clone());
        let body = json!({"metadata": {"name": ns, "labels": {"tidemark-test": "true"}}});
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(body).unwrap(),
        )
        .await
        .unwrap();
        Self {
            url,
            client,
            ns,
            sandbox: None,
            stop: None,
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn api_error(e: kube::Error) -> Status {
    match e {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn cm(name: &str, labels: Value, data: Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": data}))
        .unwrap()
}

#[tokio::test]
async fn discovery_lists_builtin_groups_and_kinds() {
    let c = TestCluster::start().await;
    let discovery = Discovery::new(c.client.clone()).run().await.unwrap();
    let found: Vec<String> = discovery
        .groups()
        .flat_map(|g| {
            g.recommended_resources()
                .into_iter()
                .map(|(ar, _)| format!("{}/{}", ar.api_version, ar.kind))
        })
        .collect();
    for want in [
        "v1/Namespace",
        "v1/ConfigMap",
        "v1/Secret",
        "apps/v1/Deployment",
        "apps/v1/StatefulSet",
        "batch/v1/CronJob",
        "networking.k8s.io/v1/Ingress",
        "rbac.authorization.k8s.io/v1/ClusterRoleBinding",
        "apiextensions.k8s.io/v1/CustomResourceDefinition",
    ] {
        assert!(
            found.iter().any(|f| f == want),
            "{want} missing from {found:?}"
        );
    }
    let version = c.client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
}

#[tokio::test]
async fn crud_reports_the_exact_kubernetes_reasons() {
    let c = TestCluster::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), &c.ns);
    let created = cms
        .create(
            &PostParams::default(),
            &cm("a", json!({"app": "web"}), json!({"k": "1"})),
        )
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());

    let again = api_error(
        cms.create(&PostParams::default(), &cm("a", json!({}), json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));

    let mut fresh = cms.get("a").await.unwrap();
    fresh.data = Some([("k".to_string(), "2".to_string())].into());
    let replaced = cms
        .replace("a", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_ne!(
        replaced.metadata.resource_version,
        created.metadata.resource_version
    );
    // `fresh` still carries the old resourceVersion: a stale replace.
    let stale = api_error(
        cms.replace("a", &PostParams::default(), &fresh)
            .await
            .unwrap_err(),
    );
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));

    let patched = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": null, "n": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.data.unwrap(),
        [("n".to_string(), "3".to_string())].into()
    );

    cms.delete("a", &DeleteParams::default()).await.unwrap();
    let gone = api_error(cms.get("a").await.unwrap_err());
    assert_eq!((gone.code, gone.reason.as_str()), (404, "NotFound"));

    let missing_ns: Api<ConfigMap> = Api::namespaced(c.client.clone(), "nowhere");
    let e = api_error(
        missing_ns
            .create(&PostParams::default(), &cm("x", json!({}), json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.reason, "NotFound");

    let bad = api_error(
        cms.create(
            &PostParams::default(),
            &cm("Not_Valid", json!({}), json!({})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((bad.code, bad.reason.as_str()), (422, "Invalid"));
}

#[tokio::test]
async fn lists_filter_by_label_and_field_selectors_across_namespaces() {
    let c = TestCluster::start().await;
    let other = format!("{}-other", c.ns);
    let nss: Api<Namespace> = Api::all(c.client.clone());
    let ns_body = json!({"metadata": {"name": other, "labels": {"tidemark-test": "true"}}});
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(ns_body).unwrap(),
    )
    .await
    .unwrap();
    // Every object carries `run=<namespace>`, so lists across namespaces see only this test's.
    let run = format!("run={}", c.ns);
    for (ns, name, labels) in [
        (
            &c.ns,
            "a",
            json!({"app": "web", "tier": "front", "run": c.ns}),
        ),
        (&c.ns, "b", json!({"app": "db", "run": c.ns})),
        (
            &other,
            "c",
            json!({"app": "web", "env": "prod", "run": c.ns}),
        ),
    ] {
        let api: Api<ConfigMap> = Api::namespaced(c.client.clone(), ns);
        api.create(&PostParams::default(), &cm(name, labels, json!({})))
            .await
            .unwrap();
    }
    let all: Api<ConfigMap> = Api::all(c.client.clone());
    let list = |labels: String, fields: String| {
        let all = all.clone();
        async move {
            let params = ListParams::default().labels(&labels).fields(&fields);
            let mut names: Vec<String> = all
                .list(&params)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|o| o.metadata.name.unwrap())
                .collect();
            names.sort();
            names
        }
    };
    let cases = [
        ("app=web", vec!["a", "c"]),
        ("app!=web", vec!["b"]),
        ("app in (db,cache)", vec!["b"]),
        ("app notin (db)", vec!["a", "c"]),
        ("env", vec!["c"]),
        ("!tier,app=web", vec!["c"]),
    ];
    for (selector, want) in cases {
        let got = list(format!("{run},{selector}"), String::new()).await;
        assert_eq!(got, want, "{selector}");
    }
    let got = list(run.clone(), format!("metadata.namespace={other}")).await;
    assert_eq!(got, ["c"]);
    let got = list(run.clone(), "metadata.name!=a".into()).await;
    assert_eq!(got, ["b", "c"]);

    // Deleting a namespace deletes what it contains (a real cluster does so asynchronously).
    nss.delete(&other, &DeleteParams::default()).await.unwrap();
    let emptied = async {
        while list(run.clone(), String::new()).await != ["a", "b"] {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), emptied)
        .await
        .unwrap();
}

fn deployment(replicas: Option<i64>, image: &str, labels: Value) -> Value {
    let mut spec = json!({"selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [{"name": "web", "image": image}]}}});
    if let Some(r) = replicas {
        spec["replicas"] = json!(r);
    }
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": labels}, "spec": spec})
}

#[tokio::test]
async fn server_side_apply_tracks_generation_and_field_ownership() {
    let c = TestCluster::start().await;
    let deploys: Api<Deployment> = Api::namespaced(c.client.clone(), &c.ns);
    let pp = PatchParams::apply("tidemark");

    let d = deploys
        .patch(
            "web",
            &pp,
            &Patch::Apply(deployment(Some(2), "nginx:1", json!({"team": "a"}))),
        )
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(1));
    let managers: Vec<_> = d
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .map(|m| (m.manager.unwrap(), m.operation.unwrap()))
        .collect();
    assert_eq!(managers, [("tidemark".to_string(), "Apply".to_string())]);
    let rv1 = d.metadata.resource_version.unwrap();

    // Labels only: no new generation.
    let d = deploys
        .patch(
            "web",
            &pp,
            &Patch::Apply(deployment(Some(2), "nginx:1", json!({"team": "b"}))),
        )
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(1));
    assert!(
        d.metadata.resource_version.unwrap().parse::<u64>().unwrap() > rv1.parse::<u64>().unwrap()
    );
    // Spec change: generation bumps.
    let d = deploys
        .patch(
            "web",
            &pp,
            &Patch::Apply(deployment(Some(2), "nginx:2", json!({"team": "b"}))),
        )
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(2));

    // Another manager owns replicas with a different value: conflict, naming the field.
    let other = PatchParams::apply("someone-else");
    let conflict = api_error(
        deploys
            .patch(
                "web",
                &other,
                &Patch::Apply(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"replicas": 5}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(
        conflict.message.contains(".spec.replicas") && conflict.message.contains("tidemark"),
        "{}",
        conflict.message
    );

    // Same value is shared ownership, not a conflict; force takes a field over.
    deploys
        .patch(
            "web",
            &other,
            &Patch::Apply(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    let forced = deploys
        .patch(
            "web",
            &other.clone().force(),
            &Patch::Apply(json!({"apiVersion": "apps/v1",
        "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.replicas, Some(5));

    // tidemark stops sending replicas and the label: the label goes (only tidemark owned it),
    // replicas stay (someone-else owns them).
    let d = deploys
        .patch(
            "web",
            &pp,
            &Patch::Apply(deployment(None, "nginx:2", json!({}))),
        )
        .await
        .unwrap();
    assert_eq!(d.spec.replicas, Some(5));
    assert!(!d.metadata.labels.unwrap_or_default().contains_key("team"));

    // Dry run: returns the result, stores nothing.
    let dry = deploys
        .patch(
            "web",
            &PatchParams::apply("tidemark").dry_run(),
            &Patch::Apply(deployment(None, "nginx:3", json!({}))),
        )
        .await
        .unwrap();
    assert_eq!(
        dry.spec.template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some("nginx:3")
    );
    let live = deploys.get("web").await.unwrap();
    assert_eq!(
        live.spec.template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some("nginx:2")
    );
}

#[tokio::test]
async fn workloads_report_health_and_broken_images_never_become_available() {
    let c = TestCluster::sandbox().await;
    let deploys: Api<Deployment> = Api::namespaced(c.client.clone(), &c.ns);
    let pp = PatchParams::apply("tidemark");
    let d = deploys
        .patch(
            "web",
            &pp,
            &Patch::Apply(deployment(Some(3), "nginx:1", json!({}))),
        )
        .await
        .unwrap();
    let status = d.status.unwrap();
    assert_eq!(
        (status.available_replicas, status.observed_generation),
        (Some(3), Some(1))
    );

    let d = deploys
        .patch(
            "web",
            &pp,
            &Patch::Apply(deployment(Some(3), "nginx:broken", json!({}))),
        )
        .await
        .unwrap();
    let status = d.status.unwrap();
    assert_eq!(status.available_replicas, Some(0));
    let progressing = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_.as_deref() == Some("Progressing"))
        .unwrap();
    assert_eq!(
        progressing.reason.as_deref(),
        Some("ProgressDeadlineExceeded")
    );

    let jobs: Api<Job> = Api::namespaced(c.client.clone(), &c.ns);
    let job = jobs.patch("once", &pp, &Patch::Apply(json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}))).await.unwrap();
    assert_eq!(job.status.unwrap().succeeded, Some(1));
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), &c.ns);
    let pvc = pvcs.patch("data", &pp, &Patch::Apply(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))).await.unwrap();
    assert_eq!(pvc.status.unwrap().phase.as_deref(), Some("Bound"));
}

#[tokio::test]
async fn a_readiness_delay_shows_progress_then_availability() {
    let c = TestCluster::with(SandboxOptions {
        ready_delay: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let deploys: Api<Deployment> = Api::namespaced(c.client.clone(), &c.ns);
    let d = deploys
        .patch(
            "web",
            &PatchParams::apply("t"),
            &Patch::Apply(deployment(Some(2), "nginx:1", json!({}))),
        )
        .await
        .unwrap();
    assert_eq!(d.status.unwrap().available_replicas, Some(0));
    let ready = kube::runtime::wait::await_condition(deploys, "web", |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref())
            .and_then(|s| s.available_replicas)
            == Some(2)
    });
    tokio::time::timeout(Duration::from_secs(10), ready)
        .await
        .unwrap()
        .unwrap();
}

fn widget_crd(scope: &str) -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": scope,
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})
}

#[tokio::test]
async fn crds_register_and_unregister_their_kind() {
    let c = TestCluster::sandbox().await;
    let crds: Api<DynamicObject> = Api::all_with(
        c.client.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
        )),
    );
    crds.patch(
        "widgets.example.com",
        &PatchParams::apply("t"),
        &Patch::Apply(widget_crd("Namespaced")),
    )
    .await
    .unwrap();

    let discovery = Discovery::new(c.client.clone()).run().await.unwrap();
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget"))
        .unwrap();
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    let widgets: Api<DynamicObject> = Api::namespaced_with(c.client.clone(), &c.ns, &ar);
    let w: DynamicObject =
        serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"size": 3}}))
        .unwrap();
    widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(widgets.get("w1").await.unwrap().data["spec"]["size"], 3);

    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    let e = api_error(widgets.get("w1").await.unwrap_err());
    assert_eq!(e.code, 404);
    let discovery = Discovery::new(c.client.clone()).run().await.unwrap();
    assert!(discovery
        .resolve_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget"))
        .is_none());

    // Re-registered with cluster scope.
    crds.patch(
        "widgets.example.com",
        &PatchParams::apply("t"),
        &Patch::Apply(widget_crd("Cluster")),
    )
    .await
    .unwrap();
    let cluster_widgets: Api<DynamicObject> = Api::all_with(c.client.clone(), &ar);
    cluster_widgets
        .create(&PostParams::default(), &w)
        .await
        .unwrap();
    assert_eq!(
        cluster_widgets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn a_watcher_over_a_thousand_objects_under_concurrent_applies_ends_with_the_servers_state() {
    let c = TestCluster::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), &c.ns);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
        String,
        String,
    >::new()));
    // Only this test's objects: a real cluster also publishes `kube-root-ca.crt` into every
    // namespace (the sandbox does not; docs/sandbox.md).
    let mine = "tidemark-test/watch=1";
    let watcher = {
        let seen = seen.clone();
        let stream = kube::runtime::watcher(
            cms.clone(),
            kube::runtime::watcher::Config::default().labels(mine),
        );
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Ok(Some(event)) = stream.try_next().await {
                let mut seen = seen.lock().unwrap();
                match event {
                    kube::runtime::watcher::Event::Apply(o)
                    | kube::runtime::watcher::Event::InitApply(o) => {
                        seen.insert(
                            o.metadata.name.clone().unwrap(),
                            o.metadata.resource_version.clone().unwrap(),
                        );
                    }
                    kube::runtime::watcher::Event::Delete(o) => {
                        seen.remove(o.metadata.name.as_ref().unwrap());
                    }
                    kube::runtime::watcher::Event::Init => seen.clear(),
                    kube::runtime::watcher::Event::InitDone => {}
                }
            }
        })
    };
    // Four writers apply 250 objects each, then update and delete some of them.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let cms = cms.clone();
            tokio::spawn(async move {
                let pp = PatchParams::apply(&format!("writer-{w}"));
                for i in 0..250 {
                    let name = format!("cm-{w}-{i}");
                    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"tidemark-test/watch": "1"}}, "data": {"v": "1"}});
                    cms.patch(&name, &pp, &Patch::Apply(body)).await.unwrap();
                }
                for i in (0..250).step_by(5) {
                    let name = format!("cm-{w}-{i}");
                    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"tidemark-test/watch": "1"}}, "data": {"v": "2"}});
                    cms.patch(&name, &pp, &Patch::Apply(body)).await.unwrap();
                }
                for i in (0..250).step_by(10) {
                    cms.delete(&format!("cm-{w}-{i}"), &DeleteParams::default()).await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let server: std::collections::BTreeMap<String, String> = cms
        .list(&ListParams::default().labels(mine))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| {
            (
                o.metadata.name.unwrap(),
                o.metadata.resource_version.unwrap(),
            )
        })
        .collect();
    assert_eq!(server.len(), 1000 - 100);
    let converged = async {
        loop {
            if *seen.lock().unwrap() == server {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), converged)
        .await
        .expect("watcher did not converge on the server's state");
    watcher.abort();
}

#[tokio::test]
async fn a_watch_resumes_from_a_resource_version_and_streams_changes() {
    let c = TestCluster::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), &c.ns);
    let first = cms
        .create(
            &PostParams::default(),
            &cm("one", json!({"tidemark-test/resume": "1"}), json!({})),
        )
        .await
        .unwrap();
    cms.create(
        &PostParams::default(),
        &cm("two", json!({"tidemark-test/resume": "1"}), json!({})),
    )
    .await
    .unwrap();
    let rv = first.metadata.resource_version.unwrap();
    let stream = cms
        // Only this test's objects: a real cluster publishes `kube-root-ca.crt` into a new
        // namespace at some point (docs/sandbox.md).
        .watch(
            &kube::api::WatchParams::default()
                .labels("tidemark-test/resume=1")
                .timeout(2),
            &rv,
        )
        .await
        .unwrap();
    let mut stream = stream.boxed();
    cms.delete("one", &DeleteParams::default()).await.unwrap();
    let mut events = Vec::new();
    while let Some(e) = stream.next().await {
        match e.unwrap() {
            kube::api::WatchEvent::Added(o) => {
                events.push(format!("ADDED {}", o.metadata.name.unwrap()))
            }
            kube::api::WatchEvent::Deleted(o) => {
                events.push(format!("DELETED {}", o.metadata.name.unwrap()))
            }
            kube::api::WatchEvent::Bookmark(_) => continue,
            other => events.push(format!("{other:?}")),
        }
        if events.len() == 2 {
            break;
        }
    }
    assert_eq!(events, ["ADDED two", "DELETED one"]);
}

#[tokio::test]
async fn the_state_file_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let options = SandboxOptions {
        state_file: Some(dir.path().join("state.json")),
        ..Default::default()
    };
    {
        let c = TestCluster::with(options.clone()).await;
        let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), &c.ns);
        cms.create(
            &PostParams::default(),
            &cm("kept", json!({}), json!({"k": "v"})),
        )
        .await
        .unwrap();
        c.sandbox.as_ref().unwrap().persist().unwrap();
    }
    let c = TestCluster::with(options).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), &c.ns);
    let kept = cms.get("kept").await.unwrap();
    assert_eq!(kept.data.unwrap()["k"], "v");
    let next = cms
        .create(&PostParams::default(), &cm("new", json!({}), json!({})))
        .await
        .unwrap();
    assert!(
        next.metadata
            .resource_version
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > kept
                .metadata
                .resource_version
                .unwrap()
                .parse::<u64>()
                .unwrap()
    );
}

#[tokio::test]
async fn the_sandbox_also_serves_in_process_as_a_tower_service() {
    let sandbox = Sandbox::new(SandboxOptions::default()).unwrap();
    let client = Client::new(sandbox.router(), "default");
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    cms.create(&PostParams::default(), &cm("local", json!({}), json!({})))
        .await
        .unwrap();
    assert_eq!(
        cms.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
}

#[tokio::test]
async fn malformed_requests_get_status_errors_with_kubernetes_reasons() {
    let c = TestCluster::start().await;
    let send = |method: &str, path: String, body: Value, content_type: &str| {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .body(kube::client::Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap();
        let client = c.client.clone();
        async move {
            let resp = client.send(req).await.unwrap();
            let code = resp.status().as_u16();
            let bytes = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            let status: Value = serde_json::from_slice(&bytes).unwrap();
            (
                code,
                status["reason"].as_str().unwrap_or_default().to_owned(),
            )
        }
    };
    let base = format!("/api/v1/namespaces/{}/configmaps", c.ns);
    // The kind in the body does not match the URL.
    let wrong_kind = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}});
    assert_eq!(
        send("POST", base.clone(), wrong_kind, "application/json").await,
        (400, "BadRequest".into())
    );
    // POST to an object's URL is not a verb Kubernetes serves.
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
    assert_eq!(
        send("POST", format!("{base}/x"), body, "application/json")
            .await
            .1,
        "MethodNotAllowed"
    );

    // A delete whose precondition does not hold is a conflict and deletes nothing.
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), &c.ns);
    cms.create(&PostParams::default(), &cm("kept", json!({}), json!({})))
        .await
        .unwrap();
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("not-the-uid".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let e = api_error(cms.delete("kept", &dp).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    cms.delete("kept", &DeleteParams::default().dry_run())
        .await
        .unwrap();
    assert!(
        cms.get("kept").await.is_ok(),
        "dry-run delete must keep the object"
    );
}
