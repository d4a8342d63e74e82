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
use feast_proto::serving::{self, FieldStatus};
use feast_proto::types::value::Val;
use feast_proto::types::{EntityKey, Value};
use prost_types::Timestamp;
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};

use crate::store::{OnlineStore, OnlineStoreError, ReadSpec, TableRef, serialize_entity_key};

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

/// One entity column of a request: JSON values (HTTP) or protobuf values (gRPC). Either is
/// typed by the join key's declared type before it is used.
#[derive(Debug, Clone)]
pub enum EntityValues {
    Json(Vec<Json>),
    Proto(Vec<Value>),
}

impl EntityValues {
    fn len(&self) -> usize {
        match self {
            EntityValues::Json(v) => v.len(),
            EntityValues::Proto(v) => v.len(),
        }
    }
}

/// What to read: a feature service or a list of `view:feature` references.
#[derive(Debug, Clone)]
pub enum FeatureSelection {
    Service(String),
    Refs(Vec<String>),
}

/// A `get_online_features` request, whichever transport it came on.
#[derive(Debug, Clone)]
pub struct OnlineRequest {
    /// Entity columns in request order.
    pub entities: Vec<(String, EntityValues)>,
    pub features: FeatureSelection,
    pub full_feature_names: bool,
    pub include_feature_view_version_metadata: bool,
}

impl TryFrom<GetOnlineFeaturesRequest> for OnlineRequest {
    type Error = ServeError;

    fn try_from(r: GetOnlineFeaturesRequest) -> Result<Self, ServeError> {
        let mut entities = Vec::with_capacity(r.entities.len());
        for (name, values) in r.entities {
            let Json::Array(values) = values else {
                return Err(ServeError::Unprocessable(format!(
                    "entities[{name:?}] must be a list of values, one per entity row"
                )));
            };
            entities.push((name, EntityValues::Json(values)));
        }
        Ok(OnlineRequest {
            entities,
            features: match r.feature_service {
                Some(s) => FeatureSelection::Service(s),
                None => FeatureSelection::Refs(r.features),
            },
            full_feature_names: r.full_feature_names,
            include_feature_view_version_metadata: r.include_feature_view_version_metadata,
        })
    }
}

/// One column of the response: an entity column or a feature.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseColumn {
    pub name: String,
    pub values: Vec<Value>,
    pub statuses: Vec<FieldStatus>,
    /// The stored event timestamps (the epoch where there is none, as Feast).
    pub timestamps: Vec<Timestamp>,
}

/// The result of a `get_online_features` request, rendered by [`OnlineResponse::to_json`]
/// (HTTP) or [`OnlineResponse::to_proto`] (gRPC).
#[derive(Debug, Clone, PartialEq)]
pub struct OnlineResponse {
    pub columns: Vec<ResponseColumn>,
    /// `(name to use, version)` per view read, when the request asked for it.
    pub view_metadata: Option<Vec<(String, i32)>>,
    /// How the request went, for metrics (not part of the response).
    pub stats: ReadStats,
}

/// Counters of one `get_online_features` request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadStats {
    pub entity_rows: usize,
    /// Requested features (output columns other than the entity columns).
    pub features: usize,
    /// Time spent in the online store.
    pub store_read: std::time::Duration,
    /// Per view read: `(view name, values found, values not found)`.
    pub per_view: Vec<(String, u64, u64)>,
}

/// A column's event timestamps as [`format_timestamp`] writes them. The rows of one entity
/// share a timestamp and missing values carry the epoch, so the text of the previous
/// timestamp is reused when it repeats.
struct TimestampsJson<'a>(&'a [Timestamp]);

impl serde::Serialize for TimestampsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        let mut last: Option<(&Timestamp, String)> = None;
        for t in self.0 {
            if *t == Timestamp::default() {
                seq.serialize_element(EPOCH)?;
                continue;
            }
            match &last {
                Some((prev, text)) if *prev == t => seq.serialize_element(text)?,
                _ => {
                    let text = format_timestamp(t);
                    seq.serialize_element(&text)?;
                    last = Some((t, text));
                }
            }
        }
        seq.end()
    }
}

struct ColumnJson<'a>(&'a ResponseColumn);

impl serde::Serialize for ColumnJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let c = self.0;
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry(
            "values",
            &SeqJson(|| c.values.iter().map(feast_core::value::ValueJson)),
        )?;
        m.serialize_entry(
            "statuses",
            &SeqJson(|| c.statuses.iter().map(|s| s.as_str_name())),
        )?;
        m.serialize_entry("event_timestamps", &TimestampsJson(&c.timestamps))?;
        m.end()
    }
}

/// A sequence serialized from a fresh iterator each time.
struct SeqJson<F>(F);

impl<F, I> serde::Serialize for SeqJson<F>
where
    F: Fn() -> I,
    I: Iterator,
    I::Item: serde::Serialize,
{
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq((self.0)())
    }
}

/// Serializes as [`OnlineResponse::to_json`] renders it, streaming: no intermediate
/// `serde_json::Value` (the HTTP route writes large responses with it).
impl serde::Serialize for OnlineResponse {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("results", &SeqJson(|| self.columns.iter().map(ColumnJson)))?;
        m.serialize_entry("metadata", &self.metadata_json())?;
        m.end()
    }
}

