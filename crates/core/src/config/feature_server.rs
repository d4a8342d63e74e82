//! `feature_server:` (`LocalFeatureServerConfig`, `McpFeatureServerConfig`) and
//! `batch_engine:` (`LocalComputeEngineConfig`).

use std::collections::BTreeSet;

use serde::de::{self, MapAccess};
use serde::{Deserialize, Deserializer, Serialize};

use super::de::{
    boolean, boolean_opt, checked_int_list, strict_int, strict_int_opt, struct_from_map,
    struct_from_nothing,
};
use super::tagged::{Tagged, unknown_msg, unsupported_msg};

/// `feature_server:` section (absent = no feature server configuration).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum FeatureServerConfig {
    /// `type: local` (the default when the mapping has no type).
    Local(LocalFeatureServerConfig),
    /// `type: mcp`.
    Mcp(McpFeatureServerConfig),
}

impl FeatureServerConfig {
    /// `enabled`.
    pub fn enabled(&self) -> bool {
        match self {
            FeatureServerConfig::Local(c) => c.enabled,
            FeatureServerConfig::Mcp(c) => c.enabled,
        }
    }

    /// `metrics`.
    pub fn metrics(&self) -> Option<&MetricsConfig> {
        match self {
            FeatureServerConfig::Local(c) => c.metrics.as_ref(),
            FeatureServerConfig::Mcp(c) => c.metrics.as_ref(),
        }
    }

    /// `feature_logging`.
    pub fn feature_logging(&self) -> Option<&FeatureLoggingConfig> {
        match self {
            FeatureServerConfig::Local(c) => c.feature_logging.as_ref(),
            FeatureServerConfig::Mcp(c) => c.feature_logging.as_ref(),
        }
    }

