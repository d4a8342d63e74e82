//! Feast's Postgres online store (`online_store.type: postgres`), on Feast's very tables
//! (PROTOCOLS.md §6.4, Feast 0.67 `infra/online_stores/postgres_online_store/postgres.py`).
//!
//! Layout, shared with Feast:
//! - one table per feature view, `"{project}_{view}"`, in the schema `db_schema` (or, when
//!   that is empty, the schema named after `user`), one row per (entity key, feature):
//!   `entity_key BYTEA` (the serialized entity key), `feature_name TEXT`, `value BYTEA` (a
//!   serialized `feast.types.Value`), `value_text TEXT NULL` (Python's `str()` of string, int,
//!   float and bool values, else NULL), `value_num DOUBLE PRECISION NULL` (only in tables made
//!   with `enable_openai_compatible_store`; filled whenever the column exists),
//!   `vector_value BYTEA NULL` (`vector` with `vector_enabled`), `event_ts TIMESTAMPTZ`,
//!   `created_ts TIMESTAMPTZ`, primary key `(entity_key, feature_name)`, index `"{table}_ek"`
//!   on `entity_key`, and for views with STRING features a GIN full-text index
//!   `"{table}_fts_idx"` on `to_tsvector('english', value_text)`;
//! - as Feast, table names are unqualified and found through the connection's `search_path`,
//!   `"{schema},public"` (just `public` when the schema is `public`);
//! - reads are Feast's statements: `SELECT entity_key, feature_name, value, event_ts FROM t
//!   WHERE entity_key = ANY($1) [AND feature_name = ANY($2)]`, and for a request over ≥ 2 views
//!   with `entity rows × views ≤ max_batched_result_rows` all views in one `UNION ALL`
//!   statement tagged by view ([`OnlineStore::online_read_many`]).
//!
//! Timestamps: Feast writes *naive UTC* datetimes into the `TIMESTAMPTZ` columns, which the
//! server interprets in the session's `TimeZone` (the server's default, for psycopg). feast-rs
//! sessions always run in UTC (sqlx asks for it at connect time) and store the true instant,
//! to the microsecond. Both agree — same stored values, same values read back — when the
//! server's `TimeZone` is UTC (the default of the official images). On a server with another
//! default `TimeZone`, Feast's stored instants are off by the zone's UTC offset and the two
//! disagree by that offset.
//!
//! Differences from Feast, on purpose:
//! - **newer wins**: an upsert never replaces a row whose stored `event_ts` is newer than the
//!   incoming one (equal times overwrite), and within one batch the newest write of each
//!   (entity key, feature) is the one applied. Feast's store has no check (the last write
//!   wins, whatever its timestamp) and fails on a batch holding the same pair twice;
//! - an entity's event timestamp is the newest `event_ts` of its returned rows. Feast takes
//!   the last row Postgres happens to return; the two only differ when an entity's features
//!   were written at different times;
//! - the connections are always a pool of `min_conn..=max_conn` (Feast's default `singleton`
//!   is one shared connection); `keepalives_idle` is not applied, and with `vector_enabled`
//!   `vector_value` is left NULL (vector search is not implemented);
//! - with `enable_online_feature_view_versioning`, [`OnlineStore::update`] drops only the
//!   named table, not the view's other `_v{N}` tables.
//!
//! The pool recovers by itself: a connection that broke (server restart, network) is dropped
//! and replaced on a later acquire; the failing call reports [`OnlineStoreError::Unavailable`].

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use feast_core::config::PostgresOnlineStoreConfig;
use feast_proto::types::Value;
use prost::Message;
use prost_types::Timestamp;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};

use super::sqlite::text_and_num;
use super::{FeatureRow, OnlineStore, OnlineStoreError, ReadSpec, TableRef, WriteRow};

/// Feast's default for `max_batched_result_rows`.
pub const DEFAULT_MAX_BATCHED_RESULT_ROWS: usize = 2048;

/// The stored timestamp, read as integer microseconds since the epoch (exact: `EXTRACT`
/// returns `numeric` since Postgres 14; a `double` before that still rounds back exactly).
const EVENT_TS_MICROS: &str = "(EXTRACT(EPOCH FROM event_ts) * 1000000)::int8";

/// Connection settings of a [`PostgresOnlineStore`] beyond `feature_store.yaml`.
#[derive(Debug, Clone)]
pub struct PostgresOnlineStoreOptions {
    /// How long getting a connection may take (connecting included) before the call fails
    /// with [`OnlineStoreError::Unavailable`].
    pub acquire_timeout: Duration,
}

