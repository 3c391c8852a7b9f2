//! The test API server's HTTP side: URL routing (core `/api/v1`, `/apis/{group}/{version}`,
//! namespaced, all-namespaces and cluster-scoped paths, `/status`), list, watch streams,
//! get, create, replace, patch and delete, with errors as Kubernetes `Status` objects.
//!
//! Reads honour the metadata-only media types of the API server (what kube-rs'
//! `metadata_watcher` and `get_metadata` send): `Accept:
//! application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1` for a list and
//! `...;as=PartialObjectMetadata;...` for a get or a watch answer with
//! `meta.k8s.io/v1` `PartialObjectMetadata(List)` objects that hold only `metadata`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use super::store::{ApiError, Change, EventType, Key, Part, Resource};
use super::{RequestRecord, Shared};

pub type ResponseBody = BoxBody<Bytes, Infallible>;

/// What a URL names.
#[derive(Debug)]
struct Target {
    resource: Resource,
    version: String,
    /// `None`: all namespaces (a namespaced resource listed cluster-wide) or cluster-scoped.
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

impl Target {
    fn key(&self, name: &str) -> Key {
        Key {
            resource: self.resource.clone(),
            namespace: if self.resource.is_cluster_scoped() {
                String::new()
            } else {
                self.namespace.clone().unwrap_or_default()
            },
            name: name.to_string(),
        }
    }

    fn api_version(&self) -> String {
        self.resource.api_version(&self.version)
    }
}

fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let target = |plural: &str, namespace: Option<&str>, name: Option<&str>, sub: Option<&str>| {
        Some(Target {
            resource: Resource::new(group, plural),
            version: version.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
            subresource: sub.map(str::to_string),
        })
    };
    match rest {
        // A namespace's own subresources (`/api/v1/namespaces/{name}/status`).
        ["namespaces", name, sub @ ("status" | "finalize")] if group.is_empty() => {
            target("namespaces", None, Some(name), Some(sub))
        }
        ["namespaces", ns, plural] => target(plural, Some(ns), None, None),
        ["namespaces", ns, plural, name] => target(plural, Some(ns), Some(name), None),
        ["namespaces", ns, plural, name, sub] => target(plural, Some(ns), Some(name), Some(sub)),
        [plural] => target(plural, None, None, None),
        [plural, name] => target(plural, None, Some(name), None),
        [plural, name, sub] => target(plural, None, Some(name), Some(sub)),
        _ => None,
    }
}

/// Decoded query parameters.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: &str) -> Self {
        Self(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `labelSelector` / `fieldSelector` requirements: `key=value`, `key==value`, `key!=value`,
/// and (labels only) a bare `key` for existence.
struct Selector(Vec<(String, Op)>);

enum Op {
    Eq(String),
    Ne(String),
    Exists,
}

impl Selector {
    fn parse(s: Option<&str>) -> Self {
        Self(
            s.unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(|r| {
                    if let Some((k, v)) = r.split_once("!=") {
                        (k.trim().to_string(), Op::Ne(v.trim().to_string()))
                    } else if let Some((k, v)) = r.split_once("==").or_else(|| r.split_once('=')) {
                        (k.trim().to_string(), Op::Eq(v.trim().to_string()))
                    } else {
                        (r.to_string(), Op::Exists)
                    }
                })
                .collect(),
        )
    }

    fn matches(&self, lookup: impl Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|(k, op)| {
            let v = lookup(k);
            match op {
                Op::Eq(want) => v.as_deref().unwrap_or("") == want,
                Op::Ne(want) => v.as_deref().unwrap_or("") != want,
                Op::Exists => v.is_some(),
            }
        })
    }
}

struct Filter {
    labels: Selector,
    fields: Selector,
}

impl Filter {
    fn from_query(q: &Query) -> Self {
        Self {
            labels: Selector::parse(q.get("labelSelector")),
            fields: Selector::parse(q.get("fieldSelector")),
        }
    }

    fn matches(&self, object: &Value) -> bool {
        self.labels.matches(|k| {
            object
                .pointer("/metadata/labels")
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        }) && self.fields.matches(|path| {
            let pointer = format!("/{}", path.replace('.', "/"));
            object.pointer(&pointer).map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        })
    }
}

pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let accept = req
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let metadata_only = is_metadata_only(&accept);
    shared.log(RequestRecord {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        accept,
    });
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(error(&ApiError::BadRequest(format!("reading body: {e}")))),
    };
    let Some(target) = parse_path(&path) else {
        return Ok(error(&ApiError::NotFound(format!("path {path}"))));
    };
    let plural = &target.resource.plural;
    let one_version = format!("{plural}/{}", target.version);
    if shared
        .unserved
        .iter()
        .any(|u| u == plural || *u == one_version)
    {
        return Ok(error(&ApiError::NotFound(format!(
            "the server could not find the requested resource ({})",
            target.resource.plural
        ))));
    }
    let query = Query::parse(&query);
    let result = match (&method, target.name.as_deref()) {
        (&Method::GET, None) if query.flag("watch") => {
            return Ok(watch(&shared, &target, &query, metadata_only))
        }
        (&Method::GET, None) => list(&shared, &target, &query, metadata_only),
        (&Method::GET, Some(name)) => get(&shared, &target, name, metadata_only),
        (&Method::POST, None) => create(&shared, &target, &body),
        (&Method::PUT, Some(name)) => replace(&shared, &target, name, &body),
        (&Method::PATCH, Some(name)) => patch(&shared, &target, name, &content_type, &body),
        (&Method::DELETE, Some(name)) => delete(&shared, &target, name),
        _ => Err(ApiError::MethodNotAllowed),
    };
    Ok(match result {
        Ok((code, value)) => json_response(code, &value),
        Err(e) => error(&e),
    })
}

type Handled = Result<(StatusCode, Value), ApiError>;

/// Whether an `Accept` header asks for `PartialObjectMetadata` (or its list) instead of the
/// objects themselves.
pub(crate) fn is_metadata_only(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"g=meta.k8s.io")
            && params.iter().any(|p| {
                matches!(
                    *p,
                    "as=PartialObjectMetadata" | "as=PartialObjectMetadataList"
                )
            })
    })
}

/// An object as a `meta.k8s.io/v1` `PartialObjectMetadata`: its metadata alone.
fn metadata_of(object: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

fn with_type(mut object: Value, target: &Target) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), json!(target.api_version()));
        map.insert("kind".into(), json!(target.resource.kind()));
    }
    object
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("body is not JSON: {e}")))
}

fn part(target: &Target) -> Result<Part, ApiError> {
    match target.subresource.as_deref() {
        None => Ok(Part::Main),
        Some("status") => Ok(Part::Status),
        Some(other) => Err(ApiError::NotFound(format!("subresource {other}"))),
    }
}

fn list(shared: &Shared, target: &Target, query: &Query, metadata_only: bool) -> Handled {
    let filter = Filter::from_query(query);
    let objects = shared.objects();
    let namespace = if target.resource.is_cluster_scoped() {
        None
    } else {
        target.namespace.as_deref()
    };
    let items: Vec<Value> = objects
        .list(&target.resource, namespace, |o| filter.matches(o))
        .into_iter()
        .map(|(key, o)| {
            if metadata_only {
                metadata_of(&o)
            } else {
                shared.count_full_read(&key);
                with_type(o, target)
            }
        })
        .collect();
    if metadata_only {
        return Ok((
            StatusCode::OK,
            json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": objects.resource_version().to_string()},
                "items": items,
            }),
        ));
    }
    Ok((
        StatusCode::OK,
        json!({
            "kind": format!("{}List", target.resource.kind()),
            "apiVersion": target.api_version(),
            "metadata": {"resourceVersion": objects.resource_version().to_string()},
            "items": items,
        }),
    ))
}

fn get(shared: &Shared, target: &Target, name: &str, metadata_only: bool) -> Handled {
    part(target)?;
    if !metadata_only && shared.gets_refused() {
        return Err(ApiError::ReadRefused);
    }
    let key = target.key(name);
    let objects = shared.objects();
    let object = objects
        .get(&key)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("{} \"{name}\"", target.resource.plural)))?;
    if metadata_only {
        return Ok((StatusCode::OK, metadata_of(&object)));
    }
    shared.count_full_read(&key);
    Ok((StatusCode::OK, with_type(object, target)))
}

