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
    /// The `[[clusters]]` entry named `name` that reaches this cluster: the sandbox's URL, or
    /// the real control plane's kubeconfig (`TIDEMARK_TEST_KUBECONFIG`).
    pub fn cluster_settings(&self, name: &str) -> server::config::ClusterSettings {
        match &self.sandbox {
            Some(_) => server::config::ClusterSettings {
                name: name.into(),
                url: self.url.clone(),
                ..Default::default()
            },
            None => server::config::ClusterSettings {
                name: name.into(),
                kubeconfig: std::env::var_os("TIDEMARK_TEST_KUBECONFIG").map(Into::into),
                ..Default::default()
            },
        }
    }

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

// ---- what Tidemark's server-side compare relies on (docs/sandbox.md) ------------------------
//
// Each test below runs the same assertions on the sandbox and, with TIDEMARK_TEST_KUBECONFIG,
// on a real API server: OpenAPI v3, list keys from the schema, values normalised on write,
// dry runs that return what a write would store, CRDs served once established.

/// One request outside the typed API: status code and body (JSON, or the text as a string).
async fn raw(
    c: &TestCluster,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(kube::client::Body::from(
            body.map(|b| serde_json::to_vec(&b).unwrap())
                .unwrap_or_default(),
        ))
        .unwrap();
    let resp = c.client.send(req).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (code, body)
}

