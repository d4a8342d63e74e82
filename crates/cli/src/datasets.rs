//! The registry server's saved-dataset backend (`CreateDatasetFromRetrieval`,
//! `GetDatasetData`) over the repository's offline store: the embedded engine, or the
//! offline server when `offline_store: {type: remote}`.
//!
//! The entity table is built as Feast's `build_entity_df_from_inline` builds it (or read
//! from a Parquet file), the retrieval runs on the offline store, its result is persisted
//! as a Parquet file, and the saved dataset is returned for the registry to apply. Previews
//! pull the saved rows back through the offline store, as Feast's `retrieve_saved_dataset`,
//! and render each value as Feast's `json.dumps(value, default=str)` does after pandas has
//! read it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use feast_core::error::{ErrorClass, FeastError};
use feast_core::model::FeatureViewExt;
use feast_core::registry::{Catalog, timestamp};
use feast_offline::{
    AnyOfflineStore, EntityTable, FeatureSelection, HistoricalRequest, OfflineStore,
};
use feast_proto::core;
use feast_proto::registry::CreateDatasetFromRetrievalRequest;
use feast_registry::datasets::BoxFuture;
use feast_registry::{DatasetBackend, DatasetPreview};

/// Saved datasets through an offline store; entity files are resolved against `repo_path`.
pub struct OfflineDatasets {
    pub store: Arc<AnyOfflineStore>,
    pub repo_path: PathBuf,
}

fn error(message: impl Into<String>) -> FeastError {
    FeastError::new(ErrorClass::FeastError, message)
}

impl DatasetBackend for OfflineDatasets {
    fn create(
        &self,
        catalog: Catalog,
        request: CreateDatasetFromRetrievalRequest,
    ) -> BoxFuture<Result<core::SavedDataset, FeastError>> {
        let store = self.store.clone();
        let repo_path = self.repo_path.clone();
        Box::pin(async move { create(&store, &repo_path, &catalog, request).await })
    }

    fn preview(
        &self,
        dataset: core::SavedDataset,
        limit: usize,
    ) -> BoxFuture<Result<DatasetPreview, FeastError>> {
        let store = self.store.clone();
        Box::pin(async move { preview(&store, &dataset, limit).await })
    }
}

async fn create(
    store: &AnyOfflineStore,
    repo_path: &Path,
    catalog: &Catalog,
    r: CreateDatasetFromRetrievalRequest,
) -> Result<core::SavedDataset, FeastError> {
    let name = r.name.trim().to_owned();
    let project = r.project.trim().to_owned();
    let extra = (!r.extra_columns.is_empty()).then_some(r.extra_columns.as_str());
    let entities = if r.entity_source_type == "inline" {
        inline_entities(
            &r.entity_keys,
            &r.entity_values,
            Some(r.start_date.as_str()).filter(|s| !s.is_empty()),
            Some(r.end_date.as_str()).filter(|s| !s.is_empty()),
            extra,
        )?
    } else {
        let path = resolve(repo_path, &r.entity_source_path);
        let table = crate::historical::read_entities(&path).map_err(|e| error(format!("{e:#}")))?;
        parquet_entities(table, extra)?
    };
    let features = if r.feature_service_name.is_empty() {
        FeatureSelection::Refs(r.features.clone())
    } else {
        FeatureSelection::Service(r.feature_service_name.clone())
    };
    let refs = feature_refs(catalog, &project, &features)?;
    let storage_path = r.storage_path.trim();
    if !matches!(r.storage_type.as_str(), "" | "file") {
        return Err(error(format!(
            "storage_type {:?}: feast-rs saves datasets as Parquet files (storage_type \"file\")",
            r.storage_type
        )));
    }
    if storage_path.is_empty() {
        return Err(error(
            "storage_path is required: where to write the dataset's Parquet file",
        ));
    }
    let join_keys = join_keys(catalog, &project, &refs, &entities);
    let (min_ts, max_ts) = event_time_range(&entities);
    let request = HistoricalRequest {
        features,
        full_feature_names: false,
    };
    let target = core::DataSource {
        name: storage_path.to_owned(),
        project: project.clone(),
        r#type: core::data_source::SourceType::BatchFile as i32,
        data_source_class_type: "feast.infra.offline_stores.file_source.FileSource".into(),
        options: Some(core::data_source::Options::FileOptions(file_options(
            storage_path,
        ))),
        ..Default::default()
    };
    let offline = |e: feast_offline::OfflineError| error(e.to_string());
    let result = store
        .get_historical_features(catalog, &project, entities, &request)
        .await
        .map_err(offline)?;
    let rows = store
        .persist(&target, result, r.allow_overwrite)
        .await
        .map_err(offline)?;
    tracing::info!(message = "saved dataset written", dataset = %name, path = %storage_path, rows);
    Ok(core::SavedDataset {
        spec: Some(core::SavedDatasetSpec {
            name,
            project,
            features: refs,
            join_keys,
            full_feature_names: false,
            storage: Some(core::SavedDatasetStorage {
                kind: Some(core::saved_dataset_storage::Kind::FileStorage(
                    file_options(storage_path),
                )),
            }),
            // Feast's job does not record the service it retrieved through.
            feature_service_name: String::new(),
            tags: r.tags.into_iter().collect(),
            ..Default::default()
        }),
        meta: Some(core::SavedDatasetMeta {
            min_event_timestamp: min_ts,
            max_event_timestamp: max_ts,
            ..Default::default()
        }),
    })
}

