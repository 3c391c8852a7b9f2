//! Listeners, whoever declares them (a Gateway or a ListenerSet): each one's validity
//! (protocol, route kinds, certificates), conflicts between listeners on one port, and
//! which namespaces' routes a listener admits.

use std::collections::BTreeMap;

use weir_snapshot::HostPattern;

use weir_store::gw::gateways::{
    GatewayListeners, GatewayListenersAllowedRoutesNamespaces,
    GatewayListenersAllowedRoutesNamespacesFrom as NamespacesFrom, GatewayListenersTlsMode,
};
use weir_store::{ObjectKey, Store, GATEWAY_GROUP};

use crate::error::TranslateError;
use crate::model::{ListenerModel, ListenerOwner};
use crate::refgrant::{self, core_group};
use crate::tls;

/// The route kinds HTTP and HTTPS listeners take (their default `supportedKinds`, in this
/// order). GRPCRoute needs HTTP/2: h2c with prior knowledge on HTTP listeners and ALPN h2 on
/// HTTPS ones, both of which the proxy serves.
const ROUTE_KINDS: &[&str] = &["HTTPRoute", "GRPCRoute"];

pub fn build_listener(
    store: &Store,
    owner: &ListenerOwner<'_>,
    l: &GatewayListeners,
) -> ListenerModel {
    let gw = owner.key;
    let (supported, https, tls_protocol, tcp) = match l.protocol.as_str() {
        "HTTP" => (true, false, false, false),
        "HTTPS" => (true, true, false, false),
        "TLS" => (true, false, true, false),
        "TCP" | "UDP" => (true, false, false, true),
        _ => (false, false, false, false),
    };
    // UDP listeners are TCP listeners of another transport (raw, oldest route serves).
    let udp = l.protocol == "UDP";
    let tcp = tcp && !udp;
    // The route kinds a listener of this protocol serves, and how errors name them.
    let (route_kinds, kinds_label): (&[&str], &'static str) = if tls_protocol {
        (&["TLSRoute"], "TLSRoute")
    } else if tcp {
        (&["TCPRoute"], "TCPRoute")
    } else if udp {
        (&["UDPRoute"], "UDPRoute")
    } else {
        (ROUTE_KINDS, "HTTPRoute, GRPCRoute")
    };
    // TLS listeners: Passthrough (routed by SNI, spliced) or Terminate (the API default:
    // TLS terminated here with the listener's certificate, the plain bytes spliced).
    let tls_terminate = tls_protocol
        && !matches!(
            l.tls.as_ref().and_then(|t| t.mode.as_ref()),
            Some(GatewayListenersTlsMode::Passthrough)
        );
    let mut m = ListenerModel {
        owner: (owner.kind != "Gateway").then(|| owner.key.clone()),
        name: l.name.clone(),
        port: u16::try_from(l.port).unwrap_or(0),
        https,
        passthrough: tls_protocol || tcp || udp,
        tcp,
        udp,
        tls_terminate,
        // The spec ignores the hostname of TCP and UDP listeners (no Host, no SNI to match).
        hostname: l
            .hostname
            .as_deref()
            .filter(|_| !tcp && !udp)
            .and_then(HostPattern::parse),
        supported_kinds: Vec::new(),
        namespaces: l.allowed_routes.as_ref().and_then(|a| a.namespaces.clone()),
        not_accepted: None,
        conflict: None,
        conflict_with: None,
        ref_errors: Vec::new(),
        cert: None,
        client_auth: None,
        attached_routes: 0,
        entries: Vec::new(),
        entry_kinds: Vec::new(),
        tls_entries: Vec::new(),
    };
    if !supported {
        m.not_accepted = Some(TranslateError::UnsupportedProtocol(l.protocol.clone()));
    } else if m.port == 0 {
        m.not_accepted = Some(TranslateError::InvalidPort(l.port));
    }
    // Route kinds.
    match l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()) {
        None if supported => m
            .supported_kinds
            .extend(route_kinds.iter().map(|k| k.to_string())),
        None => {}
        Some(kinds) => {
            for k in kinds {
                let group = k.group.as_deref().unwrap_or(GATEWAY_GROUP);
                if supported && group == GATEWAY_GROUP && route_kinds.contains(&k.kind.as_str()) {
                    if !m.supported_kinds.contains(&k.kind) {
                        m.supported_kinds.push(k.kind.clone());
                    }
                } else {
                    m.ref_errors.push(TranslateError::InvalidRouteKind {
                        group: group.to_string(),
                        kind: k.kind.clone(),
                        supported: kinds_label,
                    });
                }
            }
        }
    }
    if https || tls_terminate {
        let tls = l.tls.as_ref();
        let passthrough = matches!(
            tls.and_then(|t| t.mode.as_ref()),
            Some(GatewayListenersTlsMode::Passthrough)
        );
        if https && passthrough {
            m.not_accepted
                .get_or_insert(TranslateError::UnsupportedTlsMode("Passthrough".into()));
        }
        let refs = tls
            .and_then(|t| t.certificate_refs.as_deref())
            .unwrap_or(&[]);
        if refs.is_empty() {
            m.ref_errors.push(TranslateError::NoCertificateRefs);
        }
        for r in refs {
            let group = core_group(r.group.as_deref().unwrap_or(""));
            let kind = r.kind.as_deref().unwrap_or("Secret");
            let ns = r.namespace.as_deref().unwrap_or(&gw.namespace);
            let secret_key = ObjectKey::new(ns, r.name.as_str());
            let result = if !group.is_empty() || kind != "Secret" {
                Err(TranslateError::CertificateRefKind {
                    group: group.to_string(),
                    kind: kind.to_string(),
                    name: r.name.clone(),
                })
            } else if !refgrant::permitted(
                store,
                &refgrant::From {
                    group: GATEWAY_GROUP,
                    kind: owner.kind,
                    namespace: &gw.namespace,
                },
                &refgrant::To {
                    group: "",
                    kind: "Secret",
                    namespace: ns,
                    name: &r.name,
                },
            ) {
                Err(TranslateError::CertificateNotPermitted(
                    secret_key.to_string(),
                ))
            } else {
                match store.secrets.get(&secret_key) {
                    None => Err(TranslateError::CertificateNotFound(secret_key.to_string())),
                    Some(secret) => tls::certified_key(secret).map_err(|detail| {
                        TranslateError::CertificateInvalid {
                            secret: secret_key.to_string(),
                            detail,
                        }
                    }),
                }
            };
            match result {
                Ok(cert) => {
                    m.cert.get_or_insert(cert);
                }
                Err(e) => m.ref_errors.push(e),
            }
        }
    }
    m
}

