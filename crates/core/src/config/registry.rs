//! `registry:` (Feast `RegistryConfig`, `SqlRegistryConfig`, `RemoteRegistryConfig`).
//!
//! All three Feast models use `extra="allow"`, so unknown keys are accepted and
//! kept in `extra` (the loader reports them as warnings).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, MapAccess};
use serde::{Deserialize, Deserializer, Serialize};
use serde_norway::{Mapping, Value};

use super::de::{boolean, strict_int, struct_from_map};
use super::error::{UNSUPPORTED_MARK, invalid, unsupported};
use super::tagged::{Tagged, unknown_msg, unsupported_msg, validated};

/// Registry types feast-rs implements.
pub const SUPPORTED_REGISTRIES: &[&str] = &["file", "sql", "remote"];

/// Registry types Feast 0.67 resolves (`REGISTRY_CLASS_FOR_TYPE`).
pub const FEAST_REGISTRIES: &[&str] = &["file", "sql", "snowflake.registry", "remote"];

/// `registry:` section. A plain string is a file registry path.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "registry_type", rename_all = "lowercase")]
pub enum RegistryConfig {
    /// `registry_type: file` (the default): a serialized `Registry` proto in a local file.
    File(FileRegistryConfig),
    /// `registry_type: sql`: SQLAlchemy-layout tables in Postgres or SQLite.
    Sql(SqlRegistryConfig),
    /// `registry_type: remote`: a registry gRPC server.
    Remote(RemoteRegistryConfig),
}

/// `cache_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// Refresh the cache right after each write.
    #[default]
    Sync,
    /// Refresh in a background thread every `cache_ttl_seconds`.
    Thread,
}

/// `schema_mode` of the SQL registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaMode {
    /// Create missing tables.
    #[default]
    Auto,
    /// Fail if a table is missing; never run DDL.
    Verify,
    /// Neither create nor check.
    Skip,
}

/// `mcp:` inside `registry:` (`McpRegistryConfig`, `extra="allow"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct McpRegistryConfig {
    /// Enable MCP on the REST registry server.
    #[serde(default, deserialize_with = "boolean")]
    pub enabled: bool,
    /// Keys Feast accepts but does not model.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

fn default_cache_ttl() -> i64 {
    600
}

/// Keys shared by every registry type (Feast's base `RegistryConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryCommon<'a> {
    /// `path`.
    pub path: &'a str,
    /// `registry_store_type`.
    pub registry_store_type: Option<&'a str>,
    /// `cache_ttl_seconds` (0 = never expire).
    pub cache_ttl_seconds: i64,
    /// `cache_mode`.
    pub cache_mode: CacheMode,
    /// `purge_feast_metadata`.
    pub purge_feast_metadata: bool,
    /// `enable_online_feature_view_versioning`.
    pub enable_online_feature_view_versioning: bool,
    /// `serve_features_while_materializing` (0.67).
    pub serve_features_while_materializing: bool,
}

/// Base `RegistryConfig` used for file registries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRegistryConfig {
    /// Local path of `registry.db` (relative to the repo path unless absolute).
    #[serde(default)]
    pub path: String,
    /// Registry store class (`FileRegistryStore`); None = chosen from the path scheme.
    #[serde(default)]
    pub registry_store_type: Option<String>,
    /// Seconds the registry is cached in memory (0 = forever).
    #[serde(default = "default_cache_ttl", deserialize_with = "strict_int")]
    pub cache_ttl_seconds: i64,
    /// Cache refresh strategy.
    #[serde(default)]
    pub cache_mode: CacheMode,
    /// boto3 extras for S3 registry stores.
    #[serde(default)]
    pub s3_additional_kwargs: Option<BTreeMap<String, String>>,
    /// Stop using the `feast_metadata` table.
    #[serde(default, deserialize_with = "boolean")]
    pub purge_feast_metadata: bool,
    /// Resolve `fv@vN` feature references and keep per-version online tables.
    #[serde(default, deserialize_with = "boolean")]
    pub enable_online_feature_view_versioning: bool,
    /// Keep serving feature views that are in the `MATERIALIZING` state.
    #[serde(default, deserialize_with = "boolean")]
    pub serve_features_while_materializing: bool,
    /// MCP options for the REST registry server.
    #[serde(default)]
    pub mcp: Option<McpRegistryConfig>,
    /// Keys Feast accepts but does not model.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl FileRegistryConfig {
    /// A file registry at `path` with every default (what `registry: <path>` means).
    pub fn with_path(path: impl Into<String>) -> Self {
        FileRegistryConfig {
            path: path.into(),
            registry_store_type: None,
            cache_ttl_seconds: default_cache_ttl(),
            cache_mode: CacheMode::Sync,
            s3_additional_kwargs: None,
            purge_feast_metadata: false,
            enable_online_feature_view_versioning: false,
            serve_features_while_materializing: false,
            mcp: None,
            extra: BTreeMap::new(),
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.path.is_empty() {
            return Err("`path` is required".to_owned());
        }
        match self.registry_store_type.as_deref() {
            None => check_file_registry_path(&self.path),
            Some(t) => check_registry_store_type(t),
        }
    }

    /// The registry file: `path` joined to `repo_path` unless absolute; a
    /// `file://` prefix is removed.
    pub fn resolved_path(&self, repo_path: &Path) -> PathBuf {
        let p = self.path.strip_prefix("file://").unwrap_or(&self.path);
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            repo_path.join(p)
        }
    }
}

