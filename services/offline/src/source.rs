//! Feature-view file sources as DataFusion DataFrames.
//!
//! A `FileSource`'s path (relative paths resolve against the repository, as Feast's
//! `FileSource.get_uri_for_file_path`) may name a file, a directory (every `*.parquet` /
//! `*.csv` file below it) or a glob. The format follows the extension: `.csv` is CSV with a
//! header row (types inferred), anything else Parquet (Feast's `FileFormat` only has Parquet).

use std::path::{Path, PathBuf};

use datafusion::dataframe::DataFrame;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};
use feast_proto::core;

use crate::error::{OfflineError, Result};

/// File format of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Csv,
}

/// Where a file source's data lives, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLocation {
    pub path: PathBuf,
    pub format: Format,
}

impl FileLocation {
    /// Resolves `source`'s path against `repo_path`.
    pub fn of(view: &str, source: &core::DataSource, repo_path: &Path) -> Result<Self> {
        let err = |message: String| OfflineError::Source {
            view: view.to_string(),
            message,
        };
        let uri = match &source.options {
            Some(core::data_source::Options::FileOptions(f)) => f.uri.as_str(),
            _ => {
                let kind = core::data_source::SourceType::try_from(source.r#type)
                    .map(|t| t.as_str_name().to_string())
                    .unwrap_or_else(|_| source.r#type.to_string());
                return Err(err(format!(
                    "{} is a {kind} source; the feast-rs offline engine reads file and Postgres \
                     sources only",
                    source.name
                )));
            }
        };
        let local = uri.strip_prefix("file://").unwrap_or(uri);
        if local.contains("://") {
            return Err(err(format!(
                "{uri}: only local files are supported (no object stores yet)"
            )));
        }
        let path = if Path::new(local).is_absolute() {
            PathBuf::from(local)
        } else {
            repo_path.join(local)
        };
        let format = if local.to_ascii_lowercase().ends_with(".csv") {
            Format::Csv
        } else {
            Format::Parquet
        };
        Ok(Self { path, format })
    }

    fn is_glob(&self) -> bool {
        self.path.to_string_lossy().contains(['*', '?', '['])
    }

    /// Reads the source. Missing paths fail here, before any planning.
    pub async fn read(&self, ctx: &SessionContext, view: &str) -> Result<DataFrame> {
        let err = |message: String| OfflineError::Source {
            view: view.to_string(),
            message,
        };
        let glob = self.is_glob();
        if !glob && !self.path.exists() {
            return Err(err(format!("{} does not exist", self.path.display())));
        }
        let is_dir = self.path.is_dir();
        let mut path = self.path.to_string_lossy().into_owned();
        if is_dir && !path.ends_with('/') {
            path.push('/');
        }
        // A single file is read whatever its extension; a directory only its data files.
        let read = match self.format {
            Format::Parquet => {
                let ext = if is_dir { ".parquet" } else { "" };
                ctx.read_parquet(
                    path.as_str(),
                    ParquetReadOptions::default().file_extension(ext),
                )
                .await
            }
            Format::Csv => {
                let ext = if is_dir { ".csv" } else { "" };
                ctx.read_csv(
                    path.as_str(),
                    CsvReadOptions::new().has_header(true).file_extension(ext),
                )
                .await
            }
        };
        read.map_err(|e| err(format!("reading {}: {e}", self.path.display())))
    }
}
