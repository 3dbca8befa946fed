//! The measurement engine: serve from memory, refresh in the background.
//!
//! A *measurement* is one `(source, query)` pair; it is the unit of backend work, whatever the
//! number of ScaledObjects, triggers, KEDA replicas or requests that ask for it.
//!
//! - The first request for a measurement registers it and starts one *cold read*; concurrent
//!   requests for it wait on the same read (they share a `watch` channel), bounded by the
//!   source's `timeout`.
//! - One refresher task per source reads all live measurements of that source every
//!   `refresh_interval` in a single [`Source::read_batch`] call, so backends see work
//!   proportional to distinct measurements, never to requests.
//! - A request answers from the latest reading: its value if the read succeeded less than
//!   `max_staleness` ago, its error if the latest read failed (never an older value that
//!   could no longer be confirmed), and UNAVAILABLE if the refresher has fallen behind.
//! - A measurement that nobody asked for during `idle_expiry` is dropped; at most `max_live`
//!   measurements are live (RESOURCE_EXHAUSTED past that).
//! - Readiness is true while at least one source answered its latest read or probe.
//! - A panic inside a source's read is caught: the measurements of that read answer INTERNAL
//!   (logged once with the source's name), and the refresher goes on; a refresher that panics
//!   outside a read is restarted.
//!
//! Time is `tokio::time::Instant`, so tests drive it with `tokio::time::pause`.

use std::{
    collections::HashMap,
    panic::AssertUnwindSafe,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::FutureExt;
use tokio::{
    sync::watch,
    task::JoinHandle,
    time::{Instant, MissedTickBehavior},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::{
    Error, Result,
    metrics::{Metrics, ReadOutcome, SourceStats},
    sources::{Query, RefreshSettings, Source},
};

/// Extra wait, beyond the source's read budget, for a request waiting on a cold read: the
/// read task itself is bounded by the budget, so this only covers scheduling delay.
const COLD_WAIT_SLACK: Duration = Duration::from_millis(200);

/// The engine's global bounds (from `[measurements]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub idle_expiry: Duration,
    pub max_live: usize,
}

/// One configured source as the engine sees it.
pub struct SourceEntry {
    pub name: String,
    pub settings: RefreshSettings,
    pub source: Arc<dyn Source>,
}

/// Cloning an `Engine` is shallow: an atomic reference count increment.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    sources: HashMap<Arc<str>, Arc<SourceState>>,
    limits: Limits,
    live: AtomicUsize,
    epoch: Instant,
    ready: watch::Sender<bool>,
    metrics: Arc<Metrics>,
}

/// Health of a source as of its latest read or probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Health {
    Unknown = 0,
    Up = 1,
    Down = 2,
}

impl Health {
    fn from_u8(value: u8) -> Health {
        match value {
            1 => Health::Up,
            2 => Health::Down,
            _ => Health::Unknown,
        }
    }
}

/// One source with its live measurements.
struct SourceState {
    name: Arc<str>,
    settings: RefreshSettings,
    source: Arc<dyn Source>,
    measurements: RwLock<HashMap<Query, Arc<Measurement>>>,
    /// A [`Health`].
    health: AtomicU8,
    /// When the oldest live reading was started, in ms since the engine's epoch; [`NO_READING`]
    /// with no live measurement. Every refresh renews all readings, so this is the start of the
    /// latest refresh (or of the first cold read, before any refresh).
    oldest_reading_ms: AtomicU64,
}

const NO_READING: u64 = u64::MAX;

impl SourceState {
    fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }
}

struct Measurement {
    reading: watch::Sender<Reading>,
    /// Milliseconds since the engine's epoch at which a request last asked for it.
    last_asked_ms: AtomicU64,
}

#[derive(Debug, Clone)]
enum Reading {
    /// The cold read has not finished yet.
    Pending,
    /// The latest read: its outcome and when it started (the age of the data).
    Read {
        outcome: Result<f64>,
        started: Instant,
    },
}

