//! The database side of the SQL store, written once and compiled for each backend
//! (PostgreSQL and SQLite) by the `backend!` macro, so every query runs on sqlx's concrete
//! driver types (no `Any` driver and its type mapping).
//!
//! Consistency: a load reads every table in one transaction (`REPEATABLE READ` on
//! PostgreSQL; SQLite holds its shared lock for the whole read). A commit starts by bumping
//! the single row of `feast_rs_registry_version`, which serializes feast-rs writers (a row
//! lock on PostgreSQL, inside a `REPEATABLE READ` transaction retried on serialization
//! failures; `BEGIN IMMEDIATE` on SQLite), then writes each changed row with a
//! compare-and-set on the stored bytes, so a row another writer (feast-rs or Feast itself)
//! changed since it was loaded makes the whole transaction roll back as a conflict.

use feast_core::config::SchemaMode;
use prost::Message;
use prost_types::Timestamp;
use sqlx::Row;

use super::rows::{
    HISTORY_DELETE, HISTORY_INSERT, HISTORY_SELECT, HISTORY_UPDATE, META_BUMP, META_SELECT,
    META_UUID, Op, PROJECT_TABLES, Plan, RawDb, RawHistory, RawMeta, RawRow, Table,
};

/// Embedded schema migrations: (number, SQL) per backend. Each is idempotent on a database
/// Feast already created (`IF NOT EXISTS` with Feast's own column types).
pub(crate) const PG_MIGRATIONS: &[(i32, &str)] = &[(
    1,
    include_str!("../../migrations/postgres/0001_feast_registry.sql"),
)];
pub(crate) const SQLITE_MIGRATIONS: &[(i32, &str)] = &[(
    1,
    include_str!("../../migrations/sqlite/0001_feast_registry.sql"),
)];

/// feast-rs's own table (the only one it adds to Feast's schema). See the `sql` module.
const BOOTSTRAP: &str = "CREATE TABLE IF NOT EXISTS feast_rs_registry_version (
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    schema_version INTEGER NOT NULL,
    version BIGINT NOT NULL,
    version_id VARCHAR(36) NOT NULL,
    committed_seconds BIGINT NOT NULL,
    committed_nanos INTEGER NOT NULL
);
INSERT INTO feast_rs_registry_version
    (id, schema_version, version, version_id, committed_seconds, committed_nanos)
    VALUES (1, 0, 0, '', 0, 0) ON CONFLICT (id) DO NOTHING;";

/// Feast's tables (what `schema_mode: verify` checks).
pub(crate) const FEAST_TABLES: [&str; 14] = [
    "projects",
    "entities",
    "data_sources",
    "feature_views",
    "stream_feature_views",
    "on_demand_feature_views",
    "label_views",
    "feature_services",
    "saved_datasets",
    "validation_references",
    "managed_infra",
    "permissions",
    "feature_view_version_history",
    "feast_metadata",
];

/// feast-rs's materialization leases (see `super::Leases`), created on first use by a
/// materializer, not by the registry.
const LEASES_DDL: &str = "CREATE TABLE IF NOT EXISTS feast_rs_materialization_leases (
    project VARCHAR(255) NOT NULL,
    feature_view VARCHAR(255) NOT NULL,
    holder VARCHAR(255) NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (project, feature_view)
)";

/// Takes the lease of a view when it is free, expired, or already this holder's (then it
/// is extended); returns a row only when the caller holds it afterwards.
const LEASE_ACQUIRE: &str = "INSERT INTO feast_rs_materialization_leases \
    (project, feature_view, holder, expires_ms) VALUES ($1, $2, $3, $4) \
    ON CONFLICT (project, feature_view) DO UPDATE \
    SET holder = excluded.holder, expires_ms = excluded.expires_ms \
    WHERE feast_rs_materialization_leases.expires_ms < $5 \
       OR feast_rs_materialization_leases.holder = excluded.holder \
    RETURNING holder";

const LEASE_RELEASE: &str = "DELETE FROM feast_rs_materialization_leases \
    WHERE project = $1 AND feature_view = $2 AND holder = $3";

/// Who holds the lease of a view, if it has not expired.
const LEASE_HOLDER: &str = "SELECT holder, expires_ms FROM feast_rs_materialization_leases \
    WHERE project = $1 AND feature_view = $2 AND expires_ms >= $3";

/// Key of the PostgreSQL advisory lock that serializes schema migrations of replicas
/// starting together (concurrent `CREATE TABLE IF NOT EXISTS` can fail on PostgreSQL).
const PG_MIGRATION_LOCK: i64 = 0x0fea_5700_5c4e_3a01;

