//! The proxy on real sockets: hand-built snapshots, an in-process echo backend, real
//! HTTP/1.1, h2c and TLS clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod backend_policy;
mod backend_tls;
mod boundaries;
mod cache;
mod client_auth;
mod client_policy;
mod compression;
mod errors;
mod ext_auth;
mod ext_proc;
mod extended;
mod fault;
mod health;
mod inference;
mod lb;
mod lifecycle;
mod limits;
mod origin;
mod rate_limit;
mod routing;
mod security;
mod security_authz;
mod security_jwks;
mod tcp;
mod tls;
mod tls_mixed;
mod udp;
