//! The sandbox's state: typed objects, the global resourceVersion counter, the event history
//! watches resume from, and every write verb (create, replace, patch, server-side apply,
//! delete). Pure and synchronous: the HTTP layer holds the lock and passes the time in.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

use super::fields::{self, FieldSet, Step};
use super::kinds::{self, ResourceType};
use super::normalize;
use super::selector::{FieldSelector, LabelSelector};
use super::status;
use super::{defaults, validate};
use crate::clock::{rfc3339, Millis};

/// Events kept for watches that resume from an older resourceVersion.
const HISTORY: usize = 100_000;

/// A Kubernetes `Status` failure.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        Self {
            code,
            reason,
            message,
            details: Value::Null,
        }
    }
    fn with_details(mut self, rt: &ResourceType, name: &str) -> Self {
        self.details = json!({"name": name, "group": rt.group, "kind": rt.plural});
        self
    }
    /// 404 `NotFound`: no such object.
    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.qualified_plural()),
        )
        .with_details(rt, name)
    }
    /// 409 `AlreadyExists`: the name is taken.
    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", rt.qualified_plural()),
        )
        .with_details(rt, name)
    }
    /// 409 `Conflict`: a stale resourceVersion or a failed precondition.
    pub fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                rt.qualified_plural()
            ),
        )
        .with_details(rt, name)
    }
    /// 422 `Invalid`: the object breaks a rule of its kind.
    pub fn invalid(rt: &ResourceType, name: &str, why: &str) -> Self {
        let kind = if rt.group.is_empty() {
            rt.kind.clone()
        } else {
            format!("{}.{}", rt.kind, rt.group)
        };
        // `field: Reason: detail`, as the API server words a field error.
        let (field, rest) = why.split_once(": ").unwrap_or(("", why));
        let reason = match rest.split(':').next().unwrap_or_default() {
            "Required value" => "FieldValueRequired",
            "Forbidden" => "FieldValueForbidden",
            "Unsupported value" => "FieldValueNotSupported",
            "Duplicate value" => "FieldValueDuplicate",
            _ => "FieldValueInvalid",
        };
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {why}"),
        );
        e.details = json!({"name": name, "group": rt.group, "kind": rt.kind,
            "causes": [{"reason": reason, "message": rest, "field": field}]});
        e
    }
    /// 400 `BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into())
    }
    /// 405 `MethodNotAllowed`.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message.into())
    }
    /// 415 `UnsupportedMediaType`.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message.into())
    }
    /// 410 `Expired`: a watch from a resourceVersion older than the history.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message.into())
    }
    /// A URL that names no resource the server serves, worded as the API server words it
    /// (`what` is only logged).
    pub fn resource_not_found(what: &str) -> Self {
        tracing::debug!(%what, "no such resource");
        let mut e = Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
        );
        e.details = json!({});
        e
    }

    /// The `Status` object Kubernetes sends for this error.
    pub fn status(&self) -> Value {
        let mut s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "code": self.code});
        if !self.reason.is_empty() {
            s["reason"] = json!(self.reason);
        }
        if !self.details.is_null() {
            s["details"] = self.details.clone();
        }
        s
    }
}

/// Identity of a stored object (storage is per group + plural, shared by all versions).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjKey {
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub name: String,
}

impl ObjKey {
    fn new(rt: &ResourceType, namespace: &str, name: &str) -> Self {
        Self {
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            namespace: if rt.namespaced {
                namespace.to_owned()
            } else {
                String::new()
            },
            name: name.to_owned(),
        }
    }
}

/// ADDED, MODIFIED or DELETED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    /// The event type as watch events spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watches deliver it.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub key: ObjKey,
    pub kind: EventType,
    pub object: Value,
}

/// What a new watch replays first, and the receiver of what follows.
pub type Subscription = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

/// Who writes, and how.
#[derive(Debug, Clone)]
pub struct WriteCtx {
    pub manager: String,
    pub dry_run: bool,
    pub now: Millis,
}

/// Which part of the object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
}

/// Patch flavours by content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`, approximated: merge patch in which lists of
    /// keyed maps merge item by item.
    Strategic,
    /// `application/apply-patch+yaml`: server-side apply.
    Apply { force: bool },
}

/// The sandbox's whole state.
pub struct World {
    types: Vec<ResourceType>,
    objects: BTreeMap<ObjKey, Value>,
    rv: u64,
    history: VecDeque<Arc<Event>>,
    events: broadcast::Sender<Arc<Event>>,
    /// Milliseconds before simulated workloads report ready (0: at once).
    pub ready_delay_ms: u64,
    /// Objects (and their generation) waiting for the readiness delay; drained by the caller.
    pub pending_ready: Vec<(ObjKey, i64)>,
    /// Set by every committed write; cleared by whoever persists the state.
    pub dirty: bool,
}

impl World {
    /// An empty cluster with the `default`, `kube-system` and `kube-public` namespaces.
    pub fn new(now: Millis) -> Self {
        let (events, _) = broadcast::channel(65_536);
        let mut world = Self {
            types: kinds::builtins(),
            objects: BTreeMap::new(),
            rv: 0,
            history: VecDeque::new(),
            events,
            ready_delay_ms: 0,
            pending_ready: Vec::new(),
            dirty: false,
        };
        let ctx = WriteCtx {
            manager: "sandbox".into(),
            dry_run: false,
            now,
        };
        for ns in ["default", "kube-system", "kube-public"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            let rt = world.types[0].clone();
            let _ = world.create(&rt, None, body, &ctx);
        }
        world
    }

    // ---- types -------------------------------------------------------------------------------

    /// Every served type.
    pub fn types(&self) -> &[ResourceType] {
        &self.types
    }

