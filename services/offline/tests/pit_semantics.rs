//! Table-driven tests pinning the point-in-time join semantics.
//!
//! One small repository (YAML definitions, data files written from the text tables below)
//! and a list of cases: an entity table, the features asked for, and the expected output
//! exactly as Arrow pretty-prints it. Timestamps in the tables: `ts` columns are tz-naive
//! (taken as UTC, as Feast does), `tsz` columns UTC.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::util::pretty::pretty_format_batches;
use feast_core::registry::diff;
use feast_core::registry::{Catalog, timestamp};
use feast_core::repo;
use feast_offline::{
    EntityTable, FeatureSelection, FileOfflineStore, HistoricalRequest, OfflineError, OfflineStore,
};
use futures::TryStreamExt;

const DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
  - {name: customer, join_keys: [customer_id], value_type: STRING}
data_sources:
  - name: driver_src
    type: file
    path: data/driver_stats.parquet
    timestamp_field: event_timestamp
    created_timestamp_column: created
    field_mapping: {conv: conv_rate}
  - {name: affinity_src, type: file, path: data/affinity.csv, timestamp_field: ts}
  - {name: global_src, type: file, path: data/global, timestamp_field: event_timestamp}
  - {name: glob_src, type: file, path: "data/parts/part-*.parquet", timestamp_field: event_timestamp}
feature_views:
  - name: driver_hourly
    entities: [driver]
    ttl: 1h
    schema:
      - {name: conv_rate, dtype: Float32}
      - {name: acc_rate, dtype: Float64}
      - {name: trips, dtype: Int64}
    source: driver_src
  - name: affinity
    entities: [driver, customer]
    ttl: 0
    schema: [{name: score, dtype: Float64}]
    source: affinity_src
  - name: global_stats
    ttl: 2h
    schema: [{name: total, dtype: Int64}]
    source: global_src
  - name: driver_parts
    entities: [driver]
    schema: [{name: rank, dtype: Int32}]
    source: glob_src
feature_services:
  - name: aliased
    features:
      - feature_view: driver_hourly
        features: [trips, conv_rate]
        alias: dh
        join_key_map: {driver_id: rider}
  - name: everything
    features: [driver_hourly, global_stats]
"#;

// Two rows at 11:00 for driver 1001: the later created (11:30) wins. Two at 09:00 for
// 1002: the one with a created timestamp wins over the later one without. `conv` is the source
// name of conv_rate (field_mapping).
const DRIVER_STATS: &str = "
driver_id:i64 | event_timestamp:tsz  | created:tsz          | conv:f32 | acc_rate:f64 | trips:i64
1001          | 2024-05-01T10:00:00  | 2024-05-01T10:00:00  | 0.1      | 1.0          | 1
1001          | 2024-05-01T11:00:00  | 2024-05-01T11:30:00  | 0.3      | 3.0          | 3
1001          | 2024-05-01T11:00:00  | 2024-05-01T11:00:00  | 0.2      | 2.0          | 2
1002          | 2024-05-01T09:00:00  | 2024-05-01T09:00:00  | 0.5      | 5.0          | 5
1002          | 2024-05-01T09:00:00  | null                 | 0.9      | 9.0          | 9
1003          | 2024-05-01T09:00:00  | null                 | null     | 7.0          | 7
";

const AFFINITY_CSV: &str = "driver_id,customer_id,score,ts
1001,c1,0.1,2024-01-01T00:00:00Z
1001,c2,0.2,2024-01-01T00:00:00Z
1001,c1,0.11,2024-04-01T00:00:00Z
1002,c1,0.5,2024-06-01T00:00:00Z
";

// Two files in a directory: the view reads both.
const GLOBAL_A: &str = "
total:i64 | event_timestamp:tsz
100       | 2024-05-01T08:00:00
";
const GLOBAL_B: &str = "
total:i64 | event_timestamp:tsz
200       | 2024-05-01T10:00:00
";
const PART_1: &str = "
driver_id:i64 | rank:i32 | event_timestamp:tsz
1001          | 1        | 2024-05-01T00:00:00
";
const PART_2: &str = "
driver_id:i64 | rank:i32 | event_timestamp:tsz
1002          | 2        | 2024-05-01T00:00:00
";

