//! What Weir's own outbound connections share: the upstream pool, the gRPC clients
//! (ext_proc streams, ext_authz) and the Redis pool of the global rate limit all open TCP
//! connections the same way; the Redis pool and the JWKS fetches verify their servers with
//! the same kind of TLS client. Each caller turns the error into its own.

use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use tokio::net::{TcpStream, ToSocketAddrs};

/// Why [`connect_tcp`] got no connection (its text says what happened, not to what: the
/// caller puts the address in front).
#[derive(Debug, thiserror::Error)]
pub(crate) enum TcpConnectError {
    /// None within the limit (the attempt is abandoned).
    #[error("no connection within {0:?}")]
    Timeout(Duration),
    /// The connect failed: refused, unreachable, the name not resolved.
    #[error(transparent)]
    Io(std::io::Error),
}

/// A TCP connection to `addr` within `limit`, with TCP_NODELAY set: requests, messages and
/// commands are small writes that must not wait for an ACK. A failure to set it is ignored
/// (the connection works without it).
pub(crate) async fn connect_tcp(
    addr: impl ToSocketAddrs,
    limit: Duration,
) -> Result<TcpStream, TcpConnectError> {
    let tcp = tokio::time::timeout(limit, TcpStream::connect(addr))
        .await
        .map_err(|_| TcpConnectError::Timeout(limit))?
        .map_err(TcpConnectError::Io)?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// The TLS client of Weir's own connections (Redis, JWKS fetches): servers verified against
/// the public roots (Mozilla's, built in) when `public_roots`, and against the certificates
/// `ca`; no client certificate; no ALPN (HTTP/1.1, RESP).
pub(crate) fn client_tls(
    provider: Arc<CryptoProvider>,
    public_roots: bool,
    ca: &[CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    if public_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for cert in ca {
        roots
            .add(cert.clone())
            .map_err(|e| format!("a CA certificate is not usable: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connects_with_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tcp = connect_tcp(addr, Duration::from_secs(5)).await.unwrap();
        assert!(tcp.nodelay().unwrap());
    }

    #[tokio::test]
    async fn a_refused_connect_is_an_io_error() {
        // A port just freed: nothing listens on it.
        let addr = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        match connect_tcp(addr, Duration::from_secs(5)).await {
            Err(TcpConnectError::Io(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused)
            }
            other => panic!("expected a refused connect, got {other:?}"),
        }
    }

    #[test]
    fn a_ca_that_is_no_certificate_is_refused() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        assert!(client_tls(provider.clone(), true, &[]).is_ok());
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        let err = client_tls(provider, false, &[junk]).unwrap_err();
        assert!(err.starts_with("a CA certificate is not usable"), "{err}");
    }
}
