//! The TOML config file: listeners, measurement defaults and the named sources that triggers
//! refer to with `source:`.
//!
//! Loading is all-or-nothing and happens before any port is bound: unknown keys are rejected,
//! secrets named by `*_env` / `*_file` are resolved, and every problem is reported as one line
//! naming the key ([`ConfigError`]). Secrets are held in [`Secret`], whose `Debug` and
//! `Display` never show the value.

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

/// A config problem, as one line that names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    fn at(key: impl fmt::Display, reason: impl fmt::Display) -> Self {
        ConfigError(format!("`{key}`: {reason}"))
    }
}

/// A value that must never be logged: a URL with a password, a password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Call sites are few and obvious: building a client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub measurements: MeasurementsConfig,
    #[serde(default)]
    sources: BTreeMap<String, RawSource>,
    /// Filled by [`Config::validate`] from `sources`.
    #[serde(skip)]
    pub resolved_sources: Vec<SourceConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_grpc_listen")]
    pub grpc_listen: SocketAddr,
    /// Reserved for the Prometheus `/metrics` endpoint; parsed and validated, not yet served.
    #[serde(default)]
    pub http_listen: Option<SocketAddr>,
    /// How long in-flight RPCs may take to finish after SIGTERM before the process exits.
    /// Keep it below the pod's `terminationGracePeriodSeconds` (30 s by default).
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            grpc_listen: default_grpc_listen(),
            http_listen: None,
            shutdown_grace: default_shutdown_grace(),
        }
    }
}

fn default_grpc_listen() -> SocketAddr {
    "0.0.0.0:9090".parse().expect("valid literal")
}

fn default_shutdown_grace() -> Duration {
    Duration::from_secs(10)
}

/// Defaults for every source, and the engine's global bounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasurementsConfig {
    /// How often each live measurement is read again in the background.
    #[serde(default = "default_refresh_interval", with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// A value older than this is never served: the answer is UNAVAILABLE instead.
    #[serde(default = "default_max_staleness", with = "humantime_serde")]
    pub max_staleness: Duration,
    /// The budget of one backend read (connect + command + one retry).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// A measurement nobody asked for during this long is dropped.
    #[serde(default = "default_idle_expiry", with = "humantime_serde")]
    pub idle_expiry: Duration,
    /// At most this many measurements are live at once; past it, RESOURCE_EXHAUSTED.
    #[serde(default = "default_max_live")]
    pub max_live: usize,
}

impl Default for MeasurementsConfig {
    fn default() -> Self {
        MeasurementsConfig {
            refresh_interval: default_refresh_interval(),
            max_staleness: default_max_staleness(),
            timeout: default_timeout(),
            idle_expiry: default_idle_expiry(),
            max_live: default_max_live(),
        }
    }
}

// A backend change must be visible within 2 s: a 1 s interval plus a read that takes at most
// a few milliseconds on a healthy backend keeps the worst case near 1 s.
fn default_refresh_interval() -> Duration {
    Duration::from_secs(1)
}

// Five refresh intervals: a value is never older than this, yet one slow refresh does not
// turn every answer into UNAVAILABLE.
fn default_max_staleness() -> Duration {
    Duration::from_secs(5)
}

// Backend trouble must be UNAVAILABLE within 2 s of the request: the read budget plus the
// scheduling slack of the request stays below that.
fn default_timeout() -> Duration {
    Duration::from_millis(1500)
}

// KEDA polls every 30 s and the HPA reads every 15 s: ten missed polls before a measurement
// of a deleted ScaledObject is dropped.
fn default_idle_expiry() -> Duration {
    Duration::from_secs(300)
}

// A live measurement costs ~1.5 KiB (10,000 added ~15 MiB of RSS, BENCHMARKS.md (d)), so
// 50,000 bound the scaler near 80 MiB while leaving room for very large clusters; each also
// costs one backend read per refresh.
fn default_max_live() -> usize {
    50_000
}

/// One `[sources.NAME]` table as written; validated into a [`SourceConfig`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    #[serde(rename = "type")]
    kind: String,
    url: Option<Secret>,
    url_env: Option<String>,
    url_file: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    refresh_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    max_staleness: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    pool_size: Option<usize>,
    queries: Option<BTreeMap<String, String>>,
    tls_ca_file: Option<PathBuf>,
    urls: Option<Vec<Secret>>,
    master: Option<String>,
    username: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
}

