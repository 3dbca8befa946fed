//! Redis trigger metrics: the commands that read them, and how the replies add up to one
//! value — a backlog counted the way each queue library counts it, or (with
//! `measure: latency`, in [`super::latency`]) how long the oldest waiting job has waited.
//!
//! A query never talks to Redis itself. It lists the [`RedisRead`]s it needs; the source
//! de-duplicates the reads of every query of a refresh, sends them in one pipeline per node,
//! and hands each query its replies. A query may then ask for follow-up reads that depend on
//! those replies (a job id, then its hash): they go out, de-duplicated too, as a second
//! pipeline of the same refresh, and [`RedisQuery::combine`] gets both. Every read is
//! read-only: no queue library's own scripts are run (some of them write).

use redis::Value;
use serde::Serialize;
use tracing::debug;

use super::latency::WaitingQueue;
use crate::{Error, Result, sources::QueryKind};

/// kombu's default separator between a Celery queue name and its priority step.
pub const CELERY_SEPARATOR: &str = "\x06\x16";

/// BullMQ scores delayed jobs as due_ms · 0x1000 + a 12-bit counter (`getDelayedScore`).
pub const BULLMQ_DELAY_FACTOR: i64 = 0x1000;

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
    /// `measure: latency` of `sidekiq`, `rq`, `bullmq` and `redis-stream`: seconds since the
    /// oldest job that waits to be taken was enqueued. A variant of its own, so the backlog
    /// variants above serialize (and their metric names hash) exactly as before the key
    /// existed.
    Latency { queue: WaitingQueue },
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
    /// LINDEX key index: the element a queue's consumer takes next (a job, or a job id).
    Lindex(String, i64),
    /// LRANGE key start stop: the first few elements of a list.
    Lrange(String, i64, i64),
    /// ZRANGE key 0 0 WITHSCORES: the member with the lowest score.
    ZrangeFirst(String),
    Hget(String, &'static str),
    /// XPENDING key group, the summary form: count, smallest and greatest id, consumers.
    XpendingSummary(String, String),
    /// XRANGE key start + COUNT 1: the first entry at or after `start`.
    XrangeFirst(String, String),
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
            | RedisRead::Hexists(key, _)
            | RedisRead::Lindex(key, _)
            | RedisRead::Lrange(key, ..)
            | RedisRead::ZrangeFirst(key)
            | RedisRead::Hget(key, _)
            | RedisRead::XpendingSummary(key, _)
            | RedisRead::XrangeFirst(key, _) => key,
        }
    }

    /// The type of value the key must hold, for messages.
    pub fn expected_type(&self) -> &'static str {
        match self {
            RedisRead::Llen(_) | RedisRead::Lindex(..) | RedisRead::Lrange(..) => "a list",
            RedisRead::Zcard(_) | RedisRead::ZcountUpTo(..) | RedisRead::ZrangeFirst(_) => {
                "a sorted set"
            }
            RedisRead::Xlen(_)
            | RedisRead::XinfoGroups(_)
            | RedisRead::XinfoStream(_)
            | RedisRead::XpendingSummary(..)
            | RedisRead::XrangeFirst(..) => "a stream",
            RedisRead::Hexists(..) | RedisRead::Hget(..) => "a hash",
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
            RedisRead::Lindex(key, index) => {
                cmd = redis::cmd("LINDEX");
                cmd.arg(key).arg(*index);
            }
            RedisRead::Lrange(key, start, stop) => {
                cmd = redis::cmd("LRANGE");
                cmd.arg(key).arg(*start).arg(*stop);
            }
            RedisRead::ZrangeFirst(key) => {
                cmd = redis::cmd("ZRANGE");
                cmd.arg(key).arg(0).arg(0).arg("WITHSCORES");
            }
            RedisRead::Hget(key, field) => {
                cmd = redis::cmd("HGET");
                cmd.arg(key).arg(*field);
            }
            RedisRead::XpendingSummary(key, group) => {
                cmd = redis::cmd("XPENDING");
                cmd.arg(key).arg(group);
            }
            RedisRead::XrangeFirst(key, start) => {
                cmd = redis::cmd("XRANGE");
                cmd.arg(key).arg(start).arg("+").arg("COUNT").arg(1);
            }
        }
        cmd
    }
}

impl QueryKind for RedisQuery {
    const TAG: &'static str = "Redis";

    fn subject(&self) -> String {
        match self {
            RedisQuery::List { keys }
            | RedisQuery::Zset { keys, .. }
            | RedisQuery::Celery { keys } => keys.first().cloned().unwrap_or_default(),
            RedisQuery::Stream { stream, .. } => stream.clone(),
            RedisQuery::Bullmq { queue_key, .. } => queue_key.clone(),
            RedisQuery::QueueList { key, .. } => key.clone(),
            RedisQuery::Latency { queue } => queue.subject(),
        }
    }
}

