//! The repository commands: apply, plan, teardown, registry-dump, list/describe.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use feast_core::config::{RegistryConfig, RepoConfig};
use feast_core::json::{message_to_json, sort_keys};
use feast_core::model::{DUMMY_ENTITY_ID, DUMMY_ENTITY_NAME, ObjectKind, RegistryObject};
use feast_core::registry::diff::{self, RegistryDiff, Transition};
use feast_core::registry::file::FileRegistryStore;
use feast_core::registry::{Catalog, timestamp};
use feast_core::repo;
use feast_online::TableRef;
use feast_proto::core;
use feast_registry::{
    RegistryStore, RemoteOptions, RemoteRegistry, SqlStore, SqlStoreOptions, StoreVersion,
};

use crate::output;

/// A feature repository: its directory and parsed `feature_store.yaml`.
pub struct RepoContext {
    pub repo: PathBuf,
    pub config: RepoConfig,
}

/// Where the repository's registry lives, as `registry:` says.
pub enum RegistryHandle {
    /// A `registry.db` read and written directly.
    File(FileRegistryStore),
    /// A registry server (`registry_type: remote`), reached over gRPC.
    Remote(Box<RemoteRegistry>, tokio::runtime::Runtime),
    /// A SQL registry database (`registry_type: sql`) read and written directly; the
    /// version it was loaded at guards the commit against concurrent writers.
    Sql(Box<SqlStore>, tokio::runtime::Runtime, Mutex<StoreVersion>),
}

impl RepoContext {
    pub fn open(repo: &Path, feature_store_yaml: Option<&Path>) -> Result<Self> {
        let config = RepoConfig::load(repo, feature_store_yaml)?;
        Ok(Self {
            repo: repo.to_path_buf(),
            config,
        })
    }

    pub fn project(&self) -> &str {
        &self.config.project
    }

    /// Opens the registry named by `registry:`.
    pub fn registry(&self) -> Result<RegistryHandle> {
        match &self.config.registry {
            RegistryConfig::File(_) => {
                let path = self.config.registry_path().context("file registry path")?;
                Ok(RegistryHandle::File(FileRegistryStore::new(path)))
            }
            RegistryConfig::Remote(remote) => {
                let options = self.remote_registry_options(remote)?;
                let runtime = current_thread_runtime()?;
                let client = runtime.block_on(RemoteRegistry::connect(&options))?;
                Ok(RegistryHandle::Remote(Box::new(client), runtime))
            }
            RegistryConfig::Sql(sql) => {
                let (url, options) = sql_registry_options(sql)?;
                let runtime = current_thread_runtime()?;
                let store = runtime
                    .block_on(SqlStore::connect(&url, options))
                    .context("opening the SQL registry")?;
                Ok(RegistryHandle::Sql(
                    Box::new(store),
                    runtime,
                    Mutex::new(StoreVersion::default()),
                ))
            }
        }
    }

    /// How to reach the registry server of `registry_type: remote` (certificates read from
    /// the paths the config names, relative to the repository).
    pub fn remote_registry_options(
        &self,
        remote: &feast_core::config::RemoteRegistryConfig,
    ) -> Result<RemoteOptions> {
        let read = |p: &str| -> Result<Option<Vec<u8>>> {
            if p.is_empty() {
                return Ok(None);
            }
            let path = self.config.resolve_path(p);
            Ok(Some(
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
            ))
        };
        Ok(RemoteOptions {
            target: remote.path.clone(),
            ca_cert: read(&remote.cert)?,
            is_tls: remote.is_tls,
            client_identity: match (read(&remote.client_cert)?, read(&remote.client_key)?) {
                (Some(cert), Some(key)) => Some((cert, key)),
                _ => None,
            },
            authority: (!remote.authority.is_empty()).then(|| remote.authority.clone()),
            token: self.token_provider()?,
        })
    }

    /// The bearer token this repository's clients send (`auth:`); `None` under `no_auth`.
    pub fn token_provider(&self) -> Result<Option<std::sync::Arc<feast_auth::TokenProvider>>> {
        feast_auth::TokenProvider::from_config(&self.config.auth)
            .map_err(|e| anyhow::anyhow!("auth: {e}"))
    }

