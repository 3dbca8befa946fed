//! Event-driven Redis reads end to end: a real redis-server (standalone, behind a real
//! Sentinel, a real 3-master Cluster) tells the scaler of each change of a key a trigger reads,
//! and a real StreamIsActive stream answers well inside one `refresh_interval` (left at 1 s):
//! after a push, after the queue empties, after a restart and after a failover. A churned key
//! costs a bounded number of reads; a Redis whose ACL refuses tracking is polled, and `check`
//! and `/metrics` say so. The ACL lines are read from docs/SECURITY.md, so the documented
//! least privilege is the tested one.

use crate::common;
use crate::common::cli_run;

use std::{
    hash::{BuildHasher, Hasher},
    time::{Duration, Instant},
};

use backlog_scaler::proto::IsActiveResponse;
use common::{
    RedisServer, SETTLES_WITHIN, Scaler, free_port,
    http::scraped,
    poll_until, push,
    redis_topology::{RedisCluster, SentinelSetup},
    scaled_object, trigger_value,
};
use redis::aio::ConnectionLike;
use tonic::Streaming;

/// "Well under a refresh interval": with the default 1 s refresh, a scaler that only polls
/// answers a change made at a random moment after 500 ms about half the time, so ten trials
/// all under this bound fail a polling scaler with probability ~0.1 %.
const WELL_UNDER_A_REFRESH: Duration = Duration::from_millis(500);

/// A random moment within the 1 s refresh period.
fn random_moment() -> Duration {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_millis(random % 1000)
}

/// The `redis-list` trigger of `keys` on `source`, active from one item.
fn list_trigger(source: &str, keys: &str) -> backlog_scaler::proto::ScaledObjectRef {
    scaled_object(&[
        ("source", source),
        ("metric", "redis-list"),
        ("keys", keys),
        ("target", "10"),
        ("activationTarget", "0"),
    ])
}

/// A StreamIsActive stream on `keys`, after its first answer (which must be `inactive`).
async fn inactive_stream(scaler: &Scaler, source: &str, keys: &str) -> Streaming<IsActiveResponse> {
    let mut client = scaler.client().await;
    let mut stream = client
        .stream_is_active(list_trigger(source, keys))
        .await
        .expect("StreamIsActive opens")
        .into_inner();
    let first = next_answer(&mut stream).await;
    assert!(!first, "an empty queue is inactive");
    stream
}

async fn next_answer(stream: &mut Streaming<IsActiveResponse>) -> bool {
    tokio::time::timeout(SETTLES_WITHIN, stream.message())
        .await
        .expect("the stream answers")
        .expect("the stream is healthy")
        .expect("the stream is open")
        .result
}

/// Makes `change` at a random moment within the refresh period and returns how long the
/// stream took to answer `expected` after it.
async fn stream_latency<C: ConnectionLike>(
    stream: &mut Streaming<IsActiveResponse>,
    connection: &mut C,
    change: &redis::Cmd,
    expected: bool,
) -> Duration {
    tokio::time::sleep(random_moment()).await;
    let started = Instant::now();
    let _: redis::Value = change.query_async(connection).await.expect("the change");
    let answer = next_answer(stream).await;
    let latency = started.elapsed();
    assert_eq!(answer, expected, "after {change:?}");
    latency
}

/// `trials` pushes onto an empty `key`, each followed by its removal: the stream answers
/// `true` and `false` well under a refresh each time.
async fn pushes_and_pops_are_seen_at_once<C: ConnectionLike>(
    stream: &mut Streaming<IsActiveResponse>,
    connection: &mut C,
    key: &str,
    trials: usize,
) {
    let mut lpush = redis::cmd("LPUSH");
    lpush.arg(key).arg("job");
    let mut del = redis::cmd("RPOP");
    del.arg(key);
    let mut latencies = Vec::new();
    for _ in 0..trials {
        latencies.push(stream_latency(stream, connection, &lpush, true).await);
        latencies.push(stream_latency(stream, connection, &del, false).await);
    }
    eprintln!("{key}: stream answers after {latencies:?}");
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < WELL_UNDER_A_REFRESH,
        "{key}: answers after {latencies:?}, not all under {WELL_UNDER_A_REFRESH:?}"
    );
}

