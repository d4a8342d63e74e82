//! The offline Flight server over loopback, driven by arrow-flight's own client: the
//! exchange path with `auth: oidc` (tokens from the loopback test identity provider) and
//! Feast permissions on the views and data sources, and the health check staying public.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightClient, FlightDescriptor};
use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use feast_auth::testing::{BadToken, TestIssuer};
use feast_auth::{Authenticator, Authorizer, OidcValidator};
use feast_offline::{FileOfflineStore, FlightOptions, OfflineFlightService, serve_on};
use feast_proto::core;
use feast_proto::core::permission_spec::{AuthzedAction, Type};
use feast_registry::{CacheSource, FileStore, RegistryCache};
use futures::TryStreamExt;
use prost::Message;
use tonic::transport::Channel;

const PROJECT: &str = "tenant";
const T0: i64 = 1_714_521_600_000_000; // 2024-05-01T00:00:00Z in µs

fn source(name: &str) -> core::DataSource {
    core::DataSource {
        name: format!("{name}_src"),
        project: PROJECT.into(),
        r#type: core::data_source::SourceType::BatchFile as i32,
        timestamp_field: "event_timestamp".into(),
        options: Some(core::data_source::Options::FileOptions(
            core::data_source::FileOptions {
                uri: format!("{name}.parquet"),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

fn view(name: &str) -> core::FeatureView {
    core::FeatureView {
        spec: Some(core::FeatureViewSpec {
            name: name.into(),
            project: PROJECT.into(),
            entities: vec!["driver".into()],
            entity_columns: vec![core::FeatureSpecV2 {
                name: "driver_id".into(),
                value_type: 4,
                ..Default::default()
            }],
            features: vec![core::FeatureSpecV2 {
                name: "rate".into(),
                value_type: 5,
                ..Default::default()
            }],
            batch_source: Some(source(name)),
            online: true,
            ..Default::default()
        }),
        meta: None,
    }
}

fn permission(name: &str, types: &[Type], pattern: &str, role: &str) -> core::Permission {
    core::Permission {
        spec: Some(core::PermissionSpec {
            name: name.into(),
            project: PROJECT.into(),
            types: types.iter().map(|t| *t as i32).collect(),
            name_patterns: vec![pattern.into()],
            actions: vec![AuthzedAction::ReadOffline as i32],
            policy: Some(core::Policy {
                policy_type: Some(core::policy::PolicyType::RoleBasedPolicy(
                    core::RoleBasedPolicy {
                        roles: vec![role.into()],
                    },
                )),
                ..Default::default()
            }),
            ..Default::default()
        }),
        meta: None,
    }
}

/// A feature service logging to `logs/<name>` by date, or not logging at all.
fn logged_service(name: &str, logs: bool) -> core::FeatureService {
    core::FeatureService {
        spec: Some(core::FeatureServiceSpec {
            name: name.into(),
            project: PROJECT.into(),
            logging_config: logs.then(|| core::LoggingConfig {
                sample_rate: 1.0,
                destination: Some(core::logging_config::Destination::FileDestination(
                    core::logging_config::FileDestination {
                        path: format!("logs/{name}"),
                        partition_by: vec!["__log_date".into()],
                        ..Default::default()
                    },
                )),
            }),
            ..Default::default()
        }),
        meta: None,
    }
}

fn rows() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, true),
        Field::new("rate", DataType::Float64, true),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(Float64Array::from(vec![0.5, 0.7])),
            Arc::new(TimestampMicrosecondArray::from(vec![T0, T0]).with_timezone("UTC")),
        ],
    )
    .unwrap()
}

fn entities() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, true),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![2, 1, 3])),
            Arc::new(TimestampMicrosecondArray::from(vec![T0 + 1, T0, T0]).with_timezone("UTC")),
        ],
    )
    .unwrap()
}

