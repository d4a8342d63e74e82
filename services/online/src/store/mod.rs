//! Online stores: where the latest feature values per entity live.
//!
//! An [`OnlineStore`] reads and writes rows of one feature view's table, addressed by a
//! [`TableRef`] and by *serialized* entity keys (the bytes of
//! [`feast_core::entity_key::serialize_entity_key`]; use [`serialize_entity_key`] here to get
//! them with the store's configured `entity_key_serialization_version`). Keeping the keys
//! serialized lets the server deduplicate and look them up without re-encoding, and is what
//! every Feast layout stores anyway.

pub mod hash_dump;
mod murmur3;
pub mod postgres;
pub mod redis;
mod resp;
pub mod sqlite;

use std::sync::Arc;

use feast_proto::types::{EntityKey, Value};
use prost_types::Timestamp;

/// One feature view's table in the online store. Feast names it `{project}_{view}`
/// ([`TableRef::table_name`]); with `enable_online_feature_view_versioning` and a version
/// above 0, pass `view` as `{name}_v{N}`, as Feast does.
///
/// Reads and writes need only `project` and `view`. Stores that keep one record per entity
/// rather than a table per view (Redis) also need the view's `join_keys` and `features` to
/// find and delete its data in [`OnlineStore::update`] and [`OnlineStore::teardown`]; set
/// them with [`TableRef::with_schema`] there (they stay empty otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableRef {
    pub project: String,
    pub view: String,
    /// The view's join keys (`["__dummy_id"]` for an entity-less view); empty when unknown.
    pub join_keys: Vec<String>,
    /// The view's feature names; empty when unknown.
    pub features: Vec<String>,
    /// Whether the view has STRING features: Postgres then adds Feast's full-text index on
    /// `value_text` in [`OnlineStore::update`] ([`TableRef::with_string_features`]).
    pub has_string_features: bool,
}

impl TableRef {
    pub fn new(project: impl Into<String>, view: impl Into<String>) -> Self {
        TableRef {
            project: project.into(),
            view: view.into(),
            join_keys: Vec::new(),
            features: Vec::new(),
            has_string_features: false,
        }
    }

    /// Says whether the view has STRING features (see the field).
    pub fn with_string_features(mut self, has_string_features: bool) -> Self {
        self.has_string_features = has_string_features;
        self
    }

    /// Adds the view's join keys and feature names (see the type's documentation).
    pub fn with_schema<J, F>(
        mut self,
        join_keys: impl IntoIterator<Item = J>,
        features: impl IntoIterator<Item = F>,
    ) -> Self
    where
        J: Into<String>,
        F: Into<String>,
    {
        self.join_keys = join_keys.into_iter().map(Into::into).collect();
        self.features = features.into_iter().map(Into::into).collect();
        self
    }

    /// Feast's table name: `{project}_{view}`.
    pub fn table_name(&self) -> String {
        format!("{}_{}", self.project, self.view)
    }
}

/// One feature view's part of an [`OnlineStore::online_read_many`] call: the arguments of
/// one [`OnlineStore::online_read`].
#[derive(Debug, Clone, Copy)]
pub struct ReadSpec<'a> {
    pub table: &'a TableRef,
    /// Serialized entity keys (duplicates allowed).
    pub entity_keys: &'a [Vec<u8>],
    pub features: &'a [String],
    /// How many fields every view of the project with this view's join keys keeps per entity
    /// (features plus a timestamp each), when the caller knows: a store keeping them together
    /// (Redis) may then fetch a whole entry rather than pick most of it out.
    pub entity_fields: Option<usize>,
}

/// What the store holds for one entity of one feature view.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRow {
    /// The entity's event timestamp, as the store keeps it (SQLite: whole seconds).
    pub event_ts: Timestamp,
    /// Aligned with the requested feature names; `None` when the entity has no stored value
    /// for that feature (the server reports it as NOT_FOUND).
    pub values: Vec<Option<Value>>,
}

/// One entity's feature values to write.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteRow {
    /// The serialized entity key (see [`serialize_entity_key`]).
    pub entity_key: Vec<u8>,
    pub features: Vec<(String, Value)>,
    pub event_ts: Timestamp,
    pub created_ts: Option<Timestamp>,
}

