//! `feature_store.yaml`: Feast's `RepoConfig`, parsed into typed Rust.
//!
//! Loading runs three steps:
//!
//! 1. `${VAR}` / `$VAR` substitution on the raw text ([`env`]), as Feast's
//!    `os.path.expandvars`, except that an unset `${VAR}` is an error.
//! 2. A first YAML pass that only reads the tags of the tagged sections
//!    (`online_store.type`, `registry.registry_type`, `auth.type`, ...).
//! 3. A typed pass straight over the YAML events, dispatching each tagged
//!    section on the tag from step 2, so every error has a line and column.
//!
//! Errors read `feature_store.yaml:7:3: online_store: unknown field `pth`, expected one of ...`.
//!
//! Feast's model accepts extra keys at the top level (`extra="allow"`); feast-rs
//! rejects them so that typos surface. Sections that Feast models with
//! `extra="allow"` (`registry`, `auth` for kubernetes, `registry.mcp`) keep
//! their extra keys and report them in [`RepoConfig::warnings`].

mod auth;
mod de;
mod env;
mod error;
mod feature_server;
mod offline;
mod online;
mod registry;
mod tagged;

/// The schema Feast's Postgres stores (online and offline) use: `db_schema`, else the
/// user's name.
pub fn postgres_schema<'a>(db_schema: &'a str, user: &'a str) -> &'a str {
    if db_schema.is_empty() {
        user
    } else {
        db_schema
    }
}

/// Feast's Postgres `search_path`: the schema, then `public` (unless the schema is `public`).
pub fn postgres_search_path(db_schema: &str, user: &str) -> String {
    let schema = postgres_schema(db_schema, user).trim();
    if schema == "public" {
        schema.to_owned()
    } else {
        format!("{schema},public")
    }
}

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_norway::{Mapping, Value};

pub use auth::{
    AUTH_TYPES, AuthConfig, KubernetesAuthConfig, OIDC_CLIENT_KEYS, OidcClientAuthConfig,
    OidcClientCredentials, OidcServerAuthConfig, is_oidc_client_config,
};
pub use error::{ConfigError, ConfigErrorKind, Diagnostic};
pub use feature_server::{
    AuditLoggingConfig, AuditSink, BatchEngineConfig, FEAST_BATCH_ENGINES, FeatureLoggingConfig,
    FeatureServerConfig, LocalComputeEngineConfig, LocalFeatureServerConfig,
    McpFeatureServerConfig, McpTransport, MetricsConfig, SUPPORTED_BATCH_ENGINES,
};
pub use offline::{
    DaskOfflineStoreConfig, DuckDbOfflineStoreConfig, EntitySelectMode, FEAST_OFFLINE_STORES,
    FlightScheme, OfflineStoreConfig, PostgresOfflineStoreConfig, RemoteOfflineStoreConfig,
    SUPPORTED_OFFLINE_STORES,
};
pub use online::{
    FEAST_ONLINE_STORES, OnlineStoreConfig, PostgresConnType, PostgresOnlineStoreConfig,
    RedisClient, RedisConnectionString, RedisNode, RedisOnlineStoreConfig, RedisType,
    RemoteOnlineStoreConfig, SUPPORTED_ONLINE_STORES, SqliteOnlineStoreConfig,
};
pub use registry::{
    CacheMode, FEAST_REGISTRIES, FileRegistryConfig, McpRegistryConfig, RegistryCommon,
    RegistryConfig, RemoteRegistryConfig, SUPPORTED_REGISTRIES, SchemaMode, SqlRegistryConfig,
    SqlUrl, SqlUrlError, normalize_sql_registry_url,
};

use de::{Peek, boolean, boolean_opt, lax_int_gt0_opt};
use error::{classify, invalid, unsupported};
use tagged::TaggedSeed;

/// The default configuration file name inside a repository.
pub const FEATURE_STORE_YAML: &str = "feature_store.yaml";

/// Providers feast-rs accepts (all four map to Feast's `PassthroughProvider`).
pub const SUPPORTED_PROVIDERS: &[&str] = &["local", "gcp", "aws", "azure"];

