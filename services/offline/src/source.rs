//! Feature-view file sources as DataFusion DataFrames.
//!
//! A `FileSource`'s path (relative paths resolve against the repository, as Feast's
//! `FileSource.get_uri_for_file_path`) may name a file, a directory (every `*.parquet` /
//! `*.csv` file below it) or a glob. The format follows the extension: `.csv` is CSV with a
//! header row (types inferred), anything else Parquet (Feast's `FileFormat` only has Parquet).
//!
//! A directory laid out hive-style (`event_date=2024-05-01/part-0.parquet`, or
//! `year=2024/month=05/day=01/...`) is one table whose partition keys are columns, typed as
//! pyarrow's dataset discovery types them: `int32` when every value is an integer, else
//! `string`. The source's `date_partition_column` is always a string (pyarrow reads dates
//! that way, and Feast compares it with `'YYYY-MM-DD'` strings). When it is a partition
//! column whose values are all `YYYY-MM-DD`, [`FileLocation::read_within`] filters it on the
//! UTC dates of the time window the caller cuts the source to, as Feast's SQL stores do
//! (`get_timestamp_filter_sql`); DataFusion evaluates that filter on the directory names, so
//! the files of partitions outside the window are never opened.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{CsvReadOptions, Expr, ParquetReadOptions, SessionContext, ident, lit};
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
    /// The source column named by the source's `date_partition_column` (after its
    /// `field_mapping`), if any.
    pub date_partition_column: Option<String>,
}

/// The hive partition keys of a directory source, outermost first, with the values found
/// on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HiveLayout {
    pub keys: Vec<(String, BTreeSet<String>)>,
    /// Every data file with its partition values (in key order), sorted by path.
    pub files: Vec<(PathBuf, Vec<String>)>,
}

