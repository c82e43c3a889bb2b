//! The live resource tree at 1,000 nodes: building it from the descendants
//! (`cluster::tree::build`) and rendering the Tree tab's HTML (`http::tree_html::tab`), against
//! `serde_json` serialising the same objects, measured in the same run (medians of 9 rounds).
//! 100 Deployments, each with a ReplicaSet of 8 Pods (one of them crash-looping): 1,000 nodes,
//! pods folded into "8 Pods: 7 Running, 1 CrashLoopBackOff" lines.
//!
//! `cargo bench -p server --bench live_tree`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use server::cluster::tree;
use server::http::tree_html::{self, Panel, Rights};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut roots = Vec::new();
    let mut pool = Vec::new();
    for d in 0..100 {
        let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": format!("web-{d}"), "namespace": "shop", "uid": format!("d-{d}"),
                         "creationTimestamp": "2026-12-01T00:00:00Z", "generation": 1},
            "spec": {"replicas": 8},
            "status": {"observedGeneration": 1, "replicas": 8, "updatedReplicas": 8, "readyReplicas": 7, "availableReplicas": 7}});
        roots.push((deploy.clone(), Some(deploy)));
        pool.push(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": format!("web-{d}-5d4f"), "namespace": "shop", "uid": format!("r-{d}"),
                         "creationTimestamp": "2026-12-01T00:00:00Z",
                         "ownerReferences": [{"uid": format!("d-{d}"), "kind": "Deployment", "name": format!("web-{d}"), "controller": true}]},
            "spec": {"replicas": 8}, "status": {"replicas": 8, "readyReplicas": 7}}));
        for p in 0..8 {
            let state = if p == 7 {
                json!({"waiting": {"reason": "CrashLoopBackOff"}})
            } else {
                json!({"running": {"startedAt": "2026-12-01T00:00:00Z"}})
            };
            pool.push(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("web-{d}-5d4f-{p}"), "namespace": "shop", "uid": format!("p-{d}-{p}"),
                             "creationTimestamp": "2026-12-01T00:00:00Z",
                             "ownerReferences": [{"uid": format!("r-{d}"), "kind": "ReplicaSet", "name": format!("web-{d}-5d4f"), "controller": true}]},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if p == 7 { "False" } else { "True" }}],
                           "containerStatuses": [{"name": "web", "state": state}]}}));
        }
    }
    let rights = Rights {
        act: true,
        logs: true,
    };
    let now = 1_796_086_800_000;
    let (mut build_t, mut html_t, mut base_t) = (Vec::new(), Vec::new(), Vec::new());
    let mut nodes = 0;
    let mut html_bytes = 0;
    for _ in 0..9 {
        let started = Instant::now();
        let built = tree::build(&roots, &pool);
        build_t.push(started.elapsed());
        nodes = built.iter().map(tree::TreeNode::count).sum::<usize>();
        let started = Instant::now();
        let html = tree_html::tab("shop", &built, &built, "", "", &Panel::None, rights, now);
        html_t.push(started.elapsed());
        html_bytes = html.len();
        assert!(html.contains("8 Pods: 7 Running, 1 CrashLoopBackOff"));
        let started = Instant::now();
        let json = serde_json::to_string(&pool).unwrap();
        base_t.push(started.elapsed());
        assert!(!json.is_empty());
    }
    let (b, h, base) = (median(build_t), median(html_t), median(base_t));
    println!("{nodes} nodes; HTML {html_bytes} bytes");
    println!("baseline serde_json::to_string of the 900 descendants: {base:.2?}");
    println!(
        "tree::build: {b:.2?} ({:.1}x the baseline); tree_html::tab: {h:.2?} ({:.1}x); together {:.2?}",
        b.as_secs_f64() / base.as_secs_f64(),
        h.as_secs_f64() / base.as_secs_f64(),
        b + h
    );
    let _: Value = json!(null);
}
