//! Redis topologies end to end: Redis Cluster (keys across slots, a migrated slot), Sentinel
//! (a forced failover), TLS with a CA made in the test, ACL credentials, and a node outage.

use crate::common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::{
    ANSWER_WITHIN, RedisServer, SETTLES_WITHIN, Scaler, ScalerProcess, assert_outage_reported,
    assert_recovers_to, poll_until, push,
    redis_topology::{RedisCluster, SentinelSetup},
    trigger_value, trigger_value_until,
};
use tonic::Code;

/// A `redis-list` trigger on `keys`.
fn list(keys: &str) -> [(&'static str, &str); 2] {
    [("metric", "redis-list"), ("keys", keys)]
}

async fn llen_calls(node: &RedisServer) -> u64 {
    node.command_calls().await.get("llen").copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_sums_keys_across_slots_and_follows_a_migrated_slot() {
    let cluster = RedisCluster::start().await;
    let mut connection = cluster.connection().await;
    let keys = ["jobs:a", "jobs:b", "jobs:c", "jobs:d", "jobs:e", "jobs:f"];
    for (i, key) in keys.iter().enumerate() {
        push(&mut connection, key, i + 1).await;
    }
    // The keys really are spread over the nodes.
    let mut owners = std::collections::HashSet::new();
    for key in keys {
        owners.insert(cluster.owner(key).await.0);
    }
    assert!(owners.len() >= 2, "keys on one node only");
    let scaler = Scaler::start(&cluster.source_config("redis-cluster")).await;
    let all = keys.join(",");
    assert_eq!(
        trigger_value(&scaler, "redis-cluster", &list(&all))
            .await
            .unwrap(),
        21.0
    );

    // One refresh sends one LLEN per key, pipelined per slot: count LLENs over a few seconds.
    let before: u64 = futures::future::join_all(cluster.nodes.iter().map(llen_calls))
        .await
        .iter()
        .sum();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after: u64 = futures::future::join_all(cluster.nodes.iter().map(llen_calls))
        .await
        .iter()
        .sum();
    let refreshes = started.elapsed().as_secs_f64();
    let per_refresh = (after - before) as f64 / refreshes;
    assert!(
        per_refresh <= keys.len() as f64 * 1.5,
        "{per_refresh} LLEN per refresh for {} keys",
        keys.len()
    );

    // Reshard: move the slot of jobs:a to another node; the scaler follows MOVED.
    let (owner, _) = cluster.owner("jobs:a").await;
    let target = (owner + 1) % 3;
    let target_calls = llen_calls(&cluster.nodes[target]).await;
    cluster.migrate_slot_of("jobs:a", target).await;
    assert_eq!(cluster.owner("jobs:a").await.0, target);
    push(&mut connection, "jobs:a", 10).await;
    trigger_value_until(&scaler, "redis-cluster", &list(&all), |v| v == 31.0).await;
    assert!(
        llen_calls(&cluster.nodes[target]).await > target_calls,
        "reads went to the new owner"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_node_outage_is_unavailable_then_recovers() {
    let mut cluster = RedisCluster::start().await;
    push(&mut cluster.connection().await, "outage:q", 4).await;
    let scaler = Scaler::start(&cluster.source_config("redis-cluster")).await;
    let queue = list("outage:q");
    assert_eq!(
        trigger_value(&scaler, "redis-cluster", &queue)
            .await
            .unwrap(),
        4.0
    );
    let (owner, _) = cluster.owner("outage:q").await;
    cluster.nodes[owner].stop();
    assert_outage_reported(&scaler, "redis-cluster", &queue, 4.0).await;
    cluster.nodes[owner].resume();
    cluster.wait_until_ok().await;
    // The node restarted empty (no persistence): the list is gone, and the scaler says so.
    assert_recovers_to(&scaler, "redis-cluster", &queue, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_is_followed_without_restart_and_an_unknown_master_is_named() {
    let setup = SentinelSetup::start().await;
    push(&mut setup.master.connection().await, "tasks", 3).await;
    let scaler = Scaler::start(&setup.source_config("redis-ha", "mymaster")).await;
    let tasks = list("tasks");
    trigger_value_until(&scaler, "redis-ha", &tasks, |v| v == 3.0).await;

    setup.failover().await;
    push(&mut setup.replica.connection().await, "tasks", 2).await;
    trigger_value_until(&scaler, "redis-ha", &tasks, |v| v == 5.0).await;
    // The scaler reads the new master: its LLEN count grows with the refreshes.
    let before = llen_calls(&setup.replica).await;
    poll_until(
        "the scaler reads the new master",
        SETTLES_WITHIN,
        async || llen_calls(&setup.replica).await,
        |calls| *calls > before,
    )
    .await;

    // An unknown master name is a clear error.
    let wrong = Scaler::start(&setup.source_config("redis-ha", "nosuchmaster")).await;
    let status = trigger_value(&wrong, "redis-ha", &tasks).await.unwrap_err();
    assert!(status.message().contains("nosuchmaster"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_trusts_the_configured_ca_and_a_wrong_ca_is_unavailable() {
    let certs = tempfile::tempdir().unwrap();
    common::make_certificates(certs.path(), "good");
    // A second CA that did not sign the server's certificate.
    let other = tempfile::tempdir().unwrap();
    common::make_certificates(other.path(), "other");
    let port = common::free_port();
    let path = |name: &str| certs.path().join(name).display().to_string();
    let _server = RedisServer::start_on(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &path("server.crt"),
            "--tls-key-file",
            &path("server.key"),
            "--tls-ca-cert-file",
            &path("good-ca.pem"),
            "--tls-auth-clients",
            "no",
        ],
    );
    let output = Command::new("redis-cli")
        .args([
            "--tls",
            "--cacert",
            &path("good-ca.pem"),
            "-h",
            "localhost",
            "-p",
            &port.to_string(),
        ])
        .args(["RPUSH", "secure:q", "a", "b"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let scaler = Scaler::start(&format!(
        "[sources.redis-tls]\ntype = \"redis\"\nurl = \"rediss://localhost:{port}/0\"\ntls_ca_file = \"{}\"\n\
         [sources.redis-wrong-ca]\ntype = \"redis\"\nurl = \"rediss://localhost:{port}/0\"\ntls_ca_file = \"{}\"\n",
        path("good-ca.pem"),
        other.path().join("other-ca.pem").display()
    ))
    .await;
    let queue = list("secure:q");
    assert_eq!(
        trigger_value(&scaler, "redis-tls", &queue).await.unwrap(),
        2.0
    );
    let started = Instant::now();
    let status = trigger_value(&scaler, "redis-wrong-ca", &queue)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("redis-wrong-ca"), "{status:?}");
    assert!(
        started.elapsed() <= ANSWER_WITHIN,
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_password_from_a_file_or_the_environment_works_and_errors_never_show_one() {
    let server =
        RedisServer::start_with(&["--user", "default", "on", ">adminpw", "~*", "&*", "+@all"]);
    // The `scaler` user may only read.
    let admin_url = format!("redis://default:adminpw@127.0.0.1:{}/0", server.port);
    let mut admin = redis::Client::open(admin_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER", "scaler", "on", ">s3cret", "~*", "+@read", "+ping",
        ])
        .query_async(&mut admin)
        .await
        .unwrap();
    push(&mut admin, "acl:q", 6).await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("password"), "s3cret\n").unwrap();
    let config = format!(
        "[sources.redis-acl]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{port}/0\"\nusername = \"scaler\"\n\
         password_file = \"{file}\"\n\
         [sources.redis-noauth]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{port}/0\"\n\
         [sources.redis-wrong-password]\ntype = \"redis\"\n\
         url = \"redis://scaler:wr0ng-pw-secret@127.0.0.1:{port}/0\"\n",
        port = server.port,
        file = dir.path().join("password").display()
    );
    let scaler = Scaler::start(&config).await;
    let queue = list("acl:q");
    assert_eq!(
        trigger_value(&scaler, "redis-acl", &queue).await.unwrap(),
        6.0
    );
    let status = trigger_value(&scaler, "redis-noauth", &queue)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // A rejected password is UNAVAILABLE naming the source, and the password is not in it.
    let status = trigger_value(&scaler, "redis-wrong-password", &queue)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("redis-wrong-password"),
        "{status:?}"
    );
    assert!(!status.message().contains("wr0ng-pw-secret"), "{status:?}");

    // The same through the binary, with the password in an environment variable.
    let grpc_port = common::free_port();
    let mut process = ScalerProcess::spawn(
        &format!(
            "[server]\ngrpc_listen = \"127.0.0.1:{grpc_port}\"\n\
             [sources.redis-main]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{}/0\"\n\
             username = \"scaler\"\npassword_env = \"SCALER_REDIS_PASSWORD\"\n",
            server.port
        ),
        &[("SCALER_REDIS_PASSWORD", "s3cret")],
    );
    let address = process.wait_until_listening(grpc_port);
    assert_eq!(
        trigger_value(&address, "redis-main", &queue).await.unwrap(),
        6.0
    );
}
