//! TLS termination: one rustls `ServerConfig` per TLS socket, whose certificate resolver
//! reads the live snapshot at every handshake, so certificates rotate with a swap.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use weir_snapshot::{SnapshotHandle, TlsSettings};

pub(crate) mod client_auth;

/// Picks the certificate for a handshake from the current snapshot's socket config.
struct SnapshotCertResolver {
    handle: Arc<SnapshotHandle>,
    address: Option<IpAddr>,
    port: u16,
}

impl std::fmt::Debug for SnapshotCertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCertResolver")
            .field("address", &self.address)
            .field("port", &self.port)
            .finish()
    }
}

impl ResolvesServerCert for SnapshotCertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snapshot = self.handle.load();
        let socket = snapshot.socket(self.address, self.port)?;
        // rustls hands over SNI names lowercased (DnsName normalises).
        let cert = socket.certificate_for(hello.server_name());
        if cert.is_none() {
            tracing::debug!(
                sni = hello.server_name(),
                port = self.port,
                "no certificate for TLS handshake"
            );
        }
        cert
    }
}

/// The TLS configurations of one socket: certificates from the snapshot, ALPN h2 and
/// http/1.1; `plain` asks for no client certificate, [`SocketTls::with_client_auth`] builds
/// one that does (see `tls/client_auth.rs`).
pub(crate) struct SocketTls {
    provider: Arc<rustls::crypto::CryptoProvider>,
    resolver: Arc<dyn ResolvesServerCert>,
    pub(crate) plain: Arc<ServerConfig>,
}

impl SocketTls {
    pub(crate) fn new(
        provider: &Arc<rustls::crypto::CryptoProvider>,
        handle: Arc<SnapshotHandle>,
        address: Option<IpAddr>,
        port: u16,
    ) -> Result<Self, rustls::Error> {
        let resolver: Arc<dyn ResolvesServerCert> = Arc::new(SnapshotCertResolver {
            handle,
            address,
            port,
        });
        let mut plain = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        plain.alpn_protocols = alpn();
        Ok(Self {
            provider: provider.clone(),
            resolver,
            plain: Arc::new(plain),
        })
    }
}

impl SocketTls {
    /// The socket's TLS configuration under a ClientTrafficPolicy's `tls` settings
    /// (versions, cipher suites, ALPN), asking for a client certificate with `auth` when
    /// given. Built once per socket policy (without `auth`), or per handshake on validating
    /// sockets, as [`SocketTls::with_client_auth`] is.
    pub(crate) fn with_settings(
        &self,
        settings: &TlsSettings,
        auth: Option<&weir_snapshot::ClientAuth>,
    ) -> Result<Arc<ServerConfig>, rustls::Error> {
        let provider = settings
            .crypto_provider(&self.provider)
            .map_err(rustls::Error::General)?;
        let versions = settings
            .protocol_versions()
            .map_err(rustls::Error::General)?;
        let builder =
            ServerConfig::builder_with_provider(provider).with_protocol_versions(&versions)?;
        let mut config = match auth {
            Some(auth) => builder.with_client_cert_verifier(auth.verifier.clone()),
            None => builder.with_no_client_auth(),
        }
        .with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = if settings.alpn_protocols.is_empty() {
            alpn()
        } else {
            settings
                .alpn_protocols
                .iter()
                .map(|p| p.as_bytes().to_vec())
                .collect()
        };
        Ok(Arc::new(config))
    }
}

fn alpn() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec(), b"http/1.1".to_vec()]
}
