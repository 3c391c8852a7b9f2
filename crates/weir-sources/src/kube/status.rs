//! [`StatusWriter`]: computed statuses into the status subresource, only when they differ
//! from the cluster's.
//!
//! - GatewayClass and Gateway status is ours alone: it is replaced wholesale (a merge patch
//!   that also nulls top-level fields we no longer report).
//! - Which kinds get a status, and in which shape, is the kind table's
//!   [`weir_store::WrittenStatus`].
//! - A route's `status.parents` (a policy's `status.ancestors`) is shared with other
//!   controllers: entries whose `controllerName` is ours are replaced by what we computed
//!   (matched by `parentRef` / `ancestorRef`), ours that we no longer compute are removed,
//!   everyone else's are kept where they are. The patch carries the object's
//!   `resourceVersion`, so a concurrent writer makes it fail with 409 and it is redone on a
//!   fresh read instead of dropping their entries.
//! - A condition whose `type` and `status` did not change keeps the cluster's
//!   `lastTransitionTime`.
//!
//! Reading every object before every write would cost a GET per object per rebuild, so the
//! writer remembers the status it last read or wrote for each object and compares against
//! that; an entry older than [`RECHECK_AFTER`] (or after [`StatusWriter::forget`]) is read
//! again from the cluster.

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use kube::Client;
use serde_json::{json, Map, Value};
use weir_store::{Kind, ObjectKey, WrittenStatus};

use super::{dynamic_api, KubeError};

/// How long a remembered status is trusted before the object is read again.
pub const RECHECK_AFTER: Duration = Duration::from_secs(300);

/// How often a write is retried when the object changed underneath it (409 Conflict).
const CONFLICT_RETRIES: usize = 3;

/// One object's computed status, as the translator emits it.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusUpdate {
    pub kind: Kind,
    pub key: ObjectKey,
    /// The whole `status`, in Kubernetes JSON shape (shared with the translation's output).
    pub status: std::sync::Arc<Value>,
}

/// Writes statuses to the status subresource (see the module docs).
pub struct StatusWriter {
    client: Client,
    controller_name: String,
    field_manager: String,
    /// The status each object had in the cluster when we last read or wrote it.
    known: HashMap<(Kind, ObjectKey), Known>,
}

struct Known {
    status: Value,
    at: Instant,
}

impl StatusWriter {
    pub fn new(client: Client, controller_name: String) -> Self {
        Self {
            client,
            controller_name,
            field_manager: "weir".to_string(),
            known: HashMap::new(),
        }
    }

    /// The field manager named in patches (default `weir`).
    pub fn with_field_manager(mut self, field_manager: impl Into<String>) -> Self {
        self.field_manager = field_manager.into();
        self
    }

    /// Forget what the cluster held: the next write reads every object again. Call it when
    /// this replica becomes the leader (another replica may have written meanwhile).
    pub fn forget(&mut self) {
        self.known.clear();
    }

    /// Patch the status of each object whose status differs from the cluster's. `updates` is
    /// the complete set of computed statuses (objects missing from it are forgotten). Returns
    /// how many objects were patched; an error on one object is logged and does not stop the
    /// others.
    pub async fn write(&mut self, updates: &[StatusUpdate]) -> usize {
        let mut patched = 0;
        for update in updates {
            match self.write_one(update).await {
                Ok(true) => patched += 1,
                Ok(false) => {}
                Err(err) => tracing::warn!(
                    kind = %update.kind,
                    object = %update.key,
                    error = %err,
                    "status not written"
                ),
            }
        }
        let current: HashSet<(Kind, &ObjectKey)> =
            updates.iter().map(|u| (u.kind, &u.key)).collect();
        self.known
            .retain(|(kind, key), _| current.contains(&(*kind, key)));
        patched
    }

    /// Returns whether a patch was sent.
    async fn write_one(&mut self, update: &StatusUpdate) -> Result<bool, KubeError> {
        if update.kind.status() == WrittenStatus::None {
            tracing::debug!(kind = %update.kind, "no status subresource is written for this kind");
            return Ok(false);
        }
        let id = (update.kind, update.key.clone());
        if let Some(known) = self.known.get(&id) {
            if known.at.elapsed() < RECHECK_AFTER {
                let desired = desired_status(
                    update.kind,
                    &known.status,
                    &update.status,
                    &self.controller_name,
                );
                if same(&desired, &known.status) {
                    return Ok(false);
                }
            }
        }
        let api = dynamic_api(self.client.clone(), update.kind, &update.key);
        let api_error = |verb, source| KubeError::Api {
            verb,
            kind: update.kind,
            key: update.key.clone(),
            source,
        };
        for _ in 0..CONFLICT_RETRIES {
            let Some(live) = api
                .get_opt(&update.key.name)
                .await
                .map_err(|e| api_error("read", e))?
            else {
                // Deleted since the translation: nothing to write.
                self.known.remove(&id);
                return Ok(false);
            };
            let live_status = live.data.get("status").cloned().unwrap_or(Value::Null);
            let desired = desired_status(
                update.kind,
                &live_status,
                &update.status,
                &self.controller_name,
            );
            if same(&desired, &live_status) {
                self.remember(id, live_status);
                return Ok(false);
            }
            let patch = status_patch(
                update.kind,
                &live_status,
                &desired,
                live.metadata.resource_version.as_deref(),
            );
            let params = PatchParams {
                field_manager: Some(self.field_manager.clone()),
                ..Default::default()
            };
            match api
                .patch_status(&update.key.name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(written) => {
                    let status = written.data.get("status").cloned().unwrap_or(desired);
                    self.remember(id, status);
                    tracing::debug!(kind = %update.kind, object = %update.key, "status written");
                    return Ok(true);
                }
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    self.known.remove(&id);
                    return Ok(false);
                }
                Err(err) => return Err(api_error("patch the status of", err)),
            }
        }
        self.known.remove(&id);
        Err(KubeError::StatusConflict {
            kind: update.kind,
            key: update.key.clone(),
        })
    }

    fn remember(&mut self, id: (Kind, ObjectKey), status: Value) {
        self.known.insert(
            id,
            Known {
                status: without_nulls(&status),
                at: Instant::now(),
            },
        );
    }
}

