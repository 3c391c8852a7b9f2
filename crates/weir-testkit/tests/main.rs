//! weir-testkit's integration tests, one module a file, in one test binary.

mod apiserver;
mod kinds;
