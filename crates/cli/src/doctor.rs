//! `feast-rs doctor`: checks a feature repository and the stores and services it names, and
//! says what is wrong, one line per check:
//!
//! ```text
//! OK    config         feature_store.yaml: project demo, registry file, online store sqlite, ...
//! FAIL  offline store  feature view driver_hourly_stats: data/x.parquet does not exist; hint: ...
//! ```
//!
//! Every check that leaves the process has its own timeout, so doctor never hangs. A registry
//! or online database that does not exist yet is reported, not made, and Feast's SQL
//! registry tables are only looked for. The one thing a check may create is what every
//! feast-rs process connecting to a SQL registry creates: feast-rs's one-row
//! `feast_rs_registry_version` table. Exit status 1 when any check FAILs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use feast_core::config::{
    AuthConfig, OfflineStoreConfig, OnlineStoreConfig, RedisOnlineStoreConfig, RedisType,
    RegistryConfig, RepoConfig, SchemaMode, SqlUrl,
};
use feast_core::registry::Catalog;
use feast_core::registry::diff::{self, DesiredState, Transition};
use feast_offline::OfflineStore;
use feast_proto::core;

use crate::commands::RepoContext;
use crate::probe;

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// Also probe a registry server (`grpc://host:6570`, `grpcs://...`).
    #[arg(long, value_name = "URL")]
    registry_url: Option<String>,
    /// Also probe a feature server (`http://host:6566`, whose /readyz is asked, or a full
    /// URL, or `grpc://host:6566`).
    #[arg(long, value_name = "URL")]
    online_url: Option<String>,
    /// Also probe an offline server (`grpc://host:8815`).
    #[arg(long, value_name = "URL")]
    offline_url: Option<String>,
    /// Also probe a materializer (`grpc://host:6571`).
    #[arg(long, value_name = "URL")]
    materializer_url: Option<String>,
    /// Longest time one check may take, in seconds.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    timeout: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Warn,
    Fail,
}

/// The findings so far; each is printed as soon as it is known.
#[derive(Default)]
struct Report {
    counts: [usize; 3],
}

impl Report {
    fn add(&mut self, level: Level, check: &str, reason: impl AsRef<str>, hint: Option<&str>) {
        let tag = match level {
            Level::Ok => "OK",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        self.counts[level as usize] += 1;
        let reason = reason.as_ref().trim_end();
        let mut text = format!("{tag:<5} {check:<14} {reason}");
        if let Some(hint) = hint {
            if reason.contains('\n') {
                text.push_str(&format!("\nhint: {hint}"));
            } else {
                text.push_str(&format!("; hint: {hint}"));
            }
        }
        // Continuation lines (multi-line errors) are indented under the reason.
        println!("{}", text.replace('\n', &format!("\n{:21}", "")));
    }

    fn ok(&mut self, check: &str, reason: impl AsRef<str>) {
        self.add(Level::Ok, check, reason, None);
    }

    fn warn(&mut self, check: &str, reason: impl AsRef<str>, hint: &str) {
        self.add(Level::Warn, check, reason, Some(hint));
    }

    fn fail(&mut self, check: &str, reason: impl AsRef<str>, hint: &str) {
        self.add(Level::Fail, check, reason, Some(hint));
    }

    fn finish(self) -> Result<()> {
        let [ok, warn, fail] = self.counts;
        println!("\n{ok} OK, {warn} WARN, {fail} FAIL");
        if fail > 0 {
            bail!("{fail} check{} failed", if fail == 1 { "" } else { "s" });
        }
        Ok(())
    }
}

/// `fut`, or an error saying it took longer than `limit`.
async fn timed<T, E: std::fmt::Display>(
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {:.1}s", limit.as_secs_f64())),
    }
}

/// `doctor` on the repository `repo` (its feature_store.yaml, or `yaml`).
pub fn run(repo: &Path, yaml: Option<&Path>, args: &DoctorArgs) -> Result<()> {
    let timeout = probe::seconds(args.timeout).context("--timeout")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the Tokio runtime")?;
    let mut report = Report::default();
    runtime.block_on(async {
        match RepoConfig::load(repo, yaml) {
            Ok(config) => {
                let ctx = RepoContext {
                    repo: repo.to_path_buf(),
                    config,
                };
                check_repository(&ctx, timeout, &mut report).await;
            }
            Err(e) => {
                let hint = match e.kind() {
                    feast_core::config::ConfigErrorKind::Io => {
                        "run in a feature repository or name it with -c DIR (or the file with -f); \
                         `feast-rs init` creates one"
                    }
                    _ => {
                        "fix feature_store.yaml where the message points; the other checks need it"
                    }
                };
                report.fail("config", e.to_string(), hint);
            }
        }
        check_services(args, timeout, &mut report).await;
    });
    report.finish()
}

