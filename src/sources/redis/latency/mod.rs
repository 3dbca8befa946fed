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

use redis::Value;
use serde::Serialize;

use super::{
    read::RedisRead,
    reply::{Replies, bulk, field_text, find_group, first_member, group_entry, integer, text},
};
use crate::{Error, Result};

mod bullmq;
mod rq;
mod sidekiq;
mod stream;
mod time;

pub use bullmq::{bullmq_due_ms, bullmq_ms};
use bullmq::{bullmq_job_read, bullmq_since, is_bullmq_job};
pub use rq::rq_enqueued_ms;
use rq::{RQ_LOOKAHEAD, rq_job_read, rq_since};
pub use sidekiq::sidekiq_enqueued_ms;
pub use stream::entry_id_ms;
use stream::{next_entry_id, pending_summary, stream_since};
pub use time::age_seconds;
use time::logged;

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

#[cfg(test)]
mod tests;
