//! The [`OfflineStore`] interface and its file-source implementation.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, UInt64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::MemTable;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::functions_aggregate::expr_fn::{max, min};
use datafusion::prelude::{Expr, SessionConfig, SessionContext, ident, lit};
use feast_core::model::{DUMMY_ENTITY_ID, FeatureViewExt};
use feast_core::registry::Catalog;
use feast_core::types::{ValueType, pyarrow_type_name, value_type_to_arrow};
use feast_proto::core;

use crate::asof::OfflineQueryPlanner;
use crate::error::{OfflineError, Result};
use crate::local_reads::LocalReads;
use crate::logging::{self, LogDestination};
use crate::pit::{self, ROW_ID, ViewJoin};
use crate::postgres::{PostgresOfflineStore, PostgresOptions};
use crate::pull::{self, PullKind, PullRequest};
use crate::resolve::{FeatureSelection, ViewRequest, resolve};
use crate::source::{FileLocation, Window};
use crate::write::{self, WriteLocks};

/// Feast's `DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL`.
pub const ENTITY_TIMESTAMP: &str = "event_timestamp";

/// The entity table ("entity dataframe"): join keys, an event timestamp, anything else.
#[derive(Debug, Clone)]
pub struct EntityTable {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl EntityTable {
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        Self { schema, batches }
    }

    /// Feast's `infer_event_timestamp_from_entity_df`: `event_timestamp` if present, else the
    /// only timestamp column.
    pub fn timestamp_column(&self) -> Result<&str> {
        if self.schema.column_with_name(ENTITY_TIMESTAMP).is_some() {
            return Ok(ENTITY_TIMESTAMP);
        }
        let ts: Vec<&Field> = self
            .schema
            .fields()
            .iter()
            .filter(|f| matches!(f.data_type(), DataType::Timestamp(..)))
            .map(|f| f.as_ref())
            .collect();
        match ts.as_slice() {
            [only] => Ok(only.name()),
            _ => Err(OfflineError::Invalid(format!(
                "Please provide an entity_df with a column named {ENTITY_TIMESTAMP} \
                 representing the time of events."
            ))),
        }
    }
}

/// One `get_historical_features` request.
#[derive(Debug, Clone)]
pub struct HistoricalRequest {
    pub features: FeatureSelection,
    pub full_feature_names: bool,
}

impl HistoricalRequest {
    /// The requested views against the registry (see [`resolve`]).
    pub fn views<'a>(&self, catalog: &'a Catalog, project: &str) -> Result<Vec<ViewRequest<'a>>> {
        resolve(catalog, project, &self.features, self.full_feature_names)
    }
}

/// Feast's `OfflineStore`. Reads return a stream: the caller writes or forwards batches as
/// they come.
pub trait OfflineStore: Send + Sync {
    /// Point-in-time correct feature values for every row of `entities` (see the crate
    /// documentation for the exact semantics).
    fn get_historical_features(
        &self,
        catalog: &Catalog,
        project: &str,
        entities: EntityTable,
        request: &HistoricalRequest,
    ) -> impl Future<Output = Result<SendableRecordBatchStream>> + Send;

    /// `pull_latest_from_table_or_query` / `pull_all_from_table_or_query` over `source`
    /// (see [`crate::pull`]).
    fn pull(
        &self,
        source: &core::DataSource,
        request: &PullRequest,
        kind: PullKind,
    ) -> impl Future<Output = Result<SendableRecordBatchStream>> + Send;

    /// The source's columns and their types, as Feast's
    /// `DataSource.get_table_column_names_and_types` names them (pyarrow type names for
    /// file sources).
    fn column_names_and_types(
        &self,
        source: &core::DataSource,
    ) -> impl Future<Output = Result<Vec<(String, String)>>> + Send;

    /// Writes a retrieval's result to `target` (Feast's `persist`, behind
    /// `create_saved_dataset`); returns the number of rows written.
    fn persist(
        &self,
        target: &core::DataSource,
        result: SendableRecordBatchStream,
        allow_overwrite: bool,
    ) -> impl Future<Output = Result<usize>> + Send;

