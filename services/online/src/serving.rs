//! `get_online_features`: resolves a request against a registry snapshot, reads the online
//! store once per feature view and builds Feast's column-major response JSON
//! (PROTOCOLS.md §2.2).
//!
//! Differences from Feast's Python feature server, on purpose:
//! - A stored row older than `now - ttl` (views with a TTL) is reported as
//!   `OUTSIDE_MAX_AGE` with a `null` value; Feast's Python server says `PRESENT` and returns
//!   the stale value (it only checks the age on the precomputed-vector path).
//! - A requested feature missing from a view is a 404 `FeastObjectNotFoundException`
//!   (Feast raises a `KeyError`, i.e. a 500 the client retries).
//! - A missing join key or an entity value of the wrong type is a 422 (Feast: 500), and so
//!   is a feature-name collision (Feast's `FeatureNameCollisionError`, a 500 there).
//! - On-demand feature views are not executed: naming one is a 422.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use feast_core::error::{ErrorClass, FeastError, StatusKind};
use feast_core::model::{DUMMY_ENTITY_ID, DUMMY_ENTITY_VAL, FeatureViewExt};
use feast_core::registry::Catalog;
use feast_core::types::ValueType;
use feast_core::value::{json_to_value, value_to_json};
use feast_proto::core;
use feast_proto::types::value::Val;
use feast_proto::types::{EntityKey, Value};
use prost_types::Timestamp;
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};

use crate::store::{OnlineStore, OnlineStoreError, TableRef, serialize_entity_key};

/// The body of `POST /get-online-features` (Feast's `GetOnlineFeaturesRequest`).
#[derive(Debug, Deserialize)]
pub struct GetOnlineFeaturesRequest {
    /// Column name → values, one per entity row; request order is kept.
    pub entities: Map<String, Json>,
    #[serde(default)]
    pub feature_service: Option<String>,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub full_feature_names: bool,
    #[serde(default)]
    pub include_feature_view_version_metadata: bool,
}

/// Why a request failed; [`ServeError::http_status`] maps it to a status code.
#[derive(Debug)]
pub enum ServeError {
    /// A Feast exception, sent as Feast's error envelope.
    Feast(FeastError),
    /// The request is well-formed JSON but cannot be served (missing join key, wrong type,
    /// unsupported feature): 422.
    Unprocessable(String),
    /// A Feast exception for a request that can never succeed, sent with status 422 (Feast
    /// says 500, which its client retries) so the client re-raises it at once.
    Rejected(FeastError),
    /// The registry was never loaded or the online store is unreachable: 503.
    Unavailable(String),
    /// Stored data that cannot be decoded: 500.
    Internal(String),
}

impl ServeError {
    pub fn http_status(&self) -> u16 {
        match self {
            ServeError::Feast(e) => match e.status() {
                StatusKind::NotFound => 404,
                StatusKind::PermissionDenied => 403,
                StatusKind::InvalidArgument => 400,
                StatusKind::Unprocessable => 422,
                StatusKind::Conflict => 409,
                StatusKind::Unavailable => 503,
                StatusKind::Unimplemented => 501,
                StatusKind::Internal => 500,
            },
            ServeError::Unprocessable(_) | ServeError::Rejected(_) => 422,
            ServeError::Unavailable(_) => 503,
            ServeError::Internal(_) => 500,
        }
    }

    /// The error as a Feast exception (class `FeastError` unless it is a Feast one), so the
    /// Python client re-raises it with this message.
    pub fn to_feast(&self) -> FeastError {
        match self {
            ServeError::Feast(e) | ServeError::Rejected(e) => e.clone(),
            ServeError::Unprocessable(m) | ServeError::Unavailable(m) | ServeError::Internal(m) => {
                FeastError::new(ErrorClass::FeastError, m.clone())
            }
        }
    }
}

impl From<OnlineStoreError> for ServeError {
    fn from(e: OnlineStoreError) -> Self {
        match e {
            OnlineStoreError::Unavailable(m) => ServeError::Unavailable(m),
            // A view applied to the registry but never written to this store: Feast's SQLite
            // store raises too; report it as unavailable data rather than a bad request.
            e @ OnlineStoreError::NoSuchTable(_) => ServeError::Unavailable(e.to_string()),
            OnlineStoreError::Invalid(m) => ServeError::Internal(m),
        }
    }
}

