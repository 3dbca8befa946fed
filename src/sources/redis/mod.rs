//! Redis sources: queue backlogs read with one pipelined round trip per node per refresh, and
//! queue latencies with at most two.
//!
//! [`config`] parses the source's config section into clients, [`metrics`] declares the
//! metrics and their metadata keys, [`query`] owns what each backlog reads and how its
//! replies add up ([`latency`] for `measure: latency`, [`in_progress`] for the jobs in
//! progress that `includeActive` adds), on top of three leaves that use
//! nothing above them: [`read`] (the read commands), [`reply`] (decoding replies, and which
//! server errors make a source unavailable) and [`libraries`] (wire facts of the queue
//! libraries that both kinds of query share). This module owns the connections and
//! the batching: the reads of every query of a refresh are de-duplicated (a thousand
//! ScaledObjects over ten queues cost ten LLENs) and sent as one pipeline — on Redis Cluster
//! one per hash slot ([`cluster`]), on Sentinel to the current master ([`sentinel`]). Reads
//! that need a reply of that pipeline (a latency's job hash, after the job id; the work
//! hashes of the Sidekiq processes listed) go out, de-duplicated the same way, as one second
//! pipeline; a refresh of plain backlogs has none.
//! Every call is bounded by connection and response timeouts derived from the source's
//! `timeout`, with at most one retry (`connections.rs`). [`events`] makes the source
//! event-driven: Redis reports each change of a key the measurements read, and the engine
//! re-reads at once.

use std::{collections::HashMap, sync::Arc};

use futures::future::BoxFuture;
use redis::Value;

use crate::{
    Result,
    error::ConfigError,
    metadata::{Metadata, Parsed, metric_names},
    sources::{Backend, ChangeFeed, CheckReport, Query, RefreshSettings, Section, Source, typed},
};

pub mod check;
pub mod cluster;
pub mod config;
mod connections;
pub mod events;
pub mod in_progress;
pub mod key;
pub mod latency;
pub mod libraries;
pub mod metrics;
pub mod query;
pub mod read;
pub mod reply;
pub mod sentinel;

use config::RedisSettings;
use connections::Connections;
pub use query::RedisQuery;
pub use read::RedisRead;

/// `type = "redis"`, `"redis-cluster"` and `"redis-sentinel"`.
pub struct RedisBackend;

impl Backend for RedisBackend {
    fn types(&self) -> &'static [&'static str] {
        &["redis", "redis-cluster", "redis-sentinel"]
    }

    fn configure(&self, section: Section) -> Result<Arc<dyn Source>, ConfigError> {
        let settings = config::parse(&section)?;
        Ok(Arc::new(RedisSource::new(
            &section.name,
            settings,
            section.refresh,
        )))
    }
}

/// A Redis source of any topology.
pub struct RedisSource {
    name: String,
    connections: Connections,
    events: events::Events,
}

impl RedisSource {
    /// Makes no connection.
    pub fn new(name: &str, settings: RedisSettings, refresh: RefreshSettings) -> Self {
        let events = events::Events::new(settings.node.clone(), refresh);
        RedisSource {
            name: name.to_string(),
            connections: Connections::new(name, settings, refresh.timeout),
            events,
        }
    }

    /// Whether the source is event-driven, and if not, why.
    pub fn events_mode(&self) -> events::Mode {
        self.events.mode()
    }