async fn check_repository(ctx: &RepoContext, timeout: Duration, report: &mut Report) {
    let config = &ctx.config;
    report.ok(
        "config",
        format!(
            "{}: project {}, registry {}, online store {}, offline store {}, auth {}",
            display_path(ctx, &config_file(ctx)),
            config.project,
            match &config.registry {
                RegistryConfig::File(_) => "file",
                RegistryConfig::Sql(_) => "sql",
                RegistryConfig::Remote(_) => "remote",
            },
            config
                .online_store
                .as_ref()
                .map_or("none", |o| o.type_name()),
            config
                .offline_store
                .as_ref()
                .map_or("none", |o| match o.type_name() {
                    "dask" => "file",
                    other => other,
                }),
            config.auth.type_name(),
        ),
    );
    for warning in config.warnings() {
        report.warn(
            "config",
            warning,
            "Feast accepts this too, but it is probably not what you meant",
        );
    }

    let desired = match feast_core::repo::load_repo(&ctx.repo, &config.project) {
        Ok(d) => {
            let n = object_count(&d);
            if n == 0 {
                report.ok(
                    "definitions",
                    "no definition files here (the registry is managed from elsewhere)",
                );
            } else {
                report.ok("definitions", format!("{n} objects parse"));
            }
            Some(d).filter(|_| n > 0)
        }
        Err(e) => {
            report.fail(
                "definitions",
                e.to_string(),
                "fix the definitions listed; `feast-rs plan` shows the same errors",
            );
            None
        }
    };

    let catalog = check_registry(ctx, timeout, report).await;
    if let (Some(catalog), Some(desired)) = (&catalog, &desired) {
        let plan = diff::diff(catalog, &config.project, desired);
        let count = |t: Transition| plan.objects.iter().filter(|o| o.transition == t).count();
        if plan.has_changes() {
            report.warn(
                "plan",
                format!(
                    "the registry differs from the definitions: apply would create {}, update {}, \
                     delete {}",
                    count(Transition::Create),
                    count(Transition::Update),
                    count(Transition::Delete)
                ),
                "`feast-rs plan` shows the changes, `feast-rs apply` makes them",
            );
        } else {
            report.ok("plan", "the registry matches the definitions");
        }
    }

    check_online_store(ctx, timeout, report).await;
    check_offline_store(ctx, desired.as_ref(), catalog.as_ref(), timeout, report).await;
    check_auth(config, timeout, report).await;
}

fn config_file(ctx: &RepoContext) -> PathBuf {
    ctx.repo.join("feature_store.yaml")
}

