//! Faults of every backend type, as KEDA sees them (docs/operations.md, "Backend faults";
//! issue 9, "Faults, bounds and hostile input").
//!
//! Each backend — Redis standalone, Redis Cluster, Redis Sentinel, PostgreSQL directly and
//! through PgBouncer in transaction pooling — is frozen with SIGSTOP, killed and restarted on
//! its port, restarted at once, and down when a scaler starts. Through all of it
//! ([`common::faults::Drill`] checks every answer, not only the last): each GetMetrics answers
//! within the source's `timeout` + 0.5 s; it is UNAVAILABLE naming the source, or the last
//! value read, and never once that read is older than `max_staleness`; another source keeps
//! answering; liveness and readiness stay SERVING; and within one refresh of the backend's
//! return the value is back and follows the backend again, without restarting the scaler. A
//! read that hangs longer than `max_staleness` (a `timeout` above it) withholds the old value.
//! The Sentinel process itself is frozen and killed while the master serves (the source
//! counts a job added meanwhile, or says UNAVAILABLE within the bound), and PostgreSQL is
//! frozen behind a healthy PgBouncer.
//!
//! Then PostgreSQL's own ways to hang a read: a named query that sleeps, or waits on a lock,
//! is cut off by the statement and lock timeouts derived from the source's `timeout`, leaves
//! no session working on the server, and does not hold up the source's other triggers; and a
//! server whose `max_connections` are taken answers UNAVAILABLE with its own reason.

use crate::common;

use std::time::{Duration, Instant};

use common::{
    RedisServer, Scaler, assert_throughout,
    faults::{
        ANSWER_SLACK, BouncedPgTable, ClusterList, DURABLE_REDIS, Drill, PgTable, RedisList,
        SentinelProcess, TIMEOUT, measurements,
    },
    pgbouncer::{APP_USER, AdminPgBouncer},
    poll_until,
    postgres::{PgBouncer, PostgresServer},
    push,
    redis_topology::{LoneMasterSentinel, RedisCluster},
    trigger_value,
};
use tonic::Code;

/// A Redis list of jobs, and the trigger that counts them.
const LIST: &str = "faults:jobs";
const LIST_TRIGGER: &[(&str, &str)] = &[("metric", "redis-list"), ("keys", LIST)];

/// A PostgreSQL table of jobs, and the named query (and trigger) that counts them.
const TABLE: &str = "faults_jobs";
const BACKLOG_TRIGGER: &[(&str, &str)] = &[("metric", "pg-query"), ("query", "backlog")];
/// Another, for a second drill on the same server.
const OTHER_TABLE: &str = "faults_other_jobs";
const OTHER_BACKLOG_TRIGGER: &[(&str, &str)] =
    &[("metric", "pg-query"), ("query", "other_backlog")];

/// Named queries that hang unless the scaler cuts them off, beside the backlogs.
const QUERIES: &str = r#"
backlog = "SELECT count(*) FROM faults_jobs"
other_backlog = "SELECT count(*) FROM faults_other_jobs"
sleeps = "SELECT count(*) FROM pg_sleep(30)"
waits_on_lock = "SELECT count(*) FROM faults_locked"
"#;

const JOBS: usize = 7;

async fn redis_with_jobs(server: &RedisServer) {
    push(&mut server.connection().await, LIST, JOBS).await;
}

/// PostgreSQL with [`TABLE`] and [`OTHER_TABLE`] holding [`JOBS`] rows each, and an empty
/// `faults_locked`.
async fn postgres_with_jobs() -> PostgresServer {
    postgres_with_jobs_and(&[]).await
}

async fn postgres_with_jobs_and(settings: &[&str]) -> PostgresServer {
    let postgres = PostgresServer::start_with(settings).await;
    postgres
        .execute(
            "postgres",
            &format!(
                "SET synchronous_commit = on; CREATE TABLE {TABLE} (id serial); \
                 INSERT INTO {TABLE} SELECT FROM generate_series(1, {JOBS}); \
                 CREATE TABLE {OTHER_TABLE} AS SELECT * FROM {TABLE}; \
                 CREATE TABLE faults_locked (id int)"
            ),
        )
        .await;
    postgres
}

