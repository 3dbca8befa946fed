//! The measurement engine: serve from memory, refresh in the background.
//!
//! A *measurement* is one `(source, query)` pair; it is the unit of backend work, whatever the
//! number of ScaledObjects, triggers, KEDA replicas or requests that ask for it.
//!
//! - The first request for a measurement registers it and queues it for a *cold read*. Cold
//!   reads are batched per source: when no cold batch of the source is being read, the
//!   requester reads the queue at once, in its own task (the common case, one new
//!   ScaledObject, pays no hand-over); otherwise the queued measurements are read together
//!   when the [`COLD_BATCH_WINDOW`] of the latest batch ends, or by the refresher if its tick
//!   comes first. A KEDA restart that asks for 10,000 new measurements within a second costs
//!   about ten batches, not 10,000 round trips. Concurrent requests for a measurement wait for the same read,
//!   bounded by the source's `timeout`. A requester that is cancelled while it reads hands the
//!   read to a task, so the others still get their answer.
//! - One refresher task per source reads all live measurements of that source every
//!   `refresh_interval` in a single [`Source::read_batch`] call, so backends see work
//!   proportional to distinct measurements, never to requests.
//! - A request answers from the latest reading: its value if the read succeeded less than
//!   `max_staleness` ago, its error if the latest read failed (never an older value that
//!   could no longer be confirmed), and UNAVAILABLE if the refresher has fallen behind.
//! - Readings are stored inline in one table per source: no channel, task or lock object of
//!   its own per measurement.
//! - A measurement that nobody asked for during `idle_expiry` is dropped; at most `max_live`
//!   measurements are live (RESOURCE_EXHAUSTED past that).
//! - Readiness is true while at least one source answered its latest read or probe.
//! - An event-driven source (Redis, with client tracking) reports the measurements whose keys
//!   changed; they are re-read at once, all of a source's in one batch, at most once per
//!   [`CHANGE_COALESCE`] while they keep changing. The refresh stays as the safety net, so a
//!   lost event costs at most one `refresh_interval`. Every stored batch wakes the watchers of
//!   [`Engine::readings_stored`] (StreamIsActive).
//! - A panic inside a source's read is caught: the measurements of that read answer INTERNAL
//!   (logged once with the source's name), and the refresher goes on; a refresher that panics
//!   outside a read is restarted.
//!
//! Time is `tokio::time::Instant`, so tests drive it with `tokio::time::pause`.

use std::{
    collections::HashMap,
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex, RwLock,
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
use tokio_util::{
    sync::CancellationToken,
    task::{TaskTracker, task_tracker::TaskTrackerToken},
};
use tracing::{debug, error, warn};

use crate::{
    Error, Result,
    metrics::{Metrics, ReadOutcome, SourceStats},
    sources::{ChangeFeed, Query, RefreshSettings, Source},
};

/// Extra wait, beyond the source's read budget, for a request waiting on a cold read: the
/// read itself is bounded by the budget, so this only covers scheduling delay.
const COLD_WAIT_SLACK: Duration = Duration::from_millis(200);

/// Cold reads that arrive while a cold batch of their source is being read share the next
/// batch, which starts this long after the latest one. 100 ms bounds a restart storm to about
/// ten cold batches per second and source (the goal is at most 20 for 10,000 new measurements
/// within a second) and adds at most 100 ms to a measurement's first answer during such a
/// storm, far inside the HPA's 3 s deadline; a cold read while none is being read is never
/// delayed.
pub const COLD_BATCH_WINDOW: Duration = Duration::from_millis(100);

/// Measurements reported as changed are re-read at once after a quiet spell, and then at most
/// once per this window while they keep changing (the changes of a window share one batch).
/// 20 ms bounds any source to 50 re-read batches a second, and adds at most 20 ms to the
/// answer after a change that falls inside a window, well inside the 50 ms goal of
/// StreamIsActive. (The Redis source reports a churning key at most every 40 ms on its own:
/// `sources::redis::events`.)
pub const CHANGE_COALESCE: Duration = Duration::from_millis(20);

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

/// The sources, sorted by name and found by binary search: a handful as a rule, so a request
/// finds its source in a few comparisons instead of hashing the name.
struct Sources(Vec<Arc<SourceState>>);

impl Sources {
    fn new(mut states: Vec<Arc<SourceState>>) -> Sources {
        states.sort_by(|a, b| a.name.cmp(&b.name));
        Sources(states)
    }

    fn get(&self, name: &str) -> Option<&Arc<SourceState>> {
        let found = self.0.binary_search_by(|state| (*state.name).cmp(name));
        found.ok().map(|at| &self.0[at])
    }

    fn values(&self) -> std::slice::Iter<'_, Arc<SourceState>> {
        self.0.iter()
    }
}

