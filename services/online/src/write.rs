//! Writes into the online store: `write_to_online_store` (one feature view) and `push` (every
//! view fed by a push source), from the HTTP (`/write-to-online-store`, `/push`) and gRPC
//! (`GrpcFeatureServer`) routes.
//!
//! A request is a columnar frame (column name → one value per row). Every row is checked
//! against the view's schema and typed by its declared types *before* anything is written, so
//! a bad column or value is a 422 naming it and leaves the store untouched; the rows of one
//! view then go to the store in one batch, newer-wins by event timestamp.
//!
//! Columns, as Feast's `ingest_df`: the batch source's `field_mapping` renames columns first;
//! then one column per join key and per feature, and the event timestamp from the batch
//! source's `timestamp_field` or, as the remote SDK sends it, `event_timestamp` (the created
//! timestamp likewise from `created_timestamp_column` or `created`, optional). Other columns
//! are ignored. Timestamps are ISO-8601 strings (naive = UTC).
//!
//! Differences from Feast's Python server, on purpose: a missing feature or join-key column, a
//! value of the wrong type, a null join key or event timestamp are 422s naming the column and
//! row (Feast: 500 with a pandas `KeyError`); a numeric event timestamp is rejected rather
//! than read as nanoseconds since the epoch.

use std::collections::HashMap;
use std::sync::Arc;

use feast_core::error::{ErrorClass, FeastError};
use feast_core::model::{DUMMY_ENTITY_ID, DUMMY_ENTITY_VAL};
use feast_core::registry::Catalog;
use feast_core::types::ValueType;
use feast_core::value::{is_null, json_to_value, parse_iso_timestamp};
use feast_proto::core;
use feast_proto::types::value::Val;
use feast_proto::types::{EntityKey, Value};
use prost_types::Timestamp;
use serde::Deserialize;
use serde_json::{Map, Value as Json};

use crate::serving::ServeError;
use crate::store::{OnlineStore, TableRef, WriteRow, serialize_entity_key};

fn yes() -> bool {
    true
}

/// The body of `POST /write-to-online-store` (Feast's `WriteToFeatureStoreRequest`).
#[derive(Debug, Deserialize)]
pub struct WriteToOnlineStoreRequest {
    pub feature_view_name: String,
    /// Column name → values, one per row.
    pub df: Map<String, Json>,
    /// Accepted for compatibility: the server always reads its cached registry.
    #[serde(default = "yes")]
    pub allow_registry_cache: bool,
    #[serde(default = "yes")]
    pub transform_on_write: bool,
}

/// The body of `POST /push` (Feast's `PushFeaturesRequest`).
#[derive(Debug, Deserialize)]
pub struct PushRequest {
    pub push_source_name: String,
    pub df: Map<String, Json>,
    #[serde(default = "yes")]
    pub allow_registry_cache: bool,
    /// `online` (default), `offline` or `online_and_offline`.
    #[serde(default = "default_to")]
    pub to: String,
    #[serde(default = "yes")]
    pub transform_on_write: bool,
}

fn default_to() -> String {
    "online".into()
}

/// Where a push goes (Feast's `PushMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushMode {
    Online,
    Offline,
    OnlineAndOffline,
}

impl PushMode {
    /// Feast's spelling, as in the request's `to`.
    pub fn as_str(self) -> &'static str {
        match self {
            PushMode::Online => "online",
            PushMode::Offline => "offline",
            PushMode::OnlineAndOffline => "online_and_offline",
        }
    }

    /// Parses the request's `to`; anything else is a 422 listing the valid values.
    pub fn parse(to: &str) -> Result<Self, ServeError> {
        match to {
            "online" => Ok(PushMode::Online),
            "offline" => Ok(PushMode::Offline),
            "online_and_offline" => Ok(PushMode::OnlineAndOffline),
            other => Err(ServeError::Unprocessable(format!(
                "{other} is not a supported push format. Please specify one of these \
                 ['online', 'offline', 'online_and_offline']."
            ))),
        }
    }
}