fn setup() -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("defs.yaml"), DEFS).unwrap();
    let data = root.join("data");
    std::fs::create_dir_all(data.join("global")).unwrap();
    std::fs::create_dir_all(data.join("parts")).unwrap();
    write_parquet(&data.join("driver_stats.parquet"), &table(DRIVER_STATS));
    std::fs::write(data.join("affinity.csv"), AFFINITY_CSV).unwrap();
    write_parquet(&data.join("global/a.parquet"), &table(GLOBAL_A));
    write_parquet(&data.join("global/b.parquet"), &table(GLOBAL_B));
    write_parquet(&data.join("parts/part-1.parquet"), &table(PART_1));
    write_parquet(&data.join("parts/part-2.parquet"), &table(PART_2));

    let desired = repo::load_repo(root, "demo").unwrap();
    let mut catalog = Catalog::new();
    let plan = diff::diff(&catalog, "demo", &desired);
    let now = timestamp(chrono::Utc::now());
    diff::apply_diff(&mut catalog, "demo", &desired, &plan, now).unwrap();
    (dir, catalog)
}

/// Parses a `name:type | …` table. Types: i32 i64 f32 f64 str bool ts (tz-naive µs) tsz (UTC µs).
fn table(text: &str) -> RecordBatch {
    let mut lines = text.trim().lines();
    let split = |l: &str| {
        l.split('|')
            .map(|c| c.trim().to_string())
            .collect::<Vec<_>>()
    };
    let header = split(lines.next().unwrap());
    let rows: Vec<Vec<String>> = lines.map(split).collect();
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (i, h) in header.iter().enumerate() {
        let (name, ty) = h.split_once(':').unwrap();
        let cells: Vec<Option<&str>> = rows
            .iter()
            .map(|r| Some(r[i].as_str()).filter(|c| *c != "null"))
            .collect();
        let micros = |c: &str| {
            chrono::NaiveDateTime::parse_from_str(c, "%Y-%m-%dT%H:%M:%S")
                .unwrap()
                .and_utc()
                .timestamp_micros()
        };
        let (dt, array): (DataType, ArrayRef) = match ty {
            "i32" => (
                DataType::Int32,
                Arc::new(Int32Array::from_iter(
                    cells.iter().map(|c| c.map(|c| c.parse().unwrap())),
                )),
            ),
            "i64" => (
                DataType::Int64,
                Arc::new(Int64Array::from_iter(
                    cells.iter().map(|c| c.map(|c| c.parse().unwrap())),
                )),
            ),
            "f32" => (
                DataType::Float32,
                Arc::new(Float32Array::from_iter(
                    cells.iter().map(|c| c.map(|c| c.parse().unwrap())),
                )),
            ),
            "f64" => (
                DataType::Float64,
                Arc::new(Float64Array::from_iter(
                    cells.iter().map(|c| c.map(|c| c.parse().unwrap())),
                )),
            ),
            "bool" => (
                DataType::Boolean,
                Arc::new(BooleanArray::from_iter(
                    cells.iter().map(|c| c.map(|c| c == "true")),
                )),
            ),
            "str" => (
                DataType::Utf8,
                Arc::new(StringArray::from_iter(cells.iter().copied())),
            ),
            "ts" => (
                DataType::Timestamp(TimeUnit::Microsecond, None),
                Arc::new(TimestampMicrosecondArray::from_iter(
                    cells.iter().map(|c| c.map(micros)),
                )),
            ),
            "tsz" => (
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                Arc::new(
                    TimestampMicrosecondArray::from_iter(cells.iter().map(|c| c.map(micros)))
                        .with_timezone("UTC"),
                ),
            ),
            other => panic!("unknown type {other}"),
        };
        fields.push(Field::new(name, dt, true));
        columns.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

fn write_parquet(path: &Path, batch: &RecordBatch) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

fn refs(r: &[&str]) -> FeatureSelection {
    FeatureSelection::Refs(r.iter().map(|s| s.to_string()).collect())
}

async fn run(
    catalog: &Catalog,
    root: &Path,
    entities: &str,
    features: FeatureSelection,
    full_feature_names: bool,
) -> Result<String, OfflineError> {
    let batch = table(entities);
    // Two input batches: row ids must run across batch boundaries.
    let (a, b) = (
        batch.slice(0, batch.num_rows() / 2),
        batch.slice(
            batch.num_rows() / 2,
            batch.num_rows() - batch.num_rows() / 2,
        ),
    );
    let entities = EntityTable::new(batch.schema(), vec![a, b]);
    let store = FileOfflineStore::new(root);
    let request = HistoricalRequest {
        features,
        full_feature_names,
    };
    let stream = store
        .get_historical_features(catalog, "demo", entities, &request)
        .await?;
    let batches: Vec<RecordBatch> = stream.try_collect().await?;
    Ok(pretty_format_batches(&batches).unwrap().to_string())
}

struct Case {
    name: &'static str,
    entities: &'static str,
    features: FeatureSelection,
    full: bool,
    expected: &'static str,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "ttl edges inclusive, created tie-break, missing and null entity, duplicates kept, input order",
            entities: "
driver_id:i64 | event_timestamp:ts
1001          | 2024-05-01T11:00:00
1001          | 2024-05-01T10:59:59
1001          | 2024-05-01T12:00:00
1001          | 2024-05-01T12:00:01
1002          | 2024-05-01T10:00:00
1002          | 2024-05-01T08:59:59
9999          | 2024-05-01T11:00:00
1001          | 2024-05-01T11:00:00
null          | 2024-05-01T11:00:00
1003          | 2024-05-01T09:30:00
",
            features: refs(&["driver_hourly:conv_rate", "driver_hourly:trips"]),
            full: false,
            expected: "
+-----------+----------------------+-----------+-------+
| driver_id | event_timestamp      | conv_rate | trips |
+-----------+----------------------+-----------+-------+
| 1001      | 2024-05-01T11:00:00Z | 0.3       | 3     |
| 1001      | 2024-05-01T10:59:59Z | 0.1       | 1     |
| 1001      | 2024-05-01T12:00:00Z | 0.3       | 3     |
| 1001      | 2024-05-01T12:00:01Z |           |       |
| 1002      | 2024-05-01T10:00:00Z | 0.5       | 5     |
| 1002      | 2024-05-01T08:59:59Z |           |       |
| 9999      | 2024-05-01T11:00:00Z |           |       |
| 1001      | 2024-05-01T11:00:00Z | 0.3       | 3     |
|           | 2024-05-01T11:00:00Z |           |       |
| 1003      | 2024-05-01T09:30:00Z |           | 7     |
+-----------+----------------------+-----------+-------+",
        },
        Case {
            name: "ttl 0 is unbounded; two join keys; CSV source",
            entities: "
customer_id:str | driver_id:i64 | event_timestamp:ts
c1              | 1001          | 2024-03-01T00:00:00
c1              | 1001          | 2024-05-01T00:00:00
c2              | 1001          | 2030-01-01T00:00:00
c2              | 1002          | 2024-07-01T00:00:00
c1              | 1002          | 2024-05-01T00:00:00
c1              | 1002          | 2024-06-01T00:00:00
",
            features: refs(&["affinity:score"]),
            full: true,
            expected: "
+-------------+-----------+----------------------+-----------------+
| customer_id | driver_id | event_timestamp      | affinity__score |
+-------------+-----------+----------------------+-----------------+
| c1          | 1001      | 2024-03-01T00:00:00Z | 0.1             |
| c1          | 1001      | 2024-05-01T00:00:00Z | 0.11            |
| c2          | 1001      | 2030-01-01T00:00:00Z | 0.2             |
| c2          | 1002      | 2024-07-01T00:00:00Z |                 |
| c1          | 1002      | 2024-05-01T00:00:00Z |                 |
| c1          | 1002      | 2024-06-01T00:00:00Z | 0.5             |
+-------------+-----------+----------------------+-----------------+",
        },
        Case {
            name: "entity-less view joins on time only; directory source; several views; extra columns",
            entities: "
label:bool | event_timestamp:ts  | driver_id:i64
true       | 2024-05-01T07:59:59 | 1001
false      | 2024-05-01T08:00:00 | 1002
true       | 2024-05-01T10:00:00 | 1001
true       | 2024-05-01T12:00:00 | 1001
null       | 2024-05-01T12:00:01 | 1002
",
            features: FeatureSelection::Service("everything".into()),
            full: true,
            expected: "
+-------+----------------------+-----------+--------------------------+-------------------------+----------------------+---------------------+
| label | event_timestamp      | driver_id | driver_hourly__conv_rate | driver_hourly__acc_rate | driver_hourly__trips | global_stats__total |
+-------+----------------------+-----------+--------------------------+-------------------------+----------------------+---------------------+
| true  | 2024-05-01T07:59:59Z | 1001      |                          |                         |                      |                     |
| false | 2024-05-01T08:00:00Z | 1002      |                          |                         |                      | 100                 |
| true  | 2024-05-01T10:00:00Z | 1001      | 0.1                      | 1.0                     | 1                    | 200                 |
| true  | 2024-05-01T12:00:00Z | 1001      | 0.3                      | 3.0                     | 3                    | 200                 |
|       | 2024-05-01T12:00:01Z | 1002      |                          |                         |                      |                     |
+-------+----------------------+-----------+--------------------------+-------------------------+----------------------+---------------------+",
        },
        Case {
            name: "feature service alias and join_key_map; glob source",
            entities: "
rider:i64 | event_timestamp:ts
1001      | 2024-05-01T11:15:00
1002      | 2024-05-01T09:00:00
",
            features: FeatureSelection::Service("aliased".into()),
            full: true,
            expected: "
+-------+----------------------+-----------+---------------+
| rider | event_timestamp      | dh__trips | dh__conv_rate |
+-------+----------------------+-----------+---------------+
| 1001  | 2024-05-01T11:15:00Z | 3         | 0.3           |
| 1002  | 2024-05-01T09:00:00Z | 5         | 0.5           |
+-------+----------------------+-----------+---------------+",
        },
        Case {
            name: "glob source; timestamp column found by type when not named event_timestamp",
            entities: "
driver_id:i64 | at:ts
1002          | 2024-05-02T00:00:00
1001          | 2024-05-01T00:00:00
1003          | 2024-05-02T00:00:00
",
            features: refs(&["driver_parts:rank"]),
            full: false,
            expected: "
+-----------+----------------------+------+
| driver_id | at                   | rank |
+-----------+----------------------+------+
| 1002      | 2024-05-02T00:00:00Z | 2    |
| 1001      | 2024-05-01T00:00:00Z | 1    |
| 1003      | 2024-05-02T00:00:00Z |      |
+-----------+----------------------+------+",
        },
    ]
}

