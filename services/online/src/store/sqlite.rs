//! Feast's SQLite online store (`online_store.type: sqlite`), on the very file Feast uses
//! (PROTOCOLS.md §6.3, Feast 0.67 `infra/online_stores/sqlite.py`).
//!
//! Layout, shared with Feast:
//! - one table per feature view, `"{project}_{view}"`, one row per (entity key, feature):
//!   `entity_key BLOB` (the serialized entity key), `feature_name TEXT`, `value BLOB` (a
//!   serialized `feast.types.Value`), `value_text TEXT` (the value as Python's `str()` for
//!   string/int/float/bool values, else NULL), `vector_value BLOB`, `event_ts timestamp`,
//!   `created_ts timestamp`, primary key `(entity_key, feature_name)`, index `"{table}_ek"`
//!   on `entity_key`; tables made with Feast's `enable_openai_compatible_store` also have
//!   `value_num REAL`, which is filled when present;
//! - timestamps are **integer epoch seconds**, sub-seconds truncated: Feast 0.67 registers an
//!   adapter storing `int(naive_utc.timestamp())`. Python evaluates that naive datetime in the
//!   *host's* time zone, so Feast only stores true epoch seconds on UTC hosts; feast-rs always
//!   stores true epoch seconds (the same numbers on a UTC host).
//!
//! Differences from Feast, on purpose:
//! - **newer wins**: a write older than the entity's stored event timestamp is skipped.
//!   Feast's SQLite store has no such check (the last write wins, whatever its timestamp).
//! - reading a table that does not exist returns NOT_FOUND for every entity instead of
//!   failing (the view was applied but never written/materialized here).
//! - [`OnlineStore::teardown`] drops the given tables. Feast's store-level teardown deletes
//!   the whole database file, with every other project's tables in it.
//!
//! The connection keeps the file's journal mode (Feast's default rollback journal), so the
//! file stays exactly as Feast expects it; writes take the write lock up front
//! (`BEGIN IMMEDIATE`) and wait up to the busy timeout for other writers, Feast included.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use feast_proto::types::{Value, value::Val};
use prost::Message;
use prost_types::Timestamp;
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use super::{FeatureRow, OnlineStore, OnlineStoreError, TableRef, WriteRow};

/// Entity keys per `SELECT ... IN (...)`, well under SQLite's default limit of 32766 bound
/// variables (SQLITE_MAX_VARIABLE_NUMBER since 3.32).
const KEYS_PER_SELECT: usize = 8192;

/// Connection settings of a [`SqliteOnlineStore`].
#[derive(Debug, Clone)]
pub struct SqliteOnlineStoreOptions {
    /// Pool size. Readers run in parallel; writers queue on SQLite's single write lock.
    pub max_connections: u32,
    /// How long a statement waits for a lock held by another connection or process.
    pub busy_timeout: Duration,
}

