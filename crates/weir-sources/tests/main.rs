//! weir-sources' integration tests, one module a file, in one test binary.

mod crds;
#[path = "kube.rs"]
mod kube_source;
mod rbac;
mod watch;
