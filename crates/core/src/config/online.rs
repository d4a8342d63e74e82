//! `online_store:` (Feast `*OnlineStoreConfig` models).

use std::collections::{BTreeMap, BTreeSet};

use serde::de::{self, MapAccess};
use serde::{Deserialize, Deserializer, Serialize};

use super::de::{
    boolean, boolean_opt, checked_str, lax_int, lax_int_ge0, lax_int_opt, lax_port,
    struct_from_map, struct_from_nothing,
};
use super::tagged::{Tagged, unknown_msg, unsupported_msg, validated};

/// Online store types feast-rs implements.
pub const SUPPORTED_ONLINE_STORES: &[&str] = &["sqlite", "redis", "postgres", "remote"];

/// Every online store type name Feast 0.67 resolves (`ONLINE_STORE_CLASS_FOR_TYPE`).
pub const FEAST_ONLINE_STORES: &[&str] = &[
    "aerospike",
    "sqlite",
    "datastore",
    "redis",
    "dynamodb",
    "snowflake.online",
    "bigtable",
    "postgres",
    "hbase",
    "cassandra",
    "scylladb",
    "mysql",
    "hazelcast",
    "elasticsearch",
    "remote",
    "singlestore",
    "qdrant",
    "couchbase.online",
    "milvus",
    "mongodb",
    "hybrid",
    "chronon",
];

const SQLITE_CLASS: &str = "feast.infra.online_stores.sqlite.SqliteOnlineStore";

/// `online_store:` section.
// Postgres is much larger than the other variants; the config is built once,
// so boxing would only cost ergonomics.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum OnlineStoreConfig {
    /// `type: sqlite` (the default).
    Sqlite(SqliteOnlineStoreConfig),
    /// `type: redis`.
    Redis(RedisOnlineStoreConfig),
    /// `type: postgres`.
    Postgres(PostgresOnlineStoreConfig),
    /// `type: remote` (an HTTP feature server).
    Remote(RemoteOnlineStoreConfig),
}

impl OnlineStoreConfig {
    /// The `type` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            OnlineStoreConfig::Sqlite(_) => "sqlite",
            OnlineStoreConfig::Redis(_) => "redis",
            OnlineStoreConfig::Postgres(_) => "postgres",
            OnlineStoreConfig::Remote(_) => "remote",
        }
    }
}

