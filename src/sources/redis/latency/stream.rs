//! Streams: a consumer group's oldest pending entry (XPENDING summary), else the first entry
//! after its `last-delivered-id`; the entry id carries its time.

use redis::Value;

use super::time::{logged, plausible};
use crate::{
    Result,
    sources::redis::{
        read::RedisRead,
        reply::{Replies, follow_up, reply_error, text},
    },
};

/// A stream's consumer group: its oldest pending entry, or, when none is pending, the first
/// entry after its last-delivered-id (read by `first_undelivered`).
pub(super) fn stream_since(
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

/// The milliseconds part of a stream entry id (`1700000000000-3`).
pub fn entry_id_ms(id: &str) -> Option<f64> {
    let (ms, _) = id.split_once('-')?;
    plausible(ms.parse::<u64>().ok()? as f64)
}

/// The smallest id after `id`: XRANGE's start is inclusive (the exclusive `(` form needs
/// Redis 6.2).
pub(super) fn next_entry_id(id: &str) -> Option<String> {
    let (ms, seq) = id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    Some(match seq.checked_add(1) {
        Some(seq) => format!("{ms}-{seq}"),
        None => format!("{}-0", ms.checked_add(1)?),
    })
}

/// XPENDING's summary: the count and the smallest pending id.
pub(super) fn pending_summary(reply: &Value) -> Option<(i64, Option<String>)> {
    match reply {
        Value::Array(items) => match items.as_slice() {
            [Value::Int(count), smallest, ..] => Some((*count, text(smallest))),
            _ => None,
        },
        _ => None,
    }
}

/// The id of the first entry of an XRANGE reply; `None` when there is none.
pub(super) fn first_entry_id(
    source: &str,
    read: &RedisRead,
    reply: &Value,
) -> Result<Option<String>> {
    match reply {
        Value::Array(entries) => Ok(entries.first().and_then(|entry| match entry {
            Value::Array(parts) => parts.first().and_then(text),
            _ => None,
        })),
        other => Err(reply_error(source, read.key(), read.expected_type(), other)),
    }
}
