//! feast-rs offline store: Feast's point-in-time join (`get_historical_features`) computed
//! by DataFusion over the feature views' file sources.
//!
//! - [`OfflineStore`]: the store interface the services and the CLI program against:
//!   `get_historical_features`, the materialization pulls, column listing,
//!   `offline_write_batch` and `write_logged_features`.
//! - [`FileOfflineStore`]: the implementation over Parquet/CSV file sources (Feast's `file`
//!   and `duckdb` stores read the same files) and, with `offline_store: {type: postgres}`,
//!   Postgres table/query sources.
//! - [`resolve`]: feature refs / feature services → the views and columns to join.
//! - [`source`]: a file source (file, directory or glob; Parquet or CSV) as a DataFrame.
//! - [`postgres`]: Postgres sources (Feast's `PostgreSQLSource`) as a `TableProvider` with
//!   filter pushdown, offline writes into them, and SQL entity tables.
//! - [`pit`]: the point-in-time join plan.
//! - [`pull`]: `pull_latest_from_table_or_query` / `pull_all_from_table_or_query`.
//! - [`write`]: `offline_write_batch` into Parquet file sources.
//! - [`logging`]: `write_logged_features` to a feature service's file logging destination.
//! - [`flight`]: the Arrow Flight server (Feast's remote offline store protocol).
//!
//! # Semantics (what every store must return)
//!
//! For each entity row and each requested view, the feature row with the same join keys
//! (after the feature service's `join_key_map`) and the latest event timestamp in
//! `[entity_ts - ttl, entity_ts]` (both ends inclusive; a ttl of 0 or unset is unbounded
//! into the past), equal event timestamps going to the latest created timestamp. Every
//! entity row is returned once, in input order, with nulls where no feature row qualifies.
//! Output columns: the entity table's columns in their order (its timestamp column as UTC),
//! then each view's features in request order, named `feature` or, with
//! `full_feature_names`, `view__feature` (`view` being the projection's alias if any).
//! Feature columns have the Arrow type of the view's schema (`value_type_to_arrow`).

pub mod asof;
pub mod client;
pub mod error;
pub mod flight;
pub mod local_reads;
pub mod logging;
pub mod pit;
pub mod postgres;
pub mod pull;
pub mod resolve;
pub mod server;
pub mod source;
pub mod store;
pub mod write;

pub use client::{AnyOfflineStore, FlightOfflineClient, open_offline_store};
pub use error::OfflineError;
pub use flight::{DEFAULT_PORT, FlightOptions, OfflineFlightService};
pub use pull::{PullKind, PullRequest};
pub use resolve::FeatureSelection;
pub use server::{TlsPem, serve_on};
pub use store::{EntityTable, EntityWindow, FileOfflineStore, HistoricalRequest, OfflineStore};

pub use datafusion::execution::SendableRecordBatchStream;