    pub fn load_registry(&self) -> Result<Catalog> {
        self.registry()?.load(self.project())
    }
}

/// The database URL and store options of `registry_type: sql`.
pub fn sql_registry_options(
    sql: &feast_core::config::SqlRegistryConfig,
) -> Result<(feast_core::config::SqlUrl, SqlStoreOptions)> {
    let url = sql
        .url()
        .map_err(|e| anyhow::anyhow!("registry path: {e}"))?;
    Ok((
        url,
        SqlStoreOptions {
            schema_mode: sql.schema_mode,
            purge_feast_metadata: sql.purge_feast_metadata,
            ..SqlStoreOptions::default()
        },
    ))
}

fn current_thread_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the Tokio runtime")
}

impl RegistryHandle {
    /// The registry as the project sees it (a remote registry returns only that project's
    /// objects, plus the project list).
    pub fn load(&self, project: &str) -> Result<Catalog> {
        match self {
            RegistryHandle::File(store) => Ok(store.load_or_empty()?),
            RegistryHandle::Remote(client, runtime) => {
                Ok(runtime.block_on(client.load_project(project))?)
            }
            RegistryHandle::Sql(store, runtime, version) => {
                let (registry, loaded) = runtime.block_on(store.load())?;
                *version.lock().unwrap_or_else(|e| e.into_inner()) = loaded;
                Ok(registry.map(Catalog::from_proto).unwrap_or_default())
            }
        }
    }

    /// Persists the result of applying `plan` to the loaded registry: one atomic file
    /// write, or every change staged on the server and committed at once.
    pub fn commit(&self, project: &str, applied: &mut Catalog, plan: &RegistryDiff) -> Result<()> {
        let infra = applied.proto().infra.clone();
        match self {
            RegistryHandle::File(store) => {
                applied.stamp_commit(timestamp(chrono::Utc::now()));
                store.save(applied)?;
            }
            RegistryHandle::Sql(store, runtime, version) => {
                applied.stamp_commit(timestamp(chrono::Utc::now()));
                let expected = version.lock().unwrap_or_else(|e| e.into_inner()).clone();
                runtime.block_on(store.commit(applied.proto(), &expected))?;
            }
            RegistryHandle::Remote(client, runtime) => {
                let pick = |t: Transition| -> Vec<(ObjectKind, String)> {
                    plan.objects
                        .iter()
                        .filter(|o| o.transition == t)
                        .map(|o| (o.kind, o.name.clone()))
                        .collect()
                };
                let mut upserts = pick(Transition::Create);
                upserts.extend(pick(Transition::Update));
                let order = |k: &ObjectKind| {
                    OBJECT_ORDER
                        .iter()
                        .position(|o| o == k)
                        .unwrap_or(usize::MAX)
                };
                upserts.sort_by_key(|(k, _)| order(k));
                runtime.block_on(client.apply_changes(
                    project,
                    applied,
                    &upserts,
                    &pick(Transition::Delete),
                    infra.as_ref(),
                ))?;
            }
        }
        Ok(())
    }
}

/// Apply order: what others reference goes first.
const OBJECT_ORDER: [ObjectKind; 9] = [
    ObjectKind::Project,
    ObjectKind::DataSource,
    ObjectKind::Entity,
    ObjectKind::FeatureView,
    ObjectKind::StreamFeatureView,
    ObjectKind::OnDemandFeatureView,
    ObjectKind::LabelView,
    ObjectKind::FeatureService,
    ObjectKind::Permission,
];

/// Computes the plan for the repository's definitions against the registry.
fn plan_repo(
    ctx: &RepoContext,
    registry: &RegistryHandle,
) -> Result<(Catalog, diff::DesiredState, RegistryDiff)> {
    let desired = repo::load_repo(&ctx.repo, ctx.project())?;
    let catalog = registry.load(ctx.project())?;
    let plan = diff::diff(&catalog, ctx.project(), &desired);
    Ok((catalog, desired, plan))
}

