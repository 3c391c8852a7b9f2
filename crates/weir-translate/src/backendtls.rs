//! Backend TLS: BackendTLSPolicies (which Service ports get TLS, how the backend's
//! certificate is verified, the policies' status) and the certificate a Gateway presents to
//! TLS backends (`spec.tls.backend.clientCertificateRef`).
//!
//! Attachment, precedence and the ancestors status are [`crate::policy::attach`]'s. Decisions
//! where the spec leaves room:
//! - Targets are core Services (`sectionName` = the Service port's name); other kinds are
//!   ignored. A policy naming the port wins over one for the whole Service: they do not
//!   conflict. Policies selecting the same target and section conflict: the oldest
//!   (creationTimestamp, then namespace/name) applies, the others get Accepted=False
//!   `Conflicted`.
//! - `caCertificateRefs`: ConfigMaps in the policy's namespace with PEM certificates under
//!   `ca.crt`. When some refs are valid and others not, the valid ones are the trust anchors
//!   (Accepted=True, ResolvedRefs=False names the bad ones); when none is valid the policy is
//!   not accepted (`NoValidCACertificate`) and its backends answer 500 instead of falling
//!   back to cleartext.
//! - `wellKnownCACertificates` is not supported: the translator does no IO, so it cannot
//!   read the system trust store. Such policies get Accepted=False `Invalid` (as the spec
//!   asks of implementations without support) and their backends answer 500.
//! - `status.ancestors`: one entry per Gateway of ours with a route whose backendRef uses a
//!   targeted Service (any port), whether or not this policy won the target.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use weir_snapshot::{BackendTls, ClientCert, SubjectAltName, UpstreamTls};
use weir_store::gw::backendtlspolicies::BackendTlsPolicyValidationSubjectAltNamesType;
use weir_store::{BackendTlsPolicy, Gateway, Kind, ObjectKey, Store, GATEWAY_GROUP};

use crate::conditions::Conditions;
use crate::error::TranslateError;
use crate::policy::attach::{self, Allowed, Candidate, Target, TargetRef};
use crate::refgrant::{self, core_group};
use crate::{tls, ObjectStatus};

/// The TLS settings for each targeted Service (or Service port), from the policies that won
/// them.
pub type TlsIndex = BTreeMap<Target, BackendTls>;

/// What a BackendTLSPolicy may target.
const TARGETS: Allowed = Allowed {
    gateway: false,
    listener_set: false,
    routes: false,
    service: true,
};

/// One BackendTLSPolicy, evaluated.
struct PolicyModel {
    key: ObjectKey,
    policy: Arc<BackendTlsPolicy>,
    /// The Services (and sections) it targets.
    targets: Vec<Target>,
    /// Why Accepted is False (other than a conflict): (reason, message).
    not_accepted: Option<(&'static str, String)>,
    /// ResolvedRefs problems (the first gives the reason).
    ref_errors: Vec<TranslateError>,
    /// What its targets get when it wins them.
    tls: BackendTls,
    /// Another policy won one of its targets.
    conflicted: bool,
    /// Gateways whose routes use a targeted Service.
    ancestors: BTreeSet<ObjectKey>,
}

/// Every BackendTLSPolicy, and which one applies to each target.
pub struct Policies {
    models: Vec<PolicyModel>,
    index: TlsIndex,
}

impl Policies {
    pub fn build(store: &Store) -> Self {
        let mut models: Vec<PolicyModel> = store
            .backend_tls_policies
            .iter()
            .filter_map(|(key, p)| evaluate(store, key, p))
            .collect();
        let settled = attach::settle(
            &models
                .iter()
                .map(|m| Candidate {
                    meta: &m.policy.metadata,
                    key: &m.key,
                    targets: &m.targets,
                })
                .collect::<Vec<_>>(),
        );
        let index: TlsIndex = settled
            .winners
            .into_iter()
            .map(|(target, i)| (target, models[i].tls.clone()))
            .collect();
        for (m, conflicted) in models.iter_mut().zip(settled.conflicted) {
            m.conflicted = conflicted;
        }
        // Status in precedence order: oldest first, then namespace/name.
        models.sort_by(|a, b| {
            (crate::meta::created(&a.policy.metadata), &a.key)
                .cmp(&(crate::meta::created(&b.policy.metadata), &b.key))
        });
        Self { models, index }
    }

    /// The TLS settings by target, for the upstreams.
    pub fn index(&self) -> TlsIndex {
        self.index.clone()
    }

    /// Record that `gateway` routes to `service`.
    pub fn used_by(&mut self, service: &ObjectKey, gateway: &ObjectKey) {
        for m in self.models.iter_mut() {
            if m.targets.iter().any(|t| &t.key == service) {
                m.ancestors.insert(gateway.clone());
            }
        }
    }

