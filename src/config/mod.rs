//! The TOML config file: listeners, measurement defaults and the named sources that triggers
//! refer to with `source:`.
//!
//! Loading is all-or-nothing and happens before any port is bound: unknown keys are rejected,
//! secrets named by `*_env` / `*_file` are resolved, and every problem is reported as one line
//! naming the key ([`ConfigError`]). This module reads the keys every source shares (`type`,
//! the refresh settings, `allowed_namespaces`); each backend parses the rest of its section
//! ([`crate::sources::Backend::configure`]) into the source it serves, so nothing is parsed
//! twice.

use std::{collections::BTreeMap, fmt, path::Path, sync::Arc, time::Duration};

use serde::Deserialize;

mod server;

pub use server::{ServerConfig, ServerLimits, TlsConfig};

pub use crate::error::ConfigError;
use crate::sources::{BACKENDS, RefreshSettings, Section, Source};

/// A validated config. Its `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub measurements: MeasurementsConfig,
    /// `[sources.*]`, in name order.
    pub sources: Vec<SourceConfig>,
}

/// The file as written, before validation (it may hold secrets: it is never kept).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    measurements: MeasurementsConfig,
    #[serde(default)]
    sources: BTreeMap<String, RawSource>,
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

/// One `[sources.NAME]` table as written: the keys every source shares, and the backend's own.
#[derive(Deserialize)]
struct RawSource {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, with = "humantime_serde")]
    refresh_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    max_staleness: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    allowed_namespaces: Option<Vec<String>>,
    #[serde(flatten)]
    backend: toml::Table,
}

/// A validated source: its name, its refresh settings, who may use it, and the source itself
/// (built, not connected).
#[derive(Clone)]
pub struct SourceConfig {
    pub name: String,
    /// The `type` value.
    pub type_name: String,
    pub refresh: RefreshSettings,
    pub namespaces: NamespaceFence,
    pub source: Arc<dyn Source>,
}

impl fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceConfig")
            .field("name", &self.name)
            .field("type", &self.type_name)
            .field("refresh", &self.refresh)
            .field("namespaces", &self.namespaces)
            .finish_non_exhaustive()
    }
}

/// `allowed_namespaces`: which ScaledObject namespaces may use a source. Absent: all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceFence {
    /// `None` admits every namespace; an entry ending in `*` admits every namespace it prefixes.
    allowed: Option<Vec<String>>,
}

impl NamespaceFence {
    pub fn new(allowed: Option<Vec<String>>) -> Self {
        NamespaceFence { allowed }
    }

    pub fn admits(&self, namespace: &str) -> bool {
        self.allowed.as_ref().is_none_or(|allowed| {
            allowed.iter().any(|entry| match entry.strip_suffix('*') {
                Some(prefix) => namespace.starts_with(prefix),
                None => namespace == entry,
            })
        })
    }
}

/// All the `type` values of all backends, for messages.
fn source_types() -> String {
    BACKENDS
        .iter()
        .flat_map(|backend| backend.types())
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        Config::from_toml(&text)
    }

    /// Parses and validates a config from TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start].matches('\n').count() + 1)
                .map(|n| format!("line {n}: "))
                .unwrap_or_default();
            ConfigError(format!("{line}{}", e.message().trim()))
        })?;
        Config::validate(raw)
    }

    fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
        let m = &raw.measurements;
        positive("measurements.refresh_interval", m.refresh_interval)?;
        positive("measurements.timeout", m.timeout)?;
        positive("measurements.idle_expiry", m.idle_expiry)?;
        if m.max_live == 0 {
            return Err(ConfigError::at(
                "measurements.max_live",
                "must be at least 1",
            ));
        }
        if raw.sources.is_empty() {
            return Err(ConfigError::at(
                "sources",
                "configure at least one source, e.g. [sources.redis-main] type = \"redis\"",
            ));
        }
        let sources = raw
            .sources
            .iter()
            .map(|(name, source)| resolve_source(name, source, m))
            .collect::<Result<Vec<_>, _>>()?;
        raw.server.validate()?;
        Ok(Config {
            server: raw.server,
            measurements: raw.measurements,
            sources,
        })
    }
}

pub(crate) fn positive(key: &str, value: Duration) -> Result<(), ConfigError> {
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
    let refresh = refresh_settings(name, raw, defaults)?;
    let namespaces = namespace_fence(&key("allowed_namespaces"), &raw.allowed_namespaces)?;
    let backend = BACKENDS
        .iter()
        .find(|backend| backend.types().contains(&raw.kind.as_str()))
        .ok_or_else(|| {
            ConfigError::at(
                key("type"),
                format!(
                    "unknown source type \"{}\"; accepted: {}",
                    raw.kind,
                    source_types()
                ),
            )
        })?;
    let source = backend.configure(Section {
        name: name.to_string(),
        type_name: raw.kind.clone(),
        table: raw.backend.clone(),
        refresh,
    })?;
    Ok(SourceConfig {
        name: name.to_string(),
        type_name: raw.kind.clone(),
        refresh,
        namespaces,
        source,
    })
}

fn refresh_settings(
    name: &str,
    raw: &RawSource,
    defaults: &MeasurementsConfig,
) -> Result<RefreshSettings, ConfigError> {
    let key = |field: &str| format!("sources.{name}.{field}");
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
    Ok(refresh)
}