/// Why an online-store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OnlineStoreError {
    /// The store cannot be reached or used (connection, I/O, lock timeout, full disk, ...):
    /// retrying later may succeed. Servers map it to UNAVAILABLE / 503.
    #[error("online store unavailable: {0}")]
    Unavailable(String),
    /// The request, the configuration or the stored data is malformed or unsupported (an
    /// entity key that cannot be serialized, a stored value that is not a
    /// `feast.types.Value`, an online store type feast-rs does not implement, ...).
    #[error("invalid online store data: {0}")]
    Invalid(String),
    /// A write went to a feature view whose table does not exist: the view was never applied
    /// to this store (Feast creates the tables in `feast apply`, see [`OnlineStore::update`]).
    #[error("online store table {0:?} does not exist; apply the feature view first")]
    NoSuchTable(String),
}

/// Serializes an entity key as the store's keys are stored, with the repository's
/// `entity_key_serialization_version` (Feast's default is
/// [`feast_core::entity_key::DEFAULT_ENTITY_KEY_SERIALIZATION_VERSION`]).
pub fn serialize_entity_key(key: &EntityKey, version: u32) -> Result<Vec<u8>, OnlineStoreError> {
    feast_core::entity_key::serialize_entity_key(key, version)
        .map_err(|e| OnlineStoreError::Invalid(e.to_string()))
}

/// An online store. Object safe: the server holds a `Box<dyn OnlineStore>` /
/// `Arc<dyn OnlineStore>` chosen by `online_store.type`.
#[tonic::async_trait]
pub trait OnlineStore: Send + Sync + 'static {
    /// Reads `features` of the entities `entity_keys` (serialized) from `table`.
    ///
    /// The result is aligned with `entity_keys` (duplicates allowed): `None` when the store
    /// has nothing for that entity (NOT_FOUND), else the entity's event timestamp and the
    /// values aligned with `features`.
    async fn online_read(
        &self,
        table: &TableRef,
        entity_keys: &[Vec<u8>],
        features: &[String],
    ) -> Result<Vec<Option<FeatureRow>>, OnlineStoreError>;

    /// Reads several feature views at once: the result has one entry per `reads` item, each
    /// exactly what [`OnlineStore::online_read`] returns for it.
    ///
    /// The default reads the views one after the other. Stores that can do better override
    /// it: Redis sends every view's `HMGET`s in one pipeline, i.e. one round trip per request
    /// (per cluster node in Redis Cluster) whatever the number of views; Postgres reads
    /// them in one `UNION ALL` statement when the request is small enough
    /// (`max_batched_result_rows`), as Feast 0.67 does, else one statement per view,
    /// concurrently.
    async fn online_read_many(
        &self,
        reads: &[ReadSpec<'_>],
    ) -> Result<Vec<Vec<Option<FeatureRow>>>, OnlineStoreError> {
        let mut out = Vec::with_capacity(reads.len());
        for r in reads {
            out.push(self.online_read(r.table, r.entity_keys, r.features).await?);
        }
        Ok(out)
    }

    /// Writes `rows` to `table` (in one transaction where the store has them) and returns how
    /// many rows were written.
    ///
    /// Newer wins: a row whose event timestamp is older than what the store already holds
    /// for that entity (including rows earlier in the same batch) is skipped. A row with the
    /// same timestamp overwrites in SQLite and Postgres; Redis skips it, as Feast's Redis
    /// store does (and it has `skip_dedup` to turn the check off). Postgres compares per
    /// (entity, feature) row, in SQL, and counts a row when at least one of its features was
    /// written. Rows without features write nothing and are not counted.
    async fn online_write_batch(
        &self,
        table: &TableRef,
        rows: &[WriteRow],
    ) -> Result<usize, OnlineStoreError>;

    /// [`OnlineStore::online_write_batch`], creating `table` first when the store does not
    /// have it yet: a view applied through a registry server never reaches this store's
    /// [`OnlineStore::update`] (Feast's remote online store does nothing there), so the
    /// first write, push or materialization creates its table (idempotently).
    async fn write_creating(
        &self,
        table: &TableRef,
        rows: &[WriteRow],
    ) -> Result<usize, OnlineStoreError> {
        match self.online_write_batch(table, rows).await {
            Err(OnlineStoreError::NoSuchTable(name)) => {
                tracing::info!(message = "creating the online table of a view on first write", table = %name);
                self.update(&table.project, std::slice::from_ref(table), &[])
                    .await?;
                self.online_write_batch(table, rows).await
            }
            other => other,
        }
    }

    /// Prepares the store for `project`'s feature views after an apply, as Feast's
    /// `OnlineStore.update`: creates what `tables_to_keep` need (idempotently) and removes
    /// `tables_to_delete` with their data. `project` is for stores keeping per-project state;
    /// tables are addressed by their [`TableRef`] alone. Redis needs the `join_keys` and
    /// `features` of `tables_to_delete` ([`TableRef::with_schema`]).
    async fn update(
        &self,
        project: &str,
        tables_to_keep: &[TableRef],
        tables_to_delete: &[TableRef],
    ) -> Result<(), OnlineStoreError>;

    /// Removes `tables` of `project` and their data (`feast teardown`). Redis needs the
    /// tables' `join_keys` ([`TableRef::with_schema`]).
    async fn teardown(&self, project: &str, tables: &[TableRef]) -> Result<(), OnlineStoreError>;
}

