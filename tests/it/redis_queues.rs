//! Each Redis metric against a real `redis-server`, with queue data produced by the real
//! queue libraries (BullMQ on node, Celery/kombu and RQ on Python) wherever one exists: the
//! scaler's value must equal the library's own count of pending work.

use crate::common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use backlog_scaler::proto::{GetMetricsRequest, external_scaler_client::ExternalScalerClient};
use common::{
    RedisServer, SETTLES_WITHIN, Scaler, poll_until, project, redis_config,
    redis_topology::{RedisCluster, SentinelSetup},
    scaled_object, trigger_value,
};
use futures::StreamExt;
use redis::AsyncCommands;
use serde_json::Value;
use tonic::transport::Channel;

/// Runs a producer script and parses the JSON line it prints.
async fn produce(program: &str, script: &str, args: Vec<String>) -> Value {
    let deps = project().join(".test-deps");
    let hint = "run scripts/install-test-deps.sh (installs bullmq into .test-deps/node and \
                celery, rq into .test-deps/python)";
    let (env_key, env_value, marker) = match program {
        "node" => (
            "NODE_PATH",
            deps.join("node/node_modules"),
            "node/node_modules/bullmq",
        ),
        _ => ("PYTHONPATH", deps.join("python"), "python/celery"),
    };
    assert!(
        Path::new(&deps.join(marker)).exists(),
        "{marker} is missing; {hint}"
    );
    let script = project().join("tests/compat").join(script);
    let program = program.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&program)
            .arg(&script)
            .args(&args)
            .env(env_key, env_value)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}; {hint}"))
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "producer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("producer printed {stdout:?}: {e}"))
}

