//! `includeActive` of `sidekiq`, `rq` and `celery`: the jobs of a queue being worked on right
//! now, counted where and as each library records them, so that a value of waiting + in
//! progress keeps the replicas that running jobs need.
//!
//! | library | where it records the jobs in progress | read |
//! | --- | --- | --- |
//! | Sidekiq | each process (an identity in the set `processes`) writes the hash `<identity>:work` (Sidekiq ≥ 6.4.2, 7, 8) or `<identity>:workers` (≤ 6.4.1, counted only while the key `<identity>` exists, as its `WorkSet` does) at its heartbeat, every 5 s; values are JSON with `queue` | `SMEMBERS processes`, then per identity `EXISTS`, `HVALS` of both hashes |
//! | RQ | `rq:wip:<queue>` (`StartedJobRegistry`), scored by expiry time | `ZCOUNT rq:wip:<queue> (now +inf` |
//! | Celery (kombu) | the one hash `unacked` of every queue: `[message, exchange, routing_key]` per delivered, unacknowledged message | `HVALS unacked`, then the bindings (`_kombu.binding.<exchange>`) of the exchanges it names |
//!
//! With redis-namespace every Sidekiq key takes the `namespace:` prefix while the members
//! of `processes` stay bare; kombu's `global_keyprefix` prefixes `unacked` and the bindings.
//! Every read is read-only (RQ's own `count` first removes expired entries, a write), and the
//! cost of a refresh is bounded by the worker processes and the messages they hold, not by
//! the jobs ever run.

use serde::{Deserialize, Serialize, de::IgnoredAny};
use tracing::debug;

use super::{
    read::RedisRead,
    reply::{Replies, follow_up, integer, members, reply_error},
};
use crate::{Error, Result};

/// The jobs of one queue in progress, as its library records them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InProgress {
    /// `Sidekiq::WorkSet` entries of `queue`; `prefix` is `""` or `"<namespace>:"`.
    Sidekiq { prefix: String, queue: String },
    /// `StartedJobRegistry`: the sorted set `rq:wip:<queue>`.
    Rq { key: String },
    /// kombu's `unacked` hash entries that return to `queue`; `prefix` is `global_keyprefix`,
    /// `separator` kombu's `sep` (it also joins the fields of a binding).
    Celery {
        prefix: String,
        queue: String,
        separator: String,
    },
}

impl InProgress {
    /// The first-round reads, after the query's own.
    pub fn reads(&self, now_ms: i64) -> Vec<RedisRead> {
        match self {
            InProgress::Sidekiq { prefix, .. } => {
                vec![RedisRead::Smembers(format!("{prefix}processes"))]
            }
            // RQ scores an entry with its expiry (whole seconds) and counts only the entries
            // that have not expired. Its workers always give a positive TTL.
            InProgress::Rq { key } => {
                vec![RedisRead::ZcountAbove(key.clone(), now_ms.div_euclid(1000))]
            }
            InProgress::Celery { prefix, .. } => vec![RedisRead::Hvals(format!("{prefix}unacked"))],
        }
    }

