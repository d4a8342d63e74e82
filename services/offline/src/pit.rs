//! The point-in-time join as a DataFusion logical plan.
//!
//! Per requested view `i`:
//!
//! ```text
//! entities(row_id, ts, keys…)  INNER JOIN  source(keys…, event_ts, created_ts, features…)
//!     ON keys equal AND event_ts <= ts AND event_ts >= ts - ttl      (ttl unset: no lower bound)
//! → GROUP BY row_id: FIRST_VALUE(feature ORDER BY event_ts DESC, created_ts DESC NULLS LAST)
//! → (row_id, features…)
//! ```
//!
//! and then `entities LEFT JOIN view_0 ON row_id LEFT JOIN view_1 … ORDER BY row_id`, which
//! keeps every entity row exactly once, in input order. Views without entities join on time
//! only (a nested-loop join). Join keys are equi-join predicates (hash joins); DataFusion
//! chooses the build side; the aggregate keeps one state per entity row and spills where
//! it can.
//!
//! What a later slice improves: the inner join still produces every feature row older than
//! each entity row (within ttl) before the aggregate picks the best; an as-of operator (sort
//! both sides by keys and time, one merge pass keeping the last qualifying row per entity
//! row) would touch each row once. DataFusion 55 has no AsOf join, so that is our own
//! `ExecutionPlan` to write and measure against this plan.

use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, IntervalMonthDayNano};
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::functions_aggregate::expr_fn::first_value;
use datafusion::logical_expr::JoinType;
use datafusion::prelude::{Expr, cast, ident, lit};

use crate::error::Result;

/// Row id added to the entity table (input position; the output order).
pub const ROW_ID: &str = "__feast_row_id";

/// One view's part of the join, in source-column terms.
#[derive(Debug, Clone)]
pub struct ViewJoin {
    /// (entity-table column, source column, entity column type) per join key.
    pub keys: Vec<(String, String, DataType)>,
    /// Source column of the event timestamp.
    pub event_ts: String,
    /// Source column of the created timestamp, if the source has one.
    pub created_ts: Option<String>,
    /// (source column, output name, output type) per requested feature.
    pub features: Vec<(String, String, DataType)>,
    /// `None`: unbounded.
    pub ttl: Option<Duration>,
}

/// The entity table's earliest and latest timestamps (`None` when it is empty).
pub type TimeBounds = Option<(ScalarValue, ScalarValue)>;

/// Builds the plan over `entities` (which must have [`ROW_ID`] and the UTC timestamp column
/// `entity_ts` of type `ts_type`) and one source DataFrame per view. The output has the
/// entity columns in `entity_columns` order, then each view's features.
///
/// `bounds` restricts every source to `[earliest - ttl, latest]` before the join, as
/// Feast's stores do with the entity timestamp range; on Parquet the predicate prunes row
/// groups by their statistics.
pub fn plan(
    entities: DataFrame,
    entity_columns: &[String],
    entity_ts: &str,
    ts_type: &DataType,
    bounds: &TimeBounds,
    views: Vec<(ViewJoin, DataFrame)>,
) -> Result<DataFrame> {
    let mut matched = Vec::with_capacity(views.len());
    for (i, (view, source)) in views.into_iter().enumerate() {
        matched.push((
            view_matches(i, &entities, entity_ts, ts_type, bounds, &view, source)?,
            view,
        ));
    }
    let mut out = entities;
    let mut columns: Vec<Expr> = entity_columns.iter().map(ident).collect();
    for (i, (m, view)) in matched.into_iter().enumerate() {
        out = out.join_on(m, JoinType::Left, [ident(ROW_ID).eq(ident(rid(i)))])?;
        for (n, (_, name, _)) in view.features.iter().enumerate() {
            columns.push(ident(feature_col(i, n)).alias(name));
        }
    }
    Ok(out
        .sort(vec![ident(ROW_ID).sort(true, false)])?
        .select(columns)?)
}

fn rid(i: usize) -> String {
    format!("__v{i}_row_id")
}

fn feature_col(i: usize, n: usize) -> String {
    format!("__v{i}_f{n}")
}

/// `(row_id, features…)` of the best feature row of view `i` per entity row that has one.
fn view_matches(
    i: usize,
    entities: &DataFrame,
    entity_ts: &str,
    ts_type: &DataType,
    bounds: &TimeBounds,
    view: &ViewJoin,
    source: DataFrame,
) -> Result<DataFrame> {
    let (l_ts, r_ts, r_created) = (
        format!("__v{i}_entity_ts"),
        format!("__v{i}_event_ts"),
        format!("__v{i}_created_ts"),
    );
    let l_key = |j: usize| format!("__v{i}_lk{j}");
    let r_key = |j: usize| format!("__v{i}_rk{j}");

    let mut left_cols = vec![ident(ROW_ID).alias(rid(i)), ident(entity_ts).alias(&l_ts)];
    let mut right_cols = vec![cast(ident(&view.event_ts), ts_type.clone()).alias(&r_ts)];
    let mut on = Vec::new();
    for (j, (entity_col, source_col, ty)) in view.keys.iter().enumerate() {
        left_cols.push(ident(entity_col).alias(l_key(j)));
        right_cols.push(cast(ident(source_col), ty.clone()).alias(r_key(j)));
        on.push(ident(l_key(j)).eq(ident(r_key(j))));
    }
    if let Some(created) = &view.created_ts {
        right_cols.push(cast(ident(created), ts_type.clone()).alias(&r_created));
    }
    for (n, (source_col, _, ty)) in view.features.iter().enumerate() {
        right_cols.push(cast(ident(source_col), ty.clone()).alias(feature_col(i, n)));
    }
    on.push(ident(&r_ts).lt_eq(ident(&l_ts)));
    let ttl = view.ttl.map(|ttl| {
        let nanos = i64::try_from(ttl.as_nanos()).unwrap_or(i64::MAX);
        lit(ScalarValue::IntervalMonthDayNano(Some(
            IntervalMonthDayNano::new(0, 0, nanos),
        )))
    });
    if let Some(ttl) = &ttl {
        // The lower bound is computed once per entity row, not per candidate pair.
        let l_lower = format!("__v{i}_lower_ts");
        left_cols.push((ident(entity_ts) - ttl.clone()).alias(&l_lower));
        on.push(ident(&r_ts).gt_eq(ident(l_lower)));
    }

    let left = entities.clone().select(left_cols)?;
    let mut right = source.select(right_cols)?;
    if let Some((earliest, latest)) = bounds {
        let mut keep = ident(&r_ts).lt_eq(lit(latest.clone()));
        if let Some(ttl) = ttl {
            keep = keep.and(ident(&r_ts).gt_eq(lit(earliest.clone()) - ttl));
        }
        right = right.filter(keep)?;
    }
    let mut order = vec![ident(&r_ts).sort(false, false)];
    if view.created_ts.is_some() {
        order.push(ident(&r_created).sort(false, false));
    }
    // The best candidate per entity row: a hash aggregate keeping, per feature, the value
    // of the row that sorts first (latest event, then created timestamp). FIRST_VALUE is
    // order-"beneficial" in DataFusion: no sort is planned; each group compares the
    // ordering keys as rows stream in, so time is linear and memory is per entity row,
    // not per candidate (a ROW_NUMBER window sorted every candidate with its features).
    let best: Vec<Expr> = (0..view.features.len())
        .map(|n| first_value(ident(feature_col(i, n)), order.clone()).alias(feature_col(i, n)))
        .collect();
    Ok(left
        .join_on(right, JoinType::Inner, on)?
        .aggregate(vec![ident(rid(i))], best)?)
}
