//! The point-in-time join as a DataFusion logical plan.
//!
//! Per requested view `i`, an [`AsOfJoinNode`] appends to every entity row the features of
//! the view's latest source row with the same join keys and
//! `entity_ts - ttl <= event_ts <= entity_ts` (ttl unset: no lower bound), ties broken by
//! the latest created timestamp (see [`crate::asof`]):
//!
//! ```text
//! entities(keys…, ts, …, row_id) ─AsOfJoin─ source_0(keys…, event_ts, created_ts, features…)
//!                                 ─AsOfJoin─ source_1(…) … → ORDER BY row_id → columns
//! ```
//!
//! Each source is cut to `[earliest - ttl, latest]` of the entity timestamps first (a
//! Parquet pruning predicate), and projected to the columns the join needs, cast to the
//! entity columns' and the view schema's types. Every entity row is kept exactly once, in
//! input order: the join streams the entity side in order and the entity table declares
//! its row-id order, so the final sort is planned away. Views without entities join on
//! time only (one group holding every source row).

use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, IntervalMonthDayNano};
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{Expr, cast, ident, lit};

use crate::asof::{AsOfJoinNode, AsOfSpec};
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
    let mut columns: Vec<Expr> = entity_columns.iter().map(ident).collect();
    let (state, mut out) = entities.into_parts();
    for (i, (view, source)) in views.into_iter().enumerate() {
        let source = view_source(i, ts_type, bounds, &view, source)?;
        let spec = AsOfSpec {
            entity_keys: view.keys.iter().map(|(e, _, _)| e.clone()).collect(),
            entity_ts: entity_ts.to_string(),
            has_created: view.created_ts.is_some(),
            ttl: view.ttl,
        };
        out = AsOfJoinNode::try_new(out, source.into_unoptimized_plan(), spec)?.into_plan();
        for (n, (_, name, _)) in view.features.iter().enumerate() {
            columns.push(ident(feature_col(i, n)).alias(name));
        }
    }
    Ok(DataFrame::new(state, out)
        .sort(vec![ident(ROW_ID).sort(true, false)])?
        .select(columns)?)
}

fn feature_col(i: usize, n: usize) -> String {
    format!("__v{i}_f{n}")
}

/// View `i`'s source as the as-of join reads it: keys (cast to the entity columns' types),
/// event and created timestamps (cast to the entity timestamp's type), features (cast to
/// the view schema's types), cut to the entity table's time window.
fn view_source(
    i: usize,
    ts_type: &DataType,
    bounds: &TimeBounds,
    view: &ViewJoin,
    source: DataFrame,
) -> Result<DataFrame> {
    let r_ts = format!("__v{i}_event_ts");
    let mut cols = Vec::new();
    for (j, (_, source_col, ty)) in view.keys.iter().enumerate() {
        cols.push(cast(ident(source_col), ty.clone()).alias(format!("__v{i}_rk{j}")));
    }
    cols.push(cast(ident(&view.event_ts), ts_type.clone()).alias(&r_ts));
    if let Some(created) = &view.created_ts {
        cols.push(cast(ident(created), ts_type.clone()).alias(format!("__v{i}_created_ts")));
    }
    for (n, (source_col, _, ty)) in view.features.iter().enumerate() {
        cols.push(cast(ident(source_col), ty.clone()).alias(feature_col(i, n)));
    }
    let mut source = source.select(cols)?;
    if let Some((earliest, latest)) = bounds {
        let mut keep = ident(&r_ts).lt_eq(lit(latest.clone()));
        if let Some(ttl) = view.ttl {
            let nanos = i64::try_from(ttl.as_nanos()).unwrap_or(i64::MAX);
            let ttl = lit(ScalarValue::IntervalMonthDayNano(Some(
                IntervalMonthDayNano::new(0, 0, nanos),
            )));
            keep = keep.and(ident(&r_ts).gt_eq(lit(earliest.clone()) - ttl));
        }
        source = source.filter(keep)?;
    }
    Ok(source)
}
