//! Soak mode (`--soak`): a steady GetMetrics rate over a window of ScaledObjects that keeps
//! moving, so new never-seen triggers keep arriving and old ones stop being asked (their
//! measurements expire after `idle_expiry`), for `--duration` seconds. Every
//! `--report-every` seconds it prints the requests answered, the errors by gRPC code, how
//! many of them were unexpected, the scaler's live measurements (from its /metrics) and its
//! RSS; at the end a summary, and the exit code says whether the run passed.
//!
//! `benches/soak.sh` restarts the backend in the middle and tells this process with signals:
//! SIGUSR1 just before the backend goes down, SIGUSR2 once it listens again. UNAVAILABLE
//! between the two, or within `--recovery` seconds after SIGUSR2, is expected; any other
//! error is unexpected, and so is an answer that takes longer than `--request-timeout`
//! (reported as `ClientTimeout`: KEDA's polling loop has no deadline, a hang stalls it).

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use backlog_scaler::proto::{
    GetMetricsRequest, ScaledObjectRef, external_scaler_client::ExternalScalerClient,
};
use hdrhistogram::Histogram;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::Semaphore,
    time::MissedTickBehavior,
};
use tonic::transport::Channel;

use super::Args;

#[derive(clap::Args, Debug)]
pub struct SoakArgs {
    /// Soak mode: `--rate` GetMetrics/s for `--duration` s over `--scaled-objects` live
    /// ScaledObjects, `--churn` of them replaced by new ones every second.
    #[arg(long)]
    pub soak: bool,
    /// GetMetrics requests per second (soak mode; at most `--concurrency` in flight).
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// New ScaledObjects per second, each replacing the oldest one (soak mode).
    #[arg(long, default_value_t = 10.0)]
    churn: f64,
    /// Seconds between two report lines (soak mode).
    #[arg(long, default_value_t = 10)]
    report_every: u64,
    /// RSS growth is measured from the report at this many seconds to the end (soak mode).
    #[arg(long, default_value_t = 120)]
    rss_warmup: u64,
    /// Seconds after SIGUSR2 (backend back) during which UNAVAILABLE is still expected.
    #[arg(long, default_value_t = 5.0)]
    recovery: f64,
    /// An answer slower than this many seconds counts as an unexpected `ClientTimeout`.
    #[arg(long, default_value_t = 5.0)]
    request_timeout: f64,
    /// PID of the scaler, whose VmRSS is reported.
    #[arg(long)]
    scaler_pid: Option<u32>,
    /// host:port of the scaler's http port (`server.http_listen`), for its live measurements.
    #[arg(long)]
    metrics_addr: Option<String>,
}

/// What happened in one report interval (or, merged, in the whole run).
struct Tally {
    ok: u64,
    errors: BTreeMap<String, u64>,
    unexpected: u64,
    latencies: Histogram<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            ok: 0,
            errors: BTreeMap::new(),
            unexpected: 0,
            latencies: Histogram::new_with_bounds(1, 120_000_000, 3).unwrap(),
        }
    }

    fn merge(&mut self, other: &Tally) {
        self.ok += other.ok;
        for (code, n) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
        self.unexpected += other.unexpected;
        self.latencies.add(&other.latencies).unwrap();
    }

    fn errors_text(&self) -> String {
        if self.errors.is_empty() {
            return "-".into();
        }
        let parts: Vec<String> = self
            .errors
            .iter()
            .map(|(c, n)| format!("{c}={n}"))
            .collect();
        parts.join(",")
    }
}

/// The backend outage announced by the script, and when UNAVAILABLE was last seen.
#[derive(Default)]
struct Outage {
    down_at: Option<Instant>,
    up_at: Option<Instant>,
    first_unavailable: Option<Instant>,
    last_unavailable: Option<Instant>,
}

impl Outage {
    /// Whether UNAVAILABLE at `at` falls within the outage plus the recovery allowance.
    fn expects_unavailable(&self, at: Instant, recovery: Duration) -> bool {
        self.down_at.is_some_and(|down| at >= down)
            && self.up_at.is_none_or(|up| at <= up + recovery)
    }
}