impl OnlineResponse {
    /// Appends the response's JSON to `out`: the very bytes `serde_json` writes for the
    /// [`serde::Serialize`] impl, faster. Statuses and timestamps (two thirds of the strings
    /// of a response) are ASCII that never needs escaping, so they are copied as they are
    /// instead of going through `serde_json`'s escaping scan; values still go through
    /// `serde_json` ([`feast_core::value::ValueJson`]).
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.extend_from_slice(b"{\"results\":[");
        // As `TimestampsJson`: the previous text is reused while the timestamp repeats, also
        // from one column to the next (one entity's features share their view's timestamp).
        let mut last: Option<(&Timestamp, String)> = None;
        for (i, c) in self.columns.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"values\":[");
            for (j, v) in c.values.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, &feast_core::value::ValueJson(v))?;
            }
            out.extend_from_slice(b"],\"statuses\":[");
            for (j, st) in c.statuses.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                push_plain_str(out, st.as_str_name());
            }
            out.extend_from_slice(b"],\"event_timestamps\":[");
            for (j, t) in c.timestamps.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                if *t == Timestamp::default() {
                    push_plain_str(out, EPOCH);
                    continue;
                }
                match &last {
                    Some((prev, text)) if *prev == t => push_plain_str(out, text),
                    _ => {
                        let text = format_timestamp(t);
                        push_plain_str(out, &text);
                        last = Some((t, text));
                    }
                }
            }
            out.extend_from_slice(b"]}");
        }
        out.extend_from_slice(b"],\"metadata\":");
        serde_json::to_writer(&mut *out, &self.metadata_json())?;
        out.push(b'}');
        Ok(())
    }

    /// The `metadata` object of the JSON response.
    fn metadata_json(&self) -> Map<String, Json> {
        let mut metadata = Map::new();
        metadata.insert(
            "feature_names".into(),
            Json::Array(
                self.columns
                    .iter()
                    .map(|c| Json::String(c.name.clone()))
                    .collect(),
            ),
        );
        if let Some(views) = &self.view_metadata {
            metadata.insert("feature_view_metadata".into(), view_metadata_json(views));
        }
        metadata
    }
}

/// Appends `s` as a JSON string. Only for text that needs no escaping (status names,
/// RFC 3339 timestamps: ASCII letters, digits and `-+:.`); checked in debug builds.
fn push_plain_str(out: &mut Vec<u8>, s: &str) {
    debug_assert!(
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-+:._".contains(&b)),
        "{s:?} would need escaping"
    );
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

fn view_metadata_json(views: &[(String, i32)]) -> Json {
    Json::Array(
        views
            .iter()
            .map(|(name, version)| {
                let mut m = Map::new();
                if !name.is_empty() {
                    m.insert("name".into(), json!(name));
                }
                if *version != 0 {
                    m.insert("version".into(), json!(version));
                }
                Json::Object(m)
            })
            .collect(),
    )
}

impl OnlineResponse {
    /// Feast's column-major JSON (PROTOCOLS.md §2.2).
    pub fn to_json(&self) -> Json {
        let mut names = Vec::with_capacity(self.columns.len());
        let mut results = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            names.push(Json::String(c.name.clone()));
            let mut m = Map::new();
            m.insert(
                "values".into(),
                Json::Array(c.values.iter().map(value_to_json).collect()),
            );
            m.insert(
                "statuses".into(),
                Json::Array(
                    c.statuses
                        .iter()
                        .map(|s| Json::from(s.as_str_name()))
                        .collect(),
                ),
            );
            m.insert(
                "event_timestamps".into(),
                Json::Array(
                    c.timestamps
                        .iter()
                        .map(|t| Json::String(format_timestamp(t)))
                        .collect(),
                ),
            );
            results.push(Json::Object(m));
        }
        let mut metadata = Map::new();
        metadata.insert("feature_names".into(), Json::Array(names));
        if let Some(views) = &self.view_metadata {
            metadata.insert("feature_view_metadata".into(), view_metadata_json(views));
        }
        let mut out = Map::new();
        out.insert("results".into(), Json::Array(results));
        out.insert("metadata".into(), Json::Object(metadata));
        Json::Object(out)
    }

    /// Feast's `GetOnlineFeaturesResponse` protobuf.
    pub fn to_proto(self) -> serving::GetOnlineFeaturesResponse {
        let names = self.columns.iter().map(|c| c.name.clone()).collect();
        serving::GetOnlineFeaturesResponse {
            metadata: Some(serving::GetOnlineFeaturesResponseMetadata {
                feature_names: Some(serving::FeatureList { val: names }),
                feature_view_metadata: self
                    .view_metadata
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(name, version)| serving::FeatureViewMetadata { name, version })
                    .collect(),
            }),
            results: self
                .columns
                .into_iter()
                .map(|c| serving::get_online_features_response::FeatureVector {
                    values: c.values,
                    statuses: c.statuses.into_iter().map(|s| s as i32).collect(),
                    event_timestamps: c.timestamps,
                })
                .collect(),
            status: true,
        }
    }
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
    /// Something this server does not do (yet): 501.
    Unimplemented(String),
    /// Feature views already being materialized: 409 with Feast's body.
    Busy(Vec<String>),
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
            ServeError::Unimplemented(_) => 501,
            ServeError::Busy(_) => 409,
            ServeError::Internal(_) => 500,
        }
    }

    /// The error as a Feast exception (class `FeastError` unless it is a Feast one), so the
    /// Python client re-raises it with this message.
    pub fn to_feast(&self) -> FeastError {
        match self {
            ServeError::Feast(e) | ServeError::Rejected(e) => e.clone(),
            ServeError::Unprocessable(m)
            | ServeError::Unavailable(m)
            | ServeError::Unimplemented(m)
            | ServeError::Internal(m) => FeastError::new(ErrorClass::FeastError, m.clone()),
            ServeError::Busy(views) => FeastError::new(ErrorClass::FeastError, busy_message(views)),
        }
    }
}

