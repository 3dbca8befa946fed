//! `measure: latency`: seconds since the oldest job that waits to be taken was enqueued.
//!
//! Each library keeps that time somewhere else, and takes its next job from a different end:
//!
//! | library | the job taken next | its enqueue time |
//! | --- | --- | --- |
//! | Sidekiq | `LINDEX queue:<name> -1` (clients LPUSH, fetchers BRPOP) | `enqueued_at` in the job's JSON: float seconds (Sidekiq ≤ 7) or integer milliseconds (Sidekiq 8) |
//! | RQ | the first id of `rq:queue:<name>` whose job still exists (RPUSH, LPOP / LMOVE) | `enqueued_at` of the hash `rq:job:<id>`, UTC as `%Y-%m-%dT%H:%M:%S.%fZ` |
//! | BullMQ | `LINDEX …:wait -1`, `…:paused -1` (LPUSH, RPOPLPUSH); `ZRANGE …:prioritized 0 0` (ZPOPMIN) | `timestamp` (ms) of the hash `<prefix>:<queue>:<id>` |
//! | BullMQ, delayed | `ZRANGE …:delayed 0 0 WITHSCORES`, if due | its due time: the score is due_ms · 0x1000 + a counter |
//! | stream | the group's oldest pending entry (XPENDING summary), else the first entry after its `last-delivered-id` | the entry id's milliseconds |
//!
//! Reads that need an earlier reply (a job id, then its hash; a group's position, then the
//! entry after it) are follow-ups: the source sends them, de-duplicated, as the refresh's
//! second pipeline. One job per structure is read, never a scan of the queue.
//!
//! A job whose time is missing or unparsable is skipped (a `debug` log line): it adds no
//! made-up age. Ages are measured against the scaler's clock, so a producer whose clock runs
//! ahead makes its jobs look younger; a time in the future counts 0, never a negative age.

use std::time::UNIX_EPOCH;

use redis::Value;
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::{
    libraries::BULLMQ_DELAY_FACTOR,
    read::RedisRead,
    reply::{
        Replies, bulk, field_text, find_group, first_member, follow_up, group_entry, integer,
        job_id, reply_error, sorted_set_first, text,
    },
};
use crate::{Error, Result};

/// A queue whose oldest waiting job is measured.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaitingQueue {
    /// The list `[namespace:]queue:<name>`.
    Sidekiq {
        key: String,
    },
    /// The list `rq:queue:<name>`.
    Rq {
        key: String,
    },
    /// `<prefix>:<queue>`, the stem of every key of the queue.
    Bullmq {
        queue_key: String,
        count_when_paused: bool,
    },
    Stream {
        stream: String,
        group: String,
    },
}

/// RQ's job hashes: `rq:job:<id>` (`Job.redis_job_namespace_prefix`).
const RQ_JOB_PREFIX: &str = "rq:job:";

/// How many ids at the head of an RQ queue are read. A job enqueued with `ttl` that waited
/// longer loses its hash but keeps its id in the queue until a worker pops and skips it, so
/// the head can be dead exactly when jobs wait long. Four ids cost four HGETs per trigger and
/// refresh and see past a few expired ones; a queue whose first four all expired reads 0.
const RQ_LOOKAHEAD: i64 = 4;

impl WaitingQueue {
    /// The readable part of the metric name: the queue's key and what is measured.
    pub fn subject(&self) -> String {
        let key = match self {
            WaitingQueue::Sidekiq { key } | WaitingQueue::Rq { key } => key,
            WaitingQueue::Bullmq { queue_key, .. } => queue_key,
            WaitingQueue::Stream { stream, .. } => stream,
        };
        format!("{key} latency")
    }

    /// The first round of reads, in the order [`combine`](Self::combine) expects them.
    pub fn reads(&self) -> Vec<RedisRead> {
        match self {
            WaitingQueue::Sidekiq { key } => vec![RedisRead::Lindex(key.clone(), -1)],
            WaitingQueue::Rq { key } => vec![RedisRead::Lrange(key.clone(), 0, RQ_LOOKAHEAD - 1)],
            WaitingQueue::Bullmq { queue_key, .. } => {
                let key = |suffix: &str| format!("{queue_key}:{suffix}");
                vec![
                    RedisRead::Hexists(key("meta"), "paused"),
                    RedisRead::Lindex(key("wait"), -1),
                    RedisRead::Lindex(key("paused"), -1),
                    RedisRead::ZrangeFirst(key("prioritized")),
                    RedisRead::ZrangeFirst(key("delayed")),
                ]
            }
            // XINFO GROUPS is the read the stream's backlog modes make too: shared with them.
            WaitingQueue::Stream { stream, group } => vec![
                RedisRead::XinfoGroups(stream.clone()),
                RedisRead::XpendingSummary(stream.clone(), group.clone()),
            ],
        }
    }