/// One feature view to read, as the request (or feature-service projection) names it.
struct ViewRead<'a> {
    fv: &'a core::FeatureView,
    /// The projection alias or the view name: the prefix of full feature names.
    name_to_use: String,
    /// Requested features, in request order, without duplicates.
    features: Vec<String>,
    /// View join key → request column (feature-service `join_key_map`).
    join_key_map: HashMap<String, String>,
}

impl ViewRead<'_> {
    fn request_column<'k>(&'k self, join_key: &'k str) -> &'k str {
        self.join_key_map
            .get(join_key)
            .map(String::as_str)
            .unwrap_or(join_key)
    }
}

fn feast(e: FeastError) -> ServeError {
    ServeError::Feast(e)
}

fn odfv_unsupported(name: &str) -> ServeError {
    ServeError::Unprocessable(format!(
        "{name} is an on-demand feature view: feast-rs does not execute on-demand \
         transformations yet; request the underlying feature views' features instead"
    ))
}

/// Resolves `request`'s features to the views to read, grouped per view in first-mention order.
fn resolve<'a>(
    catalog: &'a Catalog,
    project: &str,
    request: &GetOnlineFeaturesRequest,
) -> Result<Vec<ViewRead<'a>>, ServeError> {
    let mut reads: Vec<ViewRead<'a>> = Vec::new();
    if let Some(service) = &request.feature_service {
        let fs: &core::FeatureService = catalog.get(service, project).map_err(feast)?;
        let spec = fs.spec.as_ref();
        for proj in spec.map(|s| s.features.as_slice()).unwrap_or_default() {
            if proj.version_tag.is_some() {
                return Err(ServeError::Unprocessable(format!(
                    "feature service {service} pins a version of feature view {}: versioned \
                     reads are not supported by feast-rs yet",
                    proj.feature_view_name
                )));
            }
            let fv = lookup_view(catalog, project, &proj.feature_view_name)?;
            let name_to_use = if proj.feature_view_name_alias.is_empty() {
                proj.feature_view_name.clone()
            } else {
                proj.feature_view_name_alias.clone()
            };
            let features = if proj.feature_columns.is_empty() {
                fv.feature_names().iter().map(|s| s.to_string()).collect()
            } else {
                proj.feature_columns
                    .iter()
                    .map(|c| c.name.clone())
                    .collect()
            };
            reads.push(ViewRead {
                fv,
                name_to_use,
                features,
                join_key_map: proj
                    .join_key_map
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            });
        }
        check_collisions(&reads, request.full_feature_names)?;
        return Ok(reads);
    }
    for reference in &request.features {
        let Some((view, feature)) = reference.split_once(':') else {
            return Err(ServeError::Unprocessable(format!(
                "feature reference {reference:?} is not of the form \"feature_view:feature\""
            )));
        };
        if view.contains('@') {
            return Err(ServeError::Unprocessable(format!(
                "versioned feature reference {reference:?}: versioned reads are not supported \
                 by feast-rs yet"
            )));
        }
        let index = match reads.iter().position(|r| r.name_to_use == view) {
            Some(i) => i,
            None => {
                let fv = lookup_view(catalog, project, view)?;
                reads.push(ViewRead {
                    fv,
                    name_to_use: view.to_string(),
                    features: Vec::new(),
                    join_key_map: HashMap::new(),
                });
                reads.len() - 1
            }
        };
        let read = &mut reads[index];
        if !read.fv.feature_names().contains(&feature) {
            return Err(feast(FeastError::new(
                ErrorClass::FeastObjectNotFoundException,
                format!("Feature {feature} not found in projection {view}"),
            )));
        }
        read.features.push(feature.to_string());
    }
    check_collisions(&reads, request.full_feature_names)?;
    Ok(reads)
}

