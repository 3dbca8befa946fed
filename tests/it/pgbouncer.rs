//! `metric: pgbouncer` end to end: a throwaway PostgreSQL, a throwaway PgBouncer with an
//! admin console and a one-connection pool (`tiny`), the scaler in-process, and a tonic
//! client. The oracle is PgBouncer itself: the tests read `SHOW POOLS` / `SHOW STATS` as the
//! stats user and compare.

use crate::common;

use std::time::{Duration, Instant};

use common::{
    Scaler,
    pgbouncer::{ADMIN_USER, APP_USER, AdminPgBouncer, STATS_USER, TINY},
    poll::{assert_throughout, poll_until},
    postgres::PostgresServer,
    trigger::trigger_value as metric,
};
use tonic::Code;

/// The source every test names.
const SOURCE: &str = "bouncer";

fn config(sources: &[(&str, String)]) -> String {
    sources
        .iter()
        .map(|(name, url)| format!("[sources.{name}]\ntype = \"pgbouncer\"\nurl = \"{url}\"\n"))
        .collect()
}

async fn start() -> (PostgresServer, AdminPgBouncer, Scaler) {
    let postgres = PostgresServer::start().await;
    let bouncer = AdminPgBouncer::start(&postgres);
    let scaler = Scaler::start(&config(&[(SOURCE, bouncer.console_url())])).await;
    (postgres, bouncer, scaler)
}

