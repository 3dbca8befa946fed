//! PgBouncer sources: the pools of a PgBouncer as a scaling signal, read from its admin
//! console.
//!
//! [`config`] parses the section, [`metrics`] declares `metric: pgbouncer` and its keys,
//! [`query`] owns the typed measurement, [`pools`] and [`stats`] turn `SHOW` answers into
//! values, and [`console`] owns the one kept connection. This module batches: one refresh
//! sends at most one `SHOW POOLS` with one `SHOW CLIENTS` and one `SHOW SERVERS` (to leave
//! the scaler's own clients and server links out: [`own`]), one `SHOW DATABASES` (only when a
//! trigger asks for pool utilization) and one `SHOW STATS` (only when a trigger asks for a
//! rate), pipelined, for every trigger of the source.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::future::BoxFuture;
use tokio::time::Instant;

use crate::{
    Error, Result,
    error::ConfigError,
    metadata::{Metadata, Parsed, metric_names},
    sources::{Backend, CheckReport, Finding, Query, Section, Source, typed},
};

pub mod config;
pub mod console;
pub mod metrics;
pub mod own;
pub mod pools;
pub mod query;
pub mod stats;

use console::{Console, Session};
use own::{SHOW_CLIENTS, SHOW_SERVERS};
use pools::{PoolsSnapshot, SHOW_DATABASES, SHOW_POOLS};
pub use query::PgBouncerQuery;
use stats::{SHOW_STATS, StatsSnapshot};

/// A snapshot older than this is no base for a rate (the source was idle); a cold read then
/// takes two.
const SNAPSHOT_REUSE_LIMIT: Duration = Duration::from_secs(30);

/// The shortest window a rate is computed over: shorter windows make noisy rates, and a
/// cold read waits this long for its second snapshot (well inside the default 1.5 s budget).
const MIN_RATE_WINDOW: Duration = Duration::from_millis(250);

/// `type = "pgbouncer"`: a PgBouncer's admin console.
pub struct PgBouncerBackend;

impl Backend for PgBouncerBackend {
    fn types(&self) -> &'static [&'static str] {
        &["pgbouncer"]
    }

    fn configure(&self, section: Section) -> Result<Arc<dyn Source>, ConfigError> {
        let settings = config::parse(&section)?;
        Ok(Arc::new(PgBouncerSource {
            tls_description: settings.tls.describe(),
            console: Console::new(&section.name, settings, section.refresh.timeout),
            name: section.name,
            last_stats: Mutex::new(None),
        }))
    }
}

pub struct PgBouncerSource {
    name: String,
    /// What `check` says of the console connection's TLS.
    tls_description: String,
    console: Console,
    /// The latest `SHOW STATS` snapshot, the base of the next rate.
    last_stats: Mutex<Option<Arc<StatsSnapshot>>>,
}

/// What one refresh must send: each `SHOW` at most once, only when a query needs it.
#[derive(Debug, Default, PartialEq, Eq)]
struct ReadPlan {
    pools: bool,
    pool_sizes: bool,
    stats: bool,
}

impl ReadPlan {
    fn of<'q>(queries: impl Iterator<Item = &'q PgBouncerQuery>) -> Self {
        let mut plan = ReadPlan::default();
        for query in queries {
            if query.measure.is_rate() {
                plan.stats = true;
            } else {
                plan.pools = true;
                plan.pool_sizes |= metrics::needs_pool_sizes(query.measure);
            }
        }
        plan
    }

    /// The commands, in the order [`PgBouncerSource::read`] takes their answers.
    fn commands(&self) -> Vec<&'static str> {
        [
            (self.pools, SHOW_POOLS),
            (self.pools, SHOW_CLIENTS),
            (self.pools, SHOW_SERVERS),
            (self.pool_sizes, SHOW_DATABASES),
            (self.stats, SHOW_STATS),
        ]
        .into_iter()
        .filter_map(|(wanted, command)| wanted.then_some(command))
        .collect()
    }
}

type StatsWindow = (Arc<StatsSnapshot>, Arc<StatsSnapshot>);

/// What one refresh read, shared by every query of it.
#[derive(Default)]
struct Readings {
    pools: Option<PoolsSnapshot>,
    window: Option<StatsWindow>,
}

impl Readings {
    fn answer(&self, query: &PgBouncerQuery) -> Result<f64> {
        let not_read = || Error::Internal(format!("{query:?} was not read"));
        if query.measure.is_rate() {
            let (previous, current) = self.window.as_ref().ok_or_else(not_read)?;
            Ok(stats::wait_rate(previous, current, &query.filter))
        } else {
            let pools = self.pools.as_ref().ok_or_else(not_read)?;
            Ok(pools.measure(query.measure, &query.filter))
        }
    }
}

impl PgBouncerSource {
    async fn read_all(&self, queries: &[Query]) -> Vec<Result<f64>> {
        let typed: Vec<Result<&PgBouncerQuery>> =
            queries.iter().map(|q| typed(&self.name, q)).collect();
        let plan = ReadPlan::of(typed.iter().filter_map(|q| q.as_ref().ok().copied()));
        let readings = self.read(&plan).await;
        typed
            .into_iter()
            .map(|query| match &readings {
                Ok(readings) => readings.answer(query?),
                Err(error) => Err(error.clone()),
            })
            .collect()
    }

