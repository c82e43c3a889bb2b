//! The compare: two JSON documents (desired `\0` live) as the same object, compared field by
//! field, and as snapshots. Never panics; an object compared with itself has no changes;
//! Secret values never appear in a change.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use server::diff::{between, compare, diff_object, ObjectRef};

fn object(kind: &str, body: Value) -> Value {
    let mut o = match body {
        Value::Object(m) => Value::Object(m),
        other => json!({ "spec": other }),
    };
    o["apiVersion"] = json!("v1");
    o["kind"] = json!(kind);
    o["metadata"] = json!({"name": "x", "namespace": "ns"});
    o
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == 0);
    let (Some(a), Some(b)) = (parts.next(), parts.next()) else {
        return;
    };
    let (Ok(a), Ok(b)) = (
        serde_json::from_slice::<Value>(a),
        serde_json::from_slice::<Value>(b),
    ) else {
        return;
    };
    for kind in ["ConfigMap", "Secret"] {
        let desired = object(kind, a.clone());
        let live = object(kind, b.clone());
        let r = ObjectRef::of(&desired);
        // (Not for Secrets: Git's `stringData` is compared as the `data` a server returns.)
        if kind != "Secret" {
            assert!(diff_object(&r, &desired, &desired, &[]).is_empty());
        }
        let changes = diff_object(&r, &desired, &live, &["/spec"]);
        if kind == "Secret" {
            for c in &changes {
                let under = |p: &str| c.pointer == p || c.pointer.starts_with(&format!("{p}/"));
                if under("/data") || under("/stringData") {
                    for v in [&c.desired, &c.live].into_iter().flatten() {
                        assert_eq!(v, &json!("(changed)"), "a Secret value leaked: {c:?}");
                    }
                }
            }
        }
        let live_map = BTreeMap::from([(r.clone(), live.clone())]);
        let inventory = BTreeSet::from([r.clone()]);
        let _ = compare(std::slice::from_ref(&desired), &live_map, &inventory, &[]);
        let _ = between(std::slice::from_ref(&desired), std::slice::from_ref(&live));
    }
});
