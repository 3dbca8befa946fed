//! PostgreSQL measurements as typed queries: what each metric reads and which sessions,
//! statements or runs it counts. [`super::metrics`] parses them from trigger metadata.

use std::borrow::Cow;

use serde::Serialize;

use crate::sources::QueryKind;

/// One PostgreSQL measurement.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "metric", rename_all = "kebab-case")]
pub enum PgQuery {
    /// `pg-activity`: sessions in pg_stat_activity.
    Activity {
        measure: ActivityMeasure,
        filter: SessionFilter,
    },
    /// `pg-statements`: rates from pg_stat_statements deltas.
    Statements {
        measure: StatementsMeasure,
        filter: StatementFilter,
    },
    /// `dagster-runs`: rows of Dagster's run storage.
    DagsterRuns(DagsterRuns),
    /// `pg-query`: a named query of the source's config.
    Named { query: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActivityMeasure {
    Active,
    IdleInTransaction,
    Waiting,
    Total,
    Utilization,
    LongestQuerySeconds,
    LongestTransactionSeconds,
}

/// Metadata spelling of each `measure`; parsing and naming both read this table.
pub const ACTIVITY_MEASURES: &[(&str, ActivityMeasure)] = &[
    ("active", ActivityMeasure::Active),
    ("idle-in-transaction", ActivityMeasure::IdleInTransaction),
    ("waiting", ActivityMeasure::Waiting),
    ("total", ActivityMeasure::Total),
    ("utilization", ActivityMeasure::Utilization),
    (
        "longest-query-seconds",
        ActivityMeasure::LongestQuerySeconds,
    ),
    (
        "longest-transaction-seconds",
        ActivityMeasure::LongestTransactionSeconds,
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatementsMeasure {
    CallsPerSecond,
    DbTimePerSecond,
    MeanLatencyMs,
    RowsPerSecond,
}

pub const STATEMENTS_MEASURES: &[(&str, StatementsMeasure)] = &[
    ("calls-per-second", StatementsMeasure::CallsPerSecond),
    ("db-time-per-second", StatementsMeasure::DbTimePerSecond),
    ("mean-latency-ms", StatementsMeasure::MeanLatencyMs),
    ("rows-per-second", StatementsMeasure::RowsPerSecond),
];

/// The metadata spelling of a measure.
pub fn measure_name<T: PartialEq>(table: &[(&'static str, T)], measure: &T) -> &'static str {
    table
        .iter()
        .find(|(_, m)| m == measure)
        .map_or("", |(name, _)| name)
}

/// Which client sessions count (all filters must match; absent filters match everything).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct SessionFilter {
    pub database: Option<String>,
    pub user: Option<String>,
    pub application_name: Option<String>,
}

/// Which pg_stat_statements entries count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct StatementFilter {
    pub database: Option<String>,
    pub user: Option<String>,
    pub query_ids: Vec<i64>,
    pub query_contains: Option<String>,
}

/// The run statuses Dagster's run storage uses.
pub const DAGSTER_STATUSES: &[&str] = &[
    "QUEUED",
    "NOT_STARTED",
    "STARTING",
    "STARTED",
    "CANCELING",
    "SUCCESS",
    "FAILURE",
    "CANCELED",
    "MANAGED",
    "SUSPENDED",
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct DagsterRuns {
    pub schema: String,
    pub statuses: Vec<String>,
    pub tags: Vec<(String, String)>,
    pub jobs: Vec<String>,
}

impl QueryKind for PgQuery {
    const TAG: &'static str = "Postgres";

    fn subject(&self) -> Cow<'_, str> {
        match self {
            PgQuery::Activity { measure, filter } => {
                let measure = measure_name(ACTIVITY_MEASURES, measure);
                match filter
                    .application_name
                    .as_ref()
                    .or(filter.database.as_ref())
                {
                    Some(scope) => format!("{measure}-{scope}").into(),
                    None => measure.into(),
                }
            }
            PgQuery::Statements { measure, .. } => {
                measure_name(STATEMENTS_MEASURES, measure).into()
            }
            PgQuery::DagsterRuns(runs) => runs.statuses.join("-").into(),
            PgQuery::Named { query } => query.as_str().into(),
        }
    }
}