fn file_options(path: &str) -> core::data_source::FileOptions {
    core::data_source::FileOptions {
        uri: path.to_owned(),
        file_format: Some(core::FileFormat {
            format: Some(core::file_format::Format::ParquetFormat(
                core::file_format::ParquetFormat {},
            )),
        }),
        ..Default::default()
    }
}

fn resolve(repo_path: &Path, path: &str) -> PathBuf {
    let p = Path::new(path.trim());
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        repo_path.join(p)
    }
}

/// Feast's `coerce_value`: an int, else a float, else the text.
#[derive(Debug, Clone, PartialEq)]
enum Coerced {
    Int(i64),
    Float(f64),
    Text(String),
}

fn coerce(value: &str) -> Coerced {
    if let Ok(i) = value.parse::<i64>() {
        return Coerced::Int(i);
    }
    // Python's float() also takes "nan", "inf", "1e3", " 2.5"; Rust's parse agrees on these.
    match value.trim().parse::<f64>() {
        Ok(f) if !value.trim().is_empty() => Coerced::Float(f),
        _ => Coerced::Text(value.to_owned()),
    }
}

/// One column of coerced values, typed as pandas types it: all ints -> int64, ints and
/// floats -> float64, anything else -> strings (pandas keeps an object column; the values
/// are sent as their text).
fn coerced_column(values: &[Option<Coerced>]) -> (DataType, ArrayRef) {
    let all_int = values.iter().all(|v| matches!(v, Some(Coerced::Int(_))));
    let numeric = values
        .iter()
        .all(|v| matches!(v, Some(Coerced::Int(_) | Coerced::Float(_)) | None));
    if all_int {
        let a: arrow_array::Int64Array = values
            .iter()
            .map(|v| match v {
                Some(Coerced::Int(i)) => Some(*i),
                _ => None,
            })
            .collect();
        (DataType::Int64, Arc::new(a))
    } else if numeric {
        let a: arrow_array::Float64Array = values
            .iter()
            .map(|v| match v {
                Some(Coerced::Int(i)) => Some(*i as f64),
                Some(Coerced::Float(f)) => Some(*f),
                _ => None,
            })
            .collect();
        (DataType::Float64, Arc::new(a))
    } else {
        let a: arrow_array::StringArray = values
            .iter()
            .map(|v| match v {
                Some(Coerced::Int(i)) => Some(i.to_string()),
                Some(Coerced::Float(f)) => Some(feast_core::value::python_float_repr(*f)),
                Some(Coerced::Text(t)) => Some(t.clone()),
                None => None,
            })
            .collect();
        (DataType::Utf8, Arc::new(a))
    }
}

fn parse_time(field: &str, value: &str) -> Result<i64, FeastError> {
    let (t, _) = feast_core::value::parse_iso_timestamp(value)
        .ok_or_else(|| error(format!("{field}: cannot parse {value:?} as a timestamp")))?;
    t.timestamp_nanos_opt()
        .ok_or_else(|| error(format!("{field}: {value:?} is out of range")))
}