/// The proto (or otherwise changing) column of a table, for the SQLite fingerprint.
fn change_columns(table: &str) -> (&'static str, &'static str) {
    match table {
        "feast_metadata" => ("last_updated_timestamp", "metadata_value"),
        "feature_view_version_history" => ("created_timestamp", "feature_view_proto"),
        "projects" => ("last_updated_timestamp", "project_proto"),
        _ => {
            let t = Table::OBJECTS
                .iter()
                .find(|t| t.name() == table)
                .expect("a Feast object table");
            ("last_updated_timestamp", t.proto_column())
        }
    }
}

/// One query returning feast-rs's commit counter and, per Feast table, numbers that change
/// when any writer changes the table: the row count plus, on PostgreSQL, the sum of the
/// rows' `xmin` (every insert or update writes a new row version), on SQLite the sums of
/// `last_updated_timestamp` and of the proto lengths (Feast stamps whole seconds, so a
/// same-second rewrite of equal length by Feast itself is not seen until the next change).
pub(crate) fn token_sql(pg: bool) -> String {
    let mut cols = vec!["(SELECT version FROM feast_rs_registry_version WHERE id = 1)".to_owned()];
    for table in FEAST_TABLES {
        cols.push(format!("(SELECT count(*) FROM {table})"));
        if pg {
            cols.push(format!(
                "(SELECT coalesce(sum(xmin::text::bigint), 0)::bigint FROM {table})"
            ));
        } else {
            let (ts, value) = change_columns(table);
            cols.push(format!(
                "(SELECT coalesce(sum({ts}), 0) + coalesce(sum(length({value})), 0) FROM {table})"
            ));
        }
    }
    format!("SELECT {}", cols.join(", "))
}

/// The opaque version token: the commit counter and a hash of the table fingerprint.
pub(crate) fn token(counter: i64, fingerprint: u64) -> String {
    format!("{counter}:{fingerprint:016x}")
}

