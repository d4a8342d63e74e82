//! [`PostgresTable`]: a Postgres table or query as a DataFusion `TableProvider`.
//!
//! A scan becomes one `SELECT` of the projected columns with the pushed-down filters as its
//! `WHERE` clause (and the limit, when DataFusion gives one), run through a server-side
//! cursor in a read-only transaction and fetched [`FETCH_ROWS`] rows at a time, so memory
//! holds one batch per scan whatever the table's size.
//!
//! Filters are pushed down as `Exact` only when [`to_sql`] translates them completely:
//! comparisons, `IN` lists, `BETWEEN`, `IS [NOT] NULL`, `AND`/`OR`/`NOT` of columns and
//! literals, through the casts the point-in-time join and the pulls put on source columns
//! (timestamps to UTC, integer widening). Everything else is `Unsupported` and evaluated by
//! DataFusion. Strings are compared for equality only (Postgres orders them by collation,
//! DataFusion by bytes); NaN literals are never pushed (Postgres orders NaN above every
//! number).

use std::fmt::Write as _;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Operator, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::prelude::Expr;
use sqlx::postgres::PgPool;
use sqlx::{Executor, Statement};

use super::types::{ColumnBuilder, PgColumn, quote_ident, quote_literal};

/// Rows per `FETCH` (and per record batch).
pub const FETCH_ROWS: usize = 8192;

/// A Postgres relation (table name or `(query)`) read by DataFusion.
#[derive(Debug, Clone)]
pub struct PostgresTable {
    pool: PgPool,
    /// What follows `FROM`: a table name as Feast writes it, or `(query)`.
    from: String,
    columns: Arc<Vec<PgColumn>>,
    schema: SchemaRef,
}

impl PostgresTable {
    /// Describes `from` (without reading rows) and returns it as a table.
    pub async fn open(pool: PgPool, from: String) -> Result<Self, sqlx::Error> {
        let describe = format!("SELECT * FROM {from} AS feast_src LIMIT 0");
        let statement = (&pool).prepare(&describe).await?;
        let columns: Vec<PgColumn> = statement
            .columns()
            .iter()
            .map(|c| {
                use sqlx::Column;
                let oid = c.type_info().oid().map(|o| o.0).unwrap_or(0);
                PgColumn::new(c.name(), oid)
            })
            .collect();
        Ok(Self::with_columns(pool, from, columns))
    }

    /// A table whose columns are already known.
    pub fn with_columns(pool: PgPool, from: String, columns: Vec<PgColumn>) -> Self {
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|c| datafusion::arrow::datatypes::Field::new(&c.name, c.arrow_type(), true))
                .collect::<Vec<_>>(),
        ));
        Self {
            pool,
            from,
            columns: Arc::new(columns),
            schema,
        }
    }

    /// The columns as Postgres describes them.
    pub fn columns(&self) -> &[PgColumn] {
        &self.columns
    }

    /// The `SELECT` a scan runs.
    pub fn scan_sql(
        &self,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> String {
        let picked: Vec<&PgColumn> = match projection {
            Some(p) => p.iter().map(|&i| &self.columns[i]).collect(),
            None => self.columns.iter().collect(),
        };
        let select: Vec<String> = picked.iter().map(|c| c.select_expr()).collect();
        let mut sql = format!(
            "SELECT {} FROM {} AS feast_src",
            select.join(", "),
            self.from
        );
        let conditions: Vec<String> = filters
            .iter()
            .filter_map(|f| to_sql(f, &self.columns))
            .collect();
        if !conditions.is_empty() {
            let _ = write!(sql, " WHERE {}", conditions.join(" AND "));
        }
        if let Some(n) = limit {
            let _ = write!(sql, " LIMIT {n}");
        }
        sql
    }
}

#[async_trait]
impl TableProvider for PostgresTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if to_sql(f, &self.columns).is_some() {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let sql = self.scan_sql(projection, filters, limit);
        let columns: Vec<PgColumn> = match projection {
            Some(p) => p.iter().map(|&i| self.columns[i].clone()).collect(),
            None => self.columns.as_ref().clone(),
        };
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        tracing::debug!(message = "postgres scan", %sql);
        let scan = Arc::new(PgScan {
            pool: self.pool.clone(),
            sql,
            columns,
            schema: schema.clone(),
        });
        Ok(Arc::new(StreamingTableExec::try_new(
            schema,
            vec![scan],
            None,
            Vec::new(),
            false,
            None,
        )?))
    }
}

/// One scan's query and the stream of its rows.
#[derive(Debug)]
struct PgScan {
    pool: PgPool,
    sql: String,
    columns: Vec<PgColumn>,
    schema: SchemaRef,
}

