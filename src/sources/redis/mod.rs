//! Redis sources: queue backlogs read with one pipelined round trip per refresh.
//!
//! [`query`] owns what is read and how replies add up; this module owns the connection and
//! the batching: the reads of every query of a refresh are de-duplicated (a thousand
//! ScaledObjects over ten queues cost ten LLENs) and sent as one pipeline.

use std::{collections::HashMap, time::Duration};

use futures::future::BoxFuture;
use redis::{
    Value,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use tokio::sync::Mutex;

use crate::{Error, Result, config::RedisConfig, sources::Query};

pub mod query;

pub use query::{METRICS, RedisQuery, RedisRead};

/// A standalone Redis server.
pub struct RedisSource {
    name: String,
    client: redis::Client,
    timeout: Duration,
    /// Made on first use and kept: the manager reconnects by itself after a failure.
    connection: Mutex<Option<ConnectionManager>>,
}

impl RedisSource {
    pub fn new(name: &str, config: &RedisConfig, timeout: Duration) -> Result<Self> {
        // The parse error of redis-rs does not echo the URL, but say nothing of it anyway:
        // the URL may hold a password.
        let client = redis::Client::open(config.url.expose()).map_err(|e| {
            Error::Internal(format!(
                "source `{name}`: the Redis URL is not valid ({:?})",
                e.kind()
            ))
        })?;
        Ok(RedisSource {
            name: name.to_string(),
            client,
            timeout,
            connection: Mutex::new(None),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_with_config(self.client.clone(), config)
            .await
            .map_err(|e| self.unavailable(&e))?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    fn unavailable(&self, error: &redis::RedisError) -> Error {
        Error::unavailable(&self.name, describe(error))
    }

    /// Sends `reads` as one pipeline; errors of single commands come back as
    /// `Value::ServerError` in their place, so one bad key does not fail the others.
    async fn pipeline(&self, reads: &[RedisRead]) -> Result<Vec<Value>> {
        let mut connection = self.connection().await?;
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for read in reads {
            pipe.add_command(read.command());
        }
        let replies: Vec<Value> = pipe
            .query_async(&mut connection)
            .await
            .map_err(|e| self.unavailable(&e))?;
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
        let plans: Vec<Vec<RedisRead>> = queries
            .iter()
            .map(|query| match query {
                Query::Redis(query) => query.reads(now_ms),
                _ => Vec::new(),
            })
            .collect();
        let mut unique: Vec<RedisRead> = Vec::new();
        let mut index: HashMap<&RedisRead, usize> = HashMap::new();
        for read in plans.iter().flatten() {
            index.entry(read).or_insert_with(|| {
                unique.push(read.clone());
                unique.len() - 1
            });
        }
        let replies = match self.pipeline(&unique).await {
            Ok(replies) => replies,
            Err(error) => return vec![Err(error); queries.len()],
        };
        queries
            .iter()
            .zip(&plans)
            .map(|(query, plan)| {
                let Query::Redis(query) = query else {
                    return Err(Error::Internal(format!(
                        "source `{}` got a query of another source type",
                        self.name
                    )));
                };
                let mine: Vec<&Value> = plan.iter().map(|read| &replies[index[read]]).collect();
                query.combine(&self.name, &mine)
            })
            .collect()
    }
}

impl super::Source for RedisSource {
    fn read_batch<'a>(&'a self, queries: &'a [Query]) -> BoxFuture<'a, Vec<Result<f64>>> {
        Box::pin(self.read_all(queries))
    }

    fn probe(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            redis::cmd("PING")
                .query_async::<()>(&mut connection)
                .await
                .map_err(|e| self.unavailable(&e))
        })
    }
}

/// A short, secret-free description of a Redis client error.
fn describe(error: &redis::RedisError) -> String {
    if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connection_refusal() {
        "connection refused".to_string()
    } else if error.is_io_error() || error.is_connection_dropped() {
        format!("connection failed ({:?})", error.kind())
    } else {
        match error.code() {
            Some(code) => format!("Redis answered {code}"),
            None => format!("{:?}", error.kind()),
        }
    }
}