pub fn plan(ctx: &RepoContext, color: bool) -> Result<()> {
    let (catalog, desired, plan) = plan_repo(ctx, &ctx.registry()?)?;
    print!("{}", plan.render(color));
    let online = online_infra(ctx, &desired);
    let lines = online
        .as_ref()
        .map(|o| {
            infra_changes(
                catalog.proto().infra.as_ref(),
                &merged_infra(catalog.proto().infra.as_ref(), ctx.project(), o),
            )
        })
        .unwrap_or_default();
    print_infra(&lines, online.is_some());
    Ok(())
}

pub fn apply(ctx: &RepoContext, color: bool) -> Result<RegistryDiff> {
    let registry = ctx.registry()?;
    let (mut catalog, desired, plan) = plan_repo(ctx, &registry)?;
    let catalog_before = catalog.clone();
    println!("Applying changes for project {}", ctx.project());
    let online = online_infra(ctx, &desired);
    let infra = online
        .as_ref()
        .map(|o| merged_infra(catalog.proto().infra.as_ref(), ctx.project(), o));
    let infra_changed = infra.is_some() && infra != catalog.proto().infra;
    let infra_lines = infra
        .as_ref()
        .map(|i| infra_changes(catalog.proto().infra.as_ref(), i))
        .unwrap_or_default();
    if plan.has_changes() || infra_changed {
        let now = timestamp(chrono::Utc::now());
        diff::apply_diff(&mut catalog, ctx.project(), &desired, &plan, now)?;
        if let Some(infra) = infra {
            catalog.set_infra(infra);
        }
        registry.commit(ctx.project(), &mut catalog, &plan)?;
    }
    if let Some(online) = online
        .as_ref()
        .filter(|o| plan.has_changes() || infra_changed || o.update_every_apply)
    {
        // Feast's `update`: tables for every view (SQLite), data of the views removed
        // dropped. Skipped when neither the registry nor the infra changed.
        let removed: Vec<TableRef> = plan
            .objects
            .iter()
            .filter(|o| o.transition == Transition::Delete && o.kind.is_feature_view())
            .filter_map(|o| {
                let registered =
                    registered_table(&catalog_before, ctx.project(), &o.name, versioning(ctx));
                // Redis finds a view's data through its join keys: only views that have
                // them (feature views and stream feature views) have data there.
                match (&online.sqlite_db, registered) {
                    (_, Some(t)) => Some(t),
                    (Some(_), None) => Some(TableRef::new(ctx.project(), o.name.clone())),
                    (None, None) => None,
                }
            })
            .collect();
        // The declared views' tables, under the names the applied versions live at.
        let mut keep = online.tables.clone();
        if versioning(ctx) {
            let applied = registered_tables(&catalog, ctx.project(), true);
            for t in &mut keep {
                if let Some((_, v)) = applied.iter().find(|(name, _)| *name == t.view) {
                    t.view = v.view.clone();
                }
            }
        }
        let runtime = current_thread_runtime()?;
        runtime.block_on(async {
            let store = feast_online::open_online_store(&ctx.config).await?;
            store.update(ctx.project(), &keep, &removed).await
        })?;
    }
    print!("{}", plan.render(color));
    print_infra(&infra_lines, online.is_some());
    Ok(plan)
}

/// Removes the online-store data of the project's registered views (Feast's teardown of the
/// online store): their SQLite tables, or their Redis hashes. Other projects' data stays.
fn drop_online_tables(ctx: &RepoContext) -> Result<()> {
    use feast_core::config::OnlineStoreConfig;
    match &ctx.config.online_store {
        Some(OnlineStoreConfig::Sqlite(_)) => {
            let Some(db) = ctx.config.sqlite_online_store_path() else {
                return Ok(());
            };
            if !db.exists() {
                return Ok(());
            }
        }
        Some(OnlineStoreConfig::Redis(_) | OnlineStoreConfig::Postgres(_)) => {}
        _ => return Ok(()),
    }
    let catalog = ctx.load_registry()?;
    let tables: Vec<TableRef> = registered_tables(&catalog, ctx.project(), versioning(ctx))
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    if tables.is_empty() {
        return Ok(());
    }
    let runtime = current_thread_runtime()?;
    runtime.block_on(async {
        let store = feast_online::open_online_store(&ctx.config).await?;
        store.teardown(ctx.project(), &tables).await
    })?;
    Ok(())
}

