//! Postgres data sources: Feast's `PostgreSQLSource` (a `table` or a `query`) read by the
//! offline engine through a DataFusion `TableProvider` ([`PostgresTable`]) with filters
//! pushed down, written by `offline_write_batch`, and SQL entity tables (`entity_df_sql`)
//! run in the same database.
//!
//! The connection is the offline store's: `offline_store: {type: postgres, host, port,
//! database, db_schema, user, password, sslmode, ...}` (Feast's
//! `PostgreSQLOfflineStoreConfig`), with Feast's `search_path` (`db_schema` or the user,
//! then `public`). Sessions run in UTC, so naive timestamps read and compare as UTC.

pub mod provider;
pub mod types;
mod write;

use std::str::FromStr;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use feast_core::config::PostgresOfflineStoreConfig;
use feast_proto::core;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};

pub use provider::PostgresTable;
pub use types::{PgColumn, feast_type_name};

use crate::error::{OfflineError, Result};

/// `data_source_class_type` of Feast's `PostgreSQLSource`.
pub const POSTGRES_SOURCE_CLASS: &str = feast_core::repo::POSTGRES_SOURCE_CLASS;

/// The options of a `PostgreSQLSource` (its `custom_options` JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    pub name: String,
    /// Table name as written in SQL (may be schema-qualified), or empty.
    pub table: String,
    /// SELECT statement, or empty.
    pub query: String,
}

impl PostgresOptions {
    /// The Postgres options of `source`: `None` when it is not a Postgres source.
    pub fn of(source: &core::DataSource) -> Option<Result<Self>> {
        let is_postgres = source.data_source_class_type == POSTGRES_SOURCE_CLASS
            || source.data_source_class_type.ends_with(".PostgreSQLSource");
        if !is_postgres {
            return None;
        }
        let invalid = |message: String| OfflineError::Source {
            view: source.name.clone(),
            message,
        };
        let Some(core::data_source::Options::CustomOptions(custom)) = &source.options else {
            return Some(Err(invalid(format!(
                "Postgres source {} has no custom_options",
                source.name
            ))));
        };
        let parsed = serde_json::from_slice::<serde_json::Value>(&custom.configuration)
            .map_err(|e| invalid(format!("Postgres source options are not JSON: {e}")))
            .map(|json| {
                let text = |k: &str| {
                    json.get(k)
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                        .to_string()
                };
                Self {
                    name: text("name"),
                    table: text("table"),
                    query: text("query"),
                }
            })
            .and_then(|o| {
                if o.table.is_empty() && o.query.is_empty() {
                    Err(invalid(format!(
                        "Postgres source {} has neither a table nor a query",
                        source.name
                    )))
                } else {
                    Ok(o)
                }
            });
        Some(parsed)
    }

    /// What follows `FROM`, as Feast's `get_table_query_string`: the table, else
    /// `(query)`.
    pub fn from_expression(&self) -> String {
        if self.table.is_empty() {
            format!("({})", self.query)
        } else {
            self.table.clone()
        }
    }

