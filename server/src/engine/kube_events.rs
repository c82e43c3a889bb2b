//! Kubernetes Events on application timelines. The API server keeps Events about an hour;
//! Tidemark keeps those about an application's objects and their descendants (pods, replica
//! sets, jobs…) on its timeline like every other entry, so "why did this go Degraded last
//! night" has an answer.
//!
//! One watch of `core/v1` Events per cluster (all namespaces). `events.k8s.io/v1` Events are
//! the same stored objects served by a second API, so this watch sees both. Each Event is
//! mapped to its application by its `involvedObject` and that object's owner chain
//! ([`ClusterClient::application_of`]); it is written once per `(uid, count)` (the store
//! deduplicates across replicas and restarts) and at most once per involved object every
//! [`PER_OBJECT_INTERVAL`] (a crash-looping pod adds one entry per interval, its count rising).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Event;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::{json, Value};

use crate::cluster::client::ClusterClient;
use crate::store::Store;

/// At most one timeline entry per involved object in this interval.
pub const PER_OBJECT_INTERVAL: Duration = Duration::from_secs(30);

/// Timeline kind of a `Normal` Event.
pub const KIND_NORMAL: &str = "kube_event";
/// Timeline kind of a `Warning` Event (highlighted).
pub const KIND_WARNING: &str = "kube_warning";

/// Starts the recorder for one cluster (and the watches of descendant kinds it maps through).
pub fn spawn(store: Store, cluster: Arc<ClusterClient>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        cluster.watch_descendants().await;
        let api: Api<Event> = Api::all(cluster.client());
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects();
        let mut stream = std::pin::pin!(stream);
        let mut recorder = Recorder::default();
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    if let Err(e) = recorder.record(&store, &cluster, &event).await {
                        tracing::warn!(cluster = %cluster.name, error = %e, "cannot record a Kubernetes event");
                    }
                }
                Err(e) => {
                    tracing::debug!(cluster = %cluster.name, error = %e, "event watch failed; retrying")
                }
            }
        }
    })
}

/// What the recorder remembers between Events.
#[derive(Default)]
struct Recorder {
    /// Involved object uid → when its last entry was written.
    last_entry: HashMap<String, Instant>,
    /// Application name → whether it is Tidemark's and on this cluster (checked once a minute).
    known: HashMap<String, (bool, Instant)>,
}

impl Recorder {
    async fn record(
        &mut self,
        store: &Store,
        cluster: &ClusterClient,
        event: &Event,
    ) -> Result<(), crate::store::StoreError> {
        let involved = &event.involved_object;
        let (Some(namespace), Some(name), Some(kind)) = (
            involved.namespace.as_deref(),
            involved.name.as_deref(),
            involved.kind.as_deref(),
        ) else {
            // Cluster-scoped objects (nodes) belong to no application.
            return Ok(());
        };
        let reference = json!({
            "apiVersion": involved.api_version.as_deref().unwrap_or("v1"),
            "kind": kind,
            "metadata": {"namespace": namespace, "name": name},
        });
        let Some(app) = cluster.application_of(&reference).await else {
            return Ok(());
        };
        if self.known.len() > 10_000 {
            self.known.clear();
        }
        let ours = match self.known.get(&app) {
            Some((ours, at)) if at.elapsed() < Duration::from_secs(60) => *ours,
            _ => {
                let ours = store
                    .app_source(&app)
                    .await?
                    .is_some_and(|s| s.cluster == cluster.name);
                self.known.insert(app.clone(), (ours, Instant::now()));
                ours
            }
        };
        if !ours {
            return Ok(());
        }
        // Rate limited per object and reason: a different reason (Scheduled, then Failed) is
        // never held back by the one before.
        let object_uid = format!(
            "{}/{}",
            involved
                .uid
                .clone()
                .unwrap_or_else(|| format!("{kind}/{namespace}/{name}")),
            event.reason.as_deref().unwrap_or_default()
        );
        if self
            .last_entry
            .get(&object_uid)
            .is_some_and(|at| at.elapsed() < PER_OBJECT_INTERVAL)
        {
            return Ok(());
        }
        let Some(uid) = event.metadata.uid.as_deref() else {
            return Ok(());
        };
        let (timeline_kind, message, detail, at) = describe(event, kind, name, namespace);
        let count = detail["count"].as_i64().unwrap_or(1);
        if store
            .add_kube_event(&app, uid, count, timeline_kind, &message, &detail, at)
            .await?
        {
            self.last_entry.insert(object_uid, Instant::now());
            self.last_entry
                .retain(|_, at| at.elapsed() < PER_OBJECT_INTERVAL);
        }
        Ok(())
    }
}

