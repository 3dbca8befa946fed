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
    ChildGuard, RedisServer, SETTLES_WITHIN, Scaler, poll_until, project, redis_config,
    redis_topology::{RedisCluster, SentinelSetup},
    scaled_object, trigger_value,
};
use futures::StreamExt;
use redis::AsyncCommands;
use serde_json::Value;
use tonic::{Code, transport::Channel};

/// What the tests need from `scripts/install-test-deps.sh`.
const LIBRARIES_HINT: &str = "run scripts/install-test-deps.sh (installs bullmq into \
     .test-deps/node, celery and rq into .test-deps/python, and as root Debian's ruby-sidekiq \
     and ruby-redis-namespace)";

/// `program` (node, python3, ruby or sidekiq) set up to load the queue libraries the tests
/// use: node's and Python's from `.test-deps/`, Ruby's from Debian.
fn library_command(program: &str) -> Command {
    let deps = project().join(".test-deps");
    let mut command = Command::new(program);
    let marker = match program {
        "node" => {
            command.env("NODE_PATH", deps.join("node/node_modules"));
            Some("node/node_modules/bullmq")
        }
        "python3" => {
            command.env("PYTHONPATH", deps.join("python"));
            Some("python/celery")
        }
        _ => None,
    };
    if let Some(marker) = marker {
        assert!(
            Path::new(&deps.join(marker)).exists(),
            "{marker} is missing; {LIBRARIES_HINT}"
        );
    }
    command
}

/// Runs a script of `tests/compat` and parses the JSON line it prints last.
async fn produce(program: &str, script: &str, args: Vec<String>) -> Value {
    run_script(library_command(program), script, args).await
}

async fn run_script(mut command: Command, script: &str, args: Vec<String>) -> Value {
    command
        .arg(project().join("tests/compat").join(script))
        .args(&args);
    let output = tokio::task::spawn_blocking(move || {
        command
            .output()
            .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}; {LIBRARIES_HINT}"))
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{script} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{script} printed {stdout:?}: {e}"))
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
    stream_with_group(&mut connection, 10).await;
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
    stream_with_group(&mut connection, 5).await;
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
    let value = async |mut client: ExternalScalerClient<Channel>, i: usize| -> f64 {
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
    };
    let values = async |client: &ExternalScalerClient<Channel>| -> Vec<f64> {
        futures::stream::iter(0..LISTS)
            .map(|i| value(client.clone(), i))
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
    // The last round's last list first, asked alone: asking all 4,500 takes seconds in a
    // debug build on a busy machine, and the first ones asked right after the change are
    // still stale, so a single pass of them could outlast the deadline.
    poll_until(
        "the last list's new length, after a refresh",
        SETTLES_WITHIN,
        async || value(client.clone(), LISTS - 1).await,
        |now| *now == length(LISTS - 1, 1),
    )
    .await;
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

// === Work in progress (`includeActive`) with the libraries' real workers ===

/// A queue's work as its library counts it: waiting, and being worked on right now.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Work {
    waiting: f64,
    running: f64,
}

/// What every includeActive test sets up, whatever the library: 5 jobs on `work` with 2
/// workers (3 waiting, 2 running) and, busy beside it, 2 jobs on `other` with 1 worker.
const BUSY_QUEUES: [(&str, Work); 2] = [
    (
        "work",
        Work {
            waiting: 3.0,
            running: 2.0,
        },
    ),
    (
        "other",
        Work {
            waiting: 1.0,
            running: 1.0,
        },
    ),
];

impl Work {
    fn total(self) -> f64 {
        self.waiting + self.running
    }
}

/// Real worker processes of a queue library; they and their children (RQ's work horses) are
/// killed when dropped.
struct Workers(Vec<ChildGuard>);

impl Workers {
    fn new() -> Workers {
        Workers(Vec::new())
    }

    /// Starts `command` (a worker that runs until killed), its output discarded.
    fn start(&mut self, mut command: Command) {
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}; {LIBRARIES_HINT}"));
        self.0.push(ChildGuard(child));
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &self.0 {
            worker.signal_tree("KILL");
        }
    }
}

/// Jobs are held in progress until this key exists (every worker script polls it).
const RELEASE: &str = "test:release";

/// How long real workers may take to start, take their jobs and (Sidekiq) publish them at
/// their next heartbeat, 5 s apart. Only a failing test waits this long.
const WORKERS_SETTLE_WITHIN: Duration = Duration::from_secs(40);

/// Polls until the library counts `expected` before and after the scaler answers for
/// `pairs`, and the scaler's value is their sum: both figures taken at the same moment, with
/// the jobs held in progress. Then checks that without `includeActive` only the waiting jobs
/// count.
async fn assert_counts_like_the_library(
    scaler: &Scaler,
    source: &str,
    pairs: &[(&str, &str)],
    expected: Work,
    mut library: impl AsyncFnMut() -> Work,
) {
    let mut with_active = pairs.to_vec();
    with_active.push(("includeActive", "true"));
    let _ = poll_until(
        format!("{source} {with_active:?} counts {expected:?} as the library does"),
        WORKERS_SETTLE_WITHIN,
        async || {
            let before = library().await;
            let value = trigger_value(scaler, source, &with_active).await;
            let after = library().await;
            (before, value, after)
        },
        |(before, value, after)| {
            *before == expected
                && *after == expected
                && value.as_ref().is_ok_and(|v| *v == expected.total())
        },
    )
    .await;
    let mut without = pairs.to_vec();
    without.push(("includeActive", "false"));
    for pairs in [pairs.to_vec(), without] {
        let value = trigger_value(scaler, source, &pairs).await.unwrap();
        assert_eq!(
            value, expected.waiting,
            "{pairs:?} counts waiting jobs only"
        );
    }
}

/// A scaler reading `redis` as a user that may only read and connect: a write among its
/// reads would fail the trigger (NOPERM).
async fn read_only_scaler(redis: &RedisServer) -> Scaler {
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "reader",
            "on",
            "nopass",
            "~*",
            "+@read",
            "+@connection",
        ])
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
    let url = format!("redis://reader@127.0.0.1:{}/0", redis.port);
    Scaler::start(&redis_config(&url)).await
}

