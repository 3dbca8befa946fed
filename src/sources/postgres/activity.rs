//! pg_stat_activity: one aggregated read per refresh, every trigger measured from it in
//! memory.
//!
//! The read returns one row per client backend (never the scaler's own sessions) with just
//! what the measures need; filtering by database, user and application name happens here,
//! so trigger values never reach SQL.

use super::query::{ActivityMeasure, SessionFilter};

/// The read: client backends other than the scaler's own, plus the connection limits.
/// `application_name` is what the scaler sets on its connections (also through PgBouncer,
/// which forwards it), and `pg_backend_pid()` is the reading session itself.
pub const ACTIVITY_SQL: &str = "\
SELECT datname::text, usename::text, application_name::text, state::text,
       coalesce(wait_event_type = 'Lock', false),
       extract(epoch FROM clock_timestamp() - query_start)::float8,
       extract(epoch FROM clock_timestamp() - xact_start)::float8
FROM pg_stat_activity
WHERE backend_type = 'client backend'
  AND pid <> pg_backend_pid()
  AND application_name IS DISTINCT FROM 'backlog-scaler'";

/// Connections clients can use: max_connections minus the reserved ones (PG16 added
/// `reserved_connections`; older servers answer NULL for it with `missing_ok`).
pub const LIMITS_SQL: &str = "\
SELECT current_setting('max_connections')::int8
     - current_setting('superuser_reserved_connections')::int8
     - coalesce(nullif(current_setting('reserved_connections', true), ''), '0')::int8";

/// One client backend.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Session {
    pub database: Option<String>,
    pub user: Option<String>,
    pub application_name: Option<String>,
    pub state: Option<String>,
    pub waiting_on_lock: bool,
    pub query_seconds: Option<f64>,
    pub transaction_seconds: Option<f64>,
}

/// Everything one refresh read from pg_stat_activity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActivitySnapshot {
    pub sessions: Vec<Session>,
    pub usable_connections: i64,
}

impl SessionFilter {
    fn matches(&self, session: &Session) -> bool {
        fn same(want: &Option<String>, have: &Option<String>) -> bool {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        }
        same(&self.database, &session.database)
            && same(&self.user, &session.user)
            && same(&self.application_name, &session.application_name)
    }
}

impl ActivitySnapshot {
    /// The value of one trigger.
    pub fn measure(&self, measure: ActivityMeasure, filter: &SessionFilter) -> f64 {
        let sessions = self.sessions.iter().filter(|s| filter.matches(s));
        let in_state = |states: &[&str]| {
            sessions
                .clone()
                .filter(|s| s.state.as_deref().is_some_and(|st| states.contains(&st)))
                .count() as f64
        };
        match measure {
            ActivityMeasure::Active => in_state(&["active"]),
            ActivityMeasure::IdleInTransaction => {
                in_state(&["idle in transaction", "idle in transaction (aborted)"])
            }
            ActivityMeasure::Waiting => sessions.filter(|s| s.waiting_on_lock).count() as f64,
            ActivityMeasure::Total => sessions.count() as f64,
            ActivityMeasure::Utilization => {
                let used = sessions.count() as f64;
                if self.usable_connections <= 0 {
                    return 100.0;
                }
                (used / self.usable_connections as f64 * 100.0).min(100.0)
            }
            ActivityMeasure::LongestQuerySeconds => sessions
                .filter(|s| s.state.as_deref() == Some("active"))
                .filter_map(|s| s.query_seconds)
                .fold(0.0, f64::max),
            ActivityMeasure::LongestTransactionSeconds => sessions
                .filter_map(|s| s.transaction_seconds)
                .fold(0.0, f64::max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(app: &str, state: &str) -> Session {
        Session {
            database: Some("app".into()),
            user: Some("web".into()),
            application_name: Some(app.into()),
            state: Some(state.into()),
            ..Session::default()
        }
    }

    #[test]
    fn measures_and_filters() {
        let mut waiting = session("api", "active");
        waiting.waiting_on_lock = true;
        waiting.query_seconds = Some(7.5);
        waiting.transaction_seconds = Some(9.0);
        let mut idle_tx = session("api", "idle in transaction");
        idle_tx.transaction_seconds = Some(30.0);
        let snapshot = ActivitySnapshot {
            sessions: vec![
                session("api", "active"),
                waiting,
                idle_tx,
                session("batch", "idle"),
                session("batch", "idle in transaction (aborted)"),
            ],
            usable_connections: 47,
        };
        let all = SessionFilter::default();
        let api = SessionFilter {
            application_name: Some("api".into()),
            ..SessionFilter::default()
        };
        assert_eq!(snapshot.measure(ActivityMeasure::Active, &all), 2.0);
        assert_eq!(
            snapshot.measure(ActivityMeasure::IdleInTransaction, &all),
            2.0
        );
        assert_eq!(
            snapshot.measure(ActivityMeasure::IdleInTransaction, &api),
            1.0
        );
        assert_eq!(snapshot.measure(ActivityMeasure::Waiting, &all), 1.0);
        assert_eq!(snapshot.measure(ActivityMeasure::Total, &api), 3.0);
        assert_eq!(
            snapshot.measure(ActivityMeasure::Utilization, &all),
            5.0 / 47.0 * 100.0
        );
        assert_eq!(
            snapshot.measure(ActivityMeasure::LongestQuerySeconds, &all),
            7.5
        );
        assert_eq!(
            snapshot.measure(ActivityMeasure::LongestTransactionSeconds, &all),
            30.0
        );
        let nobody = SessionFilter {
            database: Some("other".into()),
            ..SessionFilter::default()
        };
        assert_eq!(snapshot.measure(ActivityMeasure::Total, &nobody), 0.0);
        assert_eq!(
            snapshot.measure(ActivityMeasure::LongestQuerySeconds, &nobody),
            0.0
        );
    }
}
