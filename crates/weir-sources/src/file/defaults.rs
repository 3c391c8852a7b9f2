//! What the API server does to an object before storing it, done on the JSON form: the
//! `default:` values of the Gateway API CRDs (standard channel v1.6.1, version v1), the
//! built-in defaults of the core kinds Weir reads, and dropping the fields a manifest cannot
//! set (status, server-managed metadata).
//!
//! As in the API server, a default applies where the field is absent or `null`, and the
//! fields of a defaulted value get their own defaults too.

use serde_json::{json, Map, Value};
use weir_store::{Kind, GATEWAY_GROUP};

#[cfg(test)]
mod tests;

/// The namespace of a namespaced object that names none.
pub(super) const NAMESPACE: &str = "default";

/// Metadata the API server manages; values in a manifest are ignored.
const SERVER_MANAGED: [&str; 8] = [
    "uid",
    "creationTimestamp",
    "generation",
    "resourceVersion",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Apply everything for an object already recognised as `kind`.
pub(super) fn apply(kind: Kind, object: &mut Map<String, Value>) {
    // Stored under the version the rest of weir expects (v1beta1 and v1 share the schema).
    object.insert("apiVersion".into(), json!(kind.api_version()));
    metadata(kind, object);
    if !kind.info().manifest_status {
        // Status is a subresource: only controllers write it.
        object.remove("status");
    }
    match kind {
        Kind::Gateway => gateway(object),
        Kind::HttpRoute => http_route(object),
        Kind::GrpcRoute => grpc_route(object),
        Kind::ListenerSet => listener_set(object),
        Kind::Service => service(object),
        Kind::EndpointSlice => endpoint_slice(object),
        Kind::Secret => {
            or_default(object, "type", json!("Opaque"));
        }
        Kind::TlsRoute | Kind::TcpRoute | Kind::UdpRoute => stream_route(object),
        Kind::GatewayClass
        | Kind::ReferenceGrant
        | Kind::BackendTlsPolicy
        | Kind::ClientTrafficPolicy
        | Kind::BackendTrafficPolicy
        | Kind::XBackendTrafficPolicy
        | Kind::SecurityPolicy
        | Kind::ExtensionPolicy
        | Kind::ConfigMap
        | Kind::Namespace
        | Kind::InferencePool
        | Kind::Pod => {}
    }
}

fn metadata(kind: Kind, object: &mut Map<String, Value>) {
    let Some(meta) = field(object, "metadata") else {
        return;
    };
    for name in SERVER_MANAGED {
        meta.remove(name);
    }
    if kind.is_cluster_scoped() {
        meta.remove("namespace");
    } else if meta
        .get("namespace")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        meta.insert("namespace".into(), json!(NAMESPACE));
    }
}

fn gateway(object: &mut Map<String, Value>) {
    let Some(spec) = field(object, "spec") else {
        return;
    };
    for address in items(spec, "addresses") {
        or_default(address, "type", json!("IPAddress"));
    }
    if let Some(allowed) = field(spec, "allowedListeners") {
        if let Some(namespaces) =
            or_default(allowed, "namespaces", json!({"from": "None"})).as_object_mut()
        {
            or_default(namespaces, "from", json!("None"));
        }
    }
    for l in items(spec, "listeners") {
        listener(l);
    }
    if let Some(tls) = field(spec, "tls") {
        if let Some(reference) =
            field(tls, "backend").and_then(|backend| field(backend, "clientCertificateRef"))
        {
            secret_ref(reference);
        }
        if let Some(frontend) = field(tls, "frontend") {
            if let Some(validation) =
                field(frontend, "default").and_then(|default| field(default, "validation"))
            {
                or_default(validation, "mode", json!("AllowValidOnly"));
            }
            for port in items(frontend, "perPort") {
                if let Some(validation) =
                    field(port, "tls").and_then(|tls| field(tls, "validation"))
                {
                    or_default(validation, "mode", json!("AllowValidOnly"));
                }
            }
        }
    }
}

fn secret_ref(reference: &mut Map<String, Value>) {
    or_default(reference, "group", json!(""));
    or_default(reference, "kind", json!("Secret"));
}

/// One listener entry: a Gateway's `spec.listeners[]` and a ListenerSet's share the schema
/// and the defaults.
fn listener(listener: &mut Map<String, Value>) {
    let allowed = or_default(
        listener,
        "allowedRoutes",
        json!({"namespaces": {"from": "Same"}}),
    );
    if let Some(allowed) = allowed.as_object_mut() {
        if let Some(namespaces) =
            or_default(allowed, "namespaces", json!({"from": "Same"})).as_object_mut()
        {
            or_default(namespaces, "from", json!("Same"));
        }
        for kind in items(allowed, "kinds") {
            or_default(kind, "group", json!(GATEWAY_GROUP));
        }
    }
    if let Some(tls) = field(listener, "tls") {
        or_default(tls, "mode", json!("Terminate"));
        for reference in items(tls, "certificateRefs") {
            secret_ref(reference);
        }
    }
}

/// A ListenerSet: the listener defaults of a Gateway, and `spec.parentRef` a Gateway of the
/// Gateway API group.
fn listener_set(object: &mut Map<String, Value>) {
    let Some(spec) = field(object, "spec") else {
        return;
    };
    if let Some(parent) = field(spec, "parentRef") {
        or_default(parent, "group", json!(GATEWAY_GROUP));
        or_default(parent, "kind", json!("Gateway"));
    }
    for l in items(spec, "listeners") {
        listener(l);
    }
}

