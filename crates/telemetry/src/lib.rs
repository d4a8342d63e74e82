//! Telemetry shared by every feast-rs service and the CLI:
//!
//! - [`init`]: the process's tracing subscriber — logs on stderr as text, pretty text or JSON
//!   lines, filtered by a Feast-style level (or `RUST_LOG`) — and, when an OTLP endpoint is
//!   configured (`OTEL_EXPORTER_OTLP_ENDPOINT`), OpenTelemetry traces and metrics exported
//!   over OTLP/gRPC. The returned [`Telemetry`] guard flushes the exporters when dropped.
//! - [`TraceLayer`]: a tower layer for axum routers and tonic servers that continues the
//!   caller's W3C trace (`traceparent`/`tracestate`) and wraps each request in a server span.
//! - [`WithTraceContext`]: a tower service for tonic channels that opens a client span per
//!   call and sends its context; [`inject_headers`]/[`inject_metadata`] do the same for
//!   clients that set headers per call (the Flight client).
//!
//! Without an OTLP endpoint none of this creates spans: the layer and the client wrapper
//! check one atomic flag and pass the request through.

mod client;
mod metrics;
mod propagation;
mod server;

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use client::{WithTraceContext, client_span};
pub use propagation::{extract_headers, inject_headers, inject_metadata};
pub use server::{TraceLayer, TraceService, TracedBody, TracedFuture};

/// How log lines are written to stderr (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One line per event: time, level, target, fields (tracing-subscriber's default).
    #[default]
    Text,
    /// Multi-line, human-oriented output with source locations.
    Pretty,
    /// One JSON object per event (with the current span and its parents).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "pretty" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected text, pretty or json)"
            )),
        }
    }
}

/// What [`init`] sets up.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    /// Feast's log level names (`error`, `warning`, `info`, `debug`, `trace`, `critical`) or
    /// any `EnvFilter` directive. `RUST_LOG`, when set, wins.
    pub level: &'a str,
    pub format: LogFormat,
    /// `service.name` of exported telemetry unless `OTEL_SERVICE_NAME` says otherwise.
    pub service_name: &'a str,
}

/// Keeps the exporters alive; dropping it flushes and shuts them down (spans still queued
/// are sent, within the exporters' timeouts).
#[must_use = "dropping the guard shuts telemetry export down"]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
    /// The runtime the OTLP/gRPC channels run on, independent of the services' runtimes
    /// (the CLI creates and drops those per command).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn traces_enabled(&self) -> bool {
        self.tracer.is_some()
    }

    /// Whether metrics are exported.
    pub fn metrics_enabled(&self) -> bool {
        self.meter.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        TRACING.store(false, Ordering::Relaxed);
        if let Some(tracer) = self.tracer.take()
            && let Err(e) = tracer.shutdown()
        {
            eprintln!("feast-rs: flushing traces failed: {e}");
        }
        if let Some(meter) = self.meter.take()
            && let Err(e) = meter.shutdown()
        {
            eprintln!("feast-rs: flushing metrics failed: {e}");
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

static TRACING: AtomicBool = AtomicBool::new(false);

/// Whether request spans are being made (an OTLP trace exporter is installed). Checked by
/// [`TraceLayer`] and [`WithTraceContext`] on every request.
#[inline]
pub fn tracing_enabled() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// Feast's level names as `EnvFilter` directives.
pub fn level_directive(level: &str) -> String {
    match level.to_ascii_lowercase().as_str() {
        "warning" => "warn".to_owned(),
        "critical" | "fatal" => "error".to_owned(),
        other => other.to_owned(),
    }
}

/// The target of spans that only label log lines and are never exported: `feast-rs up`'s
/// `service` span, entered for good on every thread of a service's runtime, which would
/// otherwise be the never-ending parent of everything that service does.
pub const LOG_ONLY_TARGET: &str = "feast_rs::log_only";

/// What is exported to OpenTelemetry, whatever the log level: spans and span events at
/// INFO and above, never from the HTTP/gRPC stacks or the exporter itself (which would
/// otherwise trace its own exports), nor the log-only spans.
const OTEL_FILTER: &str = "info,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,\
                           opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,\
                           feast_rs::log_only=off";

/// Whether the current span is one OpenTelemetry traces (a request's, a job's): calls made
/// in it get client spans. Outside any span, or in a log-only one, calls are not traced.
pub(crate) fn in_traced_span() -> bool {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let span = tracing::Span::current();
    !span.is_disabled() && span.context().span().span_context().is_valid()
}

/// Installs the global tracing subscriber (once per process; later calls only return an
/// inert guard) and, when configured by the environment, the OTLP exporters.
///
/// Environment: `OTEL_SDK_DISABLED`, `OTEL_EXPORTER_OTLP_ENDPOINT` /
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` (export is
/// on when one is set), `OTEL_TRACES_EXPORTER` / `OTEL_METRICS_EXPORTER` (`none` turns one
/// off), `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, and the exporter's own
/// `OTEL_EXPORTER_OTLP_*` and `OTEL_BSP_*` / `OTEL_METRIC_EXPORT_INTERVAL` settings.
pub fn init(options: Options<'_>) -> Telemetry {
    let mut problems = Vec::new();
    let env = ExportEnv::from_env();
    let mut telemetry = Telemetry {
        tracer: None,
        meter: None,
        runtime: None,
    };
    if env.traces || env.metrics {
        match export_runtime() {
            Ok(runtime) => {
                let _entered = runtime.enter();
                let resource = resource(options.service_name);
                if env.traces {
                    match tracer_provider(resource.clone(), env.https) {
                        Ok(p) => telemetry.tracer = Some(p),
                        Err(e) => problems.push(format!("OTLP trace export is off: {e}")),
                    }
                }
                if env.metrics {
                    match meter_provider(resource, env.https) {
                        Ok(p) => telemetry.meter = Some(p),
                        Err(e) => problems.push(format!("OTLP metric export is off: {e}")),
                    }
                }
                telemetry.runtime = Some(runtime);
            }
            Err(e) => problems.push(format!("OTLP export is off: no runtime for it: {e}")),
        }
    }

    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(level_directive(options.level)));
    // Colours only for a person at a terminal: no escape codes in files, pipes and
    // container logs, nor with NO_COLOR set.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let fmt = match options.format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Pretty => fmt.pretty().boxed(),
        LogFormat::Json => fmt.json().boxed(),
    }
    .with_filter(filter);
    let otel = telemetry.tracer.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("feast-rs"))
            .with_filter(EnvFilter::new(OTEL_FILTER))
    });
    let installed = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .is_ok();
    if !installed {
        // A subscriber was already there (tests): export nothing from this one.
        return Telemetry {
            tracer: None,
            meter: None,
            runtime: telemetry.runtime.take(),
        };
    }
    if let Some(meter) = &telemetry.meter {
        opentelemetry::global::set_meter_provider(meter.clone());
        metrics::install();
    }
    if telemetry.tracer.is_some() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        TRACING.store(true, Ordering::Relaxed);
    }
    for problem in problems {
        tracing::warn!(message = %problem);
    }
    if let Some(protocol) = &env.protocol {
        tracing::warn!(
            message = "OTEL_EXPORTER_OTLP_PROTOCOL is not grpc: feast-rs exports OTLP over gRPC only",
            protocol = %protocol
        );
    }
    if telemetry.tracer.is_some() || telemetry.meter.is_some() {
        tracing::info!(
            message = "exporting OpenTelemetry over OTLP/gRPC",
            traces = telemetry.tracer.is_some(),
            metrics = telemetry.meter.is_some()
        );
    }
    telemetry
}