/// Python's `urlparse(path).scheme`, lower-cased ("" when there is none).
fn url_scheme(path: &str) -> String {
    let Some(i) = path.find(':') else {
        return String::new();
    };
    let head = &path[..i];
    let mut chars = head.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() => {}
        _ => return String::new(),
    }
    if head
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        head.to_ascii_lowercase()
    } else {
        String::new()
    }
}

fn check_file_registry_path(path: &str) -> Result<(), String> {
    let scheme = url_scheme(path);
    let drive = scheme.len() == 1 && matches!(path.get(1..3), Some(":\\") | Some(":/"));
    match scheme.as_str() {
        "" | "file" => Ok(()),
        _ if drive => Ok(()),
        "gs" | "s3" | "hdfs" => Err(format!(
            "{UNSUPPORTED_MARK}registry path `{path}`: the `{scheme}` registry store is valid in Feast \
             but not supported by feast-rs (supported: local files)"
        )),
        _ => {
            let hint = if matches!(
                scheme.split('+').next(),
                Some("postgresql" | "postgres" | "sqlite" | "mysql")
            ) {
                "; a database URL needs `registry_type: sql`"
            } else {
                ""
            };
            Err(format!(
                "registry path `{path}` has unsupported scheme `{scheme}` (Feast supports file, s3, gs and hdfs){hint}"
            ))
        }
    }
}

fn check_registry_store_type(t: &str) -> Result<(), String> {
    if !t.ends_with("RegistryStore") {
        return Err(format!(
            "registry_store_type `{t}`: a registry store class name must end with \"RegistryStore\""
        ));
    }
    match t {
        "FileRegistryStore" | "feast.infra.registry.file.FileRegistryStore" => Ok(()),
        _ => Err(format!(
            "{UNSUPPORTED_MARK}registry_store_type `{t}` is not supported by feast-rs (supported: FileRegistryStore)"
        )),
    }
}

fn default_sqlalchemy_kwargs() -> Mapping {
    let mut m = Mapping::new();
    m.insert(Value::from("echo"), Value::from(false));
    m
}

/// Rewrite a leading `postgresql://` to `postgresql+psycopg://`, as Feast does
/// for SQL registry `path` and `read_path`.
pub fn normalize_sql_registry_url(url: &str) -> String {
    match url.strip_prefix("postgresql://") {
        Some(rest) => format!("postgresql+psycopg://{rest}"),
        None => url.to_owned(),
    }
}

fn de_sql_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl<'de> de::Visitor<'de> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a SQLAlchemy database URL")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            match SqlUrl::parse(v) {
                Ok(_) => Ok(normalize_sql_registry_url(v)),
                Err(e @ SqlUrlError::UnsupportedDialect { .. }) => Err(unsupported(e)),
                Err(e) => Err(invalid(e)),
            }
        }
    }
    d.deserialize_str(V)
}

fn de_sql_url_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct V;
    impl<'de> de::Visitor<'de> for V {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a SQLAlchemy database URL or null")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<String>, E> {
            match SqlUrl::parse(v) {
                Ok(_) => Ok(Some(normalize_sql_registry_url(v))),
                Err(e @ SqlUrlError::UnsupportedDialect { .. }) => Err(unsupported(e)),
                Err(e) => Err(invalid(e)),
            }
        }
    }
    d.deserialize_any(V)
}