fn utc_nanos() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// Feast's `build_entity_df_from_inline`: one key takes comma- or newline-separated values;
/// several keys take one comma-separated line per row. `event_timestamp` spreads the rows
/// evenly from `start` to `end` (a single row gets `end`), or is `end`, or now.
fn inline_entities(
    keys: &[String],
    values: &str,
    start: Option<&str>,
    end: Option<&str>,
    extra: Option<&str>,
) -> Result<EntityTable, FeastError> {
    let values = values.trim();
    let rows: Vec<Vec<Option<Coerced>>> = if keys.len() == 1 {
        values
            .replace('\n', ",")
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| vec![Some(coerce(v))])
            .collect()
    } else {
        values
            .split('\n')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|line| {
                let parts: Vec<&str> = line.split(',').map(str::trim).collect();
                (0..keys.len())
                    .map(|i| parts.get(i).map(|p| coerce(p)))
                    .collect()
            })
            .collect()
    };
    if rows.is_empty() || keys.is_empty() {
        return Err(error("No entity values could be parsed from the input."));
    }
    let n = rows.len();
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let column: Vec<Option<Coerced>> = rows.iter().map(|r| r[i].clone()).collect();
        let (dt, array) = coerced_column(&column);
        fields.push(Field::new(key, dt, true));
        columns.push(array);
    }
    let times: Vec<i64> = match (start, end) {
        (Some(s), Some(e)) => {
            let (s, e) = (parse_time("start_date", s)?, parse_time("end_date", e)?);
            if n == 1 {
                vec![e]
            } else {
                // pandas.date_range(start, end, periods=n): evenly spaced, both ends included.
                let step = (e - s) as f64 / (n - 1) as f64;
                (0..n)
                    .map(|i| s + (step * i as f64).round() as i64)
                    .collect()
            }
        }
        (_, Some(e)) => vec![parse_time("end_date", e)?; n],
        _ => vec![chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(); n],
    };
    fields.push(Field::new(
        feast_offline::store::ENTITY_TIMESTAMP,
        utc_nanos(),
        true,
    ));
    columns.push(Arc::new(
        arrow_array::TimestampNanosecondArray::from(times).with_timezone("UTC"),
    ));
    add_constant_columns(&mut fields, &mut columns, n, extra);
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| error(e.to_string()))?;
    Ok(EntityTable::new(schema, vec![batch]))
}

/// Feast's `extra_columns`: `name=value` lines become constant columns (replacing a column
/// of that name).
fn add_constant_columns(
    fields: &mut Vec<Field>,
    columns: &mut Vec<ArrayRef>,
    rows: usize,
    extra: Option<&str>,
) {
    for line in extra.unwrap_or_default().trim().split('\n') {
        let Some((name, value)) = line.trim().split_once('=') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        let (dt, array) = coerced_column(&vec![Some(coerce(value.trim())); rows]);
        let field = Field::new(name, dt, true);
        match fields.iter().position(|f| f.name() == name) {
            Some(i) => {
                fields[i] = field;
                columns[i] = array;
            }
            None => {
                fields.push(field);
                columns.push(array);
            }
        }
    }
}