    /// Appends rows to the batch source of `view` (`offline_write_batch`); returns the
    /// number of rows written.
    fn offline_write_batch(
        &self,
        view: &core::FeatureView,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> impl Future<Output = Result<usize>> + Send;

    /// Writes feature-serving logs to `feature_service`'s logging destination (Feast's
    /// `write_logged_features`; see [`crate::logging`]); returns the number of rows
    /// written.
    fn write_logged_features(
        &self,
        feature_service: &core::FeatureService,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> impl Future<Output = Result<usize>> + Send;

    /// The entity table of an `entity_df` given as SQL (`entity_df_sql`), run by the store
    /// where its data lives: a Postgres offline store runs it in its database; the file
    /// store runs it on DataFusion, where each of the project's data sources is a table
    /// named after the source.
    fn entity_table_from_sql(
        &self,
        catalog: &Catalog,
        project: &str,
        sql: &str,
    ) -> impl Future<Output = Result<EntityTable>> + Send;

    /// The entity table of a retrieval given only a time range (Feast's non-entity mode,
    /// `get_historical_features(start_date=, end_date=)` without an entity_df): every
    /// distinct entity key with a source row in `[start, end]` in a requested view,
    /// each at `end` (see [`EntityWindow`]).
    fn entity_table_for_range(
        &self,
        catalog: &Catalog,
        project: &str,
        request: &HistoricalRequest,
        window: EntityWindow,
    ) -> impl Future<Output = Result<EntityTable>> + Send;
}

/// The time range of a retrieval without an entity table, as Feast's
/// `compute_non_entity_date_range` completes it: `end` defaults to now, `start` to `end`
/// minus the longest ttl of the requested views (30 days when none has a ttl).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityWindow {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

/// Feast's default window when no requested view has a ttl.
const DEFAULT_WINDOW_DAYS: i64 = 30;

/// The offline store over file sources (Parquet/CSV), and Postgres sources when it has a
/// Postgres database ([`FileOfflineStore::with_postgres`]), executed by DataFusion
/// in-process.
#[derive(Debug, Clone)]
pub struct FileOfflineStore {
    repo_path: PathBuf,
    config: SessionConfig,
    runtime: Arc<RuntimeEnv>,
    write_locks: WriteLocks,
    postgres: Option<PostgresOfflineStore>,
}

/// Entity tables with at most this many distinct keys have them pushed into a Postgres
/// source's scan as an `IN` list; larger ones read the source's whole time window.
pub const MAX_PUSHED_KEYS: usize = 10_000;

impl FileOfflineStore {
    /// A store reading sources relative to `repo_path` (`RepoConfig::repo_path`).
    pub fn new(repo_path: impl Into<PathBuf>) -> Self {
        Self {
            repo_path: repo_path.into(),
            config: default_config(),
            runtime: with_local_reads(Arc::new(RuntimeEnv::default())),
            write_locks: WriteLocks::default(),
            postgres: None,
        }
    }

    /// The store a repository's `offline_store` asks for: `file`/`dask`/`duckdb` read the
    /// repository's files; `postgres` reads Postgres sources from its database (and file
    /// sources too).
    pub fn for_config(config: &feast_core::config::RepoConfig) -> Result<Self> {
        use feast_core::config::OfflineStoreConfig;
        let store = Self::new(&config.repo_path);
        match &config.offline_store {
            None | Some(OfflineStoreConfig::Dask(_) | OfflineStoreConfig::Duckdb(_)) => Ok(store),
            Some(OfflineStoreConfig::Postgres(pg)) => store.with_postgres(pg),
            Some(other) => Err(OfflineError::Unsupported(format!(
                "offline_store type `{}` is not served by the feast-rs offline engine: it \
                 reads `file`, `duckdb` and `postgres` repositories",
                other.type_name()
            ))),
        }
    }

    /// Reads Postgres sources (and `entity_df_sql`) from the database `config` names.
    pub fn with_postgres(
        mut self,
        config: &feast_core::config::PostgresOfflineStoreConfig,
    ) -> Result<Self> {
        self.postgres = Some(PostgresOfflineStore::new(config)?);
        Ok(self)
    }

    /// The Postgres database, if the store has one.
    pub fn postgres(&self) -> Option<&PostgresOfflineStore> {
        self.postgres.as_ref()
    }

    fn postgres_for(&self, what: &str) -> Result<&PostgresOfflineStore> {
        self.postgres.as_ref().ok_or_else(|| OfflineError::Source {
            view: what.to_string(),
            message: "it reads a Postgres source, which needs `offline_store: {type: postgres, \
                      host, database, user, password, ...}` in the offline server's \
                      feature_store.yaml"
                .into(),
        })
    }

    /// A view's (or a pull's) source as a DataFrame: a Postgres table or query through
    /// [`crate::postgres::PostgresTable`], else a file source.
    /// A file source is pruned to `window` by its `date_partition_column` (see
    /// [`crate::source`]); the caller still filters rows by event timestamp.
    async fn read_source(
        &self,
        ctx: &SessionContext,
        what: &str,
        source: &core::DataSource,
        window: Window,
    ) -> Result<DataFrame> {
        if let Some(options) = PostgresOptions::of(source) {
            let table = self.postgres_for(what)?.table(what, &options?).await?;
            return Ok(ctx.read_table(Arc::new(table))?);
        }
        FileLocation::of(what, source, &self.repo_path)?
            .read_within(ctx, what, window)
            .await
    }

    /// Bounds the memory of the sorts, windows and aggregations to `bytes` (a fair spill
    /// pool): beyond it they spill to the OS temp directory. Hash-join build sides (the
    /// entity table) do not spill; a query that needs more fails with a resources error.
    pub fn with_memory_limit(mut self, bytes: usize) -> Result<Self> {
        // Each sorter reserves this much for its merge phase (10 MiB by default); keep it a
        // small share of the pool so that small limits still work.
        let reserve = self
            .config
            .options()
            .execution
            .sort_spill_reservation_bytes
            .min(bytes / 16);
        self.config = self.config.with_sort_spill_reservation_bytes(reserve);
        self.runtime = with_local_reads(
            RuntimeEnvBuilder::new()
                .with_memory_pool(Arc::new(FairSpillPool::new(bytes)))
                .build_arc()?,
        );
        Ok(self)
    }

    /// Overrides DataFusion's session settings (partitions, batch size); start from
    /// [`FileOfflineStore::config`] to keep the store's defaults.
    pub fn with_config(mut self, config: SessionConfig) -> Self {
        self.config = config;
        self
    }

    /// The store's DataFusion settings.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The plan without executing it (tests and `EXPLAIN`).
    pub async fn historical_features_plan(
        &self,
        catalog: &Catalog,
        project: &str,
        entities: EntityTable,
        request: &HistoricalRequest,
    ) -> Result<DataFrame> {
        let views = request.views(catalog, project)?;
        let ts_col = entities.timestamp_column()?.to_string();
        let entity_columns: Vec<String> = entities
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        for v in &views {
            for jk in join_keys(v.view) {
                let col = v.entity_column(jk);
                if entities.schema.column_with_name(col).is_none() {
                    return Err(OfflineError::Invalid(format!(
                        "the entity table has no column {col} (join key {jk} of feature view {})",
                        v.name_to_use
                    )));
                }
            }
            for f in &v.features {
                let name = v.output_name(f, request.full_feature_names);
                if entity_columns.contains(&name) {
                    return Err(OfflineError::Invalid(format!(
                        "feature {name} has the name of an entity-table column; \
                         use full_feature_names"
                    )));
                }
            }
        }
        let (schema, batches) = with_row_id(entities, &ts_col)?;
        let entity_batches = batches.clone();
        let ts_type = schema
            .field_with_name(&ts_col)
            .map(|f| f.data_type().clone())?;
        let ctx = self.session();
        // One partition in row-id order, declared so: the join keeps it, and the final
        // sort by row id is planned away.
        let entity_table = MemTable::try_new(schema.clone(), vec![batches])?
            .with_sort_order(vec![vec![ident(ROW_ID).sort(true, false)]]);
        let entity_df = ctx.read_table(Arc::new(entity_table))?;

        let bounds = time_bounds(&entity_df, &ts_col).await?;

        let mut joins = Vec::with_capacity(views.len());
        for v in &views {
            let batch = v.view.spec_ref().batch_source.as_ref().ok_or_else(|| {
                OfflineError::Invalid(format!(
                    "feature view {} has no batch source",
                    v.name_to_use
                ))
            })?;
            let window = view_window(&bounds, v.view.ttl());
            let mut source = self
                .read_source(&ctx, &v.view.spec_ref().name, batch, window)
                .await?;
            let source_columns: Vec<String> = source
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            let join = view_join(
                v,
                batch,
                &schema,
                &source_columns,
                request.full_feature_names,
            )?;
            // A database source is asked only for the entity table's keys when they are
            // few (files are scanned whole anyway: their statistics prune by time).
            if PostgresOptions::of(batch).is_some()
                && let [(entity_col, source_col, ty)] = join.keys.as_slice()
                && let Some(keys) = distinct_values(&entity_batches, entity_col, MAX_PUSHED_KEYS)?
                && !keys.is_empty()
            {
                // The key compared as the join compares it (the source column cast to the
                // entity column's type), so the filter never fails where the join would not.
                source = source.filter(
                    datafusion::prelude::cast(ident(source_col), ty.clone())
                        .in_list(keys.into_iter().map(lit).collect(), false),
                )?;
            }
            joins.push((join, source));
        }
        pit::plan(
            entity_df,
            &entity_columns,
            &ts_col,
            &ts_type,
            &bounds,
            joins,
        )
    }
}

impl FileOfflineStore {
    fn session(&self) -> SessionContext {
        let state = SessionStateBuilder::new()
            .with_config(self.config.clone())
            .with_runtime_env(self.runtime.clone())
            .with_default_features()
            .with_query_planner(Arc::new(OfflineQueryPlanner))
            .build();
        SessionContext::new_with_state(state)
    }

    /// The pull's plan without executing it.
    pub async fn pull_plan(
        &self,
        source: &core::DataSource,
        request: &PullRequest,
        kind: PullKind,
    ) -> Result<DataFrame> {
        let df = self
            .read_source(
                &self.session(),
                &source.name,
                source,
                (request.start, request.end),
            )
            .await?;
        pull::plan(df, &source.name, request, kind)
    }
}

impl OfflineStore for FileOfflineStore {
    async fn get_historical_features(
        &self,
        catalog: &Catalog,
        project: &str,
        entities: EntityTable,
        request: &HistoricalRequest,
    ) -> Result<SendableRecordBatchStream> {
        let df = self
            .historical_features_plan(catalog, project, entities, request)
            .await?;
        Ok(df.execute_stream().await?)
    }

    async fn pull(
        &self,
        source: &core::DataSource,
        request: &PullRequest,
        kind: PullKind,
    ) -> Result<SendableRecordBatchStream> {
        let df = self.pull_plan(source, request, kind).await?;
        Ok(df.execute_stream().await?)
    }

    async fn column_names_and_types(
        &self,
        source: &core::DataSource,
    ) -> Result<Vec<(String, String)>> {
        // Postgres sources name their types as Feast's PostgreSQLSource does (Postgres type
        // names, which the SDK maps with pg_type_to_feast_value_type).
        if let Some(options) = PostgresOptions::of(source) {
            let table = self
                .postgres_for(&source.name)?
                .table(&source.name, &options?)
                .await?;
            return Ok(table
                .columns()
                .iter()
                .map(|c| {
                    (
                        c.name.clone(),
                        crate::postgres::feast_type_name(c.oid).to_string(),
                    )
                })
                .collect());
        }
        let df = FileLocation::of(&source.name, source, &self.repo_path)?
            .read(&self.session(), &source.name)
            .await?;
        Ok(df
            .schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), pyarrow_type_name(f.data_type())))
            .collect())
    }

    async fn persist(
        &self,
        target: &core::DataSource,
        result: SendableRecordBatchStream,
        allow_overwrite: bool,
    ) -> Result<usize> {
        let location = FileLocation::of(&target.name, target, &self.repo_path)?;
        if location.format != crate::source::Format::Parquet {
            return Err(OfflineError::Invalid(format!(
                "saved datasets are written as Parquet; {} is not a Parquet path",
                location.path.display()
            )));
        }
        let lock = self.write_locks.of(&location.path);
        let _guard = lock.lock().await;
        write::persist(&location.path, result, allow_overwrite).await
    }

    async fn offline_write_batch(
        &self,
        view: &core::FeatureView,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<usize> {
        let name = view.spec_ref().name.clone();
        let source = view.spec_ref().batch_source.clone().ok_or_else(|| {
            OfflineError::Invalid(format!("feature view {name} has no batch source"))
        })?;
        if let Some(options) = PostgresOptions::of(&source) {
            return self
                .postgres_for(&name)?
                .append(&name, &options?, &source.field_mapping, &schema, &batches)
                .await;
        }
        let location = FileLocation::of(&name, &source, &self.repo_path)?;
        let lock = self.write_locks.of(&location.path);
        let _guard = lock.lock().await;
        tokio::task::spawn_blocking(move || {
            write::append(&name, &location, &source.field_mapping, &schema, &batches)
        })
        .await
        .map_err(|e| OfflineError::Invalid(format!("the write task failed: {e}")))?
    }

    async fn write_logged_features(
        &self,
        feature_service: &core::FeatureService,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<usize> {
        let destination = LogDestination::of(feature_service, &self.repo_path)?;
        let lock = self.write_locks.of(&destination.path);
        let _guard = lock.lock().await;
        tokio::task::spawn_blocking(move || logging::write(&destination, &schema, &batches))
            .await
            .map_err(|e| OfflineError::Invalid(format!("the log write task failed: {e}")))?
    }

    async fn entity_table_from_sql(
        &self,
        catalog: &Catalog,
        project: &str,
        sql: &str,
    ) -> Result<EntityTable> {
        let ctx = self.session();
        let df = match &self.postgres {
            Some(postgres) => ctx.read_table(Arc::new(postgres.query_table(sql).await?))?,
            None => {
                let sql_error = |e: datafusion::error::DataFusionError| {
                    OfflineError::Invalid(format!(
                        "entity_df_sql: {e} (the file offline store runs the query on \
                         DataFusion, where each of the project's data sources is a table \
                         named after the source)"
                    ))
                };
                // Only the sources the query names are opened.
                let state = ctx.state();
                let dialect = state.config().options().sql_parser.dialect;
                let statement = state.sql_to_statement(sql, &dialect).map_err(sql_error)?;
                let tables = state
                    .resolve_table_references(&statement)
                    .map_err(sql_error)?;
                for table in tables {
                    let Ok(source) = catalog.get::<core::DataSource>(table.table(), project) else {
                        continue;
                    };
                    let df = self
                        .read_source(&ctx, &source.name, source, (None, None))
                        .await?;
                    ctx.register_table(table, df.into_view())?;
                }
                let read_only = datafusion::execution::context::SQLOptions::new()
                    .with_allow_ddl(false)
                    .with_allow_dml(false)
                    .with_allow_statements(false);
                ctx.sql_with_options(sql, read_only)
                    .await
                    .map_err(sql_error)?
            }
        };
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        Ok(EntityTable::new(schema, batches))
    }

    async fn entity_table_for_range(
        &self,
        catalog: &Catalog,
        project: &str,
        request: &HistoricalRequest,
        window: EntityWindow,
    ) -> Result<EntityTable> {
        let views = request.views(catalog, project)?;
        let end = window.end.unwrap_or_else(Utc::now);
        let start = window.start.unwrap_or_else(|| {
            let longest = views
                .iter()
                .filter_map(|v| v.view.ttl())
                .filter(|ttl| !ttl.is_zero())
                .max()
                .and_then(|ttl| chrono::Duration::from_std(ttl).ok());
            end - longest.unwrap_or(chrono::Duration::days(DEFAULT_WINDOW_DAYS))
        });
        let ts_type = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
        let at = |t: DateTime<Utc>| {
            lit(ScalarValue::TimestampNanosecond(
                t.timestamp_nanos_opt(),
                Some("UTC".into()),
            ))
        };
        let ctx = self.session();
        // Entity columns in first-mention order, typed by the first source that has one.
        let mut key_columns: Vec<(String, DataType)> = Vec::new();
        let mut parts = Vec::new();
        for v in &views {
            let batch = v.view.spec_ref().batch_source.as_ref().ok_or_else(|| {
                OfflineError::Invalid(format!(
                    "feature view {} has no batch source",
                    v.name_to_use
                ))
            })?;
            let source = self
                .read_source(
                    &ctx,
                    &v.view.spec_ref().name,
                    batch,
                    (Some(start), Some(end)),
                )
                .await?;
            let schema = source.schema().as_arrow().clone();
            let mapping = &batch.field_mapping;
            let ts_col = timestamp_column(
                mapping,
                |c| schema.column_with_name(c).is_some(),
                &batch.timestamp_field,
            );
            let ts = datafusion::prelude::cast(ident(ts_col), ts_type.clone());
            let source = source.filter(ts.clone().gt_eq(at(start)).and(ts.lt_eq(at(end))))?;
            let mut keys = Vec::new();
            for jk in join_keys(v.view) {
                let entity_col = v.entity_column(jk).to_string();
                let source_col = source_column(mapping, jk).to_string();
                let ty = schema
                    .field_with_name(&source_col)
                    .map_err(|_| OfflineError::Source {
                        view: v.view.spec_ref().name.clone(),
                        message: format!("join key column {source_col} is not in the source"),
                    })?
                    .data_type()
                    .clone();
                if !key_columns.iter().any(|(c, _)| *c == entity_col) {
                    key_columns.push((entity_col.clone(), ty));
                }
                keys.push((entity_col, source_col));
            }
            parts.push((keys, source));
        }
        let mut union: Option<DataFrame> = None;
        let mut any_rows = false;
        for (keys, source) in parts {
            if keys.is_empty() {
                // Entity-less views add no keys; alone, they make one row if they have data.
                if key_columns.is_empty() && !any_rows {
                    any_rows = source.limit(0, Some(1))?.count().await? > 0;
                }
                continue;
            }
            let columns: Vec<Expr> = key_columns
                .iter()
                .map(|(col, ty)| match keys.iter().find(|(e, _)| e == col) {
                    Some((_, source_col)) => {
                        datafusion::prelude::cast(ident(source_col), ty.clone()).alias(col)
                    }
                    None => {
                        datafusion::prelude::cast(lit(ScalarValue::Null), ty.clone()).alias(col)
                    }
                })
                .collect();
            let part = source.select(columns)?;
            union = Some(match union {
                Some(u) => u.union(part)?,
                None => part,
            });
        }
        let end_ts =
            ScalarValue::TimestampNanosecond(end.timestamp_nanos_opt(), Some("UTC".into()));
        let mut fields = vec![Field::new(ENTITY_TIMESTAMP, ts_type, false)];
        let batches = match union {
            Some(union) => {
                let order = key_columns
                    .iter()
                    .map(|(c, _)| ident(c).sort(true, true))
                    .collect();
                let mut select = vec![lit(end_ts).alias(ENTITY_TIMESTAMP)];
                select.extend(key_columns.iter().map(|(c, _)| ident(c)));
                let df = union.distinct()?.sort(order)?.select(select)?;
                fields = df
                    .schema()
                    .as_arrow()
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone())
                    .collect();
                df.collect().await?
            }
            None if any_rows => vec![RecordBatch::try_new(
                Arc::new(Schema::new(fields.clone())),
                vec![end_ts.to_array_of_size(1)?],
            )?],
            None => vec![],
        };
        Ok(EntityTable::new(Arc::new(Schema::new(fields)), batches))
    }
}