/// Feast's 409 text for views already being materialized.
pub fn busy_message(views: &[String]) -> String {
    let quoted: Vec<String> = views.iter().map(|n| format!("'{n}'")).collect();
    format!(
        "Cannot start async materialization — the following feature views are already in \
         MATERIALIZING state: [{}]. Use ?force=true to override.",
        quoted.join(", ")
    )
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
    /// The projection alias or the view name, plus `@vN` for a pinned version: the prefix
    /// of full feature names.
    name_to_use: String,
    /// The alias or view name without the version (the name in the version metadata).
    clean_name: String,
    /// The version the reference pins (`view@vN`), if any.
    version: Option<i32>,
    /// Requested features, in request order, without duplicates.
    features: Vec<String>,
    /// View join key → request column (feature-service `join_key_map`).
    join_key_map: HashMap<String, String>,
}

impl ViewRead<'_> {
    /// The name the view's online data lives under: the pinned version's, else the view's
    /// current version's (only with `enable_online_feature_view_versioning`).
    fn online_name(&self, versioning: bool) -> String {
        let current = self.fv.meta.as_ref().map(|m| m.current_version_number);
        feast_core::version::online_view_name(
            &self.fv.spec_ref().name,
            self.version.or(current),
            versioning,
        )
    }

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
    index: &'a ProjectIndex,
    project: &str,
    request: &OnlineRequest,
    versioning: bool,
) -> Result<Vec<ViewRead<'a>>, ServeError> {
    let mut reads: Vec<ViewRead<'a>> = Vec::new();
    let refs = match &request.features {
        FeatureSelection::Refs(refs) => refs,
        FeatureSelection::Service(service) => {
            let fs: &core::FeatureService = match index.feature_service(catalog, service) {
                Some(fs) => fs,
                // Not in the project: the registry's own error.
                None => catalog.get(service, project).map_err(feast)?,
            };
            let spec = fs.spec.as_ref();
            for proj in spec.map(|s| s.features.as_slice()).unwrap_or_default() {
                let fv = lookup_version(
                    catalog,
                    index,
                    project,
                    &proj.feature_view_name,
                    proj.version_tag,
                    versioning,
                )?;
                let clean_name = feast_core::model::projection_name(proj).to_string();
                let features = feast_core::model::projection_features(proj, fv);
                reads.push(ViewRead {
                    fv,
                    name_to_use: versioned_name(&clean_name, proj.version_tag),
                    clean_name,
                    version: proj.version_tag,
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
    };
    for reference in refs {
        let parsed = feast_core::version::parse_view_ref(reference);
        let (view, version) = (parsed.view, parsed.version);
        let Some(feature) = parsed.feature else {
            return Err(ServeError::Unprocessable(format!(
                "feature reference {reference:?} is not of the form \"feature_view:feature\" \
                 or \"feature_view@vN:feature\""
            )));
        };
        let name_to_use = versioned_name(view, version);
        let index = match reads.iter().position(|r| r.name_to_use == name_to_use) {
            Some(i) => i,
            None => {
                let fv = lookup_version(catalog, index, project, view, version, versioning)?;
                reads.push(ViewRead {
                    fv,
                    name_to_use,
                    clean_name: view.to_string(),
                    version,
                    features: Vec::new(),
                    join_key_map: HashMap::new(),
                });
                reads.len() - 1
            }
        };
        let read = &mut reads[index];
        if !read
            .fv
            .spec_ref()
            .features
            .iter()
            .any(|f| f.name == feature)
        {
            return Err(feast(FeastError::new(
                ErrorClass::FeastObjectNotFoundException,
                format!(
                    "Feature {feature} not found in projection {}",
                    read.name_to_use
                ),
            )));
        }
        read.features.push(feature.to_string());
    }
    check_collisions(&reads, request.full_feature_names)?;
    Ok(reads)
}

fn check_collisions(reads: &[ViewRead<'_>], full: bool) -> Result<(), ServeError> {
    let refs = reads.iter().flat_map(|r| {
        r.features
            .iter()
            .map(|f| (r.name_to_use.as_str(), f.as_str()))
    });
    // Feast answers 500 here, which its client retries; the request can never succeed.
    feast_core::model::check_feature_name_collisions(refs, full).map_err(ServeError::Rejected)
}

/// `name@vN` for a pinned version (Feast's `name_to_use`), else `name`.
fn versioned_name(name: &str, version: Option<i32>) -> String {
    match version {
        Some(n) => format!("{name}@v{n}"),
        None => name.to_string(),
    }
}

/// The view a reference names: the registered one, or with a pinned version that version's
/// recorded definition (which needs the registry's `enable_online_feature_view_versioning`,
/// as in Feast).
fn lookup_version<'a>(
    catalog: &'a Catalog,
    index: &'a ProjectIndex,
    project: &str,
    name: &str,
    version: Option<i32>,
    versioning: bool,
) -> Result<&'a core::FeatureView, ServeError> {
    let Some(n) = version else {
        return lookup_view(catalog, index, name);
    };
    if !versioning {
        return Err(ServeError::Unprocessable(format!(
            "Version-qualified ref '{name}@v{n}' not supported: online versioning is disabled. \
             Set 'enable_online_feature_view_versioning: true' under 'registry' in \
             feature_store.yaml."
        )));
    }
    match index.versions.get(&(name.to_string(), n)) {
        Some(VersionedView::View(fv)) => Ok(fv),
        Some(VersionedView::OnDemand) => Err(odfv_unsupported(name)),
        None => Err(feast(feast_core::version::version_not_found(
            name, n, project,
        ))),
    }
}

fn lookup_view<'a>(
    catalog: &'a Catalog,
    index: &'a ProjectIndex,
    name: &str,
) -> Result<&'a core::FeatureView, ServeError> {
    if let Some(fv) = index.feature_view(catalog, name) {
        return Ok(fv);
    }
    if index.on_demand_views.contains_key(name) {
        return Err(odfv_unsupported(name));
    }
    if let Some((_, fv)) = index.stream_views.get(name) {
        return Ok(fv);
    }
    Err(feast(FeastError::new(
        ErrorClass::FeatureViewNotFoundException,
        format!("Feature view {name} does not exist"),
    )))
}