/// A validated source: its name, its refresh settings and how to reach its backend.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: String,
    pub refresh: RefreshSettings,
    pub backend: BackendConfig,
}

/// How the engine treats the measurements of one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshSettings {
    pub refresh_interval: Duration,
    pub max_staleness: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum BackendConfig {
    Redis(RedisConfig),
    Postgres(PostgresConfig),
}

impl BackendConfig {
    /// The `type` value that selects this backend in the config file.
    pub fn type_name(&self) -> &'static str {
        match self {
            BackendConfig::Redis(redis) => match redis.topology {
                RedisTopology::Standalone { .. } => "redis",
                RedisTopology::Cluster { .. } => "redis-cluster",
                RedisTopology::Sentinel { .. } => "redis-sentinel",
            },
            BackendConfig::Postgres(_) => "postgres",
        }
    }
}

/// A Redis source: where it is, and the credentials and TLS settings of every node.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub topology: RedisTopology,
    /// ACL user, unless the URL names one.
    pub username: Option<String>,
    /// Password from `password_env` / `password_file`, unless the URL holds one.
    pub password: Option<Secret>,
    /// PEM file of the CA that signed the servers' certificates (`rediss://`).
    pub tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub enum RedisTopology {
    /// `type = "redis"`: one server.
    Standalone { url: Secret },
    /// `type = "redis-cluster"`: seed nodes of a Redis Cluster.
    Cluster { urls: Vec<Secret> },
    /// `type = "redis-sentinel"`: Sentinels that know `master`.
    Sentinel { urls: Vec<Secret>, master: String },
}

/// A PostgreSQL server (directly or through PgBouncer).
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// `postgres://user[:password]@host:port/db?sslmode=require`.
    pub url: Secret,
    /// Connections the scaler may hold; small, so the scaler is never the database's problem.
    pub pool_size: usize,
    /// Named, server-side SQL for `metric: pg-query`; metadata picks one by name.
    pub queries: BTreeMap<String, String>,
    /// PEM file of the CA that signed the server's certificate (else the web PKI roots).
    pub tls_ca_file: Option<PathBuf>,
}

const SOURCE_TYPES: &str = "\"redis\", \"redis-cluster\", \"redis-sentinel\", \"postgres\"";

// Two connections: one refresh reads pg_stat_activity and pg_stat_statements of every trigger
// of the source with one or two statements, so a second connection only serves cold reads.
const DEFAULT_PG_POOL_SIZE: usize = 2;

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        Config::from_toml(&text)
    }

    /// Parses and validates a config from TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start].matches('\n').count() + 1)
                .map(|n| format!("line {n}: "))
                .unwrap_or_default();
            ConfigError(format!("{line}{}", e.message().trim()))
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        let m = &self.measurements;
        positive("measurements.refresh_interval", m.refresh_interval)?;
        positive("measurements.timeout", m.timeout)?;
        positive("measurements.idle_expiry", m.idle_expiry)?;
        if m.max_live == 0 {
            return Err(ConfigError::at(
                "measurements.max_live",
                "must be at least 1",
            ));
        }
        if self.sources.is_empty() {
            return Err(ConfigError::at(
                "sources",
                "configure at least one source, e.g. [sources.redis-main] type = \"redis\"",
            ));
        }
        let mut resolved = Vec::with_capacity(self.sources.len());
        for (name, raw) in &self.sources {
            resolved.push(resolve_source(name, raw, m)?);
        }
        self.resolved_sources = resolved;
        Ok(())
    }
}

fn positive(key: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::at(key, "must be longer than 0s"));
    }
    Ok(())
}

