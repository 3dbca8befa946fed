//! Trigger metadata → [`TriggerSpec`], once, at the boundary.
//!
//! KEDA forwards a trigger's `metadata` map verbatim (with `*FromEnv` values already resolved)
//! as `scalerMetadata`. Everything past this module works with the typed spec. Every error
//! names the offending key and says what is accepted; unknown keys are errors too, so a typo
//! such as `activationTreshold` is caught instead of silently ignored.

use std::{collections::HashMap, sync::Arc};

use crate::{
    Error, Result, naming,
    sources::{Query, SourceKind, postgres::PgQuery, redis::RedisQuery},
};

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
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerSpec {
    /// The config name of the source (`source:`).
    pub source: Arc<str>,
    /// What to read from it; also the engine's cache key (with `source`).
    pub query: Query,
    /// Work per replica (`target:`), > 0.
    pub target: f64,
    /// The trigger is active while value > this (`activationTarget:`), ≥ 0.
    pub activation_target: f64,
    /// The DNS-1123 metric name returned by GetMetricSpec.
    pub metric_name: String,
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
}

/// What the trigger parser needs to know of the configured sources.
pub trait SourceCatalog {
    /// The kind of the source configured as `name`, if any.
    fn kind_of(&self, name: &str) -> Option<(Arc<str>, SourceKind)>;
    /// Configured source names, for error messages.
    fn names(&self) -> Vec<String>;
    /// The names of the source's `queries` (for `pg-query`).
    fn query_names(&self, _source: &str) -> Vec<String> {
        Vec::new()
    }
}

/// Parses KEDA's `scalerMetadata` into a [`TriggerSpec`].
pub fn parse_trigger(
    metadata: &HashMap<String, String>,
    catalog: &dyn SourceCatalog,
) -> Result<TriggerSpec> {
    let md = Metadata::new(metadata);
    let source_name = md.required("source", "the name of a source in the scaler's config")?;
    let (source, kind) = catalog.kind_of(source_name).ok_or_else(|| {
        Error::invalid(
            "source",
            format!(
                "no source named `{source_name}` in the scaler's config; configured: {}",
                catalog.names().join(", ")
            ),
        )
    })?;
    let metric = md.required("metric", kind.metrics_accepted())?;
    let (query, metric_keys) = match kind {
        SourceKind::Redis => {
            let (query, keys) = RedisQuery::parse(metric, &md)
                .map_err(|e| wrong_metric_for_source(e, metric, &source, kind))?;
            (Query::Redis(query), keys)
        }
        SourceKind::Postgres => {
            let named = catalog.query_names(&source);
            let (query, keys) = PgQuery::parse(metric, &md, &named)
                .map_err(|e| wrong_metric_for_source(e, metric, &source, kind))?;
            (Query::Postgres(query), keys)
        }
    };
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
    let activation_target = md.number("activationTarget")?.unwrap_or(0.0);
    if activation_target < 0.0 {
        return Err(Error::invalid(
            "activationTarget",
            format!("must be a number >= 0, got `{activation_target}`"),
        ));
    }
    md.reject_unknown(metric, metric_keys)?;
    let identity = serde_json::to_string(&(&*source, &query))
        .map_err(|e| Error::Internal(format!("cannot render measurement identity: {e}")))?;
    let metric_name = naming::metric_name(metric, &query.subject(), &identity);
    Ok(TriggerSpec {
        source,
        query,
        target,
        activation_target,
        metric_name,
    })
}

/// A `metric` the source family does not serve gets an error naming the source's type.
fn wrong_metric_for_source(error: Error, metric: &str, source: &str, kind: SourceKind) -> Error {
    match error {
        Error::InvalidMetadata { key, .. } if key == "metric" => Error::invalid(
            "metric",
            format!(
                "`{metric}` is not served by source `{source}` ({} source); accepted: {}",
                kind.label(),
                kind.metrics_accepted()
            ),
        ),
        other => other,
    }
}

/// Read access to the metadata map with errors that name the key.
pub struct Metadata<'a> {
    map: &'a HashMap<String, String>,
}

impl<'a> Metadata<'a> {
    pub fn new(map: &'a HashMap<String, String>) -> Self {
        Metadata { map }
    }

