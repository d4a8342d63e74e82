//! The offline server: Feast's remote-offline-store protocol over Arrow Flight
//! (PROTOCOLS.md §3), so the Feast SDK with `offline_store: {type: remote}` reads training
//! data and materialization pulls from feast-rs and writes through it.
//!
//! | Flight call | What it does |
//! |---|---|
//! | `DoExchange` | read APIs (the 0.67 SDK): the client streams the entity table or the mock table, the result comes back on the same stream; no state between calls |
//! | `DoPut` | write APIs run here (`offline_write_batch`, `write_logged_features`, `persist`, `validate_data_source`); read APIs are kept for the legacy path |
//! | `GetFlightInfo` → `DoGet` | the legacy read path of SDKs ≤ 0.66: the ticket names a kept upload, which `DoGet` runs and frees |
//! | `ListActions` | Feast's three write actions |
//! | `ListFlights` | uploads kept for the legacy path |
//!
//! The command is the descriptor's JSON (`{"command_id", "api", ...}`). Errors carry Feast's
//! envelope as `Flight error: {"module", "class", "message"}`, which the SDK turns back into
//! its exception class. Uploads kept for the legacy path and never fetched are dropped after
//! [`FlightOptions::pending_ttl`].
//!
//! Authorization (when the server runs with `auth`): the [`feast_auth::AuthLayer`] in front
//! of the service authenticates every call but the health check; here each API checks
//! Feast's permissions of the server's project, as [`API_RULES`] lists. A request naming
//! another project is refused, so one project's permissions never guard another project's
//! data.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use feast_auth::{Action as Act, Authorizer, ResourceRef, User};
use feast_core::error::{ErrorClass, FeastError};
use feast_core::registry::Catalog;
use feast_proto::core;
use feast_registry::RegistryCache;
use futures::{Stream, StreamExt, TryStreamExt};
use serde_json::{Map, Value};
use tonic::{Request, Response, Status, Streaming};

use crate::error::OfflineError;
use crate::pull::{PullKind, PullRequest};
use crate::resolve::FeatureSelection;
use crate::store::{EntityTable, EntityWindow, HistoricalRequest, OfflineStore};

/// Feast's default offline server port.
pub const DEFAULT_PORT: u16 = 8815;

/// Largest message accepted from a client (an uploaded batch): pyarrow sends a table chunk
/// as one message, and Flight itself caps messages below 2 GiB.
pub const MAX_MESSAGE_BYTES: usize = (2 << 30) - 1;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Settings of the Flight service.
#[derive(Debug, Clone)]
pub struct FlightOptions {
    /// How long an upload kept for the legacy `GetFlightInfo`/`DoGet` path waits to be
    /// fetched before it is dropped.
    pub pending_ttl: Duration,
    /// The location advertised in `FlightInfo` endpoints (`grpc+tcp://host:port`); clients
    /// ignore it and fetch from the server they called.
    pub location: String,
}

impl Default for FlightOptions {
    fn default() -> Self {
        Self {
            pending_ttl: Duration::from_secs(600),
            location: format!("grpc+tcp://localhost:{DEFAULT_PORT}"),
        }
    }
}

/// An upload of the legacy read path, waiting for `DoGet`.
struct Pending {
    command: Map<String, Value>,
    upload: EntityTable,
    descriptor: FlightDescriptor,
    at: Instant,
}

/// The Flight service over one project's registry (cached) and an offline store.
pub struct OfflineFlightService<S> {
    registry: RegistryCache,
    store: Arc<S>,
    project: String,
    /// `Some` when the server authenticates callers: their permissions are checked.
    authorizer: Option<Arc<Authorizer>>,
    options: FlightOptions,
    pending: Arc<Mutex<HashMap<Vec<u8>, Pending>>>,
}

impl<S> OfflineFlightService<S> {
    /// The registry this server reads (its readiness follows it).
    pub fn registry(&self) -> &RegistryCache {
        &self.registry
    }

    pub fn new(
        registry: RegistryCache,
        store: Arc<S>,
        project: impl Into<String>,
        authorizer: Option<Arc<Authorizer>>,
        options: FlightOptions,
    ) -> Self {
        Self {
            registry,
            store,
            project: project.into(),
            authorizer,
            options,
            pending: Default::default(),
        }
    }

    /// Drops legacy uploads older than the pending ttl; returns how many it dropped.
    pub fn sweep(&self) -> usize {
        sweep(&self.pending, self.options.pending_ttl)
    }