/// The registry's `enable_online_feature_view_versioning`.
fn versioning(ctx: &RepoContext) -> bool {
    ctx.config
        .registry
        .common()
        .enable_online_feature_view_versioning
}

/// The online-store table of a feature view, with the join keys (Feast's `__dummy_id` for
/// an entity-less view) and features a Redis store needs to find its data.
fn table_ref(
    project: &str,
    spec_name: &str,
    entities: &[core::FeatureSpecV2],
    features: &[core::FeatureSpecV2],
) -> TableRef {
    let mut join_keys: Vec<&str> = entities.iter().map(|c| c.name.as_str()).collect();
    if join_keys.is_empty() {
        join_keys.push(DUMMY_ENTITY_ID);
    }
    let has_string_features = features
        .iter()
        .any(|c| c.value_type == feast_core::types::ValueType::String as i32);
    TableRef::new(project, spec_name)
        .with_schema(join_keys, features.iter().map(|c| c.name.as_str()))
        .with_string_features(has_string_features)
}

/// A view's table, under its current version's name when `versioning` (Feast's
/// `enable_online_feature_view_versioning`) is on.
fn fv_table(project: &str, v: &core::FeatureView, versioning: bool) -> TableRef {
    let spec = v.spec.clone().unwrap_or_default();
    let version = v.meta.as_ref().map(|m| m.current_version_number);
    let name = feast_core::version::online_view_name(&spec.name, version, versioning);
    table_ref(project, &name, &spec.entity_columns, &spec.features)
}

fn sfv_table(project: &str, v: &core::StreamFeatureView, versioning: bool) -> TableRef {
    let spec = v.spec.clone().unwrap_or_default();
    let version = v.meta.as_ref().map(|m| m.current_version_number);
    let name = feast_core::version::online_view_name(&spec.name, version, versioning);
    table_ref(project, &name, &spec.entity_columns, &spec.features)
}

/// The tables of the project's registered feature views and stream feature views, by view
/// name.
fn registered_tables(
    catalog: &Catalog,
    project: &str,
    versioning: bool,
) -> Vec<(String, TableRef)> {
    let none = BTreeMap::new();
    catalog
        .list::<core::FeatureView>(project, &none)
        .map(|v| (v.name().to_owned(), fv_table(project, v, versioning)))
        .chain(
            catalog
                .list::<core::StreamFeatureView>(project, &none)
                .map(|v| (v.name().to_owned(), sfv_table(project, v, versioning))),
        )
        .collect()
}

fn registered_table(
    catalog: &Catalog,
    project: &str,
    name: &str,
    versioning: bool,
) -> Option<TableRef> {
    registered_tables(catalog, project, versioning)
        .into_iter()
        .find_map(|(view, t)| (view == name).then_some(t))
}

/// The online store's tables for the declared views (Feast creates one per feature view and
/// stream feature view, online or not), and for SQLite the file they live in. Redis has no
/// tables to create and Feast records no infra objects for it (`RedisOnlineStore.plan` is
/// the base class's empty list).
///
/// Postgres gets tables only for online views, as Feast's `update_infra` passes only those
/// to the store, and its `update` runs on every apply (creating what is missing), as Feast's.
struct OnlineInfra {
    sqlite_db: Option<PathBuf>,
    tables: Vec<TableRef>,
    update_every_apply: bool,
}

fn online_infra(ctx: &RepoContext, desired: &diff::DesiredState) -> Option<OnlineInfra> {
    use feast_core::config::OnlineStoreConfig;
    let sqlite_db = match &ctx.config.online_store {
        Some(OnlineStoreConfig::Sqlite(_)) => {
            let db = ctx.config.sqlite_online_store_path()?;
            Some(std::path::absolute(&db).unwrap_or(db))
        }
        Some(OnlineStoreConfig::Redis(_) | OnlineStoreConfig::Postgres(_)) => None,
        _ => return None,
    };
    let postgres = matches!(
        &ctx.config.online_store,
        Some(OnlineStoreConfig::Postgres(_))
    );
    let online_only = |online: bool| online || !postgres;
    let mut tables: Vec<TableRef> = desired
        .feature_views
        .iter()
        .filter(|v| online_only(v.spec.as_ref().is_some_and(|s| s.online)))
        .map(|v| fv_table(ctx.project(), v, false))
        .chain(
            desired
                .stream_feature_views
                .iter()
                .filter(|v| online_only(v.spec.as_ref().is_some_and(|s| s.online)))
                .map(|v| sfv_table(ctx.project(), v, false)),
        )
        .collect();
    tables.sort_by(|a, b| a.view.cmp(&b.view));
    Some(OnlineInfra {
        sqlite_db,
        tables,
        update_every_apply: postgres,
    })
}

