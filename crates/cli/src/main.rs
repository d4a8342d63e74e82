//! `feast-rs`: Feast's command line for feast-rs — feature repositories, the registry and
//! (as they land) every service. Global options and subcommands mirror `feast`'s.

mod commands;
mod datasets;
#[cfg(test)]
mod deploy_check;
mod doctor;
mod historical;
mod init;
mod materialize;
mod offline_writer;
mod online_hook;
mod output;
mod probe;
mod serve;
mod up;
mod up_demo;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use feast_core::model::ObjectKind;

use commands::{Output, RepoContext};

/// jemalloc, not glibc's malloc: the services free on one thread what another allocated (a
/// Redis lane's replies, a Flight stream's batches), which glibc serialises on its arena
/// locks. Measured in BENCHMARKS.md.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "feast-rs", version, about = "Feast feature store, server side in Rust", long_about = None)]
struct Cli {
    /// Switch to a different feature repository directory before running the command.
    #[arg(
        env = "FEAST_RS_CHDIR",
        short = 'c',
        long = "chdir",
        global = true,
        value_name = "DIR"
    )]
    chdir: Option<PathBuf>,
    /// Override the feature_store.yaml file (default: <repo>/feature_store.yaml).
    #[arg(
        env = "FEAST_RS_FEATURE_STORE_YAML",
        short = 'f',
        long = "feature-store-yaml",
        global = true,
        value_name = "FILE"
    )]
    feature_store_yaml: Option<PathBuf>,
    /// Log level: error, warning, info, debug or trace (default: info for `up`, warning
    /// otherwise).
    #[arg(env = "FEAST_RS_LOG_LEVEL", long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
    /// Log output on stderr: text, pretty or json (one object per line).
    #[arg(
        env = "FEAST_RS_LOG_FORMAT",
        long,
        global = true,
        default_value = "text",
        value_name = "FORMAT"
    )]
    log_format: feast_telemetry::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new feature repository with the driver-stats demo.
    Init {
        /// Project (and directory) name.
        #[arg(default_value = "my_project")]
        name: String,
    },
    /// Create the demo repository if needed, apply it and list its feature views.
    Demo {
        /// Where to create the demo project (a directory named `demo` below this path).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Run all four services in one process on the repository (the driver demo in
    /// ./demo when the directory holds none): apply, and on the demo materialize and fetch
    /// features over HTTP, gRPC and Flight; then serve until Ctrl-C.
    Up(up::UpArgs),
    /// Register the repository's definitions in the registry.
    Apply,
    /// Show what `apply` would change, without changing anything.
    Plan,
    /// Remove everything `apply` registered for the project.
    Teardown,
    /// Print the project's registry contents as JSON.
    RegistryDump,
    /// Serve the registry over gRPC (Feast's `feast serve_registry`).
    ServeRegistry(ServeArgs),
    /// Serve online features over HTTP (Feast's `feast serve`).
    Serve(FeatureServeArgs),
    /// Load the latest offline values of `[START, END]` into the online store.
    Materialize(materialize::MaterializeArgs),
    /// Load offline values into the online store from where each view's last
    /// materialization ended up to END.
    MaterializeIncremental(materialize::IncrementalArgs),
    /// Serve materialization jobs over gRPC (feast_rs.materializer.v1), optionally on a
    /// schedule.
    ServeMaterializer(MaterializerServeArgs),
    /// Serve the offline store over Arrow Flight (Feast's `feast serve_offline`).
    ServeOffline(OfflineServeArgs),
    /// Point-in-time correct features for an entity table, from the embedded offline
    /// engine, written to Parquet.
    GetHistoricalFeatures(historical::HistoricalArgs),
    /// Check one service's health (exit 0 when healthy): `http(s)://host:port/path` is a
    /// GET, `grpc(s)://host:port` a grpc.health.v1 Check. For container health checks.
    Probe(probe::ProbeArgs),
    /// Check the repository's configuration, definitions, registry, stores and auth (and
    /// services given with --*-url); exit 1 when something fails.
    Doctor(doctor::DoctorArgs),
    /// Print the feast-rs version.
    Version,
    /// Print the effective feature_store.yaml configuration.
    Configuration,
    /// Entities.
    Entities(ObjectArgs),
    /// Data sources.
    DataSources(ObjectArgs),
    /// Feature views (batch and on demand).
    FeatureViews(ObjectArgs),
    /// On-demand feature views.
    OnDemandFeatureViews(ObjectArgs),
    /// Stream feature views.
    StreamFeatureViews(ObjectArgs),
    /// Feature services.
    FeatureServices(ObjectArgs),
    /// Permissions.
    Permissions(ObjectArgs),
    /// Projects.
    Projects(ObjectArgs),
    /// Saved datasets.
    SavedDatasets(ObjectArgs),
    /// Validation references.
    ValidationReferences(ObjectArgs),
    /// Developer tools used by the compatibility tests.
    #[command(hide = true)]
    Internal {
        #[command(subcommand)]
        action: InternalAction,
    },
}

