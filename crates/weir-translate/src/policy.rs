//! Policies: what every policy kind shares (attachment, precedence, status) lives in
//! [`attach`]; each kind is one module that validates its spec, compiles it to a snapshot
//! type and uses `attach` for the rest (today: BackendTLSPolicy, `crate::backendtls`).

pub mod attach;
pub mod attached;
pub mod backend;
pub mod client;
pub mod extension;
#[cfg(test)]
pub mod fixture;
pub mod pending;
pub mod security;
pub mod xbackend;