/// The status to write for an object whose status in the cluster is `live`: `computed`, with
/// `lastTransitionTime` kept from `live` for conditions whose type and status did not change;
/// for a status shared with other controllers (routes' parents, policies' ancestors), only
/// our entries are replaced.
pub(crate) fn desired_status(
    kind: Kind,
    live: &Value,
    computed: &Value,
    controller: &str,
) -> Value {
    let mut desired = without_nulls(computed);
    if let Some((list, reference)) = kind.status().shared_list() {
        // Routes list their parents, policies their ancestors; both are shared with other
        // controllers, each entry naming its controllerName.
        let merged = merge_route_parents(live, &desired, controller, list, reference);
        let mut status = match without_nulls(live) {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        if let Value::Object(computed) = desired {
            status.extend(computed);
        }
        status.insert(list.into(), Value::Array(merged));
        return Value::Object(status);
    }
    match kind {
        Kind::Gateway => {
            keep_times(live.get("conditions"), desired.get_mut("conditions"));
            if let Some(Value::Array(listeners)) = desired.get_mut("listeners") {
                for listener in listeners {
                    let name = listener.get("name").cloned();
                    let old = live
                        .get("listeners")
                        .and_then(Value::as_array)
                        .and_then(|l| l.iter().find(|o| o.get("name") == name.as_ref()));
                    keep_times(
                        old.and_then(|o| o.get("conditions")),
                        listener.get_mut("conditions"),
                    );
                }
            }
            desired
        }
        _ => {
            keep_times(live.get("conditions"), desired.get_mut("conditions"));
            desired
        }
    }
}

/// `live`'s parents (or a policy's ancestors: `list` names the array, `reference` the field
/// identifying an entry) with ours replaced by `computed`'s (matched by reference, times
/// kept), ours that are no longer computed dropped, and new ones of ours appended.
fn merge_route_parents(
    live: &Value,
    computed: &Value,
    controller: &str,
    list: &str,
    reference: &str,
) -> Vec<Value> {
    let is_ours = |p: &Value| p.get("controllerName").and_then(Value::as_str) == Some(controller);
    let ours: Vec<&Value> = computed
        .get(list)
        .and_then(Value::as_array)
        .map(|p| p.iter().filter(|p| is_ours(p)).collect())
        .unwrap_or_default();
    let mut used = vec![false; ours.len()];
    let mut merged = Vec::new();
    let live_parents = live.get(list).and_then(Value::as_array);
    for old in live_parents.into_iter().flatten() {
        if !is_ours(old) {
            merged.push(without_nulls(old));
            continue;
        }
        let old_ref = old.get(reference).map(without_nulls);
        let found = ours
            .iter()
            .enumerate()
            .position(|(i, new)| !used[i] && new.get(reference).map(without_nulls) == old_ref);
        if let Some(i) = found {
            used[i] = true;
            let mut new = ours[i].clone();
            keep_times(old.get("conditions"), new.get_mut("conditions"));
            merged.push(new);
        }
    }
    for (i, new) in ours.into_iter().enumerate() {
        if !used[i] {
            merged.push(new.clone());
        }
    }
    merged
}

/// Copy `lastTransitionTime` from `old` into each of `new`'s conditions whose type and
/// status are unchanged.
pub(crate) fn keep_times(old: Option<&Value>, new: Option<&mut Value>) {
    let (Some(Value::Array(old)), Some(Value::Array(new))) = (old, new) else {
        return;
    };
    for condition in new {
        let Some(previous) = old.iter().find(|o| o.get("type") == condition.get("type")) else {
            continue;
        };
        if previous.get("status") != condition.get("status") {
            continue;
        }
        if let (Some(time), Some(map)) = (
            previous.get("lastTransitionTime").filter(|t| !t.is_null()),
            condition.as_object_mut(),
        ) {
            map.insert("lastTransitionTime".into(), time.clone());
        }
    }
}

/// Equal as Kubernetes stores them: nulls and a missing status are nothing.
pub(crate) fn same(a: &Value, b: &Value) -> bool {
    without_nulls(a) == without_nulls(b)
}

fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        Value::Null => Value::Object(Map::new()),
        other => other.clone(),
    }
}

/// The merge patch that turns `live` into `desired` (top-level status fields we no longer
/// report are nulled). Patches of a shared status (routes' parents, policies' ancestors)
/// carry `resourceVersion` as a precondition (other controllers write their own entries into
/// the same list).
pub(crate) fn status_patch(
    kind: Kind,
    live: &Value,
    desired: &Value,
    resource_version: Option<&str>,
) -> Value {
    let mut status = match without_nulls(desired) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    if let Some(live) = live.as_object() {
        for key in live.keys() {
            status.entry(key.clone()).or_insert(Value::Null);
        }
    }
    let mut patch = json!({ "status": status });
    if let (Some(_), Some(rv)) = (kind.status().shared_list(), resource_version) {
        patch["metadata"] = json!({ "resourceVersion": rv });
    }
    patch
}