impl Default for SqliteOnlineStoreOptions {
    fn default() -> Self {
        SqliteOnlineStoreOptions {
            max_connections: 4,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// Feast's SQLite online store. See the module documentation for the layout.
pub struct SqliteOnlineStore {
    pool: SqlitePool,
    path: PathBuf,
}

impl SqliteOnlineStore {
    /// Opens (creating if needed, with its parent directory, as Feast does) the database at
    /// `path` — Feast's `online_store.path`, resolved against the repository directory.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, OnlineStoreError> {
        Self::open_with(path, SqliteOnlineStoreOptions::default()).await
    }

    pub async fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOnlineStoreOptions,
    ) -> Result<Self, OnlineStoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                OnlineStoreError::Unavailable(format!("creating {}: {e}", parent.display()))
            })?;
        }
        let connect = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .busy_timeout(options.busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.busy_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| {
                OnlineStoreError::Unavailable(format!("opening {}: {e}", path.display()))
            })?;
        Ok(SqliteOnlineStore { pool, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection pool (tests and tools).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes every connection; further calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Quotes an SQLite identifier as Feast's `_quote_id` does.
fn quote_id(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// The `CREATE TABLE` of Feast's `SqliteOnlineStore.update`, verbatim (double spaces included;
/// SQLite keeps the text in `sqlite_master.sql`). `feast apply` creates the same structure
/// through another path (the `SqliteTable` infra object: unquoted name, multi-line text).
fn create_table_sql(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (entity_key BLOB, feature_name TEXT, value BLOB, \
         value_text TEXT,  vector_value BLOB, event_ts timestamp, created_ts timestamp,  \
         PRIMARY KEY(entity_key, feature_name))",
        quote_id(table)
    )
}

fn create_index_sql(table: &str) -> String {
    format!(
        "CREATE INDEX IF NOT EXISTS {} ON {} (entity_key);",
        quote_id(&format!("{table}_ek")),
        quote_id(table)
    )
}

fn is_no_such_table(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.message().starts_with("no such table"))
}

/// Classifies an sqlx error: undecodable rows are bad data, everything else (I/O, locks,
/// pool, a broken file) means the store is not usable right now.
fn db_error(context: &str, e: sqlx::Error) -> OnlineStoreError {
    match e {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => OnlineStoreError::Invalid(format!("{context}: {e}")),
        _ => OnlineStoreError::Unavailable(format!("{context}: {e}")),
    }
}

/// The integer Feast stores for a timestamp: `int(datetime.timestamp())`, i.e. epoch seconds
/// truncated toward zero.
pub fn stored_seconds(ts: &Timestamp) -> i64 {
    let mut ts = *ts;
    ts.normalize();
    if ts.seconds < 0 && ts.nanos > 0 {
        ts.seconds + 1
    } else {
        ts.seconds
    }
}

/// Reads a stored timestamp (as text, whatever its storage class): integer epoch seconds as
/// Feast 0.67 writes them, a real (truncated), or an ISO-8601 datetime (Feast's older ISO
/// adapter; naive means UTC).
fn parse_stored_ts(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(i) = text.parse::<i64>() {
        return Some(i);
    }
    if let Ok(f) = text.parse::<f64>() {
        return f.is_finite().then_some(f.trunc() as i64);
    }
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(dt.timestamp());
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
        .map(|dt| dt.and_utc().timestamp())
}

fn decode_ts(table: &str, text: Option<&str>) -> Result<Option<i64>, OnlineStoreError> {
    match text {
        None => Ok(None),
        Some(t) => parse_stored_ts(t).map(Some).ok_or_else(|| {
            OnlineStoreError::Invalid(format!("table {table:?}: unreadable event_ts {t:?}"))
        }),
    }
}

/// Feast's `value_text` and `value_num` for a value (`helpers.extract_text_and_num`): the
/// Python `str()` of string, int, float and bool values; the number for numeric and bool.
pub(crate) fn text_and_num(v: &Value) -> (Option<String>, Option<f64>) {
    use feast_core::value::python_float_repr;
    match &v.val {
        Some(Val::StringVal(s)) => (Some(s.clone()), None),
        Some(Val::Int64Val(i)) => (Some(i.to_string()), Some(*i as f64)),
        Some(Val::Int32Val(i)) => (Some(i.to_string()), Some(f64::from(*i))),
        Some(Val::DoubleVal(d)) => (Some(python_float_repr(*d)), Some(*d)),
        Some(Val::FloatVal(f)) => {
            let d = f64::from(*f);
            (Some(python_float_repr(d)), Some(d))
        }
        Some(Val::BoolVal(b)) => (
            Some(if *b { "True" } else { "False" }.to_string()),
            Some(if *b { 1.0 } else { 0.0 }),
        ),
        _ => (None, None),
    }
}

/// What one entity's rows gave while scanning.
#[derive(Default)]
struct Found {
    /// The `event_ts` of the entity's last row in the scan (Feast's rule, see `online_read`).
    ts: Option<i64>,
    /// Raw values of the requested features.
    values: HashMap<String, Vec<u8>>,
}

/// The column names of `table` (empty when it does not exist).
async fn table_columns(
    conn: &mut sqlx::SqliteConnection,
    table: &str,
) -> Result<HashSet<String>, OnlineStoreError> {
    let rows = sqlx::query(&format!("PRAGMA table_info({})", quote_id(table)))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| db_error(table, e))?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(1).map_err(|e| db_error(table, e)))
        .collect()
}