/// Within one Gateway: listeners of different protocols (HTTP, HTTPS, TLS, TCP) on one port
/// conflict (UDP listeners only with UDP ones: another transport, another socket) (ProtocolConflict, all listeners on the port); listeners on one port with one
/// hostname conflict (HostnameConflict, all of them: the spec forbids picking a winner; TCP
/// listeners have no hostname, so two on one port conflict). Unsupported listeners, and
/// those already conflicted with a listener of higher precedence, take no part.
pub fn mark_conflicts(listeners: &mut [ListenerModel]) {
    // By (port, UDP): a UDP listener and a TCP-based one on one port number do not meet.
    let mut by_port: BTreeMap<(u16, bool), Vec<usize>> = BTreeMap::new();
    for (i, l) in listeners.iter().enumerate() {
        if l.accepted() {
            by_port.entry((l.port, l.udp)).or_default().push(i);
        }
    }
    for indexes in by_port.values() {
        let first = indexes.first().map(|&i| listeners[i].protocol());
        if indexes
            .iter()
            .any(|&i| Some(listeners[i].protocol()) != first)
        {
            for &i in indexes {
                listeners[i].conflict = Some("ProtocolConflict");
                // A conflicted listener takes no routes, so it lists no kinds.
                listeners[i].supported_kinds.clear();
            }
            continue;
        }
        let mut by_host: BTreeMap<Option<HostPattern>, Vec<usize>> = BTreeMap::new();
        for &i in indexes {
            by_host
                .entry(listeners[i].hostname.clone())
                .or_default()
                .push(i);
        }
        for same in by_host.values().filter(|v| v.len() > 1) {
            for &i in same {
                listeners[i].conflict = Some("HostnameConflict");
                listeners[i].supported_kinds.clear();
            }
        }
    }
}

/// Whether `namespaces` (From Same, the default, meaning `owner_ns`; All; Selector) admits
/// `route_ns`.
pub fn namespaces_allow(
    store: &Store,
    ns: Option<&GatewayListenersAllowedRoutesNamespaces>,
    owner_ns: &str,
    route_ns: &str,
) -> bool {
    match ns
        .and_then(|n| n.from.as_ref())
        .unwrap_or(&NamespacesFrom::Same)
    {
        NamespacesFrom::Same => owner_ns == route_ns,
        NamespacesFrom::All => true,
        NamespacesFrom::Selector => {
            let Some(sel) = ns.and_then(|n| n.selector.as_ref()) else {
                return false;
            };
            let mut labels = store.namespace_labels(route_ns);
            labels.insert("kubernetes.io/metadata.name".into(), route_ns.into());
            let labels_ok = sel
                .match_labels
                .iter()
                .flatten()
                .all(|(k, v)| labels.get(k) == Some(v));
            let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
                let values = e.values.as_deref().unwrap_or(&[]);
                let value = labels.get(&e.key);
                match e.operator.as_str() {
                    "In" => value.is_some_and(|v| values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            });
            labels_ok && exprs_ok
        }
    }
}
