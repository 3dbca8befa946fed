//! A source's connections: made on first use and kept (both client kinds reconnect by
//! themselves), every call bounded by the source's `timeout`, with at most one retry; and the
//! one way reads go out: one pipeline per node.

use std::time::Duration;

use redis::{
    Value,
    aio::{ConnectionManager, ConnectionManagerConfig},
    cluster_async::ClusterConnection,
};
use tokio::sync::Mutex;

use super::{
    cluster,
    config::{RedisSettings, Topology},
    read::RedisRead,
    reply::unavailable,
    sentinel,
};
use crate::{Error, Result};

/// The connections of one source and what bounds them.
pub(super) struct Connections {
    pub(super) name: String,
    timeout: Duration,
    pub(super) nodes: Nodes,
}

/// A connection made on first use and kept: both client kinds reconnect by themselves after a
/// failure.
type LazyConnection<C> = Mutex<Option<C>>;

pub(super) enum Nodes {
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

impl Connections {
    /// Makes no connection.
    pub fn new(name: &str, settings: RedisSettings, timeout: Duration) -> Self {
        let nodes = match settings.topology {
            Topology::Standalone(client) => Nodes::Standalone {
                client: *client,
                connection: Mutex::new(None),
            },
            Topology::Cluster(client) => Nodes::Cluster {
                client: *client,
                connection: Mutex::new(None),
            },
            Topology::Sentinel { sentinels, master } => Nodes::Sentinel(
                sentinel::SentinelBackend::new(name, sentinels, master, settings.node, timeout),
            ),
        };
        Connections {
            name: name.to_string(),
            timeout,
            nodes,
        }
    }

    pub(super) async fn standalone(
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

    pub(super) async fn cluster(
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
        unavailable(&self.name, error)
    }

    /// Sends `reads` as one pipeline per node; errors of single commands come back as
    /// `Value::ServerError` in their place, so one bad key does not fail the others.
    pub(super) async fn pipeline(&self, reads: &[RedisRead]) -> Result<Vec<Value>> {
        if reads.is_empty() {
            return Ok(Vec::new());
        }
        let replies: Vec<Value> = match &self.nodes {
            Nodes::Standalone { client, connection } => {
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
            Nodes::Cluster { client, connection } => {
                let connection = self.cluster(client, connection).await?;
                cluster::pipeline_per_slot(&self.name, &connection, reads).await?
            }
            Nodes::Sentinel(sentinel) => {
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
}

/// A kept connection that died while idle (the server restarted, a proxy dropped it) fails
/// its next command at once; a fresh connection may well succeed, and the budget has room for
/// it. A timeout has spent half the budget already, so it is not retried.
fn worth_one_retry(error: &redis::RedisError) -> bool {
    !error.is_timeout() && (error.is_io_error() || error.is_connection_dropped())
}

fn one_pipeline(reads: &[RedisRead]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for read in reads {
        pipe.add_command(read.command());
    }
    pipe
}