impl Default for OnlineStoreConfig {
    fn default() -> Self {
        OnlineStoreConfig::Sqlite(SqliteOnlineStoreConfig::default())
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum OnlineKind {
    Sqlite,
    Redis,
    Postgres,
    Remote,
}

impl Tagged for OnlineStoreConfig {
    type Kind = OnlineKind;
    const TAG: &'static str = "type";
    const EXPECTING: &'static str = "an online store type name or a mapping with `type`";

    fn resolve(name: &str, _keys: Option<&BTreeSet<String>>) -> Result<OnlineKind, String> {
        match name {
            "sqlite" | SQLITE_CLASS => Ok(OnlineKind::Sqlite),
            "redis" => Ok(OnlineKind::Redis),
            "postgres" => Ok(OnlineKind::Postgres),
            "remote" => Ok(OnlineKind::Remote),
            _ if FEAST_ONLINE_STORES.contains(&name) || name.ends_with("OnlineStore") => Err(
                unsupported_msg("online store", name, SUPPORTED_ONLINE_STORES),
            ),
            _ => Err(unknown_msg("online store", name, SUPPORTED_ONLINE_STORES)),
        }
    }

    fn untagged(_keys: &BTreeSet<String>) -> Result<OnlineKind, String> {
        Ok(OnlineKind::Sqlite)
    }

    fn from_map<'de, A: MapAccess<'de>>(kind: OnlineKind, map: A) -> Result<Self, A::Error> {
        Ok(match kind {
            OnlineKind::Sqlite => OnlineStoreConfig::Sqlite(struct_from_map(map, "type")?),
            OnlineKind::Redis => {
                let c: RedisOnlineStoreConfig = struct_from_map(map, "type")?;
                OnlineStoreConfig::Redis(validated(c, RedisOnlineStoreConfig::validate)?)
            }
            OnlineKind::Postgres => OnlineStoreConfig::Postgres(struct_from_map(map, "type")?),
            OnlineKind::Remote => OnlineStoreConfig::Remote(struct_from_map(map, "type")?),
        })
    }

    fn from_name<E: de::Error>(kind: OnlineKind) -> Result<Self, E> {
        Ok(match kind {
            OnlineKind::Sqlite => OnlineStoreConfig::Sqlite(struct_from_nothing()?),
            OnlineKind::Redis => OnlineStoreConfig::Redis(struct_from_nothing()?),
            OnlineKind::Postgres => OnlineStoreConfig::Postgres(struct_from_nothing()?),
            OnlineKind::Remote => OnlineStoreConfig::Remote(struct_from_nothing()?),
        })
    }

    /// Feast: `online_store: null` (or the strings `none` / `null`) means no online store.
    fn from_null<E: de::Error>() -> Result<Option<Self>, E> {
        Ok(None)
    }

    fn from_string<E: de::Error>(s: &str) -> Result<Option<Self>, E> {
        if matches!(s.to_ascii_lowercase().as_str(), "none" | "null") {
            return Ok(None);
        }
        let kind = Self::resolve(s, None).map_err(E::custom)?;
        Self::from_name(kind).map(Some)
    }
}

fn default_sqlite_path() -> String {
    "data/online.db".to_owned()
}
fn some_false() -> Option<bool> {
    Some(false)
}
fn some_true() -> Option<bool> {
    Some(true)
}
fn some_cosine() -> Option<String> {
    Some("cosine".to_owned())
}

/// `SqliteOnlineStoreConfig` (`extra="forbid"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteOnlineStoreConfig {
    /// Database file; relative paths are resolved against the repo path.
    #[serde(default = "default_sqlite_path")]
    pub path: String,
    /// From Feast's `VectorStoreConfig` mixin.
    #[serde(default = "some_false", deserialize_with = "boolean_opt")]
    pub vector_enabled: Option<bool>,
    /// From Feast's `VectorStoreConfig` mixin.
    #[serde(default = "some_cosine")]
    pub similarity: Option<String>,
    /// Full-text search support (sqlite-vec / FTS).
    #[serde(default, deserialize_with = "boolean")]
    pub text_search_enabled: bool,
    /// Serve the OpenAI-compatible vector store API from this store.
    #[serde(default, deserialize_with = "boolean")]
    pub enable_openai_compatible_store: bool,
}

impl Default for SqliteOnlineStoreConfig {
    fn default() -> Self {
        SqliteOnlineStoreConfig {
            path: default_sqlite_path(),
            vector_enabled: Some(false),
            similarity: some_cosine(),
            text_search_enabled: false,
            enable_openai_compatible_store: false,
        }
    }
}

/// `RedisType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisType {
    /// A single Redis server (only the first host of the connection string is used).
    #[default]
    Redis,
    /// Redis Cluster; every host is a startup node.
    RedisCluster,
    /// Redis Sentinel; every host is a sentinel, see `sentinel_master`.
    RedisSentinel,
}

/// `RedisClient` (0.67).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisClient {
    /// redis-py.
    #[default]
    Redis,
    /// valkey-glide for the synchronous read path.
    Glide,
}

fn default_sentinel_master() -> String {
    "mymaster".to_owned()
}
fn default_redis_connection_string() -> String {
    "localhost:6379".to_owned()
}

fn de_redis_connection_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked_str(d, "a Redis connection string", |s| {
        RedisConnectionString::parse(s).map(|_| ())
    })
}

/// `RedisOnlineStoreConfig` (`extra="forbid"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisOnlineStoreConfig {
    /// Deployment kind.
    #[serde(default)]
    pub redis_type: RedisType,
    /// Client library used by Python Feast for reads.
    #[serde(default)]
    pub client: RedisClient,
    /// Master name for `redis_sentinel`.
    #[serde(default = "default_sentinel_master")]
    pub sentinel_master: String,
    /// `host:port[,host:port...][,key=value...]`; see [`RedisConnectionString`].
    #[serde(
        default = "default_redis_connection_string",
        deserialize_with = "de_redis_connection_string"
    )]
    pub connection_string: String,
    /// `EXPIRE` applied to the entity hash on every write.
    #[serde(default, deserialize_with = "lax_int_opt")]
    pub key_ttl_seconds: Option<i64>,
    /// Scan the keyspace when deleting a feature view's data.
    #[serde(default = "some_true", deserialize_with = "boolean_opt")]
    pub full_scan_for_deletion: Option<bool>,
    /// Skip the timestamp read-before-write check.
    #[serde(default, deserialize_with = "boolean")]
    pub skip_dedup: bool,
}

