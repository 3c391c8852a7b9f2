//! The test API server serves every kind of Weir's kind table, driven by the real kube-rs
//! client over HTTP with each kind's Rust type's API resource (so a kind added to the table
//! is covered here without a change).

use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use weir_store::{Kind, KindType, KindVisitor, Object, ObjectKey, WrittenStatus};
use weir_testkit::apiserver::TestApiServer;

/// The API resource of a kind, from its Rust type (not from the table).
struct Erase;
impl KindVisitor for Erase {
    type Output = ApiResource;
    fn visit<T: KindType>(self) -> ApiResource {
        ApiResource::erase::<T>(&())
    }
}

#[tokio::test]
async fn every_kind_is_served() {
    let server = TestApiServer::start().await;
    for kind in Kind::ALL {
        let resource = kind.visit(Erase);
        let name = format!("a-{}", resource.plural);
        let key = ObjectKey::new("ns", name.as_str());
        let value = Object::empty(kind, &key).to_value().unwrap();
        let object: DynamicObject = serde_json::from_value(value).unwrap();
        let api: Api<DynamicObject> = if kind.is_cluster_scoped() {
            Api::all_with(server.client(), &resource)
        } else {
            Api::namespaced_with(server.client(), "ns", &resource)
        };
        let created = api.create(&PostParams::default(), &object).await;
        assert!(created.is_ok(), "{kind}: {created:?}");

        let all: Api<DynamicObject> = Api::all_with(server.client(), &resource);
        let listed = all.list(&ListParams::default()).await.unwrap();
        let names: Vec<_> = listed
            .items
            .iter()
            .map(|o| o.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, std::slice::from_ref(&name), "{kind}");
        let got = api.get(&name).await.unwrap();
        let types = got.types.map(|t| (t.api_version, t.kind));
        assert_eq!(
            types,
            Some((kind.api_version().to_owned(), kind.as_str().to_owned())),
            "{kind}"
        );
        let namespace = if kind.is_cluster_scoped() { "" } else { "ns" };
        assert!(
            server
                .get(kind.group(), kind.plural(), namespace, &name)
                .is_some(),
            "{kind}: stored under the table's group and plural"
        );
        if kind.status() != WrittenStatus::None {
            let patch = json!({"status": {"conditions": []}});
            let patched = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            assert!(patched.is_ok(), "{kind}: status subresource: {patched:?}");
        }
    }
}
