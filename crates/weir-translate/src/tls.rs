//! Listener certificates: a `kubernetes.io/tls` Secret's PEM `tls.crt` and `tls.key` parsed into
//! a rustls `CertifiedKey`.

use std::sync::Arc;

use rustls::sign::CertifiedKey;
use weir_store::Secret;

/// Parse the Secret's `tls.crt` (chain, leaf first) and `tls.key`. The error text says what is
/// wrong, for the listener's ResolvedRefs message.
pub fn certified_key(secret: &Secret) -> Result<Arc<CertifiedKey>, String> {
    let crt = field(secret, "tls.crt")?;
    let key = field(secret, "tls.key")?;
    let certs = rustls_pemfile::certs(&mut &crt[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.crt is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("tls.crt holds no PEM certificate".into());
    }
    let key = rustls_pemfile::private_key(&mut &key[..])
        .map_err(|e| format!("tls.key is not valid PEM: {e}"))?
        .ok_or_else(|| "tls.key holds no PEM private key".to_string())?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("tls.key is not a supported private key: {e}"))?;
    let certified = CertifiedKey::new(certs, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(Arc::new(certified))
        }
        Err(e) => Err(format!("tls.key does not belong to tls.crt: {e}")),
    }
}

fn field(secret: &Secret, name: &str) -> Result<Vec<u8>, String> {
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(name)) {
        return Ok(v.0.clone());
    }
    if let Some(v) = secret.string_data.as_ref().and_then(|d| d.get(name)) {
        return Ok(v.as_bytes().to_vec());
    }
    Err(format!("missing {name}"))
}
