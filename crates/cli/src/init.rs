//! `feast-rs init`: a ready-to-apply demo repository (driver statistics), the counterpart of
//! Feast's default `feast init` template, with definitions in YAML and a generated Parquet
//! file of hourly driver stats.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::{Float32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use rand::{Rng, SeedableRng};

/// Drivers in the generated data set.
pub const DEMO_DRIVERS: [i64; 5] = [1001, 1002, 1003, 1004, 1005];
/// Days of hourly history generated, ending at the current hour.
pub const DEMO_DAYS: i64 = 15;

/// Creates `<parent>/<name>/feature_repo` and returns its path.
pub fn init_repo(parent: &Path, name: &str) -> Result<std::path::PathBuf> {
    validate_project_name(name)?;
    let root = parent.join(name);
    if root.exists() {
        bail!(
            "the directory {} already exists; choose another name or remove it",
            root.display()
        );
    }
    let repo = root.join("feature_repo");
    std::fs::create_dir_all(repo.join("data"))
        .with_context(|| format!("creating {}", repo.display()))?;
    std::fs::write(repo.join("feature_store.yaml"), feature_store_yaml(name))?;
    std::fs::write(repo.join("features.yaml"), FEATURES_YAML)?;
    std::fs::write(repo.join(".feastignore"), "data/\n")?;
    write_driver_stats(
        &repo.join("data").join("driver_stats.parquet"),
        chrono::Utc::now(),
    )?;
    Ok(repo)
}

/// Feast's project-name rule: letters, digits and underscores, not starting with `_`.
pub fn validate_project_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        bail!(
            "invalid project name \"{name}\": use only letters, digits and underscores, and do not start with an underscore"
        );
    }
    Ok(())
}

fn feature_store_yaml(project: &str) -> String {
    format!(
        "# Embedded defaults: a file registry, the SQLite online store and local Parquet files.\n\
         project: {project}\n\
         registry: data/registry.db\n\
         provider: local\n\
         online_store:\n  type: sqlite\n  path: data/online_store.db\n\
         offline_store:\n  type: file\n\
         entity_key_serialization_version: 3\n"
    )
}

const FEATURES_YAML: &str = r#"# Feature definitions for the driver-stats demo (feast-rs YAML; see README "Definitions").
entities:
  - name: driver
    join_keys: [driver_id]
    value_type: INT64
    description: A driver of the ride-hailing service

data_sources:
  - name: driver_hourly_stats_source
    type: file
    path: data/driver_stats.parquet
    timestamp_field: event_timestamp
    created_timestamp_column: created
  - name: driver_stats_push_source
    type: push
    batch_source: driver_hourly_stats_source
  - name: vals_to_add
    type: request
    schema:
      - {name: val_to_add, dtype: Int64}
      - {name: val_to_add_2, dtype: Int64}

feature_views:
  - name: driver_hourly_stats
    entities: [driver]
    ttl: 1d
    schema:
      - {name: conv_rate, dtype: Float32}
      - {name: acc_rate, dtype: Float32}
      - {name: avg_daily_trips, dtype: Int64, description: Average daily trips}
    source: driver_hourly_stats_source
    online: true
    tags: {team: driver_performance}
  - name: driver_hourly_stats_fresh
    entities: [driver]
    ttl: 1d
    schema:
      - {name: conv_rate, dtype: Float32}
      - {name: acc_rate, dtype: Float32}
      - {name: avg_daily_trips, dtype: Int64}
    source: driver_stats_push_source
    online: true
    tags: {team: driver_performance}

on_demand_feature_views:
  - name: transformed_conv_rate
    sources: [driver_hourly_stats, vals_to_add]
    schema:
      - {name: conv_rate_plus_val1, dtype: Float64}
      - {name: conv_rate_plus_val2, dtype: Float64}
    mode: pandas
    udf: |
      def transformed_conv_rate(inputs):
          import pandas as pd
          df = pd.DataFrame()
          df["conv_rate_plus_val1"] = inputs["conv_rate"] + inputs["val_to_add"]
          df["conv_rate_plus_val2"] = inputs["conv_rate"] + inputs["val_to_add_2"]
          return df

feature_services:
  - name: driver_activity_v1
    features:
      - driver_hourly_stats: [conv_rate]
      - transformed_conv_rate
  - name: driver_activity_v2
    features:
      - driver_hourly_stats
      - transformed_conv_rate
"#;

/// Writes hourly stats for [`DEMO_DRIVERS`] over the last [`DEMO_DAYS`] days.
pub fn write_driver_stats(path: &Path, now: chrono::DateTime<chrono::Utc>) -> Result<usize> {
    use chrono::{DurationRound, TimeDelta};
    let end = now.duration_trunc(TimeDelta::hours(1)).unwrap_or(now);
    let hours = DEMO_DAYS * 24;
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let n = DEMO_DRIVERS.len() * hours as usize;
    let (mut ids, mut conv, mut acc, mut trips, mut ts, mut created) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for h in (0..hours).rev() {
        let t = end - TimeDelta::hours(h);
        for id in DEMO_DRIVERS {
            ids.push(id);
            conv.push(rng.random_range(0.0f32..1.0));
            acc.push(rng.random_range(0.0f32..1.0));
            trips.push(rng.random_range(0i64..1000));
            ts.push(t.timestamp_micros());
            created.push(now.timestamp_micros());
        }
    }
    let utc = Some(Arc::<str>::from("UTC"));
    let ts_type = DataType::Timestamp(TimeUnit::Microsecond, utc.clone());
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("conv_rate", DataType::Float32, false),
        Field::new("acc_rate", DataType::Float32, false),
        Field::new("avg_daily_trips", DataType::Int64, false),
        Field::new("event_timestamp", ts_type.clone(), false),
        Field::new("created", ts_type, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(Float32Array::from(conv)),
            Arc::new(Float32Array::from(acc)),
            Arc::new(Int64Array::from(trips)),
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone_opt(utc.clone())),
            Arc::new(TimestampMicrosecondArray::from(created).with_timezone_opt(utc)),
        ],
    )?;
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None)?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(n)
}
