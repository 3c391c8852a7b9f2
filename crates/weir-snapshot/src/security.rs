//! A SecurityPolicy, compiled (issue 23): what a route entry's requests must show before
//! they reach a backend. Translation resolves the Secrets and ConfigMaps it names and
//! validates everything; the proxy's `security` module runs it in phase 2, in this order:
//! CORS preflight → authentication (JWT, basic auth, API key) → authorization.
//!
//! Credentials (htpasswd hashes, API keys, HMAC secrets, key sets) sit in [`Redacted`], whose
//! `Debug` prints only a count: `/debug/snapshot` is the snapshot's `Debug`, and no secret may
//! reach it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::client_policy::Cidr;
use crate::filter::Cors;

/// The compiled SecurityPolicy of a route entry.
#[derive(Debug)]
pub struct Security {
    /// `namespace/name` of the policy (logs, metrics).
    pub name: Arc<str>,
    /// A hash of the policy's name and spec: keys its runtime state (JWKS caches, the basic
    /// auth verification cache) in the proxy's registry.
    pub id: u64,
    /// The policy could not be applied (a missing Secret, a bad JWKS...): it fails closed,
    /// every request of its routes is refused (500) with this reason (never a secret).
    pub deny: Option<Arc<str>>,
    pub cors: Option<Cors>,
    pub jwt: Option<JwtAuth>,
    pub basic: Option<BasicAuth>,
    pub api_key: Option<ApiKeyAuth>,
    pub authorization: Option<Authorization>,
}

impl Security {
    /// A policy that refuses every request (fail closed), for `why`.
    pub fn deny(name: Arc<str>, id: u64, why: impl Into<Arc<str>>) -> Self {
        Security {
            name,
            id,
            deny: Some(why.into()),
            cors: None,
            jwt: None,
            basic: None,
            api_key: None,
            authorization: None,
        }
    }
}

/// A value whose `Debug` shows only that it is there (credentials).
#[derive(Clone, Default)]
pub struct Redacted<T>(pub T);

impl<T: Len> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted: {} entries>", self.0.len())
    }
}

/// How many entries a redacted value holds (all its `Debug` shows).
pub trait Len {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K, V, S> Len for HashMap<K, V, S> {
    fn len(&self) -> usize {
        HashMap::len(self)
    }
}

impl<T> Len for Vec<T> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
}

impl<T: Len + ?Sized> Len for Arc<T> {
    fn len(&self) -> usize {
        T::len(self)
    }
}

impl<T> Len for [T] {
    fn len(&self) -> usize {
        <[T]>::len(self)
    }
}

/// `basicAuth`.
#[derive(Debug)]
pub struct BasicAuth {
    /// User name → htpasswd hash (`$2y$`/`$2b$`/`$2a$` bcrypt, `{SHA}`, `$apr1$`).
    pub users: Redacted<HashMap<String, String>>,
    /// Header the user name is forwarded in (`forwardUsernameHeader`).
    pub forward_username_header: Option<HeaderName>,
}

/// `apiKeyAuth`.
#[derive(Debug)]
pub struct ApiKeyAuth {
    /// (key, client ID): compared in constant time against every key.
    pub keys: Redacted<Vec<(Vec<u8>, Arc<str>)>>,
    /// Where keys are looked for, in order; the first present is the one checked.
    pub sources: Vec<KeySource>,
    pub forward_client_id_header: Option<HeaderName>,
    /// Remove the key from the request before forwarding it.
    pub sanitize: bool,
}

/// Where a credential is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A header; the value after `prefix` (empty: the whole value).
    Header { name: HeaderName, prefix: String },
    /// A query parameter.
    Param(String),
    /// A cookie.
    Cookie(String),
}

/// `jwt`.
#[derive(Debug)]
pub struct JwtAuth {
    /// A request without any token passes (one with a bad token does not).
    pub optional: bool,
    pub providers: Vec<JwtProvider>,
}

/// How far `exp` and `nbf` may be off (clock skew between the issuer and Weir).
pub const JWT_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// One `jwt.providers[]`.
#[derive(Debug)]
pub struct JwtProvider {
    pub name: Arc<str>,
    pub issuer: Option<String>,
    /// Empty: any audience.
    pub audiences: Vec<String>,
    pub keys: JwtKeys,
    /// (header, claim path split at `.`).
    pub claim_to_headers: Vec<(HeaderName, Vec<String>)>,
    /// Where the token is read from (default: `Authorization: Bearer`).
    pub sources: Vec<KeySource>,
}

/// Where a provider's verification keys come from.
#[derive(Debug)]
pub enum JwtKeys {
    /// `localJWKS`, parsed in translation.
    Local(Redacted<Arc<[JwtKey]>>),
    /// `remoteJWKS.uri`, fetched (and re-fetched after `cache_duration`) by the proxy.
    Remote {
        uri: Arc<str>,
        cache_duration: Duration,
        /// `remoteJWKS.backendRefs`: the fetch goes to this Service port's endpoints (over
        /// TLS when a BackendTLSPolicy targets it); the URI gives the path and the Host.
        /// `None`: to the URI's host.
        backend: Option<Arc<crate::backend::Upstream>>,
    },
}

