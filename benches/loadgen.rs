//! A gRPC load generator for backlog-scaler, in the spirit of ghz: C connections × N
//! concurrent callers over M distinct ScaledObjects, for a fixed duration; prints requests/s
//! and the latency distribution.
//!
//! ```sh
//! cargo bench --bench loadgen -- --target 127.0.0.1:9090 --call get-metrics \
//!     --connections 4 --concurrency 64 --scaled-objects 1000 --queues 10 --duration 10
//! ```
//!
//! Each ScaledObject `i` is a `redis-list` trigger on queue `bench:queue:{i % queues}` of
//! source `--source` (or `pg-activity` on application `bench-{i % queues}` with
//! `--metric pg-activity`), so M ScaledObjects share `--queues` distinct measurements — as
//! many ScaledObjects watching few queues do. `--cold` gives every request a queue never asked
//! for before, to measure the cold path. `--soak` holds a steady rate with ScaledObject churn
//! and reports errors and the scaler's RSS over time (`soak` module, `benches/soak.sh`).
//!
//! Other modes (see `--help`):
//! - `--pg-queues P`: after the `--queues` Redis measurements come P `pg-activity` ones on
//!   `--pg-source`, so M ScaledObjects spread over both backends (a large cluster).
//! - `--storm N --window-ms W`: open loop, N never-seen measurements asked for at an even
//!   pace over W ms (W = 0: all at once), as a KEDA restart does; prints when the last
//!   answer came relative to the last request.
//! - `--pace-ms T`: each caller waits T ms between requests (isolated cold reads).
//! - `--watch-key K --targets a,b,c`: freshness against several replicas at once; prints how
//!   far apart in time the replicas first served the new value.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use backlog_scaler::proto::{
    GetMetricsRequest, ScaledObjectRef, external_scaler_client::ExternalScalerClient,
};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[path = "loadgen/soak.rs"]
mod soak;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Call {
    GetMetrics,
    IsActive,
    GetMetricSpec,
    Health,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Metric {
    RedisList,
    PgActivity,
}

#[derive(Parser, Debug)]
struct Args {
    /// host:port of the scaler.
    #[arg(long, default_value = "127.0.0.1:9090")]
    target: String,
    #[arg(long, value_enum, default_value = "get-metrics")]
    call: Call,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Concurrent callers, spread over the connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Distinct ScaledObjects.
    #[arg(long, default_value_t = 1000)]
    scaled_objects: usize,
    /// Distinct queues (measurements) the ScaledObjects watch.
    #[arg(long, default_value_t = 10)]
    queues: usize,
    #[arg(long, default_value = "redis-main")]
    source: String,
    #[arg(long, value_enum, default_value = "redis-list")]
    metric: Metric,
    /// Seconds of measured load (after a one-second warm-up).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Every request asks for a queue never asked for before.
    #[arg(long)]
    cold: bool,
    /// Stop after this many requests (with --cold, the number of cold requests).
    #[arg(long)]
    requests: Option<u64>,
    /// Skip the warm-up second.
    #[arg(long)]
    no_warmup: bool,
    /// Freshness mode: push `--jump` items onto this Redis list and time until the scaler
    /// reports them (repeated `--trials` times).
    #[arg(long)]
    watch_key: Option<String>,
    /// The Redis the scaler's source reads (freshness mode).
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    redis_url: String,
    #[arg(long, default_value_t = 1000)]
    jump: usize,
    #[arg(long, default_value_t = 5)]
    trials: usize,
    #[command(flatten)]
    soak: soak::SoakArgs,
    /// After the `--queues` Redis measurements, this many `pg-activity` ones (on `--pg-source`).
    #[arg(long, default_value_t = 0)]
    pg_queues: usize,
    #[arg(long, default_value = "pg-main")]
    pg_source: String,
    /// Restart storm: this many never-seen measurements, one request each, sent open-loop at
    /// an even pace over `--window-ms` (implies never-seen measurements).
    #[arg(long)]
    storm: Option<usize>,
    #[arg(long, default_value_t = 1000)]
    window_ms: u64,
    /// Each caller waits this long between two requests.
    #[arg(long, default_value_t = 0)]
    pace_ms: u64,
    /// Freshness mode against several scalers (comma-separated host:port); default `--target`.
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    /// cargo bench passes --bench; accept and ignore it.
    #[arg(long, hide = true)]
    bench: bool,
}

fn scaled_object(args: &Args, index: usize, run: u128) -> ScaledObjectRef {
    let cold = args.cold || args.storm.is_some();
    let queue = if cold {
        index
    } else {
        index % (args.queues + args.pg_queues).max(1)
    };
    // Warm mixed load: the measurements past `--queues` are PostgreSQL ones.
    let (metric, source, queue) = if !cold && queue >= args.queues {
        (Metric::PgActivity, &args.pg_source, queue - args.queues)
    } else {
        (args.metric, &args.source, queue)
    };
    let mut metadata = vec![
        ("source".to_string(), source.clone()),
        ("target".to_string(), "10".to_string()),
        ("scalerAddress".to_string(), args.target.clone()),
    ];
    match metric {
        Metric::RedisList => {
            metadata.push(("metric".into(), "redis-list".into()));
            let key = if cold {
                format!("bench:cold:{run}:{queue}")
            } else {
                format!("bench:queue:{queue}")
            };
            metadata.push(("keys".into(), key));
        }
        Metric::PgActivity => {
            metadata.push(("metric".into(), "pg-activity".into()));
            metadata.push(("measure".into(), "active".into()));
            let application = if cold {
                format!("bench-cold-{run}-{queue}")
            } else {
                format!("bench-{queue}")
            };
            metadata.push(("applicationName".into(), application));
        }
    }
    ScaledObjectRef {
        name: format!("worker-{index}"),
        namespace: "bench".into(),
        scaler_metadata: metadata.into_iter().collect(),
    }
}

/// Times how long a jump of the backlog takes to show in GetMetrics, on every scaler of
/// `channels` (several replicas: also how far apart in time they first served it).
async fn freshness(args: &Args, key: &str, channels: Vec<Channel>) {
    let so = ScaledObjectRef {
        name: "freshness".into(),
        namespace: "bench".into(),
        scaler_metadata: [
            ("source", args.source.as_str()),
            ("metric", "redis-list"),
            ("keys", key),
            ("target", "10"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    };
    let read = move |channel: Channel| {
        let request = GetMetricsRequest {
            scaled_object_ref: Some(so.clone()),
            metric_name: String::new(),
        };
        let mut scaler = ExternalScalerClient::new(channel);
        async move {
            scaler
                .get_metrics(request)
                .await
                .expect("GetMetrics")
                .into_inner()
                .metric_values[0]
                .metric_value_float
        }
    };
    let mut redis = redis::Client::open(args.redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("connecting to Redis");
    for channel in &channels {
        read(channel.clone()).await;
    }
    let mut samples = Vec::new();
    let mut spreads = Vec::new();
    for trial in 0..args.trials {
        // A random phase against the refresh ticker.
        tokio::time::sleep(Duration::from_millis(1000 + (trial as u64 * 373) % 1000)).await;
        let mut before = Vec::new();
        for channel in &channels {
            before.push(read(channel.clone()).await);
        }
        let items: Vec<usize> = (0..args.jump).collect();
        let started = Instant::now();
        let _: () = redis::AsyncCommands::rpush(&mut redis, key, items)
            .await
            .unwrap();
        let seen =
            futures::future::join_all(channels.iter().zip(before).map(|(channel, before)| {
                let read = read.clone();
                let channel = channel.clone();
                async move {
                    while read(channel.clone()).await < before + args.jump as f64 {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    started.elapsed()
                }
            }))
            .await;
        let (first, last) = (*seen.iter().min().unwrap(), *seen.iter().max().unwrap());
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        if channels.len() > 1 {
            let each: Vec<String> = seen.iter().map(|d| format!("{:.0}", ms(*d))).collect();
            println!(
                "  trial {trial}: {:.0} ms (replicas: {} ms; spread {:.0} ms)",
                ms(last),
                each.join(" / "),
                ms(last - first)
            );
        } else {
            println!("  trial {trial}: {:.0} ms", ms(last));
        }
        samples.push(last);
        spreads.push(last - first);
    }
    samples.sort();
    spreads.sort();
    let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64;
    println!(
        "Freshness: median {:.0} ms, mean {:.0} ms, max {:.0} ms over {} trials",
        samples[samples.len() / 2].as_secs_f64() * 1000.0,
        mean * 1000.0,
        samples.last().unwrap().as_secs_f64() * 1000.0,
        samples.len()
    );
    if channels.len() > 1 {
        println!(
            "Agreement: {} replicas first served the new value within median {:.0} ms, max {:.0} ms of each other",
            channels.len(),
            spreads[spreads.len() / 2].as_secs_f64() * 1000.0,
            spreads.last().unwrap().as_secs_f64() * 1000.0
        );
    }
}

/// Restart storm: `n` never-seen measurements, one request each, sent open-loop at an even
/// pace over `window`, round-robin over the connections.
async fn storm(args: Arc<Args>, n: usize, channels: Vec<Channel>, run: u128) {
    let window = Duration::from_millis(args.window_ms);
    let origin = Instant::now();
    let requests: Vec<_> = (0..n)
        .map(|i| {
            let at = origin + window.mul_f64(i as f64 / n.max(1) as f64);
            let mut scaler = ExternalScalerClient::new(channels[i % channels.len()].clone());
            let so = scaled_object(&args, i, run);
            tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                let sent = Instant::now();
                let code = scaler
                    .get_metrics(GetMetricsRequest {
                        scaled_object_ref: Some(so),
                        metric_name: String::new(),
                    })
                    .await
                    .map_or_else(|s| format!("{:?}", s.code()), |_| "OK".to_string());
                (sent, Instant::now(), code)
            })
        })
        .collect();
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    let (mut last_sent, mut last_answer) = (origin, origin);
    for request in requests {
        let (sent, answered, code) = request.await.unwrap();
        latencies
            .record((answered - sent).as_micros().max(1) as u64)
            .unwrap();
        *codes.entry(code).or_default() += 1;
        last_sent = last_sent.max(sent);
        last_answer = last_answer.max(answered);
    }
    let s = |t: Instant| (t - origin).as_secs_f64();
    println!("Storm:");
    println!(
        "  {n} never-seen {:?} measurements over {} ms, {} connections",
        args.metric,
        args.window_ms,
        channels.len()
    );
    println!("  Last request sent:  {:.3} s", s(last_sent));
    println!("  Last answer:        {:.3} s", s(last_answer));
    println!(
        "  Last answer after the last request: {:.3} s",
        s(last_answer) - s(last_sent)
    );
    println!("Latency distribution:");
    for (label, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)] {
        println!(
            "  {label:<6} {:.3} ms",
            latencies.value_at_quantile(q) as f64 / 1000.0
        );
    }
    println!("  max    {:.3} ms", latencies.max() as f64 / 1000.0);
    println!("Status code distribution:");
    for (code, n) in codes {
        println!("  [{code}] {n} responses");
    }
}

#[tokio::main]
async fn main() {
    let args = Arc::new(Args::parse());
    let endpoint = Endpoint::from_shared(format!("http://{}", args.target)).expect("target");
    let mut channels: Vec<Channel> = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(endpoint.connect().await.expect("connecting to the scaler"));
    }
    if let Some(key) = &args.watch_key {
        let mut replicas = vec![channels[0].clone()];
        if !args.targets.is_empty() {
            replicas.clear();
            for target in &args.targets {
                let endpoint = Endpoint::from_shared(format!("http://{target}")).expect("target");
                replicas.push(endpoint.connect().await.expect("connecting to a scaler"));
            }
        }
        freshness(&args, key, replicas).await;
        return;
    }
    if args.soak.soak {
        let passed = soak::run(args.clone(), channels).await;
        std::process::exit(if passed { 0 } else { 1 });
    }
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    if let Some(n) = args.storm {
        storm(args.clone(), n, channels, run).await;
        return;
    }
    let sent = Arc::new(AtomicU64::new(0));
    let cold_index = Arc::new(AtomicU64::new(0));

    let phase = |seconds: u64, record: bool| {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let workers: Vec<_> = (0..args.concurrency.max(1))
            .map(|worker| {
                let args = args.clone();
                let channel = channels[worker % channels.len()].clone();
                let sent = sent.clone();
                let cold_index = cold_index.clone();
                tokio::spawn(async move {
                    let mut scaler = ExternalScalerClient::new(channel.clone());
                    let mut health = HealthClient::new(channel);
                    let mut latencies =
                        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
                    let mut k = 0usize;
                    while Instant::now() < deadline {
                        if let Some(limit) = args.requests
                            && record
                            && sent.fetch_add(1, Ordering::Relaxed) >= limit
                        {
                            break;
                        }
                        let index = if args.cold {
                            cold_index.fetch_add(1, Ordering::Relaxed) as usize
                        } else {
                            (worker + k * args.concurrency) % args.scaled_objects.max(1)
                        };
                        k += 1;
                        if args.pace_ms > 0 {
                            tokio::time::sleep(Duration::from_millis(args.pace_ms)).await;
                        }
                        let so = scaled_object(&args, index, run);
                        let started = Instant::now();
                        let code = match args.call {
                            Call::GetMetrics => scaler
                                .get_metrics(GetMetricsRequest {
                                    scaled_object_ref: Some(so),
                                    metric_name: String::new(),
                                })
                                .await
                                .map(drop),
                            Call::IsActive => scaler.is_active(so).await.map(drop),
                            Call::GetMetricSpec => scaler.get_metric_spec(so).await.map(drop),
                            Call::Health => health
                                .check(HealthCheckRequest {
                                    service: String::new(),
                                })
                                .await
                                .map(drop),
                        }
                        .map_or_else(|s| format!("{:?}", s.code()), |_| "OK".to_string());
                        if record {
                            latencies
                                .record(started.elapsed().as_micros().max(1) as u64)
                                .unwrap();
                            *codes.entry(code).or_default() += 1;
                        }
                    }
                    (latencies, codes)
                })
            })
            .collect();
        async move {
            let started = Instant::now();
            let mut merged = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut codes: BTreeMap<String, u64> = BTreeMap::new();
            for worker in workers {
                let (latencies, worker_codes) = worker.await.unwrap();
                merged.add(latencies).unwrap();
                for (code, n) in worker_codes {
                    *codes.entry(code).or_default() += n;
                }
            }
            (merged, codes, started.elapsed())
        }
    };

    if !args.no_warmup && !args.cold {
        phase(1, false).await;
    }
    let (latencies, codes, elapsed) = phase(args.duration, true).await;
    let count = latencies.len();
    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    println!("Summary:");
    println!(
        "  Call:          {:?} ({} connections x {} concurrency, {} ScaledObjects over {} {})",
        args.call,
        args.connections,
        args.concurrency,
        args.scaled_objects,
        if args.cold {
            count as usize
        } else {
            args.queues + args.pg_queues
        },
        if args.cold {
            "cold measurements"
        } else {
            "measurements"
        }
    );
    println!("  Count:         {count}");
    println!("  Total:         {:.2} s", elapsed.as_secs_f64());
    println!(
        "  Requests/sec:  {:.1}",
        count as f64 / elapsed.as_secs_f64()
    );
    println!("Latency distribution:");
    for (label, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)] {
        println!("  {label:<6} {:.3} ms", ms(q));
    }
    println!("  max    {:.3} ms", latencies.max() as f64 / 1000.0);
    println!("Status code distribution:");
    for (code, n) in codes {
        println!("  [{code}] {n} responses");
    }
}
