//! Frontend client-certificate validation of HTTPS listeners (Gateway
//! `spec.tls.frontend`): the trust anchors and mode of one (Gateway, port), and the rustls
//! verifier built from them once, when the snapshot is built.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

/// `validation.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMode {
    /// Connections only with a client certificate that chains to the CAs (the API default).
    AllowValidOnly,
    /// A certificate is asked for, but connections without one, or with one that fails
    /// verification, are accepted too (authorization is left to the backend).
    AllowInsecureFallback,
}

/// Client-certificate validation for the HTTPS listeners of one Gateway port.
#[derive(Debug)]
pub struct ClientAuth {
    pub mode: ClientAuthMode,
    /// The trust anchors (DER), from the CA ConfigMaps' `ca.crt`.
    pub ca_certs: Arc<[CertificateDer<'static>]>,
    /// Verifies the client's certificate against `ca_certs`, as `mode` asks.
    pub verifier: Arc<dyn ClientCertVerifier>,
}

impl ClientAuth {
    /// Build the verifier. Fails when a CA certificate is not one webpki can use as a trust
    /// anchor (the error says why).
    pub fn new(
        mode: ClientAuthMode,
        ca_certs: Vec<CertificateDer<'static>>,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        for cert in &ca_certs {
            roots
                .add(cert.clone())
                .map_err(|e| format!("CA certificate is not usable as a trust anchor: {e}"))?;
        }
        let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let strict = builder
            .build()
            .map_err(|e| format!("no usable CA certificate: {e}"))?;
        let verifier: Arc<dyn ClientCertVerifier> = match mode {
            ClientAuthMode::AllowValidOnly => strict,
            ClientAuthMode::AllowInsecureFallback => Arc::new(InsecureFallback { inner: strict }),
        };
        Ok(Self {
            mode,
            ca_certs: ca_certs.into(),
            verifier,
        })
    }

    /// Whether two validations are the same (same mode and trust anchors), so one TLS
    /// connection verified for one may serve requests of the other.
    pub fn same_as(&self, other: &ClientAuth) -> bool {
        self.mode == other.mode && self.ca_certs == other.ca_certs
    }
}

/// AllowInsecureFallback: ask for a certificate (so clients that have one present it), do not
/// require one, and accept one that does not verify. The handshake signatures are still
/// checked, so a presented certificate's key is proven either way.
#[derive(Debug)]
struct InsecureFallback {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for InsecureFallback {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Accepted whether or not it verifies: that is what the mode means.
        let _ = self
            .inner
            .verify_client_cert(end_entity, intermediates, now);
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