impl Default for PostgresOnlineStoreOptions {
    fn default() -> Self {
        PostgresOnlineStoreOptions {
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Feast's Postgres online store. See the module documentation for the layout.
pub struct PostgresOnlineStore {
    pool: PgPool,
    /// `host:port/database`, for error messages.
    target: String,
    /// The schema holding the tables: `db_schema`, or `user` when that is empty.
    schema: String,
    user: String,
    vector_enabled: bool,
    openai_compatible: bool,
    max_batched_result_rows: usize,
    /// Per table, whether it has `value_num` (Feast caches the same lookup).
    has_value_num: Mutex<HashMap<String, bool>>,
}

/// The schema Feast uses: `db_schema or user`.
pub fn schema_name(config: &PostgresOnlineStoreConfig) -> String {
    feast_core::config::postgres_schema(&config.db_schema, &config.user).to_owned()
}

/// Feast's `search_path`: the schema, then `public` (unless the schema is `public`).
pub fn search_path(config: &PostgresOnlineStoreConfig) -> String {
    feast_core::config::postgres_search_path(&config.db_schema, &config.user)
}

impl PostgresOnlineStore {
    /// Connects to the server `config` names (one connection up front, so a wrong host or
    /// password fails here).
    pub async fn connect(config: &PostgresOnlineStoreConfig) -> Result<Self, OnlineStoreError> {
        Self::connect_with(config, PostgresOnlineStoreOptions::default()).await
    }

    pub async fn connect_with(
        config: &PostgresOnlineStoreConfig,
        options: PostgresOnlineStoreOptions,
    ) -> Result<Self, OnlineStoreError> {
        let target = format!("{}:{}/{}", config.host, config.port, config.database);
        let mut connect = PgConnectOptions::new()
            .host(&config.host)
            .port(config.port)
            .database(&config.database)
            .username(&config.user)
            .password(&config.password)
            .application_name("feast-rs")
            .options([("search_path", search_path(config))]);
        if let Some(mode) = &config.sslmode {
            let mode = PgSslMode::from_str(mode).map_err(|_| {
                OnlineStoreError::Invalid(format!(
                    "online_store.sslmode {mode:?}: expected disable, allow, prefer, require, \
                     verify-ca or verify-full"
                ))
            })?;
            connect = connect.ssl_mode(mode);
        }
        if let Some(path) = &config.sslrootcert_path {
            connect = connect.ssl_root_cert(path);
        }
        if let Some(path) = &config.sslcert_path {
            connect = connect.ssl_client_cert(path);
        }
        if let Some(path) = &config.sslkey_path {
            connect = connect.ssl_client_key(path);
        }
        let max = u32::try_from(config.max_conn.max(1)).unwrap_or(u32::MAX);
        let min = u32::try_from(config.min_conn.max(0)).unwrap_or(0).min(max);
        let pool = PgPoolOptions::new()
            .max_connections(max)
            .min_connections(min)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| OnlineStoreError::Unavailable(format!("postgres {target}: {e}")))?;
        Ok(PostgresOnlineStore {
            pool,
            target,
            schema: schema_name(config),
            user: config.user.clone(),
            vector_enabled: config.vector_enabled.unwrap_or(false),
            openai_compatible: config.enable_openai_compatible_store.unwrap_or(false),
            max_batched_result_rows: usize::try_from(config.max_batched_result_rows.max(0))
                .unwrap_or(usize::MAX),
            has_value_num: Mutex::new(HashMap::new()),
        })
    }

    /// The connection pool (tests and tools).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Closes every connection; further calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Classifies an sqlx error (see [`db_error`]) with this server in the message.
    fn err(&self, context: &str, e: sqlx::Error) -> OnlineStoreError {
        db_error(&self.target, context, e)
    }

    /// The columns of `table` as the unqualified name resolves through the search path
    /// (None when there is no such table).
    async fn value_num_column(&self, table: &str) -> Result<Option<bool>, OnlineStoreError> {
        if let Some(&known) = self.cache().get(table) {
            return Ok(Some(known));
        }
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT attname::text FROM pg_attribute \
             WHERE attrelid = to_regclass(quote_ident($1)) AND attnum > 0 AND NOT attisdropped",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(table, e))?;
        if columns.is_empty() {
            return Ok(None);
        }
        let has = columns.iter().any(|c| c == "value_num");
        self.cache().insert(table.to_owned(), has);
        Ok(Some(has))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        self.has_value_num
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn should_batch(&self, reads: &[ReadSpec<'_>]) -> bool {
        let rows = reads.iter().map(|r| r.entity_keys.len()).max().unwrap_or(0);
        batches(reads.len(), rows, self.max_batched_result_rows)
    }

    async fn drop_tables(
        &self,
        conn: &mut sqlx::PgConnection,
        tables: &[TableRef],
    ) -> Result<(), OnlineStoreError> {
        for table in tables {
            let name = table.table_name();
            for sql in [
                format!("DROP TABLE IF EXISTS {}", quote_id(&name)),
                format!("DROP INDEX IF EXISTS {}", quote_id(&format!("{name}_ek"))),
            ] {
                sqlx::query(&sql)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| self.err(&name, e))?;
            }
            self.cache().remove(&name);
        }
        Ok(())
    }
}

/// Feast 0.67's `_should_batch`: a request over `views` feature views whose largest entity
/// column has `entity_rows` rows is read in one `UNION ALL` statement when there are at
/// least two views and `entity_rows × views ≤ max_batched_result_rows` (so 0 turns batching
/// off for any non-empty request).
pub fn batches(views: usize, entity_rows: usize, max_batched_result_rows: usize) -> bool {
    views >= 2
        && entity_rows
            .checked_mul(views)
            .is_some_and(|n| n <= max_batched_result_rows)
}

/// Quotes an identifier as psycopg's `sql.Identifier` does.
pub fn quote_id(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// Feast's `CREATE TABLE IF NOT EXISTS` for a view's table.
pub fn create_table_sql(table: &str, value_num: bool, vector_enabled: bool) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (entity_key BYTEA, feature_name TEXT, value BYTEA, \
         value_text TEXT NULL, {}vector_value {} NULL, event_ts TIMESTAMPTZ, \
         created_ts TIMESTAMPTZ, PRIMARY KEY(entity_key, feature_name))",
        quote_id(table),
        if value_num {
            "value_num DOUBLE PRECISION NULL, "
        } else {
            ""
        },
        if vector_enabled { "vector" } else { "BYTEA" },
    )
}

/// Microseconds since the epoch, floored (Python datetimes stop at microseconds).
pub fn timestamp_micros(ts: &Timestamp) -> i64 {
    let mut ts = *ts;
    ts.normalize();
    ts.seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(ts.nanos / 1000))
}

fn timestamp_from_micros(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// The table named in an `undefined_table` error (`relation "x" does not exist`).
fn undefined_table_name(message: &str) -> Option<String> {
    let start = message.find('"')? + 1;
    let end = start + message[start..].find('"')?;
    Some(message[start..end].to_owned())
}

/// Classifies an sqlx error: a missing relation is [`OnlineStoreError::NoSuchTable`];
/// connection, pool, I/O, TLS and server-side resource or shutdown errors mean the store is
/// not usable right now ([`OnlineStoreError::Unavailable`]); other errors the server reports
/// (types, permissions, ...) and undecodable rows are [`OnlineStoreError::Invalid`].
fn db_error(target: &str, context: &str, e: sqlx::Error) -> OnlineStoreError {
    if let sqlx::Error::Database(d) = &e {
        let code = d.code().unwrap_or_default();
        if code == "42P01" {
            return OnlineStoreError::NoSuchTable(
                undefined_table_name(d.message()).unwrap_or_else(|| context.to_owned()),
            );
        }
        let transient = ["08", "53", "57", "58", "40"]
            .iter()
            .any(|class| code.starts_with(class))
            || code == "55P03";
        return if transient {
            OnlineStoreError::Unavailable(format!("postgres {target}, {context}: {e}"))
        } else {
            OnlineStoreError::Invalid(format!("postgres {target}, {context}: {e}"))
        };
    }
    match e {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => {
            OnlineStoreError::Invalid(format!("postgres {target}, {context}: {e}"))
        }
        _ => OnlineStoreError::Unavailable(format!("postgres {target}, {context}: {e}")),
    }
}

/// One view's read, deduplicated: the distinct keys to ask for and where each requested key
/// finds its answer among them.
struct ReadPlan<'a> {
    table: String,
    features: &'a [String],
    distinct: Vec<&'a [u8]>,
    slot_of: Vec<usize>,
}

impl<'a> ReadPlan<'a> {
    fn new(spec: &ReadSpec<'a>) -> Self {
        let mut seen: HashMap<&[u8], usize> = HashMap::with_capacity(spec.entity_keys.len());
        let mut distinct = Vec::with_capacity(spec.entity_keys.len());
        let slot_of = spec
            .entity_keys
            .iter()
            .map(|k| {
                *seen.entry(k.as_slice()).or_insert_with(|| {
                    distinct.push(k.as_slice());
                    distinct.len() - 1
                })
            })
            .collect();
        ReadPlan {
            table: spec.table.table_name(),
            features: spec.features,
            distinct,
            slot_of,
        }
    }

