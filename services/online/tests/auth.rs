//! The feature server with `auth: oidc`: every route and RPC needs a valid bearer token from
//! the (loopback test) identity provider, and Feast permissions decide what a caller may read
//! and write. Health and metrics stay public.

use std::sync::Arc;
use std::time::Duration;

use feast_auth::testing::{BadToken, TestIssuer};
use feast_auth::{Authenticator, Authorizer, OidcValidator};
use feast_online::authz::Authz;
use feast_online::http::{FeatureServer, ServerAuth, serve};
use feast_online::serving::ReadOptions;
use feast_online::{OnlineStore, SqliteOnlineStore, TableRef};
use feast_proto::core;
use feast_proto::core::permission_spec::{AuthzedAction, Type};
use feast_registry::{CacheSource, FileStore, RegistryCache};
use prost::Message;
use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROJECT: &str = "tenant";

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
            online: true,
            ..Default::default()
        }),
        meta: None,
    }
}

fn permission(
    name: &str,
    pattern: &str,
    actions: &[AuthzedAction],
    role: &str,
) -> core::Permission {
    core::Permission {
        spec: Some(core::PermissionSpec {
            name: name.into(),
            project: PROJECT.into(),
            types: vec![Type::FeatureView as i32],
            name_patterns: vec![pattern.into()],
            actions: actions.iter().map(|a| *a as i32).collect(),
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

fn registry() -> core::Registry {
    core::Registry {
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
        feature_views: vec![view("public_stats"), view("secret_stats")],
        permissions: vec![
            permission(
                "read-public",
                "public_.*",
                &[AuthzedAction::ReadOnline],
                "reader",
            ),
            permission(
                "write-public",
                "public_.*",
                &[AuthzedAction::WriteOnline],
                "writer",
            ),
            permission(
                "admin-secret",
                "secret_.*",
                &[AuthzedAction::ReadOnline, AuthzedAction::WriteOnline],
                "admin",
            ),
        ],
        ..Default::default()
    }
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
    let registry_path = dir.path().join("registry.db");
    std::fs::write(&registry_path, registry().encode_to_vec()).unwrap();
    let store = SqliteOnlineStore::open(dir.path().join("online.db"))
        .await
        .unwrap();
    let tables = [
        TableRef::new(PROJECT, "public_stats"),
        TableRef::new(PROJECT, "secret_stats"),
    ];
    store.update(PROJECT, &tables, &[]).await.unwrap();
    let registry = RegistryCache::start(
        CacheSource::Store(Box::new(FileStore::new(registry_path))),
        Duration::ZERO,
    )
    .await;
    let authenticator =
        Authenticator::Oidc(Arc::new(OidcValidator::new(issuer.settings()).unwrap()));
    let server = FeatureServer {
        registry,
        store: Arc::new(store),
        project: PROJECT.into(),
        read_options: ReadOptions::default(),
        max_request_bytes: feast_online::http::DEFAULT_MAX_REQUEST_BYTES,
        metrics: None,
        index: Default::default(),
        materializer: None,
        offline: None,
        running: Default::default(),
        auth: Some(ServerAuth {
            authenticator,
            authz: Authz {
                authorizer: Arc::new(Authorizer::new()),
            },
        }),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(serve(listener, server, async {
        let _ = rx.await;
    }));
    Server {
        port,
        issuer,
        _dir: dir,
        _stop: tx,
    }
}

async fn call(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{auth}\
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

fn read(view: &str) -> String {
    json!({"entities": {"driver_id": [1]}, "features": [format!("{view}:rate")]}).to_string()
}

fn write(view: &str) -> String {
    json!({"feature_view_name": view, "df": {"driver_id": [1], "rate": [0.5],
           "event_timestamp": ["2024-06-01T00:00:00"]}})
    .to_string()
}

fn class(body: &str) -> String {
    let inner: String = serde_json::from_str(body).unwrap_or_else(|_| body.to_string());
    let e: Json = serde_json::from_str(&inner).unwrap_or(Json::Null);
    e["class"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn every_route_needs_a_valid_token() {
    let s = start().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", s.port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut checked = 0;
    // Every row of the route table: the public ones answer without a token, every other
    // one refuses a missing or bad token before doing anything.
    for (route, rule) in feast_online::authz::ROUTE_RULES {
        let public = *rule == "public";
        if let Some((method, path)) = route.split_once(' ') {
            let body = match path {
                "/get-online-features" => read("public_stats"),
                "/write-to-online-store" => write("public_stats"),
                _ => "{}".to_string(),
            };
            let (status, _) = call(s.port, method, path, None, &body).await;
            if public {
                assert_ne!(status, 401, "{route} is public");
                continue;
            }
            assert_eq!(status, 401, "{route} without a token");
            for bad in BadToken::ALL {
                let token = s.issuer.bad_token(bad, "mallory");
                let (status, out) = call(s.port, method, path, Some(&token), &body).await;
                assert_eq!(status, 401, "{route} with {bad:?}: {out}");
            }
            let (status, _) = call(s.port, method, path, Some("not-a-jwt"), &body).await;
            assert_eq!(status, 401, "{route} with garbage");
        } else {
            if route.ends_with("/Watch") {
                continue; // a stream; its public twin Check is called below
            }
            let result =
                feast_auth::testing::grpc_unary_raw(channel.clone(), route, vec![], None).await;
            if public {
                assert!(result.is_ok(), "{route} is public: {result:?}");
                continue;
            }
            assert_eq!(
                result.unwrap_err().code(),
                tonic::Code::Unauthenticated,
                "{route} without a token"
            );
            for bad in BadToken::ALL {
                let header = format!("Bearer {}", s.issuer.bad_token(bad, "mallory"));
                let result = feast_auth::testing::grpc_unary_raw(
                    channel.clone(),
                    route,
                    vec![],
                    Some(&header),
                )
                .await;
                assert_eq!(
                    result.unwrap_err().code(),
                    tonic::Code::Unauthenticated,
                    "{route} with {bad:?}"
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} guarded routes");
    println!(
        "feature server auth matrix: {checked} guarded routes x {} missing or bad tokens refused",
        BadToken::ALL.len() + 1
    );
}

#[tokio::test]
async fn permissions_decide_reads_and_writes() {
    let s = start().await;
    let reader = s.issuer.user_token("ann", &["reader"], &[]);
    let writer = s.issuer.user_token("bob", &["writer"], &[]);
    let admin = s.issuer.user_token("cat", &["admin", "reader"], &[]);

    let (status, body) = call(
        s.port,
        "POST",
        "/get-online-features",
        Some(&reader),
        &read("public_stats"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        s.port,
        "POST",
        "/get-online-features",
        Some(&reader),
        &read("secret_stats"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(class(&body), "FeastPermissionError");
    assert!(body.contains("admin-secret"), "{body}");

    let (status, body) = call(
        s.port,
        "POST",
        "/write-to-online-store",
        Some(&reader),
        &write("public_stats"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = call(
        s.port,
        "POST",
        "/write-to-online-store",
        Some(&writer),
        &write("public_stats"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = call(
        s.port,
        "POST",
        "/write-to-online-store",
        Some(&writer),
        &write("secret_stats"),
    )
    .await;
    assert_eq!(status, 403);

    let (status, body) = call(
        s.port,
        "POST",
        "/get-online-features",
        Some(&admin),
        &read("secret_stats"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The writer's row is there for an allowed reader.
    let (_, body) = call(
        s.port,
        "POST",
        "/get-online-features",
        Some(&reader),
        &read("public_stats"),
    )
    .await;
    assert!(body.contains("0.5"), "{body}");
}

#[tokio::test]
async fn grpc_needs_a_token_and_permissions() {
    use feast_proto::serving::serving_service_client::ServingServiceClient;
    use feast_proto::serving::{
        FeatureList, GetOnlineFeaturesRequest, get_online_features_request::Kind,
    };
    use feast_proto::types::{RepeatedValue, Value, value::Val};

    let s = start().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", s.port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let request = |view: &str, token: Option<&str>| {
        let mut r = tonic::Request::new(GetOnlineFeaturesRequest {
            kind: Some(Kind::Features(FeatureList {
                val: vec![format!("{view}:rate")],
            })),
            entities: [(
                "driver_id".to_string(),
                RepeatedValue {
                    val: vec![Value {
                        val: Some(Val::Int64Val(1)),
                    }],
                },
            )]
            .into(),
            ..Default::default()
        });
        if let Some(t) = token {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    };
    let mut client = ServingServiceClient::new(channel);
    let e = client
        .get_online_features(request("public_stats", None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let reader = s.issuer.user_token("ann", &["reader"], &[]);
    client
        .get_online_features(request("public_stats", Some(&reader)))
        .await
        .unwrap();
    let e = client
        .get_online_features(request("secret_stats", Some(&reader)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(
        e.message().contains("FeastPermissionError"),
        "{}",
        e.message()
    );

    // The health service is public.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", s.port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
}
