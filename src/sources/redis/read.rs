//! The read vocabulary: one read-only command against one key. Reads are the unit of
//! de-duplication (a thousand triggers over ten queues cost ten reads) and of routing (on
//! Cluster the key picks the node). A leaf: it knows commands, not queues or replies.

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