/// `path` relative to the repository when it is inside it.
fn display_path(ctx: &RepoContext, path: &Path) -> String {
    path.strip_prefix(&ctx.repo)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn object_count(d: &DesiredState) -> usize {
    d.data_sources.len()
        + d.entities.len()
        + d.feature_views.len()
        + d.on_demand_feature_views.len()
        + d.stream_feature_views.len()
        + d.label_views.len()
        + d.feature_services.len()
        + d.permissions.len()
}

/// A summary of what the registry holds for the project.
fn registry_summary(catalog: &Catalog, project: &str) -> String {
    let none = BTreeMap::new();
    let views = catalog.list::<core::FeatureView>(project, &none).count()
        + catalog
            .list::<core::OnDemandFeatureView>(project, &none)
            .count()
        + catalog
            .list::<core::StreamFeatureView>(project, &none)
            .count();
    if catalog.has_project(project) {
        format!(
            "project {project} has {views} feature views, {} feature services",
            catalog.list::<core::FeatureService>(project, &none).count()
        )
    } else {
        format!("project {project} is not registered yet")
    }
}

/// Checks `registry:` and returns the project's registry when it could be loaded.
async fn check_registry(
    ctx: &RepoContext,
    timeout: Duration,
    report: &mut Report,
) -> Option<Catalog> {
    const CHECK: &str = "registry";
    let project = &ctx.config.project;
    match &ctx.config.registry {
        RegistryConfig::File(file) => {
            if file.path.contains("://") && !file.path.starts_with("file://") {
                report.warn(
                    CHECK,
                    format!("{} is not a local file; not checked", file.path),
                    "feast-rs reads local registry files, SQL registries and registry servers",
                );
                return None;
            }
            let path = ctx.config.registry_path()?;
            let shown = display_path(ctx, &path);
            if !path.exists() {
                let parent = path.parent().unwrap_or(Path::new("."));
                if parent.exists() && !parent.is_dir() {
                    report.fail(
                        CHECK,
                        format!(
                            "{shown} cannot be created: {} is not a directory",
                            parent.display()
                        ),
                        "point `registry:` at a path in a directory",
                    );
                } else {
                    report.warn(
                        CHECK,
                        format!("{shown} does not exist yet"),
                        "`feast-rs apply` creates it",
                    );
                }
                return Some(Catalog::default());
            }
            match feast_core::registry::file::FileRegistryStore::new(&path).load_or_empty() {
                Ok(catalog) => {
                    report.ok(
                        CHECK,
                        format!("{shown} loads: {}", registry_summary(&catalog, project)),
                    );
                    Some(catalog)
                }
                Err(e) => {
                    report.fail(
                        CHECK,
                        format!("{shown}: {e}"),
                        "restore it from a copy, or remove it and run `feast-rs apply` again",
                    );
                    None
                }
            }
        }
        RegistryConfig::Sql(sql) => {
            let (url, mut options) = match crate::commands::sql_registry_options(sql) {
                Ok(o) => o,
                Err(e) => {
                    report.fail(CHECK, format!("{e:#}"), "fix registry.path");
                    return None;
                }
            };
            if let SqlUrl::Sqlite(path) = &url
                && path.as_os_str() != ":memory:"
                && !path.exists()
            {
                report.warn(
                    CHECK,
                    format!("SQLite registry {} does not exist yet", path.display()),
                    "`feast-rs apply` creates it (a relative path is relative to the working \
                     directory, as in Feast)",
                );
                return Some(Catalog::default());
            }
            // Check the tables without creating them, whatever `schema_mode` says, and never
            // purge feast_metadata from here.
            let configured_mode = options.schema_mode;
            options.schema_mode = SchemaMode::Verify;
            options.purge_feast_metadata = false;
            options.max_connections = 1;
            options.timeout = timeout;
            let store = match timed(timeout, feast_registry::SqlStore::connect(&url, options)).await
            {
                Ok(store) => store,
                Err(e) if e.contains("missing tables") && configured_mode == SchemaMode::Auto => {
                    // The store's text tells to set schema_mode: auto, which it is.
                    let missing = e
                        .split("missing tables: ")
                        .nth(1)
                        .and_then(|rest| rest.split(". ").next())
                        .unwrap_or_default();
                    report.warn(
                        CHECK,
                        format!("SQL registry: Feast's tables do not exist yet ({missing})"),
                        "with schema_mode: auto, `feast-rs apply` or `serve-registry` creates them",
                    );
                    return Some(Catalog::default());
                }
                Err(e) => {
                    report.fail(
                        CHECK,
                        format!("SQL registry: {e}"),
                        "check that the database is up and that registry.path (user, password, \
                         host, database) is right",
                    );
                    return None;
                }
            };
            use feast_registry::RegistryStore;
            let loaded = timed(timeout, store.load()).await;
            store.close().await;
            match loaded {
                Ok((registry, _)) => {
                    let catalog = registry.map(Catalog::from_proto).unwrap_or_default();
                    report.ok(
                        CHECK,
                        format!(
                            "SQL registry {} loads: {}",
                            store.location(),
                            registry_summary(&catalog, project)
                        ),
                    );
                    Some(catalog)
                }
                Err(e) => {
                    report.fail(
                        CHECK,
                        format!("SQL registry: {e}"),
                        "the tables are there but cannot be read",
                    );
                    None
                }
            }
        }
        RegistryConfig::Remote(remote) => {
            let options = match ctx.remote_registry_options(remote) {
                Ok(o) => o,
                Err(e) => {
                    report.fail(
                        CHECK,
                        format!("{e:#}"),
                        "fix the certificate paths under registry:",
                    );
                    return None;
                }
            };
            let tls = options.is_tls || options.ca_cert.is_some();
            // The health service answers without credentials; with mutual TLS only the
            // registry client below can connect.
            if options.client_identity.is_none() && options.authority.is_none() {
                let url = format!("{}://{}", if tls { "grpcs" } else { "grpc" }, remote.path);
                if let Err(e) =
                    probe::probe(&url, "", timeout, None, options.ca_cert.as_deref()).await
                {
                    report.fail(
                        CHECK,
                        format!("registry server {}: {e}", remote.path),
                        "start `feast-rs serve-registry` there, or fix registry.path",
                    );
                    return None;
                }
            }
            let loaded = timed(timeout, async {
                let client = feast_registry::RemoteRegistry::connect(&options).await?;
                client.load_project(project).await
            })
            .await;
            match loaded {
                Ok(catalog) => {
                    report.ok(
                        CHECK,
                        format!(
                            "registry server {} is SERVING and answers: {}",
                            remote.path,
                            registry_summary(&catalog, project)
                        ),
                    );
                    Some(catalog)
                }
                Err(e) => {
                    let hint = if e.contains("Unauthenticated")
                        || e.contains("PermissionDenied")
                        || e.contains("FeastPermissionError")
                    {
                        "the server refused this repository's credentials: check auth:"
                    } else {
                        "the server is up but its answers failed; see its log"
                    };
                    report.fail(CHECK, format!("registry server {}: {e}", remote.path), hint);
                    None
                }
            }
        }
    }
}

async fn check_online_store(ctx: &RepoContext, timeout: Duration, report: &mut Report) {
    const CHECK: &str = "online store";
    let config = &ctx.config;
    match &config.online_store {
        None => report.ok(CHECK, "online_store: null (no online store)"),
        Some(OnlineStoreConfig::Sqlite(_)) => {
            let Some(path) = config.sqlite_online_store_path() else {
                return;
            };
            let shown = display_path(ctx, &path);
            if path.exists() {
                match std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                {
                    Ok(_) => report.ok(CHECK, format!("SQLite {shown} is readable and writable")),
                    Err(e) => report.fail(
                        CHECK,
                        format!("SQLite {shown}: {e}"),
                        "the servers and `materialize` need to write it: fix its permissions",
                    ),
                }
                return;
            }
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            match writable_dir(parent) {
                Ok(()) => report.warn(
                    CHECK,
                    format!("SQLite {shown} does not exist yet"),
                    "`feast-rs apply` creates it with the views' tables",
                ),
                Err(e) => report.fail(
                    CHECK,
                    format!("SQLite {shown} cannot be created: {e}"),
                    "point online_store.path at a writable directory",
                ),
            }
        }
        Some(OnlineStoreConfig::Redis(redis)) => check_redis(config, redis, timeout, report).await,
        Some(OnlineStoreConfig::Postgres(pg)) => {
            let target = format!("{}:{}/{}", pg.host, pg.port, pg.database);
            let connected = timed(
                timeout,
                feast_online::store::postgres::PostgresOnlineStore::connect_with(
                    pg,
                    feast_online::store::postgres::PostgresOnlineStoreOptions {
                        acquire_timeout: timeout,
                    },
                ),
            )
            .await;
            match connected {
                Ok(store) => {
                    report.ok(
                        CHECK,
                        format!("Postgres {target} connects (schema {})", store.schema()),
                    );
                    store.close().await;
                }
                Err(e) => report.fail(
                    CHECK,
                    e,
                    "check that Postgres is up and online_store's host, port, database, user \
                     and password",
                ),
            }
        }
        Some(OnlineStoreConfig::Remote(remote)) => {
            let url = format!("{}/health", remote.path.trim_end_matches('/'));
            let ca = (!remote.cert.is_empty()).then(|| config.resolve_path(&remote.cert));
            match probe::probe(&url, "", timeout, ca.as_deref(), None).await {
                Ok(_) => report.ok(CHECK, format!("feature server {} is ready", remote.path)),
                Err(e) => report.fail(
                    CHECK,
                    format!("feature server {url}: {e}"),
                    "start `feast-rs serve` there, or fix online_store.path",
                ),
            }
        }
    }
}

/// Can files be created in `dir` (it exists and is a writable directory)? Tried for real
/// with a file removed at once, as permissions alone do not tell (root, read-only mounts).
fn writable_dir(dir: &Path) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let probe = dir.join(format!(".feast-rs-doctor-{}", std::process::id()));
    std::fs::File::create(&probe).map_err(|e| format!("{}: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// PING on every node the connection string names (a plain `redis` deployment uses only
/// the first), then, for a cluster, the cluster client the servers use.
async fn check_redis(
    config: &RepoConfig,
    redis_config: &RedisOnlineStoreConfig,
    timeout: Duration,
    report: &mut Report,
) {
    const CHECK: &str = "online store";
    const HINT: &str = "start Redis there, or fix online_store.connection_string";
    if redis_config.redis_type == RedisType::RedisSentinel {
        report.fail(
            CHECK,
            "redis_type: redis_sentinel is not supported by feast-rs",
            "use redis or redis_cluster",
        );
        return;
    }
    let cs = match redis_config.parsed_connection_string() {
        Ok(cs) => cs,
        Err(e) => {
            report.fail(CHECK, format!("connection_string: {e}"), HINT);
            return;
        }
    };
    let nodes: Vec<_> = match redis_config.redis_type {
        RedisType::Redis => cs.nodes.iter().take(1).collect(),
        _ => cs.nodes.iter().collect(),
    };
    let mut failed = false;
    for node in nodes {
        let port = node.port.unwrap_or(6379);
        let address = format!("{}:{port}", node.host);
        match timed(timeout, redis_ping(&cs, &node.host, port)).await {
            Ok(pong) => report.ok(CHECK, format!("Redis {address} answers PING ({pong})")),
            Err(e) => {
                failed = true;
                report.fail(CHECK, format!("Redis {address}: {e}"), HINT);
            }
        }
    }
    if redis_config.redis_type == RedisType::RedisCluster && !failed {
        match timed(timeout, feast_online::open_online_store(config)).await {
            Ok(_) => report.ok(CHECK, "Redis Cluster client connects (slots discovered)"),
            Err(e) => report.fail(
                CHECK,
                e,
                "the nodes answer but do not form a cluster: check `CLUSTER INFO`, or use \
                 redis_type: redis",
            ),
        }
    }
}

async fn redis_ping(
    cs: &feast_core::config::RedisConnectionString,
    host: &str,
    port: u16,
) -> Result<String, String> {
    use redis::IntoConnectionInfo;
    let insecure = cs
        .options
        .get("ssl_cert_reqs")
        .and_then(|v| v.as_str())
        .is_some_and(|v| v.eq_ignore_ascii_case("none"));
    let addr = if cs.ssl {
        redis::ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure,
            tls_params: None,
        }
    } else {
        redis::ConnectionAddr::Tcp(host.to_owned(), port)
    };
    let info = addr.into_connection_info().map_err(|e| e.to_string())?;
    let mut settings = info.redis_settings().clone();
    if let Some(db) = cs.db {
        settings = settings.set_db(db);
    }
    if let Some(user) = &cs.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &cs.password {
        settings = settings.set_password(password);
    }
    let client =
        redis::Client::open(info.set_redis_settings(settings)).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map_err(|e| e.to_string())
}

/// The batch sources of the project's feature views (the definitions', else the
/// registry's), by view, plus file sources no view uses.
fn sources_to_check<'a>(
    desired: Option<&'a DesiredState>,
    catalog: Option<&'a Catalog>,
    project: &'a str,
) -> Vec<(Option<String>, core::DataSource)> {
    let none = BTreeMap::new();
    let (views, sources): (Vec<&core::FeatureView>, Vec<&core::DataSource>) =
        match (desired, catalog) {
            (Some(d), _) => (
                d.feature_views.iter().collect(),
                d.data_sources.iter().collect(),
            ),
            (None, Some(c)) => (
                c.list::<core::FeatureView>(project, &none).collect(),
                c.list::<core::DataSource>(project, &none).collect(),
            ),
            (None, None) => (vec![], vec![]),
        };
    let mut out: Vec<(Option<String>, core::DataSource)> = Vec::new();
    let mut used = BTreeSet::new();
    for view in views {
        let Some(spec) = &view.spec else { continue };
        if let Some(source) = &spec.batch_source {
            used.insert(source.name.clone());
            out.push((Some(spec.name.clone()), source.clone()));
        }
    }
    for source in sources {
        let is_file = matches!(
            source.options,
            Some(core::data_source::Options::FileOptions(_))
        );
        if is_file && !used.contains(&source.name) {
            out.push((None, source.clone()));
        }
    }
    out
}

/// The source columns a feature view needs: its join keys, features and timestamp
/// columns, each satisfied by a column of that name or one `field_mapping` renames to it.
fn needed_columns(view: Option<&core::FeatureView>, source: &core::DataSource) -> Vec<String> {
    let mut needed = vec![source.timestamp_field.clone()];
    needed.push(source.created_timestamp_column.clone());
    if let Some(spec) = view.and_then(|v| v.spec.as_ref()) {
        needed.extend(spec.entity_columns.iter().map(|c| c.name.clone()));
        needed.extend(spec.features.iter().map(|c| c.name.clone()));
    }
    needed.retain(|c| !c.is_empty() && c != feast_core::model::DUMMY_ENTITY_ID);
    needed.dedup();
    needed
}

async fn check_offline_store(
    ctx: &RepoContext,
    desired: Option<&DesiredState>,
    catalog: Option<&Catalog>,
    timeout: Duration,
    report: &mut Report,
) {
    const CHECK: &str = "offline store";
    let config = &ctx.config;
    match &config.offline_store {
        None | Some(OfflineStoreConfig::Dask(_) | OfflineStoreConfig::Duckdb(_)) => {}
        // File sources are checked below like a file store's; Postgres sources too.
        Some(OfflineStoreConfig::Postgres(_)) => {}
        Some(OfflineStoreConfig::Remote(remote)) => {
            let tls = remote.scheme == feast_core::config::FlightScheme::Https;
            let ca = if remote.cert.is_empty() {
                None
            } else {
                match std::fs::read(config.resolve_path(&remote.cert)) {
                    Ok(pem) => Some(pem),
                    Err(e) => {
                        report.fail(
                            CHECK,
                            format!("offline_store.cert {}: {e}", remote.cert),
                            "fix offline_store.cert",
                        );
                        return;
                    }
                }
            };
            let Some(port) = remote.port else {
                report.fail(
                    CHECK,
                    "offline_store.port is not set",
                    "set the offline server's port (8815 by default)",
                );
                return;
            };
            let url = format!(
                "{}://{}:{port}",
                if tls { "grpcs" } else { "grpc" },
                remote.host
            );
            match probe::probe(&url, "", timeout, None, ca.as_deref()).await {
                Ok(_) => report.ok(
                    CHECK,
                    format!("offline server {} is SERVING", remote.location()),
                ),
                Err(e) => report.fail(
                    CHECK,
                    format!("offline server {}: {e}", remote.location()),
                    "start `feast-rs serve-offline` there, or fix offline_store host/port",
                ),
            }
            return;
        }
    }

    let none = BTreeMap::new();
    let views: HashMap<&str, &core::FeatureView> = match (desired, catalog) {
        (Some(d), _) => d
            .feature_views
            .iter()
            .filter_map(|v| Some((v.spec.as_ref()?.name.as_str(), v)))
            .collect(),
        (None, Some(c)) => c
            .list::<core::FeatureView>(&config.project, &none)
            .filter_map(|v| Some((v.spec.as_ref()?.name.as_str(), v)))
            .collect(),
        (None, None) => HashMap::new(),
    };
    // One check per file path, however many views read it.
    let mut by_path: BTreeMap<PathBuf, Vec<(Option<String>, core::DataSource)>> = BTreeMap::new();
    let mut other = BTreeSet::new();
    let mut failed = false;
    for (view, source) in sources_to_check(desired, catalog, &config.project) {
        match feast_offline::source::FileLocation::of(
            view.as_deref().unwrap_or(&source.name),
            &source,
            &config.repo_path,
        ) {
            Ok(location) => by_path
                .entry(location.path)
                .or_default()
                .push((view, source)),
            Err(_)
                if !matches!(
                    source.options,
                    Some(core::data_source::Options::FileOptions(_))
                ) =>
            {
                other.insert(source.name.clone());
            }
            Err(e) => {
                failed = true;
                report.fail(
                    CHECK,
                    format!("source {}: {}", source.name, offline_text(e)),
                    "use a local file, directory or glob",
                );
            }
        }
    }
    let store = feast_offline::FileOfflineStore::new(&config.repo_path);
    for (path, users) in &by_path {
        let shown = display_path(ctx, path);
        let readers = users
            .iter()
            .map(|(v, s)| match v {
                Some(v) => format!("feature view {v}"),
                None => format!("source {}", s.name),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let glob = shown.contains(['*', '?', '[']);
        if !glob && !path.exists() {
            failed = true;
            report.fail(
                CHECK,
                format!("{shown} does not exist (read by {readers})"),
                "fix the source's path, or create the file",
            );
            continue;
        }
        let columns = timed(timeout, async {
            store
                .column_names_and_types(&users[0].1)
                .await
                .map_err(offline_text)
        })
        .await;
        let columns: BTreeSet<String> = match columns {
            Ok(c) => c.into_iter().map(|(name, _)| name).collect(),
            Err(e) => {
                failed = true;
                report.fail(
                    CHECK,
                    format!("{shown} cannot be read (by {readers}): {e}"),
                    "file sources must be Parquet, or CSV with a header row",
                );
                continue;
            }
        };
        for (view, source) in users {
            let available: BTreeSet<&str> = columns
                .iter()
                .map(|c| source.field_mapping.get(c).unwrap_or(c).as_str())
                .chain(columns.iter().map(String::as_str))
                .collect();
            let view_proto = view.as_deref().and_then(|v| views.get(v).copied());
            let missing: Vec<String> = needed_columns(view_proto, source)
                .into_iter()
                .filter(|c| !available.contains(c.as_str()))
                .collect();
            if !missing.is_empty() {
                failed = true;
                let who = match view {
                    Some(v) => format!("feature view {v}"),
                    None => format!("source {}", source.name),
                };
                report.fail(
                    CHECK,
                    format!(
                        "{shown} has no column {} (needed by {who})",
                        missing.join(", ")
                    ),
                    "add the columns, or map them with the source's field_mapping",
                );
            }
        }
    }
    if !failed {
        let n = by_path.len();
        report.ok(
            CHECK,
            match n {
                0 => "no file sources to check".to_owned(),
                1 => "1 file source path readable with the columns its views need".to_owned(),
                n => format!("{n} file source paths readable with the columns their views need"),
            },
        );
    }
    if let Some(OfflineStoreConfig::Postgres(_)) = &config.offline_store {
        let postgres: Vec<(Option<String>, core::DataSource)> =
            sources_to_check(desired, catalog, &config.project)
                .into_iter()
                .filter(|(_, s)| feast_offline::postgres::PostgresOptions::of(s).is_some())
                .collect();
        other.retain(|name| !postgres.iter().any(|(_, s)| &s.name == name));
        check_postgres_sources(config, &postgres, &views, timeout, report).await;
    }
    if !other.is_empty() {
        report.warn(
            CHECK,
            format!(
                "sources not read by the feast-rs file engine, not checked: {}",
                other.into_iter().collect::<Vec<_>>().join(", ")
            ),
            "they are served by their own offline store",
        );
    }
}

/// Each Postgres source (`offline_store: postgres`) is described by the database and has
/// the columns its views need.
async fn check_postgres_sources(
    config: &RepoConfig,
    sources: &[(Option<String>, core::DataSource)],
    views: &HashMap<&str, &core::FeatureView>,
    timeout: Duration,
    report: &mut Report,
) {
    const CHECK: &str = "offline store";
    let store = match feast_offline::FileOfflineStore::for_config(config) {
        Ok(s) => s,
        Err(e) => {
            report.fail(CHECK, offline_text(e), "fix offline_store");
            return;
        }
    };
    let mut failed = false;
    for (view, source) in sources {
        let who = match view {
            Some(v) => format!("feature view {v}"),
            None => format!("source {}", source.name),
        };
        let columns = timed(timeout, async {
            store
                .column_names_and_types(source)
                .await
                .map_err(offline_text)
        })
        .await;
        let columns: BTreeSet<String> = match columns {
            Ok(c) => c.into_iter().map(|(name, _)| name).collect(),
            Err(e) => {
                failed = true;
                report.fail(
                    CHECK,
                    format!("Postgres source {} (read by {who}): {e}", source.name),
                    "check that Postgres is up, offline_store's settings, and the source's \
                     table or query",
                );
                continue;
            }
        };
        let available: BTreeSet<&str> = columns
            .iter()
            .map(|c| source.field_mapping.get(c).unwrap_or(c).as_str())
            .chain(columns.iter().map(String::as_str))
            .collect();
        let view_proto = view.as_deref().and_then(|v| views.get(v).copied());
        let missing: Vec<String> = needed_columns(view_proto, source)
            .into_iter()
            .filter(|c| !available.contains(c.as_str()))
            .collect();
        if !missing.is_empty() {
            failed = true;
            report.fail(
                CHECK,
                format!(
                    "Postgres source {} has no column {} (needed by {who})",
                    source.name,
                    missing.join(", ")
                ),
                "add the columns, or map them with the source's field_mapping",
            );
        }
    }
    if !failed && !sources.is_empty() {
        report.ok(
            CHECK,
            format!(
                "{} Postgres source(s) readable with the columns their views need",
                sources.len()
            ),
        );
    }
}

/// An offline error without the "data source of feature view" framing (doctor names the
/// readers itself).
fn offline_text(e: feast_offline::OfflineError) -> String {
    match e {
        feast_offline::OfflineError::Source { message, .. } => message,
        other => other.to_string(),
    }
}

async fn check_auth(config: &RepoConfig, timeout: Duration, report: &mut Report) {
    const CHECK: &str = "auth";
    match &config.auth {
        AuthConfig::NoAuth => report.ok(CHECK, "no_auth: servers accept every caller"),
        AuthConfig::OidcServer(c) => {
            oidc_discovery(
                feast_auth::OidcSettings::from_server_config(c),
                timeout,
                report,
            )
            .await;
        }
        AuthConfig::OidcClient(c) => {
            if let Ok(settings) = feast_auth::OidcSettings::from_client_config(c)
                && !oidc_discovery(settings, timeout, report).await
            {
                return;
            }
            let token = async {
                match feast_auth::TokenProvider::from_config(&config.auth)? {
                    Some(provider) => provider.token().await.map(|_| ()),
                    None => Ok(()),
                }
            };
            match timed(timeout, token).await {
                Ok(()) => report.ok(CHECK, "oidc: a client token is obtained"),
                Err(e) => report.fail(
                    CHECK,
                    format!("oidc: no client token: {e}"),
                    "check auth: client_id/client_secret, username/password, token or \
                     token_env_var",
                ),
            }
        }
        AuthConfig::Kubernetes(_) => {
            let host = std::env::var("KUBERNETES_SERVICE_HOST").ok();
            let token = Path::new(feast_auth::kubernetes::NAMESPACE_PATH).with_file_name("token");
            match host {
                Some(host) if token.exists() => report.ok(
                    CHECK,
                    format!(
                        "kubernetes: in-cluster config present (API server {host}, service \
                         account token {})",
                        token.display()
                    ),
                ),
                _ => report.warn(
                    CHECK,
                    "kubernetes: not running in a Kubernetes cluster (no KUBERNETES_SERVICE_HOST \
                     or service account token)",
                    "servers review tokens through the cluster's API; outside a cluster they use \
                     KUBECONFIG or ~/.kube/config, and clients need LOCAL_K8S_TOKEN or user_token",
                ),
            }
        }
    }
}

/// Fetches the discovery document and the JWKS it names; false when that failed.
async fn oidc_discovery(
    settings: feast_auth::OidcSettings,
    timeout: Duration,
    report: &mut Report,
) -> bool {
    const CHECK: &str = "auth";
    let url = settings.auth_discovery_url.clone();
    let fetched = timed(timeout, async {
        feast_auth::OidcValidator::new(settings)?.prefetch().await
    })
    .await;
    match fetched {
        Ok(()) => {
            report.ok(CHECK, format!("oidc: {url} and its JWKS fetched"));
            true
        }
        Err(e) => {
            report.fail(
                CHECK,
                format!("oidc: {e}"),
                "check auth_discovery_url and that the identity provider is reachable from here",
            );
            false
        }
    }
}

/// The services named by `--*-url`, through `probe`.
async fn check_services(args: &DoctorArgs, timeout: Duration, report: &mut Report) {
    let services = [
        ("--registry-url", &args.registry_url, false),
        ("--online-url", &args.online_url, true),
        ("--offline-url", &args.offline_url, false),
        ("--materializer-url", &args.materializer_url, false),
    ];
    for (name, url, http) in services {
        let Some(url) = url else { continue };
        let url = service_url(url, http);
        match probe::probe(&url, "", timeout, None, None).await {
            Ok(answer) => report.ok(name, format!("{url}: {answer}")),
            Err(e) => report.fail(
                name,
                format!("{url}: {e}"),
                "is the service running and reachable at that address?",
            ),
        }
    }
}

/// A `--*-url` as a probe URL: a bare `host:port` is gRPC (HTTP for the feature server), and
/// an HTTP URL without a path asks the readiness route.
fn service_url(url: &str, http: bool) -> String {
    let url = if url.contains("://") {
        url.to_owned()
    } else if http {
        format!("http://{url}")
    } else {
        format!("grpc://{url}")
    };
    match url.split_once("://") {
        Some((scheme, rest))
            if scheme.starts_with("http") && !rest.trim_end_matches('/').contains('/') =>
        {
            format!("{scheme}://{}/readyz", rest.trim_end_matches('/'))
        }
        _ => url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_urls() {
        assert_eq!(service_url("h:6566", true), "http://h:6566/readyz");
        assert_eq!(service_url("http://h:6566/", true), "http://h:6566/readyz");
        assert_eq!(
            service_url("http://h:6566/healthz", true),
            "http://h:6566/healthz"
        );
        assert_eq!(service_url("grpc://h:6566", true), "grpc://h:6566");
        assert_eq!(service_url("h:6570", false), "grpc://h:6570");
    }
}