struct Shared {
    started: Instant,
    /// Unexpected errors printed as they happen (the first few only).
    unexpected_shown: AtomicU64,
    /// The latest a 10 ms tick of the load loop came in this interval, in µs: when the load
    /// generator itself was not scheduled (a busy machine), answers came late for that reason.
    max_lag_us: AtomicU64,
    interval: Mutex<Tally>,
    outage: Mutex<Outage>,
}

/// The ScaledObject at `index` of the moving window: its own never-seen Redis list, so each
/// new ScaledObject makes a new measurement (a cold read) and each one left behind expires.
fn scaled_object(args: &Args, run: u128, index: u64) -> ScaledObjectRef {
    let metadata = [
        ("source", args.source.clone()),
        ("metric", "redis-list".into()),
        ("keys", format!("soak:{run}:{index}")),
        ("target", "10".into()),
        ("scalerAddress", args.target.clone()),
    ];
    ScaledObjectRef {
        name: format!("soak-{index}"),
        namespace: "soak".into(),
        scaler_metadata: metadata.map(|(k, v)| (k.to_string(), v)).into(),
    }
}

/// Runs the soak; true when it passed (no unexpected error, RSS growth below 5 %).
pub async fn run(args: Arc<Args>, channels: Vec<Channel>) -> bool {
    let soak = &args.soak;
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let started = Instant::now();
    let shared = Arc::new(Shared {
        started,
        unexpected_shown: AtomicU64::new(0),
        max_lag_us: AtomicU64::new(0),
        interval: Mutex::new(Tally::new()),
        outage: Mutex::new(Outage::default()),
    });
    let deadline = started + Duration::from_secs(args.duration);
    watch_signals(shared.clone());

    println!(
        "soak: {} s, {} GetMetrics/s, {} live ScaledObjects, {} new per second, \
         report every {} s, RSS growth from {} s",
        args.duration,
        soak.rate,
        args.scaled_objects,
        soak.churn,
        soak.report_every,
        soak.rss_warmup
    );
    println!(
        "{:>7} {:>7} {:>9} {:<28} {:>10} {:>6} {:>9} {:>7}",
        "elapsed", "ok", "p99 ms", "errors", "unexpected", "live", "RSS KiB", "lag ms"
    );

    let load = tokio::spawn(load(args.clone(), channels, shared.clone(), run, deadline));
    let mut total = Tally::new();
    let mut rss_samples: Vec<(u64, u64)> = Vec::new();
    // (µs, report) of the load generator's longest stall.
    let mut max_lag = (0u64, 0u64);
    let mut ticker = tokio::time::interval_at(
        (started + Duration::from_secs(soak.report_every)).into(),
        Duration::from_secs(soak.report_every),
    );
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut load = load;
    loop {
        ticker.tick().await;
        // The last line comes once the requests still in flight have been answered.
        let last = Instant::now() >= deadline;
        if last {
            (&mut load).await.unwrap();
        }
        let interval = std::mem::replace(&mut *shared.interval.lock().unwrap(), Tally::new());
        total.merge(&interval);
        let elapsed = started.elapsed().as_secs();
        let lag_us = shared.max_lag_us.swap(0, Ordering::Relaxed);
        max_lag = max_lag.max((lag_us, elapsed));
        let live = match &soak.metrics_addr {
            Some(addr) => live_measurements(addr.clone()).await,
            None => None,
        };
        let rss = soak.scaler_pid.and_then(rss_kib);
        if let Some(rss) = rss {
            rss_samples.push((elapsed, rss));
        }
        let show = |v: Option<u64>| v.map_or("?".into(), |v| v.to_string());
        println!(
            "{:>6}s {:>7} {:>9.1} {:<28} {:>10} {:>6} {:>9} {:>7.0}",
            elapsed,
            interval.ok,
            interval.latencies.value_at_quantile(0.99) as f64 / 1000.0,
            interval.errors_text(),
            interval.unexpected,
            show(live),
            show(rss),
            lag_us as f64 / 1000.0
        );
        if last {
            break;
        }
    }
    let outage = shared.outage.lock().unwrap();
    summary(&args, &outage, &total, &rss_samples, max_lag)
}

