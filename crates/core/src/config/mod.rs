//! `feature_store.yaml`: Feast's `RepoConfig`, parsed into typed Rust.

#[allow(dead_code)]
mod env;
#[allow(dead_code)]
mod error;

pub use error::{ConfigError, ConfigErrorKind, Diagnostic};