/// `materialization:` (`MaterializationConfig`; Feast ignores unknown keys here).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MaterializationConfig {
    /// Only pull the latest value per entity in materialization jobs.
    #[serde(default, deserialize_with = "boolean")]
    pub pull_latest_features: bool,
    /// Rows per online write batch (None = one batch).
    #[serde(default, deserialize_with = "lax_int_gt0_opt")]
    pub online_write_batch_size: Option<i64>,
    /// Keys Feast silently drops (`extra="ignore"`); reported as warnings.
    #[serde(flatten, skip_serializing)]
    pub ignored: BTreeMap<String, Value>,
}

fn default_embedding_provider() -> String {
    "sentence_transformers".to_owned()
}

/// `embedding_model:` (`EmbeddingModelConfig`, `extra="forbid"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingModelConfig {
    /// Embedding backend.
    #[serde(default = "default_embedding_provider")]
    pub provider: String,
    /// Model identifier (required).
    pub model: String,
}

fn yes() -> bool {
    true
}

/// `data_quality_monitoring:` (`DataQualityMonitoringConfig`, `extra="forbid"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataQualityMonitoringConfig {
    /// Compute the baseline distribution on `feast apply`.
    #[serde(default = "yes", deserialize_with = "boolean")]
    pub auto_baseline: bool,
}

/// A parsed `feature_store.yaml` (Feast's `RepoConfig`).
///
/// Serializing it (see [`RepoConfig::to_yaml`]) gives the effective
/// configuration with every default filled in, in Feast's field order.
#[derive(Debug, Clone, Serialize)]
pub struct RepoConfig {
    /// Project name (required): alphanumerics and `_`, not starting with `_`.
    pub project: String,
    /// Free-text description.
    pub project_description: Option<String>,
    /// `local` (default), `gcp`, `aws` or `azure`.
    pub provider: String,
    /// Registry (required).
    pub registry: RegistryConfig,
    /// Online store; `None` when the file says `online_store: null`. Default sqlite.
    pub online_store: Option<OnlineStoreConfig>,
    /// Authentication; default `no_auth`.
    pub auth: AuthConfig,
    /// Offline store; `None` when the file says `offline_store: null`. Default dask.
    pub offline_store: Option<OfflineStoreConfig>,
    /// Materialization engine; default local.
    pub batch_engine: BatchEngineConfig,
    /// Feature server settings; absent by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_server: Option<FeatureServerConfig>,
    /// Query-time embedding model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<EmbeddingModelConfig>,
    /// Deprecated feature flags (kept opaque).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<Value>,
    /// The repository directory (from the loader, never from the file; not serialized).
    #[serde(skip)]
    pub repo_path: PathBuf,
    /// Entity key encoding version (default 3; 1 and 2 are deprecated).
    pub entity_key_serialization_version: u32,
    /// Make entity dataframe timestamps timezone-aware (default true).
    pub coerce_tz_aware: bool,
    /// Materialization options.
    pub materialization: MaterializationConfig,
    /// OpenLineage settings, kept opaque.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub openlineage: Option<Mapping>,
    /// MLflow settings, kept opaque.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlflow: Option<Mapping>,
    /// Data quality monitoring settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_quality_monitoring: Option<DataQualityMonitoringConfig>,
    #[serde(skip)]
    warnings: Vec<String>,
    #[serde(skip)]
    raw: Value,
}

impl PartialEq for RepoConfig {
    /// Compares the configuration, not the warnings or the original text.
    fn eq(&self, other: &Self) -> bool {
        self.project == other.project
            && self.project_description == other.project_description
            && self.provider == other.provider
            && self.registry == other.registry
            && self.online_store == other.online_store
            && self.auth == other.auth
            && self.offline_store == other.offline_store
            && self.batch_engine == other.batch_engine
            && self.feature_server == other.feature_server
            && self.embedding_model == other.embedding_model
            && self.flags == other.flags
            && self.repo_path == other.repo_path
            && self.entity_key_serialization_version == other.entity_key_serialization_version
            && self.coerce_tz_aware == other.coerce_tz_aware
            && self.materialization == other.materialization
            && self.openlineage == other.openlineage
            && self.mlflow == other.mlflow
            && self.data_quality_monitoring == other.data_quality_monitoring
    }
}

