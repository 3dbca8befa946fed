//! Fuzzes trigger parsing: `scalerMetadata` and the ScaledObject's namespace, as KEDA would
//! send them, through the server's own `parse_trigger` over one source of each backend (which
//! make no connection until they are read).
//!
//! The input is structured, so the fuzzer reaches the metric parsers instead of spending its
//! time on the source lookup (a hash lookup gives it no coverage to climb): `source` and
//! `metric` are picked from the configured ones (or raw text, or left out), and the other keys
//! and values are either raw text or tokens the parsers know (the chosen metric's keys, every
//! other key, measure spellings, numbers at f64's edges), glued to raw text, repeated past the
//! size bounds, or joined into comma-separated lists.
//!
//! A crash is a panic, or an answer tests/it/metadata_properties.rs would reject: an accepted
//! trigger with a target that is not finite and > 0, an activation target not finite and
//! >= 0 or a metric name that is not a DNS-1123 label; an error other than INVALID_ARGUMENT
//! naming a key or PERMISSION_DENIED for the fenced source. How to run it: docs/SECURITY.md.

#![no_main]

use std::{collections::HashMap, sync::LazyLock};

use arbitrary::Arbitrary;
use backlog_scaler::{
    Error,
    config::Config,
    metadata::shorten,
    naming,
    sources::{
        pgbouncer::{self, query::MEASURES as POOL_MEASURES},
        postgres::{
            self,
            query::{ACTIVITY_MEASURES, DAGSTER_STATUSES, STATEMENTS_MEASURES},
        },
        redis,
    },
    trigger::{Catalog, parse_trigger},
};
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
[sources.redis-main]
type = "redis"
url = "redis://127.0.0.1:6379"

[sources.redis-fenced]
type = "redis"
url = "redis://127.0.0.1:6379"
allowed_namespaces = ["team-a", "batch-*"]

[sources.pg-main]
type = "postgres"
url = "postgres://scaler@127.0.0.1:5432/app"
[sources.pg-main.queries]
dagster_backlog = "SELECT count(*) FROM runs"

[sources.bouncer]
type = "pgbouncer"
url = "postgres://scaler@127.0.0.1:6432/pgbouncer"
"#;

const SOURCES: &[&str] = &["redis-main", "redis-fenced", "pg-main", "bouncer"];

const COMMON_KEYS: &[&str] = &["source", "metric", "target", "activationTarget"];

/// Values the parsers treat specially, and the edges of what they accept.
const TRICKY: &[&str] = &[
    "",
    " ",
    "0",
    "-0",
    "1",
    "10",
    "2.5",
    "1e309",
    "-1e309",
    "5e-324",
    "NaN",
    "inf",
    "-inf",
    "9223372036854775808",
    "true",
    "false",
    "now",
    "seconds",
    "ms",
    "backlog",
    "latency",
    "length",
    "pending",
    "lag",
    "public",
    "dagster_backlog",
    "team=data",
    "0,3,6,9",
    "\\x06\\x16",
    "\\x",
    "\\xff",
    ",",
    "a,,b",
    "a,a",
    "=",
    "é",
    "🦀",
    "\u{202E}",
    "team-a",
    "batch-nightly",
    "redis-main",
    "redis-fenced",
    "pg-main",
    "bouncer",
    "default",
    "workers",
    "events",
];

