//! A backend in trouble as KEDA sees it. A [`Drill`] runs the scaler with the source under test
//! and a healthy control source, puts the backend through a fault — frozen, killed then
//! restarted, restarted at once, down when the scaler starts — and checks every answer on the
//! way, not just the last one:
//!
//! - each GetMetrics for the source answers within its `timeout` + [`ANSWER_SLACK`], never
//!   hangs;
//! - it is the last value read before the fault, and only while that read is younger than
//!   `max_staleness`, or UNAVAILABLE naming the source; the fault is reported within one
//!   refresh and one read ([`WITHIN_ONE_REFRESH`]);
//! - the control source keeps answering its value, liveness and readiness stay SERVING;
//! - once the backend is back, the source answers its value within [`WITHIN_ONE_REFRESH`],
//!   and a job added then is counted within one more: the scaler reads the backend again,
//!   without a restart.
//!
//! The bounds are small (`timeout = 500ms`, `refresh_interval = 250ms`) so a drill takes
//! seconds; [`measurements`] puts them in a config.

use std::{
    cell::Cell,
    future::Future,
    time::{Duration, Instant},
};

use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;

use super::{
    RedisServer, Scaler,
    pgbouncer::AdminPgBouncer,
    poll::{assert_throughout, poll_until},
    postgres::PostgresServer,
    push,
    redis_topology::{LoneMasterSentinel, RedisCluster},
    trigger::trigger_value,
};

/// Every source's read budget in a drill.
pub const TIMEOUT: Duration = Duration::from_millis(500);
/// Every source's refresh interval in a drill.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(250);
/// Every source's `max_staleness` in a drill: long enough that the control source, read every
/// 250 ms, never goes stale on a busy 2-core machine.
pub const MAX_STALENESS: Duration = Duration::from_secs(2);

/// An answer, whatever the backend does, comes within `timeout` plus this: a cold read waits
/// `timeout` + 300 ms at most (docs/operations.md), and the rest is the RPC on a shared
/// machine.
pub const ANSWER_SLACK: Duration = Duration::from_millis(500);

/// A fault is reported, and a recovery seen, within one refresh and one read of it, plus
/// 1 s of slack for scheduling and reconnecting.
pub const WITHIN_ONE_REFRESH: Duration =
    Duration::from_millis(REFRESH_INTERVAL.as_millis() as u64 + TIMEOUT.as_millis() as u64 + 1000);

/// How late after the fault a value read before it may still be served: the moment the test
/// takes as the fault's start comes a little before the signal lands.
const FAULT_LANDS_WITHIN: Duration = Duration::from_millis(100);

/// The `[measurements]` section of a drill's config: [`TIMEOUT`], [`REFRESH_INTERVAL`] and
/// [`MAX_STALENESS`] for every source.
pub fn measurements() -> String {
    format!(
        "[measurements]\ntimeout = \"{}ms\"\nrefresh_interval = \"{}ms\"\nmax_staleness = \"{}ms\"\n",
        TIMEOUT.as_millis(),
        REFRESH_INTERVAL.as_millis(),
        MAX_STALENESS.as_millis()
    )
}

/// `redis-server` arguments that keep the data across a kill (an append-only file, synced at
/// every write), so a restarted server holds what the trigger counted before.
pub const DURABLE_REDIS: &[&str] = &["--appendonly", "yes", "--appendfsync", "always"];

/// The healthy source every drill config has beside the one under test.
pub const CONTROL: &str = "control";
const CONTROL_PAIRS: &[(&str, &str)] = &[("metric", "redis-list"), ("keys", "control:jobs")];
const CONTROL_JOBS: usize = 3;

/// A backend that a [`Drill`] can put in trouble: the process (or node) behind a source, and
/// the data its trigger counts.
pub trait FaultTarget {
    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) it: TCP connections are still accepted by the
    /// kernel, but nothing answers.
    fn freeze(&self, frozen: bool);
    /// Waits, after a thaw, until it serves again (default: at once).
    fn thawed(&self) -> impl Future<Output = ()> {
        async {}
    }
    /// Kills it: connections are refused.
    fn kill(&mut self);
    /// Starts it again on the same port, with its data; returns once it serves.
    fn restart(&mut self) -> impl Future<Output = ()>;
    /// Adds one job to what the trigger counts, through a connection of the test's own.
    fn add_job(&self) -> impl Future<Output = ()>;
}