/// Retries `f` every 200 ms for up to 30 s until it returns `Some` (a real API server publishes
/// CRDs in discovery and OpenAPI a moment after they are established).
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn dynamic(
    c: &TestCluster,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Api::namespaced_with(
        c.client.clone(),
        &c.ns,
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

fn tidemark() -> PatchParams {
    PatchParams::apply("tidemark").force()
}

/// Tidemark's own managedFields entry (a real cluster's controllers add theirs at any time).
fn tidemark_entry(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry> {
    meta.managed_fields
        .iter()
        .flatten()
        .find(|m| m.manager.as_deref() == Some("tidemark"))
        .cloned()
}

#[tokio::test]
async fn openapi_v3_publishes_each_served_group_version_with_its_list_keys() {
    let c = TestCluster::start().await;
    let (code, index) = raw(&c, "GET", "/openapi/v3", "application/json", None).await;
    assert_eq!(code, 200);
    let mut docs = std::collections::BTreeMap::new();
    for gv in [
        "api/v1",
        "apis/apps/v1",
        "apis/batch/v1",
        "apis/networking.k8s.io/v1",
        "apis/rbac.authorization.k8s.io/v1",
        "apis/apiextensions.k8s.io/v1",
    ] {
        let url = index["paths"][gv]["serverRelativeURL"]
            .as_str()
            .unwrap_or_else(|| panic!("{gv} missing from the OpenAPI index"));
        assert!(url.starts_with(&format!("/openapi/v3/{gv}?hash=")), "{url}");
        let (code, doc) = raw(&c, "GET", url, "application/json", None).await;
        assert_eq!(code, 200, "{url}");
        assert_eq!(doc["openapi"], json!("3.0.0"));
        docs.insert(gv, doc);
    }
    let schemas = &docs["apis/apps/v1"]["components"]["schemas"];
    assert_eq!(
        schemas["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
    );
    let container = &schemas["io.k8s.api.core.v1.Container"]["properties"];
    assert_eq!(container["ports"]["x-kubernetes-list-type"], json!("map"));
    assert_eq!(
        container["ports"]["x-kubernetes-list-map-keys"],
        json!(["containerPort", "protocol"])
    );
    assert_eq!(
        container["ports"]["x-kubernetes-patch-merge-key"],
        json!("containerPort")
    );
    assert_eq!(
        container["volumeMounts"]["x-kubernetes-list-map-keys"],
        json!(["mountPath"])
    );
    assert_eq!(container["args"]["x-kubernetes-list-type"], json!("atomic"));
    assert_eq!(
        container["resources"]["allOf"][0]["$ref"],
        json!("#/components/schemas/io.k8s.api.core.v1.ResourceRequirements")
    );
    assert_eq!(
        schemas["io.k8s.api.core.v1.ResourceRequirements"]["properties"]["limits"]
            ["additionalProperties"]["$ref"],
        json!("#/components/schemas/io.k8s.apimachinery.pkg.api.resource.Quantity")
    );
    let port = &schemas["io.k8s.api.core.v1.ContainerPort"]["properties"];
    assert_eq!(
        (
            &port["containerPort"]["type"],
            &port["containerPort"]["format"]
        ),
        (&json!("integer"), &json!("int32"))
    );
    assert_eq!(port["protocol"]["default"], json!("TCP"));
    assert_eq!(
        schemas["io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"]["x-kubernetes-map-type"],
        json!("atomic")
    );
    assert_eq!(
        schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["nodeSelector"]
            ["x-kubernetes-map-type"],
        json!("atomic")
    );
    let core = &docs["api/v1"]["components"]["schemas"];
    assert_eq!(
        core["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"]["x-kubernetes-list-map-keys"],
        json!(["port", "protocol"])
    );
    assert_eq!(
        core["io.k8s.api.core.v1.ServicePort"]["properties"]["targetPort"]["allOf"][0]["$ref"],
        json!("#/components/schemas/io.k8s.apimachinery.pkg.util.intstr.IntOrString")
    );
    assert_eq!(
        core["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]["finalizers"]
            ["x-kubernetes-list-type"],
        json!("set")
    );

    // Tidemark's schema reader finds the same list keys in them.
    use server::cluster::schema::{at, GroupVersionSchema, ListType};
    let apps = GroupVersionSchema::parse(&docs["apis/apps/v1"], "apps/v1");
    let containers = at(
        apps.kind("Deployment").unwrap(),
        &[
            Some("spec"),
            Some("template"),
            Some("spec"),
            Some("containers"),
        ],
    )
    .unwrap();
    assert_eq!(
        containers.list_type(),
        Some(ListType::Map(vec!["name".into()]))
    );
    let cpu = at(
        containers,
        &[None, Some("resources"), Some("requests"), Some("cpu")],
    )
    .unwrap();
    assert!(cpu.is_quantity());
    let core = GroupVersionSchema::parse(&docs["api/v1"], "v1");
    for kind in [
        "ConfigMap",
        "Secret",
        "Service",
        "Namespace",
        "Pod",
        "ServiceAccount",
        "PersistentVolumeClaim",
    ] {
        assert!(core.kind(kind).is_some(), "{kind}");
    }
}

fn mounts_deployment(image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "conf"},
        "spec": {"selector": {"matchLabels": {"app": "conf"}},
            "template": {"metadata": {"labels": {"app": "conf"}}, "spec": {
                "volumes": [{"name": "conf", "configMap": {"name": "conf"}}],
                "containers": [{"name": "app", "image": image,
                    "volumeMounts": [
                        {"name": "conf", "mountPath": "/etc/app/a.conf", "subPath": "a.conf"},
                        {"name": "conf", "mountPath": "/etc/app/b.conf", "subPath": "b.conf"}]}]}}}})
}

#[tokio::test]
async fn two_mounts_of_one_volume_apply_reapply_and_dry_run_identically() {
    let c = TestCluster::start().await;
    let deploys: Api<Deployment> = Api::namespaced(c.client.clone(), &c.ns);
    let first = deploys
        .patch(
            "conf",
            &tidemark(),
            &Patch::Apply(mounts_deployment("nginx:1")),
        )
        .await
        .unwrap();
    let mounts = |d: &Deployment| {
        d.spec.template.spec.as_ref().unwrap().containers[0]
            .volume_mounts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|m| (m.mount_path, m.sub_path.unwrap_or_default()))
            .collect::<Vec<_>>()
    };
    let want = vec![
        ("/etc/app/a.conf".to_string(), "a.conf".to_string()),
        ("/etc/app/b.conf".to_string(), "b.conf".to_string()),
    ];
    assert_eq!(mounts(&first), want);

    // The same configuration again, as a dry run and for real: nothing changes.
    let dry = deploys
        .patch(
            "conf",
            &tidemark().dry_run(),
            &Patch::Apply(mounts_deployment("nginx:1")),
        )
        .await
        .unwrap();
    let again = deploys
        .patch(
            "conf",
            &tidemark(),
            &Patch::Apply(mounts_deployment("nginx:1")),
        )
        .await
        .unwrap();
    for d in [&dry, &again] {
        assert_eq!(mounts(d), want);
        assert_eq!(d.spec, first.spec);
        assert_eq!(d.metadata.generation, Some(1));
        assert_eq!(tidemark_entry(&d.metadata), tidemark_entry(&first.metadata));
    }
    let fields = serde_json::to_value(tidemark_entry(&first.metadata).unwrap().fields_v1).unwrap();
    let c0 = &fields["f:spec"]["f:template"]["f:spec"]["f:containers"][r#"k:{"name":"app"}"#];
    for path in ["/etc/app/a.conf", "/etc/app/b.conf"] {
        let key = format!(r#"k:{{"mountPath":"{path}"}}"#);
        assert_eq!(
            c0["f:volumeMounts"][&key],
            json!({".": {}, "f:mountPath": {}, "f:name": {}, "f:subPath": {}}),
            "{fields}"
        );
    }

    // One mount dropped: only that one goes.
    let mut one = mounts_deployment("nginx:1");
    one["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .remove(0);
    let d = deploys
        .patch("conf", &tidemark(), &Patch::Apply(one))
        .await
        .unwrap();
    assert_eq!(mounts(&d), want[1..].to_vec());
    assert_eq!(d.metadata.generation, Some(2));
}

/// Inputs for `resources.requests.cpu` and what a real API server (v1.36) stores for them.
const CPU_QUANTITIES: [(&str, &str); 28] = [
    ("100m", "100m"),
    ("0.1", "100m"),
    ("1000m", "1"),
    ("0.5", "500m"),
    ("1.5", "1500m"),
    ("1000000", "1M"),
    ("1M", "1M"),
    ("12e6", "12e6"),
    ("10e2", "1e3"),
    ("0.0001", "1m"),
    ("100u", "1m"),
    ("1e3", "1e3"),
    ("1000", "1k"),
    ("1024", "1024"),
    ("1.5k", "1500"),
    ("0.5e3", "500"),
    ("1Ei", "1Ei"),
    ("1.5Gi", "1536Mi"),
    ("2048Ki", "2Mi"),
    ("1024Mi", "1Gi"),
    ("1.1Ki", "1126400m"),
    ("0.5Gi", "512Mi"),
    ("1000G", "1T"),
    ("1.000", "1"),
    ("01", "01"),
    ("+1", "+1"),
    ("0", "0"),
    ("1e-9", "1e-3"),
];

#[tokio::test]
async fn quantities_are_stored_in_the_api_servers_canonical_form() {
    let c = TestCluster::start().await;
    let deploys: Api<Deployment> = Api::namespaced(c.client.clone(), &c.ns);
    let mut inputs: Vec<(Value, &str)> =
        CPU_QUANTITIES.iter().map(|(i, w)| (json!(i), *w)).collect();
    // YAML/JSON numbers: printed as a float64 first.
    inputs.extend([
        (json!(1000), "1k"),
        (json!(0.5), "500m"),
        (json!(1e3), "1k"),
        (json!(12e6), "12M"),
        (json!(2.0), "2"),
    ]);
    let containers: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, (q, _))| {
            json!({"name": format!("c{i}"), "image": "nginx",
            "resources": {"requests": {"cpu": q}, "limits": {"memory": "1024Mi"}}})
        })
        .collect();
    let mut d = deployment(Some(1), "nginx", json!({}));
    d["spec"]["template"]["spec"]["containers"] = json!(containers);
    d["spec"]["template"]["spec"]["volumes"] = json!([{"name": "tmp", "emptyDir": {"sizeLimit": "1.5Gi"}}, {"name": "t2", "emptyDir": {"sizeLimit": "2048Ki"}}]);
    let dry = deploys
        .patch("web", &tidemark().dry_run(), &Patch::Apply(d.clone()))
        .await
        .unwrap();
    let stored = deploys
        .patch("web", &tidemark(), &Patch::Apply(d.clone()))
        .await
        .unwrap();
    for obj in [&dry, &stored] {
        let pod = serde_json::to_value(obj.spec.template.spec.as_ref().unwrap()).unwrap();
        for (i, (input, want)) in inputs.iter().enumerate() {
            assert_eq!(
                pod["containers"][i]["resources"]["requests"]["cpu"],
                json!(want),
                "cpu {input}"
            );
            assert_eq!(
                pod["containers"][i]["resources"]["limits"]["memory"],
                json!("1Gi")
            );
        }
        assert_eq!(pod["volumes"][0]["emptyDir"]["sizeLimit"], json!("1536Mi"));
        assert_eq!(pod["volumes"][1]["emptyDir"]["sizeLimit"], json!("2Mi"));
    }

    // Applying the spelling Git has (`1000m`) over the stored `1` changes nothing.
    let mut git = deployment(Some(1), "nginx", json!({}));
    git["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "1000m", "memory": "1024Mi"}});
    let live = deploys
        .patch("web", &tidemark(), &Patch::Apply(git.clone()))
        .await
        .unwrap();
    let c0 = &live.spec.template.spec.as_ref().unwrap().containers[0];
    let requests = serde_json::to_value(&c0.resources.as_ref().unwrap().requests).unwrap();
    assert_eq!(requests, json!({"cpu": "1", "memory": "1Gi"}));
    let predicted = deploys
        .patch("web", &tidemark().dry_run(), &Patch::Apply(git))
        .await
        .unwrap();
    assert_eq!(predicted.spec, live.spec);
    assert_eq!(
        tidemark_entry(&predicted.metadata),
        tidemark_entry(&live.metadata)
    );

    // Another manager spelling tidemark's values differently conflicts (values are compared
    // as sent, before normalisation; its empty `labels: {}` is a field too), worded as the
    // API server words it.
    let mut other = deployment(Some(1), "nginx", json!({}));
    other["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "1000m", "memory": "1024Mi"}});
    let e = api_error(
        deploys
            .patch("web", &PatchParams::apply("other"), &Patch::Apply(other))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    assert_eq!(
        e.message,
        "Apply failed with 3 conflicts: conflicts with \"tidemark\":\n\
         - .metadata.labels\n\
         - .spec.template.spec.containers[name=\"web\"].resources.requests.cpu\n\
         - .spec.template.spec.containers[name=\"web\"].resources.requests.memory"
    );
}

#[tokio::test]
async fn empty_optional_fields_are_dropped_and_int_or_strings_kept_as_written() {
    let c = TestCluster::start().await;
    let deploys: Api<Deployment> = Api::namespaced(c.client.clone(), &c.ns);
    let mut d = deployment(Some(1), "nginx", json!({}));
    d["metadata"]["annotations"] = json!({});
    let pod = &mut d["spec"]["template"]["spec"];
    pod["nodeSelector"] = json!({});
    pod["tolerations"] = json!([]);
    pod["containers"][0]["args"] = json!([]);
    pod["containers"][0]["env"] = json!([]);
    pod["containers"][0]["ports"] = json!([]);
    pod["containers"][0]["resources"] = json!({"limits": {}, "requests": {"cpu": "1"}});
    d["spec"]["strategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}});
    let dry = deploys
        .patch("web", &tidemark().dry_run(), &Patch::Apply(d.clone()))
        .await
        .unwrap();
    let stored = deploys
        .patch("web", &tidemark(), &Patch::Apply(d))
        .await
        .unwrap();
    for obj in [&dry, &stored] {
        let v = serde_json::to_value(obj).unwrap();
        let pod = &v["spec"]["template"]["spec"];
        for gone in ["nodeSelector", "tolerations"] {
            assert!(pod.get(gone).is_none(), "{gone}: {pod}");
        }
        for gone in ["args", "env", "ports"] {
            assert!(pod["containers"][0].get(gone).is_none(), "{gone}: {pod}");
        }
        assert_eq!(
            pod["containers"][0]["resources"],
            json!({"requests": {"cpu": "1"}})
        );
        assert!(
            v["metadata"].get("labels").is_none()
                && v["metadata"]
                    .get("annotations")
                    .is_none_or(|a| a.get("team").is_none())
        );
        assert_eq!(
            v["spec"]["strategy"]["rollingUpdate"],
            json!({"maxSurge": 1, "maxUnavailable": "25%"})
        );
    }
    // The applier still owns the fields it sent, empty or not (except empty keyed lists).
    let fields = serde_json::to_value(tidemark_entry(&stored.metadata).unwrap().fields_v1).unwrap();
    let pod_fields = &fields["f:spec"]["f:template"]["f:spec"];
    assert_eq!(pod_fields["f:nodeSelector"], json!({}));
    assert_eq!(pod_fields["f:tolerations"], json!({}));
    assert_eq!(
        pod_fields["f:containers"][r#"k:{"name":"web"}"#]["f:args"],
        json!({})
    );
    assert!(
        pod_fields["f:containers"][r#"k:{"name":"web"}"#]
            .get("f:env")
            .is_none(),
        "{pod_fields}"
    );

    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), &c.ns);
    let cm = cms
        .patch(
            "empty",
            &tidemark().dry_run(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "empty", "labels": {}}, "data": {}, "binaryData": {}})),
        )
        .await
        .unwrap();
    assert_eq!(
        (cm.data, cm.binary_data, cm.metadata.labels),
        (None, None, None)
    );

    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(c.client.clone(), &c.ns);
    let svc = services
        .patch("web", &tidemark().dry_run(), &Patch::Apply(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "externalIPs": [],
            "ports": [{"name": "a", "port": 80, "targetPort": "http"}, {"name": "b", "port": 81, "targetPort": 8081}]}})))
        .await
        .unwrap();
    let spec = serde_json::to_value(svc.spec.unwrap()).unwrap();
    assert_eq!(spec["ports"][0]["targetPort"], json!("http"));
    assert_eq!(spec["ports"][1]["targetPort"], json!(8081));
    assert!(spec.get("externalIPs").is_none());

    let roles: Api<DynamicObject> = Api::all_with(
        c.client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", "ClusterRole"),
            "clusterroles",
        ),
    );
    let role = roles
        .patch(
            &format!("{}-empty", c.ns),
            &tidemark().dry_run(),
            &Patch::Apply(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": format!("{}-empty", c.ns)}, "rules": []})),
        )
        .await
        .unwrap();
    assert_eq!(role.data["rules"], Value::Null);
    assert!(
        role.data.as_object().unwrap().contains_key("rules"),
        "rules: null is written"
    );
}

