//! feast-online: the online side of feast-rs.
//!
//! This first slice holds the online stores: the [`store::OnlineStore`] trait the online
//! server will read and write through, and [`store::sqlite::SqliteOnlineStore`], which
//! shares Feast's SQLite online-store file (PROTOCOLS.md §6.3) with Feast itself: what Feast
//! materializes, feast-rs reads, and what feast-rs writes, Feast reads.
//!
//! [`serving`] answers Feast's `get-online-features` request from a cached registry
//! snapshot and an online store; [`http`] serves it over HTTP as Feast's feature server.

pub mod grpc;
pub mod http;
pub mod metrics;
pub mod serving;
pub mod store;
pub mod write;

pub use store::sqlite::SqliteOnlineStore;
pub use store::{
    FeatureRow, OnlineStore, OnlineStoreError, ReadSpec, TableRef, WriteRow, serialize_entity_key,
};
