//! Server-side apply throughput of the sandbox for 10,000 small ConfigMaps: directly on the
//! state (no HTTP), through the `kube` client in-process (tower service), and through the
//! `kube` client over loopback HTTP. Prints the median of three rounds for each and the ratios
//! to the direct baseline measured in the same run.
//!
//! `cargo bench -p server --bench sandbox_apply`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use server::sandbox::kinds;
use server::sandbox::world::{Part, PatchKind, World, WriteCtx};
use server::sandbox::{Sandbox, SandboxOptions};

const OBJECTS: usize = 10_000;
const ROUNDS: usize = 3;

fn body(i: usize) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{i}"), "labels": {"app": "bench"}},
           "data": {"key": format!("value-{i}")}})
}

fn direct() -> Duration {
    let mut world = World::new(0);
    let rt = kinds::builtins()
        .into_iter()
        .find(|t| t.kind == "ConfigMap")
        .unwrap();
    let ctx = WriteCtx {
        manager: "bench".into(),
        dry_run: false,
        now: 0,
    };
    let started = Instant::now();
    for i in 0..OBJECTS {
        world
            .patch(
                &rt,
                "default",
                &format!("cm-{i}"),
                PatchKind::Apply { force: false },
                body(i),
                Part::Main,
                &ctx,
            )
            .unwrap();
    }
    started.elapsed()
}

async fn through(api: Api<ConfigMap>) -> Duration {
    let pp = PatchParams::apply("bench");
    let started = Instant::now();
    // 8 requests in flight, as a controller applying many objects would have.
    let chunks: Vec<Vec<usize>> = (0..8).map(|c| (c..OBJECTS).step_by(8).collect()).collect();
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let api = api.clone();
            let pp = pp.clone();
            tokio::spawn(async move {
                for i in chunk {
                    api.patch(&format!("cm-{i}"), &pp, &Patch::Apply(body(i)))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

async fn in_process() -> Duration {
    let sandbox = Sandbox::new(SandboxOptions::default()).unwrap();
    let client = kube::Client::new(sandbox.router(), "default");
    through(Api::default_namespaced(client)).await
}

async fn over_http() -> Duration {
    let sandbox = Sandbox::new(SandboxOptions::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sandbox.serve(listener, async {
        let _ = rx.await;
    }));
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let took = through(Api::default_namespaced(client)).await;
    let _ = tx.send(());
    let _ = server.await;
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rate(d: Duration) -> f64 {
    OBJECTS as f64 / d.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        a.push(direct());
        b.push(in_process().await);
        c.push(over_http().await);
    }
    let (a, b, c) = (median(a), median(b), median(c));
    println!("sandbox server-side apply, {OBJECTS} ConfigMaps, median of {ROUNDS} rounds");
    println!(
        "  direct (state only)      {:>9.0} objects/s  ({:.2?})  ratio 1.00",
        rate(a),
        a
    );
    println!(
        "  kube client, in-process  {:>9.0} objects/s  ({:.2?})  ratio {:.2}",
        rate(b),
        b,
        rate(b) / rate(a)
    );
    println!(
        "  kube client, HTTP        {:>9.0} objects/s  ({:.2?})  ratio {:.2}",
        rate(c),
        c,
        rate(c) / rate(a)
    );
}
