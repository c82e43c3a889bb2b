//! The sandbox's state: typed objects, the global resourceVersion counter, the event history
//! watches resume from, and every write verb (create, replace, patch, server-side apply,
//! delete). Pure and synchronous: the HTTP layer holds the lock and passes the time in.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

use super::fields::{self, FieldSet};
use super::kinds::{self, ResourceType};
use super::selector::{FieldSelector, LabelSelector};
use super::status;
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
    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.qualified_plural()),
        )
        .with_details(rt, name)
    }
    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", rt.qualified_plural()),
        )
        .with_details(rt, name)
    }
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
    pub fn invalid(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {why}", rt.kind),
        )
        .with_details(rt, name)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into())
    }
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message.into())
    }
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message.into())
    }
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message.into())
    }
    pub fn resource_not_found(what: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({what})"),
        )
    }

    /// The `Status` object Kubernetes sends for this error.
    pub fn status(&self) -> Value {
        let mut s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code});
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
        strip_system_fields(&mut body);
        let set = fields::field_set(&body);
        set_managed(&mut body, rt, vec![Managed::new(ctx, "Update", set)]);
        self.finish(rt, key, body, None, ctx)
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
        let new = match part {
            Part::Status => {
                let mut new = old.clone();
                new["status"] = body["status"].clone();
                new
            }
            Part::Main => {
                let mut new = body;
                strip_system_fields(&mut new);
                if rt.status_subresource {
                    restore_status(&mut new, &old);
                }
                new
            }
        };
        let new = update_ownership(&old, new, rt, ctx);
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
            PatchKind::Strategic => strategic_merge(&old, &patch),
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
        match part {
            Part::Status => {
                let status = new["status"].take();
                new = old.clone();
                new["status"] = status;
            }
            Part::Main if rt.status_subresource => restore_status(&mut new, &old),
            Part::Main => {}
        }
        for f in ["uid", "creationTimestamp", "generation"] {
            new["metadata"][f] = old["metadata"][f].clone();
        }
        let new = update_ownership(&old, new, rt, ctx);
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
        let mut applied = self.check_body(
            rt,
            Some(namespace).filter(|_| rt.namespaced),
            Some(name),
            body,
        )?;
        strip_system_fields(&mut applied);
        if part == Part::Main && rt.status_subresource {
            if let Some(m) = applied.as_object_mut() {
                m.remove("status");
            }
        }
        let applied_set = fields::field_set(&applied);
        let key = ObjKey::new(rt, namespace, name);
        let Some(old) = self.objects.get(&key).cloned() else {
            if part == Part::Status {
                return Err(ApiError::not_found(rt, name));
            }
            let mut new = applied;
            set_managed(&mut new, rt, vec![Managed::new(ctx, "Apply", applied_set)]);
            return self.finish(rt, key, new, None, ctx);
        };

        let mut entries = managed_entries(&old);
        let mut conflicts = Vec::new();
        for e in entries
            .iter_mut()
            .filter(|e| !(e.manager == ctx.manager && e.operation == "Apply"))
        {
            let found = fields::conflicts(&old, &applied, &applied_set, &e.set);
            if force {
                for p in &found {
                    e.set.remove(p);
                }
            } else {
                conflicts.extend(found.into_iter().map(|p| (e.manager.clone(), p)));
            }
        }
        if !conflicts.is_empty() {
            return Err(apply_conflict(rt, name, &conflicts));
        }
        let previous = entries
            .iter()
            .find(|e| e.manager == ctx.manager && e.operation == "Apply")
            .map(|e| e.set.clone())
            .unwrap_or_default();
        let others: FieldSet = entries
            .iter()
            .filter(|e| !(e.manager == ctx.manager && e.operation == "Apply"))
            .flat_map(|e| e.set.iter().cloned())
            .collect();
        let mut new = fields::merge(&old, &applied);
        let owned: FieldSet = others.union(&applied_set).cloned().collect();
        for path in previous.difference(&applied_set) {
            let shared = others.iter().any(|o| o.starts_with(path));
            if !shared {
                fields::remove(&mut new, path, &owned);
            }
        }
        entries.retain(|e| !(e.manager == ctx.manager && e.operation == "Apply"));
        entries.push(Managed::new(ctx, "Apply", applied_set));
        set_managed(&mut new, rt, entries);
        self.finish(rt, key, new, Some(old), ctx)
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
            _ => Vec::new(),
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
        Ok(as_version(&self.commit_delete(key, old), rt))
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
    /// no-op).
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
        if rt.kind == "CustomResourceDefinition" {
            kinds::from_crd(&new).map_err(|why| ApiError::invalid(rt, &key.name, &why))?;
            if !ctx.dry_run {
                self.register_crd(&new)
                    .map_err(|why| ApiError::invalid(rt, &key.name, &why))?;
            }
            new["status"] = json!({"conditions": [{"type": "Established", "status": "True", "reason": "InitialNamesAccepted"}],
                "acceptedNames": new["spec"]["names"].clone()});
        }
        if rt.group.is_empty() && rt.kind == "Secret" {
            fold_string_data(&mut new);
        }
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
            new["metadata"]["resourceVersion"] = old
                .as_ref()
                .map_or(json!(""), |o| o["metadata"]["resourceVersion"].clone());
            return Ok(as_version(&new, rt));
        }
        if schedule_ready {
            self.pending_ready.push((key.clone(), generation));
        }
        let kind = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        Ok(as_version(&self.commit(key, new, kind), rt))
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
struct Managed {
    manager: String,
    operation: String,
    time: String,
    set: FieldSet,
}