    /// The type served at `group/version` under `plural`.
    pub fn find_type(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    fn register_crd(&mut self, crd: &Value) -> Result<(), String> {
        let declared = kinds::from_crd(crd)?;
        let Some(first) = declared.first() else {
            return Err("spec.versions: at least one version must be served".into());
        };
        if kinds::builtins()
            .iter()
            .any(|b| b.group == first.group && b.plural == first.plural)
        {
            return Err(format!(
                "spec.group: {} is a built-in resource",
                first.qualified_plural()
            ));
        }
        let (group, plural) = (first.group.clone(), first.plural.clone());
        self.types
            .retain(|t| !(t.group == group && t.plural == plural));
        self.types.extend(declared);
        Ok(())
    }

    /// The OpenAPI documents of the applied CRDs' served versions.
    pub fn crd_documents(&self) -> Vec<super::openapi::Document> {
        self.objects
            .iter()
            .filter(|(k, _)| {
                k.group == "apiextensions.k8s.io" && k.plural == "customresourcedefinitions"
            })
            .flat_map(|(_, crd)| super::openapi::crd_documents(crd))
            .collect()
    }

    fn unregister_crd(&mut self, crd: &Value) {
        let group = crd["spec"]["group"].as_str().unwrap_or_default().to_owned();
        let plural = crd["spec"]["names"]["plural"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.types
            .retain(|t| !(t.group == group && t.plural == plural));
    }

    // ---- reads -------------------------------------------------------------------------------

    /// The current resourceVersion (of the last committed write).
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// One object.
    pub fn get(&self, rt: &ResourceType, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&ObjKey::new(rt, namespace, name))
            .map(|o| as_version(o, rt))
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// Objects of a type, in one namespace or all, filtered by selectors; sorted by
    /// namespace then name.
    pub fn list(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(k, _)| k.group == rt.group && k.plural == rt.plural)
            .filter(|(k, _)| namespace.is_none_or(|ns| !rt.namespaced || k.namespace == ns))
            .filter(|(_, o)| labels.matches(&labels_of(o)) && fields.matches(o))
            .map(|(_, o)| as_version(o, rt))
            .collect()
    }

    /// The events a watch starting at `since` must replay first, and a receiver for what
    /// follows. `since = None` (or 0) replays the current objects as ADDED.
    pub fn watch_from(
        &self,
        rt: &ResourceType,
        since: Option<u64>,
    ) -> Result<Subscription, ApiError> {
        let rx = self.events.subscribe();
        let same_type = |k: &ObjKey| k.group == rt.group && k.plural == rt.plural;
        let backlog = match since {
            None | Some(0) => self
                .objects
                .iter()
                .filter(|(k, _)| same_type(k))
                .map(|(k, o)| {
                    Arc::new(Event {
                        rv: self.rv,
                        key: k.clone(),
                        kind: EventType::Added,
                        object: o.clone(),
                    })
                })
                .collect(),
            Some(rv) => {
                let oldest = self.history.front().map_or(self.rv + 1, |e| e.rv);
                if rv + 1 < oldest && rv < self.rv {
                    return Err(ApiError::gone(format!(
                        "too old resource version: {rv} ({})",
                        oldest - 1
                    )));
                }
                self.history
                    .iter()
                    .filter(|e| e.rv > rv && same_type(&e.key))
                    .cloned()
                    .collect()
            }
        };
        Ok((backlog, rx))
    }

    // ---- writes ------------------------------------------------------------------------------

    /// POST: creates a new object (409 `AlreadyExists` if the name is taken).
    pub fn create(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        body: Value,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        let mut body = self.check_body(rt, namespace, None, body)?;
        let name = match body["metadata"]["name"].as_str().filter(|n| !n.is_empty()) {
            Some(n) => n.to_owned(),
            None => match body["metadata"]["generateName"].as_str() {
                Some(prefix) => {
                    let suffix = uuid::Uuid::new_v4().simple().to_string();
                    let name = format!("{prefix}{}", &suffix[..5]);
                    body["metadata"]["name"] = json!(name);
                    name
                }
                None => {
                    return Err(ApiError::invalid(
                        rt,
                        "",
                        "metadata.name: Required value: name or generateName is required",
                    ))
                }
            },
        };
        let key = ObjKey::new(rt, namespace.unwrap_or_default(), &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(rt, &name));
        }
        let sent = request_managed_fields(&body);
        strip_system_fields(&mut body);
        normalize::normalize(rt, &mut body).map_err(|why| undecodable(rt, &why))?;
        let zero = normalize::zero(rt);
        let new = update_ownership(&zero, body, sent, rt, ctx, None);
        self.finish(rt, key, new, None, ctx)
    }

    /// PUT: replaces the object (or its status); a stale `resourceVersion` is a 409 `Conflict`.
    pub fn replace(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        body: Value,
        part: Part,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        let body = self.check_body(
            rt,
            Some(namespace).filter(|_| rt.namespaced),
            Some(name),
            body,
        )?;
        let key = ObjKey::new(rt, namespace, name);
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        check_resource_version(rt, name, &body, &old)?;
        let (mut new, sent) = match part {
            Part::Status => {
                let mut new = old.clone();
                new["status"] = body["status"].clone();
                (new, None)
            }
            Part::Main => {
                let mut new = body;
                let sent = request_managed_fields(&new);
                strip_system_fields(&mut new);
                if rt.status_subresource {
                    restore_status(&mut new, &old);
                }
                (new, sent)
            }
        };
        normalize::normalize(rt, &mut new).map_err(|why| undecodable(rt, &why))?;
        let new = update_ownership(&old, new, sent, rt, ctx, subresource(part));
        self.finish(rt, key, new, Some(old), ctx)
    }

    /// PATCH with a merge, strategic-merge or apply body.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        kind: PatchKind,
        patch: Value,
        part: Part,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        if let PatchKind::Apply { force } = kind {
            return self.apply(rt, namespace, name, patch, force, part, ctx);
        }
        let key = ObjKey::new(rt, namespace, name);
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        if !patch.is_object() {
            return Err(ApiError::bad_request("the patch must be a JSON object"));
        }
        check_resource_version(rt, name, &patch, &old)?;
        let mut new = match kind {
            PatchKind::Strategic => strategic_merge(rt.schema(), &old, &patch),
            _ => merge_patch(&old, &patch),
        };
        if new["metadata"]["name"] != old["metadata"]["name"]
            || new["metadata"]["namespace"] != old["metadata"]["namespace"]
        {
            return Err(ApiError::invalid(
                rt,
                name,
                "metadata.name: Invalid value: field is immutable",
            ));
        }
        let sent = match part {
            Part::Status => {
                let status = new["status"].take();
                new = old.clone();
                new["status"] = status;
                None
            }
            Part::Main => {
                if rt.status_subresource {
                    restore_status(&mut new, &old);
                }
                // A patch of `metadata.managedFields` replaces the ownership record.
                (new["metadata"]["managedFields"] != old["metadata"]["managedFields"])
                    .then(|| request_managed_fields(&new))
                    .flatten()
            }
        };
        for f in ["uid", "creationTimestamp", "generation", "resourceVersion"] {
            new["metadata"][f] = old["metadata"][f].clone();
        }
        if let Some(m) = new["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
        normalize::normalize(rt, &mut new).map_err(|why| undecodable(rt, &why))?;
        let new = update_ownership(&old, new, sent, rt, ctx, subresource(part));
        self.finish(rt, key, new, Some(old), ctx)
    }

