//! `measure: latency` against a real `redis-server`, with jobs enqueued and taken by the real
//! queue libraries (Sidekiq on Ruby, RQ on Python, BullMQ on node) and stream entries added
//! with XADD: the scaler's value must match the library's own figure for how long its next
//! job has waited (`Sidekiq::Queue#latency`, `now - job.enqueued_at` of RQ's first job, `now -
//! min(timestamp)` of BullMQ's waiting and prioritized jobs, the entry id's time), drop when
//! a worker takes the oldest job, and read 0 when nothing waits.

use crate::common;

use std::{
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use common::{
    RedisServer, SETTLES_WITHIN, Scaler, poll_until, project, redis_config, trigger::trigger_value,
};
use redis::AsyncCommands;
use serde_json::Value;

/// Short, so that a value reflects a change quickly and tests stay fast.
const REFRESH: Duration = Duration::from_millis(200);

/// How far the scaler's value may be from the library's figure: a served value is up to one
/// refresh old, and a loaded machine delays reads and processes by up to ~1.5 s.
const TOLERANCE: f64 = 1.5 + REFRESH.as_millis() as f64 / 1000.0;

/// Seconds between the first and the second job: more than [`TOLERANCE`], so that measuring
/// the wrong job (the newest, or one the worker already took) cannot pass.
const GAP: f64 = 3.0;

fn config(redis: &RedisServer) -> String {
    format!(
        "[measurements]\nrefresh_interval = \"{}ms\"\n{}",
        REFRESH.as_millis(),
        redis_config(&redis.url())
    )
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Runs a script of `tests/compat/` with a queue library and parses the JSON line it prints.
/// A missing runtime or library fails with the command that installs it.
async fn library(program: &str, script: &str, args: &[&str]) -> Value {
    let deps = project().join(".test-deps");
    let (env, marker, install) = match program {
        "ruby" => (
            None,
            None,
            "run scripts/install-test-deps.sh as root (apt-get install -y \
             --no-install-recommends ruby-sidekiq)",
        ),
        "node" => (
            Some(("NODE_PATH", deps.join("node/node_modules"))),
            Some(deps.join("node/node_modules/bullmq")),
            "run scripts/install-test-deps.sh (installs bullmq into .test-deps/node)",
        ),
        _ => (
            Some(("PYTHONPATH", deps.join("python"))),
            Some(deps.join("python/rq")),
            "run scripts/install-test-deps.sh (installs rq into .test-deps/python)",
        ),
    };
    if let Some(marker) = &marker {
        assert!(
            marker.exists(),
            "{} is missing; {install}",
            marker.display()
        );
    }
    let mut command = Command::new(program);
    command
        .arg(project().join("tests/compat").join(script))
        .args(args);
    if let Some((key, value)) = env {
        command.env(key, value);
    }
    let program = program.to_string();
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}; {install}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} {args:?} failed: {stderr}\n(if a library is missing: {install})"
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{script} printed {stdout:?}: {e}"))
}

/// The scaler's value for a latency trigger, and when it was answered (Unix seconds).
async fn scaler_latency(scaler: &Scaler, pairs: &[(&str, &str)]) -> (f64, f64) {
    let mut all = vec![("measure", "latency")];
    all.extend_from_slice(pairs);
    let value = trigger_value(scaler, "redis-main", &all)
        .await
        .unwrap_or_else(|status| panic!("{all:?}: {status:?}"));
    (value, unix_now())
}

/// Compares the scaler's latency with a library's `figure` (`{"latency": s, "at": unix s}`):
/// the library's latency plus the time passed since it measured. Returns the scaler's value
/// and the enqueue time it implies (Unix seconds).
async fn assert_matches(scaler: &Scaler, pairs: &[(&str, &str)], figure: &Value) -> (f64, f64) {
    let latency = figure["latency"].as_f64().unwrap();
    let at = figure["at"].as_f64().unwrap();
    let (value, now) = scaler_latency(scaler, pairs).await;
    let expected = latency + (now - at);
    let difference = value - expected;
    eprintln!("{pairs:?}: scaler {value:.3} s, library {expected:.3} s, Δ {difference:+.3} s");
    assert!(
        difference.abs() <= TOLERANCE,
        "{pairs:?}: the scaler says {value:.3} s, the library {latency:.3} s {:.3} s ago \
         ({figure})",
        now - at
    );
    (value, now - value)
}

