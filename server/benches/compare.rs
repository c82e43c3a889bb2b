//! Comparing 10,000 live objects with their desired state (`diff::compare`) vs `serde_json`
//! parsing the live objects' bytes, measured in the same run (medians of 7 rounds).
//!
//! `cargo bench -p server --bench compare`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use server::diff::{compare, ObjectRef};

const OBJECTS: usize = 10_000;

fn desired(i: usize) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": format!("app-{i}"), "namespace": format!("ns-{}", i % 100), "labels": {"app": format!("app-{i}"), "team": "bench"}},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": format!("app-{i}")}},
                    "template": {"metadata": {"labels": {"app": format!("app-{i}")}},
                                 "spec": {"containers": [{"name": "main", "image": format!("registry.example/app:{i}"),
                                          "ports": [{"containerPort": 8080}], "env": [{"name": "MODE", "value": "fast"}],
                                          "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}}}]}}}})
}

fn live(d: &Value, i: usize) -> Value {
    let mut l = d.clone();
    l["metadata"]["uid"] = json!(format!("uid-{i}"));
    l["metadata"]["resourceVersion"] = json!(i.to_string());
    l["metadata"]["generation"] = json!(1);
    l["metadata"]["managedFields"] = json!([{"manager": "tidemark", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]);
    l["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] =
        json!("/dev/termination-log");
    l["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!("IfNotPresent");
    l["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
    l["status"] =
        json!({"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "availableReplicas": 2});
    if i.is_multiple_of(10) {
        l["spec"]["replicas"] = json!(3); // 10 % drift
    }
    l
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let desired: Vec<Value> = (0..OBJECTS).map(desired).collect();
    let live_objects: Vec<Value> = desired
        .iter()
        .enumerate()
        .map(|(i, d)| live(d, i))
        .collect();
    let bytes = serde_json::to_vec(&live_objects).unwrap();
    let live_map: BTreeMap<ObjectRef, Value> = live_objects
        .iter()
        .map(|o| (ObjectRef::of(o), o.clone()))
        .collect();
    let inventory: BTreeSet<ObjectRef> = live_map.keys().cloned().collect();

    let (mut parse, mut cmp) = (Vec::new(), Vec::new());
    let mut drifted = 0;
    for _ in 0..7 {
        let t = Instant::now();
        let parsed: Vec<Value> = serde_json::from_slice(&bytes).unwrap();
        parse.push(t.elapsed());
        assert_eq!(parsed.len(), OBJECTS);
        let t = Instant::now();
        let result = compare(&desired, &live_map, &inventory, &[]);
        cmp.push(t.elapsed());
        drifted = result.iter().filter(|r| !r.changes.is_empty()).count();
    }
    let (p, c) = (median(parse), median(cmp));
    println!(
        "compare {OBJECTS} live Deployments ({} KiB of JSON, {drifted} drifted), median of 7:",
        bytes.len() / 1024
    );
    println!("  serde_json parse of the live bytes  {p:>9.1?}  ratio 1.00");
    println!(
        "  diff::compare                       {c:>9.1?}  ratio {:.2}  (target <= 2.00 and < 1 s)",
        c.as_secs_f64() / p.as_secs_f64()
    );
}