/// The distinct non-null values of `column` in `batches`, or `None` when there are more
/// than `limit`.
fn distinct_values(
    batches: &[RecordBatch],
    column: &str,
    limit: usize,
) -> Result<Option<Vec<ScalarValue>>> {
    let mut seen = std::collections::HashSet::new();
    for batch in batches {
        let Some(array) = batch.column_by_name(column) else {
            return Ok(None);
        };
        for i in 0..array.len() {
            if array.is_null(i) {
                continue;
            }
            seen.insert(ScalarValue::try_from_array(array, i)?);
            if seen.len() > limit {
                return Ok(None);
            }
        }
    }
    Ok(Some(seen.into_iter().collect()))
}

/// `runtime` reading local files through [`LocalReads`] (pooled read buffers).
fn with_local_reads(runtime: Arc<RuntimeEnv>) -> Arc<RuntimeEnv> {
    runtime.register_object_store(
        ObjectStoreUrl::local_filesystem().as_ref(),
        Arc::new(LocalReads::default()),
    );
    runtime
}

/// DataFusion's settings with Parquet strings and binaries read as the file's own types
/// (`string`, `binary`) rather than view types, so pulls and column listings report the
/// types Feast's stores see.
fn default_config() -> SessionConfig {
    let mut config = SessionConfig::new();
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    config
}