/// A Redis list on one server: standalone, or the master behind a Sentinel.
pub struct RedisList<'a> {
    pub server: &'a mut RedisServer,
    pub key: &'a str,
}

impl FaultTarget for RedisList<'_> {
    fn freeze(&self, frozen: bool) {
        self.server.freeze(frozen);
    }
    fn kill(&mut self) {
        self.server.stop();
    }
    async fn restart(&mut self) {
        self.server.resume();
    }
    async fn add_job(&self) {
        push(&mut self.server.connection().await, self.key, 1).await;
    }
}

/// The Sentinel process in front of a lone master, faulted while the master serves; jobs
/// go to the master.
pub struct SentinelProcess<'a> {
    pub setup: &'a mut LoneMasterSentinel,
    pub key: &'a str,
}

impl FaultTarget for SentinelProcess<'_> {
    fn freeze(&self, frozen: bool) {
        self.setup.freeze_sentinel(frozen);
    }
    fn kill(&mut self) {
        self.setup.kill_sentinel();
    }
    async fn restart(&mut self) {
        self.setup.restart_sentinel().await;
    }
    async fn add_job(&self) {
        push(&mut self.setup.master.connection().await, self.key, 1).await;
    }
}

/// A list on a Redis Cluster, faulted through the node that owns its slot. The cluster serves
/// again once every node says `cluster_state:ok`: the other masters mark a node that was
/// away longer than the node timeout (2 s) as failed and take twice that to forgive it.
pub struct ClusterList<'a> {
    pub cluster: &'a mut RedisCluster,
    pub node: usize,
    pub key: &'a str,
}

impl FaultTarget for ClusterList<'_> {
    fn freeze(&self, frozen: bool) {
        self.cluster.nodes[self.node].freeze(frozen);
    }
    async fn thawed(&self) {
        self.cluster.wait_until_ok().await;
    }
    fn kill(&mut self) {
        self.cluster.nodes[self.node].stop();
    }
    async fn restart(&mut self) {
        self.cluster.nodes[self.node].resume();
        self.cluster.wait_until_ok().await;
    }
    async fn add_job(&self) {
        push(&mut self.cluster.connection().await, self.key, 1).await;
    }
}

/// A table of PostgreSQL whose rows a named query counts: PostgreSQL itself is faulted.
pub struct PgTable<'a> {
    pub server: &'a mut PostgresServer,
    pub table: &'a str,
}

impl FaultTarget for PgTable<'_> {
    fn freeze(&self, frozen: bool) {
        self.server.freeze(frozen);
    }
    fn kill(&mut self) {
        self.server.kill();
    }
    async fn restart(&mut self) {
        self.server.resume().await;
    }
    async fn add_job(&self) {
        self.server
            .execute("postgres", &durable_insert(self.table))
            .await;
    }
}

/// One row more in `table`, kept by a kill: the test servers run with
/// `synchronous_commit=off`, under which a commit is acknowledged before its WAL is written.
pub fn durable_insert(table: &str) -> String {
    format!("SET synchronous_commit = on; INSERT INTO {table} DEFAULT VALUES")
}

/// The same table read through a PgBouncer: PgBouncer is faulted, PostgreSQL stays up.
pub struct BouncedPgTable<'a> {
    pub bouncer: &'a mut AdminPgBouncer,
    pub postgres: &'a PostgresServer,
    pub table: &'a str,
}

impl FaultTarget for BouncedPgTable<'_> {
    fn freeze(&self, frozen: bool) {
        self.bouncer.freeze(frozen);
    }
    fn kill(&mut self) {
        self.bouncer.stop();
    }
    async fn restart(&mut self) {
        self.bouncer.resume();
    }
    async fn add_job(&self) {
        self.postgres
            .execute("postgres", &durable_insert(self.table))
            .await;
    }
}

/// What a source answered while a helper of its backend was in trouble, by kind.
#[derive(Debug, Default)]
pub struct Meanwhile {
    /// The backend's current value: read from it all along.
    pub current: usize,
    /// The value read before the fault, while it could still be fresh.
    pub before_the_fault: usize,
    pub unavailable: usize,
}