/// What the `OTEL_*` environment asks for.
struct ExportEnv {
    traces: bool,
    metrics: bool,
    /// An `https://` endpoint: TLS with the system's roots.
    https: bool,
    /// A protocol other than gRPC was asked for.
    protocol: Option<String>,
}

impl ExportEnv {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let common = var("OTEL_EXPORTER_OTLP_ENDPOINT");
        let endpoint = |signal: &str| var(signal).or_else(|| common.clone());
        let wanted =
            |exporter: &str| var(exporter).is_none_or(|v| v.split(',').any(|e| e.trim() == "otlp"));
        let traces_endpoint = endpoint("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let metrics_endpoint = endpoint("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
        let traces = !disabled && traces_endpoint.is_some() && wanted("OTEL_TRACES_EXPORTER");
        let metrics = !disabled && metrics_endpoint.is_some() && wanted("OTEL_METRICS_EXPORTER");
        let https = [traces_endpoint, metrics_endpoint]
            .iter()
            .flatten()
            .any(|e| e.trim().to_ascii_lowercase().starts_with("https:"));
        let protocol = var("OTEL_EXPORTER_OTLP_PROTOCOL").filter(|p| p.trim() != "grpc");
        Self {
            traces,
            metrics,
            https,
            protocol: protocol.filter(|_| traces || metrics),
        }
    }
}

fn export_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()
}

fn resource(default_name: &str) -> Resource {
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| default_name.to_owned());
    Resource::builder()
        .with_service_name(name)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

fn tls() -> tonic::transport::ClientTlsConfig {
    tonic::transport::ClientTlsConfig::new().with_enabled_roots()
}

fn tracer_provider(
    resource: Resource,
    https: bool,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_protocol(opentelemetry_otlp::Protocol::Grpc);
    if https {
        builder = builder.with_tls_config(tls());
    }
    let exporter = builder.build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

fn meter_provider(
    resource: Resource,
    https: bool,
) -> Result<SdkMeterProvider, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
    let mut builder = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_protocol(opentelemetry_otlp::Protocol::Grpc);
    if https {
        builder = builder.with_tls_config(tls());
    }
    let exporter = builder.build()?;
    Ok(SdkMeterProvider::builder()
        .with_periodic_exporter(exporter)
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feast_level_names() {
        assert_eq!(level_directive("WARNING"), "warn");
        assert_eq!(level_directive("critical"), "error");
        assert_eq!(level_directive("debug"), "debug");
        assert_eq!(
            level_directive("feast_online=debug,info"),
            "feast_online=debug,info"
        );
    }

    #[test]
    fn log_formats() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("pretty".parse::<LogFormat>(), Ok(LogFormat::Pretty));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