fn flagged_deployment(with_flags: bool) -> Value {
    let mut d = deployment(Some(1), "nginx:1", json!({}));
    let c0 = &mut d["spec"]["template"]["spec"]["containers"][0];
    c0["env"] = json!([{"name": "KEEP", "value": "1"}]);
    if with_flags {
        d["metadata"]["labels"] = json!({"tier": "web"});
        d["metadata"]["annotations"] = json!({"team": "a"});
        d["spec"]["template"]["spec"]["containers"][0]["env"] =
            json!([{"name": "KEEP", "value": "1"}, {"name": "FEATURE_X", "value": "1"}]);
    }
    d
}

#[tokio::test]
async fn a_dry_run_returns_what_the_write_stores_and_stores_nothing() {
    let c = TestCluster::start().await;
    let deploys: Api<Deployment> = Api::namespaced(c.client.clone(), &c.ns);

    // Dry-run create: a new object, not stored.
    let created = deploys
        .patch(
            "web",
            &tidemark().dry_run(),
            &Patch::Apply(flagged_deployment(true)),
        )
        .await
        .unwrap();
    assert!(created.metadata.resource_version.is_none());
    assert!(created.metadata.uid.is_some());
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(api_error(deploys.get("web").await.unwrap_err()).code, 404);

    let live = deploys
        .patch("web", &tidemark(), &Patch::Apply(flagged_deployment(true)))
        .await
        .unwrap();
    // Git drops the label, the annotation and FEATURE_X.
    let dry = deploys
        .patch(
            "web",
            &tidemark().dry_run(),
            &Patch::Apply(flagged_deployment(false)),
        )
        .await
        .unwrap();
    let env = |d: &Deployment| {
        d.spec.template.spec.as_ref().unwrap().containers[0]
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(env(&dry), ["KEEP"]);
    assert!(dry
        .metadata
        .labels
        .as_ref()
        .is_none_or(|l| !l.contains_key("tier")));
    assert!(dry
        .metadata
        .annotations
        .as_ref()
        .is_none_or(|a| !a.contains_key("team")));
    assert_eq!(dry.metadata.generation, Some(2));

    // Nothing stored, nothing bumped.
    let still = deploys.get("web").await.unwrap();
    assert_eq!(env(&still), ["KEEP", "FEATURE_X"]);
    assert_eq!(still.metadata.generation, Some(1));
    assert_eq!(still.metadata.labels.as_ref().unwrap()["tier"], "web");
    assert_eq!(
        tidemark_entry(&still.metadata),
        tidemark_entry(&live.metadata)
    );

    // The write stores what the dry run predicted (but for the new resourceVersion).
    let stored = deploys
        .patch("web", &tidemark(), &Patch::Apply(flagged_deployment(false)))
        .await
        .unwrap();
    assert_eq!(stored.spec, dry.spec);
    assert_eq!(stored.metadata.labels, dry.metadata.labels);
    assert_eq!(stored.metadata.generation, dry.metadata.generation);
    let apply_entry = |d: &Deployment| {
        d.metadata
            .managed_fields
            .clone()
            .unwrap()
            .into_iter()
            .find(|m| m.manager.as_deref() == Some("tidemark"))
            .map(|m| (m.operation, m.fields_v1))
    };
    assert_eq!(apply_entry(&stored), apply_entry(&dry));
    assert_ne!(
        stored.metadata.resource_version,
        live.metadata.resource_version
    );
}

#[tokio::test]
async fn managed_fields_have_the_api_servers_shape() {
    let c = TestCluster::start().await;
    let deploys: Api<Deployment> = Api::namespaced(c.client.clone(), &c.ns);
    let mut d = deployment(Some(2), "nginx:1", json!({"team": "a"}));
    d["spec"]["template"]["spec"]["containers"] = json!([
        {"name": "web", "image": "nginx:1",
         "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP", "name": "dns"}],
         "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
        {"name": "side", "image": "busybox", "env": []}]);
    let applied = deploys
        .patch("web", &tidemark(), &Patch::Apply(d))
        .await
        .unwrap();
    let entries = applied.metadata.managed_fields.unwrap();
    let mine = entries
        .iter()
        .find(|m| m.manager.as_deref() == Some("tidemark"))
        .unwrap();
    assert_eq!(mine.operation.as_deref(), Some("Apply"));
    assert_eq!(mine.fields_type.as_deref(), Some("FieldsV1"));
    assert_eq!(mine.api_version.as_deref(), Some("apps/v1"));
    assert_eq!(mine.subresource, None);
    let item = |fields: Value| {
        let mut m = fields.as_object().unwrap().clone();
        m.insert(".".into(), json!({}));
        Value::Object(m)
    };
    assert_eq!(
        serde_json::to_value(&mine.fields_v1).unwrap(),
        json!({
            "f:metadata": {"f:labels": {"f:team": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {
                        r#"k:{"name":"web"}"#: item(json!({
                            "f:env": {
                                r#"k:{"name":"A"}"#: item(json!({"f:name": {}, "f:value": {}})),
                                r#"k:{"name":"B"}"#: item(json!({"f:name": {}, "f:value": {}})),
                            },
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {
                                r#"k:{"containerPort":53,"protocol":"UDP"}"#: item(json!({"f:containerPort": {}, "f:name": {}, "f:protocol": {}})),
                                r#"k:{"containerPort":80,"protocol":"TCP"}"#: item(json!({"f:containerPort": {}})),
                            },
                        })),
                        r#"k:{"name":"side"}"#: item(json!({"f:image": {}, "f:name": {}})),
                    }}
                }
            }
        })
    );

    // Other writers: an Update entry with what they added ("." on added maps), then what they
    // changed.
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), &c.ns);
    let posted = cms
        .create(
            &PostParams {
                field_manager: Some("poster".into()),
                ..Default::default()
            },
            &cm("posted", json!({"a": "1"}), json!({"k": "v"})),
        )
        .await
        .unwrap();
    let only =
        |m: Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry>>,
         who: &str| {
            let m = m.unwrap();
            let e = m
                .iter()
                .find(|e| e.manager.as_deref() == Some(who))
                .unwrap();
            assert_eq!(e.operation.as_deref(), Some("Update"));
            serde_json::to_value(&e.fields_v1).unwrap()
        };
    assert_eq!(
        only(posted.metadata.managed_fields, "poster"),
        json!({"f:data": {".": {}, "f:k": {}}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}})
    );
    let patched = cms
        .patch(
            "posted",
            &PatchParams {
                field_manager: Some("patcher".into()),
                ..Default::default()
            },
            &Patch::Merge(
                json!({"metadata": {"labels": {"b": "2"}}, "data": {"k": "w", "k2": "x"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        only(patched.metadata.managed_fields.clone(), "patcher"),
        json!({"f:data": {"f:k": {}, "f:k2": {}}, "f:metadata": {"f:labels": {"f:b": {}}}})
    );
    assert_eq!(
        only(patched.metadata.managed_fields, "poster"),
        json!({"f:data": {}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}})
    );
}

#[tokio::test]
async fn fields_a_client_side_apply_owned_are_removed_once_tidemark_owns_them() {
    let c = TestCluster::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), &c.ns);
    // As `kubectl apply` (client-side) creates it.
    let made = cms
        .create(
            &PostParams {
                field_manager: Some("kubectl-client-side-apply".into()),
                ..Default::default()
            },
            &cm(
                "legacy",
                json!({"tier": "web"}),
                json!({"a": "1", "b": "2"}),
            ),
        )
        .await
        .unwrap();
    let csa = made.metadata.managed_fields.unwrap().remove(0);
    // Tidemark takes its fields over (as `kubectl apply --server-side` does): the ownership
    // record is rewritten with a merge patch guarded by the resourceVersion.
    let taken = cms
        .patch(
            "legacy",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {
            "resourceVersion": made.metadata.resource_version,
            "managedFields": [{"manager": "tidemark", "operation": "Apply", "apiVersion": "v1",
                "time": csa.time, "fieldsType": "FieldsV1", "fieldsV1": csa.fields_v1}]}})),
        )
        .await
        .unwrap();
    let managers: Vec<_> = taken
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .map(|m| (m.manager.unwrap(), m.operation.unwrap()))
        .collect();
    assert_eq!(managers, [("tidemark".to_string(), "Apply".to_string())]);
    // Git no longer has `b` nor the label: the apply removes them.
    let applied = cms
        .patch(
            "legacy",
            &tidemark(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "legacy"}, "data": {"a": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        applied.data.unwrap(),
        [("a".to_string(), "1".to_string())].into()
    );
    assert!(applied.metadata.labels.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn an_apply_with_fields_the_kind_does_not_declare_fails() {
    let c = TestCluster::start().await;
    let deploys: Api<Deployment> = Api::namespaced(c.client.clone(), &c.ns);
    let mut d = deployment(Some(1), "nginx", json!({}));
    d["spec"]["replica"] = json!(2);
    let e = api_error(
        deploys
            .patch("web", &tidemark().dry_run(), &Patch::Apply(d))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 500);
    assert!(
        e.message
            .contains(".spec.replica: field not declared in schema"),
        "{}",
        e.message
    );
    let mut d = deployment(Some(1), "nginx", json!({}));
    d["spec"]["replicas"] = json!("2");
    let e = api_error(
        deploys
            .patch("web", &tidemark().dry_run(), &Patch::Apply(d))
            .await
            .unwrap_err(),
    );
    assert!(
        e.message
            .contains(".spec.replicas: expected numeric (int or float), got string"),
        "{}",
        e.message
    );

    // A quantity that is none: apply cannot convert it, a create cannot decode it.
    let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "lots"}}}});
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), &c.ns);
    let e = api_error(
        pvcs.patch("data", &tidemark().dry_run(), &Patch::Apply(pvc.clone()))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 500);
    assert!(
        e.message.ends_with(
            "unable to convert unstructured object to /v1, Kind=PersistentVolumeClaim: \
             quantities must match the regular expression \
             '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        ),
        "{}",
        e.message
    );
    let e = api_error(
        pvcs.create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &serde_json::from_value(pvc).unwrap(),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
}

fn gadget_crd(group: &str) -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("gadgets.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"kind": "Gadget", "plural": "gadgets", "singular": "gadget", "listKind": "GadgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "size": {"type": "integer"},
                        "mode": {"type": "string", "default": "fast"},
                        "port": {"x-kubernetes-int-or-string": true},
                        "parts": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                            "items": {"type": "object", "required": ["name"],
                                "properties": {"name": {"type": "string"}, "count": {"type": "integer", "default": 1}}}}}}}}}}]}})
}