/// Cloning an `Engine` is shallow: an atomic reference count increment.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    sources: Sources,
    limits: Limits,
    live: AtomicUsize,
    epoch: Instant,
    ready: watch::Sender<bool>,
    metrics: Arc<Metrics>,
    /// Every task the engine spawns (refreshers, cold reads), so [`Engine::stopped`] can wait
    /// for them.
    tasks: TaskTracker,
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
    measurements: RwLock<HashMap<Query, Measurement>>,
    cold: Mutex<ColdQueue>,
    /// Counts the batches that stored readings; requests waiting for a cold read and
    /// StreamIsActive streams watch it.
    stored: watch::Sender<u64>,
    /// The measurements an event-driven source reported as changed.
    changes: Arc<ChangeFeed>,
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

    /// The reading of a live measurement, marking it as asked for at `now_ms`.
    fn reading(&self, query: &Query, now_ms: u64) -> Option<Reading> {
        let measurements = self.measurements.read().expect("lock poisoned");
        let measurement = measurements.get(query)?;
        measurement.last_asked_ms.store(now_ms, Ordering::Relaxed);
        Some(measurement.reading.lock().expect("lock poisoned").clone())
    }

    /// Stores the outcomes of one batch (in the order of `queries`) and wakes the requests
    /// waiting for a cold read. Measurements that expired meanwhile are skipped.
    fn store(&self, queries: &[Query], outcomes: Vec<Result<f64>>, started_ms: u64) {
        {
            let measurements = self.measurements.read().expect("lock poisoned");
            // When the backend is down every query fails alike: they share one error.
            let mut shared: Option<Arc<Error>> = None;
            for (query, outcome) in queries.iter().zip(outcomes) {
                let Some(measurement) = measurements.get(query) else {
                    continue;
                };
                let mut reading = measurement.reading.lock().expect("lock poisoned");
                // A re-read after a change may finish before a refresh that started earlier:
                // the older reading never replaces the newer one.
                if matches!(*reading, Reading::Read { started_ms: newer, .. } if newer > started_ms)
                {
                    continue;
                }
                let outcome = outcome.map_err(|error| match &shared {
                    Some(same) if **same == error => same.clone(),
                    _ => shared.insert(Arc::new(error)).clone(),
                });
                *reading = Reading::Read {
                    outcome,
                    started_ms,
                };
            }
        }
        self.stored
            .send_modify(|batches| *batches = batches.wrapping_add(1));
    }

    /// Those of `queries` that are live and have been read once (a pending cold read will
    /// see the change anyway).
    fn read_before(&self, queries: Vec<Query>) -> Vec<Query> {
        let measurements = self.measurements.read().expect("lock poisoned");
        queries
            .into_iter()
            .filter(|query| {
                measurements.get(query).is_some_and(|m| {
                    !matches!(*m.reading.lock().expect("lock poisoned"), Reading::Pending)
                })
            })
            .collect()
    }
}

/// The measurements waiting for their cold read, per source.
#[derive(Default)]
struct ColdQueue {
    /// Registered measurements that no batch has taken yet.
    queued: Vec<Query>,
    /// When the latest cold batch started.
    last_start: Option<Instant>,
    /// Cold batches being read now.
    in_flight: usize,
    /// A task will read `queued` when the window of the latest batch ends.
    scheduled: bool,
}

/// One live measurement: 16 bytes of key (shared with the triggers that name it) and this.
struct Measurement {
    reading: Mutex<Reading>,
    /// Milliseconds since the engine's epoch at which a request last asked for it.
    last_asked_ms: AtomicU64,
}

