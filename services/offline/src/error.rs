//! Errors of the offline store.

use datafusion::error::DataFusionError;
use feast_core::error::FeastError;

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// A registry lookup failed (unknown view, feature or service), with Feast's class.
    #[error("{0}")]
    Feast(#[from] FeastError),
    /// The request cannot be served as asked (bad entity table, unsupported view or source).
    #[error("{0}")]
    Invalid(String),
    /// The request needs something this store does not do (e.g. SQL entity tables on
    /// files).
    #[error("{0}")]
    Unsupported(String),
    /// A feature view's source cannot be read.
    #[error("data source of feature view {view}: {message}")]
    Source { view: String, message: String },
    /// An Arrow operation on the entity table failed.
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// Reading or writing a Parquet file failed.
    #[error(transparent)]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    /// Planning or execution failed inside DataFusion.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
}

pub type Result<T, E = OfflineError> = std::result::Result<T, E>;