/// An entity table read from Parquet: the first of `event_timestamp`, `datetime`,
/// `timestamp` that is text is parsed as timestamps (pandas' `to_datetime`), and the extra
/// columns are added.
fn parquet_entities(table: EntityTable, extra: Option<&str>) -> Result<EntityTable, FeastError> {
    let base: Vec<Field> = table
        .schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let parse = ["event_timestamp", "datetime", "timestamp"]
        .iter()
        .find_map(|c| base.iter().position(|f| f.name() == c))
        .filter(|&i| matches!(base[i].data_type(), DataType::Utf8 | DataType::LargeUtf8));
    let mut schema = None;
    let mut batches = Vec::with_capacity(table.batches.len());
    let empty = RecordBatch::new_empty(table.schema.clone());
    let inputs = if table.batches.is_empty() {
        std::slice::from_ref(&empty)
    } else {
        &table.batches[..]
    };
    for batch in inputs {
        let mut fields = base.clone();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        if let Some(i) = parse {
            let text =
                arrow_cast::cast(&columns[i], &DataType::Utf8).map_err(|e| error(e.to_string()))?;
            let mut times = Vec::with_capacity(text.len());
            for v in text.as_string::<i32>().iter() {
                times.push(v.map(|v| parse_time(fields[i].name(), v)).transpose()?);
            }
            fields[i] = Field::new(fields[i].name(), utc_nanos(), true);
            columns[i] =
                Arc::new(arrow_array::TimestampNanosecondArray::from(times).with_timezone("UTC"));
        }
        add_constant_columns(&mut fields, &mut columns, batch.num_rows(), extra);
        let batch_schema = Arc::new(Schema::new(fields));
        let out = RecordBatch::try_new(batch_schema.clone(), columns)
            .map_err(|e| error(e.to_string()))?;
        if out.num_rows() > 0 {
            batches.push(out);
        }
        schema = Some(batch_schema);
    }
    let schema = schema.unwrap_or(table.schema);
    Ok(EntityTable::new(schema, batches))
}

/// The feature references the dataset records: the request's, or the service's projections
/// as `name_to_use:feature`.
fn feature_refs(
    catalog: &Catalog,
    project: &str,
    selection: &FeatureSelection,
) -> Result<Vec<String>, FeastError> {
    match selection {
        FeatureSelection::Refs(refs) => Ok(refs.clone()),
        FeatureSelection::Service(name) => {
            let service: &core::FeatureService = catalog.get(name, project)?;
            let mut refs = Vec::new();
            for proj in service
                .spec
                .as_ref()
                .map(|s| s.features.as_slice())
                .unwrap_or_default()
            {
                let view_name = feast_core::model::projection_name(proj);
                let view: &core::FeatureView = catalog.get(&proj.feature_view_name, project)?;
                let features = feast_core::model::projection_features(proj, view);
                refs.extend(features.iter().map(|f| format!("{view_name}:{f}")));
            }
            Ok(refs)
        }
        FeatureSelection::Views { refs, .. } => Ok(refs.clone()),
    }
}

/// The entity columns that are join keys of the retrieved views (Feast's
/// `create_saved_dataset`), in entity-table order.
fn join_keys(
    catalog: &Catalog,
    project: &str,
    refs: &[String],
    entities: &EntityTable,
) -> Vec<String> {
    let mut keys = std::collections::BTreeSet::new();
    for r in refs {
        let view = feast_core::version::parse_view_ref(r).view;
        if let Ok(fv) = catalog.get::<core::FeatureView>(view, project) {
            keys.extend(fv.join_keys().into_iter().map(str::to_owned));
        }
    }
    entities
        .schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|c| keys.is_empty() || keys.contains(c))
        .filter(|c| !keys.is_empty() || c != feast_offline::store::ENTITY_TIMESTAMP)
        .collect()
}

