//! `feast-rs up` end to end: the four services start in one process on the driver demo,
//! the demo materializes and prints real features, each service answers its own
//! protocol (HTTP, gRPC, Arrow Flight) from outside the process, and SIGTERM stops the
//! process cleanly after letting a request that was in flight finish.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

/// `feast-rs up` on free ports, with its stdout read line by line.
struct Up {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: String,
}

impl Up {
    fn start(dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_feast-rs"))
            .args([
                "up",
                "--registry-port",
                "0",
                "--online-port",
                "0",
                "--offline-port",
                "0",
                "--materializer-port",
                "0",
            ])
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start feast-rs up");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Up {
            child,
            lines,
            stdout: String::new(),
        }
    }

    /// Reads stdout until a line contains `marker`; panics (with what was printed) after
    /// `timeout` or when the process exits first.
    fn wait_for(&mut self, marker: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stdout.push_str(&line);
                    self.stdout.push('\n');
                    if line.contains(marker) {
                        return;
                    }
                }
                Err(e) => panic!(
                    "no `{marker}` from feast-rs up ({e:?}); status {:?}; stdout so far:\n{}",
                    self.child.try_wait(),
                    self.stdout
                ),
            }
        }
    }

    /// service name -> `host:port`, from the endpoint table printed once up.
    fn endpoints(&self) -> HashMap<String, String> {
        self.stdout
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let (name, url) = (words.next()?, words.next()?);
                let (_, authority) = url.split_once("://")?;
                Some((name.to_owned(), authority.to_owned()))
            })
            .filter(|(name, _)| {
                ["registry", "online", "offline", "materializer"].contains(&name.as_str())
            })
            .collect()
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn online_request(drivers: &[i64]) -> String {
    serde_json::json!({
        "features": ["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"],
        "entities": {"driver_id": drivers},
    })
    .to_string()
}

/// Reads one HTTP/1.1 response (the server closes the connection after it).
fn read_response(stream: &mut TcpStream) -> (u16, serde_json::Value) {
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or_default())
}

/// One POST with `Connection: close`.
fn http_post(authority: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(authority).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    read_response(&mut stream)
}

fn assert_present(body: &serde_json::Value, drivers: usize) {
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 3, "{body}");
    for column in &results[1..] {
        let statuses = column["statuses"].as_array().unwrap();
        assert_eq!(statuses.len(), drivers, "{body}");
        assert!(statuses.iter().all(|s| s == "PRESENT"), "{body}");
    }
}