    async fn read_all(&self, queries: &[Query]) -> Vec<Result<f64>> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let typed: Vec<Result<&RedisQuery>> =
            queries.iter().map(|q| typed(&self.name, q)).collect();
        let plans: Vec<Vec<RedisRead>> = typed
            .iter()
            .map(|query| {
                query
                    .as_ref()
                    .map_or_else(|_| Vec::new(), |q| q.reads(now_ms))
            })
            .collect();
        let first = match self.round(&plans).await {
            Ok(round) => round,
            Err(error) => return vec![Err(error); queries.len()],
        };
        let follow_up_plans: Vec<Vec<RedisRead>> = typed
            .iter()
            .zip(&plans)
            .map(|(query, plan)| match query {
                Ok(query) => query.follow_up_reads(&first.replies(plan)),
                Err(_) => Vec::new(),
            })
            .collect();
        // Only the queries that asked for follow-ups depend on the second round.
        let second = self.round(&follow_up_plans).await;
        typed
            .into_iter()
            .zip(plans.iter().zip(&follow_up_plans))
            .map(|(query, (plan, follow_up_plan))| {
                let follow_up_replies = match &second {
                    Ok(second) => second.replies(follow_up_plan),
                    Err(error) if !follow_up_plan.is_empty() => return Err(error.clone()),
                    Err(_) => Vec::new(),
                };
                query?.combine(&self.name, now_ms, &first.replies(plan), &follow_up_replies)
            })
            .collect()
    }

    /// Sends the reads of every plan, de-duplicated, as one pipeline per node (none when
    /// there is nothing to read).
    async fn round(&self, plans: &[Vec<RedisRead>]) -> Result<Round> {
        // A thousand triggers over ten queues cost ten reads.
        let mut unique: Vec<RedisRead> = Vec::new();
        let mut index: HashMap<RedisRead, usize> = HashMap::new();
        for read in plans.iter().flatten() {
            index.entry(read.clone()).or_insert_with(|| {
                unique.push(read.clone());
                unique.len() - 1
            });
        }
        let replies = self.connections.pipeline(&unique).await?;
        Ok(Round { index, replies })
    }
}

/// The de-duplicated reads of one round trip and their replies.
struct Round {
    index: HashMap<RedisRead, usize>,
    replies: Vec<Value>,
}

impl Round {
    /// The replies to `plan`, each beside its read. Every read of `plan` was sent.
    fn replies<'a>(&'a self, plan: &'a [RedisRead]) -> Vec<(&'a RedisRead, &'a Value)> {
        plan.iter()
            .map(|read| (read, &self.replies[self.index[read]]))
            .collect()
    }
}

impl Source for RedisSource {
    fn family(&self) -> &'static str {
        "a Redis"
    }

    fn metrics(&self) -> String {
        metric_names(metrics::METRICS)
    }

    fn parse(&self, metric: &str, md: &Metadata<'_>) -> Result<Parsed<Query>> {
        super::parse_query(metrics::METRICS, metric, md, &())
    }

    fn read_batch<'a>(&'a self, queries: &'a [Query]) -> BoxFuture<'a, Vec<Result<f64>>> {
        Box::pin(async move {
            let mut outcomes = Vec::with_capacity(queries.len());
            for chunk in queries.chunks(QUERIES_PER_ROUND) {
                outcomes.extend(self.read_all(chunk).await);
            }
            outcomes
        })
    }

    fn probe(&self) -> BoxFuture<'_, Result<()>> {
        // A read of one key through the same path as real reads (a missing key answers 0),
        // judged as a trigger's reply is: NOAUTH is a source that does not answer.
        Box::pin(check::probe(&self.connections))
    }

    fn check(&self) -> BoxFuture<'_, Result<CheckReport>> {
        Box::pin(async move {
            let mut report = check::check(&self.connections).await?;
            report
                .findings
                .push(events::check(&self.connections, &self.events).await);
            Ok(report)
        })
    }

    fn watch(&self, changes: Arc<ChangeFeed>) -> Option<BoxFuture<'_, ()>> {
        Some(Box::pin(events::run(
            &self.connections,
            &self.events,
            changes,
        )))
    }

    fn event_driven(&self) -> bool {
        self.events.event_driven()
    }

    fn live(&self, added: &[Query], removed: &[Query]) {
        self.events.live(added, removed);
    }
}

/// Queries read in one round trip (one pipeline per node). A refresh builds its commands,
/// buffers and replies for each query it sends at once, about 0.7 KiB each (heaptrack, in
/// BENCHMARKS.md): 2,000 bound that to ~1.4 MiB however many measurements are live, and a
/// round of 2,000 LLENs takes a few milliseconds, so 20,000 measurements still refresh in
/// well under 100 ms.
const QUERIES_PER_ROUND: usize = 2_000;
