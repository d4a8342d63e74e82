//! feast-rs materializer: the latest offline value of every entity, written to the online
//! store, as Feast's `materialize` / `materialize_incremental` do.
//!
//! - [`plan`] picks the feature views and the time window of each: `[start, end]` as given,
//!   or, incrementally, from the view's last materialized end (else `now - ttl`, else one
//!   year back for a ttl of 0, as Feast) to `end`.
//! - [`materialize_view`] streams one view: `pull_latest_from_table_or_query` on the offline
//!   store (the latest row per entity in the window; the created timestamp breaks ties),
//!   each record batch converted to Feast `Value`s by the view's declared types and written
//!   to the online store as it arrives, so memory stays at a batch or two whatever the
//!   table size. Online writes are newer-wins, so re-running a window, or an overlapping
//!   one, never regresses a value.
//!
//! Recording the materialized interval in the registry (`apply_materialization`) is the
//! caller's last step, after every batch of the view is written: a job that fails midway
//! records nothing, and the next incremental run redoes the window.

pub mod lease;
mod local;
pub mod metrics;
mod record;
mod remote;
pub mod schedule;
pub mod service;

pub use local::LocalMaterializer;
pub use record::IntervalRecorder;
pub use remote::RemoteMaterializer;
pub use service::{JobManager, MaterializerService};

/// The materializer service's default port.
pub const DEFAULT_PORT: u16 = 6571;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use feast_core::arrow_value::array_to_values;
use feast_core::error::FeastError;
use feast_core::model::{DUMMY_ENTITY_ID, DUMMY_ENTITY_VAL, FeatureViewExt};
use feast_core::registry::Catalog;
use feast_core::types::ValueType;
use feast_offline::{OfflineError, OfflineStore, PullKind, PullRequest};
use feast_online::{OnlineStore, OnlineStoreError, TableRef, WriteRow, serialize_entity_key};
use feast_proto::core;
use feast_proto::types::{EntityKey, Value, value::Val};
use futures::{StreamExt, TryStreamExt};
use prost_types::Timestamp;

#[derive(Debug, thiserror::Error)]
pub enum MaterializeError {
    /// A registry lookup failed, with Feast's class.
    #[error("{0}")]
    Feast(#[from] FeastError),
    /// The request cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
    /// Reading the offline store failed.
    #[error("offline store: {0}")]
    Offline(#[from] OfflineError),
    /// Writing the online store failed.
    #[error("{0}")]
    Online(#[from] OnlineStoreError),
    /// Recording the interval in the registry failed (the rows are written; the next
    /// incremental run redoes the window).
    #[error("recording the materialization in the registry: {0}")]
    Registry(String),
    /// Converting the pulled rows failed.
    #[error("feature view {view}: {message}")]
    Convert { view: String, message: String },
}

impl MaterializeError {
    /// Whether retrying later may succeed (an online store that is down, a spill that ran
    /// out of disk): the per-view retry loop retries only these.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            MaterializeError::Online(OnlineStoreError::Unavailable(_))
        )
    }
}

pub type Result<T, E = MaterializeError> = std::result::Result<T, E>;

/// The time range of a job (shared with the feature server's `/materialize` routes).
pub use feast_online::materialize::Range;

/// One feature view of a job and its window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewWindow {
    pub view: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// A note to show the user about how the window was chosen (Feast prints one for a
    /// ttl of 0).
    pub note: Option<String>,
}

/// The end of the view's last materialized interval (Feast's `most_recent_end_time`).
pub fn most_recent_end(view: &core::FeatureView) -> Option<DateTime<Utc>> {
    view.meta
        .as_ref()?
        .materialization_intervals
        .iter()
        .filter_map(|i| i.end_time.as_ref())
        .filter_map(|t| Utc.timestamp_opt(t.seconds, t.nanos.max(0) as u32).single())
        .max()
}