#[tokio::test]
async fn a_custom_resource_is_not_found_until_its_crd_is_established() {
    let c = TestCluster::start().await;
    // A group of its own, so that runs on a shared cluster do not meet.
    let group = format!("{}.tidemark.dev", c.ns);
    let gadgets = dynamic(&c, &group, "v1", "Gadget", "gadgets");
    let gadget = |parts: Value| {
        json!({"apiVersion": format!("{group}/v1"), "kind": "Gadget", "metadata": {"name": "g1"},
            "spec": {"size": 3, "port": "http", "parts": parts}})
    };
    // Not served yet: the same 404 as for any path the server does not know.
    for e in [
        api_error(gadgets.get("g1").await.unwrap_err()),
        api_error(
            gadgets
                .patch(
                    "g1",
                    &tidemark().dry_run(),
                    &Patch::Apply(gadget(json!([]))),
                )
                .await
                .unwrap_err(),
        ),
    ] {
        assert_eq!((e.code, e.message.as_str()), (404, "404 page not found"));
    }

    let crds: Api<DynamicObject> = Api::all_with(
        c.client.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
        )),
    );
    let name = format!("gadgets.{group}");
    crds.patch(&name, &tidemark(), &Patch::Apply(gadget_crd(&group)))
        .await
        .unwrap();
    let established = eventually("the CRD to be established", || async {
        let crd = crds.get(&name).await.ok()?;
        crd.data["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
            .then_some(crd)
    })
    .await;
    assert_eq!(
        established.data["status"]["acceptedNames"]["kind"],
        json!("Gadget")
    );
    assert_eq!(established.data["status"]["storedVersions"], json!(["v1"]));

    let served = eventually("discovery to serve Gadget", || async {
        let d = Discovery::new(c.client.clone())
            .filter(&[&group])
            .run()
            .await
            .ok()?;
        d.resolve_gvk(&GroupVersionKind::gvk(&group, "v1", "Gadget"))
            .map(|(_, caps)| caps)
    })
    .await;
    assert_eq!(served.scope, kube::discovery::Scope::Namespaced);

    // Its schema's list keys apply: parts merge by name.
    let stored = eventually("the Gadget to apply", || async {
        gadgets
            .patch(
                "g1",
                &tidemark(),
                &Patch::Apply(gadget(json!([{"name": "a", "count": 1}, {"name": "b"}]))),
            )
            .await
            .ok()
    })
    .await;
    assert_eq!(stored.data["spec"]["port"], json!("http"));
    // The schema's defaults are filled in.
    assert_eq!(stored.data["spec"]["mode"], json!("fast"));
    assert_eq!(
        stored.data["spec"]["parts"][1],
        json!({"name": "b", "count": 1})
    );
    // Fields it does not declare: an apply fails, a create drops them.
    let mut odd = gadget(json!([]));
    odd["spec"]["colour"] = json!("red");
    let e = api_error(
        gadgets
            .patch("g1", &tidemark().dry_run(), &Patch::Apply(odd.clone()))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 500, "{e:?}");
    assert!(
        e.message
            .ends_with(".spec.colour: field not declared in schema"),
        "{}",
        e.message
    );
    odd["metadata"]["name"] = json!("g2");
    let created = gadgets
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &serde_json::from_value(odd).unwrap(),
        )
        .await
        .unwrap();
    assert!(created.data["spec"].get("colour").is_none());
    assert_eq!(created.data["spec"]["parts"], json!([]));
    let other = PatchParams::apply("other").force();
    gadgets
        .patch(
            "g1",
            &other,
            &Patch::Apply(
                json!({"apiVersion": format!("{group}/v1"), "kind": "Gadget",
            "metadata": {"name": "g1"}, "spec": {"parts": [{"name": "c"}]}}),
            ),
        )
        .await
        .unwrap();
    let merged = gadgets.get("g1").await.unwrap();
    let parts: Vec<&str> = merged.data["spec"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(parts, ["a", "b", "c"]);

    // And its schema is published in OpenAPI v3.
    let path = format!("apis/{group}/v1");
    let doc = eventually("the CRD's OpenAPI document", || async {
        let (_, index) = raw(&c, "GET", "/openapi/v3", "application/json", None).await;
        let url = index["paths"][&path]["serverRelativeURL"]
            .as_str()?
            .to_owned();
        let (code, doc) = raw(&c, "GET", &url, "application/json", None).await;
        (code == 200).then_some(doc)
    })
    .await;
    let reversed: Vec<&str> = group.split('.').rev().collect();
    let schema = &doc["components"]["schemas"][format!("{}.v1.Gadget", reversed.join("."))];
    assert_eq!(
        schema["x-kubernetes-group-version-kind"],
        json!([{"group": group, "kind": "Gadget", "version": "v1"}])
    );
    assert_eq!(
        schema["properties"]["spec"]["properties"]["parts"]["x-kubernetes-list-map-keys"],
        json!(["name"])
    );
    assert_eq!(
        schema["properties"]["metadata"]["allOf"][0]["$ref"],
        json!("#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
    );

    crds.delete(&name, &DeleteParams::default()).await.unwrap();
}

fn env_deployment(env: &[&str], replicas: Option<i64>) -> Value {
    let mut d = deployment(replicas, "nginx", json!({}));
    d["spec"]["template"]["spec"]["containers"][0]["env"] = env
        .iter()
        .map(|n| json!({"name": n, "value": n.to_lowercase()}))
        .collect();
    d
}

#[tokio::test]
async fn keyed_items_merge_in_the_api_servers_order_and_what_others_own_stays() {
    let c = TestCluster::start().await;
    let deploys: Api<Deployment> = Api::namespaced(c.client.clone(), &c.ns);
    let env = |d: &Deployment| {
        d.spec.template.spec.as_ref().unwrap().containers[0]
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.name)
            .collect::<Vec<_>>()
    };
    deploys
        .patch(
            "web",
            &tidemark(),
            &Patch::Apply(env_deployment(&["A", "B", "C"], Some(2))),
        )
        .await
        .unwrap();
    // Another manager adds X (a new item: no conflict) and scales with a merge patch.
    let mut x = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "web", "env": [{"name": "X", "value": "x"}]}]}}}});
    x["spec"]["selector"] = json!({"matchLabels": {"app": "web"}});
    deploys
        .patch("web", &PatchParams::apply("other"), &Patch::Apply(x))
        .await
        .unwrap();
    deploys
        .patch(
            "web",
            &PatchParams {
                field_manager: Some("scaler".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    // Git reorders, drops B, adds D and no longer sets replicas.
    let d = deploys
        .patch(
            "web",
            &tidemark(),
            &Patch::Apply(env_deployment(&["C", "D", "A"], None)),
        )
        .await
        .unwrap();
    assert_eq!(env(&d), ["C", "X", "D", "A"]);
    assert_eq!(d.spec.replicas, Some(5));
    // A strategic merge patch: patched items in patch order (new ones first), the others
    // before the patched items that follow them.
    let d = deploys
        .patch(
            "web",
            &PatchParams { field_manager: Some("smp".into()), ..Default::default() },
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "env": [{"name": "N", "value": "n"}, {"name": "A", "value": "changed"}]}]}}}})),
        )
        .await
        .unwrap();
    assert_eq!(env(&d), ["N", "C", "X", "D", "A"]);
}