fn fnv(values: impl IntoIterator<Item = i64>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in values {
        for b in v.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Why a commit transaction did not commit.
#[derive(Debug)]
pub(crate) enum CommitError {
    /// A row the commit changes was changed by another writer since it was loaded.
    Conflict(String),
    Sql(sqlx::Error),
}

impl From<sqlx::Error> for CommitError {
    fn from(e: sqlx::Error) -> Self {
        CommitError::Sql(e)
    }
}

/// Tokens before (as the base would have it) and after the commit's writes.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub before: String,
    pub after: String,
}

fn sql_state(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// PostgreSQL serialization failure or deadlock: the transaction can simply run again.
fn retryable(e: &sqlx::Error) -> bool {
    matches!(sql_state(e).as_deref(), Some("40001" | "40P01"))
}

/// A Feast `Project` row Feast's `_sync_feast_metadata_to_projects_table` would create
/// for a project known only from `feast_metadata` (created and updated "now").
fn synthesized_project(name: &str, now: Timestamp) -> Vec<u8> {
    feast_proto::core::Project {
        spec: Some(feast_proto::core::ProjectSpec {
            name: name.to_owned(),
            ..Default::default()
        }),
        meta: Some(feast_proto::core::ProjectMeta {
            created_timestamp: Some(now),
            last_updated_timestamp: Some(now),
        }),
    }
    .encode_to_vec()
}

macro_rules! backend {
    ($module:ident, $db:ty, $pg:expr, $migrations:expr) => {
        pub(crate) mod $module {
            use super::*;

            type Pool = sqlx::Pool<$db>;
            type Conn = <$db as sqlx::Database>::Connection;
            const PG: bool = $pg;

            async fn read_token(conn: &mut Conn, sql: &str) -> Result<(i64, u64), sqlx::Error> {
                let row = sqlx::query(sql).fetch_one(&mut *conn).await?;
                let counter: i64 = row.try_get(0)?;
                let mut values = Vec::with_capacity(row.len());
                for i in 1..row.len() {
                    values.push(row.try_get::<i64, _>(i)?);
                }
                Ok((counter, fnv(values)))
            }

            /// A transaction for DDL that replicas starting together must not run at once:
            /// under the migration advisory lock on PostgreSQL, `BEGIN IMMEDIATE` on SQLite.
            async fn begin_schema_change(
                pool: &Pool,
            ) -> Result<sqlx::Transaction<'static, $db>, sqlx::Error> {
                if PG {
                    let mut tx = pool.begin().await?;
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(PG_MIGRATION_LOCK)
                        .execute(&mut *tx)
                        .await?;
                    Ok(tx)
                } else {
                    pool.begin_with("BEGIN IMMEDIATE").await
                }
            }

            /// Creates the lease table if needed (serialized like migrations).
            pub(crate) async fn lease_table(pool: &Pool) -> Result<(), sqlx::Error> {
                let mut tx = begin_schema_change(pool).await?;
                sqlx::raw_sql(LEASES_DDL).execute(&mut *tx).await?;
                tx.commit().await
            }

            /// Whether `holder` holds the lease of `view` until `until_ms` after this call.
            pub(crate) async fn lease_acquire(
                pool: &Pool,
                project: &str,
                view: &str,
                holder: &str,
                now_ms: i64,
                until_ms: i64,
            ) -> Result<bool, sqlx::Error> {
                let row = sqlx::query(LEASE_ACQUIRE)
                    .bind(project)
                    .bind(view)
                    .bind(holder)
                    .bind(until_ms)
                    .bind(now_ms)
                    .fetch_optional(pool)
                    .await?;
                Ok(row.is_some())
            }

            pub(crate) async fn lease_release(
                pool: &Pool,
                project: &str,
                view: &str,
                holder: &str,
            ) -> Result<(), sqlx::Error> {
                sqlx::query(LEASE_RELEASE)
                    .bind(project)
                    .bind(view)
                    .bind(holder)
                    .execute(pool)
                    .await?;
                Ok(())
            }

            /// The holder of `view`'s lease and when it expires (ms), if it has not.
            pub(crate) async fn lease_holder(
                pool: &Pool,
                project: &str,
                view: &str,
                now_ms: i64,
            ) -> Result<Option<(String, i64)>, sqlx::Error> {
                let row = sqlx::query(LEASE_HOLDER)
                    .bind(project)
                    .bind(view)
                    .bind(now_ms)
                    .fetch_optional(pool)
                    .await?;
                row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
            }

            /// The current version token.
            pub(crate) async fn version(pool: &Pool, sql: &str) -> Result<String, sqlx::Error> {
                let mut conn = pool.acquire().await?;
                let (counter, fp) = read_token(&mut conn, sql).await?;
                Ok(token(counter, fp))
            }

            /// Creates or migrates the schema (and feast-rs's version row).
            pub(crate) async fn migrate(pool: &Pool, mode: SchemaMode) -> Result<(), String> {
                let run = async {
                    let mut tx = begin_schema_change(pool).await?;
                    sqlx::raw_sql(BOOTSTRAP).execute(&mut *tx).await?;
                    let current: i32 = sqlx::query_scalar(
                        "SELECT schema_version FROM feast_rs_registry_version WHERE id = 1",
                    )
                    .fetch_one(&mut *tx)
                    .await?;
                    let mut missing = Vec::new();
                    match mode {
                        SchemaMode::Auto => {
                            for (number, sql) in $migrations {
                                if *number > current {
                                    sqlx::raw_sql(sql).execute(&mut *tx).await?;
                                    sqlx::query(
                                        "UPDATE feast_rs_registry_version SET schema_version = $1 WHERE id = 1",
                                    )
                                    .bind(*number)
                                    .execute(&mut *tx)
                                    .await?;
                                }
                            }
                        }
                        SchemaMode::Verify => {
                            let sql = if PG {
                                "SELECT table_name::text FROM information_schema.tables \
                                 WHERE table_schema = current_schema()"
                            } else {
                                "SELECT name FROM sqlite_master WHERE type = 'table'"
                            };
                            let present: Vec<String> =
                                sqlx::query_scalar(sql).fetch_all(&mut *tx).await?;
                            missing = FEAST_TABLES
                                .iter()
                                .filter(|t| !present.iter().any(|p| p == *t))
                                .map(|t| t.to_string())
                                .collect();
                        }
                        SchemaMode::Skip => {}
                    }
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(missing)
                };
                match run.await {
                    Ok(missing) if missing.is_empty() => Ok(()),
                    Ok(missing) => Err(format!(
                        "SQL registry schema is incomplete — missing tables: {}. Set \
                         schema_mode: auto (or run `feast registry create-schema`) to create them",
                        missing.join(", ")
                    )),
                    Err(e) => Err(format!("creating the SQL registry schema failed: {e}")),
                }
            }

            /// What Feast's `SqlRegistry` does at start: projects known only from
            /// `feast_metadata` get a `projects` row, and with `purge_feast_metadata` the
            /// metadata is then deleted.
            pub(crate) async fn sync_metadata_projects(
                pool: &Pool,
                purge: bool,
                now: Timestamp,
            ) -> Result<(), sqlx::Error> {
                let mut tx = if PG {
                    pool.begin().await?
                } else {
                    pool.begin_with("BEGIN IMMEDIATE").await?
                };
                let missing: Vec<String> = sqlx::query_scalar(
                    "SELECT DISTINCT project_id FROM feast_metadata WHERE metadata_key = 'project_uuid' \
                     AND project_id NOT IN (SELECT project_id FROM projects)",
                )
                .fetch_all(&mut *tx)
                .await?;
                let metadata: i64 = sqlx::query_scalar("SELECT count(*) FROM feast_metadata")
                    .fetch_one(&mut *tx)
                    .await?;
                if missing.is_empty() && !(purge && metadata > 0) {
                    return tx.rollback().await;
                }
                sqlx::query("UPDATE feast_rs_registry_version SET version = version + 1 WHERE id = 1")
                    .execute(&mut *tx)
                    .await?;
                for project in &missing {
                    sqlx::query(&Table::Projects.insert_sql())
                        .bind(project)
                        .bind(project)
                        .bind(now.seconds)
                        .bind(synthesized_project(project, now))
                        .execute(&mut *tx)
                        .await?;
                }
                if purge {
                    sqlx::query("DELETE FROM feast_metadata").execute(&mut *tx).await?;
                }
                tx.commit().await
            }

            /// Reads every table in one transaction.
            pub(crate) async fn load(pool: &Pool, token_sql: &str) -> Result<RawDb, sqlx::Error> {
                let mut tx = if PG {
                    pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?
                } else {
                    pool.begin().await?
                };
                let mut raw = RawDb::default();
                for table in Table::OBJECTS {
                    let rows = sqlx::query(&table.select_sql()).fetch_all(&mut *tx).await?;
                    raw.rows.reserve(rows.len());
                    for r in rows {
                        raw.rows.push(RawRow {
                            table,
                            name: r.try_get(0)?,
                            project: r.try_get(1)?,
                            proto: r.try_get(2)?,
                            last_updated: r.try_get(3)?,
                        });
                    }
                }
                for r in sqlx::query(HISTORY_SELECT).fetch_all(&mut *tx).await? {
                    raw.history.push(RawHistory {
                        name: r.try_get(0)?,
                        project: r.try_get(1)?,
                        version_number: r.try_get(2)?,
                        feature_view_type: r.try_get(3)?,
                        proto: r.try_get(4)?,
                        created: r.try_get(5)?,
                        description: r.try_get(6)?,
                        version_id: r.try_get(7)?,
                    });
                }
                for r in sqlx::query(META_SELECT).fetch_all(&mut *tx).await? {
                    raw.meta.push(RawMeta {
                        project: r.try_get(0)?,
                        key: r.try_get(1)?,
                        value: r.try_get(2)?,
                        last_updated: r.try_get(3)?,
                    });
                }
                let row = sqlx::query(
                    "SELECT version_id, committed_seconds, committed_nanos \
                     FROM feast_rs_registry_version WHERE id = 1",
                )
                .fetch_one(&mut *tx)
                .await?;
                raw.version_id = row.try_get(0)?;
                let (seconds, nanos): (i64, i32) = (row.try_get(1)?, row.try_get(2)?);
                raw.committed = (seconds > 0).then_some(Timestamp { seconds, nanos });
                let (counter, fp) = read_token(&mut tx, token_sql).await?;
                raw.counter = counter;
                raw.token = token(counter, fp);
                tx.commit().await?;
                Ok(raw)
            }

            async fn commit_once(
                pool: &Pool,
                plan: &Plan,
                token_sql: &str,
            ) -> Result<Outcome, CommitError> {
                let mut tx = if PG {
                    pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ").await?
                } else {
                    pool.begin_with("BEGIN IMMEDIATE").await?
                };
                // First statement: takes the writers' lock (and, on PostgreSQL, the snapshot).
                let counter: i64 = sqlx::query_scalar(
                    "UPDATE feast_rs_registry_version SET version = version + 1, version_id = $1, \
                     committed_seconds = $2, committed_nanos = $3 WHERE id = 1 RETURNING version",
                )
                .bind(&plan.version_id)
                .bind(plan.now.seconds)
                .bind(plan.now.nanos)
                .fetch_one(&mut *tx)
                .await?;
                let (_, before) = read_token(&mut tx, token_sql).await?;
                let now = plan.now.seconds;
                for op in &plan.ops {
                    let key = op.key();
                    let history = key.table == Table::VersionHistory;
                    let done = match op {
                        Op::Insert(_, want) if history => {
                            let r = want.history.as_ref().expect("history record");
                            sqlx::query(HISTORY_INSERT)
                                .bind(&key.name)
                                .bind(&key.project)
                                .bind(key.version)
                                .bind(&r.feature_view_type)
                                .bind(want.stored())
                                .bind(r.created_timestamp.map_or(0, |t| t.seconds))
                                .bind(&r.description)
                                .bind(&r.version_id)
                                .execute(&mut *tx)
                                .await?
                        }
                        Op::Update(_, want, stored) if history => {
                            let r = want.history.as_ref().expect("history record");
                            sqlx::query(HISTORY_UPDATE)
                                .bind(&r.feature_view_type)
                                .bind(want.stored())
                                .bind(r.created_timestamp.map_or(0, |t| t.seconds))
                                .bind(&r.description)
                                .bind(&r.version_id)
                                .bind(&key.name)
                                .bind(&key.project)
                                .bind(key.version)
                                .bind(stored.as_slice())
                                .execute(&mut *tx)
                                .await?
                        }
                        Op::Delete(_, stored) if history => {
                            sqlx::query(HISTORY_DELETE)
                                .bind(&key.name)
                                .bind(&key.project)
                                .bind(key.version)
                                .bind(stored.as_slice())
                                .execute(&mut *tx)
                                .await?
                        }
                        Op::Insert(_, want) => {
                            sqlx::query(&key.table.insert_sql())
                                .bind(&key.name)
                                .bind(&key.project)
                                .bind(now)
                                .bind(want.stored())
                                .execute(&mut *tx)
                                .await?
                        }
                        Op::Update(_, want, stored) => {
                            sqlx::query(&key.table.update_sql())
                                .bind(want.stored())
                                .bind(now)
                                .bind(&key.name)
                                .bind(&key.project)
                                .bind(stored.as_slice())
                                .execute(&mut *tx)
                                .await?
                        }
                        Op::Delete(_, stored) => {
                            sqlx::query(&key.table.delete_sql())
                                .bind(&key.name)
                                .bind(&key.project)
                                .bind(stored.as_slice())
                                .execute(&mut *tx)
                                .await?
                        }
                    };
                    if done.rows_affected() != 1 {
                        let what = match op {
                            Op::Insert(..) => "was created",
                            Op::Update(..) => "was changed or deleted",
                            Op::Delete(..) => "was changed or deleted",
                        };
                        return Err(CommitError::Conflict(format!("{key} {what}")));
                    }
                }
                for project in &plan.swept {
                    for table in PROJECT_TABLES {
                        sqlx::query(&format!("DELETE FROM {table} WHERE project_id = $1"))
                            .bind(project)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                for (project, uuid) in &plan.uuids {
                    sqlx::query(META_UUID)
                        .bind(project)
                        .bind(uuid)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                for project in &plan.bump {
                    sqlx::query(META_BUMP)
                        .bind(project)
                        .bind(now.to_string())
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                let (_, after) = read_token(&mut tx, token_sql).await?;
                tx.commit().await?;
                Ok(Outcome {
                    before: token(counter - 1, before),
                    after: token(counter, after),
                })
            }

            /// Runs the plan in one transaction (again, on a PostgreSQL serialization failure).
            pub(crate) async fn commit(
                pool: &Pool,
                plan: &Plan,
                token_sql: &str,
            ) -> Result<Outcome, CommitError> {
                let mut attempt = 0u32;
                loop {
                    match commit_once(pool, plan, token_sql).await {
                        Err(CommitError::Sql(e)) if retryable(&e) && attempt < 50 => {
                            attempt += 1;
                            let jitter = u64::from(rand_jitter()) % (5 * u64::from(attempt.min(10)));
                            tokio::time::sleep(std::time::Duration::from_millis(1 + jitter)).await;
                        }
                        other => return other,
                    }
                }
            }
        }
    };
}

/// A few bits of jitter for retry backoff (no RNG dependency needed).
fn rand_jitter() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_micros())
}

backend!(pg, sqlx::Postgres, true, PG_MIGRATIONS);
backend!(lite, sqlx::Sqlite, false, SQLITE_MIGRATIONS);
