//! What Weir's own outbound connections share: the upstream pool, the gRPC clients
//! (ext_proc streams, ext_authz) and the Redis pool of the global rate limit all open TCP
//! connections the same way. Each caller turns the error into its own.

use std::time::Duration;

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
}
