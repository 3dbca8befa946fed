//! The `[sources.NAME]` section of Redis sources: `type = "redis"`, `"redis-cluster"` and
//! `"redis-sentinel"`, parsed once into the clients the source uses as they are.

use std::path::PathBuf;

use redis::{ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};
use serde::Deserialize;

use crate::{
    credentials::{CaRoots, Secret},
    error::ConfigError,
    sources::Section,
};

/// The keys of a Redis section, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    url: Option<Secret>,
    url_env: Option<String>,
    url_file: Option<PathBuf>,
    urls: Option<Vec<Secret>>,
    master: Option<String>,
    username: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    tls_ca_file: Option<PathBuf>,
}

/// Credentials and TLS settings shared by every node of a source.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The CA that signed the nodes' certificates.
    pub ca: Option<CaRoots>,
    /// Connect with TLS (`rediss://` URLs or a CA file).
    pub tls: bool,
}

impl NodeSettings {
    /// Adds the configured user and password to a node's settings (a URL's own win).
    pub fn apply(&self, mut redis: RedisConnectionInfo) -> RedisConnectionInfo {
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

    /// A client of one node; with a CA, the client trusts it.
    pub fn client(&self, info: ConnectionInfo) -> redis::RedisResult<redis::Client> {
        match &self.ca {
            Some(ca) => redis::Client::build_with_tls(info, self.certificates(ca)),
            None => redis::Client::open(info),
        }
    }

    pub fn certificates(&self, ca: &CaRoots) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.pem.clone()),
        }
    }
}

/// Where the servers of a source are.
pub enum Topology {
    /// `type = "redis"`: one server.
    Standalone(Box<redis::Client>),
    /// `type = "redis-cluster"`: seed nodes of a Redis Cluster.
    Cluster(Box<redis::cluster::ClusterClient>),
    /// `type = "redis-sentinel"`: Sentinels that know `master`.
    Sentinel {
        sentinels: Vec<redis::Client>,
        master: String,
    },
}

/// A parsed Redis section.
pub struct RedisSettings {
    pub topology: Topology,
    pub node: NodeSettings,
}

/// Parses a Redis section; every URL, credential and CA file is checked here.
pub fn parse(section: &Section) -> Result<RedisSettings, ConfigError> {
    let raw: RawRedis = section.deserialize()?;
    let multi_node = section.type_name != "redis";
    if raw.master.is_some() && section.type_name != "redis-sentinel" {
        return Err(ConfigError::at(
            section.key("master"),
            "is only valid for type = \"redis-sentinel\"",
        ));
    }
    let urls = if multi_node {
        seed_urls(section, &raw)?
    } else {
        if raw.urls.is_some() {
            return Err(ConfigError::at(
                section.key("urls"),
                "is only valid for type = \"redis-cluster\" and \"redis-sentinel\"; use `url`",
            ));
        }
        vec![single_url(section, &raw)?]
    };
    let node = node_settings(section, &raw, &urls)?;
    let infos = urls
        .iter()
        .map(|url| connection_info(section, url, &node))
        .collect::<Result<Vec<_>, _>>()?;
    let topology = match section.type_name.as_str() {
        "redis" => Topology::Standalone(Box::new(client(section, &node, infos[0].clone())?)),
        "redis-cluster" => Topology::Cluster(Box::new(cluster_client(section, &node, infos)?)),
        _ => Topology::Sentinel {
            sentinels: sentinel_clients(section, &urls)?,
            master: raw
                .master
                .clone()
                .filter(|m| !m.is_empty())
                .ok_or_else(|| {
                    ConfigError::at(
                        section.key("master"),
                        "is required: the master name the Sentinels monitor",
                    )
                })?,
        },
    };
    Ok(RedisSettings { topology, node })
}

fn single_url(section: &Section, raw: &RawRedis) -> Result<Secret, ConfigError> {
    section
        .secret(
            "url",
            raw.url.as_ref(),
            raw.url_env.as_deref(),
            raw.url_file.as_deref(),
        )
        .resolve()
}

fn seed_urls(section: &Section, raw: &RawRedis) -> Result<Vec<Secret>, ConfigError> {
    if raw.url.is_some() || raw.url_env.is_some() || raw.url_file.is_some() {
        return Err(ConfigError::at(
            section.key("url"),
            format!("type = \"{}\" takes `urls = [...]`", section.type_name),
        ));
    }
    match &raw.urls {
        Some(urls) if !urls.is_empty() => Ok(urls.clone()),
        _ => Err(ConfigError::at(
            section.key("urls"),
            "is required: at least one redis:// URL",
        )),
    }
}

fn node_settings(
    section: &Section,
    raw: &RawRedis,
    urls: &[Secret],
) -> Result<NodeSettings, ConfigError> {
    let password = section
        .secret(
            "password",
            None,
            raw.password_env.as_deref(),
            raw.password_file.as_deref(),
        )
        .resolve_optional()?;
    let ca = match &raw.tls_ca_file {
        Some(path) => Some(CaRoots::load(&section.key("tls_ca_file"), path)?),
        None => None,
    };
    Ok(NodeSettings {
        username: raw.username.clone(),
        password,
        tls: ca.is_some() || urls.iter().any(|u| u.expose().starts_with("rediss://")),
        ca,
    })
}

/// A node's connection info with the source's credentials; the message never repeats the URL
/// (it may hold a password).
fn connection_info(
    section: &Section,
    url: &Secret,
    node: &NodeSettings,
) -> Result<ConnectionInfo, ConfigError> {
    let key = if section.type_name == "redis" {
        section.key("url")
    } else {
        section.key("urls")
    };
    let info = url.expose().into_connection_info().map_err(|_| {
        ConfigError::at(
            key,
            "is not a valid Redis URL (redis://[user:password@]host:port/db, or rediss:// for TLS)",
        )
    })?;
    let redis = node.apply(info.redis_settings().clone());
    Ok(info.set_redis_settings(redis))
}

fn client(
    section: &Section,
    node: &NodeSettings,
    info: ConnectionInfo,
) -> Result<redis::Client, ConfigError> {
    node.client(info).map_err(|e| {
        ConfigError::at(
            section.key("tls_ca_file"),
            format!("the Redis client rejects the TLS settings ({:?})", e.kind()),
        )
    })
}

/// Building the client checks the seeds and the TLS settings; it makes no connection.
fn cluster_client(
    section: &Section,
    node: &NodeSettings,
    infos: Vec<ConnectionInfo>,
) -> Result<redis::cluster::ClusterClient, ConfigError> {
    let timeout = section.refresh.timeout;
    let mut builder = redis::cluster::ClusterClientBuilder::new(infos)
        .connection_timeout(timeout / 2)
        .response_timeout(timeout / 2)
        .retries(1);
    if let Some(username) = &node.username {
        builder = builder.username(username);
    }
    if let Some(password) = &node.password {
        builder = builder.password(password.expose());
    }
    if let Some(ca) = &node.ca {
        builder = builder.certs(node.certificates(ca));
    }
    builder.build().map_err(|e| {
        ConfigError::at(
            section.key("urls"),
            format!(
                "the Redis Cluster client rejects the settings ({:?})",
                e.kind()
            ),
        )
    })
}

fn sentinel_clients(section: &Section, urls: &[Secret]) -> Result<Vec<redis::Client>, ConfigError> {
    urls.iter()
        .map(|url| {
            redis::Client::open(url.expose()).map_err(|_| {
                ConfigError::at(
                    section.key("urls"),
                    "is not a valid Redis URL (redis://host:26379 for a Sentinel)",
                )
            })
        })
        .collect()
}