#[derive(Subcommand)]
enum InternalAction {
    /// Write the FileDescriptorSet of feast-rs's Feast protos.
    DescriptorSet {
        #[arg(long)]
        out: PathBuf,
    },
    /// Test hooks driving the online stores directly (see online_hook.rs).
    #[command(flatten)]
    Online(online_hook::OnlineHook),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to bind.
    #[arg(env = "FEAST_RS_HOST", long, default_value = "0.0.0.0")]
    host: String,
    /// Port to bind.
    #[arg(env = "FEAST_RS_PORT", short, long, default_value_t = feast_registry::DEFAULT_PORT)]
    port: u16,
    /// TLS private key (PEM); with --cert, serves TLS.
    #[arg(env = "FEAST_RS_TLS_KEY", long, requires = "cert")]
    key: Option<PathBuf>,
    /// TLS certificate chain (PEM).
    #[arg(env = "FEAST_RS_TLS_CERT", long, requires = "key")]
    cert: Option<PathBuf>,
}

#[derive(clap::Args)]
struct FeatureServeArgs {
    /// Address to bind.
    #[arg(env = "FEAST_RS_HOST", long, default_value = "127.0.0.1")]
    host: String,
    /// Port to bind.
    #[arg(env = "FEAST_RS_PORT", short, long, default_value_t = 6566)]
    port: u16,
    /// How often the registry is refreshed, in seconds (0: never).
    #[arg(env = "FEAST_RS_REGISTRY_TTL_SEC", long, default_value_t = 5)]
    registry_ttl_sec: u64,
    /// Largest request body accepted, in bytes (HTTP 413 / gRPC RESOURCE_EXHAUSTED above it).
    #[arg(env = "FEAST_RS_MAX_REQUEST_BYTES", long, default_value_t = feast_online::http::DEFAULT_MAX_REQUEST_BYTES)]
    max_request_bytes: usize,
    /// TLS private key (PEM); with --cert, serves HTTPS and gRPC over TLS.
    #[arg(env = "FEAST_RS_TLS_KEY", long, requires = "cert")]
    key: Option<PathBuf>,
    /// TLS certificate chain (PEM).
    #[arg(env = "FEAST_RS_TLS_CERT", long, requires = "key")]
    cert: Option<PathBuf>,
    /// Record Prometheus metrics (Feast's names) and serve them at GET /metrics.
    #[arg(env = "FEAST_RS_METRICS", long)]
    metrics: bool,
    /// Serve rows older than their view's TTL as PRESENT with their value, as Feast's Python
    /// server does, instead of OUTSIDE_MAX_AGE with null.
    #[arg(env = "FEAST_RS_EXPIRED_AS_PRESENT", long)]
    expired_as_present: bool,
    /// Run `/materialize*` as jobs of this materializer service (`http://host:6571`)
    /// instead of in-process.
    #[arg(env = "FEAST_RS_MATERIALIZER_URL", long, value_name = "URL")]
    materializer: Option<String>,
    /// CA certificate (PEM) to trust for an `https://` --materializer.
    #[arg(
        env = "FEAST_RS_MATERIALIZER_CA",
        long,
        value_name = "PEM",
        requires = "materializer"
    )]
    materializer_ca: Option<PathBuf>,
}

