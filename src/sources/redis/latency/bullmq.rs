//! BullMQ: the heads of `wait` and `paused` (LPUSH, RPOPLPUSH) and of `prioritized`
//! (ZPOPMIN), whose hashes hold `timestamp`; a delayed job waits from its due time.

use redis::Value;

use super::time::{earliest, logged, plausible};
use crate::{
    Result,
    sources::redis::{
        libraries::BULLMQ_DELAY_FACTOR,
        read::RedisRead,
        reply::{Replies, bulk, follow_up, job_id, sorted_set_first},
    },
};

/// BullMQ: the oldest of the next job in `wait` (or `paused`), the highest-priority job and
/// the earliest due delayed job, which waits from its due time (one not yet due does not
/// wait). `heads` are the replies for wait, paused, prioritized and delayed.
pub(super) fn bullmq_since(
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

/// BullMQ ≤ 4 left markers such as `0:0` in the wait list; they are not jobs.
pub(super) fn is_bullmq_job(id: &str) -> bool {
    !id.starts_with("0:")
}

pub(super) fn bullmq_job_read(queue_key: &str, id: &str) -> RedisRead {
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
