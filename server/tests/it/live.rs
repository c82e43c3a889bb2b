//! The live resource tree, live manifests, Kubernetes Events on the timeline, pod logs and
//! resource actions, through a running Tidemark. On the real control plane (`make test-kube`,
//! `live::` in KUBE_TESTS) the controllers make the ReplicaSets, Pods and Events, and kwok serves
//! pod logs from a file (scripts/kube-env.sh); on a sandbox, its simulated Deployment controller
//! makes the ReplicaSets and Pods and it writes synthetic log lines. Events come only from real
//! controllers: those assertions run on the control plane.

use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject};
use serde_json::{json, Value};
use server::config::{ApplicationSettings, RepositorySettings};

use crate::git::GitRepo;
use crate::helpers::{bearer_client, TestDb, TestServer};
use crate::sandbox::TestCluster;

fn manifests(ns: &str, extra_pod_spec: &str) -> String {
    let deadline = if extra_pod_spec.is_empty() {
        ""
    } else {
        "  progressDeadlineSeconds: 10\n"
    };
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n\
apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n{deadline}  replicas: 2\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: web, image: 'nginx:1.27'}}]{extra_pod_spec}}}\n---\n\
apiVersion: v1\nkind: Secret\nmetadata: {{name: db}}\nstringData: {{password: hunter2}}\n---\n\
apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{mode: fast}}\n"
    )
}

struct Live {
    server: TestServer,
    cluster: TestCluster,
    ns: String,
    _repo: GitRepo,
    _cache: tempfile::TempDir,
}

/// Tidemark on the cluster under test with auto-synced application `shop` (Deployment `web`
/// with 2 replicas, Secret `db`, ConfigMap `settings`), once it is Synced.
async fn start(extra_pod_spec: &str) -> Live {
    let cluster = TestCluster::start().await;
    let ns = if cluster.sandbox.is_some() {
        "shop".to_owned()
    } else {
        cluster.ns.clone()
    };
    let repo = GitRepo::new();
    repo.write("apps/shop/all.yaml", &manifests(&ns, extra_pod_spec));
    repo.commit("shop");
    let cache = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite();
    let mut s = db.settings();
    s.git.cache_dir = cache.path().to_path_buf();
    s.repositories = vec![RepositorySettings::new("demo", repo.url())];
    s.clusters = vec![cluster.cluster_settings("c")];
    s.applications = vec![ApplicationSettings {
        name: "shop".into(),
        project: "demo".into(),
        repository: "demo".into(),
        path: "apps/shop".into(),
        revision: "main".into(),
        cluster: "c".into(),
        namespace: ns.clone(),
        sync_policy: app::model::SyncPolicy::Auto,
        self_heal: false,
        prune: true,
        ignore: Vec::new(),
        approvals: Default::default(),
        compare: Default::default(),
        require_signed: false,
        source: None,
        helm: Default::default(),
    }];
    let server = TestServer::start(s).await;
    wait(Duration::from_secs(120), "shop Synced", || async {
        server
            .store
            .app_status("shop")
            .await
            .unwrap()
            .is_some_and(|st| st.sync_status == "Synced")
    })
    .await;
    Live {
        server,
        cluster,
        ns,
        _repo: repo,
        _cache: cache,
    }
}

