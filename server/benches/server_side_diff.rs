//! Server-side diff cost: 1,000 applications × 10 objects (5 ConfigMaps + 5 Deployments each,
//! 10,000 objects) applied to a cluster, then compared with `reconcile::compare_one` as the
//! reconciler does:
//!
//! - cold: the first compare of every object (one server-side apply dry run each) → dry runs/s;
//! - warm: nothing changed → dry-run calls per round (0 once the controllers have settled)
//!   and time per round;
//! - pure: today's fallback compare (`diff::pure`) of the same desired/live pairs — the
//!   baseline the warm round is a ratio of;
//! - changed: 1,000 live objects changed by another manager → 1,000 dry runs, dry runs/s.
//!
//! On the sandbox (in-process, over loopback HTTP) always; on a real API server too when
//! `TIDEMARK_BENCH_KUBECONFIG` names one (e.g. `make kube-up`'s). Medians of 3 rounds where a
//! round can repeat.
//!
//! `cargo bench -p server --bench server_side_diff`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use serde_json::{json, Value};
use server::cluster::client::ClusterClient;
use server::diff::{self, ObjectRef, ResourceStatus};
use server::reconcile::compare_one;
use server::sandbox::{Sandbox, SandboxOptions};

const APPS: usize = 1_000;
const PER_APP: usize = 10;
const CHANGED: usize = 1_000;
const ROUNDS: usize = 3;
const IN_FLIGHT: usize = 8;