/// `SqlRegistryConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SqlRegistryConfig {
    /// SQLAlchemy URL (a leading `postgresql://` is rewritten to `postgresql+psycopg://`).
    #[serde(default, deserialize_with = "de_sql_url")]
    pub path: String,
    /// Read endpoint, if different from `path` (normalized the same way).
    #[serde(default, deserialize_with = "de_sql_url_opt")]
    pub read_path: Option<String>,
    /// Ignored by the SQL registry; kept because Feast accepts it.
    #[serde(default)]
    pub registry_store_type: Option<String>,
    /// Seconds the registry is cached in memory (0 = forever).
    #[serde(default = "default_cache_ttl", deserialize_with = "strict_int")]
    pub cache_ttl_seconds: i64,
    /// Cache refresh strategy.
    #[serde(default)]
    pub cache_mode: CacheMode,
    /// Ignored by the SQL registry; kept because Feast accepts it.
    #[serde(default)]
    pub s3_additional_kwargs: Option<BTreeMap<String, String>>,
    /// Stop using (and clear) the `feast_metadata` table.
    #[serde(default, deserialize_with = "boolean")]
    pub purge_feast_metadata: bool,
    /// Resolve `fv@vN` references and keep per-version online tables.
    #[serde(default, deserialize_with = "boolean")]
    pub enable_online_feature_view_versioning: bool,
    /// Keep serving feature views that are in the `MATERIALIZING` state.
    #[serde(default, deserialize_with = "boolean")]
    pub serve_features_while_materializing: bool,
    /// MCP options for the REST registry server.
    #[serde(default)]
    pub mcp: Option<McpRegistryConfig>,
    /// Extra `create_engine` keyword arguments (Python-specific; kept for display).
    #[serde(default = "default_sqlalchemy_kwargs")]
    pub sqlalchemy_config_kwargs: Mapping,
    /// Worker threads for asynchronous cache refresh (0 = none).
    #[serde(default, deserialize_with = "strict_int")]
    pub thread_pool_executor_worker_count: i64,
    /// DDL behaviour on startup.
    #[serde(default)]
    pub schema_mode: SchemaMode,
    /// Keys Feast accepts but does not model.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl SqlRegistryConfig {
    fn validate(&self) -> Result<(), String> {
        if self.path.is_empty() {
            return Err("`path` (a database URL) is required for registry_type: sql".to_owned());
        }
        Ok(())
    }

    /// The parsed `path`.
    pub fn url(&self) -> Result<SqlUrl, SqlUrlError> {
        SqlUrl::parse(&self.path)
    }

    /// The parsed `read_path`, falling back to `path`.
    pub fn read_url(&self) -> Result<SqlUrl, SqlUrlError> {
        SqlUrl::parse(self.read_path.as_deref().unwrap_or(&self.path))
    }
}

/// `RemoteRegistryConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteRegistryConfig {
    /// gRPC target `host:port`, without a scheme.
    #[serde(default)]
    pub path: String,
    /// CA certificate PEM file ("" = none).
    #[serde(default)]
    pub cert: String,
    /// Use TLS even without `cert` (roots from `SSL_CERT_FILE` / `REQUESTS_CA_BUNDLE`).
    #[serde(default, deserialize_with = "boolean")]
    pub is_tls: bool,
    /// mTLS client certificate (with `client_key`).
    #[serde(default)]
    pub client_cert: String,
    /// mTLS client key (with `client_cert`).
    #[serde(default)]
    pub client_key: String,
    /// Override of the `:authority` header.
    #[serde(default)]
    pub authority: String,
    /// Ignored by the remote registry; kept because Feast accepts it.
    #[serde(default)]
    pub registry_store_type: Option<String>,
    /// Seconds the registry is cached in memory (0 = forever).
    #[serde(default = "default_cache_ttl", deserialize_with = "strict_int")]
    pub cache_ttl_seconds: i64,
    /// Cache refresh strategy.
    #[serde(default)]
    pub cache_mode: CacheMode,
    /// Ignored by the remote registry; kept because Feast accepts it.
    #[serde(default)]
    pub s3_additional_kwargs: Option<BTreeMap<String, String>>,
    /// Ignored by the remote registry; kept because Feast accepts it.
    #[serde(default, deserialize_with = "boolean")]
    pub purge_feast_metadata: bool,
    /// Resolve `fv@vN` references (not exposed over the remote API).
    #[serde(default, deserialize_with = "boolean")]
    pub enable_online_feature_view_versioning: bool,
    /// Keep serving feature views that are in the `MATERIALIZING` state.
    #[serde(default, deserialize_with = "boolean")]
    pub serve_features_while_materializing: bool,
    /// MCP options.
    #[serde(default)]
    pub mcp: Option<McpRegistryConfig>,
    /// Keys Feast accepts but does not model.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl RemoteRegistryConfig {
    /// Whether the channel uses TLS (`cert` set or `is_tls`).
    pub fn uses_tls(&self) -> bool {
        !self.cert.is_empty() || self.is_tls
    }

    fn validate(&self) -> Result<(), String> {
        if self.path.is_empty() {
            return Err(
                "`path` (host:port of the registry server) is required for registry_type: remote"
                    .to_owned(),
            );
        }
        if self.uses_tls() && (self.client_cert.is_empty() != self.client_key.is_empty()) {
            return Err("both client_cert and client_key must be provided for mTLS".to_owned());
        }
        Ok(())
    }
}

