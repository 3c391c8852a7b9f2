//! The test API server's in-memory objects: a global resourceVersion, object identity
//! (`uid`, `creationTimestamp`, `generation`), optimistic concurrency, merge patches, and the
//! bounded event history that watches replay from.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{json, Map, Value};
use tokio::sync::broadcast;
use weir_store::Kind;

/// A resource type as the URL names it: API group (empty for core) and plural.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resource {
    pub group: String,
    pub plural: String,
}

impl Resource {
    pub fn new(group: &str, plural: &str) -> Self {
        Self {
            group: group.to_string(),
            plural: plural.to_string(),
        }
    }

    /// The resource of an object from its `apiVersion` and `kind`.
    pub fn of(object: &Value) -> Option<(Self, String)> {
        let api_version = object.get("apiVersion")?.as_str()?;
        let kind = object.get("kind")?.as_str()?;
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let plural = Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind && k.group() == group)
            .map_or_else(|| plural_of(kind), |k| k.plural().to_string());
        Some((Self::new(group, &plural), version.to_string()))
    }

    /// The kind of Weir's kind table this resource is (every one of them is served).
    fn weir_kind(&self) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.plural() == self.plural && k.group() == self.group)
    }

    pub fn is_cluster_scoped(&self) -> bool {
        if let Some(kind) = self.weir_kind() {
            return kind.is_cluster_scoped();
        }
        matches!(self.plural.as_str(), |"nodes"| "persistentvolumes"
            | "clusterroles"
            | "clusterrolebindings"
            | "customresourcedefinitions")
    }

    /// The `kind` of this resource's objects.
    pub fn kind(&self) -> String {
        if let Some(kind) = self.weir_kind() {
            return kind.as_str().to_string();
        }
        let known = match self.plural.as_str() {
            "leases" => "Lease",
            "pods" => "Pod",
            _ => "",
        };
        if !known.is_empty() {
            return known.to_string();
        }
        let singular = self.plural.strip_suffix('s').unwrap_or(&self.plural);
        let mut chars = singular.chars();
        chars
            .next()
            .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
            .unwrap_or_default()
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }
}

/// `HTTPRoute` → `httproutes`, `GatewayClass` → `gatewayclasses`, `Policy` → `policies`,
/// `Gateway` → `gateways`.
pub fn plural_of(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if lower.ends_with('s') {
        format!("{lower}es")
    } else if let Some(stem) = lower
        .strip_suffix('y')
        .filter(|stem| !stem.ends_with(['a', 'e', 'i', 'o', 'u']))
    {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    }
}

/// Identity of a stored object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub resource: Resource,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// One change, as kept in the history and broadcast to open watches.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub key: Key,
    pub kind: EventType,
    /// The object after the change (for a deletion: the last state, with the deletion's rv).
    pub object: Value,
    /// The object before a modification, so a watch with a selector can turn a change into
    /// ADDED or DELETED when the object starts or stops matching.
    pub old: Option<Value>,
}

/// What a request did wrong, rendered as a Kubernetes `Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    NotFound(String),
    AlreadyExists(String),
    Conflict(String),
    BadRequest(String),
    Gone,
    MethodNotAllowed,
    UnsupportedMediaType(String),
    /// A refused watch: 500, which kube-rs does not retry by itself (it retries 503).
    WatchRefused,
    /// A refused get (`refuse_gets`): 500.
    ReadRefused,
}

