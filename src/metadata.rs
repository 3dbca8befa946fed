//! Typed reads of KEDA's `scalerMetadata` map, with errors that name the key.
//!
//! A leaf module: it depends only on [`crate::error`], so every backend can declare and parse
//! its metrics' keys here without knowing about triggers, the engine or the gRPC layer.
//!
//! Each backend declares its metrics once, as a table of [`MetricDef`]s: the `metric` value,
//! every key the metric accepts, and the one function that parses them. [`parse_metric`] looks
//! the metric up and produces the "unknown metric; accepted: …" error from the same table, so
//! the accepted keys and the parser cannot drift apart (KEDA's typed scaler config does the
//! same).

use std::collections::HashMap;

use crate::{Error, Result};

/// Read access to the metadata map with errors that name the key.
#[derive(Clone, Copy)]
pub struct Metadata<'a> {
    map: &'a HashMap<String, String>,
    max_list_items: usize,
}

impl<'a> Metadata<'a> {
    /// A reader with no bound on list lengths (for tests and tools).
    pub fn new(map: &'a HashMap<String, String>) -> Self {
        Metadata {
            map,
            max_list_items: usize::MAX,
        }
    }

    /// A reader whose lists hold at most `max_list_items` items (`server.limits.max_list_items`).
    pub fn with_list_limit(map: &'a HashMap<String, String>, max_list_items: usize) -> Self {
        Metadata {
            map,
            max_list_items,
        }
    }

    /// Every key present, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &'a str> {
        self.map.keys().map(String::as_str)
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
                format!("must be a number, got `{}`", shorten(raw)),
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
                format!("must be `true` or `false`, got `{}`", shorten(raw)),
            )),
        }
    }

    /// One of `table`'s spellings (the error lists them all), `default` when absent.
    pub fn choice<T: Copy>(&self, key: &str, table: &[(&str, T)], default: Option<T>) -> Result<T> {
        let accepted = table
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ");
        let raw = match (self.optional(key), default) {
            (Some(raw), _) => raw,
            (None, Some(default)) => return Ok(default),
            (None, None) => return Err(Error::invalid(key, format!("is required: {accepted}"))),
        };
        table
            .iter()
            .find(|(name, _)| *name == raw)
            .map(|(_, value)| *value)
            .ok_or_else(|| {
                Error::invalid(
                    key,
                    format!("unknown `{}`; accepted: {accepted}", shorten(raw)),
                )
            })
    }

    /// A comma-separated list of non-empty, trimmed, distinct items, if present.
    pub fn list(&self, key: &str) -> Result<Option<Vec<String>>> {
        let Some(raw) = self.optional(key) else {
            return Ok(None);
        };
        let mut items: Vec<String> = Vec::new();
        for item in raw.split(',').map(str::trim) {
            if items.len() == self.max_list_items {
                return Err(Error::invalid(
                    key,
                    format!(
                        "lists more than {} items (server.limits.max_list_items); split the trigger",
                        self.max_list_items
                    ),
                ));
            }
            if item.is_empty() {
                return Err(Error::invalid(
                    key,
                    format!(
                        "has an empty item in `{}`; use a comma-separated list",
                        shorten(raw)
                    ),
                ));
            }
            // A HashSet would be faster for long lists; lists are bounded by max_list_items.
            if items.iter().any(|seen| seen == item) {
                return Err(Error::invalid(
                    key,
                    format!("lists `{}` twice", shorten(item)),
                ));
            }
            items.push(item.to_string());
        }
        // A parsed query keeps its list as long as it is live: no spare capacity (a `Vec`
        // starts with room for 4).
        items.shrink_to_fit();
        Ok(Some(items))
    }

    /// A required comma-separated list (see [`list`](Self::list)).
    pub fn required_list(&self, key: &str, accepted: &str) -> Result<Vec<String>> {
        self.list(key)?
            .ok_or_else(|| Error::invalid(key, format!("is required: {accepted}")))
    }
}

/// At most this many characters of a bad value are quoted back in an error: enough to see
/// the typo, never a megabyte echoed into KEDA's logs.
const QUOTE_LIMIT: usize = 64;

/// A value as quoted in an error message.
pub fn shorten(raw: &str) -> String {
    match raw.char_indices().nth(QUOTE_LIMIT) {
        None => raw.to_string(),
        Some((cut, _)) => format!("{}…", &raw[..cut]),
    }
}

