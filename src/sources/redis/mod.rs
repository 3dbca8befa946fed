//! Redis sources: queue backlogs read with one pipelined round trip per node per refresh.
//!
//! [`query`] owns what is read and how replies add up; this module owns the connections and
//! the batching: the reads of every query of a refresh are de-duplicated (a thousand
//! ScaledObjects over ten queues cost ten LLENs) and sent as one pipeline — on Redis Cluster
//! one per hash slot ([`cluster`]), on Sentinel to the current master ([`sentinel`]).
//! Every call is bounded by connection and response timeouts derived from the source's
//! `timeout`, with at most one retry.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use futures::future::BoxFuture;
use redis::{
    ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, Value,
    aio::{ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
};
use tokio::sync::Mutex;

use crate::{
    Error, Result,
    config::{RedisConfig, RedisTopology},
    sources::Query,
};

pub mod cluster;
pub mod query;
pub mod sentinel;

pub use query::{METRICS, RedisQuery, RedisRead};

/// Credentials and TLS settings shared by every node of a source.
#[derive(Clone)]
pub struct NodeSettings {
    username: Option<String>,
    password: Option<crate::config::Secret>,
    /// PEM bytes of the CA that signed the nodes' certificates.
    ca_pem: Option<Vec<u8>>,
    /// Connect with TLS (`rediss://` URLs or a CA file).
    tls: bool,
}

impl NodeSettings {
    fn new(source: &str, config: &RedisConfig, urls: &[&str]) -> Result<Self> {
        let ca_pem = match &config.tls_ca_file {
            Some(path) => Some(read_ca(source, path)?),
            None => None,
        };
        Ok(NodeSettings {
            username: config.username.clone(),
            password: config.password.clone(),
            tls: ca_pem.is_some() || urls.iter().any(|u| u.starts_with("rediss://")),
            ca_pem,
        })
    }

    /// Adds the configured user and password to a node's settings (a URL's own win).
    fn apply(&self, mut redis: RedisConnectionInfo) -> RedisConnectionInfo {
        if redis.username().is_none()
            && let Some(username) = &self.username
        {
            redis = redis.set_username(username);
        }
        if redis.password().is_none()
            && let Some(password) = &self.password
        {
            redis = redis.set_password(password.expose());
        }
        redis
    }

    fn info(&self, url: &str, source: &str) -> Result<ConnectionInfo> {
        // redis-rs's parse errors do not echo the URL, and neither do we: it may hold a password.
        let info = url.into_connection_info().map_err(|e| {
            Error::Internal(format!(
                "source `{source}`: a Redis URL is not valid ({:?})",
                e.kind()
            ))
        })?;
        let redis = self.apply(info.redis_settings().clone());
        Ok(info.set_redis_settings(redis))
    }

    fn client(&self, info: ConnectionInfo, source: &str) -> Result<redis::Client> {
        let client = match &self.ca_pem {
            Some(pem) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => redis::Client::open(info),
        };
        client.map_err(|e| Error::Internal(format!("source `{source}`: {}", describe(&e))))
    }
}

fn read_ca(source: &str, path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::Internal(format!(
            "source `{source}`: cannot read tls_ca_file {}: {}",
            path.display(),
            e.kind()
        ))
    })
}

enum Backend {
    Standalone {
        client: redis::Client,
        /// Made on first use and kept: the manager reconnects by itself after a failure.
        connection: Mutex<Option<ConnectionManager>>,
    },
    Cluster {
        /// Building it makes no connection; the connection is made on first use and kept.
        client: redis::cluster::ClusterClient,
        connection: Mutex<Option<ClusterConnection>>,
    },
    Sentinel(sentinel::SentinelBackend),
}

/// A Redis source of any topology.
pub struct RedisSource {
    name: String,
    timeout: Duration,
    backend: Backend,
}

impl RedisSource {
    pub fn new(name: &str, config: &RedisConfig, timeout: Duration) -> Result<Self> {
        let backend = match &config.topology {
            RedisTopology::Standalone { url } => {
                let node = NodeSettings::new(name, config, &[url.expose()])?;
                let client = node.client(node.info(url.expose(), name)?, name)?;
                Backend::Standalone {
                    client,
                    connection: Mutex::new(None),
                }
            }
            RedisTopology::Cluster { urls } => {
                let exposed: Vec<&str> = urls.iter().map(|u| u.expose()).collect();
                let node = NodeSettings::new(name, config, &exposed)?;
                let infos = exposed
                    .iter()
                    .map(|url| node.info(url, name))
                    .collect::<Result<Vec<_>>>()?;
                let mut builder = ClusterClientBuilder::new(infos)
                    .connection_timeout(timeout / 2)
                    .response_timeout(timeout / 2)
                    .retries(1);
                if let Some(username) = &node.username {
                    builder = builder.username(username);
                }
                if let Some(password) = &node.password {
                    builder = builder.password(password.expose());
                }
                if let Some(pem) = &node.ca_pem {
                    builder = builder.certs(redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem.clone()),
                    });
                }
                let client = builder
                    .build()
                    .map_err(|e| Error::Internal(format!("source `{name}`: {}", describe(&e))))?;
                Backend::Cluster {
                    client,
                    connection: Mutex::new(None),
                }
            }
            RedisTopology::Sentinel { urls, master } => {
                let exposed: Vec<&str> = urls.iter().map(|u| u.expose()).collect();
                let node = NodeSettings::new(name, config, &exposed)?;
                Backend::Sentinel(sentinel::SentinelBackend::new(
                    name, urls, master, node, timeout,
                )?)
            }
        };
        Ok(RedisSource {
            name: name.to_string(),
            timeout,
            backend,
        })
    }

    async fn standalone(
        &self,
        client: &redis::Client,
        slot: &Mutex<Option<ConnectionManager>>,
    ) -> Result<ConnectionManager> {
        let mut slot = slot.lock().await;
        if let Some(connection) = slot.as_ref() {
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
        *slot = Some(connection.clone());
        Ok(connection)
    }

    async fn cluster(
        &self,
        client: &redis::cluster::ClusterClient,
        slot: &Mutex<Option<ClusterConnection>>,
    ) -> Result<ClusterConnection> {
        let mut slot = slot.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let connection = client
            .get_async_connection()
            .await
            .map_err(|e| self.unavailable(&e))?;
        *slot = Some(connection.clone());
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
        let replies: Vec<Value> = match &self.backend {
            Backend::Standalone { client, connection } => {
                let mut connection = self.standalone(client, connection).await?;
                one_pipeline(reads)
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| self.unavailable(&e))?
            }
            Backend::Cluster { client, connection } => {
                let connection = self.cluster(client, connection).await?;
                cluster::pipeline_per_slot(&self.name, &connection, reads).await?
            }
            Backend::Sentinel(sentinel) => {
                let mut connection = sentinel.connection().await?;
                match one_pipeline(reads).query_async(&mut connection).await {
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
        // A read of one key through the same path as real reads: a missing key answers 0.
        Box::pin(async move {
            self.pipeline(&[RedisRead::Llen("backlog-scaler:probe".into())])
                .await
                .map(drop)
        })
    }
}

fn one_pipeline(reads: &[RedisRead]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for read in reads {
        pipe.add_command(read.command());
    }
    pipe
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