/// Feast's `_validate_feature_refs`: output names must be unique (the bare feature names, or
/// the full `view__feature` names with `full_feature_names`), so a ref requested twice is an
/// error too.
fn check_collisions(reads: &[ViewRead<'_>], full: bool) -> Result<(), ServeError> {
    let refs: Vec<(&str, &str)> = reads
        .iter()
        .flat_map(|r| {
            r.features
                .iter()
                .map(|f| (r.name_to_use.as_str(), f.as_str()))
        })
        .collect();
    let key = |(v, f): (&str, &str)| {
        if full {
            format!("{v}__{f}")
        } else {
            f.to_string()
        }
    };
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in &refs {
        *counts.entry(key(*r)).or_default() += 1;
    }
    let mut collided: Vec<String> = Vec::new();
    for r in &refs {
        let k = key(*r);
        if counts[&k] > 1 && !collided.contains(&k) {
            collided.push(k);
        }
    }
    if collided.is_empty() {
        return Ok(());
    }
    let hint = if full {
        "To resolve this collision, please ensure that the feature views or their own features \
         have different names. If you're intentionally joining the same feature view twice on \
         different sets of entities, please rename one of the feature views with '.with_name'."
    } else {
        "To resolve this collision, either use the full feature name by setting \
         'full_feature_names=True', or ensure that the features in question have different names."
    };
    Err(ServeError::Rejected(FeastError::new(
        ErrorClass::FeatureNameCollisionError,
        format!(
            "Duplicate features named {} found.\n{hint}",
            collided.join(", ")
        ),
    )))
}

fn lookup_view<'a>(
    catalog: &'a Catalog,
    project: &str,
    name: &str,
) -> Result<&'a core::FeatureView, ServeError> {
    if let Ok(fv) = catalog.get::<core::FeatureView>(name, project) {
        return Ok(fv);
    }
    if catalog
        .get::<core::OnDemandFeatureView>(name, project)
        .is_ok()
    {
        return Err(odfv_unsupported(name));
    }
    if catalog
        .get::<core::StreamFeatureView>(name, project)
        .is_ok()
    {
        return Err(ServeError::Unprocessable(format!(
            "{name} is a stream feature view: feast-rs does not serve stream feature views yet"
        )));
    }
    Err(feast(FeastError::new(
        ErrorClass::FeatureViewNotFoundException,
        format!("Feature view {name} does not exist"),
    )))
}

/// Feast's serving gate (`_get_feature_views_to_use`): disabled views and views in a state
/// other than unspecified/available-online do not serve.
fn check_servable(fv: &core::FeatureView) -> Result<(), ServeError> {
    let name = &fv.spec_ref().name;
    if fv.spec_ref().disabled {
        return Err(ServeError::Unprocessable(format!(
            "Feature view '{name}' is disabled and cannot serve features."
        )));
    }
    let state = fv.meta.as_ref().map(|m| m.state).unwrap_or_default();
    let unspecified = core::FeatureViewState::StateUnspecified as i32;
    let online = core::FeatureViewState::AvailableOnline as i32;
    if state != unspecified && state != online {
        let label = core::FeatureViewState::try_from(state)
            .map(|s| s.as_str_name().to_string())
            .unwrap_or_else(|_| state.to_string());
        return Err(ServeError::Unprocessable(format!(
            "Feature view '{name}' is in state '{label}' and cannot serve features. Only \
             AVAILABLE_ONLINE feature views can serve."
        )));
    }
    Ok(())
}

/// A column of the response.
struct Column {
    name: String,
    values: Vec<Json>,
    statuses: Vec<&'static str>,
    timestamps: Vec<String>,
}

const EPOCH: &str = "1970-01-01T00:00:00Z";

/// RFC 3339 UTC with `Z`; fraction digits as protobuf JSON: none, 3, 6 or 9.
pub fn format_timestamp(ts: &Timestamp) -> String {
    let mut ts = *ts;
    ts.normalize();
    let Some(dt) = chrono::DateTime::from_timestamp(ts.seconds, ts.nanos as u32) else {
        return EPOCH.to_string();
    };
    let base = dt.format("%Y-%m-%dT%H:%M:%S").to_string();
    let n = ts.nanos;
    if n == 0 {
        format!("{base}Z")
    } else if n % 1_000_000 == 0 {
        format!("{base}.{:03}Z", n / 1_000_000)
    } else if n % 1_000 == 0 {
        format!("{base}.{:06}Z", n / 1_000)
    } else {
        format!("{base}.{n:09}Z")
    }
}

