//! Hive-partitioned directory sources: partition keys read as columns, and pruning by the
//! source's `date_partition_column` in the point-in-time join and the pulls. Pruning is
//! proved by corrupting the file of one partition: a read whose window excludes it
//! succeeds, one whose window includes it fails.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use feast_core::registry::{Catalog, diff, timestamp};
use feast_core::repo;
use feast_offline::{
    EntityTable, FeatureSelection, FileOfflineStore, HistoricalRequest, OfflineStore, PullKind,
    PullRequest,
};
use feast_proto::core;
use futures::TryStreamExt;

const DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
data_sources:
  - name: trips_src
    type: file
    path: data/trips
    timestamp_field: event_timestamp
    date_partition_column: event_date
  - {name: ymd_src, type: file, path: data/ymd, timestamp_field: event_timestamp}
  - name: csv_dir_src
    type: file
    path: data/csv_dir.csv
    timestamp_field: event_timestamp
    date_partition_column: event_date
feature_views:
  - name: trips
    entities: [driver]
    ttl: 1d
    schema: [{name: rate, dtype: Float64}]
    source: trips_src
  - name: ymd
    entities: [driver]
    schema: [{name: rate, dtype: Float64}, {name: month, dtype: Int32}]
    source: ymd_src
"#;

const DAY: i64 = 86_400_000_000;
const MAY_1: i64 = 1_714_521_600_000_000; // 2024-05-01T00:00:00Z in µs

fn utc(micros: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(micros).unwrap()
}

/// One driver row at noon of `day` (0 = May 1st) with rate `day + 0.5`.
fn rows(day: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("rate", DataType::Float64, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1001])),
            Arc::new(Float64Array::from(vec![day as f64 + 0.5])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![MAY_1 + day * DAY + DAY / 2])
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap()
}

fn write_parquet(path: &Path, batch: &RecordBatch) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// `data/trips/event_date=2024-05-0{1..5}/part-0.parquet` and
/// `data/ymd/year=2024/month=05/day=0{1..3}/part-0.parquet`.
fn setup() -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("defs.yaml"), DEFS).unwrap();
    for day in 0..5 {
        write_parquet(
            &root.join(format!(
                "data/trips/event_date=2024-05-0{}/part-0.parquet",
                day + 1
            )),
            &rows(day),
        );
    }
    for day in 0..3 {
        write_parquet(
            &root.join(format!(
                "data/ymd/year=2024/month=05/day=0{}/part-0.parquet",
                day + 1
            )),
            &rows(day),
        );
    }
    // CSV partitions (the directory's name ends in .csv, which makes the source CSV).
    for day in 0..3 {
        let dir = root.join(format!("data/csv_dir.csv/event_date=2024-05-0{}", day + 1));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("part-0.csv"),
            format!(
                "driver_id,rate,event_timestamp\n1001,{}.5,2024-05-0{}T12:00:00Z\n",
                day,
                day + 1
            ),
        )
        .unwrap();
    }
    let desired = repo::load_repo(root, "demo").unwrap();
    let mut catalog = Catalog::new();
    let plan = diff::diff(&catalog, "demo", &desired);
    diff::apply_diff(
        &mut catalog,
        "demo",
        &desired,
        &plan,
        timestamp(chrono::Utc::now()),
    )
    .unwrap();
    (dir, catalog)
}

/// Replaces a partition's file by bytes that are not Parquet.
fn corrupt(root: &Path, date: &str) {
    std::fs::write(
        root.join(format!("data/trips/event_date={date}/part-0.parquet")),
        b"not parquet at all",
    )
    .unwrap();
}

fn source<'a>(catalog: &'a Catalog, name: &str) -> &'a core::DataSource {
    catalog.get(name, "demo").unwrap()
}

/// An entity table of driver 1001 at each timestamp (µs, UTC).
fn driver_1001_at(at: &[i64]) -> EntityTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![1001; at.len()])),
            Arc::new(TimestampMicrosecondArray::from(at.to_vec()).with_timezone("UTC")),
        ],
    )
    .unwrap();
    EntityTable::new(schema, vec![batch])
}

/// The rate joined for driver 1001 at each entity timestamp (µs).
async fn historical(
    catalog: &Catalog,
    root: &Path,
    at: &[i64],
) -> Result<Vec<Option<f64>>, feast_offline::OfflineError> {
    let request = HistoricalRequest {
        features: FeatureSelection::Refs(vec!["trips:rate".into()]),
        full_feature_names: false,
    };
    let stream = FileOfflineStore::new(root)
        .get_historical_features(catalog, "demo", driver_1001_at(at), &request)
        .await?;
    let batches: Vec<RecordBatch> = stream.try_collect().await?;
    Ok(batches
        .iter()
        .flat_map(|b| {
            let rates = b
                .column_by_name("rate")
                .unwrap()
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .clone();
            (0..rates.len())
                .map(move |i| (!rates.is_null(i)).then(|| rates.value(i)))
                .collect::<Vec<_>>()
        })
        .collect())
}

