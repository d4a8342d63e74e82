//! `serve*` commands: each starts one service on a Tokio runtime and stops it gracefully
//! on Ctrl-C or SIGTERM. Each service is started in two steps, so `feast-rs up` can run
//! all four in one process: `start_*` opens what the service needs and binds its port,
//! returning a [`Bound`] whose `serve` future runs it until its shutdown future resolves.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

use anyhow::{Context, Result, bail};
use feast_core::config::RegistryConfig;
use feast_registry::{FileStore, RegistryService, RegistryStore, ServiceOptions, SqlStore, TlsPem};

use crate::ServeArgs;
use crate::commands::RepoContext;

/// A future that resolves when a server should stop taking new work.
pub(crate) type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A service bound to its port and ready to serve.
pub(crate) struct Bound {
    /// The address it listens on (the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// The line `feast-rs serve*` prints once listening.
    pub banner: String,
    /// Serves until the shutdown future resolves and in-flight work has finished.
    pub serve: Pin<Box<dyn Future<Output = Result<()>> + Send>>,
}

/// Runs one started service on a new runtime until Ctrl-C or SIGTERM.
fn serve_one<F>(start: impl FnOnce(Shutdown) -> F) -> Result<()>
where
    F: Future<Output = Result<Bound>>,
{
    runtime()?.block_on(async move {
        let bound = start(Box::pin(shutdown_signal())).await?;
        println!("{}", bound.banner);
        bound.serve.await
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the Tokio runtime")
}

fn address(args: &ServeArgs) -> Result<SocketAddr> {
    let host = args.host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = match host {
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        h => h
            .parse()
            .with_context(|| format!("--host {h} is not an IP address"))?,
    };
    Ok(SocketAddr::new(ip, args.port))
}

fn tls(args: &ServeArgs) -> Result<Option<TlsPem>> {
    match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Ok(Some(TlsPem {
            cert: std::fs::read(cert)
                .with_context(|| format!("reading --cert {}", cert.display()))?,
            key: std::fs::read(key).with_context(|| format!("reading --key {}", key.display()))?,
        })),
        _ => Ok(None),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!(message = "shutting down");
}

/// The permission engine of every server: Feast's defaults, or, with
/// `FEAST_RS_STRICT_AUTHZ=true`, deny-by-default (a project without permissions and a
/// resource no permission covers are both refused).
fn authorizer() -> std::sync::Arc<feast_auth::Authorizer> {
    let strict = std::env::var("FEAST_RS_STRICT_AUTHZ")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
    std::sync::Arc::new(if strict {
        tracing::info!(message = "strict authorization: no permission means no access");
        feast_auth::Authorizer::strict()
    } else {
        feast_auth::Authorizer::new()
    })
}

/// `serve-registry`: the registry of the repository's feature_store.yaml over gRPC.
pub fn registry(ctx: &RepoContext, args: &ServeArgs) -> Result<()> {
    let addr = address(args)?;
    let tls = tls(args)?;
    serve_one(|shutdown| start_registry(ctx, addr, tls, shutdown))
}

pub(crate) async fn start_registry(
    ctx: &RepoContext,
    addr: SocketAddr,
    tls: Option<TlsPem>,
    shutdown: Shutdown,
) -> Result<Bound> {
    let authenticator = feast_auth::Authenticator::from_config(&ctx.config.auth)
        .map_err(|e| anyhow::anyhow!("auth: {e}"))?;
    let common = ctx.config.registry.common();
    let options = ServiceOptions {
        cache_ttl: std::time::Duration::from_secs(common.cache_ttl_seconds.max(0) as u64),
        ..ServiceOptions::default()
    };
    let store: Box<dyn RegistryStore> = match &ctx.config.registry {
        RegistryConfig::File(_) => Box::new(FileStore::new(
            ctx.config.registry_path().context("file registry path")?,
        )),
        RegistryConfig::Sql(sql) => {
            let (url, options) = crate::commands::sql_registry_options(sql)?;
            if sql.read_path.is_some() {
                tracing::warn!(
                    message = "registry read_path is not used: feast-rs reads and commits on `path`, \
                               so a commit's optimistic check and the reads it is based on see the same data"
                );
            }
            Box::new(
                SqlStore::connect(&url, options)
                    .await
                    .context("opening the SQL registry")?,
            )
        }
        RegistryConfig::Remote(r) => bail!(
            "serve-registry cannot serve `registry_type: remote` ({}): that registry is itself a \
             registry server. Point this server's feature_store.yaml at the registry's storage \
             (`registry_type: file` or `registry_type: sql`)",
            r.path
        ),
    };
    let location = store.location();
    feast_auth::log_auth_mode("registry server", &authenticator);
    let mut service = RegistryService::open(store, options).await?;
    if authenticator.is_enabled() {
        service = service.with_authorizer(authorizer());
    }
    // Saved datasets made by the server (CreateDatasetFromRetrieval, GetDatasetData) run on
    // the repository's offline store: the embedded engine or the offline server.
    match feast_offline::open_offline_store(&ctx.config) {
        Ok(offline) => {
            service =
                service.with_datasets(std::sync::Arc::new(crate::datasets::OfflineDatasets {
                    store: std::sync::Arc::new(offline),
                    repo_path: ctx.config.repo_path.clone(),
                }));
        }
        Err(e) => tracing::warn!(
            message = "saved-dataset RPCs are off: the offline store cannot be opened",
            error = %e
        ),
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr()?;
    let banner = format!(
        "feast-rs registry server listening on {bound} (gRPC{}), registry {location}",
        if tls.is_some() { " with TLS" } else { "" }
    );
    Ok(Bound {
        addr: bound,
        banner,
        serve: Box::pin(async move {
            feast_registry::serve_on(listener, service, authenticator, tls, shutdown).await?;
            Ok(())
        }),
    })
}

/// The registry of feature_store.yaml's `registry:`, opened for a service: a store read and
/// written directly (file or SQL) or a registry server.
pub(crate) enum RegistryAccess {
    Store(Box<dyn feast_registry::RegistryStore>),
    Remote(feast_registry::RemoteRegistry),
}

impl RegistryAccess {
    pub(crate) async fn open(ctx: &RepoContext) -> Result<Self> {
        use feast_registry::RemoteRegistry;
        Ok(match &ctx.config.registry {
            RegistryConfig::File(_) => RegistryAccess::Store(Box::new(FileStore::new(
                ctx.config.registry_path().context("file registry path")?,
            ))),
            RegistryConfig::Sql(sql) => {
                let (url, options) = crate::commands::sql_registry_options(sql)?;
                RegistryAccess::Store(Box::new(
                    SqlStore::connect(&url, options)
                        .await
                        .context("opening the SQL registry")?,
                ))
            }
            RegistryConfig::Remote(remote) => {
                let options = ctx.remote_registry_options(remote)?;
                RegistryAccess::Remote(RemoteRegistry::connect(&options).await?)
            }
        })
    }

    /// The registry as `project` sees it.
    pub(crate) async fn load(&self, project: &str) -> Result<feast_core::registry::Catalog> {
        Ok(match self {
            RegistryAccess::Store(store) => store
                .load()
                .await?
                .0
                .map(feast_core::registry::Catalog::from_proto)
                .unwrap_or_default(),
            RegistryAccess::Remote(client) => client.load_project(project).await?,
        })
    }

    /// Where materialized intervals are recorded.
    pub(crate) fn into_recorder(self) -> feast_materializer::IntervalRecorder {
        match self {
            RegistryAccess::Store(store) => feast_materializer::IntervalRecorder::Store(store),
            RegistryAccess::Remote(client) => feast_materializer::IntervalRecorder::Remote(client),
        }
    }
}

/// How this process claims the views it materializes against the repository's other
/// processes (`command` names it in the claim): lock files next to a file registry, leases
/// in a SQL registry's database (held `lease_ttl` past a holder that stops renewing them);
/// `None` for a registry server, where one materializer service is the place to run jobs.
pub(crate) async fn view_locks(
    ctx: &RepoContext,
    command: &str,
    lease_ttl: std::time::Duration,
) -> Result<Option<feast_materializer::guard::ViewLocks>> {
    use feast_materializer::guard::{FileLocks, ViewLocks};
    use feast_materializer::lease::SharedLeases;
    Ok(match &ctx.config.registry {
        RegistryConfig::File(_) => {
            let path = ctx.config.registry_path().context("file registry path")?;
            Some(ViewLocks::Files(FileLocks::next_to_registry(
                &path, command,
            )))
        }
        RegistryConfig::Sql(sql) => {
            let (url, options) = crate::commands::sql_registry_options(sql)?;
            let store = SqlStore::connect(&url, options)
                .await
                .context("opening the SQL registry for materialization leases")?;
            let leases = store
                .leases()
                .await
                .context("the materialization lease table")?;
            let holder = format!("{} [{command}]", SharedLeases::holder_id());
            Some(ViewLocks::Leases(SharedLeases::new(
                leases, holder, lease_ttl,
            )))
        }
        RegistryConfig::Remote(_) => None,
    })
}

/// The cached registry a service reads, from feature_store.yaml's `registry:` (a file, a SQL
/// database or a registry server). A registry that cannot be loaded yet leaves the cache
/// empty (the service answers "unavailable" until a refresh succeeds).
async fn registry_cache(
    ctx: &RepoContext,
    ttl: std::time::Duration,
) -> Result<feast_registry::RegistryCache> {
    use feast_registry::{CacheSource, RegistryCache};
    let source = match RegistryAccess::open(ctx).await? {
        RegistryAccess::Store(store) => CacheSource::Store(store),
        RegistryAccess::Remote(client) => CacheSource::Remote {
            client: Box::new(client),
            project: ctx.config.project.clone(),
        },
    };
    let registry = RegistryCache::start(source, ttl).await;
    if registry.snapshot().is_none() {
        tracing::warn!(
            message =
                "the registry could not be loaded; serving unavailable until a refresh succeeds"
        );
    }
    Ok(registry)
}

/// The repository's offline store (the embedded engine, or a remote offline server), for
/// the feature server's `/materialize` and offline pushes; `None` for offline stores
/// feast-rs cannot use, whose routes then answer 501.
fn feature_server_offline(
    ctx: &RepoContext,
) -> Option<std::sync::Arc<feast_offline::AnyOfflineStore>> {
    match feast_offline::open_offline_store(&ctx.config) {
        Ok(o) => Some(std::sync::Arc::new(o)),
        Err(e) => {
            tracing::warn!(message = "/materialize and offline pushes are unavailable", error = %e);
            None
        }
    }
}

/// The in-process materializer behind `/materialize`, pulling from `offline`.
async fn local_materializer(
    ctx: &RepoContext,
    online: std::sync::Arc<dyn feast_online::OnlineStore>,
    offline: Option<std::sync::Arc<feast_offline::AnyOfflineStore>>,
) -> Result<Option<std::sync::Arc<dyn feast_online::materialize::MaterializeBackend>>> {
    let Some(offline) = offline else {
        return Ok(None);
    };
    let recorder = RegistryAccess::open(ctx).await?.into_recorder();
    let locks = view_locks(ctx, "feast-rs serve", std::time::Duration::from_secs(60)).await?;
    Ok(Some(std::sync::Arc::new(
        feast_materializer::LocalMaterializer {
            locks,
            offline,
            online,
            recorder: std::sync::Arc::new(recorder),
            project: ctx.config.project.clone(),
            options: feast_materializer::Options::for_config(&ctx.config),
        },
    )))
}

/// `serve`: the online feature server over HTTP (Feast's `feast serve`).
pub fn feature_server(ctx: &RepoContext, args: &crate::FeatureServeArgs) -> Result<()> {
    serve_one(|shutdown| start_feature_server(ctx, args, shutdown))
}

pub(crate) async fn start_feature_server(
    ctx: &RepoContext,
    args: &crate::FeatureServeArgs,
    shutdown: Shutdown,
) -> Result<Bound> {
    use feast_core::config::OnlineStoreConfig;

    let serve_args = ServeArgs {
        host: args.host.clone(),
        port: args.port,
        key: args.key.clone(),
        cert: args.cert.clone(),
    };
    let addr = address(&serve_args)?;
    match &ctx.config.online_store {
        Some(
            OnlineStoreConfig::Sqlite(_)
            | OnlineStoreConfig::Redis(_)
            | OnlineStoreConfig::Postgres(_),
        ) => {}
        Some(other) => bail!(
            "online_store type `{}` is not supported by `feast-rs serve` yet; sqlite, redis and \
             postgres are",
            other.type_name()
        ),
        None => bail!("feature_store.yaml has `online_store: null`: there is nothing to serve"),
    }
    let tls = match tls(&serve_args)? {
        Some(pem) => Some(feast_online::http::tls_config(&pem.cert, &pem.key)?),
        None => None,
    };
    let project = ctx.config.project.clone();
    let ttl = std::time::Duration::from_secs(args.registry_ttl_sec);
    let authenticator = feast_auth::Authenticator::from_config(&ctx.config.auth)
        .map_err(|e| anyhow::anyhow!("auth: {e}"))?;
    feast_auth::log_auth_mode("feature server", &authenticator);
    let auth = match authenticator {
        feast_auth::Authenticator::NoAuth => None,
        authenticator => Some(feast_online::http::ServerAuth {
            authenticator,
            authz: feast_online::authz::Authz {
                authorizer: authorizer(),
            },
        }),
    };
    let registry = registry_cache(ctx, ttl).await?;
    let store = feast_online::open_online_store(&ctx.config)
        .await
        .context("opening the online store")?;
    let offline = feature_server_offline(ctx);
    let materializer: Option<std::sync::Arc<dyn feast_online::materialize::MaterializeBackend>> =
        match &args.materializer {
            Some(url) => Some(std::sync::Arc::new(
                feast_materializer::RemoteMaterializer::new(
                    url,
                    ctx.config.project.clone(),
                    ctx.token_provider()?,
                    match &args.materializer_ca {
                        Some(p) => Some(std::fs::read(p).with_context(|| {
                            format!("reading --materializer-ca {}", p.display())
                        })?),
                        None => None,
                    },
                )
                .map_err(|e| anyhow::anyhow!("--materializer: {e}"))?,
            )),
            None => local_materializer(ctx, store.clone(), offline.clone()).await?,
        };
    let server = feast_online::http::FeatureServer {
        registry,
        store,
        project,
        read_options: feast_online::serving::ReadOptions {
            entity_key_serialization_version: ctx.config.entity_key_serialization_version,
            expired_as_present: args.expired_as_present,
            serve_while_materializing: ctx
                .config
                .registry
                .common()
                .serve_features_while_materializing,
            versioning: ctx
                .config
                .registry
                .common()
                .enable_online_feature_view_versioning,
        },
        max_request_bytes: args.max_request_bytes,
        metrics: args
            .metrics
            .then(|| std::sync::Arc::new(feast_online::metrics::Metrics::new())),
        index: Default::default(),
        materializer,
        offline: offline.map(|o| {
            std::sync::Arc::new(crate::offline_writer::StoreWriter(o))
                as std::sync::Arc<dyn feast_online::write::OfflineWriter>
        }),
        running: Default::default(),
        auth,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr()?;
    let banner = format!(
        "feast-rs feature server listening on {bound} ({})",
        if tls.is_some() {
            "HTTPS and gRPC over TLS"
        } else {
            "HTTP and gRPC"
        }
    );
    Ok(Bound {
        addr: bound,
        banner,
        serve: Box::pin(async move {
            match tls {
                Some(tls) => feast_online::http::serve_tls(listener, server, tls, shutdown).await?,
                None => feast_online::http::serve(listener, server, shutdown).await?,
            }
            Ok(())
        }),
    })
}

/// `serve-offline`: the offline store over Arrow Flight (Feast's `feast serve_offline`).
pub fn offline_server(ctx: &RepoContext, args: &crate::OfflineServeArgs) -> Result<()> {
    serve_one(|shutdown| start_offline_server(ctx, args, shutdown))
}

pub(crate) async fn start_offline_server(
    ctx: &RepoContext,
    args: &crate::OfflineServeArgs,
    shutdown: Shutdown,
) -> Result<Bound> {
    use feast_core::config::OfflineStoreConfig;
    let serve_args = ServeArgs {
        host: args.host.clone(),
        port: args.port,
        key: args.key.clone(),
        cert: args.cert.clone(),
    };
    let addr = address(&serve_args)?;
    // The engine serves file repositories and, with `type: postgres`, Postgres sources;
    // a remote store would make this server a proxy of another one.
    if let Some(OfflineStoreConfig::Remote(_)) = &ctx.config.offline_store {
        bail!(
            "offline_store type `remote` cannot be served by `feast-rs serve-offline`: give the \
             server the store it reads (`file`, `duckdb` or `postgres`)"
        );
    }
    let tls = tls(&serve_args)?.map(|pem| feast_offline::TlsPem {
        cert: pem.cert,
        key: pem.key,
    });
    let authenticator = feast_auth::Authenticator::from_config(&ctx.config.auth)
        .map_err(|e| anyhow::anyhow!("auth: {e}"))?;
    let ttl = std::time::Duration::from_secs(args.registry_ttl_sec);
    let mut store = feast_offline::FileOfflineStore::for_config(&ctx.config)?;
    if let Some(mib) = args.memory_limit_mb {
        store = store.with_memory_limit(mib << 20)?;
    }
    feast_auth::log_auth_mode("offline server", &authenticator);
    let registry = registry_cache(ctx, ttl).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr()?;
    let scheme = if tls.is_some() {
        "grpc+tls"
    } else {
        "grpc+tcp"
    };
    let options = feast_offline::FlightOptions {
        location: format!("{scheme}://{}:{}", args.host, bound.port()),
        ..Default::default()
    };
    let authorizer = authenticator.is_enabled().then(authorizer);
    let service = feast_offline::OfflineFlightService::new(
        registry,
        std::sync::Arc::new(store),
        ctx.config.project.clone(),
        authorizer,
        options,
    );
    Ok(Bound {
        addr: bound,
        banner: format!("feast-rs offline server listening on {bound} ({scheme}, Arrow Flight)"),
        serve: Box::pin(async move {
            feast_offline::serve_on(listener, service, authenticator, tls, shutdown).await?;
            Ok(())
        }),
    })
}

/// `serve-materializer`: materialization jobs over gRPC, on the schedules of `--every` and
/// `--schedule`, with Prometheus metrics on `--metrics-port`.
pub fn materializer_server(ctx: &RepoContext, args: &crate::MaterializerServeArgs) -> Result<()> {
    serve_one(|shutdown| start_materializer(ctx, args, shutdown))
}

pub(crate) async fn start_materializer(
    ctx: &RepoContext,
    args: &crate::MaterializerServeArgs,
    shutdown: Shutdown,
) -> Result<Bound> {
    let serve_args = ServeArgs {
        host: args.host.clone(),
        port: args.port,
        key: args.key.clone(),
        cert: args.cert.clone(),
    };
    let addr = address(&serve_args)?;
    let tls = tls(&serve_args)?.map(|t| feast_materializer::service::TlsPem {
        cert: t.cert,
        key: t.key,
    });
    use feast_materializer::schedule::{Cadence, Schedule};
    let mut schedules = Vec::new();
    if let Some(text) = &args.every {
        schedules.push(Schedule {
            cadence: Cadence::parse(text).map_err(|e| anyhow::anyhow!("--every: {e}"))?,
            views: vec![],
        });
    }
    for text in &args.schedule {
        schedules
            .push(Schedule::parse_for_views(text).map_err(|e| anyhow::anyhow!("--schedule {e}"))?);
    }
    let authenticator = feast_auth::Authenticator::from_config(&ctx.config.auth)
        .map_err(|e| anyhow::anyhow!("auth: {e}"))?;
    let ttl = std::time::Duration::from_secs(args.registry_ttl_sec);
    feast_auth::log_auth_mode("materializer", &authenticator);
    let offline = feast_offline::open_offline_store(&ctx.config)?;
    let registry = registry_cache(ctx, ttl).await?;
    let recorder = RegistryAccess::open(ctx).await?.into_recorder();
    let online = feast_online::open_online_store(&ctx.config)
        .await
        .context("opening the online store")?;
    let mut manager = feast_materializer::JobManager::new(
        std::sync::Arc::new(offline),
        online,
        std::sync::Arc::new(recorder),
        registry,
        ctx.config.project.clone(),
        feast_materializer::Options::for_config(&ctx.config),
    );
    manager.parallelism = args.parallelism.max(1);
    manager.authorizer = authenticator.is_enabled().then(authorizer);
    manager.metrics = args
        .metrics_port
        .map(|_| std::sync::Arc::new(feast_materializer::metrics::Metrics::new()));
    // Several replicas on one SQL registry split the views through leases in its database;
    // on a file registry, lock files keep a CLI run or a feature server off the views a job
    // of this service is running (and the other way round).
    manager.locks = view_locks(
        ctx,
        "feast-rs serve-materializer",
        std::time::Duration::from_secs(args.lease_ttl_sec),
    )
    .await?;
    match &manager.locks {
        Some(feast_materializer::guard::ViewLocks::Leases(shared)) => tracing::info!(
            message = "views are leased through the SQL registry, shared with other replicas",
            holder = shared.holder()
        ),
        Some(feast_materializer::guard::ViewLocks::Files(_)) => tracing::info!(
            message = "views are locked with lock files next to the registry, against other processes of the repository"
        ),
        None => {}
    }
    let manager = std::sync::Arc::new(manager);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr()?;
    let metrics_listener = match args.metrics_port {
        Some(port) => {
            let at = SocketAddr::new(addr.ip(), port);
            Some(
                tokio::net::TcpListener::bind(at)
                    .await
                    .with_context(|| format!("binding --metrics-port {at}"))?,
            )
        }
        None => None,
    };
    let mut banner = format!(
        "feast-rs materializer listening on {bound} (gRPC{})",
        if tls.is_some() { " with TLS" } else { "" },
    );
    if let Some(l) = &metrics_listener {
        banner.push_str(&format!(", metrics at http://{}/metrics", l.local_addr()?));
    }
    for schedule in &schedules {
        banner.push_str(&format!(
            ", incremental jobs of {} {}",
            if schedule.views.is_empty() {
                "every online view".to_owned()
            } else {
                schedule.views.join(", ")
            },
            schedule.cadence
        ));
    }
    Ok(Bound {
        addr: bound,
        banner,
        serve: Box::pin(async move {
            let schedules = manager.schedule_all(schedules);
            // One shutdown for the gRPC server and the metrics endpoint.
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let stopped = move || {
                let mut rx = stop_rx.clone();
                async move {
                    let _ = rx.wait_for(|s| *s).await;
                }
            };
            let metrics = metrics_listener.map(|l| {
                tokio::spawn(feast_materializer::service::serve_metrics(
                    l,
                    manager.clone(),
                    stopped(),
                ))
            });
            let served = feast_materializer::service::serve_on(
                listener,
                manager.clone(),
                authenticator,
                tls,
                async move {
                    shutdown.await;
                    let _ = stop_tx.send(true);
                },
            )
            .await;
            // Stopping: no new scheduled jobs, and running ones are cancelled (their
            // unfinished windows record nothing, so the next incremental run redoes them).
            for schedule in schedules {
                schedule.abort();
            }
            let cancelled = manager.cancel_all();
            if cancelled > 0 {
                tracing::info!(
                    message = "cancelled running jobs on shutdown",
                    jobs = cancelled
                );
            }
            if let Some(metrics) = metrics {
                metrics.await.context("the metrics endpoint")??;
            }
            served?;
            Ok(())
        }),
    })
}