fn create(shared: &Shared, target: &Target, body: &Bytes) -> Handled {
    if target.subresource.is_some() {
        return Err(ApiError::MethodNotAllowed);
    }
    let object = parse_body(body)?;
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let key = target.key(name);
    let created = shared.objects().create(key, with_type(object, target))?;
    Ok((StatusCode::CREATED, with_type(created, target)))
}

fn replace(shared: &Shared, target: &Target, name: &str, body: &Bytes) -> Handled {
    let part = part(target)?;
    let object = with_type(parse_body(body)?, target);
    let stored = shared.objects().replace(&target.key(name), object, part)?;
    Ok((StatusCode::OK, with_type(stored, target)))
}

fn patch(
    shared: &Shared,
    target: &Target,
    name: &str,
    content_type: &str,
    body: &Bytes,
) -> Handled {
    let part = part(target)?;
    let media = content_type.split(';').next().unwrap_or("").trim();
    let patch = match media {
        // Server-side apply is approximated by a merge patch (no field ownership tracking);
        // the body must be JSON (which is YAML too, and what kube-rs sends).
        "application/merge-patch+json" | "application/apply-patch+yaml" => parse_body(body)?,
        "application/json-patch+json" => {
            let ops = parse_body(body)?;
            let key = target.key(name);
            let current = shared.objects().get(&key).cloned().ok_or_else(|| {
                ApiError::NotFound(format!("{} \"{name}\"", target.resource.plural))
            })?;
            let patched = json_patch(current, &ops)?;
            let stored = shared.objects().replace(&key, patched, part)?;
            return Ok((StatusCode::OK, with_type(stored, target)));
        }
        other => return Err(ApiError::UnsupportedMediaType(other.to_string())),
    };
    let stored = shared.objects().patch(&target.key(name), &patch, part)?;
    Ok((StatusCode::OK, with_type(stored, target)))
}

/// RFC 6902 JSON patch, the operations controllers use: add, replace, remove, test.
fn json_patch(mut doc: Value, ops: &Value) -> Result<Value, ApiError> {
    let bad = |why: &str| ApiError::BadRequest(format!("json patch: {why}"));
    for op in ops.as_array().ok_or_else(|| bad("not an array"))? {
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no path"))?;
        let (parent, last) = path.rsplit_once('/').ok_or_else(|| bad("bad path"))?;
        let last = last.replace("~1", "/").replace("~0", "~");
        match op.get("op").and_then(Value::as_str) {
            Some("test") => {
                if doc.pointer(path) != op.get("value") {
                    return Err(ApiError::Conflict(format!("test of {path}")));
                }
            }
            Some(kind @ ("add" | "replace" | "remove")) => {
                let value = op.get("value").cloned().unwrap_or(Value::Null);
                let target = doc
                    .pointer_mut(parent)
                    .ok_or_else(|| bad("missing parent"))?;
                match target {
                    Value::Object(map) if kind == "remove" => {
                        map.remove(&last);
                    }
                    Value::Object(map) => {
                        map.insert(last, value);
                    }
                    Value::Array(list) => {
                        let index = if last == "-" {
                            list.len()
                        } else {
                            last.parse().map_err(|_| bad("bad index"))?
                        };
                        match kind {
                            "remove" if index < list.len() => {
                                list.remove(index);
                            }
                            "replace" if index < list.len() => list[index] = value,
                            "add" if index <= list.len() => list.insert(index, value),
                            _ => return Err(bad("index out of range")),
                        }
                    }
                    _ => return Err(bad("parent is not a container")),
                }
            }
            _ => return Err(bad("unsupported op")),
        }
    }
    Ok(doc)
}

fn delete(shared: &Shared, target: &Target, name: &str) -> Handled {
    if target.subresource.is_some() {
        return Err(ApiError::MethodNotAllowed);
    }
    let deleted = shared.objects().delete(&target.key(name))?;
    Ok((StatusCode::OK, with_type(deleted, target)))
}

