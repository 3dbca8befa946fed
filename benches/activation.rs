//! Activation latency and the cost of a churned key, event-driven against polling.
//!
//! ```sh
//! cargo bench --bench activation              # 24 trials of each kind per mode
//! cargo bench --bench activation -- 40        # 40 trials
//! ```
//!
//! Starts a throwaway `redis-server` on a free loopback port (never 6379) and, for each mode,
//! a fresh in-process scaler with one `redis` source and the default `refresh_interval` (1 s):
//! `events` with an ACL user that may run `CLIENT TRACKING` (docs/SECURITY.md's data node line),
//! `polling` with the same line minus `+client|tracking` (what the scaler did before events).
//! Per mode it prints, as `RESULT` lines:
//! - StreamIsActive `true`: from an LPUSH onto the empty list, sent at a random moment within
//!   the refresh period, to the stream's `true` on a real gRPC stream over TCP;
//! - StreamIsActive `false`: from the RPOP that empties it to the stream's `false`;
//! - GetMetrics freshness: from an RPUSH to the first GetMetrics (asked back to back, every
//!   millisecond) that answers the new length;
//! - a churned key: a producer and a consumer change one list ~2,000 times a second for 5 s
//!   with a stream open on it; `LLEN` (reads) and `EXISTS` (re-arms) per second from the
//!   server's `INFO commandstats`.
//!
//! Each latency line gives p50, p99 (the nearest-rank percentile: with 24 trials, the
//! slowest), min and max.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hasher},
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use backlog_scaler::{
    config::Config,
    proto::{
        GetMetricsRequest, IsActiveResponse, ScaledObjectRef,
        external_scaler_client::ExternalScalerClient,
    },
    server,
};
use tonic::{Streaming, transport::Channel};

const PASSWORD: &str = "bench-pw";
const REFRESH: Duration = Duration::from_secs(1);

struct RedisProcess(Child);

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn start_redis(dir: &std::path::Path) -> (RedisProcess, u16) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install -y redis-server)");
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (RedisProcess(child), port)
}

fn random_below(limit: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_micros(random % limit.as_micros() as u64)
}

fn trigger(key: &str) -> ScaledObjectRef {
    ScaledObjectRef {
        name: "worker".into(),
        namespace: "default".into(),
        scaler_metadata: [
            ("source", "redis-main"),
            ("metric", "redis-list"),
            ("keys", key),
            ("target", "10"),
            ("activationTarget", "0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    }
}

async fn admin(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn command_calls(port: u16) -> HashMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut admin(port).await)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_string(), calls.parse().ok()?))
        })
        .collect()
}

async fn next_answer(stream: &mut Streaming<IsActiveResponse>) -> bool {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream answers")
        .expect("the stream is healthy")
        .expect("the stream is open")
        .result
}

/// Runs `cmd` at a random moment within the refresh period; the time until the stream says
/// `expected`.
async fn stream_trial(
    stream: &mut Streaming<IsActiveResponse>,
    redis: &mut redis::aio::MultiplexedConnection,
    cmd: &redis::Cmd,
    expected: bool,
) -> Duration {
    tokio::time::sleep(random_below(REFRESH)).await;
    let started = Instant::now();
    let _: redis::Value = cmd.query_async(redis).await.unwrap();
    assert_eq!(next_answer(stream).await, expected);
    started.elapsed()
}

/// An RPUSH at a random moment, then GetMetrics every millisecond until it shows the new length.
async fn freshness_trial(
    client: &mut ExternalScalerClient<Channel>,
    redis: &mut redis::aio::MultiplexedConnection,
    key: &str,
    length: f64,
) -> Duration {
    tokio::time::sleep(random_below(REFRESH)).await;
    let started = Instant::now();
    let _: () = redis::cmd("RPUSH")
        .arg(key)
        .arg("job")
        .query_async(redis)
        .await
        .unwrap();
    loop {
        let value = get_metrics(client, key).await;
        if value == length {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "GetMetrics stuck at {value}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn get_metrics(client: &mut ExternalScalerClient<Channel>, key: &str) -> f64 {
    let response = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(trigger(key)),
            metric_name: String::new(),
        })
        .await
        .expect("GetMetrics answers");
    response.into_inner().metric_values[0].metric_value_float
}