/// BullMQ's own count of the work the scaler must see: waiting + paused + prioritized jobs
/// from `Queue.getJobCounts()`, plus the delayed jobs the producer made due.
fn bullmq_backlog(produced: &Value) -> f64 {
    let count = |state: &str| produced["counts"][state].as_f64().unwrap();
    count("wait")
        + count("paused")
        + count("prioritized")
        + produced["due_delayed"].as_f64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bullmq_backlog_equals_the_library_count() {
    let redis = RedisServer::start();
    let scaler = Scaler::start(&redis_config(&redis.url())).await;
    let port = redis.port.to_string();

    let running = produce(
        "node",
        "bullmq_produce.cjs",
        vec![port.clone(), "mail".into(), "bull".into(), "running".into()],
    )
    .await;
    let counts = &running["counts"];
    assert_eq!(counts["delayed"], 6, "{running}");
    let library = bullmq_backlog(&running);
    assert_eq!(
        library, 12.0,
        "5 waiting + 3 prioritized + 4 due: {running}"
    );
    assert_eq!(
        trigger_value(
            &scaler,
            "redis-main",
            &[("metric", "bullmq"), ("queue", "mail")]
        )
        .await
        .unwrap(),
        library
    );

    // A custom prefix, and a paused queue: 0 unless countWhenPaused.
    let paused = produce(
        "node",
        "bullmq_produce.cjs",
        vec![port, "reports".into(), "{jobs}".into(), "paused".into()],
    )
    .await;
    let library = bullmq_backlog(&paused);
    assert_eq!(library, 12.0, "{paused}");
    let base = [
        ("metric", "bullmq"),
        ("queue", "reports"),
        ("prefix", "{jobs}"),
    ];
    assert_eq!(
        trigger_value(&scaler, "redis-main", &base).await.unwrap(),
        0.0
    );
    let mut counted = base.to_vec();
    counted.push(("countWhenPaused", "true"));
    assert_eq!(
        trigger_value(&scaler, "redis-main", &counted)
            .await
            .unwrap(),
        library
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_backlog_equals_kombu_queue_size() {
    let redis = RedisServer::start();
    let scaler = Scaler::start(&redis_config(&redis.url())).await;
    let port = redis.port.to_string();

    let plain = produce(
        "python3",
        "celery_produce.py",
        vec![port.clone(), "work".into(), String::new()],
    )
    .await;
    assert_eq!(plain["size"], plain["sent"], "{plain}");
    let size = plain["size"].as_f64().unwrap();
    assert_eq!(
        trigger_value(
            &scaler,
            "redis-main",
            &[("metric", "celery"), ("queue", "work")]
        )
        .await
        .unwrap(),
        size
    );
    // Counting only the base key (what KEDA's built-in redis scaler does) under-counts.
    assert!(
        trigger_value(
            &scaler,
            "redis-main",
            &[("metric", "redis-list"), ("keys", "work")]
        )
        .await
        .unwrap()
            < size
    );

    let prefixed = produce(
        "python3",
        "celery_produce.py",
        vec![port, "work".into(), "tenant-a:".into()],
    )
    .await;
    assert_eq!(
        trigger_value(
            &scaler,
            "redis-main",
            &[
                ("metric", "celery"),
                ("queue", "work"),
                ("keyPrefix", "tenant-a:")
            ]
        )
        .await
        .unwrap(),
        prefixed["size"].as_f64().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rq_backlog_equals_queue_count() {
    let redis = RedisServer::start();
    let scaler = Scaler::start(&redis_config(&redis.url())).await;
    let produced = produce(
        "python3",
        "rq_produce.py",
        vec![redis.port.to_string(), "high".into()],
    )
    .await;
    assert_eq!(produced["count"], 7, "{produced}");
    assert_eq!(
        trigger_value(
            &scaler,
            "redis-main",
            &[("metric", "rq"), ("queue", "high")]
        )
        .await
        .unwrap(),
        7.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidekiq_zset_and_stream_counts_match_redis_own_answers() {
    let redis = RedisServer::start();
    let scaler = Scaler::start(&redis_config(&redis.url())).await;
    let mut connection = redis.connection().await;

    // Sidekiq pushes job JSON onto `queue:<name>` (optionally behind a namespace).
    let _: () = connection
        .lpush("queue:default", vec!["{}"; 3])
        .await
        .unwrap();
    let _: () = connection
        .lpush("app:queue:default", vec!["{}"; 2])
        .await
        .unwrap();

    // Sorted sets scored in seconds and in milliseconds: two due in `retry`, one in
    // `retry-ms`, one of each in the future.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let (secs, ms) = (now.as_secs() as f64, now.as_millis() as f64);
    let _: () = connection
        .zadd_multiple(
            "retry",
            &[(secs - 60.0, "a"), (secs - 1.0, "b"), (secs + 3600.0, "c")],
        )
        .await
        .unwrap();
    let _: () = connection
        .zadd_multiple("retry-ms", &[(ms - 5000.0, "a"), (ms + 3_600_000.0, "b")])
        .await
        .unwrap();

    // A stream with a consumer group: 10 entries, 4 delivered, 1 of them acknowledged.
    for i in 0..10 {
        let _: String = connection.xadd("events", "*", &[("n", i)]).await.unwrap();
    }
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE", "events", "workers", "0"])
        .query_async(&mut connection)
        .await
        .unwrap();
    let read: redis::streams::StreamReadReply = connection
        .xread_options(
            &["events"],
            &[">"],
            &redis::streams::StreamReadOptions::default()
                .group("workers", "w1")
                .count(4),
        )
        .await
        .unwrap();
    let first_id = read.keys[0].ids[0].id.clone();
    let _: i64 = connection
        .xack("events", "workers", &[first_id])
        .await
        .unwrap();
    // Redis's own answer for the group.
    let info: redis::streams::StreamInfoGroupsReply =
        connection.xinfo_groups("events").await.unwrap();
    let group = &info.groups[0];
    let (pending, lag) = (
        group.pending as f64,
        group.lag.expect("Redis 7 reports lag") as f64,
    );
    assert_eq!((pending, lag), (3.0, 6.0));

    let with_group = |mode: Option<&'static str>| {
        let mut pairs = vec![
            ("metric", "redis-stream"),
            ("stream", "events"),
            ("group", "workers"),
        ];
        pairs.extend(mode.map(|mode| ("mode", mode)));
        pairs
    };
    let cases: Vec<(Vec<(&str, &str)>, f64)> = vec![
        (vec![("metric", "sidekiq"), ("queue", "default")], 3.0),
        (
            vec![
                ("metric", "sidekiq"),
                ("queue", "default"),
                ("namespace", "app"),
            ],
            2.0,
        ),
        (
            vec![("metric", "redis-zset"), ("keys", "retry,retry-ms")],
            5.0,
        ),
        (
            vec![
                ("metric", "redis-zset"),
                ("keys", "retry"),
                ("scoreMax", "now"),
            ],
            2.0,
        ),
        (
            vec![
                ("metric", "redis-zset"),
                ("keys", "retry-ms"),
                ("scoreMax", "now"),
                ("scoreUnit", "ms"),
            ],
            1.0,
        ),
        (vec![("metric", "redis-stream"), ("stream", "events")], 10.0),
        (with_group(Some("pending")), pending),
        (with_group(Some("lag")), lag),
        (with_group(Some("backlog")), pending + lag),
        // With a group and no mode: the backlog.
        (with_group(None), pending + lag),
    ];
    for (pairs, expected) in cases {
        let value = trigger_value(&scaler, "redis-main", &pairs)
            .await
            .unwrap_or_else(|status| panic!("{pairs:?}: {status:?}"));
        assert_eq!(value, expected, "{pairs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_list_key_is_read_once_per_refresh_however_many_triggers_share_it() {
    let redis = RedisServer::start();
    let scaler = Scaler::start(&redis_config(&redis.url())).await;
    // Seven triggers (seven measurements) over overlapping keys: `work` is read by five of
    // them, `other` by three, `rq:queue:high` by two. Read per measurement, that would be
    // 15 LLEN a refresh instead of 8, and fail the bounds below.
    let triggers: Vec<Vec<(&str, &str)>> = vec![
        vec![("metric", "celery"), ("queue", "work")],
        vec![("metric", "bullmq"), ("queue", "mail")],
        vec![("metric", "redis-list"), ("keys", "work,other")],
        vec![("metric", "rq"), ("queue", "high")],
        vec![("metric", "redis-list"), ("keys", "work")],
        vec![("metric", "redis-list"), ("keys", "other,work")],
        vec![
            ("metric", "redis-list"),
            ("keys", "rq:queue:high,work,other"),
        ],
    ];
    for trigger in &triggers {
        trigger_value(&scaler, "redis-main", trigger).await.unwrap();
    }
    // Let the refresher take over, then compare LLEN calls over a few refreshes with the
    // number of distinct list keys (work, work+3 steps, other, bull:mail wait/paused, rq).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = redis.command_calls().await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let after = redis.command_calls().await;
    let refreshes = started.elapsed().as_secs_f64().round();
    let llen =
        (after.get("llen").copied().unwrap_or(0) - before.get("llen").copied().unwrap_or(0)) as f64;
    let distinct_list_keys = 4.0 + 1.0 + 2.0 + 1.0;
    assert!(
        llen <= distinct_list_keys * (refreshes + 1.0)
            && llen >= distinct_list_keys * (refreshes - 1.0),
        "{llen} LLEN in ~{refreshes} refreshes: each distinct key must be read once per refresh"
    );
}

/// Copies every key (with its type, contents and consumer groups) with DUMP / RESTORE.
async fn copy_keys(from: &RedisServer, into: &mut impl redis::aio::ConnectionLike) {
    let mut source = from.connection().await;
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut source)
        .await
        .unwrap();
    for key in keys {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(&mut source)
            .await
            .unwrap();
        let _: () = redis::cmd("RESTORE")
            .arg(&key)
            .arg(0)
            .arg(dump)
            .arg("REPLACE")
            .query_async(into)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_counts_the_same_on_standalone_cluster_and_sentinel() {
    // Queue data from the real libraries on a standalone server...
    let redis = RedisServer::start();
    let port = redis.port.to_string();
    let bullmq = produce(
        "node",
        "bullmq_produce.cjs",
        vec![
            port.clone(),
            "mail".into(),
            "{bull}".into(),
            "running".into(),
        ],
    )
    .await;
    let celery = produce(
        "python3",
        "celery_produce.py",
        vec![port.clone(), "work".into(), String::new()],
    )
    .await;
    let rq = produce("python3", "rq_produce.py", vec![port, "high".into()]).await;
    let mut connection = redis.connection().await;
    let _: () = connection
        .lpush("queue:default", vec!["{}"; 3])
        .await
        .unwrap();
    let _: () = connection
        .zadd_multiple("retry", &[(1.0, "due"), (4e9, "later")])
        .await
        .unwrap();
    for i in 0..5 {
        let _: String = connection.xadd("events", "*", &[("n", i)]).await.unwrap();
    }
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE", "events", "workers", "0"])
        .query_async(&mut connection)
        .await
        .unwrap();
    // Redis' own answer for the plain list trigger below.
    let mut list_lengths = 0.0;
    for key in ["work", "rq:queue:high", "queue:default"] {
        let length: usize = connection.llen(key).await.unwrap();
        list_lengths += length as f64;
    }
    let triggers: [(Vec<(&str, &str)>, f64); 7] = [
        (
            vec![
                ("metric", "bullmq"),
                ("queue", "mail"),
                ("prefix", "{bull}"),
            ],
            bullmq_backlog(&bullmq),
        ),
        (
            vec![("metric", "celery"), ("queue", "work")],
            celery["size"].as_f64().unwrap(),
        ),
        (
            vec![("metric", "rq"), ("queue", "high")],
            rq["count"].as_f64().unwrap(),
        ),
        (vec![("metric", "sidekiq"), ("queue", "default")], 3.0),
        (
            vec![
                ("metric", "redis-zset"),
                ("keys", "retry"),
                ("scoreMax", "now"),
            ],
            1.0,
        ),
        (
            vec![
                ("metric", "redis-stream"),
                ("stream", "events"),
                ("group", "workers"),
            ],
            5.0,
        ),
        (
            vec![
                ("metric", "redis-list"),
                ("keys", "work,rq:queue:high,queue:default"),
            ],
            list_lengths,
        ),
    ];

    // ...copied onto a 3-master cluster (keys land on different slots and nodes) and onto a
    // Sentinel-managed master.
    let cluster = RedisCluster::start().await;
    copy_keys(&redis, &mut cluster.connection().await).await;
    let sentinel = SentinelSetup::start().await;
    copy_keys(&redis, &mut sentinel.master.connection().await).await;

    let config = format!(
        "{}\n{}\n{}",
        redis_config(&redis.url()),
        cluster.source_config("redis-cluster"),
        sentinel.source_config("redis-ha", "mymaster"),
    );
    let scaler = Scaler::start(&config).await;
    for (pairs, expected) in &triggers {
        let standalone = trigger_value(&scaler, "redis-main", pairs).await.unwrap();
        assert_eq!(standalone, *expected, "standalone {pairs:?}");
        for source in ["redis-cluster", "redis-ha"] {
            assert_eq!(
                trigger_value(&scaler, source, pairs).await.unwrap(),
                standalone,
                "{source} {pairs:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_refresh_of_more_measurements_than_one_round_trip_holds_reads_every_one() {
    // 4,500 lists: more than two of the rounds of 2,000 queries a refresh is cut into.
    const LISTS: usize = 4_500;
    let length = |i: usize, extra: usize| (i % 7 + 1 + extra) as f64;
    let redis = RedisServer::start();
    let scaler = Scaler::start(&redis_config(&redis.url())).await;
    let mut connection = redis.connection().await;
    let fill = |extra: usize| {
        let mut pipe = redis::pipe();
        for i in 0..LISTS {
            let items = if extra == 0 { i % 7 + 1 } else { extra };
            pipe.rpush(format!("chunked:{i}"), vec![0; items]).ignore();
        }
        pipe
    };
    let () = fill(0).query_async(&mut connection).await.unwrap();
    let client = scaler.client().await;
    let values = async |client: &ExternalScalerClient<Channel>| -> Vec<f64> {
        futures::stream::iter(0..LISTS)
            .map(|i| {
                let mut client = client.clone();
                async move {
                    let key = format!("chunked:{i}");
                    let pairs = [
                        ("source", "redis-main"),
                        ("metric", "redis-list"),
                        ("keys", key.as_str()),
                        ("target", "1"),
                    ];
                    let request = GetMetricsRequest {
                        scaled_object_ref: Some(scaled_object(&pairs)),
                        metric_name: String::new(),
                    };
                    let response = client.get_metrics(request).await.expect("GetMetrics");
                    response.into_inner().metric_values[0].metric_value_float
                }
            })
            .buffered(64)
            .collect()
            .await
    };
    let first = values(&client).await;
    let expected: Vec<f64> = (0..LISTS).map(|i| length(i, 0)).collect();
    assert_eq!(first, expected, "the cold reads, in rounds too");
    // One more item everywhere: every measurement changes, so every round must be read.
    let () = fill(1).query_async(&mut connection).await.unwrap();
    let expected: Vec<f64> = (0..LISTS).map(|i| length(i, 1)).collect();
    poll_until(
        "every list's new length, after a refresh (lists still stale)",
        SETTLES_WITHIN,
        async || {
            let now = values(&client).await;
            now.iter().zip(&expected).filter(|(a, b)| a != b).count()
        },
        |stale| *stale == 0,
    )
    .await;
}