/// Sends `--rate` requests per second until `deadline`, at most `--concurrency` in flight.
async fn load(
    args: Arc<Args>,
    channels: Vec<Channel>,
    shared: Arc<Shared>,
    run: u128,
    deadline: Instant,
) {
    let started = Instant::now();
    let in_flight = Arc::new(Semaphore::new(args.concurrency.max(1)));
    // Requests are sent in small bursts every 10 ms: steady at this scale, and a tokio timer
    // is not precise below a millisecond.
    let tick = Duration::from_millis(10);
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let population = args.scaled_objects.max(1) as u64;
    let (mut due, mut sent) = (0.0, 0u64);
    while Instant::now() < deadline {
        let scheduled = ticker.tick().await;
        let lag = scheduled.elapsed().as_micros() as u64;
        shared.max_lag_us.fetch_max(lag, Ordering::Relaxed);
        due += args.soak.rate * tick.as_secs_f64();
        while due >= 1.0 {
            due -= 1.0;
            let permit = in_flight.clone().acquire_owned().await.unwrap();
            // The window of live ScaledObjects starts `churn` further every second.
            let oldest = (started.elapsed().as_secs_f64() * args.soak.churn) as u64;
            let so = scaled_object(&args, run, oldest + sent % population);
            let channel = channels[sent as usize % channels.len()].clone();
            sent += 1;
            let (args, shared) = (args.clone(), shared.clone());
            tokio::spawn(async move {
                let _permit = permit;
                one_request(&args, &shared, channel, so).await;
            });
        }
    }
    // Every permit back: every request answered.
    let _all = in_flight
        .acquire_many(args.concurrency.max(1) as u32)
        .await
        .unwrap();
}

async fn one_request(args: &Args, shared: &Shared, channel: Channel, so: ScaledObjectRef) {
    let mut scaler = ExternalScalerClient::new(channel);
    let request = GetMetricsRequest {
        scaled_object_ref: Some(so),
        metric_name: String::new(),
    };
    let sent = Instant::now();
    let limit = Duration::from_secs_f64(args.soak.request_timeout);
    let code = match tokio::time::timeout(limit, scaler.get_metrics(request)).await {
        Ok(Ok(_)) => None,
        Ok(Err(status)) => Some(format!("{:?}", status.code())),
        Err(_) => Some("ClientTimeout".to_string()),
    };
    let answered = Instant::now();
    let unexpected = match code.as_deref() {
        None => false,
        Some("Unavailable") => {
            let mut outage = shared.outage.lock().unwrap();
            outage.first_unavailable.get_or_insert(answered);
            outage.last_unavailable = Some(answered);
            let recovery = Duration::from_secs_f64(args.soak.recovery);
            !outage.expects_unavailable(answered, recovery)
        }
        Some(_) => true,
    };
    if unexpected && shared.unexpected_shown.fetch_add(1, Ordering::Relaxed) < 20 {
        println!(
            "-- unexpected {} at {:.1} s",
            code.as_deref().unwrap_or("?"),
            answered.duration_since(shared.started).as_secs_f64()
        );
    }
    let mut tally = shared.interval.lock().unwrap();
    let took = answered.duration_since(sent).as_micros().max(1) as u64;
    tally.latencies.saturating_record(took);
    match code {
        None => tally.ok += 1,
        Some(code) => *tally.errors.entry(code).or_default() += 1,
    }
    tally.unexpected += u64::from(unexpected);
}

