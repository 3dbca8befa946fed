//! Trigger metadata → [`TriggerSpec`], once, at the boundary.
//!
//! KEDA forwards a trigger's `metadata` map verbatim as `scalerMetadata`, except that it
//! resolves each `<key>FromEnv: ENV_NAME` from the scale target's container env and forwards
//! `<key>FromEnv: <value>` (kedacore/keda `parseExternalScalerMetadata`); [`from_env_keys`]
//! turns those into `<key>` before anything reads the map. Everything past this module works with the typed spec. Every error
//! names the offending key and says what is accepted; unknown keys are errors too, so a typo
//! such as `activationTreshold` is caught instead of silently ignored.

mod cache;

use std::{borrow::Cow, collections::HashMap, sync::Arc};

use crate::{
    Error, Result,
    config::{NamespaceFence, ServerLimits, SourceConfig},
    metadata::{Metadata, MetricName},
    naming,
    sources::{Query, Source},
};

pub use cache::TriggerCache;

/// The smallest `target` that reaches the HPA as more than 0 (see [`targets`]).
const MIN_TARGET: f64 = 0.001;

/// Keys every trigger takes.
const COMMON_KEYS: &[&str] = &["source", "metric", "target", "activationTarget"];

/// Keys KEDA itself reads from an `external` trigger and still forwards; accepted, ignored.
const KEDA_KEYS: &[&str] = &[
    "scalerAddress",
    "enableTLS",
    "unsafeSsl",
    "caCert",
    "tlsClientCert",
    "tlsClientKey",
];

/// A trigger, parsed: where to measure, what, and how to turn the value into replicas.
///
/// The trigger cache keeps one per distinct trigger, in its own table: 48 bytes, and no
/// allocation of its own (the query is shared with the engine's measurement). So the metric
/// name is not kept but built when an answer carries it ([`TriggerSpec::metric_name`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerSpec {
    /// The source (`source:`), as the [`Catalog`] numbers it.
    pub source: SourceId,
    /// What to read from it; also the engine's cache key (with the source).
    pub query: Query,
    /// Work per replica (`target:`), > 0.
    pub target: f64,
    /// The trigger is active while value > this (`activationTarget:`), ≥ 0.
    pub activation_target: f64,
    /// The `metric` value, as the source's metric table spells it.
    metric: MetricName,
    /// The hash of the measurement's identity that ends the metric name.
    name_hash: u32,
}

impl TriggerSpec {
    /// `targetSize` for KEDA < 2.17: the target rounded up, at least 1.
    pub fn target_size(&self) -> i64 {
        (self.target.ceil() as i64).max(1)
    }

    /// IsActive's answer for a measured value.
    pub fn is_active(&self, value: f64) -> bool {
        value > self.activation_target
    }

    /// The DNS-1123 metric name GetMetricSpec returns ([`naming::metric_name`]).
    pub fn metric_name(&self) -> String {
        self.name().as_str().to_owned()
    }

    /// [`TriggerSpec::metric_name`], built in place.
    pub fn name(&self) -> naming::Name {
        naming::Name::hashed(self.metric.as_str(), &self.query.subject(), self.name_hash)
    }
}

/// A configured source, as a parsed trigger names it: its place in the [`Catalog`] that
/// parsed the trigger (4 bytes where a name would take 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceId(u32);

/// The configured sources, by name, as trigger parsing sees them, and the bounds on what a
/// trigger may send.
#[derive(Clone)]
pub struct Catalog {
    sources: HashMap<Arc<str>, Entry>,
    /// The names, by [`SourceId`].
    names: Vec<Arc<str>>,
    max_entries: usize,
    max_value_bytes: usize,
    max_list_items: usize,
}

#[derive(Clone)]
struct Entry {
    id: SourceId,
    name: Arc<str>,
    source: Arc<dyn Source>,
    namespaces: NamespaceFence,
}