/// The views to materialize (`names`, or every view with `online: true` when empty) and
/// their windows, as Feast's `materialize` / `materialize_incremental` choose them.
pub fn plan(
    catalog: &Catalog,
    project: &str,
    names: &[String],
    range: Range,
    now: DateTime<Utc>,
) -> Result<Vec<ViewWindow>> {
    let no_tags = BTreeMap::new();
    let views: Vec<&core::FeatureView> = if names.is_empty() {
        catalog
            .list::<core::FeatureView>(project, &no_tags)
            .filter(|v| v.spec_ref().online)
            .collect()
    } else {
        let mut views = Vec::with_capacity(names.len());
        for name in names {
            let view = match catalog.get::<core::FeatureView>(name, project) {
                Ok(v) => v,
                Err(e) => {
                    if catalog
                        .get::<core::StreamFeatureView>(name, project)
                        .is_ok()
                    {
                        return Err(MaterializeError::Invalid(format!(
                            "{name} is a stream feature view: feast-rs does not materialize \
                             stream feature views yet"
                        )));
                    }
                    if catalog
                        .get::<core::OnDemandFeatureView>(name, project)
                        .is_ok()
                    {
                        return Err(MaterializeError::Invalid(format!(
                            "{name} is an on-demand feature view: feast-rs does not execute \
                             on-demand transformations yet"
                        )));
                    }
                    return Err(e.into());
                }
            };
            if !view.spec_ref().online {
                return Err(MaterializeError::Invalid(format!(
                    "FeatureView {name} is not configured to be served online."
                )));
            }
            views.push(view);
        }
        views
    };
    let mut windows = Vec::with_capacity(views.len());
    for view in views {
        let name = view.spec_ref().name.clone();
        let (start, end, note) = match range {
            Range::Between { start, end } => (start, end, None),
            Range::Everything => (DateTime::<Utc>::UNIX_EPOCH, now, None),
            Range::Incremental { end } => match (most_recent_end(view), view.ttl()) {
                (Some(last), _) => (last, end, None),
                (None, Some(ttl)) => (
                    now - Duration::from_std(ttl).unwrap_or(Duration::MAX),
                    end,
                    None,
                ),
                (None, None) => (
                    now - Duration::weeks(52),
                    end,
                    Some(format!(
                        "Since the ttl is 0 for feature view {name}, the start date will be \
                         set to 1 year before the current time."
                    )),
                ),
            },
        };
        if start >= end {
            if matches!(range, Range::Incremental { .. }) {
                // Already materialized up to `end` (or its ttl window ends before `end`):
                // nothing to do, nothing to record.
                tracing::info!(
                    message = "feature view already up to date",
                    view = %name,
                    start = %start,
                    end = %end
                );
                continue;
            }
            return Err(MaterializeError::Invalid(format!(
                "feature view {name}: the start {start} is not before the end {end}"
            )));
        }
        windows.push(ViewWindow {
            view: name,
            start,
            end,
            note,
        });
    }
    Ok(windows)
}

/// The names of the views `call` covers on `catalog`: what the feature server authorizes
/// and guards before a job runs.
pub fn resolve_views(
    catalog: &Catalog,
    project: &str,
    call: &feast_online::materialize::MaterializeCall,
) -> Result<Vec<String>> {
    let windows = plan(
        catalog,
        project,
        &call.views,
        call.range,
        chrono::Utc::now(),
    )?;
    Ok(windows.into_iter().map(|w| w.view).collect())
}

/// Settings of a materialization.
#[derive(Debug, Clone)]
pub struct Options {
    /// The repository's `entity_key_serialization_version`.
    pub entity_key_serialization_version: u32,
    /// Rows per online write (a pulled batch is split into writes of at most this many).
    pub write_batch_rows: usize,
    /// Online writes of one view in flight at once.
    pub writes_in_flight: usize,
    /// The registry's `enable_online_feature_view_versioning`: a view's rows go under its
    /// current version's online name (`{view}_v{N}`, N > 0), where reads look for them.
    pub versioning: bool,
}