impl PartitionStream for PgScan {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (tx, rx) = tokio::sync::mpsc::channel::<DfResult<RecordBatch>>(2);
        let (pool, sql, columns, schema) = (
            self.pool.clone(),
            self.sql.clone(),
            self.columns.clone(),
            self.schema.clone(),
        );
        let producer = tx.clone();
        tokio::spawn(async move {
            if let Err(e) = stream_rows(pool, &sql, &columns, &schema, &producer).await {
                let _ = producer.send(Err(e)).await;
            }
        });
        drop(tx);
        let batches =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), batches))
    }
}

/// Runs `sql` through a cursor and sends its rows batch by batch; stops early when the
/// receiver is gone (the transaction then rolls back and the connection is returned).
async fn stream_rows(
    pool: PgPool,
    sql: &str,
    columns: &[PgColumn],
    schema: &SchemaRef,
    tx: &tokio::sync::mpsc::Sender<DfResult<RecordBatch>>,
) -> DfResult<()> {
    let mut transaction = pool.begin().await.map_err(pg_err)?;
    sqlx::query("SET TRANSACTION READ ONLY")
        .execute(&mut *transaction)
        .await
        .map_err(pg_err)?;
    sqlx::query(&format!("DECLARE feast_scan NO SCROLL CURSOR FOR {sql}"))
        .persistent(false)
        .execute(&mut *transaction)
        .await
        .map_err(pg_err)?;
    let fetch = format!("FETCH FORWARD {FETCH_ROWS} FROM feast_scan");
    loop {
        // Not a cached statement: a cached FETCH would keep the row description of the
        // first cursor it ran on for every later cursor on this connection.
        let rows = sqlx::query(&fetch)
            .persistent(false)
            .fetch_all(&mut *transaction)
            .await
            .map_err(pg_err)?;
        if rows.is_empty() {
            break;
        }
        let mut builders: Vec<ColumnBuilder> = columns
            .iter()
            .map(|c| ColumnBuilder::new(c.wire, rows.len()))
            .collect();
        for row in &rows {
            for (i, b) in builders.iter_mut().enumerate() {
                b.push(row, i).map_err(pg_err)?;
            }
        }
        let arrays = builders.iter_mut().map(ColumnBuilder::finish).collect();
        // A scan may project no column at all (a row count): the batch still has rows.
        let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        let batch = RecordBatch::try_new_with_options(schema.clone(), arrays, &options)?;
        let last = rows.len() < FETCH_ROWS;
        if tx.send(Ok(batch)).await.is_err() || last {
            break;
        }
    }
    transaction.rollback().await.map_err(pg_err)?;
    Ok(())
}

fn pg_err(e: sqlx::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

// ---------------------------------------------------------------------------------------
// Filters

/// What a translated expression is, for the rules on what may be compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Number,
    Time,
    Text,
    Bool,
}

fn kind_of(ty: &DataType) -> Option<Kind> {
    match ty {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float32
        | DataType::Float64 => Some(Kind::Number),
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => Some(Kind::Time),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(Kind::Text),
        DataType::Boolean => Some(Kind::Bool),
        _ => None,
    }
}

/// A value expression: a source column (possibly under a value-preserving cast) or a
/// literal, as SQL and its kind.
fn operand(expr: &Expr, columns: &[PgColumn]) -> Option<(String, Kind)> {
    match expr {
        Expr::Column(c) => {
            let col = columns.iter().find(|p| p.name == c.name)?;
            let kind = kind_of(&col.arrow_type())?;
            Some((col.filter_expr(), kind))
        }
        Expr::Cast(cast) => cast_operand(&cast.expr, cast.field.data_type(), columns),
        Expr::TryCast(cast) => cast_operand(&cast.expr, cast.field.data_type(), columns),
        Expr::Literal(value, _) => literal(value),
        _ => None,
    }
}

