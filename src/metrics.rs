//! The scaler's own Prometheus metrics, served as OpenMetrics text on `server.http_listen`.
//!
//! Label values are bounded by configuration: gRPC method (a fixed list), status code (a fixed
//! list), source name (from the config file), read outcome (three values). Metric names, queue
//! keys and namespaces never become labels, so 10,000 ScaledObjects cost no more series than
//! one. KEDA already exports the per-trigger values (`keda_scaler_metrics_value`, …); these
//! series are what KEDA lacks for external scalers: per-RPC counts and latencies, and the
//! health of the backends behind them.
//!
//! Recording is a few atomic operations: the counters of each (method, code) pair are looked up
//! once and kept, so the request path takes no lock. A scrape copies the engine's per-source
//! state into gauges and encodes; it sends no backend command.

use std::sync::{Arc, OnceLock};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tonic::Code;

/// The RPCs whose counts and latencies are recorded; anything else is `other`.
pub const METHODS: &[&str] = &[
    "IsActive",
    "StreamIsActive",
    "GetMetricSpec",
    "GetMetrics",
    "StreamMetricSpec",
    "Check",
    "Watch",
    "ServerReflectionInfo",
    "other",
];

/// gRPC status codes 0-16, by the names tonic gives them.
const CODES: usize = 17;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadLabels {
    source: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// How one batch read of a source ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The backend answered (some queries may still have been rejected).
    Ok,
    /// The backend could not be reached or refused the session, or the read panicked.
    Error,
    /// The read did not finish within the source's `timeout`.
    Timeout,
}

impl ReadOutcome {
    fn label(self) -> &'static str {
        match self {
            ReadOutcome::Ok => "ok",
            ReadOutcome::Error => "error",
            ReadOutcome::Timeout => "timeout",
        }
    }
}

/// One source as a scrape sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceStats {
    pub name: String,
    pub up: bool,
    pub measurements: usize,
    /// Age of the oldest live reading, in seconds (0 with no live measurement).
    pub oldest_reading_seconds: f64,
    pub max_staleness_seconds: f64,
    /// The source learns of changes as they happen (Redis client tracking), not only by polling.
    pub event_driven: bool,
}

// Request latencies: a warm answer takes tens of microseconds, a cold one up to the read
// budget (1.5 s by default) plus slack; 1 ms to ~8 s in doublings covers both ends.
fn rpc_buckets() -> impl Iterator<Item = f64> {
    std::iter::once(0.0001).chain(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 14,
    ))
}

/// Every metric of the process. Cloning the `Arc` is how components share it.
#[derive(Debug)]
pub struct Metrics {
    /// False without an http port: nothing would ever read the RPC series, so they are not
    /// recorded (the gauges and backend reads cost nothing on the request path).
    record_rpcs: bool,
    registry: Registry,
    requests: Family<RpcLabels, Counter>,
    /// `requests` of each (method, code), created on first use and kept.
    request_cells: Vec<[OnceLock<Counter>; CODES]>,
    durations: Family<MethodLabel, Histogram>,
    /// `durations` of each method, created on first use and kept.
    duration_cells: Vec<OnceLock<Histogram>>,
    reads: Family<ReadLabels, Counter>,
    read_durations: Family<SourceLabel, Histogram>,
    source_up: Family<SourceLabel, Gauge>,
    measurements: Family<SourceLabel, Gauge>,
    measurement_age: Family<SourceLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    max_staleness: Family<SourceLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    event_driven: Family<SourceLabel, Gauge>,
    change_events: Family<SourceLabel, Counter>,
    measurements_limit: Gauge,
    pub streams_open: Gauge,
    pub connections_open: Gauge,
}

impl Metrics {
    /// Metrics that record everything.
    pub fn new(max_live: usize) -> Arc<Metrics> {
        Self::build(max_live, true)
    }

    /// Metrics that skip the per-RPC series (no `server.http_listen`: no scrape would see them).
    pub fn without_rpc_series(max_live: usize) -> Arc<Metrics> {
        Self::build(max_live, false)
    }