    /// The trimmed value of `key`; an empty value counts as absent.
    pub fn optional(&self, key: &str) -> Option<&'a str> {
        self.map
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The value of `key`, or an error saying it is required and what it takes.
    pub fn required(&self, key: &str, accepted: &str) -> Result<&'a str> {
        self.optional(key)
            .ok_or_else(|| Error::invalid(key, format!("is required: {accepted}")))
    }

    /// A finite number, if present.
    pub fn number(&self, key: &str) -> Result<Option<f64>> {
        let Some(raw) = self.optional(key) else {
            return Ok(None);
        };
        match raw.parse::<f64>() {
            Ok(value) if value.is_finite() => Ok(Some(value)),
            _ => Err(Error::invalid(
                key,
                format!("must be a number, got `{raw}`"),
            )),
        }
    }

    /// `true` or `false` (case-insensitive), `default` when absent.
    pub fn flag(&self, key: &str, default: bool) -> Result<bool> {
        match self.optional(key) {
            None => Ok(default),
            Some(raw) if raw.eq_ignore_ascii_case("true") => Ok(true),
            Some(raw) if raw.eq_ignore_ascii_case("false") => Ok(false),
            Some(raw) => Err(Error::invalid(
                key,
                format!("must be `true` or `false`, got `{raw}`"),
            )),
        }
    }

    /// A comma-separated list of non-empty, trimmed, distinct items, if present.
    pub fn list(&self, key: &str) -> Result<Option<Vec<String>>> {
        let Some(raw) = self.optional(key) else {
            return Ok(None);
        };
        let mut items: Vec<String> = Vec::new();
        for item in raw.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(Error::invalid(
                    key,
                    format!("has an empty item in `{raw}`; use a comma-separated list"),
                ));
            }
            if items.iter().any(|seen| seen == item) {
                return Err(Error::invalid(key, format!("lists `{item}` twice")));
            }
            items.push(item.to_string());
        }
        Ok(Some(items))
    }

    /// Every key must be a common key, a KEDA key, a `*FromEnv` key (KEDA resolved it into
    /// its plain twin) or one of `metric_keys`.
    fn reject_unknown(&self, metric: &str, metric_keys: &[&str]) -> Result<()> {
        let mut unknown: Vec<&str> = self
            .map
            .keys()
            .map(String::as_str)
            .filter(|key| {
                !COMMON_KEYS.contains(key)
                    && !KEDA_KEYS.contains(key)
                    && !metric_keys.contains(key)
                    && !key.ends_with("FromEnv")
            })
            .collect();
        unknown.sort_unstable();
        match unknown.first() {
            None => Ok(()),
            Some(key) => {
                let mut accepted: Vec<&str> = COMMON_KEYS.to_vec();
                accepted.extend_from_slice(metric_keys);
                Err(Error::invalid(
                    *key,
                    format!(
                        "is not a key of metric `{metric}`; accepted: {}",
                        accepted.join(", ")
                    ),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Catalog;

    impl SourceCatalog for Catalog {
        fn kind_of(&self, name: &str) -> Option<(Arc<str>, SourceKind)> {
            (name == "redis-main").then(|| (Arc::from(name), SourceKind::Redis))
        }
        fn names(&self) -> Vec<String> {
            vec!["redis-main".into()]
        }
    }

    fn metadata(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<TriggerSpec> {
        parse_trigger(&metadata(pairs), &Catalog)
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
    fn the_readme_trigger_parses() {
        let spec = parse(&with(&[("activationTarget", "0")])).unwrap();
        assert_eq!(&*spec.source, "redis-main");
        assert_eq!(
            spec.query,
            Query::Redis(RedisQuery::List {
                keys: vec!["agent:tasks:pending".into(), "agent:tasks:retry".into()]
            })
        );
        assert_eq!(spec.target, 10.0);
        assert_eq!(spec.activation_target, 0.0);
        assert!(
            spec.metric_name
                .starts_with("redis-list-agent-tasks-pending-")
        );
        assert!(naming::is_dns1123_label(&spec.metric_name));
    }

    #[test]
    fn the_documented_metric_name_is_stable() {
        // docs/triggers.md shows this name; a change here renames live HPA metrics.
        let spec = parse(&with(&[("activationTarget", "0")])).unwrap();
        assert_eq!(spec.metric_name, "redis-list-agent-tasks-pending-a45d3e60");
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
    fn keda_keys_and_from_env_keys_are_accepted() {
        parse(&with(&[
            ("enableTLS", "false"),
            ("unsafeSsl", "true"),
            ("keysFromEnv", "QUEUE_KEYS"),
        ]))
        .unwrap();
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
    fn different_keys_give_different_names() {
        let one = parse(&with(&[("keys", "a")])).unwrap();
        let two = parse(&with(&[("keys", "a,b")])).unwrap();
        assert_ne!(one.metric_name, two.metric_name);
        // target and activation are not part of the measurement, so not of the name.
        let other_target = parse(&with(&[("keys", "a"), ("target", "99")])).unwrap();
        assert_eq!(one.metric_name, other_target.metric_name);
    }
}