/// The time window a read is cut to (either end open).
pub type Window = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

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
        // Feast maps the column by the reverse field mapping (a feature name given for it
        // names its source column).
        let date_partition_column = (!source.date_partition_column.is_empty()).then(|| {
            source
                .field_mapping
                .iter()
                .find(|(_, to)| **to == source.date_partition_column)
                .map(|(from, _)| from.clone())
                .unwrap_or_else(|| source.date_partition_column.clone())
        });
        Ok(Self {
            path,
            format,
            date_partition_column,
        })
    }

    fn extension(&self) -> &'static str {
        match self.format {
            Format::Parquet => ".parquet",
            Format::Csv => ".csv",
        }
    }

    /// The hive layout of a directory source (empty for a file, a glob, or a directory
    /// whose files are not under `key=value` directories).
    pub fn hive_layout(&self) -> std::result::Result<HiveLayout, String> {
        if self.is_glob() || !self.path.is_dir() {
            return Ok(HiveLayout::default());
        }
        hive_layout(&self.path, self.extension())
    }

    /// The partition columns and their types.
    fn partition_columns(&self, layout: &HiveLayout) -> Vec<(String, DataType)> {
        layout
            .keys
            .iter()
            .map(|(key, values)| {
                let is_date_column = self.date_partition_column.as_deref() == Some(key);
                let ty = if !is_date_column && values.iter().all(|v| v.parse::<i32>().is_ok()) {
                    DataType::Int32
                } else {
                    DataType::Utf8
                };
                (key.clone(), ty)
            })
            .collect()
    }

    fn is_glob(&self) -> bool {
        self.path.to_string_lossy().contains(['*', '?', '['])
    }

    /// Reads the source cut to `window` by its `date_partition_column`: rows of partitions
    /// whose date lies outside the window's UTC dates are dropped before any of their
    /// files is opened (the table's schema then comes from one file inside the window, as
    /// pyarrow takes a dataset's schema from one file). The caller still filters the rows
    /// on their event timestamps; this only prunes.
    pub async fn read_within(
        &self,
        ctx: &SessionContext,
        view: &str,
        window: Window,
    ) -> Result<DataFrame> {
        self.read_pruned(ctx, view, window).await
    }

    /// Reads the whole source. Missing paths fail here, before any planning.
    pub async fn read(&self, ctx: &SessionContext, view: &str) -> Result<DataFrame> {
        self.read_pruned(ctx, view, (None, None)).await
    }

    async fn read_pruned(
        &self,
        ctx: &SessionContext,
        view: &str,
        window: Window,
    ) -> Result<DataFrame> {
        let err = |message: String| OfflineError::Source {
            view: view.to_string(),
            message,
        };
        let glob = self.is_glob();
        if !glob && !self.path.exists() {
            return Err(err(format!("{} does not exist", self.path.display())));
        }
        let is_dir = self.path.is_dir();
        let layout = {
            let location = self.clone();
            tokio::task::spawn_blocking(move || location.hive_layout())
                .await
                .map_err(|e| err(format!("listing {}: {e}", self.path.display())))?
                .map_err(err)?
        };
        let partitions = self.partition_columns(&layout);
        let pruning = self.pruning(view, &layout, window);
        // A pruned read takes its schema from one file it keeps (DataFusion would otherwise
        // read the footer of every file to merge their schemas); when no partition is in
        // the window, from the first file, for a table that is then empty.
        let schema_file = pruning.as_ref().and_then(|p| {
            let index = layout.keys.iter().position(|(k, _)| *k == p.column)?;
            layout
                .files
                .iter()
                .find(|(_, values)| values.get(index).is_some_and(|v| p.keeps(v)))
                .or_else(|| layout.files.first())
                .map(|(file, _)| file.clone())
        });
        let file_schema = match &schema_file {
            Some(file) => Some(
                FileLocation {
                    path: file.clone(),
                    format: self.format,
                    date_partition_column: None,
                }
                .read_files(ctx, file, false, Vec::new(), None)
                .await
                .map_err(|e| err(format!("reading {}: {e}", file.display())))?
                .schema()
                .as_arrow()
                .clone(),
            ),
            None => None,
        };
        let mut path = self.path.to_string_lossy().into_owned();
        if is_dir && !path.ends_with('/') {
            path.push('/');
        }
        let df = self
            .read_files(
                ctx,
                Path::new(&path),
                is_dir,
                partitions,
                file_schema.as_ref(),
            )
            .await
            .map_err(|e| err(format!("reading {}: {e}", self.path.display())))?;
        Ok(match pruning {
            Some(p) => df.filter(p.filter())?,
            None => df,
        })
    }

    /// A single file is read whatever its extension; a directory only its data files.
    async fn read_files(
        &self,
        ctx: &SessionContext,
        path: &Path,
        is_dir: bool,
        partitions: Vec<(String, DataType)>,
        schema: Option<&Schema>,
    ) -> datafusion::error::Result<DataFrame> {
        let path = path.to_string_lossy();
        let ext = if is_dir { self.extension() } else { "" };
        match self.format {
            Format::Parquet => {
                let mut options = ParquetReadOptions::default()
                    .file_extension(ext)
                    .table_partition_cols(partitions);
                if let Some(schema) = schema {
                    options = options.schema(schema);
                }
                ctx.read_parquet(path.as_ref(), options).await
            }
            Format::Csv => {
                let mut options = CsvReadOptions::new()
                    .has_header(true)
                    .file_extension(ext)
                    .table_partition_cols(partitions);
                if let Some(schema) = schema {
                    options = options.schema(schema);
                }
                ctx.read_csv(path.as_ref(), options).await
            }
        }
    }

    /// Whether and how a read over `window` prunes partitions.
    fn pruning(&self, view: &str, layout: &HiveLayout, window: Window) -> Option<Pruning> {
        let column = self.date_partition_column.as_ref()?;
        if window.0.is_none() && window.1.is_none() {
            return None;
        }
        let Some((_, values)) = layout.keys.iter().find(|(k, _)| k == column) else {
            tracing::debug!(
                message = "date_partition_column is not a partition directory; not pruned",
                source = view,
                column = %column
            );
            return None;
        };
        // Strings compare as dates only in ISO form; any other form could drop rows.
        if let Some(odd) = values.iter().find(|v| !is_iso_date(v)) {
            tracing::warn!(
                message = "date_partition_column values are not YYYY-MM-DD dates; partitions not pruned",
                source = view,
                column = %column,
                value = %odd
            );
            return None;
        }
        let day = |t: &DateTime<Utc>| t.format("%Y-%m-%d").to_string();
        Some(Pruning {
            column: column.clone(),
            from: window.0.as_ref().map(day),
            to: window.1.as_ref().map(day),
        })
    }
}