    /// Feast's `SELECT` for this view (with `fv_tag` in a batched read); `$first` is the
    /// number of its first parameter.
    fn select(&self, tag: Option<usize>, first: usize) -> String {
        let tag = tag.map(|t| format!("{t} AS fv_tag, ")).unwrap_or_default();
        let mut sql = format!(
            "SELECT {tag}entity_key, feature_name, value, {EVENT_TS_MICROS} AS event_ts \
             FROM {} WHERE entity_key = ANY(${first})",
            quote_id(&self.table)
        );
        if !self.features.is_empty() {
            sql.push_str(&format!(" AND feature_name = ANY(${})", first + 1));
        }
        sql
    }

    fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let query = query.bind(&self.distinct);
        if self.features.is_empty() {
            query
        } else {
            query.bind(self.features)
        }
    }

    fn n_params(&self) -> usize {
        if self.features.is_empty() { 1 } else { 2 }
    }
}

/// What one entity's rows gave.
#[derive(Default)]
struct Found {
    /// The newest `event_ts` (microseconds) among the entity's rows.
    ts: Option<i64>,
    values: HashMap<String, Vec<u8>>,
}

impl Found {
    fn add(&mut self, feature: String, value: Vec<u8>, ts: Option<i64>) {
        if let Some(ts) = ts {
            self.ts = Some(self.ts.map_or(ts, |t| t.max(ts)));
        }
        self.values.insert(feature, value);
    }
}

