//! feast-core: the ground every feast-rs service stands on — Feast's object model over its
//! protos, the type system, entity keys, `feature_store.yaml`, feature-repository
//! definitions, and the registry with its diff/plan.

pub mod error;
pub mod model;
#[allow(deprecated)] // `Registry.project_metadata` is deprecated in Feast but still written.
pub mod registry;
