//! Where Weir's objects come from. Each source turns what it reads into a
//! [`weir_store::Store`] and hands whole stores to the rest of the system; nothing else in
//! Weir touches files or the Kubernetes API.
//!
//! - [`file`]: manifests in a directory, watched for changes. The file source behaves like a
//!   small API server: it applies the CRD defaults, assigns `metadata.uid`,
//!   `metadata.creationTimestamp` and `metadata.generation`, and keeps serving the last good
//!   version of an object when a newer one is broken.
//! - [`kube`]: the Kubernetes API through kube-runtime watchers, plus the status writer and
//!   the leader-election Lease that decides which replica writes status.
//!
//! This crate must not interpret objects beyond what an API server would do (defaults,
//! identity, schema-level validation by deserialization): deciding what is valid routing is
//! the translator's job.

pub mod file;
pub mod kube;

pub use crate::kube::{
    watch_service_addresses, KubeError, KubeSource, LeaderElection, StatusUpdate, StatusWriter,
};
pub use file::{load_dir, FileError, FileSource, LoadReport, SourceError};
