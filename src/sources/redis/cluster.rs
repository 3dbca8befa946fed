//! Redis Cluster: the refresh's reads grouped by hash slot, one pipeline per slot, all
//! groups in flight at once. redis-rs's async cluster client routes each pipeline to the node
//! that owns its slot and follows MOVED and ASK redirections (a resharded slot) by itself;
//! it rejects pipelines whose keys span slots, hence the grouping.

use std::collections::HashMap;

use futures::future::join_all;
use redis::{Value, cluster_async::ClusterConnection, cluster_routing::Slot};

use super::{
    read::RedisRead,
    reply::{describe, server_error_makes_source_unavailable},
};
use crate::{Error, Result};

/// Sends `reads` as one pipeline per slot and returns the replies in `reads` order.
pub async fn pipeline_per_slot(
    source: &str,
    connection: &ClusterConnection,
    reads: &[RedisRead],
) -> Result<Vec<Value>> {
    let mut groups: HashMap<Slot, Vec<usize>> = HashMap::new();
    for (index, read) in reads.iter().enumerate() {
        groups
            .entry(Slot::for_key(read.key()))
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
                    Some(code) if server_error_makes_source_unavailable(code).is_some() => {
                        let reason =
                            server_error_makes_source_unavailable(code).unwrap_or_default();
                        Error::unavailable(source, format!("{reason} ({code})"))
                    }
                    // The node answered: a command of the group failed on its data.
                    Some(code) if !e.is_io_error() && !e.is_timeout() => {
                        let keys: Vec<&str> = indices.iter().map(|i| reads[*i].key()).collect();
                        Error::rejected(source, format!("reading keys {keys:?} failed: {code}"))
                    }
                    _ => Error::unavailable(source, describe(&e)),
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

    /// Slots come from redis-rs (the same CRC16/XMODEM and hash-tag rule its cluster client
    /// routes by); these values are CLUSTER KEYSLOT's, so a grouping error would show here.
    #[test]
    fn slots_match_cluster_keyslot() {
        let slot = |n| Slot::new(n).expect("a slot below 16384");
        assert_eq!(Slot::for_key("foo"), slot(12182));
        assert_eq!(Slot::for_key("bar"), slot(5061));
        assert_eq!(
            Slot::for_key("{user1000}.following"),
            Slot::for_key("user1000")
        );
        assert_ne!(
            Slot::for_key("foo{}{bar}"),
            Slot::for_key("bar"),
            "an empty tag hashes the whole key"
        );
        assert_eq!(
            Slot::for_key("{bull}:mail:wait"),
            Slot::for_key("{bull}:mail:delayed")
        );
    }
}
