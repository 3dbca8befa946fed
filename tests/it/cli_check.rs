//! `backlog-scaler check`, the built binary against throwaway servers: healthy sources pass
//! with their findings, a down source or refused credentials fail it (never printing the
//! password), and a bad config is exit 2 before anything is probed.

use crate::common;
use crate::common::cli_run;

use cli_run::{run, write};
use common::{RedisServer, free_port, postgres::PostgresServer};

/// Lets `user` (with `password`) in through SCRAM while everyone else keeps trust, the way a
/// real server asks the scaler's role for its password.
async fn require_password(postgres: &PostgresServer, user: &str, password: &str) {
    postgres
        .execute(
            "postgres",
            &format!("CREATE ROLE {user} LOGIN PASSWORD '{password}'"),
        )
        .await;
    let hba = postgres.dir().join("data/pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all {user} 127.0.0.1/32 scram-sha-256\n{rules}"),
    )
    .unwrap();
    postgres
        .execute("postgres", "SELECT pg_reload_conf()")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_sources_pass_with_one_line_each_and_json_for_scripts() {
    let redis = RedisServer::start();
    let postgres = PostgresServer::start().await;
    // A database without pg_stat_statements or Dagster's tables, and a role without
    // pg_monitor: optional features, reported but not failed.
    postgres.execute("postgres", "CREATE DATABASE app").await;
    postgres
        .execute("postgres", "CREATE ROLE plain LOGIN")
        .await;
    postgres
        .execute(
            "postgres",
            "CREATE TABLE runs (run_id text, pipeline_name text, status text);
             CREATE TABLE run_tags (run_id text, key text, value text)",
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "scaler.toml",
        &format!(
            r#"
            [sources.redis-main]
            type = "redis"
            url = "{redis}"

            [sources.pg-main]
            type = "postgres"
            url = "{pg}"
            [sources.pg-main.queries]
            queued = "SELECT count(*) FROM runs WHERE status = 'QUEUED'"
            broken = "SELECT count(*) FROM no_such_table"

            [sources.pg-app]
            type = "postgres"
            url = "postgres://plain@127.0.0.1:{port}/app?sslmode=disable"
            "#,
            redis = redis.url(),
            pg = postgres.url("postgres"),
            port = postgres.port,
        ),
    );

    let text = run(&["check", "--config", config.to_str().unwrap()]).await;
    assert_eq!(text.code, Some(0), "{text:#?}");
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "one line per source: {text:#?}");
    // Sources come in name order.
    let (pg_app, pg_main, redis_main) = (lines[0], lines[1], lines[2]);
    assert!(
        pg_main.starts_with("ok    pg-main (postgres): reachable, authenticated, "),
        "{pg_main}"
    );
    for fragment in [
        "read-only transaction: BEGIN READ ONLY works",
        "pg_monitor: `postgres` is a superuser",
        "pg_stat_statements: ",
        "installed and readable",
        "dagster tables: runs and run_tags present in schema public",
        "query queued: plans",
        "query broken: fails, pg-query triggers naming it will fail",
    ] {
        assert!(pg_main.contains(fragment), "{fragment:?} not in {pg_main}");
    }
    assert!(pg_app.starts_with("ok    pg-app (postgres)"), "{pg_app}");
    for fragment in [
        "pg_stat_statements: absent from database `app`",
        "GRANT pg_monitor TO \"plain\"",
        "dagster tables: absent (runs, run_tags not in schema public)",
    ] {
        assert!(pg_app.contains(fragment), "{fragment:?} not in {pg_app}");
    }
    assert!(
        redis_main.starts_with("ok    redis-main (redis): reachable, authenticated, "),
        "{redis_main}"
    );
    assert!(
        redis_main.contains("; redis_mode: standalone; role: master"),
        "{redis_main}"
    );

    let json = run(&[
        "check",
        "--config",
        config.to_str().unwrap(),
        "--output",
        "json",
    ])
    .await;
    assert_eq!(json.code, Some(0), "{json:#?}");
    let sources = json.json();
    let sources = sources.as_array().expect("an array of sources");
    assert_eq!(sources.len(), 3);
    // Each server's version as it reports it to a client of the test's own.
    let pg_version: String = postgres
        .session("postgres", "version-check")
        .await
        .query_one("SELECT current_setting('server_version')", &[])
        .await
        .unwrap()
        .get(0);
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
    let redis_version = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .expect("INFO server names the version");
    for (source, version) in sources
        .iter()
        .zip([pg_version.as_str(), &pg_version, redis_version])
    {
        assert_eq!(source["ok"], true, "{source}");
        assert_eq!(source["reachable"], true, "{source}");
        assert_eq!(source["authenticated"], true, "{source}");
        // A probe takes some time, and a passing one ends within the 1.5 s default timeout.
        let latency = source["latency_ms"].as_f64().unwrap();
        assert!(latency > 0.0 && latency <= 1500.0, "{source}");
        assert_eq!(source["version"].as_str(), Some(version), "{source}");
        assert!(source["error"].is_null(), "{source}");
        assert!(
            !source["findings"].as_array().unwrap().is_empty(),
            "{source}"
        );
    }
    assert_eq!(sources[2]["name"], "redis-main");
    assert_eq!(sources[2]["type"], "redis");
    let statements = sources[1]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["what"] == "pg_stat_statements")
        .expect("a pg_stat_statements finding");
    assert_eq!(statements["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_source_or_refused_credentials_fail_without_printing_the_password() {
    let redis = RedisServer::start_with(&["--requirepass", "right-redis-secret"]);
    let postgres = PostgresServer::start().await;
    require_password(&postgres, "scaler", "right-pg-secret").await;
    let down = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "scaler.toml",
        &format!(
            r#"
            [measurements]
            timeout = "1s"

            [sources.redis-down]
            type = "redis"
            url = "redis://:down-hunter2@127.0.0.1:{down}/0"

            [sources.redis-wrong]
            type = "redis"
            url = "redis://:wrong-hunter2@127.0.0.1:{redis}/0"

            [sources.redis-nopass]
            type = "redis"
            url = "redis://127.0.0.1:{redis}/0"

            [sources.redis-right]
            type = "redis"
            url = "redis://:right-redis-secret@127.0.0.1:{redis}/0"

            [sources.pg-wrong]
            type = "postgres"
            url = "postgres://scaler:wrong-pg-hunter2@127.0.0.1:{pg}/postgres?sslmode=disable"

            [sources.pg-right]
            type = "postgres"
            url = "postgres://scaler:right-pg-secret@127.0.0.1:{pg}/postgres?sslmode=disable"
            "#,
            redis = redis.port,
            pg = postgres.port,
        ),
    );
    let config = config.to_str().unwrap();

    let text = run(&["check", "--config", config]).await;
    assert_eq!(text.code, Some(1), "{text:#?}");
    let line = |name: &str| -> String {
        text.stdout
            .lines()
            .find(|l| l.contains(&format!(" {name} (")))
            .unwrap_or_else(|| panic!("no line for {name}: {text:#?}"))
            .to_string()
    };
    assert_eq!(text.stdout.lines().count(), 6, "{text:#?}");
    assert!(line("pg-right").starts_with("ok  "), "{}", line("pg-right"));
    assert!(
        line("pg-right").contains("GRANT pg_monitor"),
        "{}",
        line("pg-right")
    );
    assert!(
        line("redis-right").starts_with("ok  "),
        "{}",
        line("redis-right")
    );
    let down_line = line("redis-down");
    assert!(
        down_line.starts_with("FAIL  redis-down (redis): unreachable"),
        "{down_line}"
    );
    // A server that takes the connection but answers NOAUTH to every command is refusing
    // the credentials as much as one that refuses AUTH.
    for name in ["redis-wrong", "redis-nopass", "pg-wrong"] {
        let failed = line(name);
        assert!(failed.starts_with("FAIL"), "{failed}");
        assert!(failed.contains("reachable, NOT authenticated"), "{failed}");
        assert!(failed.contains("authentication failed"), "{failed}");
    }

    let json = run(&["check", "--config", config, "--output", "json"]).await;
    assert_eq!(json.code, Some(1), "{json:#?}");
    let sources = json.json();
    let by_name = |name: &str| {
        sources
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("redis-down")["reachable"], false);
    assert!(by_name("redis-down")["authenticated"].is_null());
    assert!(
        by_name("redis-down")["error"]
            .as_str()
            .unwrap()
            .contains("redis-down")
    );
    for name in ["redis-wrong", "redis-nopass", "pg-wrong"] {
        assert_eq!(by_name(name)["ok"], false, "{name}");
        assert_eq!(by_name(name)["reachable"], true, "{name}");
        assert_eq!(by_name(name)["authenticated"], false, "{name}");
    }
    assert_eq!(by_name("pg-right")["authenticated"], true);

    for output in [&text, &json] {
        let all = output.all_output();
        for secret in ["hunter2", "right-redis-secret", "right-pg-secret"] {
            assert!(!all.contains(secret), "{secret} printed: {all}");
        }
    }
}