#[derive(clap::Args)]
struct MaterializerServeArgs {
    /// Address to bind.
    #[arg(env = "FEAST_RS_HOST", long, default_value = "127.0.0.1")]
    host: String,
    /// Port to bind.
    #[arg(env = "FEAST_RS_PORT", short, long, default_value_t = feast_materializer::DEFAULT_PORT)]
    port: u16,
    /// How often the registry is refreshed, in seconds (0: never; jobs always reload it).
    #[arg(env = "FEAST_RS_REGISTRY_TTL_SEC", long, default_value_t = 5)]
    registry_ttl_sec: u64,
    /// Run an incremental job of every online view (less those with their own --schedule)
    /// at this interval (`30m`, `1h`, `1d`, seconds) or on this cron expression (UTC; five
    /// fields, or six with seconds first: `"0 * * * *"`).
    #[arg(env = "FEAST_RS_MATERIALIZE_EVERY", long, value_name = "INTERVAL|CRON")]
    every: Option<String>,
    /// Schedule of named views: `VIEW[,VIEW...]=INTERVAL|CRON` (repeatable;
    /// `--schedule "driver_stats=15m" --schedule "daily_agg=30 2 * * *"`).
    #[arg(long, value_name = "VIEWS=WHEN")]
    schedule: Vec<String>,
    /// Serve Prometheus metrics (jobs, rows, durations, `feast_feature_freshness_seconds`)
    /// at `GET /metrics` on this port.
    #[arg(env = "FEAST_RS_METRICS_PORT", long, value_name = "PORT")]
    metrics_port: Option<u16>,
    /// With a SQL registry, replicas share the views through leases in its database: how
    /// long a lease outlives a replica that stopped renewing it, in seconds.
    #[arg(env = "FEAST_RS_LEASE_TTL_SEC", long, default_value_t = 60)]
    lease_ttl_sec: u64,
    /// Feature views materialized at once within a job.
    #[arg(env = "FEAST_RS_MATERIALIZE_PARALLELISM", long, default_value_t = 4)]
    parallelism: usize,
    /// TLS private key (PEM); with --cert, serves gRPC over TLS.
    #[arg(env = "FEAST_RS_TLS_KEY", long, requires = "cert")]
    key: Option<PathBuf>,
    /// TLS certificate chain (PEM).
    #[arg(env = "FEAST_RS_TLS_CERT", long, requires = "key")]
    cert: Option<PathBuf>,
}

