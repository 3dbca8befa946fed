//! Reply decoding: integers, bulk strings, field lists and sorted-set heads out of RESP2
//! and RESP3 replies, and the one place that decides which server errors make a source
//! unavailable and which reject a trigger. Uses only the read vocabulary ([`super::read`]).

use redis::Value;

use super::read::RedisRead;
use crate::{Error, Result, sources::AUTHENTICATION_FAILED};

/// Replies, each beside the read it answers.
pub type Replies<'a> = [(&'a RedisRead, &'a Value)];

/// The sum of integer replies; a reply of another shape names its key and the type it should
/// have.
pub(super) fn sum(source: &str, replies: &[(&RedisRead, &Value)]) -> Result<f64> {
    let mut total: i64 = 0;
    for (read, reply) in replies {
        let count = integer(source, read.key(), read.expected_type(), reply)?;
        total = total.saturating_add(count);
    }
    Ok(total as f64)
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

pub(super) fn fields(value: &Value) -> Vec<(String, Value)> {
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

pub(super) fn field_int(info: &[(String, Value)], name: &str) -> Option<i64> {
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

pub(super) fn reply_error(source: &str, key: &str, expected: &str, reply: &Value) -> Error {
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

/// The reply to a follow-up read. The source sends every follow-up read a query asks for,
/// so a missing one is a bug.
pub(super) fn follow_up<'a>(replies: &Replies<'a>, read: &RedisRead) -> Result<&'a Value> {
    replies
        .iter()
        .find(|(asked, _)| *asked == read)
        .map(|(_, reply)| *reply)
        .ok_or_else(|| Error::Internal(format!("no reply to the follow-up read {read:?}")))
}

/// A job id as [`text`] reads it for the follow-up reads; `None` if it is not UTF-8.
pub(super) fn job_id(bytes: Vec<u8>) -> Option<String> {
    String::from_utf8(bytes).ok()
}

/// A list element (LINDEX) or hash field (HGET): `None` when the key, the index or the
/// field does not exist.
pub(super) fn bulk(source: &str, read: &RedisRead, reply: &Value) -> Result<Option<Vec<u8>>> {
    match reply {
        Value::Nil => Ok(None),
        Value::BulkString(bytes) => Ok(Some(bytes.clone())),
        other => Err(reply_error(source, read.key(), read.expected_type(), other)),
    }
}

/// The first member of a ZRANGE … WITHSCORES reply, in RESP2 (`[member, score]`) or RESP3
/// (`[[member, score]]`) form, with its score.
pub(super) fn sorted_set_first(
    source: &str,
    read: &RedisRead,
    reply: &Value,
) -> Result<Option<(String, Option<f64>)>> {
    match reply {
        Value::Array(items) => Ok(first_with_score(items)),
        other => Err(reply_error(source, read.key(), read.expected_type(), other)),
    }
}

pub(super) fn first_with_score(items: &[Value]) -> Option<(String, Option<f64>)> {
    let pair = match items {
        [Value::Array(pair), ..] => pair.as_slice(),
        flat => flat,
    };
    match pair {
        [member, score, ..] => text(member).map(|member| (member, score_of(score))),
        _ => None,
    }
}

/// The member of a ZRANGE reply, or `None` (for an error too: `combine` reports it).
pub(super) fn first_member(reply: &Value) -> Option<String> {
    match reply {
        Value::Array(items) => first_with_score(items).map(|(member, _)| member),
        _ => None,
    }
}

pub(super) fn score_of(value: &Value) -> Option<f64> {
    match value {
        Value::Double(score) => Some(*score),
        other => text(other)?.parse().ok(),
    }
}

/// A short, secret-free description of a Redis client error.
pub fn describe(error: &redis::RedisError) -> String {
    if error.is_timeout() {
        "timed out".to_string()
    } else if error.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("WRONGPASS" | "NOAUTH"))
    {
        let code = error.code().unwrap_or("AUTH");
        format!("{AUTHENTICATION_FAILED}: check the source's username and password ({code})")
    } else if error.is_connection_refusal() {
        "connection refused".to_string()
    } else if error.is_io_error() || error.is_connection_dropped() {
        format!("connection failed ({:?})", error.kind())
    } else {
        match error.code() {
            Some(code) => format!("Redis answered {code}"),
            None => format!("{:?}", error.kind()),
        }
    }
}