impl ApiError {
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound(_) => 404,
            ApiError::AlreadyExists(_) | ApiError::Conflict(_) => 409,
            ApiError::BadRequest(_) => 400,
            ApiError::Gone => 410,
            ApiError::MethodNotAllowed => 405,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::WatchRefused | ApiError::ReadRefused => 500,
        }
    }

    pub fn to_status(&self) -> Value {
        let (reason, message) = match self {
            ApiError::NotFound(what) => ("NotFound", format!("{what} not found")),
            ApiError::AlreadyExists(what) => ("AlreadyExists", format!("{what} already exists")),
            ApiError::Conflict(what) => (
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {what}: the object has been modified; \
                     please apply your changes to the latest version and try again"
                ),
            ),
            ApiError::BadRequest(why) => ("BadRequest", why.clone()),
            ApiError::Gone => ("Expired", "too old resource version".to_string()),
            ApiError::MethodNotAllowed => (
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource".to_string(),
            ),
            ApiError::UnsupportedMediaType(t) => (
                "UnsupportedMediaType",
                format!("the body of type {t} is not supported"),
            ),
            ApiError::WatchRefused => (
                "InternalError",
                "watches are refused by the test API server".to_string(),
            ),
            ApiError::ReadRefused => (
                "InternalError",
                "reads are refused by the test API server".to_string(),
            ),
        };
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": self.code(),
        })
    }
}

/// How an update treats the stored object's parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The main resource: everything but `status` (which is kept).
    Main,
    /// The `/status` subresource: only `status` changes.
    Status,
    /// A test control: everything, including `status`.
    All,
}

/// All objects, the global resourceVersion and the event history.
pub struct Objects {
    rv: u64,
    uids: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// A watch from a resourceVersion below this gets 410 Gone: older events are gone.
    floor: u64,
    changes: broadcast::Sender<Arc<Change>>,
}

