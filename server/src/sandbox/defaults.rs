//! Defaults a real API server fills in on every write (dry runs included), for the fields
//! Tidemark's users meet in the built-in kinds the sandbox serves, and the defaults a CRD's
//! structural schema declares for its custom resources.
//!
//! Built-in defaults are Go code in Kubernetes, not part of the OpenAPI documents; the values
//! here were observed on kube-apiserver v1.36 with dry runs of minimal objects (the conformance
//! test `defaults_the_api_server_fills_in_are_filled_in` in `server/tests/it/sandbox.rs` checks
//! them on both). Cluster-dependent values (Service IPs, IP families, node ports) and admission
//! plugins' additions (a Pod's service account token volume, a PVC's protection finalizer) are
//! left out.

use serde_json::{json, Value};

use super::kinds::ResourceType;
use crate::cluster::schema::Node;

/// Sets `obj[key]` to `value` when absent.
fn or_insert(obj: &mut Value, key: &str, value: Value) {
    if let Some(m) = obj.as_object_mut() {
        m.entry(key.to_owned()).or_insert(value);
    }
}

/// `v[key]`, made an empty object first when it is not an object.
fn ensure<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    if !v[key].is_object() {
        v[key] = json!({});
    }
    &mut v[key]
}

fn each(v: &mut Value, f: impl Fn(&mut Value)) {
    if let Some(items) = v.as_array_mut() {
        items.iter_mut().for_each(f);
    }
}

/// Fills in the defaults of a built-in kind.
pub fn builtin(rt: &ResourceType, obj: &mut Value) {
    let spec = &mut obj["spec"];
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("apps", "Deployment") => {
            or_insert(spec, "replicas", json!(1));
            or_insert(spec, "revisionHistoryLimit", json!(10));
            or_insert(spec, "progressDeadlineSeconds", json!(600));
            or_insert(ensure(spec, "strategy"), "type", json!("RollingUpdate"));
            if spec["strategy"]["type"] == "RollingUpdate" {
                let ru = ensure(&mut spec["strategy"], "rollingUpdate");
                or_insert(ru, "maxUnavailable", json!("25%"));
                or_insert(ru, "maxSurge", json!("25%"));
            }
            pod_template(&mut spec["template"]);
        }
        ("apps", "StatefulSet") => {
            or_insert(spec, "replicas", json!(1));
            or_insert(spec, "podManagementPolicy", json!("OrderedReady"));
            or_insert(spec, "revisionHistoryLimit", json!(10));
            or_insert(
                ensure(spec, "updateStrategy"),
                "type",
                json!("RollingUpdate"),
            );
            if spec["updateStrategy"]["type"] == "RollingUpdate" {
                or_insert(
                    ensure(&mut spec["updateStrategy"], "rollingUpdate"),
                    "partition",
                    json!(0),
                );
            }
            let retention = ensure(spec, "persistentVolumeClaimRetentionPolicy");
            or_insert(retention, "whenDeleted", json!("Retain"));
            or_insert(retention, "whenScaled", json!("Retain"));
            each(&mut spec["volumeClaimTemplates"], |t| {
                or_insert(t, "apiVersion", json!("v1"));
                or_insert(t, "kind", json!("PersistentVolumeClaim"));
                or_insert(ensure(t, "spec"), "volumeMode", json!("Filesystem"));
                or_insert(ensure(t, "status"), "phase", json!("Pending"));
            });
            pod_template(&mut spec["template"]);
        }
        ("apps", "DaemonSet") => {
            or_insert(spec, "revisionHistoryLimit", json!(10));
            or_insert(
                ensure(spec, "updateStrategy"),
                "type",
                json!("RollingUpdate"),
            );
            if spec["updateStrategy"]["type"] == "RollingUpdate" {
                let ru = ensure(&mut spec["updateStrategy"], "rollingUpdate");
                or_insert(ru, "maxUnavailable", json!(1));
                or_insert(ru, "maxSurge", json!(0));
            }
            pod_template(&mut spec["template"]);
        }
        ("apps", "ReplicaSet") => {
            or_insert(spec, "replicas", json!(1));
            pod_template(&mut spec["template"]);
        }
        ("batch", "Job") => job(spec),
        ("batch", "CronJob") => {
            or_insert(spec, "concurrencyPolicy", json!("Allow"));
            or_insert(spec, "suspend", json!(false));
            or_insert(spec, "successfulJobsHistoryLimit", json!(3));
            or_insert(spec, "failedJobsHistoryLimit", json!(1));
            pod_template(&mut spec["jobTemplate"]["spec"]["template"]);
        }
        ("", "Pod") => {
            pod_spec(spec);
            or_insert(spec, "enableServiceLinks", json!(true));
        }
        ("", "Service") => service(spec),
        ("", "Secret") => or_insert(obj, "type", json!("Opaque")),
        ("", "PersistentVolumeClaim") => {
            or_insert(spec, "volumeMode", json!("Filesystem"));
        }
        ("", "Namespace") => or_insert(ensure(obj, "spec"), "finalizers", json!(["kubernetes"])),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            each(&mut obj["subjects"], |s| {
                if matches!(s["kind"].as_str(), Some("User" | "Group")) {
                    or_insert(s, "apiGroup", json!("rbac.authorization.k8s.io"));
                }
            });
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            let kind = spec["names"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let names = ensure(spec, "names");
            or_insert(names, "singular", json!(kind.to_lowercase()));
            or_insert(names, "listKind", json!(format!("{kind}List")));
            or_insert(ensure(spec, "conversion"), "strategy", json!("None"));
        }
        _ => {}
    }
    // `obj["spec"]` above creates `spec: null` on kinds without one.
    if let Some(m) = obj.as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
}

