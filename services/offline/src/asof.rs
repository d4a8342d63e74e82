//! The point-in-time ("as of") join as a DataFusion operator of our own.
//!
//! For every row of the entity side, the source row with the same join keys whose event
//! timestamp is the latest one at or before the entity row's timestamp — and, with a ttl,
//! not older than `entity_ts - ttl` (both bounds inclusive). Equal event timestamps are
//! broken by the latest created timestamp (a missing created timestamp loses), then by the
//! later position in the source, so the answer never depends on scheduling.
//!
//! How it runs ([`AsOfJoinExec`]): the source side (already cut to the entity table's time
//! window and projected to keys, timestamps and the requested features) is collected and
//! indexed once — a hash table from the join keys (Arrow's row format, so any key types and
//! several keys work alike) to that key's rows, sorted by time. Entity batches then stream
//! through in their input order: one hash lookup and one binary search per entity row,
//! then each feature column is gathered from the source batches. Every row of either side
//! is touched once; the output keeps the entity side's order (no sort) and starts flowing
//! as soon as the index is built. Memory is the source's window plus 16 bytes per source
//! row, reserved in the session's memory pool.
//!
//! The logical side is [`AsOfJoinNode`], a plan extension that [`OfflineQueryPlanner`]
//! turns into the operator, so the join composes with DataFusion's scans, filters and
//! projections (predicate pushdown and Parquet pruning below it keep working).

use std::cmp::Ordering;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, new_null_array};
use datafusion::arrow::compute::{cast, interleave};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef, TimeUnit};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, DFSchemaRef, DataFusionError, Result, internal_err};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Expr, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    Partitioning, PlanProperties,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use futures::{StreamExt, TryStreamExt};
use hashbrown::{DefaultHashBuilder, HashTable};

/// What one as-of join needs besides its inputs. The source side's columns are, by
/// position: the join keys (already cast to the entity columns' types), the event
/// timestamp and, if `has_created`, the created timestamp (both cast to the entity
/// timestamp's type), then the features that are appended to the entity rows.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Hash)]
pub struct AsOfSpec {
    /// Entity-side columns holding the join keys, in the source's key order.
    pub entity_keys: Vec<String>,
    /// Entity-side timestamp column (the same timestamp type as the source's).
    pub entity_ts: String,
    pub has_created: bool,
    /// `None`: no lower bound.
    pub ttl: Option<Duration>,
}

impl AsOfSpec {
    fn first_feature(&self) -> usize {
        self.entity_keys.len() + 1 + usize::from(self.has_created)
    }
}

/// The logical node: the entity side's columns, then the source side's features.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AsOfJoinNode {
    entities: LogicalPlan,
    source: LogicalPlan,
    spec: AsOfSpec,
    schema: DFSchemaRef,
}

impl PartialOrd for AsOfJoinNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.entities.partial_cmp(&other.entities)? {
            Ordering::Equal => {}
            unequal => return Some(unequal),
        }
        match self.source.partial_cmp(&other.source)? {
            Ordering::Equal => self.spec.partial_cmp(&other.spec),
            unequal => Some(unequal),
        }
    }
}

impl AsOfJoinNode {
    pub fn try_new(entities: LogicalPlan, source: LogicalPlan, spec: AsOfSpec) -> Result<Self> {
        let first = spec.first_feature();
        if source.schema().fields().len() < first {
            return internal_err!(
                "as-of join: the source side has {} columns, fewer than its keys and timestamps",
                source.schema().fields().len()
            );
        }
        for column in spec.entity_keys.iter().chain([&spec.entity_ts]) {
            entities
                .schema()
                .index_of_column_by_name(None, column)
                .ok_or_else(|| {
                    DataFusionError::Plan(format!("as-of join: no entity column {column}"))
                })?;
        }
        let mut fields: Vec<_> = entities
            .schema()
            .iter()
            .map(|(q, f)| (q.cloned(), Arc::clone(f)))
            .collect();
        for field in source.schema().fields().iter().skip(first) {
            fields.push((None, Arc::new(field.as_ref().clone().with_nullable(true))));
        }
        let schema = Arc::new(DFSchema::new_with_metadata(
            fields,
            entities.schema().metadata().clone(),
        )?);
        Ok(Self {
            entities,
            source,
            spec,
            schema,
        })
    }

