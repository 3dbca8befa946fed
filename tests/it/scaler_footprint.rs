//! The scaler never measures itself: one and then three `backlog-scaler` processes read the
//! same throwaway PostgreSQL directly and through a PgBouncer (whose admin console they read
//! too). With no application traffic every pg-statements and pool measure reads nothing of
//! theirs; with pgbench at a fixed rate, calls-per-second reads pgbench's own rate; one idle
//! application client through PgBouncer is one active client, whatever the number of
//! replicas.

use crate::common;

use std::{net::SocketAddr, process::Command, time::Duration};

use common::{
    ChildGuard, ScalerProcess, assert_throughout, free_port,
    pgbouncer::{APP_USER, AdminPgBouncer},
    poll_until,
    postgres::{APP_ROLE, PostgresServer},
    require_binary,
    trigger::trigger_active,
    trigger_value, trigger_value_until,
};

/// The PostgreSQL sources every replica has: direct, and through PgBouncer.
const PG_SOURCES: [&str; 2] = ["pg-direct", "pg-bouncer"];
/// The PgBouncer console source.
const CONSOLE: &str = "bouncer";

/// pgbench's fixed rate, in transactions (one `SELECT` each with `-S`) per second.
const PGBENCH_RATE: u32 = 40;

/// The statements window of these replicas: long enough that a 40/s Poisson load counts
/// ±4 % (one standard deviation) in one window, so 15 % is far outside the noise.
const STATEMENTS_INTERVAL: &str = "15s";

fn replica_config(postgres: &PostgresServer, bouncer: &AdminPgBouncer, grpc_port: u16) -> String {
    format!(
        r#"
        [server]
        grpc_listen = "127.0.0.1:{grpc_port}"
        [sources.pg-direct]
        type = "postgres"
        url = "{direct}"
        statements_interval = "{STATEMENTS_INTERVAL}"
        [sources.pg-bouncer]
        type = "postgres"
        url = "{bounced}"
        statements_interval = "{STATEMENTS_INTERVAL}"
        [sources.{CONSOLE}]
        type = "pgbouncer"
        url = "{console}"
        "#,
        direct = postgres.url("postgres"),
        bounced = bouncer.url(APP_USER, "postgres"),
        console = bouncer.console_url(),
    )
}

struct Replica {
    _process: ScalerProcess,
    address: SocketAddr,
}

fn start_replica(postgres: &PostgresServer, bouncer: &AdminPgBouncer) -> Replica {
    let port = free_port();
    let mut process = ScalerProcess::spawn(&replica_config(postgres, bouncer, port), &[]);
    let address = process.wait_until_listening(port);
    Replica {
        _process: process,
        address,
    }
}

/// The pg-statements triggers checked: every measure, with no filter, with filters the
/// snapshot can push into its `WHERE`, and with a text filter.
fn statements_triggers() -> Vec<Vec<(&'static str, &'static str)>> {
    let measures = [
        "calls-per-second",
        "rows-per-second",
        "db-time-per-second",
        "mean-latency-ms",
    ];
    let filters: [&[(&str, &str)]; 3] = [
        &[],
        &[("database", "postgres")],
        &[("queryContains", "SELECT")],
    ];
    measures
        .iter()
        .flat_map(|measure| {
            filters.iter().map(move |filter| {
                let mut pairs = vec![("metric", "pg-statements"), ("measure", *measure)];
                pairs.extend_from_slice(filter);
                pairs
            })
        })
        .collect()
}

fn pool(measure: &'static str) -> [(&'static str, &'static str); 2] {
    [("metric", "pgbouncer"), ("measure", measure)]
}

