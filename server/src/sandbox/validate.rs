//! The API server's validation rules that Tidemark meets on ordinary manifests, checked on
//! every write (dry runs included) and answered with the API server's 422 `Invalid` wording:
//! workload selectors that do not match their template's labels, and the fields a real server
//! refuses to change (a workload's selector, a Job's template, a StatefulSet's spec beyond its
//! mutable fields, a binding's roleRef, an immutable ConfigMap's or Secret's data, a bound
//! claim's spec, a CRD's scope and group, a Service's cluster IP, a Pod's spec beyond its
//! images). A compare relies on them: a dry run the API server refuses falls back to the pure
//! compare. The kinds' other rules are not checked (see docs/sandbox.md).

use serde_json::{Map, Value};

use super::kinds::ResourceType;

static NULL: Value = Value::Null;

/// `field: Invalid value: <value>: why`, as the API server words a field error.
fn invalid(field: &str, value: &Value, why: &str) -> String {
    format!("{field}: Invalid value: {value}: {why}")
}

fn forbidden(field: &str, why: &str) -> String {
    format!("{field}: Forbidden: {why}")
}

/// Checks a write of `new` over `old` (`None`: a create).
pub fn check(rt: &ResourceType, old: Option<&Value>, new: &Value) -> Result<(), String> {
    let spec = &new["spec"];
    let old_spec = old.map(|o| &o["spec"]);
    let changed = |path: &[&str]| -> Option<&Value> {
        let old = old?;
        let at = |v: &Value| path.iter().fold(v.clone(), |v, k| v[*k].clone());
        (at(old) != at(new)).then(|| path.iter().fold(new, |v, k| v.get(*k).unwrap_or(&NULL)))
    };
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("apps", kind @ ("Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet")) => {
            selector_matches(kind, spec)?;
            if let Some(v) = changed(&["spec", "selector"]) {
                return Err(invalid("spec.selector", v, "field is immutable"));
            }
            if kind == "StatefulSet" {
                if let Some(old_spec) = old_spec {
                    let fixed = |s: &Value| {
                        let mut s = s.as_object().cloned().unwrap_or_default();
                        for f in [
                            "replicas",
                            "ordinals",
                            "template",
                            "updateStrategy",
                            "persistentVolumeClaimRetentionPolicy",
                            "minReadySeconds",
                        ] {
                            s.remove(f);
                        }
                        s
                    };
                    if fixed(old_spec) != fixed(spec) {
                        return Err(forbidden("spec", "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"));
                    }
                }
            }
        }
        ("batch", "Job") => {
            if spec["manualSelector"] == true {
                selector_matches("Job", spec)?;
            }
            if let Some(v) = changed(&["spec", "selector"]) {
                return Err(invalid("spec.selector", v, "field is immutable"));
            }
            let suspended = old_spec.is_some_and(|s| s["suspend"] == true);
            if !suspended {
                if let Some(v) = changed(&["spec", "template"]) {
                    return Err(invalid("spec.template", v, "field is immutable"));
                }
            }
            if spec["completionMode"] != "Indexed" {
                if let Some(v) = changed(&["spec", "completions"]) {
                    return Err(invalid("spec.completions", v, "field is immutable"));
                }
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            if let Some(v) = changed(&["roleRef"]) {
                return Err(invalid("roleRef", v, "cannot change roleRef"));
            }
        }
        ("", kind @ ("ConfigMap" | "Secret")) => {
            if let Some(old) = old {
                if old["immutable"] == true {
                    if new["immutable"] != true {
                        return Err(forbidden(
                            "immutable",
                            "field is immutable when `immutable` is set",
                        ));
                    }
                    for f in ["data", "binaryData"] {
                        if old[f] != new[f] {
                            return Err(forbidden(f, "field is immutable when `immutable` is set"));
                        }
                    }
                }
                if kind == "Secret" {
                    if let Some(v) = changed(&["type"]) {
                        return Err(invalid("type", v, "field is immutable"));
                    }
                }
            }
        }
        ("", "PersistentVolumeClaim") => {
            if let Some(old_spec) = old_spec {
                let fixed = |s: &Value| {
                    let mut s = s.clone();
                    if let Some(m) = s.as_object_mut() {
                        m.remove("volumeAttributesClassName");
                    }
                    if let Some(r) = s["resources"].as_object_mut() {
                        r.remove("requests");
                    }
                    s
                };
                if fixed(old_spec) != fixed(spec) {
                    return Err(forbidden("spec", "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"));
                }
            }
        }
        ("", "Service") => {
            let ip = |s: Option<&Value>| {
                s.and_then(|s| s["clusterIP"].as_str())
                    .filter(|ip| !ip.is_empty())
                    .map(str::to_owned)
            };
            if let (Some(was), Some(now)) = (ip(old_spec), ip(Some(spec))) {
                if was != now {
                    return Err(invalid(
                        "spec.clusterIPs[0]",
                        &Value::from(vec![now]),
                        "may not change once set",
                    ));
                }
            }
        }
        ("", "Pod") => {
            if let Some(old_spec) = old_spec {
                let fixed = |s: &Value| {
                    let mut s = s.clone();
                    for list in ["containers", "initContainers"] {
                        for c in s[list].as_array_mut().into_iter().flatten() {
                            if let Some(c) = c.as_object_mut() {
                                c.remove("image");
                            }
                        }
                    }
                    if let Some(m) = s.as_object_mut() {
                        for f in [
                            "activeDeadlineSeconds",
                            "tolerations",
                            "terminationGracePeriodSeconds",
                        ] {
                            m.remove(f);
                        }
                    }
                    s
                };
                if fixed(old_spec) != fixed(spec) {
                    return Err(forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"));
                }
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") if !rt.custom => {
            for f in ["scope", "group"] {
                if let Some(v) = changed(&["spec", f]) {
                    return Err(invalid(&format!("spec.{f}"), v, "field is immutable"));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// A workload's selector must be set, not empty, and match its template's labels.
fn selector_matches(kind: &str, spec: &Value) -> Result<(), String> {
    let selector = &spec["selector"];
    if selector.is_null() {
        return Err("spec.selector: Required value".into());
    }
    let match_labels = selector["matchLabels"].as_object();
    let expressions = selector["matchExpressions"]
        .as_array()
        .is_some_and(|e| !e.is_empty());
    if match_labels.is_none_or(Map::is_empty) && !expressions {
        return Err(invalid(
            "spec.selector",
            selector,
            &format!("empty selector is invalid for {}", kind.to_lowercase()),
        ));
    }
    let labels = &spec["template"]["metadata"]["labels"];
    let matches = match_labels
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    if !matches {
        return Err(invalid(
            "spec.template.metadata.labels",
            labels,
            "`selector` does not match template `labels`",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::kinds;
    use serde_json::json;

    fn rt(kind: &str) -> ResourceType {
        kinds::builtins()
            .into_iter()
            .find(|t| t.kind == kind)
            .unwrap()
    }

    fn deployment(app: &str, image: &str) -> Value {
        json!({"spec": {"selector": {"matchLabels": {"app": app}},
            "template": {"metadata": {"labels": {"app": app}}, "spec": {"containers": [{"name": "c", "image": image}]}}}})
    }

    #[test]
    fn a_deployments_selector_is_immutable_and_must_match_its_labels() {
        let d = rt("Deployment");
        let old = deployment("web", "nginx:1");
        assert!(check(&d, None, &old).is_ok());
        assert!(check(&d, Some(&old), &deployment("web", "nginx:2")).is_ok());
        let e = check(&d, Some(&old), &deployment("web2", "nginx:1")).unwrap_err();
        assert!(
            e.starts_with("spec.selector: Invalid value") && e.ends_with("field is immutable"),
            "{e}"
        );
        let mut bad = deployment("web", "nginx:1");
        bad["spec"]["template"]["metadata"]["labels"]["app"] = json!("other");
        assert!(check(&d, None, &bad)
            .unwrap_err()
            .contains("does not match template"));
    }

    #[test]
    fn an_immutable_config_map_keeps_its_data() {
        let cm = rt("ConfigMap");
        let old = json!({"immutable": true, "data": {"a": "1"}});
        assert!(check(
            &cm,
            Some(&old),
            &json!({"immutable": true, "data": {"a": "2"}})
        )
        .is_err());
        assert!(check(&cm, Some(&old), &old).is_ok());
    }
}
