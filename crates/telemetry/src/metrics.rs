//! OTLP metrics recorded by [`crate::TraceLayer`]: the duration of every request a server
//! answers, by route (HTTP) or method (gRPC) and outcome, under the OpenTelemetry semantic
//! conventions' names. Installed by [`crate::init`] when metric export is on; until then
//! recording is a no-op.

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Histogram;

struct Instruments {
    http_server: Histogram<f64>,
    rpc_server: Histogram<f64>,
}

static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();

/// Latency buckets in seconds, from 0.1 ms (the feature server's cached reads) to 10 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

pub(crate) fn install() {
    let meter = opentelemetry::global::meter("feast-rs");
    let _ = INSTRUMENTS.set(Instruments {
        http_server: meter
            .f64_histogram("http.server.request.duration")
            .with_unit("s")
            .with_description("Duration of HTTP server requests")
            .with_boundaries(BUCKETS.to_vec())
            .build(),
        rpc_server: meter
            .f64_histogram("rpc.server.call.duration")
            .with_unit("s")
            .with_description("Duration of gRPC calls served")
            .with_boundaries(BUCKETS.to_vec())
            .build(),
    });
}

/// Whether server requests are measured.
#[inline]
pub(crate) fn enabled() -> bool {
    INSTRUMENTS.get().is_some()
}

pub(crate) fn http_server(seconds: f64, method: &str, route: &str, status: Option<u16>) {
    let Some(i) = INSTRUMENTS.get() else { return };
    // Unknown paths would give every scanner's URL its own time series.
    let route = if status == Some(404) {
        "(unmatched)"
    } else {
        route
    };
    let mut attributes = vec![
        KeyValue::new("http.request.method", method.to_owned()),
        KeyValue::new("http.route", route.to_owned()),
    ];
    if let Some(status) = status {
        attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
    }
    i.http_server.record(seconds, &attributes);
}

pub(crate) fn rpc_server(seconds: f64, service: &str, method: &str, status: Option<i32>) {
    let Some(i) = INSTRUMENTS.get() else { return };
    // UNIMPLEMENTED: a method nobody serves, named by the caller.
    let (service, method) = if status == Some(12) {
        ("(unknown)", "(unknown)")
    } else {
        (service, method)
    };
    let mut attributes = vec![
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.service", service.to_owned()),
        KeyValue::new("rpc.method", method.to_owned()),
    ];
    if let Some(code) = status {
        attributes.push(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
    }
    i.rpc_server.record(seconds, &attributes);
}
