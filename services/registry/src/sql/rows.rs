//! Between a `feast.core.Registry` and the rows of Feast's SQL registry tables: assembling
//! the registry from rows (as Feast's `SqlRegistry.proto()` does), and planning a commit as
//! the row changes between the registry last loaded (the base) and the one being committed.
//! Nothing here talks to a database.

use std::collections::{BTreeMap, BTreeSet};

use feast_core::model::RegistryObject;
use feast_proto::core;
use prost::Message;
use prost_types::Timestamp;

/// A Feast registry table whose rows hold one serialized object each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Table {
    Projects,
    Entities,
    DataSources,
    FeatureViews,
    StreamFeatureViews,
    OnDemandFeatureViews,
    LabelViews,
    FeatureServices,
    SavedDatasets,
    ValidationReferences,
    Permissions,
    ManagedInfra,
    /// `feature_view_version_history` (keyed by name, project and version number).
    VersionHistory,
}

/// `feast_metadata` key of a project's uuid.
pub(crate) const PROJECT_UUID: &str = "project_uuid";
/// `feast_metadata` key Feast bumps on every write to a project.
pub(crate) const LAST_UPDATED: &str = "last_updated_timestamp";
/// The one row name Feast uses in `managed_infra`.
pub(crate) const INFRA_ROW: &str = "infra_obj";

impl Table {
    /// Tables with `(<name>, project_id, last_updated_timestamp, <proto>)` rows.
    pub(crate) const OBJECTS: [Table; 12] = [
        Table::Projects,
        Table::Entities,
        Table::DataSources,
        Table::FeatureViews,
        Table::StreamFeatureViews,
        Table::OnDemandFeatureViews,
        Table::LabelViews,
        Table::FeatureServices,
        Table::SavedDatasets,
        Table::ValidationReferences,
        Table::Permissions,
        Table::ManagedInfra,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Projects => "projects",
            Table::Entities => "entities",
            Table::DataSources => "data_sources",
            Table::FeatureViews => "feature_views",
            Table::StreamFeatureViews => "stream_feature_views",
            Table::OnDemandFeatureViews => "on_demand_feature_views",
            Table::LabelViews => "label_views",
            Table::FeatureServices => "feature_services",
            Table::SavedDatasets => "saved_datasets",
            Table::ValidationReferences => "validation_references",
            Table::Permissions => "permissions",
            Table::ManagedInfra => "managed_infra",
            Table::VersionHistory => "feature_view_version_history",
        }
    }

    /// The column holding the object's name (for `projects`, `project_name`, which always
    /// equals its primary key `project_id`).
    pub(crate) fn name_column(self) -> &'static str {
        match self {
            Table::Projects => "project_name",
            Table::Entities => "entity_name",
            Table::DataSources => "data_source_name",
            Table::FeatureViews
            | Table::StreamFeatureViews
            | Table::OnDemandFeatureViews
            | Table::LabelViews
            | Table::VersionHistory => "feature_view_name",
            Table::FeatureServices => "feature_service_name",
            Table::SavedDatasets => "saved_dataset_name",
            Table::ValidationReferences => "validation_reference_name",
            Table::Permissions => "permission_name",
            Table::ManagedInfra => "infra_name",
        }
    }

    pub(crate) fn proto_column(self) -> &'static str {
        match self {
            Table::Projects => "project_proto",
            Table::Entities => "entity_proto",
            Table::DataSources => "data_source_proto",
            Table::FeatureViews
            | Table::StreamFeatureViews
            | Table::OnDemandFeatureViews
            | Table::LabelViews
            | Table::VersionHistory => "feature_view_proto",
            Table::FeatureServices => "feature_service_proto",
            Table::SavedDatasets => "saved_dataset_proto",
            Table::ValidationReferences => "validation_reference_proto",
            Table::Permissions => "permission_proto",
            Table::ManagedInfra => "infra_proto",
        }
    }

    /// `SELECT name, project_id, proto, last_updated_timestamp` of every row.
    pub(crate) fn select_sql(self) -> String {
        format!(
            "SELECT {n}, project_id, {p}, last_updated_timestamp FROM {t} ORDER BY project_id, {n}",
            n = self.name_column(),
            p = self.proto_column(),
            t = self.name()
        )
    }

    /// Insert unless the row exists ($1 name, $2 project, $3 last updated, $4 proto).
    pub(crate) fn insert_sql(self) -> String {
        format!(
            "INSERT INTO {t} ({n}, project_id, last_updated_timestamp, {p}) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
            n = self.name_column(),
            p = self.proto_column(),
            t = self.name()
        )
    }

    /// Compare-and-set update ($1 proto, $2 last updated, $3 name, $4 project, $5 proto as loaded).
    pub(crate) fn update_sql(self) -> String {
        format!(
            "UPDATE {t} SET {p} = $1, last_updated_timestamp = $2 \
             WHERE {n} = $3 AND project_id = $4 AND {p} = $5",
            n = self.name_column(),
            p = self.proto_column(),
            t = self.name()
        )
    }

    /// Compare-and-delete ($1 name, $2 project, $3 proto as loaded).
    pub(crate) fn delete_sql(self) -> String {
        format!(
            "DELETE FROM {t} WHERE {n} = $1 AND project_id = $2 AND {p} = $3",
            n = self.name_column(),
            p = self.proto_column(),
            t = self.name()
        )
    }
}