struct World {
    catalog: Catalog,
    /// Every metric's name and keys.
    metrics: Vec<(&'static str, &'static [&'static str])>,
    /// Every key some metric takes, the common keys and KEDA's.
    keys: Vec<&'static str>,
    /// Metric names, spellings and [`TRICKY`].
    tokens: Vec<&'static str>,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let config = Config::from_toml(CONFIG).expect("the fuzz config is valid");
    let mut metrics: Vec<(&'static str, &'static [&'static str])> = Vec::new();
    metrics.extend(redis::metrics::METRICS.iter().map(|d| (d.name, d.keys)));
    metrics.extend(postgres::metrics::METRICS.iter().map(|d| (d.name, d.keys)));
    metrics.extend(pgbouncer::metrics::METRICS.iter().map(|d| (d.name, d.keys)));
    let mut keys: Vec<&'static str> = COMMON_KEYS.to_vec();
    keys.extend(["scalerAddress", "enableTLS", "unsafeSsl", "caCert"]);
    let mut tokens: Vec<&'static str> = TRICKY.to_vec();
    for (name, metric_keys) in &metrics {
        tokens.push(name);
        keys.extend(metric_keys.iter().copied());
    }
    tokens.extend(ACTIVITY_MEASURES.iter().map(|(n, _)| *n));
    tokens.extend(STATEMENTS_MEASURES.iter().map(|(n, _)| *n));
    tokens.extend(POOL_MEASURES.iter().map(|(n, _)| *n));
    tokens.extend(DAGSTER_STATUSES.iter().copied());
    keys.sort_unstable();
    keys.dedup();
    World {
        catalog: Catalog::new(&config.sources, &config.server.limits),
        metrics,
        keys,
        tokens,
    }
});

/// The largest value built by repetition: past `max_metadata_value_bytes` (16 KiB), well short
/// of what would make a case slow.
const MAX_REPEATED_BYTES: usize = 40_000;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    source: Pick<'a>,
    metric: Pick<'a>,
    target: Option<Text<'a>>,
    activation_target: Option<Text<'a>>,
    namespace: Text<'a>,
    entries: Vec<(Key<'a>, Text<'a>)>,
}

/// The value of `source` or `metric`.
#[derive(Arbitrary, Debug)]
enum Pick<'a> {
    Known(u8),
    Raw(Text<'a>),
    Absent,
}

#[derive(Arbitrary, Debug)]
enum Key<'a> {
    /// One of the chosen metric's keys (any metric's when `metric` names none).
    Own(u8),
    Known(u8),
    FromEnv(u8),
    Raw(&'a str),
}

#[derive(Arbitrary, Debug)]
enum Text<'a> {
    Raw(&'a str),
    Token(u8),
    Glued(u8, &'a str),
    Repeated(&'a str, u16),
    List(Vec<u8>),
}

fn pick<'w>(from: &'w [&'static str], index: u8) -> &'w str {
    from[usize::from(index) % from.len()]
}

impl Pick<'_> {
    fn render(&self, known: &[&'static str], world: &World) -> Option<String> {
        match self {
            Pick::Known(i) => Some(pick(known, *i).to_string()),
            Pick::Raw(text) => Some(text.render(world)),
            Pick::Absent => None,
        }
    }
}

impl Key<'_> {
    fn render(&self, own: &[&'static str], world: &World) -> String {
        match self {
            Key::Own(i) if !own.is_empty() => pick(own, *i).to_string(),
            Key::Own(i) | Key::Known(i) => pick(&world.keys, *i).to_string(),
            Key::FromEnv(i) => format!("{}FromEnv", pick(&world.keys, *i)),
            Key::Raw(raw) => raw.to_string(),
        }
    }
}

impl Text<'_> {
    fn render(&self, world: &World) -> String {
        match self {
            Text::Raw(raw) => raw.to_string(),
            Text::Token(i) => pick(&world.tokens, *i).to_string(),
            Text::Glued(i, raw) => format!("{}{raw}", pick(&world.tokens, *i)),
            Text::Repeated(raw, n) => {
                let n = usize::from(*n).min(MAX_REPEATED_BYTES / raw.len().max(1));
                raw.repeat(n)
            }
            Text::List(items) => items
                .iter()
                .map(|i| pick(&world.tokens, *i))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

impl Input<'_> {
    fn metadata(&self, world: &World) -> HashMap<String, String> {
        let names: Vec<&'static str> = world.metrics.iter().map(|(name, _)| *name).collect();
        let metric = self.metric.render(&names, world);
        let own: &[&'static str] = world
            .metrics
            .iter()
            .find(|(name, _)| Some(*name) == metric.as_deref())
            .map_or(&[], |(_, keys)| keys);
        let common = [
            ("source", self.source.render(SOURCES, world)),
            ("metric", metric),
            ("target", self.target.as_ref().map(|t| t.render(world))),
            (
                "activationTarget",
                self.activation_target.as_ref().map(|t| t.render(world)),
            ),
        ];
        let mut map: HashMap<String, String> = common
            .into_iter()
            .filter_map(|(key, value)| Some((key.to_string(), value?)))
            .collect();
        for (key, value) in &self.entries {
            map.insert(key.render(own, world), value.render(world));
        }
        map
    }
}

fuzz_target!(|input: Input<'_>| {
    let world = &*WORLD;
    let map = input.metadata(world);
    let namespace = input.namespace.render(world);
    check(&map, &namespace, world);
});

fn check(map: &HashMap<String, String>, namespace: &str, world: &World) {
    match parse_trigger(map, namespace, &world.catalog) {
        Ok(spec) => {
            assert!(spec.target.is_finite() && spec.target > 0.0, "{spec:?}");
            assert!(
                spec.activation_target.is_finite() && spec.activation_target >= 0.0,
                "{spec:?}"
            );
            assert!(spec.target_size() >= 1, "{spec:?}");
            assert!(naming::is_dns1123_label(&spec.metric_name), "{spec:?}");
            let again = parse_trigger(map, namespace, &world.catalog);
            assert_eq!(again.as_ref(), Ok(&spec), "parsing is deterministic");
        }
        Err(error) => {
            let status = tonic::Status::from(error.clone());
            assert!(
                status.message().len() <= 1024,
                "{}",
                shorten(status.message())
            );
            match &error {
                Error::InvalidMetadata { key, .. } => {
                    assert_eq!(status.code(), tonic::Code::InvalidArgument);
                    assert!(
                        key == "scalerMetadata"
                            || map.keys().any(|k| shorten(k) == *key)
                            || world.keys.contains(&key.as_str()),
                        "names a key it was not sent: {error}"
                    );
                    assert!(status.message().contains(&format!("`{key}`")), "{error}");
                }
                Error::NamespaceNotAllowed { source_name, .. } => {
                    assert_eq!(status.code(), tonic::Code::PermissionDenied);
                    assert_eq!(source_name, "redis-fenced");
                    assert!(namespace != "team-a" && !namespace.starts_with("batch-"));
                }
                other => panic!("parsing without a backend answered {other:?}"),
            }
        }
    }
}
