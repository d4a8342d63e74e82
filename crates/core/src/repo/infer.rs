//! Schema inference: the columns of a file source, read from the Parquet footer or inferred
//! from the CSV header and first rows, typed with Feast's Arrow → ValueType mapping.

use std::path::{Path, PathBuf};

use feast_proto::core::{self, data_source::Options};
use feast_proto::types::value_type::Enum as ValueType;

use crate::types::arrow_to_value_type;

/// Resolves a file source's `uri` against the repository (relative paths are relative to it).
pub fn resolve_source_path(repo: &Path, uri: &str) -> PathBuf {
    let uri = uri.strip_prefix("file://").unwrap_or(uri);
    let p = Path::new(uri);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        repo.join(p)
    }
}

/// `(column, value type)` of a file source, in file order.
pub fn source_columns(
    repo: &Path,
    source: &core::DataSource,
) -> Result<Vec<(String, ValueType)>, String> {
    let Some(Options::FileOptions(opts)) = &source.options else {
        return Err(format!(
            "data source \"{}\" is not a file source",
            source.name
        ));
    };
    if opts.uri.contains("://") && !opts.uri.starts_with("file://") {
        return Err(format!("{} is not a local file", opts.uri));
    }
    let path = first_data_file(&resolve_source_path(repo, &opts.uri))?;
    let schema = if is_csv(&path) {
        csv_schema(&path)?
    } else {
        parquet_schema(&path)?
    };
    schema
        .fields()
        .iter()
        .filter(|f| f.name() != "__index_level_0__")
        .map(|f| {
            arrow_to_value_type(f.data_type())
                .map(|vt| (f.name().clone(), vt))
                .map_err(|e| format!("column \"{}\" of {}: {e}", f.name(), path.display()))
        })
        .collect()
}

fn is_csv(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// For a directory (e.g. hive-partitioned), the first data file in sorted order.
fn first_data_file(path: &Path) -> Result<PathBuf, String> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.is_dir() {
        return Err(format!("{} does not exist", path.display()));
    }
    let mut stack = vec![path.to_path_buf()];
    let mut files = Vec::new();
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if name.ends_with(".parquet") || name.ends_with(".csv") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .next()
        .ok_or_else(|| format!("{} holds no .parquet or .csv files", path.display()))
}

fn parquet_schema(path: &Path) -> Result<arrow_schema::SchemaRef, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| format!("{} is not a readable Parquet file: {e}", path.display()))?;
    Ok(builder.schema().clone())
}

fn csv_schema(path: &Path) -> Result<arrow_schema::SchemaRef, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let format = arrow_csv::reader::Format::default().with_header(true);
    let (schema, _) = format
        .infer_schema(std::io::BufReader::new(file), Some(1000))
        .map_err(|e| format!("cannot infer the columns of {}: {e}", path.display()))?;
    Ok(std::sync::Arc::new(schema))
}
