//! TLS to backends (BackendTLSPolicy): one rustls client config per (verification settings,
//! Gateway client certificate, ALPN), built on first use and cached, and the certificate
//! verifier for `subjectAltNames`.
//!
//! Verification follows `validation` of the policy: the chain must lead to one of the
//! policy's CA certificates; then, without `subjectAltNames`, the certificate must be valid
//! for `hostname` (also the SNI); with them, it must carry one of the SANs (DNS names
//! matched like server names, URIs exactly) and the hostname is only the SNI.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{
    verify_server_cert_signed_by_trust_anchor, verify_server_name, ResolvesClientCert,
    WebPkiServerVerifier,
};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme,
};
use weir_snapshot::{ClientCert, SubjectAltName, UpstreamTls};

/// Cached configs: settings change only with the configuration, so the map stays small;
/// it is cleared if it ever grows past this many entries.
const MAX_CONFIGS: usize = 1024;

/// (policy settings id, client certificate id or 0, HTTP/2).
type ConfigKey = (u64, u64, bool);

#[derive(Default)]
pub(crate) struct TlsConfigs {
    configs: Mutex<HashMap<ConfigKey, Arc<ClientConfig>>>,
}

/// The pool identity of a TLS connection: never 0 (0 is cleartext).
pub(crate) fn identity(tls: &UpstreamTls, client: Option<&ClientCert>, h2: bool) -> u64 {
    let client = client.map_or(0, |c| c.id);
    let mixed = (tls.id ^ (u64::from(h2) << 63))
        .rotate_left(17)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ client.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    if mixed == 0 {
        1
    } else {
        mixed
    }
}

impl TlsConfigs {
    /// The client config for these settings, built on first use.
    pub(crate) fn get(
        &self,
        tls: &UpstreamTls,
        client: Option<&ClientCert>,
        h2: bool,
    ) -> Result<Arc<ClientConfig>, Error> {
        let key = (tls.id, client.map_or(0, |c| c.id), h2);
        if let Some(config) = self.lock().get(&key) {
            return Ok(config.clone());
        }
        let config = Arc::new(build(tls, client, h2)?);
        let mut map = self.lock();
        if map.len() >= MAX_CONFIGS {
            map.clear();
        }
        map.insert(key, config.clone());
        Ok(config)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConfigKey, Arc<ClientConfig>>> {
        self.configs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn build(tls: &UpstreamTls, client: Option<&ClientCert>, h2: bool) -> Result<ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = if tls.subject_alt_names.is_empty() {
        WebPkiServerVerifier::builder_with_provider(tls.roots.clone(), provider.clone())
            .build()
            .map_err(|e| Error::General(format!("backend CA certificates: {e}")))?
    } else {
        Arc::new(SanVerifier {
            roots: tls.roots.clone(),
            sans: tls.subject_alt_names.clone(),
            provider: provider.clone(),
        })
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client {
        Some(c) => builder.with_client_cert_resolver(Arc::new(FixedClientCert(c.key.clone()))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Ok(config)
}

/// Presents the Gateway's certificate whenever a backend asks for one.
#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Chain to the policy's CAs, then one of the SANs (instead of the server name).
#[derive(Debug)]
struct SanVerifier {
    roots: Arc<RootCertStore>,
    sans: Arc<[SubjectAltName]>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for SanVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if san_matches(&cert, end_entity, &self.sans) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::InvalidCertificate(CertificateError::NotValidForName))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Whether the certificate carries one of `sans`.
fn san_matches(
    cert: &ParsedCertificate<'_>,
    der: &CertificateDer<'_>,
    sans: &[SubjectAltName],
) -> bool {
    let mut uris: Option<Vec<String>> = None;
    sans.iter().any(|san| match san {
        SubjectAltName::Hostname(h) => ServerName::try_from(h.as_str())
            .is_ok_and(|name| verify_server_name(cert, &name).is_ok()),
        SubjectAltName::Uri(u) => uris
            .get_or_insert_with(|| uri_sans(der))
            .iter()
            .any(|c| c == u),
    })
}

/// The URI entries of the certificate's subjectAltName extension.
fn uri_sans(der: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(dns: &[&str], uris: &[&str]) -> CertificateDer<'static> {
        let mut params =
            rcgen::CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
                .unwrap();
        for u in uris {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI((*u).try_into().unwrap()));
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn matches(der: &CertificateDer<'_>, sans: &[SubjectAltName]) -> bool {
        let parsed = ParsedCertificate::try_from(der).unwrap();
        san_matches(&parsed, der, sans)
    }

    #[test]
    fn hostname_and_uri_sans_match_what_the_certificate_carries() {
        let der = cert(
            &["abc.example.com", "*.wild.example.com"],
            &["spiffe://abc.example.com/test-identity"],
        );
        let host = |h: &str| SubjectAltName::Hostname(h.into());
        let uri = |u: &str| SubjectAltName::Uri(u.into());
        assert!(matches(&der, &[host("abc.example.com")]));
        assert!(matches(&der, &[host("x.wild.example.com")]));
        assert!(!matches(&der, &[host("a.b.wild.example.com")]));
        assert!(!matches(&der, &[host("dce.example.com")]));
        assert!(matches(
            &der,
            &[uri("spiffe://abc.example.com/test-identity")]
        ));
        assert!(!matches(
            &der,
            &[uri("spiffe://def.example.com/test-identity")]
        ));
        assert!(matches(
            &der,
            &[
                uri("spiffe://def.example.com/test-identity"),
                host("abc.example.com")
            ]
        ));
        assert!(!matches(
            &der,
            &[
                uri("spiffe://def.example.com/test-identity"),
                host("def.example.com")
            ]
        ));
    }

    #[test]
    fn identities_differ_by_client_certificate_and_protocol_and_are_never_zero() {
        let tls = UpstreamTls {
            id: 0,
            server_name: ServerName::try_from("abc.example.com").unwrap(),
            roots: Arc::new(RootCertStore::empty()),
            subject_alt_names: Arc::new([]),
        };
        let client = ClientCert {
            id: 7,
            key: Arc::new(CertifiedKey::new(
                vec![cert(&["client.example.com"], &[])],
                rustls::crypto::ring::sign::any_supported_type(
                    &rustls::pki_types::PrivateKeyDer::try_from(
                        rcgen::KeyPair::generate().unwrap().serialize_der(),
                    )
                    .unwrap(),
                )
                .unwrap(),
            )),
        };
        let a = identity(&tls, None, false);
        assert_ne!(a, 0);
        assert_ne!(a, identity(&tls, None, true));
        assert_ne!(a, identity(&tls, Some(&client), false));
        assert_ne!(
            identity(&tls, None, true),
            identity(&tls, Some(&client), true)
        );
    }
}