impl Engine {
    pub fn new(sources: Vec<SourceEntry>, limits: Limits, metrics: Arc<Metrics>) -> Engine {
        let sources = sources
            .into_iter()
            .map(|entry| {
                let name: Arc<str> = Arc::from(entry.name);
                let state = SourceState {
                    name: name.clone(),
                    settings: entry.settings,
                    source: entry.source,
                    measurements: RwLock::new(HashMap::new()),
                    health: AtomicU8::new(Health::Unknown as u8),
                    oldest_reading_ms: AtomicU64::new(NO_READING),
                };
                (name, Arc::new(state))
            })
            .collect();
        Engine {
            inner: Arc::new(Inner {
                sources,
                limits,
                live: AtomicUsize::new(0),
                epoch: Instant::now(),
                ready: watch::Sender::new(false),
                metrics,
            }),
        }
    }

    /// Starts one refresher per source; they stop when `shutdown` is cancelled. A refresher
    /// that panics is logged and started again.
    pub fn start(&self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        self.inner
            .sources
            .values()
            .map(|state| {
                let inner = self.inner.clone();
                let state = state.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    loop {
                        let run = refresh_loop(inner.clone(), state.clone(), shutdown.clone());
                        match AssertUnwindSafe(run).catch_unwind().await {
                            Ok(()) => return,
                            Err(_) => error!(source = %state.name, "the refresher panicked; restarting it"),
                        }
                    }
                })
            })
            .collect()
    }

    /// The current value of a measurement: from memory when warm, after one shared backend
    /// read when cold. Bounded by the source's read budget.
    pub async fn measure(&self, source: &str, query: &Query) -> Result<f64> {
        let state = self.state(source)?;
        let measurement = self.measurement(state, query)?;
        let now = Instant::now();
        measurement
            .last_asked_ms
            .store(self.inner.millis_since_epoch(now), Ordering::Relaxed);

        let reading = {
            let current = measurement.reading.borrow();
            match &*current {
                Reading::Pending => None,
                read => Some(read.clone()),
            }
        };
        let reading = match reading {
            Some(reading) => reading,
            None => {
                let mut updates = measurement.reading.subscribe();
                let wait = state.settings.timeout + COLD_WAIT_SLACK;
                match tokio::time::timeout(
                    wait,
                    updates.wait_for(|r| !matches!(r, Reading::Pending)),
                )
                .await
                {
                    Ok(Ok(reading)) => reading.clone(),
                    Ok(Err(_)) => {
                        return Err(Error::Internal("measurement dropped while read".into()));
                    }
                    Err(_) => {
                        return Err(Error::unavailable(
                            &*state.name,
                            format!("no answer within {wait:?}"),
                        ));
                    }
                }
            }
        };
        answer(
            &state.name,
            &reading,
            Instant::now(),
            state.settings.max_staleness,
        )
    }

    /// The refresh interval of a source (StreamIsActive checks at this pace).
    pub fn refresh_interval(&self, source: &str) -> Result<Duration> {
        Ok(self.state(source)?.settings.refresh_interval)
    }

    /// The number of live measurements over all sources.
    pub fn live_measurements(&self) -> usize {
        self.inner.live.load(Ordering::Relaxed)
    }

    /// Each source's health, live measurements and reading age, for a metrics scrape.
    pub fn stats(&self) -> Vec<SourceStats> {
        let now_ms = self.inner.millis_since_epoch(Instant::now());
        let mut stats: Vec<SourceStats> = self
            .inner
            .sources
            .values()
            .map(|state| {
                let measurements = state.measurements.read().map_or(0, |m| m.len());
                let oldest = state.oldest_reading_ms.load(Ordering::Relaxed);
                let age_ms = match (measurements, oldest) {
                    (0, _) | (_, NO_READING) => 0,
                    _ => now_ms.saturating_sub(oldest),
                };
                SourceStats {
                    name: state.name.to_string(),
                    up: state.health() == Health::Up,
                    measurements,
                    oldest_reading_seconds: age_ms as f64 / 1000.0,
                    max_staleness_seconds: state.settings.max_staleness.as_secs_f64(),
                }
            })
            .collect();
        stats.sort_by(|a, b| a.name.cmp(&b.name));
        stats
    }

    /// True while at least one source answered its latest read or probe.
    pub fn readiness(&self) -> watch::Receiver<bool> {
        self.inner.ready.subscribe()
    }

    fn state(&self, source: &str) -> Result<&Arc<SourceState>> {
        self.inner
            .sources
            .get(source)
            .ok_or_else(|| Error::Internal(format!("source `{source}` is not configured")))
    }

    /// Finds the measurement, or registers it and starts its cold read.
    fn measurement(&self, state: &Arc<SourceState>, query: &Query) -> Result<Arc<Measurement>> {
        if let Some(found) = state.measurements.read().expect("lock poisoned").get(query) {
            return Ok(found.clone());
        }
        let mut measurements = state.measurements.write().expect("lock poisoned");
        if let Some(found) = measurements.get(query) {
            return Ok(found.clone());
        }
        let limit = self.inner.limits.max_live;
        if self.inner.live.fetch_add(1, Ordering::Relaxed) >= limit {
            self.inner.live.fetch_sub(1, Ordering::Relaxed);
            return Err(Error::TooManyMeasurements { limit });
        }
        let measurement = Arc::new(Measurement {
            reading: watch::Sender::new(Reading::Pending),
            last_asked_ms: AtomicU64::new(self.inner.millis_since_epoch(Instant::now())),
        });
        measurements.insert(query.clone(), measurement.clone());
        drop(measurements);
        debug!(source = %state.name, ?query, "new measurement");

        let (inner, state, query, cold) = (
            self.inner.clone(),
            state.clone(),
            query.clone(),
            measurement.clone(),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let mut outcomes = read_bounded(&inner, &state, std::slice::from_ref(&query)).await;
            let outcome = outcomes
                .pop()
                .unwrap_or_else(|| Err(Error::Internal("no result".into())));
            inner.record_health(&state, std::slice::from_ref(&outcome));
            let started_ms = inner.millis_since_epoch(started);
            let _ = state.oldest_reading_ms.compare_exchange(
                NO_READING,
                started_ms,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            cold.reading
                .send_replace(Reading::Read { outcome, started });
        });
        Ok(measurement)
    }
}