fn pgbouncer(
    measure: &'static str,
    filters: &[(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    let mut pairs = vec![("metric", "pgbouncer"), ("measure", measure)];
    pairs.extend_from_slice(filters);
    pairs
}

/// Polls until `check` holds for the value (refreshes are 1 s apart), or fails with the last.
async fn eventually(
    scaler: &Scaler,
    pairs: &[(&str, &str)],
    within: Duration,
    check: impl Fn(f64) -> bool,
) -> f64 {
    poll_until(
        format!("{pairs:?}"),
        within,
        async || metric(scaler, SOURCE, pairs).await,
        |answer| matches!(answer, Ok(value) if check(*value)),
    )
    .await
    .expect("accepted")
}

/// Σ of a `SHOW POOLS` column over the application pools (not the console's own).
async fn pools_sum(bouncer: &AdminPgBouncer, column: &str) -> f64 {
    bouncer
        .show("SHOW POOLS")
        .await
        .iter()
        .filter(|row| row["database"] != "pgbouncer")
        .map(|row| row[column].parse::<f64>().unwrap())
        .sum()
}

/// The longest current wait `SHOW POOLS` reports over the application pools, in seconds.
async fn pools_max_wait(bouncer: &AdminPgBouncer) -> f64 {
    bouncer
        .show("SHOW POOLS")
        .await
        .iter()
        .filter(|row| row["database"] != "pgbouncer")
        .map(|row| {
            row["maxwait"].parse::<f64>().unwrap() + row["maxwait_us"].parse::<f64>().unwrap() / 1e6
        })
        .fold(0.0, f64::max)
}

/// `total_wait_time` of a database in `SHOW STATS`, in seconds.
async fn total_wait_seconds(bouncer: &AdminPgBouncer, database: &str) -> f64 {
    bouncer
        .show("SHOW STATS")
        .await
        .iter()
        .find(|row| row["database"] == database)
        .map_or(0.0, |row| {
            row["total_wait_time"].parse::<f64>().unwrap() / 1e6
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_clients_and_the_longest_wait_match_show_pools() {
    let (_postgres, bouncer, scaler) = start().await;
    let waiting = pgbouncer("clients-waiting", &[("database", TINY)]);
    assert_eq!(metric(&scaler, SOURCE, &waiting).await.unwrap(), 0.0);

    // One client holds the only server connection of `tiny` for 8 s; three more queue.
    let holder = bouncer.session(TINY).await;
    let hold = tokio::spawn(async move { holder.simple_query("SELECT pg_sleep(8)").await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while pools_sum(&bouncer, "sv_active").await < 1.0 {
        assert!(Instant::now() < deadline, "the holder never got its server");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut queued = Vec::new();
    for _ in 0..3 {
        let client = bouncer.session(TINY).await;
        queued.push(tokio::spawn(async move {
            client.simple_query("SELECT 1").await
        }));
    }

    let value = eventually(&scaler, &waiting, Duration::from_secs(4), |v| v == 3.0).await;
    assert_eq!(
        value,
        pools_sum(&bouncer, "cl_waiting").await,
        "SHOW POOLS agrees"
    );
    for (filters, expected) in [
        (vec![], 3.0),
        (vec![("database", TINY), ("user", APP_USER.0)], 3.0),
        (vec![("user", "nobody")], 0.0),
        (vec![("database", "postgres")], 0.0),
        (vec![("database", "pgbouncer")], 0.0),
        (vec![("database", "tiny' OR '1'='1")], 0.0),
    ] {
        let pairs = pgbouncer("clients-waiting", &filters);
        assert_eq!(
            metric(&scaler, SOURCE, &pairs).await.unwrap(),
            expected,
            "{filters:?}"
        );
    }
    let active = pgbouncer("clients-active", &[("database", TINY)]);
    let value = eventually(&scaler, &active, Duration::from_secs(3), |v| v == 1.0).await;
    assert_eq!(
        value,
        pools_sum(&bouncer, "cl_active").await,
        "SHOW POOLS agrees"
    );
    // The console's own pool (the scaler's session and the oracle's) counts only when named.
    let console = pgbouncer("clients-active", &[("database", "pgbouncer")]);
    assert!(metric(&scaler, SOURCE, &console).await.unwrap() >= 1.0);
    let all_active = pgbouncer("clients-active", &[]);
    assert_eq!(metric(&scaler, SOURCE, &all_active).await.unwrap(), 1.0);
    let servers = pgbouncer("servers-active", &[("database", TINY)]);
    assert_eq!(metric(&scaler, SOURCE, &servers).await.unwrap(), 1.0);
    for filters in [vec![("database", TINY)], vec![]] {
        let utilization = pgbouncer("pool-utilization", &filters);
        let value = metric(&scaler, SOURCE, &utilization).await.unwrap();
        assert_eq!(
            value, 100.0,
            "1 of 1 server connection in use ({filters:?})"
        );
    }

    // The longest wait grows with the queue's age; the scaler's value is at most one refresh
    // (1 s, plus a read and the RPC: 0.75 s of slack on a busy machine) behind what SHOW
    // POOLS says right after it.
    let longest = pgbouncer("max-wait-seconds", &[("database", TINY)]);
    let mut seen = Vec::new();
    while seen.last().is_none_or(|(v, _)| *v < 2.0) {
        let value = metric(&scaler, SOURCE, &longest).await.unwrap();
        let oracle = pools_max_wait(&bouncer).await;
        assert!(
            value <= oracle + 0.05 && value >= oracle - 1.75,
            "scaler {value} s, SHOW POOLS {oracle} s"
        );
        seen.push((value, oracle));
        assert!(seen.len() < 40, "the wait never reached 2 s: {seen:?}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    eprintln!("max-wait-seconds (scaler, SHOW POOLS): {seen:?}");

    // The holder finishes, the queue drains, everything falls back to 0.
    hold.await.unwrap().unwrap();
    for task in queued {
        task.await.unwrap().unwrap();
    }
    for measure in [
        "clients-waiting",
        "max-wait-seconds",
        "servers-active",
        "pool-utilization",
    ] {
        let pairs = pgbouncer(measure, &[("database", TINY)]);
        eventually(&scaler, &pairs, Duration::from_secs(4), |v| v == 0.0).await;
    }
    assert_eq!(pools_sum(&bouncer, "cl_waiting").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_rate_follows_pgbench_and_survives_a_restart() {
    let (_postgres, mut bouncer, scaler) = start().await;
    let rate = pgbouncer("wait-seconds-per-second", &[("database", TINY)]);
    // A cold read is already a measured rate (two snapshots): nothing waits yet.
    assert_eq!(metric(&scaler, SOURCE, &rate).await.unwrap(), 0.0);

    // Six clients take turns on one server connection: about five wait at any time.
    let clients = 6;
    // More than any honest rate: each client waits at most 1 s per second; the slack covers
    // waits that began before a window and were counted when they ended inside it. A rate
    // spanning a restart (a counter back at 0) would be negative, or the lifetime total.
    let absurd = 2.0 * f64::from(clients);
    let load = bouncer.pgbench(TINY, clients, 0.01, 60);
    eventually(&scaler, &rate, Duration::from_secs(6), |v| v > 1.0).await;
    let (oracle_start, waited_start) = (Instant::now(), total_wait_seconds(&bouncer, TINY).await);
    let mut values = Vec::new();
    while oracle_start.elapsed() < Duration::from_secs(4) {
        let value = metric(&scaler, SOURCE, &rate).await.unwrap();
        assert!((0.0..absurd).contains(&value), "{value}");
        values.push(value);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let oracle = (total_wait_seconds(&bouncer, TINY).await - waited_start)
        / oracle_start.elapsed().as_secs_f64();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    eprintln!(
        "wait-seconds-per-second: scaler mean {mean:.3} ({values:.3?}), SHOW STATS {oracle:.3}"
    );
    assert!(oracle > 1.0, "pgbench made clients wait: {oracle} s/s");
    assert!(
        (oracle * 0.6..=oracle * 1.4).contains(&mean),
        "scaler {mean} s/s, SHOW STATS {oracle} s/s"
    );
    let all = pgbouncer("wait-seconds-per-second", &[]);
    assert!(metric(&scaler, SOURCE, &all).await.unwrap() > 1.0);

    // Kill PgBouncer and start it again on the same port: its counters restart from 0.
    bouncer.stop();
    drop(load);
    let mut answers = Vec::new();
    let check = |answer: Result<f64, tonic::Status>, answers: &mut Vec<String>| {
        match &answer {
            Ok(value) => assert!(
                (0.0..absurd).contains(value),
                "{value} s/s around a restart"
            ),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(status.message().contains(SOURCE), "{status:?}");
            }
        }
        answers.push(answer.map_or_else(|s| format!("{:?}", s.code()), |v| format!("{v:.3}")));
    };
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(2) {
        check(metric(&scaler, SOURCE, &rate).await, &mut answers);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    bouncer.resume();
    let _load = bouncer.pgbench(TINY, clients, 0.01, 60);
    // Until the rate is back, and for two refreshes after it (the first windows that could
    // span the restart), every answer is sane.
    poll_until(
        "the rate comes back after the restart",
        Duration::from_secs(8),
        async || {
            let answer = metric(&scaler, SOURCE, &rate).await;
            check(answer.clone(), &mut answers);
            answer
        },
        |answer| answer.as_ref().is_ok_and(|v| *v > 1.0),
    )
    .await
    .expect("recovered");
    assert_throughout(Duration::from_secs(2), async || {
        check(metric(&scaler, SOURCE, &rate).await, &mut answers)
    })
    .await;
    eprintln!("around the restart: {answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_logins_and_urls_that_cannot_work_say_why() {
    let postgres = PostgresServer::start().await;
    let bouncer = AdminPgBouncer::start(&postgres);
    let wrong_password = (STATS_USER.0, "not-the-password-0815");
    let scaler = Scaler::start(&config(&[
        (SOURCE, bouncer.console_url()),
        ("bouncer-admin", bouncer.url(ADMIN_USER, "pgbouncer")),
        ("wrong-password", bouncer.url(wrong_password, "pgbouncer")),
        ("not-the-console", bouncer.url(APP_USER, TINY)),
        ("not-a-monitor", bouncer.url(APP_USER, "pgbouncer")),
    ]))
    .await;
    // The failing sources' own sessions come and go in pool `tiny` (the engine probes idle
    // sources), so the working ones are asked about a pool nobody uses.
    let waiting = pgbouncer("clients-waiting", &[("user", "nobody")]);
    for source in [SOURCE, "bouncer-admin"] {
        assert_eq!(
            metric(&scaler, source, &waiting).await.unwrap(),
            0.0,
            "{source}"
        );
    }
    let secrets = [STATS_USER.1, ADMIN_USER.1, APP_USER.1, wrong_password.1];
    let failure = |source: &'static str| {
        let scaler = &scaler;
        let waiting = &waiting;
        async move {
            let status = metric(scaler, source, waiting).await.unwrap_err();
            assert!(status.message().contains(source), "{status:?}");
            for secret in secrets {
                assert!(!status.message().contains(secret), "{status:?}");
            }
            eprintln!("{source}: {:?} {}", status.code(), status.message());
            status
        }
    };
    let status = failure("wrong-password").await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("authentication failed"),
        "{status:?}"
    );
    for source in ["not-the-console", "not-a-monitor"] {
        let status = failure(source).await;
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        for advice in ["`pgbouncer`", "stats_users", "admin_users"] {
            assert!(status.message().contains(advice), "{status:?}");
        }
    }
    // SHOW STATS is per database: a user filter on the rate is refused before any read.
    let status = metric(
        &scaler,
        SOURCE,
        &pgbouncer("wait-seconds-per-second", &[("user", "web")]),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("`user`"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_or_a_frozen_pgbouncer_is_unavailable_in_bounded_time_and_recovers() {
    let (_postgres, mut bouncer, scaler) = start().await;
    let waiting = pgbouncer("clients-waiting", &[]);
    assert_eq!(metric(&scaler, SOURCE, &waiting).await.unwrap(), 0.0);

    async fn reported_unavailable(scaler: &Scaler, pairs: &[(&str, &str)]) -> String {
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            let started = Instant::now();
            let answer = metric(scaler, SOURCE, pairs).await;
            assert!(
                started.elapsed() <= Duration::from_secs(2),
                "answered in {:?}",
                started.elapsed()
            );
            match answer {
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                    assert!(status.message().contains(SOURCE), "{status:?}");
                    return status.message().to_string();
                }
                Ok(value) => {
                    assert_eq!(value, 0.0);
                    assert!(Instant::now() < deadline, "the outage was never reported");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    // Frozen: the kept connection stops answering, and new ones are accepted by the kernel
    // but never logged in. Every wait is bounded.
    bouncer.freeze(true);
    let message = reported_unavailable(&scaler, &waiting).await;
    eprintln!("frozen: {message}");
    bouncer.freeze(false);
    eventually(&scaler, &waiting, Duration::from_secs(6), |v| v == 0.0).await;

    // Down: refused connections.
    bouncer.stop();
    let message = reported_unavailable(&scaler, &waiting).await;
    eprintln!("down: {message}");
    bouncer.resume();
    eventually(&scaler, &waiting, Duration::from_secs(6), |v| v == 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_round_of_show_commands_per_refresh_for_every_trigger() {
    let postgres = PostgresServer::start().await;
    // At `verbose = 2` PgBouncer logs every console command ("got admin query: SHOW POOLS").
    let bouncer = AdminPgBouncer::start_with(&postgres, &["verbose = 2"]);
    let scaler = Scaler::start(&config(&[(SOURCE, bouncer.console_url())])).await;
    // Twelve triggers over every measure: SHOW POOLS, SHOW DATABASES and SHOW STATS each.
    let mut triggers = Vec::new();
    for measure in [
        "clients-waiting",
        "clients-active",
        "servers-active",
        "max-wait-seconds",
        "pool-utilization",
        "wait-seconds-per-second",
    ] {
        triggers.push(pgbouncer(measure, &[]));
        triggers.push(pgbouncer(measure, &[("database", TINY)]));
    }
    for pairs in &triggers {
        metric(&scaler, SOURCE, pairs).await.unwrap();
    }
    let commands = |command: &str| {
        bouncer
            .log()
            .lines()
            .filter(|line| line.ends_with(&format!("admin query: {command}")))
            .count() as f64
    };
    let before = ["SHOW POOLS", "SHOW DATABASES", "SHOW STATS"].map(commands);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        for pairs in &triggers {
            metric(&scaler, SOURCE, pairs).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = ["SHOW POOLS", "SHOW DATABASES", "SHOW STATS"].map(commands);
    let sent: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    eprintln!(
        "SHOW POOLS, DATABASES, STATS sent in {elapsed:.1} s for {} triggers: {sent:?}",
        triggers.len()
    );
    // One of each per refresh (1 s apart), plus one refresh at the window's edge. Twelve
    // triggers read one by one would send at least four times as many.
    let refreshes = elapsed.ceil() + 1.0;
    assert!(sent[0] >= 3.0, "the triggers were refreshed: {sent:?}");
    assert!(sent[0] <= refreshes, "{sent:?} in {elapsed:.1} s");
    assert_eq!(
        sent[1], sent[0],
        "SHOW DATABASES rides along with SHOW POOLS"
    );
    // SHOW STATS once per refresh too; a refresh less than 250 ms after the cold reads
    // before the window takes a second snapshot to make its rate window long enough.
    assert!(sent[2] <= refreshes + 1.0, "{sent:?} in {elapsed:.1} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_console_with_a_verified_certificate() {
    let certs = common::postgres::server_dir();
    common::make_certificates(certs.path(), "backlog-scaler");
    common::postgres::give_to_server_user(certs.path());
    let postgres = PostgresServer::start().await;
    let bouncer = AdminPgBouncer::start_with(
        &postgres,
        &[
            "client_tls_sslmode = require",
            &format!(
                "client_tls_cert_file = {}",
                certs.path().join("server.crt").display()
            ),
            &format!(
                "client_tls_key_file = {}",
                certs.path().join("server.key").display()
            ),
        ],
    );
    let url = format!(
        "postgres://{}:{}@localhost:{}/pgbouncer?sslmode=require",
        STATS_USER.0, STATS_USER.1, bouncer.port
    );
    let scaler = Scaler::start(&format!(
        "{}tls_ca_file = \"{}\"\n{}",
        config(&[(SOURCE, url.clone())]),
        certs.path().join("backlog-scaler-ca.pem").display(),
        config(&[
            ("untrusted", url),
            ("plain", bouncer.url(STATS_USER, "pgbouncer")),
        ]),
    ))
    .await;
    let waiting = pgbouncer("clients-waiting", &[]);
    assert_eq!(metric(&scaler, SOURCE, &waiting).await.unwrap(), 0.0);
    // This PgBouncer refuses sessions without TLS, so the answer above came over TLS.
    let status = metric(&scaler, "plain", &waiting).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    eprintln!("plain: {}", status.message());
    // Without the CA the certificate is not trusted: UNAVAILABLE, saying why.
    let status = metric(&scaler, "untrusted", &waiting).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().to_lowercase().contains("certificate"),
        "{status:?}"
    );

    // `check` says the console connection is encrypted and what is verified.
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "postgres://{}:{}@localhost:{}/pgbouncer?sslmode=verify-ca",
        STATS_USER.0, STATS_USER.1, bouncer.port
    );
    let text = format!(
        "{}tls_ca_file = \"{}\"\n",
        config(&[(SOURCE, url)]),
        certs.path().join("backlog-scaler-ca.pem").display()
    );
    let path = common::cli_run::write(dir.path(), "scaler.toml", &text);
    let check = common::cli_run::run(&["check", "--config", path.to_str().unwrap()]).await;
    let stdout = &check.stdout;
    assert_eq!(check.code, Some(0), "{check:#?}");
    assert!(
        stdout.contains("encrypted; the server certificate is verified against tls_ca_file, its host name is not"),
        "{stdout}"
    );
}
