//! Client-certificate validation on the downstream side (Gateway `spec.tls.frontend`).
//!
//! rustls verifies client certificates per `ServerConfig`, while the validation belongs to
//! the listener the SNI picks (one socket can carry listeners of several Gateways, each
//! with its own CAs). So on sockets where some listener validates, the proxy reads the
//! ClientHello first (`LazyConfigAcceptor`), picks the listener's [`ClientAuth`] by SNI
//! (without SNI: the strictest on the socket) and finishes the handshake with a
//! `ServerConfig` asking for a client certificate with that listener's verifier. The
//! connection remembers which validation it passed, and requests whose Host belongs to a
//! listener with another validation get 421 (see `request::phase1::check_misdirected`), so
//! connection reuse cannot skip a listener's validation.
//!
//! The `ServerConfig` is built per handshake (a few allocations; the verifier with its
//! parsed trust anchors comes ready-made from the snapshot). Each has its own session
//! cache, so a session resumed under one validation never skips another.

use std::sync::Arc;
use std::time::Duration;

use rustls::server::Acceptor;
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;
use weir_snapshot::{ClientAuth, SnapshotHandle, TlsSettings};

use super::{alpn, SocketTls};

/// Why a handshake on a validating socket did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("TLS handshake timed out")]
    Timeout,
    #[error("TLS handshake failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS configuration for client validation could not be built: {0}")]
    Config(#[from] rustls::Error),
}

impl SocketTls {
    /// A `ServerConfig` that asks for a client certificate and checks it with `auth`.
    pub(crate) fn with_client_auth(
        &self,
        auth: &ClientAuth,
    ) -> Result<Arc<ServerConfig>, rustls::Error> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(auth.verifier.clone())
            .with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = alpn();
        Ok(Arc::new(config))
    }

    /// Terminate TLS on a socket where some listener validates client certificates: read
    /// the ClientHello, choose the validation by SNI from the current snapshot, finish the
    /// handshake. Returns the stream and the validation it passed (`None`: the listener asks
    /// for no certificate).
    pub(crate) async fn accept_validating(
        &self,
        handle: &SnapshotHandle,
        key: (Option<std::net::IpAddr>, u16),
        tcp: TcpStream,
        timeout: Duration,
        policy: Option<&TlsSettings>,
    ) -> Result<(TlsStream<TcpStream>, Option<Arc<ClientAuth>>), HandshakeError> {
        let handshake = async {
            let start = LazyConfigAcceptor::new(Acceptor::default(), tcp).await?;
            let auth = {
                let snapshot = handle.load();
                let sni = start
                    .client_hello()
                    .server_name()
                    .map(str::to_ascii_lowercase);
                snapshot
                    .socket(key.0, key.1)
                    .and_then(|s| s.client_auth_for(sni.as_deref()).cloned())
            };
            let config = match (&auth, policy) {
                (Some(auth), None) => self.with_client_auth(auth)?,
                (None, None) => self.plain.clone(),
                // A ClientTrafficPolicy's `tls` settings apply to every listener's handshake.
                (auth, Some(settings)) => self.with_settings(settings, auth.as_deref())?,
            };
            let stream = start.into_stream(config).await?;
            Ok::<_, HandshakeError>((stream, auth))
        };
        tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| HandshakeError::Timeout)?
    }
}
