//! The HTTP feature server on a real file registry and SQLite online store, over TCP.
//! Interop with the Feast SDK is checked by tests/compat/test_online_server.py.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use feast_online::http::{FeatureServer, serve};
use feast_online::metrics::Metrics;
use feast_online::serving::ReadOptions;
use feast_online::{OnlineStore, SqliteOnlineStore, TableRef, WriteRow, serialize_entity_key};
use feast_proto::core;
use feast_proto::types::{EntityKey, Value, value::Val};
use feast_registry::{CacheSource, FileStore, RegistryCache};
use prost::Message;
use prost_types::Timestamp;
use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROJECT: &str = "proj";
const INT64: i32 = 4;
const DOUBLE: i32 = 5;
const STRING: i32 = 2;

fn spec(name: &str, vt: i32) -> core::FeatureSpecV2 {
    core::FeatureSpecV2 {
        name: name.into(),
        value_type: vt,
        ..Default::default()
    }
}

fn view(name: &str, ttl_secs: i64, state: i32) -> core::FeatureView {
    core::FeatureView {
        spec: Some(core::FeatureViewSpec {
            name: name.into(),
            project: PROJECT.into(),
            entities: vec!["driver".into()],
            entity_columns: vec![spec("driver_id", INT64)],
            features: vec![spec("rate", DOUBLE), spec("label", STRING)],
            ttl: Some(prost_types::Duration {
                seconds: ttl_secs,
                nanos: 0,
            }),
            online: true,
            ..Default::default()
        }),
        meta: Some(core::FeatureViewMeta {
            state,
            ..Default::default()
        }),
    }
}

/// An entity-less view, as Feast and feast-rs register it (`__dummy` / `__dummy_id`).
fn global_view() -> core::FeatureView {
    let mut v = view("global", 0, 0);
    let spec = v.spec.as_mut().unwrap();
    spec.entities = vec!["__dummy".into()];
    spec.entity_columns = vec![self::spec("__dummy_id", STRING)];
    v
}

/// A view fed by the push source `driver_push`; its batch source names the timestamp
/// columns `ts` / `created_at` and maps the column `rate_src` to the feature `rate`.
fn pushed_view() -> core::FeatureView {
    let mut v = view("pushed", 0, 0);
    let spec = v.spec.as_mut().unwrap();
    let batch = core::DataSource {
        name: "driver_file".into(),
        r#type: core::data_source::SourceType::BatchFile as i32,
        timestamp_field: "ts".into(),
        created_timestamp_column: "created_at".into(),
        field_mapping: [("rate_src".to_string(), "rate".to_string())].into(),
        ..Default::default()
    };
    spec.stream_source = Some(core::DataSource {
        name: "driver_push".into(),
        r#type: core::data_source::SourceType::PushSource as i32,
        batch_source: Some(Box::new(batch.clone())),
        ..Default::default()
    });
    spec.batch_source = Some(batch);
    v
}