#[tokio::test]
async fn defaults_the_api_server_fills_in_are_filled_in() {
    let c = TestCluster::start().await;
    let dry = |path: String, body: Value| {
        let c = &c;
        async move {
            let (code, obj) = raw(
                c,
                "PATCH",
                &format!("{path}?fieldManager=tidemark&force=true&dryRun=All"),
                "application/apply-patch+yaml",
                Some(body),
            )
            .await;
            assert_eq!(code, 201, "{obj}");
            obj
        }
    };
    let ns = &c.ns;
    let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": {
        "containers": [
            {"name": "a", "image": "nginx:1.27", "ports": [{"containerPort": 80}],
             "readinessProbe": {"httpGet": {"port": 80}}, "livenessProbe": {"tcpSocket": {"port": 80}},
             "env": [{"name": "P", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]},
            {"name": "b", "image": "busybox"},
            {"name": "c", "image": "busybox:latest"},
            {"name": "d", "image": "registry:5000/busybox@sha256:0000000000000000000000000000000000000000000000000000000000000000"}],
        "volumes": [{"name": "cm", "configMap": {"name": "x"}}, {"name": "s", "secret": {"secretName": "x"}},
                    {"name": "h", "hostPath": {"path": "/tmp"}},
                    {"name": "d", "downwardAPI": {"items": [{"path": "p", "fieldRef": {"fieldPath": "metadata.name"}}]}}]}});
    let d = dry(
        format!("/apis/apps/v1/namespaces/{ns}/deployments/web"),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template}}),
    )
    .await;
    let spec = &d["spec"];
    assert_eq!(
        (
            &spec["replicas"],
            &spec["revisionHistoryLimit"],
            &spec["progressDeadlineSeconds"]
        ),
        (&json!(1), &json!(10), &json!(600))
    );
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    );
    let pod = &spec["template"]["spec"];
    for (f, want) in [
        ("restartPolicy", json!("Always")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("dnsPolicy", json!("ClusterFirst")),
        ("securityContext", json!({})),
        ("schedulerName", json!("default-scheduler")),
    ] {
        assert_eq!(pod[f], want, "{f}");
    }
    let policies: Vec<&Value> = (0..4)
        .map(|i| &pod["containers"][i]["imagePullPolicy"])
        .collect();
    assert_eq!(
        policies,
        [
            &json!("IfNotPresent"),
            &json!("Always"),
            &json!("Always"),
            &json!("IfNotPresent")
        ]
    );
    let a = &pod["containers"][0];
    assert_eq!(
        (
            &a["terminationMessagePath"],
            &a["terminationMessagePolicy"],
            &a["resources"]
        ),
        (&json!("/dev/termination-log"), &json!("File"), &json!({}))
    );
    assert_eq!(
        a["ports"][0],
        json!({"containerPort": 80, "protocol": "TCP"})
    );
    assert_eq!(
        a["readinessProbe"],
        json!({"httpGet": {"path": "/", "port": 80, "scheme": "HTTP"}, "timeoutSeconds": 1,
            "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
    );
    assert_eq!(
        a["env"][0]["valueFrom"]["fieldRef"]["apiVersion"],
        json!("v1")
    );
    assert_eq!(pod["volumes"][0]["configMap"]["defaultMode"], json!(420));
    assert_eq!(pod["volumes"][1]["secret"]["defaultMode"], json!(420));
    assert_eq!(
        pod["volumes"][2]["hostPath"],
        json!({"path": "/tmp", "type": ""})
    );
    assert_eq!(
        pod["volumes"][3]["downwardAPI"],
        json!({"defaultMode": 420, "items": [{"path": "p", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}]})
    );

    let small = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "a", "image": "nginx:1"}]}});
    let sts = dry(
        format!("/apis/apps/v1/namespaces/{ns}/statefulsets/web"),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "serviceName": "web", "template": small,
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}}}}]}}),
    )
    .await;
    assert_eq!(sts["spec"]["podManagementPolicy"], json!("OrderedReady"));
    assert_eq!(
        sts["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    );
    assert_eq!(
        sts["spec"]["persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );
    let claim = &sts["spec"]["volumeClaimTemplates"][0];
    assert_eq!(
        (
            &claim["apiVersion"],
            &claim["kind"],
            &claim["spec"]["volumeMode"],
            &claim["status"]
        ),
        (
            &json!("v1"),
            &json!("PersistentVolumeClaim"),
            &json!("Filesystem"),
            &json!({"phase": "Pending"})
        )
    );
    let ds = dry(
        format!("/apis/apps/v1/namespaces/{ns}/daemonsets/web"),
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": small}}),
    )
    .await;
    assert_eq!(
        ds["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}})
    );
    let job = dry(
        format!("/apis/batch/v1/namespaces/{ns}/jobs/once"),
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "a", "image": "busybox:1"}]}}}}),
    )
    .await;
    let uid = job["metadata"]["uid"].clone();
    for (f, want) in [
        ("parallelism", json!(1)),
        ("completions", json!(1)),
        ("backoffLimit", json!(6)),
        ("completionMode", json!("NonIndexed")),
        ("suspend", json!(false)),
        ("manualSelector", json!(false)),
        ("podReplacementPolicy", json!("TerminatingOrFailed")),
        (
            "selector",
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
        ),
    ] {
        assert_eq!(job["spec"][f], want, "{f}");
    }
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["job-name"],
        json!("once")
    );
    let cron = dry(
        format!("/apis/batch/v1/namespaces/{ns}/cronjobs/nightly"),
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "a", "image": "busybox:1"}]}}}}}}),
    )
    .await;
    for (f, want) in [
        ("concurrencyPolicy", json!("Allow")),
        ("suspend", json!(false)),
        ("successfulJobsHistoryLimit", json!(3)),
        ("failedJobsHistoryLimit", json!(1)),
    ] {
        assert_eq!(cron["spec"][f], want, "{f}");
    }
    let svc = dry(
        format!("/api/v1/namespaces/{ns}/services/web"),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81, "targetPort": "http"}]}}),
    )
    .await;
    for (f, want) in [
        ("type", json!("ClusterIP")),
        ("sessionAffinity", json!("None")),
        ("internalTrafficPolicy", json!("Cluster")),
    ] {
        assert_eq!(svc["spec"][f], want, "{f}");
    }
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "a", "port": 80, "protocol": "TCP", "targetPort": 80},
               {"name": "b", "port": 81, "protocol": "TCP", "targetPort": "http"}])
    );
    let sticky = dry(
        format!("/api/v1/namespaces/{ns}/services/sticky"),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "sticky"},
            "spec": {"type": "NodePort", "sessionAffinity": "ClientIP", "ports": [{"port": 80}]}}),
    )
    .await;
    assert_eq!(
        sticky["spec"]["sessionAffinityConfig"],
        json!({"clientIP": {"timeoutSeconds": 10800}})
    );
    assert_eq!(sticky["spec"]["externalTrafficPolicy"], json!("Cluster"));
    let secret = dry(
        format!("/api/v1/namespaces/{ns}/secrets/creds"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "stringData": {"a": "b"}}),
    )
    .await;
    assert_eq!(secret["type"], json!("Opaque"));
    assert_eq!(secret["data"], json!({"a": "Yg=="}));
    let binding = dry(
        format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/view"),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "view"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "u"}, {"kind": "ServiceAccount", "name": "s", "namespace": ns}]}),
    )
    .await;
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "User", "name": "u", "apiGroup": "rbac.authorization.k8s.io"},
               {"kind": "ServiceAccount", "name": "s", "namespace": ns}])
    );
    let other = format!("{ns}-defaults");
    let namespace = dry(
        format!("/api/v1/namespaces/{other}"),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}}),
    )
    .await;
    assert_eq!(namespace["spec"], json!({"finalizers": ["kubernetes"]}));
    assert_eq!(
        namespace["metadata"]["labels"],
        json!({"kubernetes.io/metadata.name": other})
    );
}