impl Options {
    /// The defaults, with the online layout `config` declares.
    pub fn for_config(config: &feast_core::config::RepoConfig) -> Self {
        Self {
            entity_key_serialization_version: config.entity_key_serialization_version,
            versioning: config
                .registry
                .common()
                .enable_online_feature_view_versioning,
            ..Self::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            entity_key_serialization_version:
                feast_core::entity_key::DEFAULT_ENTITY_KEY_SERIALIZATION_VERSION,
            write_batch_rows: 10_000,
            writes_in_flight: 4,
            versioning: false,
        }
    }
}

/// What one view's materialization did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewReport {
    /// Rows pulled from the offline store (one per entity).
    pub rows: u64,
    /// Rows the online store wrote (a row older than the stored one is skipped).
    pub written: u64,
}

/// How the columns of the pulled rows map onto the view.
struct Layout {
    /// (join key, source column, type); empty for an entity-less view.
    keys: Vec<(String, String, ValueType)>,
    /// (feature, source column, type).
    features: Vec<(String, String, ValueType)>,
    timestamp: String,
    created: Option<String>,
}

fn layout(view: &core::FeatureView, source: &core::DataSource) -> Layout {
    let spec = view.spec_ref();
    let source_col = |name: &str| {
        source
            .field_mapping
            .iter()
            .find(|(_, to)| to.as_str() == name)
            .map(|(from, _)| from.clone())
            .unwrap_or_else(|| name.to_string())
    };
    let typed = |f: &core::FeatureSpecV2| {
        (
            f.name.clone(),
            source_col(&f.name),
            ValueType::try_from(f.value_type).unwrap_or(ValueType::Invalid),
        )
    };
    Layout {
        keys: spec
            .entity_columns
            .iter()
            .filter(|c| c.name != DUMMY_ENTITY_ID)
            .map(typed)
            .collect(),
        features: spec.features.iter().map(typed).collect(),
        timestamp: source.timestamp_field.clone(),
        created: Some(source.created_timestamp_column.clone()).filter(|c| !c.is_empty()),
    }
}