    /// A handle that sweeps this service's pending uploads (for a periodic task that must
    /// not keep the service alive).
    pub fn sweeper(&self) -> impl Fn() -> Option<usize> + Send + 'static {
        let pending = Arc::downgrade(&self.pending);
        let ttl = self.options.pending_ttl;
        move || pending.upgrade().map(|p| sweep(&p, ttl))
    }

    /// Number of uploads kept for the legacy path.
    pub fn pending_count(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

fn sweep(pending: &Mutex<HashMap<Vec<u8>, Pending>>, ttl: Duration) -> usize {
    let mut map = pending.lock().unwrap_or_else(|e| e.into_inner());
    let before = map.len();
    map.retain(|_, p| p.at.elapsed() < ttl);
    let dropped = before - map.len();
    if dropped > 0 {
        tracing::info!(
            message = "dropped uploads never fetched",
            count = dropped,
            ttl_secs = ttl.as_secs()
        );
    }
    dropped
}

// ---------------------------------------------------------------------------------------
// Errors

/// An error as the Flight client sees it.
#[derive(Debug)]
pub struct ApiError {
    code: tonic::Code,
    error: FeastError,
}

impl ApiError {
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: tonic::Code::InvalidArgument,
            error: FeastError::new(ErrorClass::FeastError, message),
        }
    }

    fn unimplemented(message: impl Into<String>) -> Self {
        Self {
            code: tonic::Code::Unimplemented,
            error: FeastError::new(ErrorClass::FeastError, message),
        }
    }
}

impl From<FeastError> for ApiError {
    fn from(error: FeastError) -> Self {
        // Feast's server raises every FeastError as a FlightError: gRPC UNKNOWN.
        Self {
            code: tonic::Code::Unknown,
            error,
        }
    }
}

impl From<OfflineError> for ApiError {
    fn from(e: OfflineError) -> Self {
        let code = match &e {
            OfflineError::Feast(_) => tonic::Code::Unknown,
            OfflineError::Invalid(_) => tonic::Code::InvalidArgument,
            OfflineError::Unsupported(_) => tonic::Code::Unimplemented,
            OfflineError::Source { .. } => tonic::Code::FailedPrecondition,
            OfflineError::Arrow(_) => tonic::Code::InvalidArgument,
            OfflineError::Parquet(_) => tonic::Code::Internal,
            OfflineError::DataFusion(d) => match d.find_root() {
                datafusion::error::DataFusionError::ResourcesExhausted(_) => {
                    tonic::Code::ResourceExhausted
                }
                _ => tonic::Code::Internal,
            },
        };
        let error = match e {
            OfflineError::Feast(f) => f,
            other => FeastError::new(ErrorClass::FeastError, other.to_string()),
        };
        Self { code, error }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        Status::new(
            e.code,
            format!("Flight error: {}", e.error.to_error_detail()),
        )
    }
}

type ApiResult<T> = Result<T, ApiError>;

// ---------------------------------------------------------------------------------------
// Commands

fn parse_command(cmd: &[u8]) -> ApiResult<Map<String, Value>> {
    match serde_json::from_slice::<Value>(cmd) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid(
            "the Flight descriptor's command must be a JSON object",
        )),
        Err(e) => Err(ApiError::invalid(format!(
            "the Flight descriptor's command is not JSON: {e}"
        ))),
    }
}

fn api_of(command: &Map<String, Value>) -> ApiResult<&str> {
    command
        .get("api")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("api parameter is mandatory"))
}

fn field<'a>(command: &'a Map<String, Value>, name: &str) -> ApiResult<&'a Value> {
    command
        .get(name)
        .ok_or_else(|| ApiError::invalid(format!("{name} is a mandatory parameter")))
}

fn string(command: &Map<String, Value>, name: &str) -> ApiResult<String> {
    field(command, name)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| ApiError::invalid(format!("{name} must be a string")))
}

fn opt_string(command: &Map<String, Value>, name: &str) -> ApiResult<Option<String>> {
    match command.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(format!(
            "{name} must be a string or null"
        ))),
    }
}

fn strings(command: &Map<String, Value>, name: &str) -> ApiResult<Vec<String>> {
    let bad = || ApiError::invalid(format!("{name} must be a list of strings"));
    field(command, name)?
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|v| v.as_str().map(str::to_string).ok_or_else(bad))
        .collect()
}

fn opt_strings(command: &Map<String, Value>, name: &str) -> ApiResult<Vec<Option<String>>> {
    let bad = || ApiError::invalid(format!("{name} must be a list of strings or nulls"));
    field(command, name)?
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|v| match v {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            _ => Err(bad()),
        })
        .collect()
}

/// An ISO date as Python's `datetime.fromisoformat` + `make_tzaware` read it (naive = UTC).
fn date(command: &Map<String, Value>, name: &str) -> ApiResult<Option<DateTime<Utc>>> {
    match opt_string(command, name)? {
        None => Ok(None),
        Some(s) => feast_core::value::parse_iso_timestamp(&s)
            .map(|(t, _)| Some(t))
            .ok_or_else(|| ApiError::invalid(format!("{name} {s:?} is not an ISO timestamp"))),
    }
}

