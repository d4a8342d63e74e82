//! The SQL registry store: Feast's `SqlRegistry` tables (`feast/infra/registry/sql.py`) in
//! PostgreSQL or SQLite, so a database Feast created is served as it is and Feast's
//! `SqlRegistry` reads what feast-rs writes.
//!
//! Layout (PROTOCOLS.md §7.3): one table per object kind with rows
//! `(<kind>_name, project_id, last_updated_timestamp, <kind>_proto)` holding the serialized
//! object (`project_id` is the project name), `projects`, `managed_infra` (one `infra_obj`
//! row per project), `feature_view_version_history`, and `feast_metadata` (per project
//! `project_uuid` and `last_updated_timestamp`, the latter in epoch seconds).
//!
//! * **Load** assembles one `feast.core.Registry` from every table (all projects), as
//!   Feast's `proto()` does: `spec.project` is filled from `project_id` (Feast may store it
//!   empty), `infra` comes from `managed_infra` (the most recently written project row),
//!   `project_metadata` from the `project_uuid` rows, plus the version history.
//! * **Commit** writes, in one transaction, only the rows that differ between the committed
//!   registry and the one this store last loaded (its base): inserts, updates and deletes,
//!   each a compare-and-set on the bytes loaded, so a row another writer changed meanwhile
//!   fails the commit with [`StoreError::Conflict`] and nothing is written. Every project the
//!   commit touches gets `feast_metadata.last_updated_timestamp` bumped (and a
//!   `project_uuid` if it has none), as each Feast write does; a deleted project's rows are
//!   all removed, as Feast's `delete_project`. Changes other writers made to other objects
//!   are kept: the commit then returns the reloaded registry ([`Committed::merged`]).
//!
//! **`feast_rs_registry_version`**, the one table feast-rs adds, is a single row: a commit
//! counter (a cheap, exact version for feast-rs writers: Feast's own timestamps have
//! one-second resolution), the lock row that serializes feast-rs commits across replicas,
//! the `version_id` and time of the last feast-rs commit (Feast's schema has no place for
//! them), and the schema version of the embedded migrations. Writes made by Feast itself
//! are seen through a fingerprint of its tables in the same query (see [`SqlStore::version`]).
//! Feast ignores the table.

mod db;
mod rows;

use std::str::FromStr;
use std::time::Duration;

use feast_core::config::{SchemaMode, SqlUrl};
use feast_proto::core;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use crate::store::{Committed, RegistryStore, StoreError, StoreVersion};

/// How the SQL store treats the database.
#[derive(Debug, Clone)]
pub struct SqlStoreOptions {
    /// `schema_mode`: create missing tables (`auto`), only check them (`verify`), or neither.
    /// feast-rs's own `feast_rs_registry_version` table is created in every mode.
    pub schema_mode: SchemaMode,
    /// `purge_feast_metadata`: never write `feast_metadata`, and empty it at start.
    pub purge_feast_metadata: bool,
    /// Most connections held open (PostgreSQL and file SQLite; in-memory SQLite uses one).
    pub max_connections: u32,
    /// How long to wait for a connection (and, on SQLite, for the database lock).
    pub timeout: Duration,
}

impl Default for SqlStoreOptions {
    fn default() -> Self {
        Self {
            schema_mode: SchemaMode::Auto,
            purge_feast_metadata: false,
            max_connections: 4,
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone)]
enum Db {
    Pg(sqlx::PgPool),
    Lite(sqlx::SqlitePool),
}

/// Feast's SQL registry in PostgreSQL or SQLite (see the module documentation).
pub struct SqlStore {
    db: Db,
    token_sql: String,
    location: String,
    options: SqlStoreOptions,
    /// The rows as last loaded or committed: what the next commit diffs against.
    base: tokio::sync::Mutex<Option<rows::Snapshot>>,
}

/// A URL with any password replaced by `***`, for logs and errors.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn db_error(location: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!("{location}: {e}"))
}

