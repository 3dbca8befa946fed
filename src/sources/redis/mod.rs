//! Redis sources: queue backlogs read with one pipelined round trip per node per refresh, and
//! queue latencies with at most two.
//!
//! [`config`] parses the source's config section into clients, [`metrics`] declares the
//! metrics and their metadata keys, [`query`] owns what each backlog reads and how its
//! replies add up ([`latency`] for `measure: latency`), on top of three leaves that use
//! nothing above them: [`read`] (the read commands), [`reply`] (decoding replies, and which
//! server errors make a source unavailable) and [`libraries`] (wire facts of the queue
//! libraries that both kinds of query share). This module owns the connections and
//! the batching: the reads of every query of a refresh are de-duplicated (a thousand
//! ScaledObjects over ten queues cost ten LLENs) and sent as one pipeline — on Redis Cluster
//! one per hash slot ([`cluster`]), on Sentinel to the current master ([`sentinel`]). Reads
//! that need a reply of that pipeline (a latency's job hash, after the job id) go out,
//! de-duplicated the same way, as one second pipeline; a refresh of backlogs only has none.
//! Every call is bounded by connection and response timeouts derived from the source's
//! `timeout`, with at most one retry.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use redis::{
    Value,
    aio::{ConnectionManager, ConnectionManagerConfig},
    cluster_async::ClusterConnection,
};
use tokio::sync::Mutex;

use crate::{
    Error, Result,
    error::ConfigError,
    metadata::{Metadata, Parsed, metric_names},
    sources::{Backend, CheckReport, Query, Section, Source, typed},
};

pub mod check;
pub mod cluster;
pub mod config;
pub mod latency;
pub mod libraries;
pub mod metrics;
pub mod query;
pub mod read;
pub mod reply;
pub mod sentinel;

use config::{RedisSettings, Topology};
pub use query::RedisQuery;
pub use read::RedisRead;
use reply::describe;

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
            section.refresh.timeout,
        )))
    }
}

/// A connection made on first use and kept: both client kinds reconnect by themselves after a
/// failure.
type LazyConnection<C> = Mutex<Option<C>>;

enum Connections {
    Standalone {
        client: redis::Client,
        connection: LazyConnection<ConnectionManager>,
    },
    Cluster {
        client: redis::cluster::ClusterClient,
        connection: LazyConnection<ClusterConnection>,
    },
    Sentinel(sentinel::SentinelBackend),
}

/// A Redis source of any topology.
pub struct RedisSource {
    name: String,
    timeout: Duration,
    connections: Connections,
}

impl RedisSource {
    /// Makes no connection.
    pub fn new(name: &str, settings: RedisSettings, timeout: Duration) -> Self {
        let connections = match settings.topology {
            Topology::Standalone(client) => Connections::Standalone {
                client: *client,
                connection: Mutex::new(None),
            },
            Topology::Cluster(client) => Connections::Cluster {
                client: *client,
                connection: Mutex::new(None),
            },
            Topology::Sentinel { sentinels, master } => Connections::Sentinel(
                sentinel::SentinelBackend::new(name, sentinels, master, settings.node, timeout),
            ),
        };
        RedisSource {
            name: name.to_string(),
            timeout,
            connections,
        }
    }

    async fn standalone(
        &self,
        client: &redis::Client,
        cell: &LazyConnection<ConnectionManager>,
    ) -> Result<ConnectionManager> {
        let mut cell = cell.lock().await;
        if let Some(connection) = cell.as_ref() {
            return Ok(connection.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout / 2))
            .set_response_timeout(Some(self.timeout / 2))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| self.unavailable(&e))?;
        *cell = Some(connection.clone());
        Ok(connection)
    }

    async fn cluster(
        &self,
        client: &redis::cluster::ClusterClient,
        cell: &LazyConnection<ClusterConnection>,
    ) -> Result<ClusterConnection> {
        let mut cell = cell.lock().await;
        if let Some(connection) = cell.as_ref() {
            return Ok(connection.clone());
        }
        let connection = client
            .get_async_connection()
            .await
            .map_err(|e| self.unavailable(&e))?;
        *cell = Some(connection.clone());
        Ok(connection)
    }

    fn unavailable(&self, error: &redis::RedisError) -> Error {
        Error::unavailable(&self.name, describe(error))
    }

    /// Sends `reads` as one pipeline per node; errors of single commands come back as
    /// `Value::ServerError` in their place, so one bad key does not fail the others.
    async fn pipeline(&self, reads: &[RedisRead]) -> Result<Vec<Value>> {
        if reads.is_empty() {
            return Ok(Vec::new());
        }
        let replies: Vec<Value> = match &self.connections {
            Connections::Standalone { client, connection } => {
                let mut connection = self.standalone(client, connection).await?;
                let pipeline = one_pipeline(reads);
                match pipeline.query_async(&mut connection).await {
                    Ok(replies) => replies,
                    // The manager has started reconnecting; the retry waits for that.
                    Err(error) if worth_one_retry(&error) => pipeline
                        .query_async(&mut connection)
                        .await
                        .map_err(|e| self.unavailable(&e))?,
                    Err(error) => return Err(self.unavailable(&error)),
                }
            }
            Connections::Cluster { client, connection } => {
                let connection = self.cluster(client, connection).await?;
                cluster::pipeline_per_slot(&self.name, &connection, reads).await?
            }
            Connections::Sentinel(sentinel) => {
                let pipeline = one_pipeline(reads);
                let mut connection = sentinel.connection().await?;
                let mut answer = pipeline.query_async(&mut connection).await;
                if answer.as_ref().is_err_and(worth_one_retry) {
                    // Asks the Sentinels again and connects anew.
                    sentinel.forget_master().await;
                    let mut connection = sentinel.connection().await?;
                    answer = pipeline.query_async(&mut connection).await;
                }
                match answer {
                    Ok(replies) => replies,
                    Err(error) => {
                        sentinel.forget_master().await;
                        return Err(self.unavailable(&error));
                    }
                }
            }
        };
        if replies.len() != reads.len() {
            return Err(Error::Internal(format!(
                "source `{}`: {} replies to {} reads",
                self.name,
                replies.len(),
                reads.len()
            )));
        }
        Ok(replies)
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
        let replies = self.pipeline(&unique).await?;
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
        Box::pin(check::probe(self))
    }

    fn check(&self) -> BoxFuture<'_, Result<CheckReport>> {
        Box::pin(check::check(self))
    }
}

/// A kept connection that died while idle (the server restarted, a proxy dropped it) fails
/// its next command at once; a fresh connection may well succeed, and the budget has room for
/// it. A timeout has spent half the budget already, so it is not retried.
fn worth_one_retry(error: &redis::RedisError) -> bool {
    !error.is_timeout() && (error.is_io_error() || error.is_connection_dropped())
}

/// Queries read in one round trip (one pipeline per node). A refresh builds its commands,
/// buffers and replies for each query it sends at once, about 0.7 KiB each (heaptrack, in
/// BENCHMARKS.md): 2,000 bound that to ~1.4 MiB however many measurements are live, and a
/// round of 2,000 LLENs takes a few milliseconds, so 20,000 measurements still refresh in
/// well under 100 ms.
const QUERIES_PER_ROUND: usize = 2_000;

fn one_pipeline(reads: &[RedisRead]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for read in reads {
        pipe.add_command(read.command());
    }
    pipe
}
