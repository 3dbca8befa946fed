//! `SHOW POOLS` and `SHOW DATABASES`: one read of each per refresh, every pool measure
//! computed from them in memory.
//!
//! Columns are read by name, and unknown ones ignored, so PgBouncer 1.18 and later versions
//! (which add columns) read the same.

use std::collections::HashMap;

use super::{
    console::Record,
    own::OwnFootprint,
    query::{PoolFilter, PoolMeasure},
};

pub const SHOW_POOLS: &str = "SHOW POOLS";
pub const SHOW_DATABASES: &str = "SHOW DATABASES";

/// One row of `SHOW POOLS`: a (database, user) pair with its clients and server connections.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pool {
    pub database: String,
    pub user: String,
    pub cl_active: i64,
    pub cl_waiting: i64,
    pub sv_active: i64,
    /// How long the oldest waiting client has waited, in seconds.
    pub max_wait_seconds: f64,
}

/// What one refresh read from `SHOW POOLS` (and `SHOW DATABASES` when a trigger asks for
/// pool utilization).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolsSnapshot {
    pub pools: Vec<Pool>,
    /// `pool_size` of each database, by name. PgBouncer shows `default_pool_size` there for
    /// databases that set none (checked against 1.18).
    pub pool_sizes: Option<HashMap<String, i64>>,
    /// The scaler's own clients and server links, left out of every measure.
    pub own: OwnFootprint,
}

pub fn parse_pools(records: &[Record]) -> Result<Vec<Pool>, String> {
    records
        .iter()
        .map(|record| {
            let int = |column| record.int(SHOW_POOLS, column);
            Ok(Pool {
                database: record.text(SHOW_POOLS, "database")?.to_string(),
                user: record.text(SHOW_POOLS, "user")?.to_string(),
                cl_active: int("cl_active")?,
                cl_waiting: int("cl_waiting")?,
                sv_active: int("sv_active")?,
                // `maxwait` holds whole seconds, `maxwait_us` the microseconds on top (1.8+).
                max_wait_seconds: int("maxwait")? as f64
                    + int("maxwait_us").unwrap_or(0) as f64 / 1e6,
            })
        })
        .collect()
}

pub fn parse_pool_sizes(records: &[Record]) -> Result<HashMap<String, i64>, String> {
    records
        .iter()
        .map(|record| {
            Ok((
                record.text(SHOW_DATABASES, "name")?.to_string(),
                record.int(SHOW_DATABASES, "pool_size")?,
            ))
        })
        .collect()
}

impl PoolsSnapshot {
    /// A pool as the application sees it: the scaler's own clients and server links taken
    /// out of its counts, and its longest wait the application's own.
    fn without_own(&self, pool: &Pool) -> Pool {
        let key = (pool.database.clone(), pool.user.clone());
        let Some(own) = self.own.pools.get(&key) else {
            return pool.clone();
        };
        Pool {
            cl_active: (pool.cl_active - own.clients_active).max(0),
            cl_waiting: (pool.cl_waiting - own.clients_waiting).max(0),
            sv_active: (pool.sv_active - own.servers_active).max(0),
            max_wait_seconds: self
                .own
                .others_max_wait
                .get(&key)
                .copied()
                .unwrap_or(pool.max_wait_seconds),
            ..pool.clone()
        }
    }