const SQLITE_TABLE_CLASS: &str = "feast.infra.online_stores.sqlite.SqliteTable";

/// The registry's infra with this project's SQLite tables replaced by `online`'s (Feast
/// keeps one infra for the registry; other projects' objects are kept).
fn merged_infra(old: Option<&core::Infra>, project: &str, online: &OnlineInfra) -> core::Infra {
    use core::infra_object::InfraObject as Object;
    let prefix = format!("{project}_");
    let mut objects: Vec<core::InfraObject> = old
        .map(|i| i.infra_objects.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|o| !matches!(&o.infra_object, Some(Object::SqliteTable(t)) if t.name.starts_with(&prefix)))
        .collect();
    if let Some(db) = &online.sqlite_db {
        objects.extend(online.tables.iter().map(|t| core::InfraObject {
            infra_object_class_type: SQLITE_TABLE_CLASS.into(),
            infra_object: Some(Object::SqliteTable(core::SqliteTable {
                path: db.display().to_string(),
                name: t.table_name(),
            })),
        }));
    }
    core::Infra {
        infra_objects: objects,
    }
}

/// Feast's infra diff lines: `Created sqlite table X` / `Deleted sqlite table X`.
fn infra_changes(old: Option<&core::Infra>, new: &core::Infra) -> Vec<String> {
    use core::infra_object::InfraObject as Object;
    let names = |infra: Option<&core::Infra>| -> std::collections::BTreeSet<String> {
        infra
            .map(|i| {
                i.infra_objects
                    .iter()
                    .filter_map(|o| match &o.infra_object {
                        Some(Object::SqliteTable(t)) => Some(t.name.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (before, after) = (names(old), names(Some(new)));
    let mut lines: Vec<String> = after
        .difference(&before)
        .map(|t| format!("Created sqlite table {t}"))
        .collect();
    lines.extend(
        before
            .difference(&after)
            .map(|t| format!("Deleted sqlite table {t}")),
    );
    lines
}

fn print_infra(lines: &[String], has_infra: bool) {
    if !has_infra {
        return;
    }
    if lines.is_empty() {
        println!("No changes to infrastructure");
    } else {
        println!();
        for line in lines {
            println!("{line}");
        }
    }
}

/// Removes everything `apply` registered for the project; the registry file goes away when
/// no project is left in it.
pub fn teardown(ctx: &RepoContext) -> Result<()> {
    drop_online_tables(ctx)?;
    let store = match ctx.registry()? {
        RegistryHandle::File(store) => store,
        sql @ RegistryHandle::Sql(..) => {
            let mut catalog = sql.load(ctx.project())?;
            if catalog.delete_project(ctx.project()).is_err() {
                println!(
                    "Nothing to tear down: project {} is not in the registry",
                    ctx.project()
                );
                return Ok(());
            }
            sql.commit(ctx.project(), &mut catalog, &RegistryDiff::default())?;
            println!("Removed project {} from the SQL registry", ctx.project());
            return Ok(());
        }
        RegistryHandle::Remote(client, runtime) => {
            runtime.block_on(client.delete_project(ctx.project()))?;
            println!(
                "Removed project {} from the registry at {}",
                ctx.project(),
                client.target()
            );
            return Ok(());
        }
    };
    let Some(mut catalog) = store.load()? else {
        println!(
            "Nothing to tear down: {} does not exist",
            store.path().display()
        );
        return Ok(());
    };
    match catalog.delete_project(ctx.project()) {
        Ok(()) => {}
        Err(_) => {
            println!(
                "Nothing to tear down: project {} is not in the registry",
                ctx.project()
            );
            return Ok(());
        }
    }
    if catalog.proto().projects.is_empty() {
        std::fs::remove_file(store.path())
            .with_context(|| format!("removing {}", store.path().display()))?;
        println!("Removed the registry {}", store.path().display());
    } else {
        catalog.stamp_commit(timestamp(chrono::Utc::now()));
        store.save(&catalog)?;
        println!(
            "Removed project {} from the registry {}",
            ctx.project(),
            store.path().display()
        );
    }
    Ok(())
}

/// `registry-dump`: the project's objects as Feast's `Registry.to_dict` JSON.
pub fn registry_dump(ctx: &RepoContext) -> Result<String> {
    let catalog = ctx.load_registry()?;
    let project = ctx.project();
    let none = BTreeMap::new();
    fn sorted<T: RegistryObject>(
        c: &Catalog,
        project: &str,
        none: &BTreeMap<String, String>,
    ) -> serde_json::Value {
        let mut items: Vec<&T> = c.list::<T>(project, none).collect();
        items.sort_by(|a, b| a.name().cmp(b.name()));
        serde_json::Value::Array(items.into_iter().map(message_to_json).collect())
    }
    let mut dump = serde_json::Map::new();
    dump.insert("project".into(), project.into());
    let sections = [
        (
            "dataSources",
            sorted::<core::DataSource>(&catalog, project, &none),
        ),
        ("entities", sorted::<core::Entity>(&catalog, project, &none)),
        (
            "featureViews",
            sorted::<core::FeatureView>(&catalog, project, &none),
        ),
        (
            "featureServices",
            sorted::<core::FeatureService>(&catalog, project, &none),
        ),
        (
            "onDemandFeatureViews",
            sorted::<core::OnDemandFeatureView>(&catalog, project, &none),
        ),
        (
            "streamFeatureViews",
            sorted::<core::StreamFeatureView>(&catalog, project, &none),
        ),
        (
            "labelViews",
            sorted::<core::LabelView>(&catalog, project, &none),
        ),
        (
            "savedDatasets",
            sorted::<core::SavedDataset>(&catalog, project, &none),
        ),
        (
            "permissions",
            sorted::<core::Permission>(&catalog, project, &none),
        ),
    ];
    for (key, objects) in sections {
        dump.insert(key.into(), objects);
    }
    #[allow(deprecated)]
    let metadata: Vec<serde_json::Value> = catalog
        .proto()
        .project_metadata
        .iter()
        .filter(|m| m.project == project)
        .map(message_to_json)
        .collect();
    dump.insert("projectMetadata".into(), metadata.into());
    let infra = catalog
        .proto()
        .infra
        .as_ref()
        .map(|i| i.infra_objects.iter().map(message_to_json).collect())
        .unwrap_or_default();
    dump.insert("infra".into(), serde_json::Value::Array(infra));
    let mut value = serde_json::Value::Object(dump);
    sort_keys(&mut value);
    Ok(serde_json::to_string_pretty(&value)?)
}

/// Parses Feast's `--tags` values: `key:value`, possibly several separated by commas.
pub fn parse_tags(values: &[String]) -> Result<BTreeMap<String, String>> {
    let mut tags = BTreeMap::new();
    for value in values {
        for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once(':') else {
                bail!("invalid tag filter \"{pair}\": write key:value");
            };
            tags.insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
    Ok(tags)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

/// `<kind> list`.
pub fn list(
    ctx: &RepoContext,
    kind: ObjectKind,
    tags: &BTreeMap<String, String>,
    out: Output,
) -> Result<String> {
    let catalog = ctx.load_registry()?;
    let project = ctx.project();
    let objects = listed_objects(&catalog, kind, project, tags);
    if out != Output::Table {
        let items = serde_json::Value::Array(objects.iter().map(|o| o.json.clone()).collect());
        return Ok(render_value(&items, out));
    }
    // Feast's column headers per kind (`feast <kind> list`).
    let headers: &[&str] = match kind {
        ObjectKind::Entity => &["NAME", "DESCRIPTION", "TYPE"],
        ObjectKind::DataSource => &["NAME", "CLASS"],
        ObjectKind::FeatureView => &["NAME", "ENTITIES", "TYPE", "ENABLED", "STATE"],
        ObjectKind::FeatureService => &["NAME", "FEATURES"],
        ObjectKind::Permission => &[
            "NAME",
            "TYPES",
            "NAME_PATTERNS",
            "ACTIONS",
            "ROLES",
            "REQUIRED_TAGS",
        ],
        ObjectKind::Project => &["NAME", "DESCRIPTION", "TAGS", "OWNER"],
        _ => &["NAME"],
    };
    let rows: Vec<Vec<String>> = objects.into_iter().map(|o| o.row).collect();
    Ok(output::table(headers, &rows))
}

/// `<kind> describe NAME`: the object as YAML (or JSON) of its protobuf JSON, like Feast.
pub fn describe(ctx: &RepoContext, kind: ObjectKind, name: &str, out: Output) -> Result<String> {
    let catalog = ctx.load_registry()?;
    let project = ctx.project();
    let none = BTreeMap::new();
    let found = listed_objects(&catalog, kind, project, &none)
        .into_iter()
        .find(|o| o.name == name);
    match found {
        Some(o) => Ok(render_value(
            &o.json,
            if out == Output::Table {
                Output::Yaml
            } else {
                out
            },
        )),
        None => bail!("{}", kind.not_found(name, project)),
    }
}

fn render_value(value: &serde_json::Value, out: Output) -> String {
    match out {
        Output::Json => serde_json::to_string_pretty(value).unwrap_or_default() + "\n",
        _ => output::yaml(value),
    }
}

struct Listed {
    name: String,
    row: Vec<String>,
    json: serde_json::Value,
}

fn listed_objects(
    catalog: &Catalog,
    kind: ObjectKind,
    project: &str,
    tags: &BTreeMap<String, String>,
) -> Vec<Listed> {
    fn collect<T: RegistryObject>(
        catalog: &Catalog,
        project: &str,
        tags: &BTreeMap<String, String>,
        row: impl Fn(&T) -> Vec<String>,
    ) -> Vec<Listed> {
        catalog
            .list::<T>(project, tags)
            .map(|o| Listed {
                name: o.name().to_owned(),
                row: row(o),
                json: message_to_json(o),
            })
            .collect()
    }
    match kind {
        ObjectKind::Entity => collect::<core::Entity>(catalog, project, tags, |e| {
            let spec = e.spec.clone().unwrap_or_default();
            let vt = feast_proto::types::value_type::Enum::try_from(spec.value_type)
                .map(|v| v.as_str_name().to_owned())
                .unwrap_or_else(|_| "UNKNOWN".into());
            vec![spec.name, spec.description, format!("ValueType.{vt}")]
        })
        .into_iter()
        .filter(|l| l.name != DUMMY_ENTITY_NAME)
        .collect(),
        ObjectKind::DataSource => collect::<core::DataSource>(catalog, project, tags, |d| {
            vec![
                d.name.clone(),
                format!("<class '{}'>", d.data_source_class_type),
            ]
        }),
        ObjectKind::FeatureView => {
            // Feast lists batch feature views and on-demand views together.
            let mut rows = collect::<core::FeatureView>(catalog, project, tags, |v| {
                let spec = v.spec.clone().unwrap_or_default();
                let entities: Vec<&str> = spec
                    .entities
                    .iter()
                    .map(String::as_str)
                    .filter(|e| *e != DUMMY_ENTITY_NAME)
                    .collect();
                let state = v
                    .meta
                    .as_ref()
                    .and_then(|m| core::FeatureViewState::try_from(m.state).ok())
                    .unwrap_or(core::FeatureViewState::StateUnspecified);
                vec![
                    spec.name.clone(),
                    if entities.is_empty() {
                        "n/a".into()
                    } else {
                        output::python_set(&entities)
                    },
                    "FeatureView".into(),
                    if spec.disabled {
                        "No".into()
                    } else {
                        "Yes".into()
                    },
                    state.as_str_name().into(),
                ]
            });
            rows.extend(collect::<core::OnDemandFeatureView>(
                catalog,
                project,
                tags,
                |v| {
                    let spec = v.spec.clone().unwrap_or_default();
                    let mut entities: Vec<&str> = Vec::new();
                    for source in spec.sources.values() {
                        if let Some(core::on_demand_source::Source::FeatureViewProjection(p)) =
                            &source.source
                            && let Ok(fv) =
                                catalog.get::<core::FeatureView>(&p.feature_view_name, project)
                            && let Some(s) = &fv.spec
                        {
                            entities.extend(
                                s.entities
                                    .iter()
                                    .map(String::as_str)
                                    .filter(|e| *e != DUMMY_ENTITY_NAME),
                            );
                        }
                    }
                    entities.sort();
                    entities.dedup();
                    vec![
                        spec.name.clone(),
                        if entities.is_empty() {
                            "n/a".into()
                        } else {
                            output::python_set(&entities)
                        },
                        "OnDemandFeatureView".into(),
                        if spec.disabled {
                            "No".into()
                        } else {
                            "Yes".into()
                        },
                        "STATE_UNSPECIFIED".into(),
                    ]
                },
            ));
            rows
        }
        ObjectKind::OnDemandFeatureView => {
            collect::<core::OnDemandFeatureView>(catalog, project, tags, |v| {
                vec![v.name().to_owned()]
            })
        }
        ObjectKind::StreamFeatureView => {
            collect::<core::StreamFeatureView>(catalog, project, tags, |v| {
                vec![v.name().to_owned()]
            })
        }
        ObjectKind::LabelView => {
            collect::<core::LabelView>(catalog, project, tags, |v| vec![v.name().to_owned()])
        }
        ObjectKind::FeatureService => {
            collect::<core::FeatureService>(catalog, project, tags, |s| {
                let spec = s.spec.clone().unwrap_or_default();
                let features: Vec<String> = spec
                    .features
                    .iter()
                    .flat_map(|p| {
                        let view = if p.feature_view_name_alias.is_empty() {
                            &p.feature_view_name
                        } else {
                            &p.feature_view_name_alias
                        };
                        p.feature_columns
                            .iter()
                            .map(move |f| format!("{view}:{}", f.name))
                    })
                    .collect();
                vec![spec.name, features.join(", ")]
            })
        }
        ObjectKind::Permission => collect::<core::Permission>(catalog, project, tags, |p| {
            let spec = p.spec.clone().unwrap_or_default();
            let types: Vec<String> = spec
                .types
                .iter()
                .filter_map(|t| core::permission_spec::Type::try_from(*t).ok())
                .map(|t| t.as_str_name().to_owned())
                .collect();
            let actions: Vec<String> = spec
                .actions
                .iter()
                .filter_map(|a| core::permission_spec::AuthzedAction::try_from(*a).ok())
                .map(|a| a.as_str_name().to_owned())
                .collect();
            let roles = match spec.policy.as_ref().and_then(|p| p.policy_type.as_ref()) {
                Some(core::policy::PolicyType::RoleBasedPolicy(r)) => output::python_list(&r.roles),
                _ => "-".into(),
            };
            let required: Vec<String> = spec
                .required_tags
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect();
            vec![
                spec.name,
                output::python_list(&types),
                if spec.name_patterns.is_empty() {
                    "-".into()
                } else {
                    output::python_list(&spec.name_patterns)
                },
                output::python_list(&actions),
                roles,
                if required.is_empty() {
                    "-".into()
                } else {
                    required.join(", ")
                },
            ]
        }),
        ObjectKind::Project => catalog
            .projects(tags)
            .map(|p| {
                let spec = p.spec.clone().unwrap_or_default();
                let tags: Vec<String> = spec.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                Listed {
                    name: spec.name.clone(),
                    row: vec![
                        spec.name.clone(),
                        spec.description.clone(),
                        tags.join(", "),
                        spec.owner.clone(),
                    ],
                    json: message_to_json(p),
                }
            })
            .collect(),
        ObjectKind::SavedDataset => {
            collect::<core::SavedDataset>(catalog, project, tags, |v| vec![v.name().to_owned()])
        }
        ObjectKind::ValidationReference => {
            collect::<core::ValidationReference>(catalog, project, tags, |v| {
                vec![v.name().to_owned()]
            })
        }
    }
}
