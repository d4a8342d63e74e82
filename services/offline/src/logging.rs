//! `write_logged_features`: feature-serving logs written to a feature service's
//! `FileLoggingDestination`, as Feast's file store writes them
//! (`pyarrow.dataset.write_dataset` in `DaskOfflineStore.write_logged_features`):
//!
//! - under the destination's `path`, relative to the repository unless absolute;
//! - one Parquet file per partition and call, named `<uuid hex>-0.parquet` (the uuid drawn
//!   once per call), written under a hidden temporary name and then renamed, so a reader
//!   never sees a partial file; nothing is written for an empty table;
//! - with `partition_by`, pyarrow's *directory* partitioning (Feast passes a list of column
//!   names, which pyarrow lays out as `<value>/<value>/`, without `key=`): the partition
//!   columns leave the files and their values name the directories, in the order rows
//!   first show them. A null value adds no directory level (as pyarrow). Strings, integers,
//!   booleans and dates are spelt as pyarrow spells them; other types as Arrow's text.
//!   A value that is empty, `.`, `..` or holds a `/` is refused: it would not name one
//!   directory under the destination (pyarrow would nest or escape it).
//!
//! The rows are written as they come (Feast does not check them against the logging
//! schema either).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch, StringArray, UInt32Array};
use datafusion::arrow::compute::{cast, concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::parquet::arrow::ArrowWriter;
use feast_proto::core;

use crate::error::{OfflineError, Result};

/// A feature service's file logging destination, resolved against the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDestination {
    pub path: PathBuf,
    pub partition_by: Vec<String>,
}

impl LogDestination {
    /// The destination of `service`'s `logging_config`: a file destination, else an error
    /// saying what it is.
    pub fn of(service: &core::FeatureService, repo_path: &Path) -> Result<Self> {
        use core::logging_config::Destination;
        let name = service.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("");
        let config = service
            .spec
            .as_ref()
            .and_then(|s| s.logging_config.as_ref())
            .ok_or_else(|| {
                OfflineError::Invalid(format!(
                    "feature service {name}: feature service must have logging_config set"
                ))
            })?;
        let file = match &config.destination {
            Some(Destination::FileDestination(f)) => f,
            Some(other) => {
                let kind = match other {
                    Destination::BigqueryDestination(_) => "BigQuery",
                    Destination::RedshiftDestination(_) => "Redshift",
                    Destination::SnowflakeDestination(_) => "Snowflake",
                    Destination::AthenaDestination(_) => "Athena",
                    Destination::CustomDestination(c) => c.kind.as_str(),
                    _ => "non-file",
                };
                return Err(OfflineError::Unsupported(format!(
                    "feature service {name} logs to a {kind} destination; the feast-rs offline \
                     store writes file logging destinations only"
                )));
            }
            None => {
                return Err(OfflineError::Invalid(format!(
                    "feature service {name}: its logging_config has no destination"
                )));
            }
        };
        let local = file.path.strip_prefix("file://").unwrap_or(&file.path);
        if local.contains("://") {
            return Err(OfflineError::Unsupported(format!(
                "feature service {name} logs to {}: only local paths are supported (no object \
                 stores yet)",
                file.path
            )));
        }
        if local.is_empty() {
            return Err(OfflineError::Invalid(format!(
                "feature service {name}: its file logging destination has no path"
            )));
        }
        let path = if Path::new(local).is_absolute() {
            PathBuf::from(local)
        } else {
            repo_path.join(local)
        };
        Ok(Self {
            path,
            partition_by: file.partition_by.clone(),
        })
    }
}