/// Feast's serving gate (`_get_feature_views_to_use`): disabled views and views in a state
/// other than unspecified/available-online (or materializing, with the registry's
/// `serve_features_while_materializing`) do not serve.
fn check_servable(
    fv: &core::FeatureView,
    serve_while_materializing: bool,
) -> Result<(), ServeError> {
    let name = &fv.spec_ref().name;
    if fv.spec_ref().disabled {
        return Err(ServeError::Unprocessable(format!(
            "Feature view '{name}' is disabled and cannot serve features."
        )));
    }
    let state = fv.meta.as_ref().map(|m| m.state).unwrap_or_default();
    let unspecified = core::FeatureViewState::StateUnspecified as i32;
    let online = core::FeatureViewState::AvailableOnline as i32;
    let materializing = core::FeatureViewState::Materializing as i32;
    let servable = state == unspecified
        || state == online
        || (serve_while_materializing && state == materializing);
    if !servable {
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

const EPOCH: &str = "1970-01-01T00:00:00Z";

/// RFC 3339 UTC with `Z`; fraction digits as protobuf JSON: none, 3, 6 or 9.
pub fn format_timestamp(ts: &Timestamp) -> String {
    let mut ts = *ts;
    ts.normalize();
    let Some(dt) = chrono::DateTime::from_timestamp(ts.seconds, ts.nanos as u32) else {
        return EPOCH.to_string();
    };
    use chrono::{Datelike, Timelike};
    let year = dt.year();
    if !(0..=9999).contains(&year) {
        let base = dt.format("%Y-%m-%dT%H:%M:%S");
        let n = ts.nanos;
        return if n == 0 {
            format!("{base}Z")
        } else if n % 1_000_000 == 0 {
            format!("{base}.{:03}Z", n / 1_000_000)
        } else if n % 1_000 == 0 {
            format!("{base}.{:06}Z", n / 1_000)
        } else {
            format!("{base}.{n:09}Z")
        };
    }
    // Written digit by digit: a response carries one timestamp per value, and `format!`
    // machinery cost more than the rest of a one-entity request's JSON.
    fn digits(out: &mut [u8], mut v: u32) {
        for slot in out.iter_mut().rev() {
            *slot = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    let mut text = [0u8; 30];
    digits(&mut text[0..4], year as u32);
    text[4] = b'-';
    digits(&mut text[5..7], dt.month());
    text[7] = b'-';
    digits(&mut text[8..10], dt.day());
    text[10] = b'T';
    digits(&mut text[11..13], dt.hour());
    text[13] = b':';
    digits(&mut text[14..16], dt.minute());
    text[16] = b':';
    digits(&mut text[17..19], dt.second());
    let mut len = 19;
    let n = ts.nanos as u32;
    if n != 0 {
        let (value, width) = if n.is_multiple_of(1_000_000) {
            (n / 1_000_000, 3)
        } else if n.is_multiple_of(1_000) {
            (n / 1_000, 6)
        } else {
            (n, 9)
        };
        text[19] = b'.';
        digits(&mut text[20..20 + width], value);
        len = 20 + width;
    }
    text[len] = b'Z';
    String::from_utf8_lossy(&text[..=len]).into_owned()
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

/// The join keys a view's stored rows are keyed by. Entity-less views are keyed by Feast's
/// placeholder `__dummy_id` = "" (their entity columns hold it, or nothing in registries that
/// omit it).
fn stored_join_keys(fv: &core::FeatureView) -> Vec<&str> {
    let keys = fv.join_keys();
    if keys.is_empty() {
        vec![DUMMY_ENTITY_ID]
    } else {
        keys
    }
}

/// Name lookups of one project in one registry snapshot, built once per snapshot (see
/// [`crate::http::FeatureServer`]) so a request costs hash lookups, not scans of the
/// registry: serving latency does not grow with the number of views registered.
#[derive(Debug, Default)]
pub struct ProjectIndex {
    /// Name → position in the registry's `feature_views`.
    feature_views: HashMap<String, usize>,
    feature_services: HashMap<String, usize>,
    on_demand_views: HashMap<String, usize>,
    /// Name → (position in the registry's `stream_feature_views`, the view as a feature
    /// view for reads: its online rows are laid out as a feature view's).
    stream_views: HashMap<String, (usize, core::FeatureView)>,
    /// (view name, version) → the recorded definition, from the version history.
    versions: HashMap<(String, i32), VersionedView>,
    /// Join key → declared type, from the project's entities.
    entity_types: HashMap<String, ValueType>,
    /// View name → the fields the project's views with its join keys keep per entity
    /// (features plus a timestamp each): [`ReadSpec::entity_fields`].
    entity_fields: HashMap<String, usize>,
    /// The project's permissions (for authorization).
    permissions: Vec<core::Permission>,
}

impl ProjectIndex {
    pub fn build(catalog: &Catalog, project: &str) -> Self {
        let registry = catalog.proto();
        let in_project = |spec_project: &str| spec_project == project;
        let mut index = ProjectIndex::default();
        for (i, v) in registry.feature_views.iter().enumerate() {
            if let Some(spec) = v.spec.as_ref().filter(|s| in_project(&s.project)) {
                index.feature_views.entry(spec.name.clone()).or_insert(i);
            }
        }
        for (i, fs) in registry.feature_services.iter().enumerate() {
            if let Some(spec) = fs.spec.as_ref().filter(|s| in_project(&s.project)) {
                index.feature_services.entry(spec.name.clone()).or_insert(i);
            }
        }
        for (i, v) in registry.on_demand_feature_views.iter().enumerate() {
            if let Some(spec) = v.spec.as_ref().filter(|s| in_project(&s.project)) {
                index.on_demand_views.entry(spec.name.clone()).or_insert(i);
            }
        }
        index.permissions = registry
            .permissions
            .iter()
            .filter(|p| p.spec.as_ref().is_some_and(|s| in_project(&s.project)))
            .cloned()
            .collect();
        for (i, v) in registry.stream_feature_views.iter().enumerate() {
            if let Some(spec) = v.spec.as_ref().filter(|s| in_project(&s.project)) {
                index
                    .stream_views
                    .entry(spec.name.clone())
                    .or_insert_with(|| (i, feast_core::model::stream_view_as_feature_view(v)));
            }
        }
        // Views with the same join keys share an entity's entry (Redis: one hash).
        let views: Vec<&core::FeatureView> = (index.feature_views.values())
            .filter_map(|&i| registry.feature_views.get(i))
            .chain(index.stream_views.values().map(|(_, v)| v))
            .collect();
        let join_keys = |v: &core::FeatureView| {
            let mut keys = stored_join_keys(v);
            keys.sort_unstable();
            keys.join("\0")
        };
        let mut per_keys: HashMap<String, usize> = HashMap::new();
        for v in &views {
            *per_keys.entry(join_keys(v)).or_default() += v.spec_ref().features.len() + 1;
        }
        for v in &views {
            index
                .entity_fields
                .insert(v.spec_ref().name.clone(), per_keys[&join_keys(v)]);
        }
        let history = registry.feature_view_version_history.as_ref();
        for record in history
            .map(|h| h.records.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(|r| in_project(&r.project_id))
        {
            use feast_core::registry::ViewVersion;
            // An undecodable record is skipped: a read of that version says it does not exist.
            let view = match feast_core::registry::decode_version(record) {
                Ok(ViewVersion::FeatureView(v)) => VersionedView::View(Box::new(v)),
                Ok(ViewVersion::Stream(v)) => VersionedView::View(Box::new(
                    feast_core::model::stream_view_as_feature_view(&v),
                )),
                Ok(ViewVersion::OnDemand(_)) => VersionedView::OnDemand,
                Ok(ViewVersion::Label(_)) | Err(_) => continue,
            };
            index.versions.insert(
                (record.feature_view_name.clone(), record.version_number),
                view,
            );
        }
        for spec in registry
            .entities
            .iter()
            .filter_map(|e| e.spec.as_ref().filter(|s| in_project(&s.project)))
        {
            index.entity_types.insert(
                spec.join_key.clone(),
                ValueType::try_from(spec.value_type).unwrap_or(ValueType::Invalid),
            );
        }
        index
    }

    pub fn feature_view<'a>(
        &self,
        catalog: &'a Catalog,
        name: &str,
    ) -> Option<&'a core::FeatureView> {
        let &i = self.feature_views.get(name)?;
        catalog.proto().feature_views.get(i)
    }

    pub fn stream_view<'a>(
        &self,
        catalog: &'a Catalog,
        name: &str,
    ) -> Option<&'a core::StreamFeatureView> {
        let &(i, _) = self.stream_views.get(name)?;
        catalog.proto().stream_feature_views.get(i)
    }

    pub fn feature_service<'a>(
        &self,
        catalog: &'a Catalog,
        name: &str,
    ) -> Option<&'a core::FeatureService> {
        let &i = self.feature_services.get(name)?;
        catalog.proto().feature_services.get(i)
    }

    pub fn on_demand_view<'a>(
        &self,
        catalog: &'a Catalog,
        name: &str,
    ) -> Option<&'a core::OnDemandFeatureView> {
        let &i = self.on_demand_views.get(name)?;
        catalog.proto().on_demand_feature_views.get(i)
    }

    /// The project's permissions.
    pub fn permissions(&self) -> &[core::Permission] {
        &self.permissions
    }
}