impl Default for RedisOnlineStoreConfig {
    fn default() -> Self {
        RedisOnlineStoreConfig {
            redis_type: RedisType::Redis,
            client: RedisClient::Redis,
            sentinel_master: default_sentinel_master(),
            connection_string: default_redis_connection_string(),
            key_ttl_seconds: None,
            full_scan_for_deletion: Some(true),
            skip_dedup: false,
        }
    }
}

impl RedisOnlineStoreConfig {
    /// The parsed `connection_string`.
    pub fn parsed_connection_string(&self) -> Result<RedisConnectionString, String> {
        RedisConnectionString::parse(&self.connection_string)
    }

    fn validate(&self) -> Result<(), String> {
        if self.client == RedisClient::Glide && self.redis_type == RedisType::RedisSentinel {
            return Err(
                "client: glide does not support redis_type: redis_sentinel (Feast raises the same error)"
                    .to_owned(),
            );
        }
        let cs = self.parsed_connection_string()?;
        if self.redis_type != RedisType::RedisCluster
            && let Some(n) = cs.nodes.iter().find(|n| n.port.is_none())
        {
            return Err(format!(
                "connection_string: host `{}` has no port (only redis_cluster defaults it to 6379)",
                n.host
            ));
        }
        Ok(())
    }
}

/// One `host:port` entry of a Redis connection string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedisNode {
    /// Host name or address.
    pub host: String,
    /// Port, when given.
    pub port: Option<u16>,
}

/// A parsed Redis `connection_string`, following Feast's
/// `RedisOnlineStore._parse_connection_string`: comma-separated items; items
/// without `=` are `host:port` nodes, items with `=` are client options whose
/// values are JSON-decoded when possible (`db=0`, `ssl=true`, `password=...`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RedisConnectionString {
    /// Nodes in order (a plain `redis` deployment uses only the first).
    pub nodes: Vec<RedisNode>,
    /// `db=`.
    pub db: Option<i64>,
    /// `password=` (a JSON string is unquoted, anything else is kept as written).
    pub password: Option<String>,
    /// `username=`.
    pub username: Option<String>,
    /// `ssl=`, by Python truthiness of the decoded value (`ssl=true` → true, `ssl=0` → false).
    pub ssl: bool,
    /// Every `key=value` option, JSON-decoded when the value is valid JSON, else as a string.
    pub options: BTreeMap<String, serde_json::Value>,
}

fn truthy(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => false,
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        serde_json::Value::String(s) => !s.is_empty(),
        serde_json::Value::Array(a) => !a.is_empty(),
        serde_json::Value::Object(o) => !o.is_empty(),
    }
}

impl RedisConnectionString {
    /// Parse a connection string. Empty items and surrounding spaces are ignored.
    pub fn parse(s: &str) -> Result<RedisConnectionString, String> {
        if s.contains("://") {
            return Err(format!(
                "Redis connection string `{s}` looks like a URL; Feast expects `host:port[,key=value...]`"
            ));
        }
        let mut out = RedisConnectionString {
            nodes: Vec::new(),
            db: None,
            password: None,
            username: None,
            ssl: false,
            options: BTreeMap::new(),
        };
        let mut raw: BTreeMap<String, String> = BTreeMap::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if let Some((k, v)) = item.split_once('=') {
                let decoded = serde_json::from_str::<serde_json::Value>(v)
                    .unwrap_or_else(|_| serde_json::Value::String(v.to_owned()));
                raw.insert(k.to_owned(), v.to_owned());
                out.options.insert(k.to_owned(), decoded);
            } else {
                let (host, port) = match item.rsplit_once(':') {
                    Some((h, p)) => {
                        let port = p.parse::<u16>().map_err(|_| {
                            format!("Redis node `{item}`: port `{p}` is not a number in 0-65535")
                        })?;
                        (h.trim_start_matches('[').trim_end_matches(']'), Some(port))
                    }
                    None => (item, None),
                };
                if host.is_empty() {
                    return Err(format!("Redis node `{item}` has an empty host"));
                }
                out.nodes.push(RedisNode {
                    host: host.to_owned(),
                    port,
                });
            }
        }
        if out.nodes.is_empty() {
            return Err(format!("Redis connection string `{s}` names no host"));
        }
        let text = |k: &str| -> Option<String> {
            out.options.get(k).map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                _ => raw[k].clone(),
            })
        };
        let password = text("password");
        let username = text("username");
        let db = match out.options.get("db") {
            None => None,
            Some(serde_json::Value::Number(n)) if n.as_i64().is_some() => n.as_i64(),
            Some(serde_json::Value::String(s)) => Some(
                s.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("Redis option db=`{s}` is not an integer"))?,
            ),
            Some(other) => return Err(format!("Redis option db=`{other}` is not an integer")),
        };
        let ssl = out.options.get("ssl").is_some_and(truthy);
        out.password = password;
        out.username = username;
        out.db = db;
        out.ssl = ssl;
        Ok(out)
    }
}