impl SqlStore {
    /// Connects, creates or migrates the schema (per `schema_mode`), and does what Feast's
    /// `SqlRegistry` does at start (projects known only from `feast_metadata` get a
    /// `projects` row; `purge_feast_metadata` empties `feast_metadata`).
    pub async fn connect(url: &SqlUrl, options: SqlStoreOptions) -> Result<Self, StoreError> {
        let location = redact(&url.to_string());
        let db = match url {
            SqlUrl::Postgres(u) => {
                let connect = PgConnectOptions::from_str(u).map_err(|e| {
                    StoreError::Invalid(format!("{location} is not a usable PostgreSQL URL: {e}"))
                })?;
                let pool = PgPoolOptions::new()
                    .max_connections(options.max_connections.max(1))
                    .acquire_timeout(options.timeout)
                    .connect_with(connect)
                    .await
                    .map_err(|e| db_error(&location, e))?;
                Db::Pg(pool)
            }
            SqlUrl::Sqlite(path) => {
                let memory = path.as_os_str() == ":memory:";
                let connect = if memory {
                    SqliteConnectOptions::from_str("sqlite::memory:")
                        .map_err(|e| db_error(&location, e))?
                } else {
                    SqliteConnectOptions::new()
                        .filename(path)
                        .create_if_missing(true)
                };
                let mut pool = SqlitePoolOptions::new()
                    .max_connections(if memory {
                        1
                    } else {
                        options.max_connections.max(1)
                    })
                    .acquire_timeout(options.timeout);
                if memory {
                    // One connection that lives as long as the store: it is the database.
                    pool = pool
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None);
                }
                let pool = pool
                    .connect_with(connect.busy_timeout(options.timeout))
                    .await
                    .map_err(|e| db_error(&location, e))?;
                Db::Lite(pool)
            }
        };
        let pg = matches!(db, Db::Pg(_));
        let store = SqlStore {
            db,
            token_sql: db::token_sql(pg),
            location,
            options,
            base: tokio::sync::Mutex::new(None),
        };
        let mode = store.options.schema_mode;
        let migrated = match &store.db {
            Db::Pg(p) => db::pg::migrate(p, mode).await,
            Db::Lite(p) => db::lite::migrate(p, mode).await,
        };
        migrated.map_err(|e| StoreError::Invalid(format!("{}: {e}", store.location)))?;
        let now = feast_core::registry::timestamp(chrono::Utc::now());
        let purge = store.options.purge_feast_metadata;
        let synced = match &store.db {
            Db::Pg(p) => db::pg::sync_metadata_projects(p, purge, now).await,
            Db::Lite(p) => db::lite::sync_metadata_projects(p, purge, now).await,
        };
        synced.map_err(|e| store.db_error(e))?;
        Ok(store)
    }

    /// Parses a SQLAlchemy URL as Feast accepts it (`postgresql://`, `postgresql+psycopg://`,
    /// `postgresql+psycopg2://`, `sqlite:///relative.db`, `sqlite:////absolute.db`) and
    /// connects.
    pub async fn connect_url(url: &str, options: SqlStoreOptions) -> Result<Self, StoreError> {
        let parsed = SqlUrl::parse(url).map_err(|e| StoreError::Invalid(e.to_string()))?;
        Self::connect(&parsed, options).await
    }

    /// Closes the connections.
    pub async fn close(&self) {
        match &self.db {
            Db::Pg(p) => p.close().await,
            Db::Lite(p) => p.close().await,
        }
    }

    fn db_error(&self, e: impl std::fmt::Display) -> StoreError {
        db_error(&self.location, e)
    }

    /// Materialization leases in this registry's database (their table is created here on
    /// first use), sharing the store's connections.
    pub async fn leases(&self) -> Result<Leases, StoreError> {
        match &self.db {
            Db::Pg(p) => db::pg::lease_table(p).await,
            Db::Lite(p) => db::lite::lease_table(p).await,
        }
        .map_err(|e| self.db_error(e))?;
        Ok(Leases {
            db: self.db.clone(),
            location: self.location.clone(),
        })
    }

    async fn read(&self) -> Result<(Option<core::Registry>, rows::Snapshot), StoreError> {
        let raw = match &self.db {
            Db::Pg(p) => db::pg::load(p, &self.token_sql).await,
            Db::Lite(p) => db::lite::load(p, &self.token_sql).await,
        }
        .map_err(|e| self.db_error(e))?;
        rows::assemble(raw).map_err(|e| StoreError::Invalid(format!("{}: {e}", self.location)))
    }
}

#[tonic::async_trait]
impl RegistryStore for SqlStore {
    async fn load(&self) -> Result<(Option<core::Registry>, StoreVersion), StoreError> {
        let mut base = self.base.lock().await;
        let (registry, snapshot) = self.read().await?;
        let version = StoreVersion(snapshot.token.clone());
        *base = Some(snapshot);
        Ok((registry, version))
    }

    /// One query: feast-rs's commit counter plus a fingerprint of Feast's tables (row counts
    /// and, on PostgreSQL, row versions; on SQLite, timestamps and proto lengths), so writes
    /// by other feast-rs replicas and by Feast itself are noticed.
    async fn version(&self) -> Result<StoreVersion, StoreError> {
        match &self.db {
            Db::Pg(p) => db::pg::version(p, &self.token_sql).await,
            Db::Lite(p) => db::lite::version(p, &self.token_sql).await,
        }
        .map(StoreVersion)
        .map_err(|e| self.db_error(e))
    }