/// The earliest and latest entity timestamps (one pass over the in-memory entity table).
async fn time_bounds(entities: &DataFrame, ts_col: &str) -> Result<pit::TimeBounds> {
    let batches = entities
        .clone()
        .aggregate(
            vec![],
            vec![
                min(ident(ts_col)).alias("lo"),
                max(ident(ts_col)).alias("hi"),
            ],
        )?
        .collect()
        .await?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let lo = ScalarValue::try_from_array(batch.column(0), 0)?;
    let hi = ScalarValue::try_from_array(batch.column(1), 0)?;
    Ok((!lo.is_null() && !hi.is_null()).then_some((lo, hi)))
}

/// The window a view's source is cut to: `[earliest - ttl, latest]` of the entity
/// timestamps (open below without a ttl), as [`pit::plan`] filters it.
fn view_window(bounds: &pit::TimeBounds, ttl: Option<std::time::Duration>) -> Window {
    let Some((earliest, latest)) = bounds else {
        return (None, None);
    };
    let lower = ttl.and_then(|ttl| {
        let ttl = chrono::Duration::from_std(ttl).ok()?;
        utc_of(earliest)?.checked_sub_signed(ttl)
    });
    (lower, utc_of(latest))
}

/// A timestamp scalar as a UTC instant.
fn utc_of(value: &ScalarValue) -> Option<chrono::DateTime<chrono::Utc>> {
    let nanos: i64 = match value {
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000)?,
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000)?,
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000)?,
        ScalarValue::TimestampNanosecond(Some(v), _) => *v,
        _ => return None,
    };
    Some(chrono::DateTime::from_timestamp_nanos(nanos))
}