/// A columnar frame: named columns of equal length.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    columns: Vec<(String, Vec<Json>)>,
    rows: usize,
}

impl Frame {
    /// From the `df` of a JSON request: every value must be an array, all of one length.
    pub fn from_columns(df: Map<String, Json>) -> Result<Self, ServeError> {
        let mut frame = Frame::default();
        for (name, values) in df {
            let Json::Array(values) = values else {
                return Err(ServeError::Unprocessable(format!(
                    "df[{name:?}] must be a list of values, one per row"
                )));
            };
            frame.push_column(name, values)?;
        }
        Ok(frame)
    }

    /// A one-row frame (the gRPC requests carry one row as a map).
    pub fn from_row(row: impl IntoIterator<Item = (String, Json)>) -> Self {
        let columns: Vec<(String, Vec<Json>)> =
            row.into_iter().map(|(name, v)| (name, vec![v])).collect();
        let rows = usize::from(!columns.is_empty());
        Frame { columns, rows }
    }

    fn push_column(&mut self, name: String, values: Vec<Json>) -> Result<(), ServeError> {
        if !self.columns.is_empty() && values.len() != self.rows {
            return Err(ServeError::Unprocessable(format!(
                "all df columns must have the same length: {name:?} has {} values, another \
                 column has {}",
                values.len(),
                self.rows
            )));
        }
        self.rows = values.len();
        self.columns.push((name, values));
        Ok(())
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The columns as pushed: name and values.
    pub fn columns(&self) -> impl Iterator<Item = (&str, &[Json])> {
        self.columns.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// The columns after the batch source's `field_mapping` (source column → feature name);
    /// two columns ending up with one name is a 422.
    fn mapped<'a>(
        &'a self,
        mapping: &'a HashMap<String, String>,
    ) -> Result<HashMap<&'a str, &'a [Json]>, ServeError> {
        let mut out: HashMap<&'a str, &'a [Json]> = HashMap::with_capacity(self.columns.len());
        for (name, values) in &self.columns {
            let target = mapping.get(name).map_or(name.as_str(), String::as_str);
            if out.insert(target, values).is_some() {
                return Err(ServeError::Unprocessable(format!(
                    "df has two columns named {target:?} once the batch source's field_mapping \
                     is applied"
                )));
            }
        }
        Ok(out)
    }
}

/// What a write needs to know about a feature view or stream feature view.
/// How writes lay rows out in the online store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteLayout {
    /// The repository's `entity_key_serialization_version`.
    pub entity_key_serialization_version: u32,
    /// The registry's `enable_online_feature_view_versioning`: a view's rows go under its
    /// current version's name (`{view}_v{N}`, N > 0).
    pub versioning: bool,
}

struct Target<'a> {
    name: &'a str,
    /// The view's current version (`meta.current_version_number`).
    version: i32,
    features: &'a [core::FeatureSpecV2],
    entity_columns: &'a [core::FeatureSpecV2],
    batch_source: Option<&'a core::DataSource>,
}

impl<'a> Target<'a> {
    fn of_view(fv: &'a core::FeatureView) -> Option<Self> {
        let spec = fv.spec.as_ref()?;
        Some(Target {
            name: &spec.name,
            version: fv.meta.as_ref().map_or(0, |m| m.current_version_number),
            features: &spec.features,
            entity_columns: &spec.entity_columns,
            batch_source: spec.batch_source.as_ref(),
        })
    }

    fn of_stream_view(sfv: &'a core::StreamFeatureView) -> Option<Self> {
        let spec = sfv.spec.as_ref()?;
        Some(Target {
            name: &spec.name,
            version: sfv.meta.as_ref().map_or(0, |m| m.current_version_number),
            features: &spec.features,
            entity_columns: &spec.entity_columns,
            batch_source: spec.batch_source.as_ref(),
        })
    }
}