async fn wait<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = client.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn find<'a>(nodes: &'a Value, kind: &str) -> Vec<&'a Value> {
    let mut out = Vec::new();
    for n in nodes.as_array().into_iter().flatten() {
        if n["kind"] == kind {
            out.push(n);
        }
        out.extend(find(&n["children"], kind));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tree_shows_descendants_with_health_and_actions_and_logs_are_checked_and_audited() {
    let l = start("").await;
    let base = format!("{}/api/v1/applications/shop", l.server.base);
    let real = l.cluster.sandbox.is_none();
    // Deployment → ReplicaSet → Pods, from the watch caches (kwok runs the pods on a real
    // control plane).
    let want_pods = 2;
    let started = Instant::now();
    let tree = loop {
        let (code, body) = get_json(&l.server.client, &format!("{base}/tree")).await;
        assert_eq!(code, 200, "{body}");
        let running = find(&body["nodes"], "Pod")
            .iter()
            .filter(|p| p["status"] == "Running" && p["health"] == "Healthy")
            .count();
        if running == want_pods {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the tree's pods: {body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let deployments = find(&tree["nodes"], "Deployment");
    assert_eq!(deployments.len(), 1, "{tree}");
    let d = deployments[0];
    assert_eq!(d["in_git"], true);
    let rs = find(&d["children"], "ReplicaSet");
    assert!(!rs.is_empty(), "{tree}");
    assert_eq!(rs[0]["in_git"], false);
    let pods: Vec<&Value> = rs
        .iter()
        .flat_map(|r| find(&r["children"], "Pod"))
        .collect();
    assert_eq!(pods.len(), want_pods, "{tree}");
    assert!(!pods[0]["created"].as_str().unwrap().is_empty());
    let pod_name = pods[0]["name"].as_str().unwrap().to_owned();
    // Filters keep matching nodes and their ancestors.
    let (_, only_pods) = get_json(&l.server.client, &format!("{base}/tree?kind=Pod")).await;
    assert_eq!(find(&only_pods["nodes"], "Secret").len(), 0);
    assert_eq!(find(&only_pods["nodes"], "Pod").len(), want_pods);

    // The live manifest: managedFields hidden unless asked, Secret values never shown.
    let secret_url = format!(
        "{base}/live?apiVersion=v1&kind=Secret&namespace={}&name=db",
        l.ns
    );
    let (code, secret) = get_json(&l.server.client, &secret_url).await;
    assert_eq!(code, 200, "{secret}");
    let text = secret.to_string();
    assert!(
        !text.contains("hunter2") && !text.contains("aHVudGVyMg"),
        "{text}"
    );
    assert_eq!(secret["live"]["data"]["password"], "(redacted)", "{secret}");
    assert_eq!(
        secret["desired"]["data"]["password"], "(redacted)",
        "{secret}"
    );
    assert!(secret["live"]["metadata"].get("managedFields").is_none());
    let (_, with_managed) = get_json(
        &l.server.client,
        &format!("{secret_url}&managed_fields=true"),
    )
    .await;
    assert!(with_managed["live"]["metadata"]["managedFields"].is_array());
    assert!(!with_managed.to_string().contains("hunter2"));
    let (_, pod_live) = get_json(
        &l.server.client,
        &format!(
            "{base}/live?apiVersion=v1&kind=Pod&namespace={}&name={pod_name}",
            l.ns
        ),
    )
    .await;
    assert_eq!(pod_live["live"]["metadata"]["name"], pod_name.as_str());
    assert!(pod_live["desired"].is_null(), "a descendant is not in Git");
    // An object outside the application's tree is not readable through it.
    let (code, body) = get_json(
        &l.server.client,
        &format!("{base}/live?apiVersion=v1&kind=Namespace&name=kube-system"),
    )
    .await;
    assert_eq!(code, 404, "{body}");

    // Actions: a viewer is refused (and the refusal audited); a deployer restarts.
    let viewer = bearer_client(&l.server.token(app::model::Role::Viewer, None).await);
    let deployer = bearer_client(&l.server.token(app::model::Role::Deployer, None).await);
    let restart = json!({"action": "restart", "apiVersion": "apps/v1", "kind": "Deployment",
                         "namespace": l.ns, "name": "web", "reason": "pick up the new certificate"});
    let r = viewer
        .post(format!("{base}/resources/actions"))
        .json(&restart)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = deployer
        .post(format!("{base}/resources/actions"))
        .json(&restart)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("restarted Deployment"),
        "{body}"
    );
    let deploy: Api<DynamicObject> = Api::namespaced_with(
        l.cluster.client.clone(),
        &l.ns,
        &kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
            "apps",
            "v1",
            "Deployment",
        )),
    );
    let d = deploy.get("web").await.unwrap();
    let d = serde_json::to_value(&d).unwrap();
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string(),
        "{d}"
    );
    let managers: Vec<&str> = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(managers.contains(&"tidemark-actions"), "{managers:?}");
    // Not drift: the restart annotation is not Git's and stays after a sync.
    let r = l
        .server
        .client
        .post(format!("{base}/sync"))
        .json(&json!({"dry_run": true}))
        .send()
        .await
        .unwrap();
    let preview: Value = r.json().await.unwrap();
    assert!(
        !preview.to_string().contains("restartedAt"),
        "a restart shows in the sync preview: {preview}"
    );
    // Kinds an action does not apply to, and objects outside the tree, are refused.
    let bad = deployer
        .post(format!("{base}/resources/actions"))
        .json(
            &json!({"action": "restart", "apiVersion": "v1", "kind": "ConfigMap",
                      "namespace": l.ns, "name": "settings"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let outside = deployer
        .post(format!("{base}/resources/actions"))
        .json(
            &json!({"action": "delete", "apiVersion": "v1", "kind": "Pod",
                      "namespace": "kube-system", "name": "etcd"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(outside.status(), 404);
    // Deleting a pod of the tree (on a real cluster the restart replaced the pods: take one of
    // the current ones).
    let (_, now) = get_json(&l.server.client, &format!("{base}/tree")).await;
    let pod_name = find(&now["nodes"], "Pod")
        .first()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .unwrap_or(pod_name);
    let r = deployer
        .post(format!("{base}/resources/actions"))
        .json(
            &json!({"action": "delete", "apiVersion": "v1", "kind": "Pod",
                      "namespace": l.ns, "name": pod_name}),
        )
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert_eq!(status, 200, "{}", r.text().await.unwrap());
    let audit = l.server.store.audit_rows(0, 1000).await.unwrap();
    let actions: Vec<(&str, &str)> = audit
        .iter()
        .map(|r| (r.event.action.as_str(), r.event.outcome.as_str()))
        .collect();
    assert!(
        actions.contains(&("resource_restart", "success")),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("resource_delete", "success")),
        "{actions:?}"
    );
    assert!(
        audit.iter().any(|r| r.event.outcome == "denied"
            && r.event.details.to_string().contains("resource_action")),
        "the viewer's refusal is audited: {actions:?}"
    );
    let (_, timeline) = get_json(
        &l.server.client,
        &format!("{base}/timeline?kinds=resource_action"),
    )
    .await;
    let messages: Vec<&str> = timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        messages.iter().any(
            |m| m.contains("restarted Deployment") && m.contains("pick up the new certificate")
        ),
        "{messages:?}"
    );

    if real {
        // Kubernetes Events from the controllers reach the timeline, named by their object.
        wait(
            Duration::from_secs(60),
            "a ScalingReplicaSet event",
            || async {
                let (_, t) = get_json(
                    &l.server.client,
                    &format!("{base}/timeline?kinds=kube_event"),
                )
                .await;
                t["items"].as_array().into_iter().flatten().any(|e| {
                    e["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("Normal ScalingReplicaSet Deployment/web:"))
                })
            },
        )
        .await;
    }

    // Pod logs — the sandbox writes synthetic lines, kwok serves a file of 50 lines through the
    // real API server's pods/log proxy (kube-env.sh's ClusterLogs): viewers are refused,
    // deployers read, every read audited; tail, container choice, download and follow.
    // After the restart and the deletion, wait until the rollout settled: exactly the two pods
    // of the new ReplicaSet, Running, and the same on two reads a second apart (an old pod
    // still shown while it terminates would be gone by the time its log is read).
    let started = Instant::now();
    let mut previous: Vec<String> = Vec::new();
    let log_pod = loop {
        let (_, t) = get_json(&l.server.client, &format!("{base}/tree")).await;
        let pods = find(&t["nodes"], "Pod");
        let names: Vec<String> = pods
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        let settled = pods.len() == 2 && pods.iter().all(|p| p["status"] == "Running");
        if settled && names == previous {
            break names[0].clone();
        }
        previous = if settled { names } else { Vec::new() };
        if settled {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            continue;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "a running pod: {t}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let (other_container, has) = ("web", "it has: web");
    let logs = format!("{base}/pods/{}/{log_pod}/logs", l.ns);
    let r = viewer
        .get(format!("{logs}?container=web"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = deployer
        .get(format!("{logs}?container=web&tail=5"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(text.lines().all(|l| l.contains(" line ")), "{text}");
    let r = deployer
        .get(format!("{logs}?container={other_container}&download=true"))
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains(&format!("{log_pod}_{other_container}.log")));
    let r = deployer
        .get(format!("{logs}?container=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains(has));
    let r = deployer
        .get(format!("{base}/pods/kube-system/etcd/logs"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "pods outside the tree are not readable");
    // Follow: Server-Sent Events, one `line` per log line as it is written.
    let mut r = deployer
        .get(format!("{logs}?container=web&tail=1&follow=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut seen = String::new();
    let started = Instant::now();
    // The sandbox writes a line a second; kwok's file has no more lines than the one asked for.
    let want = if real { 1 } else { 3 };
    while seen.matches("event: line").count() < want {
        assert!(started.elapsed() < Duration::from_secs(20), "{seen}");
        let chunk = tokio::time::timeout(Duration::from_secs(10), r.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(r);
    assert!(
        real || seen.contains("web line 51"),
        "a line written after the request: {seen}"
    );
    let audit = l.server.store.audit_rows(0, 1000).await.unwrap();
    let reads = audit
        .iter()
        .filter(|r| r.event.action == "pod_logs" && r.event.outcome == "success")
        .count();
    assert!(reads >= 3, "every read is audited ({reads})");

    // An object Git names but this application did not apply (here: its tracking annotation
    // rewritten to another application's) is not shown live, and nothing acts on it.
    mark_foreign(&l, "", "ConfigMap", "settings").await;
    let started = Instant::now();
    loop {
        let (_, t) = get_json(&l.server.client, &format!("{base}/tree")).await;
        let cm = find(&t["nodes"], "ConfigMap");
        if cm
            .first()
            .is_some_and(|c| c["status"] == "Not this application's")
        {
            assert_eq!(cm[0]["uid"], "", "{t}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{t}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (code, body) = get_json(
        &l.server.client,
        &format!(
            "{base}/live?apiVersion=v1&kind=ConfigMap&namespace={}&name=settings",
            l.ns
        ),
    )
    .await;
    assert_eq!(code, 409, "{body}");
    assert!(!body.to_string().contains("fast"), "no live data: {body}");
    // Nor is it restarted: Git naming a Deployment does not make it this application's.
    mark_foreign(&l, "apps", "Deployment", "web").await;
    let started = Instant::now();
    loop {
        let r = deployer
            .post(format!("{base}/resources/actions"))
            .json(&restart)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        if status == 409 {
            assert!(
                body["message"].as_str().unwrap().contains("not applied by"),
                "{body}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Rewrites the tracking annotation of `kind` `name` (API version `v1` of `group`) in the test's namespace to another
/// application's (`payments`): Git still names it, but this application no longer applied it.
async fn mark_foreign(l: &Live, group: &str, kind: &str, name: &str) {
    let objects: Api<DynamicObject> = Api::namespaced_with(
        l.cluster.client.clone(),
        &l.ns,
        &kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(group, "v1", kind)),
    );
    objects
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"annotations": {
                "tidemark.dev/tracking-id": format!("payments:{group}/{kind}:{}/{name}", l.ns)}}})),
        )
        .await
        .unwrap();
}

/// On the real control plane: pods that cannot be scheduled give Warning events on the
/// timeline, and the Deployment passing its progress deadline turns the application Degraded
/// with a health change that names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_rollout_warns_on_the_timeline_and_the_health_change_names_the_deployment() {
    if std::env::var("TIDEMARK_TEST_KUBECONFIG").is_err() {
        eprintln!("needs the real control plane (make test-kube): the sandbox runs no controllers");
        return;
    }
    // No node has this label: the scheduler reports FailedScheduling; the Deployment controller
    // gives up after its 10 s progress deadline (ProgressDeadlineExceeded).
    let l = start(", nodeSelector: {tidemark.dev/nowhere: 'true'}").await;
    let base = format!("{}/api/v1/applications/shop", l.server.base);
    wait(
        Duration::from_secs(120),
        "a FailedScheduling warning",
        || async {
            let (_, t) = get_json(
                &l.server.client,
                &format!("{base}/timeline?kinds=kube_warning"),
            )
            .await;
            t["items"].as_array().into_iter().flatten().any(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("Warning FailedScheduling Pod/web-"))
            })
        },
    )
    .await;
    wait(
        Duration::from_secs(120),
        "health Degraded naming the Deployment",
        || async {
            let (_, t) = get_json(&l.server.client, &format!("{base}/timeline?kinds=health")).await;
            t["items"].as_array().into_iter().flatten().any(|e| {
                e["message"].as_str().is_some_and(|m| {
                    m.contains("→ Degraded: Deployment/web:") && m.contains("progress")
                })
            })
        },
    )
    .await;
}
