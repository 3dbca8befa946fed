//! PostgreSQL trigger metrics: their metadata keys and typed queries.
//!
//! Every value a trigger gives (database, user, application name, query ids, text, tags, job
//! names, schema) stays data: it is matched in memory or bound as a parameter, never spliced
//! into SQL. The only SQL that runs is this crate's own and the operator's named `queries`.

use serde::Serialize;

use crate::{Error, Result, trigger::Metadata};

/// The `metric` values PostgreSQL sources serve, for error messages.
pub const METRICS: &str = "pg-activity, pg-statements, dagster-runs, pg-query";

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
const ACTIVITY_MEASURES: &[(&str, ActivityMeasure)] = &[
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

const STATEMENTS_MEASURES: &[(&str, StatementsMeasure)] = &[
    ("calls-per-second", StatementsMeasure::CallsPerSecond),
    ("db-time-per-second", StatementsMeasure::DbTimePerSecond),
    ("mean-latency-ms", StatementsMeasure::MeanLatencyMs),
    ("rows-per-second", StatementsMeasure::RowsPerSecond),
];

/// Parses `measure` against `table`; the error lists every accepted spelling.
fn parse_measure<T: Copy>(md: &Metadata<'_>, table: &[(&str, T)]) -> Result<T> {
    let accepted = table
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ");
    let raw = md.required("measure", &accepted)?;
    table
        .iter()
        .find(|(name, _)| *name == raw)
        .map(|(_, measure)| *measure)
        .ok_or_else(|| Error::invalid("measure", format!("unknown `{raw}`; accepted: {accepted}")))
}

/// The metadata spelling of a measure.
fn measure_name<T: PartialEq>(table: &[(&'static str, T)], measure: &T) -> &'static str {
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
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct DagsterRuns {
    pub schema: String,
    pub statuses: Vec<String>,
    pub tags: Vec<(String, String)>,
    pub jobs: Vec<String>,
}

impl PgQuery {
    /// Parses the metric-specific keys; `named_queries` are the source's `queries` names.
    pub fn parse(
        metric: &str,
        md: &Metadata<'_>,
        named_queries: &[String],
    ) -> Result<(PgQuery, &'static [&'static str])> {
        match metric {
            "pg-activity" => {
                let measure = parse_measure(md, ACTIVITY_MEASURES)?;
                let filter = SessionFilter {
                    database: md.optional("database").map(str::to_string),
                    user: md.optional("user").map(str::to_string),
                    application_name: md.optional("applicationName").map(str::to_string),
                };
                Ok((
                    PgQuery::Activity { measure, filter },
                    &["measure", "database", "user", "applicationName"],
                ))
            }
            "pg-statements" => {
                let measure = parse_measure(md, STATEMENTS_MEASURES)?;
                let query_ids = md
                    .list("queryIds")?
                    .unwrap_or_default()
                    .iter()
                    .map(|id| {
                        id.parse::<i64>().map_err(|_| {
                            Error::invalid(
                                "queryIds",
                                format!("`{id}` is not a query id; use pg_stat_statements.queryid values (64-bit integers)"),
                            )
                        })
                    })
                    .collect::<Result<Vec<i64>>>()?;
                let filter = StatementFilter {
                    database: md.optional("database").map(str::to_string),
                    user: md.optional("user").map(str::to_string),
                    query_ids,
                    query_contains: md.optional("queryContains").map(str::to_string),
                };
                Ok((
                    PgQuery::Statements { measure, filter },
                    &["measure", "database", "user", "queryIds", "queryContains"],
                ))
            }
            "dagster-runs" => {
                let statuses = md
                    .list("statuses")?
                    .unwrap_or_else(|| vec!["QUEUED".to_string()]);
                if let Some(bad) = statuses
                    .iter()
                    .find(|s| !DAGSTER_STATUSES.contains(&s.as_str()))
                {
                    return Err(Error::invalid(
                        "statuses",
                        format!(
                            "unknown run status `{bad}`; accepted: {}",
                            DAGSTER_STATUSES.join(", ")
                        ),
                    ));
                }
                let tags = md
                    .list("tags")?
                    .unwrap_or_default()
                    .iter()
                    .map(|pair| {
                        pair.split_once('=')
                            .filter(|(key, _)| !key.is_empty())
                            .map(|(key, value)| (key.to_string(), value.to_string()))
                            .ok_or_else(|| {
                                Error::invalid(
                                    "tags",
                                    format!(
                                        "`{pair}` is not `key=value`; use `key=value,key2=value2`"
                                    ),
                                )
                            })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let schema = md.optional("schema").unwrap_or("public").to_string();
                if !is_plain_identifier(&schema) {
                    return Err(Error::invalid(
                        "schema",
                        format!(
                            "`{schema}` is not a schema name: letters, digits, `_` and `$`, not starting with a digit"
                        ),
                    ));
                }
                Ok((
                    PgQuery::DagsterRuns(DagsterRuns {
                        schema,
                        statuses,
                        tags,
                        jobs: md.list("jobs")?.unwrap_or_default(),
                    }),
                    &["statuses", "tags", "jobs", "schema"],
                ))
            }
            "pg-query" => {
                let name =
                    md.required("query", "the name of a query under the source's `queries`")?;
                if !named_queries.iter().any(|q| q == name) {
                    let configured = if named_queries.is_empty() {
                        "none".to_string()
                    } else {
                        named_queries.join(", ")
                    };
                    return Err(Error::invalid(
                        "query",
                        format!(
                            "no query named `{name}` in the source's `queries`; configured: {configured}"
                        ),
                    ));
                }
                Ok((
                    PgQuery::Named {
                        query: name.to_string(),
                    },
                    &["query"],
                ))
            }
            other => Err(Error::invalid(
                "metric",
                format!("unknown metric `{other}`; accepted: {METRICS}"),
            )),
        }
    }

    /// The readable subject of the metric name.
    pub fn subject(&self) -> String {
        match self {
            PgQuery::Activity { measure, filter } => {
                let measure = measure_name(ACTIVITY_MEASURES, measure);
                match filter
                    .application_name
                    .as_ref()
                    .or(filter.database.as_ref())
                {
                    Some(scope) => format!("{measure}-{scope}"),
                    None => measure.to_string(),
                }
            }
            PgQuery::Statements { measure, .. } => {
                measure_name(STATEMENTS_MEASURES, measure).to_string()
            }
            PgQuery::DagsterRuns(runs) => runs.statuses.join("-"),
            PgQuery::Named { query } => query.clone(),
        }
    }
}

/// An unquoted PostgreSQL identifier. The schema is bound as a parameter and quoted by the
/// server (`quote_ident`); this check only turns typos into a clear error early.
fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && name.len() <= 63
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<PgQuery> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let metric = map.get("metric").cloned().unwrap_or_default();
        PgQuery::parse(
            &metric,
            &Metadata::new(&map),
            &["dagster_backlog".to_string()],
        )
        .map(|(q, _)| q)
    }

    fn invalid_key(pairs: &[(&str, &str)]) -> String {
        match parse(pairs) {
            Err(Error::InvalidMetadata { key, .. }) => key,
            other => panic!("{pairs:?}: {other:?}"),
        }
    }

    #[test]
    fn activity() {
        let query = parse(&[
            ("metric", "pg-activity"),
            ("measure", "active"),
            ("applicationName", "x' OR 1=1 --"),
        ])
        .unwrap();
        let PgQuery::Activity { measure, filter } = query else {
            panic!()
        };
        assert_eq!(measure, ActivityMeasure::Active);
        assert_eq!(filter.application_name.as_deref(), Some("x' OR 1=1 --"));
        assert_eq!(invalid_key(&[("metric", "pg-activity")]), "measure");
        assert_eq!(
            invalid_key(&[("metric", "pg-activity"), ("measure", "busy")]),
            "measure"
        );
    }

    #[test]
    fn subjects_use_the_metadata_spelling() {
        let query = parse(&[
            ("metric", "pg-activity"),
            ("measure", "idle-in-transaction"),
            ("applicationName", "api"),
        ])
        .unwrap();
        assert_eq!(query.subject(), "idle-in-transaction-api");
        let query = parse(&[("metric", "pg-statements"), ("measure", "mean-latency-ms")]).unwrap();
        assert_eq!(query.subject(), "mean-latency-ms");
        for (name, measure) in ACTIVITY_MEASURES {
            assert_eq!(measure_name(ACTIVITY_MEASURES, measure), *name);
        }
    }

    #[test]
    fn statements() {
        let query = parse(&[
            ("metric", "pg-statements"),
            ("measure", "mean-latency-ms"),
            ("queryIds", "-123,456"),
            ("queryContains", "%_--"),
        ])
        .unwrap();
        let PgQuery::Statements { filter, .. } = query else {
            panic!()
        };
        assert_eq!(filter.query_ids, vec![-123, 456]);
        assert_eq!(
            invalid_key(&[
                ("metric", "pg-statements"),
                ("measure", "calls-per-second"),
                ("queryIds", "abc")
            ]),
            "queryIds"
        );
        assert_eq!(
            invalid_key(&[("metric", "pg-statements"), ("measure", "qps")]),
            "measure"
        );
    }

    #[test]
    fn dagster() {
        let query = parse(&[("metric", "dagster-runs")]).unwrap();
        assert_eq!(
            query,
            PgQuery::DagsterRuns(DagsterRuns {
                schema: "public".into(),
                statuses: vec!["QUEUED".into()],
                tags: vec![],
                jobs: vec![],
            })
        );
        let query = parse(&[
            ("metric", "dagster-runs"),
            ("statuses", "QUEUED,NOT_STARTED"),
            ("tags", "team=data,priority=high=1"),
            ("jobs", "etl,report"),
            ("schema", "dagster"),
        ])
        .unwrap();
        let PgQuery::DagsterRuns(runs) = query else {
            panic!()
        };
        assert_eq!(
            runs.tags,
            vec![
                ("team".into(), "data".into()),
                ("priority".into(), "high=1".into())
            ]
        );
        assert_eq!(
            invalid_key(&[("metric", "dagster-runs"), ("statuses", "queued")]),
            "statuses"
        );
        assert_eq!(
            invalid_key(&[("metric", "dagster-runs"), ("tags", "novalue")]),
            "tags"
        );
        assert_eq!(
            invalid_key(&[("metric", "dagster-runs"), ("schema", "public; DROP")]),
            "schema"
        );
        assert_eq!(
            invalid_key(&[("metric", "dagster-runs"), ("schema", "1abc")]),
            "schema"
        );
    }

    #[test]
    fn named_query_must_be_configured() {
        assert_eq!(
            parse(&[("metric", "pg-query"), ("query", "dagster_backlog")]).unwrap(),
            PgQuery::Named {
                query: "dagster_backlog".into()
            }
        );
        assert_eq!(
            invalid_key(&[("metric", "pg-query"), ("query", "SELECT 1")]),
            "query"
        );
    }
}
