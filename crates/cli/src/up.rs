//! `feast-rs up`: the whole suite in one process. The registry server serves the
//! repository's own registry; the offline server, the materializer and the feature server
//! each reach it, and each other, over loopback exactly as separate deployments would
//! (`registry_type: remote`, a remote offline store, `serve --materializer`). On the driver
//! demo it then materializes through the feature server and fetches features over HTTP,
//! gRPC and Arrow Flight, and keeps serving until Ctrl-C or SIGTERM, when every service
//! stops taking work and finishes what is in flight.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use feast_core::config::{OfflineStoreConfig, RegistryConfig, RepoConfig};
use tracing::Instrument;

use crate::commands::RepoContext;
use crate::serve::{self, Bound, Shutdown};
use crate::{FeatureServeArgs, MaterializerServeArgs, OfflineServeArgs};

#[derive(clap::Args)]
pub struct UpArgs {
    /// Address every service binds.
    #[arg(env = "FEAST_RS_HOST", long, default_value = "127.0.0.1")]
    host: String,
    /// Registry server port (0: any free port).
    #[arg(env = "FEAST_RS_REGISTRY_PORT", long, default_value_t = feast_registry::DEFAULT_PORT)]
    registry_port: u16,
    /// Feature server port, HTTP and gRPC (0: any free port).
    #[arg(env = "FEAST_RS_ONLINE_PORT", long, default_value_t = 6566)]
    online_port: u16,
    /// Offline server (Arrow Flight) port (0: any free port).
    #[arg(env = "FEAST_RS_OFFLINE_PORT", long, default_value_t = feast_offline::DEFAULT_PORT)]
    offline_port: u16,
    /// Materializer port (0: any free port).
    #[arg(env = "FEAST_RS_MATERIALIZER_PORT", long, default_value_t = feast_materializer::DEFAULT_PORT)]
    materializer_port: u16,
    /// Run an incremental materialization of every online view at this interval (`30m`,
    /// `1h`, seconds) or on this cron expression (UTC: `"0 * * * *"`).
    #[arg(env = "FEAST_RS_MATERIALIZE_EVERY", long, value_name = "INTERVAL|CRON")]
    every: Option<String>,
    /// Only serve: skip the demo's materialization and example queries.
    #[arg(long)]
    no_demo: bool,
    /// Seconds in-flight requests and jobs get to finish after Ctrl-C before the process
    /// exits anyway (with an error naming the services that did not stop).
    #[arg(env = "FEAST_RS_SHUTDOWN_TIMEOUT", long, default_value_t = 10)]
    shutdown_timeout: u64,
}

/// The repository `up` runs: the one `-c`/the current directory holds, else the driver
/// demo in `./demo/feature_repo`, created on first use.
pub fn repo(chdir: Option<&Path>, feature_store_yaml: Option<&Path>) -> Result<PathBuf> {
    let dir = match chdir {
        Some(d) => d.to_path_buf(),
        None => std::env::current_dir().context("reading the current directory")?,
    };
    if feature_store_yaml.is_some() || dir.join("feature_store.yaml").exists() {
        return Ok(dir);
    }
    let demo = dir.join("demo").join("feature_repo");
    if !demo.join("feature_store.yaml").exists() {
        let created = crate::init::init_repo(&dir, "demo")?;
        println!("Created the demo repository in {}", created.display());
    }
    Ok(demo)
}

/// Runs the suite on `ctx`'s repository until Ctrl-C or SIGTERM.
pub fn up(ctx: &RepoContext, args: &UpArgs, color: bool) -> Result<()> {
    check_config(&ctx.config)?;
    crate::commands::apply(ctx, color)?;
    println!();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop = || -> Shutdown {
        let mut rx = stop_rx.clone();
        Box::pin(async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        })
    };
    let ip = parse_host(&args.host)?;
    // Where the services reach each other: loopback when bound to every interface.
    let connect_host = match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_owned(),
        IpAddr::V6(v6) if v6.is_unspecified() => "[::1]".to_owned(),
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };

    let mut services: Vec<Service> = Vec::new();
    let started = start_all(ctx, args, ip, &connect_host, &stop, &mut services);
    let main = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the Tokio runtime")?;
    let outcome = match started {
        Ok((client_ctx, endpoints)) => main.block_on(async {
            if !args.no_demo && is_driver_demo(ctx) {
                crate::up_demo::run(&client_ctx, &endpoints)
                    .await
                    .context("the demo failed; stopping")?;
            }
            println!(
                "feast-rs is up: project {} from {}\n{}\nPress Ctrl-C to stop.",
                ctx.project(),
                ctx.repo.display(),
                endpoints.describe()
            );
            wait_for_stop(&mut services).await
        }),
        Err(e) => Err(e),
    };

    // Stop: every service stops accepting, finishes what is in flight, and its task ends.
    let _ = stop_tx.send(true);
    let (failed, unfinished) = main.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(args.shutdown_timeout);
        let mut unfinished = Vec::new();
        let mut failed = Vec::new();
        for service in services.iter_mut().filter(|s| !s.ended) {
            match tokio::time::timeout_at(deadline, &mut service.task).await {
                Ok(Ok(Ok(()))) => service
                    .span
                    .in_scope(|| tracing::info!(message = "stopped")),
                Ok(Ok(Err(e))) => failed.push(format!("{}: {e:#}", service.name)),
                Ok(Err(e)) => failed.push(format!("{}: {e}", service.name)),
                Err(_) => unfinished.push(service.name),
            }
        }
        (failed, unfinished)
    });
    // Background work (registry refreshes, idle connections) ends with the runtimes.
    for service in services {
        service.runtime.shutdown_timeout(Duration::from_secs(1));
    }
    outcome?;
    if !failed.is_empty() {
        bail!("services failed: {}", failed.join("; "));
    }
    if !unfinished.is_empty() {
        bail!(
            "{} did not finish in-flight work within --shutdown-timeout {}s",
            unfinished.join(", "),
            args.shutdown_timeout
        );
    }
    println!("feast-rs stopped.");
    Ok(())
}