/// A watch stream: replayed history (or current state), then live changes, BOOKMARKs every
/// bookmark interval, until `timeoutSeconds`, a cut, or the client leaves.
fn watch(
    shared: &Arc<Shared>,
    target: &Target,
    query: &Query,
    metadata_only: bool,
) -> Response<ResponseBody> {
    // Subscribe to cuts before checking for refusal: a watch that slips past the check just
    // before `refuse_watches(true)` must still be ended by the `cut_watches()` that follows.
    let cut = shared.cut_signal();
    if shared.watches_refused() {
        return error(&ApiError::WatchRefused);
    }
    let from = match query.get("resourceVersion") {
        None | Some("") => None,
        Some(rv) => match rv.parse::<u64>() {
            Ok(rv) => Some(rv),
            Err(_) => return error(&ApiError::BadRequest(format!("resourceVersion {rv}"))),
        },
    };
    let initial_events = query.flag("sendInitialEvents");
    let from = if initial_events { None } else { from };
    let started = shared.objects().watch(&target.resource, from);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let stream = WatchStream {
        shared: shared.clone(),
        filter: Filter::from_query(query),
        resource: target.resource.clone(),
        namespace: if target.resource.is_cluster_scoped() {
            None
        } else {
            target.namespace.clone()
        },
        kind: target.resource.kind(),
        api_version: target.api_version(),
        metadata_only,
        bookmarks: query.flag("allowWatchBookmarks"),
        timeout,
        tx,
    };
    match started {
        Err(e) => {
            tokio::spawn(async move {
                let _ = stream
                    .send(&json!({"type": "ERROR", "object": e.to_status()}))
                    .await;
            });
        }
        Ok((replay, changes, seen)) => {
            tokio::spawn(stream.run(replay, changes, seen, initial_events, cut));
        }
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(BoxBody::new(ChannelBody(rx)))
        .unwrap_or_else(|_| error(&ApiError::BadRequest("response".into())))
}

struct WatchStream {
    shared: Arc<Shared>,
    filter: Filter,
    /// Changes of other resources share the broadcast: this watch sends only its own.
    resource: Resource,
    namespace: Option<String>,
    kind: String,
    api_version: String,
    /// Events carry `PartialObjectMetadata` (the watch asked for it in `Accept`).
    metadata_only: bool,
    bookmarks: bool,
    timeout: Option<Duration>,
    tx: mpsc::Sender<Bytes>,
}

impl WatchStream {
    async fn send(&self, event: &Value) -> Result<(), ()> {
        let mut line = serde_json::to_vec(event).map_err(drop)?;
        line.push(b'\n');
        self.tx.send(Bytes::from(line)).await.map_err(drop)
    }

    fn bookmark(&self, rv: u64, initial_events_end: bool) -> Value {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let (kind, api_version) = if self.metadata_only {
            ("PartialObjectMetadata", "meta.k8s.io/v1")
        } else {
            (self.kind.as_str(), self.api_version.as_str())
        };
        json!({"type": "BOOKMARK", "object": {
            "kind": kind, "apiVersion": api_version, "metadata": meta,
        }})
    }

    /// The event this watch sends for `change`, if any (selectors turn a modification into
    /// ADDED or DELETED when the object starts or stops matching).
    fn event(&self, change: &Change) -> Option<Value> {
        if change.key.resource != self.resource {
            return None;
        }
        if self
            .namespace
            .as_ref()
            .is_some_and(|ns| &change.key.namespace != ns)
        {
            return None;
        }
        let now = self.filter.matches(&change.object);
        let kind = match change.kind {
            EventType::Modified => {
                let before = change.old.as_ref().is_some_and(|o| self.filter.matches(o));
                match (before, now) {
                    (true, true) => EventType::Modified,
                    (false, true) => EventType::Added,
                    (true, false) => EventType::Deleted,
                    (false, false) => return None,
                }
            }
            kind if now => kind,
            _ => return None,
        };
        if self.metadata_only {
            let object = metadata_of(&change.object);
            return Some(json!({"type": kind.as_str(), "object": object}));
        }
        self.shared.count_full_read(&change.key);
        let mut object = change.object.clone();
        if let Some(map) = object.as_object_mut() {
            map.insert("apiVersion".into(), json!(self.api_version));
            map.insert("kind".into(), json!(self.kind));
        }
        Some(json!({"type": kind.as_str(), "object": object}))
    }

    async fn run(
        self,
        replay: Vec<Arc<Change>>,
        mut changes: broadcast::Receiver<Arc<Change>>,
        mut seen: u64,
        initial_events: bool,
        mut cut: tokio::sync::watch::Receiver<u64>,
    ) {
        for change in &replay {
            if let Some(event) = self.event(change) {
                if self.send(&event).await.is_err() {
                    return;
                }
            }
        }
        if initial_events && self.send(&self.bookmark(seen, true)).await.is_err() {
            return;
        }
        let deadline =
            tokio::time::Instant::now() + self.timeout.unwrap_or(Duration::from_secs(3600));
        let mut ticks = tokio::time::interval(self.shared.bookmark_interval);
        ticks.tick().await;
        loop {
            let event = tokio::select! {
                // A cut wins over pending changes, as a dropped connection would: without
                // `biased`, a stream polled after a cut could still deliver the changes made
                // after it, and tests of resume/relist would race.
                biased;
                _ = cut.changed() => return,
                _ = self.tx.closed() => return,
                change = changes.recv() => match change {
                    Ok(change) if change.rv <= seen => continue,
                    Ok(change) => {
                        seen = change.rv;
                        match self.event(&change) {
                            Some(event) => event,
                            None => continue,
                        }
                    }
                    // Lagging behind or shut down: end the stream; the client resumes.
                    Err(_) => return,
                },
                _ = ticks.tick(), if self.bookmarks => self.bookmark(seen, false),
                _ = tokio::time::sleep_until(deadline) => return,
            };
            if self.send(&event).await.is_err() {
                return;
            }
        }
    }
}

/// A response body fed from a channel (one watch event per frame).
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

fn json_response(code: StatusCode, value: &Value) -> Response<ResponseBody> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
    *response.status_mut() = code;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(e: &ApiError) -> Response<ResponseBody> {
    json_response(
        StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.to_status(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let t = parse_path("/apis/gateway.networking.k8s.io/v1/namespaces/a/httproutes/r/status")
            .unwrap();
        assert_eq!(
            t.resource,
            Resource::new("gateway.networking.k8s.io", "httproutes")
        );
        assert_eq!(t.namespace.as_deref(), Some("a"));
        assert_eq!(t.name.as_deref(), Some("r"));
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let t = parse_path("/api/v1/namespaces/ns1").unwrap();
        assert_eq!(t.resource.plural, "namespaces");
        assert_eq!(t.name.as_deref(), Some("ns1"));
        let t = parse_path("/api/v1/namespaces/ns1/status").unwrap();
        assert_eq!(t.resource.plural, "namespaces");
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let t = parse_path("/api/v1/services").unwrap();
        assert!(t.namespace.is_none() && t.name.is_none());
    }

    #[test]
    fn selectors() {
        let q = Query::parse("fieldSelector=type%3Dkubernetes.io%2Ftls&labelSelector=a%3Db");
        let f = Filter::from_query(&q);
        let tls = json!({"type": "kubernetes.io/tls", "metadata": {"labels": {"a": "b"}}});
        let opaque = json!({"type": "Opaque", "metadata": {"labels": {"a": "b"}}});
        let unlabelled = json!({"type": "kubernetes.io/tls", "metadata": {}});
        assert!(f.matches(&tls));
        assert!(!f.matches(&opaque));
        assert!(!f.matches(&unlabelled));
        let q = Query::parse("fieldSelector=metadata.name%3Dx");
        assert!(Filter::from_query(&q).matches(&json!({"metadata": {"name": "x"}})));
    }

    #[test]
    fn metadata_media_types() {
        assert!(is_metadata_only(
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
        ));
        assert!(is_metadata_only(
            "application/json; as=PartialObjectMetadata; g=meta.k8s.io; v=v1, application/json"
        ));
        assert!(!is_metadata_only("application/json"));
        assert!(!is_metadata_only(
            "application/json;as=Table;g=meta.k8s.io;v=v1"
        ));
        assert!(!is_metadata_only(""));
        let meta = metadata_of(&json!({"metadata": {"name": "a"}, "data": {"big": "x"}}));
        assert_eq!(
            meta,
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                "metadata": {"name": "a"}})
        );
    }

    #[test]
    fn json_patch_ops() {
        let doc = json!({"a": [1, 2], "b": {"c": 1}});
        let ops = json!([
            {"op": "add", "path": "/a/-", "value": 3},
            {"op": "replace", "path": "/b/c", "value": 2},
            {"op": "remove", "path": "/a/0"},
        ]);
        assert_eq!(
            json_patch(doc, &ops).unwrap(),
            json!({"a": [2, 3], "b": {"c": 2}})
        );
    }
}
