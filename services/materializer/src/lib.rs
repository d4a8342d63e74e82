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

pub mod guard;
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
    /// A pinned version (`view@vN`, with `enable_online_feature_view_versioning`): that
    /// version's recorded definition is materialized into its own online table.
    pub version: Option<i32>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// A note to show the user about how the window was chosen (Feast prints one for a
    /// ttl of 0).
    pub note: Option<String>,
}

impl ViewWindow {
    /// The name that plans this window again: `view@vN` for a pinned version, else `view`.
    pub fn plan_name(&self) -> String {
        match self.version {
            Some(n) => format!("{}@v{n}", self.view),
            None => self.view.clone(),
        }
    }
}

/// The names that plan `views` again as `windows` planned them (pinned versions kept), in
/// `views`' order: for replanning the views a job holds on a fresher registry.
pub fn plan_names(windows: &[ViewWindow], views: &[String]) -> Vec<String> {
    views
        .iter()
        .map(|v| {
            windows
                .iter()
                .find(|w| w.view == *v)
                .map_or_else(|| v.clone(), ViewWindow::plan_name)
        })
        .collect()
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

/// A view `materialize` would cover that feast-rs cannot materialize, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedView {
    pub view: String,
    /// `on-demand feature view`, `stream feature view` or `feature view`.
    pub kind: &'static str,
    pub reason: String,
}

impl std::fmt::Display for SkippedView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.kind, self.view, self.reason)
    }
}

/// What a materialization covers: the views to run with their windows, and the views that
/// materializing "every view" would include but feast-rs cannot compute (reported, not run).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub windows: Vec<ViewWindow>,
    pub skipped: Vec<SkippedView>,
}

/// Where feast-rs cannot compute a view's rows the way Feast does while materializing:
/// Feast runs a view's Python transformation (a batch or stream view's `udf` /
/// `feature_transformation`, an on-demand view's function) or a stream view's
/// aggregations; feast-rs runs no Python, and writing the raw source columns instead would
/// put wrong values online.
const MATERIALIZE_WITH_FEAST: &str = "materialize it with Feast (`feast materialize`), or write its rows with a push or \
     /write-to-online-store";

fn transformation_reason(
    transformation: Option<&core::FeatureTransformationV2>,
    mode: &str,
) -> Option<String> {
    use core::feature_transformation_v2::Transformation;
    let udf_name = match transformation?.transformation.as_ref()? {
        Transformation::UserDefinedFunction(udf) => udf.name.clone(),
        Transformation::SubstraitTransformation(_) => "substrait plan".to_owned(),
    };
    let mode = if mode.is_empty() { "python" } else { mode };
    Some(format!(
        "its rows come from its {mode} transformation ({udf_name}), which feast-rs does not \
         run; {MATERIALIZE_WITH_FEAST}"
    ))
}

fn feature_view_reason(spec: &core::FeatureViewSpec) -> Option<String> {
    transformation_reason(spec.feature_transformation.as_ref(), &spec.mode)
}

fn stream_view_reason(spec: &core::StreamFeatureViewSpec) -> Option<String> {
    #[allow(deprecated)]
    let legacy_udf = spec
        .user_defined_function
        .as_ref()
        .filter(|u| !u.body.is_empty() || !u.body_text.is_empty());
    if let Some(reason) = transformation_reason(spec.feature_transformation.as_ref(), &spec.mode) {
        return Some(reason);
    }
    if let Some(udf) = legacy_udf {
        let mode = if spec.mode.is_empty() {
            "python"
        } else {
            &spec.mode
        };
        return Some(format!(
            "its rows come from its {mode} transformation ({}), which feast-rs does not run; \
             {MATERIALIZE_WITH_FEAST}",
            udf.name
        ));
    }
    (!spec.aggregations.is_empty()).then(|| {
        format!(
            "its features are {} aggregation(s) of the source rows, which feast-rs does not \
             compute while materializing; {MATERIALIZE_WITH_FEAST}",
            spec.aggregations.len()
        )
    })
}

fn on_demand_reason() -> String {
    format!(
        "it has write_to_online_store=True, and Feast materializes such a view by running its \
         Python transformation over its sources, which feast-rs does not run; \
         {MATERIALIZE_WITH_FEAST}"
    )
}

