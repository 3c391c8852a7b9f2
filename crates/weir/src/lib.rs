//! Weir's binary crate: command line, wiring and the admin server. It owns no routing logic:
//! sources (`weir-sources`) fill a store (`weir-store`), the translator (`weir-translate`)
//! turns it into a snapshot and statuses, the snapshot is swapped into the proxy
//! (`weir-proxy`). This crate connects those stages and serves `/metrics`, `/healthz`,
//! `/readyz` and `/status`.
//!
//! The app is a library so tests can start it in-process and learn its bound addresses.

pub mod admin;
pub mod app;
pub mod check;
pub mod cli;
pub mod control;
pub mod kube_mode;
pub mod logging;
pub mod metrics;