/// Turns the rows found per distinct key into the answer aligned with the requested keys.
fn assemble(
    plan: &ReadPlan<'_>,
    found: Vec<Option<Found>>,
) -> Result<Vec<Option<FeatureRow>>, OnlineStoreError> {
    let mut decoded = Vec::with_capacity(found.len());
    for f in found {
        let Some(f) = f else {
            decoded.push(None);
            continue;
        };
        let mut values = Vec::with_capacity(plan.features.len());
        for feature in plan.features {
            values.push(match f.values.get(feature) {
                None => None,
                Some(bytes) => Some(Value::decode(bytes.as_slice()).map_err(|e| {
                    OnlineStoreError::Invalid(format!(
                        "table {:?}, feature {feature:?}: stored value is not a \
                         feast.types.Value: {e}",
                        plan.table
                    ))
                })?),
            });
        }
        decoded.push(Some(FeatureRow {
            event_ts: timestamp_from_micros(f.ts.unwrap_or(0)),
            values,
        }));
    }
    Ok(plan.slot_of.iter().map(|&i| decoded[i].clone()).collect())
}

/// Files a result row under its distinct key.
fn collect_row(
    target: &str,
    plan: &ReadPlan<'_>,
    index: &HashMap<&[u8], usize>,
    found: &mut [Option<Found>],
    row: &sqlx::postgres::PgRow,
    offset: usize,
) -> Result<(), OnlineStoreError> {
    let e = |e| db_error(target, &plan.table, e);
    let key: &[u8] = row.try_get(offset).map_err(e)?;
    let Some(&slot) = index.get(key) else {
        return Ok(());
    };
    let feature: String = row.try_get(offset + 1).map_err(e)?;
    let value: Option<Vec<u8>> = row.try_get(offset + 2).map_err(e)?;
    let ts: Option<i64> = row.try_get(offset + 3).map_err(e)?;
    found[slot]
        .get_or_insert_with(Found::default)
        .add(feature, value.unwrap_or_default(), ts);
    Ok(())
}

/// Reads one view with its own statement.
async fn read_one(
    pool: &PgPool,
    target: &str,
    plan: &ReadPlan<'_>,
) -> Result<Vec<Option<FeatureRow>>, OnlineStoreError> {
    if plan.distinct.is_empty() {
        return Ok(Vec::new());
    }
    let sql = plan.select(None, 1);
    let rows = plan
        .bind(sqlx::query(&sql))
        .fetch_all(pool)
        .await
        .map_err(|e| db_error(target, &plan.table, e))?;
    let index: HashMap<&[u8], usize> = plan
        .distinct
        .iter()
        .enumerate()
        .map(|(i, k)| (*k, i))
        .collect();
    let mut found: Vec<Option<Found>> = (0..plan.distinct.len()).map(|_| None).collect();
    for row in &rows {
        collect_row(target, plan, &index, &mut found, row, 0)?;
    }
    assemble(plan, found)
}

/// The rows of one batch to upsert, one per (entity key, feature), the newest write of each.
#[derive(Default)]
struct Cells {
    keys: Vec<Vec<u8>>,
    features: Vec<String>,
    values: Vec<Vec<u8>>,
    texts: Vec<Option<String>>,
    nums: Vec<Option<f64>>,
    event_ts: Vec<i64>,
    created_ts: Vec<Option<i64>>,
    /// The index of the [`WriteRow`] each cell comes from.
    source: Vec<usize>,
    /// Every row has its own entity key (so a key names the row its cells come from).
    distinct_keys: bool,
}