#[tokio::test]
async fn fields_the_api_server_will_not_change_are_refused() {
    let c = TestCluster::start().await;
    let deploys: Api<Deployment> = Api::namespaced(c.client.clone(), &c.ns);
    deploys
        .patch(
            "web",
            &tidemark(),
            &Patch::Apply(deployment(Some(1), "nginx:1", json!({}))),
        )
        .await
        .unwrap();
    // A new selector (and labels to match): the selector is immutable.
    let moved = serde_json::to_string(&deployment(Some(1), "nginx:1", json!({})))
        .unwrap()
        .replace("\"app\":\"web\"", "\"app\":\"web2\"");
    let e = api_error(
        deploys
            .patch(
                "web",
                &tidemark().dry_run(),
                &Patch::Apply(serde_json::from_str::<Value>(&moved).unwrap()),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message
            .starts_with("Deployment.apps \"web\" is invalid: spec.selector: Invalid value"),
        "{}",
        e.message
    );
    assert!(e.message.ends_with("field is immutable"), "{}", e.message);
    // A selector its template does not match.
    let mut odd = deployment(Some(1), "nginx:1", json!({}));
    odd["metadata"]["name"] = json!("odd");
    odd["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    let e = api_error(
        deploys
            .patch("odd", &tidemark().dry_run(), &Patch::Apply(odd))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .contains("`selector` does not match template `labels`"),
        "{}",
        e.message
    );

    // A Job's template.
    let jobs: Api<Job> = Api::namespaced(c.client.clone(), &c.ns);
    let job = |image: &str| {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "a", "image": image}]}}}})
    };
    jobs.patch("once", &tidemark(), &Patch::Apply(job("busybox:1")))
        .await
        .unwrap();
    let e = api_error(
        jobs.patch(
            "once",
            &tidemark().dry_run(),
            &Patch::Apply(job("busybox:2")),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message.contains("spec.template: Invalid value")
            && e.message.ends_with("field is immutable"),
        "{}",
        e.message
    );

    // A binding's role.
    let bindings: Api<DynamicObject> = dynamic(
        &c,
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
    );
    let binding = |role: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "b"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "User", "name": "u"}]})
    };
    bindings
        .patch("b", &tidemark(), &Patch::Apply(binding("view")))
        .await
        .unwrap();
    let e = api_error(
        bindings
            .patch("b", &tidemark().dry_run(), &Patch::Apply(binding("edit")))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message.ends_with("cannot change roleRef"),
        "{}",
        e.message
    );

    // An immutable ConfigMap's data.
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), &c.ns);
    let frozen = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "frozen"}, "immutable": true, "data": {"k": v}});
    cms.patch("frozen", &tidemark(), &Patch::Apply(frozen("1")))
        .await
        .unwrap();
    let e = api_error(
        cms.patch("frozen", &tidemark().dry_run(), &Patch::Apply(frozen("2")))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .ends_with("data: Forbidden: field is immutable when `immutable` is set"),
        "{}",
        e.message
    );
}