/// One metric a backend serves: its `metric` value, every metadata key it takes beyond the
/// common ones, and the function that parses them. `C` is what the parser needs to know of
/// the source (e.g. its named queries).
pub struct MetricDef<Q, C: ?Sized = ()> {
    pub name: &'static str,
    pub keys: &'static [&'static str],
    pub parse: fn(&Metadata<'_>, &C) -> Result<Q>,
}

/// A metric's parsed query, its name as the table spells it, and the keys it accepts (for
/// the unknown-key check).
pub struct Parsed<Q> {
    pub query: Q,
    pub metric: MetricName,
    pub keys: &'static [&'static str],
}

/// A metric's name as its table spells it, kept as a pointer to the table's entry: 8 bytes
/// where a `&'static str` takes 16 (every remembered trigger keeps one).
#[derive(Clone, Copy)]
pub struct MetricName(&'static &'static str);

impl MetricName {
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl PartialEq for MetricName {
    fn eq(&self, other: &MetricName) -> bool {
        self.as_str() == other.as_str()
    }
}

impl std::fmt::Debug for MetricName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// The `metric` values of a table, for messages: `redis-list, redis-zset, …`.
pub fn metric_names<Q, C: ?Sized>(table: &[MetricDef<Q, C>]) -> String {
    table
        .iter()
        .map(|def| def.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Finds `metric` in `table` and parses its keys.
pub fn parse_metric<Q, C: ?Sized>(
    table: &'static [MetricDef<Q, C>],
    metric: &str,
    md: &Metadata<'_>,
    context: &C,
) -> Result<Parsed<Q>> {
    let def = table.iter().find(|def| def.name == metric).ok_or_else(|| {
        Error::invalid(
            "metric",
            format!(
                "unknown metric `{}`; accepted: {}",
                shorten(metric),
                metric_names(table)
            ),
        )
    })?;
    Ok(Parsed {
        query: (def.parse)(md, context)?,
        metric: MetricName(&def.name),
        keys: def.keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_values_count_as_absent_and_values_are_trimmed() {
        let m = map(&[("a", "  "), ("b", " x ")]);
        let md = Metadata::new(&m);
        assert_eq!(md.optional("a"), None);
        assert_eq!(md.optional("b"), Some("x"));
        assert!(md.required("a", "something").is_err());
    }

    #[test]
    fn numbers_must_be_finite() {
        for bad in ["NaN", "inf", "-inf", "1e309", "ten"] {
            let m = map(&[("n", bad)]);
            let error = Metadata::new(&m).number("n").unwrap_err();
            assert!(error.to_string().contains("must be a number"), "{error}");
        }
        let m = map(&[("n", "-0")]);
        assert_eq!(Metadata::new(&m).number("n").unwrap(), Some(-0.0));
    }

    #[test]
    fn lists_reject_empty_and_repeated_items() {
        let m = map(&[("k", "a, b ,c"), ("e", "a,,b"), ("d", "a,a")]);
        let md = Metadata::new(&m);
        assert_eq!(md.list("k").unwrap().unwrap(), vec!["a", "b", "c"]);
        assert!(md.list("e").unwrap_err().to_string().contains("empty item"));
        assert!(md.list("d").unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn lists_are_bounded() {
        let m = map(&[("k", "a,b,c")]);
        assert_eq!(
            Metadata::with_list_limit(&m, 3)
                .list("k")
                .unwrap()
                .unwrap()
                .len(),
            3
        );
        let error = Metadata::with_list_limit(&m, 2).list("k").unwrap_err();
        assert!(error.to_string().contains("max_list_items"), "{error}");
    }

    #[test]
    fn errors_quote_at_most_a_short_prefix_of_a_huge_value() {
        let huge = "x".repeat(1 << 20);
        let m = map(&[("n", &huge)]);
        let error = Metadata::new(&m).number("n").unwrap_err().to_string();
        assert!(error.len() < 200, "{} bytes", error.len());
    }

    #[test]
    fn choices_list_every_spelling() {
        let table = [("one", 1), ("two", 2)];
        let m = map(&[("c", "three")]);
        let error = Metadata::new(&m)
            .choice("c", &table, None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("accepted: one, two"), "{error}");
        let m = map(&[]);
        assert_eq!(Metadata::new(&m).choice("c", &table, Some(2)).unwrap(), 2);
    }
}
