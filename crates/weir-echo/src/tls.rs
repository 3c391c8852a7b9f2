//! TLS listener configuration (from PEM strings) and the `tls` part of the echo JSON.

use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use base64::Engine as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConnection, WebPkiClientVerifier};
use rustls::{ProtocolVersion, RootCertStore, ServerConfig};
use serde::Serialize;

/// What the echo JSON reports about the TLS connection a request arrived on.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TlsInfo {
    pub version: String,
    #[serde(rename = "peerCertificates", skip_serializing_if = "Vec::is_empty")]
    pub peer_certificates: Vec<String>,
    #[serde(rename = "serverName")]
    pub server_name: String,
    #[serde(
        rename = "negotiatedProtocol",
        skip_serializing_if = "String::is_empty"
    )]
    pub negotiated_protocol: String,
    #[serde(rename = "cipherSuite")]
    pub cipher_suite: String,
}

impl TlsInfo {
    /// Reads the negotiated parameters of an established server connection.
    pub fn from_connection(conn: &ServerConnection) -> Self {
        let version = match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
            Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        };
        let cipher_suite = conn
            .negotiated_cipher_suite()
            .map(|suite| go_cipher_suite_name(suite.suite()))
            .unwrap_or_default();
        TlsInfo {
            version,
            peer_certificates: conn
                .peer_certificates()
                .unwrap_or_default()
                .iter()
                .map(|cert| pem_certificate(cert))
                .collect(),
            server_name: conn.server_name().unwrap_or_default().to_owned(),
            negotiated_protocol: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default(),
            cipher_suite,
        }
    }
}

/// The cipher suite name as Go's `tls.CipherSuiteName` spells it (rustls prefixes the
/// TLS 1.3 suites with `TLS13_`, Go with `TLS_`).
fn go_cipher_suite_name(suite: rustls::CipherSuite) -> String {
    match suite.as_str() {
        Some(name) => match name.strip_prefix("TLS13_") {
            Some(rest) => format!("TLS_{rest}"),
            None => name.to_owned(),
        },
        None => format!("0x{:04X}", u16::from(suite)),
    }
}

/// Encodes a DER certificate as a PEM block, 64 characters a line, like Go's `pem.Encode`.
pub fn pem_certificate(der: &CertificateDer<'_>) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn parse_certs(pem: &str, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {what}"))?;
    if certs.is_empty() {
        return Err(anyhow!("{what} holds no PEM certificate"));
    }
    Ok(certs)
}

/// Builds the server configuration from PEM strings (as found in TLS_SERVER_CERT,
/// TLS_SERVER_PRIVKEY and TLS_CLIENT_CACERTS). With `client_cas`, clients must present a
/// certificate that chains to one of them.
pub fn server_config(
    cert_pem: &str,
    key_pem: &str,
    client_cas: Option<&str>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = parse_certs(cert_pem, "TLS_SERVER_CERT")?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .context("parsing TLS_SERVER_PRIVKEY")?
        .ok_or_else(|| anyhow!("TLS_SERVER_PRIVKEY holds no PEM private key"))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?;
    let builder = match client_cas {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in parse_certs(pem, "TLS_CLIENT_CACERTS")? {
                roots
                    .add(cert)
                    .context("adding a TLS_CLIENT_CACERTS certificate")?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .context("building the client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("loading the server certificate and key")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_names_follow_go() {
        assert_eq!(
            go_cipher_suite_name(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256),
            "TLS_AES_128_GCM_SHA256"
        );
        assert_eq!(
            go_cipher_suite_name(rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        );
    }

    #[test]
    fn pem_wraps_at_64() {
        let der = CertificateDer::from(vec![0u8; 100]);
        let pem = pem_certificate(&der);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        // 100 bytes are 136 base64 characters: 64 + 64 + 8.
        let widths: Vec<usize> = lines[1..4].iter().map(|l| l.len()).collect();
        assert_eq!(widths, [64, 64, 8]);
        assert_eq!(lines[4], "-----END CERTIFICATE-----");
        assert_eq!(lines.len(), 5);
        assert!(pem.ends_with('\n'));
    }

    #[test]
    fn rejects_garbage() {
        assert!(server_config("nope", "nope", None).is_err());
    }

    #[test]
    fn accepts_generated_pair_with_client_cas() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = ck.cert.pem();
        let key = ck.signing_key.serialize_pem();
        assert!(server_config(&cert, &key, None).is_ok());
        assert!(server_config(&cert, &key, Some(&cert)).is_ok());
        assert!(server_config(&cert, "", None).is_err());
    }
}