fn http_route(object: &mut Map<String, Value>) {
    let Some(spec) = field(object, "spec") else {
        return;
    };
    parent_refs(spec);
    let match_all = json!({"path": {"type": "PathPrefix", "value": "/"}});
    or_default(spec, "rules", json!([{"matches": [match_all.clone()]}]));
    for rule in items(spec, "rules") {
        or_default(rule, "matches", json!([match_all.clone()]));
        for matcher in items(rule, "matches") {
            let path = or_default(matcher, "path", match_all["path"].clone());
            if let Some(path) = path.as_object_mut() {
                or_default(path, "type", json!("PathPrefix"));
                or_default(path, "value", json!("/"));
            }
            for header in items(matcher, "headers") {
                or_default(header, "type", json!("Exact"));
            }
            for query in items(matcher, "queryParams") {
                or_default(query, "type", json!("Exact"));
            }
        }
        for filter in items(rule, "filters") {
            route_filter(filter);
        }
        for backend in items(rule, "backendRefs") {
            backend_ref(backend);
            for filter in items(backend, "filters") {
                route_filter(filter);
            }
        }
    }
}

/// A GRPCRoute has no default rules or matches (an absent match list matches every
/// request), so only the fields inside what the manifest gives are defaulted.
fn grpc_route(object: &mut Map<String, Value>) {
    let Some(spec) = field(object, "spec") else {
        return;
    };
    parent_refs(spec);
    for rule in items(spec, "rules") {
        for matcher in items(rule, "matches") {
            if let Some(method) = field(matcher, "method") {
                or_default(method, "type", json!("Exact"));
            }
            for header in items(matcher, "headers") {
                or_default(header, "type", json!("Exact"));
            }
        }
        for filter in items(rule, "filters") {
            mirror_filter(filter);
        }
        for backend in items(rule, "backendRefs") {
            backend_ref(backend);
            for filter in items(backend, "filters") {
                mirror_filter(filter);
            }
        }
    }
}

/// `spec.parentRefs` of a route: Gateways of the Gateway API group.
/// TLSRoute, TCPRoute and UDPRoute: parentRefs and backendRefs get the same defaults as an
/// HTTPRoute's (their CRDs have no other defaults). Without them a route's status would echo
/// a parentRef without group and kind, which the suite's `RouteMustHaveParents` (comparing
/// them as set) does not take for the Gateway it expects.
fn stream_route(object: &mut Map<String, Value>) {
    let Some(spec) = field(object, "spec") else {
        return;
    };
    parent_refs(spec);
    for rule in items(spec, "rules") {
        for backend in items(rule, "backendRefs") {
            backend_ref(backend);
        }
    }
}

fn parent_refs(spec: &mut Map<String, Value>) {
    for parent in items(spec, "parentRefs") {
        or_default(parent, "group", json!(GATEWAY_GROUP));
        or_default(parent, "kind", json!("Gateway"));
    }
}

/// A rule's backendRef: a core Service of weight 1.
fn backend_ref(backend: &mut Map<String, Value>) {
    or_default(backend, "group", json!(""));
    or_default(backend, "kind", json!("Service"));
    or_default(backend, "weight", json!(1));
}

/// Defaults of an HTTPRoute filter (the same for rule and backendRef filters).
fn route_filter(filter: &mut Map<String, Value>) {
    if let Some(cors) = field(filter, "cors") {
        or_default(cors, "maxAge", json!(5));
    }
    mirror_filter(filter);
    if let Some(redirect) = field(filter, "requestRedirect") {
        or_default(redirect, "statusCode", json!(302));
    }
}

/// The RequestMirror defaults, which HTTPRoute and GRPCRoute filters share (the only filter
/// fields of a GRPCRoute with a default).
fn mirror_filter(filter: &mut Map<String, Value>) {
    if let Some(mirror) = field(filter, "requestMirror") {
        if let Some(backend) = field(mirror, "backendRef") {
            or_default(backend, "group", json!(""));
            or_default(backend, "kind", json!("Service"));
        }
        if let Some(fraction) = field(mirror, "fraction") {
            or_default(fraction, "denominator", json!(100));
        }
    }
}

/// The core/v1 Service defaults that matter for routing.
fn service(object: &mut Map<String, Value>) {
    let Some(spec) = field(object, "spec") else {
        return;
    };
    or_default(spec, "type", json!("ClusterIP"));
    or_default(spec, "sessionAffinity", json!("None"));
    for port in items(spec, "ports") {
        or_default(port, "protocol", json!("TCP"));
        if let Some(number) = port.get("port").cloned() {
            or_default(port, "targetPort", number);
        }
    }
}

fn endpoint_slice(object: &mut Map<String, Value>) {
    for port in items(object, "ports") {
        or_default(port, "name", json!(""));
        or_default(port, "protocol", json!("TCP"));
    }
}

/// The mapping at `key`, if there is one.
fn field<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    map.get_mut(key)?.as_object_mut()
}

/// The mappings in the list at `key` (other items are left for deserialization to reject).
fn items<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    map.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// The value at `key`, set to `default` first when absent or null.
fn or_default<'a>(map: &'a mut Map<String, Value>, key: &str, default: Value) -> &'a mut Value {
    let slot = map.entry(key).or_insert(Value::Null);
    if slot.is_null() {
        *slot = default;
    }
    slot
}
