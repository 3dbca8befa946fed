//! `SHOW STATS`: the cumulative `total_wait_time` of each database, and rates from the
//! deltas between two snapshots.
//!
//! PgBouncer adds a client's wait to `total_wait_time` (microseconds) when the wait ends,
//! that is when the client gets a server connection. The counters restart from 0 when
//! PgBouncer restarts, and a database's counters restart when it is dropped and re-created
//! (an auto-database that idled out). Two rules keep rates honest:
//!
//! - Snapshots are compared only when they were read over the same console connection
//!   ([`StatsSnapshot::connection`]): a restart always breaks the connection, so a rate never
//!   spans one. After a new connection the source takes two snapshots a short window apart.
//! - Within one connection, a counter that went down (or a database that is new) holds what
//!   happened since it started, all of it inside the window: counted as is, never negative.

use std::{collections::HashMap, time::Duration};

use tokio::time::Instant;

use super::{console::Record, query::PoolFilter};

pub const SHOW_STATS: &str = "SHOW STATS";

/// One read of `SHOW STATS`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsSnapshot {
    pub taken: Instant,
    /// Which console connection read it (see the module docs).
    pub connection: u64,
    /// `total_wait_time` of each database, in microseconds.
    pub wait_us: HashMap<String, i64>,
}

pub fn parse_stats(
    records: &[Record],
    taken: Instant,
    connection: u64,
) -> Result<StatsSnapshot, String> {
    let wait_us = records
        .iter()
        .map(|record| {
            Ok((
                record.text(SHOW_STATS, "database")?.to_string(),
                record.int(SHOW_STATS, "total_wait_time")?,
            ))
        })
        .collect::<Result<_, String>>()?;
    Ok(StatsSnapshot {
        taken,
        connection,
        wait_us,
    })
}

/// Seconds clients spent waiting for a server connection, per second of the window between
/// two snapshots of the same connection, over the databases `filter` matches.
pub fn wait_rate(previous: &StatsSnapshot, current: &StatsSnapshot, filter: &PoolFilter) -> f64 {
    let window = current.taken.saturating_duration_since(previous.taken);
    if window < Duration::from_millis(1) || previous.connection != current.connection {
        return 0.0;
    }
    let waited_us: i64 = current
        .wait_us
        .iter()
        .filter(|(database, _)| filter.matches(database, None))
        .map(|(database, &now)| match previous.wait_us.get(database) {
            Some(&before) if now >= before => now - before,
            // New or restarted counter: everything it holds happened in the window.
            _ => now.max(0),
        })
        .sum();
    waited_us as f64 / 1e6 / window.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::pgbouncer::query::ADMIN_DATABASE;

    fn snapshot(at: Instant, connection: u64, waits: &[(&str, i64)]) -> StatsSnapshot {
        StatsSnapshot {
            taken: at,
            connection,
            wait_us: waits.iter().map(|(d, w)| (d.to_string(), *w)).collect(),
        }
    }

    fn database(name: &str) -> PoolFilter {
        PoolFilter {
            database: Some(name.into()),
            user: None,
        }
    }

    #[test]
    fn rates_from_deltas() {
        let t = Instant::now();
        let all = PoolFilter::default();
        let a = snapshot(
            t,
            1,
            &[("app", 10_000_000), ("reports", 0), (ADMIN_DATABASE, 0)],
        );
        let b = snapshot(
            t + Duration::from_secs(2),
            1,
            &[
                ("app", 13_000_000),
                ("reports", 1_000_000),
                (ADMIN_DATABASE, 9_000_000),
            ],
        );
        assert_eq!(wait_rate(&a, &b, &all), 2.0);
        assert_eq!(wait_rate(&a, &b, &database("app")), 1.5);
        assert_eq!(wait_rate(&a, &b, &database(ADMIN_DATABASE)), 4.5);
        assert_eq!(wait_rate(&a, &b, &database("nope")), 0.0);
        // Parsed from rows as PgBouncer answers them (columns by name, extras ignored).
        let rows = [Record::from_pairs(&[
            ("database", "app"),
            ("total_xact_count", "4"),
            ("total_wait_time", "6012891"),
            ("avg_wait_time", "0"),
        ])];
        let parsed = parse_stats(&rows, t, 7).unwrap();
        assert_eq!(parsed.wait_us["app"], 6_012_891);
        assert!(parse_stats(&[Record::from_pairs(&[("database", "app")])], t, 7).is_err());
    }

    #[test]
    fn restarts_and_resets_never_give_negative_or_spiked_rates() {
        let t = Instant::now();
        let all = PoolFilter::default();
        let before = snapshot(t, 1, &[("app", 900_000_000)]);
        // A database dropped and re-created in the window: it counts what it holds.
        let reset = snapshot(t + Duration::from_secs(1), 1, &[("app", 400_000)]);
        assert_eq!(wait_rate(&before, &reset, &all), 0.4);
        // A database new in the window counts what it holds; one that vanished, nothing.
        let other = snapshot(t + Duration::from_secs(1), 1, &[("new", 250_000)]);
        assert_eq!(wait_rate(&before, &other, &all), 0.25);
        // Snapshots of different connections (PgBouncer may have restarted) give no rate,
        // even when the new counter happens to be larger.
        let restarted = snapshot(t + Duration::from_secs(1), 2, &[("app", 901_000_000)]);
        assert_eq!(wait_rate(&before, &restarted, &all), 0.0);
        for (a, b) in [(&before, &reset), (&before, &other), (&reset, &before)] {
            assert!(wait_rate(a, b, &all) >= 0.0);
        }
        // A window of no time is no base for a rate.
        assert_eq!(wait_rate(&before, &before, &all), 0.0);
    }
}
