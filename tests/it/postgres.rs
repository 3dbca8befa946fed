//! PostgreSQL metrics end to end: a throwaway PostgreSQL with pg_stat_statements, a throwaway
//! PgBouncer in transaction pooling mode in front of it, the scaler in-process, and a tonic
//! client. Every check runs through both paths: `pg-direct` and `pg-bouncer`.

use crate::common;

use std::time::{Duration, Instant};

use common::{
    Scaler, assert_outage_reported, assert_recovers_to, assert_throughout, poll_until,
    postgres::{PgBouncer, PostgresServer},
    trigger_value, trigger_value_until,
};
use tonic::Code;

const PATHS: [&str; 2] = ["pg-direct", "pg-bouncer"];

const QUERIES: &str = r#"
dagster_backlog = "SELECT count(*) FROM dagster_x.runs WHERE status IN ('QUEUED','NOT_STARTED')"
important_rows = "SELECT count(*) FROM important"
delete_rows = "DELETE FROM important RETURNING 1"
delete_in_cte = "WITH gone AS (DELETE FROM important RETURNING 1) SELECT count(*) FROM gone"
commit_then_delete = "COMMIT; DELETE FROM important"
numeric_value = "SELECT avg(id) FROM important"
"#;

fn config(postgres: &PostgresServer, bouncer: &PgBouncer, database: &str) -> String {
    format!(
        r#"
        [sources.pg-direct]
        type = "postgres"
        url = "{direct}"
        [sources.pg-direct.queries]
        {QUERIES}
        [sources.pg-bouncer]
        type = "postgres"
        url = "{bounced}"
        [sources.pg-bouncer.queries]
        {QUERIES}
        "#,
        direct = postgres.url(database),
        bounced = bouncer.url(database),
    )
}

