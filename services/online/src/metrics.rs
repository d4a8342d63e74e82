//! Prometheus metrics of the feature server, under Feast's metric names and labels (its
//! `feast/metrics.py`), so dashboards built for `feast serve --metrics` keep working. Served
//! as text at `GET /metrics` when the server runs with `--metrics`; without it nothing is
//! recorded.
//!
//! | Metric | Labels |
//! |---|---|
//! | `feast_feature_server_request_total` | `endpoint`, `status` (`success` / `error`) |
//! | `feast_feature_server_request_latency_seconds` | `endpoint`, `feature_count`, `feature_view_count` |
//! | `feast_online_features_request_total` | |
//! | `feast_online_features_entity_count` | |
//! | `feast_online_features_status_total` | `feature_view`, `status` (`present` / `not_found`) |
//! | `feast_feature_server_online_store_read_duration_seconds` | |
//! | `feast_push_request_total` | `push_source`, `mode` |
//! | `feast_feature_freshness_seconds` | `feature_view`, `project` (set at scrape time) |
//!
//! `endpoint` is the HTTP path (`/get-online-features`, ...) or the gRPC method path
//! (`/feast.serving.ServingService/GetOnlineFeatures`, ...).

use std::time::{Duration, SystemTime};

use feast_core::registry::Catalog;
use feast_proto::core;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
    Registry, TextEncoder,
};

/// The feature server's metrics, registered in their own registry.
pub struct Metrics {
    registry: Registry,
    request_total: IntCounterVec,
    request_latency: HistogramVec,
    online_requests: IntCounter,
    entity_count: Histogram,
    status_total: IntCounterVec,
    store_read: Histogram,
    push_total: IntCounterVec,
    freshness: GaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Only fails on invalid names or duplicate registration, both fixed at compile time here.
    r.expect("static metric definitions are valid")
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let request_total = must(IntCounterVec::new(
            Opts::new(
                "feast_feature_server_request_total",
                "Total number of requests to the Feast feature server",
            ),
            &["endpoint", "status"],
        ));
        let request_latency = must(HistogramVec::new(
            HistogramOpts::new(
                "feast_feature_server_request_latency_seconds",
                "Latency of requests to the Feast feature server in seconds",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["endpoint", "feature_count", "feature_view_count"],
        ));
        let online_requests = must(IntCounter::new(
            "feast_online_features_request_total",
            "Total online feature retrieval requests",
        ));
        let entity_count = must(Histogram::with_opts(
            HistogramOpts::new(
                "feast_online_features_entity_count",
                "Number of entity rows per online feature request",
            )
            .buckets(vec![
                1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0,
            ]),
        ));
        let status_total = must(IntCounterVec::new(
            Opts::new(
                "feast_online_features_status_total",
                "Count of individual feature values by retrieval status per feature view",
            ),
            &["feature_view", "status"],
        ));
        let store_read = must(Histogram::with_opts(
            HistogramOpts::new(
                "feast_feature_server_online_store_read_duration_seconds",
                "Duration of the online store read phase in seconds",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                5.0, 10.0,
            ]),
        ));
        let push_total = must(IntCounterVec::new(
            Opts::new(
                "feast_push_request_total",
                "Total push requests to the feature store",
            ),
            &["push_source", "mode"],
        ));
        let freshness = must(GaugeVec::new(
            Opts::new(
                "feast_feature_freshness_seconds",
                "Seconds since the most recent materialization end time per feature view",
            ),
            &["feature_view", "project"],
        ));
        for c in [
            Box::new(request_total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_latency.clone()),
            Box::new(online_requests.clone()),
            Box::new(entity_count.clone()),
            Box::new(status_total.clone()),
            Box::new(store_read.clone()),
            Box::new(push_total.clone()),
            Box::new(freshness.clone()),
        ] {
            must(registry.register(c));
        }
        Metrics {
            registry,
            request_total,
            request_latency,
            online_requests,
            entity_count,
            status_total,
            store_read,
            push_total,
            freshness,
        }
    }

    /// One finished request.
    pub fn request(
        &self,
        endpoint: &str,
        ok: bool,
        elapsed: Duration,
        feature_count: usize,
        view_count: usize,
    ) {
        let status = if ok { "success" } else { "error" };
        self.request_total
            .with_label_values(&[endpoint, status])
            .inc();
        let (fc, vc) = if feature_count == 0 && view_count == 0 {
            (String::new(), String::new())
        } else {
            (feature_count.to_string(), view_count.to_string())
        };
        self.request_latency
            .with_label_values(&[endpoint, &fc, &vc])
            .observe(elapsed.as_secs_f64());
    }

    /// One `get_online_features` request's entity rows and store read time.
    pub fn online_read(&self, entity_rows: usize, store_read: Duration) {
        self.online_requests.inc();
        self.entity_count.observe(entity_rows as f64);
        self.store_read.observe(store_read.as_secs_f64());
    }

    /// Values served for one view, by status.
    pub fn statuses(&self, view: &str, present: u64, not_found: u64) {
        if present > 0 {
            self.status_total
                .with_label_values(&[view, "present"])
                .inc_by(present);
        }
        if not_found > 0 {
            self.status_total
                .with_label_values(&[view, "not_found"])
                .inc_by(not_found);
        }
    }

    pub fn push(&self, push_source: &str, mode: &str) {
        self.push_total
            .with_label_values(&[push_source, mode])
            .inc();
    }

    /// The text exposition, with the freshness gauges set from `catalog` first.
    pub fn render(&self, catalog: Option<&Catalog>, project: &str) -> String {
        if let Some(catalog) = catalog {
            self.update_freshness(catalog, project);
        }
        let mut out = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut out) {
            tracing::warn!(message = "could not encode metrics", error = %e);
        }
        String::from_utf8(out).unwrap_or_default()
    }

    fn update_freshness(&self, catalog: &Catalog, project: &str) {
        for (name, seconds) in freshness_seconds(catalog, project, SystemTime::now()) {
            self.freshness
                .with_label_values(&[name.as_str(), project])
                .set(seconds);
        }
    }
}

/// `feast_feature_freshness_seconds`: for every feature view and stream feature view of
/// `project` materialized at least once, `now` minus the latest end of its materialized
/// intervals, in seconds (what the feature server and the materializer export).
pub fn freshness_seconds(catalog: &Catalog, project: &str, now: SystemTime) -> Vec<(String, f64)> {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let no_tags = Default::default();
    let views = catalog
        .list::<core::FeatureView>(project, &no_tags)
        .filter_map(|v| Some((v.spec.as_ref()?.name.as_str(), v.meta.as_ref()?)))
        .map(|(n, m)| (n, m.materialization_intervals.as_slice()))
        .chain(
            catalog
                .list::<core::StreamFeatureView>(project, &no_tags)
                .filter_map(|v| Some((v.spec.as_ref()?.name.as_str(), v.meta.as_ref()?)))
                .map(|(n, m)| (n, m.materialization_intervals.as_slice())),
        );
    views
        .filter_map(|(name, intervals)| {
            let end = intervals
                .iter()
                .filter_map(|i| i.end_time.as_ref())
                .map(|t| t.seconds as f64 + f64::from(t.nanos) / 1e9)
                .fold(None, |acc: Option<f64>, t| {
                    Some(acc.map_or(t, |a| a.max(t)))
                })?;
            Some((name.to_owned(), now - end))
        })
        .collect()
}