/// A cast keeps the column's SQL when it does not change which rows compare how: integer to
/// a wider integer, float to float, timestamp to timestamp (naive values are UTC on both
/// sides: the session's TimeZone is UTC), date to timestamp, text to text.
fn cast_operand(inner: &Expr, to: &DataType, columns: &[PgColumn]) -> Option<(String, Kind)> {
    let Expr::Column(c) = inner else {
        return None;
    };
    let col = columns.iter().find(|p| p.name == c.name)?;
    let from = col.arrow_type();
    let ok = match (&from, to) {
        (a, b) if a == b => true,
        (DataType::Int32, DataType::Int64) => true,
        (DataType::Float32, DataType::Float64) => true,
        (DataType::Timestamp(TimeUnit::Microsecond, _), DataType::Timestamp(unit, _)) => {
            matches!(unit, TimeUnit::Microsecond | TimeUnit::Nanosecond)
        }
        (DataType::Date32, DataType::Timestamp(..)) => true,
        (DataType::Utf8, DataType::LargeUtf8 | DataType::Utf8View) => true,
        _ => false,
    };
    if !ok {
        return None;
    }
    let sql = match (&from, to) {
        (DataType::Date32, DataType::Timestamp(_, Some(_))) => {
            format!("{}::timestamptz", quote_ident(&col.name))
        }
        (DataType::Date32, DataType::Timestamp(_, None)) => {
            format!("{}::timestamp", quote_ident(&col.name))
        }
        _ => col.filter_expr(),
    };
    Some((sql, kind_of(to)?))
}

fn literal(value: &ScalarValue) -> Option<(String, Kind)> {
    use ScalarValue as S;
    let number = |s: String| Some((s, Kind::Number));
    match value {
        S::Int8(Some(v)) => number(v.to_string()),
        S::Int16(Some(v)) => number(v.to_string()),
        S::Int32(Some(v)) => number(v.to_string()),
        S::Int64(Some(v)) => number(v.to_string()),
        S::UInt8(Some(v)) => number(v.to_string()),
        S::UInt16(Some(v)) => number(v.to_string()),
        S::UInt32(Some(v)) => number(v.to_string()),
        S::UInt64(Some(v)) => number(v.to_string()),
        S::Float32(Some(v)) if v.is_finite() => number(format!("{v:?}::float4")),
        S::Float64(Some(v)) if v.is_finite() => number(format!("{v:?}::float8")),
        S::Utf8(Some(s)) | S::LargeUtf8(Some(s)) | S::Utf8View(Some(s)) => {
            Some((quote_literal(s), Kind::Text))
        }
        S::Boolean(Some(b)) => Some((b.to_string(), Kind::Bool)),
        S::TimestampSecond(Some(v), tz) => timestamp(*v as i128 * 1_000_000_000, tz.is_some()),
        S::TimestampMillisecond(Some(v), tz) => timestamp(*v as i128 * 1_000_000, tz.is_some()),
        S::TimestampMicrosecond(Some(v), tz) => timestamp(*v as i128 * 1_000, tz.is_some()),
        S::TimestampNanosecond(Some(v), tz) => timestamp(*v as i128, tz.is_some()),
        S::Date32(Some(days)) => {
            let date = chrono::DateTime::from_timestamp(i64::from(*days) * 86_400, 0)?;
            Some((format!("DATE '{}'", date.format("%Y-%m-%d")), Kind::Time))
        }
        _ => None,
    }
}

/// A timestamp literal; sub-microsecond parts are refused (Postgres keeps microseconds, so
/// rounding could move a boundary row across the comparison).
fn timestamp(nanos: i128, zoned: bool) -> Option<(String, Kind)> {
    if nanos % 1_000 != 0 {
        return None;
    }
    let nanos = i64::try_from(nanos).ok()?;
    let t = chrono::DateTime::from_timestamp_nanos(nanos);
    let text = t.format("%Y-%m-%d %H:%M:%S%.6f");
    Some(if zoned {
        (format!("TIMESTAMPTZ '{text}+00'"), Kind::Time)
    } else {
        (format!("TIMESTAMP '{text}'"), Kind::Time)
    })
}

fn comparable(a: Kind, b: Kind, op: Operator) -> bool {
    if a != b {
        return false;
    }
    match op {
        Operator::Eq | Operator::NotEq => true,
        Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq => {
            matches!(a, Kind::Number | Kind::Time)
        }
        _ => false,
    }
}

