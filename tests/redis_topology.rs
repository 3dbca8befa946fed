//! Redis topologies end to end: Redis Cluster (keys across slots, a migrated slot), Sentinel
//! (a forced failover), TLS with a CA made in the test, ACL credentials, and a node outage.

mod common;

use std::{
    collections::HashMap,
    process::Command,
    time::{Duration, Instant},
};

use backlog_scaler::proto::GetMetricsRequest;
use common::{
    RedisServer, Scaler,
    redis_topology::{RedisCluster, SentinelSetup},
    scaled_object,
};
use tonic::{Code, Status};

async fn value(scaler: &Scaler, source: &str, keys: &str) -> Result<f64, Status> {
    common::metric_value(scaler, source, &[("metric", "redis-list"), ("keys", keys)]).await
}

async fn eventually(scaler: &Scaler, source: &str, keys: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let got = value(scaler, source, keys).await;
        if got.as_ref().ok() == Some(&want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{source} {keys}: wanted {want}, last {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn push(url: &str, key: &str, n: usize) {
    let client = redis::cluster::ClusterClient::new(vec![url]).ok();
    let items: Vec<String> = (0..n).map(|i| format!("job-{i}")).collect();
    if let Some(Ok(mut connection)) = match &client {
        Some(client) => Some(client.get_async_connection().await),
        None => None,
    } {
        let _: () = redis::AsyncCommands::rpush(&mut connection, key, items)
            .await
            .unwrap();
    }
}

fn cluster_config(urls: &[String]) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "[sources.redis-cluster]\ntype = \"redis-cluster\"\nurls = [{}]\n",
        urls.join(", ")
    )
}

async fn llen_calls(node: &RedisServer) -> u64 {
    node.command_calls().await.get("llen").copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_sums_keys_across_slots_and_follows_a_migrated_slot() {
    let cluster = RedisCluster::start().await;
    let urls = cluster.urls();
    let keys = ["jobs:a", "jobs:b", "jobs:c", "jobs:d", "jobs:e", "jobs:f"];
    for (i, key) in keys.iter().enumerate() {
        push(&urls[0], key, i + 1).await;
    }
    // The keys really are spread over the nodes.
    let mut owners = std::collections::HashSet::new();
    for key in keys {
        owners.insert(cluster.owner(key).await.0);
    }
    assert!(owners.len() >= 2, "keys on one node only");
    let config = cluster_config(&urls);
    let scaler = Scaler::start(&config).await;
    let all = keys.join(",");
    assert_eq!(value(&scaler, "redis-cluster", &all).await.unwrap(), 21.0);

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
    push(&urls[0], "jobs:a", 10).await;
    eventually(&scaler, "redis-cluster", &all, 31.0).await;
    assert!(
        llen_calls(&cluster.nodes[target]).await > target_calls,
        "reads went to the new owner"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_node_outage_is_unavailable_then_recovers() {
    let mut cluster = RedisCluster::start().await;
    let urls = cluster.urls();
    push(&urls[0], "outage:q", 4).await;
    let config = cluster_config(&urls);
    let scaler = Scaler::start(&config).await;
    assert_eq!(
        value(&scaler, "redis-cluster", "outage:q").await.unwrap(),
        4.0
    );
    let (owner, _) = cluster.owner("outage:q").await;
    cluster.nodes[owner].stop();
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let started = Instant::now();
        let answer = value(&scaler, "redis-cluster", "outage:q").await;
        assert!(
            started.elapsed() <= Duration::from_secs(2),
            "answered in {:?}",
            started.elapsed()
        );
        match answer {
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(status.message().contains("redis-cluster"), "{status:?}");
                break;
            }
            Ok(_) => {
                assert!(Instant::now() < deadline, "the outage was never reported");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    cluster.nodes[owner].resume();
    cluster.wait_until_ok().await;
    // The node restarted empty (no persistence): the list is gone, and the scaler says so.
    eventually(&scaler, "redis-cluster", "outage:q", 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_is_followed_without_restart() {
    let setup = SentinelSetup::start().await;
    let mut master = setup.master.connection().await;
    let _: () = redis::AsyncCommands::rpush(&mut master, "tasks", vec!["a", "b", "c"])
        .await
        .unwrap();
    let config = format!(
        "[sources.redis-ha]\ntype = \"redis-sentinel\"\nurls = [\"{}\"]\nmaster = \"mymaster\"\n",
        setup.sentinel_url()
    );
    let scaler = Scaler::start(&config).await;
    eventually(&scaler, "redis-ha", "tasks", 3.0).await;

    setup.failover().await;
    let mut promoted = setup.replica.connection().await;
    let _: () = redis::AsyncCommands::rpush(&mut promoted, "tasks", vec!["d", "e"])
        .await
        .unwrap();
    eventually(&scaler, "redis-ha", "tasks", 5.0).await;
    let before = llen_calls(&setup.replica).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        llen_calls(&setup.replica).await > before,
        "the scaler reads the new master"
    );

    // An unknown master name is a clear error.
    let wrong = Scaler::start(&format!(
        "[sources.redis-ha]\ntype = \"redis-sentinel\"\nurls = [\"{}\"]\nmaster = \"nosuchmaster\"\n",
        setup.sentinel_url()
    ))
    .await;
    let status = value(&wrong, "redis-ha", "tasks").await.unwrap_err();
    assert!(status.message().contains("nosuchmaster"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_file_and_a_wrong_ca_is_unavailable() {
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
    assert_eq!(value(&scaler, "redis-tls", "secure:q").await.unwrap(), 2.0);
    let started = Instant::now();
    let status = value(&scaler, "redis-wrong-ca", "secure:q")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("redis-wrong-ca"), "{status:?}");
    assert!(started.elapsed() <= Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_credentials_from_file_and_environment() {
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
    let _: () = redis::AsyncCommands::rpush(&mut admin, "acl:q", vec!["x"; 6])
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("password"), "s3cret\n").unwrap();
    let config = format!(
        "[sources.redis-acl]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{port}/0\"\nusername = \"scaler\"\n\
         password_file = \"{file}\"\n\
         [sources.redis-noauth]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{port}/0\"\n",
        port = server.port,
        file = dir.path().join("password").display()
    );
    let scaler = Scaler::start(&config).await;
    assert_eq!(value(&scaler, "redis-acl", "acl:q").await.unwrap(), 6.0);
    let status = value(&scaler, "redis-noauth", "acl:q").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(!status.message().contains("s3cret"));

    // The same through the binary, with the password in an environment variable.
    let grpc_port = common::free_port();
    let config_path = dir.path().join("scaler.toml");
    std::fs::write(
        &config_path,
        format!(
            "[server]\ngrpc_listen = \"127.0.0.1:{grpc_port}\"\n\
             [sources.redis-main]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{}/0\"\n\
             username = \"scaler\"\npassword_env = \"SCALER_REDIS_PASSWORD\"\n",
            server.port
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_backlog-scaler"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .envs(HashMap::from([("SCALER_REDIS_PASSWORD", "s3cret")]))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _guard = common::ChildGuard(child);
    common::wait_for_port(grpc_port, "backlog-scaler", Duration::from_secs(10));
    let mut client = backlog_scaler::proto::external_scaler_client::ExternalScalerClient::connect(
        format!("http://127.0.0.1:{grpc_port}"),
    )
    .await
    .unwrap();
    let pairs = [
        ("source", "redis-main"),
        ("metric", "redis-list"),
        ("keys", "acl:q"),
        ("target", "1"),
    ];
    let response = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(scaled_object(&pairs)),
            metric_name: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(response.into_inner().metric_values[0].metric_value, 6);
}