    /// Server-side apply: creates when missing; otherwise merges, checks field ownership
    /// (409 listing conflicting fields unless `force`) and removes fields this manager no longer
    /// sends that nobody else owns.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        body: Value,
        force: bool,
        part: Part,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        if ctx.manager.is_empty() || ctx.manager == "unknown" {
            return Err(ApiError::bad_request(
                "fieldManager is required for apply requests",
            ));
        }
        // The object as errors name it: `ns/name; apps/v1, Kind=Deployment` (the namespace as
        // the applied configuration gives it).
        let sent_ns = body["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let object = format!("{sent_ns}/{name}; {}", gvk(rt));
        let mut applied = self.check_body(
            rt,
            Some(namespace).filter(|_| rt.namespaced),
            Some(name),
            body,
        )?;
        if applied["metadata"]["managedFields"]
            .as_array()
            .is_some_and(|m| !m.is_empty())
        {
            return Err(ApiError::bad_request("metadata.managedFields must be nil"));
        }
        strip_system_fields(&mut applied);
        let ty = rt.schema();
        let typed = |e: String| {
            ApiError::new(
                500,
                "",
                format!("failed to create typed patch object ({object}): {e}"),
            )
        };
        let sub = subresource(part);
        let config_set = fields::field_set(ty, &applied, true).map_err(typed)?;
        let applied_set = owned_fields(config_set.clone(), rt, sub);
        let key = ObjKey::new(rt, namespace, name);
        let existing = self.objects.get(&key).cloned();
        if existing.is_none() && part == Part::Status {
            return Err(ApiError::not_found(rt, name));
        }
        let live = existing.clone().unwrap_or_else(|| normalize::zero(rt));
        let mut entries = managed_entries(&live);
        let mine = |e: &Managed| e.is(&ctx.manager, "Apply", sub, &rt.api_version());
        let previous = entries
            .iter()
            .find(|e| mine(e))
            .map(|e| e.set.clone())
            .unwrap_or_default();

        // Merge, then remove what this manager applied last time, no longer applies and nobody
        // else owns.
        let mut merged = fields::merge(ty, &live, &applied).map_err(typed)?;
        let owned_now: FieldSet = entries
            .iter()
            .filter(|e| !mine(e))
            .flat_map(|e| e.set.iter().cloned())
            .chain(config_set)
            .collect();
        let keep = fields::with_named_ancestors(ty, &owned_now);
        let prune: FieldSet = fields::with_named_ancestors(ty, &previous)
            .difference(&keep)
            .cloned()
            .collect();
        if !prune.is_empty() {
            merged = fields::remove_items(ty, &merged, &prune);
        }
        if part == Part::Status {
            let status = merged["status"].take();
            merged = live.clone();
            merged["status"] = status;
        } else if rt.status_subresource {
            restore_status(&mut merged, &live);
        }

        // Fields other managers own that this apply changes: conflicts, or (force) theirs no
        // more; fields it removes are nobody's.
        let cmp = fields::compare(ty, &live, &merged);
        let changed: FieldSet = cmp.modified.union(&cmp.added).cloned().collect();
        let mut conflicts = Vec::new();
        for e in entries.iter_mut().filter(|e| !mine(e)) {
            let taken: Vec<fields::Path> = e.set.intersection(&changed).cloned().collect();
            if force {
                for p in &taken {
                    e.set.remove(p);
                }
            } else {
                conflicts.extend(taken.into_iter().map(|p| (e.display(), p)));
            }
            for p in &cmp.removed {
                e.set.remove(p);
            }
        }
        if !conflicts.is_empty() {
            return Err(apply_conflict(rt, name, &conflicts));
        }
        let content_changed = merged != live;
        let time = match entries.iter().find(|e| mine(e)) {
            Some(e) if !content_changed => e.time.clone(),
            _ => rfc3339(ctx.now),
        };
        entries.retain(|e| !mine(e));
        let mut entry = Managed::new(ctx, "Apply", applied_set, rt, sub);
        entry.time = time;
        entries.push(entry);

        let mut new = merged;
        normalize::normalize(rt, &mut new).map_err(|why| {
            ApiError::new(
                500,
                "",
                format!(
                    "failed to convert new object ({object}) to proper version: unable to convert unstructured object to {}: {why}",
                    gvk(rt)
                ),
            )
        })?;
        set_managed(&mut new, entries);
        self.finish(rt, key, new, existing, ctx)
    }

