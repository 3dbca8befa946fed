//! Redis trigger metrics: their metadata keys, the commands that read them, and how the
//! replies add up to one backlog value — counted the way each queue library counts it.
//!
//! A query never talks to Redis itself. It lists the [`RedisRead`]s it needs; the source
//! de-duplicates the reads of every query of a refresh, sends them in one pipeline per node,
//! and hands each query its replies to [`RedisQuery::combine`]. Every read is read-only:
//! no queue library's own scripts are run (some of them write).

use redis::Value;
use serde::Serialize;
use tracing::debug;

use crate::{Error, Result, trigger::Metadata};

/// The `metric` values Redis sources serve, for error messages.
pub const METRICS: &str = "redis-list, redis-zset, redis-stream, bullmq, celery, sidekiq, rq";

/// kombu's default separator between a Celery queue name and its priority step.
pub const CELERY_SEPARATOR: &str = "\x06\x16";

/// kombu's default priority steps (`priority_steps` transport option).
const CELERY_PRIORITY_STEPS: &[u8] = &[0, 3, 6, 9];

/// One Redis measurement, as the trigger asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "metric", rename_all = "kebab-case")]
pub enum RedisQuery {
    /// `redis-list`: LLEN summed over `keys`.
    List { keys: Vec<String> },
    /// `redis-zset`: ZCARD summed over `keys`, or with `scoreMax: now` only the entries due.
    Zset {
        keys: Vec<String>,
        due_only: Option<ScoreUnit>,
    },
    /// `redis-stream`: length, pending, lag or backlog of a stream (and consumer group).
    Stream {
        stream: String,
        group: Option<String>,
        mode: StreamMode,
    },
    /// `bullmq`: waiting + prioritized + paused + due delayed (+ active) jobs of a queue.
    Bullmq {
        queue_key: String,
        include_active: bool,
        count_when_paused: bool,
    },
    /// `celery` (kombu's Redis transport): the queue key and its priority sub-queues.
    Celery { keys: Vec<String> },
    /// `sidekiq` and `rq`: one list per queue.
    QueueList { library: QueueLibrary, key: String },
}