/// What `up` cannot run, said before anything starts.
fn check_config(config: &RepoConfig) -> Result<()> {
    if let RegistryConfig::Remote(r) = &config.registry {
        bail!(
            "`feast-rs up` runs its own registry server, so it needs the registry's storage \
             (`registry_type: file` or `sql`), not a registry server ({})",
            r.path
        );
    }
    match &config.offline_store {
        None | Some(OfflineStoreConfig::Dask(_) | OfflineStoreConfig::Duckdb(_)) => Ok(()),
        Some(other) => bail!(
            "`feast-rs up` runs the offline server on the repository's Parquet/CSV file \
             sources; offline_store type `{}` is not supported",
            other.type_name()
        ),
    }
}

/// One service of `up`, on its own runtime: every thread of it has the `service` span
/// entered, so whatever the service logs (in requests, jobs, background refreshes) carries
/// `service=<name>`, in one log stream.
struct Service {
    name: &'static str,
    span: tracing::Span,
    runtime: tokio::runtime::Runtime,
    task: tokio::task::JoinHandle<Result<()>>,
    /// The task has ended (and been awaited).
    ended: bool,
}

impl Service {
    fn start<F>(name: &'static str, start: F) -> Result<(Self, SocketAddr)>
    where
        F: Future<Output = Result<Bound>>,
    {
        // ERROR level so the span is enabled whatever the log level; log-only, so traces
        // do not hang off it.
        let span = tracing::error_span!(target: feast_telemetry::LOG_ONLY_TARGET, "service", service = name);
        let thread_span = span.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name(format!("feast-rs-{name}"))
            .on_thread_start(move || std::mem::forget(thread_span.clone().entered()))
            .build()
            .with_context(|| format!("starting the {name} runtime"))?;
        let bound = runtime
            .block_on(start.instrument(span.clone()))
            .with_context(|| format!("starting the {name} service"))?;
        span.in_scope(|| tracing::info!(message = %bound.banner));
        let addr = bound.addr;
        let task = runtime.spawn(bound.serve);
        Ok((
            Service {
                name,
                span,
                runtime,
                task,
                ended: false,
            },
            addr,
        ))
    }
}

/// Starts the four services, each reaching the others over loopback; returns the
/// configuration a client of the suite uses and where everything listens.
fn start_all(
    ctx: &RepoContext,
    args: &UpArgs,
    ip: IpAddr,
    connect_host: &str,
    stop: &dyn Fn() -> Shutdown,
    services: &mut Vec<Service>,
) -> Result<(RepoContext, Endpoints)> {
    let (service, registry_addr) = Service::start(
        "registry",
        serve::start_registry(ctx, SocketAddr::new(ip, args.registry_port), None, stop()),
    )?;
    services.push(service);
    let client_ctx = RepoContext {
        repo: ctx.repo.clone(),
        config: client_config(
            &ctx.config,
            &format!("{connect_host}:{}", registry_addr.port()),
        )?,
    };

    let offline_args = OfflineServeArgs {
        host: args.host.clone(),
        port: args.offline_port,
        registry_ttl_sec: 5,
        memory_limit_mb: None,
        key: None,
        cert: None,
    };
    let (service, offline_addr) = Service::start(
        "offline",
        serve::start_offline_server(&client_ctx, &offline_args, stop()),
    )?;
    services.push(service);

    // The materializer pulls, and the feature server pushes offline rows, through the
    // offline server, like separate deployments.
    let services_ctx = RepoContext {
        repo: ctx.repo.clone(),
        config: client_config_with_offline(&client_ctx.config, connect_host, offline_addr)?,
    };
    let materializer_args = MaterializerServeArgs {
        host: args.host.clone(),
        port: args.materializer_port,
        registry_ttl_sec: 5,
        every: args.every.clone(),
        schedule: vec![],
        metrics_port: None,
        lease_ttl_sec: 60,
        parallelism: 4,
        key: None,
        cert: None,
    };
    let (service, materializer_addr) = Service::start(
        "materializer",
        serve::start_materializer(&services_ctx, &materializer_args, stop()),
    )?;
    services.push(service);

    let online_args = FeatureServeArgs {
        host: args.host.clone(),
        port: args.online_port,
        registry_ttl_sec: 5,
        max_request_bytes: feast_online::http::DEFAULT_MAX_REQUEST_BYTES,
        key: None,
        cert: None,
        metrics: true,
        expired_as_present: false,
        materializer: Some(format!(
            "http://{connect_host}:{}",
            materializer_addr.port()
        )),
        materializer_ca: None,
    };
    let (service, online_addr) = Service::start(
        "online",
        serve::start_feature_server(&services_ctx, &online_args, stop()),
    )?;
    services.push(service);

    let endpoints = Endpoints {
        host: connect_host.to_owned(),
        registry: registry_addr.port(),
        online: online_addr.port(),
        offline: offline_addr.port(),
        materializer: materializer_addr.port(),
    };
    Ok((client_ctx, endpoints))
}

/// Waits for Ctrl-C/SIGTERM, or for a service that stops on its own (an error).
async fn wait_for_stop(services: &mut [Service]) -> Result<()> {
    let ended = {
        let any = futures::future::select_all(services.iter_mut().map(|s| &mut s.task));
        tokio::select! {
            _ = serve::shutdown_signal() => None,
            (result, index, _) = any => Some((index, result)),
        }
    };
    let Some((index, result)) = ended else {
        return Ok(());
    };
    // Its task has ended: the shutdown below must not wait on it again.
    services[index].ended = true;
    let name = services[index].name;
    match result {
        Ok(Ok(())) => bail!("the {name} service stopped unexpectedly"),
        Ok(Err(e)) => Err(e.context(format!("the {name} service failed"))),
        Err(e) => bail!("the {name} service failed: {e}"),
    }
}

fn parse_host(host: &str) -> Result<IpAddr> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host == "localhost" {
        return Ok(IpAddr::from([127, 0, 0, 1]));
    }
    host.parse()
        .with_context(|| format!("--host {host} is not an IP address"))
}