    /// The node as a plan.
    pub fn into_plan(self) -> LogicalPlan {
        LogicalPlan::Extension(datafusion::logical_expr::Extension {
            node: Arc::new(self),
        })
    }
}

impl UserDefinedLogicalNodeCore for AsOfJoinNode {
    fn name(&self) -> &str {
        "AsOfJoin"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.entities, &self.source]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "AsOfJoin: {}", Describe(&self.spec))
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        if inputs.len() != 2 {
            return internal_err!("as-of join: two inputs expected, got {}", inputs.len());
        }
        let source = inputs.pop().expect("two inputs");
        let entities = inputs.pop().expect("two inputs");
        Self::try_new(entities, source, self.spec.clone())
    }
}

struct Describe<'a>(&'a AsOfSpec);

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let spec = self.0;
        write!(
            f,
            "keys=[{}], ts={}, created={}",
            spec.entity_keys.join(", "),
            spec.entity_ts,
            spec.has_created
        )?;
        match spec.ttl {
            Some(ttl) => write!(f, ", ttl={}s", ttl.as_secs_f64()),
            None => write!(f, ", ttl=none"),
        }
    }
}

/// The session's query planner: DataFusion's, plus [`AsOfJoinNode`] → [`AsOfJoinExec`].
#[derive(Debug, Default)]
pub struct OfflineQueryPlanner;

#[async_trait]
impl QueryPlanner for OfflineQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(AsOfPlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

struct AsOfPlanner;

#[async_trait]
impl ExtensionPlanner for AsOfPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<AsOfJoinNode>() else {
            return Ok(None);
        };
        let [entities, source] = physical_inputs else {
            return internal_err!("as-of join: two physical inputs expected");
        };
        Ok(Some(Arc::new(AsOfJoinExec::try_new(
            Arc::clone(entities),
            Arc::clone(source),
            node.spec.clone(),
            Arc::new(node.schema.as_arrow().clone()),
        )?)))
    }
}