#[derive(Debug, Clone)]
enum Reading {
    /// The cold read has not finished yet.
    Pending,
    /// The latest read: its outcome and when it started, in ms since the engine's epoch (the
    /// age of the data). The error is behind an `Arc`: a reading is small while the source
    /// answers, and the measurements of a failed batch share one error.
    Read {
        outcome: Result<f64, Arc<Error>>,
        started_ms: u64,
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
                    cold: Mutex::default(),
                    stored: watch::Sender::new(0),
                    changes: Arc::default(),
                    health: AtomicU8::new(Health::Unknown as u8),
                    oldest_reading_ms: AtomicU64::new(NO_READING),
                };
                Arc::new(state)
            })
            .collect();
        Engine {
            inner: Arc::new(Inner {
                sources: Sources::new(sources),
                limits,
                live: AtomicUsize::new(0),
                epoch: Instant::now(),
                ready: watch::Sender::new(false),
                metrics,
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// Starts one refresher per source, and for event-driven sources the task that follows
    /// their changes; they stop when `shutdown` is cancelled. A refresher that panics is logged
    /// and started again.
    pub fn start(&self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        let followers: Vec<JoinHandle<()>> = self
            .inner
            .sources
            .values()
            .map(|state| {
                let (inner, state) = (self.inner.clone(), state.clone());
                self.inner
                    .tasks
                    .spawn(follow_changes(inner, state, shutdown.clone()))
            })
            .collect();
        self.inner
            .sources
            .values()
            .map(|state| {
                let inner = self.inner.clone();
                let state = state.clone();
                let shutdown = shutdown.clone();
                self.inner.tasks.spawn(async move {
                    loop {
                        let run = refresh_loop(inner.clone(), state.clone(), shutdown.clone());
                        match AssertUnwindSafe(run).catch_unwind().await {
                            Ok(()) => return,
                            Err(_) => error!(source = %state.name, "the refresher panicked; restarting it"),
                        }
                    }
                })
            })
            .chain(followers)
            .collect()
    }

    /// Waits until every task the engine spawned has ended: the refreshers once the token
    /// given to [`Engine::start`] is cancelled, cold reads within their source's timeout.
    pub async fn stopped(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// The current value of a measurement: from memory when warm, after one shared backend
    /// read when cold. Bounded by the source's read budget.
    ///
    /// The cold paths are boxed: their state (a batch read, a wait with its timer) would
    /// otherwise make every request's future about 640 bytes instead of about 100, and every
    /// request carries its future (warm ones too, moved into the server's box).
    pub async fn measure(&self, source: &str, query: &Query) -> Result<f64> {
        let state = self.state(source)?;
        let reading = match state.reading(query, self.inner.now_ms()) {
            Some(Reading::Pending) => Box::pin(self.wait_for_read(state, query)).await?,
            Some(reading) => reading,
            None => Box::pin(self.measure_cold(state, query)).await?,
        };
        answer(
            &state.name,
            reading,
            self.inner.now_ms(),
            state.settings.max_staleness,
        )
    }

    /// A measurement not live yet: registered, read in a cold batch (this request's, or
    /// another's it joins) and waited for.
    async fn measure_cold(&self, state: &Arc<SourceState>, query: &Query) -> Result<Reading> {
        if self.register(state, query)? {
            self.start_cold_read(state, query).await;
        }
        self.wait_for_read(state, query).await
    }

    /// The refresh interval of a source.
    pub fn refresh_interval(&self, source: &str) -> Result<Duration> {
        Ok(self.state(source)?.settings.refresh_interval)
    }

    /// The max_staleness of a source: past it without a stored reading, a value is no longer
    /// served.
    pub fn max_staleness(&self, source: &str) -> Result<Duration> {
        Ok(self.state(source)?.settings.max_staleness)
    }

    /// Changes whenever a batch of the source's readings is stored: a refresh, a cold read, or
    /// a re-read after a change. A StreamIsActive stream waits on it instead of a ticker.
    pub fn readings_stored(&self, source: &str) -> Result<watch::Receiver<u64>> {
        Ok(self.state(source)?.stored.subscribe())
    }

    /// The number of live measurements over all sources.
    pub fn live_measurements(&self) -> usize {
        self.inner.live.load(Ordering::Relaxed)
    }

    /// Each source's health, live measurements and reading age, for a metrics scrape.
    pub fn stats(&self) -> Vec<SourceStats> {
        let now_ms = self.inner.now_ms();
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
                    event_driven: state.source.event_driven(),
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

    /// Registers a new measurement, pending its cold read. False when another request
    /// registered it first.
    fn register(&self, state: &SourceState, query: &Query) -> Result<bool> {
        let mut measurements = state.measurements.write().expect("lock poisoned");
        if measurements.contains_key(query) {
            return Ok(false);
        }
        let limit = self.inner.limits.max_live;
        if self.inner.live.fetch_add(1, Ordering::Relaxed) >= limit {
            self.inner.live.fetch_sub(1, Ordering::Relaxed);
            return Err(Error::TooManyMeasurements { limit });
        }
        let measurement = Measurement {
            reading: Mutex::new(Reading::Pending),
            last_asked_ms: AtomicU64::new(self.inner.now_ms()),
        };
        measurements.insert(query.clone(), measurement);
        state.source.live(std::slice::from_ref(query), &[]);
        debug!(source = %state.name, ?query, "new measurement");
        Ok(true)
    }

    /// Queues a new measurement for its cold read, and reads the queue at once when no cold
    /// batch of the source is being read. Otherwise the next batch, at the end of the window
    /// of the latest one (or the refresher, if it comes first), reads it.
    async fn start_cold_read(&self, state: &Arc<SourceState>, query: &Query) {
        let now = Instant::now();
        let queries = {
            let mut cold = state.cold.lock().expect("lock poisoned");
            cold.queued.push(query.clone());
            if cold.scheduled {
                return;
            }
            if cold.in_flight > 0 {
                cold.scheduled = true;
                let at = cold.last_start.map_or(now, |last| last + COLD_BATCH_WINDOW);
                let (inner, state) = (self.inner.clone(), state.clone());
                self.inner
                    .tasks
                    .spawn(scheduled_cold_read(inner, state, at));
                return;
            }
            cold.in_flight += 1;
            cold.last_start = Some(now);
            std::mem::take(&mut cold.queued)
        };
        ColdRead {
            inner: self.inner.clone(),
            state: state.clone(),
            queries,
            finished: false,
            _counted: self.inner.tasks.token(),
        }
        .run()
        .await;
    }

    /// Waits until the measurement's cold read has stored a reading, within the window, the
    /// source's budget and a little slack.
    async fn wait_for_read(&self, state: &SourceState, query: &Query) -> Result<Reading> {
        // Subscribed before looking, so a store between the look and the wait is not missed.
        let mut stored = state.stored.subscribe();
        let wait = COLD_BATCH_WINDOW + state.settings.timeout + COLD_WAIT_SLACK;
        let deadline = Instant::now() + wait;
        loop {
            match state.reading(query, self.inner.now_ms()) {
                Some(Reading::Pending) => {}
                Some(reading) => return Ok(reading),
                None => return Err(Error::Internal("measurement dropped while read".into())),
            }
            match tokio::time::timeout_at(deadline, stored.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Error::Internal("the engine was dropped".into())),
                Err(_) => {
                    return Err(Error::unavailable(
                        &*state.name,
                        format!("no answer within {wait:?}"),
                    ));
                }
            }
        }
    }
}

/// A cold batch read by the request that started it. If that request is cancelled (KEDA
/// gave up on it) before the read finished, the read is handed to a task, so the requests
/// waiting for the same batch still get their answer.
struct ColdRead {
    inner: Arc<Inner>,
    state: Arc<SourceState>,
    queries: Vec<Query>,
    finished: bool,
    /// Counts the read as one of the engine's tasks while a request runs it, so
    /// [`Engine::stopped`] waits for it too: the request's future may be dropped (and the read
    /// handed to a task) only after the gRPC server has returned.
    _counted: TaskTrackerToken,
}

impl ColdRead {
    async fn run(mut self) {
        read_cold(&self.inner, &self.state, &self.queries).await;
        self.finished = true;
    }
}

impl Drop for ColdRead {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let (inner, state) = (self.inner.clone(), self.state.clone());
        let queries = std::mem::take(&mut self.queries);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let tasks = inner.tasks.clone();
            tasks.spawn_on(
                async move { read_cold(&inner, &state, &queries).await },
                &runtime,
            );
        }
    }
}

/// The batch of cold reads queued during a window, read when it ends (unless the refresher
/// took them first).
async fn scheduled_cold_read(inner: Arc<Inner>, state: Arc<SourceState>, at: Instant) {
    tokio::time::sleep_until(at).await;
    let queries = {
        let mut cold = state.cold.lock().expect("lock poisoned");
        cold.scheduled = false;
        if cold.queued.is_empty() {
            return;
        }
        cold.in_flight += 1;
        cold.last_start = Some(Instant::now());
        std::mem::take(&mut cold.queued)
    };
    read_cold(&inner, &state, &queries).await;
}

/// Reads a batch of new measurements, stores their first readings and counts the batch as
/// finished.
async fn read_cold(inner: &Inner, state: &SourceState, queries: &[Query]) {
    let started_ms = inner.now_ms();
    let outcomes = read_bounded(inner, state, queries, deadline(state)).await;
    inner.record_health(state, &outcomes);
    let _ = state.oldest_reading_ms.compare_exchange(
        NO_READING,
        started_ms,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    state.store(queries, outcomes, started_ms);
    state.cold.lock().expect("lock poisoned").in_flight -= 1;
}

impl Inner {
    fn now_ms(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_millis() as u64
    }

    /// A source is up when any outcome shows the backend answered (a rejected query still
    /// means the backend is reachable).
    fn record_health(&self, state: &SourceState, outcomes: &[Result<f64>]) {
        self.set_health(state, answered(outcomes));
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

/// True when any outcome shows the backend answered (a rejected query still means the
/// backend is reachable).
fn answered(outcomes: &[Result<f64>]) -> bool {
    outcomes
        .iter()
        .any(|o| !matches!(o, Err(e) if e.is_unavailable()))
}

/// The end of the source's budget for a read that starts now.
fn deadline(state: &SourceState) -> Instant {
    Instant::now() + state.settings.timeout
}

/// Reads `queries` by `deadline` and records the read in the metrics.
async fn read_bounded(
    inner: &Inner,
    state: &SourceState,
    queries: &[Query],
    deadline: Instant,
) -> Vec<Result<f64>> {
    let started = Instant::now();
    let (outcomes, outcome) = read_or_fail(state, queries, deadline).await;
    inner
        .metrics
        .record_read(&state.name, outcome, started.elapsed().as_secs_f64());
    outcomes
}

/// A timeout fails every query with UNAVAILABLE; a panic inside the source fails every query
/// with INTERNAL instead of unwinding into the engine.
async fn read_or_fail(
    state: &SourceState,
    queries: &[Query],
    deadline: Instant,
) -> (Vec<Result<f64>>, ReadOutcome) {
    let budget = state.settings.timeout;
    let fail_all = |error: Error| vec![Err(error); queries.len()];
    let read = AssertUnwindSafe(state.source.read_batch(queries)).catch_unwind();
    match tokio::time::timeout_at(deadline, read).await {
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

/// The answer a request gets from a reading at `now_ms`.
fn answer(source: &str, reading: Reading, now_ms: u64, max_staleness: Duration) -> Result<f64> {
    match reading {
        Reading::Pending => Err(Error::unavailable(
            source,
            "the first read has not finished",
        )),
        Reading::Read {
            outcome: Err(error),
            ..
        } => Err(Arc::unwrap_or_clone(error)),
        Reading::Read {
            outcome: Ok(value),
            started_ms,
        } => {
            let age = Duration::from_millis(now_ms.saturating_sub(started_ms));
            if age > max_staleness {
                Err(Error::unavailable(
                    source,
                    format!(
                        "the latest successful read is {:.1}s old, older than max_staleness ({max_staleness:?})",
                        age.as_secs_f64()
                    ),
                ))
            } else {
                Ok(value)
            }
        }
    }
}

/// Runs an event-driven source's watch beside the re-reads of what it reports, until shutdown;
/// returns at once for a source that is only polled.
async fn follow_changes(inner: Arc<Inner>, state: Arc<SourceState>, shutdown: CancellationToken) {
    let Some(watch) = state.source.watch(state.changes.clone()) else {
        return;
    };
    let follow = async {
        tokio::join!(watch, reread_changed(&inner, &state));
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        outcome = AssertUnwindSafe(follow).catch_unwind() => {
            if outcome.is_err() {
                error!(source = %state.name, "following the source's changes panicked; polling only");
            }
        }
    }
}

/// Re-reads the measurements reported as changed: at once after a quiet spell, then at most
/// once per [`CHANGE_COALESCE`], every measurement changed meanwhile in the same batch.
async fn reread_changed(inner: &Inner, state: &SourceState) {
    let mut last_batch: Option<Instant> = None;
    loop {
        state.changes.ready().await;
        if let Some(last) = last_batch {
            tokio::time::sleep_until(last + CHANGE_COALESCE).await;
        }
        let (changed, events) = state.changes.take();
        inner.metrics.record_changes(&state.name, events);
        let queries = state.read_before(changed);
        if queries.is_empty() {
            continue;
        }
        last_batch = Some(Instant::now());
        let started_ms = inner.now_ms();
        let outcomes = read_bounded(inner, state, &queries, deadline(state)).await;
        inner.record_health(state, &outcomes);
        state.store(&queries, outcomes, started_ms);
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
        let queries = take_due(&inner, &state, inner.now_ms());
        if queries.is_empty() {
            state.oldest_reading_ms.store(NO_READING, Ordering::Relaxed);
            probe(&inner, &state).await;
            continue;
        }
        let started_ms = inner.now_ms();
        // In chunks, each stored as soon as it is read, so a refresh holds the outcomes of
        // one chunk at a time; every chunk shares the refresh's one budget.
        let deadline = deadline(&state);
        let mut up = false;
        for chunk in queries.chunks(REFRESH_CHUNK) {
            let outcomes = tokio::select! {
                _ = shutdown.cancelled() => return,
                outcomes = read_bounded(&inner, &state, chunk, deadline) => outcomes,
            };
            up |= answered(&outcomes);
            state.store(chunk, outcomes, started_ms);
        }
        inner.set_health(&state, up);
        state.oldest_reading_ms.store(started_ms, Ordering::Relaxed);
    }
}

/// Measurements one refresh hands the source at once. Large enough that a source's shared
/// work (one pg_stat_activity read per batch) is done once for nearly every deployment, small
/// enough that 100,000 live measurements never hold 100,000 outcomes at once (56 bytes each).
/// (Four in unit tests, so a handful of measurements make several chunks.)
const REFRESH_CHUNK: usize = if cfg!(test) { 4 } else { 10_000 };

/// Checks a source with no live measurement. Up when the backend answered, even with a
/// rejection; down when it could not be reached, refused the credentials, timed out or the
/// probe panicked.
async fn probe(inner: &Inner, state: &SourceState) {
    let probe = AssertUnwindSafe(state.source.probe()).catch_unwind();
    let up = tokio::time::timeout(state.settings.timeout, probe)
        .await
        .is_ok_and(|probe| matches!(probe, Ok(Ok(())) | Ok(Err(Error::Rejected { .. }))));
    inner.set_health(state, up);
}

/// Drops measurements idle for longer than `idle_expiry` and returns the rest that one
/// refresh reads: those with a reading, and the queued cold reads, which join this batch
/// instead of waiting for the end of their window. Measurements whose cold read is under way
/// are left to it.
fn take_due(inner: &Inner, state: &SourceState, now_ms: u64) -> Vec<Query> {
    let expiry_ms = inner.limits.idle_expiry.as_millis() as u64;
    let mut measurements = state.measurements.write().expect("lock poisoned");
    let mut expired: Vec<Query> = Vec::new();
    measurements.retain(|query, m| {
        let live = now_ms.saturating_sub(m.last_asked_ms.load(Ordering::Relaxed)) <= expiry_ms;
        if !live {
            expired.push(query.clone());
        }
        live
    });
    if !expired.is_empty() {
        state.source.live(&[], &expired);
        inner.live.fetch_sub(expired.len(), Ordering::Relaxed);
        debug!(source = %state.name, expired = expired.len(), "idle measurements dropped");
    }
    let mut due: Vec<Query> = measurements
        .iter()
        .filter(|(_, m)| !matches!(*m.reading.lock().expect("lock poisoned"), Reading::Pending))
        .map(|(query, _)| query.clone())
        .collect();
    drop(measurements);
    let queued = std::mem::take(&mut state.cold.lock().expect("lock poisoned").queued);
    due.extend(queued);
    due
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
        fn subject(&self) -> std::borrow::Cow<'_, str> {
            self.0.as_str().into()
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
        /// Set: the source is event-driven, and this is where the engine takes its changes.
        feed: Mutex<Option<Arc<ChangeFeed>>>,
        watches: bool,
        /// What the engine told the source of its live measurements: `+key` or `-key`.
        live: Mutex<Vec<String>>,
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

        fn live(&self, added: &[Query], removed: &[Query]) {
            let key = |q: &Query| q.downcast::<FakeQuery>().unwrap().0.clone();
            let mut live = self.live.lock().unwrap();
            live.extend(added.iter().map(|q| format!("+{}", key(q))));
            live.extend(removed.iter().map(|q| format!("-{}", key(q))));
        }

        fn watch(&self, changes: Arc<ChangeFeed>) -> Option<BoxFuture<'_, ()>> {
            if !self.watches {
                return None;
            }
            *self.feed.lock().unwrap() = Some(changes);
            Some(Box::pin(std::future::pending()))
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

    #[test]
    fn each_source_is_found_by_its_name_and_no_other() {
        let names = ["redis-main", "pg-main", "a", "redis-other", "z"];
        let entries = names
            .iter()
            .map(|name| SourceEntry {
                name: (*name).into(),
                settings: settings(),
                source: Arc::new(FakeSource::default()),
            })
            .collect();
        let engine = Engine::new(entries, limits(), Metrics::new(limits().max_live));
        for name in names {
            assert_eq!(&*engine.state(name).unwrap().name, name);
        }
        for other in ["", "redis", "redis-main-2", "b", "zz"] {
            let Err(error) = engine.state(other) else {
                panic!("{other:?} found");
            };
            assert!(error.to_string().contains("is not configured"), "{error}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn changes_are_reread_at_once_then_at_most_once_per_window() {
        let fake = Arc::new(FakeSource {
            watches: true,
            ..FakeSource::default()
        });
        fake.set_value(1.0);
        let engine = engine_with(fake.clone(), settings(), limits());
        let shutdown = CancellationToken::new();
        engine.start(shutdown.clone());
        let q = query("a");
        assert_eq!(engine.measure("fake", &q).await, Ok(1.0));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let feed = fake
            .feed
            .lock()
            .unwrap()
            .clone()
            .expect("the source watches");
        let mut stored = engine.readings_stored("fake").unwrap();
        stored.borrow_and_update();

        // One change after a quiet spell: read at once, long before the refresh at 1 s.
        fake.set_value(2.0);
        let batches = fake.batches.load(Ordering::SeqCst);
        let started = Instant::now();
        feed.mark([q.clone()], 1);
        stored.changed().await.unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(engine.measure("fake", &q).await, Ok(2.0));
        assert_eq!(fake.batches.load(Ordering::SeqCst), batches + 1);

        // A change every millisecond for 200 ms: one read per window, not 200.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let batches = fake.batches.load(Ordering::SeqCst);
        for i in 0..200 {
            fake.set_value(f64::from(i));
            feed.mark([q.clone(), query("not-live")], 1);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(CHANGE_COALESCE).await;
        let reads = fake.batches.load(Ordering::SeqCst) - batches;
        assert!((10..=11).contains(&reads), "{reads} reads for 200 changes");
        assert_eq!(
            engine.measure("fake", &q).await,
            Ok(199.0),
            "the last change is read"
        );
        assert_eq!(
            engine.live_measurements(),
            1,
            "a change never makes a measurement"
        );
        shutdown.cancel();
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
    async fn a_refresh_reads_in_chunks_that_share_one_budget() {
        let fake = Arc::new(FakeSource::default());
        fake.set_value(2.0);
        let engine = engine_with(fake.clone(), settings(), limits());
        let shutdown = CancellationToken::new();
        engine.start(shutdown.clone());
        let queries: Vec<Query> = (0..10).map(|i| query(&format!("q{i}"))).collect();
        for q in &queries {
            assert_eq!(engine.measure("fake", q).await, Ok(2.0));
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (batches, read) = (
            fake.batches.load(Ordering::SeqCst),
            fake.queries_read.load(Ordering::SeqCst),
        );
        // Ten refreshes.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            fake.batches.load(Ordering::SeqCst) - batches,
            30,
            "10 in chunks of 4"
        );
        assert_eq!(fake.queries_read.load(Ordering::SeqCst) - read, 100);

        // A source that hangs costs a refresh one budget (1.5 s), not one per chunk: every
        // measurement learns of the timeout at the same moment.
        fake.set_delay(Duration::from_secs(60));
        let timed_out = |answer: &Result<f64>| matches!(answer, Err(e) if e.to_string().contains("no answer within"));
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut answers = Vec::new();
            for q in &queries {
                answers.push(engine.measure("fake", q).await);
            }
            let failed = answers.iter().filter(|a| timed_out(a)).count();
            if failed > 0 {
                assert_eq!(failed, queries.len(), "{answers:?}");
                break;
            }
        }
        shutdown.cancel();
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

    #[test]
    fn a_request_carries_a_small_future_whatever_its_cold_paths_hold() {
        let engine = engine_with(Arc::new(FakeSource::default()), settings(), limits());
        let query = query("a");
        // Boxed, the cold read and the wait for it (about 550 bytes) are paid for by cold
        // requests alone.
        let future = engine.measure("fake", &query);
        assert!(
            std::mem::size_of_val(&future) <= 128,
            "{}",
            std::mem::size_of_val(&future)
        );
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
        // The source heard of each change, in order (an event-driven one watches exactly the
        // live measurements).
        assert_eq!(
            *fake.live.lock().unwrap(),
            ["+kept", "+dropped", "-dropped", "+dropped"]
        );
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
    async fn a_cancelled_cold_request_hands_its_read_to_a_task_for_the_others() {
        let fake = Arc::new(FakeSource::default());
        fake.set_value(9.0);
        fake.set_delay(Duration::from_millis(200));
        let engine = engine_with(fake.clone(), settings(), limits());
        let first = tokio::spawn({
            let engine = engine.clone();
            async move { engine.measure("fake", &query("a")).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // KEDA gave up on the first request (its deadline passed) while it was reading.
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        let started = Instant::now();
        assert_eq!(engine.measure("fake", &query("a")).await, Ok(9.0));
        assert_eq!(
            fake.batches.load(Ordering::SeqCst),
            2,
            "the cancelled read was started again in a task, and the second request waited \
             for it instead of starting a third"
        );
        assert_eq!(started.elapsed(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn an_isolated_cold_read_is_read_at_once_by_its_requester() {
        let fake = Arc::new(FakeSource::default());
        fake.set_value(3.0);
        fake.set_delay(Duration::from_millis(5));
        let engine = engine_with(fake.clone(), settings(), limits());
        for key in ["a", "b"] {
            let started = Instant::now();
            assert_eq!(engine.measure("fake", &query(key)).await, Ok(3.0));
            assert_eq!(
                started.elapsed(),
                Duration::from_millis(5),
                "{key}: only the read's own time, also right after another cold read"
            );
        }
        assert_eq!(fake.batches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_storm_of_new_measurements_is_read_in_a_few_batches() {
        let fake = Arc::new(FakeSource::default());
        fake.set_value(1.0);
        fake.set_delay(Duration::from_millis(2));
        let limits = Limits {
            idle_expiry: Duration::from_secs(60),
            max_live: 20_000,
        };
        let engine = engine_with(fake.clone(), settings(), limits);
        // No refresher: every read counted here is a cold one.

        // 10,000 never-seen measurements asked for within one second, 100 every 10 ms.
        let started = Instant::now();
        let mut requests = Vec::new();
        for wave in 0..100 {
            for i in 0..100 {
                let engine = engine.clone();
                let q = query(&format!("queue-{wave}-{i}"));
                requests.push(tokio::spawn(async move {
                    let answer = engine.measure("fake", &q).await;
                    (answer, Instant::now())
                }));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let last_request = Instant::now();
        for request in requests {
            let (answer, answered) = request.await.unwrap();
            assert_eq!(answer, Ok(1.0));
            assert!(answered - last_request <= Duration::from_secs(1));
        }
        let batches = fake.batches.load(Ordering::SeqCst);
        assert!(
            batches <= 20,
            "{batches} batches for 10,000 cold reads within {:?}",
            last_request - started
        );
        assert_eq!(
            fake.queries_read.load(Ordering::SeqCst),
            10_000,
            "each read once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cold_reads_queued_when_the_refresher_ticks_join_its_batch() {
        let fake = Arc::new(FakeSource::default());
        fake.set_value(2.0);
        let engine = engine_with(fake.clone(), settings(), limits());
        engine.start(CancellationToken::new());
        assert_eq!(engine.measure("fake", &query("warm")).await, Ok(2.0));
        // Just before the refresher's tick at 1 s: one cold read at once, then one queued
        // for the window's end, which the tick reaches first.
        tokio::time::sleep(Duration::from_millis(950)).await;
        let batches = fake.batches.load(Ordering::SeqCst);
        let (new_1, new_2) = (query("new-1"), query("new-2"));
        let (first, second) = tokio::join!(
            engine.measure("fake", &new_1),
            engine.measure("fake", &new_2)
        );
        assert_eq!((first, second), (Ok(2.0), Ok(2.0)));
        assert_eq!(
            fake.batches.load(Ordering::SeqCst) - batches,
            2,
            "new-1 read at once, new-2 with the refresh of `warm` and `new-1`"
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
        assert!(started.elapsed() <= settings().timeout + COLD_BATCH_WINDOW + COLD_WAIT_SLACK);
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
        assert_eq!(engine.measure("fake", &query("good")).await, Ok(4.0));
        tokio::time::sleep(COLD_BATCH_WINDOW).await;
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