pub(crate) const HISTORY_SELECT: &str = "SELECT feature_view_name, project_id, version_number, \
     feature_view_type, feature_view_proto, created_timestamp, description, version_id \
     FROM feature_view_version_history ORDER BY project_id, feature_view_name, version_number";
pub(crate) const HISTORY_INSERT: &str = "INSERT INTO feature_view_version_history \
     (feature_view_name, project_id, version_number, feature_view_type, feature_view_proto, \
     created_timestamp, description, version_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT DO NOTHING";
pub(crate) const HISTORY_UPDATE: &str = "UPDATE feature_view_version_history SET \
     feature_view_type = $1, feature_view_proto = $2, created_timestamp = $3, description = $4, \
     version_id = $5 WHERE feature_view_name = $6 AND project_id = $7 AND version_number = $8 \
     AND feature_view_proto = $9";
pub(crate) const HISTORY_DELETE: &str = "DELETE FROM feature_view_version_history \
     WHERE feature_view_name = $1 AND project_id = $2 AND version_number = $3 \
     AND feature_view_proto = $4";
pub(crate) const META_SELECT: &str =
    "SELECT project_id, metadata_key, metadata_value, last_updated_timestamp FROM feast_metadata";
/// Sets a project's `last_updated_timestamp` metadata ($1 project, $2 text value, $3 seconds).
pub(crate) const META_BUMP: &str = "INSERT INTO feast_metadata \
     (project_id, metadata_key, metadata_value, last_updated_timestamp) \
     VALUES ($1, 'last_updated_timestamp', $2, $3) ON CONFLICT (project_id, metadata_key) \
     DO UPDATE SET metadata_value = excluded.metadata_value, \
     last_updated_timestamp = excluded.last_updated_timestamp";
/// Records a project's uuid unless it has one ($1 project, $2 uuid, $3 seconds).
pub(crate) const META_UUID: &str = "INSERT INTO feast_metadata \
     (project_id, metadata_key, metadata_value, last_updated_timestamp) \
     VALUES ($1, 'project_uuid', $2, $3) ON CONFLICT (project_id, metadata_key) DO NOTHING";

/// Every table that holds rows of a project (what deleting a project clears).
pub(crate) const PROJECT_TABLES: [&str; 14] = [
    "managed_infra",
    "saved_datasets",
    "validation_references",
    "feature_services",
    "feature_views",
    "on_demand_feature_views",
    "stream_feature_views",
    "label_views",
    "data_sources",
    "entities",
    "permissions",
    "feature_view_version_history",
    "feast_metadata",
    "projects",
];

/// One row of an object table as read.
#[derive(Debug)]
pub(crate) struct RawRow {
    pub table: Table,
    pub name: String,
    pub project: String,
    pub proto: Vec<u8>,
    pub last_updated: i64,
}