/// The physical operator (see the module documentation).
#[derive(Debug)]
pub struct AsOfJoinExec {
    entities: Arc<dyn ExecutionPlan>,
    source: Arc<dyn ExecutionPlan>,
    spec: AsOfSpec,
    /// Positions of `spec.entity_keys` and `spec.entity_ts` in the entity side.
    entity_keys: Vec<usize>,
    entity_ts: usize,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl AsOfJoinExec {
    pub fn try_new(
        entities: Arc<dyn ExecutionPlan>,
        source: Arc<dyn ExecutionPlan>,
        spec: AsOfSpec,
        schema: SchemaRef,
    ) -> Result<Self> {
        let entity_schema = entities.schema();
        let entity_keys = spec
            .entity_keys
            .iter()
            .map(|k| entity_schema.index_of(k))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let entity_ts = entity_schema.index_of(&spec.entity_ts)?;
        // The entity side's order (and any other ordering knowledge about its columns)
        // holds for the output: rows come out in input order, columns at the same places.
        let orderings = entities
            .equivalence_properties()
            .oeq_class()
            .iter()
            .cloned()
            .collect::<Vec<_>>();
        let eq = EquivalenceProperties::new_with_orderings(Arc::clone(&schema), orderings);
        let properties = PlanProperties::new(
            eq,
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self {
            entities,
            source,
            spec,
            entity_keys,
            entity_ts,
            schema,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for AsOfJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "AsOfJoinExec: {}", Describe(&self.spec))
    }
}

impl ExecutionPlan for AsOfJoinExec {
    fn name(&self) -> &str {
        "AsOfJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::SinglePartition, Distribution::SinglePartition]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true, false]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false, false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.entities, &self.source]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 2 {
            return internal_err!("as-of join: two children expected, got {}", children.len());
        }
        let source = children.pop().expect("two children");
        let entities = children.pop().expect("two children");
        Ok(Arc::new(Self::try_new(
            entities,
            source,
            self.spec.clone(),
            Arc::clone(&self.schema),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("as-of join: partition {partition} of 1");
        }
        let source = self.source.execute(0, Arc::clone(&context))?;
        let entities = self.entities.execute(0, Arc::clone(&context))?;
        let reservation = MemoryConsumer::new(format!("AsOfJoinExec[{partition}]"))
            .register(context.memory_pool());
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let build_time = MetricBuilder::new(&self.metrics).subset_time("build_time", partition);
        let build_rows = MetricBuilder::new(&self.metrics).counter("build_input_rows", partition);
        let spec = self.spec.clone();
        let (keys, ts) = (self.entity_keys.clone(), self.entity_ts);
        let schema = Arc::clone(&self.schema);
        let index = async move {
            let index = Index::build(source, &spec, reservation, &build_time).await?;
            build_rows.add(index.rows);
            Ok::<_, DataFusionError>(Arc::new(index))
        };
        let out_schema = Arc::clone(&schema);
        // `once` calls this exactly once; the Option moves the entity stream into it.
        let mut entities = Some(entities);
        let stream = futures::stream::once(index)
            .map_ok(move |index| {
                let schema = Arc::clone(&out_schema);
                let keys = keys.clone();
                let baseline = baseline.clone();
                let entities = entities.take().expect("the index is built once");
                entities.map(move |batch| {
                    let _timer = baseline.elapsed_compute().timer();
                    let out = index.probe(&schema, &batch?, &keys, ts)?;
                    baseline.record_output(out.num_rows());
                    Ok(out)
                })
            })
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// The indexed source side.
struct Index {
    /// `None` for views without entities: every source row is in the one group 0.
    converter: Option<RowConverter>,
    hasher: DefaultHashBuilder,
    /// Group ids, found by hashing a key's row bytes.
    groups: HashTable<u32>,
    /// Group `g`'s key is `key_bytes[key_ends[g - 1]..key_ends[g]]`.
    key_bytes: Vec<u8>,
    key_ends: Vec<usize>,
    /// Group `g`'s rows are `starts[g]..starts[g + 1]` of `event_ts` / `at`, by time.
    starts: Vec<u32>,
    event_ts: Vec<i64>,
    /// (source batch, row) of each indexed row.
    at: Vec<(u32, u32)>,
    /// Per feature: its array in every source batch, then a one-row null array that misses
    /// point at.
    features: Vec<Vec<ArrayRef>>,
    /// `ttl` in the timestamps' unit.
    ttl: Option<i64>,
    rows: usize,
    _reservation: MemoryReservation,
}

impl Index {
    async fn build(
        mut source: SendableRecordBatchStream,
        spec: &AsOfSpec,
        reservation: MemoryReservation,
        build_time: &Time,
    ) -> Result<Self> {
        let schema = source.schema();
        let k = spec.entity_keys.len();
        let first = spec.first_feature();
        let unit = match schema.field(k).data_type() {
            DataType::Timestamp(unit, _) => *unit,
            other => return internal_err!("as-of join: event timestamp of type {other}"),
        };
        let converter = if k == 0 {
            None
        } else {
            let fields = (0..k)
                .map(|j| SortField::new(schema.field(j).data_type().clone()))
                .collect();
            Some(RowConverter::new(fields)?)
        };
        let mut index = Index {
            converter,
            hasher: DefaultHashBuilder::default(),
            groups: HashTable::new(),
            key_bytes: Vec::new(),
            key_ends: Vec::new(),
            starts: Vec::new(),
            event_ts: Vec::new(),
            at: Vec::new(),
            features: vec![Vec::new(); schema.fields().len() - first],
            ttl: spec.ttl.map(|ttl| in_unit(ttl, unit)),
            rows: 0,
            _reservation: reservation.new_empty(),
        };

        // Pass 1, as batches arrive: each row's group (u32::MAX: the row cannot match, a
        // key or its event timestamp is null), and the rows per group.
        let mut batches = Vec::new();
        let mut row_groups: Vec<Vec<u32>> = Vec::new();
        let mut counts: Vec<u32> = Vec::new();
        while let Some(batch) = source.next().await {
            let batch = batch?;
            let _timer = build_time.timer();
            reservation.try_grow(batch.get_array_memory_size() + 4 * batch.num_rows())?;
            let ts = batch.column(k);
            let rows = index.key_rows(&batch.columns()[..k])?;
            let mut groups = Vec::with_capacity(batch.num_rows());
            for r in 0..batch.num_rows() {
                let usable = ts.is_valid(r) && (0..k).all(|j| batch.column(j).is_valid(r));
                if !usable {
                    groups.push(u32::MAX);
                    continue;
                }
                let g = index.group_or_insert(rows.as_ref(), r);
                if g as usize == counts.len() {
                    counts.push(0);
                }
                counts[g as usize] += 1;
                groups.push(g);
            }
            row_groups.push(groups);
            batches.push(batch);
        }

        let _timer = build_time.timer();
        let total: u32 = counts.iter().sum();
        index.rows = total as usize;
        reservation.try_grow(index.rows * 24 + counts.len() * 4)?;
        let mut starts = Vec::with_capacity(counts.len() + 1);
        let mut next = 0u32;
        for c in &counts {
            starts.push(next);
            next += c;
        }
        starts.push(next);
        drop(counts);

        // Pass 2: every usable row at its group's next free place, then each group sorted
        // by (event, created, position).
        let mut fill: Vec<u32> = starts[..starts.len() - 1].to_vec();
        let mut entries = vec![(0i64, 0i64, 0u32, 0u32); index.rows];
        for (b, (batch, groups)) in batches.iter().zip(&row_groups).enumerate() {
            let ts = cast(batch.column(k), &DataType::Int64)?;
            let ts = ts.as_primitive::<Int64Type>();
            let created = if spec.has_created {
                Some(cast(batch.column(k + 1), &DataType::Int64)?)
            } else {
                None
            };
            let created = created.as_ref().map(|c| c.as_primitive::<Int64Type>());
            for (r, &g) in groups.iter().enumerate() {
                if g == u32::MAX {
                    continue;
                }
                let slot = &mut fill[g as usize];
                let c = match created {
                    Some(c) if c.is_valid(r) => c.value(r),
                    _ => i64::MIN,
                };
                entries[*slot as usize] = (ts.value(r), c, b as u32, r as u32);
                *slot += 1;
            }
        }
        drop((fill, row_groups));
        for w in starts.windows(2) {
            entries[w[0] as usize..w[1] as usize].sort_unstable();
        }
        index.event_ts = entries.iter().map(|e| e.0).collect();
        index.at = entries.iter().map(|e| (e.2, e.3)).collect();
        drop(entries);
        reservation.shrink(index.rows * 8);
        index.starts = starts;

        for (f, arrays) in index.features.iter_mut().enumerate() {
            let column = first + f;
            arrays.extend(batches.iter().map(|b| Arc::clone(b.column(column))));
            arrays.push(new_null_array(schema.field(column).data_type(), 1));
        }
        index._reservation = reservation;
        Ok(index)
    }

    fn key_rows(&self, keys: &[ArrayRef]) -> Result<Option<Rows>> {
        match &self.converter {
            Some(converter) => Ok(Some(converter.convert_columns(keys)?)),
            None => Ok(None),
        }
    }

    fn key(&self, g: u32) -> &[u8] {
        let g = g as usize;
        let start = if g == 0 { 0 } else { self.key_ends[g - 1] };
        &self.key_bytes[start..self.key_ends[g]]
    }

    fn group_or_insert(&mut self, rows: Option<&Rows>, r: usize) -> u32 {
        let Some(rows) = rows else {
            if self.key_ends.is_empty() {
                self.key_ends.push(0);
            }
            return 0;
        };
        let bytes = rows.row(r);
        let bytes = bytes.as_ref();
        let hash = self.hasher.hash_one(bytes);
        if let Some(&g) = self.groups.find(hash, |&g| self.key(g) == bytes) {
            return g;
        }
        let g = self.key_ends.len() as u32;
        self.key_bytes.extend_from_slice(bytes);
        self.key_ends.push(self.key_bytes.len());
        let (key_bytes, key_ends, hasher) = (&self.key_bytes, &self.key_ends, &self.hasher);
        self.groups.insert_unique(hash, g, |&g| {
            let g = g as usize;
            let start = if g == 0 { 0 } else { key_ends[g - 1] };
            hasher.hash_one(&key_bytes[start..key_ends[g]])
        });
        g
    }

    fn group(&self, rows: Option<&Rows>, r: usize) -> Option<u32> {
        let Some(rows) = rows else {
            return (!self.key_ends.is_empty()).then_some(0);
        };
        let bytes = rows.row(r);
        let bytes = bytes.as_ref();
        let hash = self.hasher.hash_one(bytes);
        self.groups.find(hash, |&g| self.key(g) == bytes).copied()
    }

    /// The entity batch with the features of each row's best source row appended.
    fn probe(
        &self,
        schema: &SchemaRef,
        batch: &RecordBatch,
        keys: &[usize],
        ts: usize,
    ) -> Result<RecordBatch> {
        let key_columns: Vec<ArrayRef> =
            keys.iter().map(|&j| Arc::clone(batch.column(j))).collect();
        let rows = self.key_rows(&key_columns)?;
        let entity_ts = cast(batch.column(ts), &DataType::Int64)?;
        let entity_ts = entity_ts.as_primitive::<Int64Type>();
        let miss = (self.features.first().map_or(0, |f| f.len() - 1), 0);
        let mut picks = Vec::with_capacity(batch.num_rows());
        for r in 0..batch.num_rows() {
            let pick = (entity_ts.is_valid(r) && key_columns.iter().all(|c| c.is_valid(r)))
                .then(|| self.group(rows.as_ref(), r))
                .flatten()
                .and_then(|g| self.best(g, entity_ts.value(r)));
            picks.push(pick.map_or(miss, |(b, r)| (b as usize, r as usize)));
        }
        let mut columns = batch.columns().to_vec();
        for arrays in &self.features {
            let arrays: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
            columns.push(interleave(&arrays, &picks)?);
        }
        Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
    }

    /// Group `g`'s latest row at or before `ts` (within the ttl).
    fn best(&self, g: u32, ts: i64) -> Option<(u32, u32)> {
        let (lo, hi) = (
            self.starts[g as usize] as usize,
            self.starts[g as usize + 1] as usize,
        );
        let n = self.event_ts[lo..hi].partition_point(|&t| t <= ts);
        if n == 0 {
            return None;
        }
        let i = lo + n - 1;
        if let Some(ttl) = self.ttl
            && self.event_ts[i] < ts.saturating_sub(ttl)
        {
            return None;
        }
        Some(self.at[i])
    }
}

/// `d` in whole `unit`s: timestamps are whole units, so `event >= ts - floor(d)` is exactly
/// `event >= ts - d`.
fn in_unit(d: Duration, unit: TimeUnit) -> i64 {
    let per = match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    };
    i64::try_from(d.as_nanos() / per).unwrap_or(i64::MAX)
}