/// The scaler with the source under test and a healthy control source, and the value the
/// source's trigger must read (the drill adds the jobs, so it knows).
pub struct Drill<'a> {
    config: String,
    pub scaler: Scaler,
    source: &'a str,
    pairs: &'a [(&'a str, &'a str)],
    value: Cell<f64>,
    max_staleness: Duration,
    _control: RedisServer,
}

impl<'a> Drill<'a> {
    /// Starts the control Redis and a scaler whose config is [`measurements`], the control
    /// source and `source_config`, and checks that the trigger `pairs` on `source` reads
    /// `value`.
    pub async fn start(
        source_config: &str,
        source: &'a str,
        pairs: &'a [(&'a str, &'a str)],
        value: f64,
    ) -> Drill<'a> {
        let drill = Self::start_cold(source_config, source, pairs, value).await;
        let answer = trigger_value(&drill.scaler, source, pairs).await;
        assert!(
            matches!(answer, Ok(read) if read == value),
            "{source} {pairs:?} before any fault: {answer:?}, not {value}"
        );
        drill
    }

    /// Starts like [`start`](Self::start), but asks nothing yet: for a backend that cannot
    /// answer when the scaler starts.
    pub async fn start_cold(
        source_config: &str,
        source: &'a str,
        pairs: &'a [(&'a str, &'a str)],
        value: f64,
    ) -> Drill<'a> {
        let control = RedisServer::start();
        push(
            &mut control.connection().await,
            "control:jobs",
            CONTROL_JOBS,
        )
        .await;
        let config = format!(
            "{}\n[sources.{CONTROL}]\ntype = \"redis\"\nurl = \"{}\"\n\n{source_config}",
            measurements(),
            control.url()
        );
        Drill {
            scaler: Scaler::start(&config).await,
            config,
            source,
            pairs,
            value: Cell::new(value),
            max_staleness: MAX_STALENESS,
            _control: control,
        }
    }

    /// For a source whose config sets its own `max_staleness`.
    pub fn with_max_staleness(mut self, max_staleness: Duration) -> Self {
        self.max_staleness = max_staleness;
        self
    }

    /// Every fault in turn, each followed by its recovery: frozen, killed and restarted later,
    /// restarted at once, down when a scaler starts.
    pub async fn every_fault(&self, target: &mut impl FaultTarget) {
        self.frozen(target).await;
        self.killed_then_restarted(target).await;
        self.restarted(target).await;
        self.down_at_start(target).await;
    }

    /// The backend is frozen: the outage is reported, and after the thaw the value is back.
    /// Returns the first UNAVAILABLE.
    pub async fn frozen(&self, target: &mut impl FaultTarget) -> Status {
        let fault = Instant::now();
        target.freeze(true);
        let reported = self.outage_is_reported("frozen", &self.scaler, fault).await;
        target.freeze(false);
        target.thawed().await;
        self.recovers("frozen", target).await;
        reported
    }

    /// The backend is killed: the outage is reported; it is restarted on the same port, and
    /// the value is back.
    pub async fn killed_then_restarted(&self, target: &mut impl FaultTarget) {
        let fault = Instant::now();
        target.kill();
        self.outage_is_reported("killed", &self.scaler, fault).await;
        target.restart().await;
        self.recovers("killed then restarted", target).await;
    }

    /// The backend is killed and started again at once: the scaler's connections are dead,
    /// and it reconnects by itself.
    pub async fn restarted(&self, target: &mut impl FaultTarget) {
        target.kill();
        target.restart().await;
        self.recovers("restarted", target).await;
    }

    /// The backend is down when a second scaler with the same config starts: its first
    /// answers are UNAVAILABLE (a cold read that cannot connect is bounded too), and it
    /// follows the backend once it is started.
    pub async fn down_at_start(&self, target: &mut impl FaultTarget) {
        target.kill();
        let scaler = Scaler::start(&self.config).await;
        let step = "down at start";
        self.unavailable_throughout(step, &scaler).await;
        target.restart().await;
        self.recovers_on(step, &scaler, target).await;
    }

    /// A process the source needs besides the backend (a Sentinel) is frozen while the
    /// backend serves: see [`backend_serves_on`](Self::backend_serves_on); after the thaw
    /// the source follows the backend again. Returns what was answered meanwhile.
    pub async fn helper_frozen(&self, target: &mut impl FaultTarget) -> Meanwhile {
        let step = "helper frozen";
        let fault = Instant::now();
        target.freeze(true);
        let meanwhile = self.backend_serves_on(step, target, fault).await;
        target.freeze(false);
        target.thawed().await;
        self.recovers(step, target).await;
        meanwhile
    }

    /// A process the source needs besides the backend (a Sentinel) is killed while the
    /// backend serves: see [`backend_serves_on`](Self::backend_serves_on); it is started
    /// again, and the source follows the backend. Returns what was answered meanwhile.
    pub async fn helper_killed_then_restarted(&self, target: &mut impl FaultTarget) -> Meanwhile {
        let step = "helper killed";
        let fault = Instant::now();
        target.kill();
        let meanwhile = self.backend_serves_on(step, target, fault).await;
        target.restart().await;
        self.recovers(step, target).await;
        meanwhile
    }

    /// Call right after a helper's fault began at `fault`. A job is added to the backend at
    /// once; then, for `max_staleness` and one refresh and one read, every answer is the new
    /// value (read from the backend the source still knows), or UNAVAILABLE naming the source
    /// (within the bound, as [`ask`](Self::ask) checks), or the value from before the fault
    /// while it may still be fresh: never a value older than `max_staleness`.
    async fn backend_serves_on(
        &self,
        step: &str,
        target: &impl FaultTarget,
        fault: Instant,
    ) -> Meanwhile {
        target.add_job().await;
        let added = self.value.get() + 1.0;
        let mut meanwhile = Meanwhile::default();
        let until = fault + self.max_staleness + WITHIN_ONE_REFRESH;
        assert_throughout(
            until.saturating_duration_since(Instant::now()),
            async || match self.ask(&self.scaler, step).await {
                Ok(value) if value == added => meanwhile.current += 1,
                Ok(value) => {
                    self.assert_read_before(step, value, fault);
                    meanwhile.before_the_fault += 1;
                }
                Err(_) => meanwhile.unavailable += 1,
            },
        )
        .await;
        self.value.set(added);
        meanwhile
    }

    /// Every answer of the source is UNAVAILABLE, for one refresh and one read (and its
    /// slack): the messages seen, each once.
    pub async fn unavailable(&self, step: &str) -> Vec<String> {
        self.unavailable_throughout(step, &self.scaler).await
    }

    /// Call once the backend serves again: see [`recovers_on`](Self::recovers_on).
    pub async fn recovers(&self, step: &str, target: &impl FaultTarget) {
        self.recovers_on(step, &self.scaler, target).await;
    }

    async fn unavailable_throughout(&self, step: &str, scaler: &Scaler) -> Vec<String> {
        let source = self.source;
        let mut messages = Vec::new();
        assert_throughout(WITHIN_ONE_REFRESH, async || {
            match self.ask(scaler, step).await {
                Ok(value) => panic!("{step}: {source} answered {value}"),
                Err(status) if !messages.iter().any(|m| m == status.message()) => {
                    messages.push(status.message().to_string());
                }
                Err(_) => {}
            }
        })
        .await;
        messages
    }

    /// Call right after the fault began at `fault`: the source answers UNAVAILABLE within
    /// [`WITHIN_ONE_REFRESH`] (until then only the last value, and only while it may still be
    /// younger than `max_staleness`), then nothing but UNAVAILABLE until `max_staleness` and
    /// one refresh have passed: a value read before the fault is never served again.
    async fn outage_is_reported(&self, step: &str, scaler: &Scaler, fault: Instant) -> Status {
        let source = self.source;
        let reported = poll_until(
            format!("{step}: {source} answers UNAVAILABLE"),
            WITHIN_ONE_REFRESH,
            async || {
                let answer = self.ask(scaler, step).await;
                if let Ok(value) = answer {
                    self.assert_read_before(step, value, fault);
                }
                answer
            },
            Result::is_err,
        )
        .await
        .expect_err("polled until UNAVAILABLE");
        let stale_from = fault + self.max_staleness + REFRESH_INTERVAL;
        assert_throughout(
            stale_from.saturating_duration_since(Instant::now()),
            async || {
                let answer = self.ask(scaler, step).await;
                assert!(
                    answer.is_err(),
                    "{step}: {source} answered again: {answer:?}"
                );
            },
        )
        .await;
        reported
    }

    /// Call once the backend is back. Until the source answers its value (within
    /// [`WITHIN_ONE_REFRESH`]) every answer is UNAVAILABLE, or the last value while it may
    /// still be fresh; then a job is added, and counted within one more refresh.
    async fn recovers_on(&self, step: &str, scaler: &Scaler, target: &impl FaultTarget) {
        let source = self.source;
        poll_until(
            format!("{step}: {source} recovers to {}", self.value.get()),
            WITHIN_ONE_REFRESH,
            async || {
                let answer = self.ask(scaler, step).await;
                // The backend kept its data: any value is that one (whether read again or
                // still the one read before the fault; the added job below tells them apart).
                if let Ok(value) = answer {
                    assert_eq!(
                        value,
                        self.value.get(),
                        "{step}: {source} while it recovers"
                    );
                }
                answer
            },
            |answer| matches!(answer, Ok(value) if *value == self.value.get()),
        )
        .await
        .expect("polled until the value");

        target.add_job().await;
        let (before, added) = (self.value.get(), self.value.get() + 1.0);
        poll_until(
            format!("{step}: {source} counts the job added after the recovery"),
            WITHIN_ONE_REFRESH,
            async || {
                let answer = self.ask(scaler, step).await;
                // Served from memory until the next refresh: the old value, then the new one.
                assert!(
                    matches!(answer, Ok(value) if value == before || value == added),
                    "{step}: {source} after the recovery: {answer:?}"
                );
                answer
            },
            |answer| matches!(answer, Ok(value) if *value == added),
        )
        .await
        .expect("polled until the new value");
        self.value.set(added);
    }

    /// A value served at or after `fault`: it must be the last one read before the fault, and
    /// served no later than `max_staleness` after it.
    fn assert_read_before(&self, step: &str, value: f64, fault: Instant) {
        let source = self.source;
        assert_eq!(
            value,
            self.value.get(),
            "{step}: {source} served a value other than the last one read before the fault"
        );
        let since_fault = fault.elapsed();
        assert!(
            since_fault <= self.max_staleness + FAULT_LANDS_WITHIN,
            "{step}: {source} served {value}, read before the fault, {since_fault:?} after it \
             (max_staleness {:?})",
            self.max_staleness
        );
    }

    /// One GetMetrics for the source, timed, and what must hold at every moment of a fault:
    /// the answer comes within [`TIMEOUT`] + [`ANSWER_SLACK`]; an error is UNAVAILABLE naming
    /// the source; the control source answers its value; liveness and readiness are SERVING.
    async fn ask(&self, scaler: &Scaler, step: &str) -> Result<f64, Status> {
        let source = self.source;
        let bound = TIMEOUT + ANSWER_SLACK;
        let asked = Instant::now();
        let answer = trigger_value(scaler, source, self.pairs).await;
        let took = asked.elapsed();
        assert!(
            took <= bound,
            "{step}: {source} answered in {took:?} (bound {bound:?}): {answer:?}"
        );
        if let Err(status) = &answer {
            assert_eq!(
                status.code(),
                Code::Unavailable,
                "{step}: {source}: {status:?}"
            );
            assert!(
                status.message().contains(source),
                "{step}: the message names {source}: {status:?}"
            );
        }

        let asked = Instant::now();
        let control = trigger_value(scaler, CONTROL, CONTROL_PAIRS).await;
        let took = asked.elapsed();
        assert!(took <= bound, "{step}: {CONTROL} answered in {took:?}");
        assert_eq!(
            control.ok(),
            Some(CONTROL_JOBS as f64),
            "{step}: another source keeps answering while {source} is in trouble"
        );
        for service in ["liveness", "readiness"] {
            assert_eq!(
                scaler.health(service).await,
                ServingStatus::Serving,
                "{step}: {service} while {source} is in trouble and {CONTROL} answers"
            );
        }
        answer
    }
}