/// The parameters Feast's pull APIs send.
fn pull_request(command: &Map<String, Value>, kind: PullKind) -> ApiResult<PullRequest> {
    let start = date(command, "start_date")?;
    let end = date(command, "end_date")?;
    if kind == PullKind::Latest && (start.is_none() || end.is_none()) {
        return Err(ApiError::invalid(
            "start_date and end_date are mandatory for pull_latest_from_table_or_query",
        ));
    }
    Ok(PullRequest {
        join_key_columns: strings(command, "join_key_columns")?,
        feature_name_columns: strings(command, "feature_name_columns")?,
        timestamp_field: string(command, "timestamp_field")?,
        created_timestamp_column: opt_string(command, "created_timestamp_column")?
            .filter(|c| !c.is_empty()),
        start,
        end,
    })
}

/// Feast's mock upload (`{key: string}`), sent when there is no entity table: recognised by
/// its shape only (pyarrow splits the string into one row per character).
fn is_mock(upload: &EntityTable) -> bool {
    let fields = upload.schema.fields();
    fields.len() == 1 && fields[0].name() == "key"
}

/// The upload without pandas' index columns (`__index_level_N__`, added by
/// `pa.Table.from_pandas` for a non-default index: Feast's server turns the table back into
/// a DataFrame, where they become the index again, not entity columns) and without the
/// schema's `pandas` metadata, which describes the client's DataFrame, not the result.
fn without_pandas_index(
    upload: EntityTable,
) -> Result<EntityTable, datafusion::arrow::error::ArrowError> {
    let keep: Vec<usize> = upload
        .schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| !crate::write::is_pandas_index(f.name()))
        .map(|(i, _)| i)
        .collect();
    if keep.len() == upload.schema.fields().len() && upload.schema.metadata().is_empty() {
        return Ok(upload);
    }
    let schema = Arc::new(
        upload
            .schema
            .project(&keep)?
            .with_metadata(Default::default()),
    );
    let batches = upload
        .batches
        .iter()
        .map(|b| {
            RecordBatch::try_new(
                schema.clone(),
                keep.iter().map(|&i| b.column(i).clone()).collect(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EntityTable::new(schema, batches))
}

// ---------------------------------------------------------------------------------------
// Reading uploads and writing results

/// Reads a client stream: its descriptor (the first message that has one) and its table.
/// Messages without an IPC header (pyarrow's descriptor-only first message) are skipped.
async fn read_upload(
    mut stream: Streaming<FlightData>,
) -> Result<(FlightDescriptor, EntityTable), Status> {
    let mut descriptor = None;
    let mut head = Vec::new();
    while let Some(message) = stream.message().await? {
        if descriptor.is_none() {
            descriptor = message.flight_descriptor.clone();
        }
        if !message.data_header.is_empty() {
            head.push(message);
            break;
        }
    }
    let descriptor = descriptor.ok_or_else(|| {
        Status::invalid_argument("the first Flight message carries no descriptor")
    })?;
    let data = futures::stream::iter(head.into_iter().map(Ok))
        .chain(stream.map_err(|s| FlightError::Tonic(Box::new(s))))
        .try_filter(|m| futures::future::ready(!m.data_header.is_empty()));
    let mut batches_stream = FlightRecordBatchStream::new_from_flight_data(data);
    let mut batches = Vec::new();
    while let Some(batch) = batches_stream.next().await {
        batches.push(batch.map_err(|e| {
            Status::invalid_argument(format!("reading the uploaded Arrow table: {e}"))
        })?);
    }
    let schema = batches_stream
        .schema()
        .cloned()
        .or_else(|| batches.first().map(|b| b.schema()))
        .unwrap_or_else(|| Arc::new(Schema::empty()));
    Ok((descriptor, EntityTable::new(schema, batches)))
}

/// A result stream as Flight data: the schema first (also for an empty result), then the
/// batches, split so no message exceeds the encoder's size target.
fn encode(result: SendableRecordBatchStream) -> BoxStream<FlightData> {
    let schema = result.schema();
    let batches = result.map_err(|e| {
        let api: ApiError = OfflineError::from(e).into();
        FlightError::Tonic(Box::new(Status::from(api)))
    });
    let data = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(|e| match e {
            FlightError::Tonic(status) => *status,
            other => Status::internal(format!("encoding the result: {other}")),
        });
    Box::pin(data)
}

fn one_batch(batch: RecordBatch) -> SendableRecordBatchStream {
    let schema = batch.schema();
    Box::pin(RecordBatchStreamAdapter::new(
        schema,
        futures::stream::iter([Ok(batch)]),
    ))
}

fn user_of<T>(request: &Request<T>) -> Option<User> {
    request.extensions().get::<User>().cloned()
}

// ---------------------------------------------------------------------------------------
// The APIs

impl<S: OfflineStore + 'static> OfflineFlightService<S> {
    fn snapshot(&self) -> ApiResult<Arc<feast_registry::Snapshot>> {
        self.registry.snapshot().ok_or_else(|| ApiError {
            code: tonic::Code::Unavailable,
            error: FeastError::new(
                ErrorClass::FeastError,
                "the registry has not been loaded yet",
            ),
        })
    }

    /// The registry snapshot, refreshed once first when it does not know what `knows` asks
    /// for: an object applied since the last refresh (a view just applied, a dataset just
    /// saved) is found at once instead of being answered as not found.
    async fn snapshot_knowing(
        &self,
        knows: impl Fn(&Catalog) -> bool,
    ) -> ApiResult<Arc<feast_registry::Snapshot>> {
        let snapshot = self.snapshot()?;
        if knows(&snapshot.catalog) || self.registry.refresh().await.is_err() {
            return Ok(snapshot);
        }
        self.snapshot()
    }

    /// `assert_permissions` against the server project's permissions (nothing to check
    /// without auth).
    fn authorize(
        &self,
        user: Option<&User>,
        catalog: &Catalog,
        resource: ResourceRef<'_>,
        actions: &[Act],
    ) -> ApiResult<()> {
        let Some(authorizer) = &self.authorizer else {
            return Ok(());
        };
        let user = user.ok_or_else(|| {
            ApiError::from(feast_auth::permission_error(
                "no authenticated user on a call that needs one",
            ))
        })?;
        let permissions = feast_auth::project_permissions(catalog, &self.project);
        Ok(authorizer.check(user, &permissions, resource, actions)?)
    }

    /// Refuses a project other than the server's.
    fn check_project(&self, command: &Map<String, Value>) -> ApiResult<()> {
        if let Some(project) = opt_string(command, "project")?
            && project != self.project
        {
            return Err(ApiError::invalid(format!(
                "this offline server serves project {}; the request names project {project}",
                self.project
            )));
        }
        Ok(())
    }

    /// A feature view by name, as Feast's server looks it up (falling back to stream views).
    fn view<'a>(&self, catalog: &'a Catalog, name: &str) -> ApiResult<&'a core::FeatureView> {
        if let Ok(v) = catalog.get::<core::FeatureView>(name, &self.project) {
            return Ok(v);
        }
        if catalog
            .get::<core::StreamFeatureView>(name, &self.project)
            .is_ok()
        {
            return Err(ApiError::unimplemented(format!(
                "{name} is a stream feature view: feast-rs does not read or write stream \
                 feature views offline yet"
            )));
        }
        Err(FeastError::new(
            ErrorClass::FeatureViewNotFoundException,
            format!(
                "Feature view {name} does not exist in project {}",
                self.project
            ),
        )
        .into())
    }

    /// The data source a pull names: a registered one, else the file of a saved dataset
    /// (the SDK reads a saved dataset back by pulling from its storage path, which is how
    /// an unregistered `FileSource` is named).
    fn data_source(
        &self,
        catalog: &Catalog,
        command: &Map<String, Value>,
    ) -> ApiResult<core::DataSource> {
        let name = string(command, "data_source_name")?;
        match catalog.get::<core::DataSource>(&name, &self.project) {
            Ok(source) => Ok(source.clone()),
            Err(not_found) => {
                let no_tags = Default::default();
                let saved = catalog
                    .list::<core::SavedDataset>(&self.project, &no_tags)
                    .any(|d| {
                        matches!(
                            d.spec.as_ref().and_then(|s| s.storage.as_ref()).and_then(|s| s.kind.as_ref()),
                            Some(core::saved_dataset_storage::Kind::FileStorage(f)) if f.uri == name
                        )
                    });
                if saved {
                    Ok(file_source_at(&name, &self.project))
                } else {
                    Err(not_found.into())
                }
            }
        }
    }

    /// A data source sent inline (`data_source_proto`, protobuf JSON): the SDK sends a
    /// registered source, or, in `feast plan`/`apply`, one not registered yet. The client
    /// chooses its path, so a source that is not the registered one of its name must stay
    /// inside the repository: a caller cannot probe arbitrary files on the server.
    fn inline_source(
        &self,
        catalog: &Catalog,
        command: &Map<String, Value>,
    ) -> ApiResult<core::DataSource> {
        let json = string(command, "data_source_proto")?;
        let source = feast_core::json::message_from_json::<core::DataSource>(&json)
            .map_err(|e| ApiError::invalid(format!("data_source_proto: {e}")))?;
        let registered = catalog
            .get::<core::DataSource>(&source.name, &self.project)
            .is_ok_and(|r| r.options == source.options);
        if let Some(core::data_source::Options::FileOptions(f)) = &source.options
            && !registered
            && !inside_repository(&f.uri)
        {
            return Err(ApiError::invalid(format!(
                "data source {}: {:?} is not the registered source's path, and an unregistered \
                 path must be relative and inside the server's repository",
                source.name, f.uri
            )));
        }
        // A Postgres source the registry does not hold may only name a table: a query
        // chosen by the caller would run arbitrary SQL in the server's database.
        if !registered
            && let Some(options) = crate::postgres::PostgresOptions::of(&source)
            && !options.is_ok_and(|o| o.is_plain_table())
        {
            return Err(ApiError::invalid(format!(
                "data source {}: a Postgres source that is not the registered one of its name \
                 must name a table (schema.table), not a query",
                source.name
            )));
        }
        Ok(source)
    }

    /// Runs a read API.
    async fn read(
        &self,
        user: Option<&User>,
        api: &str,
        command: &Map<String, Value>,
        upload: EntityTable,
    ) -> ApiResult<SendableRecordBatchStream> {
        if !has_rule(api) {
            return Err(ApiError::invalid(format!("Unknown read API: {api}")));
        }
        let snapshot = self
            .snapshot_knowing(|catalog| match api {
                "get_historical_features" => strings(command, "feature_view_names")
                    .map(|names| names.iter().all(|n| self.view(catalog, n).is_ok()))
                    .unwrap_or(true),
                "pull_latest_from_table_or_query" | "pull_all_from_table_or_query" => {
                    self.data_source(catalog, command).is_ok()
                }
                _ => true,
            })
            .await?;
        let catalog = &snapshot.catalog;
        match api {
            "get_historical_features" => {
                self.check_project(command)?;
                let names = strings(command, "feature_view_names")?;
                let aliases = opt_strings(command, "name_aliases")?;
                let refs = strings(command, "feature_refs")?;
                let full_feature_names = field(command, "full_feature_names")?
                    .as_bool()
                    .ok_or_else(|| ApiError::invalid("full_feature_names must be a boolean"))?;
                if aliases.len() != names.len() {
                    return Err(ApiError::invalid(
                        "name_aliases must have one entry per feature view name",
                    ));
                }
                for name in &names {
                    let view = self.view(catalog, name)?;
                    self.authorize(user, catalog, ResourceRef::of(view), &[Act::ReadOffline])?;
                }
                let request = HistoricalRequest {
                    features: FeatureSelection::Views {
                        views: names.into_iter().zip(aliases).collect(),
                        refs,
                    },
                    full_feature_names,
                };
                let upload = if is_mock(&upload) {
                    // No entity DataFrame: an entity_df SQL query, or Feast's non-entity
                    // mode (the SDK always sends end_date then).
                    let window = EntityWindow {
                        start: date(command, "start_date")?,
                        end: date(command, "end_date")?,
                    };
                    match opt_string(command, "entity_df_sql")? {
                        Some(sql) => {
                            self.store
                                .entity_table_from_sql(catalog, &self.project, &sql)
                                .await?
                        }
                        None if window.start.is_some() || window.end.is_some() => {
                            self.store
                                .entity_table_for_range(catalog, &self.project, &request, window)
                                .await?
                        }
                        None => {
                            return Err(ApiError::invalid(
                                "get_historical_features needs an entity DataFrame, an \
                                 entity_df SQL query, or start_date/end_date",
                            ));
                        }
                    }
                } else {
                    upload
                };
                let upload = without_pandas_index(upload).map_err(OfflineError::from)?;
                Ok(self
                    .store
                    .get_historical_features(catalog, &self.project, upload, &request)
                    .await?)
            }
            "pull_latest_from_table_or_query" | "pull_all_from_table_or_query" => {
                let kind = if api == "pull_all_from_table_or_query" {
                    PullKind::All
                } else {
                    PullKind::Latest
                };
                let request = pull_request(command, kind)?;
                let source = self.data_source(catalog, command)?;
                self.authorize(user, catalog, ResourceRef::of(&source), &[Act::ReadOffline])?;
                Ok(self.store.pull(&source, &request, kind).await?)
            }
            "get_table_column_names_and_types_from_data_source" => {
                let source = self.inline_source(catalog, command)?;
                self.authorize(user, catalog, ResourceRef::of(&source), &[Act::ReadOffline])?;
                let columns = self.store.column_names_and_types(&source).await?;
                let (names, types): (Vec<String>, Vec<String>) = columns.into_iter().unzip();
                let schema = Arc::new(Schema::new(vec![
                    Field::new("name", DataType::Utf8, true),
                    Field::new("type", DataType::Utf8, true),
                ]));
                let batch = RecordBatch::try_new(
                    schema,
                    vec![
                        Arc::new(StringArray::from(names)),
                        Arc::new(StringArray::from(types)),
                    ],
                )
                .map_err(OfflineError::from)?;
                Ok(one_batch(batch))
            }
            other => Err(ApiError::invalid(format!("Unknown read API: {other}"))),
        }
    }

    /// Runs a write API (inside `DoPut`).
    async fn write(
        &self,
        user: Option<&User>,
        api: &str,
        command: &Map<String, Value>,
        upload: EntityTable,
    ) -> ApiResult<()> {
        if !has_rule(api) {
            return Err(ApiError::invalid(format!("Unknown write API: {api}")));
        }
        let snapshot = self.snapshot()?;
        let catalog = &snapshot.catalog;
        match api {
            "offline_write_batch" => {
                let names = strings(command, "feature_view_names")?;
                let [name] = names.as_slice() else {
                    return Err(ApiError::invalid(
                        "feature_view_names list should only have one item",
                    ));
                };
                let view = self.view(catalog, name)?;
                self.authorize(user, catalog, ResourceRef::of(view), &[Act::WriteOffline])?;
                let rows = self
                    .store
                    .offline_write_batch(view, upload.schema, upload.batches)
                    .await?;
                tracing::info!(message = "offline write", feature_view = %name, rows);
                Ok(())
            }
            "validate_data_source" => {
                let source = self.inline_source(catalog, command)?;
                self.authorize(user, catalog, ResourceRef::of(&source), &[Act::ReadOffline])?;
                self.store.column_names_and_types(&source).await?;
                Ok(())
            }
            "persist" => {
                let retrieve = string(command, "retrieve_func")?;
                match retrieve.as_str() {
                    "get_historical_features" => {}
                    // The SDK lets the pull's own data_source_name override the target's:
                    // the result would replace the very source it was read from.
                    "pull_latest_from_table_or_query" | "pull_all_from_table_or_query" => {
                        return Err(ApiError::invalid(format!(
                            "persisting a {retrieve} result: the command's data_source_name \
                             names the pulled source itself, not a separate destination"
                        )));
                    }
                    other => {
                        return Err(ApiError::invalid(format!(
                            "retrieve_func {other:?} is not a retrieval API"
                        )));
                    }
                }
                let allow_overwrite = field(command, "allow_overwrite")?
                    .as_bool()
                    .ok_or_else(|| ApiError::invalid("allow_overwrite must be a boolean"))?;
                let target = persist_target(catalog, &self.project, command)?;
                self.authorize(
                    user,
                    catalog,
                    ResourceRef::of(&target),
                    &[Act::WriteOffline],
                )?;
                let result = self.read(user, &retrieve, command, upload).await?;
                let rows = self.store.persist(&target, result, allow_overwrite).await?;
                tracing::info!(message = "saved dataset persisted", source = %target.name, rows);
                Ok(())
            }
            "write_logged_features" => {
                let name = string(command, "feature_service_name")?;
                let snapshot = self
                    .snapshot_knowing(|catalog| {
                        catalog
                            .get::<core::FeatureService>(&name, &self.project)
                            .is_ok()
                    })
                    .await?;
                let catalog = &snapshot.catalog;
                let service = catalog.get::<core::FeatureService>(&name, &self.project)?;
                // Feast's server asserts this before checking permissions.
                if service
                    .spec
                    .as_ref()
                    .and_then(|s| s.logging_config.as_ref())
                    .is_none()
                {
                    return Err(ApiError::invalid(format!(
                        "feature service {name}: feature service must have logging_config set"
                    )));
                }
                self.authorize(
                    user,
                    catalog,
                    ResourceRef::of(service),
                    &[Act::WriteOffline],
                )?;
                let rows = self
                    .store
                    .write_logged_features(service, upload.schema, upload.batches)
                    .await?;
                tracing::info!(message = "feature logs written", feature_service = %name, rows);
                Ok(())
            }
            other => Err(ApiError::invalid(format!("Unknown write API: {other}"))),
        }
    }
}