/// A recorded version of a view, as reads use it.
#[derive(Debug)]
enum VersionedView {
    /// A feature view's or stream feature view's version.
    View(Box<core::FeatureView>),
    /// An on-demand view's version (not executed).
    OnDemand,
}

/// Types one request column by its declared type: JSON values through
/// [`json_to_value`]; protobuf values as given when they already have that type, else
/// through their JSON form (so an `int32_val` finds an INT64 key, as the JSON path would).
fn type_column(name: &str, values: &EntityValues, vt: ValueType) -> Result<Vec<Value>, ServeError> {
    let bad = |i: usize, e: feast_core::value::ValueError| {
        ServeError::Unprocessable(format!(
            "entities[{name:?}][{i}]: {e} (the join key is declared {})",
            vt.as_str_name()
        ))
    };
    match values {
        EntityValues::Json(values) => values
            .iter()
            .enumerate()
            .map(|(i, v)| json_to_value(v, vt).map_err(|e| bad(i, e)))
            .collect(),
        EntityValues::Proto(values) => values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if feast_core::value::value_type_of(v) == vt {
                    Ok(v.clone())
                } else {
                    json_to_value(&value_to_json(v), vt).map_err(|e| bad(i, e))
                }
            })
            .collect(),
    }
}

/// The serialized entity keys of the views keyed by `join_keys`, whose values come from
/// the request columns `sources` (`None`: Feast's `__dummy_id` placeholder).
struct KeySet<'a> {
    join_keys: Vec<&'a str>,
    sources: Vec<Option<usize>>,
    keys: Vec<Vec<u8>>,
}