impl RedisQuery {
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
                // Every score of a delayed job due by now_ms (the counter is below the factor).
                let due = now_ms
                    .saturating_mul(BULLMQ_DELAY_FACTOR)
                    .saturating_add(BULLMQ_DELAY_FACTOR - 1);
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
            RedisQuery::Latency { queue } => queue.reads(),
        }
    }

    /// The reads that depend on the replies to [`reads`](Self::reads) (e.g. the hash of the
    /// job a list holds next), sent as the refresh's second pipeline; none for a backlog.
    pub fn follow_up_reads(&self, replies: &[(&RedisRead, &Value)]) -> Vec<RedisRead> {
        match self {
            RedisQuery::Latency { queue } => queue.follow_up_reads(replies),
            _ => Vec::new(),
        }
    }

    /// Turns the replies of [`reads`](Self::reads) and of
    /// [`follow_up_reads`](Self::follow_up_reads), each beside the read it answers, into the
    /// query's value at `now_ms` (Unix milliseconds, the time the refresh planned its reads).
    pub fn combine(
        &self,
        source: &str,
        now_ms: i64,
        replies: &[(&RedisRead, &Value)],
        follow_up_replies: &[(&RedisRead, &Value)],
    ) -> Result<f64> {
        match self {
            RedisQuery::Latency { queue } => {
                queue.combine(source, now_ms, replies, follow_up_replies)
            }
            RedisQuery::List { .. }
            | RedisQuery::Celery { .. }
            | RedisQuery::QueueList { .. }
            | RedisQuery::Zset { .. } => sum(source, replies),
            RedisQuery::Stream {
                stream,
                group,
                mode,
            } => match (mode, group.as_deref(), replies) {
                (StreamMode::Length, _, [(_, reply)]) => {
                    Ok(integer(source, stream, "a stream", reply)? as f64)
                }
                (mode, Some(group), [(_, groups), (_, info)]) => {
                    stream_group(source, stream, group, *mode, groups, info)
                }
                _ => Err(mismatch(self, replies)),
            },
            RedisQuery::Bullmq {
                count_when_paused, ..
            } => match replies {
                [(RedisRead::Hexists(meta, _), paused), counts @ ..] => {
                    if integer(source, meta, "a hash", paused)? == 1 && !count_when_paused {
                        return Ok(0.0);
                    }
                    sum(source, counts)
                }
                _ => Err(mismatch(self, replies)),
            },
        }
    }
}

/// The sum of integer replies; a reply of another shape names its key and the type it should
/// have.
fn sum(source: &str, replies: &[(&RedisRead, &Value)]) -> Result<f64> {
    let mut total: i64 = 0;
    for (read, reply) in replies {
        let count = integer(source, read.key(), read.expected_type(), reply)?;
        total = total.saturating_add(count);
    }
    Ok(total as f64)
}

/// A bug: the replies do not fit the reads the query asked for.
fn mismatch(query: &RedisQuery, replies: &[(&RedisRead, &Value)]) -> Error {
    Error::Internal(format!(
        "{} replies do not fit the reads of {query:?}",
        replies.len()
    ))
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
    // A stream that does not exist has no backlog, like a missing list.
    let Some(info) = find_group(source, stream, group, groups_reply)? else {
        return Ok(0.0);
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

/// The fields of `group` in an XINFO GROUPS reply; `None` when the stream does not exist, an
/// error when the group does not.
pub(super) fn find_group(
    source: &str,
    stream: &str,
    group: &str,
    groups_reply: &Value,
) -> Result<Option<Vec<(String, Value)>>> {
    let groups = match groups_reply {
        Value::Array(groups) => groups,
        Value::ServerError(error) if error.details().is_some_and(|d| d.contains("no such key")) => {
            return Ok(None);
        }
        other => return Err(reply_error(source, stream, "a stream", other)),
    };
    match group_entry(groups, group) {
        Some(info) => Ok(Some(info)),
        None => Err(Error::rejected(
            source,
            format!("stream `{stream}` has no consumer group `{group}`"),
        )),
    }
}

/// The fields of `group` among the entries of an XINFO GROUPS reply.
pub(super) fn group_entry(groups: &[Value], group: &str) -> Option<Vec<(String, Value)>> {
    groups
        .iter()
        .map(fields)
        .find(|info| field_text(info, "name").as_deref() == Some(group))
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

pub(super) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

pub(super) fn field_text(info: &[(String, Value)], name: &str) -> Option<String> {
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
pub(super) fn integer(source: &str, key: &str, expected: &str, reply: &Value) -> Result<i64> {
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

/// The error for a server error code that [`server_error_makes_source_unavailable`] names:
/// refused credentials as their own variant, the rest UNAVAILABLE.
pub(super) fn unavailable_reply(source: &str, code: &str) -> Error {
    match code {
        "NOAUTH" | "WRONGPASS" => Error::credentials_refused(
            source,
            format!("check the source's username and password ({code})"),
        ),
        _ => {
            let reason = server_error_makes_source_unavailable(code).unwrap_or_default();
            Error::unavailable(source, format!("{reason} ({code})"))
        }
    }
}

pub(super) fn reply_error(source: &str, key: &str, expected: &str, reply: &Value) -> Error {
    match reply {
        Value::ServerError(error)
            if server_error_makes_source_unavailable(error.code()).is_some() =>
        {
            unavailable_reply(source, error.code())
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
    use crate::{
        metadata::{Metadata, parse_metric},
        sources::redis::metrics::METRICS,
    };

    fn parse(pairs: &[(&str, &str)]) -> Result<RedisQuery> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let metric = map.get("metric").cloned().unwrap_or_default();
        parse_metric(METRICS, &metric, &Metadata::new(&map), &()).map(|parsed| parsed.query)
    }

    fn ints(values: &[i64]) -> Vec<Value> {
        values.iter().map(|v| Value::Int(*v)).collect()
    }

    /// Combines `replies` as the answers to the query's reads at time 0.
    fn combine(query: &RedisQuery, replies: &[Value]) -> Result<f64> {
        let reads = query.reads(0);
        assert_eq!(reads.len(), replies.len(), "one reply per read");
        let pairs: Vec<(&RedisRead, &Value)> = reads.iter().zip(replies).collect();
        assert!(query.follow_up_reads(&pairs).is_empty(), "a backlog");
        query.combine("s", 0, &pairs, &[])
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
}