    fn build(max_live: usize, record_rpcs: bool) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("backlog_scaler");
        let requests = Family::<RpcLabels, Counter>::default();
        registry.register(
            "grpc_requests",
            "gRPC requests answered, by method and status code",
            requests.clone(),
        );
        let durations =
            Family::<MethodLabel, Histogram>::new_with_constructor(
                || Histogram::new(rpc_buckets()),
            );
        registry.register(
            "grpc_request_duration_seconds",
            "Time to answer a gRPC request (for streams: to open them), by method",
            durations.clone(),
        );
        let reads = Family::<ReadLabels, Counter>::default();
        registry.register(
            "backend_reads",
            "Batch reads of a source (refreshes and cold reads), by outcome",
            reads.clone(),
        );
        let read_durations =
            Family::<SourceLabel, Histogram>::new_with_constructor(
                || Histogram::new(rpc_buckets()),
            );
        registry.register(
            "backend_read_duration_seconds",
            "Time of one batch read of a source",
            read_durations.clone(),
        );
        let metrics = Metrics {
            record_rpcs,
            request_cells: METHODS.iter().map(|_| Default::default()).collect(),
            requests,
            duration_cells: METHODS.iter().map(|_| OnceLock::new()).collect(),
            durations,
            reads,
            read_durations,
            source_up: Family::default(),
            measurements: Family::default(),
            measurement_age: Family::default(),
            max_staleness: Family::default(),
            event_driven: Family::default(),
            change_events: Family::default(),
            measurements_limit: Gauge::default(),
            streams_open: Gauge::default(),
            connections_open: Gauge::default(),
            registry,
        };
        Arc::new(metrics.register_gauges(max_live))
    }

    fn register_gauges(mut self, max_live: usize) -> Metrics {
        let r = &mut self.registry;
        r.register(
            "source_up",
            "1 while the source answered its latest read or probe",
            self.source_up.clone(),
        );
        r.register(
            "measurements",
            "Live measurements of the source",
            self.measurements.clone(),
        );
        r.register(
            "measurement_age_seconds",
            "Age of the oldest live reading of the source: how far behind its refresher is",
            self.measurement_age.clone(),
        );
        r.register(
            "max_staleness_seconds",
            "The source's max_staleness: readings older than this are not served",
            self.max_staleness.clone(),
        );
        r.register(
            "source_event_driven",
            "1 while the source learns of changes as they happen (Redis client tracking); 0 while it only polls",
            self.event_driven.clone(),
        );
        r.register(
            "source_change_events",
            "Changes an event-driven source reported (each may touch several measurements; re-reads are coalesced)",
            self.change_events.clone(),
        );
        self.measurements_limit.set(max_live as i64);
        r.register(
            "measurements_limit",
            "measurements.max_live: the most live measurements",
            self.measurements_limit.clone(),
        );
        let build = Family::<VersionLabel, Gauge>::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        r.register(
            "build_info",
            "The running build: 1, with its version",
            build,
        );
        r.register(
            "streams_open",
            "StreamIsActive streams now open",
            self.streams_open.clone(),
        );
        r.register(
            "connections_open",
            "Client connections now open on the gRPC listener",
            self.connections_open.clone(),
        );
        self
    }

    /// Records one answered RPC. `method` is the last segment of the request path.
    pub fn record_rpc(&self, method: &str, code: Code, seconds: f64) {
        if !self.record_rpcs {
            return;
        }
        let index = METHODS
            .iter()
            .position(|m| *m == method)
            .unwrap_or(METHODS.len() - 1);
        let code_index = (code as usize).min(CODES - 1);
        let counter = self.request_cells[index][code_index].get_or_init(|| {
            self.requests.get_or_create_owned(&RpcLabels {
                method: METHODS[index],
                code: code_name(code),
            })
        });
        counter.inc();
        self.duration_cells[index]
            .get_or_init(|| {
                self.durations.get_or_create_owned(&MethodLabel {
                    method: METHODS[index],
                })
            })
            .observe(seconds);
    }

    /// Records one batch read of a source.
    pub fn record_read(&self, source: &str, outcome: ReadOutcome, seconds: f64) {
        self.reads
            .get_or_create(&ReadLabels {
                source: source.to_string(),
                outcome: outcome.label(),
            })
            .inc();
        self.read_durations
            .get_or_create(&SourceLabel {
                source: source.to_string(),
            })
            .observe(seconds);
    }

    /// Records `events` change events reported by an event-driven source.
    pub fn record_changes(&self, source: &str, events: u64) {
        if events == 0 {
            return;
        }
        self.change_events
            .get_or_create(&SourceLabel {
                source: source.to_string(),
            })
            .inc_by(events);
    }

    /// The OpenMetrics text of every metric, with the per-source gauges set from `sources`.
    pub fn encode(&self, sources: &[SourceStats]) -> String {
        self.set_source_gauges(sources);
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    fn set_source_gauges(&self, sources: &[SourceStats]) {
        for stats in sources {
            let label = SourceLabel {
                source: stats.name.clone(),
            };
            self.source_up
                .get_or_create(&label)
                .set(i64::from(stats.up));
            self.measurements
                .get_or_create(&label)
                .set(stats.measurements as i64);
            self.measurement_age
                .get_or_create(&label)
                .set(stats.oldest_reading_seconds);
            self.max_staleness
                .get_or_create(&label)
                .set(stats.max_staleness_seconds);
            self.event_driven
                .get_or_create(&label)
                .set(i64::from(stats.event_driven));
        }
    }
}

