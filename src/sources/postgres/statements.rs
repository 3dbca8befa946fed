//! pg_stat_statements: one snapshot per refresh, rates from the deltas between snapshots.
//!
//! Counters are cumulative, so a rate needs two snapshots. Entries are keyed by
//! (dbid, userid, queryid, toplevel). Counters can go down or vanish: an entry evicted and
//! re-created, `pg_stat_statements_reset()`, a server restart. The rule that keeps rates
//! honest is the one Prometheus applies to counter resets: when an entry is new, reset
//! (its counter went down), or the whole view was reset (`stats_reset` changed), the
//! entry's current value is the activity since the reset, all of it inside the window —
//! never a negative delta, never a spike of the lifetime total.

use std::{collections::HashMap, time::Duration};

use super::query::{StatementFilter, StatementsMeasure};

/// PostgreSQL 14+ (`toplevel` exists). `$1` asks for query texts only when a trigger filters
/// on them; `$2`, `$3`, `$4` (NULL: no filter) keep only the databases, roles and queryids
/// every trigger of the source is limited to (see [`SnapshotScope`]).
///
/// The role the scaler runs as is always left out: every statement of every replica (its
/// reads, their `BEGIN`/`SET LOCAL`/`COMMIT`, Dagster and named queries, `check`) runs as
/// that role, and is recorded under its userid. Through PgBouncer it is the role PgBouncer
/// logs in as, which is what the server records too.
pub const SNAPSHOT_SQL: &str = "\
SELECT s.dbid::int8, s.userid::int8, s.queryid::int8, s.toplevel, s.calls::int8,
       s.total_exec_time::float8, s.rows::int8, d.datname::text, r.rolname::text, s.query
FROM pg_stat_statements($1) s
LEFT JOIN pg_database d ON d.oid = s.dbid
LEFT JOIN pg_roles r ON r.oid = s.userid
WHERE s.queryid IS NOT NULL
  AND s.userid IS DISTINCT FROM (SELECT oid FROM pg_roles WHERE rolname = current_user)
  AND ($2::text[] IS NULL OR d.datname = ANY($2::text[]))
  AND ($3::text[] IS NULL OR r.rolname = ANY($3::text[]))
  AND ($4::int8[] IS NULL OR s.queryid = ANY($4::int8[]))";

/// PostgreSQL 13: no `toplevel` column (every entry counts as top level).
pub const SNAPSHOT_SQL_PG13: &str = "\
SELECT s.dbid::int8, s.userid::int8, s.queryid::int8, true, s.calls::int8,
       s.total_exec_time::float8, s.rows::int8, d.datname::text, r.rolname::text, s.query
FROM pg_stat_statements($1) s
LEFT JOIN pg_database d ON d.oid = s.dbid
LEFT JOIN pg_roles r ON r.oid = s.userid
WHERE s.queryid IS NOT NULL
  AND s.userid IS DISTINCT FROM (SELECT oid FROM pg_roles WHERE rolname = current_user)
  AND ($2::text[] IS NULL OR d.datname = ANY($2::text[]))
  AND ($3::text[] IS NULL OR r.rolname = ANY($3::text[]))
  AND ($4::int8[] IS NULL OR s.queryid = ANY($4::int8[]))";

/// What a snapshot reads: the texts or not, and the filters every pg-statements trigger of
/// the source shares, pushed into the snapshot's `WHERE` so the server ships only entries
/// some trigger can count. A rate is only computed between two snapshots of the same scope
/// (an entry a narrower snapshot left out would look new in a wider one, and count its whole
/// lifetime as one window).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SnapshotScope {
    pub texts: bool,
    pub databases: Option<Vec<String>>,
    pub users: Option<Vec<String>>,
    pub query_ids: Option<Vec<i64>>,
}

impl SnapshotScope {
    /// Whether a snapshot of this scope holds every entry (and text) one of `other` would:
    /// then it serves `other`'s triggers too, and is a sound base for `other`'s next rate
    /// (an entry the narrower snapshot holds was in the wider one, if it existed).
    pub fn covers(&self, other: &SnapshotScope) -> bool {
        fn wider<T: PartialEq>(mine: &Option<Vec<T>>, theirs: &Option<Vec<T>>) -> bool {
            match (mine, theirs) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(mine), Some(theirs)) => theirs.iter().all(|t| mine.contains(t)),
            }
        }
        (self.texts || !other.texts)
            && wider(&self.databases, &other.databases)
            && wider(&self.users, &other.users)
            && wider(&self.query_ids, &other.query_ids)
    }

    /// The scope that serves every one of `filters` (at least one).
    pub fn of<'f>(filters: impl Iterator<Item = &'f StatementFilter> + Clone) -> SnapshotScope {
        fn every<T: Ord + Clone>(values: impl Iterator<Item = Option<Vec<T>>>) -> Option<Vec<T>> {
            let mut union = Vec::new();
            for value in values {
                union.extend(value?);
            }
            union.sort();
            union.dedup();
            Some(union)
        }
        SnapshotScope {
            texts: filters.clone().any(|f| f.query_contains.is_some()),
            databases: every(filters.clone().map(|f| f.database.clone().map(|d| vec![d]))),
            users: every(filters.clone().map(|f| f.user.clone().map(|u| vec![u]))),
            query_ids: every(
                filters.map(|f| (!f.query_ids.is_empty()).then(|| f.query_ids.clone())),
            ),
        }
    }
}