/// Feast's project-name rule (`repo_operations.is_valid_name` plus the SQLite
/// hyphen check, which Feast 0.67 applies whatever the online store is).
pub fn validate_project_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("project name must not be empty".to_owned());
    }
    let valid = !name.starts_with(['_', '-'])
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(format!(
            "project name `{name}` should only have alphanumerical values, underscores, and hyphens \
             but not start with an underscore or hyphen"
        ));
    }
    if name.contains('-') {
        return Err(format!(
            "project name `{name}`: project names cannot contain hyphens because they are used in \
             SQLite table names (Feast 0.67 enforces this for every online store)"
        ));
    }
    Ok(())
}

fn de_project<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    de::strict_str_checked(d, "a project name (string)", validate_project_name)
}

fn de_provider<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a provider name")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            if SUPPORTED_PROVIDERS.contains(&v) {
                Ok(v.to_owned())
            } else if matches!(v, "chronon" | "unity_catalog") || v.contains('.') {
                Err(unsupported(format!(
                    "provider `{v}` is valid in Feast but not supported by feast-rs (supported: {})",
                    SUPPORTED_PROVIDERS.join(", ")
                )))
            } else {
                Err(invalid(format!(
                    "unknown provider `{v}`, expected one of {}",
                    SUPPORTED_PROVIDERS
                        .iter()
                        .map(|p| format!("`{p}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        }
    }
    d.deserialize_str(V)
}

/// `entity_key_serialization_version`: a YAML integer in 1..=3.
struct EkVersionSeed;

impl<'de> DeserializeSeed<'de> for EkVersionSeed {
    type Value = u32;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u32, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = u32;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer (entity key serialization version)")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u32, E> {
                if (1..=3).contains(&v) {
                    Ok(v as u32)
                } else {
                    Err(invalid(format!(
                        "entity_key_serialization_version {v} is not supported: use 3 (1 and 2 are deprecated \
                         legacy encodings; Feast treats anything above 3 as 3)"
                    )))
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u32, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
        }
        d.deserialize_any(V)
    }
}

struct CoerceSeed;

impl<'de> DeserializeSeed<'de> for CoerceSeed {
    type Value = bool;
    /// `coerce_tz_aware` is `Optional[bool]`; null behaves as false.
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        Ok(boolean_opt(d)?.unwrap_or(false))
    }
}

struct ProjectSeed;
impl<'de> DeserializeSeed<'de> for ProjectSeed {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        de_project(d)
    }
}

struct ProviderSeed;
impl<'de> DeserializeSeed<'de> for ProviderSeed {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        de_provider(d)
    }
}

/// An optional mapping kept as-is (`openlineage`, `mlflow`).
struct OpaqueMapSeed;
impl<'de> DeserializeSeed<'de> for OpaqueMapSeed {
    type Value = Option<Mapping>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Mapping>, D::Error> {
        Option::<Mapping>::deserialize(d)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum TopKey {
    Project,
    ProjectDescription,
    Provider,
    Registry,
    OnlineStore,
    Auth,
    OfflineStore,
    BatchEngine,
    FeatureServer,
    EmbeddingModel,
    Flags,
    RepoPath,
    EntityKeySerializationVersion,
    CoerceTzAware,
    Materialization,
    Openlineage,
    Mlflow,
    DataQualityMonitoring,
}

/// Reads a top-level key, failing at the key itself when it is unknown or repeated.
struct TopKeySeed<'a> {
    seen: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for TopKeySeed<'_> {
    type Value = TopKey;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<TopKey, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for TopKeySeed<'_> {
    type Value = TopKey;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a feature_store.yaml key")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TopKey, E> {
        let key = TopKey::deserialize(serde::de::value::StrDeserializer::<E>::new(v))?;
        if self.seen.iter().any(|s| s == v) {
            return Err(invalid(format!("duplicate key `{v}`")));
        }
        self.seen.push(v.to_owned());
        Ok(key)
    }
}

/// Top-level typed pass.
struct RepoSeed<'p> {
    peek: &'p Peek,
}

#[derive(Default)]
struct Parts {
    project: Option<String>,
    project_description: Option<Option<String>>,
    provider: Option<String>,
    registry: Option<Option<RegistryConfig>>,
    online_store: Option<Option<OnlineStoreConfig>>,
    auth: Option<Option<AuthConfig>>,
    offline_store: Option<Option<OfflineStoreConfig>>,
    batch_engine: Option<Option<BatchEngineConfig>>,
    feature_server: Option<Option<FeatureServerConfig>>,
    embedding_model: Option<Option<EmbeddingModelConfig>>,
    flags: Option<Option<Value>>,
    repo_path: Option<Option<String>>,
    entity_key_serialization_version: Option<u32>,
    coerce_tz_aware: Option<bool>,
    materialization: Option<Option<MaterializationConfig>>,
    openlineage: Option<Option<Mapping>>,
    mlflow: Option<Option<Mapping>>,
    data_quality_monitoring: Option<Option<DataQualityMonitoringConfig>>,
}

