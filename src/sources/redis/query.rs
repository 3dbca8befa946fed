//! Redis trigger metrics: their metadata keys, the commands that read them, and how the
//! replies add up to one backlog value.
//!
//! A query never talks to Redis itself. It lists the [`RedisRead`]s it needs; the source
//! de-duplicates the reads of every query of a refresh, sends them in one pipeline per node,
//! and hands each query its replies to [`RedisQuery::combine`].

use redis::Value;
use serde::Serialize;

use crate::{Error, Result, trigger::Metadata};

/// The `metric` values Redis sources serve, for error messages.
pub const METRICS: &str = "redis-list";

/// One Redis measurement, as the trigger asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "metric", rename_all = "kebab-case")]
pub enum RedisQuery {
    /// `redis-list`: LLEN summed over `keys`.
    List { keys: Vec<String> },
}

/// One read command against one key. Reads are the unit of de-duplication and routing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RedisRead {
    Llen(String),
}

impl RedisRead {
    /// The key the read touches; the node that serves it is chosen by this key.
    pub fn key(&self) -> &str {
        match self {
            RedisRead::Llen(key) => key,
        }
    }

    pub fn command(&self) -> redis::Cmd {
        match self {
            RedisRead::Llen(key) => {
                let mut cmd = redis::cmd("LLEN");
                cmd.arg(key);
                cmd
            }
        }
    }
}

impl RedisQuery {
    /// Parses the metric-specific keys; returns the query and every key the metric accepts.
    pub fn parse(metric: &str, md: &Metadata<'_>) -> Result<(RedisQuery, &'static [&'static str])> {
        match metric {
            "redis-list" => {
                let keys = md.list("keys")?.ok_or_else(|| {
                    Error::invalid(
                        "keys",
                        "is required: comma-separated Redis list keys, summed",
                    )
                })?;
                Ok((RedisQuery::List { keys }, &["keys"]))
            }
            other => Err(Error::invalid(
                "metric",
                format!("unknown metric `{other}`; accepted: {METRICS}"),
            )),
        }
    }

    /// The readable subject of the metric name.
    pub fn subject(&self) -> String {
        match self {
            RedisQuery::List { keys } => keys.first().cloned().unwrap_or_default(),
        }
    }

    /// The reads this query needs, in the order [`combine`](Self::combine) expects replies.
    pub fn reads(&self) -> Vec<RedisRead> {
        match self {
            RedisQuery::List { keys } => keys.iter().cloned().map(RedisRead::Llen).collect(),
        }
    }

    /// Adds up the replies of [`reads`](Self::reads) into the backlog value.
    pub fn combine(&self, source: &str, replies: &[&Value]) -> Result<f64> {
        match self {
            RedisQuery::List { keys } => {
                let mut total = 0.0;
                for (key, reply) in keys.iter().zip(replies) {
                    total += integer(source, key, "a list", reply)? as f64;
                }
                Ok(total)
            }
        }
    }
}

/// An integer reply; a WRONGTYPE error names the key and the type it should have.
fn integer(source: &str, key: &str, expected: &str, reply: &Value) -> Result<i64> {
    match reply {
        Value::Int(n) => Ok(*n),
        Value::ServerError(error) if error.code() == "WRONGTYPE" => Err(Error::rejected(
            source,
            format!("key `{key}` holds another type of value, not {expected}"),
        )),
        Value::ServerError(error) => Err(Error::rejected(
            source,
            format!("reading key `{key}` failed: {}", error.code()),
        )),
        other => Err(Error::Internal(format!(
            "unexpected Redis reply for key `{key}`: {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_sums_its_keys() {
        let query = RedisQuery::List {
            keys: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            query.reads(),
            vec![RedisRead::Llen("a".into()), RedisRead::Llen("b".into())]
        );
        let replies = [Value::Int(3), Value::Int(0)];
        let refs: Vec<&Value> = replies.iter().collect();
        assert_eq!(query.combine("s", &refs).unwrap(), 3.0);
    }
}
