//! [`FlightOfflineClient`]: an [`OfflineStore`] that is a remote offline server (feast-rs's
//! or Feast's `feast serve_offline`), spoken to with Feast's remote-offline-store protocol.
//! The materializer uses it when `feature_store.yaml` says `offline_store: {type: remote}`:
//! pulls stream from the server batch by batch, as they would from the embedded engine.

use std::sync::Arc;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightClient, FlightDescriptor};
use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use feast_core::config::RemoteOfflineStoreConfig;
use feast_core::registry::Catalog;
use feast_proto::core;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tracing::Instrument as _;

use crate::error::{OfflineError, Result};
use crate::pull::{PullKind, PullRequest};
use crate::resolve::FeatureSelection;
use crate::store::{EntityTable, EntityWindow, HistoricalRequest, OfflineStore};

/// A remote offline server.
#[derive(Clone)]
pub struct FlightOfflineClient {
    channel: Channel,
    /// The bearer token sent on every call, when the server needs one.
    token: Option<Arc<feast_auth::TokenProvider>>,
}

impl FlightOfflineClient {
    /// A client of the server `config` names (`host`, `port`, `scheme: https` with `cert`);
    /// connects lazily, and again after a failure.
    pub fn new(config: &RemoteOfflineStoreConfig, ca_cert: Option<Vec<u8>>) -> Result<Self> {
        let port = config.port.ok_or_else(|| {
            OfflineError::Invalid("offline_store.port is required for type: remote".into())
        })?;
        let scheme = match config.scheme {
            feast_core::config::FlightScheme::Https => "https",
            feast_core::config::FlightScheme::Http => "http",
        };
        let url = format!("{scheme}://{}:{port}", config.host);
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| OfflineError::Invalid(format!("offline server {url}: {e}")))?;
        if scheme == "https" {
            let mut tls = ClientTlsConfig::new().with_enabled_roots();
            if let Some(pem) = ca_cert {
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| OfflineError::Invalid(format!("offline server TLS: {e}")))?;
        }
        Ok(Self {
            channel: endpoint.connect_lazy(),
            token: None,
        })
    }

    /// Sends the provider's token as `authorization: Bearer` on every call.
    pub fn with_token(mut self, token: Option<Arc<feast_auth::TokenProvider>>) -> Self {
        self.token = token;
        self
    }

    /// A Flight client for one call, whose headers carry the token and `span`'s trace
    /// context.
    async fn client(&self, span: &tracing::Span) -> Result<FlightClient> {
        let mut client = FlightClient::new(self.channel.clone());
        feast_telemetry::inject_metadata(span, client.metadata_mut());
        if let Some(provider) = &self.token {
            let value = provider.header_value().await.map_err(|e| {
                OfflineError::Invalid(format!("no token for the offline server: {e}"))
            })?;
            let value = value
                .to_str()
                .map_err(|e| OfflineError::Invalid(format!("token: {e}")))?;
            client
                .add_header("authorization", value)
                .map_err(|e| OfflineError::Invalid(format!("token: {e}")))?;
        }
        Ok(client)
    }

    /// A failed call; a refused token is dropped so the next call fetches a new one.
    fn failed(&self, e: FlightError) -> OfflineError {
        if let (FlightError::Tonic(status), Some(provider)) = (&e, &self.token)
            && status.code() == tonic::Code::Unauthenticated
        {
            provider.invalidate();
        }
        remote_error(e)
    }

    /// One `DoExchange` read: `command` (the `api` and its parameters), the upload, the
    /// result as a stream.
    async fn exchange(
        &self,
        command: Value,
        upload: EntityTable,
    ) -> Result<SendableRecordBatchStream> {
        let descriptor = FlightDescriptor::new_cmd(command_bytes(command));
        let batches = upload.batches.into_iter().map(Ok);
        let data = FlightDataEncoderBuilder::new()
            .with_schema(upload.schema)
            .with_flight_descriptor(Some(descriptor))
            .build(futures::stream::iter(batches));
        let span = feast_telemetry::client_span("/arrow.flight.protocol.FlightService/DoExchange");
        let result = async {
            let mut client = self.client(&span).await?;
            let stream = client.do_exchange(data).await.map_err(|e| self.failed(e))?;
            into_sendable(stream).await
        }
        .instrument(span.clone())
        .await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }

    /// One `DoPut` write; returns the number of rows sent.
    async fn put(
        &self,
        command: Value,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<usize> {
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        let descriptor = FlightDescriptor::new_cmd(command_bytes(command));
        let data = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_flight_descriptor(Some(descriptor))
            .build(futures::stream::iter(batches.into_iter().map(Ok)));
        let span = feast_telemetry::client_span("/arrow.flight.protocol.FlightService/DoPut");
        let result = async {
            let mut client = self.client(&span).await?;
            let results = client.do_put(data).await.map_err(|e| self.failed(e))?;
            results
                .try_collect::<Vec<_>>()
                .await
                .map_err(remote_error)?;
            Ok(rows)
        }
        .instrument(span.clone())
        .await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }
}

