//! `offline_store:` (Feast `*OfflineStoreConfig` models).

use std::collections::BTreeSet;

use serde::de::{self, MapAccess};
use serde::{Deserialize, Serialize};

use super::de::{
    lax_int, lax_int_ge0, lax_int_opt, lax_port, strict_port_opt, struct_from_map,
    struct_from_nothing,
};
use super::online::{
    PostgresConnType, default_db_schema, default_max_conn, default_min_conn, default_pg_port,
    default_sslmode,
};
use super::tagged::{Tagged, unknown_msg, unsupported_msg};

/// Offline store types feast-rs implements (`file` is an alias of `dask`).
pub const SUPPORTED_OFFLINE_STORES: &[&str] = &["file", "dask", "duckdb", "postgres", "remote"];

/// Every offline store type name Feast 0.67 resolves (`OFFLINE_STORE_CLASS_FOR_TYPE`).
pub const FEAST_OFFLINE_STORES: &[&str] = &[
    "file",
    "dask",
    "bigquery",
    "redshift",
    "snowflake.offline",
    "spark",
    "trino",
    "postgres",
    "athena",
    "mssql",
    "duckdb",
    "remote",
    "couchbase.offline",
    "clickhouse",
    "ray",
    "oracle",
    "chronon",
    "hybrid",
];

const DUCKDB_CLASS: &str = "feast.infra.offline_stores.duckdb.DuckDBOfflineStore";

/// `offline_store:` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum OfflineStoreConfig {
    /// `type: dask` / `type: file` (the default): file sources read in-process.
    Dask(DaskOfflineStoreConfig),
    /// `type: duckdb`.
    Duckdb(DuckDbOfflineStoreConfig),
    /// `type: postgres`.
    Postgres(PostgresOfflineStoreConfig),
    /// `type: remote` (an Arrow Flight offline server).
    Remote(RemoteOfflineStoreConfig),
}

impl OfflineStoreConfig {
    /// The `type` name (`file` is reported as `dask`).
    pub fn type_name(&self) -> &'static str {
        match self {
            OfflineStoreConfig::Dask(_) => "dask",
            OfflineStoreConfig::Duckdb(_) => "duckdb",
            OfflineStoreConfig::Postgres(_) => "postgres",
            OfflineStoreConfig::Remote(_) => "remote",
        }
    }
}

impl Default for OfflineStoreConfig {
    fn default() -> Self {
        OfflineStoreConfig::Dask(DaskOfflineStoreConfig::default())
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum OfflineKind {
    Dask,
    Duckdb,
    Postgres,
    Remote,
}

impl Tagged for OfflineStoreConfig {
    type Kind = OfflineKind;
    const TAG: &'static str = "type";
    const EXPECTING: &'static str = "an offline store type name or a mapping with `type`";

    fn resolve(name: &str, _keys: Option<&BTreeSet<String>>) -> Result<OfflineKind, String> {
        match name {
            "file" | "dask" => Ok(OfflineKind::Dask),
            "duckdb" | DUCKDB_CLASS => Ok(OfflineKind::Duckdb),
            "postgres" => Ok(OfflineKind::Postgres),
            "remote" => Ok(OfflineKind::Remote),
            _ if FEAST_OFFLINE_STORES.contains(&name) || name.ends_with("OfflineStore") => Err(
                unsupported_msg("offline store", name, SUPPORTED_OFFLINE_STORES),
            ),
            _ => Err(unknown_msg("offline store", name, SUPPORTED_OFFLINE_STORES)),
        }
    }

    fn untagged(_keys: &BTreeSet<String>) -> Result<OfflineKind, String> {
        Ok(OfflineKind::Dask)
    }

    fn from_map<'de, A: MapAccess<'de>>(kind: OfflineKind, map: A) -> Result<Self, A::Error> {
        Ok(match kind {
            OfflineKind::Dask => OfflineStoreConfig::Dask(struct_from_map(map, "type")?),
            OfflineKind::Duckdb => OfflineStoreConfig::Duckdb(struct_from_map(map, "type")?),
            OfflineKind::Postgres => OfflineStoreConfig::Postgres(struct_from_map(map, "type")?),
            OfflineKind::Remote => OfflineStoreConfig::Remote(struct_from_map(map, "type")?),
        })
    }

    fn from_name<E: de::Error>(kind: OfflineKind) -> Result<Self, E> {
        Ok(match kind {
            OfflineKind::Dask => OfflineStoreConfig::Dask(struct_from_nothing()?),
            OfflineKind::Duckdb => OfflineStoreConfig::Duckdb(struct_from_nothing()?),
            OfflineKind::Postgres => OfflineStoreConfig::Postgres(struct_from_nothing()?),
            OfflineKind::Remote => OfflineStoreConfig::Remote(struct_from_nothing()?),
        })
    }

    /// Feast: `offline_store: null` leaves the offline store unset.
    fn from_null<E: de::Error>() -> Result<Option<Self>, E> {
        Ok(None)
    }
}

/// `DaskOfflineStoreConfig`: only the `type` key (`extra="forbid"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaskOfflineStoreConfig {}

/// `DuckDBOfflineStoreConfig` (`extra="forbid"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DuckDbOfflineStoreConfig {
    /// Where `offline_write_batch`/retrieval jobs stage files.
    #[serde(default)]
    pub staging_location: Option<String>,
    /// S3-compatible endpoint for `staging_location`.
    #[serde(default)]
    pub staging_location_endpoint_override: Option<String>,
}

/// `EntitySelectMode` of the Postgres offline store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntitySelectMode {
    /// Load the entity dataframe / query into a temporary table.
    #[default]
    TempTable,
    /// Embed the entity SQL query in the point-in-time query.
    EmbedQuery,
}

/// `PostgreSQLOfflineStoreConfig` = `PostgreSQLConfig` + `entity_select_mode` (`extra="forbid"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresOfflineStoreConfig {
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
    /// Schema.
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
    /// How the entity dataframe reaches the database.
    #[serde(default)]
    pub entity_select_mode: EntitySelectMode,
}

/// `scheme` of the remote offline store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlightScheme {
    /// `grpc+tcp://`.
    #[default]
    Http,
    /// `grpc+tls://`.
    Https,
}

fn default_retries() -> i64 {
    3
}

/// `RemoteOfflineStoreConfig` (`extra="forbid"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteOfflineStoreConfig {
    /// Arrow Flight server host (required).
    pub host: String,
    /// Port. Feast leaves it `None` by default, which yields the URI `grpc+tcp://host:None`.
    #[serde(default, deserialize_with = "strict_port_opt")]
    pub port: Option<u16>,
    /// `http` → `grpc+tcp`, `https` → `grpc+tls`.
    #[serde(default)]
    pub scheme: FlightScheme,
    /// PEM file with the server's CA ("" = none).
    #[serde(default)]
    pub cert: String,
    /// Retries on UNAVAILABLE.
    #[serde(default = "default_retries", deserialize_with = "lax_int_ge0")]
    pub connection_retries: i64,
}

impl RemoteOfflineStoreConfig {
    /// The Flight location Feast builds from host, port and scheme.
    pub fn location(&self) -> String {
        let scheme = match self.scheme {
            FlightScheme::Http => "grpc+tcp",
            FlightScheme::Https => "grpc+tls",
        };
        match self.port {
            Some(p) => format!("{scheme}://{}:{p}", self.host),
            None => format!("{scheme}://{}:None", self.host),
        }
    }
}