/// With no application traffic, every replica reads no statements and no pool use, for a
/// few refreshes (each replica's reads land in the others' windows).
async fn assert_idle(replicas: &[Replica]) {
    let statements = statements_triggers();
    assert_throughout(Duration::from_secs(4), async || {
        for replica in replicas {
            for source in PG_SOURCES {
                for pairs in &statements {
                    let value = trigger_value(&replica.address, source, pairs)
                        .await
                        .unwrap();
                    let mean_latency = pairs.contains(&("measure", "mean-latency-ms"));
                    if mean_latency {
                        assert_eq!(value, 0.0, "{source} {pairs:?}");
                    } else {
                        assert!(value <= 0.5, "{source} {pairs:?}: {value}");
                    }
                }
                let idle = [
                    ("metric", "pg-statements"),
                    ("measure", "calls-per-second"),
                    ("activationTarget", "0"),
                ];
                let active = trigger_active(&replica.address, source, &idle).await;
                assert!(!active.unwrap(), "{source}: idle is not active");
            }
            for measure in [
                "clients-active",
                "clients-waiting",
                "servers-active",
                "pool-utilization",
            ] {
                let value = trigger_value(&replica.address, CONSOLE, &pool(measure)).await;
                assert_eq!(value.unwrap(), 0.0, "{measure}");
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_and_three_replicas_never_measure_themselves() {
    let postgres = PostgresServer::start().await;
    let bouncer = AdminPgBouncer::start(&postgres);
    let mut replicas = vec![start_replica(&postgres, &bouncer)];
    assert_idle(&replicas).await;

    replicas.push(start_replica(&postgres, &bouncer));
    replicas.push(start_replica(&postgres, &bouncer));
    assert_idle(&replicas).await;

    // One idle application client through PgBouncer: one active client for every replica.
    let _client = bouncer.session("postgres").await;
    for replica in &replicas {
        trigger_value_until(&replica.address, CONSOLE, &pool("clients-active"), |v| {
            v == 1.0
        })
        .await;
    }
    assert_throughout(Duration::from_secs(2), async || {
        for replica in &replicas {
            let value = trigger_value(&replica.address, CONSOLE, &pool("clients-active")).await;
            assert_eq!(value.unwrap(), 1.0, "one idle application client");
            let value = trigger_value(&replica.address, CONSOLE, &pool("servers-active")).await;
            assert_eq!(value.unwrap(), 0.0, "an idle client holds no server");
        }
    })
    .await;
}

/// `pgbench -S -R 40` as the application's role, for `seconds`, its output in `log`.
fn pgbench(postgres: &PostgresServer, seconds: u32, log: &std::path::Path) -> ChildGuard {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(require_binary("pgbench"))
        .args([
            "-n",
            "-S",
            "-h",
            "127.0.0.1",
            "-p",
            &postgres.port.to_string(),
        ])
        .args(["-U", APP_ROLE, "-c", "2", "-j", "1"])
        .args(["-R", &PGBENCH_RATE.to_string(), "-T", &seconds.to_string()])
        .arg("postgres")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawning pgbench");
    ChildGuard(child)
}

/// pgbench's own figure: `tps = 39.6 (without initial connection time)`.
fn pgbench_tps(output: &str) -> f64 {
    output
        .lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|tps| tps.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench's output: {output}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_per_second_is_pgbenchs_rate_with_three_replicas() {
    let postgres = PostgresServer::start().await;
    let init = Command::new(require_binary("pgbench"))
        .args(["-i", "-q", "-s", "1", "-h", "127.0.0.1", "-p"])
        .arg(postgres.port.to_string())
        .args(["-U", "postgres", "postgres"])
        .output()
        .expect("running pgbench -i");
    assert!(init.status.success(), "pgbench -i: {init:?}");
    postgres
        .execute(
            "postgres",
            &format!("GRANT SELECT ON pgbench_accounts, pgbench_branches TO {APP_ROLE}"),
        )
        .await;
    let bouncer = AdminPgBouncer::start(&postgres);
    let replicas: Vec<Replica> = (0..3).map(|_| start_replica(&postgres, &bouncer)).collect();

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pgbench.log");
    let mut load = pgbench(&postgres, 32, &log);
    let watcher = postgres.session("postgres", "test-watcher").await;
    poll_until(
        "pgbench's sessions are connected",
        Duration::from_secs(10),
        async || {
            let row = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
                    &[&APP_ROLE],
                )
                .await
                .unwrap();
            row.get::<_, i64>(0)
        },
        |sessions| *sessions >= 2,
    )
    .await;

    // The first answer is a cold window (a quarter of a second); the next window, one
    // statements_interval long, lies wholly inside pgbench's run.
    let calls = [("metric", "pg-statements"), ("measure", "calls-per-second")];
    let mut readings = Vec::new();
    for replica in &replicas {
        for source in PG_SOURCES {
            let cold = trigger_value(&replica.address, source, &calls)
                .await
                .unwrap();
            readings.push((replica.address, source, cold));
        }
    }
    let mut measured = Vec::new();
    for (address, source, cold) in readings {
        let full = poll_until(
            format!("{source} at {address}: a full window"),
            Duration::from_secs(25),
            async || trigger_value(&address, source, &calls).await.unwrap(),
            |value| *value != cold,
        )
        .await;
        measured.push((address, source, full));
    }
    let status = load.0.wait().expect("pgbench ends");
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "pgbench: {output}");
    let tps = pgbench_tps(&output);
    assert!(
        (f64::from(PGBENCH_RATE) * 0.8..=f64::from(PGBENCH_RATE) * 1.2).contains(&tps),
        "pgbench ran at {tps}/s"
    );
    for (address, source, value) in measured {
        eprintln!("{source} at {address}: {value:.2} calls/s; pgbench {tps:.2} tps");
        assert!(
            (value - tps).abs() <= tps * 0.15,
            "{source} at {address}: {value} calls/s, pgbench ran {tps} tps"
        );
    }
}