/// `ConnectionType` for Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostgresConnType {
    /// One connection.
    #[default]
    Singleton,
    /// A pool of `min_conn..=max_conn` connections.
    Pool,
}

pub(crate) fn default_min_conn() -> i64 {
    1
}
pub(crate) fn default_max_conn() -> i64 {
    10
}
pub(crate) fn default_pg_port() -> u16 {
    5432
}
pub(crate) fn default_db_schema() -> String {
    "public".to_owned()
}
pub(crate) fn default_sslmode() -> Option<String> {
    Some("require".to_owned())
}
fn default_max_batched_result_rows() -> i64 {
    2048
}

/// `PostgreSQLOnlineStoreConfig` = `PostgreSQLConfig` + vector options (`extra="forbid"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresOnlineStoreConfig {
    /// Pool lower bound.
    #[serde(default = "default_min_conn", deserialize_with = "lax_int")]
    pub min_conn: i64,
    /// Pool upper bound.
    #[serde(default = "default_max_conn", deserialize_with = "lax_int")]
    pub max_conn: i64,
    /// Singleton connection or pool.
    #[serde(default)]
    pub conn_type: PostgresConnType,
    /// Server host (required).
    pub host: String,
    /// Server port.
    #[serde(default = "default_pg_port", deserialize_with = "lax_port")]
    pub port: u16,
    /// Database name (required).
    pub database: String,
    /// Schema holding the tables.
    #[serde(default = "default_db_schema")]
    pub db_schema: String,
    /// User (required).
    pub user: String,
    /// Password (required).
    pub password: String,
    /// libpq `sslmode`; Feast's default is `require`.
    #[serde(default = "default_sslmode")]
    pub sslmode: Option<String>,
    /// Client key file.
    #[serde(default)]
    pub sslkey_path: Option<String>,
    /// Client certificate file.
    #[serde(default)]
    pub sslcert_path: Option<String>,
    /// CA certificate file.
    #[serde(default)]
    pub sslrootcert_path: Option<String>,
    /// TCP keepalive idle seconds.
    #[serde(default, deserialize_with = "lax_int_opt")]
    pub keepalives_idle: Option<i64>,
    /// pgvector columns.
    #[serde(default = "some_false", deserialize_with = "boolean_opt")]
    pub vector_enabled: Option<bool>,
    /// Vector distance metric.
    #[serde(default = "some_cosine")]
    pub similarity: Option<String>,
    /// Serve the OpenAI-compatible vector store API from this store.
    #[serde(default = "some_false", deserialize_with = "boolean_opt")]
    pub enable_openai_compatible_store: Option<bool>,
    /// (0.67) Largest entity rows × feature views read in one `UNION ALL` query; 0 disables batching.
    #[serde(
        default = "default_max_batched_result_rows",
        deserialize_with = "lax_int_ge0"
    )]
    pub max_batched_result_rows: i64,
}

fn default_remote_online_path() -> String {
    "http://localhost:6566".to_owned()
}
fn default_pool_size() -> i64 {
    50
}
fn default_idle_timeout() -> i64 {
    300
}
fn default_retries() -> i64 {
    3
}

/// `RemoteOnlineStoreConfig` (`extra="forbid"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteOnlineStoreConfig {
    /// Base URL of the feature server, with scheme.
    #[serde(default = "default_remote_online_path")]
    pub path: String,
    /// CA bundle used to verify the server ("" = system roots).
    #[serde(default)]
    pub cert: String,
    /// HTTP connection pool size.
    #[serde(default = "default_pool_size", deserialize_with = "lax_int")]
    pub connection_pool_size: i64,
    /// Idle seconds before a pooled connection is closed (0 = never).
    #[serde(default = "default_idle_timeout", deserialize_with = "lax_int")]
    pub connection_idle_timeout: i64,
    /// Retries for 429/5xx responses.
    #[serde(default = "default_retries", deserialize_with = "lax_int")]
    pub connection_retries: i64,
}

impl Default for RemoteOnlineStoreConfig {
    fn default() -> Self {
        RemoteOnlineStoreConfig {
            path: default_remote_online_path(),
            cert: String::new(),
            connection_pool_size: default_pool_size(),
            connection_idle_timeout: default_idle_timeout(),
            connection_retries: default_retries(),
        }
    }
}
