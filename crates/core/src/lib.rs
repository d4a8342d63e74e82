//! feast-core: the ground every feast-rs service stands on — Feast's object model over its
//! protos ([`model`]), the type system ([`types`], [`value`]), entity keys ([`entity_key`]),
//! `feature_store.yaml` ([`config`]), feature-repository definitions ([`repo`]) and the
//! registry with its diff/plan ([`registry`]), all wire- and storage-compatible with Feast 0.67.

pub mod arrow_value;
pub mod config;
pub mod entity_key;
pub mod error;
pub mod json;
pub mod model;
#[allow(deprecated)] // `Registry.project_metadata` is deprecated in Feast but still written.
pub mod registry;
pub mod repo;
pub mod types;
pub mod value;
pub mod version;
