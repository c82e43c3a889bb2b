//! `deploy/kubernetes/`: the manifests that run Tidemark in a cluster (README, "Running in
//! Kubernetes"). One test reads them as kubectl and Tidemark read them and checks that the files
//! agree with each other and with Tidemark's settings; the other applies them to the cluster
//! under test. In `make test` that is the real control plane (`TIDEMARK_TEST_KUBECONFIG`,
//! `deploy::` in the Makefile's KUBE_TESTS): every object must pass the API server's server-side
//! dry run, strict field validation and the namespace's `restricted` Pod Security admission, the
//! Deployment must become Available with its replicas on different nodes, and Tidemark's service
//! account must be able to do what Tidemark does (and no more). Without it the manifests are
//! applied to a sandbox, which serves every kind of them but the PodDisruptionBudget.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, WatchParams};
use serde_json::{json, Value};
use server::cluster::client::ClusterClient;
use server::config::{ClusterSettings, Settings};
use server::render::{read_manifests, Limits};

use crate::sandbox::TestCluster;

const NS: &str = "tidemark";
const SA: &str = "system:serviceaccount:tidemark:tidemark";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// kubectl with nothing from the machine's `~/.kube`: the test's kubeconfig, or an empty one
/// plus `--server` for a sandbox (plain HTTP, no credentials).
struct Kubectl {
    args: Vec<String>,
    home: tempfile::TempDir,
}

impl Kubectl {
    fn new(kubeconfig: Option<&str>, server: Option<&str>) -> Self {
        let home = tempfile::tempdir().unwrap();
        let empty = home.path().join("empty-kubeconfig");
        std::fs::write(&empty, "apiVersion: v1\nkind: Config\n").unwrap();
        let mut args = vec![format!(
            "--kubeconfig={}",
            kubeconfig.map_or_else(|| empty.display().to_string(), str::to_owned)
        )];
        if let Some(server) = server {
            args.push(format!("--server={server}"));
        }
        Self { args, home }
    }

    fn for_cluster(c: &TestCluster) -> Self {
        match (&c.sandbox, std::env::var("TIDEMARK_TEST_KUBECONFIG")) {
            (None, Ok(path)) => Self::new(Some(&path), None),
            _ => Self::new(None, Some(&c.url)),
        }
    }

    /// Exit status, stdout and stderr.
    async fn output(&self, args: &[&str]) -> (bool, String, String) {
        let out = tokio::process::Command::new("kubectl")
            .env("HOME", self.home.path())
            .env_remove("KUBECONFIG")
            .args(&self.args)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("kubectl runs (scripts/setup.sh installs it)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Stdout and stderr; fails the test with both when kubectl exits non-zero.
    async fn run(&self, args: &[&str]) -> (String, String) {
        let (ok, stdout, stderr) = self.output(args).await;
        assert!(ok, "kubectl {args:?} failed:\n{stdout}\n{stderr}");
        (stdout, stderr)
    }
}

/// What `kubectl apply -k deploy/kubernetes` applies, read by Tidemark's own manifest reader.
async fn rendered() -> Vec<Value> {
    let dir = deploy_dir();
    let (text, _) = Kubectl::new(None, None)
        .run(&["kustomize", dir.to_str().unwrap()])
        .await;
    read_manifests(&text, "deploy/kubernetes", &Limits::default())
        .unwrap()
        .objects
}

fn file(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(deploy_dir().join(name)).unwrap();
    read_manifests(&text, name, &Limits::default())
        .unwrap()
        .objects
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let mut found = objects.iter().filter(|o| o["kind"] == kind);
    let first = found.next().unwrap_or_else(|| panic!("no {kind}"));
    assert!(found.next().is_none(), "more than one {kind}");
    first
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

/// `labels` holds every entry of `selector`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().unwrap();
    !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v)
}

#[tokio::test]
async fn manifests_agree_with_each_other_and_with_tidemarks_settings() {
    let objects = rendered().await;
    let names: BTreeSet<(String, String, String)> = objects
        .iter()
        .map(|o| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (
                text(&o["kind"]),
                text(&o["metadata"]["namespace"]),
                text(&o["metadata"]["name"]),
            )
        })
        .collect();
    let want: BTreeSet<(String, String, String)> = [
        ("ClusterRole", "", "tidemark"),
        ("ClusterRoleBinding", "", "tidemark"),
        ("ConfigMap", NS, "tidemark-config"),
        ("Deployment", NS, "tidemark"),
        ("Namespace", "", NS),
        ("PodDisruptionBudget", NS, "tidemark"),
        ("Service", NS, "tidemark"),
        ("ServiceAccount", NS, "tidemark"),
    ]
    .iter()
    .map(|(k, ns, n)| ((*k).to_owned(), (*ns).to_owned(), (*n).to_owned()))
    .collect();
    // The example Secret is not applied by kustomize: people create their own.
    assert_eq!(names, want);