/// Opens the online store `config.online_store` names: `sqlite` (the file at
/// [`RepoConfig::sqlite_online_store_path`](feast_core::config::RepoConfig::sqlite_online_store_path))
/// `redis` (see [`redis::RedisOnlineStore`]) or `postgres` (see
/// [`postgres::PostgresOnlineStore`]). Any other type, or `online_store: null`, is
/// an [`OnlineStoreError::Invalid`] saying so.
pub async fn open_online_store(
    config: &feast_core::config::RepoConfig,
) -> Result<Arc<dyn OnlineStore>, OnlineStoreError> {
    use feast_core::config::OnlineStoreConfig;
    match &config.online_store {
        Some(OnlineStoreConfig::Sqlite(_)) => {
            let path = config.sqlite_online_store_path().ok_or_else(|| {
                OnlineStoreError::Invalid("sqlite online store without a path".into())
            })?;
            Ok(Arc::new(sqlite::SqliteOnlineStore::open(path).await?))
        }
        Some(OnlineStoreConfig::Redis(redis)) => Ok(Arc::new(
            redis::RedisOnlineStore::connect(redis, config.entity_key_serialization_version)
                .await?,
        )),
        Some(OnlineStoreConfig::Postgres(pg)) => {
            Ok(Arc::new(postgres::PostgresOnlineStore::connect(pg).await?))
        }
        Some(other) => Err(OnlineStoreError::Invalid(format!(
            "online_store type `{}` is not supported by feast-rs yet; supported: sqlite, redis, \
             postgres",
            other.type_name()
        ))),
        None => Err(OnlineStoreError::Invalid(
            "feature_store.yaml has `online_store: null`: there is no online store".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use feast_proto::types::value::Val;

    #[test]
    fn table_name_is_project_underscore_view() {
        assert_eq!(
            TableRef::new("compat", "driver_hourly_stats").table_name(),
            "compat_driver_hourly_stats"
        );
    }

    #[test]
    fn serializes_entity_keys_with_the_configured_version() {
        let key = EntityKey {
            join_keys: vec!["driver_id".into()],
            entity_values: vec![Value {
                val: Some(Val::Int64Val(1001)),
            }],
        };
        let hex = |b: Vec<u8>| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(serialize_entity_key(&key, 3).unwrap()),
            "0100000002000000090000006472697665725f69640400000008000000e903000000000000"
        );
        assert_eq!(
            hex(serialize_entity_key(&key, 2).unwrap()),
            "020000006472697665725f69640400000008000000e903000000000000"
        );
        let bad = EntityKey {
            join_keys: vec!["x".into()],
            entity_values: vec![Value {
                val: Some(Val::DoubleVal(1.0)),
            }],
        };
        assert!(matches!(
            serialize_entity_key(&bad, 3),
            Err(OnlineStoreError::Invalid(_))
        ));
    }
}
