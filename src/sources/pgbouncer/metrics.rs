//! The metric PgBouncer sources serve, its metadata keys and the one function that parses
//! them, declared once in [`METRICS`].
//!
//! Filter values stay data: they are compared with the pool names PgBouncer answers, in
//! memory. The only commands sent to the admin console are this backend's own `SHOW`s.

use crate::{
    Error, Result,
    metadata::{Metadata, MetricDef},
};

use super::query::{MEASURES, PgBouncerQuery, PoolFilter, PoolMeasure};

/// Every metric of a PgBouncer source.
pub const METRICS: &[MetricDef<PgBouncerQuery>] = &[MetricDef {
    name: "pgbouncer",
    keys: &["measure", "database", "user"],
    parse: pools,
}];

fn pools(md: &Metadata<'_>, _: &()) -> Result<PgBouncerQuery> {
    let measure = md.choice("measure", MEASURES, None)?;
    let filter = PoolFilter {
        database: md.optional("database").map(str::to_string),
        user: md.optional("user").map(str::to_string),
    };
    if measure.is_rate() && filter.user.is_some() {
        return Err(Error::invalid(
            "user",
            format!(
                "is not accepted with `measure: {}`: PgBouncer's SHOW STATS counts per \
                 database, not per user; filter with `database`",
                measure.name()
            ),
        ));
    }
    Ok(PgBouncerQuery { measure, filter })
}

/// The measures that need `SHOW DATABASES` (for pool sizes) besides `SHOW POOLS`.
pub fn needs_pool_sizes(measure: PoolMeasure) -> bool {
    measure == PoolMeasure::PoolUtilization
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::metadata::parse_metric;

    fn parse(pairs: &[(&str, &str)]) -> Result<PgBouncerQuery> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse_metric(METRICS, "pgbouncer", &Metadata::new(&map), &()).map(|p| p.query)
    }

    fn invalid_key(pairs: &[(&str, &str)]) -> String {
        match parse(pairs) {
            Err(Error::InvalidMetadata { key, .. }) => key,
            other => panic!("{pairs:?}: {other:?}"),
        }
    }

    #[test]
    fn measures_and_filters() {
        let query = parse(&[
            ("measure", "clients-waiting"),
            ("database", "app"),
            ("user", "x' OR 1=1 --"),
        ])
        .unwrap();
        assert_eq!(query.measure, PoolMeasure::ClientsWaiting);
        assert_eq!(query.filter.database.as_deref(), Some("app"));
        assert_eq!(query.filter.user.as_deref(), Some("x' OR 1=1 --"));
        for (name, measure) in MEASURES {
            assert_eq!(parse(&[("measure", name)]).unwrap().measure, *measure);
        }
    }

    #[test]
    fn measure_is_required_and_checked() {
        assert_eq!(invalid_key(&[]), "measure");
        assert_eq!(invalid_key(&[("measure", "cl_waiting")]), "measure");
        let error = parse(&[("measure", "waiting")]).unwrap_err().to_string();
        assert!(error.contains("clients-waiting, clients-active"), "{error}");
    }

    #[test]
    fn rates_are_per_database_only() {
        let query = parse(&[("measure", "wait-seconds-per-second"), ("database", "app")]).unwrap();
        assert!(query.measure.is_rate());
        assert_eq!(
            invalid_key(&[("measure", "wait-seconds-per-second"), ("user", "web")]),
            "user"
        );
    }
}
