//! The HTTP feature server on a real file registry and SQLite online store, over TCP.
//! Interop with the Feast SDK is checked by tests/compat/test_online_server.py.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use feast_online::http::{FeatureServer, serve};
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
const DOUBLE: i32 = 6;
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

async fn start(with_registry: bool) -> Server {
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
    let tables: Vec<_> = ["stats", "short", "busy", "global"]
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
        entity_key_serialization_version: 3,
    };
    tokio::spawn(serve(listener, server, async {
        let _ = rx.await;
    }));
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
