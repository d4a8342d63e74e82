//! `offline_write_batch`: rows appended to a feature view's Parquet file source.
//!
//! The rows must carry exactly the source's columns (any order; pandas index columns are
//! dropped; a column may also be named by the feature name its source column maps to, as
//! Feast's SDK renames them before sending). They are cast to the source's schema, so a
//! later read sees one consistent table.
//!
//! - A source that is one Parquet file is rewritten: the new rows, then the existing rows
//!   streamed row group by row group, into a temporary file in the same directory that then
//!   replaces the original (a reader sees the old or the new file, never a partial one).
//! - A source that is a directory gets a new `part-<uuid>.parquet` file, written under a
//!   hidden temporary name first.
//! - A source path that does not exist yet is created as a file.
//!
//! Writes to one path are serialized by the caller's [`WriteLocks`].

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{OfflineError, Result};
use crate::source::{FileLocation, Format};

/// One async lock per written path.
#[derive(Debug, Clone, Default)]
pub struct WriteLocks(Arc<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>>);

impl WriteLocks {
    pub fn of(&self, path: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(path.to_path_buf()).or_default().clone()
    }
}

/// The name of pandas' index columns (`pa.Table.from_pandas` adds them for a non-default
/// index); never data.
pub fn is_pandas_index(name: &str) -> bool {
    name.starts_with("__index_level_") && name.ends_with("__")
}

/// Appends `batches` (schema `schema`) to the file source at `location`. Blocking I/O: call
/// it from a blocking thread.
pub fn append(
    view: &str,
    location: &FileLocation,
    field_mapping: &BTreeMap<String, String>,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<usize> {
    let err = |message: String| OfflineError::Source {
        view: view.to_string(),
        message,
    };
    if location.format != Format::Parquet {
        return Err(err(format!(
            "{}: offline writes go to Parquet sources only",
            location.path.display()
        )));
    }
    if location.path.to_string_lossy().contains(['*', '?', '[']) {
        return Err(err(format!(
            "{}: cannot write to a glob source",
            location.path.display()
        )));
    }
    let path = &location.path;
    let is_dir = path.is_dir();
    // A part file at the top of a hive-partitioned directory would break its layout (and
    // the rows' partition values have no file column to go to).
    let layout = location.hive_layout().map_err(err)?;
    if !layout.keys.is_empty() {
        let keys: Vec<&str> = layout.keys.iter().map(|(k, _)| k.as_str()).collect();
        return Err(err(format!(
            "{} is partitioned hive-style by {}: offline writes into partitioned \
             directories are not supported",
            path.display(),
            keys.join(", ")
        )));
    }
    let existing = if is_dir {
        first_parquet_file(path)?
    } else if path.exists() {
        Some(path.clone())
    } else {
        None
    };
    // The target schema: the existing data's, else the written rows' (minus index columns).
    let target: SchemaRef = match &existing {
        Some(file) => parquet_schema(file).map_err(|e| err(e.to_string()))?,
        None => Arc::new(datafusion::arrow::datatypes::Schema::new(
            schema
                .fields()
                .iter()
                .filter(|f| !is_pandas_index(f.name()))
                .map(|f| f.as_ref().clone())
                .collect::<Vec<_>>(),
        )),
    };
    let columns = conform(schema, &target, field_mapping).map_err(err)?;
    let conformed = batches
        .iter()
        .map(|b| project(b, &columns, &target))
        .collect::<Result<Vec<_>>>()?;
    let rows: usize = conformed.iter().map(RecordBatch::num_rows).sum();

    let dir = if is_dir {
        path.clone()
    } else {
        let parent = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)
            .map_err(|e| err(format!("creating {}: {e}", parent.display())))?;
        parent.to_path_buf()
    };
    let id = uuid::Uuid::new_v4().simple().to_string();
    let tmp = dir.join(format!(".feast-rs-write-{id}.tmp"));
    let result = (|| -> Result<()> {
        let file =
            File::create(&tmp).map_err(|e| err(format!("creating {}: {e}", tmp.display())))?;
        let mut writer = ArrowWriter::try_new(file, target.clone(), None)?;
        for batch in &conformed {
            writer.write(batch)?;
        }
        if !is_dir && let Some(old) = &existing {
            let file =
                File::open(old).map_err(|e| err(format!("opening {}: {e}", old.display())))?;
            for batch in ParquetRecordBatchReaderBuilder::try_new(file)?.build()? {
                writer.write(&batch?)?;
            }
        }
        writer.close()?;
        let dest = if is_dir {
            dir.join(format!("part-{id}.parquet"))
        } else {
            path.clone()
        };
        std::fs::rename(&tmp, &dest)
            .map_err(|e| err(format!("replacing {}: {e}", dest.display())))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| rows)
}

fn first_parquet_file(dir: &Path) -> Result<Option<PathBuf>> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&d)
            .map_err(|e| OfflineError::Invalid(format!("listing {}: {e}", d.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "parquet") {
                return Ok(Some(p));
            }
        }
    }
    Ok(None)
}