impl RegistryConfig {
    /// The `registry_type` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            RegistryConfig::File(_) => "file",
            RegistryConfig::Sql(_) => "sql",
            RegistryConfig::Remote(_) => "remote",
        }
    }

    /// The keys every registry type shares.
    pub fn common(&self) -> RegistryCommon<'_> {
        match self {
            RegistryConfig::File(c) => RegistryCommon {
                path: &c.path,
                registry_store_type: c.registry_store_type.as_deref(),
                cache_ttl_seconds: c.cache_ttl_seconds,
                cache_mode: c.cache_mode,
                purge_feast_metadata: c.purge_feast_metadata,
                enable_online_feature_view_versioning: c.enable_online_feature_view_versioning,
                serve_features_while_materializing: c.serve_features_while_materializing,
            },
            RegistryConfig::Sql(c) => RegistryCommon {
                path: &c.path,
                registry_store_type: c.registry_store_type.as_deref(),
                cache_ttl_seconds: c.cache_ttl_seconds,
                cache_mode: c.cache_mode,
                purge_feast_metadata: c.purge_feast_metadata,
                enable_online_feature_view_versioning: c.enable_online_feature_view_versioning,
                serve_features_while_materializing: c.serve_features_while_materializing,
            },
            RegistryConfig::Remote(c) => RegistryCommon {
                path: &c.path,
                registry_store_type: c.registry_store_type.as_deref(),
                cache_ttl_seconds: c.cache_ttl_seconds,
                cache_mode: c.cache_mode,
                purge_feast_metadata: c.purge_feast_metadata,
                enable_online_feature_view_versioning: c.enable_online_feature_view_versioning,
                serve_features_while_materializing: c.serve_features_while_materializing,
            },
        }
    }

    /// Keys Feast accepted as extras.
    pub fn extra(&self) -> &BTreeMap<String, Value> {
        match self {
            RegistryConfig::File(c) => &c.extra,
            RegistryConfig::Sql(c) => &c.extra,
            RegistryConfig::Remote(c) => &c.extra,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum RegistryKind {
    File,
    Sql,
    Remote,
}

impl Tagged for RegistryConfig {
    type Kind = RegistryKind;
    const TAG: &'static str = "registry_type";
    const EXPECTING: &'static str = "a registry file path or a mapping";

    fn resolve(name: &str, _keys: Option<&BTreeSet<String>>) -> Result<RegistryKind, String> {
        match name {
            "file" => Ok(RegistryKind::File),
            "sql" => Ok(RegistryKind::Sql),
            "remote" => Ok(RegistryKind::Remote),
            _ if FEAST_REGISTRIES.contains(&name) => {
                Err(unsupported_msg("registry", name, SUPPORTED_REGISTRIES))
            }
            _ => Err(unknown_msg("registry", name, SUPPORTED_REGISTRIES)),
        }
    }

    fn untagged(_keys: &BTreeSet<String>) -> Result<RegistryKind, String> {
        Ok(RegistryKind::File)
    }

    fn from_map<'de, A: MapAccess<'de>>(kind: RegistryKind, map: A) -> Result<Self, A::Error> {
        Ok(match kind {
            RegistryKind::File => {
                let c: FileRegistryConfig = struct_from_map(map, "registry_type")?;
                RegistryConfig::File(validated(c, FileRegistryConfig::validate)?)
            }
            RegistryKind::Sql => {
                let c: SqlRegistryConfig = struct_from_map(map, "registry_type")?;
                RegistryConfig::Sql(validated(c, SqlRegistryConfig::validate)?)
            }
            RegistryKind::Remote => {
                let c: RemoteRegistryConfig = struct_from_map(map, "registry_type")?;
                RegistryConfig::Remote(validated(c, RemoteRegistryConfig::validate)?)
            }
        })
    }

    /// Not used: a registry string is a path (see `from_string`).
    fn from_name<E: de::Error>(_kind: RegistryKind) -> Result<Self, E> {
        Err(E::custom("a registry type name is not a registry path"))
    }

    /// `registry: <path>` is a file registry at that path.
    fn from_string<E: de::Error>(s: &str) -> Result<Option<Self>, E> {
        let c = FileRegistryConfig::with_path(s);
        c.validate().map_err(invalid)?;
        Ok(Some(RegistryConfig::File(c)))
    }

    fn from_null<E: de::Error>() -> Result<Option<Self>, E> {
        Err(invalid("`registry` must be set (a path or a mapping)"))
    }
}

/// A parsed SQL registry URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlUrl {
    /// A PostgreSQL URL in libpq form (`postgresql://user:pass@host:port/db?...`):
    /// any SQLAlchemy driver suffix (`+psycopg`, `+psycopg2`, ...) is removed.
    Postgres(String),
    /// An SQLite database file. `sqlite:///rel.db` gives a relative path, which
    /// SQLAlchemy (and so Feast) resolves against the process working directory;
    /// `sqlite://` and `sqlite:///:memory:` give `:memory:`. Query options are dropped.
    Sqlite(PathBuf),
}

/// Why a SQL registry URL was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlUrlError {
    /// A dialect SQLAlchemy knows (mysql, mssql, ...) that feast-rs does not implement.
    UnsupportedDialect {
        /// The URL scheme's dialect part.
        dialect: String,
    },
    /// Not a usable URL.
    Invalid(String),
}

