//! `backlog-scaler check` for a Redis source: a read through the same path as real reads,
//! replies included (which decides reachable and authenticated), and what the server says
//! about itself: `INFO server` (version and mode), `ROLE`, and per topology `CLUSTER INFO`'s
//! cluster_state or the master the Sentinels resolve.
//!
//! Failing findings are those under which no metric reads the right data: a cluster whose
//! state is not `ok`, a `type = "redis"` source pointing at a Cluster node or a Sentinel
//! (checked before the read, whose MOVED would only say "resharding"). A replica is reported
//! (values may lag the master) but passes. `INFO` or `ROLE` refused by an ACL is reported
//! too: metrics need only the read commands.

use redis::{
    Cmd, Value,
    aio::ConnectionLike,
    cluster_routing::{RoutingInfo, SingleNodeRoutingInfo},
};

use super::{
    RedisQuery, RedisRead,
    connections::{Connections, Nodes},
    reply::describe,
};
use crate::{
    Result,
    sources::{CheckReport, Finding},
};

/// The findings of one Redis source.
pub(super) async fn check(source: &Connections) -> Result<CheckReport> {
    let mut findings = Vec::new();
    let info = match &source.nodes {
        Nodes::Standalone { client, connection } => {
            let mut connection = source.standalone(client, connection).await?;
            let info = query::<String>(&mut connection, info_server()).await;
            let mode = mode(&info, "standalone");
            // A Cluster node answers MOVED for most keys: say what is wrong instead.
            if mode.ok {
                probe(source).await?;
            }
            findings.push(mode);
            findings.push(role(query(&mut connection, redis::cmd("ROLE")).await));
            info
        }
        Nodes::Cluster { client, connection } => {
            probe(source).await?;
            let mut connection = source.cluster(client, connection).await?;
            let primary = RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary);
            let info = connection
                .route_command(info_server(), primary.clone())
                .await
                .and_then(|v| redis::from_redis_value::<String>(v).map_err(Into::into));
            let mut cluster_info = redis::cmd("CLUSTER");
            cluster_info.arg("INFO");
            let state = connection
                .route_command(cluster_info, primary)
                .await
                .and_then(|v| redis::from_redis_value::<String>(v).map_err(Into::into));
            findings.push(cluster_state(state));
            info
        }
        Nodes::Sentinel(sentinel) => {
            probe(source).await?;
            let (host, port) = sentinel.master_address().await?;
            findings.push(Finding::new(
                "master",
                true,
                format!(
                    "the Sentinels resolve `{}` to {host}:{port}",
                    sentinel.master_name()
                ),
            ));
            let mut connection = sentinel.connection().await?;
            let info = query::<String>(&mut connection, info_server()).await;
            findings.push(role(query(&mut connection, redis::cmd("ROLE")).await));
            info
        }
    };
    let version = info
        .as_ref()
        .ok()
        .and_then(|info| info_field(info, "redis_version"));
    if let Err(error) = &info {
        findings.push(Finding::new(
            "info",
            true,
            format!("INFO server refused: {}", describe(error)),
        ));
    }
    Ok(CheckReport { version, findings })
}

/// A redis-list read of a key nobody uses, answered the way a trigger's read is: a server
/// that takes the connection but answers NOAUTH fails here too.
pub(super) async fn probe(source: &Connections) -> Result<()> {
    let probe = RedisQuery::List {
        keys: vec!["backlog-scaler:probe".to_string()].into(),
    };
    let reads = probe.reads(0);
    let replies = source.pipeline(&reads).await?;
    let answered: Vec<(&RedisRead, &Value)> = reads.iter().zip(&replies).collect();
    probe.combine(&source.name, 0, &answered, &[]).map(drop)
}

fn info_server() -> Cmd {
    let mut cmd = redis::cmd("INFO");
    cmd.arg("server");
    cmd
}

async fn query<T: redis::FromRedisValue>(
    connection: &mut impl ConnectionLike,
    cmd: Cmd,
) -> redis::RedisResult<T> {
    cmd.query_async(connection).await
}

/// One `field:value` line of an INFO section.
fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.trim_end().strip_prefix(field)?.strip_prefix(':'))
        .map(str::to_string)
}