/// `tracking_total_keys` of a server's `INFO stats`: keys some client has armed.
async fn tracked_keys(url: &str) -> u64 {
    let Ok(client) = redis::Client::open(url) else {
        return 0;
    };
    let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
        return 0;
    };
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut connection)
        .await
        .unwrap_or_default();
    info.lines()
        .find_map(|line| line.strip_prefix("tracking_total_keys:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until the scaler's event connection to `url` has armed `keys` keys.
async fn wait_until_armed(url: &str, keys: u64) {
    poll_until(
        format!("the scaler tracks {keys} key(s) on {url}"),
        SETTLES_WITHIN,
        async || tracked_keys(url).await,
        |tracked| *tracked >= keys,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_answers_at_once_and_again_after_a_restart() {
    let mut redis = RedisServer::start();
    let scaler = Scaler::start(&common::redis_config(&redis.url())).await;
    let mut stream = inactive_stream(&scaler, "redis-main", "events:q").await;
    wait_until_armed(&redis.url(), 1).await;
    let mut connection = redis.connection().await;
    pushes_and_pops_are_seen_at_once(&mut stream, &mut connection, "events:q", 5).await;

    // The server restarts (empty); the event connection comes back and arms the key again.
    redis.stop();
    redis.resume();
    let mut stream = inactive_stream(&scaler, "redis-main", "events:q").await;
    wait_until_armed(&redis.url(), 1).await;
    let mut connection = redis.connection().await;
    pushes_and_pops_are_seen_at_once(&mut stream, &mut connection, "events:q", 3).await;
    // GetMetrics sees a change as soon: the value is read once, at the change.
    push(&mut connection, "events:q", 4).await;
    let started = Instant::now();
    poll_until(
        "GetMetrics sees the pushed jobs",
        WELL_UNDER_A_REFRESH,
        async || {
            trigger_value(
                &scaler,
                "redis-main",
                &[("metric", "redis-list"), ("keys", "events:q")],
            )
            .await
            .ok()
        },
        |value| *value == Some(4.0),
    )
    .await;
    assert!(started.elapsed() < WELL_UNDER_A_REFRESH);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_answers_at_once_for_keys_on_every_master() {
    let cluster = RedisCluster::start().await;
    let keys = ["ev:a", "ev:b", "ev:c", "ev:d", "ev:e", "ev:f"];
    let mut owners = std::collections::HashSet::new();
    for key in keys {
        owners.insert(cluster.owner(key).await.0);
    }
    assert_eq!(
        owners.len(),
        3,
        "the keys are spread over the three masters"
    );
    let scaler = Scaler::start(&cluster.source_config("redis-cluster")).await;
    let mut stream = inactive_stream(&scaler, "redis-cluster", &keys.join(",")).await;
    for node in &cluster.nodes {
        wait_until_armed(&node.url(), 1).await;
    }
    let mut connection = cluster.connection().await;
    for key in keys {
        pushes_and_pops_are_seen_at_once(&mut stream, &mut connection, key, 1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_with_the_documented_least_privilege_answers_at_once_and_after_a_failover() {
    let setup = SentinelSetup::start().await;
    let (data_line, sentinel_line) = documented_acl_lines();
    for url in [setup.master.url(), setup.replica.url()] {
        acl_setuser(&url, &data_line).await;
    }
    acl_setuser(&setup.sentinel_url(), &sentinel_line).await;
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, PASSWORD).unwrap();
    let config = format!(
        "[sources.redis-sentinel]\ntype = \"redis-sentinel\"\n\
         urls = [\"redis://scaler:{PASSWORD}@127.0.0.1:{}\"]\nmaster = \"mymaster\"\n\
         username = \"scaler\"\npassword_file = \"{}\"\n",
        setup.sentinel_port,
        password.display()
    );
    let config_file = cli_run::write(dir.path(), "scaler.toml", &config);
    let check = cli_run::run(&["check", "--config", config_file.to_str().unwrap()]).await;
    assert_eq!(check.code, Some(0), "{check:#?}");
    assert!(check.stdout.contains("events: event-driven"), "{check:#?}");

    let scaler = Scaler::start(&config).await;
    let mut stream = inactive_stream(&scaler, "redis-sentinel", "sentinel:q").await;
    wait_until_armed(&setup.master.url(), 1).await;
    let mut connection = setup.master.connection().await;
    pushes_and_pops_are_seen_at_once(&mut stream, &mut connection, "sentinel:q", 3).await;

    setup.failover().await;
    let mut stream = inactive_stream(&scaler, "redis-sentinel", "sentinel:q").await;
    wait_until_armed(&setup.replica.url(), 1).await;
    let mut connection = setup.replica.connection().await;
    pushes_and_pops_are_seen_at_once(&mut stream, &mut connection, "sentinel:q", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_churned_key_costs_a_bounded_number_of_reads() {
    let redis = RedisServer::start();
    let scaler = Scaler::start(&common::redis_config(&redis.url())).await;
    let _stream = inactive_stream(&scaler, "redis-main", "churn:q").await;
    wait_until_armed(&redis.url(), 1).await;
    let before = redis.command_calls().await;
    // A producer and a consumer: 10 pushes and 10 pops every 10 ms, ~2,000 changes a second.
    let mut connection = redis.connection().await;
    let started = Instant::now();
    let mut changes = 0u64;
    while started.elapsed() < Duration::from_secs(3) {
        let mut pipe = redis::pipe();
        for _ in 0..10 {
            pipe.cmd("LPUSH").arg("churn:q").arg("job").ignore();
            pipe.cmd("RPOP").arg("churn:q").ignore();
        }
        let _: () = pipe.query_async(&mut connection).await.unwrap();
        changes += 20;
        // Paced to 2,000 changes a second; a late producer catches up without sleeping.
        tokio::time::sleep_until((started + Duration::from_micros(changes * 500)).into()).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = redis.command_calls().await;
    let per_second = |command: &str| {
        let calls =
            after.get(command).copied().unwrap_or(0) - before.get(command).copied().unwrap_or(0);
        calls as f64 / seconds
    };
    let (reads, arms) = (per_second("llen"), per_second("exists"));
    let rate = changes as f64 / seconds;
    eprintln!("{rate:.0} changes/s: {reads:.1} LLEN/s, {arms:.1} EXISTS/s");
    assert!(rate > 1000.0, "the key changed {rate:.0} times a second");
    assert!(
        reads + arms <= 60.0,
        "{rate:.0} changes/s cost {reads:.1} LLEN/s and {arms:.1} EXISTS/s, more than 60 reads/s"
    );
    assert!(
        reads >= 10.0,
        "changes drive re-reads: {reads:.1} LLEN/s at {rate:.0} changes/s"
    );
}

/// The password the ACL tests give the `scaler` user.
const PASSWORD: &str = "ev3nts-pw";

/// docs/SECURITY.md's ACL lines for data nodes and for Sentinels, with the test's password.
fn documented_acl_lines() -> (Vec<String>, Vec<String>) {
    let security = std::fs::read_to_string(common::project().join("docs/SECURITY.md")).unwrap();
    let lines: Vec<Vec<String>> = security
        .lines()
        .filter_map(|line| line.trim().strip_prefix("ACL SETUSER "))
        .map(|line| {
            line.split_whitespace()
                .map(|word| word.replace("PASSWORD", PASSWORD))
                .collect()
        })
        .collect();
    let [data, sentinel] = lines.as_slice() else {
        panic!("docs/SECURITY.md gives two ACL SETUSER lines (data nodes, Sentinels): {lines:?}");
    };
    assert!(
        !data.iter().any(|w| w.contains("sentinel")),
        "the data nodes' line names no Sentinel command (a data node rejects it whole): {data:?}"
    );
    (data.clone(), sentinel.clone())
}

async fn acl_setuser(url: &str, words: &[String]) {
    let mut connection = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(words)
        .query_async(&mut connection)
        .await
        .unwrap_or_else(|e| panic!("ACL SETUSER {words:?} on {url}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_privilege_reads_every_metric_and_without_tracking_the_source_polls_and_says_why() {
    let redis = RedisServer::start();
    let (data_line, _) = documented_acl_lines();
    acl_setuser(&redis.url(), &data_line).await;
    // The line before events: no +client|tracking.
    let old_line: Vec<String> = data_line
        .iter()
        .filter(|w| !w.contains("client|tracking"))
        .map(|w| w.replace("scaler", "oldscaler"))
        .collect();
    assert!(old_line.len() < data_line.len(), "{data_line:?}");
    acl_setuser(&redis.url(), &old_line).await;
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let config = format!(
        "[server]\nhttp_listen = \"127.0.0.1:{http}\"\n\
         [sources.least]\ntype = \"redis\"\nurl = \"redis://scaler:{PASSWORD}@127.0.0.1:{port}/0\"\n\
         [sources.old]\ntype = \"redis\"\nurl = \"redis://oldscaler:{PASSWORD}@127.0.0.1:{port}/0\"\n",
        port = redis.port
    );
    let config_file = cli_run::write(dir.path(), "scaler.toml", &config);
    let check = cli_run::run(&["check", "--config", config_file.to_str().unwrap()]).await;
    assert_eq!(check.code, Some(0), "both pass: {check:#?}");
    let line = |name: &str| {
        check
            .stdout
            .lines()
            .find(|l| l.contains(&format!(" {name} (redis)")))
            .unwrap_or_else(|| panic!("no line for {name}: {check:#?}"))
            .to_string()
    };
    assert!(line("least").contains("events: event-driven"), "{check:#?}");
    let old = line("old");
    assert!(
        old.contains("events: polling every refresh_interval")
            && old.contains("NOPERM")
            && old.contains("+client|tracking"),
        "{old}"
    );

    let scaler = Scaler::start(&config).await;
    for metric in every_metric() {
        let value = trigger_value(&scaler, "least", &metric).await;
        assert_eq!(value.ok(), Some(0.0), "{metric:?}");
    }
    let mut stream = inactive_stream(&scaler, "least", "least:q").await;
    wait_until_armed(&redis.url(), 1).await;
    let mut connection = redis.connection().await;
    pushes_and_pops_are_seen_at_once(&mut stream, &mut connection, "least:q", 2).await;

    // The old permissions: polled, and /metrics says so.
    assert_eq!(
        trigger_value(
            &scaler,
            "old",
            &[("metric", "redis-list"), ("keys", "least:q")]
        )
        .await
        .ok(),
        Some(0.0)
    );
    let event_driven = |source: &'static str| async move {
        scraped(
            http,
            &format!("backlog_scaler_source_event_driven{{source=\"{source}\"}}"),
        )
        .await
    };
    poll_until(
        "/metrics: `least` event-driven, `old` polling",
        SETTLES_WITHIN,
        async || (event_driven("least").await, event_driven("old").await),
        |answer| *answer == (Some(1.0), Some(0.0)),
    )
    .await;
    push(&mut connection, "least:q", 2).await;
    common::trigger_value_until(
        &scaler,
        "old",
        &[("metric", "redis-list"), ("keys", "least:q")],
        |v| v == 2.0,
    )
    .await;
}

/// One trigger of every Redis metric, on keys that do not exist (each answers 0).
fn every_metric() -> Vec<Vec<(&'static str, &'static str)>> {
    vec![
        vec![("metric", "redis-list"), ("keys", "m:list")],
        vec![
            ("metric", "redis-zset"),
            ("keys", "m:zset"),
            ("scoreMax", "now"),
        ],
        vec![("metric", "redis-stream"), ("stream", "m:stream")],
        vec![
            ("metric", "redis-stream"),
            ("stream", "m:stream"),
            ("group", "g"),
        ],
        vec![("metric", "bullmq"), ("queue", "mail")],
        vec![("metric", "celery"), ("queue", "celery")],
        vec![("metric", "sidekiq"), ("queue", "default")],
        vec![("metric", "rq"), ("queue", "high")],
        vec![
            ("metric", "sidekiq"),
            ("queue", "default"),
            ("measure", "latency"),
        ],
        vec![("metric", "rq"), ("queue", "high"), ("measure", "latency")],
        vec![
            ("metric", "bullmq"),
            ("queue", "mail"),
            ("measure", "latency"),
        ],
    ]
}
