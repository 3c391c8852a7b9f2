//! TLS termination: one rustls `ServerConfig` per TLS socket, whose certificate resolver
//! reads the live snapshot at every handshake, so certificates rotate with a swap.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use weir_snapshot::SnapshotHandle;

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

/// The TLS configuration of one socket: certificates from the snapshot, ALPN h2 and
/// http/1.1.
pub(crate) fn server_config(
    provider: &Arc<rustls::crypto::CryptoProvider>,
    handle: Arc<SnapshotHandle>,
    address: Option<IpAddr>,
    port: u16,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SnapshotCertResolver {
            handle,
            address,
            port,
        }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