fn set_once<T, E: serde::de::Error>(
    slot: &mut Option<T>,
    name: &'static str,
    value: T,
) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(value);
    Ok(())
}

impl<'de> DeserializeSeed<'de> for RepoSeed<'_> {
    type Value = Parts;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Parts, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RepoSeed<'_> {
    type Value = Parts;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a feature_store.yaml mapping")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parts, A::Error> {
        let mut p = Parts::default();
        let peek = self.peek;
        let mut seen = Vec::new();
        while let Some(key) = map.next_key_seed(TopKeySeed { seen: &mut seen })? {
            match key {
                TopKey::Project => {
                    let v = map.next_value_seed(ProjectSeed)?;
                    set_once(&mut p.project, "project", v)?;
                }
                TopKey::ProjectDescription => {
                    let v = map.next_value()?;
                    set_once(&mut p.project_description, "project_description", v)?;
                }
                TopKey::Provider => {
                    let v = map.next_value_seed(ProviderSeed)?;
                    set_once(&mut p.provider, "provider", v)?;
                }
                TopKey::Registry => {
                    let v = map.next_value_seed(TaggedSeed::new(&peek.registry))?;
                    set_once(&mut p.registry, "registry", v)?;
                }
                TopKey::OnlineStore => {
                    let v = map.next_value_seed(TaggedSeed::new(&peek.online_store))?;
                    set_once(&mut p.online_store, "online_store", v)?;
                }
                TopKey::Auth => {
                    let v = map.next_value_seed(TaggedSeed::new(&peek.auth))?;
                    set_once(&mut p.auth, "auth", v)?;
                }
                TopKey::OfflineStore => {
                    let v = map.next_value_seed(TaggedSeed::new(&peek.offline_store))?;
                    set_once(&mut p.offline_store, "offline_store", v)?;
                }
                TopKey::BatchEngine => {
                    let v = map.next_value_seed(TaggedSeed::new(&peek.batch_engine))?;
                    set_once(&mut p.batch_engine, "batch_engine", v)?;
                }
                TopKey::FeatureServer => {
                    let v = map.next_value_seed(TaggedSeed::new(&peek.feature_server))?;
                    set_once(&mut p.feature_server, "feature_server", v)?;
                }
                TopKey::EmbeddingModel => {
                    let v = map.next_value()?;
                    set_once(&mut p.embedding_model, "embedding_model", v)?;
                }
                TopKey::Flags => {
                    let v = map.next_value()?;
                    set_once(&mut p.flags, "flags", v)?;
                }
                TopKey::RepoPath => {
                    let v = map.next_value()?;
                    set_once(&mut p.repo_path, "repo_path", v)?;
                }
                TopKey::EntityKeySerializationVersion => {
                    let v = map.next_value_seed(EkVersionSeed)?;
                    set_once(
                        &mut p.entity_key_serialization_version,
                        "entity_key_serialization_version",
                        v,
                    )?;
                }
                TopKey::CoerceTzAware => {
                    let v = map.next_value_seed(CoerceSeed)?;
                    set_once(&mut p.coerce_tz_aware, "coerce_tz_aware", v)?;
                }
                TopKey::Materialization => {
                    let v = map.next_value()?;
                    set_once(&mut p.materialization, "materialization", v)?;
                }
                TopKey::Openlineage => {
                    let v = map.next_value_seed(OpaqueMapSeed)?;
                    set_once(&mut p.openlineage, "openlineage", v)?;
                }
                TopKey::Mlflow => {
                    let v = map.next_value_seed(OpaqueMapSeed)?;
                    set_once(&mut p.mlflow, "mlflow", v)?;
                }
                TopKey::DataQualityMonitoring => {
                    let v = map.next_value()?;
                    set_once(&mut p.data_quality_monitoring, "data_quality_monitoring", v)?;
                }
            }
        }
        if p.project.is_none() {
            return Err(serde::de::Error::missing_field("project"));
        }
        if p.registry.is_none() {
            return Err(serde::de::Error::missing_field("registry"));
        }
        Ok(p)
    }
}