    /// Whether the table name is a plain (optionally schema-qualified) identifier: what an
    /// unregistered source sent by a client may name.
    pub fn is_plain_table(&self) -> bool {
        let ident = |s: &str| {
            let mut chars = s.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        self.query.is_empty() && {
            let parts: Vec<&str> = self.table.split('.').collect();
            (1..=2).contains(&parts.len()) && parts.iter().all(|p| ident(p))
        }
    }
}

/// The offline store's Postgres database.
#[derive(Debug, Clone)]
pub struct PostgresOfflineStore {
    pool: PgPool,
    target: String,
}

impl PostgresOfflineStore {
    /// A pool on the database `config` names; connects lazily (the first read opens it).
    /// Call it inside a Tokio runtime: the pool's maintenance task runs there.
    pub fn new(config: &PostgresOfflineStoreConfig) -> Result<Self> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(OfflineError::Invalid(
                "the Postgres offline store must be opened inside a Tokio runtime".into(),
            ));
        }
        let target = format!("{}:{}/{}", config.host, config.port, config.database);
        let mut connect = PgConnectOptions::new()
            .host(&config.host)
            .port(config.port)
            .database(&config.database)
            .username(&config.user)
            .password(&config.password)
            .application_name("feast-rs offline")
            .options([
                (
                    "search_path",
                    feast_core::config::postgres_search_path(&config.db_schema, &config.user),
                ),
                ("TimeZone", "UTC".into()),
            ]);
        if let Some(mode) = &config.sslmode {
            let mode = PgSslMode::from_str(mode).map_err(|_| {
                OfflineError::Invalid(format!(
                    "offline_store.sslmode {mode:?}: expected disable, allow, prefer, require, \
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
        let pool = PgPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(connect);
        Ok(Self { pool, target })
    }

    /// The pool (tests and tools).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn err(&self, what: &str, e: sqlx::Error) -> OfflineError {
        let message = match &e {
            sqlx::Error::Database(db) => db.message().to_string(),
            other => other.to_string(),
        };
        OfflineError::Source {
            view: what.to_string(),
            message: format!("postgres {}: {message}", self.target),
        }
    }

    /// `source` (a Postgres source) as a table DataFusion reads.
    pub async fn table(&self, view: &str, options: &PostgresOptions) -> Result<PostgresTable> {
        PostgresTable::open(self.pool.clone(), options.from_expression())
            .await
            .map_err(|e| self.err(view, e))
    }

    /// The result of `sql` (an entity table given as SQL) as a table: the query runs in a
    /// read-only transaction, like every read.
    pub async fn query_table(&self, sql: &str) -> Result<PostgresTable> {
        let sql = sql.trim().trim_end_matches(';');
        PostgresTable::open(self.pool.clone(), format!("({sql})"))
            .await
            .map_err(|e| OfflineError::Invalid(format!("entity_df_sql: {}", pg_message(&e))))
    }

    /// Appends rows to a table source (`offline_write_batch`).
    pub async fn append(
        &self,
        view: &str,
        options: &PostgresOptions,
        field_mapping: &std::collections::BTreeMap<String, String>,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<usize> {
        if options.table.is_empty() {
            return Err(OfflineError::Source {
                view: view.to_string(),
                message: "its Postgres source is a query; offline writes need a source with \
                          a table"
                    .into(),
            });
        }
        write::append(&self.pool, &options.table, field_mapping, schema, batches)
            .await
            .map_err(|e| match e {
                write::WriteError::Db(e) => self.err(view, e),
                write::WriteError::Invalid(message) => OfflineError::Source {
                    view: view.to_string(),
                    message,
                },
            })
    }
}

fn pg_message(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(configuration: &str) -> core::DataSource {
        core::DataSource {
            name: "trips".into(),
            data_source_class_type: POSTGRES_SOURCE_CLASS.into(),
            options: Some(core::data_source::Options::CustomOptions(
                core::data_source::CustomSourceOptions {
                    configuration: configuration.as_bytes().to_vec(),
                },
            )),
            ..Default::default()
        }
    }

    #[test]
    fn options_are_feasts_json() {
        let o = PostgresOptions::of(&source(
            r#"{"name": "trips", "query": "", "table": "public.trips"}"#,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(o.from_expression(), "public.trips");
        assert!(o.is_plain_table());
        let q = PostgresOptions::of(&source(
            r#"{"name": "trips", "query": "SELECT * FROM t", "table": ""}"#,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(q.from_expression(), "(SELECT * FROM t)");
        assert!(!q.is_plain_table());
        assert!(
            PostgresOptions::of(&source(r#"{"name": "x", "query": "", "table": ""}"#))
                .unwrap()
                .is_err()
        );
        assert!(PostgresOptions::of(&core::DataSource::default()).is_none());
    }
}