struct Server {
    port: u16,
    issuer: TestIssuer,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start() -> Server {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    for name in ["public_stats", "secret_stats"] {
        let file = std::fs::File::create(dir.path().join(format!("{name}.parquet"))).unwrap();
        let batch = rows();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
    let registry = core::Registry {
        entities: vec![core::Entity {
            spec: Some(core::EntitySpecV2 {
                name: "driver".into(),
                project: PROJECT.into(),
                value_type: 4,
                join_key: "driver_id".into(),
                ..Default::default()
            }),
            meta: None,
        }],
        data_sources: vec![source("public_stats"), source("secret_stats")],
        feature_views: vec![view("public_stats"), view("secret_stats")],
        feature_services: vec![
            logged_service("public_logs", true),
            logged_service("secret_logs", true),
            logged_service("public_unlogged", false),
        ],
        permissions: vec![
            core::Permission {
                spec: Some(core::PermissionSpec {
                    actions: vec![AuthzedAction::WriteOffline as i32],
                    ..permission("log-public", &[Type::FeatureService], "public_.*", "reader")
                        .spec
                        .unwrap()
                }),
                meta: None,
            },
            permission(
                "read-public",
                &[Type::FeatureView, Type::DataSource],
                "public_.*",
                "reader",
            ),
            permission(
                "read-secret",
                &[Type::FeatureView, Type::DataSource],
                "secret_.*",
                "admin",
            ),
        ],
        ..Default::default()
    };
    let registry_path = dir.path().join("registry.db");
    std::fs::write(&registry_path, registry.encode_to_vec()).unwrap();
    let registry = RegistryCache::start(
        CacheSource::Store(Box::new(FileStore::new(registry_path))),
        Duration::ZERO,
    )
    .await;
    let authenticator =
        Authenticator::Oidc(Arc::new(OidcValidator::new(issuer.settings()).unwrap()));
    let service = OfflineFlightService::new(
        registry,
        Arc::new(FileOfflineStore::new(dir.path())),
        PROJECT,
        Some(Arc::new(Authorizer::new())),
        FlightOptions::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(serve_on(listener, service, authenticator, None, async {
        let _ = rx.await;
    }));
    Server {
        port,
        issuer,
        _dir: dir,
        _stop: tx,
    }
}

async fn client(port: u16, token: Option<&str>) -> FlightClient {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightClient::new(channel);
    if let Some(t) = token {
        client
            .add_header("authorization", &format!("Bearer {t}"))
            .unwrap();
    }
    client
}

fn historical(view: &str) -> String {
    serde_json::json!({
        "command_id": uuid::Uuid::new_v4().to_string(),
        "api": "get_historical_features",
        "feature_view_names": [view],
        "feature_refs": [format!("{view}:rate")],
        "project": PROJECT,
        "full_feature_names": false,
        "name_aliases": [null],
    })
    .to_string()
}

fn pull(source: &str) -> String {
    serde_json::json!({
        "command_id": uuid::Uuid::new_v4().to_string(),
        "api": "pull_all_from_table_or_query",
        "data_source_name": source,
        "join_key_columns": ["driver_id"],
        "feature_name_columns": ["rate"],
        "timestamp_field": "event_timestamp",
        "created_timestamp_column": null,
        "start_date": null,
        "end_date": null,
    })
    .to_string()
}

/// One exchange: the command's descriptor, the upload, the result (or the error status).
async fn exchange(
    client: &mut FlightClient,
    command: String,
    upload: RecordBatch,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(command)))
        .build(futures::stream::iter([Ok(upload)]));
    let to_status = |e: arrow_flight::error::FlightError| match e {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => tonic::Status::internal(other.to_string()),
    };
    let stream = client.do_exchange(data).await.map_err(to_status)?;
    stream.try_collect().await.map_err(to_status)
}

#[tokio::test]
async fn calls_need_a_valid_token_and_the_permissions_of_the_servers_project() {
    let server = start().await;
    let reader = server.issuer.user_token("alice", &["reader"], &[]);

    // No token, an unsigned token, an expired token: UNAUTHENTICATED, nothing served.
    let mut anonymous = client(server.port, None).await;
    let err = exchange(&mut anonymous, historical("public_stats"), entities())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let mut refused = 1;
    for bad in BadToken::ALL {
        let token = server.issuer.bad_token(bad, "alice");
        let mut c = client(server.port, Some(&token)).await;
        let err = exchange(&mut c, historical("public_stats"), entities())
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad:?}: {err:?}");
        refused += 1;
    }
    // Every other Flight call too, without a token and with each bad one.
    let mut tokens: Vec<Option<String>> = vec![None];
    tokens.extend(
        BadToken::ALL
            .iter()
            .map(|b| Some(server.issuer.bad_token(*b, "alice"))),
    );
    for token in &tokens {
        let mut c = client(server.port, token.as_deref()).await;
        let code = |e: arrow_flight::error::FlightError| match e {
            arrow_flight::error::FlightError::Tonic(s) => s.code(),
            other => panic!("{other}"),
        };
        let listed = c.list_actions().await.map(|_| ()).map_err(code);
        assert_eq!(listed, Err(tonic::Code::Unauthenticated));
        let flights = c
            .list_flights(Vec::<u8>::new())
            .await
            .map(|_| ())
            .map_err(code);
        assert_eq!(flights, Err(tonic::Code::Unauthenticated));
        let info = c
            .get_flight_info(FlightDescriptor::new_cmd(historical("public_stats")))
            .await
            .map(|_| ())
            .map_err(code);
        assert_eq!(info, Err(tonic::Code::Unauthenticated));
        let put = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(FlightDescriptor::new_cmd(historical("public_stats"))))
            .build(futures::stream::iter([Ok(entities())]));
        let put = match c.do_put(put).await {
            Ok(results) => results
                .try_collect::<Vec<_>>()
                .await
                .map(|_| ())
                .map_err(code),
            Err(e) => Err(code(e)),
        };
        assert_eq!(put, Err(tonic::Code::Unauthenticated));
        refused += 4;
    }
    println!("offline auth matrix: {refused} calls with a missing or bad token refused");

    // The reader reads the public view, in entity order, with point-in-time values.
    let mut c = client(server.port, Some(&reader)).await;
    let batches = exchange(&mut c, historical("public_stats"), entities())
        .await
        .unwrap();
    let rates: Vec<Option<f64>> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("rate")
                .unwrap()
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .iter()
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(rates, vec![Some(0.7), Some(0.5), None]);

    // ... but not the secret one: Feast's permission error in the Flight envelope.
    let err = exchange(&mut c, historical("secret_stats"), entities())
        .await
        .unwrap_err();
    assert!(
        err.message().starts_with(
            "Flight error: {\"module\": \"feast.errors\", \"class\": \"FeastPermissionError\""
        ),
        "{err:?}"
    );
    // Data sources are checked too (pulls name a source).
    let mock = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("key", DataType::Utf8, true)])),
        vec![Arc::new(datafusion::arrow::array::StringArray::from(vec![
            "m",
        ]))],
    )
    .unwrap();
    let got = exchange(&mut c, pull("public_stats_src"), mock.clone())
        .await
        .unwrap();
    assert_eq!(got.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);
    let err = exchange(&mut c, pull("secret_stats_src"), mock.clone())
        .await
        .unwrap_err();
    assert!(err.message().contains("FeastPermissionError"), "{err:?}");

    // The admin reads the secret view.
    let admin = server.issuer.user_token("bob", &["admin"], &[]);
    let mut c = client(server.port, Some(&admin)).await;
    assert!(
        exchange(&mut c, historical("secret_stats"), entities())
            .await
            .is_ok()
    );

    // The health check needs no token.
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", server.port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status, 1, "SERVING: ready, the registry is loaded");
    let live = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: feast_registry::LIVENESS_SERVICE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(live.status, 1, "liveness SERVING");
}