fn postgres_source(name: &str, url: &str) -> String {
    format!(
        "[sources.{name}]\ntype = \"postgres\"\nurl = \"{url}\"\n[sources.{name}.queries]\n{QUERIES}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_standalone_frozen_killed_restarted_and_down_at_start() {
    let mut redis = RedisServer::start_with(DURABLE_REDIS);
    redis_with_jobs(&redis).await;
    let source = format!(
        "[sources.redis-standalone]\ntype = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    );
    let drill = Drill::start(&source, "redis-standalone", LIST_TRIGGER, JOBS as f64).await;
    let mut target = RedisList {
        server: &mut redis,
        key: LIST,
    };
    drill.every_fault(&mut target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_hangs_past_max_staleness_never_serves_the_old_value() {
    // A read budget longer than max_staleness: the refresh of a frozen server hangs instead
    // of failing, and the answers from memory turn UNAVAILABLE once the value is too old.
    let max_staleness = Duration::from_secs(1);
    let mut redis = RedisServer::start_with(DURABLE_REDIS);
    redis_with_jobs(&redis).await;
    let source = format!(
        "[sources.redis-slow]\ntype = \"redis\"\nurl = \"{}\"\ntimeout = \"5s\"\n\
         max_staleness = \"{}ms\"\n",
        redis.url(),
        max_staleness.as_millis()
    );
    let drill = Drill::start(&source, "redis-slow", LIST_TRIGGER, JOBS as f64)
        .await
        .with_max_staleness(max_staleness);
    let mut target = RedisList {
        server: &mut redis,
        key: LIST,
    };
    let reported = drill.frozen(&mut target).await;
    assert!(
        reported.message().contains("max_staleness"),
        "the value was withheld for its age: {reported:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_node_frozen_killed_restarted_and_down_at_start() {
    let mut cluster = RedisCluster::start_with(DURABLE_REDIS).await;
    push(&mut cluster.connection().await, LIST, JOBS).await;
    let (owner, _) = cluster.owner(LIST).await;
    let source = cluster.source_config("redis-cluster");
    let drill = Drill::start(&source, "redis-cluster", LIST_TRIGGER, JOBS as f64).await;
    let mut target = ClusterList {
        cluster: &mut cluster,
        node: owner,
        key: LIST,
    };
    drill.every_fault(&mut target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_master_frozen_killed_restarted_and_down_at_start() {
    // No replica: the Sentinel keeps naming the master, so the outage lasts until it is back.
    let mut setup = LoneMasterSentinel::start_with(DURABLE_REDIS).await;
    redis_with_jobs(&setup.master).await;
    let source = setup.source_config("redis-sentinel");
    let drill = Drill::start(&source, "redis-sentinel", LIST_TRIGGER, JOBS as f64).await;
    let mut target = RedisList {
        server: &mut setup.master,
        key: LIST,
    };
    drill.every_fault(&mut target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sentinel_process_frozen_or_killed_leaves_the_known_master_or_unavailable() {
    // The master serves all along; the Sentinel the source asks for it is frozen, then
    // killed and started again. Meanwhile a job added to the master is either counted (read
    // from the master the source knows) or the source says UNAVAILABLE within the bound.
    let mut setup = LoneMasterSentinel::start_with(&[]).await;
    redis_with_jobs(&setup.master).await;
    let source = setup.source_config("redis-sentinel");
    let drill = Drill::start(&source, "redis-sentinel", LIST_TRIGGER, JOBS as f64).await;
    let mut target = SentinelProcess {
        setup: &mut setup,
        key: LIST,
    };
    let frozen = drill.helper_frozen(&mut target).await;
    let killed = drill.helper_killed_then_restarted(&mut target).await;
    eprintln!("while the Sentinel was frozen: {frozen:?}; killed: {killed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_frozen_killed_restarted_and_down_at_start() {
    let mut postgres = postgres_with_jobs().await;
    let source = postgres_source("pg-direct", &postgres.url("postgres"));
    let drill = Drill::start(&source, "pg-direct", BACKLOG_TRIGGER, JOBS as f64).await;
    let mut target = PgTable {
        server: &mut postgres,
        table: TABLE,
    };
    drill.every_fault(&mut target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_in_front_of_postgres_frozen_killed_restarted_and_down_at_start() {
    let postgres = postgres_with_jobs().await;
    // Trust instead of SCRAM: 4096 PBKDF2 rounds in a debug build of the scaler take about
    // the 250 ms a new connection may take under `timeout = 500ms`.
    let mut bouncer = AdminPgBouncer::start_with(&postgres, &["auth_type = trust"]);
    let source = postgres_source("pg-bouncer", &bouncer.url(APP_USER, "postgres"));
    let drill = Drill::start(&source, "pg-bouncer", BACKLOG_TRIGGER, JOBS as f64).await;
    let mut target = BouncedPgTable {
        bouncer: &mut bouncer,
        postgres: &postgres,
        table: TABLE,
    };
    drill.every_fault(&mut target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_frozen_behind_a_healthy_pgbouncer_is_unavailable_then_recovers() {
    // PgBouncer answers the scaler's connections, but the server behind it answers nothing:
    // UNAVAILABLE within timeout + 0.5 s, and the value back within one refresh of the thaw.
    let mut postgres = postgres_with_jobs().await;
    let bouncer = AdminPgBouncer::start_with(&postgres, &["auth_type = trust"]);
    let source = postgres_source("pg-bouncer", &bouncer.url(APP_USER, "postgres"));
    let drill = Drill::start(&source, "pg-bouncer", BACKLOG_TRIGGER, JOBS as f64).await;
    let mut target = PgTable {
        server: &mut postgres,
        table: TABLE,
    };
    drill.frozen(&mut target).await;
}

/// Sessions that have run `sql` for longer than the source's `timeout` (or sit in its
/// transaction that long), as `application_name state wait_event_type seconds`, read from a
/// session of the test's own.
async fn sessions_at_longer_than_the_timeout(postgres: &PostgresServer, sql: &str) -> Vec<String> {
    let checker = postgres.session("postgres", "faults-checker").await;
    let rows = checker
        .query(
            "SELECT application_name, state, coalesce(wait_event_type, ''), \
                    extract(epoch FROM clock_timestamp() - query_start)::float8 \
             FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND query = $1 AND state <> 'idle' \
               AND clock_timestamp() - query_start > make_interval(secs => $2)",
            &[&sql, &TIMEOUT.as_secs_f64()],
        )
        .await
        .expect("reading pg_stat_activity");
    rows.iter()
        .map(|row| {
            let (name, state, wait, seconds): (String, String, String, f64) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            format!("{name} {state} {wait} {seconds:.2}s")
        })
        .collect()
}

/// The named query `query` on both paths (directly and through PgBouncer) answers
/// UNAVAILABLE within the budget, saying it was cut off by `cut_by` (the statement or the
/// lock timeout); while the scaler keeps reading it every refresh, no session of it runs
/// longer than the source's `timeout`, and the backlog trigger of the same source keeps
/// answering.
async fn a_hanging_named_query_is_cut_off(postgres: &PostgresServer, query: &str, sql: &str) {
    let bouncer = PgBouncer::start(postgres);
    let config = format!(
        "{}\n{}\n{}",
        measurements(),
        postgres_source("pg-direct", &postgres.url("postgres")),
        postgres_source("pg-bouncer", &bouncer.url("postgres")),
    );
    let scaler = Scaler::start(&config).await;
    let hanging = [("metric", "pg-query"), ("query", query)];
    let bound = TIMEOUT + ANSWER_SLACK;
    for source in ["pg-direct", "pg-bouncer"] {
        assert_throughout(Duration::from_secs(2), async || {
            let asked = Instant::now();
            let answer = trigger_value(&scaler, source, &hanging).await;
            assert!(
                asked.elapsed() <= bound,
                "{source} {query}: {:?}",
                asked.elapsed()
            );
            let status = answer.expect_err("a query that hangs has no value");
            assert_eq!(
                status.code(),
                Code::Unavailable,
                "{source} {query}: {status:?}"
            );
            // The server cuts the statement at two thirds of the budget; when connecting took
            // the rest (every cut read closes its connection, so each refresh makes a new
            // one), the scaler's own bound comes first.
            let message = status.message();
            assert!(
                message.contains(source)
                    && ["statement_timeout", "lock_timeout", "no answer within"]
                        .iter()
                        .any(|cut| message.contains(cut)),
                "{source} {query}: the message says it was cut off: {status:?}"
            );

            let asked = Instant::now();
            let backlog = trigger_value(&scaler, source, BACKLOG_TRIGGER).await;
            assert!(
                asked.elapsed() <= bound,
                "{source} backlog: {:?}",
                asked.elapsed()
            );
            assert_eq!(
                backlog.ok(),
                Some(JOBS as f64),
                "{source}: the other triggers of the source keep answering"
            );

            let left = sessions_at_longer_than_the_timeout(postgres, sql).await;
            assert!(
                left.is_empty(),
                "{source}: sessions still at `{sql}` past the timeout: {left:?}"
            );
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_query_that_sleeps_is_cut_off_and_leaves_no_session_behind() {
    let postgres = postgres_with_jobs().await;
    a_hanging_named_query_is_cut_off(&postgres, "sleeps", "SELECT count(*) FROM pg_sleep(30)")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_query_waiting_on_a_lock_is_cut_off_and_leaves_no_session_behind() {
    let postgres = postgres_with_jobs().await;
    let locker = postgres.session("postgres", "locker").await;
    locker
        .batch_execute("BEGIN; LOCK TABLE faults_locked IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    a_hanging_named_query_is_cut_off(
        &postgres,
        "waits_on_lock",
        "SELECT count(*) FROM faults_locked",
    )
    .await;
    // The lock was held all along: the scaler was cut off, not let through.
    locker.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_taken_by_others_is_unavailable_with_the_servers_reason() {
    let mut postgres =
        postgres_with_jobs_and(&["max_connections=4", "superuser_reserved_connections=0"]).await;
    let bouncer = PgBouncer::start(&postgres);
    // Other clients take every connection slot; the server's own refusal is the oracle. The
    // sessions that set the server up must have left first, or one of their slots frees up.
    let first = postgres.session("postgres", "other").await;
    poll_until(
        "only the first of the other clients is connected",
        Duration::from_secs(5),
        async || {
            let sql = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'";
            let row = first.query_one(sql, &[]).await;
            row.map(|row| row.get::<_, i64>(0))
                .map_err(|e| e.to_string())
        },
        |sessions| *sessions == Ok(1),
    )
    .await
    .expect("counted");
    let mut others = vec![first];
    let refusal = loop {
        match tokio_postgres::connect(&postgres.url("postgres"), tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                others.push(client);
                assert!(
                    others.len() <= 4,
                    "max_connections=4 let a fifth session in"
                );
            }
            Err(error) => {
                let refused = error.as_db_error().expect("the server refused");
                break refused.message().to_string();
            }
        }
    };
    assert!(refusal.contains("too many clients"), "{refusal}");

    // Directly, every answer says why; through PgBouncer, some do (others say that no
    // connection came within the budget, while PgBouncer waits to log in again).
    let direct = postgres_source("pg-direct", &postgres.url("postgres"));
    let direct = Drill::start_cold(&direct, "pg-direct", BACKLOG_TRIGGER, JOBS as f64).await;
    let bounced = postgres_source("pg-bouncer", &bouncer.url("postgres"));
    let bounced =
        Drill::start_cold(&bounced, "pg-bouncer", OTHER_BACKLOG_TRIGGER, JOBS as f64).await;
    let step = "max_connections taken";
    let messages = direct.unavailable(step).await;
    assert!(
        messages.iter().all(|m| m.contains(&refusal)),
        "{step}: pg-direct says the server's reason ({refusal}): {messages:?}"
    );
    let messages = bounced.unavailable(step).await;
    assert!(
        messages.iter().any(|m| m.contains(&refusal)),
        "{step}: pg-bouncer passes the server's reason on ({refusal}): {messages:?}"
    );

    // The other clients go away: the scaler gets its sessions without a restart.
    drop(others);
    let step = "max_connections freed";
    let jobs = PgTable {
        server: &mut postgres,
        table: TABLE,
    };
    direct.recovers(step, &jobs).await;
    let other_jobs = PgTable {
        server: &mut postgres,
        table: OTHER_TABLE,
    };
    bounced.recovers(step, &other_jobs).await;
}
