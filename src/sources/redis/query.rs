//! Redis trigger metrics: the commands that read them, and how the replies add up to one
//! value — a backlog counted the way each queue library counts it, or (with
//! `measure: latency`, in [`super::latency`]) how long the oldest waiting job has waited.
//!
//! A query never talks to Redis itself. It lists the [`RedisRead`]s ([`super::read`]) it
//! needs; the source
//! de-duplicates the reads of every query of a refresh, sends them in one pipeline per node,
//! and hands each query its replies. A query may then ask for follow-up reads that depend on
//! those replies (a job id, then its hash): they go out, de-duplicated too, as a second
//! pipeline of the same refresh, and [`RedisQuery::combine`] gets both. Every read is
//! read-only: no queue library's own scripts are run (some of them write).

use std::borrow::Cow;

use redis::Value;
use serde::Serialize;
use tracing::debug;

use super::{
    in_progress::InProgress,
    key::Key,
    latency::WaitingQueue,
    libraries::BULLMQ_DELAY_FACTOR,
    read::RedisRead,
    reply::{field_int, fields, find_group, integer, sum},
};
use crate::{Error, Result, sources::QueryKind};

/// One Redis measurement, as the trigger asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "metric", rename_all = "kebab-case")]
pub enum RedisQuery {
    /// `redis-list`: LLEN summed over `keys`.
    List { keys: Keys },
    /// `redis-zset`: ZCARD summed over `keys`, or with `scoreMax: now` only the entries due.
    Zset {
        keys: Keys,
        due_only: Option<ScoreUnit>,
    },
    /// `redis-stream`: length, pending, lag or backlog of a stream (and consumer group).
    Stream {
        stream: Box<str>,
        group: Option<Box<str>>,
        mode: StreamMode,
    },
    /// `bullmq`: waiting + prioritized + paused + due delayed (+ active) jobs of a queue.
    Bullmq {
        queue_key: Key,
        include_active: bool,
        count_when_paused: bool,
    },
    /// `celery` (kombu's Redis transport): the queue key and its priority sub-queues
    /// (+ the queue's unacknowledged messages, with `includeActive`).
    Celery {
        keys: Keys,
        /// Left out of the serialization when absent, so the metric names of triggers
        /// without `includeActive` stay as they were.
        #[serde(skip_serializing_if = "Option::is_none")]
        in_progress: Option<Box<InProgress>>,
    },
    /// `sidekiq` and `rq`: one list per queue (+ the jobs in progress, with `includeActive`).
    QueueList {
        library: QueueLibrary,
        key: Key,
        /// As for `Celery`.
        #[serde(skip_serializing_if = "Option::is_none")]
        in_progress: Option<Box<InProgress>>,
    },
    /// `measure: latency` of `sidekiq`, `rq`, `bullmq` and `redis-stream`: seconds since the
    /// oldest job that waits to be taken was enqueued. A variant of its own, so the backlog
    /// variants above serialize (and their metric names hash) exactly as before the key
    /// existed.
    Latency { queue: Box<WaitingQueue> },
}

/// The keys of a query, held for as long as it is live: one key (nearly every trigger) as a
/// [`Key`], inline when it is short, several in one list. Serialized as a list of strings, as
/// a `Vec<String>` was, so metric names do not change.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Keys(KeysRepr);

/// Private, so one key is always `One`: equal key lists are equal values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeysRepr {
    One(Key),
    Many(Box<[Box<str>]>),
}

