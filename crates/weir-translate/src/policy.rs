//! Policies: what every policy kind shares lives in [`attach`] (targets, precedence, the
//! ancestors status) and [`attached`] (the one path from evaluated policies to placed ones
//! and their statuses); each kind is one module that validates its spec, compiles it to a
//! snapshot type and gives `attached` its evaluate and compiled value (BackendTLSPolicy,
//! `crate::backendtls`, still uses `attach` directly).

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