/// Where `persist` writes: the registered data source named `data_source_name`, else (the
/// SDK names a `SavedDatasetFileStorage` by its path, as an unregistered `FileSource` is
/// named) a Parquet file at that path, relative to the repository.
fn persist_target(
    catalog: &Catalog,
    project: &str,
    command: &Map<String, Value>,
) -> ApiResult<core::DataSource> {
    let name = string(command, "data_source_name")?;
    if let Ok(source) = catalog.get::<core::DataSource>(&name, project) {
        return Ok(source.clone());
    }
    if !inside_repository(&name) {
        return Err(ApiError::invalid(format!(
            "saved dataset path {name:?}: an unregistered destination must be a relative path \
             inside the server's repository"
        )));
    }
    Ok(file_source_at(&name, project))
}

/// Whether a client-chosen file path stays inside the server's repository: relative, no
/// `..`, no URL scheme.
fn inside_repository(path: &str) -> bool {
    let p = std::path::Path::new(path);
    !path.contains("://")
        && p.is_relative()
        && p.components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
}

/// An unregistered Parquet `FileSource` at `path`, named by its path as Feast names one.
fn file_source_at(path: &str, project: &str) -> core::DataSource {
    core::DataSource {
        name: path.to_string(),
        project: project.to_string(),
        r#type: core::data_source::SourceType::BatchFile as i32,
        data_source_class_type: "feast.infra.offline_stores.file_source.FileSource".into(),
        options: Some(core::data_source::Options::FileOptions(
            core::data_source::FileOptions {
                uri: path.to_string(),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// What each API (the command's `api`) needs: the table reviewers read. An API without a row
/// is refused before dispatch, so a new API cannot be served unguarded. Every Flight call
/// needs a valid token; `ListFlights`, `ListActions`, `Handshake` and `DoAction` need nothing
/// more (they read no feature data).
pub const API_RULES: &[(&str, &str)] = &[
    (
        "get_historical_features",
        "READ_OFFLINE on every feature view of the retrieval",
    ),
    (
        "pull_latest_from_table_or_query",
        "READ_OFFLINE on the data source",
    ),
    (
        "pull_all_from_table_or_query",
        "READ_OFFLINE on the data source",
    ),
    (
        "get_table_column_names_and_types_from_data_source",
        "READ_OFFLINE on the data source",
    ),
    ("validate_data_source", "READ_OFFLINE on the data source"),
    ("offline_write_batch", "WRITE_OFFLINE on the feature view"),
    (
        "persist",
        "WRITE_OFFLINE on the target source, then what the retrieval needs",
    ),
    (
        "write_logged_features",
        "WRITE_OFFLINE on the feature service (which must have a logging_config)",
    ),
];

fn has_rule(api: &str) -> bool {
    API_RULES.iter().any(|(a, _)| *a == api)
}

/// APIs a `DoPut` executes; the other APIs are read APIs kept for `DoGet`.
const WRITE_APIS: [&str; 4] = [
    "offline_write_batch",
    "write_logged_features",
    "persist",
    "validate_data_source",
];

fn empty_schema_bytes() -> Vec<u8> {
    let options = datafusion::arrow::ipc::writer::IpcWriteOptions::default();
    arrow_flight::SchemaAsIpc::new(&Schema::empty(), &options)
        .try_into()
        .map(|r: arrow_flight::IpcMessage| r.0.to_vec())
        .unwrap_or_default()
}

fn not_found(what: &str) -> Status {
    Status::not_found(what.to_string())
}

#[tonic::async_trait]
impl<S: OfflineStore + 'static> FlightService for OfflineFlightService<S> {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoExchangeStream = BoxStream<FlightData>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        // Bearer tokens travel in headers on every call; there is no session to set up.
        Ok(Response::new(Box::pin(futures::stream::empty())))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.sweep();
        let infos: Vec<Result<FlightInfo, Status>> = {
            let map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            map.iter()
                .map(|(ticket, p)| Ok(self.flight_info(ticket, p.descriptor.clone())))
                .collect()
        };
        Ok(Response::new(Box::pin(futures::stream::iter(infos))))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.sweep();
        let descriptor = request.into_inner();
        let key = descriptor.cmd.to_vec();
        let known = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&key);
        if !known {
            return Err(not_found("Flight not found."));
        }
        Ok(Response::new(self.flight_info(&key, descriptor)))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented(
            "poll_flight_info is not part of Feast's protocol",
        ))
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented(
            "get_schema is not part of Feast's protocol",
        ))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        self.sweep();
        let user = user_of(&request);
        let key = request.into_inner().ticket.to_vec();
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key)
            .ok_or_else(|| not_found("Unknown ticket: no upload waits under it"))?;
        let api = api_of(&pending.command)?.to_string();
        let result = self
            .read(user.as_ref(), &api, &pending.command, pending.upload)
            .await
            .inspect_err(|e| tracing::warn!(message = "do_get failed", %api, error = %e.error))?;
        Ok(Response::new(encode(result)))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.sweep();
        let user = user_of(&request);
        let (descriptor, upload) = read_upload(request.into_inner()).await?;
        let command = parse_command(&descriptor.cmd)?;
        let Ok(api) = api_of(&command).map(str::to_string) else {
            tracing::warn!(message = "do_put without an api field; ignored");
            return Ok(Response::new(Box::pin(futures::stream::empty())));
        };
        if WRITE_APIS.contains(&api.as_str()) {
            self.write(user.as_ref(), &api, &command, upload)
                .await
                .inspect_err(
                    |e| tracing::warn!(message = "do_put failed", %api, error = %e.error),
                )?;
        } else {
            let key = descriptor.cmd.to_vec();
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    key,
                    Pending {
                        command,
                        upload,
                        descriptor,
                        at: Instant::now(),
                    },
                );
        }
        Ok(Response::new(Box::pin(futures::stream::empty())))
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let user = user_of(&request);
        let (descriptor, upload) = read_upload(request.into_inner()).await?;
        let command = parse_command(&descriptor.cmd)?;
        let api = api_of(&command)?.to_string();
        let started = Instant::now();
        let result = self
            .read(user.as_ref(), &api, &command, upload)
            .await
            .inspect_err(
                |e| tracing::warn!(message = "do_exchange failed", %api, error = %e.error),
            )?;
        tracing::info!(
            message = "do_exchange planned",
            %api,
            plan_ms = started.elapsed().as_millis() as u64
        );
        Ok(Response::new(encode(result)))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented(format!(
            "do_action({}) is not implemented: Feast's clients write through do_put",
            request.get_ref().r#type
        )))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let actions = [
            (
                "offline_write_batch",
                "Writes the specified arrow table to the data source underlying the specified feature view.",
            ),
            (
                "write_logged_features",
                "Writes logged features to a specified destination in the offline store.",
            ),
            (
                "persist",
                "Synchronously executes the underlying query and persists the result in the same offline store at the specified destination.",
            ),
        ]
        .map(|(t, d)| {
            Ok(ActionType {
                r#type: t.to_string(),
                description: d.to_string(),
            })
        });
        Ok(Response::new(Box::pin(futures::stream::iter(actions))))
    }
}