    /// Sends the plan's commands, pipelined on the console connection.
    async fn read(&self, plan: &ReadPlan) -> Result<Readings> {
        let commands = plan.commands();
        if commands.is_empty() {
            return Ok(Readings::default());
        }
        let mut session = self.console.session().await?;
        let mut answers = session.show(&commands).await?.into_iter();
        let taken = Instant::now();
        let mut next = || answers.next().unwrap_or_default();
        let mut readings = Readings::default();
        if plan.pools {
            let pools = pools::parse_pools(&next()).map_err(|e| self.rejected(e))?;
            let (clients, servers) = (next(), next());
            let own = own::footprint(&clients, &servers).map_err(|e| self.rejected(e))?;
            let pool_sizes = match plan.pool_sizes {
                true => Some(pools::parse_pool_sizes(&next()).map_err(|e| self.rejected(e))?),
                false => None,
            };
            readings.pools = Some(PoolsSnapshot {
                pools,
                pool_sizes,
                own,
            });
        }
        if plan.stats {
            let first = stats::parse_stats(&next(), taken, session.connection())
                .map_err(|e| self.rejected(e))?;
            readings.window = Some(self.stats_window(&mut session, first).await?);
        }
        Ok(readings)
    }

    /// Two `SHOW STATS` snapshots of the same connection to compute rates between: the
    /// source's previous one (if recent) and this refresh's. A cold source, or one that has
    /// just reconnected (PgBouncer may have restarted), takes a second snapshot
    /// [`MIN_RATE_WINDOW`] after the first, so its first answer is a measured rate too.
    async fn stats_window(
        &self,
        session: &mut Session<'_>,
        first: StatsSnapshot,
    ) -> Result<StatsWindow> {
        let previous = self.take_last_stats().filter(|previous| {
            previous.connection == first.connection
                && first.taken.saturating_duration_since(previous.taken) <= SNAPSHOT_REUSE_LIMIT
        });
        let window = match previous {
            Some(previous)
                if first.taken.saturating_duration_since(previous.taken) >= MIN_RATE_WINDOW =>
            {
                (previous, Arc::new(first))
            }
            previous => {
                let start = previous.unwrap_or_else(|| Arc::new(first));
                tokio::time::sleep_until(start.taken + MIN_RATE_WINDOW).await;
                let answers = session.show(&[SHOW_STATS]).await?;
                let records = answers.into_iter().next().unwrap_or_default();
                let current = stats::parse_stats(&records, Instant::now(), session.connection())
                    .map_err(|e| self.rejected(e))?;
                (start, Arc::new(current))
            }
        };
        *self.last_stats.lock().unwrap_or_else(|e| e.into_inner()) = Some(window.1.clone());
        Ok(window)
    }

    fn take_last_stats(&self) -> Option<Arc<StatsSnapshot>> {
        self.last_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// An answer of an unexpected shape: not the admin console, or a PgBouncer whose columns
    /// this version does not know.
    fn rejected(&self, reason: String) -> Error {
        Error::rejected(&self.name, format!("{reason}: {}", console::ADVICE))
    }
}

impl Source for PgBouncerSource {
    fn family(&self) -> &'static str {
        "a PgBouncer"
    }

    fn metrics(&self) -> String {
        metric_names(metrics::METRICS)
    }

    fn parse(&self, metric: &str, md: &Metadata<'_>) -> Result<Parsed<Query>> {
        super::parse_query(metrics::METRICS, metric, md, &())
    }

    fn read_batch<'a>(&'a self, queries: &'a [Query]) -> BoxFuture<'a, Vec<Result<f64>>> {
        Box::pin(self.read_all(queries))
    }

    fn probe(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let mut session = self.console.session().await?;
            session.show(&["SHOW VERSION"]).await.map(drop)
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<CheckReport>> {
        Box::pin(async move {
            let mut session = self.console.session().await?;
            let answers = session.show(&["SHOW VERSION"]).await?;
            let version = answers
                .first()
                .and_then(|records| records.first())
                .and_then(|record| record.text("SHOW VERSION", "version").ok())
                .map(str::to_string);
            Ok(CheckReport {
                version,
                findings: vec![Finding::new("tls", true, self.tls_description.clone())],
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use query::{MEASURES, PoolFilter, PoolMeasure};

    fn query(measure: PoolMeasure, database: Option<&str>) -> PgBouncerQuery {
        PgBouncerQuery {
            measure,
            filter: PoolFilter {
                database: database.map(str::to_string),
                user: None,
            },
        }
    }

    #[test]
    fn one_refresh_sends_each_show_at_most_once_and_only_when_needed() {
        let waiting = query(PoolMeasure::ClientsWaiting, Some("app"));
        let plan = ReadPlan::of([&waiting, &waiting].into_iter());
        assert_eq!(
            plan.commands(),
            vec![SHOW_POOLS, SHOW_CLIENTS, SHOW_SERVERS]
        );
        let utilization = query(PoolMeasure::PoolUtilization, None);
        let rate = query(PoolMeasure::WaitSecondsPerSecond, Some("app"));
        let plan = ReadPlan::of([&rate].into_iter());
        assert_eq!(plan.commands(), vec![SHOW_STATS]);
        let every: Vec<PgBouncerQuery> = MEASURES
            .iter()
            .flat_map(|(_, m)| [query(*m, None), query(*m, Some("app"))])
            .chain([utilization, rate])
            .collect();
        let plan = ReadPlan::of(every.iter());
        assert_eq!(
            plan.commands(),
            vec![
                SHOW_POOLS,
                SHOW_CLIENTS,
                SHOW_SERVERS,
                SHOW_DATABASES,
                SHOW_STATS
            ]
        );
        assert!(ReadPlan::of(std::iter::empty()).commands().is_empty());
    }
}