/// One `feature_view_version_history` row as read.
#[derive(Debug)]
pub(crate) struct RawHistory {
    pub name: String,
    pub project: String,
    pub version_number: i32,
    pub feature_view_type: String,
    pub proto: Vec<u8>,
    pub created: i64,
    pub description: Option<String>,
    pub version_id: String,
}

/// One `feast_metadata` row.
#[derive(Debug)]
pub(crate) struct RawMeta {
    pub project: String,
    pub key: String,
    pub value: String,
    pub last_updated: i64,
}

/// Everything one consistent read of the database returned.
#[derive(Debug, Default)]
pub(crate) struct RawDb {
    pub rows: Vec<RawRow>,
    pub history: Vec<RawHistory>,
    pub meta: Vec<RawMeta>,
    /// feast-rs's commit counter (0: feast-rs never committed here).
    pub counter: i64,
    pub version_id: String,
    pub committed: Option<Timestamp>,
    pub token: String,
}

/// A row's identity: table, project, name (and version number for the history table).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    pub table: Table,
    pub project: String,
    pub name: String,
    pub version: i32,
}

impl Key {
    fn new(table: Table, project: &str, name: &str) -> Self {
        Key {
            table,
            project: project.to_owned(),
            name: name.to_owned(),
            version: 0,
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.table.name(), self.project, self.name)?;
        if self.table == Table::VersionHistory {
            write!(f, " v{}", self.version)?;
        }
        Ok(())
    }
}

/// A row as the base holds it: the bytes in the database (what a compare-and-set checks)
/// and the canonical encoding of the object it decodes to (what the diff compares, so an
/// object Feast serialized differently, or stored without `spec.project`, is not rewritten).
#[derive(Debug, Clone)]
pub(crate) struct BaseRow {
    pub stored: Vec<u8>,
    pub canonical: Vec<u8>,
}

/// What the store last loaded or committed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    pub rows: BTreeMap<Key, BaseRow>,
    /// `project_uuid` per project.
    pub uuids: BTreeMap<String, String>,
    /// The project whose `managed_infra` row became `Registry.infra`.
    pub infra_from: Option<String>,
    /// Canonical encoding of `Registry.infra` as loaded.
    pub infra: Vec<u8>,
    pub token: String,
}

/// A row to write.
#[derive(Debug, Clone)]
pub(crate) struct Desired {
    /// Canonical encoding (the proto column for object tables; the record for history).
    pub canonical: Vec<u8>,
    pub history: Option<core::FeatureViewVersionRecord>,
}

