//! Latency of registry reads over gRPC: `GetFeatureView` (a random view each call) and
//! `ListFeatureViews`, sequentially on one connection, against any Feast registry server
//! (feast-rs or Feast's own `feast serve_registry`). Prints p50/p99/max and calls/s.
//!
//! registry-latency --target 127.0.0.1:6570 --project bench --views 1000 --calls 5000

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use feast_proto::registry::registry_server_client::RegistryServerClient;
use feast_proto::registry::{GetFeatureViewRequest, ListFeatureViewsRequest};

#[derive(Parser)]
struct Args {
    /// host:port of the registry server.
    #[arg(long)]
    target: String,
    #[arg(long, default_value = "bench")]
    project: String,
    /// The views are named view_0 .. view_{N-1}.
    #[arg(long, default_value_t = 1000)]
    views: usize,
    /// GetFeatureView calls measured (ListFeatureViews gets a tenth of them).
    #[arg(long, default_value_t = 5000)]
    calls: usize,
    /// allow_cache on every request (the Feast SDK sends false).
    #[arg(long)]
    allow_cache: bool,
    /// A name for the report line.
    #[arg(long, default_value = "server")]
    label: String,
}

fn report(label: &str, what: &str, mut samples: Vec<Duration>, elapsed: Duration) {
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{label:>10} {what:<18} n={:<6} p50={:>8.3} ms  p99={:>8.3} ms  max={:>8.3} ms  {:>8.0} calls/s",
        samples.len(),
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(*samples.last().unwrap()),
        samples.len() as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut client = RegistryServerClient::connect(format!("http://{}", args.target))
        .await
        .with_context(|| format!("connecting to {}", args.target))?
        .max_decoding_message_size(64 * 1024 * 1024);
    let get = |i: usize| GetFeatureViewRequest {
        name: format!("view_{}", (i * 7919) % args.views),
        project: args.project.clone(),
        allow_cache: args.allow_cache,
    };
    let list = || ListFeatureViewsRequest {
        project: args.project.clone(),
        allow_cache: args.allow_cache,
        ..Default::default()
    };
    // Warm-up (connections, caches), and a check that the registry holds the views.
    let n = client
        .list_feature_views(list())
        .await?
        .into_inner()
        .feature_views
        .len();
    anyhow::ensure!(
        n == args.views,
        "the registry holds {n} views in project {}, expected {}",
        args.project,
        args.views
    );
    for i in 0..200 {
        client.get_feature_view(get(i)).await?;
    }

    let mut samples = Vec::with_capacity(args.calls);
    let start = Instant::now();
    for i in 0..args.calls {
        let t = Instant::now();
        client.get_feature_view(get(i)).await?;
        samples.push(t.elapsed());
    }
    report(&args.label, "GetFeatureView", samples, start.elapsed());

    let list_calls = (args.calls / 10).max(10);
    let mut samples = Vec::with_capacity(list_calls);
    let start = Instant::now();
    for _ in 0..list_calls {
        let t = Instant::now();
        client.list_feature_views(list()).await?;
        samples.push(t.elapsed());
    }
    report(&args.label, "ListFeatureViews", samples, start.elapsed());
    Ok(())
}