impl Inner {
    fn millis_since_epoch(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// A source is up when any outcome shows the backend answered (a rejected query still
    /// means the backend is reachable).
    fn record_health(&self, state: &SourceState, outcomes: &[Result<f64>]) {
        let up = outcomes
            .iter()
            .any(|o| !matches!(o, Err(e) if e.is_unavailable()));
        self.set_health(state, up);
    }

    fn set_health(&self, state: &SourceState, up: bool) {
        let health = if up { Health::Up } else { Health::Down };
        if Health::from_u8(state.health.swap(health as u8, Ordering::Relaxed)) != health {
            if up {
                tracing::info!(source = %state.name, "source is answering");
            } else {
                warn!(source = %state.name, "source is not answering");
            }
        }
        let ready = self.sources.values().any(|s| s.health() == Health::Up);
        self.ready.send_if_modified(|current| {
            let changed = *current != ready;
            *current = ready;
            changed
        });
    }
}

/// Reads `queries` within the source's budget and records the read in the metrics.
async fn read_bounded(inner: &Inner, state: &SourceState, queries: &[Query]) -> Vec<Result<f64>> {
    let started = Instant::now();
    let (outcomes, outcome) = read_or_fail(state, queries).await;
    inner
        .metrics
        .record_read(&state.name, outcome, started.elapsed().as_secs_f64());
    outcomes
}

/// A timeout fails every query with UNAVAILABLE; a panic inside the source fails every query
/// with INTERNAL instead of unwinding into the engine.
async fn read_or_fail(state: &SourceState, queries: &[Query]) -> (Vec<Result<f64>>, ReadOutcome) {
    let budget = state.settings.timeout;
    let fail_all = |error: Error| vec![Err(error); queries.len()];
    let read = AssertUnwindSafe(state.source.read_batch(queries)).catch_unwind();
    match tokio::time::timeout(budget, read).await {
        Ok(Ok(outcomes)) if outcomes.len() == queries.len() => {
            // The backend answered unless every query says it could not be reached.
            let down = outcomes
                .iter()
                .all(|o| matches!(o, Err(e) if e.is_unavailable()));
            let outcome = if down {
                ReadOutcome::Error
            } else {
                ReadOutcome::Ok
            };
            (outcomes, outcome)
        }
        Ok(Ok(outcomes)) => (
            fail_all(Error::Internal(format!(
                "source `{}` answered {} of {} queries",
                state.name,
                outcomes.len(),
                queries.len()
            ))),
            ReadOutcome::Error,
        ),
        Ok(Err(panic)) => {
            let message = panic_message(panic.as_ref());
            error!(source = %state.name, %message, "a read panicked; its measurements answer INTERNAL");
            let error = Error::Internal(format!(
                "reading source `{}` panicked: {message}",
                state.name
            ));
            (fail_all(error), ReadOutcome::Error)
        }
        Err(_) => (
            fail_all(Error::unavailable(
                &*state.name,
                format!("no answer within {budget:?}"),
            )),
            ReadOutcome::Timeout,
        ),
    }
}

/// The text of a panic payload (a `&str` or `String` for `panic!` with a message).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// The answer a request gets from a reading.
fn answer(source: &str, reading: &Reading, now: Instant, max_staleness: Duration) -> Result<f64> {
    match reading {
        Reading::Pending => Err(Error::unavailable(
            source,
            "the first read has not finished",
        )),
        Reading::Read {
            outcome: Err(error),
            ..
        } => Err(error.clone()),
        Reading::Read {
            outcome: Ok(value),
            started,
        } => {
            let age = now.saturating_duration_since(*started);
            if age > max_staleness {
                Err(Error::unavailable(
                    source,
                    format!(
                        "the latest successful read is {:.1}s old, older than max_staleness ({max_staleness:?})",
                        age.as_secs_f64()
                    ),
                ))
            } else {
                Ok(*value)
            }
        }
    }
}

async fn refresh_loop(inner: Arc<Inner>, state: Arc<SourceState>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(state.settings.refresh_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let due = take_due(&inner, &state, Instant::now());
        if due.is_empty() {
            state.oldest_reading_ms.store(NO_READING, Ordering::Relaxed);
            let probe = AssertUnwindSafe(state.source.probe()).catch_unwind();
            // Up when the backend answered, even with a rejection; down when it could not be
            // reached, refused the credentials, timed out or the probe panicked.
            let up = tokio::time::timeout(state.settings.timeout, probe)
                .await
                .is_ok_and(|probe| matches!(probe, Ok(Ok(())) | Ok(Err(Error::Rejected { .. }))));
            inner.set_health(&state, up);
            continue;
        }
        let (queries, measurements): (Vec<Query>, Vec<Arc<Measurement>>) = due.into_iter().unzip();
        let started = Instant::now();
        let outcomes = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcomes = read_bounded(&inner, &state, &queries) => outcomes,
        };
        inner.record_health(&state, &outcomes);
        state
            .oldest_reading_ms
            .store(inner.millis_since_epoch(started), Ordering::Relaxed);
        for (measurement, outcome) in measurements.iter().zip(outcomes) {
            // A cold read that finished meanwhile is not newer than this one; both are real.
            measurement
                .reading
                .send_replace(Reading::Read { outcome, started });
        }
    }
}