    /// The reads that depend on the first round's `replies` (of [`reads`](Self::reads)).
    pub fn follow_up_reads(&self, replies: &Replies<'_>) -> Vec<RedisRead> {
        match (self, replies) {
            (InProgress::Sidekiq { prefix, .. }, [(read, reply)]) => {
                let identities = identities(reply).unwrap_or_default();
                debug!(
                    key = read.key(),
                    processes = identities.len(),
                    "Sidekiq processes"
                );
                identities
                    .iter()
                    .flat_map(|identity| sidekiq_process_reads(prefix, identity))
                    .collect()
            }
            (InProgress::Celery { prefix, .. }, [(_, reply)]) => {
                let mut exchanges: Vec<String> = members(reply)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|value| unacked_route(value))
                    .map(|(exchange, _)| exchange)
                    .filter(|exchange| !exchange.is_empty())
                    .collect();
                exchanges.sort();
                exchanges.dedup();
                exchanges
                    .into_iter()
                    .map(|exchange| RedisRead::Smembers(binding_key(prefix, &exchange)))
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// The number of the queue's jobs in progress.
    pub fn count(
        &self,
        source: &str,
        replies: &Replies<'_>,
        follow_up_replies: &Replies<'_>,
    ) -> Result<f64> {
        let [(read, reply)] = replies else {
            return Err(Error::Internal(format!(
                "{} replies do not fit the reads of {self:?}",
                replies.len()
            )));
        };
        let wrong_type = || reply_error(source, read.key(), read.expected_type(), reply);
        match self {
            InProgress::Rq { key } => Ok(integer(source, key, "a sorted set", reply)? as f64),
            InProgress::Sidekiq { prefix, queue } => {
                let identities = identities(reply).ok_or_else(wrong_type)?;
                let mut count = 0;
                for identity in identities {
                    count += sidekiq_process(source, prefix, &identity, queue, follow_up_replies)?;
                }
                Ok(count as f64)
            }
            InProgress::Celery {
                prefix,
                queue,
                separator,
            } => {
                let mut count = 0;
                for value in members(reply).ok_or_else(wrong_type)? {
                    let Some((exchange, routing_key)) = unacked_route(&value) else {
                        debug!(
                            source,
                            key = read.key(),
                            "an unacked entry kombu would not read"
                        );
                        continue;
                    };
                    if celery_returns_to(
                        source,
                        (prefix, separator, queue),
                        &exchange,
                        &routing_key,
                        follow_up_replies,
                    )? {
                        count += 1;
                    }
                }
                Ok(count as f64)
            }
        }
    }
}

/// The members of `processes` (Sidekiq identities are text; others are skipped).
fn identities(reply: &redis::Value) -> Option<Vec<String>> {
    let members = members(reply)?;
    Some(
        members
            .into_iter()
            .filter_map(|member| String::from_utf8(member).ok())
            .collect(),
    )
}

/// A Sidekiq process's reads: whether it is alive, and both names its work hash has had.
fn sidekiq_process_reads(prefix: &str, identity: &str) -> [RedisRead; 3] {
    [
        RedisRead::Exists(format!("{prefix}{identity}")),
        RedisRead::Hvals(format!("{prefix}{identity}:workers")),
        RedisRead::Hvals(format!("{prefix}{identity}:work")),
    ]
}

/// What `Sidekiq::WorkSet` yields for one process and `queue`: the entries of `:workers`
/// while the process key exists (6.4.1 checks it), and every entry of `:work` (6.5 on read
/// it unchecked; 6.4.2 still checks the process key, but writes `:work` with its 60 s expiry
/// just before the key's own, so the hash never outlives the key).
fn sidekiq_process(
    source: &str,
    prefix: &str,
    identity: &str,
    queue: &str,
    replies: &Replies<'_>,
) -> Result<usize> {
    let [exists, workers, work] = sidekiq_process_reads(prefix, identity);
    let alive = integer(
        source,
        exists.key(),
        "any value",
        follow_up(replies, &exists)?,
    )? == 1;
    let mut count = 0;
    for (read, counted) in [(workers, alive), (work, true)] {
        let reply = follow_up(replies, &read)?;
        let values =
            members(reply).ok_or_else(|| reply_error(source, read.key(), "a hash", reply))?;
        if counted {
            count += values
                .iter()
                .filter(|v| sidekiq_queue(v) == Some(queue))
                .count();
        }
    }
    Ok(count)
}

/// The `queue` of a Sidekiq work entry (`{"queue": …, "payload": …, "run_at": …}`).
fn sidekiq_queue(value: &[u8]) -> Option<&str> {
    #[derive(Deserialize)]
    struct Work<'a> {
        #[serde(borrow)]
        queue: Option<&'a str>,
    }
    serde_json::from_slice::<Work<'_>>(value).ok()?.queue
}

/// The exchange and routing key of an unacked entry `[message, exchange, routing_key]`.
fn unacked_route(value: &[u8]) -> Option<(String, String)> {
    let (_, exchange, routing_key): (IgnoredAny, String, String) =
        serde_json::from_slice(value).ok()?;
    Some((exchange, routing_key))
}

/// kombu's binding table of `exchange` (`keyprefix_queue`).
fn binding_key(prefix: &str, exchange: &str) -> String {
    format!("{prefix}_kombu.binding.{exchange}")
}

/// Whether kombu would return a message of `exchange` / `routing_key` to `queue` (its
/// `_lookup`): the default exchange routes by queue name; any other, by the bindings whose
/// routing key is the message's (direct routing, as Celery declares its queues).
fn celery_returns_to(
    source: &str,
    (prefix, separator, queue): (&str, &str, &str),
    exchange: &str,
    routing_key: &str,
    replies: &Replies<'_>,
) -> Result<bool> {
    if exchange.is_empty() {
        return Ok(routing_key == queue);
    }
    let read = RedisRead::Smembers(binding_key(prefix, exchange));
    let reply = follow_up(replies, &read)?;
    let bindings = members(reply).ok_or_else(|| reply_error(source, read.key(), "a set", reply))?;
    // A binding is `routing_key + sep + pattern + sep + queue`.
    Ok(bindings.iter().any(|binding| {
        let mut fields = split_bytes(binding, separator.as_bytes());
        let bound_queue = fields.pop();
        fields.first().map(Vec::as_slice) == Some(routing_key.as_bytes())
            && bound_queue.as_deref() == Some(queue.as_bytes())
    }))
}

/// `bytes` split at every `separator`.
fn split_bytes(bytes: &[u8], separator: &[u8]) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    let mut rest = bytes;
    while let Some(at) = rest
        .windows(separator.len().max(1))
        .position(|window| window == separator)
    {
        parts.push(rest[..at].to_vec());
        rest = &rest[at + separator.len()..];
    }
    parts.push(rest.to_vec());
    parts
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::*;

    fn bulk(items: &[&str]) -> Value {
        Value::Array(
            items
                .iter()
                .map(|item| Value::BulkString(item.as_bytes().to_vec()))
                .collect(),
        )
    }