impl Catalog {
    pub fn new(sources: &[SourceConfig], limits: &ServerLimits) -> Self {
        let names: Vec<Arc<str>> = sources
            .iter()
            .map(|config| Arc::from(config.name.as_str()))
            .collect();
        let sources = sources
            .iter()
            .zip(&names)
            .zip(0..)
            .map(|((config, name), id)| {
                let entry = Entry {
                    id: SourceId(id),
                    name: name.clone(),
                    source: config.source.clone(),
                    namespaces: config.namespaces.clone(),
                };
                (name.clone(), entry)
            })
            .collect();
        Catalog {
            sources,
            names,
            max_entries: limits.max_metadata_entries,
            max_value_bytes: limits.max_metadata_value_bytes,
            max_list_items: limits.max_list_items,
        }
    }

    /// The metadata map's size bounds, checked before anything reads it.
    fn check_size(&self, metadata: &HashMap<String, String>) -> Result<()> {
        if metadata.len() > self.max_entries {
            return Err(Error::invalid(
                "scalerMetadata",
                format!(
                    "has {} entries; at most {} are accepted (server.limits.max_metadata_entries)",
                    metadata.len(),
                    self.max_entries
                ),
            ));
        }
        let too_long = metadata
            .iter()
            .filter(|(key, value)| key.len().max(value.len()) > self.max_value_bytes)
            .map(|(key, _)| key.as_str())
            .min();
        match too_long {
            None => Ok(()),
            Some(key) => Err(Error::invalid(
                crate::metadata::shorten(key),
                format!(
                    "is longer than {} bytes (server.limits.max_metadata_value_bytes)",
                    self.max_value_bytes
                ),
            )),
        }
    }

    /// The name of a source a trigger parsed by this catalog names (empty for another
    /// catalog's number, which no source answers to).
    pub fn source_name(&self, id: SourceId) -> &str {
        self.names.get(id.0 as usize).map_or("", |name| name)
    }

    /// Configured source names, sorted, for error messages.
    fn names(&self) -> String {
        let mut names: Vec<&str> = self.sources.keys().map(|n| &**n).collect();
        names.sort_unstable();
        names.join(", ")
    }
}

/// Parses KEDA's `scalerMetadata` of a ScaledObject in `namespace` into a [`TriggerSpec`].
/// The namespace is checked against the source's `allowed_namespaces` before the source sees
/// any of the metadata.
pub fn parse_trigger(
    metadata: &HashMap<String, String>,
    namespace: &str,
    catalog: &Catalog,
) -> Result<TriggerSpec> {
    catalog.check_size(metadata)?;
    let metadata = from_env_keys(metadata)?;
    let md = Metadata::with_list_limit(&metadata, catalog.max_list_items);
    let source_name = md.required("source", "the name of a source in the scaler's config")?;
    let entry = catalog.sources.get(source_name).ok_or_else(|| {
        Error::invalid(
            "source",
            format!(
                "no source named `{}` in the scaler's config; configured: {}",
                crate::metadata::shorten(source_name),
                catalog.names()
            ),
        )
    })?;
    if !entry.namespaces.admits(namespace) {
        return Err(Error::NamespaceNotAllowed {
            namespace: crate::metadata::shorten(namespace),
            source_name: entry.name.to_string(),
        });
    }
    let metric = md.required("metric", &entry.source.metrics())?;
    let parsed = entry
        .source
        .parse(metric, &md)
        .map_err(|e| wrong_metric_for_source(e, metric, entry))?;
    let (target, activation_target) = targets(&md)?;
    reject_unknown(&md, metric, parsed.keys)?;
    let name_hash = naming::identity_hash(&parsed.query.identity(&entry.name));
    Ok(TriggerSpec {
        source: entry.id,
        query: parsed.query,
        target,
        activation_target,
        metric: parsed.metric,
        name_hash,
    })
}

/// The suffix of a key whose value KEDA resolved from the scale target's env.
const FROM_ENV: &str = "FromEnv";

/// `<key>` for a key `<key>FromEnv`.
fn plain(key: &str) -> Option<&str> {
    key.strip_suffix(FROM_ENV).filter(|k| !k.is_empty())
}