impl Objects {
    pub fn new(history_limit: usize) -> Self {
        let (changes, _) = broadcast::channel(4096);
        Self {
            rv: 1,
            uids: 0,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            floor: 0,
            changes,
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Objects of `resource` (in `namespace`, or everywhere when `None`) matching `filter`.
    pub fn list(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        filter: impl Fn(&Value) -> bool,
    ) -> Vec<(Key, Value)> {
        self.objects
            .iter()
            .filter(|(k, _)| &k.resource == resource)
            .filter(|(k, _)| namespace.is_none_or(|ns| k.namespace == ns))
            .filter(|(_, v)| filter(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Create an object; its name comes from `metadata.name`.
    pub fn create(&mut self, key: Key, mut object: Value) -> Result<Value, ApiError> {
        if key.name.is_empty() {
            return Err(ApiError::BadRequest("metadata.name is required".into()));
        }
        if self.objects.contains_key(&key) {
            return Err(ApiError::AlreadyExists(describe(&key)));
        }
        self.uids += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.uids);
        let meta = metadata_mut(&mut object);
        meta.insert("name".into(), json!(key.name));
        if key.namespace.is_empty() {
            meta.remove("namespace");
        } else {
            meta.insert("namespace".into(), json!(key.namespace));
        }
        meta.insert("uid".into(), json!(uid));
        meta.insert("creationTimestamp".into(), json!(now()));
        meta.insert("generation".into(), json!(1));
        Ok(self.commit(key, Some(object)))
    }

    /// Replace `part` of an existing object with `part` of `object`; a non-empty
    /// `metadata.resourceVersion` in `object` must match the stored one.
    pub fn replace(&mut self, key: &Key, object: Value, part: Part) -> Result<Value, ApiError> {
        let old = self
            .objects
            .get(key)
            .ok_or_else(|| ApiError::NotFound(describe(key)))?;
        check_precondition(key, old, &object)?;
        let new = merge_parts(old, object, part);
        Ok(self.commit(key.clone(), Some(new)))
    }

    /// Apply a JSON merge patch (RFC 7386) to `part` of an existing object.
    pub fn patch(&mut self, key: &Key, patch: &Value, part: Part) -> Result<Value, ApiError> {
        let old = self
            .objects
            .get(key)
            .ok_or_else(|| ApiError::NotFound(describe(key)))?;
        check_precondition(key, old, patch)?;
        let mut patched = old.clone();
        merge_patch(&mut patched, patch);
        let new = merge_parts(old, patched, part);
        Ok(self.commit(key.clone(), Some(new)))
    }

    pub fn delete(&mut self, key: &Key) -> Result<Value, ApiError> {
        if !self.objects.contains_key(key) {
            return Err(ApiError::NotFound(describe(key)));
        }
        Ok(self.commit(key.clone(), None))
    }

    /// Forget all history: a watch from any resourceVersion before now gets 410 Gone.
    pub fn compact(&mut self) {
        self.rv += 1;
        self.floor = self.rv;
        self.history.clear();
    }

    /// Start a watch of `resource` from `from` (`None`: from the current state, replayed as
    /// ADDED events). Returns the changes to replay, a receiver for what follows and the
    /// resourceVersion up to which the watch has seen everything.
    #[allow(clippy::type_complexity)]
    pub fn watch(
        &self,
        resource: &Resource,
        from: Option<u64>,
    ) -> Result<(Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>, u64), ApiError> {
        let replay = match from {
            None | Some(0) => self
                .objects
                .iter()
                .filter(|(k, _)| &k.resource == resource)
                .map(|(k, v)| {
                    Arc::new(Change {
                        rv: object_rv(v),
                        key: k.clone(),
                        kind: EventType::Added,
                        object: v.clone(),
                        old: None,
                    })
                })
                .collect(),
            Some(rv) if rv < self.floor => return Err(ApiError::Gone),
            Some(rv) => self
                .history
                .iter()
                .filter(|c| c.rv > rv && &c.key.resource == resource)
                .cloned()
                .collect(),
        };
        Ok((replay, self.changes.subscribe(), self.rv))
    }

    /// Record a change: bump the resourceVersion, store (or remove) the object, keep and
    /// broadcast the event. Returns the stored (or deleted) object.
    fn commit(&mut self, key: Key, object: Option<Value>) -> Value {
        self.rv += 1;
        let rv = self.rv;
        let (kind, object, old) = match object {
            Some(mut object) => {
                metadata_mut(&mut object).insert("resourceVersion".into(), json!(rv.to_string()));
                let old = self.objects.insert(key.clone(), object.clone());
                let kind = if old.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                (kind, object, old)
            }
            None => {
                let mut object = self.objects.remove(&key).unwrap_or(Value::Null);
                metadata_mut(&mut object).insert("resourceVersion".into(), json!(rv.to_string()));
                (EventType::Deleted, object, None)
            }
        };
        let change = Arc::new(Change {
            rv,
            key,
            kind,
            object: object.clone(),
            old,
        });
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.floor = self.floor.max(dropped.rv);
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.changes.send(change);
        object
    }
}

fn describe(key: &Key) -> String {
    let group = if key.resource.group.is_empty() {
        String::new()
    } else {
        format!(".{}", key.resource.group)
    };
    format!("{}{group} \"{}\"", key.resource.plural, key.name)
}

fn check_precondition(key: &Key, old: &Value, new: &Value) -> Result<(), ApiError> {
    let wanted = new
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let have = old
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if wanted.is_empty() || wanted == have {
        Ok(())
    } else {
        Err(ApiError::Conflict(describe(key)))
    }
}

/// The new stored object: `part` of `new`, the rest of `old`; identity always from `old`;
/// generation bumped when `spec` changed.
fn merge_parts(old: &Value, new: Value, part: Part) -> Value {
    let mut out = match part {
        Part::Status => {
            let mut out = old.clone();
            if let Some(map) = out.as_object_mut() {
                match new.get("status") {
                    Some(status) if !status.is_null() => {
                        map.insert("status".into(), status.clone());
                    }
                    _ => {
                        map.remove("status");
                    }
                }
            }
            out
        }
        Part::Main | Part::All => {
            let mut out = new;
            if part == Part::Main {
                if let Some(map) = out.as_object_mut() {
                    match old.get("status") {
                        Some(status) => map.insert("status".into(), status.clone()),
                        None => map.remove("status"),
                    };
                }
            }
            out
        }
    };
    let generation = old
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let spec_changed = old.get("spec") != out.get("spec");
    let meta = metadata_mut(&mut out);
    for field in ["name", "namespace", "uid", "creationTimestamp"] {
        match old.pointer(&format!("/metadata/{field}")) {
            Some(v) => meta.insert(field.into(), v.clone()),
            None => meta.remove(field),
        };
    }
    let generation = if spec_changed {
        generation + 1
    } else {
        generation
    };
    meta.insert("generation".into(), json!(generation));
    out
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Some(map) = target.as_object_mut() {
        for (k, v) in patch {
            if v.is_null() {
                map.remove(k);
            } else {
                merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

pub fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = Value::Object(Map::new());
    }
    let Value::Object(map) = object else {
        unreachable!("made an object above")
    };
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    match meta {
        Value::Object(m) => m,
        _ => unreachable!("made an object above"),
    }
}

pub fn object_rv(object: &Value) -> u64 {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals() {
        assert_eq!(plural_of("HTTPRoute"), "httproutes");
        assert_eq!(plural_of("GatewayClass"), "gatewayclasses");
        assert_eq!(plural_of("Policy"), "policies");
        assert_eq!(plural_of("Gateway"), "gateways");
        assert_eq!(Resource::new("", "leases").kind(), "Lease");
        assert_eq!(Resource::new("x", "widgets").kind(), "Widget");
    }

    /// Every kind of Weir's table maps to and from its resource as the API server does.
    #[test]
    fn every_weir_kind_is_known() {
        for kind in Kind::ALL {
            let resource = Resource::new(kind.group(), kind.plural());
            assert_eq!(resource.kind(), kind.as_str(), "{kind}");
            assert_eq!(
                resource.is_cluster_scoped(),
                kind.is_cluster_scoped(),
                "{kind}"
            );
            let object = json!({"apiVersion": kind.api_version(), "kind": kind.as_str()});
            assert_eq!(
                Resource::of(&object),
                Some((resource, kind.version().to_string())),
                "{kind}"
            );
        }
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut v = json!({"a": {"b": 1, "c": [1]}, "d": 1});
        merge_patch(&mut v, &json!({"a": {"b": null, "c": [2]}, "e": 2}));
        assert_eq!(v, json!({"a": {"c": [2]}, "d": 1, "e": 2}));
    }

    fn key(name: &str) -> Key {
        Key {
            resource: Resource::new("", "services"),
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[test]
    fn generation_follows_spec_not_status() {
        let mut o = Objects::new(10);
        o.create(key("a"), json!({"spec": {"x": 1}})).unwrap();
        let v = o
            .patch(&key("a"), &json!({"status": {"s": 1}}), Part::Status)
            .unwrap();
        assert_eq!(v["metadata"]["generation"], 1);
        assert_eq!(v["status"]["s"], 1);
        let v = o
            .patch(
                &key("a"),
                &json!({"spec": {"x": 2}, "status": {"s": 2}}),
                Part::Main,
            )
            .unwrap();
        assert_eq!(v["metadata"]["generation"], 2);
        assert_eq!(v["status"]["s"], 1, "main-resource writes keep status");
    }

    #[test]
    fn stale_resource_version_conflicts() {
        let mut o = Objects::new(10);
        let v = o.create(key("a"), json!({"spec": {}})).unwrap();
        let rv = v["metadata"]["resourceVersion"].clone();
        o.patch(&key("a"), &json!({"spec": {"x": 1}}), Part::Main)
            .unwrap();
        let err = o
            .replace(
                &key("a"),
                json!({"metadata": {"resourceVersion": rv}, "spec": {}}),
                Part::Main,
            )
            .unwrap_err();
        assert_eq!(err.code(), 409);
    }

    #[test]
    fn trimmed_history_expires_old_versions() {
        let mut o = Objects::new(2);
        for name in ["a", "b", "c", "d"] {
            o.create(key(name), json!({})).unwrap();
        }
        let r = Resource::new("", "services");
        assert_eq!(o.watch(&r, Some(2)).unwrap_err(), ApiError::Gone);
        let (replay, _, _) = o.watch(&r, Some(o.resource_version() - 2)).unwrap();
        assert_eq!(replay.len(), 2);
    }
}
