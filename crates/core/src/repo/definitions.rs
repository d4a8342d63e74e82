//! The YAML shape of feature-repository definitions (feast-rs's equivalent of Feast's
//! Python definition files). Every struct rejects unknown keys so a typo is an error that
//! names the key and its line, not a silently ignored setting.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One definitions file; every section is optional and files are merged.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionsFile {
    pub project: Option<ProjectDef>,
    #[serde(default)]
    pub entities: Vec<EntityDef>,
    #[serde(default)]
    pub data_sources: Vec<DataSourceDef>,
    #[serde(default)]
    pub feature_views: Vec<FeatureViewDef>,
    #[serde(default)]
    pub on_demand_feature_views: Vec<OnDemandFeatureViewDef>,
    #[serde(default)]
    pub feature_services: Vec<FeatureServiceDef>,
    #[serde(default)]
    pub permissions: Vec<PermissionDef>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectDef {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub owner: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityDef {
    pub name: String,
    /// Feast allows exactly one join key; defaults to the entity name.
    #[serde(default)]
    pub join_keys: Vec<String>,
    /// A ValueType name (`INT64`) or dtype (`Int64`); inferred from a source when omitted.
    #[serde(default, alias = "dtype")]
    pub value_type: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub owner: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    pub name: String,
    pub dtype: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceType {
    File,
    Push,
    Request,
    Postgres,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSourceDef {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SourceType,
    // file
    pub path: Option<String>,
    pub file_format: Option<String>,
    pub s3_endpoint_override: Option<String>,
    // postgres
    pub table: Option<String>,
    pub query: Option<String>,
    // push
    pub batch_source: Option<String>,
    // request
    pub schema: Option<Vec<FieldDef>>,
    // batch sources
    #[serde(default)]
    pub timestamp_field: String,
    #[serde(default)]
    pub created_timestamp_column: String,
    #[serde(default)]
    pub date_partition_column: String,
    #[serde(default)]
    pub field_mapping: BTreeMap<String, String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub owner: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureViewDef {
    pub name: String,
    #[serde(default)]
    pub entities: Vec<String>,
    /// `1d`, `3600s`, `90m`, `2h30m`, a plain number of seconds, or `0` (no limit).
    pub ttl: Option<DurationValue>,
    /// Omitted: inferred from the source file.
    pub schema: Option<Vec<FieldDef>>,
    pub source: String,
    #[serde(default = "yes")]
    pub online: bool,
    #[serde(default)]
    pub offline: bool,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub owner: String,
    /// `latest` (the default), or a version to pin: `v2` / `version2` (Feast 0.67).
    #[serde(default)]
    pub version: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DurationValue {
    Seconds(u64),
    Text(String),
}

/// A source of an on-demand view: a feature view or request source by name, or a feature
/// view projection.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OdfvSourceDef {
    Name(String),
    Projection(ProjectionDef),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnDemandFeatureViewDef {
    pub name: String,
    pub sources: Vec<OdfvSourceDef>,
    pub schema: Vec<FieldDef>,
    /// `pandas` or `python` (Feast's transformation modes).
    #[serde(default = "pandas")]
    pub mode: String,
    /// The Python source of the transformation (`def <name>(inputs): ...`); Feast 0.67
    /// rehydrates UDFs from this text.
    #[serde(default)]
    pub udf: String,
    #[serde(default)]
    pub write_to_online_store: bool,
    #[serde(default)]
    pub entities: Vec<String>,
    #[serde(default)]
    pub singleton: bool,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub owner: String,
}

fn pandas() -> String {
    "pandas".to_owned()
}

/// A (sub-)selection of a view, optionally aliased and with entity aliasing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionDef {
    pub feature_view: String,
    /// Omitted: every feature of the view.
    pub features: Option<Vec<String>>,
    /// `name_alias`: the view appears under this name (Feast's `with_name`).
    pub alias: Option<String>,
    /// Entity aliasing: join key of the view → column name in the entity rows
    /// (Feast's `with_join_key_map`).
    #[serde(default)]
    pub join_key_map: BTreeMap<String, String>,
}

/// A feature-service entry: a view name (all features), `view: [features]`, or a projection.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum FeatureRefDef {
    View(String),
    Projection(ProjectionDef),
    Selection(BTreeMap<String, Vec<String>>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureServiceDef {
    pub name: String,
    pub features: Vec<FeatureRefDef>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub owner: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionDef {
    pub name: String,
    /// Resource types (`feature_view`, `FEATURE_SERVICE`, ...); empty = all types.
    #[serde(default)]
    pub types: Vec<String>,
    #[serde(default)]
    pub name_patterns: Vec<String>,
    #[serde(default)]
    pub required_tags: BTreeMap<String, String>,
    /// Actions (`describe`, `read_online`, ...) or Feast's groups `ALL`, `READ`, `WRITE`, `CRUD`.
    pub actions: Vec<String>,
    pub policy: PolicyDef,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDef {
    pub roles: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    pub namespaces: Option<Vec<String>>,
    #[serde(default)]
    pub allow_all: bool,
}