#[derive(clap::Args)]
struct OfflineServeArgs {
    /// Address to bind.
    #[arg(env = "FEAST_RS_HOST", long, default_value = "127.0.0.1")]
    host: String,
    /// Port to bind.
    #[arg(env = "FEAST_RS_PORT", short, long, default_value_t = feast_offline::DEFAULT_PORT)]
    port: u16,
    /// How often the registry is refreshed, in seconds (0: never).
    #[arg(env = "FEAST_RS_REGISTRY_TTL_SEC", long, default_value_t = 5)]
    registry_ttl_sec: u64,
    /// Memory for the joins' sorts and windows, in MiB; beyond it they spill to the temp
    /// directory (default: unbounded).
    #[arg(env = "FEAST_RS_MEMORY_LIMIT_MB", long, value_name = "MIB")]
    memory_limit_mb: Option<usize>,
    /// TLS private key (PEM); with --cert, serves Flight over TLS (`grpc+tls://`).
    #[arg(env = "FEAST_RS_TLS_KEY", long, requires = "cert")]
    key: Option<PathBuf>,
    /// TLS certificate chain (PEM).
    #[arg(env = "FEAST_RS_TLS_CERT", long, requires = "key")]
    cert: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ObjectArgs {
    #[command(subcommand)]
    action: ObjectAction,
}

#[derive(Subcommand)]
enum ObjectAction {
    /// List the objects of this kind in the project.
    List {
        /// Only objects carrying these tags (`key:value`, repeatable or comma-separated).
        #[arg(long = "tags", value_name = "KEY:VALUE")]
        tags: Vec<String>,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Show one object.
    Describe {
        name: String,
        #[arg(short = 'o', long, value_enum, default_value = "yaml")]
        output: Output,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Up(_) => "info",
        _ => "warning",
    };
    let _telemetry = init_logging(
        cli.log_level.as_deref().unwrap_or(default_level),
        cli.log_format,
        service_name(&cli.command),
    );
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs on stderr, and OpenTelemetry export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; the
/// guard flushes the exporters when `main` returns.
fn init_logging(
    level: &str,
    format: feast_telemetry::LogFormat,
    service_name: &str,
) -> feast_telemetry::Telemetry {
    feast_telemetry::init(feast_telemetry::Options {
        level,
        format,
        service_name,
    })
}

/// The default OpenTelemetry `service.name` of a command (`OTEL_SERVICE_NAME` overrides).
fn service_name(command: &Command) -> &'static str {
    match command {
        Command::ServeRegistry(_) => "feast-rs-registry",
        Command::Serve(_) => "feast-rs-online",
        Command::ServeOffline(_) => "feast-rs-offline",
        Command::ServeMaterializer(_) => "feast-rs-materializer",
        _ => "feast-rs",
    }
}

fn repo_dir(cli: &Cli) -> Result<PathBuf> {
    let dir = match &cli.chdir {
        Some(d) => d.clone(),
        None => std::env::current_dir().context("reading the current directory")?,
    };
    if !dir.is_dir() {
        anyhow::bail!("{} is not a directory", dir.display());
    }
    Ok(dir)
}

fn open(cli: &Cli) -> Result<RepoContext> {
    RepoContext::open(&repo_dir(cli)?, cli.feature_store_yaml.as_deref())
}

fn run(cli: Cli) -> Result<()> {
    let color = std::io::stdout().is_terminal();
    match &cli.command {
        Command::Init { name } => {
            let parent = repo_dir(&cli)?;
            let repo = init::init_repo(&parent, name)?;
            println!("Creating a new feast-rs repository in {}.", repo.display());
            println!("Next: feast-rs -c {} apply", display_relative(&repo));
        }
        Command::Demo { dir } => {
            let repo = dir.join("demo").join("feature_repo");
            if !repo.join("feature_store.yaml").exists() {
                let repo_created = init::init_repo(dir, "demo")?;
                println!("Created the demo repository in {}", repo_created.display());
            }
            let ctx = RepoContext::open(&repo, None)?;
            commands::apply(&ctx, color)?;
            println!();
            print!(
                "{}",
                commands::list(
                    &ctx,
                    ObjectKind::FeatureView,
                    &Default::default(),
                    Output::Table
                )?
            );
        }
        Command::Up(args) => {
            let repo = up::repo(cli.chdir.as_deref(), cli.feature_store_yaml.as_deref())?;
            let ctx = RepoContext::open(&repo, cli.feature_store_yaml.as_deref())?;
            up::up(&ctx, args, color)?;
        }
        Command::Apply => {
            commands::apply(&open(&cli)?, color)?;
        }
        Command::Plan => commands::plan(&open(&cli)?, color)?,
        Command::Teardown => commands::teardown(&open(&cli)?)?,
        Command::RegistryDump => println!("{}", commands::registry_dump(&open(&cli)?)?),
        Command::ServeRegistry(args) => serve::registry(&open(&cli)?, args)?,
        Command::Serve(args) => serve::feature_server(&open(&cli)?, args)?,
        Command::ServeOffline(args) => serve::offline_server(&open(&cli)?, args)?,
        Command::ServeMaterializer(args) => serve::materializer_server(&open(&cli)?, args)?,
        Command::Materialize(args) => materialize::materialize(&open(&cli)?, args)?,
        Command::MaterializeIncremental(args) => {
            materialize::materialize_incremental(&open(&cli)?, args)?
        }
        Command::GetHistoricalFeatures(args) => {
            let rows = historical::get_historical_features(&open(&cli)?, args)?;
            println!("Wrote {rows} rows to {}", args.output_display());
        }
        Command::Probe(args) => probe::run(args)?,
        Command::Doctor(args) => {
            doctor::run(&repo_dir(&cli)?, cli.feature_store_yaml.as_deref(), args)?
        }
        Command::Version => {
            println!(
                "feast-rs {} (Feast wire protocol 0.67)",
                env!("CARGO_PKG_VERSION")
            );
        }
        Command::Configuration => print!("{}", open(&cli)?.config.feast_configuration_yaml()),
        Command::Entities(a) => object_command(&cli, ObjectKind::Entity, a)?,
        Command::DataSources(a) => object_command(&cli, ObjectKind::DataSource, a)?,
        Command::FeatureViews(a) => object_command(&cli, ObjectKind::FeatureView, a)?,
        Command::OnDemandFeatureViews(a) => {
            object_command(&cli, ObjectKind::OnDemandFeatureView, a)?
        }
        Command::StreamFeatureViews(a) => object_command(&cli, ObjectKind::StreamFeatureView, a)?,
        Command::FeatureServices(a) => object_command(&cli, ObjectKind::FeatureService, a)?,
        Command::Permissions(a) => object_command(&cli, ObjectKind::Permission, a)?,
        Command::Projects(a) => object_command(&cli, ObjectKind::Project, a)?,
        Command::SavedDatasets(a) => object_command(&cli, ObjectKind::SavedDataset, a)?,
        Command::ValidationReferences(a) => {
            object_command(&cli, ObjectKind::ValidationReference, a)?
        }
        Command::Internal {
            action: InternalAction::DescriptorSet { out },
        } => {
            std::fs::write(out, feast_proto::FILE_DESCRIPTOR_SET)
                .with_context(|| format!("writing {}", out.display()))?;
        }
        Command::Internal {
            action: InternalAction::Online(hook),
        } => online_hook::run(hook)?,
    }
    Ok(())
}

fn object_command(cli: &Cli, kind: ObjectKind, args: &ObjectArgs) -> Result<()> {
    let ctx = open(cli)?;
    let text = match &args.action {
        ObjectAction::List { tags, output } => {
            commands::list(&ctx, kind, &commands::parse_tags(tags)?, *output)?
        }
        ObjectAction::Describe { name, output } => commands::describe(&ctx, kind, name, *output)?,
    };
    print!("{text}");
    Ok(())
}

fn display_relative(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(|p| p.display().to_string()))
        .unwrap_or_else(|| path.display().to_string())
}