impl fmt::Display for SqlUrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlUrlError::UnsupportedDialect { dialect } => write!(
                f,
                "SQL registry dialect `{dialect}` is not supported by feast-rs (supported: postgresql, sqlite)"
            ),
            SqlUrlError::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for SqlUrlError {}

impl SqlUrl {
    /// Parse a SQLAlchemy URL for the SQL registry.
    pub fn parse(url: &str) -> Result<SqlUrl, SqlUrlError> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(SqlUrlError::Invalid(format!(
                "`{url}` is not a database URL (expected e.g. postgresql+psycopg://user:pass@host:5432/db or sqlite:///path.db)"
            )));
        };
        let dialect = scheme
            .split('+')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match dialect.as_str() {
            "postgresql" => {
                if rest.is_empty() {
                    return Err(SqlUrlError::Invalid(format!(
                        "`{url}` has no host or database"
                    )));
                }
                Ok(SqlUrl::Postgres(format!("postgresql://{rest}")))
            }
            "postgres" => Err(SqlUrlError::Invalid(format!(
                "`{url}`: SQLAlchemy does not accept the `postgres://` scheme; use `postgresql://` or `postgresql+psycopg://`"
            ))),
            "sqlite" => {
                let rest = rest.split_once('?').map_or(rest, |(p, _)| p);
                if rest.is_empty() {
                    return Ok(SqlUrl::Sqlite(PathBuf::from(":memory:")));
                }
                let Some(path) = rest.strip_prefix('/') else {
                    return Err(SqlUrlError::Invalid(format!(
                        "`{url}`: an SQLite URL has no host; use sqlite:///relative.db or sqlite:////absolute.db"
                    )));
                };
                if path.is_empty() {
                    return Ok(SqlUrl::Sqlite(PathBuf::from(":memory:")));
                }
                Ok(SqlUrl::Sqlite(PathBuf::from(path)))
            }
            "mysql" | "mariadb" | "mssql" | "oracle" | "snowflake" | "cockroachdb" => {
                Err(SqlUrlError::UnsupportedDialect { dialect })
            }
            _ => Err(SqlUrlError::Invalid(format!(
                "`{url}`: unknown database dialect `{dialect}`"
            ))),
        }
    }
}

impl fmt::Display for SqlUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlUrl::Postgres(u) => f.write_str(u),
            SqlUrl::Sqlite(p) if p.as_os_str() == ":memory:" => f.write_str("sqlite://"),
            SqlUrl::Sqlite(p) => write!(f, "sqlite:///{}", p.display()),
        }
    }
}