impl<S> OfflineFlightService<S> {
    fn flight_info(&self, ticket: &[u8], descriptor: FlightDescriptor) -> FlightInfo {
        FlightInfo {
            schema: empty_schema_bytes().into(),
            flight_descriptor: Some(descriptor),
            endpoint: vec![FlightEndpoint {
                ticket: Some(Ticket {
                    ticket: ticket.to_vec().into(),
                }),
                location: vec![arrow_flight::Location {
                    uri: self.options.location.clone(),
                }],
                expiration_time: None,
                app_metadata: Default::default(),
            }],
            total_records: -1,
            total_bytes: -1,
            ordered: false,
            app_metadata: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The read APIs `read` dispatches (a `DoExchange`, or the legacy `DoGet`).
    const READ_APIS: [&str; 4] = [
        "get_historical_features",
        "pull_latest_from_table_or_query",
        "pull_all_from_table_or_query",
        "get_table_column_names_and_types_from_data_source",
    ];

    /// Every API the server dispatches has an authorization row, and only those.
    #[test]
    fn every_api_has_a_rule() {
        let served: Vec<&str> = READ_APIS.iter().chain(WRITE_APIS.iter()).copied().collect();
        for api in &served {
            assert!(has_rule(api), "no authorization rule for {api}");
        }
        for (api, _) in API_RULES {
            assert!(served.contains(api), "rule for an API nobody serves: {api}");
        }
    }

    fn table(fields: &[&str]) -> EntityTable {
        let schema = Arc::new(Schema::new(
            fields
                .iter()
                .map(|f| Field::new(*f, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        EntityTable::new(schema, vec![])
    }

    #[test]
    fn uploads_never_fetched_are_dropped_after_the_ttl() {
        let pending: Mutex<HashMap<Vec<u8>, Pending>> = Default::default();
        let entry = |age: Duration| Pending {
            command: Map::new(),
            upload: table(&["driver_id"]),
            descriptor: FlightDescriptor::default(),
            at: Instant::now() - age,
        };
        {
            let mut map = pending.lock().unwrap();
            map.insert(b"old".to_vec(), entry(Duration::from_secs(601)));
            map.insert(b"new".to_vec(), entry(Duration::from_secs(1)));
        }
        assert_eq!(sweep(&pending, Duration::from_secs(600)), 1);
        let map = pending.lock().unwrap();
        assert!(map.contains_key(b"new".as_slice()) && !map.contains_key(b"old".as_slice()));
    }

    #[test]
    fn client_paths_must_stay_in_the_repository() {
        assert!(inside_repository("data/saved.parquet"));
        assert!(inside_repository("./saved.parquet"));
        assert!(!inside_repository("/etc/hostname"));
        assert!(!inside_repository("data/../../escape.parquet"));
        assert!(!inside_repository("s3://bucket/x.parquet"));
    }

    #[test]
    fn the_mock_table_is_recognised_by_shape_only() {
        assert!(is_mock(&table(&["key"])));
        assert!(!is_mock(&table(&["key", "event_timestamp"])));
        assert!(!is_mock(&table(&["driver_id"])));
    }

    #[test]
    fn commands_and_their_fields_are_checked() {
        let cmd = parse_command(
            br#"{"command_id": "1", "api": "pull_latest_from_table_or_query",
                 "data_source_name": "s", "join_key_columns": ["driver_id"],
                 "feature_name_columns": ["a"], "timestamp_field": "ts",
                 "created_timestamp_column": null,
                 "start_date": "2024-05-01T00:00:00", "end_date": "2024-05-02T00:00:00+00:00"}"#,
        )
        .unwrap();
        assert_eq!(api_of(&cmd).unwrap(), "pull_latest_from_table_or_query");
        let request = pull_request(&cmd, PullKind::Latest).unwrap();
        assert_eq!(request.created_timestamp_column, None);
        assert_eq!(
            request.start.unwrap().to_rfc3339(),
            "2024-05-01T00:00:00+00:00",
            "naive dates are UTC"
        );
        let mut no_end = cmd.clone();
        no_end.insert("end_date".into(), Value::Null);
        assert!(pull_request(&no_end, PullKind::Latest).is_err());
        assert!(pull_request(&no_end, PullKind::All).is_ok());

        let status = Status::from(parse_command(b"[1]").unwrap_err());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status
                .message()
                .starts_with("Flight error: {\"module\": \"feast.errors\"")
        );
        assert!(api_of(&Map::new()).is_err());
    }
}