/// A `type = "redis"` source must point at a plain server: a Cluster node answers MOVED for
/// most keys, and a Sentinel holds no queues.
fn mode(info: &redis::RedisResult<String>, expected: &str) -> Finding {
    let found = info
        .as_ref()
        .ok()
        .and_then(|info| info_field(info, "redis_mode"));
    match found.as_deref() {
        None => Finding::new("redis_mode", true, "not reported"),
        Some(mode) if mode == expected => Finding::new("redis_mode", true, mode),
        Some("cluster") => Finding::new(
            "redis_mode",
            false,
            "cluster: this node is part of a Redis Cluster; use type = \"redis-cluster\"",
        ),
        Some("sentinel") => Finding::new(
            "redis_mode",
            false,
            "sentinel: this is a Sentinel, which holds no queues; use type = \"redis-sentinel\"",
        ),
        Some(other) => Finding::new("redis_mode", true, other),
    }
}

/// `ROLE`: master, or a replica (whose values may lag its master).
fn role(reply: redis::RedisResult<Vec<Value>>) -> Finding {
    let reply = match reply {
        Ok(reply) => reply,
        Err(error) => {
            return Finding::new("role", true, format!("ROLE refused: {}", describe(&error)));
        }
    };
    let text = |index: usize| -> Option<String> {
        reply
            .get(index)
            .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
    };
    match text(0).as_deref() {
        Some("master") => Finding::new("role", true, "master"),
        Some("slave" | "replica") => {
            let master = match (text(1), text(2)) {
                (Some(host), Some(port)) => format!(" of {host}:{port}"),
                _ => String::new(),
            };
            let link = text(3).unwrap_or_else(|| "unknown".into());
            Finding::new(
                "role",
                true,
                format!("replica{master} (link {link}): values may lag the master"),
            )
        }
        Some("sentinel") => Finding::new(
            "role",
            false,
            "sentinel: this is a Sentinel, which holds no queues",
        ),
        Some(other) => Finding::new("role", true, other),
        None => Finding::new("role", true, "not reported"),
    }
}

/// `cluster_state:ok` means every slot is served; otherwise reads of some keys fail.
fn cluster_state(info: redis::RedisResult<String>) -> Finding {
    let info = match info {
        Ok(info) => info,
        Err(error) => {
            return Finding::new(
                "cluster_state",
                false,
                format!("CLUSTER INFO failed: {}", describe(&error)),
            );
        }
    };
    let state = info_field(&info, "cluster_state").unwrap_or_else(|| "unknown".into());
    let size = info_field(&info, "cluster_size").unwrap_or_else(|| "?".into());
    let known = info_field(&info, "cluster_known_nodes").unwrap_or_else(|| "?".into());
    let detail = format!("{state} ({size} masters serving slots, {known} nodes known)");
    Finding::new("cluster_state", state == "ok", detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_read_by_exact_name() {
        let info =
            "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:0\r\nredis_mode:standalone\r\n";
        assert_eq!(info_field(info, "redis_version").as_deref(), Some("7.0.15"));
        assert_eq!(
            info_field(info, "redis_mode").as_deref(),
            Some("standalone")
        );
        assert_eq!(info_field(info, "redis"), None);
    }

    #[test]
    fn roles_and_modes_that_serve_no_queue_fail() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert!(
            role(Ok(vec![
                bulk("master"),
                Value::Int(0),
                Value::Array(vec![])
            ]))
            .ok
        );
        let replica = role(Ok(vec![
            bulk("slave"),
            bulk("10.0.0.1"),
            Value::Int(6379),
            bulk("connected"),
            Value::Int(1),
        ]));
        assert!(replica.ok);
        assert_eq!(
            replica.detail,
            "replica of 10.0.0.1:6379 (link connected): values may lag the master"
        );
        assert!(!role(Ok(vec![bulk("sentinel"), Value::Array(vec![])])).ok);
        assert!(!mode(&Ok("redis_mode:cluster".into()), "standalone").ok);
        assert!(mode(&Ok("redis_mode:standalone".into()), "standalone").ok);
        assert!(!cluster_state(Ok("cluster_state:fail\r\ncluster_size:3".into())).ok);
        assert!(cluster_state(Ok("cluster_state:ok\r\ncluster_size:3".into())).ok);
    }
}