    /// DELETE one object; a Namespace takes its objects along, a CRD its kind and objects.
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        preconditions: &Value,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        let key = ObjKey::new(rt, namespace, name);
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        if let Some(uid) = preconditions["uid"].as_str() {
            if old["metadata"]["uid"].as_str() != Some(uid) {
                return Err(ApiError::conflict(
                    rt,
                    name,
                    "Precondition failed: UID in precondition does not match the object",
                ));
            }
        }
        if let Some(rv) = preconditions["resourceVersion"].as_str() {
            if old["metadata"]["resourceVersion"].as_str() != Some(rv) {
                return Err(ApiError::conflict(rt, name, "Precondition failed: ResourceVersion in precondition does not match the object"));
            }
        }
        if ctx.dry_run {
            return Ok(as_version(&old, rt));
        }
        let dependents: Vec<ObjKey> = match (rt.group.as_str(), rt.kind.as_str()) {
            ("", "Namespace") => self
                .objects
                .keys()
                .filter(|k| k.namespace == name)
                .cloned()
                .collect(),
            ("apiextensions.k8s.io", "CustomResourceDefinition") => {
                let group = old["spec"]["group"].as_str().unwrap_or_default();
                let plural = old["spec"]["names"]["plural"].as_str().unwrap_or_default();
                self.objects
                    .keys()
                    .filter(|k| k.group == group && k.plural == plural)
                    .cloned()
                    .collect()
            }
            // Garbage collection of what a simulated controller made (Deployment → ReplicaSets
            // → Pods), as the real garbage collector does in the background.
            _ => self.owned_by(old["metadata"]["uid"].as_str().unwrap_or_default()),
        };
        for dep in dependents {
            if let Some(obj) = self.objects.remove(&dep) {
                self.commit_delete(dep, obj);
            }
        }
        if rt.kind == "CustomResourceDefinition" {
            self.unregister_crd(&old);
        }
        self.objects.remove(&key);
        let gone = as_version(&self.commit_delete(key, old.clone()), rt);
        // A deleted pod of a simulated ReplicaSet is replaced, as its controller would.
        if rt.group.is_empty() && rt.kind == "Pod" {
            if let Some(deployment) = self.deployment_of_pod(&old) {
                self.simulate_deployment(&deployment, ctx.now);
            }
        }
        Ok(gone)
    }

    /// Marks a simulated workload ready once its delay has passed (if still at `generation`).
    pub fn mark_ready(&mut self, key: &ObjKey, generation: i64, now: Millis) {
        let Some(old) = self.objects.get(key).cloned() else {
            return;
        };
        if old["metadata"]["generation"].as_i64() != Some(generation) {
            return;
        }
        let mut new = old.clone();
        if let Some(s) = status::status_for(&new, true, &rfc3339(now)) {
            new["status"] = s;
        }
        if new != old {
            self.commit(key.clone(), new, EventType::Modified);
        }
        if key.group == "apps" && key.plural == "deployments" {
            self.simulate_deployment(key, now);
        }
    }

    // ---- persistence -------------------------------------------------------------------------

    /// Everything needed to restore this state.
    pub fn snapshot(&self) -> Value {
        json!({"resourceVersion": self.rv, "objects": self.objects.values().collect::<Vec<_>>()})
    }

    /// Rebuilds a world from [`World::snapshot`] output.
    pub fn restore(snapshot: &Value, now: Millis) -> Result<Self, String> {
        let mut world = World::new(now);
        world.objects.clear();
        world.history.clear();
        let objects = snapshot["objects"]
            .as_array()
            .ok_or("state file: `objects` is missing")?;
        for obj in objects
            .iter()
            .filter(|o| o["kind"] == "CustomResourceDefinition")
        {
            world.register_crd(obj)?;
        }
        for obj in objects {
            let (group, version) =
                split_api_version(obj["apiVersion"].as_str().unwrap_or_default());
            let kind = obj["kind"].as_str().unwrap_or_default();
            let rt = world
                .types
                .iter()
                .find(|t| t.group == group && t.version == version && t.kind == kind)
                .cloned()
                .ok_or_else(|| format!("state file: unknown kind {kind} in {group}/{version}"))?;
            let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            world
                .objects
                .insert(ObjKey::new(&rt, ns, name), obj.clone());
        }
        world.rv = snapshot["resourceVersion"].as_u64().unwrap_or(0);
        world.dirty = false;
        Ok(world)
    }

    // ---- internals ---------------------------------------------------------------------------

    /// Checks apiVersion, kind, name and namespace of a request body against the URL.
    fn check_body(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: Option<&str>,
        mut body: Value,
    ) -> Result<Value, ApiError> {
        let Some(obj) = body.as_object_mut() else {
            return Err(ApiError::bad_request(
                "the request body must be a JSON or YAML object",
            ));
        };
        let url_name = name.unwrap_or_default();
        match obj.get("apiVersion").and_then(Value::as_str) {
            Some(v) if v != rt.api_version() => {
                return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({})",
                rt.api_version()
            )))
            }
            _ => {}
        }
        match obj.get("kind").and_then(Value::as_str) {
            Some(k) if k != rt.kind => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    rt.kind
                )))
            }
            _ => {}
        }
        obj.insert("apiVersion".into(), json!(rt.api_version()));
        obj.insert("kind".into(), json!(rt.kind));
        let meta = obj.entry("metadata").or_insert_with(|| json!({}));
        let Some(meta) = meta.as_object_mut() else {
            return Err(ApiError::bad_request("metadata must be an object"));
        };
        if let Some(name) = name {
            match meta.get("name").and_then(Value::as_str) {
                Some(n) if n != name => {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({n}) does not match the name on the URL ({name})"
                    )))
                }
                _ => {
                    meta.insert("name".into(), json!(name));
                }
            }
        }
        if rt.namespaced {
            let ns = namespace.ok_or_else(|| {
                ApiError::method_not_allowed(format!(
                    "{} must be written within a namespace",
                    rt.qualified_plural()
                ))
            })?;
            match meta.get("namespace").and_then(Value::as_str) {
                Some(n) if n != ns => {
                    return Err(ApiError::bad_request(format!(
                        "the namespace of the provided object ({n}) does not match the namespace sent on the request ({ns})"
                    )))
                }
                _ => {
                    meta.insert("namespace".into(), json!(ns));
                }
            }
            let ns_key = ObjKey {
                group: String::new(),
                plural: "namespaces".into(),
                namespace: String::new(),
                name: ns.to_owned(),
            };
            if !self.objects.contains_key(&ns_key) {
                return Err(ApiError::new(
                    404,
                    "NotFound",
                    format!("namespaces \"{ns}\" not found"),
                )
                .with_details(&self.types[0], ns));
            }
        } else {
            meta.remove("namespace");
        }
        if let Some(n) = meta.get("name").and_then(Value::as_str) {
            if !valid_name(n) {
                return Err(ApiError::invalid(rt, n, &format!(
                    "metadata.name: Invalid value: \"{n}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                )));
            }
        } else if name.is_none() && meta.get("generateName").is_none() {
            return Err(ApiError::invalid(
                rt,
                url_name,
                "metadata.name: Required value: name or generateName is required",
            ));
        }
        Ok(body)
    }

    /// Sets identity, generation and simulated status, then commits (unless a dry run or a
    /// no-op). A new CRD is then accepted and established by a status update of its own, as the
    /// API server's CRD controllers do right after the create.
    fn finish(
        &mut self,
        rt: &ResourceType,
        key: ObjKey,
        mut new: Value,
        old: Option<Value>,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        new["apiVersion"] = json!(rt.api_version());
        new["kind"] = json!(rt.kind);
        match &old {
            Some(old) => {
                for f in ["uid", "creationTimestamp"] {
                    new["metadata"][f] = old["metadata"][f].clone();
                }
                let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
                let bumped = if spec_of(old) != spec_of(&new) {
                    generation + 1
                } else {
                    generation
                };
                new["metadata"]["generation"] = json!(bumped);
            }
            None => {
                new["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
                new["metadata"]["creationTimestamp"] = json!(rfc3339(ctx.now));
                new["metadata"]["generation"] = json!(1);
            }
        }
        let is_crd = rt.kind == "CustomResourceDefinition" && !rt.custom;
        if is_crd {
            kinds::from_crd(&new).map_err(|why| ApiError::invalid(rt, &key.name, &why))?;
            if old.is_none() {
                let stored: Vec<Value> = new["spec"]["versions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|v| v["storage"].as_bool() == Some(true))
                    .map(|v| v["name"].clone())
                    .collect();
                new["status"] = json!({"acceptedNames": {"kind": "", "plural": ""},
                    "conditions": null, "storedVersions": stored});
            }
        }
        if rt.group.is_empty() && rt.kind == "Secret" {
            fold_string_data(&mut new);
        }
        if rt.group == "batch" && rt.kind == "Job" {
            defaults::job_selector(&mut new);
        }
        if rt.group.is_empty() && rt.kind == "Namespace" {
            new["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(key.name);
        }
        validate::check(rt, old.as_ref(), &new)
            .map_err(|why| ApiError::invalid(rt, &key.name, &why))?;
        let generation = new["metadata"]["generation"].as_i64().unwrap_or(1);
        let mut schedule_ready = false;
        if status::simulated(&rt.kind) {
            let same_generation = old
                .as_ref()
                .is_some_and(|o| o["metadata"]["generation"] == new["metadata"]["generation"]);
            if same_generation && old.as_ref().is_some_and(|o| o.get("status").is_some()) {
                if let Some(o) = &old {
                    new["status"] = o["status"].clone();
                }
            } else {
                let ready = self.ready_delay_ms == 0;
                if let Some(s) = status::status_for(&new, ready, &rfc3339(ctx.now)) {
                    new["status"] = s;
                }
                schedule_ready = !ready && !status::is_broken(&new);
            }
        }
        if let Some(old) = &old {
            if comparable(old) == comparable(&new) {
                return Ok(as_version(old, rt));
            }
        }
        if ctx.dry_run {
            match &old {
                Some(o) => {
                    new["metadata"]["resourceVersion"] = o["metadata"]["resourceVersion"].clone()
                }
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove("resourceVersion");
                    }
                }
            }
            return Ok(as_version(&new, rt));
        }
        if is_crd {
            self.register_crd(&new)
                .map_err(|why| ApiError::invalid(rt, &key.name, &why))?;
        }
        if schedule_ready {
            self.pending_ready.push((key.clone(), generation));
        }
        let kind = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        let created = as_version(&self.commit(key.clone(), new, kind), rt);
        if rt.group == "apps" && rt.kind == "Deployment" {
            self.simulate_deployment(&key, ctx.now);
        }
        if is_crd && old.is_none() {
            self.establish(rt, key, &created, ctx);
        }
        Ok(created)
    }

    /// The CRD controllers' status update after a CRD is created: names accepted, established.
    fn establish(&mut self, rt: &ResourceType, key: ObjKey, crd: &Value, ctx: &WriteCtx) {
        let now = rfc3339(ctx.now);
        let names = &crd["spec"]["names"];
        let kind = names["kind"].as_str().unwrap_or_default();
        let mut accepted = json!({
            "kind": kind,
            "plural": names["plural"],
            "singular": names["singular"].as_str().map_or_else(|| kind.to_lowercase(), str::to_owned),
            "listKind": names["listKind"].as_str().map_or_else(|| format!("{kind}List"), str::to_owned),
        });
        for f in ["shortNames", "categories"] {
            if names[f].as_array().is_some_and(|a| !a.is_empty()) {
                accepted[f] = names[f].clone();
            }
        }
        let mut new = crd.clone();
        new["status"]["acceptedNames"] = accepted;
        new["status"]["conditions"] = json!([
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now,
             "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": now,
             "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}
        ]);
        let controller = WriteCtx {
            manager: "kube-apiserver".into(),
            dry_run: false,
            now: ctx.now,
        };
        let new = update_ownership(crd, new, None, rt, &controller, Some("status"));
        self.commit(key, new, EventType::Modified);
    }

    fn commit(&mut self, key: ObjKey, mut obj: Value, kind: EventType) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(key.clone(), obj.clone());
        self.publish(key, kind, obj.clone());
        obj
    }

    fn commit_delete(&mut self, key: ObjKey, mut obj: Value) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.publish(key, EventType::Deleted, obj.clone());
        obj
    }

    fn publish(&mut self, key: ObjKey, kind: EventType, object: Value) {
        let event = Arc::new(Event {
            rv: self.rv,
            key,
            kind,
            object,
        });
        self.history.push_back(event.clone());
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
        let _ = self.events.send(event);
        self.dirty = true;
    }
}