/// PostgreSQL 14+: when the whole view was last reset.
pub const RESET_SQL: &str = "SELECT stats_reset::text FROM pg_stat_statements_info";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatementKey {
    pub dbid: i64,
    pub userid: i64,
    pub queryid: i64,
    pub toplevel: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatementEntry {
    pub calls: i64,
    pub total_exec_time_ms: f64,
    pub rows: i64,
    pub database: Option<String>,
    pub user: Option<String>,
    pub query: Option<String>,
}

/// One read of pg_stat_statements, with when it was taken (monotonic time).
#[derive(Debug, Clone, PartialEq)]
pub struct StatementSnapshot {
    pub taken: tokio::time::Instant,
    pub stats_reset: Option<String>,
    pub entries: HashMap<StatementKey, StatementEntry>,
}

impl StatementFilter {
    fn matches(&self, key: &StatementKey, entry: &StatementEntry) -> bool {
        self.database
            .as_ref()
            .is_none_or(|d| entry.database.as_ref() == Some(d))
            && self
                .user
                .as_ref()
                .is_none_or(|u| entry.user.as_ref() == Some(u))
            && (self.query_ids.is_empty() || self.query_ids.contains(&key.queryid))
            && self.query_contains.as_ref().is_none_or(|needle| {
                entry
                    .query
                    .as_ref()
                    .is_some_and(|text| text.contains(needle.as_str()))
            })
    }
}

/// The rate of `measure` over the window between two snapshots of the same source.
pub fn rate(
    previous: &StatementSnapshot,
    current: &StatementSnapshot,
    measure: StatementsMeasure,
    filter: &StatementFilter,
) -> f64 {
    let window = current.taken.saturating_duration_since(previous.taken);
    if window < Duration::from_millis(1) {
        return 0.0;
    }
    let whole_view_reset = previous.stats_reset != current.stats_reset;
    let (mut calls, mut time_ms, mut rows) = (0i64, 0f64, 0i64);
    for (key, now) in &current.entries {
        if !filter.matches(key, now) {
            continue;
        }
        let before = if whole_view_reset {
            None
        } else {
            previous.entries.get(key)
        };
        let (d_calls, d_time, d_rows) = match before {
            Some(before)
                if now.calls >= before.calls
                    && now.total_exec_time_ms >= before.total_exec_time_ms =>
            {
                (
                    now.calls - before.calls,
                    now.total_exec_time_ms - before.total_exec_time_ms,
                    (now.rows - before.rows).max(0),
                )
            }
            // New, re-created or reset entry: everything it holds happened in the window.
            _ => (now.calls, now.total_exec_time_ms, now.rows),
        };
        calls += d_calls;
        time_ms += d_time;
        rows += d_rows;
    }
    let seconds = window.as_secs_f64();
    match measure {
        StatementsMeasure::CallsPerSecond => calls as f64 / seconds,
        StatementsMeasure::DbTimePerSecond => time_ms / 1000.0 / seconds,
        StatementsMeasure::MeanLatencyMs => {
            if calls == 0 {
                0.0
            } else {
                time_ms / calls as f64
            }
        }
        StatementsMeasure::RowsPerSecond => rows as f64 / seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(queryid: i64) -> StatementKey {
        StatementKey {
            dbid: 1,
            userid: 10,
            queryid,
            toplevel: true,
        }
    }

    fn entry(calls: i64, time: f64, rows: i64, text: &str) -> StatementEntry {
        StatementEntry {
            calls,
            total_exec_time_ms: time,
            rows,
            database: Some("app".into()),
            user: Some("web".into()),
            query: Some(text.into()),
        }
    }

    fn snapshot(at_ms: u64, reset: &str, entries: Vec<(i64, StatementEntry)>) -> StatementSnapshot {
        StatementSnapshot {
            taken: tokio::time::Instant::from_std(std::time::Instant::now())
                + Duration::from_millis(at_ms),
            stats_reset: Some(reset.into()),
            entries: entries.into_iter().map(|(id, e)| (key(id), e)).collect(),
        }
    }

    #[test]
    fn the_snapshot_scope_narrows_only_where_every_trigger_does() {
        let filter = |database: Option<&str>, ids: &[i64], text: Option<&str>| StatementFilter {
            database: database.map(str::to_string),
            user: None,
            query_ids: ids.to_vec(),
            query_contains: text.map(str::to_string),
        };
        let both = [
            filter(Some("b"), &[7], None),
            filter(Some("a"), &[3, 7], Some("x")),
        ];
        let scope = SnapshotScope::of(both.iter());
        assert!(scope.texts);
        assert_eq!(
            scope.databases,
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(scope.users, None);
        assert_eq!(scope.query_ids, Some(vec![3, 7]));
        let one_wide = [filter(Some("a"), &[1], None), filter(None, &[], None)];
        let scope = SnapshotScope::of(one_wide.iter());
        assert_eq!(scope, SnapshotScope::default());

        let everything = SnapshotScope {
            texts: true,
            ..SnapshotScope::default()
        };
        let narrow = SnapshotScope::of(both.iter());
        assert!(everything.covers(&narrow) && everything.covers(&scope));
        assert!(!scope.covers(&everything), "no texts");
        assert!(!narrow.covers(&everything) && narrow.covers(&narrow));
        let just_a = SnapshotScope::of([filter(Some("a"), &[3], Some("x"))].iter());
        assert!(narrow.covers(&just_a) && !just_a.covers(&narrow));
    }

    #[test]
    fn rates_from_deltas() {
        let base = tokio::time::Instant::now();
        let mut a = snapshot(
            0,
            "r1",
            vec![
                (1, entry(100, 1000.0, 100, "SELECT a")),
                (2, entry(5, 50.0, 0, "UPDATE b")),
            ],
        );
        let mut b = snapshot(
            0,
            "r1",
            vec![
                (1, entry(120, 1400.0, 140, "SELECT a")),
                (2, entry(10, 60.0, 0, "UPDATE b")),
            ],
        );
        a.taken = base;
        b.taken = base + Duration::from_secs(2);
        let all = StatementFilter::default();
        assert_eq!(rate(&a, &b, StatementsMeasure::CallsPerSecond, &all), 12.5);
        assert_eq!(
            rate(&a, &b, StatementsMeasure::DbTimePerSecond, &all),
            0.205
        );
        assert_eq!(
            rate(&a, &b, StatementsMeasure::MeanLatencyMs, &all),
            410.0 / 25.0
        );
        assert_eq!(rate(&a, &b, StatementsMeasure::RowsPerSecond, &all), 20.0);
        let selects = StatementFilter {
            query_contains: Some("SELECT".into()),
            ..StatementFilter::default()
        };
        assert_eq!(
            rate(&a, &b, StatementsMeasure::CallsPerSecond, &selects),
            10.0
        );
        let by_id = StatementFilter {
            query_ids: vec![2],
            ..StatementFilter::default()
        };
        assert_eq!(rate(&a, &b, StatementsMeasure::CallsPerSecond, &by_id), 2.5);
    }

    #[test]
    fn resets_never_give_negative_or_spiked_rates() {
        let base = tokio::time::Instant::now();
        let all = StatementFilter::default();
        let mut before = snapshot(0, "r1", vec![(1, entry(1_000_000, 9e6, 0, "q"))]);
        before.taken = base;
        // The entry was reset (counter went down) and then called 4 times.
        let mut after = snapshot(0, "r1", vec![(1, entry(4, 8.0, 0, "q"))]);
        after.taken = base + Duration::from_secs(1);
        assert_eq!(
            rate(&before, &after, StatementsMeasure::CallsPerSecond, &all),
            4.0
        );
        // The whole view was reset (stats_reset changed): what an entry holds now was done
        // since the reset, even when it is more than before the reset.
        let mut small_before = snapshot(0, "r1", vec![(1, entry(2, 1.0, 0, "q"))]);
        small_before.taken = base;
        let mut small_after = snapshot(0, "r2", vec![(1, entry(3, 2.0, 0, "q"))]);
        small_after.taken = base + Duration::from_secs(1);
        assert_eq!(
            rate(
                &small_before,
                &small_after,
                StatementsMeasure::CallsPerSecond,
                &all
            ),
            3.0
        );
        // An entry that vanished contributes nothing; a new one counts what it holds.
        let mut gone = snapshot(0, "r1", vec![(2, entry(3, 3.0, 3, "new"))]);
        gone.taken = base + Duration::from_secs(1);
        assert_eq!(
            rate(&before, &gone, StatementsMeasure::CallsPerSecond, &all),
            3.0
        );
        for measure in [
            StatementsMeasure::CallsPerSecond,
            StatementsMeasure::DbTimePerSecond,
            StatementsMeasure::MeanLatencyMs,
            StatementsMeasure::RowsPerSecond,
        ] {
            for (a, b) in [
                (&before, &after),
                (&before, &gone),
                (&small_before, &small_after),
            ] {
                assert!(rate(a, b, measure, &all) >= 0.0);
            }
        }
    }
}