/// The timeline entry of an Event: `(kind, message, detail, when)`. The message reads
/// "Warning BackOff Pod/web-7c9-x2k: Back-off restarting failed container (×4)"; the time is the
/// Event's latest occurrence (else now).
pub fn describe(
    event: &Event,
    kind: &str,
    name: &str,
    namespace: &str,
) -> (&'static str, String, Value, crate::clock::Millis) {
    let type_ = event.type_.as_deref().unwrap_or("Normal");
    let reason = event.reason.as_deref().unwrap_or("");
    let count = event
        .count
        .or_else(|| event.series.as_ref().and_then(|s| s.count))
        .unwrap_or(1)
        .max(1);
    let text = event.message.as_deref().unwrap_or("").trim();
    let times = count_suffix(count);
    let message = format!("{type_} {reason} {kind}/{name}: {text}{times}");
    // The latest occurrence: a series' last observation (events.k8s.io), else lastTimestamp
    // (core/v1), else when it first happened.
    let when = event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| t.0)
        .or_else(|| event.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.first_timestamp.as_ref().map(|t| t.0));
    let at = when
        .map(|t| t.as_millisecond())
        .filter(|ms| *ms > 0)
        .unwrap_or_else(crate::clock::now);
    let source = event
        .reporting_component
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| event.source.as_ref().and_then(|s| s.component.clone()))
        .unwrap_or_default();
    let detail = json!({
        "uid": event.metadata.uid,
        "type": type_,
        "reason": reason,
        "count": count,
        "source": source,
        "object": {"apiVersion": event.involved_object.api_version, "kind": kind,
                   "namespace": namespace, "name": name},
    });
    let kind = if type_ == "Warning" {
        KIND_WARNING
    } else {
        KIND_NORMAL
    };
    (kind, message, detail, at)
}

fn count_suffix(count: i32) -> String {
    if count > 1 {
        format!(" (×{count})")
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_reads_as_type_reason_object_message_and_count() {
        let event: Event = serde_json::from_value(json!({
            "metadata": {"name": "web.1", "namespace": "shop", "uid": "e1"},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": "shop", "name": "web-1"},
            "type": "Warning", "reason": "BackOff", "message": "Back-off restarting failed container",
            "count": 4, "lastTimestamp": "2026-12-01T03:00:00Z", "source": {"component": "kubelet"}
        }))
        .unwrap();
        let (kind, message, detail, at) = describe(&event, "Pod", "web-1", "shop");
        assert_eq!(kind, KIND_WARNING);
        assert_eq!(
            message,
            "Warning BackOff Pod/web-1: Back-off restarting failed container (×4)"
        );
        assert_eq!(detail["count"], 4);
        assert_eq!(detail["source"], "kubelet");
        assert_eq!(at, 1_796_094_000_000);
        let normal: Event = serde_json::from_value(json!({
            "metadata": {"name": "x", "uid": "e2"},
            "involvedObject": {"kind": "Deployment", "name": "web"},
            "type": "Normal", "reason": "ScalingReplicaSet", "message": "Scaled up replica set web-1 to 2",
            "series": {"count": 1, "lastObservedTime": "2026-12-01T03:00:00.000000Z"}
        }))
        .unwrap();
        let (kind, message, _, _) = describe(&normal, "Deployment", "web", "shop");
        assert_eq!(kind, KIND_NORMAL);
        assert_eq!(
            message,
            "Normal ScalingReplicaSet Deployment/web: Scaled up replica set web-1 to 2"
        );
    }
}
