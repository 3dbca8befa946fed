//! Redis Cluster: the refresh's reads grouped by hash slot, one pipeline per slot, all
//! groups in flight at once. redis-rs's async cluster client routes each pipeline to the node
//! that owns its slot and follows MOVED and ASK redirections (a resharded slot) by itself;
//! it rejects pipelines whose keys span slots, hence the grouping.

use std::collections::BTreeMap;

use futures::future::join_all;
use redis::{Value, cluster_async::ClusterConnection};

use super::{RedisRead, unavailable};
use crate::{Error, Result};

/// The hash slot of a key (CRC16/XMODEM of the key or its `{hash tag}`, mod 16384), as
/// every Redis Cluster node computes it.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|b| *b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|b| *b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16_xmodem(hashed) % 16384
}

fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in bytes {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Sends `reads` as one pipeline per slot and returns the replies in `reads` order.
pub async fn pipeline_per_slot(
    source: &str,
    connection: &ClusterConnection,
    reads: &[RedisRead],
) -> Result<Vec<Value>> {
    let mut groups: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (index, read) in reads.iter().enumerate() {
        groups
            .entry(key_slot(read.key().as_bytes()))
            .or_default()
            .push(index);
    }
    let sends = groups.values().map(|indices| {
        let mut connection = connection.clone();
        async move {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for index in indices {
                pipe.add_command(reads[*index].command());
            }
            let replies: Vec<Value> = pipe.query_async(&mut connection).await.map_err(|e| {
                match e.code() {
                    Some(code)
                        if super::query::server_error_makes_source_unavailable(code).is_some() =>
                    {
                        super::query::unavailable_reply(source, code)
                    }
                    // The node answered: a command of the group failed on its data.
                    Some(code) if !e.is_io_error() && !e.is_timeout() => {
                        let keys: Vec<&str> = indices.iter().map(|i| reads[*i].key()).collect();
                        Error::rejected(source, format!("reading keys {keys:?} failed: {code}"))
                    }
                    _ => unavailable(source, &e),
                }
            })?;
            Ok::<_, Error>((indices, replies))
        }
    });
    let mut out = vec![Value::Nil; reads.len()];
    for group in join_all(sends).await {
        let (indices, replies) = group?;
        if replies.len() != indices.len() {
            return Err(Error::Internal(format!(
                "source `{source}`: {} replies to {} reads",
                replies.len(),
                indices.len()
            )));
        }
        for (index, reply) in indices.iter().zip(replies) {
            out[*index] = reply;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from CLUSTER KEYSLOT and the Redis Cluster specification.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31c3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(
            key_slot(b"foo{}{bar}"),
            crc16_xmodem(b"foo{}{bar}") % 16384,
            "an empty tag hashes the whole key"
        );
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(
            key_slot(b"{bull}:mail:wait"),
            key_slot(b"{bull}:mail:delayed")
        );
    }
}