/// The map with every `<key>FromEnv` renamed `<key>`: KEDA forwards the value it resolved
/// under the `FromEnv` name, and it means what `<key>` means. Both present is an error naming
/// both, since the scaler cannot tell which one the user meant.
pub fn from_env_keys(
    metadata: &HashMap<String, String>,
) -> Result<Cow<'_, HashMap<String, String>>> {
    if !metadata.keys().any(|key| plain(key).is_some()) {
        return Ok(Cow::Borrowed(metadata));
    }
    let mut resolved = HashMap::with_capacity(metadata.len());
    let mut keys: Vec<&String> = metadata.keys().collect();
    keys.sort_unstable();
    for key in keys {
        let Some(twin) = plain(key) else { continue };
        if metadata.contains_key(twin) {
            return Err(Error::invalid(
                crate::metadata::shorten(key),
                format!(
                    "is set together with `{twin}`, and both mean `{twin}` (KEDA forwards \
                     `{key}` with the value it resolved from the workload's env): keep one",
                    twin = crate::metadata::shorten(twin),
                    key = crate::metadata::shorten(key),
                ),
            ));
        }
    }
    for (key, value) in metadata {
        let key = plain(key).unwrap_or(key);
        resolved.insert(key.to_owned(), value.clone());
    }
    Ok(Cow::Owned(resolved))
}

/// `target` (> 0, required) and `activationTarget` (≥ 0, default 0).
fn targets(md: &Metadata<'_>) -> Result<(f64, f64)> {
    let target = md.number("target")?.ok_or_else(|| {
        Error::invalid(
            "target",
            "is required: the metric value one replica handles, a number > 0",
        )
    })?;
    // `number` only returns finite values, so plain comparisons are exact here.
    if target <= 0.0 {
        return Err(Error::invalid(
            "target",
            format!("must be a number > 0, got `{target}`"),
        ));
    }
    // KEDA hands the target to the HPA in thousandths (a milli-quantity): a smaller target
    // would reach it as 0, and value ÷ target as infinity.
    if target < MIN_TARGET {
        return Err(Error::invalid(
            "target",
            format!(
                "must be at least {MIN_TARGET} (KEDA passes targets to the HPA in thousandths), got `{target}`"
            ),
        ));
    }
    let activation_target = md.number("activationTarget")?.unwrap_or(0.0);
    if activation_target < 0.0 {
        return Err(Error::invalid(
            "activationTarget",
            format!("must be a number >= 0, got `{activation_target}`"),
        ));
    }
    // `-0` is 0: adding +0 turns a negative zero positive and leaves every other value alone.
    Ok((target, activation_target + 0.0))
}

/// A `metric` the source family does not serve gets an error naming the source's type.
fn wrong_metric_for_source(error: Error, metric: &str, entry: &Entry) -> Error {
    match error {
        Error::InvalidMetadata { key, .. } if key == "metric" => Error::invalid(
            "metric",
            format!(
                "`{}` is not served by source `{}` ({} source); accepted: {}",
                crate::metadata::shorten(metric),
                entry.name,
                entry.source.family(),
                entry.source.metrics()
            ),
        ),
        other => other,
    }
}

