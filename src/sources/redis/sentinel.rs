//! Redis Sentinel: find the master by asking the Sentinels, and follow it after a failover.
//!
//! Every read first asks a Sentinel `SENTINEL get-master-addr-by-name` (one cheap command per
//! refresh, on a kept connection) and reconnects when the answer changed, so after a failover
//! the scaler reads the new master within one refresh, without a restart.

use std::time::Duration;

use redis::{
    AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, aio::MultiplexedConnection,
};
use tokio::sync::Mutex;

use super::{config::NodeSettings, reply::describe};
use crate::{Error, Result};

pub struct SentinelBackend {
    source: String,
    master_name: String,
    sentinels: Vec<redis::Client>,
    /// Kept connections to the Sentinels, by index.
    sentinel_connections: Mutex<Vec<Option<MultiplexedConnection>>>,
    /// The master's address and the connection to it.
    master: Mutex<Option<(String, u16, MultiplexedConnection)>>,
    node: NodeSettings,
    timeout: Duration,
}

impl SentinelBackend {
    /// Makes no connection.
    pub fn new(
        source: &str,
        sentinels: Vec<redis::Client>,
        master_name: String,
        node: NodeSettings,
        timeout: Duration,
    ) -> Self {
        SentinelBackend {
            source: source.to_string(),
            master_name,
            sentinel_connections: Mutex::new(vec![None; sentinels.len()]),
            sentinels,
            master: Mutex::new(None),
            node,
            timeout,
        }
    }

    fn config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout / 2))
            .set_response_timeout(Some(self.timeout / 2))
    }

    /// The master name the Sentinels are asked about.
    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    /// Asks the Sentinels in order for the master's address; the first that answers wins.
    pub async fn master_address(&self) -> Result<(String, u16)> {
        let mut connections = self.sentinel_connections.lock().await;
        let mut last_error = String::from("no Sentinel configured");
        for (index, sentinel) in self.sentinels.iter().enumerate() {
            if connections[index].is_none() {
                match sentinel
                    .get_multiplexed_async_connection_with_config(&self.config())
                    .await
                {
                    Ok(connection) => connections[index] = Some(connection),
                    Err(error) => {
                        last_error = format!("Sentinel {index}: {}", describe(&error));
                        continue;
                    }
                }
            }
            let connection = connections[index].as_mut().expect("just set");
            let answer: redis::RedisResult<Option<(String, u16)>> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&self.master_name)
                .query_async(connection)
                .await;
            match answer {
                Ok(Some(address)) => return Ok(address),
                Ok(None) => {
                    return Err(Error::rejected(
                        &self.source,
                        format!(
                            "the Sentinels do not know a master named `{}`",
                            self.master_name
                        ),
                    ));
                }
                Err(error) => {
                    last_error = format!("Sentinel {index}: {}", describe(&error));
                    connections[index] = None;
                }
            }
        }
        Err(Error::unavailable(
            &self.source,
            format!("cannot resolve the master: {last_error}"),
        ))
    }

    /// A connection to the current master.
    pub async fn connection(&self) -> Result<MultiplexedConnection> {
        let (host, port) = self.master_address().await?;
        let mut master = self.master.lock().await;
        if let Some((known_host, known_port, connection)) = master.as_ref()
            && *known_host == host
            && *known_port == port
        {
            return Ok(connection.clone());
        }
        let addr = if self.node.tls {
            ConnectionAddr::TcpTls {
                host: host.clone(),
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host.clone(), port)
        };
        let mut info = format!("redis://{host}:{port}")
            .into_connection_info()
            .map_err(|_| {
                Error::unavailable(
                    &self.source,
                    format!("the Sentinels name a master address that is not valid: {host}:{port}"),
                )
            })?
            .set_addr(addr);
        let settings = self.node.apply(info.redis_settings().clone());
        info = info.set_redis_settings(settings);
        let client = self.node.client(info).map_err(|e| {
            Error::unavailable(
                &self.source,
                format!("master {host}:{port}: {}", describe(&e)),
            )
        })?;
        let connection = client
            .get_multiplexed_async_connection_with_config(&self.config())
            .await
            .map_err(|e| {
                Error::unavailable(
                    &self.source,
                    format!("master {host}:{port}: {}", describe(&e)),
                )
            })?;
        tracing::info!(source = %self.source, %host, port, "connected to the Redis master");
        *master = Some((host, port, connection.clone()));
        Ok(connection)
    }

    /// Forgets the master connection after a failure, so the next read resolves it again.
    pub async fn forget_master(&self) {
        *self.master.lock().await = None;
    }
}