async fn start(database: &str) -> (PostgresServer, PgBouncer, Scaler) {
    let postgres = PostgresServer::start().await;
    let bouncer = PgBouncer::start(&postgres);
    let scaler = Scaler::start(&config(&postgres, &bouncer, database)).await;
    (postgres, bouncer, scaler)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_activity_counts_sessions_by_state_and_never_its_own() {
    let (postgres, _bouncer, scaler) = start("postgres").await;
    postgres
        .execute("postgres", "CREATE TABLE locked (id int)")
        .await;

    // Three sessions busy in pg_sleep, one idle in a transaction, one waiting on a lock.
    let mut held = Vec::new();
    for _ in 0..3 {
        let client = postgres.session("postgres", "sleepers").await;
        tokio::spawn(async move {
            let _ = client.simple_query("SELECT pg_sleep(30)").await;
        });
    }
    let idler = postgres.session("postgres", "idlers").await;
    idler.batch_execute("BEGIN; SELECT 1").await.unwrap();
    held.push(idler);
    let locker = postgres.session("postgres", "locker").await;
    locker
        .batch_execute("BEGIN; LOCK TABLE locked IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    held.push(locker);
    let blocked = postgres.session("postgres", "blocked").await;
    tokio::spawn(async move {
        let _ = blocked.simple_query("SELECT * FROM locked").await;
    });

    for source in PATHS {
        let sleepers = [
            ("metric", "pg-activity"),
            ("measure", "active"),
            ("applicationName", "sleepers"),
        ];
        trigger_value_until(&scaler, source, &sleepers, |v| v == 3.0).await;
        let total = [
            ("metric", "pg-activity"),
            ("measure", "total"),
            ("applicationName", "sleepers"),
        ];
        assert_eq!(trigger_value(&scaler, source, &total).await.unwrap(), 3.0);
        let idle = [
            ("metric", "pg-activity"),
            ("measure", "idle-in-transaction"),
            ("applicationName", "idlers"),
        ];
        trigger_value_until(&scaler, source, &idle, |v| v == 1.0).await;
        let waiting = [("metric", "pg-activity"), ("measure", "waiting")];
        trigger_value_until(&scaler, source, &waiting, |v| v == 1.0).await;
        let longest = [
            ("metric", "pg-activity"),
            ("measure", "longest-query-seconds"),
            ("applicationName", "sleepers"),
        ];
        trigger_value_until(&scaler, source, &longest, |v| (1.0..60.0).contains(&v)).await;
        let transaction = [
            ("metric", "pg-activity"),
            ("measure", "longest-transaction-seconds"),
            ("applicationName", "idlers"),
        ];
        trigger_value_until(&scaler, source, &transaction, |v| v > 0.5).await;
        // The scaler's own sessions are never counted, on either path.
        let own = [
            ("metric", "pg-activity"),
            ("measure", "total"),
            ("applicationName", "backlog-scaler"),
        ];
        assert_eq!(trigger_value(&scaler, source, &own).await.unwrap(), 0.0);
        // Hostile filter values are data: they match nothing and break nothing.
        for hostile in ["x' OR '1'='1", "%", "sleepers' --", "sleepers%"] {
            let pairs = [
                ("metric", "pg-activity"),
                ("measure", "total"),
                ("applicationName", hostile),
            ];
            assert_eq!(
                trigger_value(&scaler, source, &pairs).await.unwrap(),
                0.0,
                "{hostile}"
            );
        }
    }
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_utilization_is_open_sessions_over_usable_connections() {
    let (postgres, _bouncer, scaler) = start("postgres").await;
    // max_connections 50 − superuser_reserved_connections 3 (PG15 has no reserved_connections).
    let usable = 47.0;
    let extra = [
        ("metric", "pg-activity"),
        ("measure", "utilization"),
        ("applicationName", "extra"),
    ];
    for source in PATHS {
        assert_eq!(
            trigger_value(&scaler, source, &extra).await.unwrap(),
            0.0,
            "{source}"
        );
    }
    let mut sessions = Vec::new();
    for opened in 1..=5 {
        sessions.push(postgres.session("postgres", "extra").await);
        let expected = f64::from(opened) / usable * 100.0;
        for source in PATHS {
            trigger_value_until(&scaler, source, &extra, |v| (v - expected).abs() < 1e-9).await;
        }
    }
    for source in PATHS {
        let all = [("metric", "pg-activity"), ("measure", "utilization")];
        let value = trigger_value(&scaler, source, &all).await.unwrap();
        assert!(
            (5.0 / usable * 100.0..=100.0).contains(&value),
            "{source}: {value}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_statements_rates_match_the_load_and_stay_sane_across_a_reset() {
    let (postgres, _bouncer, scaler) = start("postgres").await;
    let marker = "rate_probe_4711";
    // A client runs one statement at ~40/s for the whole test.
    let client = postgres.app_session("postgres", "rate-client").await;
    let sql = format!("SELECT count(*) AS {marker} FROM pg_class");
    let started = Instant::now();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let made = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = made.clone();
    let runner = tokio::spawn(async move {
        let mut calls = 0u64;
        let mut ticker = tokio::time::interval(Duration::from_millis(25));
        // A stalled test process (a loaded CI machine) must not catch up in a burst: the
        // load stays at most 40 calls/s, so a spike in the rate is the scaler's.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop_rx => return calls,
                _ = ticker.tick() => {
                    client.query(&sql, &[]).await.unwrap();
                    calls += 1;
                    counted.store(calls, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    });
    // The load runs steadily (a second of it) before the first rate is read.
    poll_until(
        "the client runs 40 statements",
        Duration::from_secs(10),
        async || made.load(std::sync::atomic::Ordering::Relaxed),
        |calls| *calls >= 40,
    )
    .await;

    let pairs = [
        ("metric", "pg-statements"),
        ("measure", "calls-per-second"),
        ("queryContains", marker),
    ];
    for source in PATHS {
        // The first answer for a new trigger is already a measured rate.
        let rate = trigger_value(&scaler, source, &pairs).await.unwrap();
        assert!(
            (20.0..=60.0).contains(&rate),
            "{source}: first rate {rate}/s, expected ~40/s"
        );
        let rows = [
            ("metric", "pg-statements"),
            ("measure", "rows-per-second"),
            ("queryContains", marker),
        ];
        let rows =
            trigger_value_until(&scaler, source, &rows, |v| (20.0..=60.0).contains(&v)).await;
        let latency = [
            ("metric", "pg-statements"),
            ("measure", "mean-latency-ms"),
            ("queryContains", marker),
        ];
        let latency = trigger_value(&scaler, source, &latency).await.unwrap();
        assert!(latency > 0.0 && latency < 50.0, "{source}: {latency} ms");
        let busy = [
            ("metric", "pg-statements"),
            ("measure", "db-time-per-second"),
            ("queryContains", marker),
        ];
        let busy = trigger_value(&scaler, source, &busy).await.unwrap();
        assert!(busy > 0.0 && busy < 1.0, "{source}: {busy}");
        eprintln!("{source}: {rate:.1} calls/s, {rows:.1} rows/s, {latency:.3} ms, {busy:.4} s/s");
    }

    // A reset mid-run: never a negative or huge value, for three refreshes.
    postgres
        .execute("postgres", "SELECT pg_stat_statements_reset()")
        .await;
    assert_throughout(Duration::from_secs(3), async || {
        for source in PATHS {
            let rate = trigger_value(&scaler, source, &pairs).await.unwrap();
            assert!(
                (0.0..=120.0).contains(&rate),
                "{source}: {rate}/s after a reset"
            );
        }
    })
    .await;
    let _ = stop_tx.send(());
    let made = runner.await.unwrap();
    let actual = made as f64 / started.elapsed().as_secs_f64();
    assert!(actual > 20.0, "the load itself ran at {actual}/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dagster_runs_count_runs_by_status_tag_and_job() {
    let (postgres, _bouncer, scaler) = start("postgres").await;
    postgres
        .execute(
            "postgres",
            "CREATE SCHEMA dagster_x;
             CREATE TABLE dagster_x.runs (run_id text PRIMARY KEY, pipeline_name text, status text);
             CREATE TABLE dagster_x.run_tags (id serial, run_id text, key text, value text);
             INSERT INTO dagster_x.runs VALUES
               ('r1','etl','QUEUED'), ('r2','etl','QUEUED'), ('r3','etl','QUEUED'),
               ('r4','report','QUEUED'), ('r5','report','QUEUED'),
               ('r6','etl','NOT_STARTED'), ('r7','report','NOT_STARTED'),
               ('r8','etl','STARTED'), ('r9','etl','STARTED'), ('r10','report','SUCCESS');
             INSERT INTO dagster_x.run_tags (run_id, key, value) VALUES
               ('r1','team','data'), ('r1','priority','high'), ('r2','team','data'),
               ('r4','team','x'' OR ''1''=''1'), ('r5','team','web');",
        )
        .await;
    for source in PATHS {
        let runs = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = vec![("metric", "dagster-runs"), ("schema", "dagster_x")];
            pairs.extend_from_slice(extra);
            pairs
        };
        let cases: [(&[(&str, &str)], f64); 9] = [
            (&[], 5.0),
            (&[("statuses", "QUEUED,NOT_STARTED")], 7.0),
            (&[("statuses", "STARTED")], 2.0),
            (&[("jobs", "etl")], 3.0),
            (&[("jobs", "etl,report"), ("statuses", "NOT_STARTED")], 2.0),
            (&[("tags", "team=data")], 2.0),
            (&[("tags", "team=data,priority=high")], 1.0),
            // Hostile strings are data: this one matches the row that holds it literally.
            (&[("tags", "team=x' OR '1'='1")], 1.0),
            (&[("jobs", "%")], 0.0),
        ];
        for (extra, expected) in cases {
            let value = trigger_value(&scaler, source, &runs(extra))
                .await
                .unwrap_or_else(|s| panic!("{extra:?}: {s:?}"));
            assert_eq!(value, expected, "{source} {extra:?}");
        }
        let value = trigger_value(&scaler, source, &runs(&[("jobs", "etl' --")]))
            .await
            .unwrap();
        assert_eq!(value, 0.0);
        // The same count through an operator-named query.
        let named = [("metric", "pg-query"), ("query", "dagster_backlog")];
        assert_eq!(trigger_value(&scaler, source, &named).await.unwrap(), 7.0);
        // A schema without Dagster's tables is a clear error, not a 0.
        let status = trigger_value(&scaler, source, &[("metric", "dagster-runs")])
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(status.message().contains("schema `public`"), "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_queries_cannot_write_and_bad_ones_are_clear_errors() {
    let (postgres, _bouncer, scaler) = start("postgres").await;
    postgres
        .execute(
            "postgres",
            "CREATE TABLE important (id int); INSERT INTO important VALUES (1), (2), (3)",
        )
        .await;
    for source in PATHS {
        let query = |name| [("metric", "pg-query"), ("query", name)];
        assert_eq!(
            trigger_value(&scaler, source, &query("important_rows"))
                .await
                .unwrap(),
            3.0
        );
        for name in [
            "delete_rows",
            "delete_in_cte",
            "commit_then_delete",
            "numeric_value",
        ] {
            let status = trigger_value(&scaler, source, &query(name))
                .await
                .unwrap_err();
            assert_eq!(
                status.code(),
                Code::FailedPrecondition,
                "{source} {name}: {status:?}"
            );
            assert!(status.message().contains(name), "{status:?}");
        }
        let status = trigger_value(&scaler, source, &query("numeric_value"))
            .await
            .unwrap_err();
        assert!(status.message().contains("::float8"), "{status:?}");
        let status = trigger_value(&scaler, source, &query("x'; DROP TABLE important; --"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("important_rows"),
            "lists the configured queries: {status:?}"
        );
    }
    // Nothing was written.
    let client = postgres.session("postgres", "checker").await;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM important", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 3);
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'important'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_pg_stat_statements_is_failed_precondition_saying_what_to_run() {
    let postgres = PostgresServer::start().await;
    postgres.execute("postgres", "CREATE DATABASE noext").await;
    let bouncer = PgBouncer::start(&postgres);
    let scaler = Scaler::start(&config(&postgres, &bouncer, "noext")).await;
    for source in PATHS {
        let pairs = [("metric", "pg-statements"), ("measure", "calls-per-second")];
        let status = trigger_value(&scaler, source, &pairs).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(
            status
                .message()
                .contains("CREATE EXTENSION pg_stat_statements"),
            "{status:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_is_unavailable_in_bounded_time_and_recovers() {
    let (mut postgres, _bouncer, scaler) = start("postgres").await;
    let pairs = [
        ("metric", "pg-activity"),
        ("measure", "total"),
        ("applicationName", "nobody"),
    ];
    for source in PATHS {
        assert_eq!(trigger_value(&scaler, source, &pairs).await.unwrap(), 0.0);
    }
    postgres.stop();
    for source in PATHS {
        assert_outage_reported(&scaler, source, &pairs, 0.0).await;
    }
    postgres.resume().await;
    for source in PATHS {
        assert_recovers_to(&scaler, source, &pairs, 0.0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verifies_the_server_with_the_configured_ca_and_is_unavailable_without_it() {
    let certs = common::postgres::server_dir();
    common::make_certificates(certs.path(), "backlog-scaler");
    common::postgres::give_to_server_user(certs.path());
    let cert = certs.path().join("server.crt").display().to_string();
    let key = certs.path().join("server.key").display().to_string();
    let postgres = PostgresServer::start_with(&[
        "ssl=on",
        &format!("ssl_cert_file={cert}"),
        &format!("ssl_key_file={key}"),
    ])
    .await;
    let scaler = Scaler::start(&format!(
        r#"
        [sources.pg-tls]
        type = "postgres"
        url = "postgres://postgres@localhost:{port}/postgres?sslmode=require"
        tls_ca_file = "{ca}"
        [sources.pg-untrusted]
        type = "postgres"
        url = "postgres://postgres@localhost:{port}/postgres?sslmode=require"
        "#,
        port = postgres.port,
        ca = certs.path().join("backlog-scaler-ca.pem").display()
    ))
    .await;
    let pairs = [
        ("metric", "pg-activity"),
        ("measure", "total"),
        ("applicationName", "nobody"),
    ];
    assert_eq!(trigger_value(&scaler, "pg-tls", &pairs).await.unwrap(), 0.0);
    let client = postgres.session("postgres", "checker").await;
    let encrypted: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'backlog-scaler' AND s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted >= 1, "the scaler's session is encrypted");
    // Without the CA the server's certificate is not trusted: UNAVAILABLE, saying why.
    let status = trigger_value(&scaler, "pg-untrusted", &pairs)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().to_lowercase().contains("certificate"),
        "{status:?}"
    );
}

/// The libpq `sslmode`s against a PostgreSQL whose certificate (from a private CA) names
/// `localhost` only: what each connects to, what it refuses and why, what `pg_stat_ssl`
/// shows of the scaler's sessions, and what `check` says of each source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libpq_sslmodes_verify_what_they_say_and_sessions_are_encrypted() {
    let dir = common::postgres::server_dir();
    let ca = common::certs::TestCa::new("pg-private");
    let ca_file = ca.write(dir.path());
    let other_ca_file = common::certs::TestCa::new("someone-else").write(dir.path());
    let (cert, key) = ca
        .server_for("localhost", &["localhost"])
        .write(dir.path(), "server");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    common::postgres::give_to_server_user(dir.path());
    let postgres = PostgresServer::start_with(&[
        "ssl=on",
        &format!("ssl_cert_file={}", cert.display()),
        &format!("ssl_key_file={}", key.display()),
    ])
    .await;
    // One database per source, so pg_stat_activity tells their sessions apart.
    let cases = [
        ("verify-full", "localhost", Some(&ca_file)),
        ("verify-ca", "127.0.0.1", Some(&ca_file)),
        ("require", "localhost", Some(&ca_file)),
        ("disable", "127.0.0.1", None),
        ("verify-full-by-address", "127.0.0.1", Some(&ca_file)),
        ("verify-ca-other-ca", "127.0.0.1", Some(&other_ca_file)),
        ("verify-ca-web-pki", "127.0.0.1", None),
        // libpq's keyword=value form, with the same sslmode rules.
        ("verify-full-keywords", "localhost", Some(&ca_file)),
    ];
    let mut config = String::new();
    for (name, host, ca) in cases {
        let database = name.replace('-', "_");
        let mode = name
            .trim_end_matches("-by-address")
            .trim_end_matches("-other-ca")
            .trim_end_matches("-web-pki")
            .trim_end_matches("-keywords");
        postgres
            .execute("postgres", &format!("CREATE DATABASE {database}"))
            .await;
        let port = postgres.port;
        let url = if name.ends_with("-keywords") {
            format!("host={host} port={port} user=postgres dbname={database} sslmode={mode}")
        } else {
            format!("postgres://postgres@{host}:{port}/{database}?sslmode={mode}")
        };
        config.push_str(&format!(
            "[sources.{name}]\ntype = \"postgres\"\nurl = \"{url}\"\n"
        ));
        if let Some(ca) = ca {
            config.push_str(&format!("tls_ca_file = \"{}\"\n", ca.display()));
        }
    }
    let scaler = Scaler::start(&config).await;
    let pairs = [
        ("metric", "pg-activity"),
        ("measure", "total"),
        ("applicationName", "nobody"),
    ];
    for source in [
        "verify-full",
        "verify-ca",
        "require",
        "disable",
        "verify-full-keywords",
    ] {
        let value = trigger_value(&scaler, source, &pairs).await;
        assert_eq!(value.unwrap(), 0.0, "{source} connects");
    }
    for (source, why) in [
        ("verify-full-by-address", "not valid for name"),
        ("verify-ca-other-ca", "unknownissuer"),
        ("verify-ca-web-pki", "unknownissuer"),
    ] {
        let status = trigger_value(&scaler, source, &pairs).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{source}: {status:?}");
        let message = status.message().to_lowercase();
        assert!(message.contains(why), "{source}: {status:?}");
    }
    let watcher = postgres.session("postgres", "watcher").await;
    let rows = watcher
        .query(
            "SELECT a.datname::text, bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a \
             USING (pid) WHERE a.application_name = 'backlog-scaler' GROUP BY a.datname",
            &[],
        )
        .await
        .unwrap();
    let encrypted: std::collections::HashMap<String, bool> =
        rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    for (database, ssl) in [
        ("verify_full", true),
        ("verify_ca", true),
        ("require", true),
        ("disable", false),
        ("verify_full_keywords", true),
    ] {
        assert_eq!(
            encrypted.get(database),
            Some(&ssl),
            "{database}: {encrypted:?}"
        );
    }

    // `check` says, per source, whether its connections are encrypted and what is verified.
    let config_dir = tempfile::tempdir().unwrap();
    let kept: String = config
        .split("[sources.")
        .filter(|section| {
            ["verify-full]", "verify-ca]", "disable]"]
                .iter()
                .any(|name| section.starts_with(name))
        })
        .map(|section| format!("[sources.{section}"))
        .collect();
    let path = common::cli_run::write(config_dir.path(), "scaler.toml", &kept);
    let check = common::cli_run::run(&["check", "--config", path.to_str().unwrap()]).await;
    let stdout = &check.stdout;
    assert_eq!(check.code, Some(0), "{check:#?}");
    assert!(
        stdout.contains("verified against tls_ca_file and must name the URL's host"),
        "{stdout}"
    );
    assert!(
        stdout.contains("its host name is not (sslmode=verify-ca)"),
        "{stdout}"
    );
    assert!(stdout.contains("not encrypted"), "{stdout}");
    // The watcher session logs in as the scaler's role: check says the role is shared.
    assert!(stdout.contains("`postgres` is shared"), "{stdout}");
}

#[test]
fn an_unsupported_sslmode_or_parameter_is_named_at_start_in_either_form() {
    for (url, named) in [
        (
            "postgres://p@127.0.0.1:1/db?sslmode=verify",
            "sslmode `verify`",
        ),
        (
            "postgres://p:hunter2@127.0.0.1:1/db?sslrootcert=/ca.pem",
            "`sslrootcert`",
        ),
        (
            "host=127.0.0.1 port=1 password=hunter2 sslrootcert=/ca.pem",
            "`sslrootcert`",
        ),
    ] {
        let mut process = common::ScalerProcess::spawn(
            &format!("[sources.p]\ntype = \"postgres\"\nurl = \"{url}\"\n"),
            &[],
        );
        let status = process.wait_for_exit();
        let stderr = process.stderr();
        assert!(!status.success(), "{stderr}");
        assert!(
            stderr.contains("`sources.p.url`") && stderr.contains(named),
            "{stderr}"
        );
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}