#[test]
fn up_serves_the_demo_over_every_protocol_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = Up::start(dir.path());
    up.wait_for("Press Ctrl-C to stop.", Duration::from_secs(180));

    // The main job's own output: a materializer job, features over HTTP and gRPC, and a
    // training frame over Flight.
    let out = up.stdout.clone();
    assert!(
        dir.path()
            .join("demo/feature_repo/data/registry.db")
            .exists()
    );
    assert!(
        out.contains("Created feature view driver_hourly_stats"),
        "{out}"
    );
    assert!(out.contains("Materializer job "), "{out}");
    assert!(out.contains("succeeded"), "{out}");
    for section in [
        "Online features over HTTP",
        "Online features over gRPC",
        "Training frame over Arrow Flight",
    ] {
        assert!(out.contains(section), "{section} missing:\n{out}");
    }
    assert!(out.contains("conv_rate"), "{out}");
    let endpoints = up.endpoints();
    assert_eq!(endpoints.len(), 4, "{endpoints:?}\n{out}");

    // HTTP, from outside the process.
    let online = &endpoints["online"];
    let body = online_request(&[1004, 1005]);
    let mut stream = TcpStream::connect(online).unwrap();
    write!(
        stream,
        "POST /get-online-features HTTP/1.1\r\nHost: {online}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let (status, json) = read_response(&mut stream);
    assert_eq!(status, 200, "{json}");
    assert_present(&json, 2);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // gRPC on the feature server's port.
        use feast_proto::serving::get_online_features_request::Kind;
        use feast_proto::serving::serving_service_client::ServingServiceClient;
        use feast_proto::serving::{FeatureList, FieldStatus, GetOnlineFeaturesRequest};
        use feast_proto::types::{RepeatedValue, Value, value::Val};
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{online}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let response = ServingServiceClient::new(channel)
            .get_online_features(GetOnlineFeaturesRequest {
                kind: Some(Kind::Features(FeatureList {
                    val: vec!["driver_hourly_stats:acc_rate".into()],
                })),
                entities: [(
                    "driver_id".to_owned(),
                    RepeatedValue {
                        val: vec![Value {
                            val: Some(Val::Int64Val(1001)),
                        }],
                    },
                )]
                .into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.results[1].statuses, [FieldStatus::Present as i32]);
        assert!(matches!(
            response.results[1].values[0].val,
            Some(Val::FloatVal(_))
        ));

        // The registry server, as `registry_type: remote` reads it.
        let registry = feast_registry::RemoteRegistry::connect(&feast_registry::RemoteOptions {
            target: endpoints["registry"].clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        let catalog = registry.load_project("demo").await.unwrap();

        // Arrow Flight: a point-in-time join on the offline server.
        use arrow_array::{Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
        use arrow_schema::{DataType, Field, Schema, TimeUnit};
        use feast_offline::{
            EntityTable, FeatureSelection, FlightOfflineClient, HistoricalRequest, OfflineStore,
        };
        use futures::StreamExt;
        let (host, port) = endpoints["offline"].rsplit_once(':').unwrap();
        let config = serde_json::from_value(
            serde_json::json!({"host": host, "port": port.parse::<u16>().unwrap()}),
        )
        .unwrap();
        let client = FlightOfflineClient::new(&config, None).unwrap();
        // Driver ids, each at `at` (µs since the epoch, UTC).
        let entities = |ids: Vec<i64>, at: i64| {
            let utc: Option<std::sync::Arc<str>> = Some("UTC".into());
            let schema = std::sync::Arc::new(Schema::new(vec![
                Field::new("driver_id", DataType::Int64, false),
                Field::new(
                    "event_timestamp",
                    DataType::Timestamp(TimeUnit::Microsecond, utc.clone()),
                    false,
                ),
            ]));
            let times = vec![at; ids.len()];
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    std::sync::Arc::new(Int64Array::from(ids)),
                    std::sync::Arc::new(
                        TimestampMicrosecondArray::from(times).with_timezone_opt(utc),
                    ),
                ],
            )
            .unwrap();
            EntityTable::new(schema, vec![batch])
        };
        let now = chrono::Utc::now().timestamp_micros();
        let mut stream = client
            .get_historical_features(
                &catalog,
                "demo",
                entities(vec![1001, 1002, 9999], now),
                &HistoricalRequest {
                    features: FeatureSelection::Refs(vec!["driver_hourly_stats:conv_rate".into()]),
                    full_feature_names: false,
                },
            )
            .await
            .unwrap();
        let mut rows = 0;
        let mut nulls = 0;
        while let Some(batch) = stream.next().await {
            let batch = batch.unwrap();
            rows += batch.num_rows();
            nulls += batch.column_by_name("conv_rate").unwrap().null_count();
        }
        assert_eq!((rows, nulls), (3, 1), "driver 9999 has no stats");

        // A push to the online and the offline store: the feature server writes the row
        // online and appends it to the batch source through the offline server, so the
        // next point-in-time join sees it.
        let pushed_at = chrono::Utc::now();
        let push = serde_json::json!({
            "push_source_name": "driver_stats_push_source",
            "to": "online_and_offline",
            "df": {
                "driver_id": [1005],
                "conv_rate": [0.125],
                "acc_rate": [0.5],
                "avg_daily_trips": [7],
                "event_timestamp": [pushed_at.to_rfc3339()],
                "created": [pushed_at.to_rfc3339()],
            },
        })
        .to_string();
        let (status, body) = http_post(online, "/push", &push);
        assert_eq!(status, 200, "{body}");
        let later = (pushed_at + chrono::TimeDelta::seconds(1)).timestamp_micros();
        let mut stream = client
            .get_historical_features(
                &catalog,
                "demo",
                entities(vec![1005], later),
                &HistoricalRequest {
                    features: FeatureSelection::Refs(vec![
                        "driver_hourly_stats:conv_rate".into(),
                        "driver_hourly_stats:avg_daily_trips".into(),
                    ]),
                    full_feature_names: false,
                },
            )
            .await
            .unwrap();
        let batch = stream.next().await.unwrap().unwrap();
        let conv = batch.column_by_name("conv_rate").unwrap();
        let conv = conv
            .as_any()
            .downcast_ref::<arrow_array::Float32Array>()
            .unwrap();
        assert_eq!(conv.value(0), 0.125, "{batch:?}");
        // Online, the push reached the view the push source feeds.
        let fresh = serde_json::json!({
            "features": ["driver_hourly_stats_fresh:conv_rate"],
            "entities": {"driver_id": [1005]},
        })
        .to_string();
        let (status, json) = http_post(online, "/get-online-features", &fresh);
        assert_eq!(status, 200);
        assert_eq!(json["results"][1]["values"][0], 0.125, "{json}");
    });

    // Graceful shutdown: a request whose body is still arriving when SIGTERM comes is
    // answered, then the process exits 0 within the deadline.
    let body = online_request(&[1001, 1002, 1003]);
    let (first, rest) = body.split_at(body.len() / 2);
    let mut stream = TcpStream::connect(online).unwrap();
    write!(
        stream,
        "POST /get-online-features HTTP/1.1\r\nHost: {online}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{first}",
        body.len()
    )
    .unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let terminated = Instant::now();
    up.terminate();
    std::thread::sleep(Duration::from_millis(500));
    stream.write_all(rest.as_bytes()).unwrap();
    let (status, json) = read_response(&mut stream);
    assert_eq!(status, 200, "the in-flight request was dropped: {json}");
    assert_present(&json, 3);

    let status = loop {
        if let Some(status) = up.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            terminated.elapsed() < Duration::from_secs(15),
            "feast-rs up did not stop within 15 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    up.wait_for("feast-rs stopped.", Duration::from_secs(5));
    assert!(status.success(), "{status:?}\n{}", up.stdout);
}

#[test]
fn up_refuses_a_registry_server_as_its_registry() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("feature_store.yaml"),
        "project: p\nregistry:\n  registry_type: remote\n  path: 127.0.0.1:1\nprovider: local\n\
         online_store:\n  type: sqlite\n  path: online.db\nentity_key_serialization_version: 3\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_feast-rs"))
        .args(["up", "--no-demo"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("runs its own registry server"), "{stderr}");
}