#[tokio::test]
async fn point_in_time_semantics() {
    let (dir, catalog) = setup();
    let mut failures = Vec::new();
    for case in cases() {
        let got = match run(
            &catalog,
            dir.path(),
            case.entities,
            case.features,
            case.full,
        )
        .await
        {
            Ok(s) => s,
            Err(e) => format!("error: {e}"),
        };
        if got.trim() != case.expected.trim() {
            failures.push(format!(
                "--- {}\nexpected:\n{}\ngot:\n{}",
                case.name,
                case.expected.trim(),
                got
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// The first case's result on a store whose memory pool holds `bytes`.
async fn first_case_in_a_pool_of(bytes: usize) -> Result<Vec<RecordBatch>, OfflineError> {
    let (dir, catalog) = setup();
    let case = &cases()[0];
    let batch = table(case.entities);
    let store = FileOfflineStore::new(dir.path())
        .with_memory_limit(bytes)
        .unwrap();
    let request = HistoricalRequest {
        features: case.features.clone(),
        full_feature_names: case.full,
    };
    let stream = store
        .get_historical_features(
            &catalog,
            "demo",
            EntityTable::new(batch.schema(), vec![batch]),
            &request,
        )
        .await?;
    Ok(stream.try_collect().await?)
}

/// The same answers under a small memory pool (the as-of index and the scans fit in it).
#[tokio::test]
async fn a_memory_limit_keeps_the_answers() {
    let batches = first_case_in_a_pool_of(2 << 20).await.unwrap();
    assert_eq!(
        pretty_format_batches(&batches).unwrap().to_string().trim(),
        cases()[0].expected.trim()
    );
}

/// The as-of index does not spill: a pool too small for a view's source window is a clear
/// "Resources exhausted" error, not a wrong or partial answer.
#[tokio::test]
async fn a_pool_too_small_for_the_index_is_a_clear_error() {
    let e = first_case_in_a_pool_of(512)
        .await
        .expect_err("512 bytes cannot hold the index");
    assert!(e.to_string().contains("Resources exhausted"), "{e}");
    assert!(e.to_string().contains("AsOfJoinExec"), "{e}");
}

#[tokio::test]
async fn output_types_follow_the_view_schema() {
    let (dir, catalog) = setup();
    let entities = table(
        "
driver_id:i64 | event_timestamp:ts
1001          | 2024-05-01T11:00:00
",
    );
    let store = FileOfflineStore::new(dir.path());
    let request = HistoricalRequest {
        features: refs(&[
            "driver_hourly:conv_rate",
            "driver_hourly:acc_rate",
            "driver_hourly:trips",
            "driver_parts:rank",
        ]),
        full_feature_names: false,
    };
    let stream = store
        .get_historical_features(
            &catalog,
            "demo",
            EntityTable::new(entities.schema(), vec![entities]),
            &request,
        )
        .await
        .unwrap();
    let schema = stream.schema();
    let types: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect();
    assert_eq!(
        types,
        [
            "driver_id: Int64",
            "event_timestamp: Timestamp(µs, \"UTC\")",
            "conv_rate: Float32",
            "acc_rate: Float64",
            "trips: Int64",
            "rank: Int32",
        ]
    );
}

#[tokio::test]
async fn bad_requests_are_clear_errors() {
    let (dir, catalog) = setup();
    let ok = "
driver_id:i64 | event_timestamp:ts
1001          | 2024-05-01T11:00:00
";
    let cases: Vec<(&str, FeatureSelection, &str)> = vec![
        (ok, refs(&["nope:x"]), "Feature view nope does not exist"),
        (
            ok,
            refs(&["driver_hourly:nope"]),
            "Feature nope not found in projection driver_hourly",
        ),
        (ok, refs(&["driver_hourly"]), "is not of the form"),
        (ok, FeatureSelection::Service("nope".into()), "nope"),
        (
            ok,
            refs(&["affinity:score"]),
            "the entity table has no column customer_id",
        ),
        (
            "driver_id:i64\n1001",
            refs(&["driver_hourly:trips"]),
            "with a column named event_timestamp",
        ),
        (
            "driver_id:i64 | event_timestamp:str\n1001 | x",
            refs(&["driver_hourly:trips"]),
            "has type Utf8; expected a timestamp",
        ),
        (
            ok,
            refs(&["driver_hourly:trips", "driver_parts:trips"]),
            "not found in projection",
        ),
    ];
    for (entities, features, expected) in cases {
        let err = run(&catalog, dir.path(), entities, features.clone(), false)
            .await
            .expect_err(&format!("{features:?} should fail"));
        assert!(err.to_string().contains(expected), "{features:?}: {err}");
    }

    // A source file that is gone.
    std::fs::remove_file(dir.path().join("data/driver_stats.parquet")).unwrap();
    let err = run(
        &catalog,
        dir.path(),
        ok,
        refs(&["driver_hourly:trips"]),
        false,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("data source of feature view driver_hourly")
            && err.to_string().contains("does not exist"),
        "{err}"
    );
}

#[tokio::test]
async fn name_collisions_without_full_names_are_rejected() {
    let (dir, catalog) = setup();
    let ok = "
driver_id:i64 | event_timestamp:ts
1001          | 2024-05-01T11:00:00
";
    let err = run(
        &catalog,
        dir.path(),
        ok,
        refs(&["driver_hourly:trips", "driver_hourly:trips"]),
        false,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("Duplicate features named trips"),
        "{err}"
    );
}

/// The plan shape the docs describe: one streaming as-of join per view (entity-less views
/// join on time only), no sort restoring the input order, and the sources cut to the
/// entity time range (a Parquet pruning predicate).
#[tokio::test]
async fn views_plan_as_streaming_as_of_joins() {
    let (dir, catalog) = setup();
    let entities = table(
        "
driver_id:i64 | event_timestamp:ts
1001          | 2024-05-01T11:00:00
",
    );
    let store = FileOfflineStore::new(dir.path());
    let request = HistoricalRequest {
        features: refs(&["driver_hourly:trips", "global_stats:total"]),
        full_feature_names: false,
    };
    let df = store
        .historical_features_plan(
            &catalog,
            "demo",
            EntityTable::new(entities.schema(), vec![entities]),
            &request,
        )
        .await
        .unwrap();
    let plan = df.create_physical_plan().await.unwrap();
    let text = datafusion::physical_plan::displayable(plan.as_ref())
        .indent(false)
        .to_string();
    // One as-of join per view: keyed, and time-only for the entity-less view.
    assert_eq!(text.matches("AsOfJoinExec").count(), 2, "{text}");
    assert!(text.contains("AsOfJoinExec: keys=[driver_id]"), "{text}");
    assert!(text.contains("AsOfJoinExec: keys=[]"), "{text}");
    assert!(text.contains("pruning_predicate="), "{text}");
    // The joins keep the entity table's row order: no sort, no hash join, no aggregate.
    assert!(!text.contains("SortExec"), "{text}");
    assert!(!text.contains("HashJoinExec"), "{text}");
    assert!(!text.contains("AggregateExec"), "{text}");
}

#[tokio::test]
async fn empty_entity_table_gives_no_rows_and_the_full_schema() {
    let (dir, catalog) = setup();
    let entities = table(
        "
driver_id:i64 | event_timestamp:ts
1001          | 2024-05-01T11:00:00
",
    )
    .slice(0, 0);
    let store = FileOfflineStore::new(dir.path());
    let request = HistoricalRequest {
        features: refs(&["driver_hourly:trips", "global_stats:total"]),
        full_feature_names: true,
    };
    let stream = store
        .get_historical_features(
            &catalog,
            "demo",
            EntityTable::new(entities.schema(), vec![]),
            &request,
        )
        .await
        .unwrap();
    let schema = stream.schema();
    let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "driver_id",
            "event_timestamp",
            "driver_hourly__trips",
            "global_stats__total"
        ]
    );
}

/// Zoned entity timestamps are instants: `2024-05-01T13:00:00+02:00` is 11:00 UTC.
#[tokio::test]
async fn zoned_entity_timestamps_are_converted_to_utc() {
    let (dir, catalog) = setup();
    let utc = table(
        "
driver_id:i64 | event_timestamp:tsz
1001          | 2024-05-01T11:00:00
",
    );
    let zoned_type = DataType::Timestamp(TimeUnit::Microsecond, Some("+02:00".into()));
    let zoned = datafusion::arrow::compute::cast(utc.column(1), &zoned_type).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, true),
        Field::new("event_timestamp", zoned_type, true),
    ]));
    let batch = RecordBatch::try_new(schema.clone(), vec![utc.column(0).clone(), zoned]).unwrap();
    let store = FileOfflineStore::new(dir.path());
    let request = HistoricalRequest {
        features: refs(&["driver_hourly:trips"]),
        full_feature_names: false,
    };
    let stream = store
        .get_historical_features(
            &catalog,
            "demo",
            EntityTable::new(schema, vec![batch]),
            &request,
        )
        .await
        .unwrap();
    let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
    assert_eq!(
        pretty_format_batches(&batches).unwrap().to_string(),
        "\
+-----------+----------------------+-------+
| driver_id | event_timestamp      | trips |
+-----------+----------------------+-------+
| 1001      | 2024-05-01T11:00:00Z | 3     |
+-----------+----------------------+-------+"
    );
}