/// The `waiting` and `running` (+ `reserved`) of a worker script's `count` line.
fn work(counted: &Value) -> Work {
    let number = |key: &str| counted[key].as_f64().unwrap_or(0.0);
    Work {
        waiting: number("waiting"),
        running: number("running") + number("reserved"),
    }
}

fn sidekiq_server(port: u16, namespace: &str, queue: &str, concurrency: u32) -> Command {
    let mut command = library_command("sidekiq");
    command
        .env("SIDEKIQ_PORT", port.to_string())
        .env("SIDEKIQ_NAMESPACE", namespace)
        .arg("-r")
        .arg(project().join("tests/compat/sidekiq_work.rb"))
        .args(["-q", queue, "-c", &concurrency.to_string()]);
    command
}

async fn sidekiq(port: u16, namespace: &str, args: &[&str]) -> Value {
    let mut command = library_command("ruby");
    command.env("SIDEKIQ_PORT", port.to_string());
    let mut all = vec![port.to_string(), namespace.to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    run_script(command, "sidekiq_work.rb", all).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidekiq_include_active_counts_the_work_set_with_and_without_a_namespace() {
    let redis = RedisServer::start();
    let scaler = read_only_scaler(&redis).await;
    let port = redis.port;
    let mut workers = Workers::new();
    // Queue `work` without a namespace, queue `other` busy beside it, and queue `work` again
    // behind namespace `app`: each is counted apart from the others.
    workers.start(sidekiq_server(port, "", "work", 2));
    workers.start(sidekiq_server(port, "", "other", 1));
    workers.start(sidekiq_server(port, "app", "work", 1));
    sidekiq(port, "", &["push", "work", "4", RELEASE]).await;
    sidekiq(port, "", &["push", "other", "2", RELEASE]).await;
    sidekiq(port, "app", &["push", "work", "3", RELEASE]).await;
    let cases = [
        (
            "",
            "work",
            Work {
                waiting: 2.0,
                running: 2.0,
            },
        ),
        (
            "",
            "other",
            Work {
                waiting: 1.0,
                running: 1.0,
            },
        ),
        (
            "app",
            "work",
            Work {
                waiting: 2.0,
                running: 1.0,
            },
        ),
    ];
    for (namespace, queue, expected) in cases {
        let mut pairs = vec![("metric", "sidekiq"), ("queue", queue)];
        if !namespace.is_empty() {
            pairs.push(("namespace", namespace));
        }
        assert_counts_like_the_library(&scaler, "redis-main", &pairs, expected, async || {
            work(&sidekiq(port, namespace, &["count", queue]).await)
        })
        .await;
    }
    let _: () = redis.connection().await.set(RELEASE, 1).await.unwrap();
}

async fn rq(port: u16, args: &[&str]) -> Value {
    let mut all = vec![port.to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    produce("python3", "rq_work.py", all).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rq_include_active_counts_started_jobs_behind_sentinel() {
    let sentinel = SentinelSetup::start().await;
    let scaler = Scaler::start(&sentinel.source_config("redis-ha", "mymaster")).await;
    let port = sentinel.master.port;
    let mut workers = Workers::new();
    for queue in ["work", "other"] {
        let mut worker = library_command("python3");
        worker.arg(project().join("tests/compat/rq_work.py")).args([
            &port.to_string(),
            "serve",
            queue,
        ]);
        workers.start(worker);
    }
    rq(port, &["push", "work", "3", RELEASE]).await;
    rq(port, &["push", "other", "2", RELEASE]).await;
    for (queue, expected) in [
        (
            "work",
            Work {
                waiting: 2.0,
                running: 1.0,
            },
        ),
        (
            "other",
            Work {
                waiting: 1.0,
                running: 1.0,
            },
        ),
    ] {
        let pairs = [("metric", "rq"), ("queue", queue)];
        assert_counts_like_the_library(&scaler, "redis-ha", &pairs, expected, async || {
            work(&rq(port, &["count", queue]).await)
        })
        .await;
    }
    let _: () = sentinel
        .master
        .connection()
        .await
        .set(RELEASE, 1)
        .await
        .unwrap();
}

const CELERY_PREFIX: &str = "tenant-a:";

fn celery_command(port: u16) -> Command {
    let mut command = library_command("python3");
    command
        .env("CELERY_PORT", port.to_string())
        .env("CELERY_PREFIX", CELERY_PREFIX);
    command
}

async fn celery(port: u16, args: &[&str]) -> Value {
    let args = args.iter().map(|a| a.to_string()).collect();
    run_script(celery_command(port), "celery_work.py", args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_include_active_counts_the_queue_s_unacked_messages() {
    let redis = RedisServer::start();
    let scaler = read_only_scaler(&redis).await;
    let port = redis.port;
    let mut workers = Workers::new();
    // acks_late and a prefetch multiplier of 1 (celery_work.py): each worker holds as many
    // messages unacknowledged as it runs tasks.
    for (queue, concurrency) in [("work", "2"), ("other", "1")] {
        let mut worker = celery_command(port);
        worker
            .arg(project().join("tests/compat/celery_work.py"))
            .args(["serve", queue, concurrency]);
        workers.start(worker);
    }
    // Celery's default beside them: a task is acknowledged when it starts, and the worker
    // then prefetches the next one.
    let mut early = celery_command(port);
    early
        .env("CELERY_ACKS_LATE", "0")
        .arg(project().join("tests/compat/celery_work.py"))
        .args(["serve", "early", "1"]);
    workers.start(early);
    celery(port, &["push", "work", "5", RELEASE]).await;
    celery(port, &["push", "other", "2", RELEASE]).await;
    celery(port, &["push", "early", "4", RELEASE]).await;
    for (queue, expected) in BUSY_QUEUES {
        let pairs = [
            ("metric", "celery"),
            ("queue", queue),
            ("keyPrefix", CELERY_PREFIX),
        ];
        assert_counts_like_the_library(&scaler, "redis-main", &pairs, expected, async || {
            work(&celery(port, &["count", queue]).await)
        })
        .await;
    }
    // Without acks_late the running task is nowhere in Redis: only the prefetched one counts.
    let pairs = [
        ("metric", "celery"),
        ("queue", "early"),
        ("keyPrefix", CELERY_PREFIX),
        ("includeActive", "true"),
    ];
    let library = serde_json::json!({"waiting": 2, "running": 1, "reserved": 1});
    let _ = poll_until(
        "without acks_late: the waiting tasks and the prefetched one",
        WORKERS_SETTLE_WITHIN,
        async || {
            let before = celery(port, &["count", "early"]).await;
            let value = trigger_value(&scaler, "redis-main", &pairs).await;
            let after = celery(port, &["count", "early"]).await;
            (before, value, after)
        },
        |(before, value, after)| {
            *before == library && *after == library && value.as_ref().is_ok_and(|v| *v == 3.0)
        },
    )
    .await;
    let _: () = redis.connection().await.set(RELEASE, 1).await.unwrap();
}

async fn bullmq(port: u16, queue: &str, args: &[&str]) -> Value {
    let mut all = vec![port.to_string(), queue.to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    produce("node", "bullmq_work.cjs", all).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bullmq_include_active_counts_the_jobs_workers_hold() {
    let redis = RedisServer::start();
    let scaler = read_only_scaler(&redis).await;
    let port = redis.port;
    let mut workers = Workers::new();
    for (queue, concurrency) in [("work", "2"), ("other", "1")] {
        let mut worker = library_command("node");
        worker
            .arg(project().join("tests/compat/bullmq_work.cjs"))
            .args([&port.to_string(), queue, "serve", concurrency]);
        workers.start(worker);
    }
    bullmq(port, "work", &["push", "5", RELEASE]).await;
    bullmq(port, "other", &["push", "2", RELEASE]).await;
    for (queue, expected) in BUSY_QUEUES {
        let pairs = [("metric", "bullmq"), ("queue", queue)];
        assert_counts_like_the_library(&scaler, "redis-main", &pairs, expected, async || {
            work(&bullmq(port, queue, &["count"]).await)
        })
        .await;
    }
    let _: () = redis.connection().await.set(RELEASE, 1).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_active_refuses_latency_and_values_other_than_true_or_false() {
    let redis = RedisServer::start();
    let scaler = Scaler::start(&redis_config(&redis.url())).await;
    for metric in ["sidekiq", "rq", "celery", "bullmq"] {
        let base = [("metric", metric), ("queue", "work")];
        let mut latency = base.to_vec();
        latency.extend([("includeActive", "true"), ("measure", "latency")]);
        let status = trigger_value(&scaler, "redis-main", &latency)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{metric}: {status:?}");
        for key in ["includeActive", "measure"] {
            assert!(status.message().contains(key), "{metric}: {status:?}");
        }
        let mut neither = base.to_vec();
        neither.push(("includeActive", "yes"));
        let status = trigger_value(&scaler, "redis-main", &neither)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{metric}: {status:?}");
        assert!(
            status.message().contains("includeActive") && status.message().contains("true"),
            "{metric}: {status:?}"
        );
    }
}

/// The stream `events` with `entries` entries and the consumer group `workers` reading from
/// its start, nothing delivered yet.
async fn stream_with_group(connection: &mut redis::aio::MultiplexedConnection, entries: usize) {
    for i in 0..entries {
        let _: String = connection.xadd("events", "*", &[("n", i)]).await.unwrap();
    }
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE", "events", "workers", "0"])
        .query_async(connection)
        .await
        .unwrap();
}
