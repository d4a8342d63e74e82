//! `feast-rs materialize` / `materialize-incremental`: in-process materialization on the
//! repository's offline files (the embedded engine) into its online store, recording each
//! view's interval in the registry after the view is fully written.
//!
//! A view another process is materializing (another CLI run, a feature server's
//! `/materialize`, a materializer service: whoever holds its lock file next to a file
//! registry or its lease in a SQL registry) is refused with an error naming the holder,
//! unless `--force`.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use feast_materializer::guard::BusyView;
use feast_materializer::{Options, Range};

use crate::commands::RepoContext;

#[derive(clap::Args)]
pub struct MaterializeArgs {
    /// Start of the window (ISO 8601; naive = UTC).
    #[arg(
        value_name = "START",
        required_unless_present = "disable_event_timestamp"
    )]
    start: Option<String>,
    /// End of the window (ISO 8601; naive = UTC).
    #[arg(
        value_name = "END",
        required_unless_present = "disable_event_timestamp"
    )]
    end: Option<String>,
    /// Feature views to materialize (default: every view with `online: true`).
    #[arg(short = 'v', long = "views", value_name = "VIEW", num_args = 1..)]
    views: Vec<String>,
    /// Materialize every row up to now, whatever its event timestamp.
    #[arg(long)]
    disable_event_timestamp: bool,
    /// Materialize views even when another process is materializing them.
    #[arg(long)]
    force: bool,
    /// A recorded version of the one view named (`v2`; `latest` is the current one), into
    /// its own online table (needs `enable_online_feature_view_versioning`).
    #[arg(long, value_name = "VERSION")]
    version: Option<String>,
}

#[derive(clap::Args)]
pub struct IncrementalArgs {
    /// End of the window (ISO 8601; naive = UTC); each view starts where its last
    /// materialization ended (else now - ttl).
    #[arg(value_name = "END")]
    end: String,
    /// Feature views to materialize (default: every view with `online: true`).
    #[arg(short = 'v', long = "views", value_name = "VIEW", num_args = 1..)]
    views: Vec<String>,
    /// Materialize views even when another process is materializing them.
    #[arg(long)]
    force: bool,
    /// A recorded version of the one view named (`v2`; `latest` is the current one), into
    /// its own online table (needs `enable_online_feature_view_versioning`).
    #[arg(long, value_name = "VERSION")]
    version: Option<String>,
}

/// The view names to plan: with `--version vN`, Feast's checks (exactly one view,
/// versioning enabled) and the name `view@vN`.
fn versioned(ctx: &RepoContext, views: &[String], version: Option<&str>) -> Result<Vec<String>> {
    let Some(version) = version else {
        return Ok(views.to_vec());
    };
    if views.len() != 1 {
        bail!("--version requires --views with exactly one feature view.");
    }
    if !ctx
        .config
        .registry
        .common()
        .enable_online_feature_view_versioning
    {
        bail!(feast_online::materialize::VERSIONING_REQUIRED);
    }
    Ok(match feast_core::version::parse_version(version)? {
        None => views.to_vec(),
        Some(n) => vec![format!("{}@v{n}", views[0])],
    })
}

fn parse_time(s: &str, what: &str) -> Result<DateTime<Utc>> {
    feast_core::value::parse_iso_timestamp(s)
        .map(|(t, _)| t)
        .with_context(|| format!("{what} {s:?} is not an ISO 8601 timestamp"))
}

pub fn materialize(ctx: &RepoContext, args: &MaterializeArgs) -> Result<()> {
    let range = if args.disable_event_timestamp {
        Range::Everything
    } else {
        let start = parse_time(args.start.as_deref().unwrap_or_default(), "START")?;
        let end = parse_time(args.end.as_deref().unwrap_or_default(), "END")?;
        if start >= end {
            bail!("START ({start}) must be before END ({end})");
        }
        Range::Between { start, end }
    };
    let views = versioned(ctx, &args.views, args.version.as_deref())?;
    run(ctx, &views, range, args.force, "feast-rs materialize")
}

pub fn materialize_incremental(ctx: &RepoContext, args: &IncrementalArgs) -> Result<()> {
    let end = parse_time(&args.end, "END")?;
    let views = versioned(ctx, &args.views, args.version.as_deref())?;
    run(
        ctx,
        &views,
        Range::Incremental { end },
        args.force,
        "feast-rs materialize-incremental",
    )
}

fn shown(t: &DateTime<Utc>) -> String {
    // Feast prints `make_tzaware(t.replace(microsecond=0))`: "2024-05-01 00:00:00+00:00".
    t.format("%Y-%m-%d %H:%M:%S+00:00").to_string()
}