/// Namespace names are DNS-1123 labels; an entry may end in `*` to admit a prefix.
fn namespace_fence(
    key: &str,
    allowed: &Option<Vec<String>>,
) -> Result<NamespaceFence, ConfigError> {
    for entry in allowed.iter().flatten() {
        let name = entry.strip_suffix('*').unwrap_or(entry);
        let label = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && name.len() <= 63;
        // A bare `*` admits everything; an empty name without `*` admits nothing and is a typo.
        if !label || (name.is_empty() && entry != "*") {
            return Err(ConfigError::at(
                key,
                format!(
                    "`{entry}` is not a namespace name (lower-case letters, digits, `-`), \
                     optionally ending in `*` for a prefix"
                ),
            ));
        }
    }
    Ok(NamespaceFence::new(allowed.clone()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::metadata::Metadata;

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
        assert_eq!(config.server.grpc_listen, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(config.server.http_listen, None);
        assert_eq!(config.measurements.refresh_interval, Duration::from_secs(1));
        let source = &config.sources[0];
        assert_eq!(source.name, "redis-main");
        assert_eq!(source.type_name, "redis");
        assert_eq!(source.refresh.max_staleness, Duration::from_secs(5));
        assert_eq!(source.refresh.timeout, Duration::from_millis(1500));
        assert!(source.namespaces.admits("any-namespace"));
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
            config.sources[0].refresh.refresh_interval,
            Duration::from_millis(500)
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name_and_line() {
        let error = error_of("[server]\ngrpc_listen = \"0.0.0.0:1\"\ngrpc_lisen = \"x\"\n");
        assert!(error.contains("grpc_lisen"), "{error}");
        assert!(error.starts_with("line 3"), "{error}");
        let error = error_of("[sources.a]\ntype = \"redis\"\nur = \"redis://x\"\n");
        assert!(
            error.contains("`sources.a`") && error.contains("`ur`"),
            "{error}"
        );
        // Keys of another backend are unknown keys too.
        let error = error_of("[sources.a]\ntype = \"redis\"\nurl = \"redis://x\"\npool_size = 2");
        assert!(error.contains("`pool_size`"), "{error}");
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
                "[sources.a]\ntype = \"redis\"\nurl = \"http://nope\"",
                "`sources.a.url`: is not a valid Redis URL",
            ),
            (
                "[sources.a]\ntype = \"redis\"\nurl = \"x\"\nmax_staleness = \"100ms\"",
                "`sources.a.max_staleness`",
            ),
            (
                "[sources.a]\ntype = \"redis-sentinel\"\nurls = [\"redis://h:26379\"]",
                "`sources.a.master`: is required",
            ),
            (
                "[sources.a]\ntype = \"redis-cluster\"\nurl = \"redis://h\"",
                "`sources.a.url`: type = \"redis-cluster\" takes `urls",
            ),
            (
                "[sources.a]\ntype = \"postgres\"\nurl = \"postgres://h/db\"\npool_size = 0",
                "`sources.a.pool_size`",
            ),
            (
                "[sources.a]\ntype = \"redis\"\nurl = \"redis://h\"\nallowed_namespaces = [\"Team_A\"]",
                "`sources.a.allowed_namespaces`",
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
    fn postgres_named_queries_are_what_pg_query_may_pick() {
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
        let source = &config.sources[0].source;
        let metadata = |query: &str| -> HashMap<String, String> {
            [("query".to_string(), query.to_string())].into()
        };
        assert!(
            source
                .parse("pg-query", &Metadata::new(&metadata("dagster_backlog")))
                .is_ok()
        );
        assert!(
            source
                .parse("pg-query", &Metadata::new(&metadata("other")))
                .is_err()
        );
        assert!(!format!("{config:?}").contains(":pw@"));
        let error =
            error_of("[sources.p]\ntype = \"postgres\"\nurl = \"postgres://u:hunter2@h:x/db\"");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn every_redis_topology_loads_and_no_secret_shows() {
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
            [sources.plain]
            type = "redis"
            url = "redis://:hunter2@host"
            [sources.sentinel]
            type = "redis-sentinel"
            urls = ["redis://10.0.0.9:26379"]
            master = "mymaster"
            "#,
            password.display()
        ))
        .unwrap();
        let types: Vec<&str> = config
            .sources
            .iter()
            .map(|s| s.type_name.as_str())
            .collect();
        assert_eq!(types, ["redis-cluster", "redis", "redis-sentinel"]);
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("hunter2"),
            "{debug}"
        );
    }

    #[test]
    fn allowed_namespaces_admit_names_and_prefixes() {
        let fence = NamespaceFence::new(Some(vec!["team-a".into(), "batch-*".into()]));
        assert!(fence.admits("team-a"));
        assert!(fence.admits("batch-nightly"));
        assert!(!fence.admits("team-b"));
        assert!(!fence.admits("team-a2"));
        assert!(!fence.admits(""));
        assert!(NamespaceFence::new(Some(vec!["*".into()])).admits("anything"));
        assert!(!NamespaceFence::new(Some(vec![])).admits("anything"));
        assert!(NamespaceFence::new(None).admits("anything"));
    }
}