fn now_timestamp() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Declared types of the project's join keys (from its entities).
fn entity_types(catalog: &Catalog, project: &str) -> HashMap<String, ValueType> {
    let no_tags = Default::default();
    catalog
        .list::<core::Entity>(project, &no_tags)
        .filter_map(|e| e.spec.as_ref())
        .map(|s| {
            (
                s.join_key.clone(),
                ValueType::try_from(s.value_type).unwrap_or(ValueType::Invalid),
            )
        })
        .collect()
}

/// Serves one `get-online-features` request.
pub async fn get_online_features(
    catalog: &Catalog,
    project: &str,
    store: &Arc<dyn OnlineStore>,
    key_version: u32,
    request: &GetOnlineFeaturesRequest,
) -> Result<Json, ServeError> {
    let reads = resolve(catalog, project, request)?;
    for r in &reads {
        check_servable(r.fv)?;
    }

    // Entity columns: arrays of equal length.
    let mut rows: Option<usize> = None;
    let mut raw: Vec<(&str, &Vec<Json>)> = Vec::new();
    for (name, values) in &request.entities {
        let Json::Array(values) = values else {
            return Err(ServeError::Unprocessable(format!(
                "entities[{name:?}] must be a list of values, one per entity row"
            )));
        };
        if let Some(n) = rows
            && n != values.len()
        {
            return Err(ServeError::Unprocessable(format!(
                "all entity columns must have the same length: {name:?} has {} values, \
                 another column has {n}",
                values.len()
            )));
        }
        rows = Some(values.len());
        raw.push((name.as_str(), values));
    }
    let rows = rows.unwrap_or(0);

    // Declared type of every request column that is a join key.
    let mut types = entity_types(catalog, project);
    for r in &reads {
        for col in &r.fv.spec_ref().entity_columns {
            let vt = ValueType::try_from(col.value_type).unwrap_or(ValueType::Invalid);
            types.insert(r.request_column(&col.name).to_string(), vt);
        }
    }
    let mut typed: HashMap<&str, Vec<Value>> = HashMap::new();
    let mut columns: Vec<Column> = Vec::new();
    for (name, values) in &raw {
        // Columns that are no join key are request data (for on-demand views): dropped.
        let Some(&vt) = types.get(*name) else {
            continue;
        };
        let mut out = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            out.push(json_to_value(v, vt).map_err(|e| {
                ServeError::Unprocessable(format!(
                    "entities[{name:?}][{i}]: {e} (the join key is declared {})",
                    vt.as_str_name()
                ))
            })?);
        }
        columns.push(Column {
            name: name.to_string(),
            values: out.iter().map(value_to_json).collect(),
            statuses: vec!["PRESENT"; rows],
            timestamps: vec![EPOCH.to_string(); rows],
        });
        typed.insert(name, out);
    }

    let now = now_timestamp();
    let mut view_metadata: Vec<Json> = Vec::new();
    for r in &reads {
        let spec = r.fv.spec_ref();
        // Entity-less views are keyed by Feast's placeholder `__dummy_id` = "" (their entity
        // columns hold it, or nothing in registries that omit it); no request column feeds it.
        let mut join_keys: Vec<&str> = r.fv.join_keys();
        if join_keys.is_empty() {
            join_keys = vec![DUMMY_ENTITY_ID];
        }
        let mut keys = Vec::with_capacity(rows);
        for row in 0..rows {
            let mut key = EntityKey::default();
            for jk in &join_keys {
                let value = if *jk == DUMMY_ENTITY_ID {
                    Value {
                        val: Some(Val::StringVal(DUMMY_ENTITY_VAL.to_string())),
                    }
                } else {
                    let column = r.request_column(jk);
                    let Some(values) = typed.get(column) else {
                        return Err(ServeError::Unprocessable(format!(
                            "feature view {} needs the join key {column:?} in `entities`",
                            spec.name
                        )));
                    };
                    values[row].clone()
                };
                key.join_keys.push(jk.to_string());
                key.entity_values.push(value);
            }
            keys.push(serialize_entity_key(&key, key_version).map_err(|e| {
                ServeError::Unprocessable(format!(
                    "entity row {row} of feature view {}: {e}",
                    spec.name
                ))
            })?);
        }
        let table = TableRef::new(project, spec.name.clone());
        let found = if rows == 0 {
            Vec::new()
        } else {
            store.online_read(&table, &keys, &r.features).await?
        };
        let oldest = r.fv.ttl().map(|ttl| now.seconds - ttl.as_secs() as i64);
        let first = columns.len();
        for f in &r.features {
            columns.push(Column {
                name: if request.full_feature_names {
                    format!("{}__{f}", r.name_to_use)
                } else {
                    f.clone()
                },
                values: Vec::with_capacity(rows),
                statuses: Vec::with_capacity(rows),
                timestamps: Vec::with_capacity(rows),
            });
        }
        for row in found {
            let (expired, ts) = match &row {
                Some(fr) => (
                    oldest.is_some_and(|o| fr.event_ts.seconds < o),
                    format_timestamp(&fr.event_ts),
                ),
                None => (false, EPOCH.to_string()),
            };
            for (i, col) in columns[first..].iter_mut().enumerate() {
                let value = row.as_ref().and_then(|fr| fr.values[i].as_ref());
                match value {
                    None => {
                        col.values.push(Json::Null);
                        col.statuses.push("NOT_FOUND");
                        col.timestamps.push(EPOCH.to_string());
                    }
                    Some(_) if expired => {
                        col.values.push(Json::Null);
                        col.statuses.push("OUTSIDE_MAX_AGE");
                        col.timestamps.push(ts.clone());
                    }
                    Some(v) => {
                        col.values.push(value_to_json(v));
                        col.statuses.push("PRESENT");
                        col.timestamps.push(ts.clone());
                    }
                }
            }
        }
        if request.include_feature_view_version_metadata
            && !view_metadata
                .iter()
                .any(|m| m.get("name").and_then(Json::as_str) == Some(r.name_to_use.as_str()))
        {
            let mut m = Map::new();
            if !r.name_to_use.is_empty() {
                m.insert("name".into(), json!(r.name_to_use));
            }
            let version =
                r.fv.meta
                    .as_ref()
                    .map(|m| m.current_version_number)
                    .unwrap_or_default();
            if version != 0 {
                m.insert("version".into(), json!(version));
            }
            view_metadata.push(Json::Object(m));
        }
    }

    let mut names = Vec::with_capacity(columns.len());
    let mut results = Vec::with_capacity(columns.len());
    for c in columns {
        names.push(Json::String(c.name));
        let mut m = Map::new();
        m.insert("values".into(), Json::Array(c.values));
        m.insert(
            "statuses".into(),
            Json::Array(c.statuses.into_iter().map(Json::from).collect()),
        );
        m.insert(
            "event_timestamps".into(),
            Json::Array(c.timestamps.into_iter().map(Json::from).collect()),
        );
        results.push(Json::Object(m));
    }
    let mut metadata = Map::new();
    metadata.insert("feature_names".into(), Json::Array(names));
    if request.include_feature_view_version_metadata {
        metadata.insert("feature_view_metadata".into(), Json::Array(view_metadata));
    }
    let mut out = Map::new();
    out.insert("results".into(), Json::Array(results));
    out.insert("metadata".into(), Json::Object(metadata));
    Ok(Json::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_use_protobuf_json_fraction_digits() {
        let t = |seconds, nanos| format_timestamp(&Timestamp { seconds, nanos });
        assert_eq!(t(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(t(1714557600, 0), "2024-05-01T10:00:00Z");
        assert_eq!(t(1714557600, 500_000_000), "2024-05-01T10:00:00.500Z");
        assert_eq!(t(1714557600, 1_000), "2024-05-01T10:00:00.000001Z");
        assert_eq!(t(1714557600, 1), "2024-05-01T10:00:00.000000001Z");
    }
}