/// The views materializing "every view" covers, as Feast 0.67's
/// `_get_feature_views_to_materialize(None)` lists them: feature views and stream feature
/// views that are online and enabled, and on-demand views with `write_to_online_store`
/// that are enabled; split into those feast-rs runs and those it cannot compute.
fn every_view<'a>(
    catalog: &'a Catalog,
    project: &'a str,
) -> (
    Vec<std::borrow::Cow<'a, core::FeatureView>>,
    Vec<SkippedView>,
) {
    static NO_TAGS: BTreeMap<String, String> = BTreeMap::new();
    let no_tags = &NO_TAGS;
    let mut views = Vec::new();
    let mut skipped = Vec::new();
    for view in catalog.list::<core::FeatureView>(project, no_tags) {
        let spec = view.spec_ref();
        if !spec.online || spec.disabled {
            continue;
        }
        match feature_view_reason(spec) {
            None => views.push(std::borrow::Cow::Borrowed(view)),
            Some(reason) => skipped.push(SkippedView {
                view: spec.name.clone(),
                kind: "feature view",
                reason,
            }),
        }
    }
    for sfv in catalog.list::<core::StreamFeatureView>(project, no_tags) {
        let Some(spec) = sfv.spec.as_ref() else {
            continue;
        };
        if !spec.online || spec.disabled {
            continue;
        }
        match stream_view_reason(spec) {
            None => views.push(std::borrow::Cow::Owned(
                feast_core::model::stream_view_as_feature_view(sfv),
            )),
            Some(reason) => skipped.push(SkippedView {
                view: spec.name.clone(),
                kind: "stream feature view",
                reason,
            }),
        }
    }
    for odfv in catalog.list::<core::OnDemandFeatureView>(project, no_tags) {
        let Some(spec) = odfv.spec.as_ref() else {
            continue;
        };
        if spec.write_to_online_store && !spec.disabled {
            skipped.push(SkippedView {
                view: spec.name.clone(),
                kind: "on-demand feature view",
                reason: on_demand_reason(),
            });
        }
    }
    (views, skipped)
}

/// The view named `name`, as Feast 0.67's `_get_feature_views_to_materialize` resolves a
/// named view (a feature view, else a stream feature view, else an on-demand view), with
/// its checks; a stream view comes back as the feature view its rows belong to.
fn named_view<'a>(
    catalog: &'a Catalog,
    project: &str,
    name: &str,
) -> Result<std::borrow::Cow<'a, core::FeatureView>> {
    let invalid = |m: String| Err(MaterializeError::Invalid(m));
    if let Ok(view) = catalog.get::<core::FeatureView>(name, project) {
        let spec = view.spec_ref();
        if spec.disabled {
            return invalid(format!(
                "FeatureView {name} is disabled. Enable it before materializing."
            ));
        }
        if !spec.online {
            return invalid(format!(
                "FeatureView {name} is not configured to be served online."
            ));
        }
        if let Some(reason) = feature_view_reason(spec) {
            return invalid(format!(
                "feast-rs cannot materialize feature view {name}: {reason}"
            ));
        }
        return Ok(std::borrow::Cow::Borrowed(view));
    }
    if let Ok(sfv) = catalog.get::<core::StreamFeatureView>(name, project) {
        let spec = sfv.spec.clone().unwrap_or_default();
        if spec.disabled {
            return invalid(format!(
                "FeatureView {name} is disabled. Enable it before materializing."
            ));
        }
        if !spec.online {
            return invalid(format!(
                "FeatureView {name} is not configured to be served online."
            ));
        }
        if let Some(reason) = stream_view_reason(&spec) {
            return invalid(format!(
                "feast-rs cannot materialize stream feature view {name}: {reason}"
            ));
        }
        return Ok(std::borrow::Cow::Owned(
            feast_core::model::stream_view_as_feature_view(sfv),
        ));
    }
    if let Ok(odfv) = catalog.get::<core::OnDemandFeatureView>(name, project) {
        let spec = odfv.spec.clone().unwrap_or_default();
        if spec.disabled {
            return invalid(format!(
                "FeatureView {name} is disabled. Enable it before materializing."
            ));
        }
        if !spec.write_to_online_store {
            return invalid(format!(
                "OnDemandFeatureView {name} is not configured for write_to_online_store."
            ));
        }
        return invalid(format!(
            "feast-rs cannot materialize on-demand feature view {name}: {}",
            on_demand_reason()
        ));
    }
    if catalog.get::<core::LabelView>(name, project).is_ok() {
        return invalid(format!(
            "LabelView {name} cannot be materialized via materialize(). Use \
             FeatureStore.push() to write labels."
        ));
    }
    // Feast's FeatureViewNotFoundException.
    Err(catalog
        .get::<core::FeatureView>(name, project)
        .err()
        .map(MaterializeError::from)
        .unwrap_or_else(|| MaterializeError::Invalid(format!("no feature view {name}"))))
}

