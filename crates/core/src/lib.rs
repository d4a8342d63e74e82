//! feast-core: the feast-rs object model, the Feast type system ([`types`], [`value`]),
//! entity-key serialization ([`entity_key`]) and configuration, all wire- and
//! storage-compatible with Feast 0.67.

pub mod entity_key;
pub mod types;
pub mod value;