fn pull_request(from_day: i64, to_day: i64, features: &[&str]) -> PullRequest {
    PullRequest {
        join_key_columns: vec!["driver_id".into()],
        feature_name_columns: features.iter().map(|f| f.to_string()).collect(),
        timestamp_field: "event_timestamp".into(),
        created_timestamp_column: None,
        start: Some(utc(MAY_1 + from_day * DAY)),
        end: Some(utc(MAY_1 + to_day * DAY)),
    }
}

async fn pull_rows(
    catalog: &Catalog,
    root: &Path,
    source_name: &str,
    request: &PullRequest,
    kind: PullKind,
) -> Result<Vec<RecordBatch>, feast_offline::OfflineError> {
    let stream = FileOfflineStore::new(root)
        .pull(source(catalog, source_name), request, kind)
        .await?;
    Ok(stream.try_collect().await?)
}

fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

#[tokio::test]
async fn partition_keys_are_columns_typed_as_pyarrow_reads_them() {
    let (dir, catalog) = setup();
    let store = FileOfflineStore::new(dir.path());
    let trips = store
        .column_names_and_types(source(&catalog, "trips_src"))
        .await
        .unwrap();
    assert_eq!(
        trips.last().unwrap(),
        &("event_date".to_string(), "string".to_string()),
        "{trips:?}"
    );
    let ymd = store
        .column_names_and_types(source(&catalog, "ymd_src"))
        .await
        .unwrap();
    let tail: Vec<(String, String)> = ymd[ymd.len() - 3..].to_vec();
    assert_eq!(
        tail,
        [("year", "int32"), ("month", "int32"), ("day", "int32")]
            .map(|(n, t)| (n.to_string(), t.to_string()))
    );

    // A partition column can be a feature: `month=05` reads as 5.
    let batches = pull_rows(
        &catalog,
        dir.path(),
        "ymd_src",
        &pull_request(0, 10, &["rate", "month"]),
        PullKind::All,
    )
    .await
    .unwrap();
    assert_eq!(row_count(&batches), 3);
    for b in &batches {
        let months = b
            .column_by_name("month")
            .unwrap()
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap();
        assert!(months.iter().all(|m| m == Some(5)));
    }

    // The historical join reads across partitions (no date_partition_column: no pruning).
    let request = HistoricalRequest {
        features: FeatureSelection::Refs(vec!["ymd:rate".into(), "ymd:month".into()]),
        full_feature_names: false,
    };
    let out: Vec<RecordBatch> = store
        .get_historical_features(
            &catalog,
            "demo",
            driver_1001_at(&[MAY_1 + 10 * DAY]),
            &request,
        )
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let rate = out[0]
        .column_by_name("rate")
        .unwrap()
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap()
        .value(0);
    assert_eq!(rate, 2.5, "the latest row, from day=03");
}

#[tokio::test]
async fn the_join_never_opens_partitions_outside_its_window() {
    let (dir, catalog) = setup();
    let root = dir.path();
    // Entity rows on May 3rd and 4th at 18:00, ttl 1 day: window May 2nd 18:00 .. May 4th
    // 18:00, so the partitions of May 2nd, 3rd and 4th are read.
    let at = [MAY_1 + 2 * DAY + DAY * 3 / 4, MAY_1 + 3 * DAY + DAY * 3 / 4];
    let expected = vec![Some(2.5), Some(3.5)];
    assert_eq!(historical(&catalog, root, &at).await.unwrap(), expected);

    // May 1st and 5th lie outside the window: corrupting them changes nothing.
    corrupt(root, "2024-05-01");
    corrupt(root, "2024-05-05");
    assert_eq!(historical(&catalog, root, &at).await.unwrap(), expected);

    // The physical plan carries the partition filter.
    let plan = FileOfflineStore::new(root)
        .historical_features_plan(
            &catalog,
            "demo",
            driver_1001_at(&at),
            &HistoricalRequest {
                features: FeatureSelection::Refs(vec!["trips:rate".into()]),
                full_feature_names: false,
            },
        )
        .await
        .unwrap()
        .into_optimized_plan()
        .unwrap();
    let text = plan.display_indent().to_string();
    assert!(
        text.contains("event_date >= Utf8(\"2024-05-02\")")
            && text.contains("event_date <= Utf8(\"2024-05-04\")"),
        "{text}"
    );

    // May 2nd is inside the window (its 12:00 row is before the window opens, but the
    // partition must be read): a corrupt file there fails the query.
    corrupt(root, "2024-05-02");
    let e = historical(&catalog, root, &at).await.unwrap_err();
    assert!(
        e.to_string().contains("2024-05-02") || e.to_string().contains("arquet"),
        "{e}"
    );
}

