//! Health of live objects, from the status their controllers write, and of an application
//! (its worst resource).

use serde::Serialize;
use serde_json::Value;

/// Health of a resource or an application, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Health {
    Healthy,
    Progressing,
    Unknown,
    Missing,
    Degraded,
}

/// A health with the reason a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assessment {
    pub health: Health,
    pub message: String,
}

fn says(health: Health, message: impl Into<String>) -> Assessment {
    Assessment {
        health,
        message: message.into(),
    }
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// The health of one live object (`None`: the object does not exist).
pub fn assess(obj: Option<&Value>) -> Assessment {
    let Some(obj) = obj else {
        return says(Health::Missing, "not found in the cluster");
    };
    let kind = obj["kind"].as_str().unwrap_or_default();
    let status = &obj["status"];
    let generation = int(&obj["metadata"]["generation"]);
    let observed = int(&status["observedGeneration"]);
    let stale =
        generation > 0 && observed < generation && status.get("observedGeneration").is_some();
    match kind {
        "Deployment" | "StatefulSet" | "ReplicaSet" => {
            if let Some(c) = condition(obj, "Progressing") {
                if c["reason"] == "ProgressDeadlineExceeded" {
                    return says(
                        Health::Degraded,
                        c["message"].as_str().unwrap_or("rollout timed out"),
                    );
                }
            }
            if status.is_null() || stale {
                return says(
                    Health::Progressing,
                    "waiting for the controller to observe the change",
                );
            }
            let want = obj["spec"]["replicas"].as_i64().unwrap_or(1);
            let updated = status.get("updatedReplicas").map_or(want, int);
            let ready = if kind == "Deployment" {
                int(&status["availableReplicas"])
            } else {
                int(&status["readyReplicas"])
            };
            if updated < want {
                return says(
                    Health::Progressing,
                    format!("{updated} of {want} replicas updated"),
                );
            }
            if ready < want {
                return says(
                    Health::Progressing,
                    format!("{ready} of {want} replicas ready"),
                );
            }
            says(Health::Healthy, format!("{ready} of {want} replicas ready"))
        }
        "DaemonSet" => {
            if status.is_null() || stale {
                return says(
                    Health::Progressing,
                    "waiting for the controller to observe the change",
                );
            }
            let want = int(&status["desiredNumberScheduled"]);
            let available = int(&status["numberAvailable"]);
            if available < want {
                return says(
                    Health::Progressing,
                    format!("{available} of {want} pods available"),
                );
            }
            says(
                Health::Healthy,
                format!("{available} of {want} pods available"),
            )
        }
        "Pod" => match status["phase"].as_str() {
            Some("Succeeded") => says(Health::Healthy, "completed"),
            Some("Failed") => says(
                Health::Degraded,
                status["message"].as_str().unwrap_or("pod failed"),
            ),
            Some("Running") => {
                let waiting = status["containerStatuses"].as_array().and_then(|cs| {
                    cs.iter().find_map(|c| {
                        c["state"]["waiting"]["reason"]
                            .as_str()
                            .filter(|r| r.contains("BackOff") || r.contains("Err"))
                    })
                });
                match waiting {
                    Some(reason) => says(Health::Degraded, reason),
                    None if condition(obj, "Ready").is_some_and(|c| c["status"] == "True") => {
                        says(Health::Healthy, "running and ready")
                    }
                    None => says(Health::Progressing, "running, not ready"),
                }
            }
            _ => says(Health::Progressing, "pending"),
        },
        "Job" => {
            if condition(obj, "Failed").is_some_and(|c| c["status"] == "True") {
                return says(
                    Health::Degraded,
                    condition(obj, "Failed")
                        .and_then(|c| c["reason"].as_str())
                        .unwrap_or("job failed"),
                );
            }
            if condition(obj, "Complete").is_some_and(|c| c["status"] == "True") {
                return says(Health::Healthy, "completed");
            }
            says(Health::Progressing, "running")
        }
        "PersistentVolumeClaim" => match status["phase"].as_str() {
            Some("Bound") => says(Health::Healthy, "bound"),
            Some("Lost") => says(Health::Degraded, "the bound volume was lost"),
            _ => says(Health::Progressing, "waiting for a volume"),
        },
        "Service" if obj["spec"]["type"] == "LoadBalancer" => {
            if status["loadBalancer"]["ingress"]
                .as_array()
                .is_some_and(|i| !i.is_empty())
            {
                says(Health::Healthy, "load balancer ready")
            } else {
                says(Health::Progressing, "waiting for a load balancer address")
            }
        }
        "Ingress" => {
            if status["loadBalancer"]["ingress"]
                .as_array()
                .is_some_and(|i| !i.is_empty())
            {
                says(Health::Healthy, "ingress has an address")
            } else {
                says(Health::Progressing, "waiting for an ingress address")
            }
        }
        _ => says(Health::Healthy, "exists"),
    }
}

/// An application's health: its worst resource (Healthy when it has none).
pub fn worst<'a>(resources: impl IntoIterator<Item = &'a Assessment>) -> Health {
    resources
        .into_iter()
        .map(|a| a.health)
        .max()
        .unwrap_or(Health::Healthy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deployments_move_from_progressing_to_healthy_or_degraded() {
        let mut d = json!({"kind": "Deployment", "metadata": {"generation": 2}, "spec": {"replicas": 2},
                           "status": {"observedGeneration": 1}});
        assert_eq!(assess(Some(&d)).health, Health::Progressing);
        d["status"] =
            json!({"observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 1});
        assert_eq!(assess(Some(&d)).message, "1 of 2 replicas ready");
        d["status"]["availableReplicas"] = json!(2);
        assert_eq!(assess(Some(&d)).health, Health::Healthy);
        d["status"]["conditions"] = json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "timed out"}]);
        assert_eq!(
            assess(Some(&d)),
            Assessment {
                health: Health::Degraded,
                message: "timed out".into()
            }
        );
    }

    #[test]
    fn pods_jobs_claims_services_and_ingresses() {
        let pod = json!({"kind": "Pod", "status": {"phase": "Running", "containerStatuses": [{"state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert_eq!(assess(Some(&pod)).health, Health::Degraded);
        let job = json!({"kind": "Job", "status": {"conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(assess(Some(&job)).health, Health::Healthy);
        let pvc = json!({"kind": "PersistentVolumeClaim", "status": {"phase": "Pending"}});
        assert_eq!(assess(Some(&pvc)).health, Health::Progressing);
        let lb = json!({"kind": "Service", "spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {}}});
        assert_eq!(assess(Some(&lb)).health, Health::Progressing);
        let ing = json!({"kind": "Ingress", "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}});
        assert_eq!(assess(Some(&ing)).health, Health::Healthy);
        assert_eq!(
            assess(Some(&json!({"kind": "ConfigMap"}))).health,
            Health::Healthy
        );
        assert_eq!(assess(None).health, Health::Missing);
    }

    #[test]
    fn an_application_is_as_healthy_as_its_worst_resource() {
        let a = [
            says(Health::Healthy, ""),
            says(Health::Missing, ""),
            says(Health::Progressing, ""),
        ];
        assert_eq!(worst(&a), Health::Missing);
        assert_eq!(worst(&[]), Health::Healthy);
    }
}
