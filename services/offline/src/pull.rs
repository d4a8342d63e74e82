//! Feast's materialization reads: `pull_latest_from_table_or_query` and
//! `pull_all_from_table_or_query` over a data source.
//!
//! Columns are named in source terms (the caller has already reversed the source's
//! `field_mapping`, as Feast's materialization does). The output has the join keys, the
//! feature columns, the event timestamp and the created timestamp, each once and in that
//! order, timestamps as UTC; a source without join keys gets Feast's `__dummy_id` column
//! (value `""`). Rows are those with `start <= event_ts <= end` (both inclusive, as Feast's
//! file store); an open end is unbounded.
//!
//! `pull_latest` keeps one row per join-key value: the latest event timestamp, equal
//! event timestamps going to the latest created timestamp.

use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::ExprFunctionExt;
use datafusion::logical_expr::{JoinType, Operator, binary_expr};
use datafusion::prelude::{Expr, cast, ident, lit};
use feast_core::model::{DUMMY_ENTITY_ID, DUMMY_ENTITY_VAL};

use crate::error::{OfflineError, Result};

/// The columns and time window of one pull.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullRequest {
    pub join_key_columns: Vec<String>,
    pub feature_name_columns: Vec<String>,
    pub timestamp_field: String,
    pub created_timestamp_column: Option<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

/// Which rows of the window to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullKind {
    /// The latest row per join-key value.
    Latest,
    /// Every row.
    All,
}

const RANK: &str = "__feast_pull_rank";
const NEWEST: &str = "__feast_pull_newest";

/// The pull as a plan over `source` (named `source_name` in errors).
pub fn plan(
    source: DataFrame,
    source_name: &str,
    request: &PullRequest,
    kind: PullKind,
) -> Result<DataFrame> {
    let schema = source.schema().clone();
    let column_type = |name: &str, what: &str| -> Result<DataType> {
        schema
            .fields()
            .iter()
            .find(|f| f.name() == name)
            .map(|f| f.data_type().clone())
            .ok_or_else(|| {
                let columns: Vec<&str> =
                    schema.fields().iter().map(|f| f.name().as_str()).collect();
                OfflineError::Invalid(format!(
                    "data source {source_name} has no {what} column {name} (columns: {})",
                    columns.join(", ")
                ))
            })
    };
    let mut select: Vec<Expr> = Vec::new();
    let add = |name: &str, expr: Expr, select: &mut Vec<Expr>| {
        if !select.iter().any(|e| e.schema_name().to_string() == name) {
            select.push(expr.alias(name));
        }
    };
    for jk in &request.join_key_columns {
        column_type(jk, "join key")?;
        add(jk, ident(jk), &mut select);
    }
    for f in &request.feature_name_columns {
        column_type(f, "feature")?;
        add(f, ident(f), &mut select);
    }
    let ts = &request.timestamp_field;
    let ts_expr = utc(ident(ts), &column_type(ts, "timestamp")?, ts)?;
    add(ts, ts_expr.clone(), &mut select);
    let created = match &request.created_timestamp_column {
        Some(c) if !c.is_empty() => {
            let e = utc(ident(c), &column_type(c, "created timestamp")?, c)?;
            add(c, e.clone(), &mut select);
            Some((c.clone(), e))
        }
        _ => None,
    };
    let keyless = request.join_key_columns.is_empty();
    if keyless {
        add(DUMMY_ENTITY_ID, lit(DUMMY_ENTITY_VAL), &mut select);
    }

    let mut df = source;
    let bound = |t: &DateTime<Utc>| {
        lit(ScalarValue::TimestampMicrosecond(
            Some(t.timestamp_micros()),
            Some("UTC".into()),
        ))
    };
    let mut keep: Option<Expr> = None;
    if let Some(start) = &request.start {
        keep = Some(ts_expr.clone().gt_eq(bound(start)));
    }
    if let Some(end) = &request.end {
        let e = ts_expr.clone().lt_eq(bound(end));
        keep = Some(match keep {
            Some(k) => k.and(e),
            None => e,
        });
    }
    if let Some(keep) = keep {
        df = df.filter(keep)?;
    }
    let out_names: Vec<String> = select.iter().map(|e| e.schema_name().to_string()).collect();
    df = df.select(select)?;
    if kind == PullKind::Latest {
        let keys: Vec<String> = if keyless {
            vec![DUMMY_ENTITY_ID.to_string()]
        } else {
            request.join_key_columns.clone()
        };
        // First the newest event time of each key: a hash aggregate holding one entry per
        // key, whatever the number of rows. Then the rows at that time, through a hash join
        // built on that per-key table while the source streams past it. Only then a
        // ROW_NUMBER over those few rows breaks ties on the created timestamp. Memory grows
        // with the keys, not with the rows (a ROW_NUMBER over every row sorts them all:
        // 1.5 GB for 10M rows).
        let key_alias = |i: usize| format!("{NEWEST}_k{i}");
        let mut group: Vec<Expr> = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            group.push(ident(k).alias(key_alias(i)));
        }
        let newest = df
            .clone()
            .aggregate(group, vec![max(ident(ts)).alias(NEWEST)])?;
        let mut on: Vec<Expr> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| same(ident(key_alias(i)), ident(k)))
            .collect();
        on.push(same(ident(NEWEST), ident(ts)));
        df = newest
            .join_on(df, JoinType::Inner, on)?
            .select(out_names.iter().map(ident).collect::<Vec<Expr>>())?;
        if let Some((c, _)) = &created {
            let rank = row_number()
                .partition_by(keys.iter().map(ident).collect())
                .order_by(vec![ident(c).sort(false, false)])
                .build()?
                .alias(RANK);
            df = df
                .window(vec![rank])?
                .filter(ident(RANK).eq(lit(1u64)))?
                .select(out_names.iter().map(ident).collect::<Vec<Expr>>())?;
        } else {
            // Rows with equal keys and times: keep one, as the ranking would.
            let rank = row_number()
                .partition_by(keys.iter().map(ident).collect())
                .build()?
                .alias(RANK);
            df = df
                .window(vec![rank])?
                .filter(ident(RANK).eq(lit(1u64)))?
                .select(out_names.iter().map(ident).collect::<Vec<Expr>>())?;
        }
    }
    Ok(df)
}

/// `a IS NOT DISTINCT FROM b`: equal, nulls equal to nulls (a hash-join key that keeps
/// null keys together, as the per-key grouping does).
fn same(a: Expr, b: Expr) -> Expr {
    binary_expr(a, Operator::IsNotDistinctFrom, b)
}

/// `expr` (a column of type `ty`) as a UTC timestamp: naive timestamps are UTC (Feast's
/// `make_tzaware`), zoned ones converted, dates at midnight.
fn utc(expr: Expr, ty: &DataType, name: &str) -> Result<Expr> {
    let target = match ty {
        DataType::Timestamp(unit, _) => DataType::Timestamp(*unit, Some("UTC".into())),
        DataType::Date32 | DataType::Date64 | DataType::Utf8 | DataType::LargeUtf8 => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        other => {
            return Err(OfflineError::Invalid(format!(
                "timestamp column {name} has type {other}; expected a timestamp"
            )));
        }
    };
    Ok(cast(expr, target))
}