/// Materializes one view's window: pull, convert, write, batch by batch. `progress` is
/// called after each write with the rows written so far. Does not record the interval.
pub async fn materialize_view<S: OfflineStore>(
    offline: &S,
    online: &Arc<dyn OnlineStore>,
    catalog: &Catalog,
    project: &str,
    window: &ViewWindow,
    options: &Options,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<ViewReport> {
    let view: &core::FeatureView = catalog.get(&window.view, project)?;
    let name = &window.view;
    let source = view.spec_ref().batch_source.as_ref().ok_or_else(|| {
        MaterializeError::Invalid(format!("feature view {name} has no batch source"))
    })?;
    let layout = layout(view, source);
    let request = PullRequest {
        join_key_columns: layout.keys.iter().map(|k| k.1.clone()).collect(),
        feature_name_columns: layout.features.iter().map(|f| f.1.clone()).collect(),
        timestamp_field: layout.timestamp.clone(),
        created_timestamp_column: layout.created.clone(),
        start: Some(window.start),
        end: Some(window.end),
    };
    let version = view.meta.as_ref().map(|m| m.current_version_number);
    let table = TableRef::new(
        project,
        feast_core::version::online_view_name(name, version, options.versioning),
    );
    let stream = offline.pull(source, &request, PullKind::Latest).await?;
    let chunk_rows = options.write_batch_rows.max(1);
    let key_version = options.entity_key_serialization_version;
    // Pulled batches are converted as they arrive and written in chunks, up to
    // `writes_in_flight` chunks at once: one row per entity, so concurrent chunks never
    // touch the same key. The stream stops at the first error.
    let mut writes = stream
        .map(|batch| -> Result<Vec<Vec<WriteRow>>> {
            let batch = batch.map_err(OfflineError::from)?;
            let rows = convert(name, &layout, &batch, key_version)?;
            Ok(rows.chunks(chunk_rows).map(<[WriteRow]>::to_vec).collect())
        })
        .map_ok(|chunks| futures::stream::iter(chunks.into_iter().map(Ok)))
        .try_flatten()
        .map_ok(|chunk| {
            let table = &table;
            async move {
                let written = online.write_creating(table, &chunk).await?;
                Ok::<_, MaterializeError>((chunk.len() as u64, written as u64))
            }
        })
        .try_buffer_unordered(options.writes_in_flight.max(1));
    let mut report = ViewReport::default();
    while let Some((rows, written)) = writes.try_next().await? {
        report.rows += rows;
        report.written += written;
        progress(report.rows);
    }
    Ok(report)
}

/// One view's window, end to end: [`materialize_view`], retried up to three times with
/// backoff (0.5, 1, 2 s) while the online store is unavailable, then the interval recorded
/// in the registry. Nothing is recorded if the rows could not all be written.
#[allow(clippy::too_many_arguments)]
pub async fn run_window<S: OfflineStore>(
    offline: &S,
    online: &Arc<dyn OnlineStore>,
    recorder: &IntervalRecorder,
    catalog: &Catalog,
    project: &str,
    window: &ViewWindow,
    options: &Options,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<ViewReport> {
    let mut attempt = 0;
    let report = loop {
        match materialize_view(offline, online, catalog, project, window, options, progress).await {
            Err(e) if e.is_transient() && attempt < 3 => {
                let wait = std::time::Duration::from_millis(500 << attempt);
                tracing::warn!(
                    message = "online store unavailable; retrying the view",
                    view = %window.view,
                    error = %e,
                    wait_ms = wait.as_millis() as u64
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            other => break other?,
        }
    };
    recorder
        .record(project, &window.view, window.start, window.end)
        .await?;
    tracing::info!(
        message = "feature view materialized",
        view = %window.view,
        start = %window.start,
        end = %window.end,
        rows = report.rows,
        written = report.written
    );
    Ok(report)
}

fn column<'a>(batch: &'a RecordBatch, name: &str, view: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| MaterializeError::Convert {
            view: view.to_string(),
            message: format!("the pulled rows have no column {name}"),
        })
}

fn timestamps(array: &ArrayRef, view: &str, name: &str) -> Result<Vec<Option<Timestamp>>> {
    let micros = cast(
        array,
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    )
    .map_err(|e| MaterializeError::Convert {
        view: view.to_string(),
        message: format!("column {name} is not a timestamp: {e}"),
    })?;
    let micros = micros
        .as_any()
        .downcast_ref::<datafusion::arrow::array::TimestampMicrosecondArray>()
        .expect("cast to Timestamp(us) gives a TimestampMicrosecondArray");
    Ok((0..micros.len())
        .map(|i| {
            (!micros.is_null(i)).then(|| {
                let m = micros.value(i);
                Timestamp {
                    seconds: m.div_euclid(1_000_000),
                    nanos: (m.rem_euclid(1_000_000) * 1000) as i32,
                }
            })
        })
        .collect())
}

/// One pulled batch as online-store rows.
fn convert(
    view: &str,
    layout: &Layout,
    batch: &RecordBatch,
    key_version: u32,
) -> Result<Vec<WriteRow>> {
    let err = |message: String| MaterializeError::Convert {
        view: view.to_string(),
        message,
    };
    let n = batch.num_rows();
    let mut keys: Vec<(&str, Vec<Value>)> = Vec::with_capacity(layout.keys.len().max(1));
    for (key, source_col, vt) in &layout.keys {
        let values = array_to_values(column(batch, source_col, view)?, *vt)
            .map_err(|e| err(format!("join key {key}: {e}")))?;
        if let Some(row) = values.iter().position(|v| v.val.is_none()) {
            return Err(err(format!(
                "join key {key} is null in row {row}; every materialized row needs its keys"
            )));
        }
        keys.push((key, values));
    }
    if keys.is_empty() {
        let dummy = Value {
            val: Some(Val::StringVal(DUMMY_ENTITY_VAL.into())),
        };
        keys.push((DUMMY_ENTITY_ID, vec![dummy; n]));
    }
    let mut features: Vec<(&str, Vec<Value>)> = Vec::with_capacity(layout.features.len());
    for (feature, source_col, vt) in &layout.features {
        let values = array_to_values(column(batch, source_col, view)?, *vt)
            .map_err(|e| err(format!("feature {feature}: {e}")))?;
        features.push((feature, values));
    }
    let event_ts = timestamps(
        column(batch, &layout.timestamp, view)?,
        view,
        &layout.timestamp,
    )?;
    let created = match &layout.created {
        Some(c) => Some(timestamps(column(batch, c, view)?, view, c)?),
        None => None,
    };
    let mut rows = Vec::with_capacity(n);
    for row in 0..n {
        let key = EntityKey {
            join_keys: keys.iter().map(|(k, _)| k.to_string()).collect(),
            entity_values: keys.iter().map(|(_, v)| v[row].clone()).collect(),
        };
        let entity_key = serialize_entity_key(&key, key_version)?;
        let event_ts = event_ts[row].ok_or_else(|| {
            err(format!(
                "{} is null in row {row}; every row needs an event timestamp",
                layout.timestamp
            ))
        })?;
        rows.push(WriteRow {
            entity_key,
            features: features
                .iter()
                .map(|(f, vs)| (f.to_string(), vs[row].clone()))
                .collect(),
            event_ts,
            created_ts: created.as_ref().and_then(|c| c[row]),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, ttl_secs: i64, online: bool, last_end: Option<i64>) -> core::FeatureView {
        core::FeatureView {
            spec: Some(core::FeatureViewSpec {
                name: name.into(),
                project: "p".into(),
                ttl: Some(prost_types::Duration {
                    seconds: ttl_secs,
                    nanos: 0,
                }),
                online,
                ..Default::default()
            }),
            meta: Some(core::FeatureViewMeta {
                materialization_intervals: last_end
                    .into_iter()
                    .map(|end| core::MaterializationInterval {
                        start_time: Some(Timestamp {
                            seconds: end - 10,
                            nanos: 0,
                        }),
                        end_time: Some(Timestamp {
                            seconds: end,
                            nanos: 0,
                        }),
                    })
                    .collect(),
                ..Default::default()
            }),
        }
    }

    fn catalog() -> Catalog {
        Catalog::from_proto(core::Registry {
            feature_views: vec![
                view("with_ttl", 3600, true, None),
                view("done_before", 3600, true, Some(1_000_000)),
                view("no_ttl", 0, true, None),
                view("offline_only", 3600, false, None),
            ],
            ..Default::default()
        })
    }

    #[test]
    fn incremental_windows_start_where_feast_starts_them() {
        let now = Utc.timestamp_opt(2_000_000, 0).unwrap();
        let end = now;
        let windows = plan(&catalog(), "p", &[], Range::Incremental { end }, now).unwrap();
        let starts: Vec<(&str, i64, bool)> = windows
            .iter()
            .map(|w| (w.view.as_str(), w.start.timestamp(), w.note.is_some()))
            .collect();
        assert_eq!(
            starts,
            vec![
                ("with_ttl", 2_000_000 - 3600, false),
                ("done_before", 1_000_000, false),
                ("no_ttl", 2_000_000 - 52 * 7 * 86_400, true),
            ],
            "offline-only views are skipped when no view is named"
        );
    }

    #[test]
    fn named_views_must_exist_and_be_online() {
        let now = Utc.timestamp_opt(2_000_000, 0).unwrap();
        let range = Range::Between {
            start: now - Duration::hours(1),
            end: now,
        };
        let err = plan(&catalog(), "p", &["offline_only".into()], range, now).unwrap_err();
        assert!(
            err.to_string()
                .contains("not configured to be served online")
        );
        let err = plan(&catalog(), "p", &["nope".into()], range, now).unwrap_err();
        assert!(err.to_string().contains("Feature view nope does not exist"));
        let inverted = Range::Between {
            start: now,
            end: now - Duration::hours(1),
        };
        let err = plan(&catalog(), "p", &["with_ttl".into()], inverted, now).unwrap_err();
        assert!(err.to_string().contains("is not before the end"), "{err}");
        // Incremental up to an end already materialized: nothing to do.
        let earlier = Range::Incremental {
            end: Utc.timestamp_opt(999_999, 0).unwrap(),
        };
        assert!(
            plan(&catalog(), "p", &["done_before".into()], earlier, now)
                .unwrap()
                .is_empty()
        );
    }
}