/// [`assert_matches`] once the scaler has followed a change, polled: after every change
/// below, the value before it is more than [`TOLERANCE`] from the figure after it (jobs are
/// [`GAP`] apart), so it cannot pass for the new one.
async fn assert_settles_to(scaler: &Scaler, pairs: &[(&str, &str)], figure: &Value) -> (f64, f64) {
    let latency = figure["latency"].as_f64().unwrap();
    let at = figure["at"].as_f64().unwrap();
    poll_until(
        format!("{pairs:?} follows the library's figure {figure}"),
        SETTLES_WITHIN,
        async || scaler_latency(scaler, pairs).await,
        |(value, now)| (value - (latency + (now - at))).abs() <= TOLERANCE,
    )
    .await;
    assert_matches(scaler, pairs, figure).await
}

/// Waits until the scaler has sent `command` (one its measurement sends once per refresh)
/// twice more: a refresh that began after a change has then read it and stored its value
/// (refreshes of a source run one after another). For a change that must leave the value
/// as it was, where polling for a new value cannot tell.
async fn read_again(redis: &RedisServer, command: &str) {
    let calls = async || {
        redis
            .command_calls()
            .await
            .get(command)
            .copied()
            .unwrap_or(0)
    };
    let before = calls().await;
    poll_until(
        format!("the scaler sends {command} twice more"),
        SETTLES_WITHIN,
        calls,
        |after| *after >= before + 2,
    )
    .await;
}

/// The oldest job was taken: the oldest waiting job now was enqueued about GAP later than the
/// one before (`since_*` as [`assert_matches`] returns them).
fn assert_dropped(since_before: f64, since_after: f64) {
    assert!(
        since_after - since_before > GAP / 2.0,
        "the oldest job was enqueued at {since_before:.3}, the oldest left at \
         {since_after:.3}: the latency must drop by about {GAP} s"
    );
}