#[tokio::test]
async fn pulls_never_open_partitions_outside_their_window() {
    let (dir, catalog) = setup();
    let root = dir.path();
    corrupt(root, "2024-05-01");
    corrupt(root, "2024-05-05");
    // May 2nd 00:00 .. May 4th 23:59: three partitions, three rows.
    for kind in [PullKind::All, PullKind::Latest] {
        let request = pull_request(1, 4, &["rate"]);
        let request = PullRequest {
            end: Some(utc(MAY_1 + 4 * DAY - 1)),
            ..request
        };
        let batches = pull_rows(&catalog, root, "trips_src", &request, kind)
            .await
            .unwrap();
        let expected = if kind == PullKind::All { 3 } else { 1 };
        assert_eq!(row_count(&batches), expected, "{kind:?}");
    }
    // The date partition column reads as strings.
    let batches = pull_rows(
        &catalog,
        root,
        "trips_src",
        &PullRequest {
            end: Some(utc(MAY_1 + 4 * DAY - 1)),
            ..pull_request(1, 4, &["event_date"])
        },
        PullKind::All,
    )
    .await
    .unwrap();
    let mut dates: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let dates = b
                .column_by_name("event_date")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone();
            (0..dates.len()).map(move |i| dates.value(i).to_string())
        })
        .collect();
    dates.sort();
    assert_eq!(dates, ["2024-05-02", "2024-05-03", "2024-05-04"]);
    // A window holding no partition at all reads one file's schema and no rows.
    let later = pull_rows(
        &catalog,
        root,
        "trips_src",
        &pull_request(9, 12, &["rate"]),
        PullKind::All,
    )
    .await;
    // The schema comes from the first file in path order, which is corrupt (May 1st): the
    // error names it; with a good first file the pull is empty.
    assert!(later.is_err());
    write_parquet(
        &root.join("data/trips/event_date=2024-05-01/part-0.parquet"),
        &rows(0),
    );
    let later = pull_rows(
        &catalog,
        root,
        "trips_src",
        &pull_request(9, 12, &["rate"]),
        PullKind::All,
    )
    .await
    .unwrap();
    assert_eq!(row_count(&later), 0);
    corrupt(root, "2024-05-01");
    // A window reaching into a corrupt partition reads it and fails.
    let e = pull_rows(
        &catalog,
        root,
        "trips_src",
        &pull_request(3, 5, &["rate"]),
        PullKind::All,
    )
    .await
    .unwrap_err();
    assert!(!e.to_string().is_empty());
    // Without a window nothing is pruned.
    let open = PullRequest {
        start: None,
        end: None,
        ..pull_request(0, 0, &["rate"])
    };
    assert!(
        pull_rows(&catalog, root, "trips_src", &open, PullKind::All)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn csv_partitions_are_read_and_pruned_too() {
    let (dir, catalog) = setup();
    let root = dir.path();
    let request = PullRequest {
        end: Some(utc(MAY_1 + 2 * DAY - 1)),
        ..pull_request(1, 2, &["rate", "event_date"])
    };
    let batches = pull_rows(&catalog, root, "csv_dir_src", &request, PullKind::All)
        .await
        .unwrap();
    assert_eq!(row_count(&batches), 1);
    let source = source(&catalog, "csv_dir_src");
    let plan = FileOfflineStore::new(root)
        .pull_plan(source, &request, PullKind::All)
        .await
        .unwrap()
        .into_optimized_plan()
        .unwrap()
        .display_indent()
        .to_string();
    // One day: DataFusion folds `>= d AND <= d` into `= d`, evaluated on the directories.
    assert!(
        plan.contains("full_filters=[?table?.event_date = Utf8(\"2024-05-02\")]"),
        "{plan}"
    );
}

#[tokio::test]
async fn inconsistent_layouts_are_clear_errors() {
    let (dir, catalog) = setup();
    let root = dir.path();
    write_parquet(&root.join("data/trips/stray.parquet"), &rows(0));
    let e = FileOfflineStore::new(root)
        .column_names_and_types(source(&catalog, "trips_src"))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("inconsistent hive partitioning"),
        "{e}"
    );
}

#[tokio::test]
async fn offline_writes_into_partitioned_directories_are_refused() {
    let (dir, catalog) = setup();
    let view: &core::FeatureView = catalog.get("trips", "demo").unwrap();
    let batch = rows(9);
    let e = FileOfflineStore::new(dir.path())
        .offline_write_batch(view, batch.schema(), vec![batch])
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("partitioned hive-style by event_date"),
        "{e}"
    );
    // Nothing was written next to the partitions.
    let top: Vec<_> = std::fs::read_dir(dir.path().join("data/trips"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("event_date="))
        .collect();
    assert!(top.is_empty(), "{top:?}");
}