/// Every key must be a common key, a KEDA key or one of `metric_keys` (`*FromEnv` keys have
/// become their plain twins by now).
fn reject_unknown(md: &Metadata<'_>, metric: &str, metric_keys: &[&str]) -> Result<()> {
    let unknown = md
        .keys()
        .filter(|key| {
            !COMMON_KEYS.contains(key) && !KEDA_KEYS.contains(key) && !metric_keys.contains(key)
        })
        .min();
    match unknown {
        None => Ok(()),
        Some(key) => {
            let mut accepted: Vec<&str> = COMMON_KEYS.to_vec();
            accepted.extend_from_slice(metric_keys);
            Err(Error::invalid(
                crate::metadata::shorten(key),
                format!(
                    "is not a key of metric `{metric}`; accepted: {}",
                    accepted.join(", ")
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::{config::Config, sources::redis::RedisQuery};

    /// One Redis source, `redis-main`, fenced to `team-a` and `batch-*`.
    pub(super) fn catalog() -> Catalog {
        let config = Config::from_toml(
            "[sources.redis-main]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\n\
             allowed_namespaces = [\"team-a\", \"batch-*\"]",
        )
        .unwrap();
        Catalog::new(&config.sources, &config.server.limits)
    }

    pub(super) fn metadata(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<TriggerSpec> {
        parse_trigger(&metadata(pairs), "team-a", &catalog())
    }

    const BASE: &[(&str, &str)] = &[
        ("scalerAddress", "backlog-scaler.keda.svc:9090"),
        ("source", "redis-main"),
        ("metric", "redis-list"),
        ("keys", "agent:tasks:pending,agent:tasks:retry"),
        ("target", "10"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut pairs: Vec<_> = BASE
            .iter()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
            .copied()
            .collect();
        pairs.extend(extra.iter().filter(|(_, v)| *v != "<absent>"));
        pairs
    }

    #[test]
    fn a_parsed_trigger_fits_its_cache_slot() {
        // The trigger cache keeps one per distinct trigger, inline in its table: with its
        // 16-byte fingerprint, a 64-byte slot.
        assert!(
            std::mem::size_of::<TriggerSpec>() <= 48,
            "{}",
            std::mem::size_of::<TriggerSpec>()
        );
    }

    #[test]
    fn the_readme_trigger_parses() {
        let spec = parse(&with(&[("activationTarget", "0")])).unwrap();
        assert_eq!(catalog().source_name(spec.source), "redis-main");
        assert_eq!(
            spec.query,
            Query::new(RedisQuery::List {
                keys: vec![
                    "agent:tasks:pending".to_string(),
                    "agent:tasks:retry".to_string()
                ]
                .into()
            })
        );
        assert_eq!(spec.target, 10.0);
        assert_eq!(spec.activation_target, 0.0);
        assert!(
            spec.metric_name()
                .starts_with("redis-list-agent-tasks-pending-")
        );
        assert!(naming::is_dns1123_label(&spec.metric_name()));
    }

    #[test]
    fn the_documented_metric_name_is_stable() {
        // docs/triggers.md shows this name; a change here renames live HPA metrics.
        let spec = parse(&with(&[("activationTarget", "0")])).unwrap();
        assert_eq!(
            &*spec.metric_name(),
            "redis-list-agent-tasks-pending-a45d3e60"
        );
    }

    /// The names of existing queue triggers, as released: the HPA knows live metrics by these
    /// names, so a new metadata key with a default (such as `measure`) must not change them.
    const RELEASED_QUEUE_METRIC_NAMES: &[(&[(&str, &str)], &str)] = &[
        (
            &[("metric", "sidekiq"), ("queue", "default")],
            "sidekiq-queue-default-1e7d9347",
        ),
        (
            &[
                ("metric", "sidekiq"),
                ("queue", "default"),
                ("namespace", "app"),
            ],
            "sidekiq-app-queue-default-5cf2cb8a",
        ),
        (
            &[("metric", "rq"), ("queue", "high")],
            "rq-rq-queue-high-34785ad4",
        ),
        (
            &[("metric", "bullmq"), ("queue", "mail")],
            "bullmq-bull-mail-0acfb47f",
        ),
        (
            &[
                ("metric", "bullmq"),
                ("queue", "mail"),
                ("prefix", "{jobs}"),
                ("includeActive", "true"),
                ("countWhenPaused", "true"),
            ],
            "bullmq-jobs-mail-ad0934cc",
        ),
        (
            &[
                ("metric", "redis-stream"),
                ("stream", "events"),
                ("group", "workers"),
            ],
            "redis-stream-events-85c819ba",
        ),
        (
            &[
                ("metric", "redis-stream"),
                ("stream", "events"),
                ("group", "workers"),
                ("mode", "pending"),
            ],
            "redis-stream-events-a82876d2",
        ),
        (
            &[("metric", "celery"), ("queue", "celery")],
            "celery-celery-a4948e46",
        ),
    ];

    #[test]
    fn released_queue_metric_names_are_stable() {
        for (pairs, name) in RELEASED_QUEUE_METRIC_NAMES {
            let mut all = vec![("source", "redis-main"), ("target", "5")];
            all.extend_from_slice(pairs);
            let spec = parse(&all).unwrap();
            assert_eq!(&*spec.metric_name(), *name, "{pairs:?}");
            // `measure: backlog` is the default spelled out: the same measurement.
            all.push(("measure", "backlog"));
            let spelled_out = parse(&all).unwrap();
            assert_eq!(&*spelled_out.metric_name(), *name, "{all:?}");
            assert_eq!(spelled_out.query, spec.query);
        }
    }

    #[test]
    fn latency_triggers_are_named_apart_from_backlogs() {
        let backlog = [
            ("source", "redis-main"),
            ("target", "5"),
            ("metric", "sidekiq"),
            ("queue", "default"),
        ];
        let mut latency = backlog.to_vec();
        latency.push(("measure", "latency"));
        let spec = parse(&latency).unwrap();
        assert!(
            spec.metric_name()
                .starts_with("sidekiq-queue-default-latency-"),
            "{}",
            spec.metric_name()
        );
        assert_ne!(spec.metric_name(), parse(&backlog).unwrap().metric_name());
        // Pinned from its first release on, like the backlog names above.
        assert_eq!(
            &*spec.metric_name(),
            "sidekiq-queue-default-latency-e70cbd3d"
        );
    }

    #[test]
    fn fractional_target_rounds_up_for_old_keda() {
        let spec = parse(&with(&[("target", "2.5")])).unwrap();
        assert_eq!(spec.target, 2.5);
        assert_eq!(spec.target_size(), 3);
        let spec = parse(&with(&[("target", "0.1")])).unwrap();
        assert_eq!(spec.target_size(), 1);
    }

    #[test]
    fn activation_is_strictly_greater() {
        let spec = parse(&with(&[("activationTarget", "5")])).unwrap();
        assert!(!spec.is_active(5.0));
        assert!(spec.is_active(5.5));
    }

    #[test]
    fn keda_keys_are_accepted() {
        parse(&with(&[("enableTLS", "false"), ("unsafeSsl", "true")])).unwrap();
    }

    #[test]
    fn from_env_keys_mean_their_plain_twins() {
        // KEDA forwards `<key>FromEnv: <resolved value>`.
        let pairs: Vec<(&str, &str)> = BASE
            .iter()
            .map(|&(k, v)| match k {
                "keys" => ("keysFromEnv", v),
                "target" => ("targetFromEnv", "4"),
                _ => (k, v),
            })
            .chain([("activationTargetFromEnv", "2")])
            .collect();
        let spec = parse(&pairs).unwrap();
        assert_eq!(
            spec,
            parse(&with(&[("target", "4"), ("activationTarget", "2")])).unwrap()
        );
        // Both spellings: refused, naming both.
        let error = parse(&with(&[("targetFromEnv", "2")])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "metadata key `targetFromEnv`: is set together with `target`, and both mean \
             `target` (KEDA forwards `targetFromEnv` with the value it resolved from the \
             workload's env): keep one"
        );
        // A FromEnv key of no known key is an unknown key, like its twin.
        let error = parse(&with(&[("queueFromEnv", "x")])).unwrap_err();
        assert!(error.to_string().contains("`queue`"), "{error}");
        // `FromEnv` alone is no twin of anything.
        let error = parse(&with(&[("FromEnv", "x")])).unwrap_err();
        assert!(error.to_string().contains("`FromEnv`"), "{error}");
    }

    #[test]
    fn invalid_metadata_names_the_key_and_what_is_accepted() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (&[("source", "<absent>")], "source", "is required"),
            (
                &[("source", "redis-nope")],
                "source",
                "configured: redis-main",
            ),
            (&[("metric", "<absent>")], "metric", "redis-list"),
            (
                &[("metric", "pg-activity")],
                "metric",
                "accepted: redis-list",
            ),
            (&[("target", "<absent>")], "target", "is required"),
            (&[("target", "0")], "target", "> 0"),
            (&[("target", "-3")], "target", "> 0"),
            (&[("target", "5e-324")], "target", "at least 0.001"),
            (&[("target", "0.0009")], "target", "at least 0.001"),
            (&[("target", "ten")], "target", "must be a number"),
            (&[("target", "NaN")], "target", "must be a number"),
            (&[("target", "inf")], "target", "must be a number"),
            (&[("activationTarget", "-1")], "activationTarget", ">= 0"),
            (&[("keys", "<absent>")], "keys", "is required"),
            (&[("keys", "a,,b")], "keys", "empty item"),
            (&[("keys", "a,a")], "keys", "twice"),
            (
                &[("activationTreshold", "3")],
                "activationTreshold",
                "accepted: source",
            ),
        ];
        for (extra, key, fragment) in cases {
            let error = parse(&with(extra)).unwrap_err();
            let Error::InvalidMetadata { key: got, reason } = &error else {
                panic!("{extra:?}: not InvalidMetadata: {error:?}");
            };
            assert_eq!(got, key, "{extra:?}: {error}");
            assert!(reason.contains(fragment), "{extra:?}: {error}");
        }
    }

    #[test]
    fn the_smallest_target_and_a_negative_zero_activation_are_plain_numbers() {
        let spec = parse(&with(&[("target", "0.001"), ("activationTarget", "-0")])).unwrap();
        assert_eq!(spec.target, 0.001);
        assert!(
            spec.activation_target == 0.0 && spec.activation_target.is_sign_positive(),
            "{}",
            spec.activation_target
        );
    }

    #[test]
    fn a_namespace_outside_allowed_namespaces_is_denied_before_parsing() {
        let catalog = catalog();
        // Even metadata the source would reject is not looked at: the namespace decides first.
        let pairs = metadata(&[("source", "redis-main"), ("metric", "nope")]);
        let error = parse_trigger(&pairs, "team-b", &catalog).unwrap_err();
        assert_eq!(
            error,
            Error::NamespaceNotAllowed {
                namespace: "team-b".into(),
                source_name: "redis-main".into()
            }
        );
        assert_eq!(error.code(), tonic::Code::PermissionDenied);
        assert!(parse_trigger(&metadata(BASE), "batch-nightly", &catalog).is_ok());
    }

    #[test]
    fn oversized_metadata_is_refused_before_it_is_read() {
        let catalog = catalog();
        let parse_with = |key: &str, value: String| {
            let mut map = metadata(BASE);
            map.insert(key.to_string(), value);
            parse_trigger(&map, "team-a", &catalog)
                .unwrap_err()
                .to_string()
        };
        let error = parse_with("keys", "k".repeat(20_000));
        assert!(error.contains("max_metadata_value_bytes"), "{error}");
        assert!(error.len() < 300, "the value is not echoed: {error}");
        let keys: Vec<String> = (0..101).map(|i| format!("q{i}")).collect();
        let error = parse_with("keys", keys.join(","));
        assert!(error.contains("max_list_items"), "{error}");
        let mut map = metadata(BASE);
        map.extend((0..100).map(|i| (format!("extra{i}"), "x".to_string())));
        let error = parse_trigger(&map, "team-a", &catalog).unwrap_err();
        assert!(
            error.to_string().contains("max_metadata_entries"),
            "{error}"
        );
    }

    #[test]
    fn different_keys_give_different_names() {
        let one = parse(&with(&[("keys", "a")])).unwrap();
        let two = parse(&with(&[("keys", "a,b")])).unwrap();
        assert_ne!(one.metric_name(), two.metric_name());
        // target and activation are not part of the measurement, so not of the name.
        let other_target = parse(&with(&[("keys", "a"), ("target", "99")])).unwrap();
        assert_eq!(one.metric_name(), other_target.metric_name());
    }
}