    async fn commit(
        &self,
        registry: &core::Registry,
        expected: &StoreVersion,
    ) -> Result<Committed, StoreError> {
        let mut guard = self.base.lock().await;
        if guard.is_none() {
            *guard = Some(self.read().await?.1);
        }
        let base = guard.as_mut().expect("base loaded");
        // The rows are diffed against the last snapshot this store read or wrote; a caller
        // whose registry comes from an older one (another task of this process committed
        // in between) would write that task's rows back to what it had loaded. Such a
        // commit is a conflict: the caller reloads and tries again.
        if base.token != expected.0 {
            return Err(StoreError::Conflict {
                location: self.location.clone(),
                detail: "the registry was written through this store since the caller loaded it"
                    .to_owned(),
            });
        }
        let now = registry
            .last_updated
            .unwrap_or_else(|| feast_core::registry::timestamp(chrono::Utc::now()));
        let plan = rows::plan(registry, base, self.options.purge_feast_metadata, now);
        let outcome = match &self.db {
            Db::Pg(p) => db::pg::commit(p, &plan, &self.token_sql).await,
            Db::Lite(p) => db::lite::commit(p, &plan, &self.token_sql).await,
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(db::CommitError::Conflict(detail)) => {
                return Err(StoreError::Conflict {
                    location: self.location.clone(),
                    detail,
                });
            }
            Err(db::CommitError::Sql(e)) => return Err(self.db_error(e)),
        };
        if outcome.before == base.token && outcome.before == expected.0 {
            rows::advance(base, &plan, outcome.after.clone());
            return Ok(Committed {
                version: StoreVersion(outcome.after),
                merged: None,
            });
        }
        // Others wrote too (to other objects): serve the database's registry.
        let (merged, snapshot) = self.read().await?;
        let version = StoreVersion(snapshot.token.clone());
        *guard = Some(snapshot);
        Ok(Committed { version, merged })
    }

    fn location(&self) -> String {
        self.location.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgresql://feast:s3cret@db:5432/feast?sslmode=require"),
            "postgresql://feast:***@db:5432/feast?sslmode=require"
        );
        assert_eq!(
            redact("postgresql://feast@db/feast"),
            "postgresql://feast@db/feast"
        );
        assert_eq!(
            redact("sqlite:///data/registry.db"),
            "sqlite:///data/registry.db"
        );
    }
}

/// Leases of feature views for materialization, kept in the SQL registry's database
/// (`feast_rs_materialization_leases`: one row per project and view with its holder and
/// expiry), so materializer replicas sharing the registry never run the same view at
/// once: a replica takes a view's lease before it plans the view's window, extends it
/// while the job runs and drops it when done. A crashed replica's leases expire.
#[derive(Clone)]
pub struct Leases {
    db: Db,
    location: String,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl Leases {
    /// Takes or extends the lease of `view` for `holder` until `ttl` from now; `false` when
    /// another holder's lease has not expired.
    pub async fn acquire(
        &self,
        project: &str,
        view: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        let until = now + ttl.as_millis() as i64;
        match &self.db {
            Db::Pg(p) => db::pg::lease_acquire(p, project, view, holder, now, until).await,
            Db::Lite(p) => db::lite::lease_acquire(p, project, view, holder, now, until).await,
        }
        .map_err(|e| db_error(&self.location, e))
    }

    /// Who holds the lease of `view` now, and until when; `None` when it is free or expired.
    pub async fn holder(
        &self,
        project: &str,
        view: &str,
    ) -> Result<Option<(String, std::time::SystemTime)>, StoreError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        let held = match &self.db {
            Db::Pg(p) => db::pg::lease_holder(p, project, view, now).await,
            Db::Lite(p) => db::lite::lease_holder(p, project, view, now).await,
        }
        .map_err(|e| db_error(&self.location, e))?;
        Ok(held.map(|(holder, until)| {
            (
                holder,
                std::time::UNIX_EPOCH + Duration::from_millis(until.max(0) as u64),
            )
        }))
    }

    /// Drops `holder`'s lease of `view` (nothing when another holder has it).
    pub async fn release(&self, project: &str, view: &str, holder: &str) -> Result<(), StoreError> {
        match &self.db {
            Db::Pg(p) => db::pg::lease_release(p, project, view, holder).await,
            Db::Lite(p) => db::lite::lease_release(p, project, view, holder).await,
        }
        .map_err(|e| db_error(&self.location, e))
    }
}