    /// `audit_logging`.
    pub fn audit_logging(&self) -> Option<&AuditLoggingConfig> {
        match self {
            FeatureServerConfig::Local(c) => c.audit_logging.as_ref(),
            FeatureServerConfig::Mcp(c) => c.audit_logging.as_ref(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum FeatureServerKind {
    Local,
    Mcp,
}

impl Tagged for FeatureServerConfig {
    type Kind = FeatureServerKind;
    const TAG: &'static str = "type";
    const EXPECTING: &'static str = "a mapping";

    fn resolve(name: &str, _keys: Option<&BTreeSet<String>>) -> Result<FeatureServerKind, String> {
        match name {
            "local" => Ok(FeatureServerKind::Local),
            "mcp" => Ok(FeatureServerKind::Mcp),
            _ => Err(unknown_msg("feature server", name, &["local", "mcp"])),
        }
    }

    fn untagged(_keys: &BTreeSet<String>) -> Result<FeatureServerKind, String> {
        Ok(FeatureServerKind::Local)
    }

    fn from_map<'de, A: MapAccess<'de>>(kind: FeatureServerKind, map: A) -> Result<Self, A::Error> {
        Ok(match kind {
            FeatureServerKind::Local => FeatureServerConfig::Local(struct_from_map(map, "type")?),
            FeatureServerKind::Mcp => FeatureServerConfig::Mcp(struct_from_map(map, "type")?),
        })
    }

    fn from_name<E: de::Error>(kind: FeatureServerKind) -> Result<Self, E> {
        Ok(match kind {
            FeatureServerKind::Local => FeatureServerConfig::Local(struct_from_nothing()?),
            FeatureServerKind::Mcp => FeatureServerConfig::Mcp(struct_from_nothing()?),
        })
    }

    /// Feast only interprets a mapping; `feature_server: null` means none.
    fn from_null<E: de::Error>() -> Result<Option<Self>, E> {
        Ok(None)
    }

    fn from_string<E: de::Error>(s: &str) -> Result<Option<Self>, E> {
        Err(E::invalid_type(de::Unexpected::Str(s), &Self::EXPECTING))
    }
}

fn default_bins() -> Vec<i64> {
    vec![10, 50, 200]
}

fn de_bins<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i64>, D::Error> {
    checked_int_list(d, |bins| {
        if bins.iter().any(|b| *b <= 0) {
            return Err("feature_count_bins must contain only positive integers".to_owned());
        }
        if bins.windows(2).any(|w| w[0] >= w[1]) {
            return Err("feature_count_bins must be strictly increasing".to_owned());
        }
        Ok(())
    })
}

fn yes() -> bool {
    true
}

/// `metrics:` (`MetricsConfig`, `extra="forbid"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Master switch (also `feast serve --metrics`).
    #[serde(default, deserialize_with = "boolean")]
    pub enabled: bool,
    /// CPU / memory gauges.
    #[serde(default = "yes", deserialize_with = "boolean")]
    pub resource: bool,
    /// Per-endpoint request counters and latency.
    #[serde(default = "yes", deserialize_with = "boolean")]
    pub request: bool,
    /// (0.67) Upper bounds for the `feature_count` label buckets.
    #[serde(default = "default_bins", deserialize_with = "de_bins")]
    pub feature_count_bins: Vec<i64>,
    /// Online retrieval metrics.
    #[serde(default = "yes", deserialize_with = "boolean")]
    pub online_features: bool,
    /// Push / write metrics.
    #[serde(default = "yes", deserialize_with = "boolean")]
    pub push: bool,
    /// Materialization metrics.
    #[serde(default = "yes", deserialize_with = "boolean")]
    pub materialization: bool,
    /// Feature freshness gauges.
    #[serde(default = "yes", deserialize_with = "boolean")]
    pub freshness: bool,
    /// Offline retrieval metrics.
    #[serde(default = "yes", deserialize_with = "boolean")]
    pub offline_features: bool,
    /// Audit log lines through the `feast.audit` logger.
    #[serde(default, deserialize_with = "boolean")]
    pub audit_logging: bool,
}

fn d600() -> i64 {
    600
}
fn d30() -> i64 {
    30
}
fn d100000() -> i64 {
    100_000
}
fn d10000() -> i64 {
    10_000
}

/// `feature_logging:` (`FeatureLoggingConfig`, `extra="forbid"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureLoggingConfig {
    /// Log served features.
    #[serde(default, deserialize_with = "boolean")]
    pub enabled: bool,
    /// Seconds between flushes to the offline store.
    #[serde(default = "d600", deserialize_with = "strict_int")]
    pub flush_interval_secs: i64,
    /// Seconds between dumps of in-memory logs to disk.
    #[serde(default = "d30", deserialize_with = "strict_int")]
    pub write_to_disk_interval_secs: i64,
    /// Queue capacity.
    #[serde(default = "d100000", deserialize_with = "strict_int")]
    pub queue_capacity: i64,
    /// Enqueue timeout in microseconds.
    #[serde(default = "d10000", deserialize_with = "strict_int")]
    pub emit_timeout_micro_secs: i64,
}

/// `sink` of `audit_logging`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditSink {
    /// JSON lines on stdout.
    #[default]
    Stdout,
    /// JSON lines appended to `file_path`.
    File,
    /// The Python logger.
    Logger,
}

fn default_audit_file() -> String {
    "feast_audit.log".to_owned()
}

/// `audit_logging:` (`AuditLoggingConfig`, `extra="forbid"`, 0.67).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditLoggingConfig {
    /// Emit audit events.
    #[serde(default, deserialize_with = "boolean")]
    pub enabled: bool,
    /// Destination.
    #[serde(default)]
    pub sink: AuditSink,
    /// File for `sink: file`.
    #[serde(default = "default_audit_file")]
    pub file_path: String,
    /// Also log successful reads.
    #[serde(default = "yes", deserialize_with = "boolean")]
    pub log_successful_reads: bool,
}

fn default_local_transformation_endpoint() -> String {
    "localhost:6569".to_owned()
}

/// `LocalFeatureServerConfig` (`extra="forbid"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalFeatureServerConfig {
    /// Whether the feature server should be launched.
    #[serde(default, deserialize_with = "boolean")]
    pub enabled: bool,
    /// Prometheus metrics.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// Served-feature logging.
    #[serde(default)]
    pub feature_logging: Option<FeatureLoggingConfig>,
    /// Structured audit logging.
    #[serde(default)]
    pub audit_logging: Option<AuditLoggingConfig>,
    /// Batch `/push` writes to the offline store.
    #[serde(default, deserialize_with = "boolean_opt")]
    pub offline_push_batching_enabled: Option<bool>,
    /// Batch size for offline `/push` writes.
    #[serde(default, deserialize_with = "strict_int_opt")]
    pub offline_push_batching_batch_size: Option<i64>,
    /// Seconds between offline `/push` batch writes.
    #[serde(default, deserialize_with = "strict_int_opt")]
    pub offline_push_batching_batch_interval_seconds: Option<i64>,
    /// Transformation service endpoint.
    #[serde(default = "default_local_transformation_endpoint")]
    pub transformation_service_endpoint: String,
}

/// `mcp_transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum McpTransport {
    /// Server-sent events.
    #[default]
    Sse,
    /// Streamable HTTP.
    Http,
}