/// Turn a serde_norway error into a located [`ConfigError`].
fn located(
    err: &serde_norway::Error,
    source_name: &str,
    map: &env::LineMap,
    syntax: bool,
) -> ConfigError {
    let mut text = err.to_string();
    let (line, column) = match err.location() {
        Some(loc) => {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            if let Some(stripped) = text.strip_suffix(&suffix) {
                text = stripped.to_owned();
            } else if let Some(i) = text.find(&suffix) {
                text.replace_range(i..i + suffix.len(), "");
            }
            let (l, c) = map.map(loc.line(), loc.column());
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    let (mut kind, message) = classify(&text);
    if syntax && kind == ConfigErrorKind::InvalidValue {
        kind = ConfigErrorKind::Syntax;
    }
    ConfigError::invalid(kind, source_name, line, column, message)
}

impl RepoConfig {
    /// Load `<repo_path>/feature_store.yaml`, or `yaml_path` when given (Feast's
    /// `--feature-store-yaml`), substituting environment variables from the process.
    pub fn load(repo_path: &Path, yaml_path: Option<&Path>) -> Result<RepoConfig, ConfigError> {
        let default_path;
        let path = match yaml_path {
            Some(p) => p,
            None => {
                default_path = repo_path.join(FEATURE_STORE_YAML);
                &default_path
            }
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml_str(&text, &path.display().to_string(), repo_path)
    }

    /// Parse configuration text. `source_name` is used in error messages;
    /// `repo_path` anchors relative paths. Environment variables come from the process.
    pub fn from_yaml_str(
        text: &str,
        source_name: &str,
        repo_path: &Path,
    ) -> Result<RepoConfig, ConfigError> {
        Self::from_yaml_str_with_env(text, source_name, repo_path, &env::process_env)
    }

    /// Like [`RepoConfig::from_yaml_str`] with an explicit environment lookup
    /// (for tests and for callers that layer their own variables).
    pub fn from_yaml_str_with_env(
        text: &str,
        source_name: &str,
        repo_path: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<RepoConfig, ConfigError> {
        let (text, line_map) = env::substitute(text, lookup).map_err(|e| {
            ConfigError::invalid(
                if e.missing {
                    ConfigErrorKind::MissingEnvVar
                } else {
                    ConfigErrorKind::InvalidValue
                },
                source_name,
                Some(e.line),
                Some(e.column),
                e.message,
            )
        })?;

        if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---")
        {
            return Err(ConfigError::invalid(
                ConfigErrorKind::Syntax,
                source_name,
                None,
                None,
                "the configuration is empty (expected at least `project` and `registry`)",
            ));
        }

        let peek: Peek =
            serde_norway::from_str(&text).map_err(|e| located(&e, source_name, &line_map, true))?;

        let parts = RepoSeed { peek: &peek }
            .deserialize(serde_norway::Deserializer::from_str(&text))
            .map_err(|e| located(&e, source_name, &line_map, false))?;

        let raw: Value = serde_norway::from_str(&text).unwrap_or(Value::Null);
        let mut cfg = RepoConfig {
            project: parts.project.unwrap_or_default(),
            project_description: parts.project_description.flatten(),
            provider: parts.provider.unwrap_or_else(|| "local".to_owned()),
            // Checked in visit_map: `registry` is present; null is rejected by its seed.
            registry: parts
                .registry
                .flatten()
                .unwrap_or_else(|| RegistryConfig::File(FileRegistryConfig::with_path(""))),
            online_store: parts
                .online_store
                .unwrap_or_else(|| Some(OnlineStoreConfig::default())),
            auth: parts.auth.flatten().unwrap_or_default(),
            offline_store: parts
                .offline_store
                .unwrap_or_else(|| Some(OfflineStoreConfig::default())),
            batch_engine: parts.batch_engine.flatten().unwrap_or_default(),
            feature_server: parts.feature_server.flatten(),
            embedding_model: parts.embedding_model.flatten(),
            flags: parts.flags.flatten(),
            repo_path: repo_path.to_path_buf(),
            entity_key_serialization_version: parts.entity_key_serialization_version.unwrap_or(3),
            coerce_tz_aware: parts.coerce_tz_aware.unwrap_or(true),
            materialization: parts.materialization.flatten().unwrap_or_default(),
            openlineage: parts.openlineage.flatten(),
            mlflow: parts.mlflow.flatten(),
            data_quality_monitoring: parts.data_quality_monitoring.flatten(),
            warnings: Vec::new(),
            raw,
        };
        cfg.warnings = cfg.compute_warnings(parts.repo_path.flatten().as_deref());
        Ok(cfg)
    }

    fn compute_warnings(&self, yaml_repo_path: Option<&str>) -> Vec<String> {
        let mut w = Vec::new();
        let extras = |w: &mut Vec<String>, section: &str, extra: &BTreeMap<String, Value>| {
            for k in extra.keys() {
                w.push(format!(
                    "{section}: unknown key `{k}` accepted as an extra (Feast allows extra keys here)"
                ));
            }
        };
        extras(&mut w, "registry", self.registry.extra());
        let mcp = match &self.registry {
            RegistryConfig::File(c) => c.mcp.as_ref(),
            RegistryConfig::Sql(c) => c.mcp.as_ref(),
            RegistryConfig::Remote(c) => c.mcp.as_ref(),
        };
        if let Some(m) = mcp {
            extras(&mut w, "registry.mcp", &m.extra);
        }
        if let AuthConfig::Kubernetes(k) = &self.auth {
            extras(&mut w, "auth", &k.extra);
        }
        for k in self.materialization.ignored.keys() {
            w.push(format!(
                "materialization: unknown key `{k}` ignored (Feast ignores unknown keys here)"
            ));
        }
        let common = self.registry.common();
        if common.serve_features_while_materializing {
            if !matches!(self.registry, RegistryConfig::Sql(_)) {
                w.push(format!(
                    "registry: serve_features_while_materializing is enabled but registry_type is `{}`; \
                     it targets shared sql registries and typically has no effect here",
                    self.registry.type_name()
                ));
            }
            if common.cache_mode == CacheMode::Thread {
                w.push(
                    "registry: serve_features_while_materializing with cache_mode: thread may observe \
                     feature view state transitions up to cache_ttl_seconds late"
                        .to_owned(),
                );
            }
        }
        if let RegistryConfig::Remote(r) = &self.registry
            && !r.uses_tls()
            && (!r.client_cert.is_empty() || !r.client_key.is_empty())
        {
            w.push(
                "registry: client_cert/client_key are ignored because TLS is off (set cert or is_tls)"
                    .to_owned(),
            );
        }
        if let RegistryConfig::Sql(s) = &self.registry
            && let Some(t) = &s.registry_store_type
        {
            w.push(format!(
                "registry: registry_store_type `{t}` is ignored by the sql registry"
            ));
        }
        if self.entity_key_serialization_version < 3 {
            w.push(format!(
                "entity_key_serialization_version {} is deprecated; 3 is recommended",
                self.entity_key_serialization_version
            ));
        }
        if self.flags.is_some() {
            w.push("flags are no longer necessary in Feast and are ignored".to_owned());
        }
        if let Some(p) = yaml_repo_path {
            w.push(format!(
                "repo_path `{p}` in the file is ignored; the repository directory is {}",
                self.repo_path.display()
            ));
        }
        if let Some(OnlineStoreConfig::Redis(r)) = &self.online_store
            && r.client == RedisClient::Glide
            && let Ok(cs) = r.parsed_connection_string()
        {
            const GLIDE_OPTIONS: &[&str] = &[
                "ssl",
                "db",
                "password",
                "username",
                "socket_timeout",
                "socket_connect_timeout",
            ];
            let ignored: Vec<&str> = cs
                .options
                .keys()
                .map(String::as_str)
                .filter(|k| !GLIDE_OPTIONS.contains(k))
                .collect();
            if !ignored.is_empty() {
                w.push(format!(
                    "online_store: client: glide ignores these connection_string parameters: {}",
                    ignored.join(", ")
                ));
            }
        }
        w
    }

    /// Non-fatal findings of the loader (extra keys, deprecated settings, ...),
    /// matching what Feast logs or silently accepts.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Resolve a path from the configuration the way Feast does: absolute paths
    /// are kept, relative ones are joined to `repo_path`.
    pub fn resolve_path(&self, p: impl AsRef<Path>) -> PathBuf {
        let p = p.as_ref();
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.repo_path.join(p)
        }
    }

    /// The registry file for a file registry (None for sql / remote registries).
    pub fn registry_path(&self) -> Option<PathBuf> {
        match &self.registry {
            RegistryConfig::File(f) => Some(f.resolved_path(&self.repo_path)),
            _ => None,
        }
    }

    /// The parsed URL of a sql registry (None for other registry types).
    pub fn registry_sql_url(&self) -> Option<Result<SqlUrl, SqlUrlError>> {
        match &self.registry {
            RegistryConfig::Sql(s) => Some(s.url()),
            _ => None,
        }
    }

    /// The SQLite database of a sqlite online store, resolved against `repo_path`.
    pub fn sqlite_online_store_path(&self) -> Option<PathBuf> {
        match &self.online_store {
            Some(OnlineStoreConfig::Sqlite(s)) => Some(self.resolve_path(&s.path)),
            _ => None,
        }
    }

    /// The effective configuration (all defaults filled in) as YAML.
    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(self).unwrap_or_default()
    }

    /// The effective configuration as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// What `feast configuration` prints: the keys given in the file (after
    /// variable substitution), in Feast's field order, plus the defaults Feast
    /// materializes: `online_store: sqlite`, `auth: {type: no_auth}`,
    /// `offline_store: dask` and `batch_engine: local` when absent, and `type`
    /// added to `online_store` / `offline_store` / `feature_server` mappings that
    /// lack it. `repo_path` is never printed.
    pub fn feast_configuration_yaml(&self) -> String {
        let raw = self.raw.as_mapping().cloned().unwrap_or_default();
        let get = |k: &str| raw.get(Value::from(k)).cloned();
        let with_type = |v: Value, default: &str| -> Value {
            match v {
                Value::Mapping(mut m) => {
                    if !m.contains_key(Value::from("type")) {
                        m.insert(Value::from("type"), Value::from(default));
                    }
                    Value::Mapping(m)
                }
                other => other,
            }
        };
        let mut out = Mapping::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                out.insert(Value::from(k), v);
            }
        };
        put("project", get("project"));
        put("project_description", get("project_description"));
        put("provider", get("provider"));
        put("registry", get("registry"));
        put(
            "online_store",
            Some(
                get("online_store")
                    .map(|v| with_type(v, "sqlite"))
                    .unwrap_or_else(|| Value::from("sqlite")),
            ),
        );
        put(
            "auth",
            Some(get("auth").unwrap_or_else(|| {
                let mut m = Mapping::new();
                m.insert(Value::from("type"), Value::from("no_auth"));
                Value::Mapping(m)
            })),
        );
        put(
            "offline_store",
            Some(
                get("offline_store")
                    .map(|v| with_type(v, "dask"))
                    .unwrap_or_else(|| Value::from("dask")),
            ),
        );
        put(
            "batch_engine",
            Some(get("batch_engine").unwrap_or_else(|| Value::from("local"))),
        );
        put(
            "feature_server",
            get("feature_server").map(|v| with_type(v, "local")),
        );
        put("embedding_model", get("embedding_model"));
        put("flags", get("flags"));
        // Scalars Feast re-dumps after validation: print the parsed values.
        let typed = |k: &str, v: Value| get(k).map(|_| v);
        put(
            "entity_key_serialization_version",
            typed(
                "entity_key_serialization_version",
                Value::from(self.entity_key_serialization_version),
            ),
        );
        put(
            "coerce_tz_aware",
            typed("coerce_tz_aware", Value::from(self.coerce_tz_aware)),
        );
        // `materialization` is a model: only the known keys that were set, parsed.
        put(
            "materialization",
            get("materialization").map(|v| {
                let given = v.as_mapping().cloned().unwrap_or_default();
                let mut m = Mapping::new();
                for (k, value) in given {
                    match k.as_str() {
                        Some("pull_latest_features") => {
                            m.insert(k, Value::from(self.materialization.pull_latest_features));
                        }
                        Some("online_write_batch_size") => {
                            let n = self.materialization.online_write_batch_size;
                            m.insert(k, n.map(Value::from).unwrap_or(value));
                        }
                        _ => {}
                    }
                }
                Value::Mapping(m)
            }),
        );
        for k in ["openlineage", "mlflow", "data_quality_monitoring"] {
            put(k, get(k));
        }
        serde_norway::to_string(&Value::Mapping(out)).unwrap_or_default()
    }
}