fn report(mode: &str, what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let rank = |p: f64| samples[((p * samples.len() as f64).ceil() as usize).max(1) - 1];
    println!(
        "RESULT {mode:<7} {what:<22} p50 {:>7.1} ms  p99 {:>7.1} ms  min {:>6.1}  max {:>7.1}  (n={})",
        ms(rank(0.50)),
        ms(rank(0.99)),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
        samples.len()
    );
}

/// A producer and a consumer on one list, ~2,000 changes a second for 5 s, with a stream open
/// on it: the reads and re-arms it cost.
async fn churn(mode: &str, client: &mut ExternalScalerClient<Channel>, port: u16) {
    let key = "bench:churn";
    let mut stream = client
        .stream_is_active(trigger(key))
        .await
        .unwrap()
        .into_inner();
    assert!(!next_answer(&mut stream).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut redis = admin(port).await;
    let before = command_calls(port).await;
    let started = Instant::now();
    let mut changes = 0u64;
    while started.elapsed() < Duration::from_secs(5) {
        let mut pipe = redis::pipe();
        for _ in 0..10 {
            pipe.cmd("LPUSH").arg(key).arg("job").ignore();
            pipe.cmd("RPOP").arg(key).ignore();
        }
        let _: () = pipe.query_async(&mut redis).await.unwrap();
        changes += 20;
        // Paced to 2,000 changes a second; a late producer catches up without sleeping.
        tokio::time::sleep_until((started + Duration::from_micros(changes * 500)).into()).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = command_calls(port).await;
    let rate = |command: &str| {
        (after.get(command).copied().unwrap_or(0) - before.get(command).copied().unwrap_or(0))
            as f64
            / seconds
    };
    println!(
        "RESULT {mode:<7} churned key            {:.0} changes/s: {:.1} LLEN/s (reads), {:.1} EXISTS/s (re-arms)",
        changes as f64 / seconds,
        rate("llen"),
        rate("exists")
    );
}

async fn run_mode(mode: &str, user: &str, port: u16, trials: usize) {
    let config = Config::from_toml(&format!(
        "[sources.redis-main]\ntype = \"redis\"\nurl = \"redis://{user}:{PASSWORD}@127.0.0.1:{port}/0\"\n"
    ))
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scaler = tokio::spawn(server::run(config, listener, async move {
        let _ = stopped.await;
    }));
    let mut client = ExternalScalerClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let mut redis = admin(port).await;
    let key = format!("bench:{mode}:stream");
    let mut stream = client
        .stream_is_active(trigger(&key))
        .await
        .unwrap()
        .into_inner();
    assert!(!next_answer(&mut stream).await);
    // The event connection arms the key once the first read indexed it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut lpush = redis::cmd("LPUSH");
    lpush.arg(&key).arg("job");
    let mut rpop = redis::cmd("RPOP");
    rpop.arg(&key);
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for _ in 0..trials {
        up.push(stream_trial(&mut stream, &mut redis, &lpush, true).await);
        down.push(stream_trial(&mut stream, &mut redis, &rpop, false).await);
    }
    report(mode, "StreamIsActive true", up);
    report(mode, "StreamIsActive false", down);
    let key = format!("bench:{mode}:metrics");
    assert_eq!(get_metrics(&mut client, &key).await, 0.0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut fresh = Vec::new();
    for length in 1..=trials {
        fresh.push(freshness_trial(&mut client, &mut redis, &key, length as f64).await);
    }
    report(mode, "GetMetrics freshness", fresh);
    churn(mode, &mut client, port).await;
    let _ = stop.send(());
    scaler.await.unwrap().unwrap();
}

#[tokio::main]
async fn main() {
    let trials: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(24);
    let dir = tempfile::tempdir().unwrap();
    let (_redis, port) = start_redis(dir.path());
    let mut redis = admin(port).await;
    let data_node = "~* +@read +info +role +cluster|info";
    for (user, extra) in [("scaler", " +client|tracking"), ("poller", "")] {
        let mut acl = redis::cmd("ACL");
        acl.arg("SETUSER")
            .arg(user)
            .arg("on")
            .arg(format!(">{PASSWORD}"));
        for word in format!("{data_node}{extra}").split_whitespace() {
            acl.arg(word);
        }
        let _: () = acl.query_async(&mut redis).await.unwrap();
    }
    println!(
        "redis-server on 127.0.0.1:{port}; refresh_interval 1 s; {trials} trials of each kind per mode"
    );
    run_mode("events", "scaler", port, trials).await;
    run_mode("polling", "poller", port, trials).await;
}
