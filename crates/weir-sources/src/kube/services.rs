//! Writing Gateway Services (Kubernetes mode, one Service per Gateway): the leader creates,
//! patches and deletes the Services a plan asks for. What to write is decided elsewhere
//! (purely, from the store); this only talks to the API server.

use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::Value;
use weir_store::{Kind, ObjectKey, Service};

use super::KubeError;

/// How many writes succeeded, what the API server stored, and the writes that failed.
#[derive(Debug, Default)]
pub struct ServiceWrites {
    pub written: usize,
    /// The Services as stored after a create or patch (with their resourceVersion), so the
    /// caller can plan from them before its watch delivers them.
    pub stored: Vec<Service>,
    /// Services deleted (or found already gone).
    pub deleted: Vec<ObjectKey>,
    pub errors: Vec<KubeError>,
}

/// Create `create`, merge-patch each of `patch`, delete `delete`. A Service that already
/// exists (409 on create: our store had not seen it yet) or is already gone (404) is not an
/// error: the next plan, from a store that has caught up, settles it.
pub async fn write_services(
    client: &Client,
    field_manager: &str,
    create: &[Service],
    patch: &[(ObjectKey, Value)],
    delete: &[ObjectKey],
) -> ServiceWrites {
    let mut out = ServiceWrites::default();
    let api_error = |verb, key: &ObjectKey, source| KubeError::Api {
        verb,
        kind: Kind::Service,
        key: key.clone(),
        source,
    };
    for svc in create {
        let key = ObjectKey::of(&svc.metadata);
        let api: Api<Service> = Api::namespaced(client.clone(), &key.namespace);
        let params = PostParams {
            field_manager: Some(field_manager.to_string()),
            ..PostParams::default()
        };
        match api.create(&params, svc).await {
            Ok(stored) => {
                tracing::info!(service = %key, "gateway Service created");
                out.written += 1;
                out.stored.push(stored);
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::debug!(service = %key, "gateway Service already exists");
            }
            Err(err) => out.errors.push(api_error("create", &key, err)),
        }
    }
    for (key, body) in patch {
        let api: Api<Service> = Api::namespaced(client.clone(), &key.namespace);
        let params = PatchParams {
            field_manager: Some(field_manager.to_string()),
            ..PatchParams::default()
        };
        match api.patch(&key.name, &params, &Patch::Merge(body)).await {
            Ok(stored) => {
                tracing::info!(service = %key, "gateway Service updated");
                out.written += 1;
                out.stored.push(stored);
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => out.errors.push(api_error("patch", key, err)),
        }
    }
    for key in delete {
        let api: Api<Service> = Api::namespaced(client.clone(), &key.namespace);
        match api.delete(&key.name, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::info!(service = %key, "gateway Service deleted (its Gateway is gone or no longer ours)");
                out.written += 1;
                out.deleted.push(key.clone());
            }
            Err(kube::Error::Api(status)) if status.code == 404 => out.deleted.push(key.clone()),
            Err(err) => out.errors.push(api_error("delete", key, err)),
        }
    }
    out
}