/// Adds [`ROW_ID`] and normalises the timestamp column to UTC, as Feast does (tz-naive
/// values are taken as UTC; the unit is kept).
fn with_row_id(entities: EntityTable, ts_col: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let ts_field = entities.schema.field_with_name(ts_col)?;
    let DataType::Timestamp(unit, _) = ts_field.data_type() else {
        return Err(OfflineError::Invalid(format!(
            "the entity table's timestamp column {ts_col} has type {}; expected a timestamp",
            ts_field.data_type()
        )));
    };
    let ts_type = DataType::Timestamp(*unit, Some("UTC".into()));
    let mut fields: Vec<Field> = entities
        .schema
        .fields()
        .iter()
        .map(|f| {
            if f.name() == ts_col {
                f.as_ref().clone().with_data_type(ts_type.clone())
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    fields.push(Field::new(ROW_ID, DataType::UInt64, false));
    let schema = Arc::new(Schema::new(fields));
    let ts_index = entities.schema.index_of(ts_col)?;
    let mut offset = 0u64;
    let mut batches = Vec::with_capacity(entities.batches.len());
    for batch in entities.batches {
        let n = batch.num_rows() as u64;
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns[ts_index] = cast(&columns[ts_index], &ts_type)?;
        columns.push(Arc::new(UInt64Array::from_iter_values(offset..offset + n)));
        offset += n;
        batches.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok((schema, batches))
}

/// The view's join keys; entity-less views (Feast's `__dummy` entity) have none: they join
/// on time only.
fn join_keys(view: &core::FeatureView) -> impl Iterator<Item = &str> {
    view.join_keys()
        .into_iter()
        .filter(|k| *k != DUMMY_ENTITY_ID)
}

/// The source column holding `name` after the source's `field_mapping` (source → feature).
fn source_column<'a>(mapping: &'a BTreeMap<String, String>, name: &'a str) -> &'a str {
    mapping
        .iter()
        .find(|(_, to)| to.as_str() == name)
        .map(|(from, _)| from.as_str())
        .unwrap_or(name)
}

/// The source column of a timestamp field: timestamps name source columns, but a name
/// that `field_mapping` maps to is accepted too.
fn timestamp_column<'a>(
    mapping: &'a BTreeMap<String, String>,
    in_source: impl Fn(&str) -> bool,
    name: &'a str,
) -> &'a str {
    if in_source(name) {
        name
    } else {
        source_column(mapping, name)
    }
}

fn view_join(
    v: &ViewRequest<'_>,
    batch: &core::DataSource,
    entity_schema: &Schema,
    source_columns: &[String],
    full_feature_names: bool,
) -> Result<ViewJoin> {
    let view_name = &v.view.spec_ref().name;
    let require = |col: &str, what: &str| -> Result<String> {
        if source_columns.iter().any(|c| c == col) {
            Ok(col.to_string())
        } else {
            Err(OfflineError::Source {
                view: view_name.clone(),
                message: format!(
                    "{what} column {col} is not in the source (columns: {})",
                    source_columns.join(", ")
                ),
            })
        }
    };
    let mapping = &batch.field_mapping;
    let ts_source = |name: &str| {
        timestamp_column(mapping, |c| source_columns.iter().any(|s| s == c), name).to_string()
    };
    let event_ts = require(&ts_source(&batch.timestamp_field), "timestamp")?;
    let created_ts = if batch.created_timestamp_column.is_empty() {
        None
    } else {
        Some(require(
            &ts_source(&batch.created_timestamp_column),
            "created timestamp",
        )?)
    };
    let mut keys = Vec::new();
    for jk in join_keys(v.view) {
        let entity_col = v.entity_column(jk);
        let ty = entity_schema
            .field_with_name(entity_col)?
            .data_type()
            .clone();
        keys.push((
            entity_col.to_string(),
            require(source_column(mapping, jk), "join key")?,
            ty,
        ));
    }
    let specs = &v.view.spec_ref().features;
    let mut features = Vec::new();
    for f in &v.features {
        let spec = specs.iter().find(|s| &s.name == f).ok_or_else(|| {
            OfflineError::Invalid(format!("feature {f} is not in feature view {view_name}"))
        })?;
        let vt = ValueType::try_from(spec.value_type).unwrap_or(ValueType::Invalid);
        let ty = value_type_to_arrow(vt)
            .map_err(|e| OfflineError::Invalid(format!("feature {view_name}:{f}: {e}")))?;
        features.push((
            require(source_column(mapping, f), "feature")?,
            v.output_name(f, full_feature_names),
            ty,
        ));
    }
    Ok(ViewJoin {
        keys,
        event_ts,
        created_ts,
        features,
        ttl: v.view.ttl(),
    })
}