#[tokio::test]
async fn a_bad_config_is_exit_2_with_one_line_and_probes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "scaler.toml",
        "[sources.r]\ntype = \"redis\"\nurl = \"http://user:hunter2@host\"\n",
    );
    for output in ["text", "json"] {
        let ran = run(&[
            "check",
            "--config",
            config.to_str().unwrap(),
            "--output",
            output,
        ])
        .await;
        assert_eq!(ran.code, Some(2), "{ran:#?}");
        assert_eq!(ran.stdout, "", "{ran:#?}");
        assert_eq!(ran.stderr.trim_end().lines().count(), 1, "{ran:#?}");
        assert!(ran.stderr.contains("sources.r.url"), "{ran:#?}");
        assert!(!ran.stderr.contains("hunter2"), "{ran:#?}");
    }
    let missing = run(&["check", "--config", "/nonexistent/scaler.toml"]).await;
    assert_eq!(missing.code, Some(2), "{missing:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_state_sentinel_master_and_replica_role_are_reported() {
    let cluster = common::redis_topology::RedisCluster::start().await;
    let sentinel = common::redis_topology::SentinelSetup::start().await;
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "scaler.toml",
        &format!(
            r#"
            [sources.cluster]
            type = "redis-cluster"
            urls = [{urls}]

            [sources.sentinel]
            type = "redis-sentinel"
            urls = ["{sentinel_url}"]
            master = "mymaster"

            [sources.replica]
            type = "redis"
            url = "{replica}"

            [sources.cluster-node-as-plain]
            type = "redis"
            url = "{node}"
            "#,
            urls = urls.join(", "),
            sentinel_url = sentinel.sentinel_url(),
            replica = sentinel.replica.url(),
            node = cluster.nodes[0].url(),
        ),
    );
    let ran = run(&["check", "--config", config.to_str().unwrap()]).await;
    // The cluster node configured as a plain server fails; the others pass.
    assert_eq!(ran.code, Some(1), "{ran:#?}");
    let line = |name: &str| -> String {
        ran.stdout
            .lines()
            .find(|l| l.contains(&format!(" {name} (")))
            .unwrap_or_else(|| panic!("no line for {name}: {ran:#?}"))
            .to_string()
    };
    let cluster_line = line("cluster");
    assert!(cluster_line.starts_with("ok  "), "{cluster_line}");
    assert!(
        cluster_line.contains("cluster_state: ok (3 masters serving slots"),
        "{cluster_line}"
    );
    let master_port = sentinel.master_port().await;
    let sentinel_line = line("sentinel");
    assert!(sentinel_line.starts_with("ok  "), "{sentinel_line}");
    assert!(
        sentinel_line.contains(&format!(
            "master: the Sentinels resolve `mymaster` to 127.0.0.1:{master_port}"
        )),
        "{sentinel_line}"
    );
    assert!(sentinel_line.contains("role: master"), "{sentinel_line}");
    let replica_line = line("replica");
    assert!(replica_line.starts_with("ok  "), "{replica_line}");
    assert!(
        replica_line.contains(&format!("role: replica of 127.0.0.1:{master_port}")),
        "{replica_line}"
    );
    let plain = line("cluster-node-as-plain");
    assert!(plain.starts_with("FAIL"), "{plain}");
    assert!(
        plain.contains("FAIL redis_mode: cluster: this node is part of a Redis Cluster"),
        "{plain}"
    );
}