fn event_time_range(
    entities: &EntityTable,
) -> (
    Option<prost_types::Timestamp>,
    Option<prost_types::Timestamp>,
) {
    let Ok(column) = entities.timestamp_column() else {
        return (None, None);
    };
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    for batch in &entities.batches {
        let Some(array) = batch.column_by_name(column) else {
            continue;
        };
        let Ok(nanos) = arrow_cast::cast(array, &DataType::Timestamp(TimeUnit::Nanosecond, None))
        else {
            continue;
        };
        for v in nanos
            .as_primitive::<TimestampNanosecondType>()
            .iter()
            .flatten()
        {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if lo > hi {
        return (None, None);
    }
    let at = |n: i64| timestamp(chrono::DateTime::from_timestamp_nanos(n));
    (Some(at(lo)), Some(at(hi)))
}

/// Up to `limit` rows of the saved dataset, read as Feast's `retrieve_saved_dataset` reads
/// it: `pull_all_from_table_or_query` over the storage, its join keys, `event_timestamp` and
/// feature columns, from its first to just past its last event time.
async fn preview(
    store: &AnyOfflineStore,
    dataset: &core::SavedDataset,
    limit: usize,
) -> Result<DatasetPreview, FeastError> {
    use futures::StreamExt;
    let spec = dataset.spec.clone().unwrap_or_default();
    let Some(core::saved_dataset_storage::Kind::FileStorage(file)) =
        spec.storage.as_ref().and_then(|s| s.kind.clone())
    else {
        return Err(error(
            "feast-rs previews saved datasets stored as files only",
        ));
    };
    let features = spec
        .features
        .iter()
        .map(|r| {
            let parsed = feast_core::version::parse_view_ref(r);
            let feature = parsed.feature.unwrap_or_default();
            if spec.full_feature_names {
                format!("{}__{feature}", parsed.view)
            } else {
                feature.to_owned()
            }
        })
        .collect();
    let meta = dataset.meta.unwrap_or_default();
    let time = |t: Option<prost_types::Timestamp>| {
        t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
    };
    let request = feast_offline::PullRequest {
        join_key_columns: spec.join_keys.clone(),
        feature_name_columns: features,
        timestamp_field: feast_offline::store::ENTITY_TIMESTAMP.to_owned(),
        created_timestamp_column: None,
        start: time(meta.min_event_timestamp),
        end: time(meta.max_event_timestamp).map(|t| t + chrono::Duration::seconds(1)),
    };
    let source = core::DataSource {
        name: file.uri.clone(),
        project: spec.project.clone(),
        r#type: core::data_source::SourceType::BatchFile as i32,
        timestamp_field: feast_offline::store::ENTITY_TIMESTAMP.to_owned(),
        options: Some(core::data_source::Options::FileOptions(file)),
        ..Default::default()
    };
    let offline = |e: feast_offline::OfflineError| error(e.to_string());
    let mut stream = store
        .pull(&source, &request, feast_offline::PullKind::All)
        .await
        .map_err(offline)?;
    let columns: Vec<String> = stream
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut rows = Vec::new();
    while rows.len() < limit {
        let Some(batch) = stream.next().await else {
            break;
        };
        let batch = batch.map_err(|e| error(e.to_string()))?;
        let rendered: Vec<Vec<String>> = batch.columns().iter().map(render_column).collect();
        for row in 0..batch.num_rows().min(limit - rows.len()) {
            rows.push(rendered.iter().map(|c| c[row].clone()).collect());
        }
    }
    Ok(DatasetPreview { columns, rows })
}

fn py_json_str(s: &str) -> String {
    feast_core::json::python_dumps(&serde_json::Value::String(s.to_owned()))
}

/// `json.dumps(float)`: Python's repr, with `NaN` / `Infinity` spelled as JSON does.
fn py_json_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else {
        feast_core::value::python_float_repr(f)
    }
}

/// Python's `repr(bytes)`.
fn py_bytes_repr(b: &[u8]) -> String {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') {
        '"'
    } else {
        '\''
    };
    let mut out = format!("b{quote}");
    for &c in b {
        match c {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            c if c as char == quote => {
                out.push('\\');
                out.push(c as char);
            }
            0x20..=0x7e => out.push(c as char),
            c => out.push_str(&format!("\\x{c:02x}")),
        }
    }
    out.push(quote);
    out
}

/// pandas' `str(Timestamp)`: `YYYY-MM-DD HH:MM:SS[.ffffff|.fffffffff][+00:00]`.
fn pandas_timestamp(nanos: i64, tz: bool) -> String {
    let dt = chrono::DateTime::from_timestamp_nanos(nanos);
    let frac = dt.timestamp_subsec_nanos();
    let base = dt.format("%Y-%m-%d %H:%M:%S").to_string();
    let frac = if frac == 0 {
        String::new()
    } else if frac.is_multiple_of(1000) {
        format!(".{:06}", frac / 1000)
    } else {
        format!(".{frac:09}")
    };
    format!("{base}{frac}{}", if tz { "+00:00" } else { "" })
}