fn parquet_schema(file: &Path) -> std::io::Result<SchemaRef> {
    let f = File::open(file)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| std::io::Error::other(format!("reading {}: {e}", file.display())))?;
    Ok(builder.schema().clone())
}

/// For each target column, the index of the input column that holds it.
pub(crate) fn conform(
    input: &SchemaRef,
    target: &SchemaRef,
    field_mapping: &BTreeMap<String, String>,
) -> std::result::Result<Vec<usize>, String> {
    let names: Vec<&str> = input.fields().iter().map(|f| f.name().as_str()).collect();
    let mut used = vec![false; names.len()];
    let mut columns = Vec::with_capacity(target.fields().len());
    let mut missing = Vec::new();
    for field in target.fields() {
        let source = field.name().as_str();
        let mapped = field_mapping.get(source).map(String::as_str);
        let found = names
            .iter()
            .position(|n| *n == source)
            .or_else(|| mapped.and_then(|m| names.iter().position(|n| *n == m)));
        match found {
            Some(i) => {
                used[i] = true;
                columns.push(i);
            }
            None => missing.push(source.to_string()),
        }
    }
    let extra: Vec<&str> = names
        .iter()
        .zip(&used)
        .filter(|(n, u)| !**u && !is_pandas_index(n))
        .map(|(n, _)| *n)
        .collect();
    if !missing.is_empty() || !extra.is_empty() {
        let expected: Vec<&str> = target.fields().iter().map(|f| f.name().as_str()).collect();
        return Err(format!(
            "the written columns do not match the batch source columns [{}]: missing {missing:?}, \
             unexpected {extra:?}",
            expected.join(", ")
        ));
    }
    Ok(columns)
}

fn project(batch: &RecordBatch, columns: &[usize], target: &SchemaRef) -> Result<RecordBatch> {
    let arrays = columns
        .iter()
        .zip(target.fields())
        .map(|(&i, field)| {
            let array = batch.column(i);
            if array.data_type() == field.data_type() {
                Ok(array.clone())
            } else {
                cast(array, field.data_type()).map_err(|e| {
                    OfflineError::Invalid(format!(
                        "column {} has type {}, which cannot be cast to the source's {}: {e}",
                        field.name(),
                        array.data_type(),
                        field.data_type()
                    ))
                })
            }
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    // The source schema may declare columns non-nullable; keep its schema as is.
    Ok(RecordBatch::try_new(target.clone(), arrays)?)
}

/// Writes a result stream to a new Parquet file at `path` (a saved dataset, Feast's
/// `persist`): into a temporary file beside it, renamed over `path` once complete. An
/// existing `path` is an error unless `allow_overwrite`. The batches are written on a
/// blocking thread as they arrive; returns the number of rows.
pub async fn persist(
    path: &Path,
    mut stream: datafusion::execution::SendableRecordBatchStream,
    allow_overwrite: bool,
) -> Result<usize> {
    use futures::StreamExt;
    if path.exists() && !allow_overwrite {
        return Err(feast_core::error::FeastError::new(
            feast_core::error::ErrorClass::SavedDatasetLocationAlreadyExists,
            format!("Saved dataset location {} already exists.", path.display()),
        )
        .into());
    }
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&dir)
        .map_err(|e| OfflineError::Invalid(format!("creating {}: {e}", dir.display())))?;
    let tmp = dir.join(format!(
        ".feast-rs-persist-{}.tmp",
        uuid::Uuid::new_v4().simple()
    ));
    let schema = stream.schema();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<RecordBatch>(2);
    let writer_path = tmp.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<usize> {
        let file = File::create(&writer_path).map_err(|e| {
            OfflineError::Invalid(format!("creating {}: {e}", writer_path.display()))
        })?;
        let mut writer = ArrowWriter::try_new(file, schema, None)?;
        let mut rows = 0;
        while let Some(batch) = rx.blocking_recv() {
            rows += batch.num_rows();
            writer.write(&batch)?;
        }
        writer.close()?;
        Ok(rows)
    });
    let mut failed = None;
    while let Some(batch) = stream.next().await {
        match batch {
            Ok(b) => {
                if tx.send(b).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failed = Some(OfflineError::from(e));
                break;
            }
        }
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| OfflineError::Invalid(format!("the persist task failed: {e}")));
    let result = match (failed, written) {
        (Some(e), _) => Err(e),
        (None, Err(e)) | (None, Ok(Err(e))) => Err(e),
        (None, Ok(Ok(rows))) => std::fs::rename(&tmp, path)
            .map(|()| rows)
            .map_err(|e| OfflineError::Invalid(format!("replacing {}: {e}", path.display()))),
    };
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