/// One verification key of a key set.
#[derive(Clone)]
pub struct JwtKey {
    pub kid: Option<String>,
    /// The algorithms this key verifies (never `none`).
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// Parse a JWKS document into verification keys. Symmetric (`oct`, HS256/384/512) keys
/// only when `allow_hmac` (a local key set: a remote one could hand out a key anyone can
/// sign with). Keys of other types or curves are an error, as is a set without keys.
pub fn parse_jwks(json: &str, allow_hmac: bool) -> Result<Vec<JwtKey>, String> {
    let set: JwkSet =
        serde_json::from_str(json).map_err(|e| format!("not a JSON Web Key Set: {e}"))?;
    if set.keys.is_empty() {
        return Err("the key set has no keys".into());
    }
    let mut out = Vec::with_capacity(set.keys.len());
    for (i, jwk) in set.keys.iter().enumerate() {
        let family: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => {
                    return Err(format!(
                        "key {i}: elliptic curve not supported (P-256, P-384)"
                    ))
                }
            },
            AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
                EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
                _ => return Err(format!("key {i}: OKP curve not supported (Ed25519)")),
            },
            AlgorithmParameters::OctetKey(_) if allow_hmac => {
                vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]
            }
            AlgorithmParameters::OctetKey(_) => {
                return Err(format!(
                    "key {i}: a symmetric (oct) key is only allowed in a local key set"
                ))
            }
        };
        let algorithms = match jwk.common.key_algorithm {
            None => family,
            Some(a) => {
                let named = key_algorithm(a).filter(|a| family.contains(a));
                match named {
                    Some(a) => vec![a],
                    None => {
                        return Err(format!(
                            "key {i}: algorithm {a:?} does not fit its key type or is not \
                             supported"
                        ))
                    }
                }
            }
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {i}: {e}"))?;
        out.push(JwtKey {
            kid: jwk.common.key_id.clone(),
            algorithms,
            key,
        });
    }
    Ok(out)
}

fn key_algorithm(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// `authorization`.
#[derive(Debug)]
pub struct Authorization {
    /// `defaultAction: Allow` (else Deny, Envoy Gateway's default).
    pub default_allow: bool,
    pub rules: Vec<AuthorizationRule>,
}

/// One rule: it matches when every principal part it has matches (each part: any of its
/// values), the method is one of its operation's and the path matches one of its paths;
/// the first match decides.
#[derive(Debug)]
pub struct AuthorizationRule {
    pub name: Arc<str>,
    pub allow: bool,
    /// Empty: any method.
    pub methods: Vec<Method>,
    /// `operation.paths` (Weir's extension): the normalised request path (the one routes
    /// match on) matches one of these. Empty: any path.
    pub paths: Vec<crate::route::PathMatch>,
    /// Empty: any client.
    pub client_cidrs: Vec<Cidr>,
    pub jwt: Option<JwtPrincipal>,
    /// (header, values): the header must have one of the values.
    pub headers: Vec<(HeaderName, Vec<String>)>,
}

/// The JWT part of a principal: the token verified by `provider` must carry every claim
/// (one of its values) and every scope.
#[derive(Debug)]
pub struct JwtPrincipal {
    pub provider: Arc<str>,
    pub claims: Vec<ClaimMatch>,
    pub scopes: Vec<String>,
}

#[derive(Debug)]
pub struct ClaimMatch {
    /// The claim's path (`user.roles` → `["user", "roles"]`).
    pub path: Vec<String>,
    /// `StringArray`: the claim is an array; one of its items must be one of `values`.
    pub array: bool,
    pub values: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_debug_shows_no_value() {
        let mut users = HashMap::new();
        users.insert("alice".to_string(), "{SHA}secret-hash".to_string());
        let b = BasicAuth {
            users: Redacted(users),
            forward_username_header: None,
        };
        let dump = format!("{b:#?}");
        assert!(
            !dump.contains("secret-hash") && !dump.contains("alice"),
            "{dump}"
        );
        assert!(dump.contains("<redacted: 1 entries>"));
    }

    #[test]
    fn jwks_parsing_refuses_what_it_must() {
        let oct =
            r#"{"keys":[{"kty":"oct","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0","kid":"h"}]}"#;
        assert!(parse_jwks(oct, false).unwrap_err().contains("symmetric"));
        let keys = parse_jwks(oct, true).unwrap();
        assert_eq!(
            keys[0].algorithms,
            [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]
        );
        assert!(format!("{:?}", keys[0]).find("c2Vj").is_none());
        assert!(parse_jwks(r#"{"keys":[]}"#, true).is_err());
        assert!(parse_jwks("nope", true).is_err());
        let ed = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","alg":"EdDSA"}]}"#;
        assert_eq!(
            parse_jwks(ed, false).unwrap()[0].algorithms,
            [Algorithm::EdDSA]
        );
        let wrong = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","alg":"RS256"}]}"#;
        assert!(parse_jwks(wrong, false).is_err());
    }
}