/// One column's values as `json.dumps(v, default=str)` of what pandas holds: an integer
/// column with nulls is a float column (`1001.0`, `NaN`), a null float is `NaN`, timestamps
/// are their text (`NaT` when null), bytes their Python repr, lists numpy's text.
fn render_column(array: &ArrayRef) -> Vec<String> {
    let n = array.len();
    let has_nulls = array.null_count() > 0;
    macro_rules! ints {
        ($t:ty) => {{
            let a = array.as_primitive::<$t>();
            (0..n)
                .map(|i| match (a.is_null(i), has_nulls) {
                    (true, _) => "NaN".to_string(),
                    (false, true) => py_json_float(a.value(i) as f64),
                    (false, false) => a.value(i).to_string(),
                })
                .collect()
        }};
    }
    match array.data_type() {
        DataType::Int8 => ints!(Int8Type),
        DataType::Int16 => ints!(Int16Type),
        DataType::Int32 => ints!(Int32Type),
        DataType::Int64 => ints!(Int64Type),
        DataType::UInt8 => ints!(UInt8Type),
        DataType::UInt16 => ints!(UInt16Type),
        DataType::UInt32 => ints!(UInt32Type),
        DataType::UInt64 => ints!(UInt64Type),
        DataType::Float32 => {
            let a = array.as_primitive::<Float32Type>();
            (0..n)
                .map(|i| {
                    if a.is_null(i) {
                        "NaN".into()
                    } else {
                        py_json_float(a.value(i) as f64)
                    }
                })
                .collect()
        }
        DataType::Float64 => {
            let a = array.as_primitive::<Float64Type>();
            (0..n)
                .map(|i| {
                    if a.is_null(i) {
                        "NaN".into()
                    } else {
                        py_json_float(a.value(i))
                    }
                })
                .collect()
        }
        DataType::Boolean => {
            let a = array.as_boolean();
            (0..n)
                .map(|i| match a.is_null(i) {
                    true => "null".into(),
                    false => a.value(i).to_string(),
                })
                .collect()
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let text = arrow_cast::cast(array, &DataType::Utf8).unwrap_or_else(|_| array.clone());
            let a = text.as_string::<i32>();
            (0..n)
                .map(|i| {
                    if a.is_null(i) {
                        "null".into()
                    } else {
                        py_json_str(a.value(i))
                    }
                })
                .collect()
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            let bytes =
                arrow_cast::cast(array, &DataType::Binary).unwrap_or_else(|_| array.clone());
            let a = bytes.as_binary::<i32>();
            (0..n)
                .map(|i| {
                    if a.is_null(i) {
                        "null".into()
                    } else {
                        py_json_str(&py_bytes_repr(a.value(i)))
                    }
                })
                .collect()
        }
        DataType::Timestamp(_, tz) => {
            let nanos = arrow_cast::cast(array, &DataType::Timestamp(TimeUnit::Nanosecond, None))
                .unwrap_or_else(|_| array.clone());
            let a = nanos.as_primitive::<TimestampNanosecondType>();
            (0..n)
                .map(|i| match a.is_null(i) {
                    true => py_json_str("NaT"),
                    false => py_json_str(&pandas_timestamp(a.value(i), tz.is_some())),
                })
                .collect()
        }
        DataType::List(_) | DataType::LargeList(_) => (0..n)
            .map(|i| {
                if array.is_null(i) {
                    return "null".into();
                }
                let item = match array.data_type() {
                    DataType::List(_) => array.as_list::<i32>().value(i),
                    _ => array.as_list::<i64>().value(i),
                };
                py_json_str(&numpy_text(&item))
            })
            .collect(),
        _ => {
            let options = arrow_cast::display::FormatOptions::default();
            match arrow_cast::display::ArrayFormatter::try_new(array.as_ref(), &options) {
                Ok(f) => (0..n)
                    .map(|i| {
                        if array.is_null(i) {
                            "null".into()
                        } else {
                            py_json_str(&f.value(i).to_string())
                        }
                    })
                    .collect(),
                Err(_) => vec!["null".into(); n],
            }
        }
    }
}

