//! Prometheus metrics of the materializer service, served as text at `GET /metrics` on
//! `serve-materializer --metrics-port`:
//!
//! | Metric | Labels |
//! |---|---|
//! | `feast_materializer_jobs_total` | `trigger` (`api` / `schedule`), `state` (`succeeded` / `failed` / `cancelled`) |
//! | `feast_materializer_jobs_running` | |
//! | `feast_materializer_rows_read_total` | `feature_view` (latest rows read from the offline store) |
//! | `feast_materializer_rows_written_total` | `feature_view` (rows written to the online store) |
//! | `feast_materializer_view_duration_seconds` | `feature_view`, `state` (one window of one view) |
//! | `feast_feature_freshness_seconds` | `feature_view`, `project` (now − last materialized end, set at scrape time, as the feature server's) |

use std::time::{Duration, SystemTime};

use feast_core::registry::Catalog;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    jobs: IntCounterVec,
    running: IntGauge,
    rows_read: IntCounterVec,
    rows_written: IntCounterVec,
    view_duration: HistogramVec,
    freshness: GaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Fails only on invalid names or duplicate registration, both fixed here.
    r.expect("static metric definitions are valid")
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let jobs = must(IntCounterVec::new(
            Opts::new(
                "feast_materializer_jobs_total",
                "Materialization jobs finished, by trigger and final state",
            ),
            &["trigger", "state"],
        ));
        let running = must(IntGauge::new(
            "feast_materializer_jobs_running",
            "Materialization jobs running now",
        ));
        let rows_read = must(IntCounterVec::new(
            Opts::new(
                "feast_materializer_rows_read_total",
                "Latest rows per entity read from the offline store",
            ),
            &["feature_view"],
        ));
        let rows_written = must(IntCounterVec::new(
            Opts::new(
                "feast_materializer_rows_written_total",
                "Rows written to the online store",
            ),
            &["feature_view"],
        ));
        let view_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "feast_materializer_view_duration_seconds",
                "Time to materialize one window of one feature view",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
            ]),
            &["feature_view", "state"],
        ));
        let freshness = must(GaugeVec::new(
            Opts::new(
                "feast_feature_freshness_seconds",
                "Seconds since the end of the feature view's latest materialization",
            ),
            &["feature_view", "project"],
        ));
        for metric in [
            Box::new(jobs.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(running.clone()),
            Box::new(rows_read.clone()),
            Box::new(rows_written.clone()),
            Box::new(view_duration.clone()),
            Box::new(freshness.clone()),
        ] {
            must(registry.register(metric));
        }
        Self {
            registry,
            jobs,
            running,
            rows_read,
            rows_written,
            view_duration,
            freshness,
        }
    }

    pub(crate) fn job_started(&self) {
        self.running.inc();
    }

    pub(crate) fn job_finished(&self, trigger: &str, state: &str) {
        self.running.dec();
        self.jobs.with_label_values(&[trigger, state]).inc();
    }

    pub(crate) fn view_done(
        &self,
        view: &str,
        state: &str,
        rows: u64,
        written: u64,
        took: Duration,
    ) {
        self.rows_read.with_label_values(&[view]).inc_by(rows);
        self.rows_written.with_label_values(&[view]).inc_by(written);
        self.view_duration
            .with_label_values(&[view, state])
            .observe(took.as_secs_f64());
    }

    /// The text exposition, with the freshness gauges set from `catalog` first.
    pub fn render(&self, catalog: Option<&Catalog>, project: &str) -> String {
        if let Some(catalog) = catalog {
            for (view, seconds) in
                feast_online::metrics::freshness_seconds(catalog, project, SystemTime::now())
            {
                self.freshness
                    .with_label_values(&[view.as_str(), project])
                    .set(seconds);
            }
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(message = "could not encode metrics", error = %e);
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
