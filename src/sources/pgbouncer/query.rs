//! PgBouncer measurements as typed queries: which measure of which pools.
//! [`super::metrics`] parses them from trigger metadata.

use std::borrow::Cow;

use serde::Serialize;

use crate::sources::QueryKind;

/// The name of PgBouncer's admin console, as a database and as a pool in `SHOW POOLS`.
pub const ADMIN_DATABASE: &str = "pgbouncer";

/// One PgBouncer measurement: `metric: pgbouncer` with its `measure` and pool filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PgBouncerQuery {
    pub measure: PoolMeasure,
    pub filter: PoolFilter,
}

/// The pool measures count without the scaler's own clients and the server connections
/// linked to them (see [`super::own`]); the wait rate cannot be split by client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolMeasure {
    /// Σ `cl_waiting` of `SHOW POOLS`.
    ClientsWaiting,
    /// Σ `cl_active`.
    ClientsActive,
    /// Σ `sv_active`.
    ServersActive,
    /// The longest current wait (`maxwait` + `maxwait_us`), max over the pools.
    MaxWaitSeconds,
    /// Σ `sv_active` over Σ pool size (`SHOW DATABASES`), in percent.
    PoolUtilization,
    /// Δ `total_wait_time` of `SHOW STATS` per second.
    WaitSecondsPerSecond,
}

/// Metadata spelling of each `measure`; parsing and naming both read this table.
pub const MEASURES: &[(&str, PoolMeasure)] = &[
    ("clients-waiting", PoolMeasure::ClientsWaiting),
    ("clients-active", PoolMeasure::ClientsActive),
    ("servers-active", PoolMeasure::ServersActive),
    ("max-wait-seconds", PoolMeasure::MaxWaitSeconds),
    ("pool-utilization", PoolMeasure::PoolUtilization),
    ("wait-seconds-per-second", PoolMeasure::WaitSecondsPerSecond),
];

impl PoolMeasure {
    /// The metadata spelling.
    pub fn name(self) -> &'static str {
        MEASURES
            .iter()
            .find(|(_, measure)| *measure == self)
            .map_or("", |(name, _)| name)
    }

    /// True for the measures read from `SHOW STATS` (the others read `SHOW POOLS`).
    pub fn is_rate(self) -> bool {
        self == PoolMeasure::WaitSecondsPerSecond
    }
}

/// Which pools count: a pool is a (database, user) pair. Absent filters match every pool
/// except the admin console's own (`pgbouncer`), which counts only when `database` names it:
/// its clients are the monitoring sessions (the scaler's among them), not application load.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct PoolFilter {
    pub database: Option<String>,
    pub user: Option<String>,
}

impl PoolFilter {
    /// Whether the pool (or, with `user = None`, the database of `SHOW STATS`) counts.
    pub fn matches(&self, database: &str, user: Option<&str>) -> bool {
        let database_matches = match &self.database {
            Some(wanted) => wanted == database,
            None => database != ADMIN_DATABASE,
        };
        let user_matches = match (&self.user, user) {
            (Some(wanted), Some(user)) => wanted == user,
            (Some(_), None) => false,
            (None, _) => true,
        };
        database_matches && user_matches
    }
}

impl QueryKind for PgBouncerQuery {
    const TAG: &'static str = "PgBouncer";

    fn subject(&self) -> Cow<'_, str> {
        let measure = self.measure.name();
        match &self.filter.database {
            Some(database) => format!("{measure}-{database}").into(),
            None => measure.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_pool_counts_only_when_named() {
        let all = PoolFilter::default();
        assert!(all.matches("app", Some("web")));
        assert!(!all.matches(ADMIN_DATABASE, Some(ADMIN_DATABASE)));
        let admin = PoolFilter {
            database: Some(ADMIN_DATABASE.into()),
            user: None,
        };
        assert!(admin.matches(ADMIN_DATABASE, Some(ADMIN_DATABASE)));
        assert!(!admin.matches("app", Some("web")));
        let web = PoolFilter {
            database: None,
            user: Some("web".into()),
        };
        assert!(web.matches("app", Some("web")));
        assert!(!web.matches("app", Some("batch")));
        assert!(
            !web.matches("app", None),
            "a user filter never matches per-database stats"
        );
    }

    #[test]
    fn every_measure_has_a_spelling() {
        for (name, measure) in MEASURES {
            assert_eq!(measure.name(), *name);
        }
        let query = PgBouncerQuery {
            measure: PoolMeasure::ClientsWaiting,
            filter: PoolFilter {
                database: Some("app".into()),
                user: None,
            },
        };
        assert_eq!(query.subject(), "clients-waiting-app");
    }
}
