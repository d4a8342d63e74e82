//! feast-online: the online side of feast-rs.
//!
//! The online stores: the [`store::OnlineStore`] trait the online server reads and writes
//! through, [`store::sqlite::SqliteOnlineStore`], which shares Feast's SQLite online-store
//! file (PROTOCOLS.md §6.3) with Feast itself, and [`store::redis::RedisOnlineStore`], which
//! shares Feast's Redis layout (§6.2): what Feast materializes, feast-rs reads, and what
//! feast-rs writes, Feast reads. [`open_online_store`] opens the one a `feature_store.yaml`
//! configures.
//!
//! [`serving`] answers Feast's `get-online-features` request from a cached registry
//! snapshot and an online store; [`http`] serves it over HTTP as Feast's feature server.

pub mod authz;
pub mod grpc;
pub mod http;
pub mod materialize;
pub mod metrics;
pub mod serving;
pub mod store;
pub mod write;

pub use store::redis::RedisOnlineStore;
pub use store::sqlite::SqliteOnlineStore;
pub use store::{
    FeatureRow, OnlineStore, OnlineStoreError, ReadSpec, TableRef, WriteRow, open_online_store,
    serialize_entity_key,
};
