//! Two tenants in one PostgreSQL registry: team B's feature server, offline server,
//! materializer and the shared registry server all run with `auth: oidc`, and a team A user
//! can neither read, list, write nor materialize anything of team B through any of them,
//! even by naming its own project in a request to team B's servers. Team B's user can.
//!
//! PostgreSQL on 127.0.0.1:5432 (`FEAST_RS_TEST_POSTGRES` overrides the server URL); the
//! test is skipped with a printed reason when it is unreachable, except under `CI=true`.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightClient, FlightDescriptor};
use datafusion::arrow::array::{Int64Array, RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use feast_auth::testing::TestIssuer;
use feast_auth::{Authenticator, Authorizer, OidcValidator};
use feast_materializer::{IntervalRecorder, JobManager, LocalMaterializer, Options};
use feast_offline::{FileOfflineStore, FlightOptions, OfflineFlightService};
use feast_online::authz::Authz;
use feast_online::http::{FeatureServer, ServerAuth};
use feast_online::{OnlineStore, SqliteOnlineStore};
use feast_proto::core;
use feast_proto::core::permission_spec::AuthzedAction;
use feast_proto::feast_rs::materializer::v1 as pb;
use feast_proto::registry::registry_server_client::RegistryServerClient;
use feast_proto::registry::{GetFeatureViewRequest, ListFeatureViewsRequest};
use feast_registry::{CacheSource, RegistryCache, RegistryService, RegistryStore};
use futures::TryStreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::{Db, T0, source, view, write_parquet};

fn everything_for(project: &str, role: &str) -> core::Permission {
    core::Permission {
        spec: Some(core::PermissionSpec {
            name: format!("{role}-everything"),
            project: project.into(),
            // Every AuthzedAction, CREATE (0) to WRITE_OFFLINE (7).
            actions: (AuthzedAction::Create as i32..=AuthzedAction::WriteOffline as i32).collect(),
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

fn tenant(registry: &mut core::Registry, project: &str, view_name: &str, role: &str) {
    registry.projects.push(core::Project {
        spec: Some(core::ProjectSpec {
            name: project.into(),
            ..Default::default()
        }),
        meta: None,
    });
    registry.entities.push(core::Entity {
        spec: Some(core::EntitySpecV2 {
            name: "driver".into(),
            project: project.into(),
            value_type: 4,
            join_key: "driver_id".into(),
            ..Default::default()
        }),
        meta: None,
    });
    registry.data_sources.push(source(project, view_name));
    registry.feature_views.push(view(project, view_name));
    registry.permissions.push(everything_for(project, role));
}

async fn http(port: u16, path: &str, token: &str, body: &serde_json::Value) -> (u16, String) {
    let body = body.to_string();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    (status, out.split_once("\r\n\r\n").unwrap().1.to_string())
}

async fn flight(port: u16, token: &str, command: serde_json::Value) -> Result<usize, String> {
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightClient::new(channel);
    client
        .add_header("authorization", &format!("Bearer {token}"))
        .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, true),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]));
    let entities = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![(T0 + 60) * 1_000_000]).with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(command.to_string())))
        .build(futures::stream::iter([Ok(entities)]));
    let stream = client.do_exchange(data).await.map_err(|e| e.to_string())?;
    let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(|e| e.to_string())?;
    Ok(batches.iter().map(RecordBatch::num_rows).sum())
}

/// A loopback listener, its port, and a future that resolves when the test drops
/// `stoppers` (the server's shutdown signal).
async fn listen(
    stoppers: &mut Vec<tokio::sync::oneshot::Sender<()>>,
) -> (
    tokio::net::TcpListener,
    u16,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    stoppers.push(tx);
    (listener, port, async {
        let _ = rx.await;
    })
}