/// `serve-materializer` stopping with a job in flight: the job (stuck on an offline server
/// that accepts connections but never answers) is cancelled, the process exits 0 promptly,
/// and the view records no materialization interval, so the next incremental run redoes
/// the window.
#[test]
fn materializer_shutdown_cancels_running_jobs_and_records_nothing() {
    use feast_proto::feast_rs::materializer::v1 as pb;
    let dir = tempfile::tempdir().unwrap();
    let init = Command::new(env!("CARGO_BIN_EXE_feast-rs"))
        .args(["init", "stalled"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(init.status.success());
    let repo = dir.path().join("stalled/feature_repo");
    // An offline server that takes connections and never says anything.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let yaml = std::fs::read_to_string(repo.join("feature_store.yaml"))
        .unwrap()
        .replace(
            "offline_store:\n  type: file\n",
            &format!(
                "offline_store:\n  type: remote\n  host: 127.0.0.1\n  port: {}\n",
                silent.local_addr().unwrap().port()
            ),
        );
    assert!(yaml.contains("type: remote"), "{yaml}");
    std::fs::write(repo.join("feature_store.yaml"), yaml).unwrap();
    let apply = Command::new(env!("CARGO_BIN_EXE_feast-rs"))
        .args(["apply"])
        .current_dir(&repo)
        .output()
        .unwrap();
    assert!(
        apply.status.success(),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );

    let server = common::Server::start(&repo, "serve-materializer");
    let port = server.port;

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let job = runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = pb::materializer_client::MaterializerClient::new(channel);
        let now = chrono::Utc::now().timestamp();
        let job = client
            .materialize_incremental(pb::MaterializeIncrementalRequest {
                end: Some(prost_types::Timestamp {
                    seconds: now,
                    nanos: 0,
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let job = client
            .get_job(pb::GetJobRequest { id: job.id })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(job.state(), pb::JobState::Running, "{job:?}");
        job
    });
    assert!(!job.views.is_empty());

    let terminated = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut server = server;
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            terminated.elapsed() < Duration::from_secs(10),
            "serve-materializer did not stop within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");

    let described = Command::new(env!("CARGO_BIN_EXE_feast-rs"))
        .args([
            "feature-views",
            "describe",
            "driver_hourly_stats",
            "-o",
            "json",
        ])
        .current_dir(&repo)
        .output()
        .unwrap();
    let described = String::from_utf8_lossy(&described.stdout);
    assert!(described.contains("driver_hourly_stats"), "{described}");
    assert!(
        !described.contains("materializationIntervals"),
        "a cancelled job recorded an interval: {described}"
    );
    drop(silent);
}