// ---------------------------------------------------------------------------------------
// Materialization pulls and offline writes

fn utc(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .unwrap()
        .and_utc()
}

async fn pull(
    catalog: &Catalog,
    root: &Path,
    source: &str,
    request: &feast_offline::PullRequest,
    kind: feast_offline::PullKind,
) -> Result<String, OfflineError> {
    let source: &feast_proto::core::DataSource = catalog.get(source, "demo").unwrap();
    let stream = FileOfflineStore::new(root)
        .pull(source, request, kind)
        .await?;
    let mut batches: Vec<RecordBatch> = stream.try_collect().await?;
    // Rows of a pull come in no particular order: sort by every column for the comparison.
    if let Some(first) = batches.first() {
        let schema = first.schema();
        let all = datafusion::arrow::compute::concat_batches(&schema, &batches).unwrap();
        let columns: Vec<_> = all
            .columns()
            .iter()
            .map(|c| datafusion::arrow::compute::SortColumn {
                values: c.clone(),
                options: None,
            })
            .collect();
        let indices = datafusion::arrow::compute::lexsort_to_indices(&columns, None).unwrap();
        let sorted = all
            .columns()
            .iter()
            .map(|c| datafusion::arrow::compute::take(c, &indices, None).unwrap())
            .collect();
        batches = vec![RecordBatch::try_new(schema, sorted).unwrap()];
    }
    Ok(pretty_format_batches(&batches).unwrap().to_string())
}

