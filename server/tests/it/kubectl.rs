//! Smoke test with the real `kubectl` against a sandbox on a TCP port.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::sandbox::TestCluster;

struct Kubectl {
    server: String,
    kubeconfig: tempfile::NamedTempFile,
}

impl Kubectl {
    fn new(server: &str) -> Self {
        // An empty kubeconfig: nothing from the machine's ~/.kube leaks into the test.
        let kubeconfig = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(kubeconfig.path(), "apiVersion: v1\nkind: Config\n").unwrap();
        Self {
            server: server.to_owned(),
            kubeconfig,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", self.kubeconfig.path())
            .env("HOME", self.kubeconfig.path().parent().unwrap())
            .arg(format!("--server={}", self.server))
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs kubectl and returns stdout; fails the test with stderr when it exits non-zero.
    async fn run(&self, args: &[&str]) -> String {
        let mut cmd = tokio::process::Command::from(self.command(args));
        let out = cmd.output().await.unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: nginx:1.27
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
data:
  mode: fast
"#;

// Multi-threaded: the watch below is read with blocking calls while the sandbox keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_reads_patches_scales_watches_and_deletes() {
    let c = TestCluster::sandbox().await;
    let k = Kubectl::new(&c.url);

    let resources = k.run(&["api-resources"]).await;
    for want in [
        "deployments",
        "configmaps",
        "customresourcedefinitions",
        "clusterrolebindings",
    ] {
        assert!(resources.contains(want), "{want} missing:\n{resources}");
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    std::fs::write(&file, MANIFEST).unwrap();
    let applied = k
        .run(&[
            "apply",
            "--server-side",
            "--validate=false",
            "-f",
            file.to_str().unwrap(),
        ])
        .await;
    assert!(
        applied.contains("deployment.apps/web serverside-applied"),
        "{applied}"
    );

    let table = k.run(&["get", "deployments", "-n", "shop"]).await;
    assert!(table.contains("web"), "{table}");
    let json: serde_json::Value = serde_json::from_str(
        &k.run(&[
            "get",
            "deployment",
            "web",
            "-n",
            "shop",
            "-o",
            "json",
            "--show-managed-fields",
        ])
        .await,
    )
    .unwrap();
    assert_eq!(json["spec"]["replicas"], 2);
    assert_eq!(json["metadata"]["managedFields"][0]["manager"], "kubectl");
    let yaml = k
        .run(&["get", "configmap", "settings", "-n", "shop", "-o", "yaml"])
        .await;
    assert!(yaml.contains("mode: fast"), "{yaml}");

    k.run(&[
        "patch",
        "configmap",
        "settings",
        "-n",
        "shop",
        "-p",
        r#"{"data":{"mode":"slow"}}"#,
    ])
    .await;
    let mode = k
        .run(&[
            "get",
            "configmap",
            "settings",
            "-n",
            "shop",
            "-o",
            "jsonpath={.data.mode}",
        ])
        .await;
    assert_eq!(mode, "slow");

    k.run(&["scale", "deployment", "web", "-n", "shop", "--replicas=4"])
        .await;
    let replicas = k
        .run(&[
            "get",
            "deployment",
            "web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.replicas}",
        ])
        .await;
    assert_eq!(replicas, "4");

    // `get -w` prints changes as they happen.
    let mut watch = k.command(&["get", "configmaps", "-n", "shop", "-w", "-o", "name"]);
    let mut child = watch
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(first.contains("configmap/settings"), "{first}");
    let extra = dir.path().join("extra.yaml");
    std::fs::write(
        &extra,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra, namespace: shop}\n",
    )
    .unwrap();
    k.run(&[
        "apply",
        "--server-side",
        "--validate=false",
        "-f",
        extra.to_str().unwrap(),
    ])
    .await;
    let next = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(next.contains("configmap/extra"), "{next}");
    child.kill().unwrap();
    let _ = child.wait();

    k.run(&["delete", "namespace", "shop"]).await;
    let left = k.run(&["get", "configmaps", "-A", "-o", "name"]).await;
    assert!(!left.contains("settings"), "{left}");
}
