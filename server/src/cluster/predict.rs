//! What an apply would store, asked of the API server itself: server-side apply dry runs
//! (`dryRun=All`, field manager `tidemark`, force) cached by (desired object, live object
//! version) so that reconciling an unchanged application makes no API call; the kinds'
//! schemas from the server's OpenAPI v3 (list keys), cached per group-version and fetched again
//! when a kind is missing from them (a CRD applied since); and the takeover of fields kubectl's
//! client-side apply owns, done before a real apply as `kubectl apply --server-side` does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::client::{ClusterClient, ClusterError, FIELD_MANAGER};
use super::schema::GroupVersionSchema;
use crate::diff::predicted::{has_client_side_apply, is_client_side_apply};
use crate::render::canonical_json;

/// Dry-run answers kept at most; the cache is emptied when full (an unchanged fleet refills it
/// in one reconcile round).
const MAX_PREDICTIONS: usize = 50_000;

/// How long a group-version's schema is trusted before a miss may read the index again.
const SCHEMA_RETRY: Duration = Duration::from_secs(1);

/// (digest of the desired object, live uid, [`version_key`] of the live object)
type PredictionKey = (String, String, String);

/// What identifies a version of a live object for comparison: everything but `status` (and
/// what every write rewrites). For kinds with `metadata.generation` — bumped by the API server
/// on every change outside metadata and status — the generation plus a digest of the metadata
/// a compare reads and of other managers' field ownership (which decides what an apply
/// removes), so that status updates (a rollout, a controller's heartbeat) cost no new dry run;
/// otherwise the resourceVersion.
pub fn version_key(obj: &Value) -> String {
    let meta = &obj["metadata"];
    match meta["generation"].as_i64() {
        Some(generation) => {
            // Who owns which field decides what an apply removes (a field another manager
            // also owns stays): ownership changes without a new generation (a second
            // manager applying the same value) must not be answered from the cache. Times and
            // the status subresource's entries are left out (heartbeats).
            let owners: Vec<Value> = meta["managedFields"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                // As the watch cache keeps them: Tidemark's own entry follows the generation.
                .filter(|e| {
                    e["subresource"].as_str() != Some("status")
                        && e["manager"].as_str() != Some(FIELD_MANAGER)
                })
                .map(|e| {
                    json!([
                        e["manager"],
                        e["operation"],
                        e["subresource"],
                        e["fieldsV1"]
                    ])
                })
                .collect();
            let compared = json!([
                meta["labels"],
                meta["annotations"],
                meta["finalizers"],
                meta["ownerReferences"],
                meta["deletionTimestamp"],
                owners,
            ]);
            format!("g{generation}:{}", &object_digest(&compared)[..32])
        }
        None => format!("rv{}", meta["resourceVersion"].as_str().unwrap_or_default()),
    }
}

/// Parsed OpenAPI documents per group-version, with the document URL (hash included) and
/// when the index was last read.
type SchemaCache = HashMap<String, (Option<Arc<GroupVersionSchema>>, Option<String>, Instant)>;

/// The per-cluster caches of this module.
#[derive(Default)]
pub struct Predictions {
    answers: std::sync::Mutex<HashMap<PredictionKey, Arc<Value>>>,
    schemas: tokio::sync::Mutex<SchemaCache>,
    dry_runs: AtomicU64,
}

/// The digest a prediction is cached under: SHA-256 of the object's canonical JSON.
fn object_digest(obj: &Value) -> String {
    let mut h = Sha256::new();
    h.update(canonical_json(obj).as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl ClusterClient {
    /// Server-side apply dry runs sent so far (cache misses).
    pub fn dry_run_calls(&self) -> u64 {
        self.predictions.dry_runs.load(Ordering::Relaxed)
    }

    /// What the API server would store if `desired` were applied now over `live` (server-side
    /// apply dry run, forced, as `tidemark`), with `managedFields` left out. Cached by the
    /// desired object's digest and the live object's uid and [`version_key`], so an unchanged
    /// pair costs no request.
    ///
    /// The dry run sees the object as stored now, which may be newer than the `live` the
    /// caller holds (the watch lags): then the object is read again and returned too (compare
    /// the prediction with that one), and the answer is kept under the version it came from.
    ///
    /// Errors: the API server's refusal (an invalid or immutable field, a webhook that cannot
    /// run in dry run, no permission), as [`ClusterError::Api`].
    pub async fn predict(
        &self,
        desired: &Value,
        live: &Value,
    ) -> Result<(Arc<Value>, Option<Value>), ClusterError> {
        let digest = object_digest(desired);
        let uid = live["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let key = (digest.clone(), uid.clone(), version_key(live));
        if let Some(hit) = self.lock_answers().get(&key) {
            return Ok((hit.clone(), None));
        }
        // The dry run answers from the object as stored now; when that is not `live` (the
        // watch lags, or a controller wrote meanwhile), read it again and ask again, so that
        // the answer and the object it is compared with are the same version.
        let rv = |o: &Value| o["metadata"]["resourceVersion"].clone();
        let mut base: Option<Value> = None;
        let mut attempts = 0;
        let (predicted, key) = loop {
            attempts += 1;
            self.predictions.dry_runs.fetch_add(1, Ordering::Relaxed);
            let mut predicted = self.apply(desired, true).await?;
            if let Some(m) = predicted["metadata"].as_object_mut() {
                m.remove("managedFields");
            }
            let seen = base.as_ref().unwrap_or(live);
            if rv(&predicted) == rv(seen) {
                let key = (digest, uid, version_key(seen));
                break (predicted, Some(key));
            }
            match self.get_direct(desired).await? {
                Some(fresh) if rv(&fresh) == rv(&predicted) => {
                    let key = (digest, uid, version_key(&fresh));
                    base = Some(fresh);
                    break (predicted, Some(key));
                }
                Some(fresh) if attempts < 3 => base = Some(fresh),
                fresh => {
                    // Still moving: compare with the newest read, remember nothing.
                    base = fresh.or(base);
                    break (predicted, None);
                }
            }
        };
        let fresher = base;
        let predicted = Arc::new(predicted);
        if let Some(key) = key {
            let mut answers = self.lock_answers();
            if answers.len() >= MAX_PREDICTIONS {
                answers.clear();
            }
            answers.insert(key, predicted.clone());
        }
        Ok((predicted, fresher))
    }

    fn lock_answers(&self) -> std::sync::MutexGuard<'_, HashMap<PredictionKey, Arc<Value>>> {
        self.predictions
            .answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The API server's OpenAPI v3 schema of `api_version` (`v1`, `apps/v1`) that defines
    /// `kind`, or `None` if the server publishes none for it. While the kind is missing from
    /// it (a CRD established a moment ago is published about a second later), the small index
    /// is read again at most every second and the document only when its hash changed.
    pub async fn schema(&self, api_version: &str, kind: &str) -> Option<Arc<GroupVersionSchema>> {
        let mut schemas = self.predictions.schemas.lock().await;
        let cached = schemas.get(api_version).cloned();
        if let Some((found, _, at)) = &cached {
            if found.as_ref().is_some_and(|s| s.kind(kind).is_some()) || at.elapsed() < SCHEMA_RETRY
            {
                return found.clone().filter(|s| s.kind(kind).is_some());
            }
        }
        let url = self.schema_url(api_version).await;
        let fetched = match (&cached, &url) {
            (Some((found, Some(old), _)), Some(new)) if old == new => found.clone(),
            (_, Some(new)) => self.fetch_schema(new, api_version).await.map(Arc::new),
            (_, None) => None,
        };
        if fetched.is_none() {
            tracing::debug!(cluster = %self.name, %api_version, "no OpenAPI v3 schema");
        }
        schemas.insert(
            api_version.to_owned(),
            (fetched.clone(), url, Instant::now()),
        );
        fetched.filter(|s| s.kind(kind).is_some())
    }

    /// Waits (at most `timeout`) until the API server publishes the OpenAPI schema of every
    /// served version of the CustomResourceDefinition `crd`, so that the next compare matches
    /// its lists by their keys; a server that never publishes one only costs the wait.
    pub async fn await_published_schema(&self, crd: &Value, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let group = crd["spec"]["group"].as_str().unwrap_or_default();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
        let versions: Vec<String> = crd["spec"]["versions"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|v| v["served"].as_bool() != Some(false))
            .filter_map(|v| v["name"].as_str().map(|n| format!("{group}/{n}")))
            .collect();
        for api_version in versions {
            loop {
                self.predictions.schemas.lock().await.remove(&api_version);
                if self.schema(&api_version, kind).await.is_some() || Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    async fn get_json(&self, uri: String) -> Option<Value> {
        let request = http::Request::get(uri).body(Vec::new()).ok()?;
        self.client.request::<Value>(request).await.ok()
    }

    /// The document URL of a group-version from the `/openapi/v3` index (it carries the
    /// document's hash, so it changes when the document does).
    async fn schema_url(&self, api_version: &str) -> Option<String> {
        let index = self.get_json("/openapi/v3".to_owned()).await?;
        let path = if api_version.contains('/') {
            format!("apis/{api_version}")
        } else {
            format!("api/{api_version}")
        };
        index["paths"][&path]["serverRelativeURL"]
            .as_str()
            .map(str::to_owned)
    }

    async fn fetch_schema(&self, url: &str, api_version: &str) -> Option<GroupVersionSchema> {
        let doc = self.get_json(url.to_owned()).await?;
        Some(GroupVersionSchema::parse(&doc, api_version))
    }

    /// Hands the fields kubectl's client-side apply owns on the live object to `tidemark`
    /// (their managedFields entries merged into Tidemark's apply entry), so the next apply
    /// removes what Git no longer declares, as `kubectl apply --server-side` (≥ 1.26) and Flux
    /// do. Nothing happens when no such entry exists. Guarded by the live resourceVersion; a
    /// concurrent write fails it with a 409 that the next sync retries.
    ///
    /// Returns whether managedFields were rewritten.
    pub async fn take_over_client_side_apply(&self, obj: &Value) -> Result<bool, ClusterError> {
        // The watch cache keeps other managers' entries: most objects cost no request here.
        match self.get(obj).await {
            Ok(Some(cached)) if has_client_side_apply(&cached) => {}
            _ => return Ok(false),
        }
        let Some(live) = self.get_direct(obj).await? else {
            return Ok(false);
        };
        let entries = live["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !entries.iter().any(is_client_side_apply) {
            return Ok(false);
        }
        let (csa, mut rest): (Vec<Value>, Vec<Value>) =
            entries.into_iter().partition(is_client_side_apply);
        let mut fields = json!({});
        for e in &csa {
            merge_fields(&mut fields, &e["fieldsV1"]);
        }
        let api_version = live["apiVersion"].as_str().unwrap_or_default();
        let ours = rest.iter_mut().find(|e| {
            e["manager"].as_str() == Some(FIELD_MANAGER)
                && e["operation"].as_str() == Some("Apply")
                && e["subresource"].as_str().is_none_or(str::is_empty)
        });
        match ours {
            Some(e) => {
                let mut merged = e["fieldsV1"].clone();
                merge_fields(&mut merged, &fields);
                e["fieldsV1"] = merged;
            }
            None => rest.push(json!({
                "manager": FIELD_MANAGER, "operation": "Apply", "apiVersion": api_version,
                "time": csa.first().map_or(Value::Null, |e| e["time"].clone()),
                "fieldsType": "FieldsV1", "fieldsV1": fields,
            })),
        }
        let patch = json!({"metadata": {
            "resourceVersion": live["metadata"]["resourceVersion"],
            "managedFields": rest,
        }});
        self.merge_patch(obj, &patch).await?;
        tracing::info!(cluster = %self.name, object = %super::client::describe(obj),
            "took over fields owned by kubectl client-side apply");
        Ok(true)
    }
}

/// Adds every field of FieldsV1 set `from` to `into`.
fn merge_fields(into: &mut Value, from: &Value) {
    let (Some(into), Some(from)) = (into.as_object_mut(), from.as_object()) else {
        return;
    };
    for (k, v) in from {
        let slot = into.entry(k.clone()).or_insert_with(|| json!({}));
        merge_fields(slot, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_sets_merge_as_a_union() {
        let mut a = json!({"f:metadata": {"f:labels": {"f:app": {}}}});
        merge_fields(
            &mut a,
            &json!({"f:metadata": {"f:labels": {".": {}, "f:tier": {}}}, "f:spec": {"f:replicas": {}}}),
        );
        assert_eq!(
            a,
            json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}, "f:tier": {}}}, "f:spec": {"f:replicas": {}}})
        );
    }

    #[test]
    fn the_digest_ignores_key_order() {
        assert_eq!(
            object_digest(&json!({"a": 1, "b": 2})),
            object_digest(&json!({"b": 2, "a": 1}))
        );
    }
}
