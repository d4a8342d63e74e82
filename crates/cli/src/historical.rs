//! `feast-rs get-historical-features`: point-in-time correct training data from the
//! embedded offline engine (`feast_offline::FileOfflineStore`, with the repository's
//! Postgres database when `offline_store` is `postgres`), written to Parquet. The entity
//! table is a Parquet file, a SQL query (run in the Postgres offline store's database, or
//! on DataFusion over the project's data sources), or a time range (Feast's non-entity
//! mode: the keys active in `[start, end]`, each at `end`).

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use feast_offline::{
    EntityTable, EntityWindow, FeatureSelection, FileOfflineStore, HistoricalRequest, OfflineStore,
};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::commands::RepoContext;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("selection").required(true).args(["features", "feature_service"])))]
#[command(group(clap::ArgGroup::new("entity_table").required(true).multiple(true).args(["entities", "entity_sql", "start_date", "end_date"])))]
pub struct HistoricalArgs {
    /// Parquet file of the entity table: join keys, `event_timestamp`, any other columns.
    #[arg(long, value_name = "FILE.parquet")]
    entities: Option<PathBuf>,
    /// The entity table as a SQL query (Feast's `entity_df` as a string): run in the
    /// database of a Postgres offline store, else on DataFusion where each of the
    /// project's data sources is a table named after the source.
    #[arg(long, value_name = "SQL", conflicts_with = "entities")]
    entity_sql: Option<String>,
    /// No entity table: every key with a source row from this time on (ISO 8601, naive =
    /// UTC; default: end minus the longest ttl of the views, or 30 days).
    #[arg(long, value_name = "TIME", value_parser = parse_time, conflicts_with_all = ["entities", "entity_sql"])]
    start_date: Option<chrono::DateTime<chrono::Utc>>,
    /// No entity table: the time every key is read at (ISO 8601, naive = UTC; default:
    /// now).
    #[arg(long, value_name = "TIME", value_parser = parse_time, conflicts_with_all = ["entities", "entity_sql"])]
    end_date: Option<chrono::DateTime<chrono::Utc>>,
    /// Feature references (`feature_view:feature`), in output order.
    #[arg(long, num_args = 1.., value_name = "VIEW:FEATURE")]
    features: Vec<String>,
    /// A feature service whose features to retrieve.
    #[arg(long, value_name = "NAME")]
    feature_service: Option<String>,
    /// Name feature columns `view__feature`.
    #[arg(long)]
    full_feature_names: bool,
    /// Memory for sorts and windows, in MiB; beyond it they spill to the temp directory
    /// (default: unbounded).
    #[arg(long, value_name = "MIB")]
    memory_limit_mb: Option<usize>,
    /// Output Parquet file.
    #[arg(short = 'o', long, value_name = "OUT.parquet")]
    output: PathBuf,
}

/// Runs the join and writes the result; returns the number of rows written.
pub fn get_historical_features(ctx: &RepoContext, args: &HistoricalArgs) -> Result<usize> {
    let catalog = ctx.load_registry()?;
    let request = HistoricalRequest {
        features: match &args.feature_service {
            Some(name) => FeatureSelection::Service(name.clone()),
            None => FeatureSelection::Refs(args.features.clone()),
        },
        full_feature_names: args.full_feature_names,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the Tokio runtime")?;
    // A Postgres store's pool lives on this runtime.
    let mut store = {
        let _in_runtime = runtime.enter();
        FileOfflineStore::for_config(&ctx.config)?
    };
    if let Some(mib) = args.memory_limit_mb {
        store = store.with_memory_limit(mib << 20)?;
    }
    let entities = match (&args.entities, &args.entity_sql) {
        (Some(path), _) => read_entities(path)?,
        (None, Some(sql)) => {
            runtime.block_on(store.entity_table_from_sql(&catalog, &ctx.config.project, sql))?
        }
        (None, None) => runtime.block_on(store.entity_table_for_range(
            &catalog,
            &ctx.config.project,
            &request,
            EntityWindow {
                start: args.start_date,
                end: args.end_date,
            },
        ))?,
    };
    // One output row per entity row: the bar's length is known before the join runs. It is
    // drawn on stderr, and only when that is a terminal.
    let total: usize = entities.batches.iter().map(|b| b.num_rows()).sum();
    let bar = indicatif::ProgressBar::new(total as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "  {msg} {wide_bar} {human_pos}/{human_len} rows [{elapsed_precise}, ETA {eta}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("joining");
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let written = runtime.block_on(async {
        let mut stream = store
            .get_historical_features(&catalog, ctx.project(), entities, &request)
            .await?;
        let file = File::create(&args.output)
            .with_context(|| format!("creating {}", args.output.display()))?;
        let mut writer = ArrowWriter::try_new(file, stream.schema(), None)?;
        let mut rows = 0;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            rows += batch.num_rows();
            writer.write(&batch)?;
            bar.set_message("writing");
            bar.set_position(rows as u64);
        }
        writer.close()?;
        Ok(rows)
    });
    bar.finish_and_clear();
    written
}

pub(crate) fn read_entities(path: &Path) -> Result<EntityTable> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("reading {}", path.display()))?;
    let schema = reader.schema().clone();
    let batches = reader
        .build()?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(EntityTable::new(schema, batches))
}

impl HistoricalArgs {
    pub fn output_display(&self) -> String {
        self.output.display().to_string()
    }
}

fn parse_time(s: &str) -> std::result::Result<chrono::DateTime<chrono::Utc>, String> {
    feast_core::value::parse_iso_timestamp(s)
        .map(|(t, _)| t)
        .ok_or_else(|| format!("{s:?} is not an ISO 8601 time"))
}