/// Rows written per feature view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    pub written: Vec<(String, usize)>,
    /// Why nothing was written for a view, when that happened (empty frame, all features null);
    /// Feast warns and returns success in these cases.
    pub warnings: Vec<String>,
}

fn value_type(spec: &core::FeatureSpecV2) -> ValueType {
    ValueType::try_from(spec.value_type).unwrap_or(ValueType::Invalid)
}

fn parse_timestamp(column: &str, row: usize, j: &Json) -> Result<Timestamp, ServeError> {
    let parsed = match j {
        Json::String(s) => parse_iso_timestamp(s).map(|(dt, _)| Timestamp {
            seconds: dt.timestamp(),
            nanos: dt.timestamp_subsec_nanos() as i32,
        }),
        _ => None,
    };
    parsed.ok_or_else(|| {
        ServeError::Unprocessable(format!(
            "df[{column:?}][{row}]: expected an ISO-8601 date-time string such as \
             \"2024-05-01T10:00:00\" (naive = UTC), got {j}"
        ))
    })
}

/// Checks and types `frame` for one view; `None` when there is nothing to write.
fn rows_for(
    target: &Target<'_>,
    frame: &Frame,
    key_version: u32,
) -> Result<Result<Vec<WriteRow>, String>, ServeError> {
    let name = target.name;
    if frame.rows() == 0 {
        return Ok(Err(format!(
            "Cannot write empty dataframe to online store (feature view {name})"
        )));
    }
    let mapping: HashMap<String, String> = target
        .batch_source
        .map(|s| {
            s.field_mapping
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let columns = frame.mapped(&mapping)?;
    let column = |wanted: &str, what: &str| -> Result<&[Json], ServeError> {
        columns.get(wanted).copied().ok_or_else(|| {
            ServeError::Unprocessable(format!(
                "feature view {name}: df has no column {wanted:?} ({what})"
            ))
        })
    };

    // Features, typed by the declared dtypes.
    let mut features: Vec<(&str, Vec<Value>)> = Vec::with_capacity(target.features.len());
    for f in target.features {
        let values = column(&f.name, "a feature of the view")?;
        let vt = value_type(f);
        let typed = values
            .iter()
            .enumerate()
            .map(|(row, v)| {
                json_to_value(v, vt).map_err(|e| {
                    ServeError::Unprocessable(format!(
                        "feature view {name}: df[{:?}][{row}]: {e} (the feature is declared {})",
                        f.name,
                        vt.as_str_name()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        features.push((&f.name, typed));
    }
    if !features.is_empty() && features.iter().all(|(_, vs)| vs.iter().all(is_null)) {
        return Ok(Err(format!(
            "Cannot write dataframe with empty feature columns to online store (feature view \
             {name})"
        )));
    }

    // Join keys; entity-less views use Feast's placeholder key.
    let mut keys: Vec<(&str, Vec<Value>)> = Vec::new();
    for col in target.entity_columns {
        if col.name == DUMMY_ENTITY_ID {
            continue;
        }
        let values = column(&col.name, "a join key of the view")?;
        let vt = value_type(col);
        let typed = values
            .iter()
            .enumerate()
            .map(|(row, v)| {
                if v.is_null() {
                    return Err(ServeError::Unprocessable(format!(
                        "feature view {name}: df[{:?}][{row}] is null; join keys need a value",
                        col.name
                    )));
                }
                json_to_value(v, vt).map_err(|e| {
                    ServeError::Unprocessable(format!(
                        "feature view {name}: df[{:?}][{row}]: {e} (the join key is declared {})",
                        col.name,
                        vt.as_str_name()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        keys.push((&col.name, typed));
    }
    if keys.is_empty() {
        let dummy = Value {
            val: Some(Val::StringVal(DUMMY_ENTITY_VAL.into())),
        };
        keys.push((DUMMY_ENTITY_ID, vec![dummy; frame.rows()]));
    }

    // Timestamps.
    let source_ts = target
        .batch_source
        .map(|s| s.timestamp_field.as_str())
        .filter(|f| !f.is_empty());
    let ts_name = source_ts
        .filter(|f| columns.contains_key(f))
        .unwrap_or("event_timestamp");
    let event_ts = column(
        ts_name,
        "the event timestamp: the batch source's timestamp_field or event_timestamp",
    )?;
    let created_name = target
        .batch_source
        .map(|s| s.created_timestamp_column.as_str())
        .filter(|f| !f.is_empty() && columns.contains_key(f))
        .unwrap_or("created");
    let created = columns.get(created_name).copied();

    let mut rows = Vec::with_capacity(frame.rows());
    for row in 0..frame.rows() {
        let mut key = EntityKey::default();
        for (jk, values) in &keys {
            key.join_keys.push(jk.to_string());
            key.entity_values.push(values[row].clone());
        }
        let entity_key = serialize_entity_key(&key, key_version).map_err(|e| {
            ServeError::Unprocessable(format!("feature view {name}: row {row}: {e}"))
        })?;
        let ts_value = &event_ts[row];
        if ts_value.is_null() {
            return Err(ServeError::Unprocessable(format!(
                "feature view {name}: df[{ts_name:?}][{row}] is null; every row needs an event \
                 timestamp"
            )));
        }
        let event_ts = parse_timestamp(ts_name, row, ts_value)?;
        let created_ts = match created.map(|c| &c[row]) {
            None | Some(Json::Null) => None,
            Some(j) => Some(parse_timestamp(created_name, row, j)?),
        };
        rows.push(WriteRow {
            entity_key,
            features: features
                .iter()
                .map(|(f, vs)| (f.to_string(), vs[row].clone()))
                .collect(),
            event_ts,
            created_ts,
        });
    }
    Ok(Ok(rows))
}

/// Writes the checked rows of each target; every target is checked before the first write.
async fn write_targets(
    targets: &[Target<'_>],
    project: &str,
    store: &Arc<dyn OnlineStore>,
    layout: WriteLayout,
    frame: &Frame,
) -> Result<WriteOutcome, ServeError> {
    let mut batches = Vec::with_capacity(targets.len());
    for t in targets {
        let rows = rows_for(t, frame, layout.entity_key_serialization_version)?;
        batches.push((t.name, t.version, rows));
    }
    let mut outcome = WriteOutcome::default();
    for (name, version, rows) in batches {
        match rows {
            Ok(rows) => {
                let online_name =
                    feast_core::version::online_view_name(name, Some(version), layout.versioning);
                let written = store
                    .write_creating(&TableRef::new(project, online_name), &rows)
                    .await?;
                outcome.written.push((name.to_string(), written));
            }
            Err(warning) => {
                tracing::warn!(message = "nothing written", feature_view = name, reason = %warning);
                outcome.warnings.push(warning);
            }
        }
    }
    Ok(outcome)
}

/// `write_to_online_store`: writes `frame` to the feature view or stream feature view
/// `view_name`. On-demand feature views need their transformation and are refused (422).
pub async fn write_to_online_store(
    catalog: &Catalog,
    project: &str,
    store: &Arc<dyn OnlineStore>,
    layout: WriteLayout,
    view_name: &str,
    frame: &Frame,
) -> Result<WriteOutcome, ServeError> {
    let target = if let Ok(fv) = catalog.get::<core::FeatureView>(view_name, project) {
        Target::of_view(fv)
    } else if let Ok(sfv) = catalog.get::<core::StreamFeatureView>(view_name, project) {
        Target::of_stream_view(sfv)
    } else if catalog
        .get::<core::OnDemandFeatureView>(view_name, project)
        .is_ok()
    {
        return Err(ServeError::Unprocessable(format!(
            "{view_name} is an on-demand feature view: feast-rs does not execute on-demand \
             transformations yet, so it cannot write its outputs"
        )));
    } else {
        return Err(ServeError::Feast(FeastError::new(
            ErrorClass::FeastObjectNotFoundException,
            format!("Can't recognize feast object with a name {view_name}"),
        )));
    };
    let target = target.ok_or_else(|| {
        ServeError::Internal(format!(
            "feature view {view_name} has no spec in the registry"
        ))
    })?;
    write_targets(&[target], project, store, layout, frame).await
}

/// Whether `source` is the push source named `name`.
fn is_push_source(source: Option<&core::DataSource>, name: &str) -> bool {
    source.is_some_and(|s| {
        s.r#type == core::data_source::SourceType::PushSource as i32 && s.name == name
    })
}

/// The feature views and stream feature views whose stream source is the push source
/// `push_source_name`, by name.
fn push_targets<'a>(
    catalog: &'a Catalog,
    project: &'a str,
    push_source_name: &str,
) -> Vec<Target<'a>> {
    static NO_TAGS: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    let no_tags = &NO_TAGS;
    let is_push = |s: Option<&core::DataSource>| is_push_source(s, push_source_name);
    let mut targets: Vec<Target<'a>> = catalog
        .list::<core::FeatureView>(project, no_tags)
        .filter(|fv| is_push(fv.spec.as_ref().and_then(|s| s.stream_source.as_ref())))
        .filter_map(Target::of_view)
        .chain(
            catalog
                .list::<core::StreamFeatureView>(project, no_tags)
                .filter(|v| is_push(v.spec.as_ref().and_then(|s| s.stream_source.as_ref())))
                .filter_map(Target::of_stream_view),
        )
        .collect();
    targets.sort_by(|a, b| a.name.cmp(b.name));
    targets
}

/// Where pushes with `to: offline | online_and_offline` go: the offline store's
/// `offline_write_batch` (the embedded file engine, or the offline server over Flight).
pub trait OfflineWriter: Send + Sync + 'static {
    /// Appends the rows of `frame`, as pushed, to the batch source of `view`; returns the
    /// number of rows written. The store checks the columns against the source's (missing
    /// or unexpected columns are an error) and converts values to the source's types.
    fn write(
        &self,
        view: &core::FeatureView,
        frame: &Frame,
    ) -> crate::materialize::BoxFuture<Result<usize, ServeError>>;
}

/// `push`: writes `frame` to every view fed by the push source: to the online store (one
/// batch write per view), then to the offline store, once per distinct batch source of
/// those views (Feast appends the rows once per view, so two views over one batch source
/// would store them twice). An offline push without an offline writer is refused before
/// anything is written, so `online_and_offline` never lands half for that reason.
#[allow(clippy::too_many_arguments)]
pub async fn push(
    catalog: &Catalog,
    project: &str,
    store: &Arc<dyn OnlineStore>,
    offline: Option<&dyn OfflineWriter>,
    layout: WriteLayout,
    push_source_name: &str,
    frame: &Frame,
    to: PushMode,
) -> Result<WriteOutcome, ServeError> {
    let targets = push_targets(catalog, project, push_source_name);
    if targets.is_empty() {
        return Err(ServeError::Rejected(FeastError::new(
            ErrorClass::PushSourceNotFoundException,
            format!("Unable to find push source '{push_source_name}'."),
        )));
    }
    let offline = match (to, offline) {
        (PushMode::Online, _) => None,
        (_, Some(writer)) => Some((writer, offline_targets(catalog, project, push_source_name)?)),
        (_, None) => {
            return Err(ServeError::Unimplemented(format!(
                "this feature server has no offline store it can write to (push source \
                 {push_source_name}): push with to=\"online\", or configure an offline store \
                 feast-rs writes (file, or a remote offline server)"
            )));
        }
    };
    let mut outcome = WriteOutcome::default();
    if to != PushMode::Offline {
        outcome = write_targets(&targets, project, store, layout, frame).await?;
    }
    if let Some((writer, views)) = offline {
        for view in views {
            writer.write(view, frame).await?;
        }
    }
    Ok(outcome)
}

/// The views whose batch sources an offline push appends to: one per distinct batch
/// source among the views (and stream views) fed by the push source.
fn offline_targets<'a>(
    catalog: &'a Catalog,
    project: &'a str,
    push_source_name: &str,
) -> Result<Vec<&'a core::FeatureView>, ServeError> {
    use feast_core::model::FeatureViewExt;
    static NO_TAGS: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    let no_tags = &NO_TAGS;
    let fed = |s: Option<&core::DataSource>| is_push_source(s, push_source_name);
    let mut views: Vec<&core::FeatureView> = catalog
        .list::<core::FeatureView>(project, no_tags)
        .filter(|fv| fed(fv.spec.as_ref().and_then(|s| s.stream_source.as_ref())))
        .collect();
    views.sort_by(|a, b| a.spec_ref().name.cmp(&b.spec_ref().name));
    let mut seen = std::collections::BTreeSet::new();
    let mut targets = Vec::new();
    for view in views {
        let spec = view.spec_ref();
        let Some(batch) = spec.batch_source.as_ref() else {
            return Err(ServeError::Unprocessable(format!(
                "feature view {} has no batch source to push offline rows to",
                spec.name
            )));
        };
        if seen.insert(batch.name.clone()) {
            targets.push(view);
        }
    }
    if targets.is_empty() {
        return Err(ServeError::Unprocessable(format!(
            "no feature view fed by push source {push_source_name} has a batch source: \
             stream feature views take offline pushes only through their feature view"
        )));
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_need_arrays_of_one_length() {
        let ok = Frame::from_columns(
            json!({"a": [1, 2], "b": ["x", "y"]})
                .as_object()
                .unwrap()
                .clone(),
        )
        .unwrap();
        assert_eq!(ok.rows(), 2);
        let ragged = Frame::from_columns(
            json!({"a": [1, 2], "b": ["x"]})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert!(
            ragged
                .unwrap_err()
                .to_feast()
                .message
                .contains("same length")
        );
        let scalar = Frame::from_columns(json!({"a": 1}).as_object().unwrap().clone());
        assert!(
            scalar
                .unwrap_err()
                .to_feast()
                .message
                .contains("must be a list")
        );
        assert_eq!(Frame::from_row([("a".to_string(), json!(1))]).rows(), 1);
        assert_eq!(Frame::from_row([]).rows(), 0);
    }

    #[test]
    fn push_modes_parse_as_feast_spells_them() {
        assert_eq!(PushMode::parse("online").unwrap(), PushMode::Online);
        assert_eq!(PushMode::parse("offline").unwrap(), PushMode::Offline);
        assert_eq!(
            PushMode::parse("online_and_offline").unwrap(),
            PushMode::OnlineAndOffline
        );
        let e = PushMode::parse("both").unwrap_err();
        assert_eq!(e.http_status(), 422);
    }

    #[test]
    fn timestamps_keep_sub_second_precision() {
        let t =
            parse_timestamp("event_timestamp", 0, &json!("2024-05-01T10:00:00.123456")).unwrap();
        assert_eq!((t.seconds, t.nanos), (1714557600, 123_456_000));
        let z = parse_timestamp("event_timestamp", 0, &json!("2024-05-01 12:00:00+02:00")).unwrap();
        assert_eq!((z.seconds, z.nanos), (1714557600, 0));
        let e = parse_timestamp("event_timestamp", 3, &json!(1714557600)).unwrap_err();
        assert!(e.to_feast().message.contains("df[\"event_timestamp\"][3]"));
    }
}
