//! `offline_write_batch` into a Postgres table source: the rows are matched to the table's
//! columns as for file sources (by source name or mapped feature name, nothing missing,
//! nothing extra), sent as one text array per column and inserted with one
//! `INSERT ... SELECT ... FROM UNNEST(...)` per batch, each value cast by Postgres to its
//! column's type, all batches in one transaction (a failure writes nothing).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use sqlx::Row;
use sqlx::postgres::PgPool;

use super::types::quote_ident;

pub enum WriteError {
    Db(sqlx::Error),
    Invalid(String),
}

impl From<sqlx::Error> for WriteError {
    fn from(e: sqlx::Error) -> Self {
        WriteError::Db(e)
    }
}

/// Appends `batches` to `table`; returns the number of rows written.
pub async fn append(
    pool: &PgPool,
    table: &str,
    field_mapping: &BTreeMap<String, String>,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<usize, WriteError> {
    // The table's columns and their declared types, resolved through the search path as
    // Feast's queries resolve the name.
    let rows = sqlx::query(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
         FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 \
         AND NOT a.attisdropped ORDER BY a.attnum",
    )
    .bind(table)
    .fetch_all(pool)
    .await?;
    let columns: Vec<(String, String)> = rows
        .iter()
        .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)))
        .collect::<Result<_, sqlx::Error>>()?;
    let target: SchemaRef = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, _)| Field::new(name, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let picks =
        crate::write::conform(schema, &target, field_mapping).map_err(WriteError::Invalid)?;

    let mut sql = format!("INSERT INTO {table} (");
    let names: Vec<String> = columns.iter().map(|(n, _)| quote_ident(n)).collect();
    let _ = write!(sql, "{}) SELECT ", names.join(", "));
    let casts: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| format!("u.c{i}::{ty}"))
        .collect();
    let arrays: Vec<String> = (1..=columns.len())
        .map(|i| format!("${i}::text[]"))
        .collect();
    let aliases: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
    let _ = write!(
        sql,
        "{} FROM UNNEST({}) AS u({})",
        casts.join(", "),
        arrays.join(", "),
        aliases.join(", ")
    );

    let mut transaction = pool.begin().await?;
    let mut written = 0;
    for batch in batches {
        if batch.num_rows() == 0 {
            continue;
        }
        let mut query = sqlx::query(&sql).persistent(false);
        for (&i, (name, _)) in picks.iter().zip(&columns) {
            query = query.bind(as_text(batch.column(i).as_ref(), name)?);
        }
        query.execute(&mut *transaction).await?;
        written += batch.num_rows();
    }
    transaction.commit().await?;
    Ok(written)
}

/// A column as the text Postgres parses into the column's type.
fn as_text(array: &dyn Array, name: &str) -> Result<Vec<Option<String>>, WriteError> {
    match array.data_type() {
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            let strings = cast(array, &DataType::Binary)
                .map_err(|e| WriteError::Invalid(format!("column {name}: {e}")))?;
            let bytes = strings.as_binary::<i32>();
            Ok(bytes
                .iter()
                .map(|v| {
                    v.map(|b| {
                        let mut s = String::with_capacity(2 + 2 * b.len());
                        s.push_str("\\x");
                        for byte in b {
                            let _ = write!(s, "{byte:02x}");
                        }
                        s
                    })
                })
                .collect())
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::Struct(_) | DataType::Map(..) => {
            Err(WriteError::Invalid(format!(
                "column {name} has type {}; offline writes to Postgres sources take scalar \
                 columns only",
                array.data_type()
            )))
        }
        _ => {
            let text = cast(array, &DataType::Utf8)
                .map_err(|e| WriteError::Invalid(format!("column {name}: {e}")))?;
            Ok(text
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(str::to_string))
                .collect())
        }
    }
}
