//! The end-to-end tests, one module a file, in one test binary: `cargo test -p weir-e2e --test
//! e2e rate_limit::` runs one file's tests (real weir and weir-echo processes, real sockets).

mod access_log;
mod backend_policy;
mod cli;
mod client_policy;
mod compression_cache;
mod extension_policy;
mod fault;
mod gateway_addresses;
mod health_check;
mod hot_reload;
mod inference_conformance;
mod keepalive_memory;
#[path = "kube.rs"]
mod kube_mode;
mod model_name;
mod per_core;
mod quickstart;
mod rate_limit;
mod route_retry;
mod security;
mod security_paths_jwks;
mod session;
mod tcproute;
mod tracing;
mod udproute;
mod xbackend_policy;