fn default_mcp_name() -> String {
    "feast-mcp-server".to_owned()
}
fn default_mcp_version() -> String {
    "1.0.0".to_owned()
}
fn default_mcp_transformation_endpoint() -> String {
    "localhost:6566".to_owned()
}

/// `McpFeatureServerConfig` (`extra="forbid"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpFeatureServerConfig {
    /// Whether the feature server should be launched.
    #[serde(default, deserialize_with = "boolean")]
    pub enabled: bool,
    /// Prometheus metrics.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// Served-feature logging.
    #[serde(default)]
    pub feature_logging: Option<FeatureLoggingConfig>,
    /// Structured audit logging.
    #[serde(default)]
    pub audit_logging: Option<AuditLoggingConfig>,
    /// Batch `/push` writes to the offline store.
    #[serde(default, deserialize_with = "boolean_opt")]
    pub offline_push_batching_enabled: Option<bool>,
    /// Batch size for offline `/push` writes.
    #[serde(default, deserialize_with = "strict_int_opt")]
    pub offline_push_batching_batch_size: Option<i64>,
    /// Seconds between offline `/push` batch writes.
    #[serde(default, deserialize_with = "strict_int_opt")]
    pub offline_push_batching_batch_interval_seconds: Option<i64>,
    /// Enable the MCP endpoint.
    #[serde(default, deserialize_with = "boolean")]
    pub mcp_enabled: bool,
    /// MCP server name.
    #[serde(default = "default_mcp_name")]
    pub mcp_server_name: String,
    /// MCP server version.
    #[serde(default = "default_mcp_version")]
    pub mcp_server_version: String,
    /// MCP transport.
    #[serde(default)]
    pub mcp_transport: McpTransport,
    /// Transformation service endpoint.
    #[serde(default = "default_mcp_transformation_endpoint")]
    pub transformation_service_endpoint: String,
}

/// Batch engines feast-rs implements.
pub const SUPPORTED_BATCH_ENGINES: &[&str] = &["local"];

/// Batch engine names Feast 0.67 resolves (`BATCH_ENGINE_CLASS_FOR_TYPE`).
pub const FEAST_BATCH_ENGINES: &[&str] = &[
    "local",
    "snowflake.engine",
    "lambda",
    "k8s",
    "spark.engine",
    "ray.engine",
    "flink.engine",
    "spark_application",
    "trino.engine",
    "trino",
];

/// `batch_engine:` section (default `local`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum BatchEngineConfig {
    /// `type: local`: in-process materialization.
    Local(LocalComputeEngineConfig),
}

impl Default for BatchEngineConfig {
    fn default() -> Self {
        BatchEngineConfig::Local(LocalComputeEngineConfig::default())
    }
}

/// `LocalComputeEngineConfig` (`extra="forbid"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalComputeEngineConfig {
    /// DataFrame backend (`pandas`, `polars`, ...); Python-specific.
    #[serde(default)]
    pub backend: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum BatchEngineKind {
    Local,
}

impl Tagged for BatchEngineConfig {
    type Kind = BatchEngineKind;
    const TAG: &'static str = "type";
    const EXPECTING: &'static str = "a batch engine type name or a mapping with `type`";

    fn resolve(name: &str, _keys: Option<&BTreeSet<String>>) -> Result<BatchEngineKind, String> {
        match name {
            "local" => Ok(BatchEngineKind::Local),
            _ if FEAST_BATCH_ENGINES.contains(&name) || name.ends_with("Engine") => Err(
                unsupported_msg("batch engine", name, SUPPORTED_BATCH_ENGINES),
            ),
            _ => Err(unknown_msg("batch engine", name, SUPPORTED_BATCH_ENGINES)),
        }
    }

    fn untagged(_keys: &BTreeSet<String>) -> Result<BatchEngineKind, String> {
        Ok(BatchEngineKind::Local)
    }

    fn from_map<'de, A: MapAccess<'de>>(kind: BatchEngineKind, map: A) -> Result<Self, A::Error> {
        Ok(match kind {
            BatchEngineKind::Local => BatchEngineConfig::Local(struct_from_map(map, "type")?),
        })
    }

    fn from_name<E: de::Error>(kind: BatchEngineKind) -> Result<Self, E> {
        Ok(match kind {
            BatchEngineKind::Local => BatchEngineConfig::Local(LocalComputeEngineConfig::default()),
        })
    }

    /// `batch_engine: null` falls back to the local engine.
    fn from_null<E: de::Error>() -> Result<Option<Self>, E> {
        Ok(Some(BatchEngineConfig::default()))
    }
}
