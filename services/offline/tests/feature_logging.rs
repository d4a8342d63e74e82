//! `write_logged_features` on the embedded store: logs land under the feature service's
//! file logging destination as Feast's file store lays them out (directory partitioning by
//! `partition_by`, `<uuid>-0.parquet` per partition and call), and bad input writes nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use feast_offline::{FileOfflineStore, OfflineError, OfflineStore};
use feast_proto::core;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const MAY_1: i32 = 19_844; // 2024-05-01 in days since the epoch

fn service(path: &str, partition_by: &[&str]) -> core::FeatureService {
    core::FeatureService {
        spec: Some(core::FeatureServiceSpec {
            name: "driver_activity".into(),
            project: "demo".into(),
            logging_config: Some(core::LoggingConfig {
                sample_rate: 1.0,
                destination: Some(core::logging_config::Destination::FileDestination(
                    core::logging_config::FileDestination {
                        path: path.into(),
                        partition_by: partition_by.iter().map(|p| p.to_string()).collect(),
                        ..Default::default()
                    },
                )),
            }),
            ..Default::default()
        }),
        meta: None,
    }
}

/// Logs of three requests: two on May 1st, one on May 2nd, and one without a date.
fn logs() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, true),
        Field::new("driver_hourly_stats__conv_rate", DataType::Float64, true),
        Field::new("__log_date", DataType::Date32, true),
        Field::new("__request_id", DataType::Utf8, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1001, 1002, 1003, 1004])),
            Arc::new(Float64Array::from(vec![0.1, 0.2, 0.3, 0.4])),
            Arc::new(Date32Array::from(vec![
                Some(MAY_1),
                Some(MAY_1 + 1),
                Some(MAY_1),
                None,
            ])),
            Arc::new(StringArray::from(vec!["r1", "r2", "r3", "r4"])),
        ],
    )
    .unwrap()
}

/// Every file under `dir`, relative, sorted by directory.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort_by_key(|p| p.parent().map(Path::to_path_buf));
    out
}

fn read(path: &Path) -> RecordBatch {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

fn ids(batch: &RecordBatch) -> Vec<i64> {
    batch
        .column_by_name("driver_id")
        .unwrap()
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .values()
        .to_vec()
}

async fn write(
    root: &Path,
    service: &core::FeatureService,
    batch: RecordBatch,
) -> Result<usize, OfflineError> {
    FileOfflineStore::new(root)
        .write_logged_features(service, batch.schema(), vec![batch])
        .await
}

#[tokio::test]
async fn logs_are_partitioned_by_directory_as_feast_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let fs = service("logs/driver_activity", &["__log_date"]);
    assert_eq!(write(root, &fs, logs()).await.unwrap(), 4);

    let base = root.join("logs/driver_activity");
    let written = files(&base);
    assert_eq!(written.len(), 3, "{written:?}");
    // One uuid per call, `-0` in every partition; a null date adds no directory level.
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n == &names[0] && n.ends_with("-0.parquet"))
    );
    assert_eq!(names[0].len(), 32 + "-0.parquet".len());
    let dirs: Vec<String> = written
        .iter()
        .map(|p| p.parent().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(dirs, ["", "2024-05-01", "2024-05-02"]);

    let may_1 = read(&base.join(&written[1]));
    assert_eq!(ids(&may_1), [1001, 1003], "rows keep their order");
    let columns: Vec<String> = may_1
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        columns,
        [
            "driver_id",
            "driver_hourly_stats__conv_rate",
            "__request_id"
        ],
        "the partition column leaves the files"
    );
    assert_eq!(ids(&read(&base.join(&written[0]))), [1004]);

    // A second call adds files next to the first ones.
    write(root, &fs, logs()).await.unwrap();
    assert_eq!(files(&base).len(), 6);
}

#[tokio::test]
async fn unpartitioned_logs_are_one_file_and_empty_logs_none() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let absolute = root.join("elsewhere/logs");
    let fs = service(absolute.to_str().unwrap(), &[]);
    write(root, &fs, logs()).await.unwrap();
    let written = files(&absolute);
    assert_eq!(written.len(), 1);
    let batch = read(&absolute.join(&written[0]));
    assert_eq!(batch.num_columns(), 4);
    assert_eq!(ids(&batch), [1001, 1002, 1003, 1004]);

    // Feast logs feature timestamps in seconds; Parquet has no such unit, and pyarrow writes
    // them as milliseconds (readers then see timestamps, not integers).
    let mut seconds = logs();
    let ts = datafusion::arrow::array::TimestampSecondArray::from(vec![1_714_521_600; 4])
        .with_timezone("UTC");
    let mut fields: Vec<Field> = seconds
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("f__timestamp", ts.data_type().clone(), true));
    let mut columns = seconds.columns().to_vec();
    columns.push(Arc::new(ts));
    seconds = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let fs = service("seconds", &[]);
    write(root, &fs, seconds).await.unwrap();
    let written = files(&root.join("seconds"));
    let batch = read(&root.join("seconds").join(&written[0]));
    assert_eq!(
        batch
            .schema()
            .field_with_name("f__timestamp")
            .unwrap()
            .data_type(),
        &DataType::Timestamp(
            datafusion::arrow::datatypes::TimeUnit::Millisecond,
            Some("UTC".into())
        )
    );

    let empty = logs().slice(0, 0);
    let fs = service("empty", &["__log_date"]);
    assert_eq!(write(root, &fs, empty).await.unwrap(), 0);
    assert!(!root.join("empty").exists());
}

#[tokio::test]
async fn bad_destinations_and_values_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();

    let e = write(root, &service("logs", &["__nope"]), logs())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("__nope does not exist"), "{e}");

    // A value that would escape the destination or nest directories is refused.
    for bad in ["..", "a/b", ""] {
        let mut batch = logs();
        let mut columns = batch.columns().to_vec();
        columns[3] = Arc::new(StringArray::from(vec!["r1", bad, "r3", "r4"]));
        batch = RecordBatch::try_new(batch.schema(), columns).unwrap();
        let e = write(root, &service("logs", &["__request_id"]), batch)
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("cannot name a directory"),
            "{bad:?}: {e}"
        );
    }
    assert!(files(root).is_empty(), "{:?}", files(root));

    let mut no_logging = service("logs", &[]);
    no_logging.spec.as_mut().unwrap().logging_config = None;
    let e = write(root, &no_logging, logs()).await.unwrap_err();
    assert!(e.to_string().contains("logging_config"), "{e}");

    let e = write(root, &service("s3://bucket/logs", &[]), logs())
        .await
        .unwrap_err();
    assert!(matches!(e, OfflineError::Unsupported(_)), "{e}");
}