/// Version `version` of the view `name`, from the registry's version history, as
/// materialization reads it (Feast's `materialize(..., version="vN")`).
fn version_view<'a>(
    catalog: &'a Catalog,
    project: &str,
    name: &str,
    version: i32,
) -> Result<std::borrow::Cow<'a, core::FeatureView>> {
    use feast_core::registry::ViewVersion;
    let invalid = |m: String| Err(MaterializeError::Invalid(m));
    let view = match catalog.view_version(name, project, version)? {
        ViewVersion::FeatureView(v) => v,
        ViewVersion::Stream(v) => feast_core::model::stream_view_as_feature_view(&v),
        ViewVersion::OnDemand(_) => {
            return invalid(format!(
                "feast-rs cannot materialize on-demand feature view {name}: {}",
                on_demand_reason()
            ));
        }
        ViewVersion::Label(_) => {
            return invalid(format!(
                "LabelView {name} cannot be materialized via materialize(). Use \
                 FeatureStore.push() to write labels."
            ));
        }
    };
    if let Some(reason) = feature_view_reason(view.spec_ref()) {
        return invalid(format!(
            "feast-rs cannot materialize version v{version} of feature view {name}: {reason}"
        ));
    }
    Ok(std::borrow::Cow::Owned(view))
}

/// The view `name` (a feature view, or a stream feature view as the feature view its rows
/// belong to) as materialization reads it.
pub fn materializable_view<'a>(
    catalog: &'a Catalog,
    project: &str,
    name: &str,
) -> Result<std::borrow::Cow<'a, core::FeatureView>> {
    if let Ok(view) = catalog.get::<core::FeatureView>(name, project) {
        return Ok(std::borrow::Cow::Borrowed(view));
    }
    if let Ok(sfv) = catalog.get::<core::StreamFeatureView>(name, project) {
        return Ok(std::borrow::Cow::Owned(
            feast_core::model::stream_view_as_feature_view(sfv),
        ));
    }
    Err(catalog
        .get::<core::FeatureView>(name, project)
        .err()
        .map(MaterializeError::from)
        .unwrap_or_else(|| MaterializeError::Invalid(format!("no feature view {name}"))))
}

/// The views to materialize (`names`, or every online view when empty: feature views and
/// stream feature views) and their windows, as Feast's `materialize` /
/// `materialize_incremental` choose them. Views feast-rs cannot compute (on-demand views
/// with `write_to_online_store`, views with a Python transformation) are an error when
/// named, and listed in [`Plan::skipped`] when every view is asked for.
pub fn plan(
    catalog: &Catalog,
    project: &str,
    names: &[String],
    range: Range,
    now: DateTime<Utc>,
) -> Result<Plan> {
    let (views, skipped) = if names.is_empty() {
        let (views, skipped) = every_view(catalog, project);
        (views.into_iter().map(|v| (v, None)).collect(), skipped)
    } else {
        let mut views = Vec::with_capacity(names.len());
        for name in names {
            let parsed = feast_core::version::parse_view_ref(name);
            views.push(match parsed.version {
                Some(n) => (version_view(catalog, project, parsed.view, n)?, Some(n)),
                None => (named_view(catalog, project, name)?, None),
            });
        }
        (views, Vec::new())
    };
    let mut windows = Vec::with_capacity(views.len());
    for (view, version) in views {
        let view = view.as_ref();
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
            version,
            start,
            end,
            note,
        });
    }
    Ok(Plan { windows, skipped })
}

