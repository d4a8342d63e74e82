//! feast-online: the online side of feast-rs.
//!
//! This first slice holds the online stores: the [`store::OnlineStore`] trait the online
//! server will read and write through, and [`store::sqlite::SqliteOnlineStore`], which
//! shares Feast's SQLite online-store file (PROTOCOLS.md §6.3) with Feast itself: what Feast
//! materializes, feast-rs reads, and what feast-rs writes, Feast reads.

pub mod store;

pub use store::sqlite::SqliteOnlineStore;
pub use store::{
    FeatureRow, OnlineStore, OnlineStoreError, TableRef, WriteRow, serialize_entity_key,
};