fn driver_pull(start: &str, end: &str) -> feast_offline::PullRequest {
    feast_offline::PullRequest {
        join_key_columns: vec!["driver_id".into()],
        feature_name_columns: vec!["conv".into(), "trips".into()],
        timestamp_field: "event_timestamp".into(),
        created_timestamp_column: Some("created".into()),
        start: Some(utc(start)),
        end: Some(utc(end)),
    }
}

#[tokio::test]
async fn pull_latest_keeps_the_latest_row_per_key_in_the_window() {
    use feast_offline::PullKind::{All, Latest};
    let (dir, catalog) = setup();
    let cases = [
        (
            "whole range: the 11:00 tie goes to the later created row; both ends inclusive",
            driver_pull("2024-05-01T09:00:00", "2024-05-01T11:00:00"),
            Latest,
            "
+-----------+------+-------+----------------------+----------------------+
| driver_id | conv | trips | event_timestamp      | created              |
+-----------+------+-------+----------------------+----------------------+
| 1001      | 0.3  | 3     | 2024-05-01T11:00:00Z | 2024-05-01T11:30:00Z |
| 1002      | 0.5  | 5     | 2024-05-01T09:00:00Z | 2024-05-01T09:00:00Z |
| 1003      |      | 7     | 2024-05-01T09:00:00Z |                      |
+-----------+------+-------+----------------------+----------------------+",
        ),
        (
            "a window ending before the tie",
            driver_pull("2024-05-01T09:30:00", "2024-05-01T10:59:59"),
            Latest,
            "
+-----------+------+-------+----------------------+----------------------+
| driver_id | conv | trips | event_timestamp      | created              |
+-----------+------+-------+----------------------+----------------------+
| 1001      | 0.1  | 1     | 2024-05-01T10:00:00Z | 2024-05-01T10:00:00Z |
+-----------+------+-------+----------------------+----------------------+",
        ),
        (
            "pull_all returns every row of the window",
            driver_pull("2024-05-01T10:00:00", "2024-05-01T12:00:00"),
            All,
            "
+-----------+------+-------+----------------------+----------------------+
| driver_id | conv | trips | event_timestamp      | created              |
+-----------+------+-------+----------------------+----------------------+
| 1001      | 0.1  | 1     | 2024-05-01T10:00:00Z | 2024-05-01T10:00:00Z |
| 1001      | 0.2  | 2     | 2024-05-01T11:00:00Z | 2024-05-01T11:00:00Z |
| 1001      | 0.3  | 3     | 2024-05-01T11:00:00Z | 2024-05-01T11:30:00Z |
+-----------+------+-------+----------------------+----------------------+",
        ),
    ];
    for (name, request, kind, expected) in cases {
        let got = pull(&catalog, dir.path(), "driver_src", &request, kind)
            .await
            .unwrap();
        assert_eq!(got.trim(), expected.trim(), "case: {name}");
    }

    // Keyless: one latest row over the directory source, with Feast's __dummy_id column.
    let keyless = feast_offline::PullRequest {
        join_key_columns: vec![],
        feature_name_columns: vec!["total".into()],
        timestamp_field: "event_timestamp".into(),
        created_timestamp_column: None,
        start: Some(utc("2024-05-01T00:00:00")),
        end: Some(utc("2024-05-02T00:00:00")),
    };
    let got = pull(&catalog, dir.path(), "global_src", &keyless, Latest)
        .await
        .unwrap();
    assert_eq!(
        got.trim(),
        "
+-------+----------------------+------------+
| total | event_timestamp      | __dummy_id |
+-------+----------------------+------------+
| 200   | 2024-05-01T10:00:00Z |            |
+-------+----------------------+------------+"
            .trim()
    );

    // CSV source with string timestamps; an open window.
    let csv = feast_offline::PullRequest {
        join_key_columns: vec!["driver_id".into(), "customer_id".into()],
        feature_name_columns: vec!["score".into()],
        timestamp_field: "ts".into(),
        created_timestamp_column: None,
        start: None,
        end: None,
    };
    let got = pull(&catalog, dir.path(), "affinity_src", &csv, Latest)
        .await
        .unwrap();
    assert!(got.contains("| 1001      | c1          | 0.11  |"), "{got}");
    assert_eq!(got.matches("| 100").count(), 3, "{got}");

    // A missing column is a clear error.
    let mut bad = driver_pull("2024-05-01T09:00:00", "2024-05-01T11:00:00");
    bad.feature_name_columns.push("nope".into());
    let err = pull(&catalog, dir.path(), "driver_src", &bad, Latest)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("data source driver_src has no feature column nope"),
        "{err}"
    );
}