    let ns = find(&objects, "Namespace");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );

    // The ClusterRole: exactly the verbs Tidemark uses, on every kind (it manages what Git holds).
    let role = find(&objects, "ClusterRole");
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": ["*"], "resources": ["*"],
             "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
            {"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/openapi/*", "/version"],
             "verbs": ["get"]}
        ])
    );
    let binding = find(&objects, "ClusterRoleBinding");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "tidemark"})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "tidemark", "namespace": NS}])
    );

    let deployment = find(&objects, "Deployment");
    let spec = &deployment["spec"];
    let pod = &spec["template"]["spec"];
    let labels = &spec["template"]["metadata"]["labels"];
    assert_eq!(spec["replicas"], 3);
    assert!(selects(&spec["selector"]["matchLabels"], labels));
    assert_eq!(pod["serviceAccountName"], "tidemark");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let spread = pod["topologySpreadConstraints"].as_array().unwrap();
    assert!(
        spread
            .iter()
            .any(|t| t["topologyKey"] == "kubernetes.io/hostname"
                && selects(&t["labelSelector"]["matchLabels"], labels)),
        "{spread:?}"
    );
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["image"], "ghcr.io/tidemark/tidemark:latest");
    assert_eq!(
        strings(&c["args"]),
        ["--config", "/etc/tidemark/tidemark.toml", "serve"]
    );
    assert_eq!(
        c["ports"],
        json!([{"name": "http", "containerPort": 3000, "protocol": "TCP"}])
    );
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(
        strings(&c["securityContext"]["capabilities"]["drop"]),
        ["ALL"]
    );
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        assert_eq!(
            c[probe]["httpGet"],
            json!({"path": path, "port": "http"}),
            "{probe}"
        );
    }
    for key in ["cpu", "memory"] {
        assert!(c["resources"]["requests"][key].is_string(), "request {key}");
    }
    assert!(c["resources"]["limits"]["memory"].is_string());
    let pause = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_i64()
        .unwrap();
    assert!(pod["terminationGracePeriodSeconds"].as_i64().unwrap() > pause + 10);

    // Volumes: the ConfigMap's file where --config names it, emptyDirs for /tmp and the Git cache
    // (the root file system is read-only).
    let volume = |name: &str| {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    let mount_of = |path: &Path| {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
            .max_by_key(|m| m["mountPath"].as_str().unwrap().len())
            .map(|m| volume(m["name"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("nothing mounted at {}", path.display()))
    };
    let config_volume = mount_of(Path::new("/etc/tidemark/tidemark.toml"));
    assert_eq!(config_volume["configMap"]["name"], "tidemark-config");
    assert_eq!(
        config_volume["configMap"]["items"],
        json!([{"key": "tidemark.toml", "path": "tidemark.toml"}])
    );
    assert!(mount_of(Path::new("/tmp/x")).get("emptyDir").is_some());

    // The Secret's keys: every variable comes from tidemark-secrets, and the example holds at
    // least each required key.
    let example = file("secret.example.yaml");
    let secret = find(&example, "Secret");
    assert_eq!(secret["metadata"]["name"], "tidemark-secrets");
    assert_eq!(secret["metadata"]["namespace"], NS);
    let mut env: Vec<(String, String)> = Vec::new();
    for var in c["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap().to_owned();
        if let Some(v) = var["value"].as_str() {
            env.push((name, v.to_owned()));
            continue;
        }
        let r = &var["valueFrom"]["secretKeyRef"];
        assert_eq!(r["name"], "tidemark-secrets", "{name}");
        let key = r["key"].as_str().unwrap();
        if r["optional"] != true {
            assert!(
                secret["stringData"][key].is_string(),
                "secret.example.yaml lacks the required key {key}"
            );
        }
        let value = match name.as_str() {
            "TIDEMARK__DATABASE__URL" => "postgres://tidemark:pw@db.example:5432/tidemark",
            // 32 bytes in base64, as `openssl rand -base64 32` prints them.
            "TIDEMARK__SECRETS__KEY" => "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            _ => "a-placeholder-value",
        };
        env.push((name, value.to_owned()));
    }
    assert!(
        env.iter().any(|(k, _)| k == "TIDEMARK__DATABASE__URL"),
        "{env:?}"
    );

    // The ConfigMap is a configuration Tidemark accepts (unknown keys are refused), with the
    // Deployment's variables set: each of them must name a setting.
    let config = find(&objects, "ConfigMap");
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("tidemark.toml");
    std::fs::write(&toml, config["data"]["tidemark.toml"].as_str().unwrap()).unwrap();
    let settings = Settings::load(Some(toml.as_path()), env).unwrap();
    assert_eq!(settings.server.listen.port(), 3000);
    assert!(settings.server.listen.ip().is_unspecified());
    assert!(settings.server.public_url.is_some());
    assert_eq!(
        settings.database.url.expose(),
        "postgres://tidemark:pw@db.example:5432/tidemark"
    );
    assert_eq!(settings.clusters.len(), 1);
    assert!(settings.clusters[0].in_cluster);
    assert!(
        mount_of(settings.git.cache_dir.as_path())
            .get("emptyDir")
            .is_some(),
        "git.cache_dir {} is not on an emptyDir",
        settings.git.cache_dir.display()
    );

    // The Service and the PodDisruptionBudget select the Deployment's pods.
    let service = find(&objects, "Service");
    assert!(selects(&service["spec"]["selector"], labels));
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}])
    );
    let pdb = find(&objects, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 2);
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"], labels));
}