impl Keys {
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let (one, many): (Option<&str>, &[Box<str>]) = match &self.0 {
            KeysRepr::One(key) => (Some(key), &[]),
            KeysRepr::Many(keys) => (None, keys),
        };
        one.into_iter().chain(many.iter().map(|key| &**key))
    }

    pub fn first(&self) -> Option<&str> {
        self.iter().next()
    }

    pub fn len(&self) -> usize {
        match &self.0 {
            KeysRepr::One(_) => 1,
            KeysRepr::Many(keys) => keys.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Vec<String>> for Keys {
    fn from(keys: Vec<String>) -> Keys {
        match <[String; 1]>::try_from(keys) {
            Ok([key]) => Keys(KeysRepr::One(key.into())),
            Err(keys) => Keys(KeysRepr::Many(
                keys.into_iter().map(String::into_boxed_str).collect(),
            )),
        }
    }
}

impl Serialize for Keys {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
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

impl QueryKind for RedisQuery {
    const TAG: &'static str = "Redis";

    fn subject(&self) -> Cow<'_, str> {
        match self {
            RedisQuery::List { keys }
            | RedisQuery::Zset { keys, .. }
            | RedisQuery::Celery { keys, .. } => keys.first().unwrap_or_default().into(),
            RedisQuery::Stream { stream, .. } => (**stream).into(),
            RedisQuery::Bullmq { queue_key, .. } => queue_key.as_str().into(),
            RedisQuery::QueueList { key, .. } => key.as_str().into(),
            RedisQuery::Latency { queue } => queue.subject().into(),
        }
    }
}

impl RedisQuery {
    /// The reads this query needs at `now_ms` (Unix milliseconds), in the order
    /// [`combine`](Self::combine) expects replies.
    pub fn reads(&self, now_ms: i64) -> Vec<RedisRead> {
        match self {
            RedisQuery::List { keys } => {
                keys.iter().map(|key| RedisRead::Llen(key.into())).collect()
            }
            RedisQuery::Celery { keys, in_progress } => {
                let mut reads: Vec<RedisRead> =
                    keys.iter().map(|key| RedisRead::Llen(key.into())).collect();
                reads.extend(in_progress.iter().flat_map(|p| p.reads(now_ms)));
                reads
            }
            RedisQuery::Zset { keys, due_only } => keys
                .iter()
                .map(str::to_string)
                .map(|key| match due_only {
                    None => RedisRead::Zcard(key),
                    Some(ScoreUnit::Ms) => RedisRead::ZcountUpTo(key, now_ms),
                    Some(ScoreUnit::Seconds) => RedisRead::ZcountUpTo(key, now_ms.div_euclid(1000)),
                })
                .collect(),
            RedisQuery::Stream { stream, mode, .. } => match mode {
                StreamMode::Length => vec![RedisRead::Xlen(stream.to_string())],
                _ => vec![
                    RedisRead::XinfoGroups(stream.to_string()),
                    RedisRead::XinfoStream(stream.to_string()),
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
            RedisQuery::QueueList {
                key, in_progress, ..
            } => {
                let mut reads = vec![RedisRead::Llen(key.to_string())];
                reads.extend(in_progress.iter().flat_map(|p| p.reads(now_ms)));
                reads
            }
            RedisQuery::Latency { queue } => queue.reads(),
        }
    }

    /// The reads that depend on the replies to [`reads`](Self::reads) (e.g. the hash of the
    /// job a list holds next), sent as the refresh's second pipeline; none for a backlog.
    pub fn follow_up_reads(&self, replies: &[(&RedisRead, &Value)]) -> Vec<RedisRead> {
        match self {
            RedisQuery::Latency { queue } => queue.follow_up_reads(replies),
            _ => match self.waiting_and_in_progress() {
                Some((waiting_reads, Some(in_progress))) if replies.len() >= waiting_reads => {
                    in_progress.follow_up_reads(&replies[waiting_reads..])
                }
                _ => Vec::new(),
            },
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
            RedisQuery::Celery { .. } | RedisQuery::QueueList { .. } => {
                match self.waiting_and_in_progress() {
                    Some((waiting_reads, in_progress)) if replies.len() >= waiting_reads => {
                        let (waiting, rest) = replies.split_at(waiting_reads);
                        let active = match in_progress {
                            Some(in_progress) => {
                                in_progress.count(source, rest, follow_up_replies)?
                            }
                            None => 0.0,
                        };
                        Ok(sum(source, waiting)? + active)
                    }
                    _ => Err(mismatch(self, replies)),
                }
            }
            RedisQuery::List { .. } | RedisQuery::Zset { .. } => sum(source, replies),
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

impl RedisQuery {
    /// For the queues that may count jobs in progress: how many of the first reads count
    /// the waiting jobs, and what counts the jobs in progress.
    fn waiting_and_in_progress(&self) -> Option<(usize, Option<&InProgress>)> {
        match self {
            RedisQuery::Celery { keys, in_progress } => Some((keys.len(), in_progress.as_deref())),
            RedisQuery::QueueList { in_progress, .. } => Some((1, in_progress.as_deref())),
            _ => None,
        }
    }
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn a_query_fits_an_80_byte_allocation_with_its_arc() {
        // A live measurement holds its query behind an `Arc` (16 bytes of counts): at most
        // 56 bytes keep it, with a key of up to `key::INLINE` bytes, in one of malloc's
        // 80-byte chunks.
        assert!(
            std::mem::size_of::<RedisQuery>() <= 56,
            "{} bytes",
            std::mem::size_of::<RedisQuery>()
        );
    }
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
    fn include_active_adds_the_jobs_in_progress_and_keeps_other_names() {
        let plain = parse(&[("metric", "sidekiq"), ("queue", "default")]).unwrap();
        let spelled = parse(&[
            ("metric", "sidekiq"),
            ("queue", "default"),
            ("includeActive", "false"),
        ])
        .unwrap();
        assert_eq!(plain, spelled);
        // What every trigger without the key serialized to (and its metric name hashed)
        // before `includeActive` existed.
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"metric":"queue-list","library":"sidekiq","key":"queue:default"}"#
        );
        let celery = parse(&[("metric", "celery"), ("queue", "q"), ("prioritySteps", "0")]);
        assert_eq!(
            serde_json::to_string(&celery.unwrap()).unwrap(),
            r#"{"metric":"celery","keys":["q"]}"#
        );
        let rq = parse(&[
            ("metric", "rq"),
            ("queue", "high"),
            ("includeActive", "true"),
        ]);
        let rq = rq.unwrap();
        assert_eq!(
            rq.reads(1_000_000),
            vec![
                RedisRead::Llen("rq:queue:high".into()),
                RedisRead::ZcountAbove("rq:wip:high".into(), 1_000)
            ]
        );
        assert_eq!(
            combine(&rq, &ints(&[5, 2])).unwrap(),
            7.0,
            "5 waiting + 2 started"
        );
        let sidekiq = parse(&[
            ("metric", "sidekiq"),
            ("queue", "default"),
            ("namespace", "app"),
            ("includeActive", "TRUE"),
        ])
        .unwrap();
        assert_eq!(
            sidekiq.reads(0),
            vec![
                RedisRead::Llen("app:queue:default".into()),
                RedisRead::Smembers("app:processes".into())
            ]
        );
        for metric in ["sidekiq", "rq", "celery"] {
            let error = parse(&[("metric", metric), ("queue", "q"), ("includeActive", "1")]);
            assert!(
                matches!(&error, Err(Error::InvalidMetadata { key, .. }) if key == "includeActive"),
                "{metric}: {error:?}"
            );
            let error = parse(&[
                ("metric", metric),
                ("queue", "q"),
                ("includeActive", "true"),
                ("measure", "latency"),
            ])
            .unwrap_err();
            assert!(error.to_string().contains("measure: latency"), "{error}");
        }
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