/// Drops measurements idle for longer than `idle_expiry` and returns the rest that have
/// finished their cold read.
fn take_due(inner: &Inner, state: &SourceState, now: Instant) -> Vec<(Query, Arc<Measurement>)> {
    let now_ms = inner.millis_since_epoch(now);
    let expiry_ms = inner.limits.idle_expiry.as_millis() as u64;
    let mut measurements = state.measurements.write().expect("lock poisoned");
    let before = measurements.len();
    measurements
        .retain(|_, m| now_ms.saturating_sub(m.last_asked_ms.load(Ordering::Relaxed)) <= expiry_ms);
    let expired = before - measurements.len();
    if expired > 0 {
        inner.live.fetch_sub(expired, Ordering::Relaxed);
        debug!(source = %state.name, expired, "idle measurements dropped");
    }
    measurements
        .iter()
        .filter(|(_, m)| !matches!(*m.reading.borrow(), Reading::Pending))
        .map(|(q, m)| (q.clone(), m.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::future::BoxFuture;
    use serde::Serialize;

    use super::*;
    use crate::{
        metadata::{Metadata, Parsed},
        sources::QueryKind,
    };

    /// The fake source's measurements: one key each.
    #[derive(Debug, PartialEq, Eq, Hash, Serialize)]
    struct FakeQuery(String);

    impl QueryKind for FakeQuery {
        const TAG: &'static str = "Fake";
        fn subject(&self) -> String {
            self.0.clone()
        }
    }

    /// A source whose value, failure and delay tests set; it counts its reads.
    #[derive(Default)]
    struct FakeSource {
        value: Mutex<f64>,
        down: Mutex<bool>,
        delay: Mutex<Duration>,
        /// Reads of queries with these keys panic (a bug in a backend).
        panics_on: Mutex<Vec<String>>,
        batches: AtomicUsize,
        queries_read: AtomicUsize,
        probes: AtomicUsize,
    }

    impl FakeSource {
        fn set_value(&self, value: f64) {
            *self.value.lock().unwrap() = value;
        }
        fn set_down(&self, down: bool) {
            *self.down.lock().unwrap() = down;
        }
        fn set_delay(&self, delay: Duration) {
            *self.delay.lock().unwrap() = delay;
        }
        fn panic_on(&self, key: &str) {
            self.panics_on.lock().unwrap().push(key.to_string());
        }
    }

    impl Source for FakeSource {
        fn family(&self) -> &'static str {
            "a fake"
        }

        fn metrics(&self) -> String {
            "fake".into()
        }

        fn parse(&self, _metric: &str, _md: &Metadata<'_>) -> Result<Parsed<Query>> {
            unreachable!("the engine never parses")
        }

        fn read_batch<'a>(&'a self, queries: &'a [Query]) -> BoxFuture<'a, Vec<Result<f64>>> {
            Box::pin(async move {
                let panics_on = self.panics_on.lock().unwrap().clone();
                if queries.iter().any(|q| {
                    q.downcast::<FakeQuery>()
                        .is_some_and(|q| panics_on.contains(&q.0))
                }) {
                    panic!("fake source bug");
                }
                self.batches.fetch_add(1, Ordering::SeqCst);
                self.queries_read.fetch_add(queries.len(), Ordering::SeqCst);
                let delay = *self.delay.lock().unwrap();
                tokio::time::sleep(delay).await;
                let outcome = if *self.down.lock().unwrap() {
                    Err(Error::unavailable("fake", "connection refused"))
                } else {
                    Ok(*self.value.lock().unwrap())
                };
                vec![outcome; queries.len()]
            })
        }

        fn probe(&self) -> BoxFuture<'_, Result<()>> {
            Box::pin(async move {
                self.probes.fetch_add(1, Ordering::SeqCst);
                if *self.down.lock().unwrap() {
                    Err(Error::unavailable("fake", "connection refused"))
                } else {
                    Ok(())
                }
            })
        }
    }

    fn settings() -> RefreshSettings {
        RefreshSettings {
            refresh_interval: Duration::from_secs(1),
            max_staleness: Duration::from_secs(5),
            timeout: Duration::from_millis(1500),
        }
    }

    fn engine_with(fake: Arc<FakeSource>, settings: RefreshSettings, limits: Limits) -> Engine {
        Engine::new(
            vec![SourceEntry {
                name: "fake".into(),
                settings,
                source: fake,
            }],
            limits,
            Metrics::new(limits.max_live),
        )
    }

    fn limits() -> Limits {
        Limits {
            idle_expiry: Duration::from_secs(60),
            max_live: 100,
        }
    }

    fn query(key: &str) -> Query {
        Query::new(FakeQuery(key.to_string()))
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_cold_requests_share_one_read() {
        let fake = Arc::new(FakeSource::default());
        fake.set_value(7.0);
        fake.set_delay(Duration::from_millis(100));
        let engine = engine_with(fake.clone(), settings(), limits());
        let q = query("a");
        let answers = futures::future::join_all((0..50).map(|_| engine.measure("fake", &q))).await;
        assert!(answers.iter().all(|a| *a == Ok(7.0)), "{answers:?}");
        assert_eq!(fake.batches.load(Ordering::SeqCst), 1);
        assert_eq!(engine.live_measurements(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn warm_requests_never_reach_the_source_and_refresh_reads_each_measurement_once() {
        let fake = Arc::new(FakeSource::default());
        fake.set_value(1.0);
        let engine = engine_with(fake.clone(), settings(), limits());
        let shutdown = CancellationToken::new();
        engine.start(shutdown.clone());
        for key in ["a", "b", "c"] {
            assert_eq!(engine.measure("fake", &query(key)).await, Ok(1.0));
        }
        let cold_reads = fake.batches.load(Ordering::SeqCst);
        assert_eq!(cold_reads, 3);
        for _ in 0..1000 {
            engine.measure("fake", &query("a")).await.unwrap();
        }
        assert_eq!(
            fake.batches.load(Ordering::SeqCst),
            cold_reads,
            "warm answers are free"
        );

        fake.set_value(4.0);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            engine.measure("fake", &query("b")).await,
            Ok(4.0),
            "visible within one interval"
        );
        // Ten intervals: ten batches, each reading the three measurements once.
        let (batches, queries) = (
            fake.batches.load(Ordering::SeqCst),
            fake.queries_read.load(Ordering::SeqCst),
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(fake.batches.load(Ordering::SeqCst) - batches, 10);
        assert_eq!(fake.queries_read.load(Ordering::SeqCst) - queries, 30);
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn idle_measurements_expire() {
        let fake = Arc::new(FakeSource::default());
        let limits = Limits {
            idle_expiry: Duration::from_secs(30),
            max_live: 100,
        };
        let engine = engine_with(fake.clone(), settings(), limits);
        engine.start(CancellationToken::new());
        engine.measure("fake", &query("kept")).await.unwrap();
        engine.measure("fake", &query("dropped")).await.unwrap();
        assert_eq!(engine.live_measurements(), 2);
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs(10)).await;
            engine.measure("fake", &query("kept")).await.unwrap();
        }
        assert_eq!(engine.live_measurements(), 1);
        // A dropped measurement comes back as a cold read when asked again.
        let batches = fake.batches.load(Ordering::SeqCst);
        engine.measure("fake", &query("dropped")).await.unwrap();
        assert!(fake.batches.load(Ordering::SeqCst) > batches);
        assert_eq!(engine.live_measurements(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn live_measurements_are_bounded() {
        let fake = Arc::new(FakeSource::default());
        let limits = Limits {
            idle_expiry: Duration::from_secs(60),
            max_live: 3,
        };
        let engine = engine_with(fake, settings(), limits);
        for key in ["a", "b", "c"] {
            engine.measure("fake", &query(key)).await.unwrap();
        }
        assert_eq!(
            engine.measure("fake", &query("d")).await,
            Err(Error::TooManyMeasurements { limit: 3 })
        );
        // Known measurements still answer.
        engine.measure("fake", &query("a")).await.unwrap();
        assert_eq!(engine.live_measurements(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_cold_request_does_not_cancel_the_read_others_share() {
        let fake = Arc::new(FakeSource::default());
        fake.set_value(9.0);
        fake.set_delay(Duration::from_millis(200));
        let engine = engine_with(fake.clone(), settings(), limits());
        let first = tokio::spawn({
            let engine = engine.clone();
            async move { engine.measure("fake", &query("a")).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // KEDA gave up on the first request (its deadline passed) while the read was running.
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        assert_eq!(engine.measure("fake", &query("a")).await, Ok(9.0));
        assert_eq!(
            fake.batches.load(Ordering::SeqCst),
            1,
            "the second request joined the read the first one started"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn expired_measurements_give_their_room_back_under_max_live() {
        let fake = Arc::new(FakeSource::default());
        let limits = Limits {
            idle_expiry: Duration::from_secs(30),
            max_live: 2,
        };
        let engine = engine_with(fake, settings(), limits);
        engine.start(CancellationToken::new());
        for key in ["a", "b"] {
            engine.measure("fake", &query(key)).await.unwrap();
        }
        assert_eq!(
            engine.measure("fake", &query("c")).await,
            Err(Error::TooManyMeasurements { limit: 2 })
        );
        tokio::time::sleep(Duration::from_secs(35)).await;
        assert_eq!(engine.live_measurements(), 0, "nobody asked for 35 s");
        for key in ["c", "d"] {
            engine.measure("fake", &query(key)).await.unwrap();
        }
        assert_eq!(engine.live_measurements(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn outage_answers_unavailable_and_recovery_follows() {
        let fake = Arc::new(FakeSource::default());
        fake.set_value(2.0);
        let engine = engine_with(fake.clone(), settings(), limits());
        engine.start(CancellationToken::new());
        assert_eq!(engine.measure("fake", &query("a")).await, Ok(2.0));
        fake.set_down(true);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let error = engine.measure("fake", &query("a")).await.unwrap_err();
        assert!(error.is_unavailable(), "{error:?}");
        fake.set_down(false);
        fake.set_value(3.0);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(engine.measure("fake", &query("a")).await, Ok(3.0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_cold_read_answers_unavailable_within_the_budget() {
        let fake = Arc::new(FakeSource::default());
        fake.set_delay(Duration::from_secs(3600));
        let engine = engine_with(fake, settings(), limits());
        let started = Instant::now();
        let error = engine.measure("fake", &query("a")).await.unwrap_err();
        assert!(error.is_unavailable(), "{error:?}");
        assert!(started.elapsed() <= settings().timeout + COLD_WAIT_SLACK);
    }

    #[tokio::test(start_paused = true)]
    async fn values_older_than_max_staleness_are_never_served() {
        let fake = Arc::new(FakeSource::default());
        fake.set_value(5.0);
        // A read budget longer than max_staleness, so refreshes hang instead of failing.
        let settings = RefreshSettings {
            refresh_interval: Duration::from_secs(1),
            max_staleness: Duration::from_secs(3),
            timeout: Duration::from_secs(60),
        };
        let engine = engine_with(fake.clone(), settings, limits());
        engine.start(CancellationToken::new());
        assert_eq!(engine.measure("fake", &query("a")).await, Ok(5.0));
        fake.set_delay(Duration::from_secs(3600));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            engine.measure("fake", &query("a")).await,
            Ok(5.0),
            "still fresh"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let error = engine.measure("fake", &query("a")).await.unwrap_err();
        assert!(error.to_string().contains("max_staleness"), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_follows_source_health() {
        let fake = Arc::new(FakeSource::default());
        let engine = engine_with(fake.clone(), settings(), limits());
        let mut ready = engine.readiness();
        assert!(!*ready.borrow(), "not ready before any source answered");
        engine.start(CancellationToken::new());
        ready.wait_for(|r| *r).await.unwrap();
        assert!(
            fake.probes.load(Ordering::SeqCst) >= 1,
            "an idle source is probed"
        );
        fake.set_down(true);
        ready.wait_for(|r| !*r).await.unwrap();
        fake.set_down(false);
        ready.wait_for(|r| *r).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_read_answers_internal_and_the_refresher_keeps_running() {
        let fake = Arc::new(FakeSource::default());
        fake.set_value(4.0);
        let engine = engine_with(fake.clone(), settings(), limits());
        engine.start(CancellationToken::new());
        fake.panic_on("bad");
        // The cold read panics: the request gets INTERNAL at once, not a wait for the budget.
        let started = Instant::now();
        let error = engine.measure("fake", &query("bad")).await.unwrap_err();
        assert_eq!(error.code(), tonic::Code::Internal, "{error}");
        assert!(error.to_string().contains("panicked"), "{error}");
        assert!(started.elapsed() < settings().timeout);
        assert_eq!(engine.measure("fake", &query("good")).await, Ok(4.0));
        // The refresher reads both in one batch, which panics: the batch answers INTERNAL,
        // and the refresher survives to read again.
        tokio::time::sleep(Duration::from_secs(3)).await;
        for key in ["bad", "good"] {
            let error = engine.measure("fake", &query(key)).await.unwrap_err();
            assert_eq!(error.code(), tonic::Code::Internal, "{key}: {error}");
        }
        fake.panics_on.lock().unwrap().clear();
        fake.set_value(6.0);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(engine.measure("fake", &query("bad")).await, Ok(6.0));
        assert_eq!(engine.measure("fake", &query("good")).await, Ok(6.0));
    }
}