/// The names of the views `call` covers on `catalog`: what the feature server authorizes
/// and guards before a job runs.
pub fn resolve_views(
    catalog: &Catalog,
    project: &str,
    call: &feast_online::materialize::MaterializeCall,
) -> Result<Vec<String>> {
    let plan = plan(
        catalog,
        project,
        &call.views,
        call.range,
        chrono::Utc::now(),
    )?;
    Ok(plan.windows.into_iter().map(|w| w.view).collect())
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
    let view = match window.version {
        // Without versioning the version's rows would land in the view's own table.
        Some(_) if !options.versioning => {
            return Err(MaterializeError::Invalid(
                feast_online::materialize::VERSIONING_REQUIRED.into(),
            ));
        }
        Some(n) => version_view(catalog, project, &window.view, n)?,
        None => materializable_view(catalog, project, &window.view)?,
    };
    let view = view.as_ref();
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
            let mut rows = convert(name, &layout, &batch, key_version)?.into_iter();
            let mut chunks = Vec::with_capacity(batch.num_rows().div_ceil(chunk_rows));
            loop {
                let chunk: Vec<WriteRow> = rows.by_ref().take(chunk_rows).collect();
                if chunk.is_empty() {
                    break Ok(chunks);
                }
                chunks.push(chunk);
            }
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
    // One key, its values replaced row by row.
    let mut key = EntityKey {
        join_keys: keys.iter().map(|(k, _)| k.to_string()).collect(),
        entity_values: vec![Value::default(); keys.len()],
    };
    for row in 0..n {
        for (slot, (_, values)) in key.entity_values.iter_mut().zip(&mut keys) {
            *slot = std::mem::take(&mut values[row]);
        }
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
                .iter_mut()
                .map(|(f, vs)| (f.to_string(), std::mem::take(&mut vs[row])))
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
        let windows = plan(&catalog(), "p", &[], Range::Incremental { end }, now)
            .unwrap()
            .windows;
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

    fn catalog_of_every_kind() -> Catalog {
        let stream = |name: &str, transformation: bool, disabled: bool| core::StreamFeatureView {
            spec: Some(core::StreamFeatureViewSpec {
                name: name.into(),
                project: "p".into(),
                ttl: Some(prost_types::Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
                online: true,
                disabled,
                mode: "pandas".into(),
                feature_transformation: transformation.then(|| core::FeatureTransformationV2 {
                    transformation: Some(
                        core::feature_transformation_v2::Transformation::UserDefinedFunction(
                            core::UserDefinedFunctionV2 {
                                name: "enrich".into(),
                                body: b"pickled".to_vec(),
                                ..Default::default()
                            },
                        ),
                    ),
                }),
                ..Default::default()
            }),
            meta: None,
        };
        let on_demand = |name: &str, write: bool| core::OnDemandFeatureView {
            spec: Some(core::OnDemandFeatureViewSpec {
                name: name.into(),
                project: "p".into(),
                write_to_online_store: write,
                ..Default::default()
            }),
            meta: None,
        };
        let mut disabled = view("disabled", 3600, true, None);
        disabled.spec.as_mut().unwrap().disabled = true;
        Catalog::from_proto(core::Registry {
            feature_views: vec![view("with_ttl", 3600, true, None), disabled],
            stream_feature_views: vec![
                stream("stream_plain", false, false),
                stream("stream_udf", true, false),
                stream("stream_off", false, true),
            ],
            on_demand_feature_views: vec![on_demand("odfv_write", true), on_demand("odfv", false)],
            ..Default::default()
        })
    }

    #[test]
    fn stream_views_are_materialized_and_uncomputable_views_reported() {
        let now = Utc.timestamp_opt(2_000_000, 0).unwrap();
        let range = Range::Between {
            start: now - Duration::hours(1),
            end: now,
        };
        let catalog = catalog_of_every_kind();
        let planned = plan(&catalog, "p", &[], range, now).unwrap();
        let views: Vec<&str> = planned.windows.iter().map(|w| w.view.as_str()).collect();
        assert_eq!(
            views,
            ["with_ttl", "stream_plain"],
            "disabled views are left out"
        );
        let skipped: Vec<(&str, &str)> = planned
            .skipped
            .iter()
            .map(|s| (s.view.as_str(), s.kind))
            .collect();
        assert_eq!(
            skipped,
            [
                ("stream_udf", "stream feature view"),
                ("odfv_write", "on-demand feature view")
            ]
        );
        assert!(
            planned.skipped[0]
                .reason
                .contains("pandas transformation (enrich)")
        );

        let named = |name: &str| plan(&catalog, "p", &[name.to_owned()], range, now);
        assert_eq!(named("stream_plain").unwrap().windows.len(), 1);
        let err = |name: &str| named(name).unwrap_err().to_string();
        assert!(
            err("stream_udf")
                .contains("feast-rs cannot materialize stream feature view stream_udf"),
            "{}",
            err("stream_udf")
        );
        assert!(err("odfv_write").contains(
            "feast-rs cannot materialize on-demand feature view odfv_write: it has \
             write_to_online_store=True"
        ));
        assert_eq!(
            err("odfv"),
            "OnDemandFeatureView odfv is not configured for write_to_online_store."
        );
        assert_eq!(
            err("disabled"),
            "FeatureView disabled is disabled. Enable it before materializing."
        );
        assert_eq!(
            err("stream_off"),
            "FeatureView stream_off is disabled. Enable it before materializing."
        );
        // A stream view's window and rows are those of the feature view of its name.
        let view = materializable_view(&catalog, "p", "stream_plain").unwrap();
        assert_eq!(view.spec_ref().name, "stream_plain");
        assert!(view.spec_ref().online);
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
                .windows
                .is_empty()
        );
    }
}
