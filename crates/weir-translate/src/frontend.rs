//! Frontend client-certificate validation (Gateway `spec.tls.frontend`): per HTTPS listener
//! port, `perPort` overrides `default`; its `caCertificateRefs` resolve to ConfigMaps with a
//! PEM `ca.crt` (another namespace needs a ReferenceGrant), and the listeners of that port
//! share one [`ClientAuth`]. Bad references are the listener conditions the spec names:
//! ResolvedRefs False (InvalidCACertificateRef, InvalidCACertificateKind, RefNotPermitted) on
//! every HTTPS listener of the port, and Accepted False (NoValidCACertificate) when no
//! reference is usable.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_snapshot::{ClientAuth, ClientAuthMode};
use weir_store::gw::gateways::{
    GatewayTlsFrontend, GatewayTlsFrontendDefaultValidationMode,
    GatewayTlsFrontendPerPortTlsValidationMode,
};
use weir_store::{Gateway, ObjectKey, Store, GATEWAY_GROUP};

use crate::error::TranslateError;
use crate::model::ListenerModel;
use crate::refgrant::{self, core_group};

/// The ConfigMap key holding the CA bundle.
const CA_KEY: &str = "ca.crt";

/// One `caCertificateRefs` entry, from either the default or a per-port validation.
struct CaRef<'a> {
    group: &'a str,
    kind: &'a str,
    name: &'a str,
    namespace: Option<&'a str>,
}

/// The validation that applies to one port.
struct Validation<'a> {
    mode: ClientAuthMode,
    refs: Vec<CaRef<'a>>,
}

/// The validation for listeners on `port`: the `perPort` entry for it, else `default`.
fn for_port(frontend: &GatewayTlsFrontend, port: u16) -> Option<Validation<'_>> {
    let per_port = frontend
        .per_port
        .iter()
        .flatten()
        .find(|p| p.port == i32::from(port));
    if let Some(p) = per_port {
        let v = p.tls.validation.as_ref()?;
        return Some(Validation {
            mode: match v.mode {
                Some(GatewayTlsFrontendPerPortTlsValidationMode::AllowInsecureFallback) => {
                    ClientAuthMode::AllowInsecureFallback
                }
                _ => ClientAuthMode::AllowValidOnly,
            },
            refs: v
                .ca_certificate_refs
                .iter()
                .map(|r| CaRef {
                    group: &r.group,
                    kind: &r.kind,
                    name: &r.name,
                    namespace: r.namespace.as_deref(),
                })
                .collect(),
        });
    }
    let v = frontend.default.validation.as_ref()?;
    Some(Validation {
        mode: match v.mode {
            Some(GatewayTlsFrontendDefaultValidationMode::AllowInsecureFallback) => {
                ClientAuthMode::AllowInsecureFallback
            }
            _ => ClientAuthMode::AllowValidOnly,
        },
        refs: v
            .ca_certificate_refs
            .iter()
            .map(|r| CaRef {
                group: &r.group,
                kind: &r.kind,
                name: &r.name,
                namespace: r.namespace.as_deref(),
            })
            .collect(),
    })
}

/// A port's validation, resolved: the shared [`ClientAuth`] (when at least one reference is
/// usable) and the errors of the others.
struct Resolved {
    client_auth: Option<Arc<ClientAuth>>,
    errors: Vec<TranslateError>,
}

/// Give every HTTPS listener of the Gateway (its own and its ListenerSets') the validation of
/// its port, with the conditions of bad references. Returns whether any of them is in mode
/// AllowInsecureFallback (the Gateway's InsecureFrontendValidationMode condition).
pub fn apply(
    store: &Store,
    gw: &ObjectKey,
    gateway: &Gateway,
    listeners: &mut [ListenerModel],
) -> bool {
    let Some(frontend) = gateway.spec.tls.as_ref().and_then(|t| t.frontend.as_ref()) else {
        return false;
    };
    let mut insecure = false;
    let mut by_port: BTreeMap<u16, Option<Resolved>> = BTreeMap::new();
    for l in listeners.iter_mut().filter(|l| l.https) {
        let resolved = by_port.entry(l.port).or_insert_with(|| {
            for_port(frontend, l.port).map(|v| {
                insecure |= v.mode == ClientAuthMode::AllowInsecureFallback;
                resolve(store, gw, &v)
            })
        });
        let Some(resolved) = resolved else {
            continue;
        };
        l.ref_errors.extend(resolved.errors.iter().cloned());
        match &resolved.client_auth {
            Some(auth) => l.client_auth = Some(auth.clone()),
            None => {
                l.not_accepted
                    .get_or_insert(TranslateError::NoValidCaCertificate);
            }
        }
    }
    insecure
}

fn resolve(store: &Store, gw: &ObjectKey, v: &Validation<'_>) -> Resolved {
    let mut errors = Vec::new();
    let mut certs = Vec::new();
    for r in &v.refs {
        match ca_certs(store, gw, r) {
            Ok(found) => certs.extend(found),
            Err(e) => errors.push(e),
        }
    }
    let client_auth = if certs.is_empty() {
        None
    } else {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        match ClientAuth::new(v.mode, certs, provider) {
            Ok(auth) => Some(Arc::new(auth)),
            Err(detail) => {
                errors.push(TranslateError::CaCertificateInvalid {
                    config_map: v.refs.iter().map(|r| r.name).collect::<Vec<_>>().join(", "),
                    detail,
                });
                None
            }
        }
    };
    Resolved {
        client_auth,
        errors,
    }
}

/// The DER certificates of one reference, or why it cannot be used.
fn ca_certs(
    store: &Store,
    gw: &ObjectKey,
    r: &CaRef<'_>,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TranslateError> {
    let group = core_group(r.group);
    if !group.is_empty() || r.kind != "ConfigMap" {
        return Err(TranslateError::CaCertificateRefKind {
            group: group.to_string(),
            kind: r.kind.to_string(),
            name: r.name.to_string(),
        });
    }
    let ns = r.namespace.unwrap_or(&gw.namespace);
    let key = ObjectKey::new(ns, r.name);
    if !refgrant::permitted(
        store,
        &refgrant::From {
            group: GATEWAY_GROUP,
            kind: "Gateway",
            namespace: &gw.namespace,
        },
        &refgrant::To {
            group: "",
            kind: "ConfigMap",
            namespace: ns,
            name: r.name,
        },
    ) {
        return Err(TranslateError::CaCertificateNotPermitted(key.to_string()));
    }
    let Some(cm) = store.config_maps.get(&key) else {
        return Err(TranslateError::CaCertificateNotFound(key.to_string()));
    };
    let invalid = |detail: &str| TranslateError::CaCertificateInvalid {
        config_map: key.to_string(),
        detail: detail.to_string(),
    };
    let pem: Vec<u8> = match (
        cm.data.as_ref().and_then(|d| d.get(CA_KEY)),
        cm.binary_data.as_ref().and_then(|d| d.get(CA_KEY)),
    ) {
        (Some(text), _) => text.as_bytes().to_vec(),
        (None, Some(bytes)) => bytes.0.clone(),
        (None, None) => return Err(invalid("it has no key ca.crt")),
    };
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&format!("ca.crt is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("ca.crt holds no PEM certificate"));
    }
    // Each certificate must be usable as a trust anchor on its own, so that one bad
    // certificate is reported against its ConfigMap.
    for cert in &certs {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).map_err(|e| {
            invalid(&format!(
                "ca.crt holds a certificate webpki cannot use: {e}"
            ))
        })?;
    }
    Ok(certs)
}