/// True when no feature appears twice in `row`.
fn distinct_features(row: &WriteRow) -> bool {
    let f = &row.features;
    if f.len() <= 16 {
        (1..f.len()).all(|i| f[..i].iter().all(|(name, _)| *name != f[i].0))
    } else {
        let mut seen = HashSet::with_capacity(f.len());
        f.iter().all(|(name, _)| seen.insert(name.as_str()))
    }
}

impl Cells {
    fn from_rows(rows: &[WriteRow]) -> Self {
        // A materialization's batch has one row per entity and each feature once: every
        // cell is then distinct and goes in as it is, without a map of the cells.
        let mut keys = HashSet::with_capacity(rows.len());
        if rows
            .iter()
            .all(|r| keys.insert(r.entity_key.as_slice()) && distinct_features(r))
        {
            return Self::from_distinct_rows(rows);
        }
        let mut cells = Cells::default();
        let mut slot: HashMap<(&[u8], &str), usize> = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            let ts = timestamp_micros(&row.event_ts);
            let created = row.created_ts.as_ref().map(timestamp_micros);
            for (feature, value) in &row.features {
                let (text, num) = text_and_num(value);
                let bytes = value.encode_to_vec();
                match slot.get(&(row.entity_key.as_slice(), feature.as_str())) {
                    // An older write of a cell already in the batch changes nothing.
                    Some(&j) if cells.event_ts[j] > ts => {}
                    Some(&j) => {
                        cells.values[j] = bytes;
                        cells.texts[j] = text;
                        cells.nums[j] = num;
                        cells.event_ts[j] = ts;
                        cells.created_ts[j] = created;
                        cells.source[j] = i;
                    }
                    None => {
                        slot.insert((row.entity_key.as_slice(), feature.as_str()), cells.len());
                        cells.push(&row.entity_key, feature, bytes, (text, num), ts, created, i);
                    }
                }
            }
        }
        cells
    }

    fn from_distinct_rows(rows: &[WriteRow]) -> Self {
        let n: usize = rows.iter().map(|r| r.features.len()).sum();
        let mut cells = Cells {
            keys: Vec::with_capacity(n),
            features: Vec::with_capacity(n),
            values: Vec::with_capacity(n),
            texts: Vec::with_capacity(n),
            nums: Vec::with_capacity(n),
            event_ts: Vec::with_capacity(n),
            created_ts: Vec::with_capacity(n),
            source: Vec::with_capacity(n),
            distinct_keys: true,
        };
        for (i, row) in rows.iter().enumerate() {
            let ts = timestamp_micros(&row.event_ts);
            let created = row.created_ts.as_ref().map(timestamp_micros);
            for (feature, value) in &row.features {
                let (bytes, text_num) = (value.encode_to_vec(), text_and_num(value));
                cells.push(&row.entity_key, feature, bytes, text_num, ts, created, i);
            }
        }
        cells
    }

    /// Appends one cell: `value` encoded, with its text and numeric forms.
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        key: &[u8],
        feature: &str,
        value: Vec<u8>,
        (text, num): (Option<String>, Option<f64>),
        event_ts: i64,
        created_ts: Option<i64>,
        source: usize,
    ) {
        self.keys.push(key.to_vec());
        self.features.push(feature.to_string());
        self.values.push(value);
        self.texts.push(text);
        self.nums.push(num);
        self.event_ts.push(event_ts);
        self.created_ts.push(created_ts);
        self.source.push(source);
    }

    fn len(&self) -> usize {
        self.keys.len()
    }
}

/// The bulk upsert of a batch: the arrays of [`Cells`] unnested, Feast's `ON CONFLICT ... DO
/// UPDATE SET col = EXCLUDED.col`, guarded so a stored newer row stays.
///
/// The statement returns the key and feature of each cell written, or with `keys_only` (a
/// batch whose rows all have distinct keys) just the key.
fn upsert_sql(table: &str, value_num: bool, keys_only: bool) -> String {
    let quoted = quote_id(table);
    let (num_col, num_val, num_set) = if value_num {
        ("value_num, ", "vn, ", "value_num = EXCLUDED.value_num, ")
    } else {
        ("", "", "")
    };
    format!(
        "INSERT INTO {quoted} (entity_key, feature_name, value, value_text, {num_col}event_ts, \
         created_ts) \
         SELECT k, f, v, vt, {num_val}\
         TIMESTAMPTZ '1970-01-01 00:00:00+00' + e * INTERVAL '1 microsecond', \
         TIMESTAMPTZ '1970-01-01 00:00:00+00' + c * INTERVAL '1 microsecond' \
         FROM UNNEST($1::bytea[], $2::text[], $3::bytea[], $4::text[], $5::float8[], \
         $6::int8[], $7::int8[]) AS u(k, f, v, vt, vn, e, c) \
         ON CONFLICT (entity_key, feature_name) DO UPDATE SET value = EXCLUDED.value, \
         value_text = EXCLUDED.value_text, {num_set}vector_value = NULL, \
         event_ts = EXCLUDED.event_ts, created_ts = EXCLUDED.created_ts \
         WHERE {quoted}.event_ts IS NULL OR {quoted}.event_ts <= EXCLUDED.event_ts \
         RETURNING entity_key{}",
        if keys_only { "" } else { ", feature_name" }
    )
}