    /// The reads that need the first round's replies. Replies that are errors ask for
    /// nothing: [`combine`](Self::combine) reports them.
    pub fn follow_up_reads(&self, replies: &Replies<'_>) -> Vec<RedisRead> {
        match (self, replies) {
            (WaitingQueue::Rq { .. }, [(_, Value::Array(ids))]) => ids
                .iter()
                .filter_map(text)
                .map(|id| rq_job_read(&id))
                .collect(),
            (
                WaitingQueue::Bullmq {
                    queue_key,
                    count_when_paused,
                },
                [
                    (_, paused),
                    (_, wait),
                    (_, paused_list),
                    (_, prioritized),
                    _,
                ],
            ) => {
                if *paused == &Value::Int(1) && !count_when_paused {
                    return Vec::new();
                }
                let mut reads: Vec<RedisRead> = Vec::new();
                let heads = [text(wait), text(paused_list), first_member(prioritized)];
                for id in heads.into_iter().flatten().filter(|id| is_bullmq_job(id)) {
                    let read = bullmq_job_read(queue_key, &id);
                    if !reads.contains(&read) {
                        reads.push(read);
                    }
                }
                reads
            }
            (WaitingQueue::Stream { stream, group }, [(_, groups), (_, pending)]) => {
                if pending_summary(pending).map(|(count, _)| count) != Some(0) {
                    return Vec::new();
                }
                // Nothing pending: the oldest unfinished entry is the first one not delivered.
                let Value::Array(groups) = groups else {
                    return Vec::new();
                };
                group_entry(groups, group)
                    .and_then(|info| field_text(&info, "last-delivered-id"))
                    .and_then(|id| next_entry_id(&id))
                    .map(|start| vec![RedisRead::XrangeFirst(stream.clone(), start)])
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    /// Seconds the oldest waiting job has waited at `now_ms`; 0 when nothing waits.
    pub fn combine(
        &self,
        source: &str,
        now_ms: i64,
        replies: &Replies<'_>,
        follow_ups: &Replies<'_>,
    ) -> Result<f64> {
        let since = match (self, replies) {
            (WaitingQueue::Sidekiq { key }, [(read, head)]) => match bulk(source, read, head)? {
                None => None,
                Some(job) => logged(source, key, sidekiq_enqueued_ms(&job)),
            },
            (WaitingQueue::Rq { key }, [(read, head)]) => {
                rq_since(source, key, read, head, follow_ups)?
            }
            (
                WaitingQueue::Bullmq {
                    queue_key,
                    count_when_paused,
                },
                [meta, wait, paused, prioritized, delayed],
            ) => {
                let (meta_read, is_paused) = meta;
                if integer(
                    source,
                    meta_read.key(),
                    meta_read.expected_type(),
                    is_paused,
                )? == 1
                    && !count_when_paused
                {
                    return Ok(0.0);
                }
                let heads = [*wait, *paused, *prioritized, *delayed];
                bullmq_since(source, queue_key, now_ms, heads, follow_ups)?
            }
            (WaitingQueue::Stream { stream, group }, [(_, groups), (read, pending)]) => {
                if find_group(source, stream, group, groups)?.is_none() {
                    return Ok(0.0);
                }
                let first_undelivered = self.follow_up_reads(replies).into_iter().next();
                stream_since(
                    source,
                    stream,
                    (read, pending),
                    first_undelivered,
                    follow_ups,
                )?
            }
            _ => {
                return Err(Error::Internal(format!(
                    "{} replies do not fit the reads of {self:?}",
                    replies.len()
                )));
            }
        };
        Ok(since.map_or(0.0, |since| age_seconds(now_ms, since)))
    }
}

/// RQ: the first job that exists is the one RQ dequeues next (it skips the others).
fn rq_since(
    source: &str,
    key: &str,
    read: &RedisRead,
    head: &Value,
    follow_ups: &Replies<'_>,
) -> Result<Option<f64>> {
    let Value::Array(ids) = head else {
        return Err(reply_error(source, read.key(), read.expected_type(), head));
    };
    for id in ids {
        let Some(id) = text(id) else { continue };
        let read = rq_job_read(&id);
        let time = bulk(source, &read, follow_up(follow_ups, &read)?)?;
        let next = logged(source, read.key(), time.as_deref().and_then(rq_enqueued_ms));
        if next.is_some() {
            return Ok(next);
        }
    }
    if !ids.is_empty() {
        debug!(
            source,
            key, "no readable job among the first ids of the queue"
        );
    }
    Ok(None)
}

/// BullMQ: the oldest of the next job in `wait` (or `paused`), the highest-priority job and
/// the earliest due delayed job, which waits from its due time (one not yet due does not
/// wait). `heads` are the replies for wait, paused, prioritized and delayed.
fn bullmq_since(
    source: &str,
    queue_key: &str,
    now_ms: i64,
    heads: [(&RedisRead, &Value); 4],
    follow_ups: &Replies<'_>,
) -> Result<Option<f64>> {
    let [
        wait,
        paused,
        (prioritized_read, prioritized),
        (delayed_read, delayed),
    ] = heads;
    let mut ids: Vec<String> = Vec::new();
    for (read, reply) in [wait, paused] {
        if let Some(id) = bulk(source, read, reply)? {
            ids.extend(job_id(id));
        }
    }
    if let Some((id, _)) = sorted_set_first(source, prioritized_read, prioritized)? {
        ids.push(id);
    }
    let mut oldest: Option<f64> = None;
    for id in ids.iter().filter(|id| is_bullmq_job(id)) {
        let read = bullmq_job_read(queue_key, id);
        let time = bulk(source, &read, follow_up(follow_ups, &read)?)?;
        let added = logged(source, read.key(), time.as_deref().and_then(bullmq_ms));
        oldest = earliest(oldest, added);
    }
    if let Some((_, score)) = sorted_set_first(source, delayed_read, delayed)? {
        let due = logged(source, delayed_read.key(), score.and_then(bullmq_due_ms));
        oldest = earliest(oldest, due.filter(|due| *due <= now_ms as f64));
    }
    Ok(oldest)
}

/// A stream's consumer group: its oldest pending entry, or, when none is pending, the first
/// entry after its last-delivered-id (read by `first_undelivered`).
fn stream_since(
    source: &str,
    stream: &str,
    (read, pending): (&RedisRead, &Value),
    first_undelivered: Option<RedisRead>,
    follow_ups: &Replies<'_>,
) -> Result<Option<f64>> {
    match pending_summary(pending) {
        Some((count, oldest)) if count > 0 => Ok(logged(
            source,
            stream,
            oldest.as_deref().and_then(entry_id_ms),
        )),
        Some(_) => match first_undelivered {
            // The group's last-delivered-id is unreadable: no position to start at.
            None => Ok(logged(source, stream, None)),
            Some(read) => {
                let id = first_entry_id(source, &read, follow_up(follow_ups, &read)?)?;
                Ok(id.and_then(|id| logged(source, stream, entry_id_ms(&id))))
            }
        },
        None => Err(reply_error(source, read.key(), "a stream", pending)),
    }
}

/// Seconds from `since_ms` to `now_ms`; never negative (a producer's clock ahead of ours).
pub fn age_seconds(now_ms: i64, since_ms: f64) -> f64 {
    ((now_ms as f64 - since_ms) / 1000.0).max(0.0)
}

fn earliest(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A time that could not be read is skipped, with a `debug` line naming the key.
fn logged(source: &str, key: &str, time: Option<f64>) -> Option<f64> {
    if time.is_none() {
        debug!(
            source,
            key, "the oldest waiting job has no readable enqueue time; skipped for latency"
        );
    }
    time
}

/// A Unix time in milliseconds, if it is one: finite and after 1970.
fn plausible(ms: f64) -> Option<f64> {
    (ms.is_finite() && ms > 0.0).then_some(ms)
}

// === Sidekiq ===

#[derive(Deserialize)]
struct SidekiqJob {
    enqueued_at: Option<serde_json::Number>,
}

/// `enqueued_at` of a Sidekiq job's JSON, in Unix milliseconds. As `Sidekiq::Queue#latency`
/// reads it: a float is seconds (Sidekiq ≤ 7: `Time.now.to_f`), an integer milliseconds
/// (Sidekiq 8).
pub fn sidekiq_enqueued_ms(job: &[u8]) -> Option<f64> {
    let job: SidekiqJob = serde_json::from_slice(job).ok()?;
    let time = job.enqueued_at?;
    let ms = if time.is_f64() {
        time.as_f64()? * 1000.0
    } else {
        time.as_f64()?
    };
    plausible(ms)
}

// === RQ ===

fn rq_job_read(id: &str) -> RedisRead {
    RedisRead::Hget(format!("{RQ_JOB_PREFIX}{id}"), "enqueued_at")
}

/// RQ's `enqueued_at` (`utcformat`: `2024-05-01T12:00:00.123456Z`; RQ before 1.0 left out
/// the fraction), in Unix milliseconds.
pub fn rq_enqueued_ms(raw: &[u8]) -> Option<f64> {
    let raw = std::str::from_utf8(raw).ok()?;
    let time = humantime::parse_rfc3339(raw.trim()).ok()?;
    plausible(time.duration_since(UNIX_EPOCH).ok()?.as_secs_f64() * 1000.0)
}

// === BullMQ ===

/// BullMQ ≤ 4 left markers such as `0:0` in the wait list; they are not jobs.
fn is_bullmq_job(id: &str) -> bool {
    !id.starts_with("0:")
}

fn bullmq_job_read(queue_key: &str, id: &str) -> RedisRead {
    RedisRead::Hget(format!("{queue_key}:{id}"), "timestamp")
}

/// A job's `timestamp`: Unix milliseconds as decimal text.
pub fn bullmq_ms(raw: &[u8]) -> Option<f64> {
    plausible(std::str::from_utf8(raw).ok()?.trim().parse().ok()?)
}

/// The due time of a delayed job from its score (due_ms · 0x1000 + a 12-bit counter).
pub fn bullmq_due_ms(score: f64) -> Option<f64> {
    plausible((score / BULLMQ_DELAY_FACTOR as f64).floor())
}

// === streams ===

/// The milliseconds part of a stream entry id (`1700000000000-3`).
pub fn entry_id_ms(id: &str) -> Option<f64> {
    let (ms, _) = id.split_once('-')?;
    plausible(ms.parse::<u64>().ok()? as f64)
}

/// The smallest id after `id`: XRANGE's start is inclusive (the exclusive `(` form needs
/// Redis 6.2).
fn next_entry_id(id: &str) -> Option<String> {
    let (ms, seq) = id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    Some(match seq.checked_add(1) {
        Some(seq) => format!("{ms}-{seq}"),
        None => format!("{}-0", ms.checked_add(1)?),
    })
}

/// XPENDING's summary: the count and the smallest pending id.
fn pending_summary(reply: &Value) -> Option<(i64, Option<String>)> {
    match reply {
        Value::Array(items) => match items.as_slice() {
            [Value::Int(count), smallest, ..] => Some((*count, text(smallest))),
            _ => None,
        },
        _ => None,
    }
}

/// The id of the first entry of an XRANGE reply; `None` when there is none.
fn first_entry_id(source: &str, read: &RedisRead, reply: &Value) -> Result<Option<String>> {
    match reply {
        Value::Array(entries) => Ok(entries.first().and_then(|entry| match entry {
            Value::Array(parts) => parts.first().and_then(text),
            _ => None,
        })),
        other => Err(reply_error(source, read.key(), read.expected_type(), other)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::{
        metadata::{Metadata, parse_metric},
        sources::redis::{RedisQuery, metrics::METRICS},
    };

    /// 2023-11-14T22:13:20Z.
    const NOW_MS: i64 = 1_700_000_000_000;

    fn parse(pairs: &[(&str, &str)]) -> Result<RedisQuery> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let metric = map.get("metric").cloned().unwrap_or_default();
        parse_metric(METRICS, &metric, &Metadata::new(&map), &()).map(|parsed| parsed.query)
    }

    fn latency(pairs: &[(&str, &str)]) -> RedisQuery {
        let mut all = vec![("measure", "latency")];
        all.extend_from_slice(pairs);
        parse(&all).unwrap()
    }

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    /// Runs a refresh as the source does: `first` answers the query's reads; the follow-up
    /// reads it then asks for are answered from `store` (Nil for anything else).
    fn measure(
        query: &RedisQuery,
        first: &[Value],
        store: &[(RedisRead, Value)],
    ) -> (Result<f64>, Vec<RedisRead>) {
        let reads = query.reads(NOW_MS);
        assert_eq!(reads.len(), first.len(), "one reply per read: {reads:?}");
        let pairs: Vec<(&RedisRead, &Value)> = reads.iter().zip(first).collect();
        let follow_ups = query.follow_up_reads(&pairs);
        let answers: Vec<Value> = follow_ups
            .iter()
            .map(|read| {
                store
                    .iter()
                    .find(|(stored, _)| stored == read)
                    .map_or(Value::Nil, |(_, value)| value.clone())
            })
            .collect();
        let second: Vec<(&RedisRead, &Value)> = follow_ups.iter().zip(&answers).collect();
        let value = query.combine("s", NOW_MS, &pairs, &second);
        (value, follow_ups)
    }

    /// A server error reply, as Redis sends it (`-CODE detail`).
    fn server_error(line: &str) -> Value {
        let value = redis::parse_redis_value(format!("-{line}\r\n").as_bytes()).unwrap();
        assert!(matches!(value, Value::ServerError(_)), "{value:?}");
        value
    }

    fn wrongtype() -> Value {
        server_error("WRONGTYPE Operation against a key holding the wrong kind of value")
    }

    #[test]
    fn sidekiq_reads_both_timestamp_formats() {
        // Sidekiq ≤ 7: float seconds; Sidekiq 8: integer milliseconds.
        assert_eq!(
            sidekiq_enqueued_ms(br#"{"class":"W","enqueued_at":1700000000.25}"#),
            Some(1_700_000_000_250.0)
        );
        assert_eq!(
            sidekiq_enqueued_ms(br#"{"enqueued_at":1700000000250,"args":[1]}"#),
            Some(1_700_000_000_250.0)
        );
        // A float that happens to be whole is still seconds, as Ruby writes `1700000000.0`.
        assert_eq!(
            sidekiq_enqueued_ms(br#"{"enqueued_at":1700000000.0}"#),
            Some(1_700_000_000_000.0)
        );
        for unreadable in [
            &br#"{"class":"W"}"#[..],
            br#"{"enqueued_at":null}"#,
            br#"{"enqueued_at":"yesterday"}"#,
            br#"{"enqueued_at":-5.0}"#,
            br#"{"enqueued_at":0}"#,
            b"not json",
            b"",
        ] {
            assert_eq!(
                sidekiq_enqueued_ms(unreadable),
                None,
                "{}",
                String::from_utf8_lossy(unreadable)
            );
        }
    }

    #[test]
    fn sidekiq_latency_is_the_age_of_the_job_taken_next() {
        let query = latency(&[("metric", "sidekiq"), ("queue", "default")]);
        assert_eq!(
            query.reads(NOW_MS),
            vec![RedisRead::Lindex("queue:default".into(), -1)]
        );
        let job = |enqueued_at: &str| bulk(&format!(r#"{{"enqueued_at":{enqueued_at}}}"#));
        let cases = [
            (job("1699999990.5"), 9.5),
            (job("1699999990500"), 9.5),
            // Clock skew: a producer ahead of the scaler makes a future time; never negative.
            (job("1700000003.0"), 0.0),
            (job("1700000003000"), 0.0),
            // Nothing waits.
            (Value::Nil, 0.0),
            // No readable time: skipped, not made up.
            (bulk(r#"{"class":"W"}"#), 0.0),
            (bulk("garbage"), 0.0),
        ];
        for (head, expected) in cases {
            let (value, follow_ups) = measure(&query, std::slice::from_ref(&head), &[]);
            assert_eq!(value.unwrap(), expected, "{head:?}");
            assert!(follow_ups.is_empty(), "the job JSON holds its time");
        }
        let (value, _) = measure(&query, &[wrongtype()], &[]);
        let error = value.unwrap_err().to_string();
        assert!(
            error.contains("`queue:default`") && error.contains("a list"),
            "{error}"
        );

        let namespaced = latency(&[
            ("metric", "sidekiq"),
            ("queue", "default"),
            ("namespace", "app"),
        ]);
        assert_eq!(
            namespaced.reads(0),
            vec![RedisRead::Lindex("app:queue:default".into(), -1)]
        );
    }

    #[test]
    fn rq_timestamps() {
        assert_eq!(
            rq_enqueued_ms(b"2023-11-14T22:13:10.250000Z"),
            Some(1_699_999_990_250.0)
        );
        // RQ before 1.0 wrote no fraction.
        assert_eq!(
            rq_enqueued_ms(b"2023-11-14T22:13:10Z"),
            Some(1_699_999_990_000.0)
        );
        for unreadable in [&b"2023-11-14 22:13:10"[..], b"", b"1699999990", b"\xff"] {
            assert_eq!(rq_enqueued_ms(unreadable), None);
        }
    }

    #[test]
    fn rq_latency_is_the_age_of_the_first_job_that_exists() {
        let query = latency(&[("metric", "rq"), ("queue", "high")]);
        assert_eq!(
            query.reads(0),
            vec![RedisRead::Lrange("rq:queue:high".into(), 0, 3)]
        );
        let hash = |id: &str| RedisRead::Hget(format!("rq:job:{id}"), "enqueued_at");
        let ids = Value::Array(vec![bulk("a"), bulk("b"), bulk("c")]);
        let store = [
            (hash("a"), bulk("2023-11-14T22:13:08.000000Z")),
            (hash("b"), bulk("2023-11-14T22:13:18.000000Z")),
            (hash("c"), bulk("2023-11-14T22:13:00.000000Z")),
        ];
        let (value, follow_ups) = measure(&query, std::slice::from_ref(&ids), &store);
        assert_eq!(follow_ups, vec![hash("a"), hash("b"), hash("c")]);
        // The first job, the one RQ dequeues next (not the oldest of the three).
        assert_eq!(value.unwrap(), 12.0);
        // Its hash expired (`ttl`) or its time is unreadable: RQ skips it, so does latency.
        let (value, _) = measure(&query, std::slice::from_ref(&ids), &store[1..]);
        assert_eq!(value.unwrap(), 2.0);
        let garbled = [(hash("a"), bulk("soon")), store[1].clone()];
        let (value, _) = measure(&query, std::slice::from_ref(&ids), &garbled);
        assert_eq!(value.unwrap(), 2.0);
        let (value, _) = measure(&query, std::slice::from_ref(&ids), &[]);
        assert_eq!(value.unwrap(), 0.0);
        // An empty queue asks for nothing more.
        let (value, follow_ups) = measure(&query, &[Value::Array(vec![])], &[]);
        assert_eq!((value.unwrap(), follow_ups), (0.0, vec![]));
        let (value, _) = measure(&query, &[wrongtype()], &[]);
        assert!(value.unwrap_err().to_string().contains("`rq:queue:high`"));
    }

    fn bullmq_job(id: &str, timestamp: &str) -> (RedisRead, Value) {
        (
            RedisRead::Hget(format!("bull:mail:{id}"), "timestamp"),
            bulk(timestamp),
        )
    }

    #[test]
    fn bullmq_latency_is_the_oldest_head() {
        let query = latency(&[("metric", "bullmq"), ("queue", "mail")]);
        assert_eq!(
            query.reads(NOW_MS),
            vec![
                RedisRead::Hexists("bull:mail:meta".into(), "paused"),
                RedisRead::Lindex("bull:mail:wait".into(), -1),
                RedisRead::Lindex("bull:mail:paused".into(), -1),
                RedisRead::ZrangeFirst("bull:mail:prioritized".into()),
                RedisRead::ZrangeFirst("bull:mail:delayed".into()),
            ]
        );
        let store = [
            bullmq_job("1", "1699999995000"),
            bullmq_job("7", "1699999980000"),
            bullmq_job("9", "1699999999000"),
        ];
        let empty = Value::Array(vec![]);
        // Due 3 s ago (score = due_ms · 0x1000 + counter), and due in an hour.
        let due = |ms: i64| bulk(&(ms * 0x1000 + 5).to_string());
        let delayed = |ms: i64| Value::Array(vec![bulk("d"), due(ms)]);
        let not_paused = Value::Int(0);

        // wait head 1 (5 s), prioritized 7 (20 s): the older one.
        let first = [
            not_paused.clone(),
            bulk("1"),
            Value::Nil,
            Value::Array(vec![bulk("7"), bulk("4294967297")]),
            empty.clone(),
        ];
        let (value, follow_ups) = measure(&query, &first, &store);
        assert_eq!(value.unwrap(), 20.0);
        assert_eq!(follow_ups, vec![store[0].0.clone(), store[1].0.clone()]);

        // A due delayed job waits from its due time, not from when it was added.
        let first = [
            not_paused.clone(),
            bulk("9"),
            Value::Nil,
            empty.clone(),
            delayed(NOW_MS - 3000),
        ];
        assert_eq!(measure(&query, &first, &store).0.unwrap(), 3.0);
        // One not due yet does not wait.
        let first = [
            not_paused.clone(),
            bulk("9"),
            Value::Nil,
            empty.clone(),
            delayed(NOW_MS + 3_600_000),
        ];
        assert_eq!(measure(&query, &first, &store).0.unwrap(), 1.0);
        let first = [
            not_paused.clone(),
            Value::Nil,
            Value::Nil,
            empty.clone(),
            delayed(NOW_MS + 3_600_000),
        ];
        let (value, follow_ups) = measure(&query, &first, &store);
        assert_eq!((value.unwrap(), follow_ups), (0.0, vec![]));

        // RESP3's [[member, score]] form, and a BullMQ 4 marker in the wait list.
        let first = [
            not_paused.clone(),
            bulk("0:0"),
            Value::Nil,
            Value::Array(vec![Value::Array(vec![bulk("7"), Value::Double(2.0)])]),
            Value::Array(vec![Value::Array(vec![
                bulk("d"),
                Value::Double(((NOW_MS - 500) * 0x1000) as f64),
            ])]),
        ];
        let (value, follow_ups) = measure(&query, &first, &store);
        assert_eq!(value.unwrap(), 20.0);
        assert_eq!(follow_ups, vec![store[1].0.clone()], "markers are not jobs");

        // A head whose hash is gone or has no timestamp is skipped; the others still count.
        let first = [
            not_paused.clone(),
            bulk("gone"),
            bulk("1"),
            empty.clone(),
            empty.clone(),
        ];
        assert_eq!(measure(&query, &first, &store).0.unwrap(), 5.0);
        let first = [not_paused, bulk("gone"), Value::Nil, empty.clone(), empty];
        assert_eq!(measure(&query, &first, &store).0.unwrap(), 0.0);
    }

    #[test]
    fn a_paused_bullmq_queue_follows_count_when_paused() {
        let paused = [
            Value::Int(1),
            Value::Nil,
            bulk("1"),
            Value::Array(vec![]),
            Value::Array(vec![]),
        ];
        let store = [bullmq_job("1", "1699999990000")];
        let query = latency(&[("metric", "bullmq"), ("queue", "mail")]);
        let (value, follow_ups) = measure(&query, &paused, &store);
        assert_eq!((value.unwrap(), follow_ups), (0.0, vec![]));
        let counted = latency(&[
            ("metric", "bullmq"),
            ("queue", "mail"),
            ("countWhenPaused", "true"),
        ]);
        assert_eq!(measure(&counted, &paused, &store).0.unwrap(), 10.0);
    }

    #[test]
    fn bullmq_timestamps() {
        assert_eq!(bullmq_ms(b"1700000000123"), Some(1_700_000_000_123.0));
        assert_eq!(bullmq_ms(b"soon"), None);
        assert_eq!(bullmq_ms(b"-1"), None);
        assert_eq!(
            bullmq_due_ms((1_700_000_000_123_i64 * 0x1000 + 0xfff) as f64),
            Some(1_700_000_000_123.0)
        );
    }

    fn groups(last_delivered: &str) -> Value {
        Value::Array(vec![Value::Array(vec![
            bulk("name"),
            bulk("workers"),
            bulk("last-delivered-id"),
            bulk(last_delivered),
        ])])
    }

    #[test]
    fn stream_latency_is_the_oldest_unfinished_entry() {
        let query = latency(&[
            ("metric", "redis-stream"),
            ("stream", "events"),
            ("group", "workers"),
        ]);
        assert_eq!(
            query.reads(0),
            vec![
                RedisRead::XinfoGroups("events".into()),
                RedisRead::XpendingSummary("events".into(), "workers".into()),
            ]
        );
        // Pending entries: the oldest of them, from the summary alone.
        let pending = Value::Array(vec![
            Value::Int(3),
            bulk("1699999996000-0"),
            bulk("1699999999000-2"),
            Value::Array(vec![]),
        ]);
        let (value, follow_ups) = measure(&query, &[groups("1699999999000-2"), pending], &[]);
        assert_eq!((value.unwrap(), follow_ups), (4.0, vec![]));

        // Nothing pending: the first entry after the group's last-delivered-id.
        let none_pending = Value::Array(vec![Value::Int(0), Value::Nil, Value::Nil, Value::Nil]);
        let next = RedisRead::XrangeFirst("events".into(), "1699999990000-4".into());
        let entry = Value::Array(vec![Value::Array(vec![
            bulk("1699999992000-0"),
            Value::Array(vec![bulk("n"), bulk("1")]),
        ])]);
        let (value, follow_ups) = measure(
            &query,
            &[groups("1699999990000-3"), none_pending.clone()],
            &[(next.clone(), entry)],
        );
        assert_eq!(follow_ups, vec![next.clone()]);
        assert_eq!(value.unwrap(), 8.0);
        // Everything delivered and acknowledged.
        let (value, _) = measure(
            &query,
            &[groups("1699999990000-3"), none_pending.clone()],
            &[(next, Value::Array(vec![]))],
        );
        assert_eq!(value.unwrap(), 0.0);
        // A sequence at its maximum moves to the next millisecond.
        assert_eq!(
            next_entry_id("5-18446744073709551615").as_deref(),
            Some("6-0")
        );

        // A stream that does not exist waits for nothing; a missing group is an error.
        let no_stream = server_error("ERR no such key");
        let (value, follow_ups) = measure(&query, &[no_stream, none_pending.clone()], &[]);
        assert_eq!((value.unwrap(), follow_ups), (0.0, vec![]));
        let other_group = Value::Array(vec![Value::Array(vec![
            bulk("name"),
            bulk("others"),
            bulk("last-delivered-id"),
            bulk("0-0"),
        ])]);
        let error = measure(&query, &[other_group, none_pending], &[])
            .0
            .unwrap_err()
            .to_string();
        assert!(error.contains("no consumer group `workers`"), "{error}");
    }

    #[test]
    fn entry_ids() {
        assert_eq!(entry_id_ms("1700000000000-3"), Some(1_700_000_000_000.0));
        assert_eq!(entry_id_ms("0-1"), None);
        assert_eq!(entry_id_ms("x-1"), None);
        assert_eq!(entry_id_ms("17"), None);
    }

    #[test]
    fn ages_never_go_negative() {
        assert_eq!(age_seconds(NOW_MS, (NOW_MS - 1500) as f64), 1.5);
        assert_eq!(age_seconds(NOW_MS, (NOW_MS + 60_000) as f64), 0.0);
    }

    fn invalid_key(pairs: &[(&str, &str)]) -> (String, String) {
        match parse(pairs) {
            Err(Error::InvalidMetadata { key, reason }) => (key, reason),
            other => panic!("{pairs:?}: {other:?}"),
        }
    }

    #[test]
    fn measure_is_checked_per_metric() {
        for metric in ["sidekiq", "rq", "bullmq"] {
            let query = latency(&[("metric", metric), ("queue", "q")]);
            assert!(matches!(query, RedisQuery::Latency { .. }), "{query:?}");
            let backlog = parse(&[("metric", metric), ("queue", "q"), ("measure", "backlog")]);
            assert_eq!(
                backlog.unwrap(),
                parse(&[("metric", metric), ("queue", "q")]).unwrap()
            );
            let (key, message) =
                invalid_key(&[("metric", metric), ("queue", "q"), ("measure", "age")]);
            assert_eq!(key, "measure");
            assert!(message.contains("accepted: backlog, latency"), "{message}");
        }
        let (key, message) =
            invalid_key(&[("metric", "celery"), ("queue", "q"), ("measure", "latency")]);
        assert_eq!(key, "measure");
        assert!(
            message.contains("kombu") && message.contains("redis-stream"),
            "{message}"
        );
        let (key, message) = invalid_key(&[
            ("metric", "redis-list"),
            ("keys", "a"),
            ("measure", "latency"),
        ]);
        assert_eq!(key, "measure");
        assert!(
            message.contains("plain list items carry no enqueue time"),
            "{message}"
        );
        let (_, message) =
            invalid_key(&[("metric", "redis-list"), ("keys", "a"), ("measure", "age")]);
        assert!(message.contains("accepted: backlog"), "{message}");
        assert!(parse(&[("metric", "celery"), ("queue", "q"), ("measure", "backlog")]).is_ok());

        let stream = [
            ("metric", "redis-stream"),
            ("stream", "s"),
            ("measure", "latency"),
        ];
        assert_eq!(invalid_key(&stream).0, "group");
        let mut with_mode = stream.to_vec();
        with_mode.extend([("group", "g"), ("mode", "lag")]);
        assert_eq!(invalid_key(&with_mode).0, "mode");
        let (key, _) = invalid_key(&[
            ("metric", "bullmq"),
            ("queue", "q"),
            ("measure", "latency"),
            ("includeActive", "true"),
        ]);
        assert_eq!(key, "includeActive");
    }
}
