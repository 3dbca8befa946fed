//! RQ: the first id of `rq:queue:<name>` whose job still exists (RPUSH, LPOP / LMOVE); its
//! enqueue time is `enqueued_at` of the hash `rq:job:<id>`.

use std::time::UNIX_EPOCH;

use redis::Value;
use tracing::debug;

use super::time::{logged, plausible};
use crate::{
    Result,
    sources::redis::{
        read::RedisRead,
        reply::{Replies, bulk, follow_up, reply_error, text},
    },
};

/// RQ's job hashes: `rq:job:<id>` (`Job.redis_job_namespace_prefix`).
pub(super) const RQ_JOB_PREFIX: &str = "rq:job:";

/// How many ids at the head of an RQ queue are read. A job enqueued with `ttl` that waited
/// longer loses its hash but keeps its id in the queue until a worker pops and skips it, so
/// the head can be dead exactly when jobs wait long. Four ids cost four HGETs per trigger and
/// refresh and see past a few expired ones; a queue whose first four all expired reads 0.
pub(super) const RQ_LOOKAHEAD: i64 = 4;

/// RQ: the first job that exists is the one RQ dequeues next (it skips the others).
pub(super) fn rq_since(
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

pub(super) fn rq_job_read(id: &str) -> RedisRead {
    RedisRead::Hget(format!("{RQ_JOB_PREFIX}{id}"), "enqueued_at")
}

/// RQ's `enqueued_at` (`utcformat`: `2024-05-01T12:00:00.123456Z`; RQ before 1.0 left out
/// the fraction), in Unix milliseconds.
pub fn rq_enqueued_ms(raw: &[u8]) -> Option<f64> {
    let raw = std::str::from_utf8(raw).ok()?;
    let time = humantime::parse_rfc3339(raw.trim()).ok()?;
    plausible(time.duration_since(UNIX_EPOCH).ok()?.as_secs_f64() * 1000.0)
}