fn job(spec: &mut Value) {
    if spec.get("completions").is_none() && spec.get("parallelism").is_none() {
        or_insert(spec, "completions", json!(1));
    }
    or_insert(spec, "parallelism", json!(1));
    or_insert(spec, "completionMode", json!("NonIndexed"));
    if spec.get("backoffLimitPerIndex").is_none() {
        or_insert(spec, "backoffLimit", json!(6));
    }
    or_insert(spec, "suspend", json!(false));
    or_insert(spec, "manualSelector", json!(false));
    if spec.get("podFailurePolicy").is_none() {
        or_insert(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    }
    pod_template(&mut spec["template"]);
}

/// The selector and labels a Job without `manualSelector` gets from its uid (set when the
/// object is created, with its identity).
pub fn job_selector(obj: &mut Value) {
    let (Some(uid), Some(name)) = (
        obj["metadata"]["uid"].as_str().map(str::to_owned),
        obj["metadata"]["name"].as_str().map(str::to_owned),
    ) else {
        return;
    };
    let spec = &mut obj["spec"];
    if spec["manualSelector"] == true {
        return;
    }
    if spec.get("selector").is_none() {
        spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    }
    let labels = ensure(ensure(ensure(spec, "template"), "metadata"), "labels");
    for (k, v) in [
        ("batch.kubernetes.io/controller-uid", &uid),
        ("batch.kubernetes.io/job-name", &name),
        ("controller-uid", &uid),
        ("job-name", &name),
    ] {
        or_insert(labels, k, json!(v));
    }
}

fn service(spec: &mut Value) {
    or_insert(spec, "type", json!("ClusterIP"));
    let external_name = spec["type"] == "ExternalName";
    or_insert(spec, "sessionAffinity", json!("None"));
    if spec["sessionAffinity"] == "ClientIP" {
        let config = ensure(spec, "sessionAffinityConfig");
        or_insert(ensure(config, "clientIP"), "timeoutSeconds", json!(10800));
    } else if let Some(m) = spec.as_object_mut() {
        m.remove("sessionAffinityConfig");
    }
    if !external_name {
        or_insert(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer")) {
        or_insert(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    each(&mut spec["ports"], |p| {
        or_insert(p, "protocol", json!("TCP"));
        if !external_name {
            let port = p["port"].clone();
            if !port.is_null() {
                or_insert(p, "targetPort", port);
            }
        }
    });
}

fn pod_template(template: &mut Value) {
    if template.is_object() {
        pod_spec(&mut template["spec"]);
    }
}

fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    or_insert(spec, "restartPolicy", json!("Always"));
    or_insert(spec, "terminationGracePeriodSeconds", json!(30));
    or_insert(spec, "dnsPolicy", json!("ClusterFirst"));
    or_insert(spec, "securityContext", json!({}));
    or_insert(spec, "schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        each(&mut spec[list], container);
    }
    each(&mut spec["volumes"], volume);
}

/// `Always` for an image without a tag or tagged `latest`, else `IfNotPresent`.
fn pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

fn container(c: &mut Value) {
    or_insert(c, "terminationMessagePath", json!("/dev/termination-log"));
    or_insert(c, "terminationMessagePolicy", json!("File"));
    if let Some(image) = c["image"].as_str().map(pull_policy) {
        or_insert(c, "imagePullPolicy", json!(image));
    }
    each(&mut c["ports"], |p| or_insert(p, "protocol", json!("TCP")));
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if c[probe].is_object() {
            let p = &mut c[probe];
            or_insert(p, "timeoutSeconds", json!(1));
            or_insert(p, "periodSeconds", json!(10));
            or_insert(p, "successThreshold", json!(1));
            or_insert(p, "failureThreshold", json!(3));
            if p["httpGet"].is_object() {
                http_get(&mut p["httpGet"]);
            }
        }
    }
    for hook in ["postStart", "preStop"] {
        if c["lifecycle"][hook]["httpGet"].is_object() {
            http_get(&mut c["lifecycle"][hook]["httpGet"]);
        }
    }
    each(&mut c["env"], |e| {
        if e["valueFrom"]["fieldRef"].is_object() {
            or_insert(&mut e["valueFrom"]["fieldRef"], "apiVersion", json!("v1"));
        }
        if e["valueFrom"]["resourceFieldRef"].is_object() {
            or_insert(
                &mut e["valueFrom"]["resourceFieldRef"],
                "divisor",
                json!("0"),
            );
        }
    });
}

fn http_get(h: &mut Value) {
    or_insert(h, "path", json!("/"));
    or_insert(h, "scheme", json!("HTTP"));
}

fn field_refs(items: &mut Value) {
    each(items, |i| {
        if i["fieldRef"].is_object() {
            or_insert(&mut i["fieldRef"], "apiVersion", json!("v1"));
        }
        if let Some(m) = i.as_object_mut() {
            m.retain(|_, v| !v.is_null());
        }
    });
}

fn volume(v: &mut Value) {
    for source in ["configMap", "secret", "downwardAPI", "projected"] {
        if v[source].is_object() {
            or_insert(&mut v[source], "defaultMode", json!(420));
        }
    }
    if v["downwardAPI"].is_object() {
        field_refs(&mut v["downwardAPI"]["items"]);
    }
    if v["projected"].is_object() {
        each(&mut v["projected"]["sources"], |s| {
            if s["downwardAPI"].is_object() {
                field_refs(&mut s["downwardAPI"]["items"]);
            }
            if s["serviceAccountToken"].is_object() {
                or_insert(
                    &mut s["serviceAccountToken"],
                    "expirationSeconds",
                    json!(3600),
                );
            }
            if let Some(m) = s.as_object_mut() {
                m.retain(|_, v| !v.is_null());
            }
        });
    }
    if v["hostPath"].is_object() {
        or_insert(&mut v["hostPath"], "type", json!(""));
    }
    if let Some(m) = v.as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
}

/// Fills in the `default`s of a custom resource's structural schema, as the API server does
/// for CRDs: a property with a default that the object lacks gets it (inside objects that
/// exist, and inside list items).
pub fn structural(ty: Node<'_>, v: &mut Value) {
    match v {
        Value::Object(m) => {
            let raw = ty.raw();
            if let Some(props) = raw["properties"].as_object() {
                for (k, p) in props {
                    if !m.contains_key(k) {
                        if let Some(d) = p.get("default") {
                            m.insert(k.clone(), d.clone());
                        }
                    }
                }
                let keys: Vec<String> = m.keys().cloned().collect();
                for k in keys {
                    if let (Some(child_ty), Some(child)) = (ty.field(&k), m.get_mut(&k)) {
                        structural(child_ty, child);
                    }
                }
            } else if raw.get("additionalProperties").is_some() {
                if let Some(value_ty) = ty.field("") {
                    for child in m.values_mut() {
                        structural(value_ty, child);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_ty) = ty.items() {
                items.iter_mut().for_each(|i| structural(item_ty, i));
            }
        }
        _ => {}
    }
}

/// Drops the fields a custom resource's structural schema does not declare (unless
/// `x-kubernetes-preserve-unknown-fields`), as the API server prunes them.
pub fn prune(ty: Node<'_>, v: &mut Value) {
    match v {
        Value::Object(m) => {
            let raw = ty.raw();
            if raw["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true) {
                return;
            }
            if let Some(props) = raw["properties"].as_object() {
                if raw.get("additionalProperties").is_none() {
                    m.retain(|k, _| props.contains_key(k));
                }
            } else if raw.get("additionalProperties").is_none() && raw["type"] == "object" {
                m.clear();
            }
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if let (Some(child_ty), Some(child)) = (ty.field(&k), m.get_mut(&k)) {
                    prune(child_ty, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_ty) = ty.items() {
                items.iter_mut().for_each(|i| prune(item_ty, i));
            }
        }
        _ => {}
    }
}

/// A map of `obj`'s fields the defaulting added (for tests).
#[cfg(test)]
fn added(before: &Value, after: &Value) -> serde_json::Map<String, Value> {
    after
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::kinds;

    fn rt(kind: &str) -> ResourceType {
        kinds::builtins()
            .into_iter()
            .find(|t| t.kind == kind)
            .unwrap()
    }

    #[test]
    fn pull_policies_follow_the_tag() {
        for (image, want) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.27", "IfNotPresent"),
            ("reg:5000/nginx", "Always"),
            ("reg:5000/nginx:1", "IfNotPresent"),
            ("nginx@sha256:abc", "IfNotPresent"),
        ] {
            assert_eq!(pull_policy(image), want, "{image}");
        }
    }

    #[test]
    fn a_deployment_gets_the_api_servers_defaults() {
        let mut d = json!({"spec": {"selector": {}, "template": {"spec": {"containers": [
            {"name": "c", "image": "nginx:1.27", "ports": [{"containerPort": 80}],
             "readinessProbe": {"httpGet": {"port": 80}}}]}}}});
        let before = d["spec"].clone();
        builtin(&rt("Deployment"), &mut d);
        let spec = added(&before, &d["spec"]);
        assert_eq!(spec["replicas"], json!(1));
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], json!("IfNotPresent"));
        assert_eq!(c["ports"][0]["protocol"], json!("TCP"));
        assert_eq!(
            c["readinessProbe"]["httpGet"],
            json!({"port": 80, "path": "/", "scheme": "HTTP"})
        );
        assert!(c.get("livenessProbe").is_none() && c.get("lifecycle").is_none());
    }

    #[test]
    fn a_service_drops_affinity_config_unless_client_ip() {
        let mut s = json!({"spec": {"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 5}},
            "ports": [{"port": 80}]}});
        builtin(&rt("Service"), &mut s);
        assert_eq!(s["spec"]["sessionAffinity"], json!("None"));
        assert!(s["spec"].get("sessionAffinityConfig").is_none());
        assert_eq!(
            s["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
    }
}