#[tonic::async_trait]
impl OnlineStore for SqliteOnlineStore {
    /// One `SELECT entity_key, feature_name, value, event_ts FROM t WHERE entity_key IN (...)
    /// ORDER BY entity_key` per 8192 distinct keys — Feast's statement, so SQLite picks the
    /// same plan and rows come back in the same order. Like Feast, an entity's timestamp is
    /// the `event_ts` of its *last* row in that order (whichever feature that is; the
    /// requested features do not narrow it), which only matters when an entity's features
    /// were written at different times.
    async fn online_read(
        &self,
        table: &TableRef,
        entity_keys: &[Vec<u8>],
        features: &[String],
    ) -> Result<Vec<Option<FeatureRow>>, OnlineStoreError> {
        let name = table.table_name();
        let mut slot_of: HashMap<&[u8], usize> = HashMap::with_capacity(entity_keys.len());
        let mut unique: Vec<&[u8]> = Vec::with_capacity(entity_keys.len());
        for k in entity_keys {
            slot_of.entry(k.as_slice()).or_insert_with(|| {
                unique.push(k.as_slice());
                unique.len() - 1
            });
        }
        let wanted: HashSet<&str> = features.iter().map(String::as_str).collect();
        let mut found: Vec<Option<Found>> = (0..unique.len()).map(|_| None).collect();

        if !unique.is_empty() {
            // One read transaction, so every chunk sees the same snapshot.
            let mut conn = self.pool.begin().await.map_err(|e| db_error(&name, e))?;
            for chunk in unique.chunks(KEYS_PER_SELECT) {
                let sql = format!(
                    "SELECT entity_key, feature_name, value, CAST(event_ts AS TEXT) FROM {} \
                     WHERE entity_key IN ({}) ORDER BY entity_key",
                    quote_id(&name),
                    vec!["?"; chunk.len()].join(",")
                );
                let mut query = sqlx::query(&sql);
                for k in chunk {
                    query = query.bind(*k);
                }
                let rows = match query.fetch_all(&mut *conn).await {
                    Ok(rows) => rows,
                    Err(e) if is_no_such_table(&e) => return Ok(vec![None; entity_keys.len()]),
                    Err(e) => return Err(db_error(&name, e)),
                };
                for row in &rows {
                    let key: &[u8] = row.try_get(0).map_err(|e| db_error(&name, e))?;
                    let Some(&slot) = slot_of.get(key) else {
                        continue;
                    };
                    let feature: String = row.try_get(1).map_err(|e| db_error(&name, e))?;
                    let ts: Option<&str> = row.try_get(3).map_err(|e| db_error(&name, e))?;
                    let entry = found[slot].get_or_insert_with(Found::default);
                    entry.ts = decode_ts(&name, ts)?;
                    if wanted.contains(feature.as_str()) {
                        let value: Vec<u8> = row.try_get(2).map_err(|e| db_error(&name, e))?;
                        entry.values.insert(feature, value);
                    }
                }
            }
        }

        let mut decoded: Vec<Option<FeatureRow>> = Vec::with_capacity(found.len());
        for f in found {
            decoded.push(match f {
                None => None,
                Some(f) => {
                    let mut values = Vec::with_capacity(features.len());
                    for feature in features {
                        values.push(match f.values.get(feature) {
                            None => None,
                            Some(bytes) => Some(Value::decode(bytes.as_slice()).map_err(|e| {
                                OnlineStoreError::Invalid(format!(
                                    "table {name:?}, feature {feature:?}: stored value is not a \
                                     feast.types.Value: {e}"
                                ))
                            })?),
                        });
                    }
                    Some(FeatureRow {
                        event_ts: Timestamp {
                            seconds: f.ts.unwrap_or(0),
                            nanos: 0,
                        },
                        values,
                    })
                }
            });
        }
        Ok(entity_keys
            .iter()
            .map(|k| decoded[slot_of[k.as_slice()]].clone())
            .collect())
    }

    /// `INSERT ... ON CONFLICT(entity_key, feature_name) DO UPDATE` per feature, as Feast,
    /// after checking the entity's newest stored `event_ts` (feast-rs's newer-wins rule).
    async fn online_write_batch(
        &self,
        table: &TableRef,
        rows: &[WriteRow],
    ) -> Result<usize, OnlineStoreError> {
        let name = table.table_name();
        let quoted = quote_id(&name);
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error(&name, e))?;
        let columns = table_columns(&mut tx, &name).await?;
        if columns.is_empty() {
            return Err(OnlineStoreError::NoSuchTable(name));
        }
        let with_num = columns.contains("value_num");
        let mut cols = vec!["entity_key", "feature_name", "value", "value_text"];
        if with_num {
            cols.push("value_num");
        }
        cols.extend(["event_ts", "created_ts"]);
        let upsert = format!(
            "INSERT INTO {quoted} ({}) VALUES ({}) ON CONFLICT(entity_key, feature_name) \
             DO UPDATE SET {}",
            cols.join(", "),
            vec!["?"; cols.len()].join(", "),
            cols[2..]
                .iter()
                .map(|c| format!("{c} = excluded.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let newest_sql =
            format!("SELECT CAST(event_ts AS TEXT) FROM {quoted} WHERE entity_key = ?");

        let mut written = 0;
        for row in rows {
            if row.features.is_empty() {
                continue;
            }
            let event_ts = stored_seconds(&row.event_ts);
            let stored: Vec<Option<String>> = sqlx::query_scalar(&newest_sql)
                .bind(row.entity_key.as_slice())
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| db_error(&name, e))?;
            let mut newest: Option<i64> = None;
            for ts in &stored {
                if let Some(ts) = decode_ts(&name, ts.as_deref())? {
                    newest = Some(newest.map_or(ts, |n| n.max(ts)));
                }
            }
            if newest.is_some_and(|n| event_ts < n) {
                continue;
            }
            let created_ts = row.created_ts.as_ref().map(stored_seconds);
            for (feature, value) in &row.features {
                let (text, num) = text_and_num(value);
                let mut query = sqlx::query(&upsert)
                    .bind(row.entity_key.as_slice())
                    .bind(feature.as_str())
                    .bind(value.encode_to_vec())
                    .bind(text);
                if with_num {
                    query = query.bind(num);
                }
                query
                    .bind(event_ts)
                    .bind(created_ts)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error(&name, e))?;
            }
            written += 1;
        }
        tx.commit().await.map_err(|e| db_error(&name, e))?;
        Ok(written)
    }