/// Rows per upsert statement: bounds one statement's parameter arrays.
const CELLS_PER_UPSERT: usize = 20_000;

#[tonic::async_trait]
impl OnlineStore for PostgresOnlineStore {
    /// Feast's `SELECT ... WHERE entity_key = ANY($1) [AND feature_name = ANY($2)]` over the
    /// distinct keys. An entity with none of the requested features stored is NOT_FOUND (as
    /// Feast: the filter is in the statement). A table that does not exist is
    /// [`OnlineStoreError::NoSuchTable`] (Feast raises too).
    async fn online_read(
        &self,
        table: &TableRef,
        entity_keys: &[Vec<u8>],
        features: &[String],
    ) -> Result<Vec<Option<FeatureRow>>, OnlineStoreError> {
        let plan = ReadPlan::new(&ReadSpec {
            table,
            entity_keys,
            features,
            entity_fields: None,
        });
        read_one(&self.pool, &self.target, &plan).await
    }

    /// Feast 0.67's batched read: with ≥ 2 views and `max(entity keys) × views ≤
    /// max_batched_result_rows`, one `UNION ALL` statement (`SELECT <i> AS fv_tag, ...` per
    /// view); otherwise one statement per view, run concurrently on the pool.
    async fn online_read_many(
        &self,
        reads: &[ReadSpec<'_>],
    ) -> Result<Vec<Vec<Option<FeatureRow>>>, OnlineStoreError> {
        let plans: Vec<ReadPlan<'_>> = reads.iter().map(ReadPlan::new).collect();
        // Views without keys have nothing to read (and an empty branch nothing to add).
        let active: Vec<usize> = (0..plans.len())
            .filter(|&i| !plans[i].distinct.is_empty())
            .collect();
        if !self.should_batch(reads) || active.len() < 2 {
            let mut out: Vec<Vec<Option<FeatureRow>>> = Vec::with_capacity(plans.len());
            if active.len() < 2 {
                for plan in &plans {
                    out.push(read_one(&self.pool, &self.target, plan).await?);
                }
                return Ok(out);
            }
            // Concurrently: the tasks own copies of their keys and features.
            let mut tasks = tokio::task::JoinSet::new();
            for (i, spec) in reads.iter().enumerate() {
                let pool = self.pool.clone();
                let target = self.target.clone();
                let table = spec.table.clone();
                let keys = spec.entity_keys.to_vec();
                let features = spec.features.to_vec();
                tasks.spawn(async move {
                    let plan = ReadPlan::new(&ReadSpec {
                        table: &table,
                        entity_keys: &keys,
                        features: &features,
                        entity_fields: None,
                    });
                    (i, read_one(&pool, &target, &plan).await)
                });
            }
            let mut results: Vec<Option<Vec<Option<FeatureRow>>>> = vec![None; plans.len()];
            while let Some(joined) = tasks.join_next().await {
                let (i, result) = joined.map_err(|e| {
                    OnlineStoreError::Unavailable(format!("postgres {}: {e}", self.target))
                })?;
                results[i] = Some(result?);
            }
            return Ok(results.into_iter().map(Option::unwrap_or_default).collect());
        }

        let mut branches = Vec::with_capacity(active.len());
        let mut next_param = 1;
        for (tag, &i) in active.iter().enumerate() {
            branches.push(plans[i].select(Some(tag), next_param));
            next_param += plans[i].n_params();
        }
        let sql = branches.join(" UNION ALL ");
        let mut query = sqlx::query(&sql);
        for &i in &active {
            query = plans[i].bind(query);
        }
        let rows = query.fetch_all(&self.pool).await.map_err(|e| {
            let tables: Vec<&str> = active.iter().map(|&i| plans[i].table.as_str()).collect();
            self.err(&tables.join(", "), e)
        })?;
        let indexes: Vec<HashMap<&[u8], usize>> = active
            .iter()
            .map(|&i| {
                plans[i]
                    .distinct
                    .iter()
                    .enumerate()
                    .map(|(j, k)| (*k, j))
                    .collect()
            })
            .collect();
        let mut found: Vec<Vec<Option<Found>>> = active
            .iter()
            .map(|&i| (0..plans[i].distinct.len()).map(|_| None).collect())
            .collect();
        for row in &rows {
            let tag: i32 = row.try_get(0).map_err(|e| self.err("fv_tag", e))?;
            let Some(tag) = usize::try_from(tag).ok().filter(|&t| t < active.len()) else {
                return Err(OnlineStoreError::Invalid(format!(
                    "postgres {}: batched read returned an unknown fv_tag {tag}",
                    self.target
                )));
            };
            collect_row(
                &self.target,
                &plans[active[tag]],
                &indexes[tag],
                &mut found[tag],
                row,
                1,
            )?;
        }
        let mut found = found.into_iter();
        let mut out = Vec::with_capacity(plans.len());
        for plan in &plans {
            if plan.distinct.is_empty() {
                out.push(Vec::new());
            } else {
                out.push(assemble(plan, found.next().unwrap_or_default())?);
            }
        }
        Ok(out)
    }

    /// One transaction of bulk upserts ([`upsert_sql`]); returns how many of `rows` had at
    /// least one feature actually written.
    async fn online_write_batch(
        &self,
        table: &TableRef,
        rows: &[WriteRow],
    ) -> Result<usize, OnlineStoreError> {
        let name = table.table_name();
        let Some(value_num) = self.value_num_column(&name).await? else {
            return Err(OnlineStoreError::NoSuchTable(name));
        };
        let cells = Cells::from_rows(rows);
        if cells.len() == 0 {
            return Ok(0);
        }
        let keys_only = cells.distinct_keys;
        let sql = upsert_sql(&name, value_num, keys_only);
        // Where a returned cell comes from: by key alone when keys are distinct.
        let row_of_key: HashMap<&[u8], usize> = if keys_only {
            rows.iter()
                .enumerate()
                .map(|(i, r)| (r.entity_key.as_slice(), i))
                .collect()
        } else {
            HashMap::new()
        };
        let source: HashMap<(&[u8], &str), usize> = if keys_only {
            HashMap::new()
        } else {
            (0..cells.len())
                .map(|i| {
                    (
                        (cells.keys[i].as_slice(), cells.features[i].as_str()),
                        cells.source[i],
                    )
                })
                .collect()
        };
        let mut written: HashSet<usize> = HashSet::new();
        let mut tx = self.pool.begin().await.map_err(|e| self.err(&name, e))?;
        let mut start = 0;
        while start < cells.len() {
            let end = (start + CELLS_PER_UPSERT).min(cells.len());
            let r = start..end;
            let returned = sqlx::query(&sql)
                .bind(&cells.keys[r.clone()])
                .bind(&cells.features[r.clone()])
                .bind(&cells.values[r.clone()])
                .bind(&cells.texts[r.clone()])
                .bind(&cells.nums[r.clone()])
                .bind(&cells.event_ts[r.clone()])
                .bind(&cells.created_ts[r])
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| {
                    // Dropped behind our back: forget what we knew of its columns.
                    self.cache().remove(&name);
                    self.err(&name, e)
                })?;
            for row in &returned {
                let key: &[u8] = row.try_get(0).map_err(|e| self.err(&name, e))?;
                let source = if keys_only {
                    row_of_key.get(key)
                } else {
                    let feature: &str = row.try_get(1).map_err(|e| self.err(&name, e))?;
                    source.get(&(key, feature))
                };
                if let Some(&i) = source {
                    written.insert(i);
                }
            }
            start = end;
        }
        tx.commit().await.map_err(|e| self.err(&name, e))?;
        Ok(written.len())
    }