/// `kubectl apply --server-side --validate=strict`, then `extra` flags, then what to apply.
fn apply<'a>(extra: &[&'a str], what: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["apply", "--server-side", "--validate=strict"];
    args.extend_from_slice(extra);
    args.extend_from_slice(what);
    args
}

/// Polls `f` every 200 ms until it returns `Some`, failing after `secs` seconds with `what`.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_apply_and_run_on_the_cluster() {
    let c = TestCluster::start().await;
    let real = c.sandbox.is_none();
    let k = Kubectl::for_cluster(&c);
    let dir = deploy_dir();
    let dir = dir.to_str().unwrap();
    let namespaces: Api<Namespace> = Api::all(c.client.clone());
    // A namespace `tidemark` still terminating from an earlier run on this cluster.
    eventually(120, "namespace tidemark to go", || async {
        match namespaces.get_opt(NS).await.unwrap() {
            Some(n) if n.metadata.deletion_timestamp.is_some() => None,
            _ => Some(()),
        }
    })
    .await;

    // What `kubectl apply -k deploy/kubernetes` applies; the sandbox serves no policy/v1, so it
    // gets the same objects without the PodDisruptionBudget.
    let work = tempfile::tempdir().unwrap();
    let mut objects = rendered().await;
    let target: Vec<String> = if real {
        vec!["-k".into(), dir.into()]
    } else {
        objects.retain(|o| o["kind"] != "PodDisruptionBudget");
        let path = work.path().join("all.yaml");
        let docs: Vec<String> = objects.iter().map(Value::to_string).collect();
        std::fs::write(&path, docs.join("\n---\n")).unwrap();
        vec!["-f".into(), path.display().to_string()]
    };
    let target: Vec<&str> = target.iter().map(String::as_str).collect();

    // A server-side dry run of namespaced objects needs their namespace: it comes first.
    let namespace_file = format!("{dir}/namespace.yaml");
    k.run(&apply(&[], &["-f", &namespace_file])).await;
    let secret_file = format!("{dir}/secret.example.yaml");
    let secret = ["-f", secret_file.as_str()];
    for (what, count) in [(&target[..], objects.len()), (&secret[..], 1)] {
        let (out, err) = k.run(&apply(&["--dry-run=server"], what)).await;
        assert!(!err.contains("Warning"), "{err}");
        assert_eq!(out.lines().count(), count, "{out}");
        for line in out.lines() {
            assert!(
                line.ends_with("serverside-applied (server dry run)"),
                "{out}"
            );
        }
    }

    // For real: the example Secret (placeholders) and the manifests.
    k.run(&apply(&[], &secret)).await;
    let (out, err) = k.run(&apply(&[], &target)).await;
    assert!(!err.contains("Warning"), "{err}");
    assert!(
        out.contains("deployment.apps/tidemark serverside-applied"),
        "{out}"
    );
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), NS);
    let live = deployments.get("tidemark").await.unwrap();
    assert_eq!(live.spec.replicas, Some(3));

    if real {
        on_the_real_control_plane(&c, &k).await;
    }

    let delete = [
        &["delete", "--ignore-not-found", "--wait=false"][..],
        &target[..],
    ]
    .concat();
    let (ok, out, err) = k.output(&delete).await;
    assert!(ok, "{out}\n{err}");
}