/// A stored object as served at `rt`'s version (CRD versions share storage, no conversion).
fn as_version(obj: &Value, rt: &ResourceType) -> Value {
    let mut o = obj.clone();
    o["apiVersion"] = json!(rt.api_version());
    o
}

fn split_api_version(v: &str) -> (&str, &str) {
    v.split_once('/').unwrap_or(("", v))
}

/// The labels of an object as a map.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

/// Secrets store `stringData` as base64 `data`, as the API server does (`stringData` is
/// write-only).
fn fold_string_data(secret: &mut Value) {
    let Some(Value::Object(string_data)) =
        secret.as_object_mut().and_then(|m| m.remove("stringData"))
    else {
        return;
    };
    // `data` that is not a map (`data: 1`) would make the index below panic; a real API
    // server rejects such a Secret, and validation elsewhere reports it: keep it as written.
    if !(secret["data"].is_object() || secret["data"].is_null()) {
        return;
    }
    for (k, v) in string_data {
        let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
        secret["data"][k] = json!(crate::diff::base64(text.as_bytes()));
    }
}

/// Removes what only the server sets.
fn strip_system_fields(obj: &mut Value) {
    if let Some(meta) = obj["metadata"].as_object_mut() {
        for f in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "managedFields",
            "selfLink",
            "deletionTimestamp",
        ] {
            meta.remove(f);
        }
    }
}

fn restore_status(new: &mut Value, old: &Value) {
    match old.get("status") {
        Some(s) => new["status"] = s.clone(),
        None => {
            if let Some(m) = new.as_object_mut() {
                m.remove("status");
            }
        }
    }
}

fn check_resource_version(
    rt: &ResourceType,
    name: &str,
    body: &Value,
    old: &Value,
) -> Result<(), ApiError> {
    match body["metadata"]["resourceVersion"].as_str() {
        Some(rv) if !rv.is_empty() && Some(rv) != old["metadata"]["resourceVersion"].as_str() => Err(ApiError::conflict(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )),
        _ => Ok(()),
    }
}

/// The object without metadata and status: what `generation` tracks.
fn spec_of(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

/// The object without volatile bookkeeping, to detect no-op writes.
fn comparable(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(meta) = o["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
        if let Some(Value::Array(entries)) = meta.get_mut("managedFields") {
            for e in entries {
                if let Some(e) = e.as_object_mut() {
                    e.remove("time");
                }
            }
        }
    }
    o
}

/// One `managedFields` entry, decoded.
#[derive(Debug, Clone)]
struct Managed {
    manager: String,
    operation: String,
    api_version: String,
    subresource: Option<String>,
    time: String,
    set: FieldSet,
}

impl Managed {
    fn new(
        ctx: &WriteCtx,
        operation: &str,
        set: FieldSet,
        rt: &ResourceType,
        subresource: Option<&str>,
    ) -> Self {
        Self {
            manager: ctx.manager.clone(),
            operation: operation.to_owned(),
            api_version: rt.api_version(),
            subresource: subresource.map(str::to_owned),
            time: rfc3339(ctx.now),
            set,
        }
    }

    /// The manager as conflicts name it: `"kubectl" with subresource "status" using apps/v1`
    /// (the API version for Update entries only).
    fn display(&self) -> String {
        let mut out = format!("{:?}", self.manager);
        if let Some(s) = &self.subresource {
            out.push_str(&format!(" with subresource {s:?}"));
        }
        if self.operation == "Update" {
            out.push_str(&format!(" using {}", self.api_version));
        }
        out
    }

    /// Whether this is the entry of `manager`'s `operation` (Update entries are also per API
    /// version).
    fn is(
        &self,
        manager: &str,
        operation: &str,
        subresource: Option<&str>,
        api_version: &str,
    ) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
            && (operation == "Apply" || self.api_version == api_version)
    }
}