/// Serves one `get_online_features` request: resolves the features against `catalog`,
/// reads the store once per request (all views' reads in one [`OnlineStore::online_read_many`]
/// call) and assembles the columns in Feast's order: the entity columns in request order,
/// then each view's features in request order.
/// How a server reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// The repository's `entity_key_serialization_version`.
    pub entity_key_serialization_version: u32,
    /// Serve rows older than the view's TTL as `PRESENT` with their value, as Feast's Python
    /// server does, instead of `OUTSIDE_MAX_AGE` and `null` (the default, which agrees with
    /// the offline point-in-time join).
    pub expired_as_present: bool,
    /// The registry's `serve_features_while_materializing`: views in the `MATERIALIZING`
    /// state keep serving their last values (otherwise they are refused, as Feast does).
    pub serve_while_materializing: bool,
    /// The registry's `enable_online_feature_view_versioning`: `view@vN` references read
    /// that version, and each version's online data lives under `{view}_v{N}`.
    pub versioning: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            entity_key_serialization_version:
                feast_core::entity_key::DEFAULT_ENTITY_KEY_SERIALIZATION_VERSION,
            expired_as_present: false,
            serve_while_materializing: false,
            versioning: false,
        }
    }
}

impl ReadOptions {
    /// How writes of this server lay rows out (the same layout its reads expect).
    pub fn write_layout(&self) -> crate::write::WriteLayout {
        crate::write::WriteLayout {
            entity_key_serialization_version: self.entity_key_serialization_version,
            versioning: self.versioning,
        }
    }
}

