//! Simulated controllers: the `status` a real cluster's controllers would write, so health
//! assessment can be tested. Workloads whose pod template uses an image tagged `broken` never
//! become available; others become ready immediately or after the configured delay.

use serde_json::{json, Value};

/// Whether the sandbox has a simulated controller for this kind.
pub fn simulated(kind: &str) -> bool {
    matches!(
        kind,
        "Deployment"
            | "StatefulSet"
            | "DaemonSet"
            | "ReplicaSet"
            | "Job"
            | "PersistentVolumeClaim"
            | "Pod"
            | "Namespace"
    )
}

/// Whether any container of the pod template (or pod) runs an image tagged `broken`.
pub fn is_broken(obj: &Value) -> bool {
    let pod_spec = if obj["kind"] == "Pod" {
        &obj["spec"]
    } else {
        &obj["spec"]["template"]["spec"]
    };
    ["containers", "initContainers"].iter().any(|list| {
        pod_spec[list].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                c["image"]
                    .as_str()
                    .is_some_and(|i| i.rsplit_once(':').is_some_and(|(_, tag)| tag == "broken"))
            })
        })
    })
}

/// The status for `obj` at `now` (RFC 3339). `ready` is false while a rollout is still within
/// the configured readiness delay.
pub fn status_for(obj: &Value, ready: bool, now: &str) -> Option<Value> {
    let kind = obj["kind"].as_str()?;
    let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1);
    let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
    let broken = is_broken(obj);
    let condition = |type_: &str, status: bool, reason: &str, message: &str| {
        json!({"type": type_, "status": if status { "True" } else { "False" },
               "reason": reason, "message": message,
               "lastUpdateTime": now, "lastTransitionTime": now})
    };
    let status = match kind {
        "Deployment" | "StatefulSet" | "ReplicaSet" => {
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            let available = if broken || !ready { 0 } else { replicas };
            let mut s = json!({
                "observedGeneration": generation,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": available,
                "availableReplicas": available,
            });
            if kind == "StatefulSet" {
                s["currentReplicas"] = json!(replicas);
            }
            if available < replicas {
                s["unavailableReplicas"] = json!(replicas - available);
            }
            if kind == "Deployment" {
                let progressing = if broken {
                    condition(
                        "Progressing",
                        false,
                        "ProgressDeadlineExceeded",
                        &format!("ReplicaSet \"{name}\" has timed out progressing."),
                    )
                } else if ready {
                    condition(
                        "Progressing",
                        true,
                        "NewReplicaSetAvailable",
                        &format!("ReplicaSet \"{name}\" has successfully progressed."),
                    )
                } else {
                    condition(
                        "Progressing",
                        true,
                        "ReplicaSetUpdated",
                        &format!("ReplicaSet \"{name}\" is progressing."),
                    )
                };
                let avail = if available >= replicas {
                    condition(
                        "Available",
                        true,
                        "MinimumReplicasAvailable",
                        "Deployment has minimum availability.",
                    )
                } else {
                    condition(
                        "Available",
                        false,
                        "MinimumReplicasUnavailable",
                        "Deployment does not have minimum availability.",
                    )
                };
                s["conditions"] = json!([avail, progressing]);
            }
            s
        }
        "DaemonSet" => {
            let n = 1;
            let ready_n = if broken || !ready { 0 } else { n };
            json!({"observedGeneration": generation, "desiredNumberScheduled": n,
                   "currentNumberScheduled": n, "updatedNumberScheduled": n,
                   "numberReady": ready_n, "numberAvailable": ready_n,
                   "numberUnavailable": n - ready_n, "numberMisscheduled": 0})
        }
        "Job" => {
            if broken {
                json!({"failed": 1, "conditions": [condition("Failed", true, "BackoffLimitExceeded", "Job has reached the specified backoff limit")]})
            } else if ready {
                let completions = obj["spec"]["completions"].as_i64().unwrap_or(1);
                json!({"succeeded": completions, "startTime": now, "completionTime": now,
                       "conditions": [condition("Complete", true, "", "")]})
            } else {
                json!({"active": 1, "startTime": now})
            }
        }
        "Pod" => {
            let running = ready && !broken;
            json!({"phase": if running { "Running" } else { "Pending" },
                   "conditions": [condition("Ready", running, if running { "" } else { "ContainersNotReady" }, "")]})
        }
        "PersistentVolumeClaim" => json!({"phase": "Bound",
            "capacity": obj["spec"]["resources"]["requests"].clone(),
            "accessModes": obj["spec"]["accessModes"].clone()}),
        "Namespace" => json!({"phase": "Active"}),
        _ => return None,
    };
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(image: &str) -> Value {
        json!({"kind": "Deployment", "metadata": {"name": "web", "generation": 3},
               "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}}})
    }

    #[test]
    fn a_healthy_deployment_reports_available_replicas() {
        let s = status_for(&deployment("nginx:1.27"), true, "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(s["observedGeneration"], 3);
        assert_eq!(s["availableReplicas"], 2);
        assert_eq!(s["conditions"][0]["status"], "True");
    }

    #[test]
    fn an_image_tagged_broken_never_becomes_available() {
        let d = deployment("registry.example/app:broken");
        assert!(is_broken(&d));
        let s = status_for(&d, true, "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(s["availableReplicas"], 0);
        assert_eq!(s["conditions"][1]["reason"], "ProgressDeadlineExceeded");
    }

    #[test]
    fn a_rollout_within_its_delay_is_progressing() {
        let s = status_for(&deployment("nginx:1"), false, "t").unwrap();
        assert_eq!(s["readyReplicas"], 0);
        assert_eq!(s["conditions"][1]["reason"], "ReplicaSetUpdated");
    }
}
