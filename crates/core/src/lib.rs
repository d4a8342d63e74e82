//! feast-core: the feast-rs object model, the Feast type system ([`types`]), entity-key
//! serialization and configuration, all wire- and storage-compatible with Feast 0.67.

pub mod types;
