//! The `backlog-scaler` binary: config errors before any port is bound, SIGTERM, and secrets
//! that never reach its output.

use crate::common;

use std::{
    net::TcpListener,
    process::Command,
    time::{Duration, Instant},
};

use common::{SCALER_BINARY, ScalerProcess};

#[test]
fn bad_config_exits_2_with_one_line_naming_the_key_before_binding_a_port() {
    // The port every config below names is taken, by us. A binary that bound before it had
    // validated its config would fail on the bind, not on the config: a different exit and
    // message (the last case shows that a bind attempt is seen).
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cases = [
        (
            format!("[server]\ngrpc_listen = \"127.0.0.1:{port}\"\ngrpc_lisen = \"x\"\n"),
            "grpc_lisen",
        ),
        (
            format!(
                "[server]\ngrpc_listen = \"127.0.0.1:{port}\"\n[sources.r]\ntype = \"redis\"\n\
                 url_env = \"BACKLOG_SCALER_TEST_NEVER_SET\"\n"
            ),
            "sources.r.url_env",
        ),
        (
            format!(
                "[server]\ngrpc_listen = \"127.0.0.1:{port}\"\n[sources.r]\ntype = \"redis\"\n\
                 url = \"http://user:hunter2@host\"\n"
            ),
            "sources.r.url",
        ),
    ];
    for (config, key) in cases {
        let mut process = ScalerProcess::spawn(&config, &[]);
        let status = process.wait_for_exit();
        let stderr = process.stderr();
        assert_eq!(status.code(), Some(2), "{config}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
        assert!(stderr.contains(key), "{stderr:?}");
        assert!(!stderr.contains("hunter2"), "{stderr:?}");
        assert!(!stderr.contains("in use"), "it tried to bind: {stderr:?}");
    }

    // The control: a valid config on the same taken port gets as far as the bind, and says so.
    let valid = format!(
        "[server]\ngrpc_listen = \"127.0.0.1:{port}\"\n[sources.r]\ntype = \"redis\"\n\
         url = \"redis://127.0.0.1:{}/0\"\n",
        common::free_port()
    );
    let mut process = ScalerProcess::spawn(&valid, &[]);
    let status = process.wait_for_exit();
    let stderr = process.stderr();
    assert!(
        !status.success() && status.code() != Some(2),
        "{status}: {stderr}"
    );
    assert!(stderr.contains("in use"), "{stderr:?}");
    drop(taken);
}

#[test]
fn config_path_falls_back_to_the_backlog_scaler_config_variable() {
    let output = Command::new(SCALER_BINARY)
        .arg("serve")
        .env("BACKLOG_SCALER_CONFIG", "/nonexistent/backlog-scaler.toml")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("/nonexistent/backlog-scaler.toml"),
        "{stderr}"
    );
}

/// Every password of the secrets test, each used once, so a leak says where it came from.
const SECRETS: [(&str, &str); 10] = [
    ("redis-url", "redis-url-pw-7f3a9c"),
    ("redis-wrong", "redis-wrong-pw-2b8d4e"),
    ("redis-file", "redis-file-pw-5c1e7a"),
    ("redis-frozen", "redis-frozen-pw-9d2f6b"),
    ("redis-down", "redis-down-pw-3e7a1c"),
    ("redis-tls", "redis-tls-pw-8a4c2d"),
    ("pg-url", "pg-url-pw-6b9e3f"),
    ("pg-wrong", "pg-wrong-pw-1d5a8c"),
    ("pg-file", "pg-file-pw-4f2b7e"),
    ("pg-env", "pg-env-pw-0c6d9a"),
];

fn secret(source: &str) -> &'static str {
    SECRETS.iter().find(|(s, _)| *s == source).unwrap().1
}

/// Messages that must never carry a secret, gathered as the test goes.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    fn status(&mut self, status: &tonic::Status) {
        self.0
            .push(format!("{:?}: {}", status.code(), status.message()));
    }

    fn answer<T>(&mut self, answer: &Result<T, tonic::Status>) {
        if let Err(status) = answer {
            self.status(status);
        }
    }
}