    /// Feast's DDL for each kept table (`CREATE TABLE IF NOT EXISTS`, the `_ek` index, and
    /// `value_text` added to tables from Feast versions without it), `DROP TABLE IF EXISTS`
    /// for deleted ones, all in one transaction.
    async fn update(
        &self,
        _project: &str,
        tables_to_keep: &[TableRef],
        tables_to_delete: &[TableRef],
    ) -> Result<(), OnlineStoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error("update", e))?;
        for table in tables_to_keep {
            let name = table.table_name();
            for sql in [create_table_sql(&name), create_index_sql(&name)] {
                sqlx::query(&sql)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error(&name, e))?;
            }
            if !table_columns(&mut tx, &name).await?.contains("value_text") {
                sqlx::query(&format!(
                    "ALTER TABLE {} ADD COLUMN \"value_text\" TEXT",
                    quote_id(&name)
                ))
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(&name, e))?;
            }
        }
        for table in tables_to_delete {
            drop_table(&mut tx, table).await?;
        }
        tx.commit().await.map_err(|e| db_error("update", e))
    }

    async fn teardown(&self, _project: &str, tables: &[TableRef]) -> Result<(), OnlineStoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error("teardown", e))?;
        for table in tables {
            drop_table(&mut tx, table).await?;
        }
        tx.commit().await.map_err(|e| db_error("teardown", e))
    }
}

async fn drop_table(
    conn: &mut sqlx::SqliteConnection,
    table: &TableRef,
) -> Result<(), OnlineStoreError> {
    let name = table.table_name();
    sqlx::query(&format!("DROP TABLE IF EXISTS {}", quote_id(&name)))
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error(&name, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_seconds_truncate_toward_zero_like_python_int() {
        let ts = |seconds, nanos| Timestamp { seconds, nanos };
        assert_eq!(
            stored_seconds(&ts(1_714_521_600, 999_999_999)),
            1_714_521_600
        );
        assert_eq!(stored_seconds(&ts(-2, 500_000_000)), -1); // -1.5 -> -1
        assert_eq!(stored_seconds(&ts(-2, 0)), -2);
        assert_eq!(stored_seconds(&ts(10, -500_000_000)), 9); // normalized 9.5
    }

    #[test]
    fn parses_every_stored_timestamp_form() {
        assert_eq!(parse_stored_ts("1714521600"), Some(1_714_521_600));
        assert_eq!(parse_stored_ts("1714521600.7"), Some(1_714_521_600));
        assert_eq!(parse_stored_ts("2024-05-01T00:00:00"), Some(1_714_521_600));
        assert_eq!(
            parse_stored_ts("2024-05-01 00:00:00.25"),
            Some(1_714_521_600)
        );
        assert_eq!(
            parse_stored_ts("2024-05-01T02:00:00+02:00"),
            Some(1_714_521_600)
        );
        assert_eq!(parse_stored_ts("yesterday"), None);
    }

    #[test]
    fn value_text_is_pythons_str() {
        let v = |val| Value { val: Some(val) };
        assert_eq!(
            text_and_num(&v(Val::FloatVal(0.5))),
            (Some("0.5".into()), Some(0.5))
        );
        assert_eq!(
            text_and_num(&v(Val::FloatVal(0.1))).0.as_deref(),
            Some("0.10000000149011612")
        );
        assert_eq!(
            text_and_num(&v(Val::DoubleVal(1.0))).0.as_deref(),
            Some("1.0")
        );
        assert_eq!(
            text_and_num(&v(Val::DoubleVal(1e16))).0.as_deref(),
            Some("1e+16")
        );
        assert_eq!(
            text_and_num(&v(Val::Int64Val(-7))),
            (Some("-7".into()), Some(-7.0))
        );
        assert_eq!(
            text_and_num(&v(Val::BoolVal(false))),
            (Some("False".into()), Some(0.0))
        );
        assert_eq!(
            text_and_num(&v(Val::StringVal("a".into()))),
            (Some("a".into()), None)
        );
        assert_eq!(text_and_num(&v(Val::BytesVal(b"x".to_vec()))), (None, None));
        assert_eq!(text_and_num(&Value::default()), (None, None));
    }

    #[test]
    fn quotes_identifiers_like_feast() {
        assert_eq!(quote_id("p_v"), "\"p_v\"");
        assert_eq!(quote_id("a\"b"), "\"a\"\"b\"");
    }
}
