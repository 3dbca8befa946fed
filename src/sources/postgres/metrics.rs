//! The metrics PostgreSQL sources serve: each one's metadata keys and the one function that
//! parses them, declared once in [`METRICS`].
//!
//! Every value a trigger gives (database, user, application name, query ids, text, tags, job
//! names, schema) stays data: it is matched in memory or bound as a parameter, never spliced
//! into SQL. The only SQL that runs is this crate's own and the operator's named `queries`.

use std::collections::BTreeMap;

use crate::{
    Error, Result,
    metadata::{Metadata, MetricDef, shorten},
};

use super::query::{
    ACTIVITY_MEASURES, DAGSTER_STATUSES, DagsterRuns, PgQuery, STATEMENTS_MEASURES, SessionFilter,
    StatementFilter,
};

/// The source's named queries (`[sources.NAME.queries]`): what `pg-query` may pick.
pub type NamedQueries = BTreeMap<String, String>;

/// Every metric of a PostgreSQL source.
pub const METRICS: &[MetricDef<PgQuery, NamedQueries>] = &[
    MetricDef {
        name: "pg-activity",
        keys: &["measure", "database", "user", "applicationName"],
        parse: activity,
    },
    MetricDef {
        name: "pg-statements",
        keys: &["measure", "database", "user", "queryIds", "queryContains"],
        parse: statements,
    },
    MetricDef {
        name: "dagster-runs",
        keys: &["statuses", "tags", "jobs", "schema"],
        parse: dagster_runs,
    },
    MetricDef {
        name: "pg-query",
        keys: &["query"],
        parse: named_query,
    },
];

fn activity(md: &Metadata<'_>, _: &NamedQueries) -> Result<PgQuery> {
    Ok(PgQuery::Activity {
        measure: md.choice("measure", ACTIVITY_MEASURES, None)?,
        filter: SessionFilter {
            database: md.optional("database").map(str::to_string),
            user: md.optional("user").map(str::to_string),
            application_name: md.optional("applicationName").map(str::to_string),
        },
    })
}

fn statements(md: &Metadata<'_>, _: &NamedQueries) -> Result<PgQuery> {
    let measure = md.choice("measure", STATEMENTS_MEASURES, None)?;
    let query_ids = md
        .list("queryIds")?
        .unwrap_or_default()
        .iter()
        .map(|id| {
            id.parse::<i64>().map_err(|_| {
                Error::invalid(
                    "queryIds",
                    format!(
                        "`{}` is not a query id; use pg_stat_statements.queryid values (64-bit integers)",
                        shorten(id)
                    ),
                )
            })
        })
        .collect::<Result<Vec<i64>>>()?;
    Ok(PgQuery::Statements {
        measure,
        filter: StatementFilter {
            database: md.optional("database").map(str::to_string),
            user: md.optional("user").map(str::to_string),
            query_ids,
            query_contains: md.optional("queryContains").map(str::to_string),
        },
    })
}

fn dagster_runs(md: &Metadata<'_>, _: &NamedQueries) -> Result<PgQuery> {
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
                "unknown run status `{}`; accepted: {}",
                shorten(bad),
                DAGSTER_STATUSES.join(", ")
            ),
        ));
    }
    let schema = md.optional("schema").unwrap_or("public").to_string();
    if !is_plain_identifier(&schema) {
        return Err(Error::invalid(
            "schema",
            format!(
                "`{}` is not a schema name: letters, digits, `_` and `$`, not starting with a digit",
                shorten(&schema)
            ),
        ));
    }
    Ok(PgQuery::DagsterRuns(DagsterRuns {
        schema,
        statuses,
        tags: dagster_tags(md)?,
        jobs: md.list("jobs")?.unwrap_or_default(),
    }))
}

/// `key=value,key2=value2`; a value may itself hold `=`.
fn dagster_tags(md: &Metadata<'_>) -> Result<Vec<(String, String)>> {
    md.list("tags")?
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
                            "`{}` is not `key=value`; use `key=value,key2=value2`",
                            shorten(pair)
                        ),
                    )
                })
        })
        .collect()
}

fn named_query(md: &Metadata<'_>, named: &NamedQueries) -> Result<PgQuery> {
    let name = md.required("query", "the name of a query under the source's `queries`")?;
    if !named.contains_key(name) {
        let configured = if named.is_empty() {
            "none".to_string()
        } else {
            named.keys().cloned().collect::<Vec<_>>().join(", ")
        };
        return Err(Error::invalid(
            "query",
            format!(
                "no query named `{}` in the source's `queries`; configured: {configured}",
                shorten(name)
            ),
        ));
    }
    Ok(PgQuery::Named {
        query: name.to_string(),
    })
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
    use crate::{
        metadata::parse_metric,
        sources::{
            QueryKind,
            postgres::query::{ActivityMeasure, measure_name},
        },
    };

    fn parse(pairs: &[(&str, &str)]) -> Result<PgQuery> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let metric = map.get("metric").cloned().unwrap_or_default();
        let named: NamedQueries = [("dagster_backlog".to_string(), "SELECT 1".to_string())]
            .into_iter()
            .collect();
        parse_metric(METRICS, &metric, &Metadata::new(&map), &named).map(|parsed| parsed.query)
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
    fn dagster_suspended_runs_can_be_counted() {
        let query = parse(&[("metric", "dagster-runs"), ("statuses", "QUEUED,SUSPENDED")]).unwrap();
        let PgQuery::DagsterRuns(runs) = query else {
            panic!("a dagster-runs query")
        };
        assert_eq!(runs.statuses, vec!["QUEUED", "SUSPENDED"]);
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