    /// Feast's `update`: the schema (`CREATE SCHEMA IF NOT EXISTS ... AUTHORIZATION user`
    /// when missing), then `DROP TABLE`/`DROP INDEX IF EXISTS` for deleted views and Feast's
    /// DDL for kept ones, all in one transaction.
    async fn update(
        &self,
        _project: &str,
        tables_to_keep: &[TableRef],
        tables_to_delete: &[TableRef],
    ) -> Result<(), OnlineStoreError> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err("update", e))?;
        let exists: Option<String> = sqlx::query_scalar(
            "SELECT schema_name::text FROM information_schema.schemata WHERE schema_name = $1",
        )
        .bind(&self.schema)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| self.err("update", e))?;
        if exists.is_none() {
            sqlx::query(&format!(
                "CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}",
                quote_id(&self.schema),
                quote_id(&self.user)
            ))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(&self.schema, e))?;
        }
        self.drop_tables(&mut tx, tables_to_delete).await?;
        for table in tables_to_keep {
            let name = table.table_name();
            let mut statements = vec![
                create_table_sql(&name, self.openai_compatible, self.vector_enabled),
                format!(
                    "CREATE INDEX IF NOT EXISTS {} ON {} (entity_key)",
                    quote_id(&format!("{name}_ek")),
                    quote_id(&name)
                ),
            ];
            if self.openai_compatible {
                statements.push(format!(
                    "ALTER TABLE {} ADD COLUMN IF NOT EXISTS value_num DOUBLE PRECISION NULL",
                    quote_id(&name)
                ));
            }
            if table.has_string_features {
                statements.push(format!(
                    "CREATE INDEX IF NOT EXISTS {} ON {} USING GIN \
                     (to_tsvector('english', value_text))",
                    quote_id(&format!("{name}_fts_idx")),
                    quote_id(&name)
                ));
            }
            for sql in &statements {
                sqlx::query(sql)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(&name, e))?;
            }
            self.cache().remove(&name);
        }
        tx.commit().await.map_err(|e| self.err("update", e))
    }

    /// Drops the tables (and their `_ek` indexes), as Feast's `teardown`.
    async fn teardown(&self, _project: &str, tables: &[TableRef]) -> Result<(), OnlineStoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| self.err("teardown", e))?;
        self.drop_tables(&mut tx, tables).await?;
        tx.commit().await.map_err(|e| self.err("teardown", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(db_schema: &str, user: &str) -> PostgresOnlineStoreConfig {
        serde_json::from_value(serde_json::json!({
            "host": "h", "database": "d", "user": user, "password": "",
            "db_schema": db_schema,
        }))
        .unwrap()
    }

    #[test]
    fn schema_and_search_path_follow_feast() {
        assert_eq!(schema_name(&config("feast", "u")), "feast");
        assert_eq!(schema_name(&config("", "u")), "u");
        assert_eq!(search_path(&config("public", "u")), "public");
        assert_eq!(search_path(&config("feast", "u")), "feast,public");
        assert_eq!(search_path(&config("", "alice")), "alice,public");
    }

    #[test]
    fn timestamps_round_to_microseconds_like_python_datetimes() {
        let ts = |seconds, nanos| Timestamp { seconds, nanos };
        assert_eq!(
            timestamp_micros(&ts(1_714_521_600, 123_456_789)),
            1_714_521_600_123_456
        );
        assert_eq!(timestamp_micros(&ts(-1, 500_000_000)), -500_000);
        assert_eq!(
            timestamp_from_micros(1_714_521_600_123_456),
            ts(1_714_521_600, 123_456_000)
        );
        assert_eq!(timestamp_from_micros(-500_000), ts(-1, 500_000_000));
    }

    #[test]
    fn ddl_is_feasts() {
        assert_eq!(
            create_table_sql("p_v", false, false),
            "CREATE TABLE IF NOT EXISTS \"p_v\" (entity_key BYTEA, feature_name TEXT, \
             value BYTEA, value_text TEXT NULL, vector_value BYTEA NULL, event_ts TIMESTAMPTZ, \
             created_ts TIMESTAMPTZ, PRIMARY KEY(entity_key, feature_name))"
        );
        let with = create_table_sql("p_v", true, true);
        assert!(with.contains("value_num DOUBLE PRECISION NULL, vector_value vector NULL"));
    }

    #[test]
    fn batching_rule_is_feasts() {
        assert!(!batches(1, 1, 2048)); // one view: nothing to save
        assert!(batches(2, 1024, 2048));
        assert!(!batches(2, 1025, 2048));
        assert!(!batches(3, 1, 0));
        assert!(!batches(2, usize::MAX, 2048));
    }

    #[test]
    fn names_the_missing_table() {
        assert_eq!(
            undefined_table_name("relation \"proj_view\" does not exist").as_deref(),
            Some("proj_view")
        );
        assert_eq!(undefined_table_name("nothing"), None);
    }

    #[test]
    fn batch_dedup_keeps_the_newest_write_per_cell() {
        let row = |key: &[u8], secs, v: i64| WriteRow {
            entity_key: key.to_vec(),
            features: vec![(
                "f".into(),
                Value {
                    val: Some(feast_proto::types::value::Val::Int64Val(v)),
                },
            )],
            event_ts: Timestamp {
                seconds: secs,
                nanos: 0,
            },
            created_ts: None,
        };
        let cells = Cells::from_rows(&[row(b"a", 10, 1), row(b"a", 5, 2), row(b"a", 10, 3)]);
        assert_eq!(cells.len(), 1);
        assert_eq!(cells.source, vec![2]); // equal times: the later write
        assert_eq!(cells.texts, vec![Some("3".to_owned())]);
    }
}