fn object(ns: &str, app: usize, i: usize) -> Value {
    let name = format!("app-{app}-{i}");
    if i.is_multiple_of(2) {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": ns, "labels": {"app": format!("app-{app}")}},
               "data": {"mode": "fast", "limit": "10"}})
    } else {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": name, "namespace": ns, "labels": {"app": format!("app-{app}")}},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                        "template": {"metadata": {"labels": {"app": name}},
                                     "spec": {"containers": [{"name": "main", "image": format!("registry.example/app:{app}"),
                                              "ports": [{"containerPort": 8080}], "env": [{"name": "MODE", "value": "fast"}],
                                              "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}}}]}}}})
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn apply_all(client: &kube::Client, objects: &[Value], manager: &str) {
    stream::iter(objects.iter().cloned())
        .for_each_concurrent(IN_FLIGHT, |o| {
            let client = client.clone();
            let manager = manager.to_owned();
            async move {
                let (group, version) = o["apiVersion"]
                    .as_str()
                    .unwrap()
                    .rsplit_once('/')
                    .unwrap_or(("", "v1"));
                let kind = o["kind"].as_str().unwrap();
                let plural = if kind == "ConfigMap" {
                    "configmaps"
                } else {
                    "deployments"
                };
                let ar = ApiResource {
                    group: group.into(),
                    version: version.into(),
                    api_version: o["apiVersion"].as_str().unwrap().into(),
                    kind: kind.into(),
                    plural: plural.into(),
                };
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client, o["metadata"]["namespace"].as_str().unwrap(), &ar);
                let name = o["metadata"]["name"].as_str().unwrap().to_owned();
                api.patch(
                    &name,
                    &PatchParams::apply(&manager).force(),
                    &Patch::Apply(&o),
                )
                .await
                .unwrap();
            }
        })
        .await;
}

/// Compares every desired object with its live counterpart as the reconciler does.
async fn compare_all(cluster: &ClusterClient, desired: &[Value]) -> (Duration, usize) {
    let started = Instant::now();
    let mut out_of_sync = 0;
    for d in desired {
        let live = cluster.get(d).await.unwrap().expect("live object");
        let r = compare_one(cluster, d, &live, &[], &[]).await;
        if r.status != ResourceStatus::Synced {
            out_of_sync += 1;
        }
    }
    (started.elapsed(), out_of_sync)
}

/// Today's fallback as the reconciler would run it: read the live object, compare the fields
/// Git names.
async fn pure_all(cluster: &ClusterClient, desired: &[Value]) -> Duration {
    let started = Instant::now();
    for d in desired {
        let l = &cluster.get(d).await.unwrap().unwrap();
        let schema = cluster
            .schema(
                d["apiVersion"].as_str().unwrap(),
                d["kind"].as_str().unwrap(),
            )
            .await;
        let root = schema
            .as_ref()
            .and_then(|s| s.kind(d["kind"].as_str().unwrap()));
        let r = diff::pure(ObjectRef::of(d), d, l, root, &[], "bench");
        assert_eq!(r.status, ResourceStatus::Synced, "{:?}", r.changes);
    }
    started.elapsed()
}

async fn run(label: &str, client: kube::Client, ns: &str) {
    let desired: Vec<Value> = (0..APPS)
        .flat_map(|a| (0..PER_APP).map(move |i| (a, i)))
        .map(|(a, i)| object(ns, a, i))
        .collect();
    let t = Instant::now();
    apply_all(&client, &desired, "tidemark").await;
    let applied = t.elapsed();
    let cluster = ClusterClient::with_client(label, client.clone());
    // Fill the watch caches before timing.
    for d in desired.iter().take(2) {
        cluster.get(d).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let calls0 = cluster.dry_run_calls();
    let (cold, _) = compare_all(&cluster, &desired).await;
    let cold_calls = cluster.dry_run_calls() - calls0;
    // On a real cluster the controllers are still writing to the new objects (the deployment
    // controller's revision annotation): changes the compare must see. Wait until a round makes
    // no dry run (at most 20 rounds, 3 s apart) before measuring.
    let mut settle = 0;
    loop {
        let before = cluster.dry_run_calls();
        compare_all(&cluster, &desired).await;
        settle += 1;
        if cluster.dry_run_calls() == before || settle == 20 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let mut warm = Vec::new();
    let mut warm_calls = 0;
    for _ in 0..ROUNDS {
        let before = cluster.dry_run_calls();
        let (took, out) = compare_all(&cluster, &desired).await;
        assert_eq!(out, 0, "nothing changed in Git, yet {out} objects differ");
        warm_calls += cluster.dry_run_calls() - before;
        warm.push(took);
    }
    let warm = median(warm);
    let mut pure = Vec::new();
    for _ in 0..ROUNDS {
        pure.push(pure_all(&cluster, &desired).await);
    }
    let pure = median(pure);

    // 1,000 live objects changed by someone else: one dry run each.
    let changed: Vec<Value> = desired
        .iter()
        .filter(|d| d["kind"] == "ConfigMap")
        .take(CHANGED)
        .map(|d| {
            let mut c = d.clone();
            c["data"] = json!({"mode": "slow"});
            c
        })
        .collect();
    apply_all(&client, &changed, "kubectl-edit").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = cluster.dry_run_calls();
    let (took, out) = compare_all(&cluster, &desired).await;
    let changed_calls = cluster.dry_run_calls() - before;
    assert_eq!(out, CHANGED);

    let n = desired.len();
    println!("{label}: {APPS} applications × {PER_APP} objects ({n}), applied in {applied:.2?}");
    println!(
        "  cold compare (every object dry-run)   {cold:>9.2?}  {cold_calls:>6} dry runs  {:>7.0} dry runs/s",
        cold_calls as f64 / cold.as_secs_f64()
    );
    println!(
        "  warm compare, nothing changed (median) {warm:>9.2?}  {:>6} dry runs per round (settled after {settle} round(s))",
        warm_calls / ROUNDS as u64
    );
    println!(
        "  pure compare of the same pairs (median){pure:>9.2?}  baseline; warm/pure ratio {:.2}",
        warm.as_secs_f64() / pure.as_secs_f64()
    );
    println!(
        "  {CHANGED} objects changed live              {took:>9.2?}  {changed_calls:>6} dry runs  {:>7.0} dry runs/s (whole round)",
        changed_calls as f64 / took.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let sandbox = Sandbox::new(SandboxOptions::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sandbox.serve(listener, async {
        let _ = rx.await;
    }));
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    run("sandbox (loopback HTTP)", client, "default").await;
    let _ = tx.send(());
    let _ = server.await;

    if let Some(path) = std::env::var_os("TIDEMARK_BENCH_KUBECONFIG") {
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let ns = format!("bench-ssd-{}", std::process::id());
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &Default::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
        run("real kube-apiserver", client, &ns).await;
        let _ = namespaces.delete(&ns, &Default::default()).await;
    }
}