/// numpy's `str(array)` for the element types Feast lists hold: `[1 2]`, `['a' 'b']`,
/// `[0.5 2.0]` (numpy pads floats; this does not), `[True False]`.
fn numpy_text(values: &ArrayRef) -> String {
    let n = values.len();
    let items: Vec<String> = match values.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 => {
            let text = arrow_cast::cast(values, &DataType::Utf8).unwrap_or_else(|_| values.clone());
            let a = text.as_string::<i32>();
            (0..n)
                .map(|i| {
                    if a.is_null(i) {
                        "None".into()
                    } else {
                        format!("'{}'", a.value(i))
                    }
                })
                .collect()
        }
        DataType::Boolean => {
            let a = values.as_boolean();
            (0..n)
                .map(|i| match (a.is_null(i), a.value(i)) {
                    (true, _) => "None".into(),
                    (false, true) => "True".into(),
                    (false, false) => "False".into(),
                })
                .collect()
        }
        DataType::Float32 | DataType::Float64 => {
            let f = arrow_cast::cast(values, &DataType::Float64).unwrap_or_else(|_| values.clone());
            let a = f.as_primitive::<Float64Type>();
            (0..n)
                .map(|i| {
                    if a.is_null(i) {
                        "nan".into()
                    } else {
                        feast_core::value::python_float_repr(a.value(i))
                    }
                })
                .collect()
        }
        _ => {
            let options = arrow_cast::display::FormatOptions::default();
            match arrow_cast::display::ArrayFormatter::try_new(values.as_ref(), &options) {
                Ok(f) => (0..n).map(|i| f.value(i).to_string()).collect(),
                Err(_) => Vec::new(),
            }
        }
    };
    format!("[{}]", items.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_entities_follow_build_entity_df_from_inline() {
        let t = inline_entities(
            &["driver_id".into()],
            "1001, 1002\n1003",
            Some("2024-01-01T00:00:00Z"),
            Some("2024-01-01T02:00:00Z"),
            Some("mode=fast\nweight=2.5"),
        )
        .unwrap();
        let b = &t.batches[0];
        assert_eq!(b.num_rows(), 3);
        assert_eq!(b.schema().field(0).data_type(), &DataType::Int64);
        let ts = b.column(1).as_primitive::<TimestampNanosecondType>();
        let hour = 3_600_000_000_000i64;
        let start = 1_704_067_200_000_000_000i64;
        assert_eq!(
            ts.values().to_vec(),
            vec![start, start + hour, start + 2 * hour]
        );
        assert_eq!(b.schema().field(2).name(), "mode");
        assert_eq!(b.schema().field(3).data_type(), &DataType::Float64);

        let two = inline_entities(
            &["a".into(), "b".into()],
            "1,x\n2",
            None,
            Some("2024-01-01"),
            None,
        )
        .unwrap();
        let b = &two.batches[0];
        assert_eq!(b.schema().field(1).data_type(), &DataType::Utf8);
        assert!(b.column(1).is_null(1), "a missing part is None");
        let err = inline_entities(&["a".into()], " , \n", None, None, None).unwrap_err();
        assert_eq!(
            err.message,
            "No entity values could be parsed from the input."
        );
    }

    #[test]
    fn values_render_as_feasts_json_dumps() {
        let ints: ArrayRef = Arc::new(arrow_array::Int64Array::from(vec![Some(1001), None]));
        assert_eq!(render_column(&ints), ["1001.0", "NaN"]);
        let f32s: ArrayRef = Arc::new(arrow_array::Float32Array::from(vec![0.5, 0.1]));
        assert_eq!(render_column(&f32s), ["0.5", "0.10000000149011612"]);
        let text: ArrayRef = Arc::new(arrow_array::StringArray::from(vec![Some("é"), None]));
        assert_eq!(render_column(&text), ["\"\\u00e9\"", "null"]);
        let ts: ArrayRef = Arc::new(
            arrow_array::TimestampMicrosecondArray::from(vec![Some(1_704_112_200_123_456), None])
                .with_timezone("UTC"),
        );
        assert_eq!(
            render_column(&ts),
            ["\"2024-01-01 12:30:00.123456+00:00\"", "\"NaT\""]
        );
        assert_eq!(py_bytes_repr(b"a'\x00"), "b\"a'\\x00\"");
        let list: ArrayRef = Arc::new(
            arrow_array::ListArray::from_iter_primitive::<Int64Type, _, _>(vec![Some(vec![
                Some(1),
                Some(2),
            ])]),
        );
        assert_eq!(render_column(&list), ["\"[1 2]\""]);
    }
}