    /// The value of one trigger.
    pub fn measure(&self, measure: PoolMeasure, filter: &PoolFilter) -> f64 {
        let pools: Vec<Pool> = self
            .pools
            .iter()
            .filter(|pool| filter.matches(&pool.database, Some(&pool.user)))
            .map(|pool| self.without_own(pool))
            .collect();
        let pools = pools.iter();
        let sum = |field: fn(&Pool) -> i64| pools.clone().map(field).sum::<i64>() as f64;
        match measure {
            PoolMeasure::ClientsWaiting => sum(|p| p.cl_waiting),
            PoolMeasure::ClientsActive => sum(|p| p.cl_active),
            PoolMeasure::ServersActive => sum(|p| p.sv_active),
            PoolMeasure::MaxWaitSeconds => pools.map(|p| p.max_wait_seconds).fold(0.0, f64::max),
            PoolMeasure::PoolUtilization => {
                let sizes = self.pool_sizes.as_ref();
                // Each pool may open up to its database's pool_size server connections. A pool
                // whose database PgBouncer no longer lists (an auto-database just dropped)
                // adds no capacity.
                let capacity: i64 = pools
                    .clone()
                    .map(|p| {
                        sizes
                            .and_then(|s| s.get(&p.database))
                            .copied()
                            .unwrap_or(0)
                            .max(0)
                    })
                    .sum();
                let active = sum(|p| p.sv_active);
                if capacity == 0 {
                    return 0.0;
                }
                (active / capacity as f64 * 100.0).min(100.0)
            }
            // Rates come from SHOW STATS; asking a pool snapshot for one is a bug upstream.
            PoolMeasure::WaitSecondsPerSecond => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::pgbouncer::query::ADMIN_DATABASE;

    fn record(pairs: &[(&str, &str)]) -> Record {
        Record::from_pairs(pairs)
    }

    /// A 1.18 row, plus a column a later version might add.
    fn pool_row(database: &str, user: &str, waiting: &str, active: &str, sv: &str) -> Record {
        record(&[
            ("database", database),
            ("user", user),
            ("cl_active", active),
            ("cl_waiting", waiting),
            ("cl_active_cancel_req", "0"),
            ("sv_active", sv),
            ("sv_idle", "2"),
            ("maxwait", "3"),
            ("maxwait_us", "250000"),
            ("pool_mode", "transaction"),
            ("some_future_column", "x"),
        ])
    }

    fn snapshot() -> PoolsSnapshot {
        let rows = [
            pool_row("app", "web", "4", "10", "5"),
            pool_row("app", "batch", "1", "2", "1"),
            pool_row("reports", "web", "0", "3", "0"),
            pool_row(ADMIN_DATABASE, ADMIN_DATABASE, "0", "2", "0"),
        ];
        let mut pools = parse_pools(&rows).unwrap();
        pools[2].max_wait_seconds = 0.0;
        pools[0].max_wait_seconds = 7.5;
        let sizes = parse_pool_sizes(&[
            record(&[("name", "app"), ("pool_size", "5"), ("host", "db")]),
            record(&[("name", "reports"), ("pool_size", "20")]),
            record(&[("name", ADMIN_DATABASE), ("pool_size", "2")]),
        ])
        .unwrap();
        PoolsSnapshot {
            pools,
            pool_sizes: Some(sizes),
            own: OwnFootprint::default(),
        }
    }

    fn filter(database: Option<&str>, user: Option<&str>) -> PoolFilter {
        PoolFilter {
            database: database.map(str::to_string),
            user: user.map(str::to_string),
        }
    }

    #[test]
    fn sums_over_matching_pools_without_the_admin_pool() {
        let s = snapshot();
        let all = filter(None, None);
        assert_eq!(s.measure(PoolMeasure::ClientsWaiting, &all), 5.0);
        assert_eq!(s.measure(PoolMeasure::ClientsActive, &all), 15.0);
        assert_eq!(s.measure(PoolMeasure::ServersActive, &all), 6.0);
        assert_eq!(s.measure(PoolMeasure::MaxWaitSeconds, &all), 7.5);
        let web = filter(None, Some("web"));
        assert_eq!(s.measure(PoolMeasure::ClientsWaiting, &web), 4.0);
        assert_eq!(s.measure(PoolMeasure::ClientsActive, &web), 13.0);
        let batch = filter(Some("app"), Some("batch"));
        assert_eq!(s.measure(PoolMeasure::MaxWaitSeconds, &batch), 3.25);
        let admin = filter(Some(ADMIN_DATABASE), None);
        assert_eq!(s.measure(PoolMeasure::ClientsActive, &admin), 2.0);
        let nobody = filter(Some("x' OR 1=1"), None);
        assert_eq!(s.measure(PoolMeasure::ClientsWaiting, &nobody), 0.0);
        assert_eq!(s.measure(PoolMeasure::MaxWaitSeconds, &nobody), 0.0);
    }

    #[test]
    fn utilization_is_active_servers_over_the_pools_sizes() {
        let s = snapshot();
        // app/web and app/batch may each open 5, reports/web 20: 6 of 30.
        assert_eq!(
            s.measure(PoolMeasure::PoolUtilization, &filter(None, None)),
            20.0
        );
        assert_eq!(
            s.measure(
                PoolMeasure::PoolUtilization,
                &filter(Some("app"), Some("web"))
            ),
            100.0
        );
        assert_eq!(
            s.measure(PoolMeasure::PoolUtilization, &filter(Some("nope"), None)),
            0.0
        );
        let mut zero = s.clone();
        zero.pool_sizes = Some(HashMap::new());
        assert_eq!(
            zero.measure(PoolMeasure::PoolUtilization, &filter(None, None)),
            0.0
        );
    }

    #[test]
    fn the_scalers_own_clients_and_server_links_are_left_out() {
        use crate::sources::pgbouncer::own::OwnUse;
        let mut s = snapshot();
        let web = ("app".to_string(), "web".to_string());
        s.own.pools.insert(
            web.clone(),
            OwnUse {
                clients_active: 2,
                clients_waiting: 1,
                servers_active: 5,
            },
        );
        s.own.others_max_wait.insert(web, 1.5);
        let app_web = filter(Some("app"), Some("web"));
        assert_eq!(s.measure(PoolMeasure::ClientsActive, &app_web), 8.0);
        assert_eq!(s.measure(PoolMeasure::ClientsWaiting, &app_web), 3.0);
        assert_eq!(s.measure(PoolMeasure::ServersActive, &app_web), 0.0);
        assert_eq!(s.measure(PoolMeasure::PoolUtilization, &app_web), 0.0);
        assert_eq!(s.measure(PoolMeasure::MaxWaitSeconds, &app_web), 1.5);
        // Other pools keep their counts; a count never goes below zero.
        let all = filter(None, None);
        assert_eq!(s.measure(PoolMeasure::ServersActive, &all), 1.0);
        s.own
            .pools
            .get_mut(&("app".into(), "web".into()))
            .unwrap()
            .servers_active = 50;
        assert_eq!(s.measure(PoolMeasure::ServersActive, &app_web), 0.0);
    }

    #[test]
    fn missing_columns_are_named() {
        let error = parse_pools(&[record(&[("database", "app"), ("user", "web")])]).unwrap_err();
        assert!(
            error.contains("SHOW POOLS") && error.contains("`cl_active`"),
            "{error}"
        );
        let error =
            parse_pool_sizes(&[record(&[("name", "app"), ("pool_size", "many")])]).unwrap_err();
        assert!(error.contains("`pool_size`"), "{error}");
    }
}
