//! Schedules of the materializer service: incremental jobs at a fixed interval or on a cron
//! expression, for every online view or for named views, so a deployment needs no external
//! scheduler.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use feast_offline::OfflineStore;
use feast_online::materialize::{MaterializeCall, Range};

use crate::service::{JobManager, SubmitError, Trigger};

/// When scheduled jobs run.
#[derive(Debug, Clone)]
pub enum Cadence {
    /// This long after the previous scheduled job ended (or after start).
    Every(Duration),
    /// At the times a cron expression names (UTC): five fields (minute, hour, day of
    /// month, month, day of week) or six with seconds first.
    Cron(Box<croner::Cron>),
}

impl Cadence {
    /// An interval (`30m`, `1h`, `90s`, `1d`, a number of seconds) or, when the text has
    /// spaces, a cron expression (`0 * * * *`, `*/10 * * * * *`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.contains(char::is_whitespace) {
            let parser = croner::parser::CronParser::builder()
                .seconds(croner::parser::Seconds::Optional)
                .build();
            return parser
                .parse(text)
                .map(|c| Cadence::Cron(Box::new(c)))
                .map_err(|e| format!("cron expression {text:?}: {e}"));
        }
        let d = feast_core::repo::parse_duration(
            &feast_core::repo::definitions::DurationValue::Text(text.to_owned()),
        )
        .map_err(|e| format!("interval {text:?}: {e}"))?;
        if d.seconds < 0 || d.nanos < 0 || (d.seconds == 0 && d.nanos == 0) {
            return Err(format!("interval {text:?} must be positive"));
        }
        Ok(Cadence::Every(Duration::new(
            d.seconds as u64,
            d.nanos as u32,
        )))
    }

    /// The first run after `now`.
    pub fn next_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Cadence::Every(d) => chrono::TimeDelta::from_std(*d).ok().map(|d| now + d),
            Cadence::Cron(cron) => cron.find_next_occurrence(&now, false).ok(),
        }
    }
}

impl std::fmt::Display for Cadence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cadence::Every(d) => write!(f, "every {}s", d.as_secs_f64()),
            Cadence::Cron(c) => write!(f, "cron \"{}\"", c.pattern),
        }
    }
}

impl FromStr for Cadence {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cadence::parse(s)
    }
}

/// One schedule: incremental jobs of `views` (empty: every online view that has no
/// schedule of its own) at `cadence`.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub cadence: Cadence,
    pub views: Vec<String>,
}

impl Schedule {
    /// `VIEW[,VIEW...]=CADENCE` (`--schedule driver_stats=15m`,
    /// `--schedule "a,b=0 */6 * * *"`).
    pub fn parse_for_views(text: &str) -> Result<Self, String> {
        let (views, cadence) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?}: expected VIEW[,VIEW...]=INTERVAL|CRON"))?;
        let views: Vec<String> = views
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect();
        if views.is_empty() {
            return Err(format!("{text:?}: no feature view named before `=`"));
        }
        Ok(Schedule {
            cadence: Cadence::parse(cadence)?,
            views,
        })
    }
}

impl<S: OfflineStore + 'static> JobManager<S> {
    /// Runs `schedules`, one task each, until the handles are aborted. A run whose views
    /// are still being materialized is skipped (logged), as is a run with nothing to do.
    pub fn schedule_all(
        self: &Arc<Self>,
        schedules: Vec<Schedule>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let own: Arc<BTreeSet<String>> = Arc::new(
            schedules
                .iter()
                .flat_map(|s| s.views.iter().cloned())
                .collect(),
        );
        schedules
            .into_iter()
            .map(|schedule| {
                let manager = self.clone();
                let own = own.clone();
                tracing::info!(
                    message = "scheduled incremental materialization",
                    cadence = %schedule.cadence,
                    views = ?schedule.views,
                );
                tokio::spawn(async move {
                    loop {
                        let now = Utc::now();
                        let Some(next) = schedule.cadence.next_after(now) else {
                            tracing::warn!(message = "schedule has no next run", cadence = %schedule.cadence);
                            return;
                        };
                        tokio::time::sleep((next - now).to_std().unwrap_or_default()).await;
                        manager.run_scheduled(&schedule, &own).await;
                    }
                })
            })
            .collect()
    }

    async fn run_scheduled(self: &Arc<Self>, schedule: &Schedule, own: &BTreeSet<String>) {
        let end = Utc::now();
        let (views, skipped) = if schedule.views.is_empty() {
            // Every online view, less those scheduled on their own; the views feast-rs cannot
            // compute are reported by the job.
            let Some(snapshot) = self.registry.snapshot() else {
                tracing::warn!(message = "scheduled job not started: no registry yet");
                return;
            };
            let range = Range::Incremental { end };
            match crate::plan(&snapshot.catalog, &self.project, &[], range, Utc::now()) {
                Ok(planned) => (
                    planned
                        .windows
                        .into_iter()
                        .map(|w| w.view)
                        .filter(|v| !own.contains(v))
                        .collect(),
                    planned.skipped,
                ),
                Err(e) => {
                    tracing::warn!(message = "scheduled job not started", error = %e);
                    return;
                }
            }
        } else {
            (schedule.views.clone(), Vec::new())
        };
        if views.is_empty() {
            return;
        }
        let call = MaterializeCall {
            views,
            range: Range::Incremental { end },
        };
        match self
            .submit_reporting(call, false, Trigger::Schedule, skipped)
            .await
        {
            Ok(job) => job.wait().await,
            // Normal with replicas: another one (or a job here) has them.
            Err(SubmitError::Busy(views)) => tracing::info!(
                message = "scheduled views are being materialized elsewhere; skipped",
                views = ?views.iter().map(ToString::to_string).collect::<Vec<_>>()
            ),
            Err(e) => tracing::warn!(message = "scheduled job not started", error = %e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn intervals_and_cron_expressions() {
        let now = at("2026-11-22T10:17:30Z");
        let every = Cadence::parse("15m").unwrap();
        assert_eq!(every.next_after(now), Some(at("2026-11-22T10:32:30Z")));
        let hourly = Cadence::parse("0 * * * *").unwrap();
        assert_eq!(hourly.next_after(now), Some(at("2026-11-22T11:00:00Z")));
        let seconds = Cadence::parse("*/10 * * * * *").unwrap();
        assert_eq!(seconds.next_after(now), Some(at("2026-11-22T10:17:40Z")));
        let daily = Cadence::parse("30 2 * * *").unwrap();
        assert_eq!(daily.next_after(now), Some(at("2026-11-23T02:30:00Z")));
        for bad in ["0", "-5m", "soon", "61 * * * *", "* * *"] {
            assert!(Cadence::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn per_view_schedules() {
        let s = Schedule::parse_for_views("a, b=0 */6 * * *").unwrap();
        assert_eq!(s.views, ["a", "b"]);
        assert!(matches!(s.cadence, Cadence::Cron(_)));
        let s = Schedule::parse_for_views("fresh=30s").unwrap();
        assert!(matches!(s.cadence, Cadence::Every(d) if d == Duration::from_secs(30)));
        assert!(Schedule::parse_for_views("=1h").is_err());
        assert!(Schedule::parse_for_views("1h").is_err());
    }
}