fn resolve_source(
    name: &str,
    raw: &RawSource,
    defaults: &MeasurementsConfig,
) -> Result<SourceConfig, ConfigError> {
    let key = |field: &str| format!("sources.{name}.{field}");
    if !crate::naming::is_source_name(name) {
        return Err(ConfigError::at(
            format!("sources.{name}"),
            "source names use lower-case letters, digits and `-` (at most 63 characters)",
        ));
    }
    let refresh = RefreshSettings {
        refresh_interval: raw.refresh_interval.unwrap_or(defaults.refresh_interval),
        max_staleness: raw.max_staleness.unwrap_or(defaults.max_staleness),
        timeout: raw.timeout.unwrap_or(defaults.timeout),
    };
    positive(&key("refresh_interval"), refresh.refresh_interval)?;
    positive(&key("timeout"), refresh.timeout)?;
    if refresh.max_staleness < refresh.refresh_interval {
        return Err(ConfigError::at(
            key("max_staleness"),
            format!(
                "must be at least refresh_interval ({:?}), or every value would be stale",
                refresh.refresh_interval
            ),
        ));
    }
    let only_for = |field: &str, given: bool, kind: &str| {
        if given && raw.kind != kind {
            Err(ConfigError::at(
                key(field),
                format!("is only valid for type = \"{kind}\""),
            ))
        } else {
            Ok(())
        }
    };
    only_for("pool_size", raw.pool_size.is_some(), "postgres")?;
    only_for("queries", raw.queries.is_some(), "postgres")?;
    only_for("master", raw.master.is_some(), "redis-sentinel")?;
    let is_redis = raw.kind.starts_with("redis");
    for (field, given) in [
        ("username", raw.username.is_some()),
        ("password_env", raw.password_env.is_some()),
        ("password_file", raw.password_file.is_some()),
    ] {
        if given && !is_redis {
            return Err(ConfigError::at(
                key(field),
                "is only valid for Redis sources",
            ));
        }
    }
    let multi_node = matches!(raw.kind.as_str(), "redis-cluster" | "redis-sentinel");
    if raw.urls.is_some() && !multi_node {
        return Err(ConfigError::at(
            key("urls"),
            "is only valid for type = \"redis-cluster\" and \"redis-sentinel\"; use `url`",
        ));
    }
    if multi_node && (raw.url.is_some() || raw.url_env.is_some() || raw.url_file.is_some()) {
        return Err(ConfigError::at(
            key("url"),
            format!("type = \"{}\" takes `urls = [...]`", raw.kind),
        ));
    }
    if let Some(path) = &raw.tls_ca_file {
        check_ca_file(&key("tls_ca_file"), path)?;
    }
    let redis = |topology: RedisTopology| -> Result<BackendConfig, ConfigError> {
        Ok(BackendConfig::Redis(RedisConfig {
            topology,
            username: raw.username.clone(),
            password: resolve_optional_secret(
                name,
                "password",
                &raw.password_env,
                &raw.password_file,
            )?,
            tls_ca_file: raw.tls_ca_file.clone(),
        }))
    };
    let urls = || -> Result<Vec<Secret>, ConfigError> {
        match &raw.urls {
            Some(urls) if !urls.is_empty() => {
                for url in urls {
                    check_redis_url(&key("urls"), url)?;
                }
                Ok(urls.clone())
            }
            _ => Err(ConfigError::at(
                key("urls"),
                "is required: at least one redis:// URL",
            )),
        }
    };
    let backend = match raw.kind.as_str() {
        "redis" => {
            let url = resolve_secret(name, "url", &raw.url, &raw.url_env, &raw.url_file)?;
            check_redis_url(&key("url"), &url)?;
            redis(RedisTopology::Standalone { url })?
        }
        "redis-cluster" => redis(RedisTopology::Cluster { urls: urls()? })?,
        "redis-sentinel" => {
            let master = raw
                .master
                .clone()
                .filter(|m| !m.is_empty())
                .ok_or_else(|| {
                    ConfigError::at(
                        key("master"),
                        "is required: the master name the Sentinels monitor",
                    )
                })?;
            redis(RedisTopology::Sentinel {
                urls: urls()?,
                master,
            })?
        }
        "postgres" => {
            let url = resolve_secret(name, "url", &raw.url, &raw.url_env, &raw.url_file)?;
            if url.expose().parse::<tokio_postgres::Config>().is_err() {
                // The parser's message may quote the URL, which may hold a password.
                return Err(ConfigError::at(
                    key("url"),
                    "is not a valid PostgreSQL connection URL (postgres://user@host:port/db)",
                ));
            }
            let pool_size = raw.pool_size.unwrap_or(DEFAULT_PG_POOL_SIZE);
            if pool_size == 0 {
                return Err(ConfigError::at(key("pool_size"), "must be at least 1"));
            }
            let queries = raw.queries.clone().unwrap_or_default();
            if let Some((query, _)) = queries.iter().find(|(_, sql)| sql.trim().is_empty()) {
                return Err(ConfigError::at(
                    key(&format!("queries.{query}")),
                    "is empty",
                ));
            }
            BackendConfig::Postgres(PostgresConfig {
                url,
                pool_size,
                queries,
                tls_ca_file: raw.tls_ca_file.clone(),
            })
        }
        other => {
            return Err(ConfigError::at(
                key("type"),
                format!("unknown source type \"{other}\"; accepted: {SOURCE_TYPES}"),
            ));
        }
    };
    Ok(SourceConfig {
        name: name.to_string(),
        refresh,
        backend,
    })
}

