//! Distributed tracing end to end: `feast-rs serve-registry`, `feast-rs serve-offline` and
//! `feast-rs serve` (`registry_type: remote` pointing at the first, `offline_store: remote`
//! at the second) run as child processes exporting OTLP to a loopback collector (the OTLP
//! TraceService and MetricsService as a tonic server). One HTTP request with a known
//! `traceparent` to `/materialize-incremental` — which pulls from the offline server
//! (Flight `DoExchange`) and records the interval in the registry server
//! (`ApplyMaterialization`) — must come out as one trace: the feature server's span is the
//! child of the caller's, and each callee's server span is the child of a client span of
//! the feature server that descends from the feature server's request span.

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::Server;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
}

/// The attributes of one data point.
type Point = HashMap<String, String>;

/// What the loopback collector received.
#[derive(Default)]
struct Received {
    spans: Vec<Exported>,
    /// (service.name, metric name, the data points' attribute sets)
    metrics: Vec<(String, String, Vec<Point>)>,
}

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Received>>);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

fn service_name(resource: &Option<opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    resource
        .as_ref()
        .map(|r| attributes(&r.attributes))
        .and_then(|a| a.get("service.name").cloned())
        .unwrap_or_default()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for resource_spans in request.into_inner().resource_spans {
            let service = service_name(&resource_spans.resource);
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.spans.push(Exported {
                        service: service.clone(),
                        name: span.name,
                        kind: span.kind,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        attributes: attributes(&span.attributes),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        use opentelemetry_proto::tonic::metrics::v1::metric::Data;
        let mut received = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for resource_metrics in request.into_inner().resource_metrics {
            let service = service_name(&resource_metrics.resource);
            for scope in resource_metrics.scope_metrics {
                for metric in scope.metrics {
                    let points = match &metric.data {
                        Some(Data::Histogram(h)) => h
                            .data_points
                            .iter()
                            .map(|p| attributes(&p.attributes))
                            .collect(),
                        _ => vec![],
                    };
                    received
                        .metrics
                        .push((service.clone(), metric.name, points));
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// `feast-rs -c REPO ARGS` exporting to the collector at `otlp` quickly.
fn start_exporting(args: &[&str], repo: &Path, otlp: &str) -> Server {
    let mut cmd = common::feast_rs();
    cmd.arg("-c")
        .arg(repo)
        .args(args)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "200")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_TRACES_EXPORTER")
        .env_remove("OTEL_METRICS_EXPORTER")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
    Server::spawn(cmd)
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn feast_rs_ok(args: &[&str], cwd: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_feast-rs"))
        .args(args)
        .current_dir(cwd)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .expect("run feast-rs");
    assert!(
        out.status.success(),
        "feast-rs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Waits until `found` finds what it looks for in what the collector received.
fn wait_for<T>(collector: &Collector, what: &str, found: impl Fn(&Received) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(t) = found(&collector.0.lock().unwrap()) {
            return t;
        }
        if Instant::now() > deadline {
            let received = collector.0.lock().unwrap();
            let spans: Vec<String> = received
                .spans
                .iter()
                .map(|s| {
                    format!(
                        "{} {} kind={} trace={} span={} parent={}",
                        s.service, s.name, s.kind, s.trace_id, s.span_id, s.parent_span_id
                    )
                })
                .collect();
            panic!(
                "no {what} within 20 s; spans received:\n{}",
                spans.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The loopback collector, on its own runtime (kept alive by the caller); its endpoint.
fn start_collector() -> (Collector, String, tokio::runtime::Runtime) {
    let collector = Collector::default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .add_service(MetricsServiceServer::new(collector.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (collector, otlp, runtime)
}

#[test]
fn one_trace_across_the_feature_registry_and_offline_servers() {
    let (collector, otlp, _runtime) = start_collector();

    // The demo repository, applied through a registry server.
    let dir = tempfile::tempdir().unwrap();
    let server_repo = dir.path().join("registry");
    std::fs::create_dir_all(&server_repo).unwrap();
    std::fs::write(
        server_repo.join("feature_store.yaml"),
        "project: demo_proj\nregistry: data/registry.db\n",
    )
    .unwrap();
    let registry = start_exporting(&["serve-registry"], &server_repo, &otlp);
    feast_rs_ok(&["init", "demo_proj"], dir.path());
    let repo = dir.path().join("demo_proj").join("feature_repo");
    let config = std::fs::read_to_string(repo.join("feature_store.yaml"))
        .unwrap()
        .replace(
            "registry: data/registry.db",
            &format!(
                "registry:\n  registry_type: remote\n  path: 127.0.0.1:{}",
                registry.port
            ),
        );
    std::fs::write(repo.join("feature_store.yaml"), config).unwrap();
    feast_rs_ok(&["-c", repo.to_str().unwrap(), "apply"], dir.path());
    // The offline server reads the repository's files; the feature server then pulls
    // through it.
    let offline = start_exporting(&["serve-offline"], &repo, &otlp);
    let config = std::fs::read_to_string(repo.join("feature_store.yaml"))
        .unwrap()
        .replace(
            "offline_store:\n  type: file",
            &format!(
                "offline_store:\n  type: remote\n  host: 127.0.0.1\n  port: {}",
                offline.port
            ),
        );
    assert!(config.contains("type: remote\n  host"), "{config}");
    std::fs::write(repo.join("feature_store.yaml"), config).unwrap();

    let online = start_exporting(&["serve"], &repo, &otlp);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(online.port, "GET", "/health", &[], "").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the feature server never got ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01");
    let (status, body) = http(
        online.port,
        "POST",
        "/materialize-incremental",
        &[("traceparent", &traceparent)],
        r#"{"end_ts": "2030-01-01T00:00:00", "feature_views": ["driver_hourly_stats"]}"#,
    );
    assert_eq!(status, 200, "{body}");

    // The feature server's span continues the caller's trace.
    let request_span = wait_for(&collector, "feature-server request span", |r| {
        r.spans
            .iter()
            .find(|s| s.service == "feast-rs-online" && s.name == "POST /materialize-incremental")
            .cloned()
    });
    assert_eq!(request_span.kind, SpanKind::Server as i32);
    assert_eq!(request_span.trace_id, TRACE_ID);
    assert_eq!(request_span.parent_span_id, CALLER_SPAN_ID);
    assert_eq!(request_span.attributes["http.request.method"], "POST");
    assert_eq!(request_span.attributes["http.response.status_code"], "200");

    // The registry server's span for the RPC, and the offline server's for the pull, are in
    // the same trace, each the child of a client span of the feature server.
    callee_span(
        &collector,
        &request_span,
        "feast-rs-registry",
        "feast.registry.RegistryServer/ApplyMaterialization",
    );
    callee_span(
        &collector,
        &request_span,
        "feast-rs-offline",
        "arrow.flight.protocol.FlightService/DoExchange",
    );

    // Every span of the trace hangs off the caller's: one trace, no orphans.
    let received = collector.0.lock().unwrap();
    let in_trace: Vec<&Exported> = received
        .spans
        .iter()
        .filter(|s| s.trace_id == TRACE_ID)
        .collect();
    for span in &in_trace {
        assert!(
            span.parent_span_id == CALLER_SPAN_ID
                || in_trace.iter().any(|p| p.span_id == span.parent_span_id),
            "{} {} has a parent outside the trace",
            span.service,
            span.name
        );
    }
    drop(received);

    // Both servers export their request durations as OTLP metrics.
    wait_for(
        &collector,
        "the registry server's rpc.server.call.duration",
        |r| {
            r.metrics.iter().find(|(service, name, points)| {
                service == "feast-rs-registry"
                    && name == "rpc.server.call.duration"
                    && points.iter().any(|p| {
                        p.get("rpc.method").map(String::as_str) == Some("ApplyMaterialization")
                            && p.get("rpc.grpc.status_code").map(String::as_str) == Some("0")
                    })
            })?;
            Some(())
        },
    );
    wait_for(
        &collector,
        "the feature server's http.server.request.duration",
        |r| {
            r.metrics.iter().find(|(service, name, points)| {
                service == "feast-rs-online"
                    && name == "http.server.request.duration"
                    && points.iter().any(|p| {
                        p.get("http.route").map(String::as_str) == Some("/materialize-incremental")
                            && p.get("http.response.status_code").map(String::as_str) == Some("200")
                    })
            })?;
            Some(())
        },
    );
    drop(online);
    drop(offline);
    drop(registry);
}

/// The server span of `rpc` in `service`, in the test's trace, whose parent is a client
/// span of the feature server named after the same method, below `request_span`.
fn callee_span(collector: &Collector, request_span: &Exported, service: &str, rpc: &str) {
    let callee = wait_for(collector, &format!("{service} span of {rpc}"), |r| {
        r.spans
            .iter()
            .find(|s| s.service == service && s.name == rpc && s.trace_id == TRACE_ID)
            .cloned()
    });
    assert_eq!(callee.kind, SpanKind::Server as i32);
    assert_eq!(callee.attributes["rpc.system"], "grpc");
    assert_eq!(callee.attributes["rpc.grpc.status_code"], "0");
    let (client, chain) = wait_for(collector, &format!("the client span of {rpc}"), |r| {
        let client = r
            .spans
            .iter()
            .find(|s| s.span_id == callee.parent_span_id)?
            .clone();
        // Walk up from the client span to the request span, within the feature server.
        let mut chain = vec![client.name.clone()];
        let mut at = client.clone();
        while at.span_id != request_span.span_id {
            at = r
                .spans
                .iter()
                .find(|s| s.span_id == at.parent_span_id)?
                .clone();
            assert_eq!(at.service, "feast-rs-online", "{chain:?}");
            chain.push(at.name.clone());
        }
        Some((client, chain))
    });
    assert_eq!(client.service, "feast-rs-online", "{chain:?}");
    assert_eq!(client.kind, SpanKind::Client as i32, "{chain:?}");
    assert_eq!(client.name, rpc);
    assert_eq!(client.trace_id, TRACE_ID);
}

/// `feast-rs up` runs the four services in one process, each on threads whose log lines
/// carry a `service` span; that span is for logs only. A request with a `traceparent` is
/// still one trace through the feature server, the materializer, the offline server and
/// the registry, and nothing the services do hangs off a span that is never exported.
#[test]
fn up_traces_a_request_across_its_four_services() {
    let (collector, otlp, _runtime) = start_collector();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_feast-rs"))
        .args([
            "up",
            "--no-demo",
            "--registry-port",
            "0",
            "--online-port",
            "0",
        ])
        .args(["--offline-port", "0", "--materializer-port", "0"])
        .current_dir(dir.path())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_TRACES_EXPORTER")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start feast-rs up");
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut online_port = None;
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(rest) = line.trim_start().strip_prefix("online")
            && let Some(url) = rest.split_whitespace().next()
        {
            online_port = url.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
        }
        if line.contains("Press Ctrl-C to stop.") {
            break;
        }
    }
    let stop = Server {
        child,
        port: online_port.expect("the online endpoint in feast-rs up's table"),
    };

    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01");
    let (status, body) = http(
        stop.port,
        "POST",
        "/materialize-incremental",
        &[("traceparent", &traceparent)],
        r#"{"end_ts": "2030-01-01T00:00:00", "feature_views": ["driver_hourly_stats"]}"#,
    );
    assert_eq!(status, 200, "{body}");

    // The server spans of the four services, all in the caller's trace, none orphaned.
    let expected = [
        "POST /materialize-incremental",
        "feast_rs.materializer.v1.Materializer/MaterializeIncremental",
        "arrow.flight.protocol.FlightService/DoExchange",
        "feast.registry.RegistryServer/ApplyMaterialization",
    ];
    wait_for(&collector, "the four services' spans in one trace", |r| {
        let in_trace: Vec<&Exported> = r.spans.iter().filter(|s| s.trace_id == TRACE_ID).collect();
        let all_there = expected.iter().all(|name| {
            in_trace
                .iter()
                .any(|s| s.name == *name && s.kind == SpanKind::Server as i32)
        });
        let connected = in_trace.iter().all(|span| {
            span.parent_span_id == CALLER_SPAN_ID
                || in_trace.iter().any(|p| p.span_id == span.parent_span_id)
        });
        (all_there && connected).then_some(())
    });
    // Every exported span is a root or the child of an exported span (or of the caller):
    // nothing hangs off the log-only `service` spans.
    let received = collector.0.lock().unwrap();
    for span in &received.spans {
        assert_eq!(span.service, "feast-rs");
        assert!(
            span.parent_span_id.is_empty()
                || span.parent_span_id == CALLER_SPAN_ID
                || received
                    .spans
                    .iter()
                    .any(|p| p.span_id == span.parent_span_id),
            "{} (trace {}) has a parent that was never exported",
            span.name,
            span.trace_id
        );
    }
    drop(received);
    drop(stop);
}
