//! feast-core: the feast-rs object model, the Feast type system ([`types`], [`value`]),
//! entity-key serialization and configuration, all wire- and storage-compatible with
//! Feast 0.67.

pub mod types;
pub mod value;
