//! External authorization settings → [`weir_snapshot::ExtAuth`]: the HTTPRoute
//! `ExternalAuth` filter (GEP-1494) here, and SecurityPolicy `extAuth` (Envoy Gateway's
//! field names) through the same [`compile_ext_auth`]. The caller resolves the auth
//! service's backendRef (ReferenceGrant, ResolvedRefs) and hands over the target.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use weir_snapshot::{BackendTarget, ExtAuth, ExtAuthProtocol};
use weir_store::gw::httproutes::{
    HttpRouteRulesFiltersExternalAuth, HttpRouteRulesFiltersExternalAuthProtocol as Protocol,
};

use crate::backend::BackendRefSpec;

/// One ext auth configuration, whichever API it came from.
#[derive(Debug, Clone, Default)]
pub struct ExtAuthConfig<'a> {
    /// gRPC (`envoy.service.auth.v3.Authorization/Check`) rather than plain HTTP.
    pub grpc: bool,
    /// HTTP: prepended to the client's path (`http.path`).
    pub path_prefix: &'a str,
    /// Client headers sent (`allowedHeaders`, `headersToExtAuth`); `None` or empty: the
    /// protocol's default (HTTP: Host, Method, Path, Content-Length, Authorization; gRPC:
    /// all).
    pub allowed_headers: Option<&'a [String]>,
    /// HTTP: the auth answer's headers copied to the upstream request. `None`: all but
    /// Host (the filter's `allowedResponseHeaders` empty or unset). A SecurityPolicy passes
    /// `Some(headersToBackend)`, where an empty list copies nothing, as in Envoy Gateway.
    pub response_headers: Option<&'a [String]>,
    /// Bytes of the client body to send (`forwardBody.maxSize`,
    /// `bodyToExtAuth.maxRequestBytes`); 0: none.
    pub body_max: i64,
    /// `timeout`; `None`: [`weir_snapshot::ext_auth::DEFAULT_TIMEOUT`].
    pub timeout: Option<Duration>,
    /// `failOpen` (the filter always fails closed).
    pub fail_open: bool,
}

impl<'a> ExtAuthConfig<'a> {
    /// The HTTPRoute filter's settings. The filter has no timeout or failOpen: Envoy
    /// Gateway's default timeout, and closed ("this filter MUST fail closed").
    pub fn from_filter(f: &'a HttpRouteRulesFiltersExternalAuth) -> Self {
        let grpc = matches!(f.protocol, Protocol::Grpc);
        let http = f.http.as_ref();
        let allowed_headers = if grpc {
            f.grpc.as_ref().and_then(|g| g.allowed_headers.as_deref())
        } else {
            http.and_then(|h| h.allowed_headers.as_deref())
        };
        Self {
            grpc,
            path_prefix: http.and_then(|h| h.path.as_deref()).unwrap_or(""),
            allowed_headers,
            response_headers: http
                .and_then(|h| h.allowed_response_headers.as_deref())
                .filter(|l| !l.is_empty()),
            body_max: f
                .forward_body
                .as_ref()
                .and_then(|b| b.max_size)
                .unwrap_or(0),
            timeout: None,
            fail_open: false,
        }
    }
}

/// The filter's backendRef as the route's backend resolver takes it.
pub fn filter_backend_ref(f: &HttpRouteRulesFiltersExternalAuth) -> BackendRefSpec<'_> {
    let r = &f.backend_ref;
    BackendRefSpec {
        group: r.group.as_deref(),
        kind: r.kind.as_deref(),
        name: &r.name,
        namespace: r.namespace.as_deref(),
        port: r.port,
    }
}