/// The driver demo `feast-rs init` creates (its example queries name its entities).
fn is_driver_demo(ctx: &RepoContext) -> bool {
    ctx.project() == "demo" && ctx.repo.join("data").join("driver_stats.parquet").exists()
}

/// `config` as a service other than the registry sees it: the registry is the registry
/// server at `target`.
fn client_config(config: &RepoConfig, target: &str) -> Result<RepoConfig> {
    let mut config = config.clone();
    let remote = serde_json::json!({"registry_type": "remote", "path": target});
    config.registry = RegistryConfig::Remote(
        serde_json::from_value(remote).context("the remote registry configuration")?,
    );
    Ok(config)
}

/// `config` reading offline data through the offline server at `addr`.
fn client_config_with_offline(
    config: &RepoConfig,
    host: &str,
    addr: SocketAddr,
) -> Result<RepoConfig> {
    let mut config = config.clone();
    let remote = serde_json::json!({"host": host.trim_start_matches('[').trim_end_matches(']'), "port": addr.port()});
    config.offline_store = Some(OfflineStoreConfig::Remote(
        serde_json::from_value(remote).context("the remote offline store configuration")?,
    ));
    Ok(config)
}

/// Where the services of `up` listen.
pub(crate) struct Endpoints {
    pub host: String,
    pub registry: u16,
    pub online: u16,
    pub offline: u16,
    pub materializer: u16,
}

impl Endpoints {
    fn describe(&self) -> String {
        let h = &self.host;
        crate::output::table(
            &["service", "endpoint", "protocol"],
            &[
                vec![
                    "registry".into(),
                    format!("grpc://{h}:{}", self.registry),
                    "feast.registry.RegistryServer (registry_type: remote)".into(),
                ],
                vec![
                    "online".into(),
                    format!("http://{h}:{}", self.online),
                    "HTTP JSON as `feast serve`, gRPC ServingService, /docs, /metrics".into(),
                ],
                vec![
                    "offline".into(),
                    format!("grpc+tcp://{h}:{}", self.offline),
                    "Arrow Flight (offline_store: remote)".into(),
                ],
                vec![
                    "materializer".into(),
                    format!("grpc://{h}:{}", self.materializer),
                    "feast_rs.materializer.v1".into(),
                ],
            ],
        )
        .lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
    }
}