fn command_bytes(mut command: Value) -> Vec<u8> {
    if let Value::Object(map) = &mut command {
        map.insert(
            "command_id".into(),
            Value::String(uuid::Uuid::new_v4().to_string()),
        );
    }
    command.to_string().into_bytes()
}

/// Feast's mock upload: one `key` column, sent when there is no entity table.
fn mock_table() -> EntityTable {
    let schema = Arc::new(Schema::new(vec![Field::new("key", DataType::Utf8, true)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(StringArray::from(vec!["mock_key"]))],
    )
    .expect("one string column");
    EntityTable::new(schema, vec![batch])
}

/// A server error, with Feast's envelope unwrapped into its class when there is one.
fn remote_error(e: FlightError) -> OfflineError {
    let text = match &e {
        FlightError::Tonic(status) => status.message().to_string(),
        other => other.to_string(),
    };
    if let Some(json) = text
        .find("Flight error: ")
        .map(|i| &text[i + "Flight error: ".len()..])
        .and_then(|rest| rest.find('{').map(|j| &rest[j..]))
        && let Ok(Value::Object(env)) = serde_json::from_str::<Value>(json)
        && let Some(message) = env.get("message").and_then(Value::as_str)
    {
        return OfflineError::Invalid(format!("offline server: {message}"));
    }
    OfflineError::Invalid(format!("offline server: {text}"))
}

/// The Flight result as a DataFusion stream: the schema comes first on the wire, so the
/// first message is read before the stream is handed on.
async fn into_sendable(mut stream: FlightRecordBatchStream) -> Result<SendableRecordBatchStream> {
    let first = stream.next().await.transpose().map_err(remote_error)?;
    let schema = stream
        .schema()
        .cloned()
        .or_else(|| first.as_ref().map(|b| b.schema()))
        .unwrap_or_else(|| Arc::new(Schema::empty()));
    let rest = stream.map_err(|e| DataFusionError::External(Box::new(remote_error(e))));
    let all = futures::stream::iter(first.map(Ok)).chain(rest);
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, all)))
}

fn iso(t: &Option<chrono::DateTime<chrono::Utc>>) -> Value {
    t.map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, false)))
        .unwrap_or(Value::Null)
}

impl OfflineStore for FlightOfflineClient {
    async fn get_historical_features(
        &self,
        catalog: &Catalog,
        project: &str,
        entities: EntityTable,
        request: &HistoricalRequest,
    ) -> Result<SendableRecordBatchStream> {
        let views = request.views(catalog, project)?;
        let (names, aliases): (Vec<Value>, Vec<Value>) = views
            .iter()
            .map(|v| {
                let name = v
                    .view
                    .spec
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                let alias = (v.name_to_use != name).then(|| v.name_to_use.clone());
                (
                    Value::String(name),
                    alias.map(Value::String).unwrap_or(Value::Null),
                )
            })
            .unzip();
        let refs: Vec<String> = match &request.features {
            FeatureSelection::Refs(r) | FeatureSelection::Views { refs: r, .. } => r.clone(),
            FeatureSelection::Service(_) => views
                .iter()
                .flat_map(|v| v.features.iter().map(|f| format!("{}:{f}", v.name_to_use)))
                .collect(),
        };
        let command = json!({
            "api": "get_historical_features",
            "feature_view_names": names,
            "feature_refs": refs,
            "project": project,
            "full_feature_names": request.full_feature_names,
            "name_aliases": aliases,
        });
        self.exchange(command, entities).await
    }