/// The pods, the disruption budget and the service account's permissions, where controllers,
/// the scheduler and RBAC are real.
async fn on_the_real_control_plane(c: &TestCluster, k: &Kubectl) {
    // Available: the restricted Pod Security profile admitted the pods and the scheduler placed
    // them (kwok nodes run no containers: probes and the image are not exercised).
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), NS);
    eventually(
        90,
        "Deployment tidemark to have 3 available replicas",
        || async {
            let d = deployments.get("tidemark").await.unwrap();
            (d.status.and_then(|s| s.available_replicas) == Some(3)).then_some(())
        },
    )
    .await;
    let nodes: Api<Node> = Api::all(c.client.clone());
    let node_count = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len();
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), NS);
    let placed: BTreeSet<String> = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=tidemark"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.spec.and_then(|s| s.node_name))
        .collect();
    assert_eq!(placed.len(), node_count.min(3), "pods on {placed:?}");
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(c.client.clone(), NS);
    eventually(
        60,
        "the PodDisruptionBudget to allow one disruption",
        || async {
            let status = budgets.get("tidemark").await.unwrap().status?;
            (status.current_healthy == Some(3) && status.disruptions_allowed == Some(1))
                .then_some(())
        },
    )
    .await;

    // RBAC: the service account may do what Tidemark does, on any kind, and nothing else.
    for (verb, resource, allowed) in [
        ("get", "secrets", true),
        ("list", "widgets.example.com", true),
        (
            "watch",
            "customresourcedefinitions.apiextensions.k8s.io",
            true,
        ),
        ("create", "namespaces", true),
        ("patch", "deployments.apps", true),
        ("delete", "clusterroles.rbac.authorization.k8s.io", true),
        ("get", "/openapi/v3", true),
        ("update", "deployments.apps", false),
        ("deletecollection", "configmaps", false),
        ("escalate", "clusterroles.rbac.authorization.k8s.io", false),
        ("bind", "clusterroles.rbac.authorization.k8s.io", false),
        ("impersonate", "users", false),
    ] {
        let (_, out, err) = k
            .output(&["auth", "can-i", verb, resource, &format!("--as={SA}")])
            .await;
        let answer = if allowed { "yes" } else { "no" };
        assert_eq!(out.trim(), answer, "can-i {verb} {resource}: {out}{err}");
    }

    // Tidemark's cluster client with the service account's token, as `in_cluster = true` would
    // use it: OpenAPI, discovery, server-side apply (dry run and real, a Namespace created),
    // merge patch, read, list and watch, delete.
    let (token, _) = k
        .run(&["create", "token", "tidemark", "-n", NS, "--duration=10m"])
        .await;
    let mut cluster_field = Vec::new();
    for field in ["server", "certificate-authority-data"] {
        let jsonpath = format!("jsonpath={{.clusters[0].cluster.{field}}}");
        let (value, _) = k
            .run(&["config", "view", "--raw", "--minify", "-o", &jsonpath])
            .await;
        cluster_field.push(value);
    }
    let (server, ca) = (&cluster_field[0], &cluster_field[1]);
    let kubeconfig = k.home.path().join("service-account-kubeconfig");
    std::fs::write(
        &kubeconfig,
        json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "sa",
            "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority-data": ca}}],
            "users": [{"name": "sa", "user": {"token": token.trim()}}],
            "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}]
        })
        .to_string(),
    )
    .unwrap();
    let cluster = ClusterClient::connect(&ClusterSettings {
        name: "in-cluster".into(),
        kubeconfig: Some(kubeconfig.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(cluster.schema("apps/v1", "Deployment").await.is_some());
    let ns_name = format!("{}-sa", c.ns);
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns_name, "labels": {"tidemark-test": "true"}}});
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": ns_name}, "data": {"mode": "fast"}});
    for obj in [&ns, &cm] {
        cluster.apply(obj, true).await.unwrap();
        cluster.apply(obj, false).await.unwrap();
    }
    cluster
        .merge_patch(&cm, &json!({"metadata": {"annotations": {"a": "b"}}}))
        .await
        .unwrap();
    let live = cluster.get_direct(&cm).await.unwrap().unwrap();
    assert_eq!(live["metadata"]["annotations"]["a"], "b");

    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let as_sa = kube::Client::try_from(config).unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(as_sa, &ns_name);
    let listed = maps.list(&ListParams::default()).await.unwrap().items;
    assert!(listed
        .iter()
        .any(|m| m.metadata.name.as_deref() == Some("settings")));
    let mut events = maps
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .boxed();
    while let Some(event) = events.next().await {
        event.unwrap();
    }
    cluster.delete(&cm).await.unwrap();
    cluster.delete(&ns).await.unwrap();
}