/// SIGUSR1: the backend is about to go down; SIGUSR2: it is back.
fn watch_signals(shared: Arc<Shared>) {
    tokio::spawn(async move {
        let mut down = signal(SignalKind::user_defined1()).unwrap();
        let mut up = signal(SignalKind::user_defined2()).unwrap();
        loop {
            let (label, is_down) = tokio::select! {
                _ = down.recv() => ("down", true),
                _ = up.recv() => ("back", false),
            };
            let now = Instant::now();
            let mut outage = shared.outage.lock().unwrap();
            if is_down {
                *outage = Outage {
                    down_at: Some(now),
                    ..Outage::default()
                };
            } else {
                outage.up_at = Some(now);
            }
            println!(
                "-- backend {label} at {:.1} s",
                now.duration_since(shared.started).as_secs_f64()
            );
        }
    });
}

/// The sum of `backlog_scaler_measurements` over sources, read from the http port.
async fn live_measurements(addr: String) -> Option<u64> {
    // Blocking std I/O in a blocking thread: once per report, and it needs no HTTP client.
    let read = move || -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect(&addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        // HTTP/1.0: the body ends with the connection, no chunked encoding to undo.
        stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    };
    let text = tokio::task::spawn_blocking(read).await.ok()?.ok()?;
    let live = text
        .lines()
        .filter(|line| line.starts_with("backlog_scaler_measurements{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    Some(live as u64)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Prints the summary; true when the run passed.
fn summary(
    args: &Args,
    outage: &Outage,
    total: &Tally,
    rss: &[(u64, u64)],
    (lag_us, lag_at): (u64, u64),
) -> bool {
    let soak = &args.soak;
    println!("Soak summary:");
    println!(
        "  GetMetrics: {} ok, errors {}, p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
        total.ok,
        total.errors_text(),
        total.latencies.value_at_quantile(0.5) as f64 / 1000.0,
        total.latencies.value_at_quantile(0.99) as f64 / 1000.0,
        total.latencies.max() as f64 / 1000.0
    );
    match (outage.down_at, outage.up_at) {
        (Some(down), Some(up)) => {
            let after = |t: Option<Instant>, base: Instant| {
                t.map_or("none".into(), |t| format!("{:+.2} s", signed_secs(t, base)))
            };
            println!(
                "  backend down for {:.1} s; UNAVAILABLE first {} after it went down, \
                 last {} after it was back (allowed: {:+.1} s)",
                up.duration_since(down).as_secs_f64(),
                after(outage.first_unavailable, down),
                after(outage.last_unavailable, up),
                soak.recovery
            );
        }
        _ => println!("  no backend restart announced (SIGUSR1 / SIGUSR2)"),
    }
    println!(
        "  longest stall of the load generator itself: {:.0} ms, in the interval ending at {lag_at} s",
        lag_us as f64 / 1000.0
    );
    println!("  unexpected errors: {}", total.unexpected);
    let mut passed = total.unexpected == 0;
    let warm = rss.iter().find(|(t, _)| *t >= soak.rss_warmup);
    match (warm, rss.last()) {
        (Some(&(warm_at, warm)), Some(&(end_at, end))) if end_at > warm_at => {
            let growth = (end as f64 - warm as f64) / warm as f64 * 100.0;
            let max = rss.iter().filter(|(t, _)| *t >= warm_at).map(|s| s.1).max();
            println!(
                "  RSS: {warm} KiB at {warm_at} s (end of warm-up), {end} KiB at {end_at} s: \
                 growth {growth:+.1} % (max after warm-up {} KiB; goal < 5 %)",
                max.unwrap_or(end)
            );
            passed &= growth < 5.0;
        }
        _ => {
            println!(
                "  RSS: not enough samples after {} s of warm-up",
                soak.rss_warmup
            );
            passed = false;
        }
    }
    println!("  RESULT: {}", if passed { "PASS" } else { "FAIL" });
    passed
}

/// `t - base` in seconds, negative when `t` came first.
fn signed_secs(t: Instant, base: Instant) -> f64 {
    t.saturating_duration_since(base).as_secs_f64()
        - base.saturating_duration_since(t).as_secs_f64()
}