fn decode_managed(entries: &[Value]) -> Vec<Managed> {
    entries
        .iter()
        .map(|e| Managed {
            manager: e["manager"].as_str().unwrap_or_default().to_owned(),
            operation: e["operation"].as_str().unwrap_or("Update").to_owned(),
            api_version: e["apiVersion"].as_str().unwrap_or_default().to_owned(),
            subresource: e["subresource"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            time: e["time"].as_str().unwrap_or_default().to_owned(),
            set: fields::from_fields_v1(&e["fieldsV1"]),
        })
        .collect()
}

fn managed_entries(obj: &Value) -> Vec<Managed> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|entries| decode_managed(entries))
        .unwrap_or_default()
}

/// The ownership record a write sends in `metadata.managedFields`, when it sends one: it
/// replaces the stored record (`[{}]` empties it); an empty list keeps the stored one.
fn request_managed_fields(obj: &Value) -> Option<Vec<Managed>> {
    let entries = obj["metadata"]["managedFields"].as_array()?;
    match entries.as_slice() {
        [] => None,
        [only] if only.as_object().is_some_and(Map::is_empty) => Some(Vec::new()),
        _ => Some(decode_managed(entries)),
    }
}

/// Writes the entries that still own something as `metadata.managedFields`, ordered as the API
/// server orders them (Apply before Update, then by time, manager, API version, subresource).
fn set_managed(obj: &mut Value, mut entries: Vec<Managed>) {
    entries.retain(|e| !e.set.is_empty());
    entries.sort_by(|a, b| {
        (
            &a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                &b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    let encoded: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            let mut v = json!({"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                   "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": fields::to_fields_v1(&e.set)});
            if let Some(s) = e.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    match obj["metadata"].as_object_mut() {
        Some(meta) if encoded.is_empty() => {
            meta.remove("managedFields");
        }
        _ => obj["metadata"]["managedFields"] = Value::Array(encoded),
    }
}

/// `apps/v1, Kind=Deployment` (`/v1, Kind=Pod` in the core group), as Go prints a kind.
fn gvk(rt: &ResourceType) -> String {
    format!("{}/{}, Kind={}", rt.group, rt.version, rt.kind)
}

/// A body the kind's types cannot decode (a malformed quantity): 400, as the API server.
fn undecodable(rt: &ResourceType, why: &str) -> ApiError {
    ApiError::bad_request(format!(
        "{kind} in version {version:?} cannot be handled as a {kind}: {why}",
        kind = rt.kind,
        version = rt.version
    ))
}

fn subresource(part: Part) -> Option<&'static str> {
    match part {
        Part::Main => None,
        Part::Status => Some("status"),
    }
}

/// Fields nobody owns: identity and bookkeeping, and what the written part resets (`status`
/// for writes to the main resource of a kind with a status subresource; everything but
/// `status` for status writes).
fn ignored(path: &[Step], rt: &ResourceType, subresource: Option<&str>) -> bool {
    match path {
        [Step::Field(f)] if matches!(f.as_str(), "apiVersion" | "kind" | "metadata") => true,
        [Step::Field(m), Step::Field(f), ..] if m == "metadata" => matches!(
            f.as_str(),
            "name"
                | "namespace"
                | "creationTimestamp"
                | "selfLink"
                | "uid"
                | "clusterName"
                | "generation"
                | "managedFields"
                | "resourceVersion"
        ),
        [Step::Field(s), ..] => match subresource {
            None => rt.status_subresource && s == "status",
            Some(_) => s != "status",
        },
        _ => false,
    }
}

fn owned_fields(set: FieldSet, rt: &ResourceType, subresource: Option<&str>) -> FieldSet {
    set.into_iter()
        .filter(|p| !ignored(p, rt, subresource))
        .collect()
}

/// Ownership after a non-apply write: the writer takes the fields it added or changed (from
/// everyone else), fields the write removed are nobody's. `sent`: the ownership record the
/// request carried, which replaces the stored one.
fn update_ownership(
    old: &Value,
    mut new: Value,
    sent: Option<Vec<Managed>>,
    rt: &ResourceType,
    ctx: &WriteCtx,
    subresource: Option<&str>,
) -> Value {
    let cmp = fields::compare(rt.schema(), old, &new);
    let taken = owned_fields(
        cmp.modified.union(&cmp.added).cloned().collect(),
        rt,
        subresource,
    );
    let api_version = rt.api_version();
    let mut entries = sent.unwrap_or_else(|| managed_entries(old));
    for e in entries.iter_mut() {
        e.set
            .retain(|p| !taken.contains(p) && !cmp.removed.contains(p));
    }
    if !taken.is_empty() {
        match entries
            .iter_mut()
            .find(|e| e.is(&ctx.manager, "Update", subresource, &api_version))
        {
            Some(e) => {
                e.set.extend(taken);
                e.time = rfc3339(ctx.now);
            }
            None => entries.push(Managed::new(ctx, "Update", taken, rt, subresource)),
        }
    }
    set_managed(&mut new, entries);
    new
}

/// A 409 naming each field another manager owns (`conflicts`: manager as printed, field).
fn apply_conflict(rt: &ResourceType, name: &str, conflicts: &[(String, fields::Path)]) -> ApiError {
    let text = match conflicts {
        [(who, p)] => format!("conflict with {who}: {}", fields::display(p)),
        _ => {
            // Grouped by manager, as the API server words it.
            let mut by: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for (who, p) in conflicts {
                by.entry(who).or_default().push(fields::display(p));
            }
            by.iter()
                .map(|(who, paths)| {
                    let lines: Vec<String> = paths.iter().map(|p| format!("- {p}")).collect();
                    format!("conflicts with {who}:\n{}", lines.join("\n"))
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let message = format!(
        "Apply failed with {} conflict{}: {text}",
        conflicts.len(),
        if conflicts.len() == 1 { "" } else { "s" },
    );
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(who, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {who}"), "field": fields::display(p)}))
        .collect();
    tracing::debug!(kind = %rt.kind, %name, "apply conflict");
    let mut err = ApiError::new(409, "Conflict", message);
    err.details = json!({ "causes": causes });
    err
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    match patch {
        Value::Object(p) => {
            let mut out = target.as_object().cloned().unwrap_or_else(Map::new);
            for (k, v) in p {
                if v.is_null() {
                    out.remove(k);
                } else {
                    let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), v);
                    out.insert(k.clone(), merged);
                }
            }
            Value::Object(out)
        }
        _ => patch.clone(),
    }
}

/// A merge patch in which lists the schema keys (patch merge keys) merge item by item: an
/// approximation of strategic merge patch (`$patch` directives are not supported).
fn strategic_merge(ty: fields::Ty<'_>, target: &Value, patch: &Value) -> Value {
    match (target, patch) {
        (_, Value::Object(p)) => {
            let mut out = target.as_object().cloned().unwrap_or_else(Map::new);
            for (k, v) in p {
                if v.is_null() {
                    out.remove(k);
                } else {
                    let child = ty.and_then(|n| n.field(k));
                    let merged = strategic_merge(child, out.get(k).unwrap_or(&Value::Null), v);
                    out.insert(k.clone(), merged);
                }
            }
            Value::Object(out)
        }
        (Value::Array(live), Value::Array(items)) => match ty.and_then(|n| n.list_type()) {
            Some(crate::cluster::schema::ListType::Map(keys)) => {
                strategic_list(ty.and_then(|n| n.items()), &keys, live, items)
            }
            _ => patch.clone(),
        },
        _ => patch.clone(),
    }
}

/// A keyed list patched strategically: patch items merged into the live items of the same
/// keys, live-only items kept. Order: the patch items in patch order, each live-only item
/// placed before the first patch item that comes after it in the live list (new items count as
/// coming first).
fn strategic_list(
    items_ty: fields::Ty<'_>,
    keys: &[String],
    live: &[Value],
    patch: &[Value],
) -> Value {
    let key = |v: &Value| -> Vec<Value> { keys.iter().map(|k| v[k].clone()).collect() };
    let live_keys: Vec<Vec<Value>> = live.iter().map(key).collect();
    let position = |v: &Value| live_keys.iter().position(|k| *k == key(v));
    let patched: Vec<(Option<usize>, Value)> = patch
        .iter()
        .map(|p| {
            let at = position(p);
            let merged = match at {
                Some(i) => strategic_merge(items_ty, &live[i], p),
                None => p.clone(),
            };
            (at, merged)
        })
        .collect();
    let mut live_only = live
        .iter()
        .enumerate()
        .filter(|(_, l)| !patch.iter().any(|p| key(p) == key(l)))
        .peekable();
    let mut out = Vec::with_capacity(live.len() + patch.len());
    for (at, merged) in patched {
        while let Some((i, l)) = live_only.peek() {
            if at.is_some_and(|a| a > *i) {
                out.push((*l).clone());
                live_only.next();
            } else {
                break;
            }
        }
        out.push(merged);
    }
    out.extend(live_only.map(|(_, l)| l.clone()));
    Value::Array(out)
}

// ---- simulated Deployment controller --------------------------------------------------------

impl World {
    /// Keys of the objects whose ownerReferences name `uid`, and theirs (depth first; an
    /// ownership cycle is followed once).
    fn owned_by(&self, uid: &str) -> Vec<ObjKey> {
        let mut seen = std::collections::HashSet::new();
        self.owned_by_seen(uid, &mut seen)
    }

    fn owned_by_seen(
        &self,
        uid: &str,
        seen: &mut std::collections::HashSet<String>,
    ) -> Vec<ObjKey> {
        if uid.is_empty() || !seen.insert(uid.to_owned()) {
            return Vec::new();
        }
        let direct: Vec<(ObjKey, String)> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|rs| rs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, o)| {
                (
                    k.clone(),
                    o["metadata"]["uid"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let mut out = Vec::new();
        for (k, child_uid) in direct {
            out.extend(self.owned_by_seen(&child_uid, seen));
            if !out.contains(&k) {
                out.push(k);
            }
        }
        out
    }

    fn type_of(&self, group: &str, kind: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == "v1" && t.kind == kind)
            .cloned()
    }

    /// The Deployment owning `pod` through its ReplicaSet, if the simulation made them.
    fn deployment_of_pod(&self, pod: &Value) -> Option<ObjKey> {
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
        let rs_name = pod["metadata"]["ownerReferences"]
            .as_array()?
            .iter()
            .find(|r| r["kind"] == "ReplicaSet")?["name"]
            .as_str()?;
        let rs_t = self.type_of("apps", "ReplicaSet")?;
        let rs = self.objects.get(&ObjKey::new(&rs_t, ns, rs_name))?;
        let d_name = rs["metadata"]["ownerReferences"]
            .as_array()?
            .iter()
            .find(|r| r["kind"] == "Deployment")?["name"]
            .as_str()?;
        let d_t = self.type_of("apps", "Deployment")?;
        let key = ObjKey::new(&d_t, ns, d_name);
        self.objects.contains_key(&key).then_some(key)
    }

    /// What the Deployment and ReplicaSet controllers, the scheduler and the kubelet would do
    /// for Deployment `key`: one ReplicaSet per pod template (`<name>-<template hash>`, older ones
    /// scaled to 0 and their pods removed) and `spec.replicas` Pods of the current one, Running —
    /// Ready once the Deployment reports them ready, `CrashLoopBackOff` for an image tagged
    /// `broken`. Enough for the live tree, pod logs and actions to have something real to show.
    fn simulate_deployment(&mut self, key: &ObjKey, now: Millis) {
        use sha2::Digest;
        let (Some(d), Some(rs_t), Some(pod_t)) = (
            self.objects.get(key).cloned(),
            self.type_of("apps", "ReplicaSet"),
            self.type_of("", "Pod"),
        ) else {
            return;
        };
        let ns = key.namespace.clone();
        let d_uid = d["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
        let d_name = key.name.clone();
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
        let template = d["spec"]["template"].clone();
        let hash: String = hex_prefix(&sha2::Sha256::digest(template.to_string().as_bytes()), 5);
        let rs_name = format!("{d_name}-{hash}");
        let broken = status::is_broken(&d);
        let ready = !broken && d["status"]["readyReplicas"].as_i64() == Some(replicas);
        let stamp = rfc3339(now);
        let owner = |api: &str, kind: &str, name: &str, uid: &str| {
            json!([{"apiVersion": api, "kind": kind, "name": name, "uid": uid,
                    "controller": true, "blockOwnerDeletion": true}])
        };
        // Older ReplicaSets: scaled to 0, their pods gone.
        let old_sets: Vec<ObjKey> = self
            .objects
            .iter()
            .filter(|(k, o)| {
                k.plural == "replicasets"
                    && k.namespace == ns
                    && k.name != rs_name
                    && o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|rs| rs.iter().any(|r| r["uid"] == d_uid.as_str()))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in old_sets {
            let Some(old) = self.objects.get(&k).cloned() else {
                continue;
            };
            for pod in self.owned_by(old["metadata"]["uid"].as_str().unwrap_or_default()) {
                if let Some(p) = self.objects.remove(&pod) {
                    self.commit_delete(pod, p);
                }
            }
            let mut new = old.clone();
            new["spec"]["replicas"] = json!(0);
            new["status"] = json!({"replicas": 0, "observedGeneration": 1});
            if new != old {
                self.commit(k, new, EventType::Modified);
            }
        }
        // The current ReplicaSet.
        let rs_key = ObjKey::new(&rs_t, &ns, &rs_name);
        let existing = self.objects.get(&rs_key).cloned();
        let mut labels = template["metadata"]["labels"].clone();
        if !labels.is_object() {
            labels = json!({});
        }
        labels["pod-template-hash"] = json!(hash);
        let rs_uid = existing
            .as_ref()
            .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_owned))
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let ready_count = if ready { replicas } else { 0 };
        let rs = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": rs_name, "namespace": ns, "uid": rs_uid, "generation": 1,
                "creationTimestamp": existing.as_ref().map_or(json!(stamp), |o| o["metadata"]["creationTimestamp"].clone()),
                "labels": labels,
                "ownerReferences": owner("apps/v1", "Deployment", &d_name, &d_uid)},
            "spec": {"replicas": replicas, "selector": d["spec"]["selector"], "template": template},
            "status": {"replicas": replicas, "readyReplicas": ready_count,
                       "availableReplicas": ready_count, "observedGeneration": 1},
        });
        if existing.as_ref() != Some(&rs) {
            let kind = if existing.is_some() {
                EventType::Modified
            } else {
                EventType::Added
            };
            let mut rs = rs;
            if let Some(e) = &existing {
                rs["metadata"]["resourceVersion"] = e["metadata"]["resourceVersion"].clone();
            }
            self.commit(rs_key, rs, kind);
        }
        // Its pods.
        let pods: Vec<ObjKey> = self
            .objects
            .iter()
            .filter(|(k, o)| {
                k.plural == "pods"
                    && k.namespace == ns
                    && o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|rs| rs.iter().any(|r| r["uid"] == rs_uid.as_str()))
            })
            .map(|(k, _)| k.clone())
            .collect();
        let want = usize::try_from(replicas).unwrap_or(0);
        for extra in pods.iter().skip(want) {
            if let Some(p) = self.objects.remove(extra) {
                self.commit_delete(extra.clone(), p);
            }
        }
        let containers: Vec<Value> = template["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let pod_status = |started: &Value| {
            let statuses: Vec<Value> = containers
                .iter()
                .map(|c| {
                    let state = if broken {
                        json!({"waiting": {"reason": "CrashLoopBackOff",
                               "message": "back-off 5m0s restarting failed container"}})
                    } else {
                        json!({"running": {"startedAt": started}})
                    };
                    json!({"name": c["name"], "image": c["image"], "ready": ready,
                           "restartCount": if broken { 5 } else { 0 }, "state": state})
                })
                .collect();
            json!({"phase": "Running", "startTime": started,
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                   "containerStatuses": statuses})
        };
        for (i, pod_key) in pods.iter().take(want).enumerate() {
            let _ = i;
            let Some(old) = self.objects.get(pod_key).cloned() else {
                continue;
            };
            let mut new = old.clone();
            new["status"] = pod_status(&old["metadata"]["creationTimestamp"]);
            if new != old {
                self.commit(pod_key.clone(), new, EventType::Modified);
            }
        }
        for _ in pods.len()..want {
            let suffix = &uuid::Uuid::new_v4().simple().to_string()[..5];
            let name = format!("{rs_name}-{suffix}");
            let mut pod_labels = labels.clone();
            pod_labels["pod-template-hash"] = json!(hash);
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "uid": uuid::Uuid::new_v4().to_string(),
                    "generation": 1, "creationTimestamp": stamp, "labels": pod_labels,
                    "ownerReferences": owner("apps/v1", "ReplicaSet", &rs_name, &rs_uid)},
                "spec": template["spec"],
                "status": pod_status(&json!(stamp)),
            });
            self.commit(ObjKey::new(&pod_t, &ns, &name), pod, EventType::Added);
        }
    }
}

fn hex_prefix(bytes: &[u8], n: usize) -> String {
    bytes.iter().take(n).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod controller_tests {
    use super::*;

    fn ctx() -> WriteCtx {
        WriteCtx {
            manager: "test".into(),
            dry_run: false,
            now: 1_796_086_800_000,
        }
    }

    fn deployment(image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    fn pods(world: &World) -> Vec<Value> {
        let t = world.find_type("", "v1", "pods").unwrap();
        world.list(
            &t,
            Some("default"),
            &LabelSelector::parse("").unwrap(),
            &FieldSelector::parse("").unwrap(),
        )
    }

    #[test]
    fn a_deployment_gets_a_replicaset_and_pods_replaced_on_a_new_template_and_deleted_with_it() {
        let mut world = World::new(ctx().now);
        let d = world.find_type("apps", "v1", "deployments").unwrap();
        world
            .create(&d, Some("default"), deployment("nginx:1.27"), &ctx())
            .unwrap();
        let first = pods(&world);
        assert_eq!(first.len(), 2);
        assert_eq!(first[0]["status"]["phase"], "Running");
        assert_eq!(
            first[0]["metadata"]["ownerReferences"][0]["kind"],
            "ReplicaSet"
        );
        // A broken image: a new ReplicaSet whose pods crash-loop; the old pods are gone.
        world
            .replace(
                &d,
                "default",
                "web",
                deployment("nginx:broken"),
                Part::Main,
                &ctx(),
            )
            .unwrap();
        let second = pods(&world);
        assert_eq!(second.len(), 2);
        assert!(second.iter().all(|p| !first
            .iter()
            .any(|f| f["metadata"]["name"] == p["metadata"]["name"])));
        assert_eq!(
            second[0]["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
            "CrashLoopBackOff"
        );
        // Deleting the Deployment deletes its ReplicaSets and pods.
        world
            .delete(&d, "default", "web", &json!({}), &ctx())
            .unwrap();
        assert!(pods(&world).is_empty());
        let rs = world.find_type("apps", "v1", "replicasets").unwrap();
        assert!(world
            .list(
                &rs,
                Some("default"),
                &LabelSelector::parse("").unwrap(),
                &FieldSelector::parse("").unwrap()
            )
            .is_empty());
    }
}