fn with<T>(token: &str, mut r: tonic::Request<T>) -> tonic::Request<T> {
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn historical(project: &str, view: &str) -> serde_json::Value {
    json!({"command_id": "1", "api": "get_historical_features", "feature_view_names": [view],
           "feature_refs": [format!("{view}:rate")], "project": project,
           "full_feature_names": false, "name_aliases": [null]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_a_cannot_reach_team_b_through_any_service() {
    let Some(db) = Db::create("feast_rs_tenants").await else {
        return;
    };
    let mut registry = core::Registry::default();
    tenant(&mut registry, "team_a", "a_stats", "team-a");
    tenant(&mut registry, "team_b", "b_stats", "team-b");
    let store = db.store().await;
    let (_, version) = store.load().await.unwrap();
    store.commit(&registry, &version).await.unwrap();

    let issuer = TestIssuer::start().await;
    let alice = issuer.user_token("alice", &["team-a"], &[]);
    let bob = issuer.user_token("bob", &["team-b"], &[]);
    let authenticator =
        || Authenticator::Oidc(Arc::new(OidcValidator::new(issuer.settings()).unwrap()));
    let dir = tempfile::tempdir().unwrap();
    write_parquet(dir.path(), "a_stats");
    write_parquet(dir.path(), "b_stats");
    let cache = || async {
        RegistryCache::start(
            CacheSource::Store(Box::new(db.store().await)),
            Duration::ZERO,
        )
        .await
    };
    let online: Arc<dyn OnlineStore> = Arc::new(
        SqliteOnlineStore::open(dir.path().join("online.db"))
            .await
            .unwrap(),
    );
    let offline = Arc::new(FileOfflineStore::new(dir.path()));
    let recorder = || async { Arc::new(IntervalRecorder::Store(Box::new(db.store().await))) };
    let mut stoppers = Vec::new();

    // Team B's feature server, with in-process materialization.
    let online_port = {
        let server = FeatureServer {
            registry: cache().await,
            store: online.clone(),
            project: "team_b".into(),
            read_options: Default::default(),
            max_request_bytes: feast_online::http::DEFAULT_MAX_REQUEST_BYTES,
            metrics: None,
            index: Default::default(),
            materializer: Some(Arc::new(LocalMaterializer {
                offline: offline.clone(),
                online: online.clone(),
                recorder: recorder().await,
                project: "team_b".into(),
                options: Options::default(),
                locks: None,
            })),
            offline: None,
            running: Default::default(),
            auth: Some(ServerAuth {
                authenticator: authenticator(),
                authz: Authz {
                    authorizer: Arc::new(Authorizer::new()),
                },
            }),
        };
        let (listener, port, stop) = listen(&mut stoppers).await;
        tokio::spawn(feast_online::http::serve(listener, server, stop));
        port
    };
    // Team B's offline server.
    let offline_port = {
        let service = OfflineFlightService::new(
            cache().await,
            offline.clone(),
            "team_b",
            Some(Arc::new(Authorizer::new())),
            FlightOptions::default(),
        );
        let (listener, port, stop) = listen(&mut stoppers).await;
        tokio::spawn(feast_offline::serve_on(
            listener,
            service,
            authenticator(),
            None,
            stop,
        ));
        port
    };
    // Team B's materializer service.
    let materializer_port = {
        let mut manager = JobManager::new(
            offline.clone(),
            online.clone(),
            recorder().await,
            cache().await,
            "team_b",
            Options::default(),
        );
        manager.authorizer = Some(Arc::new(Authorizer::new()));
        let (listener, port, stop) = listen(&mut stoppers).await;
        tokio::spawn(feast_materializer::service::serve_on(
            listener,
            Arc::new(manager),
            authenticator(),
            None,
            stop,
        ));
        port
    };
    // The shared registry server.
    let registry_port = {
        let service = RegistryService::open(Box::new(db.store().await), Default::default())
            .await
            .unwrap();
        let (listener, port, stop) = listen(&mut stoppers).await;
        tokio::spawn(feast_registry::serve_on(
            listener,
            service,
            authenticator(),
            None,
            stop,
        ));
        port
    };

    let read = json!({"entities": {"driver_id": [1]}, "features": ["b_stats:rate"]});
    let write = json!({"feature_view_name": "b_stats", "df": {"driver_id": [1], "rate": [0.75],
                       "event_timestamp": ["2024-05-02T00:00:00"]}});
    let materialize = json!({"start_ts": "2024-04-30T00:00:00", "end_ts": "2024-05-02T00:00:00",
                             "feature_views": ["b_stats"]});
    let mut refused = 0;

    // Team A's user, against team B's feature server.
    for (path, body) in [
        ("/get-online-features", &read),
        ("/write-to-online-store", &write),
        ("/materialize", &materialize),
    ] {
        let (status, body) = http(online_port, path, &alice, body).await;
        assert_eq!(status, 403, "alice {path}: {body}");
        assert!(body.contains("FeastPermissionError"), "{body}");
        refused += 1;
    }
    // Naming her own view (or project) there finds nothing of hers: team B's server serves
    // team B's project only.
    let own = json!({"entities": {"driver_id": [1]}, "features": ["a_stats:rate"]});
    let (status, _) = http(
        online_port,
        "/get-online-features?project=team_a",
        &alice,
        &own,
    )
    .await;
    assert_eq!(status, 404);
    refused += 1;

    // ... against team B's offline server, by name or by naming her own project.
    for command in [
        historical("team_b", "b_stats"),
        historical("team_a", "a_stats"),
    ] {
        let err = flight(offline_port, &alice, command.clone())
            .await
            .unwrap_err();
        // Her team's project named to team B's server is refused as such; team B's view is
        // refused by team B's permissions.
        let expected = if command["project"] == "team_a" {
            "this offline server serves project team_b"
        } else {
            "FeastPermissionError"
        };
        assert!(err.contains(expected), "alice {command}: {err}");
        refused += 1;
    }

    // ... against team B's materializer.
    let mut jobs = pb::materializer_client::MaterializerClient::new(feast_auth::WithBearer::new(
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{materializer_port}"))
            .unwrap()
            .connect_lazy(),
        Some(feast_auth::TokenProvider::fixed(alice.clone())),
    ));
    let job = pb::MaterializeRequest {
        start: Some(prost_types::Timestamp {
            seconds: T0 - 86_400,
            nanos: 0,
        }),
        end: Some(prost_types::Timestamp {
            seconds: T0 + 86_400,
            nanos: 0,
        }),
        feature_views: vec!["b_stats".into()],
        wait: true,
        ..Default::default()
    };
    let err = jobs.materialize(job.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    refused += 1;

    // ... and against the shared registry server.
    let mut registry = RegistryServerClient::new(
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{registry_port}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let get = GetFeatureViewRequest {
        name: "b_stats".into(),
        project: "team_b".into(),
        allow_cache: true,
    };
    let err = registry
        .get_feature_view(with(&alice, tonic::Request::new(get.clone())))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let list = ListFeatureViewsRequest {
        project: "team_b".into(),
        ..Default::default()
    };
    // Team B's only permission has no name patterns, so Feast's filter refuses the whole
    // list rather than returning it empty.
    let err = registry
        .list_feature_views(with(&alice, tonic::Request::new(list.clone())))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    refused += 2;

    // Team B's own user gets all of it.
    let (status, body) = http(online_port, "/materialize", &bob, &materialize).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(online_port, "/get-online-features", &bob, &read).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("0.25"), "{body}");
    let (status, body) = http(online_port, "/write-to-online-store", &bob, &write).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        flight(offline_port, &bob, historical("team_b", "b_stats")).await,
        Ok(1)
    );
    let mut jobs_b = pb::materializer_client::MaterializerClient::new(feast_auth::WithBearer::new(
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{materializer_port}"))
            .unwrap()
            .connect_lazy(),
        Some(feast_auth::TokenProvider::fixed(bob.clone())),
    ));
    let done = jobs_b.materialize(job).await.unwrap().into_inner();
    assert_eq!(done.state(), pb::JobState::Succeeded, "{done:?}");
    let fv = registry
        .get_feature_view(with(&bob, tonic::Request::new(get)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fv.spec.unwrap().name, "b_stats");
    println!("tenant isolation: {refused} cross-tenant calls refused across 4 services");

    drop(stoppers);
    db.drop_now().await;
}