fn registry() -> core::Registry {
    core::Registry {
        entities: vec![core::Entity {
            spec: Some(core::EntitySpecV2 {
                name: "driver".into(),
                project: PROJECT.into(),
                value_type: INT64,
                join_key: "driver_id".into(),
                ..Default::default()
            }),
            meta: None,
        }],
        feature_views: vec![
            view("stats", 0, 0),
            view("short", 3600, 0),
            view("busy", 0, core::FeatureViewState::Materializing as i32),
            global_view(),
            pushed_view(),
        ],
        feature_services: vec![core::FeatureService {
            spec: Some(core::FeatureServiceSpec {
                name: "svc".into(),
                project: PROJECT.into(),
                features: vec![core::FeatureViewProjection {
                    feature_view_name: "stats".into(),
                    feature_view_name_alias: "s".into(),
                    feature_columns: vec![spec("label", STRING)],
                    join_key_map: [("driver_id".to_string(), "d".to_string())].into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            meta: None,
        }],
        stream_feature_views: vec![core::StreamFeatureView {
            spec: Some(core::StreamFeatureViewSpec {
                name: "trips".into(),
                project: PROJECT.into(),
                entities: vec!["driver".into()],
                entity_columns: vec![spec("driver_id", INT64)],
                features: vec![spec("rate", DOUBLE), spec("label", STRING)],
                online: true,
                ..Default::default()
            }),
            meta: None,
        }],
        on_demand_feature_views: vec![core::OnDemandFeatureView {
            spec: Some(core::OnDemandFeatureViewSpec {
                name: "odfv".into(),
                project: PROJECT.into(),
                ..Default::default()
            }),
            meta: None,
        }],
        ..Default::default()
    }
}

fn key(id: i64) -> Vec<u8> {
    serialize_entity_key(
        &EntityKey {
            join_keys: vec!["driver_id".into()],
            entity_values: vec![Value {
                val: Some(Val::Int64Val(id)),
            }],
        },
        3,
    )
    .unwrap()
}

fn write(id: i64, at: i64, rate: f64, label: &str) -> WriteRow {
    WriteRow {
        entity_key: key(id),
        features: vec![
            (
                "rate".into(),
                Value {
                    val: Some(Val::DoubleVal(rate)),
                },
            ),
            (
                "label".into(),
                Value {
                    val: Some(Val::StringVal(label.into())),
                },
            ),
        ],
        event_ts: Timestamp {
            seconds: at,
            nanos: 0,
        },
        created_ts: None,
    }
}

struct Server {
    port: u16,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

struct Options {
    max_request_bytes: usize,
    metrics: bool,
    expired_as_present: bool,
    serve_while_materializing: bool,
    versioning: bool,
    tls: bool,
}

const TLS_CERT: &[u8] = include_bytes!("data/tls-cert.pem");
const TLS_KEY: &[u8] = include_bytes!("data/tls-key.pem");

impl Default for Options {
    fn default() -> Self {
        Options {
            max_request_bytes: feast_online::http::DEFAULT_MAX_REQUEST_BYTES,
            metrics: false,
            expired_as_present: false,
            serve_while_materializing: false,
            versioning: false,
            tls: false,
        }
    }
}

async fn start(with_registry: bool) -> Server {
    start_with(with_registry, Options::default()).await
}

async fn start_with(with_registry: bool, options: Options) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let registry_path = dir.path().join("registry.db");
    // A missing file is an empty registry (as in Feast); garbage cannot be loaded.
    let bytes = if with_registry {
        registry().encode_to_vec()
    } else {
        b"\xff\xff not a registry".to_vec()
    };
    std::fs::write(&registry_path, bytes).unwrap();
    let store = SqliteOnlineStore::open(dir.path().join("online.db"))
        .await
        .unwrap();
    let tables: Vec<_> = ["stats", "short", "busy", "global", "pushed", "trips"]
        .iter()
        .map(|v| TableRef::new(PROJECT, *v))
        .collect();
    store.update(PROJECT, &tables, &[]).await.unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    store
        .online_write_batch(
            &tables[0],
            &[
                write(1, 1_714_557_600, 1.0, "a"),
                write(2, 1_714_557_600, 0.5, "b"),
            ],
        )
        .await
        .unwrap();
    store
        .online_write_batch(
            &tables[1],
            &[
                write(1, now - 7200, 2.0, "old"),
                write(2, now - 60, 3.0, "new"),
            ],
        )
        .await
        .unwrap();
    let dummy_key = serialize_entity_key(
        &EntityKey {
            join_keys: vec!["__dummy_id".into()],
            entity_values: vec![Value {
                val: Some(Val::StringVal(String::new())),
            }],
        },
        3,
    )
    .unwrap();
    store
        .online_write_batch(&tables[5], &[write(2, 1_714_557_600, 4.25, "streamed")])
        .await
        .unwrap();
    let mut global = write(0, 1_714_557_600, 7.5, "all");
    global.entity_key = dummy_key;
    store
        .online_write_batch(&tables[3], &[global])
        .await
        .unwrap();
    let registry = RegistryCache::start(
        CacheSource::Store(Box::new(FileStore::new(registry_path))),
        Duration::ZERO,
    )
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let server = FeatureServer {
        registry,
        store: Arc::new(store),
        project: PROJECT.into(),
        read_options: ReadOptions {
            entity_key_serialization_version: 3,
            expired_as_present: options.expired_as_present,
            serve_while_materializing: options.serve_while_materializing,
            versioning: options.versioning,
        },
        max_request_bytes: options.max_request_bytes,
        metrics: options.metrics.then(|| Arc::new(Metrics::new())),
        index: Default::default(),
        materializer: None,
        offline: None,
        running: Default::default(),
        auth: None,
    };
    let stop = async {
        let _ = rx.await;
    };
    if options.tls {
        let tls = feast_online::http::tls_config(TLS_CERT, TLS_KEY).unwrap();
        tokio::spawn(feast_online::http::serve_tls(listener, server, tls, stop));
    } else {
        tokio::spawn(serve(listener, server, stop));
    }
    Server {
        port,
        _dir: dir,
        _stop: tx,
    }
}

/// A minimal HTTP/1.1 client: returns the status and the body.
async fn call(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

async fn post(port: u16, body: Json) -> (u16, String) {
    call(port, "POST", "/get-online-features", &body.to_string()).await
}

#[tokio::test]
async fn serves_feasts_column_major_json() {
    let s = start(true).await;
    let (status, body) = post(
        s.port,
        json!({"entities": {"driver_id": [2, 9, 1]}, "features": ["stats:rate", "stats:label"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        concat!(
            r#"{"results":[{"values":[2,9,1],"statuses":["PRESENT","PRESENT","PRESENT"],"#,
            r#""event_timestamps":["1970-01-01T00:00:00Z","1970-01-01T00:00:00Z","1970-01-01T00:00:00Z"]},"#,
            r#"{"values":[0.5,null,1.0],"statuses":["PRESENT","NOT_FOUND","PRESENT"],"#,
            r#""event_timestamps":["2024-05-01T10:00:00Z","1970-01-01T00:00:00Z","2024-05-01T10:00:00Z"]},"#,
            r#"{"values":["b",null,"a"],"statuses":["PRESENT","NOT_FOUND","PRESENT"],"#,
            r#""event_timestamps":["2024-05-01T10:00:00Z","1970-01-01T00:00:00Z","2024-05-01T10:00:00Z"]}],"#,
            r#""metadata":{"feature_names":["driver_id","rate","label"]}}"#
        )
    );
    let (_, body) = call(s.port, "GET", "/health", "").await;
    assert!(body.contains("ok"));
    for path in ["/readyz", "/ready", "/healthz"] {
        let (status, _) = call(s.port, "GET", path, "").await;
        assert_eq!(status, 200, "{path}");
    }
}

#[tokio::test]
async fn full_names_services_ttl_and_metadata() {
    let s = start(true).await;
    let (status, body) = post(
        s.port,
        json!({"entities": {"d": [1]}, "feature_service": "svc", "full_feature_names": true,
               "include_feature_view_version_metadata": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let out: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(
        out["metadata"],
        json!({"feature_names": ["d", "s__label"], "feature_view_metadata": [{"name": "s"}]})
    );
    assert_eq!(out["results"][1]["values"], json!(["a"]));

    // A TTL of one hour: the two-hour-old row is OUTSIDE_MAX_AGE (Feast's server: PRESENT).
    let (_, body) = post(
        s.port,
        json!({"entities": {"driver_id": [1, 2]}, "features": ["short:rate"]}),
    )
    .await;
    let out: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(out["results"][1]["values"], json!([null, 3.0]));
    assert_eq!(
        out["results"][1]["statuses"],
        json!(["OUTSIDE_MAX_AGE", "PRESENT"])
    );
}

#[tokio::test]
async fn errors() {
    let s = start(true).await;
    let envelope = |body: &str| -> Json {
        let inner: String = serde_json::from_str(body).expect("a JSON string body");
        serde_json::from_str(&inner).unwrap()
    };
    let (status, body) = post(
        s.port,
        json!({"entities": {"driver_id": [1]}, "features": ["nope:rate"]}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        envelope(&body),
        json!({"module": "feast.errors", "class": "FeatureViewNotFoundException",
               "message": "Feature view nope does not exist"})
    );
    let (status, body) = post(
        s.port,
        json!({"entities": {"driver_id": [1]}, "features": ["stats:nope"]}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        envelope(&body)["class"],
        json!("FeastObjectNotFoundException")
    );
    let (status, body) = post(s.port, json!({"entities": {}, "feature_service": "x"})).await;
    assert_eq!(status, 404);
    assert_eq!(
        envelope(&body)["message"],
        json!("Feature service x does not exist in project proj")
    );
    for (request, needle) in [
        (
            json!({"entities": {"driver_id": ["x"]}, "features": ["stats:rate"]}),
            "INT64",
        ),
        (
            json!({"entities": {"other": [1]}, "features": ["stats:rate"]}),
            "driver_id",
        ),
        (
            json!({"entities": {"driver_id": [1]}, "features": ["odfv:x"]}),
            "on-demand",
        ),
        (
            json!({"entities": {"driver_id": [1]}, "features": ["busy:rate"]}),
            "MATERIALIZING",
        ),
    ] {
        let (status, body) = post(s.port, request.clone()).await;
        assert_eq!(status, 422, "{request}: {body}");
        assert!(
            envelope(&body)["message"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{body}"
        );
    }
    let (status, body) = call(s.port, "POST", "/get-online-features", "{nope").await;
    assert_eq!(status, 422);
    assert!(body.contains("detail"));
}

#[tokio::test]
async fn unavailable_until_the_registry_loads() {
    let s = start(false).await;
    let (status, _) = call(s.port, "GET", "/health", "").await;
    assert_eq!(status, 503);
    // Readiness says the same; liveness says the process serves.
    for path in ["/readyz", "/ready"] {
        let (status, _) = call(s.port, "GET", path, "").await;
        assert_eq!(status, 503, "{path}");
    }
    let (status, body) = call(s.port, "GET", "/healthz", "").await;
    assert_eq!(status, 200, "{body}");
    // gRPC: the overall service is NOT_SERVING, `liveness` SERVING.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", s.port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status_of = |service: &str| tonic_health::pb::HealthCheckRequest {
        service: service.into(),
    };
    use tonic_health::pb::health_check_response::ServingStatus;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let overall = health
        .check(status_of(""))
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(overall, ServingStatus::NotServing as i32);
    let live = health
        .check(status_of(feast_registry::LIVENESS_SERVICE))
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(live, ServingStatus::Serving as i32);
    let (status, _) = post(
        s.port,
        json!({"entities": {"driver_id": [1]}, "features": ["stats:rate"]}),
    )
    .await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn feature_name_collisions_are_feasts_error() {
    let s = start(true).await;
    let (status, body) = post(
        s.port,
        json!({"entities": {"driver_id": [1]}, "features": ["stats:rate", "short:rate"]}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let inner: String = serde_json::from_str(&body).unwrap();
    let e: Json = serde_json::from_str(&inner).unwrap();
    assert_eq!(e["class"], json!("FeatureNameCollisionError"));
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("Duplicate features named rate found.\n")
    );
    // With full names the two views' features are distinct.
    let (status, body) = post(
        s.port,
        json!({"entities": {"driver_id": [1]}, "features": ["stats:rate", "short:rate"],
               "full_feature_names": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""feature_names":["driver_id","stats__rate","short__rate"]"#));
}

#[tokio::test]
async fn entity_less_views_are_read_with_the_placeholder_key() {
    let s = start(true).await;
    let (status, body) = post(
        s.port,
        json!({"entities": {"driver_id": [1, 2]}, "features": ["global:rate", "stats:label"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let body: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(body["results"][1]["values"], json!([7.5, 7.5]), "{body}");
    assert_eq!(
        body["results"][1]["statuses"],
        json!(["PRESENT", "PRESENT"])
    );
    assert_eq!(body["results"][2]["values"], json!(["a", "b"]));
}

fn envelope(body: &str) -> Json {
    let inner: String = serde_json::from_str(body).expect("a JSON string body");
    serde_json::from_str(&inner).unwrap()
}

async fn read_stats(port: u16, ids: Json) -> Json {
    let (status, body) = post(
        port,
        json!({"entities": {"driver_id": ids}, "features": ["stats:rate", "stats:label"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn write_to_online_store_lands_and_newer_wins() {
    let s = start(true).await;
    // The remote SDK's shape: join key, features, event_timestamp and created (naive UTC).
    let write = |rows: Json| {
        let body = json!({"feature_view_name": "stats", "df": rows, "allow_registry_cache": false});
        async move { call(s.port, "POST", "/write-to-online-store", &body.to_string()).await }
    };
    let (status, body) = write(json!({
        "driver_id": [7, 8], "rate": [0.25, null], "label": ["x", "y"],
        "event_timestamp": ["2024-06-01T00:00:00", "2024-06-01T00:00:00.500000"],
        "created": [null, null]}))
    .await;
    assert_eq!((status, body.as_str()), (200, "null"));
    let out = read_stats(s.port, json!([7, 8])).await;
    assert_eq!(out["results"][1]["values"], json!([0.25, null]));
    assert_eq!(out["results"][2]["values"], json!(["x", "y"]));
    assert_eq!(
        out["results"][1]["event_timestamps"][0],
        json!("2024-06-01T00:00:00Z")
    );
    // An older row does not replace a newer one; a newer one does.
    write(json!({"driver_id": [7], "rate": [9.0], "label": ["old"],
                 "event_timestamp": ["2024-05-01T00:00:00"]}))
    .await;
    let out = read_stats(s.port, json!([7])).await;
    assert_eq!(out["results"][2]["values"], json!(["x"]));
    write(json!({"driver_id": [7], "rate": [9.0], "label": ["new"],
                 "event_timestamp": ["2024-07-01T00:00:00+00:00"]}))
    .await;
    let out = read_stats(s.port, json!([7])).await;
    assert_eq!(out["results"][2]["values"], json!(["new"]));
}

#[tokio::test]
async fn bad_writes_are_422s_that_write_nothing() {
    let s = start(true).await;
    let write = |df: Json| {
        let body = json!({"feature_view_name": "stats", "df": df});
        async move { call(s.port, "POST", "/write-to-online-store", &body.to_string()).await }
    };
    let ts = json!(["2024-06-01T00:00:00", "2024-06-01T00:00:00"]);
    for (df, needle) in [
        // Row 0 is fine, row 1 has a string rate: nothing may land.
        (
            json!({"driver_id": [30, 31], "rate": [1.0, "fast"], "label": ["a", "b"], "event_timestamp": ts}),
            r#"df["rate"][1]: expected DOUBLE"#,
        ),
        (
            json!({"driver_id": [30, 31], "label": ["a", "b"], "event_timestamp": ts}),
            r#"no column "rate""#,
        ),
        (
            json!({"driver_id": [30, null], "rate": [1.0, 2.0], "label": ["a", "b"], "event_timestamp": ts}),
            "join keys need a value",
        ),
        (
            json!({"driver_id": [30, 31], "rate": [1.0, 2.0], "label": ["a", "b"], "event_timestamp": [1, 2]}),
            "ISO-8601",
        ),
        (
            json!({"driver_id": [30, 31], "rate": [1.0, 2.0], "label": ["a", "b"]}),
            "event_timestamp",
        ),
        (
            json!({"driver_id": [30], "rate": [1.0, 2.0], "label": ["a", "b"], "event_timestamp": ts}),
            "same length",
        ),
    ] {
        let (status, body) = write(df.clone()).await;
        assert_eq!(status, 422, "{df}: {body}");
        let message = envelope(&body)["message"].as_str().unwrap().to_string();
        assert!(message.contains(needle), "{needle} not in {message}");
    }
    let out = read_stats(s.port, json!([30])).await;
    assert_eq!(out["results"][1]["statuses"], json!(["NOT_FOUND"]));

    let (status, body) = call(
        s.port,
        "POST",
        "/write-to-online-store",
        &json!({"feature_view_name": "nope", "df": {}}).to_string(),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        envelope(&body),
        json!({"module": "feast.errors", "class": "FeastObjectNotFoundException",
               "message": "Can't recognize feast object with a name nope"})
    );
    let (status, body) = call(
        s.port,
        "POST",
        "/write-to-online-store",
        &json!({"feature_view_name": "odfv", "df": {"x": [1]}}).to_string(),
    )
    .await;
    assert_eq!(status, 422);
    assert!(body.contains("on-demand"), "{body}");
    // Empty frames and all-null features write nothing and succeed, as in Feast.
    for df in [
        json!({}),
        json!({"driver_id": [40], "rate": [null], "label": [null], "event_timestamp": ["2024-06-01T00:00:00"]}),
    ] {
        let body = json!({"feature_view_name": "stats", "df": df});
        let (status, _) = call(s.port, "POST", "/write-to-online-store", &body.to_string()).await;
        assert_eq!(status, 200, "{df}");
    }
    let out = read_stats(s.port, json!([40])).await;
    assert_eq!(out["results"][1]["statuses"], json!(["NOT_FOUND"]));
}

#[tokio::test]
async fn push_writes_every_view_of_the_push_source() {
    let s = start(true).await;
    let push = |body: Json| async move { call(s.port, "POST", "/push", &body.to_string()).await };
    // The batch source's names: `ts`, `created_at`, and `rate_src` mapped to `rate`.
    let (status, body) = push(json!({"push_source_name": "driver_push", "df": {
        "driver_id": [5], "rate_src": [4.5], "label": ["pushed"],
        "ts": ["2024-06-01T00:00:00"], "created_at": ["2024-06-01T00:00:01"]}}))
    .await;
    assert_eq!((status, body.as_str()), (200, ""));
    let (status, body) = post(
        s.port,
        json!({"entities": {"driver_id": [5]}, "features": ["pushed:rate", "pushed:label"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let out: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(out["results"][1]["values"], json!([4.5]));
    assert_eq!(out["results"][2]["values"], json!(["pushed"]));

    let (status, body) = push(json!({"push_source_name": "nope", "df": {}})).await;
    assert_eq!(status, 422);
    assert_eq!(
        envelope(&body)["class"],
        json!("PushSourceNotFoundException")
    );
    let (status, body) =
        push(json!({"push_source_name": "driver_push", "df": {}, "to": "disk"})).await;
    assert_eq!(status, 422);
    assert!(body.contains("not a supported push format"), "{body}");
    // Without an offline store to write to, offline pushes are refused before anything is
    // written.
    let (status, body) = push(json!({"push_source_name": "driver_push", "to": "online_and_offline",
        "df": {"driver_id": [6], "rate_src": [1.0], "label": ["no"], "ts": ["2024-06-01T00:00:00"]}}))
    .await;
    assert_eq!(status, 501, "{body}");
    let (_, body) = post(
        s.port,
        json!({"entities": {"driver_id": [6]}, "features": ["pushed:rate"]}),
    )
    .await;
    assert!(body.contains("NOT_FOUND"), "{body}");
}

/// A stream feature view's online rows (written by its stream job, a push or
/// `write_to_online_store`) are read like a feature view's, over HTTP and gRPC alike.
#[tokio::test]
async fn stream_feature_views_serve() {
    let s = start(true).await;
    let (status, body) = post(
        s.port,
        json!({"entities": {"driver_id": [2, 9]}, "features": ["trips:rate", "trips:label"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let out: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        out["metadata"]["feature_names"],
        json!(["driver_id", "rate", "label"])
    );
    assert_eq!(out["results"][1]["values"], json!([4.25, null]));
    assert_eq!(out["results"][2]["values"], json!(["streamed", null]));
    assert_eq!(
        out["results"][1]["statuses"],
        json!(["PRESENT", "NOT_FOUND"])
    );
    let (status, body) = post(
        s.port,
        json!({"entities": {"driver_id": [2]}, "features": ["trips:nope"]}),
    )
    .await;
    assert_ne!(status, 200, "{body}");
}

/// With the registry's `serve_features_while_materializing`, a view Feast has flipped to
/// MATERIALIZING keeps serving its last values instead of being refused.
#[tokio::test]
async fn materializing_views_serve_when_the_registry_allows_it() {
    let s = start_with(
        true,
        Options {
            serve_while_materializing: true,
            ..Options::default()
        },
    )
    .await;
    let (status, body) = post(
        s.port,
        json!({"entities": {"driver_id": [1]}, "features": ["busy:rate"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let s = start_with(
        true,
        Options {
            max_request_bytes: 256,
            ..Options::default()
        },
    )
    .await;
    let ids: Vec<i64> = (0..200).collect();
    let (status, body) = post(
        s.port,
        json!({"entities": {"driver_id": ids}, "features": ["stats:rate"]}),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("256 bytes"), "{body}");
    let (status, _) = post(
        s.port,
        json!({"entities": {"driver_id": [1]}, "features": ["stats:rate"]}),
    )
    .await;
    assert_eq!(status, 200);
}

mod grpc {
    use super::*;
    use feast_proto::grpc_server::grpc_feature_server_client::GrpcFeatureServerClient;
    use feast_proto::grpc_server::{PushRequest, WriteToOnlineStoreRequest};
    use feast_proto::serving::get_online_features_request::Kind;
    use feast_proto::serving::serving_service_client::ServingServiceClient;
    use feast_proto::serving::{
        FeatureList, FieldStatus, GetFeastServingInfoRequest, GetOnlineFeaturesRequest,
    };
    use feast_proto::types::RepeatedValue;

    fn int64(i: i64) -> Value {
        Value {
            val: Some(Val::Int64Val(i)),
        }
    }

    fn request(ids: &[i64], features: &[&str]) -> GetOnlineFeaturesRequest {
        GetOnlineFeaturesRequest {
            kind: Some(Kind::Features(FeatureList {
                val: features.iter().map(|f| f.to_string()).collect(),
            })),
            entities: [(
                "driver_id".to_string(),
                RepeatedValue {
                    val: ids.iter().map(|i| int64(*i)).collect(),
                },
            )]
            .into(),
            ..Default::default()
        }
    }

    async fn channel(port: u16) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn serving_service_on_the_http_port() {
        let s = start(true).await;
        let mut client = ServingServiceClient::new(channel(s.port).await);
        let info = client
            .get_feast_serving_info(GetFeastServingInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.version, "0.67.0");
        let out = client
            .get_online_features(request(&[2, 9, 1], &["stats:rate", "stats:label"]))
            .await
            .unwrap()
            .into_inner();
        let names = out.metadata.unwrap().feature_names.unwrap().val;
        assert_eq!(names, ["driver_id", "rate", "label"]);
        assert_eq!(out.results[0].values, [int64(2), int64(9), int64(1)]);
        let rate = &out.results[1];
        assert_eq!(
            rate.values,
            [
                Value {
                    val: Some(Val::DoubleVal(0.5))
                },
                Value::default(),
                Value {
                    val: Some(Val::DoubleVal(1.0))
                }
            ]
        );
        assert_eq!(
            rate.statuses,
            [
                FieldStatus::Present as i32,
                FieldStatus::NotFound as i32,
                FieldStatus::Present as i32
            ]
        );
        assert_eq!(rate.event_timestamps[0].seconds, 1_714_557_600);
        assert_eq!(rate.event_timestamps[1].seconds, 0);
        assert!(out.status);

        // An int32 entity value finds the INT64 key, as the JSON path would.
        let mut r = request(&[], &["stats:label"]);
        r.entities.get_mut("driver_id").unwrap().val = vec![Value {
            val: Some(Val::Int32Val(1)),
        }];
        let out = client.get_online_features(r).await.unwrap().into_inner();
        assert_eq!(
            out.results[1].values,
            [Value {
                val: Some(Val::StringVal("a".into()))
            }]
        );

        // Errors carry Feast's envelope.
        let e = client
            .get_online_features(request(&[1], &["nope:rate"]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        let detail: Json = serde_json::from_str(e.message()).unwrap();
        assert_eq!(detail["class"], json!("FeatureViewNotFoundException"));
        let e = client
            .get_online_features(request(&[1], &["odfv:x"]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }

    #[tokio::test]
    async fn grpc_feature_server_push_and_write() {
        let s = start(true).await;
        let mut client = GrpcFeatureServerClient::new(channel(s.port).await);
        // String features are typed by the view's schema.
        client
            .push(PushRequest {
                features: [
                    ("driver_id", "11"),
                    ("rate_src", "2.5"),
                    ("label", "grpc"),
                    ("ts", "2024-06-01T00:00:00"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
                stream_feature_view: "driver_push".into(),
                to: "online".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        // Typed features, with the timestamp as a unix_timestamp_val.
        client
            .write_to_online_store(WriteToOnlineStoreRequest {
                feature_view_name: "stats".into(),
                typed_features: [
                    ("driver_id".to_string(), int64(12)),
                    (
                        "rate".to_string(),
                        Value {
                            val: Some(Val::DoubleVal(0.75)),
                        },
                    ),
                    (
                        "label".to_string(),
                        Value {
                            val: Some(Val::StringVal("typed".into())),
                        },
                    ),
                    (
                        "event_timestamp".to_string(),
                        Value {
                            val: Some(Val::UnixTimestampVal(1_717_200_000)),
                        },
                    ),
                ]
                .into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let out = client
            .get_online_features(request(&[11, 12], &["pushed:rate", "stats:label"]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            out.results[1].values[0],
            Value {
                val: Some(Val::DoubleVal(2.5))
            }
        );
        assert_eq!(
            out.results[2].values[1],
            Value {
                val: Some(Val::StringVal("typed".into()))
            }
        );
        assert_eq!(out.results[2].event_timestamps[1].seconds, 1_717_200_000);

        let both = client
            .push(PushRequest {
                features: [("a".to_string(), "1".to_string())].into(),
                typed_features: [("a".to_string(), int64(1))].into(),
                stream_feature_view: "driver_push".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(both.code(), tonic::Code::InvalidArgument);
        let unknown = client
            .push(PushRequest {
                stream_feature_view: "nope".into(),
                features: [("a".to_string(), "1".to_string())].into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::InvalidArgument);
        assert!(unknown.message().contains("PushSourceNotFoundException"));
    }

    #[tokio::test]
    async fn health_and_reflection_are_served() {
        let s = start(true).await;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel(s.port).await);
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            status.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
}

#[tokio::test]
async fn expired_rows_can_be_served_as_feast_does() {
    let s = start_with(
        true,
        Options {
            expired_as_present: true,
            ..Options::default()
        },
    )
    .await;
    let (status, body) = post(
        s.port,
        json!({"entities": {"driver_id": [1, 2]}, "features": ["short:label"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let out: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(out["results"][1]["values"], json!(["old", "new"]));
    assert_eq!(out["results"][1]["statuses"], json!(["PRESENT", "PRESENT"]));
}

#[tokio::test]
async fn metrics_use_feasts_names() {
    let off = start(true).await;
    let (status, _) = call(off.port, "GET", "/metrics", "").await;
    assert_eq!(status, 404);

    let s = start_with(
        true,
        Options {
            metrics: true,
            ..Options::default()
        },
    )
    .await;
    post(
        s.port,
        json!({"entities": {"driver_id": [1, 404]}, "features": ["stats:rate", "stats:label"]}),
    )
    .await;
    post(
        s.port,
        json!({"entities": {"driver_id": [1]}, "features": ["nope:x"]}),
    )
    .await;
    call(
        s.port,
        "POST",
        "/push",
        &json!({"push_source_name": "driver_push", "df": {}}).to_string(),
    )
    .await;
    let (status, text) = call(s.port, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    for line in [
        r#"feast_feature_server_request_total{endpoint="/get-online-features",status="success"} 1"#,
        r#"feast_feature_server_request_total{endpoint="/get-online-features",status="error"} 1"#,
        r#"feast_feature_server_request_latency_seconds_count{endpoint="/get-online-features",feature_count="2",feature_view_count="1"} 1"#,
        "feast_online_features_request_total 1",
        "feast_online_features_entity_count_sum 2",
        r#"feast_online_features_status_total{feature_view="stats",status="present"} 2"#,
        r#"feast_online_features_status_total{feature_view="stats",status="not_found"} 2"#,
        "feast_feature_server_online_store_read_duration_seconds_count 1",
        r#"feast_push_request_total{mode="online",push_source="driver_push"} 1"#,
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
}

#[tokio::test]
async fn docs_describe_every_route() {
    let s = start(true).await;
    let (status, body) = call(s.port, "GET", "/docs", "").await;
    assert_eq!(status, 200);
    let doc: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["openapi"], json!("3.1.0"));
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in [
        ("post", "/get-online-features"),
        ("post", "/write-to-online-store"),
        ("post", "/push"),
        ("post", "/materialize"),
        ("post", "/materialize-incremental"),
        ("get", "/health"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/ready"),
        ("get", "/metrics"),
        ("get", "/docs"),
        ("get", "/openapi.json"),
    ] {
        assert!(paths[path].get(method).is_some(), "{method} {path}");
        // And the route exists: anything but 404/405 from the router.
        let (status, _) = call(s.port, &method.to_uppercase(), path, "{}").await;
        assert!(
            status != 405 && (status != 404 || path == "/metrics"),
            "{method} {path}: {status}"
        );
    }
    // Every $ref resolves.
    let refs: Vec<_> = body.match_indices("\"$ref\": \"#/components/").collect();
    assert!(refs.len() > 10, "{}", refs.len());
    for r in refs {
        let rest = &body[r.0 + 9..];
        let target = &rest[..rest.find('"').unwrap()];
        let mut node = &doc;
        for part in target.trim_start_matches("#/").split('/') {
            node = &node[part];
        }
        assert!(!node.is_null(), "dangling {target}");
    }
}

#[tokio::test]
async fn tls_serves_https_and_grpc_on_one_port() {
    use tokio_rustls::rustls;
    let s = start_with(
        true,
        Options {
            tls: true,
            ..Options::default()
        },
    )
    .await;
    // HTTPS (HTTP/1.1) with the server's certificate as the trust root.
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(TLS_CERT) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let body = json!({"entities": {"driver_id": [1]}, "features": ["stats:label"]}).to_string();
    let request = format!(
        "POST /get-online-features HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    // The server may close without a TLS close_notify once the response is sent.
    let _ = tls.read_to_end(&mut out).await;
    let out = String::from_utf8(out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains(r#""values":["a"]"#), "{out}");

    // gRPC over TLS (HTTP/2 by ALPN) on the same port.
    let channel = tonic::transport::Endpoint::from_shared(format!("https://localhost:{}", s.port))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(TLS_CERT))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client =
        feast_proto::serving::serving_service_client::ServingServiceClient::new(channel);
    let info = client
        .get_feast_serving_info(feast_proto::serving::GetFeastServingInfoRequest {})
        .await
        .unwrap();
    assert_eq!(info.into_inner().version, "0.67.0");

    // Plain HTTP to the TLS port fails instead of being served in the clear.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port)).await;
    let mut tcp = tcp.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf).await;
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
}