/// `expr` as a SQL condition with the same rows, or `None` when it cannot be translated
/// exactly.
pub fn to_sql(expr: &Expr, columns: &[PgColumn]) -> Option<String> {
    match expr {
        Expr::BinaryExpr(b) => match b.op {
            Operator::And | Operator::Or => {
                let l = to_sql(&b.left, columns)?;
                let r = to_sql(&b.right, columns)?;
                let op = if b.op == Operator::And { "AND" } else { "OR" };
                Some(format!("({l} {op} {r})"))
            }
            Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq => {
                let (l, lk) = operand(&b.left, columns)?;
                let (r, rk) = operand(&b.right, columns)?;
                if !comparable(lk, rk, b.op) {
                    return None;
                }
                let op = match b.op {
                    Operator::Eq => "=",
                    Operator::NotEq => "<>",
                    Operator::Lt => "<",
                    Operator::LtEq => "<=",
                    Operator::Gt => ">",
                    _ => ">=",
                };
                Some(format!("({l} {op} {r})"))
            }
            _ => None,
        },
        Expr::Not(inner) => Some(format!("(NOT {})", to_sql(inner, columns)?)),
        Expr::IsNull(inner) => Some(format!("({} IS NULL)", operand(inner, columns)?.0)),
        Expr::IsNotNull(inner) => Some(format!("({} IS NOT NULL)", operand(inner, columns)?.0)),
        Expr::InList(list) => {
            let (target, kind) = operand(&list.expr, columns)?;
            if list.list.is_empty() {
                return None;
            }
            let mut items = Vec::with_capacity(list.list.len());
            for item in &list.list {
                let (sql, k) = operand(item, columns)?;
                if !comparable(kind, k, Operator::Eq) {
                    return None;
                }
                items.push(sql);
            }
            let not = if list.negated { "NOT " } else { "" };
            Some(format!("({target} {not}IN ({}))", items.join(", ")))
        }
        Expr::Between(b) => {
            let (target, kind) = operand(&b.expr, columns)?;
            let (low, lk) = operand(&b.low, columns)?;
            let (high, hk) = operand(&b.high, columns)?;
            if !comparable(kind, lk, Operator::LtEq) || !comparable(kind, hk, Operator::LtEq) {
                return None;
            }
            let not = if b.negated { "NOT " } else { "" };
            Some(format!("({target} {not}BETWEEN {low} AND {high})"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{cast, col, lit};

    fn columns() -> Vec<PgColumn> {
        vec![
            PgColumn::new("driver_id", 23),
            PgColumn::new("ts", 1184),
            PgColumn::new("name", 25),
            PgColumn::new("rate", 701),
            PgColumn::new("payload", 114),
        ]
    }

    fn utc_micros(v: i64) -> Expr {
        lit(ScalarValue::TimestampMicrosecond(
            Some(v),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn the_join_and_pull_filters_translate() {
        let cols = columns();
        let ts = cast(
            col("ts"),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        );
        let window = ts
            .clone()
            .gt_eq(utc_micros(0))
            .and(ts.lt_eq(utc_micros(1_500_000)));
        assert_eq!(
            to_sql(&window, &cols).unwrap(),
            "((\"ts\" >= TIMESTAMPTZ '1970-01-01 00:00:00.000000+00') AND \
             (\"ts\" <= TIMESTAMPTZ '1970-01-01 00:00:01.500000+00'))"
        );
        let keys = cast(col("driver_id"), DataType::Int64)
            .in_list(vec![lit(1001i64), lit(1002i64)], false);
        assert_eq!(
            to_sql(&keys, &cols).unwrap(),
            "(\"driver_id\" IN (1001, 1002))"
        );
        assert_eq!(
            to_sql(&col("name").eq(lit("o'k")), &cols).unwrap(),
            "(\"name\" = 'o''k')"
        );
    }

    #[test]
    fn what_postgres_would_answer_differently_is_not_pushed() {
        let cols = columns();
        // Collation order, NaN order, a narrowing cast, an unknown column, functions.
        assert!(to_sql(&col("name").lt(lit("b")), &cols).is_none());
        assert!(to_sql(&col("rate").lt(lit(f64::NAN)), &cols).is_none());
        assert!(to_sql(&cast(col("rate"), DataType::Int32).eq(lit(1)), &cols).is_none());
        assert!(to_sql(&col("nope").eq(lit(1)), &cols).is_none());
        assert!(to_sql(&(col("driver_id") + lit(1)).eq(lit(2)), &cols).is_none());
        // `payload` is json read as its text: compared as that text, not as json.
        assert_eq!(
            to_sql(&col("payload").eq(lit("{}")), &cols).unwrap(),
            "(\"payload\"::text = '{}')"
        );
    }

    #[tokio::test]
    async fn the_scan_selects_what_it_needs() {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgresql://nobody@127.0.0.1:1/none")
            .unwrap();
        let table = PostgresTable::with_columns(pool, "trips".into(), columns());
        let sql = table.scan_sql(
            Some(&vec![0, 1]),
            &[col("driver_id").eq(lit(7)), col("name").lt(lit("x"))],
            Some(10),
        );
        assert_eq!(
            sql,
            "SELECT \"driver_id\", (extract(epoch from \"ts\") * 1000000)::int8 FROM trips AS \
             feast_src WHERE (\"driver_id\" = 7) LIMIT 10"
        );
    }
}