/// Nothing waits: the library says 0 and so must the scaler, exactly, once it has followed
/// the change (polled: before it, a job waited, which is never exactly 0).
async fn assert_nothing_waits(scaler: &Scaler, pairs: &[(&str, &str)], figure: &Value) {
    assert_eq!(figure["latency"].as_f64(), Some(0.0), "{figure}");
    poll_until(
        format!("{pairs:?}: nothing waits"),
        SETTLES_WITHIN,
        async || scaler_latency(scaler, pairs).await.0,
        |value| *value == 0.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidekiq_latency_matches_sidekiq_queue_latency() {
    let redis = RedisServer::start();
    let scaler = Scaler::start(&config(&redis)).await;
    let port = redis.port.to_string();
    let trigger = [("metric", "sidekiq"), ("queue", "default")];
    let sidekiq = |action: &'static str, gap: Option<f64>| {
        let port = port.clone();
        async move {
            let gap = gap.map(|g| g.to_string()).unwrap_or_default();
            library(
                "ruby",
                "sidekiq_latency.rb",
                &[&port, "default", action, &gap],
            )
            .await
        }
    };

    // An empty (missing) queue waits for nothing.
    assert_nothing_waits(&scaler, &trigger, &sidekiq("latency", None).await).await;

    // Two jobs GAP apart: the latency is the first one's.
    let pushed = sidekiq("push", Some(GAP)).await;
    assert_eq!(pushed["size"], 2, "{pushed}");
    let (_, before) = assert_settles_to(&scaler, &trigger, &pushed).await;

    // A Sidekiq fetcher takes the oldest; the latency drops to the second job's.
    let taken = sidekiq("take", None).await;
    assert_eq!(taken["taken"], serde_json::json!([1]), "{taken}");
    let (_, after) = assert_settles_to(&scaler, &trigger, &taken).await;
    assert_dropped(before, after);

    let emptied = sidekiq("take", None).await;
    assert_eq!(emptied["taken"], serde_json::json!([2]), "{emptied}");
    assert_nothing_waits(&scaler, &trigger, &emptied).await;

    // Sidekiq 8 writes enqueued_at as integer milliseconds (Debian ships Sidekiq 6): a job in
    // that shape, as Sidekiq 8's client pushes it, 5 s old.
    let mut connection = redis.connection().await;
    let enqueued_ms = (unix_now() * 1000.0) as i64 - 5000;
    let job = format!(
        r#"{{"class":"LatencyJob","queue":"default","args":[3],"jid":"a1","created_at":{enqueued_ms},"enqueued_at":{enqueued_ms}}}"#
    );
    let _: () = connection.lpush("queue:default", job).await.unwrap();
    let figure = serde_json::json!({"latency": 5.0, "at": enqueued_ms as f64 / 1000.0 + 5.0});
    assert_settles_to(&scaler, &trigger, &figure).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rq_latency_matches_the_first_jobs_enqueued_at() {
    let redis = RedisServer::start();
    let scaler = Scaler::start(&config(&redis)).await;
    let port = redis.port.to_string();
    let trigger = [("metric", "rq"), ("queue", "high")];
    let rq = |action: &'static str, gap: Option<f64>| {
        let port = port.clone();
        async move {
            let mut args = vec![port, "high".to_string(), action.to_string()];
            args.extend(gap.map(|g| g.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            library("python3", "rq_latency.py", &args).await
        }
    };

    assert_nothing_waits(&scaler, &trigger, &rq("latency", None).await).await;

    let enqueued = rq("enqueue", Some(GAP)).await;
    assert_eq!(enqueued["count"], 2, "{enqueued}");
    assert_settles_to(&scaler, &trigger, &enqueued).await;

    // A job whose hash is gone (enqueued with a ttl that ran out) is skipped, as RQ's dequeue
    // skips it: job-a stays the one that counts.
    let mut connection = redis.connection().await;
    let _: () = connection
        .lpush("rq:queue:high", "expired-job")
        .await
        .unwrap();
    read_again(&redis, "lrange").await;
    let (_, before) = assert_matches(&scaler, &trigger, &rq("latency", None).await).await;
    let _: () = connection
        .lrem("rq:queue:high", 1, "expired-job")
        .await
        .unwrap();

    // An RQ worker dequeues job-a; job-b is next.
    let taken = rq("take", None).await;
    assert_eq!(taken["taken"], "job-a", "{taken}");
    let (_, after) = assert_settles_to(&scaler, &trigger, &taken).await;
    assert_dropped(before, after);

    let emptied = rq("take", None).await;
    assert_eq!(emptied["taken"], "job-b", "{emptied}");
    assert_nothing_waits(&scaler, &trigger, &emptied).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bullmq_latency_matches_the_oldest_waiting_job() {
    let redis = RedisServer::start();
    let scaler = Scaler::start(&config(&redis)).await;
    let port = redis.port.to_string();
    let bullmq = |queue: &'static str, action: &'static str, arg: Option<u64>| {
        let port = port.clone();
        async move {
            let arg = arg.map(|a| a.to_string()).unwrap_or_default();
            library(
                "node",
                "bullmq_latency.cjs",
                &[&port, queue, "{jobs}", action, &arg],
            )
            .await
        }
    };
    let trigger =
        |queue: &'static str| [("metric", "bullmq"), ("queue", queue), ("prefix", "{jobs}")];
    let mail = trigger("mail");

    assert_nothing_waits(&scaler, &mail, &bullmq("mail", "latency", None).await).await;

    // On two queues at once: a job in `wait`, then GAP later a prioritized one.
    let gap_ms = (GAP * 1000.0) as u64;
    let (added, _) = tokio::join!(
        bullmq("mail", "add-two", Some(gap_ms)),
        bullmq("reports", "add-two", Some(gap_ms)),
    );
    assert_eq!(added["waiting"], 2, "{added}");
    let (_, before) = assert_settles_to(&scaler, &mail, &added).await;

    // A worker takes from `wait` first; the prioritized job is left, GAP younger.
    let taken = bullmq("mail", "take", None).await;
    assert_eq!(taken["taken"], "first", "{taken}");
    let (_, after) = assert_settles_to(&scaler, &mail, &taken).await;
    assert_dropped(before, after);

    // A delayed job, which nothing promotes (no worker runs), waits from its due time.
    let delay_ms = 1500;
    let delayed = bullmq("later", "delayed", Some(delay_ms)).await;
    let job = &delayed["delayed"][0];
    assert_eq!(job["delay"].as_f64(), Some(delay_ms as f64), "{delayed}");
    let later = trigger("later");
    assert_eq!(scaler_latency(&scaler, &later).await.0, 0.0, "not due yet");

    // GAP later, the prioritized job has waited long enough to tell it from nothing...
    tokio::time::sleep(Duration::from_secs_f64(GAP)).await;
    let left = bullmq("mail", "latency", None).await;
    assert!(left["latency"].as_f64().unwrap() > GAP, "{left}");
    assert_matches(&scaler, &mail, &left).await;
    // ...and the delayed job has waited GAP − its delay since it fell due, not GAP.
    let due = (job["timestamp"].as_f64().unwrap() + job["delay"].as_f64().unwrap()) / 1000.0;
    let now = unix_now();
    let since_due = serde_json::json!({"latency": now - due, "at": now});
    let (value, _) = assert_matches(&scaler, &later, &since_due).await;
    let since_added = now - job["timestamp"].as_f64().unwrap() / 1000.0;
    assert!(
        value < since_added - delay_ms as f64 / 2000.0,
        "{value} s, but {since_added} s since it was added: counted from the due time"
    );

    let emptied = bullmq("mail", "take", None).await;
    assert_eq!(emptied["taken"], "second", "{emptied}");
    assert_nothing_waits(&scaler, &mail, &emptied).await;

    // A paused queue (its `wait` jobs move to `paused`) waits for no worker: 0 unless
    // countWhenPaused, as the backlog counts it; then its oldest job, now in `paused`.
    let paused = bullmq("reports", "pause", None).await;
    assert_eq!(paused["waiting"], 2, "{paused}");
    assert!(paused["latency"].as_f64().unwrap() > GAP, "{paused}");
    // Nothing asked for `reports` before: its first answer is read now, no refresh to wait for.
    let reports = trigger("reports");
    assert_eq!(scaler_latency(&scaler, &reports).await.0, 0.0);
    let mut counted = reports.to_vec();
    counted.push(("countWhenPaused", "true"));
    assert_matches(&scaler, &counted, &paused).await;
}

/// The Unix time in an entry id (`1700000000000-0`), in seconds.
fn entry_time(id: &str) -> f64 {
    id.split_once('-').unwrap().0.parse::<f64>().unwrap() / 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_latency_is_the_oldest_entry_the_group_has_not_finished() {
    let redis = RedisServer::start();
    let scaler = Scaler::start(&config(&redis)).await;
    let mut connection = redis.connection().await;
    let trigger = [
        ("metric", "redis-stream"),
        ("stream", "events"),
        ("group", "workers"),
    ];
    // No stream yet.
    assert_eq!(scaler_latency(&scaler, &trigger).await.0, 0.0);

    let first: String = connection.xadd("events", "*", &[("n", 1)]).await.unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE", "events", "workers", "0"])
        .query_async(&mut connection)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs_f64(GAP)).await;
    let second: String = connection.xadd("events", "*", &[("n", 2)]).await.unwrap();
    let figure = |id: &str| {
        let now = unix_now();
        serde_json::json!({"latency": now - entry_time(id), "at": now})
    };
    let read_one = |connection: &mut redis::aio::MultiplexedConnection| {
        let mut connection = connection.clone();
        async move {
            let _: redis::streams::StreamReadReply = connection
                .xread_options(
                    &["events"],
                    &[">"],
                    &redis::streams::StreamReadOptions::default()
                        .group("workers", "w1")
                        .count(1),
                )
                .await
                .unwrap();
        }
    };

    // Nothing delivered: the first entry after the group's last-delivered-id.
    let (_, undelivered) = assert_settles_to(&scaler, &trigger, &figure(&first)).await;
    // Delivered, not acknowledged: pending, still unfinished.
    read_one(&mut connection).await;
    read_again(&redis, "xpending").await;
    assert_matches(&scaler, &trigger, &figure(&first)).await;
    // Acknowledged: the second entry (not delivered yet) is the oldest unfinished one.
    let _: i64 = connection
        .xack("events", "workers", &[&first])
        .await
        .unwrap();
    let (_, after) = assert_settles_to(&scaler, &trigger, &figure(&second)).await;
    assert_dropped(undelivered, after);
    read_one(&mut connection).await;
    let _: i64 = connection
        .xack("events", "workers", &[&second])
        .await
        .unwrap();
    poll_until(
        "every entry finished: nothing waits",
        SETTLES_WITHIN,
        async || scaler_latency(&scaler, &trigger).await.0,
        |value| *value == 0.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_reads_are_shared_across_triggers_and_refreshes() {
    let redis = RedisServer::start();
    let scaler = Scaler::start(&config(&redis)).await;
    let mut connection = redis.connection().await;
    for id in ["a", "b"] {
        let _: () = connection.rpush("rq:queue:high", id).await.unwrap();
        let _: () = connection
            .hset(
                format!("rq:job:{id}"),
                "enqueued_at",
                "2024-01-01T00:00:00.000000Z",
            )
            .await
            .unwrap();
    }
    // Three latency triggers on one queue (two spell the same measurement) and a backlog.
    // Job `a` has waited since 2024-01-01T00:00:00Z; the Sidekiq queue is empty.
    let since_2024 = unix_now() - 1_704_067_200.0;
    for (pairs, expected) in [
        (vec![("metric", "rq"), ("queue", "high")], since_2024),
        (
            vec![
                ("metric", "rq"),
                ("queue", "high"),
                ("activationTarget", "5"),
            ],
            since_2024,
        ),
        (vec![("metric", "sidekiq"), ("queue", "default")], 0.0),
    ] {
        let value = scaler_latency(&scaler, &pairs).await.0;
        assert!(
            (value - expected).abs() <= TOLERANCE,
            "{pairs:?}: {value} s, expected {expected} s"
        );
    }
    trigger_value(
        &scaler,
        "redis-main",
        &[("metric", "rq"), ("queue", "high")],
    )
    .await
    .unwrap();
    read_again(&redis, "lrange").await;
    let before = redis.command_calls().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = redis.command_calls().await;
    let calls =
        |name: &str| after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0);
    // ~10 refreshes in 2 s; every one reads the queue head once (LRANGE, shared by both rq
    // triggers), both job hashes once (HGET), the Sidekiq head once (LINDEX), the backlog
    // once (LLEN).
    let refreshes = 2.0 / REFRESH.as_secs_f64();
    let (lrange, hget, lindex, llen) = (
        calls("lrange") as f64,
        calls("hget") as f64,
        calls("lindex") as f64,
        calls("llen") as f64,
    );
    assert!(
        lrange >= refreshes / 2.0 && lrange <= refreshes + 2.0,
        "{lrange} LRANGE in ~{refreshes} refreshes"
    );
    // The counters are read between two refreshes or in the middle of one: ±1 refresh.
    assert!(
        (hget - 2.0 * lrange).abs() <= 2.0,
        "{hget} HGET, {lrange} LRANGE: one HGET per job id per refresh"
    );
    assert!(
        (lindex - lrange).abs() <= 1.0,
        "{lindex} LINDEX, {lrange} LRANGE"
    );
    assert!((llen - lrange).abs() <= 1.0, "{llen} LLEN, {lrange} LRANGE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_follow_up_reads_find_their_keys_across_cluster_nodes() {
    // RQ's job hashes, the queue list and the stream land on different slots and nodes: the
    // second round of reads goes to other nodes than the first.
    let cluster = common::redis_topology::RedisCluster::start().await;
    let mut connection = cluster.connection().await;
    let now = SystemTime::now();
    let ago = |seconds: u64| now - Duration::from_secs(seconds);
    let ms = |time: SystemTime| time.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;

    let job = format!(
        r#"{{"class":"W","args":[],"enqueued_at":{}}}"#,
        ago(30).duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
    );
    let _: () = connection.lpush("queue:default", job).await.unwrap();
    // An expired job first (no hash), then one 20 s old.
    let _: () = connection
        .rpush("rq:queue:high", &["gone", "a"])
        .await
        .unwrap();
    let enqueued_at = humantime::format_rfc3339_micros(ago(20)).to_string();
    let _: () = connection
        .hset("rq:job:a", "enqueued_at", enqueued_at)
        .await
        .unwrap();
    // A BullMQ job waiting 40 s, and a delayed one due 10 s ago.
    let _: () = connection.lpush("{q}:mail:wait", "1").await.unwrap();
    let _: () = connection
        .hset("{q}:mail:1", "timestamp", ms(ago(40)))
        .await
        .unwrap();
    let _: () = connection
        .zadd("{q}:mail:delayed", "d", ms(ago(10)) * 0x1000)
        .await
        .unwrap();
    // A stream entry added 60 s ago that the group has not been handed yet.
    let _: String = connection
        .xadd("events", format!("{}-0", ms(ago(60))), &[("n", 1)])
        .await
        .unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE", "events", "workers", "0"])
        .query_async(&mut connection)
        .await
        .unwrap();

    let config = format!(
        "[measurements]\nrefresh_interval = \"{}ms\"\n{}",
        REFRESH.as_millis(),
        cluster.source_config("redis-cluster")
    );
    let scaler = Scaler::start(&config).await;
    let triggers: [(&[(&str, &str)], f64); 4] = [
        (&[("metric", "sidekiq"), ("queue", "default")], 30.0),
        (&[("metric", "rq"), ("queue", "high")], 20.0),
        (
            &[("metric", "bullmq"), ("queue", "mail"), ("prefix", "{q}")],
            40.0,
        ),
        (
            &[
                ("metric", "redis-stream"),
                ("stream", "events"),
                ("group", "workers"),
            ],
            60.0,
        ),
    ];
    for (pairs, age) in triggers {
        let mut all = vec![("measure", "latency")];
        all.extend_from_slice(pairs);
        let value = trigger_value(&scaler, "redis-cluster", &all)
            .await
            .unwrap_or_else(|status| panic!("{all:?}: {status:?}"));
        let expected = age + now.elapsed().unwrap().as_secs_f64();
        assert!(
            (value - expected).abs() <= TOLERANCE,
            "{all:?}: {value} s on the cluster, {expected} s expected"
        );
    }
}