/// A view applied after the server last loaded its registry (the server here never refreshes
/// on its own) is found at once: the server refreshes before answering "not found".
#[tokio::test]
async fn a_view_applied_since_the_last_refresh_is_found() {
    let server = start().await;
    let dir = server._dir.path();
    let file = std::fs::File::create(dir.join("public_late.parquet")).unwrap();
    let batch = rows();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let path = dir.join("registry.db");
    let mut registry = core::Registry::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
    registry.data_sources.push(source("public_late"));
    registry.feature_views.push(view("public_late"));
    std::fs::write(&path, registry.encode_to_vec()).unwrap();

    let reader = server.issuer.user_token("alice", &["reader"], &[]);
    let mut c = client(server.port, Some(&reader)).await;
    let batches = exchange(&mut c, historical("public_late"), entities())
        .await
        .unwrap();
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);
    // A view that really does not exist is still not found.
    let err = exchange(&mut c, historical("public_never"), entities())
        .await
        .unwrap_err();
    assert!(
        err.message().contains("FeatureViewNotFoundException"),
        "{err:?}"
    );
}

/// A `DoPut` of `upload` under `command`: Ok, or the error status.
async fn put(
    client: &mut FlightClient,
    command: String,
    upload: RecordBatch,
) -> Result<(), tonic::Status> {
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(command)))
        .build(futures::stream::iter([Ok(upload)]));
    let to_status = |e: arrow_flight::error::FlightError| match e {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => tonic::Status::internal(other.to_string()),
    };
    let results = client.do_put(data).await.map_err(to_status)?;
    results
        .try_collect::<Vec<_>>()
        .await
        .map(|_| ())
        .map_err(to_status)
}