/// Compile one ext auth configuration against its (resolved or not) auth service. An
/// unresolved service still compiles: requests then fail closed (500). `Err` says what is
/// invalid in the settings.
pub fn compile_ext_auth(
    config: &ExtAuthConfig<'_>,
    service: BackendTarget,
) -> Result<ExtAuth, String> {
    let names = |list: &[String], what: &str| -> Result<Arc<[HeaderName]>, String> {
        list.iter()
            .map(|n| {
                HeaderName::from_bytes(n.trim().as_bytes())
                    .map_err(|_| format!("{what}: {n:?} is not a valid header name"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Arc::from)
    };
    let allowed_headers = match config.allowed_headers {
        Some(l) if !l.is_empty() => Some(names(l, "allowedHeaders")?),
        _ => None,
    };
    let body_max = u32::try_from(config.body_max).map_err(|_| {
        format!(
            "forwardBody.maxSize {} is not between 0 and 2^32-1",
            config.body_max
        )
    })?;
    let timeout = config
        .timeout
        .unwrap_or(weir_snapshot::ext_auth::DEFAULT_TIMEOUT);
    if timeout.is_zero() {
        return Err("timeout must be positive".into());
    }
    let protocol = if config.grpc {
        ExtAuthProtocol::Grpc
    } else {
        let prefix = config.path_prefix.trim_end_matches('/');
        if !prefix.is_empty()
            && (!prefix.starts_with('/')
                || !http::uri::PathAndQuery::try_from(prefix).is_ok_and(|p| p.query().is_none())
                || prefix.contains(['[', ']', '#']))
        {
            return Err(format!(
                "http.path {:?} must be an absolute path without query",
                config.path_prefix
            ));
        }
        ExtAuthProtocol::Http {
            path_prefix: prefix.into(),
            response_headers: config
                .response_headers
                .map(|l| names(l, "allowedResponseHeaders"))
                .transpose()?,
        }
    };
    let mut auth = ExtAuth {
        id: 0,
        service,
        protocol,
        allowed_headers,
        body_max,
        timeout,
        fail_open: config.fail_open,
    };
    auth.id = auth.compute_id();
    Ok(auth)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(yaml: &str) -> HttpRouteRulesFiltersExternalAuth {
        match serde_norway::from_str(yaml) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        }
    }

    fn invalid() -> BackendTarget {
        BackendTarget::Invalid("test".into())
    }

    #[test]
    fn http_filter_defaults_and_lists() {
        let f = filter(
            "protocol: HTTP\nbackendRef: {name: auth, port: 9002}\nhttp: {path: /auth/, allowedHeaders: [X-Token], allowedResponseHeaders: [X-User]}\nforwardBody: {maxSize: 16}\n",
        );
        let a = compile_ext_auth(&ExtAuthConfig::from_filter(&f), invalid())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!a.fail_open, "the filter fails closed");
        assert_eq!(a.timeout, weir_snapshot::ext_auth::DEFAULT_TIMEOUT);
        assert_eq!(a.body_max, 16);
        assert_eq!(
            a.allowed_headers.as_deref(),
            Some(&[HeaderName::from_static("x-token")][..])
        );
        match &a.protocol {
            ExtAuthProtocol::Http {
                path_prefix,
                response_headers,
            } => {
                assert_eq!(&**path_prefix, "/auth");
                assert_eq!(
                    response_headers.as_deref(),
                    Some(&[HeaderName::from_static("x-user")][..])
                );
            }
            ExtAuthProtocol::Grpc => panic!("not gRPC"),
        }
        // An empty allowedResponseHeaders copies everything (None), as GEP-1494 says.
        let f = filter("protocol: HTTP\nbackendRef: {name: auth, port: 9002}\nhttp: {allowedResponseHeaders: []}\n");
        let a = compile_ext_auth(&ExtAuthConfig::from_filter(&f), invalid())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            a.protocol,
            ExtAuthProtocol::Http {
                response_headers: None,
                ..
            }
        ));
        assert_eq!(a.body_max, 0);
    }

    #[test]
    fn grpc_filter_takes_its_own_allowed_headers() {
        let f = filter("protocol: GRPC\nbackendRef: {name: auth, port: 9001}\ngrpc: {allowedHeaders: [x-a, x-b]}\nhttp: {allowedHeaders: [x-c]}\n");
        let a = compile_ext_auth(&ExtAuthConfig::from_filter(&f), invalid())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(a.is_grpc());
        assert_eq!(a.allowed_headers.map(|l| l.len()), Some(2));
    }

    #[test]
    fn bad_settings_are_refused() {
        for (yaml, what) in [
            ("protocol: HTTP\nbackendRef: {name: a, port: 1}\nhttp: {path: '/[]'}\n", "http.path"),
            ("protocol: HTTP\nbackendRef: {name: a, port: 1}\nhttp: {path: 'auth'}\n", "http.path"),
            ("protocol: HTTP\nbackendRef: {name: a, port: 1}\nhttp: {allowedHeaders: ['bad header']}\n", "allowedHeaders"),
            ("protocol: HTTP\nbackendRef: {name: a, port: 1}\nforwardBody: {maxSize: -1}\n", "maxSize"),
        ] {
            let f = filter(yaml);
            let err = compile_ext_auth(&ExtAuthConfig::from_filter(&f), invalid()).err();
            assert!(err.as_deref().is_some_and(|e| e.contains(what)), "{yaml}: {err:?}");
        }
    }

    #[test]
    fn the_id_follows_the_settings() {
        let cfg = ExtAuthConfig::default();
        let a = compile_ext_auth(&cfg, invalid()).unwrap_or_else(|e| panic!("{e}"));
        let b = compile_ext_auth(&cfg, invalid()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.id, b.id);
        let c = compile_ext_auth(
            &ExtAuthConfig {
                fail_open: true,
                ..cfg
            },
            invalid(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(a.id, c.id);
    }
}