#[tokio::test]
async fn offline_writes_append_to_file_and_directory_sources() {
    let (dir, catalog) = setup();
    let store = FileOfflineStore::new(dir.path());
    let view: &feast_proto::core::FeatureView = catalog.get("driver_hourly", "demo").unwrap();
    // Columns in another order, `conv` named by its feature name (conv_rate), types to cast
    // (trips as i32), and a pandas index column to drop.
    let rows = table(
        "
trips:i32 | driver_id:i64 | conv_rate:f32 | acc_rate:f64 | event_timestamp:ts  | created:tsz         | __index_level_0__:i64
9         | 1009          | 0.9           | 9.0          | 2024-05-01T11:00:00 | 2024-05-01T11:00:00 | 0
",
    );
    let written = store
        .offline_write_batch(view, rows.schema(), vec![rows])
        .await
        .unwrap();
    assert_eq!(written, 1);
    let got = run(
        &catalog,
        dir.path(),
        "driver_id:i64 | event_timestamp:tsz\n1009 | 2024-05-01T11:30:00\n1001 | 2024-05-01T11:30:00",
        refs(&["driver_hourly:trips", "driver_hourly:conv_rate"]),
        false,
    )
    .await
    .unwrap();
    assert!(
        got.contains("| 1009      | 2024-05-01T11:30:00Z | 9     | 0.9       |"),
        "{got}"
    );
    assert!(
        got.contains("| 1001      | 2024-05-01T11:30:00Z | 3     | 0.3       |"),
        "{got}"
    );
    // The file keeps its schema (same columns, same types) and now has one more row.
    let file = std::fs::File::open(dir.path().join("data/driver_stats.parquet")).unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    assert_eq!(
        reader.schema().as_ref(),
        table(DRIVER_STATS).schema().as_ref()
    );
    assert_eq!(reader.metadata().file_metadata().num_rows(), 7);

    // Wrong columns: refused, nothing written.
    let bad = table("driver_id:i64 | bogus:i64\n1 | 2");
    let err = store
        .offline_write_batch(view, bad.schema(), vec![bad])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    assert!(err.to_string().contains("bogus"), "{err}");
    let file = std::fs::File::open(dir.path().join("data/driver_stats.parquet")).unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    assert_eq!(reader.metadata().file_metadata().num_rows(), 7);

    // A directory source gets a new part file; no temporary file is left behind.
    let global: &feast_proto::core::FeatureView = catalog.get("global_stats", "demo").unwrap();
    let rows = table("total:i64 | event_timestamp:tsz\n300 | 2024-05-01T11:00:00");
    store
        .offline_write_batch(global, rows.schema(), vec![rows])
        .await
        .unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path().join("data/global"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().all(|n| n.ends_with(".parquet")), "{names:?}");
    let got = run(
        &catalog,
        dir.path(),
        "event_timestamp:tsz\n2024-05-01T11:30:00",
        refs(&["global_stats:total"]),
        false,
    )
    .await
    .unwrap();
    assert!(got.contains("| 300   |"), "{got}");
}