fn log_rows() -> RecordBatch {
    use datafusion::arrow::array::{Date32Array, StringArray};
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, true),
        Field::new("__log_date", DataType::Date32, true),
        Field::new("__request_id", DataType::Utf8, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(Date32Array::from(vec![19_844, 19_844])),
            Arc::new(StringArray::from(vec!["a", "b"])),
        ],
    )
    .unwrap()
}

fn write_logs(service: &str) -> String {
    serde_json::json!({
        "command_id": uuid::Uuid::new_v4().to_string(),
        "api": "write_logged_features",
        "feature_service_name": service,
    })
    .to_string()
}

#[tokio::test]
async fn feature_logs_need_write_offline_on_the_feature_service() {
    let server = start().await;
    let root = server._dir.path().to_path_buf();
    let reader = server.issuer.user_token("alice", &["reader"], &[]);
    let stranger = server.issuer.user_token("bob", &["nobody"], &[]);
    let mut c = client(server.port, Some(&reader)).await;

    put(&mut c, write_logs("public_logs"), log_rows())
        .await
        .unwrap();
    let day = root.join("logs/public_logs/2024-05-01");
    let written: Vec<_> = std::fs::read_dir(&day).unwrap().collect();
    assert_eq!(written.len(), 1, "{written:?}");

    // No WRITE_OFFLINE on this service, or no permission at all: refused, nothing written.
    let err = put(&mut c, write_logs("secret_logs"), log_rows())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unknown, "{err:?}");
    assert!(err.message().contains("FeastPermissionError"), "{err:?}");
    let mut s = client(server.port, Some(&stranger)).await;
    let err = put(&mut s, write_logs("public_logs"), log_rows())
        .await
        .unwrap_err();
    assert!(err.message().contains("FeastPermissionError"), "{err:?}");
    assert!(!root.join("logs/secret_logs").exists());
    assert_eq!(std::fs::read_dir(&day).unwrap().count(), 1);

    // A service without logging_config, an unknown service, a missing parameter.
    let err = put(&mut c, write_logs("public_unlogged"), log_rows())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("logging_config"), "{err:?}");
    let err = put(&mut c, write_logs("public_nope"), log_rows())
        .await
        .unwrap_err();
    assert!(
        err.message().contains("FeatureServiceNotFoundException"),
        "{err:?}"
    );
    let no_name = serde_json::json!({"command_id": "x", "api": "write_logged_features"});
    let err = put(&mut c, no_name.to_string(), log_rows())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
}