pub async fn get_online_features(
    catalog: &Catalog,
    index: &ProjectIndex,
    project: &str,
    store: &Arc<dyn OnlineStore>,
    options: ReadOptions,
    request: &OnlineRequest,
) -> Result<OnlineResponse, ServeError> {
    let key_version = options.entity_key_serialization_version;
    let reads = resolve(catalog, index, project, request, options.versioning)?;
    for r in &reads {
        check_servable(r.fv, options.serve_while_materializing)?;
    }

    // Entity columns: equal lengths.
    let mut rows: Option<usize> = None;
    for (name, values) in &request.entities {
        let len = values.len();
        if let Some(n) = rows
            && n != len
        {
            return Err(ServeError::Unprocessable(format!(
                "all entity columns must have the same length: {name:?} has {len} values, \
                 another column has {n}"
            )));
        }
        rows = Some(len);
    }
    let rows = rows.unwrap_or(0);

    // Declared type of every request column that is a join key: the views' entity columns
    // (under their request names), else the project's entities.
    let mut view_types: HashMap<&str, ValueType> = HashMap::new();
    for r in &reads {
        for col in &r.fv.spec_ref().entity_columns {
            let vt = ValueType::try_from(col.value_type).unwrap_or(ValueType::Invalid);
            view_types.insert(r.request_column(&col.name), vt);
        }
    }
    let declared_type = |name: &str| {
        view_types
            .get(name)
            .or_else(|| index.entity_types.get(name))
            .copied()
    };
    let epoch = Timestamp::default();
    let mut typed: HashMap<&str, usize> = HashMap::new();
    let mut columns: Vec<ResponseColumn> = Vec::new();
    for (name, values) in &request.entities {
        // Columns that are no join key are request data (for on-demand views): dropped.
        let Some(vt) = declared_type(name) else {
            continue;
        };
        let values = type_column(name, values, vt)?;
        typed.insert(name, columns.len());
        columns.push(ResponseColumn {
            name: name.clone(),
            values,
            statuses: vec![FieldStatus::Present; rows],
            timestamps: vec![epoch; rows],
        });
    }

    // Entity keys of every view, then one read for all views. Views keyed by the same join
    // keys from the same request columns (the usual case: every view of one entity) share
    // one set of serialized keys, built once.
    let mut tables = Vec::with_capacity(reads.len());
    let mut key_sets: Vec<KeySet<'_>> = Vec::new();
    let mut keys_per_view = Vec::with_capacity(reads.len());
    let mut entity_fields = Vec::with_capacity(reads.len());
    for r in &reads {
        let spec = r.fv.spec_ref();
        // No request column feeds an entity-less view's `__dummy_id`.
        let join_keys = stored_join_keys(r.fv);
        entity_fields.push(index.entity_fields.get(spec.name.as_str()).copied());
        let mut sources = Vec::with_capacity(join_keys.len());
        for jk in &join_keys {
            if *jk == DUMMY_ENTITY_ID {
                sources.push(None);
                continue;
            }
            let column = r.request_column(jk);
            let Some(&index) = typed.get(column) else {
                return Err(ServeError::Unprocessable(format!(
                    "feature view {} needs the join key {column:?} in `entities`",
                    spec.name
                )));
            };
            sources.push(Some(index));
        }
        tables.push(TableRef::new(project, r.online_name(options.versioning)));
        if let Some(i) = key_sets
            .iter()
            .position(|set| set.join_keys == join_keys && set.sources == sources)
        {
            keys_per_view.push(i);
            continue;
        }
        let mut key = EntityKey {
            join_keys: join_keys.iter().map(|jk| jk.to_string()).collect(),
            entity_values: Vec::with_capacity(join_keys.len()),
        };
        let mut keys = Vec::with_capacity(rows);
        for row in 0..rows {
            key.entity_values.clear();
            for source in &sources {
                key.entity_values.push(match source {
                    None => Value {
                        val: Some(Val::StringVal(DUMMY_ENTITY_VAL.to_string())),
                    },
                    Some(index) => columns[*index].values[row].clone(),
                });
            }
            keys.push(serialize_entity_key(&key, key_version).map_err(|e| {
                ServeError::Unprocessable(format!(
                    "entity row {row} of feature view {}: {e}",
                    spec.name
                ))
            })?);
        }
        keys_per_view.push(key_sets.len());
        key_sets.push(KeySet {
            join_keys,
            sources,
            keys,
        });
    }
    let mut stats = ReadStats {
        entity_rows: rows,
        features: reads.iter().map(|r| r.features.len()).sum(),
        ..ReadStats::default()
    };
    let found = if rows == 0 {
        reads.iter().map(|_| Vec::new()).collect()
    } else {
        let specs: Vec<ReadSpec<'_>> = reads
            .iter()
            .zip(&tables)
            .zip(&keys_per_view)
            .zip(&entity_fields)
            .map(|(((r, table), &keys), &entity_fields)| ReadSpec {
                table,
                entity_keys: &key_sets[keys].keys,
                features: &r.features,
                entity_fields,
            })
            .collect();
        let started = std::time::Instant::now();
        let found = store.online_read_many(&specs).await?;
        stats.store_read = started.elapsed();
        found
    };

    let now = now_timestamp();
    let mut view_metadata: Vec<(String, i32)> = Vec::new();
    for (r, found) in reads.iter().zip(found) {
        let oldest =
            r.fv.ttl()
                .filter(|_| !options.expired_as_present)
                .map(|ttl| now.seconds - ttl.as_secs() as i64);
        let first = columns.len();
        for f in &r.features {
            columns.push(ResponseColumn {
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
        let (mut present, mut missing) = (0u64, 0u64);
        for row in found {
            let expired = row
                .as_ref()
                .is_some_and(|fr| oldest.is_some_and(|o| fr.event_ts.seconds < o));
            let ts = row.as_ref().map_or(epoch, |fr| fr.event_ts);
            // The row's values move into the columns (no clone per value).
            let mut values = row.map(|fr| fr.values.into_iter());
            for col in columns[first..].iter_mut() {
                let value = values.as_mut().and_then(|v| v.next()).flatten();
                match value {
                    None => {
                        missing += 1;
                        col.values.push(Value::default());
                        col.statuses.push(FieldStatus::NotFound);
                        col.timestamps.push(epoch);
                    }
                    Some(_) if expired => {
                        col.values.push(Value::default());
                        col.statuses.push(FieldStatus::OutsideMaxAge);
                        col.timestamps.push(ts);
                    }
                    Some(v) => {
                        present += 1;
                        col.values.push(v);
                        col.statuses.push(FieldStatus::Present);
                        col.timestamps.push(ts);
                    }
                }
            }
        }
        stats
            .per_view
            .push((r.fv.spec_ref().name.clone(), present, missing));
        if request.include_feature_view_version_metadata
            && !view_metadata.iter().any(|(name, _)| *name == r.clean_name)
        {
            let version =
                r.fv.meta
                    .as_ref()
                    .map(|m| m.current_version_number)
                    .unwrap_or_default();
            view_metadata.push((r.clean_name.clone(), version));
        }
    }
    Ok(OnlineResponse {
        columns,
        view_metadata: request
            .include_feature_view_version_metadata
            .then_some(view_metadata),
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_json_equals_the_json_tree() {
        let response = OnlineResponse {
            columns: vec![
                ResponseColumn {
                    name: "driver_id".into(),
                    values: vec![
                        Value {
                            val: Some(Val::Int64Val(1)),
                        },
                        Value {
                            val: Some(Val::Int64Val(2)),
                        },
                    ],
                    statuses: vec![FieldStatus::Present; 2],
                    timestamps: vec![Timestamp::default(); 2],
                },
                ResponseColumn {
                    name: "rate".into(),
                    values: vec![
                        Value {
                            val: Some(Val::DoubleVal(1.0)),
                        },
                        Value::default(),
                    ],
                    statuses: vec![FieldStatus::Present, FieldStatus::NotFound],
                    timestamps: vec![
                        Timestamp {
                            seconds: 1714557600,
                            nanos: 123_000_000,
                        },
                        Timestamp::default(),
                    ],
                },
            ],
            view_metadata: Some(vec![("stats".into(), 0), ("v2".into(), 2)]),
            stats: ReadStats::default(),
        };
        let mut response = response;
        let at = |seconds| Timestamp { seconds, nanos: 0 };
        response.columns.push(ResponseColumn {
            name: "label".into(),
            values: vec![Value::default(); 4],
            statuses: vec![FieldStatus::Present; 4],
            timestamps: vec![at(5), at(5), Timestamp::default(), at(6)],
        });
        let streamed = serde_json::to_string(&response).unwrap();
        assert_eq!(
            streamed,
            serde_json::to_string(&response.to_json()).unwrap()
        );
        let mut written = Vec::new();
        response.write_json(&mut written).unwrap();
        assert_eq!(String::from_utf8(written).unwrap(), streamed);
        assert!(streamed.contains(r#""values":[1.0,null]"#), "{streamed}");
        let without = OnlineResponse {
            view_metadata: None,
            ..response
        };
        assert_eq!(
            serde_json::to_string(&without).unwrap(),
            serde_json::to_string(&without.to_json()).unwrap()
        );
        let mut written = Vec::new();
        without.write_json(&mut written).unwrap();
        assert_eq!(
            String::from_utf8(written).unwrap(),
            serde_json::to_string(&without).unwrap()
        );
    }

    #[test]
    fn the_index_sees_only_its_project() {
        let view = |name: &str, project: &str, feature: &str| core::FeatureView {
            spec: Some(core::FeatureViewSpec {
                name: name.into(),
                project: project.into(),
                features: vec![core::FeatureSpecV2 {
                    name: feature.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            meta: None,
        };
        let entity = |project: &str, vt: ValueType| core::Entity {
            spec: Some(core::EntitySpecV2 {
                name: "driver".into(),
                project: project.into(),
                join_key: "driver_id".into(),
                value_type: vt as i32,
                ..Default::default()
            }),
            meta: None,
        };
        let catalog = Catalog::from_proto(core::Registry {
            feature_views: vec![view("stats", "other", "x"), view("stats", "mine", "y")],
            entities: vec![
                entity("other", ValueType::String),
                entity("mine", ValueType::Int64),
            ],
            on_demand_feature_views: vec![core::OnDemandFeatureView {
                spec: Some(core::OnDemandFeatureViewSpec {
                    name: "odfv".into(),
                    project: "other".into(),
                    ..Default::default()
                }),
                meta: None,
            }],
            ..Default::default()
        });
        let index = ProjectIndex::build(&catalog, "mine");
        let fv = lookup_view(&catalog, &index, "stats").unwrap();
        assert_eq!(fv.feature_names(), ["y"]);
        assert_eq!(index.entity_types["driver_id"], ValueType::Int64);
        // Another project's on-demand view is simply unknown here.
        let e = lookup_view(&catalog, &index, "odfv").unwrap_err();
        assert_eq!(e.http_status(), 404);
        // One feature and its timestamp; the other project's view of that name is not counted.
        assert_eq!(index.entity_fields["stats"], 2);
    }

    #[test]
    fn views_with_the_same_join_keys_add_up_their_fields() {
        let view = |name: &str, keys: &[&str], features: usize| core::FeatureView {
            spec: Some(core::FeatureViewSpec {
                name: name.into(),
                project: "p".into(),
                entities: keys.iter().map(|k| k.to_string()).collect(),
                entity_columns: (keys.iter())
                    .map(|k| core::FeatureSpecV2 {
                        name: k.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                features: (0..features)
                    .map(|i| core::FeatureSpecV2 {
                        name: format!("f{i}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            meta: None,
        };
        let catalog = Catalog::from_proto(core::Registry {
            feature_views: vec![
                view("a", &["driver_id"], 10),
                view("b", &["driver_id"], 4),
                // Join keys in another order share the entity's hash.
                view("pair", &["rider_id", "driver_id"], 2),
                view("pair_again", &["driver_id", "rider_id"], 3),
                view("global", &[], 1),
            ],
            ..Default::default()
        });
        let index = ProjectIndex::build(&catalog, "p");
        assert_eq!(index.entity_fields["a"], 11 + 5);
        assert_eq!(index.entity_fields["b"], 16);
        assert_eq!(index.entity_fields["pair"], 3 + 4);
        assert_eq!(index.entity_fields["pair_again"], 7);
        assert_eq!(index.entity_fields["global"], 2);
    }

    #[test]
    fn timestamps_use_protobuf_json_fraction_digits() {
        let t = |seconds, nanos| format_timestamp(&Timestamp { seconds, nanos });
        assert_eq!(t(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(t(1714557600, 0), "2024-05-01T10:00:00Z");
        assert_eq!(t(1714557600, 500_000_000), "2024-05-01T10:00:00.500Z");
        assert_eq!(t(1714557600, 1_000), "2024-05-01T10:00:00.000001Z");
        assert_eq!(t(1714557600, 1), "2024-05-01T10:00:00.000000001Z");
        assert_eq!(t(-1, 0), "1969-12-31T23:59:59Z");
        assert_eq!(t(253402300800, 0), "+10000-01-01T00:00:00Z");
        assert_eq!(t(-62135596800, 0), "0001-01-01T00:00:00Z");
        // Years 0 to 9999, written by hand, as chrono writes them.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let seconds = -62_167_219_200 + (x >> 20) as i64 % 315_537_897_600;
            let nanos = match i % 4 {
                0 => 0,
                1 => (x % 1000) as i32 * 1_000_000,
                2 => (x % 1_000_000) as i32 * 1_000,
                _ => (x % 1_000_000_000) as i32,
            };
            let expected = chrono::DateTime::from_timestamp(seconds, nanos as u32)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            assert_eq!(t(seconds, nanos), expected, "{seconds} {nanos}");
        }
    }
}