impl Desired {
    /// The bytes stored in the proto column.
    pub(crate) fn stored(&self) -> &[u8] {
        match &self.history {
            Some(r) => &r.feature_view_proto,
            None => &self.canonical,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    Insert(Key, Desired),
    Update(Key, Desired, Vec<u8>),
    Delete(Key, Vec<u8>),
}

impl Op {
    pub(crate) fn key(&self) -> &Key {
        match self {
            Op::Insert(k, _) | Op::Update(k, _, _) | Op::Delete(k, _) => k,
        }
    }
}

/// The writes of one commit.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    pub ops: Vec<Op>,
    /// Projects whose `feast_metadata.last_updated_timestamp` is bumped.
    pub bump: BTreeSet<String>,
    /// `project_uuid` rows to add.
    pub uuids: BTreeMap<String, String>,
    /// Deleted projects: every row with their `project_id` is removed.
    pub swept: BTreeSet<String>,
    /// Commit time (epoch seconds for `last_updated_timestamp` columns).
    pub now: Timestamp,
    pub version_id: String,
    /// The new canonical `Registry.infra` and where it went (when it changed).
    pub infra: Option<(Vec<u8>, Option<String>)>,
}

#[derive(Debug, thiserror::Error)]
#[error("{what} in the SQL registry cannot be decoded: {source}")]
pub(crate) struct Undecodable {
    pub what: String,
    pub source: prost::DecodeError,
}

fn decode<T: RegistryObject>(row: &RawRow, out: &mut Vec<T>) -> Result<Vec<u8>, Undecodable> {
    let mut object = T::decode(row.proto.as_slice()).map_err(|source| Undecodable {
        what: format!("{} row {}/{}", row.table.name(), row.project, row.name),
        source,
    })?;
    // Feast may store an empty `spec.project`; its proto() fills in the row's project.
    object.set_project(&row.project);
    let canonical = object.encode_to_vec();
    out.push(object);
    Ok(canonical)
}

fn max_ts(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if (y.seconds, y.nanos) > (x.seconds, x.nanos) {
            y
        } else {
            x
        }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Builds the registry from one read of the tables, and the snapshot a later commit diffs
/// against. `None` when the database holds no registry yet (no project, no metadata, and
/// feast-rs never committed).
pub(crate) fn assemble(raw: RawDb) -> Result<(Option<core::Registry>, Snapshot), Undecodable> {
    let mut registry = core::Registry {
        registry_schema_version: feast_core::registry::REGISTRY_SCHEMA_VERSION.to_owned(),
        version_id: raw.version_id.clone(),
        ..Default::default()
    };
    let mut snapshot = Snapshot {
        token: raw.token.clone(),
        ..Default::default()
    };
    // (last updated, project, infra): the most recently written infra row wins.
    let mut infra: Option<(i64, String, core::Infra, Vec<u8>)> = None;
    for row in &raw.rows {
        let r = &mut registry;
        let canonical = match row.table {
            Table::Projects => {
                let mut p =
                    core::Project::decode(row.proto.as_slice()).map_err(|source| Undecodable {
                        what: format!("projects row {}", row.project),
                        source,
                    })?;
                let spec = p.spec.get_or_insert_with(Default::default);
                if spec.name.is_empty() {
                    spec.name = row.project.clone();
                }
                let canonical = p.encode_to_vec();
                r.projects.push(p);
                canonical
            }
            Table::Entities => decode(row, &mut r.entities)?,
            Table::DataSources => decode(row, &mut r.data_sources)?,
            Table::FeatureViews => decode(row, &mut r.feature_views)?,
            Table::StreamFeatureViews => decode(row, &mut r.stream_feature_views)?,
            Table::OnDemandFeatureViews => decode(row, &mut r.on_demand_feature_views)?,
            Table::LabelViews => decode(row, &mut r.label_views)?,
            Table::FeatureServices => decode(row, &mut r.feature_services)?,
            Table::SavedDatasets => decode(row, &mut r.saved_datasets)?,
            Table::ValidationReferences => decode(row, &mut r.validation_references)?,
            Table::Permissions => decode(row, &mut r.permissions)?,
            Table::ManagedInfra => {
                let i =
                    core::Infra::decode(row.proto.as_slice()).map_err(|source| Undecodable {
                        what: format!("managed_infra row {}", row.project),
                        source,
                    })?;
                let canonical = i.encode_to_vec();
                if infra
                    .as_ref()
                    .is_none_or(|(ts, _, _, _)| row.last_updated >= *ts)
                {
                    infra = Some((row.last_updated, row.project.clone(), i, canonical.clone()));
                }
                canonical
            }
            Table::VersionHistory => unreachable!("history rows are read separately"),
        };
        snapshot.rows.insert(
            Key::new(row.table, &row.project, &row.name),
            BaseRow {
                stored: row.proto.clone(),
                canonical,
            },
        );
    }
    for h in &raw.history {
        let record = core::FeatureViewVersionRecord {
            feature_view_name: h.name.clone(),
            project_id: h.project.clone(),
            version_number: h.version_number,
            feature_view_type: h.feature_view_type.clone(),
            feature_view_proto: h.proto.clone(),
            // The column holds epoch seconds.
            created_timestamp: Some(Timestamp {
                seconds: h.created,
                nanos: 0,
            }),
            description: h.description.clone().unwrap_or_default(),
            version_id: h.version_id.clone(),
        };
        snapshot.rows.insert(
            Key {
                table: Table::VersionHistory,
                project: h.project.clone(),
                name: h.name.clone(),
                version: h.version_number,
            },
            BaseRow {
                stored: h.proto.clone(),
                canonical: record.encode_to_vec(),
            },
        );
        registry
            .feature_view_version_history
            .get_or_insert_with(Default::default)
            .records
            .push(record);
    }
    let mut last_updated = raw.committed;
    for m in &raw.meta {
        if m.key == PROJECT_UUID {
            snapshot.uuids.insert(m.project.clone(), m.value.clone());
        } else if m.key == LAST_UPDATED {
            last_updated = max_ts(
                last_updated,
                Some(Timestamp {
                    seconds: m.last_updated,
                    nanos: 0,
                }),
            );
        }
    }
    #[allow(deprecated)]
    for (project, uuid) in &snapshot.uuids {
        registry.project_metadata.push(core::ProjectMetadata {
            project: project.clone(),
            project_uuid: uuid.clone(),
        });
    }
    for p in &registry.projects {
        last_updated = max_ts(
            last_updated,
            p.meta.as_ref().and_then(|m| m.last_updated_timestamp),
        );
    }
    registry.last_updated = last_updated;
    match infra {
        Some((_, project, i, canonical)) => {
            registry.infra = Some(i);
            snapshot.infra_from = Some(project);
            snapshot.infra = canonical;
        }
        // As Feast's proto(): an empty infra once there is a project.
        None if !registry.projects.is_empty() => registry.infra = Some(core::Infra::default()),
        None => {}
    }
    let empty = raw.counter == 0 && registry.projects.is_empty() && raw.meta.is_empty();
    Ok(((!empty).then_some(registry), snapshot))
}

fn objects<T: RegistryObject>(
    table: Table,
    items: &[T],
    out: &mut BTreeMap<Key, Desired>,
    project_of: impl Fn(&T) -> &str,
) {
    for o in items {
        out.insert(
            Key::new(table, project_of(o), o.name()),
            Desired {
                canonical: o.encode_to_vec(),
                history: None,
            },
        );
    }
}

/// The rows the registry maps to, except `managed_infra` (one infra per registry, one row
/// per project in the tables: see [`plan`]).
fn desired_rows(registry: &core::Registry) -> BTreeMap<Key, Desired> {
    let mut out = BTreeMap::new();
    let r = registry;
    objects(Table::Projects, &r.projects, &mut out, |p| p.name());
    objects(Table::Entities, &r.entities, &mut out, |o| o.project());
    objects(Table::DataSources, &r.data_sources, &mut out, |o| {
        o.project()
    });
    objects(Table::FeatureViews, &r.feature_views, &mut out, |o| {
        o.project()
    });
    objects(
        Table::StreamFeatureViews,
        &r.stream_feature_views,
        &mut out,
        |o| o.project(),
    );
    objects(
        Table::OnDemandFeatureViews,
        &r.on_demand_feature_views,
        &mut out,
        |o| o.project(),
    );
    objects(Table::LabelViews, &r.label_views, &mut out, |o| o.project());
    objects(Table::FeatureServices, &r.feature_services, &mut out, |o| {
        o.project()
    });
    objects(Table::SavedDatasets, &r.saved_datasets, &mut out, |o| {
        o.project()
    });
    objects(
        Table::ValidationReferences,
        &r.validation_references,
        &mut out,
        |o| o.project(),
    );
    objects(Table::Permissions, &r.permissions, &mut out, |o| {
        o.project()
    });
    for record in r
        .feature_view_version_history
        .iter()
        .flat_map(|h| &h.records)
    {
        // The table keeps `created_timestamp` in whole epoch seconds.
        let mut record = record.clone();
        record.created_timestamp = Some(Timestamp {
            seconds: record.created_timestamp.map_or(0, |t| t.seconds),
            nanos: 0,
        });
        out.insert(
            Key {
                table: Table::VersionHistory,
                project: record.project_id.clone(),
                name: record.feature_view_name.clone(),
                version: record.version_number,
            },
            Desired {
                canonical: record.encode_to_vec(),
                history: Some(record),
            },
        );
    }
    out
}

/// Plans a commit of `registry` over `base`: inserts, compare-and-set updates and deletes of
/// the rows that differ, the projects to bump in `feast_metadata`, new project uuids, and the
/// projects deleted as a whole.
///
/// `Registry.infra` is one message while Feast keeps one `managed_infra` row per project
/// (and its `proto()` serves the last project's). A changed infra is written to the
/// projects this commit touches (`feast apply` commits its project's objects together with
/// `UpdateInfra`), else to the project it was loaded from, else to the first project.
pub(crate) fn plan(
    registry: &core::Registry,
    base: &Snapshot,
    purge_feast_metadata: bool,
    now: Timestamp,
) -> Plan {
    let mut desired = desired_rows(registry);
    let live: BTreeSet<&str> = registry.projects.iter().map(|p| p.name()).collect();
    let swept: BTreeSet<String> = base
        .rows
        .keys()
        .filter(|k| k.table == Table::Projects && !live.contains(k.project.as_str()))
        .map(|k| k.project.clone())
        .collect();
    // Infra rows of live projects are kept as they are unless the infra changed.
    for (key, row) in &base.rows {
        if key.table == Table::ManagedInfra && !swept.contains(&key.project) {
            desired.insert(
                key.clone(),
                Desired {
                    canonical: row.canonical.clone(),
                    history: None,
                },
            );
        }
    }

    let mut ops = Vec::new();
    for (key, want) in &desired {
        match base.rows.get(key) {
            None => ops.push(Op::Insert(key.clone(), want.clone())),
            Some(have) if have.canonical != want.canonical => {
                ops.push(Op::Update(key.clone(), want.clone(), have.stored.clone()))
            }
            Some(_) => {}
        }
    }
    for (key, have) in &base.rows {
        if !desired.contains_key(key) && !swept.contains(&key.project) {
            ops.push(Op::Delete(key.clone(), have.stored.clone()));
        }
    }
    // A deleted project's own rows are compare-and-deleted too, so a concurrent change to
    // one of them is a conflict rather than silently swept away.
    for (key, have) in &base.rows {
        if swept.contains(&key.project) {
            ops.push(Op::Delete(key.clone(), have.stored.clone()));
        }
    }

    let mut bump: BTreeSet<String> = ops
        .iter()
        .map(|op| op.key().project.clone())
        .filter(|p| !swept.contains(p))
        .collect();

    let infra = registry.infra.clone().unwrap_or_default().encode_to_vec();
    let mut infra_change = None;
    if infra != base.infra {
        let targets: Vec<String> = if !bump.is_empty() {
            bump.iter().cloned().collect()
        } else if let Some(p) = base
            .infra_from
            .as_ref()
            .filter(|p| live.contains(p.as_str()))
        {
            vec![p.clone()]
        } else {
            registry
                .projects
                .first()
                .map(|p| vec![p.name().to_owned()])
                .unwrap_or_default()
        };
        for project in &targets {
            let key = Key::new(Table::ManagedInfra, project, INFRA_ROW);
            let want = Desired {
                canonical: infra.clone(),
                history: None,
            };
            ops.retain(|op| op.key() != &key);
            match base.rows.get(&key) {
                None => ops.push(Op::Insert(key, want)),
                Some(have) if have.canonical != want.canonical => {
                    ops.push(Op::Update(key, want, have.stored.clone()))
                }
                Some(_) => {}
            }
            bump.insert(project.clone());
        }
        infra_change = Some((infra, targets.first().cloned()));
    }

    let mut uuids = BTreeMap::new();
    if !purge_feast_metadata {
        #[allow(deprecated)]
        for m in &registry.project_metadata {
            if live.contains(m.project.as_str()) && !base.uuids.contains_key(&m.project) {
                uuids.insert(m.project.clone(), m.project_uuid.clone());
            }
        }
        // As Feast's `_maybe_init_project_metadata` on every write to a project.
        for p in &bump {
            if !base.uuids.contains_key(p) && !uuids.contains_key(p) {
                uuids.insert(p.clone(), uuid::Uuid::new_v4().to_string());
            }
        }
    } else {
        bump.clear();
    }

    Plan {
        ops,
        bump,
        uuids,
        swept,
        now,
        version_id: registry.version_id.clone(),
        infra: infra_change,
    }
}

/// The snapshot after `plan` was committed with nobody else writing in between.
pub(crate) fn advance(base: &mut Snapshot, plan: &Plan, token: String) {
    for op in &plan.ops {
        match op {
            Op::Insert(key, want) | Op::Update(key, want, _) => {
                base.rows.insert(
                    key.clone(),
                    BaseRow {
                        stored: want.stored().to_vec(),
                        canonical: want.canonical.clone(),
                    },
                );
            }
            Op::Delete(key, _) => {
                base.rows.remove(key);
            }
        }
    }
    base.rows.retain(|k, _| !plan.swept.contains(&k.project));
    base.uuids.retain(|p, _| !plan.swept.contains(p));
    base.uuids
        .extend(plan.uuids.iter().map(|(p, u)| (p.clone(), u.clone())));
    if let Some((infra, from)) = &plan.infra {
        base.infra = infra.clone();
        base.infra_from = from.clone();
    }
    base.token = token;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_entity(name: &str, project_in_proto: &str, row_project: &str) -> RawRow {
        RawRow {
            table: Table::Entities,
            name: name.into(),
            project: row_project.into(),
            proto: core::Entity {
                spec: Some(core::EntitySpecV2 {
                    name: name.into(),
                    project: project_in_proto.into(),
                    ..Default::default()
                }),
                meta: None,
            }
            .encode_to_vec(),
            last_updated: 1,
        }
    }

    fn raw_project(name: &str) -> RawRow {
        RawRow {
            table: Table::Projects,
            name: name.into(),
            project: name.into(),
            proto: core::Project {
                spec: Some(core::ProjectSpec {
                    name: name.into(),
                    ..Default::default()
                }),
                meta: None,
            }
            .encode_to_vec(),
            last_updated: 1,
        }
    }

    #[test]
    fn empty_spec_project_is_filled_and_not_rewritten() {
        let raw = RawDb {
            rows: vec![raw_project("demo"), raw_entity("driver", "", "demo")],
            meta: vec![RawMeta {
                project: "demo".into(),
                key: PROJECT_UUID.into(),
                value: "u".into(),
                last_updated: 1,
            }],
            token: "t".into(),
            ..Default::default()
        };
        let (registry, base) = assemble(raw).unwrap();
        let registry = registry.unwrap();
        assert_eq!(registry.entities[0].spec.as_ref().unwrap().project, "demo");
        assert_eq!(registry.infra, Some(core::Infra::default()));
        let plan = plan(&registry, &base, false, Timestamp::default());
        assert!(plan.ops.is_empty(), "{:?}", plan.ops);
        assert!(plan.bump.is_empty() && plan.uuids.is_empty());
    }

    #[test]
    fn changes_deletes_and_project_deletion_are_planned() {
        let raw = RawDb {
            rows: vec![
                raw_project("a"),
                raw_project("b"),
                raw_entity("e1", "a", "a"),
                raw_entity("e2", "a", "a"),
                raw_entity("e3", "b", "b"),
            ],
            ..Default::default()
        };
        let (registry, base) = assemble(raw).unwrap();
        let mut registry = registry.unwrap();
        // e1 changed, e2 deleted, project b deleted (with e3), e4 added.
        registry.entities[0].spec.as_mut().unwrap().description = "x".into();
        registry
            .entities
            .retain(|e| !matches!(e.name(), "e2" | "e3"));
        registry.projects.retain(|p| p.name() == "a");
        let mut e4 = registry.entities[0].clone();
        e4.spec.as_mut().unwrap().name = "e4".into();
        registry.entities.push(e4);
        let plan = plan(&registry, &base, false, Timestamp::default());
        let ops: Vec<String> = plan
            .ops
            .iter()
            .map(|op| match op {
                Op::Insert(k, _) => format!("+{k}"),
                Op::Update(k, _, _) => format!("~{k}"),
                Op::Delete(k, _) => format!("-{k}"),
            })
            .collect();
        assert_eq!(
            ops,
            [
                "~entities a/e1",
                "+entities a/e4",
                "-entities a/e2",
                "-projects b/b",
                "-entities b/e3"
            ]
        );
        assert_eq!(plan.bump, BTreeSet::from(["a".to_owned()]));
        assert_eq!(plan.swept, BTreeSet::from(["b".to_owned()]));
        assert!(
            plan.uuids.contains_key("a"),
            "a written project gets a uuid"
        );
    }
}