async fn redis_with_password(port: u16, password: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://:{password}@127.0.0.1:{port}/0"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("connecting to the test redis-server with its password")
}

/// A PostgreSQL that asks every role but the harness's `postgres` for a password, with the
/// roles `scaler`, `filer` and `enver`.
async fn postgres_with_passwords() -> common::postgres::PostgresServer {
    let postgres = common::postgres::PostgresServer::start().await;
    postgres
        .execute(
            "postgres",
            &format!(
                "CREATE ROLE scaler LOGIN PASSWORD '{}'; CREATE ROLE filer LOGIN PASSWORD '{}'; \
                 CREATE ROLE enver LOGIN PASSWORD '{}';",
                secret("pg-url"),
                secret("pg-file"),
                secret("pg-env")
            ),
        )
        .await;
    std::fs::write(
        postgres.dir().join("data/pg_hba.conf"),
        "local all all trust\nhost all postgres 127.0.0.1/32 trust\n\
         host all all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    postgres
        .execute("postgres", "SELECT pg_reload_conf()")
        .await;
    postgres
}

/// The scaler at `debug` level, with passwords in Redis and PostgreSQL URLs, a password file,
/// a URL file and a URL in the environment, driven through what goes wrong in production:
/// wrong passwords, a backend down, one frozen then restarted, TLS to a plaintext port,
/// invalid metadata. Not one password appears in its output, in an error any client got, in
/// a metrics scrape, or in what `check` prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_errors_or_metrics_through_every_failure() {
    use common::trigger::{assert_outage_reported, assert_recovers_to, trigger_value};

    let main = common::RedisServer::start_with(&["--requirepass", secret("redis-url")]);
    let mut frozen = common::RedisServer::start_with(&["--requirepass", secret("redis-frozen")]);
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "filer", "on"])
        .arg(format!(">{}", secret("redis-file")))
        .arg(&["~*", "&*", "+@all"])
        .query_async(&mut redis_with_password(main.port, secret("redis-url")).await)
        .await
        .unwrap();
    let mut jobs = redis_with_password(main.port, secret("redis-url")).await;
    common::push(&mut jobs, "jobs", 4).await;
    common::push(
        &mut redis_with_password(frozen.port, secret("redis-frozen")).await,
        "jobs",
        2,
    )
    .await;
    let mut postgres = postgres_with_passwords().await;

    let dir = tempfile::tempdir().unwrap();
    let (port, http, dead) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let (redis, pg) = (main.port, postgres.port);
    let pg_url = |user: &str, password: &str, port: u16, sslmode: &str| {
        format!("postgres://{user}:{password}@127.0.0.1:{port}/postgres?sslmode={sslmode}")
    };
    std::fs::write(dir.path().join("redis-password"), secret("redis-file")).unwrap();
    std::fs::write(
        dir.path().join("pg-url"),
        pg_url("filer", secret("pg-file"), pg, "disable"),
    )
    .unwrap();
    let pg_env_url = pg_url("enver", secret("pg-env"), pg, "disable");
    let pg_section = |name: &str, location: String| {
        format!(
            "[sources.{name}]\ntype = \"postgres\"\n{location}\n\
             [sources.{name}.queries]\none = \"SELECT 1\"\n"
        )
    };
    let config = [
        format!(
            "[server]\ngrpc_listen = \"127.0.0.1:{port}\"\nhttp_listen = \"127.0.0.1:{http}\"\n\
             [measurements]\nrefresh_interval = \"250ms\"\nmax_staleness = \"2s\"\n\
             timeout = \"500ms\"\n"
        ),
        format!(
            "[sources.redis-url]\ntype = \"redis\"\nurl = \"redis://:{}@127.0.0.1:{redis}/0\"\n",
            secret("redis-url")
        ),
        format!(
            "[sources.redis-wrong]\ntype = \"redis\"\nurl = \"redis://:{}@127.0.0.1:{redis}/0\"\n",
            secret("redis-wrong")
        ),
        format!(
            "[sources.redis-file]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{redis}/0\"\n\
             username = \"filer\"\npassword_file = \"{}\"\n",
            dir.path().join("redis-password").display()
        ),
        format!(
            "[sources.redis-frozen]\ntype = \"redis\"\nurl = \"redis://:{}@127.0.0.1:{}/0\"\n",
            secret("redis-frozen"),
            frozen.port
        ),
        format!(
            "[sources.redis-down]\ntype = \"redis\"\nurl = \"redis://:{}@127.0.0.1:{dead}/0\"\n",
            secret("redis-down")
        ),
        format!(
            "[sources.redis-tls]\ntype = \"redis\"\nurl = \"rediss://:{}@127.0.0.1:{redis}/0\"\n",
            secret("redis-tls")
        ),
        pg_section(
            "pg-url",
            format!(
                "url = \"{}\"",
                pg_url("scaler", secret("pg-url"), pg, "disable")
            ),
        ),
        pg_section(
            "pg-wrong",
            format!(
                "url = \"{}\"",
                pg_url("scaler", secret("pg-wrong"), pg, "disable")
            ),
        ),
        pg_section(
            "pg-file",
            format!("url_file = \"{}\"", dir.path().join("pg-url").display()),
        ),
        pg_section("pg-env", "url_env = \"BACKLOG_SCALER_TEST_PG_URL\"".into()),
        // Down, and TLS to a server without it: the URLs of good sources with their secret.
        pg_section(
            "pg-down",
            format!(
                "url = \"{}\"",
                pg_url("scaler", secret("pg-url"), dead, "disable")
            ),
        ),
        pg_section(
            "pg-tls",
            format!(
                "url = \"{}\"",
                pg_url("scaler", secret("pg-url"), pg, "require")
            ),
        ),
    ]
    .concat();
    let config_path = dir.path().join("scaler.toml");
    std::fs::write(&config_path, &config).unwrap();
    let env = [
        ("BACKLOG_SCALER_LOG", "debug"),
        ("BACKLOG_SCALER_TEST_PG_URL", pg_env_url.as_str()),
    ];
    let mut process = ScalerProcess::spawn(&config, &env);
    let address = process.wait_until_listening(port);
    let mut seen = Seen::default();
    let redis_list = [("metric", "redis-list"), ("keys", "jobs")];
    let pg_query = [("metric", "pg-query"), ("query", "one")];

    // The passwords work where they are right.
    for (source, pairs, value) in [
        ("redis-url", &redis_list, 4.0),
        ("redis-file", &redis_list, 4.0),
        ("redis-frozen", &redis_list, 2.0),
        ("pg-url", &pg_query, 1.0),
        ("pg-file", &pg_query, 1.0),
        ("pg-env", &pg_query, 1.0),
    ] {
        let answer = common::poll_until(
            format!("{source} answers"),
            Duration::from_secs(10),
            async || trigger_value(&address, source, pairs).await,
            Result::is_ok,
        )
        .await;
        assert_eq!(answer.unwrap(), value, "{source}");
    }

    // Wrong passwords, a backend down, TLS to a plaintext port: UNAVAILABLE naming the
    // source, through every RPC that reads.
    let mut client = backlog_scaler::proto::external_scaler_client::ExternalScalerClient::connect(
        format!("http://{address}"),
    )
    .await
    .unwrap();
    for (source, pairs) in [
        ("redis-wrong", &redis_list),
        ("redis-down", &redis_list),
        ("redis-tls", &redis_list),
        ("pg-wrong", &pg_query),
        ("pg-down", &pg_query),
        ("pg-tls", &pg_query),
    ] {
        let status = trigger_value(&address, source, pairs).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::Unavailable,
            "{source}: {status:?}"
        );
        assert!(status.message().contains(source), "{status:?}");
        seen.status(&status);
        let mut all = vec![("source", source), ("target", "1")];
        all.extend_from_slice(pairs);
        let trigger = common::scaled_object(&all);
        seen.answer(&client.is_active(trigger.clone()).await);
        let stream = client.stream_is_active(trigger).await;
        seen.answer(&stream);
        if let Ok(stream) = stream {
            let first = stream.into_inner().message().await;
            seen.answer(&first);
            assert!(
                first.is_err(),
                "{source}: the stream ends with the error: {first:?}"
            );
        }
    }

    // Invalid metadata, on a source whose URL holds a password.
    for pairs in [
        vec![("metric", "redis-list")],
        vec![("metric", "redis-list"), ("keys", "jobs"), ("target", "-1")],
        vec![("metric", "kafka"), ("keys", "jobs")],
        vec![("metric", "pg-query"), ("query", "missing")],
        vec![
            ("metric", "redis-list"),
            ("keys", "jobs"),
            ("target", "1"),
            ("password", "x"),
        ],
    ] {
        let source = if pairs[0].1 == "pg-query" {
            "pg-url"
        } else {
            "redis-url"
        };
        let mut all = vec![("source", source)];
        all.extend_from_slice(&pairs);
        let answer = client
            .get_metric_spec(common::scaled_object(&all))
            .await
            .map(drop);
        let status = answer.expect_err("invalid metadata");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        seen.status(&status);
    }

    // A Redis frozen, then killed and restarted: the scaler reconnects and authenticates.
    frozen.freeze(true);
    let status = assert_outage_reported(&address, "redis-frozen", &redis_list, 2.0).await;
    seen.status(&status);
    frozen.freeze(false);
    assert_recovers_to(&address, "redis-frozen", &redis_list, 2.0).await;
    frozen.stop();
    let status = assert_outage_reported(&address, "redis-frozen", &redis_list, 2.0).await;
    seen.status(&status);
    frozen.resume();
    assert_recovers_to(&address, "redis-frozen", &redis_list, 0.0).await;
    // PostgreSQL down and back: the pools reconnect with their passwords.
    postgres.stop();
    let status = assert_outage_reported(&address, "pg-url", &pg_query, 1.0).await;
    seen.status(&status);
    postgres.resume().await;
    assert_recovers_to(&address, "pg-url", &pg_query, 1.0).await;

    let (_, scrape) = common::http::http_get(http, "/metrics").await;
    assert!(
        scrape.contains("redis-wrong"),
        "the scrape names sources: {scrape}"
    );
    seen.0.push(scrape);
    for output in ["text", "json"] {
        let checked = Command::new(SCALER_BINARY)
            .args(["check", "--output", output, "--config"])
            .arg(&config_path)
            .env_remove("BACKLOG_SCALER_CONFIG")
            .envs(env)
            .output()
            .unwrap();
        assert_eq!(
            checked.status.code(),
            Some(1),
            "some sources fail: {checked:?}"
        );
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
        assert!(printed.contains("pg-wrong"), "{printed}");
        seen.0.push(printed);
    }

    process.terminate();
    let status = process.wait_for_exit();
    let output = process.all_output();
    assert!(status.success(), "{status}: {output}");
    // The output is at debug level, and tells the failures apart by source.
    assert!(output.contains("DEBUG"), "{output}");
    for source in [
        "redis-wrong",
        "redis-down",
        "redis-tls",
        "pg-wrong",
        "pg-down",
        "pg-tls",
    ] {
        assert!(
            output.contains(source),
            "{source} is named in the logs: {output}"
        );
    }
    seen.0.push(output);
    for text in &seen.0 {
        for (source, secret) in SECRETS {
            assert!(
                !text.contains(secret),
                "the password of {source} leaked: {text}"
            );
        }
    }
}

#[test]
fn sigterm_exits_0_within_the_shutdown_grace() {
    let port = common::free_port();
    let mut process = ScalerProcess::spawn(
        &format!(
            "[server]\ngrpc_listen = \"127.0.0.1:{port}\"\nshutdown_grace = \"3s\"\n\
             [sources.r]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{}/0\"\n",
            common::free_port()
        ),
        &[],
    );
    process.wait_until_listening(port);
    let started = Instant::now();
    process.terminate();
    let status = process.wait_for_exit();
    assert!(status.success(), "{status}: {}", process.stderr());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