    async fn pull(
        &self,
        source: &core::DataSource,
        request: &PullRequest,
        kind: PullKind,
    ) -> Result<SendableRecordBatchStream> {
        let api = match kind {
            PullKind::Latest => "pull_latest_from_table_or_query",
            PullKind::All => "pull_all_from_table_or_query",
        };
        let command = json!({
            "api": api,
            "data_source_name": source.name,
            "join_key_columns": request.join_key_columns,
            "feature_name_columns": request.feature_name_columns,
            "timestamp_field": request.timestamp_field,
            "created_timestamp_column": request.created_timestamp_column,
            "start_date": iso(&request.start),
            "end_date": iso(&request.end),
        });
        self.exchange(command, mock_table()).await
    }

    async fn column_names_and_types(
        &self,
        source: &core::DataSource,
    ) -> Result<Vec<(String, String)>> {
        let command = json!({
            "api": "get_table_column_names_and_types_from_data_source",
            "data_source_proto": feast_core::json::message_to_json(source).to_string(),
        });
        let batches: Vec<RecordBatch> = self
            .exchange(command, mock_table())
            .await?
            .try_collect()
            .await?;
        let mut out = Vec::new();
        for b in &batches {
            let col = |name: &str| {
                b.column_by_name(name)
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                    .ok_or_else(|| {
                        OfflineError::Invalid(format!("offline server: no {name} column"))
                    })
            };
            let (names, types) = (col("name")?, col("type")?);
            for i in 0..b.num_rows() {
                out.push((names.value(i).to_string(), types.value(i).to_string()));
            }
        }
        Ok(out)
    }

    async fn persist(
        &self,
        _target: &core::DataSource,
        _result: SendableRecordBatchStream,
        _allow_overwrite: bool,
    ) -> Result<usize> {
        Err(OfflineError::Invalid(
            "persisting a local result through a remote offline store is not supported; \
             the server persists its own retrievals"
                .into(),
        ))
    }

