//! The materializer service over loopback gRPC: jobs on a file registry, Parquet data and a
//! SQLite online store; progress, the recorded interval, incremental runs, bad requests.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use feast_materializer::{IntervalRecorder, JobManager, Options};
use feast_offline::FileOfflineStore;
use feast_online::{OnlineStore, SqliteOnlineStore, TableRef};
use feast_proto::core;
use feast_proto::feast_rs::materializer::v1 as pb;
use feast_proto::types::{EntityKey, Value, value::Val};
use feast_registry::{CacheSource, FileStore, RegistryCache};
use prost::Message;
use prost_types::Timestamp;

const PROJECT: &str = "jobs";
const T0: i64 = 1_714_521_600; // 2024-05-01T00:00:00Z

fn view() -> core::FeatureView {
    core::FeatureView {
        spec: Some(core::FeatureViewSpec {
            name: "stats".into(),
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
            ttl: Some(prost_types::Duration {
                seconds: 86_400,
                nanos: 0,
            }),
            batch_source: Some(core::DataSource {
                name: "stats_src".into(),
                project: PROJECT.into(),
                r#type: core::data_source::SourceType::BatchFile as i32,
                timestamp_field: "event_timestamp".into(),
                options: Some(core::data_source::Options::FileOptions(
                    core::data_source::FileOptions {
                        uri: "stats.parquet".into(),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            online: true,
            ..Default::default()
        }),
        meta: None,
    }
}

fn write_data(dir: &std::path::Path) {
    // Driver 1 has two rows: the later (rate 0.9) wins.
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, true),
        Field::new("rate", DataType::Float64, true),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]));
    let us = |s: i64| s * 1_000_000;
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1, 1, 2, 3])),
            Arc::new(Float64Array::from(vec![0.1, 0.9, 0.2, 0.3])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![us(T0), us(T0 + 60), us(T0), us(T0 + 7200)])
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    let file = std::fs::File::create(dir.join("stats.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn ts(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

/// A job manager over `dir`: the data of [`write_data`], a file registry holding [`view`],
/// and a SQLite online store with its table (also returned).
async fn job_manager(
    dir: &std::path::Path,
) -> (JobManager<FileOfflineStore>, Arc<dyn OnlineStore>) {
    write_data(dir);
    let registry_path = dir.join("registry.db");
    let registry = core::Registry {
        feature_views: vec![view()],
        ..Default::default()
    };
    std::fs::write(&registry_path, registry.encode_to_vec()).unwrap();
    let online = SqliteOnlineStore::open(dir.join("online.db"))
        .await
        .unwrap();
    online
        .update(PROJECT, &[TableRef::new(PROJECT, "stats")], &[])
        .await
        .unwrap();
    let online: Arc<dyn OnlineStore> = Arc::new(online);
    let cache = RegistryCache::start(
        CacheSource::Store(Box::new(FileStore::new(&registry_path))),
        Duration::ZERO,
    )
    .await;
    let manager = JobManager::new(
        Arc::new(FileOfflineStore::new(dir)),
        online.clone(),
        Arc::new(IntervalRecorder::Store(Box::new(FileStore::new(
            &registry_path,
        )))),
        cache,
        PROJECT,
        Options::default(),
    );
    (manager, online)
}

#[tokio::test]
async fn jobs_materialize_record_intervals_and_report_progress() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, online) = job_manager(dir.path()).await;
    let manager = Arc::new(manager);
    let registry_path = dir.path().join("registry.db");
    let table = TableRef::new(PROJECT, "stats");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(feast_materializer::service::serve_on(
        listener,
        manager,
        feast_auth::Authenticator::NoAuth,
        None,
        async {
            let _ = rx.await;
        },
    ));
    let mut client =
        pb::materializer_client::MaterializerClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .unwrap();

    // A window that covers the first three rows (driver 3's row is two hours later).
    let job = client
        .materialize(pb::MaterializeRequest {
            start: ts(T0 - 60),
            end: ts(T0 + 3600),
            feature_views: vec![],
            wait: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.state(), pb::JobState::Succeeded, "{job:?}");
    assert_eq!(job.kind, "range");
    assert_eq!(job.views.len(), 1);
    assert_eq!(job.views[0].rows, 2, "one row per driver");
    assert_eq!(job.views[0].state(), pb::JobState::Succeeded);

    let key = |d: i64| {
        feast_online::serialize_entity_key(
            &EntityKey {
                join_keys: vec!["driver_id".into()],
                entity_values: vec![Value {
                    val: Some(Val::Int64Val(d)),
                }],
            },
            3,
        )
        .unwrap()
    };
    let rows = online
        .online_read(&table, &[key(1), key(3)], &["rate".to_string()])
        .await
        .unwrap();
    assert_eq!(
        rows[0].as_ref().unwrap().values[0].as_ref().unwrap().val,
        Some(Val::DoubleVal(0.9))
    );
    assert!(rows[1].is_none(), "driver 3 is outside the window");

    // The interval is in the registry.
    let stored = core::Registry::decode(std::fs::read(&registry_path).unwrap().as_slice()).unwrap();
    let intervals = &stored.feature_views[0]
        .meta
        .as_ref()
        .unwrap()
        .materialization_intervals;
    assert_eq!(intervals.len(), 1);
    assert_eq!(intervals[0].end_time, ts(T0 + 3600));

    // Incremental: from the recorded end; picks up driver 3.
    let job = client
        .materialize_incremental(pb::MaterializeIncrementalRequest {
            end: ts(T0 + 10_000),
            wait: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.state(), pb::JobState::Succeeded, "{job:?}");
    assert_eq!(job.views[0].start, ts(T0 + 3600));
    assert_eq!(job.views[0].rows, 1);
    let rows = online
        .online_read(&table, &[key(3)], &["rate".to_string()])
        .await
        .unwrap();
    assert!(rows[0].is_some());

    // Jobs are listed newest first and can be fetched; cancelling a finished job changes
    // nothing.
    let listed = client
        .list_jobs(pb::ListJobsRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, job.id);
    let cancelled = client
        .cancel_job(pb::CancelJobRequest { id: job.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state(), pb::JobState::Succeeded);

    // Bad requests.
    let err = client
        .materialize(pb::MaterializeRequest {
            start: ts(T0),
            end: ts(T0 + 60),
            feature_views: vec!["nope".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let err = client
        .materialize(pb::MaterializeRequest {
            start: ts(T0 + 60),
            end: ts(T0),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = client
        .get_job(pb::GetJobRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

/// `serve-materializer --cert --key` with `auth: oidc`: only TLS clients with a valid token
/// get in, and a job needs WRITE_ONLINE on its views for the caller (here the feature
/// server's own identity, sent by the same client the feature server uses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_tokens_guard_the_service() {
    use feast_auth::testing::TestIssuer;
    use feast_auth::{Authenticator, Authorizer, OidcValidator, TokenProvider, WithBearer};
    use feast_proto::core::permission_spec::AuthzedAction;

    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    let registry_path = dir.path().join("registry.db");
    let writers = core::Permission {
        spec: Some(core::PermissionSpec {
            name: "materializers".into(),
            project: PROJECT.into(),
            actions: vec![AuthzedAction::WriteOnline as i32],
            policy: Some(core::Policy {
                policy_type: Some(core::policy::PolicyType::RoleBasedPolicy(
                    core::RoleBasedPolicy {
                        roles: vec!["materializer".into()],
                    },
                )),
                ..Default::default()
            }),
            ..Default::default()
        }),
        meta: None,
    };
    let registry = core::Registry {
        feature_views: vec![view()],
        permissions: vec![writers],
        ..Default::default()
    };
    std::fs::write(&registry_path, registry.encode_to_vec()).unwrap();
    let online = SqliteOnlineStore::open(dir.path().join("online.db"))
        .await
        .unwrap();
    let cache = RegistryCache::start(
        CacheSource::Store(Box::new(FileStore::new(&registry_path))),
        Duration::ZERO,
    )
    .await;
    let mut manager = JobManager::new(
        Arc::new(FileOfflineStore::new(dir.path())),
        Arc::new(online),
        Arc::new(IntervalRecorder::Store(Box::new(FileStore::new(
            &registry_path,
        )))),
        cache,
        PROJECT,
        Options::default(),
    );
    manager.authorizer = Some(Arc::new(Authorizer::new()));
    let issuer = TestIssuer::start().await;
    let authenticator =
        Authenticator::Oidc(Arc::new(OidcValidator::new(issuer.settings()).unwrap()));
    let cert = include_bytes!("../../online/tests/data/tls-cert.pem").to_vec();
    let key = include_bytes!("../../online/tests/data/tls-key.pem").to_vec();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(feast_materializer::service::serve_on(
        listener,
        Arc::new(manager),
        authenticator,
        Some(feast_materializer::service::TlsPem {
            cert: cert.clone(),
            key,
        }),
        async {
            let _ = rx.await;
        },
    ));

    let tls_channel = || {
        tonic::transport::Channel::from_shared(format!("https://localhost:{port}"))
            .unwrap()
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(&cert)),
            )
            .unwrap()
            .connect_lazy()
    };
    let client = |token: Option<String>| {
        pb::materializer_client::MaterializerClient::new(WithBearer::new(
            tls_channel(),
            token.map(TokenProvider::fixed),
        ))
    };
    let request = pb::MaterializeRequest {
        start: ts(T0 - 60),
        end: ts(T0 + 3600),
        wait: true,
        ..Default::default()
    };

    // Plain text to a TLS port fails; TLS without a token is refused.
    let mut plain = pb::materializer_client::MaterializerClient::new(
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect_lazy(),
    );
    assert!(
        plain
            .list_jobs(pb::ListJobsRequest::default())
            .await
            .is_err()
    );
    let err = client(None)
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    // Every RPC with every kind of bad token.
    let mut refused = 1;
    for bad in feast_auth::testing::BadToken::ALL {
        let mut c = client(Some(issuer.bad_token(bad, "mallory")));
        let codes = [
            c.materialize(request.clone()).await.map(drop),
            c.materialize_incremental(pb::MaterializeIncrementalRequest::default())
                .await
                .map(drop),
            c.get_job(pb::GetJobRequest::default()).await.map(drop),
            c.list_jobs(pb::ListJobsRequest::default()).await.map(drop),
            c.cancel_job(pb::CancelJobRequest::default())
                .await
                .map(drop),
        ];
        for result in codes {
            assert_eq!(
                result.unwrap_err().code(),
                tonic::Code::Unauthenticated,
                "{bad:?}"
            );
            refused += 1;
        }
    }
    println!("materializer auth matrix: {refused} calls with a missing or bad token refused");

    // A caller without the role may list but not materialize.
    let stranger = Some(issuer.user_token("stranger", &[], &[]));
    client(stranger.clone())
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap();
    let err = client(stranger)
        .materialize(request.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");

    // The feature server's identity has it.
    let online_server = Some(issuer.user_token("online-server", &["materializer"], &[]));
    let job = client(online_server.clone())
        .materialize(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.state(), pb::JobState::Succeeded, "{job:?}");
    assert_eq!(job.views[0].rows, 2);

    // Jobs are as private as their views: the stranger neither sees nor cancels this one.
    let stranger = Some(issuer.user_token("stranger", &[], &[]));
    let listed = client(stranger.clone())
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.jobs.is_empty(), "{listed:?}");
    let get = pb::GetJobRequest { id: job.id.clone() };
    let err = client(stranger.clone()).get_job(get).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let cancel = pb::CancelJobRequest { id: job.id.clone() };
    let err = client(stranger).cancel_job(cancel).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // Cancelling needs WRITE_ONLINE, which the feature server's identity has.
    let cancel = pb::CancelJobRequest { id: job.id };
    client(online_server).cancel_job(cancel).await.unwrap();
}

/// Schedules run incremental jobs on their own (a per-view cron schedule firing every
/// second; the hourly global one, which would skip that view, not yet), and the metrics
/// endpoint reports the jobs, the rows and the view's freshness.
#[tokio::test]
async fn schedules_run_jobs_and_metrics_report_them() {
    use feast_materializer::schedule::{Cadence, Schedule};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let (mut manager, _) = job_manager(dir.path()).await;
    manager.metrics = Some(Arc::new(feast_materializer::metrics::Metrics::new()));
    let manager = Arc::new(manager);
    let schedules = manager.schedule_all(vec![
        Schedule {
            cadence: Cadence::parse("* * * * * *").unwrap(),
            views: vec!["stats".into()],
        },
        Schedule {
            cadence: Cadence::parse("1h").unwrap(),
            views: vec![],
        },
    ]);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let job = loop {
        let done = manager
            .jobs()
            .into_iter()
            .map(|j| j.to_proto())
            .find(|j| j.trigger == "schedule" && j.state() == pb::JobState::Succeeded);
        if let Some(job) = done {
            break job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no scheduled job succeeded within 10 s: {:?}",
            manager
                .jobs()
                .iter()
                .map(|j| j.to_proto())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job.kind, "incremental");
    let views: Vec<&str> = job.views.iter().map(|v| v.feature_view.as_str()).collect();
    assert_eq!(views, ["stats"]);
    for s in schedules {
        s.abort();
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(feast_materializer::service::serve_metrics(
        listener,
        manager.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("feast_materializer_jobs_total{state=\"succeeded\",trigger=\"schedule\"}"),
        "{text}"
    );
    assert!(
        text.contains("feast_materializer_rows_written_total{feature_view=\"stats\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("feast_materializer_view_duration_seconds_count{feature_view=\"stats\",state=\"succeeded\"}"),
        "{text}"
    );
    // The recorded interval ends about now: fresh to within a few seconds.
    let freshness: f64 = text
        .lines()
        .find(|l| {
            l.starts_with(
                "feast_feature_freshness_seconds{feature_view=\"stats\",project=\"jobs\"}",
            )
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no freshness of stats in {text}"));
    assert!((0.0..30.0).contains(&freshness), "{freshness}");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// `stats` as a stream feature view of the same batch source, and an on-demand view that
/// asks to be written online: the stream view materializes like a feature view (its rows,
/// its interval), the on-demand view is reported as skipped when every view is asked for
/// and refused by name.
#[tokio::test]
async fn stream_views_materialize_and_on_demand_views_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, online) = job_manager(dir.path()).await;
    let registry_path = dir.path().join("registry.db");
    let spec = view().spec.unwrap();
    let sfv = core::StreamFeatureView {
        spec: Some(core::StreamFeatureViewSpec {
            name: "stats_stream".into(),
            project: PROJECT.into(),
            entities: spec.entities.clone(),
            entity_columns: spec.entity_columns.clone(),
            features: spec.features.clone(),
            ttl: spec.ttl,
            batch_source: spec.batch_source.clone(),
            online: true,
            mode: "python".into(),
            ..Default::default()
        }),
        meta: None,
    };
    let odfv = core::OnDemandFeatureView {
        spec: Some(core::OnDemandFeatureViewSpec {
            name: "rate_doubled".into(),
            project: PROJECT.into(),
            write_to_online_store: true,
            ..Default::default()
        }),
        meta: None,
    };
    let registry = core::Registry {
        feature_views: vec![view()],
        stream_feature_views: vec![sfv],
        on_demand_feature_views: vec![odfv],
        ..Default::default()
    };
    std::fs::write(&registry_path, registry.encode_to_vec()).unwrap();
    online
        .update(PROJECT, &[TableRef::new(PROJECT, "stats_stream")], &[])
        .await
        .unwrap();
    let manager = Arc::new(manager);
    let call = |views: Vec<String>| feast_online::materialize::MaterializeCall {
        views,
        range: feast_online::materialize::Range::Between {
            start: chrono::DateTime::from_timestamp(T0 - 60, 0).unwrap(),
            end: chrono::DateTime::from_timestamp(T0 + 3600, 0).unwrap(),
        },
    };
    let trigger = feast_materializer::service::Trigger::Api(None);

    let job = manager.submit(call(vec![]), false, trigger).await.unwrap();
    job.wait().await;
    let job = job.to_proto();
    assert_eq!(job.state(), pb::JobState::Succeeded, "{job:?}");
    let mut views: Vec<&str> = job.views.iter().map(|v| v.feature_view.as_str()).collect();
    views.sort();
    assert_eq!(views, ["stats", "stats_stream"]);
    assert_eq!(job.skipped.len(), 1, "{job:?}");
    assert_eq!(job.skipped[0].feature_view, "rate_doubled");
    assert_eq!(job.skipped[0].kind, "on-demand feature view");
    assert!(
        job.skipped[0].reason.contains("write_to_online_store=True"),
        "{:?}",
        job.skipped[0]
    );

    let key = feast_online::serialize_entity_key(
        &EntityKey {
            join_keys: vec!["driver_id".into()],
            entity_values: vec![Value {
                val: Some(Val::Int64Val(1)),
            }],
        },
        3,
    )
    .unwrap();
    let rows = online
        .online_read(
            &TableRef::new(PROJECT, "stats_stream"),
            &[key],
            &["rate".to_string()],
        )
        .await
        .unwrap();
    assert_eq!(
        rows[0].as_ref().unwrap().values[0].as_ref().unwrap().val,
        Some(Val::DoubleVal(0.9))
    );
    let stored = core::Registry::decode(std::fs::read(&registry_path).unwrap().as_slice()).unwrap();
    let meta = stored.stream_feature_views[0].meta.as_ref().unwrap();
    assert_eq!(meta.materialization_intervals.len(), 1);
    assert_eq!(meta.materialization_intervals[0].end_time, ts(T0 + 3600));
    assert_eq!(meta.state, core::FeatureViewState::AvailableOnline as i32);

    // Named: the stream view alone runs; the on-demand view is refused, saying why.
    let job = manager
        .submit(call(vec!["stats_stream".into()]), false, trigger)
        .await
        .unwrap();
    job.wait().await;
    assert_eq!(job.state(), pb::JobState::Succeeded);
    let err = manager
        .submit(call(vec!["rate_doubled".into()]), false, trigger)
        .await
        .err()
        .expect("an on-demand view is refused by name");
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("cannot materialize on-demand feature view rate_doubled"),
        "{status:?}"
    );

    // A scheduled job of every view runs the stream view and reports the on-demand one.
    use feast_materializer::schedule::{Cadence, Schedule};
    let schedules = manager.schedule_all(vec![Schedule {
        cadence: Cadence::parse("* * * * * *").unwrap(),
        views: vec![],
    }]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let job = loop {
        let done = manager
            .jobs()
            .into_iter()
            .map(|j| j.to_proto())
            .find(|j| j.trigger == "schedule" && j.state() == pb::JobState::Succeeded);
        if let Some(job) = done {
            break job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no scheduled job succeeded within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for s in schedules {
        s.abort();
    }
    assert!(
        job.views.iter().any(|v| v.feature_view == "stats_stream"),
        "{job:?}"
    );
    let skipped: Vec<&str> = job
        .skipped
        .iter()
        .map(|s| s.feature_view.as_str())
        .collect();
    assert_eq!(skipped, ["rate_doubled"], "{job:?}");
}

/// On a file registry a job takes each view's lock file next to the registry: a view
/// another process holds is refused (naming the holder), unless forced; a scheduled job
/// leaves it to its holder.
#[tokio::test]
async fn views_locked_by_another_process_are_refused_unless_forced() {
    use feast_materializer::guard::{FileLocks, ViewLocks};
    use feast_materializer::service::{SubmitError, Trigger};

    let dir = tempfile::tempdir().unwrap();
    let (mut manager, _online) = job_manager(dir.path()).await;
    let registry_path = dir.path().join("registry.db");
    manager.locks = Some(ViewLocks::Files(FileLocks::next_to_registry(
        &registry_path,
        "feast-rs serve-materializer",
    )));
    let manager = Arc::new(manager);
    // Another holder of the lock (another open of the same lock file, as another process
    // would have).
    let other = ViewLocks::Files(FileLocks::next_to_registry(
        &registry_path,
        "feast-rs materialize",
    ));
    let (held, busy) = other.acquire(PROJECT, &["stats".to_owned()]).await;
    assert!(busy.is_empty());
    let call = || feast_online::materialize::MaterializeCall {
        views: vec![],
        range: feast_online::materialize::Range::Between {
            start: chrono::DateTime::from_timestamp(T0 - 60, 0).unwrap(),
            end: chrono::DateTime::from_timestamp(T0 + 10_000, 0).unwrap(),
        },
    };

    let err = manager
        .submit(call(), false, Trigger::Api(None))
        .await
        .err()
        .expect("a held view is refused");
    let SubmitError::Busy(busy) = &err else {
        panic!("{err}");
    };
    assert_eq!(busy[0].view, "stats");
    assert!(
        busy[0].holder.contains("(feast-rs materialize, since "),
        "{}",
        busy[0].holder
    );
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::AlreadyExists);
    assert!(
        status
            .message()
            .contains("stats (being materialized by pid ")
    );
    assert!(matches!(
        manager.submit(call(), false, Trigger::Schedule).await,
        Err(SubmitError::Busy(_))
    ));

    // Forced: it runs anyway.
    let job = manager
        .submit(call(), true, Trigger::Api(None))
        .await
        .unwrap();
    job.wait().await;
    assert_eq!(job.state(), pb::JobState::Succeeded);

    // Released: the next job takes the lock and holds it while it runs.
    held.release().await;
    let job = manager
        .submit(call(), false, Trigger::Api(None))
        .await
        .unwrap();
    job.wait().await;
    assert_eq!(job.state(), pb::JobState::Succeeded);
    let (again, busy) = other.acquire(PROJECT, &["stats".to_owned()]).await;
    assert_eq!(
        (again.views.len(), busy.len()),
        (1, 0),
        "the job released its lock"
    );
}