/// Writes `batches` under `destination`; returns the number of rows written. Blocking I/O:
/// call it from a blocking thread.
pub fn write(
    destination: &LogDestination,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<usize> {
    let table = concat_batches(schema, batches)?;
    let rows = table.num_rows();
    if rows == 0 {
        return Ok(0);
    }
    let mut partition_columns = Vec::with_capacity(destination.partition_by.len());
    for name in &destination.partition_by {
        let index = schema.index_of(name).map_err(|_| {
            OfflineError::Invalid(format!(
                "logging partition column {name} does not exist in the logged table (columns: {})",
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        partition_columns.push(index);
    }
    let keep: Vec<usize> = (0..schema.fields().len())
        .filter(|i| !partition_columns.contains(i))
        .collect();
    let projected = parquet_ready(&table.project(&keep)?)?;
    let file_schema = projected.schema();

    // The directory segments of each row, then the rows of each distinct path in the order
    // they first appear.
    let segments: Vec<StringArray> = partition_columns
        .iter()
        .map(|&i| partition_text(table.column(i)))
        .collect::<Result<_>>()?;
    let mut groups: Vec<(PathBuf, Vec<u32>)> = Vec::new();
    let mut index_of: HashMap<PathBuf, usize> = HashMap::new();
    for row in 0..rows {
        let mut dir = PathBuf::new();
        for (values, name) in segments.iter().zip(&destination.partition_by) {
            if values.is_null(row) {
                continue;
            }
            let value = values.value(row);
            if value.is_empty() || value == "." || value == ".." || value.contains(['/', '\0']) {
                return Err(OfflineError::Invalid(format!(
                    "logging partition column {name} has the value {value:?}, which cannot \
                     name a directory under the logging destination"
                )));
            }
            dir.push(value);
        }
        let at = *index_of.entry(dir.clone()).or_insert_with(|| {
            groups.push((dir, Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push(row as u32);
    }

    let id = uuid::Uuid::new_v4().simple().to_string();
    for (dir, indices) in groups {
        let dir = destination.path.join(dir);
        let part = if indices.len() == rows {
            projected.clone()
        } else {
            take_record_batch(&projected, &UInt32Array::from(indices))?
        };
        write_file(&dir, &id, &file_schema, &part)?;
    }
    Ok(rows)
}

/// One partition's file: a hidden temporary file renamed to `<id>-0.parquet`.
fn write_file(dir: &Path, id: &str, schema: &Arc<Schema>, batch: &RecordBatch) -> Result<()> {
    let io = |what: &str, path: &Path, e: std::io::Error| {
        OfflineError::Invalid(format!("{what} {}: {e}", path.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
    let tmp = dir.join(format!(".feast-rs-log-{id}.tmp"));
    let result = (|| -> Result<()> {
        let file = File::create(&tmp).map_err(|e| io("creating", &tmp, e))?;
        let mut writer = ArrowWriter::try_new(file, schema.clone(), None)?;
        writer.write(batch)?;
        writer.close()?;
        let dest = dir.join(format!("{id}-0.parquet"));
        std::fs::rename(&tmp, &dest).map_err(|e| io("writing", &dest, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Columns Parquet cannot hold as they are, in the type pyarrow writes them as: timestamps
/// in seconds (Feast logs feature timestamps as `timestamp[s]`) become milliseconds, so
/// readers see timestamps rather than bare integers.
fn parquet_ready(batch: &RecordBatch) -> Result<RecordBatch> {
    use datafusion::arrow::datatypes::{Field, TimeUnit};
    let schema = batch.schema();
    if !schema
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Timestamp(TimeUnit::Second, _)))
    {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if let DataType::Timestamp(TimeUnit::Second, tz) = field.data_type() {
            let ty = DataType::Timestamp(TimeUnit::Millisecond, tz.clone());
            columns.push(cast(column, &ty)?);
            fields.push(
                Field::new(field.name(), ty, field.is_nullable())
                    .with_metadata(field.metadata().clone()),
            );
        } else {
            columns.push(column.clone());
            fields.push(field.as_ref().clone());
        }
    }
    let schema = Arc::new(Schema::new(fields).with_metadata(schema.metadata().clone()));
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// A partition column's values as directory names, spelt as pyarrow spells them where the
/// two agree (strings, integers, booleans, dates).
fn partition_text(column: &Arc<dyn Array>) -> Result<StringArray> {
    let text = cast(column, &DataType::Utf8)?;
    Ok(text
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .unwrap_or_else(|| StringArray::new_null(column.len())))
}