    async fn offline_write_batch(
        &self,
        view: &core::FeatureView,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<usize> {
        let name = view
            .spec
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let command = json!({
            "api": "offline_write_batch",
            "feature_view_names": [name],
            "name_aliases": [null],
            "progress": null,
        });
        self.put(command, schema, batches).await
    }

    async fn write_logged_features(
        &self,
        feature_service: &core::FeatureService,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<usize> {
        let name = feature_service
            .spec
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let command = json!({
            "api": "write_logged_features",
            "feature_service_name": name,
        });
        self.put(command, schema, batches).await
    }

    async fn entity_table_from_sql(
        &self,
        _catalog: &Catalog,
        _project: &str,
        _sql: &str,
    ) -> Result<EntityTable> {
        Err(OfflineError::Unsupported(
            "an entity table given as SQL is run by the offline server inside \
             get_historical_features (entity_df_sql); this client sends entity tables only"
                .into(),
        ))
    }

    async fn entity_table_for_range(
        &self,
        _catalog: &Catalog,
        _project: &str,
        _request: &HistoricalRequest,
        _window: EntityWindow,
    ) -> Result<EntityTable> {
        Err(OfflineError::Unsupported(
            "a retrieval by time range is resolved by the offline server inside \
             get_historical_features (start_date/end_date); this client sends entity tables \
             only"
                .into(),
        ))
    }
}

/// The offline store `feature_store.yaml` names: the embedded engine on the repository's
/// files (`file`, `duckdb`: the same Parquet/CSV sources; `postgres`: Postgres sources
/// too) or a remote offline server (`remote`).
pub enum AnyOfflineStore {
    File(crate::store::FileOfflineStore),
    Remote(FlightOfflineClient),
}

/// Opens the offline store of `config`.
pub fn open_offline_store(config: &feast_core::config::RepoConfig) -> Result<AnyOfflineStore> {
    use feast_core::config::OfflineStoreConfig;
    match &config.offline_store {
        None
        | Some(
            OfflineStoreConfig::Dask(_)
            | OfflineStoreConfig::Duckdb(_)
            | OfflineStoreConfig::Postgres(_),
        ) => Ok(AnyOfflineStore::File(
            crate::store::FileOfflineStore::for_config(config)?,
        )),
        Some(OfflineStoreConfig::Remote(remote)) => {
            let ca = if remote.cert.is_empty() {
                None
            } else {
                let path = config.resolve_path(&remote.cert);
                Some(std::fs::read(&path).map_err(|e| {
                    OfflineError::Invalid(format!("reading {}: {e}", path.display()))
                })?)
            };
            let token = feast_auth::TokenProvider::from_config(&config.auth)
                .map_err(|e| OfflineError::Invalid(format!("auth: {e}")))?;
            Ok(AnyOfflineStore::Remote(
                FlightOfflineClient::new(remote, ca)?.with_token(token),
            ))
        }
    }
}

impl OfflineStore for AnyOfflineStore {
    async fn get_historical_features(
        &self,
        catalog: &Catalog,
        project: &str,
        entities: EntityTable,
        request: &HistoricalRequest,
    ) -> Result<SendableRecordBatchStream> {
        match self {
            Self::File(s) => {
                s.get_historical_features(catalog, project, entities, request)
                    .await
            }
            Self::Remote(s) => {
                s.get_historical_features(catalog, project, entities, request)
                    .await
            }
        }
    }

    async fn pull(
        &self,
        source: &core::DataSource,
        request: &PullRequest,
        kind: PullKind,
    ) -> Result<SendableRecordBatchStream> {
        match self {
            Self::File(s) => s.pull(source, request, kind).await,
            Self::Remote(s) => s.pull(source, request, kind).await,
        }
    }

    async fn column_names_and_types(
        &self,
        source: &core::DataSource,
    ) -> Result<Vec<(String, String)>> {
        match self {
            Self::File(s) => s.column_names_and_types(source).await,
            Self::Remote(s) => s.column_names_and_types(source).await,
        }
    }

    async fn persist(
        &self,
        target: &core::DataSource,
        result: SendableRecordBatchStream,
        allow_overwrite: bool,
    ) -> Result<usize> {
        match self {
            Self::File(s) => s.persist(target, result, allow_overwrite).await,
            Self::Remote(s) => s.persist(target, result, allow_overwrite).await,
        }
    }

    async fn offline_write_batch(
        &self,
        view: &core::FeatureView,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<usize> {
        match self {
            Self::File(s) => s.offline_write_batch(view, schema, batches).await,
            Self::Remote(s) => s.offline_write_batch(view, schema, batches).await,
        }
    }

    async fn write_logged_features(
        &self,
        feature_service: &core::FeatureService,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<usize> {
        match self {
            Self::File(s) => {
                s.write_logged_features(feature_service, schema, batches)
                    .await
            }
            Self::Remote(s) => {
                s.write_logged_features(feature_service, schema, batches)
                    .await
            }
        }
    }

    async fn entity_table_from_sql(
        &self,
        catalog: &Catalog,
        project: &str,
        sql: &str,
    ) -> Result<EntityTable> {
        match self {
            Self::File(s) => s.entity_table_from_sql(catalog, project, sql).await,
            Self::Remote(s) => s.entity_table_from_sql(catalog, project, sql).await,
        }
    }

    async fn entity_table_for_range(
        &self,
        catalog: &Catalog,
        project: &str,
        request: &HistoricalRequest,
        window: EntityWindow,
    ) -> Result<EntityTable> {
        match self {
            Self::File(s) => {
                s.entity_table_for_range(catalog, project, request, window)
                    .await
            }
            Self::Remote(s) => {
                s.entity_table_for_range(catalog, project, request, window)
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_keep_feasts_message() {
        let status = tonic::Status::unknown(
            "Flight error: {\"module\": \"feast.errors\", \"class\": \"DataSourceObjectNotFoundException\", \"message\": \"Data source x does not exist in project p\"}",
        );
        let e = remote_error(FlightError::Tonic(Box::new(status)));
        assert_eq!(
            e.to_string(),
            "offline server: Data source x does not exist in project p"
        );
        let e = remote_error(FlightError::Tonic(Box::new(tonic::Status::unavailable(
            "connection refused",
        ))));
        assert_eq!(e.to_string(), "offline server: connection refused");
    }

    #[test]
    fn commands_get_a_fresh_id() {
        let a: Value = serde_json::from_slice(&command_bytes(json!({"api": "x"}))).unwrap();
        let b: Value = serde_json::from_slice(&command_bytes(json!({"api": "x"}))).unwrap();
        assert_eq!(a["api"], "x");
        assert_ne!(a["command_id"], b["command_id"]);
    }
}