/// A PEM file with at least one certificate.
fn check_ca_file(key: &str, path: &Path) -> Result<(), ConfigError> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| ConfigError::at(key, format!("cannot read {}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::at(key, format!("{} is not PEM: {e}", path.display())))?;
    if certificates.is_empty() {
        return Err(ConfigError::at(
            key,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(())
}

/// A Redis URL the client accepts; the message never repeats the URL (it may hold a password).
fn check_redis_url(key: &str, url: &Secret) -> Result<(), ConfigError> {
    redis::IntoConnectionInfo::into_connection_info(url.expose())
        .map(drop)
        .map_err(|_| {
            ConfigError::at(
                key,
                "is not a valid Redis URL (redis://[user:password@]host:port/db, or rediss:// for TLS)",
            )
        })
}

/// Resolves at most one of `FIELD_env` and `FIELD_file` of source `name`.
fn resolve_optional_secret(
    name: &str,
    field: &str,
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Option<Secret>, ConfigError> {
    if env.is_none() && file.is_none() {
        return Ok(None);
    }
    resolve_secret(name, field, &None, env, file).map(Some)
}

/// Resolves exactly one of `FIELD`, `FIELD_env` and `FIELD_file` of source `name`.
fn resolve_secret(
    name: &str,
    field: &str,
    inline: &Option<Secret>,
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Secret, ConfigError> {
    let key = format!("sources.{name}.{field}");
    let given = [inline.is_some(), env.is_some(), file.is_some()];
    match given.iter().filter(|g| **g).count() {
        0 => {
            return Err(ConfigError::at(
                &key,
                format!("missing: set one of `{field}`, `{field}_env` or `{field}_file`"),
            ));
        }
        1 => {}
        _ => {
            return Err(ConfigError::at(
                &key,
                format!("set only one of `{field}`, `{field}_env` and `{field}_file`"),
            ));
        }
    }
    let value = if let Some(value) = inline {
        value.0.clone()
    } else if let Some(var) = env {
        std::env::var(var).map_err(|_| {
            ConfigError::at(
                format!("{key}_env"),
                format!("environment variable `{var}` is not set (or not UTF-8)"),
            )
        })?
    } else if let Some(path) = file {
        std::fs::read_to_string(path)
            .map_err(|e| {
                ConfigError::at(
                    format!("{key}_file"),
                    format!("cannot read {}: {}", path.display(), e.kind()),
                )
            })?
            .trim()
            .to_string()
    } else {
        unreachable!("exactly one of the three is set")
    };
    if value.is_empty() {
        return Err(ConfigError::at(key, "is empty"));
    }
    Ok(Secret(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        Config::from_toml(text).unwrap_err().0
    }

    #[test]
    fn minimal_config_uses_documented_defaults() {
        let config = Config::from_toml(
            r#"
            [sources.redis-main]
            type = "redis"
            url = "redis://127.0.0.1:6379/0"
            "#,
        )
        .unwrap();
        assert_eq!(config.server.grpc_listen, default_grpc_listen());
        assert_eq!(config.measurements.refresh_interval, Duration::from_secs(1));
        let source = &config.resolved_sources[0];
        assert_eq!(source.name, "redis-main");
        assert_eq!(source.refresh.max_staleness, Duration::from_secs(5));
        let BackendConfig::Redis(RedisConfig {
            topology: RedisTopology::Standalone { url },
            ..
        }) = &source.backend
        else {
            panic!("a redis source")
        };
        assert_eq!(url.expose(), "redis://127.0.0.1:6379/0");
    }

    #[test]
    fn per_source_refresh_settings_override_defaults() {
        let config = Config::from_toml(
            r#"
            [measurements]
            refresh_interval = "2s"
            [sources.a]
            type = "redis"
            url = "redis://x"
            refresh_interval = "500ms"
            "#,
        )
        .unwrap();
        assert_eq!(
            config.resolved_sources[0].refresh.refresh_interval,
            Duration::from_millis(500)
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name_and_line() {
        let error = error_of("[server]\ngrpc_listen = \"0.0.0.0:1\"\ngrpc_lisen = \"x\"\n");
        assert!(error.contains("grpc_lisen"), "{error}");
        assert!(error.contains("grpc_lisen"), "{error}");
        assert!(error.starts_with("line 3"), "{error}");
        let error = error_of("[sources.a]\ntype = \"redis\"\nur = \"redis://x\"\n");
        assert!(error.contains("`ur`"), "{error}");
    }

    #[test]
    fn source_problems_name_the_key() {
        let cases = [
            (
                "[sources.a]\ntype = \"mongo\"\nurl = \"x\"",
                "`sources.a.type`",
            ),
            ("[sources.a]\ntype = \"redis\"", "`sources.a.url`: missing"),
            (
                "[sources.a]\ntype = \"redis\"\nurl = \"x\"\nurl_env = \"Y\"",
                "set only one",
            ),
            (
                "[sources.a]\ntype = \"redis\"\nurl_env = \"BACKLOG_SCALER_TEST_UNSET_VAR\"",
                "`sources.a.url_env`",
            ),
            (
                "[sources.a]\ntype = \"redis\"\nurl_file = \"/nonexistent/url\"",
                "`sources.a.url_file`",
            ),
            (
                "[sources.a]\ntype = \"redis\"\nurl = \"x\"\nmax_staleness = \"100ms\"",
                "`sources.a.max_staleness`",
            ),
            (
                "[sources.A_b]\ntype = \"redis\"\nurl = \"x\"",
                "`sources.A_b`",
            ),
            ("[measurements]\nmax_live = 0", "`measurements.max_live`"),
            (
                "[server]\ngrpc_listen = \"0.0.0.0:1\"",
                "`sources`: configure at least one",
            ),
        ];
        for (text, expected) in cases {
            let error = error_of(text);
            assert!(error.contains(expected), "{text:?} gave {error:?}");
            assert!(!error.contains('\n'), "one line: {error:?}");
        }
    }

    #[test]
    fn postgres_source_with_named_queries() {
        let config = Config::from_toml(
            r#"
            [sources.pg-main]
            type = "postgres"
            url = "postgres://scaler:pw@127.0.0.1:5432/app?sslmode=disable"
            pool_size = 3
            [sources.pg-main.queries]
            dagster_backlog = "SELECT count(*) FROM runs WHERE status IN ('QUEUED','NOT_STARTED')"
            "#,
        )
        .unwrap();
        let BackendConfig::Postgres(pg) = &config.resolved_sources[0].backend else {
            panic!("a postgres source")
        };
        assert_eq!(pg.pool_size, 3);
        assert!(pg.queries.contains_key("dagster_backlog"));
        assert!(!format!("{config:?}").contains(":pw@"));
        let error =
            error_of("[sources.p]\ntype = \"postgres\"\nurl = \"postgres://u:hunter2@h:x/db\"");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn redis_topologies_and_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("password");
        std::fs::write(&password, "s3cret\n").unwrap();
        let config = Config::from_toml(&format!(
            r#"
            [sources.cluster]
            type = "redis-cluster"
            urls = ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"]
            username = "scaler"
            password_file = "{}"
            [sources.sentinel]
            type = "redis-sentinel"
            urls = ["redis://10.0.0.9:26379"]
            master = "mymaster"
            "#,
            password.display()
        ))
        .unwrap();
        let BackendConfig::Redis(cluster) = &config.resolved_sources[0].backend else {
            panic!()
        };
        assert!(matches!(&cluster.topology, RedisTopology::Cluster { urls } if urls.len() == 2));
        assert_eq!(cluster.username.as_deref(), Some("scaler"));
        assert_eq!(
            cluster.password.as_ref().map(Secret::expose),
            Some("s3cret")
        );
        let BackendConfig::Redis(sentinel) = &config.resolved_sources[1].backend else {
            panic!()
        };
        assert!(
            matches!(&sentinel.topology, RedisTopology::Sentinel { master, .. } if master == "mymaster")
        );
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn url_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("url");
        std::fs::write(&path, "redis://secret@host:6379\n").unwrap();
        let text = format!(
            "[sources.a]\ntype = \"redis\"\nurl_file = \"{}\"",
            path.display()
        );
        let config = Config::from_toml(&text).unwrap();
        let BackendConfig::Redis(RedisConfig {
            topology: RedisTopology::Standalone { url },
            ..
        }) = &config.resolved_sources[0].backend
        else {
            panic!("a redis source")
        };
        assert_eq!(url.expose(), "redis://secret@host:6379");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let config =
            Config::from_toml("[sources.a]\ntype = \"redis\"\nurl = \"redis://:hunter2@host\"")
                .unwrap();
        let debug = format!("{:?}", config.resolved_sources);
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