fn managed_entries(obj: &Value) -> Vec<Managed> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| Managed {
                    manager: e["manager"].as_str().unwrap_or_default().to_owned(),
                    operation: e["operation"].as_str().unwrap_or("Update").to_owned(),
                    time: e["time"].as_str().unwrap_or_default().to_owned(),
                    set: fields::from_fields_v1(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Managed {
    fn new(ctx: &WriteCtx, operation: &str, set: FieldSet) -> Self {
        Self {
            manager: ctx.manager.clone(),
            operation: operation.to_owned(),
            time: rfc3339(ctx.now),
            set,
        }
    }
}

/// Writes the entries that still own something as `metadata.managedFields`.
fn set_managed(obj: &mut Value, rt: &ResourceType, entries: Vec<Managed>) {
    let encoded: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            json!({"manager": e.manager, "operation": e.operation, "apiVersion": rt.api_version(),
                   "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": fields::to_fields_v1(&e.set)})
        })
        .collect();
    obj["metadata"]["managedFields"] = Value::Array(encoded);
}

/// Ownership after a non-apply write: the writer takes the fields it changed (from everyone
/// else); fields that no longer exist are owned by nobody.
fn update_ownership(old: &Value, mut new: Value, rt: &ResourceType, ctx: &WriteCtx) -> Value {
    let changed = fields::changed_leaves(old, &new);
    let present = fields::field_set(&new);
    let mut entries = managed_entries(old);
    let mut found = false;
    for e in entries.iter_mut() {
        if e.manager == ctx.manager && e.operation == "Update" {
            e.set.extend(changed.iter().cloned());
            e.time = rfc3339(ctx.now);
            found = true;
        } else {
            e.set.retain(|p| !changed.contains(p));
        }
        e.set.retain(|p| present.contains(p));
    }
    if !found && !changed.is_empty() {
        entries.push(Managed::new(ctx, "Update", changed));
    }
    set_managed(&mut new, rt, entries);
    new
}

fn apply_conflict(rt: &ResourceType, name: &str, conflicts: &[(String, fields::Path)]) -> ApiError {
    let lines: Vec<String> = conflicts
        .iter()
        .map(|(m, p)| {
            format!(
                "conflict with \"{m}\" using {}: {}",
                rt.api_version(),
                fields::display(p)
            )
        })
        .collect();
    let message = format!(
        "Apply failed with {} conflict{}: {}",
        conflicts.len(),
        if conflicts.len() == 1 { "" } else { "s" },
        lines.join("\n")
    );
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(m, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": fields::display(p)}))
        .collect();
    let mut err = ApiError::new(409, "Conflict", message).with_details(rt, name);
    err.details["causes"] = Value::Array(causes);
    err
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    merge_with(target, patch, false)
}

/// Merge patch in which lists of keyed maps merge item by item (an approximation of strategic
/// merge patch without per-type schemas; `$patch` directives are not supported).
fn strategic_merge(target: &Value, patch: &Value) -> Value {
    merge_with(target, patch, true)
}

fn merge_with(target: &Value, patch: &Value, keyed_lists: bool) -> Value {
    match (target, patch) {
        (_, Value::Object(p)) => {
            let mut out = target.as_object().cloned().unwrap_or_else(Map::new);
            for (k, v) in p {
                if v.is_null() {
                    out.remove(k);
                } else {
                    let merged = merge_with(out.get(k).unwrap_or(&Value::Null), v, keyed_lists);
                    out.insert(k.clone(), merged);
                }
            }
            Value::Object(out)
        }
        (Value::Array(_), Value::Array(_)) if keyed_lists => fields::merge(target, patch),
        _ => patch.clone(),
    }
}