    /// One status per policy: an ancestor entry per Gateway that uses its targets.
    pub fn statuses(&self, controller: &str, now: &weir_store::Time) -> Vec<ObjectStatus> {
        self.models
            .iter()
            .map(|m| {
                let c = Conditions {
                    generation: m.policy.metadata.generation,
                    now,
                };
                ObjectStatus::new(
                    Kind::BackendTlsPolicy,
                    &m.policy.metadata,
                    policy_status(m, controller, &c),
                )
            })
            .collect()
    }
}

/// The TLS settings for a Service port: a policy naming the port first, then one for the
/// whole Service.
pub fn lookup<'a>(
    index: &'a TlsIndex,
    service: &ObjectKey,
    port_name: Option<&str>,
) -> Option<&'a BackendTls> {
    attach::most_specific(
        index,
        &Target::new(Kind::Service, service.clone(), port_name),
    )
}

fn evaluate(store: &Store, key: &ObjectKey, p: &Arc<BackendTlsPolicy>) -> Option<PolicyModel> {
    let mut not_accepted = None;
    let mut targets = Vec::new();
    for t in &p.spec.target_refs {
        let r = TargetRef {
            group: &t.group,
            kind: &t.kind,
            name: &t.name,
            section_name: t.section_name.as_deref(),
        };
        let Some(resolved) = attach::resolve(store, &key.namespace, r, TARGETS) else {
            continue;
        };
        if let Some(missing) = resolved.not_found {
            not_accepted.get_or_insert((missing.reason, missing.message));
        }
        targets.push(resolved.target);
    }
    if targets.is_empty() {
        // Not a policy for backends we know how to reach.
        return None;
    }
    let v = &p.spec.validation;
    let mut ref_errors = Vec::new();
    let mut roots = rustls::RootCertStore::empty();
    let mut hasher = DefaultHasher::new();
    let refs = v.ca_certificate_refs.as_deref().unwrap_or(&[]);
    for r in refs {
        match ca_certificates(store, &key.namespace, r) {
            Ok(certs) => {
                for der in certs {
                    der.as_ref().hash(&mut hasher);
                    // Parsed already; a certificate webpki cannot use as an anchor is skipped.
                    let _ = roots.add(der);
                }
            }
            Err(e) => ref_errors.push(e),
        }
    }
    if let Some(well_known) = v
        .well_known_ca_certificates
        .as_deref()
        .filter(|w| !w.is_empty())
    {
        not_accepted.get_or_insert((
            "Invalid",
            format!(
                "wellKnownCACertificates {well_known:?} is not supported; name the CA certificates in caCertificateRefs"
            ),
        ));
    } else if roots.is_empty() {
        not_accepted.get_or_insert((
            "NoValidCACertificate",
            match ref_errors.first() {
                Some(e) => format!("no valid CA certificate: {e}"),
                None => "no caCertificateRefs".to_string(),
            },
        ));
    }

    let server_name = match ServerName::try_from(v.hostname.clone()) {
        Ok(name @ ServerName::DnsName(_)) => Some(name),
        _ => {
            not_accepted.get_or_insert((
                "Invalid",
                format!("validation.hostname {:?} is not a DNS name", v.hostname),
            ));
            None
        }
    };
    v.hostname.hash(&mut hasher);

    let mut sans = Vec::new();
    for san in v.subject_alt_names.as_deref().unwrap_or(&[]) {
        let parsed = match san.r#type {
            BackendTlsPolicyValidationSubjectAltNamesType::Hostname => san
                .hostname
                .as_deref()
                .filter(|h| !h.is_empty())
                .map(|h| SubjectAltName::Hostname(h.to_ascii_lowercase())),
            BackendTlsPolicyValidationSubjectAltNamesType::Uri => san
                .uri
                .as_deref()
                .filter(|u| u.contains(':'))
                .map(|u| SubjectAltName::Uri(u.to_string())),
        };
        match parsed {
            Some(s) => {
                s.hash(&mut hasher);
                sans.push(s);
            }
            None => {
                not_accepted.get_or_insert((
                    "Invalid",
                    "a subjectAltNames entry lacks the hostname or URI its type needs".to_string(),
                ));
            }
        }
    }

    let tls = match (&not_accepted, server_name) {
        (None, Some(server_name)) => BackendTls::Verify(Arc::new(UpstreamTls {
            id: hasher.finish(),
            server_name,
            roots: Arc::new(roots),
            subject_alt_names: sans.into(),
        })),
        (Some((_, why)), _) => BackendTls::Invalid(format!("BackendTLSPolicy {key}: {why}").into()),
        (None, None) => BackendTls::Invalid(format!("BackendTLSPolicy {key}: invalid").into()),
    };
    Some(PolicyModel {
        key: key.clone(),
        policy: p.clone(),
        targets,
        not_accepted,
        ref_errors,
        tls,
        conflicted: false,
        ancestors: BTreeSet::new(),
    })
}