/// The Prometheus text format (0.0.4) of an OpenMetrics text, for clients that do not ask for
/// OpenMetrics (curl, `promtool check metrics`): counter families are named with their
/// `_total` suffix, and the OpenMetrics-only `# UNIT` and `# EOF` lines are dropped. Samples
/// are the same in both formats.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The name tonic gives a code (`Ok`, `InvalidArgument`, …), as a static label value.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpcs_are_counted_by_method_and_code_with_bounded_labels() {
        let metrics = Metrics::new(10);
        metrics.record_rpc("GetMetrics", Code::Ok, 0.001);
        metrics.record_rpc("GetMetrics", Code::Ok, 0.001);
        metrics.record_rpc("GetMetrics", Code::Unavailable, 1.2);
        metrics.record_rpc("/evil/../../path", Code::Unimplemented, 0.0);
        let text = metrics.encode(&[]);
        assert!(
            text.contains(r#"backlog_scaler_grpc_requests_total{method="GetMetrics",code="Ok"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"backlog_scaler_grpc_requests_total{method="GetMetrics",code="Unavailable"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"method="other",code="Unimplemented"} 1"#),
            "{text}"
        );
        assert!(!text.contains("evil"), "{text}");
        assert!(
            text.contains("backlog_scaler_measurements_limit 10"),
            "{text}"
        );
        assert!(
            text.contains(r#"backlog_scaler_build_info{version=""#),
            "{text}"
        );
    }

    #[test]
    fn the_prometheus_text_names_counter_families_with_total() {
        let metrics = Metrics::new(10);
        metrics.record_rpc("GetMetrics", Code::Ok, 0.001);
        let text = to_prometheus_text(&metrics.encode(&[]));
        assert!(
            text.contains("# TYPE backlog_scaler_grpc_requests_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP backlog_scaler_grpc_requests_total gRPC"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE backlog_scaler_streams_open gauge\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
        assert!(
            !text.contains(r#"method="other""#),
            "no series before the first use: {text}"
        );
    }

    #[test]
    fn source_gauges_follow_the_engine_at_scrape_time() {
        let metrics = Metrics::new(10);
        metrics.record_read("redis-main", ReadOutcome::Timeout, 1.5);
        let stats = SourceStats {
            name: "redis-main".into(),
            up: false,
            measurements: 3,
            oldest_reading_seconds: 2.5,
            max_staleness_seconds: 5.0,
            event_driven: true,
        };
        metrics.record_changes("redis-main", 3);
        let text = metrics.encode(&[stats]);
        for line in [
            r#"backlog_scaler_backend_reads_total{source="redis-main",outcome="timeout"} 1"#,
            r#"backlog_scaler_source_up{source="redis-main"} 0"#,
            r#"backlog_scaler_measurements{source="redis-main"} 3"#,
            r#"backlog_scaler_measurement_age_seconds{source="redis-main"} 2.5"#,
            r#"backlog_scaler_max_staleness_seconds{source="redis-main"} 5.0"#,
            r#"backlog_scaler_source_event_driven{source="redis-main"} 1"#,
            r#"backlog_scaler_source_change_events_total{source="redis-main"} 3"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