fn is_iso_date(value: &str) -> bool {
    value.len() == 10 && NaiveDate::parse_from_str(value, "%Y-%m-%d").is_ok()
}

/// The partition filter of a pruned read: Feast's `dp >= 'start date' AND dp <= 'end date'`.
#[derive(Debug, Clone)]
struct Pruning {
    column: String,
    from: Option<String>,
    to: Option<String>,
}

impl Pruning {
    fn keeps(&self, value: &str) -> bool {
        self.from.as_deref().is_none_or(|f| value >= f)
            && self.to.as_deref().is_none_or(|t| value <= t)
    }

    fn filter(&self) -> Expr {
        let lower = self.from.clone().map(|f| ident(&self.column).gt_eq(lit(f)));
        let upper = self.to.clone().map(|t| ident(&self.column).lt_eq(lit(t)));
        match (lower, upper) {
            (Some(l), Some(u)) => l.and(u),
            (Some(e), None) | (None, Some(e)) => e,
            (None, None) => lit(true),
        }
    }
}

/// Walks `root` for data files (`ext`, not hidden: pyarrow skips names starting with `.`
/// or `_`) and reads the `key=value` directories above them. Every file must sit under the
/// same keys in the same order, as pyarrow and DataFusion both require; a file outside that
/// layout would otherwise be skipped silently.
fn hive_layout(root: &Path, ext: &str) -> std::result::Result<HiveLayout, String> {
    let mut first: Option<(PathBuf, Vec<String>)> = None;
    let mut values: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("listing {}: {e}", dir.display()))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if !name.ends_with(ext) {
                continue;
            }
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let parents: Vec<String> = relative
                .parent()
                .into_iter()
                .flat_map(|p| p.components())
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let mut keys = Vec::with_capacity(parents.len());
            let mut file_values = Vec::with_capacity(parents.len());
            for (level, part) in parents.iter().enumerate() {
                let Some((key, value)) = part.split_once('=') else {
                    break;
                };
                let value = percent_decode(value);
                keys.push(key.to_string());
                values.entry(level).or_default().insert(value.clone());
                file_values.push(value);
            }
            files.push((path.clone(), file_values));
            let partitioned = keys.len() == parents.len();
            if !partitioned && !keys.is_empty() {
                return Err(format!(
                    "{} mixes key=value directories with other directories",
                    path.display()
                ));
            }
            match &first {
                None => first = Some((path.clone(), keys)),
                Some((other, expected)) if *expected != keys => {
                    return Err(format!(
                        "inconsistent hive partitioning: {} is under keys [{}], {} under [{}]",
                        other.display(),
                        expected.join(", "),
                        path.display(),
                        keys.join(", ")
                    ));
                }
                Some(_) => {}
            }
        }
    }
    let keys = first.map(|(_, keys)| keys).unwrap_or_default();
    files.sort();
    Ok(HiveLayout {
        files,
        keys: keys
            .into_iter()
            .enumerate()
            .map(|(level, key)| (key, values.remove(&level).unwrap_or_default()))
            .collect(),
    })
}

/// `%XX` escapes decoded, as DataFusion decodes partition values.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| value.to_string())
}