/// Unit of zset scores compared with "now".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreUnit {
    Seconds,
    Ms,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamMode {
    /// XLEN: every entry in the stream.
    Length,
    /// The group's pending entries list: delivered, not acknowledged.
    Pending,
    /// Entries not yet delivered to the group.
    Lag,
    /// Lag + pending: everything the group still has to finish.
    Backlog,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueLibrary {
    Sidekiq,
    Rq,
}

/// One read command against one key. Reads are the unit of de-duplication and routing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RedisRead {
    Llen(String),
    Zcard(String),
    /// ZCOUNT key -inf max.
    ZcountUpTo(String, i64),
    Xlen(String),
    XinfoGroups(String),
    XinfoStream(String),
    Hexists(String, &'static str),
}

impl RedisRead {
    /// The key the read touches; the node that serves it is chosen by this key.
    pub fn key(&self) -> &str {
        match self {
            RedisRead::Llen(key)
            | RedisRead::Zcard(key)
            | RedisRead::ZcountUpTo(key, _)
            | RedisRead::Xlen(key)
            | RedisRead::XinfoGroups(key)
            | RedisRead::XinfoStream(key)
            | RedisRead::Hexists(key, _) => key,
        }
    }

    pub fn command(&self) -> redis::Cmd {
        let mut cmd;
        match self {
            RedisRead::Llen(key) => {
                cmd = redis::cmd("LLEN");
                cmd.arg(key);
            }
            RedisRead::Zcard(key) => {
                cmd = redis::cmd("ZCARD");
                cmd.arg(key);
            }
            RedisRead::ZcountUpTo(key, max) => {
                cmd = redis::cmd("ZCOUNT");
                cmd.arg(key).arg("-inf").arg(*max);
            }
            RedisRead::Xlen(key) => {
                cmd = redis::cmd("XLEN");
                cmd.arg(key);
            }
            RedisRead::XinfoGroups(key) => {
                cmd = redis::cmd("XINFO");
                cmd.arg("GROUPS").arg(key);
            }
            RedisRead::XinfoStream(key) => {
                cmd = redis::cmd("XINFO");
                cmd.arg("STREAM").arg(key);
            }
            RedisRead::Hexists(key, field) => {
                cmd = redis::cmd("HEXISTS");
                cmd.arg(key).arg(*field);
            }
        }
        cmd
    }
}

impl RedisQuery {
    /// Parses the metric-specific keys; returns the query and every key the metric accepts.
    pub fn parse(metric: &str, md: &Metadata<'_>) -> Result<(RedisQuery, &'static [&'static str])> {
        match metric {
            "redis-list" => {
                let keys = required_list(md, "keys", "comma-separated Redis list keys, summed")?;
                Ok((RedisQuery::List { keys }, &["keys"]))
            }
            "redis-zset" => {
                let keys =
                    required_list(md, "keys", "comma-separated Redis sorted-set keys, summed")?;
                let due_only = match md.optional("scoreMax") {
                    None => None,
                    Some("now") => Some(match md.optional("scoreUnit") {
                        None | Some("seconds") => ScoreUnit::Seconds,
                        Some("ms") => ScoreUnit::Ms,
                        Some(other) => {
                            return Err(Error::invalid(
                                "scoreUnit",
                                format!("must be `seconds` or `ms`, got `{other}`"),
                            ));
                        }
                    }),
                    Some(other) => {
                        return Err(Error::invalid(
                            "scoreMax",
                            format!(
                                "must be `now` (count entries with score <= now), got `{other}`"
                            ),
                        ));
                    }
                };
                if due_only.is_none() && md.optional("scoreUnit").is_some() {
                    return Err(Error::invalid(
                        "scoreUnit",
                        "is only used with `scoreMax: now`",
                    ));
                }
                Ok((
                    RedisQuery::Zset { keys, due_only },
                    &["keys", "scoreMax", "scoreUnit"],
                ))
            }
            "redis-stream" => {
                let stream = md.required("stream", "the stream key")?.to_string();
                let group = md.optional("group").map(str::to_string);
                let mode = match (md.optional("mode"), &group) {
                    (None, None) | (Some("length"), _) => StreamMode::Length,
                    (None, Some(_)) | (Some("backlog"), Some(_)) => StreamMode::Backlog,
                    (Some("pending"), Some(_)) => StreamMode::Pending,
                    (Some("lag"), Some(_)) => StreamMode::Lag,
                    (Some(mode @ ("pending" | "lag" | "backlog")), None) => {
                        return Err(Error::invalid(
                            "group",
                            format!("is required with `mode: {mode}`: the consumer group name"),
                        ));
                    }
                    (Some(other), _) => {
                        return Err(Error::invalid(
                            "mode",
                            format!("must be one of length, pending, lag, backlog; got `{other}`"),
                        ));
                    }
                };
                Ok((
                    RedisQuery::Stream {
                        stream,
                        group,
                        mode,
                    },
                    &["stream", "group", "mode"],
                ))
            }
            "bullmq" => {
                let queue = md.required("queue", "the BullMQ queue name")?;
                let prefix = md.optional("prefix").unwrap_or("bull");
                Ok((
                    RedisQuery::Bullmq {
                        queue_key: format!("{prefix}:{queue}"),
                        include_active: md.flag("includeActive", false)?,
                        count_when_paused: md.flag("countWhenPaused", false)?,
                    },
                    &["queue", "prefix", "includeActive", "countWhenPaused"],
                ))
            }
            "celery" => {
                let queue = md.required("queue", "the Celery queue name")?;
                let steps = match md.list("prioritySteps")? {
                    None => CELERY_PRIORITY_STEPS.to_vec(),
                    Some(items) => items
                        .iter()
                        .map(|item| item.parse::<u8>())
                        .collect::<std::result::Result<Vec<u8>, _>>()
                        .ok()
                        .filter(|steps| steps.iter().all(|s| *s <= 9))
                        .ok_or_else(|| {
                            Error::invalid(
                                "prioritySteps",
                                "must be a comma-separated list of priorities 0-9, e.g. `0,3,6,9`",
                            )
                        })?,
                };
                let separator = match md.optional("separator") {
                    None => CELERY_SEPARATOR.to_string(),
                    Some(raw) => unescape_hex(raw).ok_or_else(|| {
                        Error::invalid(
                            "separator",
                            "must be text where `\\xHH` stands for a byte, e.g. `\\x06\\x16`",
                        )
                    })?,
                };
                let prefix = md.optional("keyPrefix").unwrap_or("");
                Ok((
                    RedisQuery::Celery {
                        keys: celery_keys(prefix, queue, &separator, &steps),
                    },
                    &["queue", "prioritySteps", "separator", "keyPrefix"],
                ))
            }
            "sidekiq" => {
                let queue = md.required("queue", "the Sidekiq queue name")?;
                let key = match md.optional("namespace") {
                    Some(namespace) => format!("{namespace}:queue:{queue}"),
                    None => format!("queue:{queue}"),
                };
                Ok((
                    RedisQuery::QueueList {
                        library: QueueLibrary::Sidekiq,
                        key,
                    },
                    &["queue", "namespace"],
                ))
            }
            "rq" => {
                let queue = md.required("queue", "the RQ queue name")?;
                Ok((
                    RedisQuery::QueueList {
                        library: QueueLibrary::Rq,
                        key: format!("rq:queue:{queue}"),
                    },
                    &["queue"],
                ))
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
            RedisQuery::List { keys }
            | RedisQuery::Zset { keys, .. }
            | RedisQuery::Celery { keys } => keys.first().cloned().unwrap_or_default(),
            RedisQuery::Stream { stream, .. } => stream.clone(),
            RedisQuery::Bullmq { queue_key, .. } => queue_key.clone(),
            RedisQuery::QueueList { key, .. } => key.clone(),
        }
    }

    /// The reads this query needs at `now_ms` (Unix milliseconds), in the order
    /// [`combine`](Self::combine) expects replies.
    pub fn reads(&self, now_ms: i64) -> Vec<RedisRead> {
        match self {
            RedisQuery::List { keys } | RedisQuery::Celery { keys } => {
                keys.iter().cloned().map(RedisRead::Llen).collect()
            }
            RedisQuery::Zset { keys, due_only } => keys
                .iter()
                .cloned()
                .map(|key| match due_only {
                    None => RedisRead::Zcard(key),
                    Some(ScoreUnit::Ms) => RedisRead::ZcountUpTo(key, now_ms),
                    Some(ScoreUnit::Seconds) => RedisRead::ZcountUpTo(key, now_ms.div_euclid(1000)),
                })
                .collect(),
            RedisQuery::Stream { stream, mode, .. } => match mode {
                StreamMode::Length => vec![RedisRead::Xlen(stream.clone())],
                _ => vec![
                    RedisRead::XinfoGroups(stream.clone()),
                    RedisRead::XinfoStream(stream.clone()),
                ],
            },
            RedisQuery::Bullmq {
                queue_key,
                include_active,
                ..
            } => {
                let key = |suffix: &str| format!("{queue_key}:{suffix}");
                // BullMQ scores delayed jobs as timestamp_ms * 0x1000 + a 12-bit counter.
                let due = now_ms.saturating_mul(0x1000).saturating_add(0xfff);
                let mut reads = vec![
                    RedisRead::Hexists(key("meta"), "paused"),
                    RedisRead::Llen(key("wait")),
                    RedisRead::Zcard(key("prioritized")),
                    RedisRead::Llen(key("paused")),
                    RedisRead::ZcountUpTo(key("delayed"), due),
                ];
                if *include_active {
                    reads.push(RedisRead::Llen(key("active")));
                }
                reads
            }
            RedisQuery::QueueList { key, .. } => vec![RedisRead::Llen(key.clone())],
        }
    }

    /// Adds up the replies of [`reads`](Self::reads) into the backlog value.
    pub fn combine(&self, source: &str, replies: &[&Value]) -> Result<f64> {
        match self {
            RedisQuery::List { keys } | RedisQuery::Celery { keys } => {
                sum(source, keys, "a list", replies)
            }
            RedisQuery::QueueList { key, .. } => {
                sum(source, std::slice::from_ref(key), "a list", replies)
            }
            RedisQuery::Zset { keys, .. } => sum(source, keys, "a sorted set", replies),
            RedisQuery::Stream {
                stream,
                group,
                mode,
            } => {
                let ([reply] | [reply, _]) = replies else {
                    return Err(Error::Internal(format!(
                        "{} replies for a stream",
                        replies.len()
                    )));
                };
                match (mode, group) {
                    (StreamMode::Length, _) => {
                        Ok(integer(source, stream, "a stream", reply)? as f64)
                    }
                    (mode, Some(group)) => {
                        stream_group(source, stream, group, *mode, reply, replies[1])
                    }
                    (_, None) => Err(Error::Internal("stream mode without a group".into())),
                }
            }
            RedisQuery::Bullmq {
                queue_key,
                count_when_paused,
                ..
            } => {
                let meta = format!("{queue_key}:meta");
                let paused = integer(source, &meta, "a hash", replies[0])? == 1;
                if paused && !count_when_paused {
                    return Ok(0.0);
                }
                let mut total = 0;
                for (read, reply) in self.reads(0).iter().zip(replies).skip(1) {
                    let expected = match read {
                        RedisRead::Llen(_) => "a list",
                        _ => "a sorted set",
                    };
                    total += integer(source, read.key(), expected, reply)?;
                }
                Ok(total as f64)
            }
        }
    }
}

/// The keys kombu's `_size` counts: the queue itself for step 0, `queue + sep + step` for
/// every other step, each behind kombu's `global_keyprefix`.
fn celery_keys(prefix: &str, queue: &str, separator: &str, steps: &[u8]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::with_capacity(steps.len());
    for step in steps {
        let key = if *step == 0 {
            format!("{prefix}{queue}")
        } else {
            format!("{prefix}{queue}{separator}{step}")
        };
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// Turns `\xHH` escapes into the characters they name (KEDA metadata is plain text, so the
/// control bytes of kombu's separator are written as escapes).
fn unescape_hex(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find("\\x") {
        out.push_str(&rest[..at]);
        let hex = rest.get(at + 2..at + 4)?;
        let byte = u8::from_str_radix(hex, 16).ok().filter(u8::is_ascii)?;
        out.push(char::from(byte));
        rest = &rest[at + 4..];
    }
    out.push_str(rest);
    (!out.is_empty()).then_some(out)
}

fn required_list(md: &Metadata<'_>, key: &str, accepted: &str) -> Result<Vec<String>> {
    md.list(key)?
        .ok_or_else(|| Error::invalid(key, format!("is required: {accepted}")))
}

fn sum(source: &str, keys: &[String], expected: &str, replies: &[&Value]) -> Result<f64> {
    let mut total = 0;
    for (key, reply) in keys.iter().zip(replies) {
        total += integer(source, key, expected, reply)?;
    }
    Ok(total as f64)
}

/// Pending, lag or backlog of `group` from XINFO GROUPS, with XINFO STREAM for the fallback
/// when Redis cannot tell the lag.
fn stream_group(
    source: &str,
    stream: &str,
    group: &str,
    mode: StreamMode,
    groups_reply: &Value,
    stream_reply: &Value,
) -> Result<f64> {
    let groups = match groups_reply {
        Value::Array(groups) => groups,
        // A stream that does not exist has no backlog, like a missing list.
        Value::ServerError(error) if error.details().is_some_and(|d| d.contains("no such key")) => {
            return Ok(0.0);
        }
        other => return Err(reply_error(source, stream, "a stream", other)),
    };
    let Some(info) = groups
        .iter()
        .map(fields)
        .find(|info| field_text(info, "name").as_deref() == Some(group))
    else {
        return Err(Error::rejected(
            source,
            format!("stream `{stream}` has no consumer group `{group}`"),
        ));
    };
    let pending = field_int(&info, "pending").unwrap_or(0);
    if mode == StreamMode::Pending {
        return Ok(pending as f64);
    }
    let lag = match field_int(&info, "lag") {
        Some(lag) => lag,
        None => {
            // Redis answers a NULL lag when deletions make it unknowable. As Redis derives
            // lag from entries-added − entries-read, use that difference (an upper bound that
            // also counts deleted entries) or, with no read counter, the whole stream.
            let stream_info = fields(stream_reply);
            let added = field_int(&stream_info, "entries-added");
            let length = field_int(&stream_info, "length").unwrap_or(0);
            let fallback = match (added, field_int(&info, "entries-read")) {
                (Some(added), Some(read)) => (added - read).max(0),
                _ => length,
            };
            debug!(
                source,
                stream, group, fallback, "XINFO GROUPS lag is NULL; using fallback"
            );
            fallback
        }
    };
    Ok(match mode {
        StreamMode::Lag => lag,
        _ => lag + pending,
    } as f64)
}

fn fields(value: &Value) -> Vec<(String, Value)> {
    match value {
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, v.clone())))
            .collect(),
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|pair| match pair {
                [k, v] => Some((text(k)?, v.clone())),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn field_text(info: &[(String, Value)], name: &str) -> Option<String> {
    info.iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| text(v))
}

fn field_int(info: &[(String, Value)], name: &str) -> Option<i64> {
    info.iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| match v {
            Value::Int(n) => Some(*n),
            other => text(other)?.parse().ok(),
        })
}

/// An integer reply; a WRONGTYPE error names the key and the type it should have.
fn integer(source: &str, key: &str, expected: &str, reply: &Value) -> Result<i64> {
    match reply {
        Value::Int(n) => Ok(*n),
        other => Err(reply_error(source, key, expected, other)),
    }
}

/// Server errors that say "not now" or "not with these credentials" rather than "not this
/// data": the source is unavailable, whatever key was read.
pub fn server_error_makes_source_unavailable(code: &str) -> Option<&'static str> {
    match code {
        "NOAUTH" | "WRONGPASS" => {
            Some("authentication failed: check the source's username and password")
        }
        "LOADING" => Some("Redis is loading its data set"),
        "MASTERDOWN" => Some("the replica has lost its master"),
        "CLUSTERDOWN" => Some("the cluster is down"),
        "TRYAGAIN" | "MOVED" | "ASK" => Some("the cluster is resharding or a node is unreachable"),
        "BUSY" => Some("Redis is busy running a script"),
        _ => None,
    }
}

fn reply_error(source: &str, key: &str, expected: &str, reply: &Value) -> Error {
    match reply {
        Value::ServerError(error)
            if server_error_makes_source_unavailable(error.code()).is_some() =>
        {
            let reason = server_error_makes_source_unavailable(error.code()).unwrap_or_default();
            Error::unavailable(source, format!("{reason} ({})", error.code()))
        }
        Value::ServerError(error) if error.code() == "NOPERM" => Error::rejected(
            source,
            format!("the ACL user may not read key `{key}` (NOPERM): grant it +@read on the key"),
        ),
        Value::ServerError(error) if error.code() == "WRONGTYPE" => Error::rejected(
            source,
            format!("key `{key}` holds another type of value, not {expected}"),
        ),
        Value::ServerError(error) => Error::rejected(
            source,
            format!("reading key `{key}` failed: {}", error.code()),
        ),
        other => Error::Internal(format!("unexpected Redis reply for key `{key}`: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<RedisQuery> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let metric = map.get("metric").cloned().unwrap_or_default();
        RedisQuery::parse(&metric, &Metadata::new(&map)).map(|(q, _)| q)
    }

    fn ints(values: &[i64]) -> Vec<Value> {
        values.iter().map(|v| Value::Int(*v)).collect()
    }

    fn combine(query: &RedisQuery, replies: &[Value]) -> Result<f64> {
        let refs: Vec<&Value> = replies.iter().collect();
        query.combine("s", &refs)
    }

    #[test]
    fn list_sums_its_keys() {
        let query = parse(&[("metric", "redis-list"), ("keys", "a,b")]).unwrap();
        assert_eq!(
            query.reads(0),
            vec![RedisRead::Llen("a".into()), RedisRead::Llen("b".into())]
        );
        assert_eq!(combine(&query, &ints(&[3, 0])).unwrap(), 3.0);
    }

    #[test]
    fn zset_counts_all_or_only_due_entries() {
        let all = parse(&[("metric", "redis-zset"), ("keys", "z")]).unwrap();
        assert_eq!(
            all.reads(1_700_000_123_456),
            vec![RedisRead::Zcard("z".into())]
        );
        let seconds =
            parse(&[("metric", "redis-zset"), ("keys", "z"), ("scoreMax", "now")]).unwrap();
        assert_eq!(
            seconds.reads(1_700_000_123_456),
            vec![RedisRead::ZcountUpTo("z".into(), 1_700_000_123)]
        );
        let ms = parse(&[
            ("metric", "redis-zset"),
            ("keys", "z"),
            ("scoreMax", "now"),
            ("scoreUnit", "ms"),
        ])
        .unwrap();
        assert_eq!(
            ms.reads(1_700_000_123_456),
            vec![RedisRead::ZcountUpTo("z".into(), 1_700_000_123_456)]
        );
        for (pairs, key) in [
            (&[("scoreMax", "tomorrow")][..], "scoreMax"),
            (
                &[("scoreMax", "now"), ("scoreUnit", "hours")][..],
                "scoreUnit",
            ),
            (&[("scoreUnit", "ms")][..], "scoreUnit"),
        ] {
            let mut all = vec![("metric", "redis-zset"), ("keys", "z")];
            all.extend_from_slice(pairs);
            assert!(matches!(parse(&all), Err(Error::InvalidMetadata { key: k, .. }) if k == key));
        }
    }

    #[test]
    fn bullmq_counts_like_the_library() {
        let query = parse(&[("metric", "bullmq"), ("queue", "mail")]).unwrap();
        let now = 1_700_000_000_000;
        assert_eq!(
            query.reads(now),
            vec![
                RedisRead::Hexists("bull:mail:meta".into(), "paused"),
                RedisRead::Llen("bull:mail:wait".into()),
                RedisRead::Zcard("bull:mail:prioritized".into()),
                RedisRead::Llen("bull:mail:paused".into()),
                RedisRead::ZcountUpTo("bull:mail:delayed".into(), now * 0x1000 + 0xfff),
            ]
        );
        // not paused: wait 4 + prioritized 2 + paused list 1 + due delayed 3
        assert_eq!(combine(&query, &ints(&[0, 4, 2, 1, 3])).unwrap(), 10.0);
        // paused: 0 unless countWhenPaused
        assert_eq!(combine(&query, &ints(&[1, 4, 2, 1, 3])).unwrap(), 0.0);
        let counted = parse(&[
            ("metric", "bullmq"),
            ("queue", "mail"),
            ("countWhenPaused", "true"),
        ])
        .unwrap();
        assert_eq!(combine(&counted, &ints(&[1, 4, 2, 1, 3])).unwrap(), 10.0);
        let active = parse(&[
            ("metric", "bullmq"),
            ("queue", "mail"),
            ("prefix", "{q}"),
            ("includeActive", "true"),
        ])
        .unwrap();
        let reads = active.reads(now);
        assert_eq!(
            reads.last(),
            Some(&RedisRead::Llen("{q}:mail:active".into()))
        );
        assert_eq!(combine(&active, &ints(&[0, 4, 2, 1, 3, 5])).unwrap(), 15.0);
    }

    #[test]
    fn celery_keys_follow_kombu() {
        let query = parse(&[("metric", "celery"), ("queue", "celery")]).unwrap();
        assert_eq!(
            query.reads(0),
            vec![
                RedisRead::Llen("celery".into()),
                RedisRead::Llen("celery\x06\x163".into()),
                RedisRead::Llen("celery\x06\x166".into()),
                RedisRead::Llen("celery\x06\x169".into()),
            ]
        );
        let custom = parse(&[
            ("metric", "celery"),
            ("queue", "jobs"),
            ("prioritySteps", "0,5"),
            ("separator", ":"),
            ("keyPrefix", "app:"),
        ])
        .unwrap();
        assert_eq!(
            custom.reads(0),
            vec![
                RedisRead::Llen("app:jobs".into()),
                RedisRead::Llen("app:jobs:5".into())
            ]
        );
        let escaped = parse(&[
            ("metric", "celery"),
            ("queue", "q"),
            ("separator", "\\x06\\x16"),
        ])
        .unwrap();
        assert_eq!(escaped, query_with_queue("q"));
        for bad in [
            ("prioritySteps", "0,10"),
            ("prioritySteps", "low"),
            ("separator", "\\xZZ"),
        ] {
            let error = parse(&[("metric", "celery"), ("queue", "q"), bad]).unwrap_err();
            assert!(
                matches!(&error, Error::InvalidMetadata { key, .. } if key == bad.0),
                "{error}"
            );
        }
    }

    fn query_with_queue(queue: &str) -> RedisQuery {
        parse(&[("metric", "celery"), ("queue", queue)]).unwrap()
    }

    #[test]
    fn sidekiq_and_rq_keys() {
        let cases = [
            (
                vec![("metric", "sidekiq"), ("queue", "default")],
                "queue:default",
            ),
            (
                vec![
                    ("metric", "sidekiq"),
                    ("queue", "default"),
                    ("namespace", "app"),
                ],
                "app:queue:default",
            ),
            (vec![("metric", "rq"), ("queue", "high")], "rq:queue:high"),
        ];
        for (pairs, key) in cases {
            assert_eq!(
                parse(&pairs).unwrap().reads(0),
                vec![RedisRead::Llen(key.into())]
            );
        }
    }

    fn group_info(name: &str, pending: i64, lag: Value, entries_read: Value) -> Value {
        Value::Array(vec![Value::Map(vec![
            (
                Value::BulkString(b"name".to_vec()),
                Value::BulkString(name.as_bytes().to_vec()),
            ),
            (Value::BulkString(b"pending".to_vec()), Value::Int(pending)),
            (Value::BulkString(b"entries-read".to_vec()), entries_read),
            (Value::BulkString(b"lag".to_vec()), lag),
        ])])
    }

    fn stream_info(length: i64, added: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(b"length".to_vec()),
            Value::Int(length),
            Value::BulkString(b"entries-added".to_vec()),
            Value::Int(added),
        ])
    }

    #[test]
    fn stream_modes() {
        let stream = |mode: Option<&str>| {
            let mut pairs = vec![("metric", "redis-stream"), ("stream", "s"), ("group", "g")];
            if let Some(mode) = mode {
                pairs.push(("mode", mode));
            }
            parse(&pairs).unwrap()
        };
        let replies = [
            group_info("g", 2, Value::Int(5), Value::Int(10)),
            stream_info(20, 15),
        ];
        assert_eq!(
            combine(&stream(None), &replies).unwrap(),
            7.0,
            "backlog by default"
        );
        assert_eq!(combine(&stream(Some("pending")), &replies).unwrap(), 2.0);
        assert_eq!(combine(&stream(Some("lag")), &replies).unwrap(), 5.0);
        // NULL lag: entries-added − entries-read.
        let null_lag = [
            group_info("g", 2, Value::Nil, Value::Int(10)),
            stream_info(12, 15),
        ];
        assert_eq!(combine(&stream(Some("lag")), &null_lag).unwrap(), 5.0);
        let no_counter = [
            group_info("g", 0, Value::Nil, Value::Nil),
            stream_info(12, 15),
        ];
        assert_eq!(combine(&stream(Some("lag")), &no_counter).unwrap(), 12.0);
        let other_group = [
            group_info("h", 0, Value::Int(1), Value::Int(1)),
            stream_info(1, 1),
        ];
        let error = combine(&stream(None), &other_group).unwrap_err();
        assert!(
            error.to_string().contains("no consumer group `g`"),
            "{error}"
        );

        let length = parse(&[("metric", "redis-stream"), ("stream", "s")]).unwrap();
        assert_eq!(length.reads(0), vec![RedisRead::Xlen("s".into())]);
        let error =
            parse(&[("metric", "redis-stream"), ("stream", "s"), ("mode", "lag")]).unwrap_err();
        assert!(
            matches!(&error, Error::InvalidMetadata { key, .. } if key == "group"),
            "{error}"
        );
        let error = parse(&[
            ("metric", "redis-stream"),
            ("stream", "s"),
            ("group", "g"),
            ("mode", "x"),
        ])
        .unwrap_err();
        assert!(
            matches!(&error, Error::InvalidMetadata { key, .. } if key == "mode"),
            "{error}"
        );
    }

    #[test]
    fn unescape() {
        assert_eq!(unescape_hex("\\x06\\x16").as_deref(), Some("\x06\x16"));
        assert_eq!(unescape_hex("a\\x3ab").as_deref(), Some("a:b"));
        assert_eq!(unescape_hex("\\x0"), None);
        assert_eq!(unescape_hex("\\xff"), None);
    }
}