/// "feature view a is already being materialized by ..." for the views another process
/// holds.
fn busy_error(busy: &[BusyView]) -> String {
    match busy {
        [one] => format!(
            "feature view {} is already being materialized by {}",
            one.view, one.holder
        ),
        _ => format!(
            "feature views {} are already being materialized: {}",
            busy.iter()
                .map(|b| b.view.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            busy.iter()
                .map(|b| format!("{} by {}", b.view, b.holder))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

fn run(
    ctx: &RepoContext,
    names: &[String],
    range: Range,
    force: bool,
    command: &str,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the Tokio runtime")?;
    // One registry connection both reads the views and records the intervals.
    let registry = runtime.block_on(crate::serve::RegistryAccess::open(ctx))?;
    let catalog = runtime.block_on(registry.load(ctx.project()))?;
    let now = Utc::now();
    let planned = feast_materializer::plan(&catalog, ctx.project(), names, range, now)?;
    for skipped in &planned.skipped {
        eprintln!("Warning: skipped {skipped}");
    }
    // Claim the views against the repository's other processes (a lock file dies with
    // this process, however it ends; a lease expires).
    let locks = runtime.block_on(crate::serve::view_locks(
        ctx,
        command,
        std::time::Duration::from_secs(60),
    ))?;
    let Some(locks) = locks else {
        let recorder = registry.into_recorder();
        return run_windows(
            ctx,
            &runtime,
            &recorder,
            &catalog,
            &planned.windows,
            range,
            now,
        );
    };
    let views: Vec<String> = planned.windows.iter().map(|w| w.view.clone()).collect();
    let (held, busy) = runtime.block_on(locks.acquire(ctx.project(), &views));
    let result = if !busy.is_empty() && !force {
        Err(anyhow::anyhow!(
            "{}.\nWait for it to finish, or pass --force to materialize anyway.",
            busy_error(&busy)
        ))
    } else {
        if !busy.is_empty() {
            eprintln!(
                "Warning: {}; materializing anyway (--force).",
                busy_error(&busy)
            );
        }
        // Windows planned on the registry as it is now that the views are ours, so an
        // incremental run starts where the previous holder's recorded interval ended.
        let replanned = if views.is_empty() {
            Ok((catalog, Vec::new()))
        } else {
            runtime
                .block_on(registry.load(ctx.project()))
                .and_then(|catalog| {
                    let names = feast_materializer::plan_names(&planned.windows, &views);
                    let windows =
                        feast_materializer::plan(&catalog, ctx.project(), &names, range, now)?
                            .windows;
                    Ok((catalog, windows))
                })
        };
        let recorder = registry.into_recorder();
        replanned.and_then(|(catalog, windows)| {
            run_windows(ctx, &runtime, &recorder, &catalog, &windows, range, now)
        })
    };
    // Released however the run ended (a lease would otherwise outlive it until it expires).
    runtime.block_on(held.release());
    result
}

/// Announces and runs `windows`, one view after the other.
fn run_windows(
    ctx: &RepoContext,
    runtime: &tokio::runtime::Runtime,
    recorder: &feast_materializer::IntervalRecorder,
    catalog: &feast_core::registry::Catalog,
    windows: &[feast_materializer::ViewWindow],
    range: Range,
    now: DateTime<Utc>,
) -> Result<()> {
    let online_type = ctx
        .config
        .online_store
        .as_ref()
        .map(|o| o.type_name())
        .unwrap_or("sqlite");
    match range {
        Range::Incremental { end } => println!(
            "Materializing {} feature views to {} into the {online_type} online store.\n",
            windows.len(),
            shown(&end)
        ),
        _ => {
            let (start, end) = windows
                .first()
                .map(|w| (w.start, w.end))
                .unwrap_or((now, now));
            println!(
                "Materializing {} feature views from {} to {} into the {online_type} online store.\n",
                windows.len(),
                shown(&start),
                shown(&end)
            );
        }
    }
    let options = Options::for_config(&ctx.config);
    // A remote offline store's client connects lazily on this runtime.
    let offline = {
        let _in_runtime = runtime.enter();
        feast_offline::open_offline_store(&ctx.config)?
    };
    let online = runtime
        .block_on(feast_online::open_online_store(&ctx.config))
        .context("opening the online store")?;
    for window in windows {
        if let Some(note) = &window.note {
            println!("{note}");
        }
        println!(
            "{} from {} to {}:",
            window.view,
            shown(&window.start),
            shown(&window.end)
        );
        let started = Instant::now();
        // Rows and rate as they stream (the total is not known before the scan ends);
        // drawn on stderr, and only when it is a terminal.
        let bar = indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template(
                "  {spinner} {human_pos} rows [{elapsed_precise}, {per_sec}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        let progress = |rows: u64| bar.set_position(rows);
        let report = runtime
            .block_on(feast_materializer::run_window(
                &offline,
                &online,
                recorder,
                catalog,
                ctx.project(),
                window,
                &options,
                &progress,
            ))
            .with_context(|| format!("materializing feature view {}", window.view));
        bar.finish_and_clear();
        let report = report?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "  {} rows in {secs:.2} s ({:.0} rows/s), {} written",
            report.rows,
            report.rows as f64 / secs.max(1e-9),
            report.written
        );
    }
    Ok(())
}