/// The certificates of one caCertificateRef (DER), or why it is invalid.
fn ca_certificates(
    store: &Store,
    namespace: &str,
    r: &weir_store::gw::backendtlspolicies::BackendTlsPolicyValidationCaCertificateRefs,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TranslateError> {
    let group = core_group(&r.group);
    if !group.is_empty() || r.kind != "ConfigMap" {
        return Err(TranslateError::PolicyCaCertificateRefKind {
            group: group.to_string(),
            kind: r.kind.clone(),
            name: r.name.clone(),
        });
    }
    let key = ObjectKey::new(namespace, r.name.as_str());
    let invalid = |detail: &str| TranslateError::CaCertificateRefInvalid {
        config_map: key.to_string(),
        detail: detail.to_string(),
    };
    let cm = store
        .config_maps
        .get(&key)
        .ok_or_else(|| invalid("it does not exist"))?;
    let pem: Vec<u8> = if let Some(s) = cm.data.as_ref().and_then(|d| d.get("ca.crt")) {
        s.as_bytes().to_vec()
    } else if let Some(b) = cm.binary_data.as_ref().and_then(|d| d.get("ca.crt")) {
        b.0.clone()
    } else {
        return Err(invalid("it has no key ca.crt"));
    };
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| invalid("ca.crt is not valid PEM"))?;
    if certs.is_empty() {
        return Err(invalid("ca.crt holds no PEM certificate"));
    }
    let mut probe = rustls::RootCertStore::empty();
    let (added, _) = probe.add_parsable_certificates(certs.iter().cloned());
    if added == 0 {
        return Err(invalid("ca.crt holds no usable CA certificate"));
    }
    Ok(certs)
}

fn policy_status(m: &PolicyModel, controller: &str, c: &Conditions<'_>) -> serde_json::Value {
    let accepted = if m.conflicted {
        c.make(
            "Accepted",
            false,
            "Conflicted",
            "an older BackendTLSPolicy (or one first by namespace/name) selects the same target",
        )
    } else if let Some((reason, message)) = &m.not_accepted {
        c.make("Accepted", false, reason, message.clone())
    } else {
        c.make("Accepted", true, "Accepted", "Policy is accepted")
    };
    let resolved = match m.ref_errors.first() {
        None => c.make(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "All CA certificate references are resolved",
        ),
        Some(first) => {
            let all: Vec<String> = m.ref_errors.iter().map(ToString::to_string).collect();
            c.make("ResolvedRefs", false, first.reason(), all.join("; "))
        }
    };
    attach::ancestor_status(&m.ancestors, controller, &[accepted, resolved])
}

/// The certificate a Gateway presents to TLS backends, or why its
/// `spec.tls.backend.clientCertificateRef` cannot be used (`None, None`: none configured).
pub fn gateway_client_cert(
    store: &Store,
    key: &ObjectKey,
    gateway: &Gateway,
) -> (Option<Arc<ClientCert>>, Option<TranslateError>) {
    let Some(r) = gateway
        .spec
        .tls
        .as_ref()
        .and_then(|t| t.backend.as_ref())
        .and_then(|b| b.client_certificate_ref.as_ref())
    else {
        return (None, None);
    };
    let group = core_group(r.group.as_deref().unwrap_or(""));
    let kind = r.kind.as_deref().unwrap_or("Secret");
    if !group.is_empty() || kind != "Secret" {
        return (
            None,
            Some(TranslateError::ClientCertificateRefKind {
                group: group.to_string(),
                kind: kind.to_string(),
                name: r.name.clone(),
            }),
        );
    }
    let ns = r.namespace.as_deref().unwrap_or(&key.namespace);
    let secret_key = ObjectKey::new(ns, r.name.as_str());
    let permitted = refgrant::permitted(
        store,
        &refgrant::From {
            group: GATEWAY_GROUP,
            kind: "Gateway",
            namespace: &key.namespace,
        },
        &refgrant::To {
            group: "",
            kind: "Secret",
            namespace: ns,
            name: &r.name,
        },
    );
    if !permitted {
        return (
            None,
            Some(TranslateError::ClientCertificateNotPermitted(
                secret_key.to_string(),
            )),
        );
    }
    let Some(secret) = store.secrets.get(&secret_key) else {
        return (
            None,
            Some(TranslateError::ClientCertificateInvalid {
                secret: secret_key.to_string(),
                detail: "it does not exist".into(),
            }),
        );
    };
    match tls::certified_key(secret) {
        Ok(certified) => {
            let mut hasher = DefaultHasher::new();
            for der in &certified.cert {
                der.as_ref().hash(&mut hasher);
            }
            (
                Some(Arc::new(ClientCert {
                    id: hasher.finish(),
                    key: certified,
                })),
                None,
            )
        }
        Err(detail) => (
            None,
            Some(TranslateError::ClientCertificateInvalid {
                secret: secret_key.to_string(),
                detail,
            }),
        ),
    }
}

#[cfg(test)]
mod tests;