    fn pairs<'a>(reads: &'a [RedisRead], replies: &'a [Value]) -> Vec<(&'a RedisRead, &'a Value)> {
        assert_eq!(reads.len(), replies.len(), "one reply per read");
        reads.iter().zip(replies).collect()
    }

    fn work(queue: &str) -> String {
        format!(r#"{{"queue":"{queue}","payload":"{{\"jid\":\"1\"}}","run_at":1}}"#)
    }

    #[test]
    fn sidekiq_counts_the_work_set_of_its_queue_in_both_layouts() {
        let query = InProgress::Sidekiq {
            prefix: "app:".into(),
            queue: "default".into(),
        };
        let reads = query.reads(0);
        assert_eq!(reads, vec![RedisRead::Smembers("app:processes".into())]);
        // Sidekiq 6.4.1 (`:workers`, counted while the process key exists) on a and b;
        // Sidekiq 7 (`:work`, counted as its WorkSet does, whatever the key) on c.
        let members = [bulk(&["host:1:a", "host:2:b", "host:3:c"])];
        let first = pairs(&reads, &members);
        let follow_ups = query.follow_up_reads(&first);
        assert_eq!(
            follow_ups.len(),
            9,
            "three reads per process: {follow_ups:?}"
        );
        assert_eq!(follow_ups[0], RedisRead::Exists("app:host:1:a".into()));
        assert_eq!(
            follow_ups[1],
            RedisRead::Hvals("app:host:1:a:workers".into())
        );
        assert_eq!(follow_ups[2], RedisRead::Hvals("app:host:1:a:work".into()));
        let replies = [
            Value::Int(1),
            bulk(&[&work("default"), &work("mail"), &work("default")]),
            bulk(&[]),
            // b: its key expired, its `:workers` hash not yet.
            Value::Int(0),
            bulk(&[&work("default")]),
            bulk(&[]),
            Value::Int(0),
            bulk(&[]),
            bulk(&[&work("default"), "not json", &work("mail")]),
        ];
        let count = query.count("s", &first, &pairs(&follow_ups, &replies));
        assert_eq!(count.unwrap(), 3.0);
    }

    #[test]
    fn sidekiq_without_processes_reads_nothing_more() {
        let query = InProgress::Sidekiq {
            prefix: String::new(),
            queue: "default".into(),
        };
        let reads = query.reads(0);
        assert_eq!(reads, vec![RedisRead::Smembers("processes".into())]);
        let empty = [Value::Set(Vec::new())];
        let first = pairs(&reads, &empty);
        assert!(query.follow_up_reads(&first).is_empty());
        assert_eq!(query.count("s", &first, &[]).unwrap(), 0.0);
        let wrong = [Value::Int(3)];
        let error = query.count("s", &pairs(&reads, &wrong), &[]).unwrap_err();
        assert!(error.to_string().contains("processes"), "{error}");
    }

    #[test]
    fn rq_counts_started_jobs_that_have_not_expired() {
        let query = InProgress::Rq {
            key: "rq:wip:high".into(),
        };
        let reads = query.reads(1_700_000_123_456);
        assert_eq!(
            reads,
            vec![RedisRead::ZcountAbove("rq:wip:high".into(), 1_700_000_123)]
        );
        assert_eq!(
            reads[0].command().get_packed_command(),
            redis::cmd("ZCOUNT")
                .arg("rq:wip:high")
                .arg("(1700000123")
                .arg("+inf")
                .get_packed_command()
        );
        let replies = [Value::Int(2)];
        assert_eq!(
            query.count("s", &pairs(&reads, &replies), &[]).unwrap(),
            2.0
        );
    }

    #[test]
    fn celery_counts_the_unacked_messages_kombu_would_return_to_the_queue() {
        let query = InProgress::Celery {
            prefix: "t:".into(),
            queue: "work".into(),
            separator: "\x06\x16".into(),
        };
        let reads = query.reads(0);
        assert_eq!(reads, vec![RedisRead::Hvals("t:unacked".into())]);
        let unacked = [bulk(&[
            r#"[{"body": "x"}, "", "work"]"#,
            r#"[{"body": "x"}, "", "other"]"#,
            r#"[{"body": "x"}, "work", "work"]"#,
            r#"[{"body": "x"}, "tasks", "task.a"]"#,
            r#"[{"body": "x"}, "tasks", "task.b"]"#,
            "garbage",
        ])];
        let first = pairs(&reads, &unacked);
        let follow_ups = query.follow_up_reads(&first);
        assert_eq!(
            follow_ups,
            vec![
                RedisRead::Smembers("t:_kombu.binding.tasks".into()),
                RedisRead::Smembers("t:_kombu.binding.work".into()),
            ]
        );
        let bindings = [
            bulk(&["task.a\x06\x16\x06\x16work", "task.b\x06\x16\x06\x16other"]),
            bulk(&["work\x06\x16\x06\x16work"]),
        ];
        let count = query.count("s", &first, &pairs(&follow_ups, &bindings));
        assert_eq!(count.unwrap(), 3.0, "default exchange, `work` and task.a");
    }
}
