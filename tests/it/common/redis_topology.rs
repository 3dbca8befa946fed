//! Throwaway Redis topologies: a 3-master Redis Cluster and a master + replica + Sentinel,
//! built from `redis-server` / `redis-sentinel` processes on free loopback ports.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use super::{ChildGuard, RedisServer, poll_until, require_binary, wait_for_port};

/// How long a cluster takes to agree on its slots, or a Sentinel to see a replica or fail
/// over (its down-after is 2 s): seconds, so 20 s only bounds a broken setup.
const TOPOLOGY_SETTLES_WITHIN: Duration = Duration::from_secs(20);

/// A free port whose cluster bus port (+10000) is valid and free too.
pub fn free_cluster_port() -> u16 {
    loop {
        let port = super::free_port();
        if port < 55000 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

async fn command<T: redis::FromRedisValue>(url: &str, args: &[&str]) -> redis::RedisResult<T> {
    let mut connection = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(&mut connection).await
}

/// Three masters sharing the 16384 slots.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        Self::start_with(&[]).await
    }

    /// Starts with extra `redis-server` arguments for every node.
    pub async fn start_with(extra_args: &[&str]) -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = free_cluster_port();
            let mut args = vec![
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ];
            args.extend_from_slice(extra_args);
            nodes.push(RedisServer::start_on(port, &args));
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let output = Command::new(require_binary("redis-cli"))
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("running redis-cli --cluster create");
        assert!(
            output.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_until_ok().await;
        cluster
    }

    /// Waits until every node says `cluster_state:ok`.
    pub async fn wait_until_ok(&self) {
        for node in &self.nodes {
            poll_until(
                format!("node {} reports cluster_state:ok", node.port),
                TOPOLOGY_SETTLES_WITHIN,
                async || command::<String>(&node.url(), &["CLUSTER", "INFO"]).await,
                |info| info.as_ref().is_ok_and(|i| i.contains("cluster_state:ok")),
            )
            .await
            .expect("polled until it answered");
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// A cluster connection for arranging test data.
    pub async fn connection(&self) -> redis::cluster_async::ClusterConnection {
        redis::cluster::ClusterClient::new(self.urls())
            .unwrap()
            .get_async_connection()
            .await
            .expect("connecting to the test cluster")
    }

    /// A scaler config source named `name` of type `redis-cluster` on this cluster.
    pub fn source_config(&self, name: &str) -> String {
        let urls: Vec<String> = self.urls().iter().map(|u| format!("\"{u}\"")).collect();
        format!(
            "[sources.{name}]\ntype = \"redis-cluster\"\nurls = [{}]\n",
            urls.join(", ")
        )
    }

    /// The node that owns `key`'s slot, and its node id.
    pub async fn owner(&self, key: &str) -> (usize, String) {
        let slot: i64 = command(&self.nodes[0].url(), &["CLUSTER", "KEYSLOT", key])
            .await
            .unwrap();
        for (index, node) in self.nodes.iter().enumerate() {
            let nodes: String = command(&node.url(), &["CLUSTER", "NODES"]).await.unwrap();
            let myself = nodes.lines().find(|l| l.contains("myself")).unwrap();
            let id = myself.split(' ').next().unwrap().to_string();
            let owns = myself.split(' ').skip(8).any(|range| {
                let (from, to) = range.split_once('-').unwrap_or((range, range));
                match (from.parse::<i64>(), to.parse::<i64>()) {
                    (Ok(from), Ok(to)) => (from..=to).contains(&slot),
                    _ => false,
                }
            });
            if owns {
                return (index, id);
            }
        }
        panic!("no node owns the slot of {key}");
    }

    pub async fn node_id(&self, index: usize) -> String {
        let nodes: String = command(&self.nodes[index].url(), &["CLUSTER", "NODES"])
            .await
            .unwrap();
        nodes
            .lines()
            .find(|l| l.contains("myself"))
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    }

    /// Moves the slot of `key` (with its keys) from its owner to node `to`, as resharding does.
    pub async fn migrate_slot_of(&self, key: &str, to: usize) {
        let (from, from_id) = self.owner(key).await;
        assert_ne!(from, to);
        let to_id = self.node_id(to).await;
        let slot: i64 = command(&self.nodes[0].url(), &["CLUSTER", "KEYSLOT", key])
            .await
            .unwrap();
        let slot = slot.to_string();
        let to_url = self.nodes[to].url();
        let from_url = self.nodes[from].url();
        let _: () = command(
            &to_url,
            &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id],
        )
        .await
        .unwrap();
        let _: () = command(
            &from_url,
            &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id],
        )
        .await
        .unwrap();
        let keys: Vec<String> = command(&from_url, &["CLUSTER", "GETKEYSINSLOT", &slot, "1000"])
            .await
            .unwrap();
        let port = self.nodes[to].port.to_string();
        for key in &keys {
            let _: () = command(
                &from_url,
                &["MIGRATE", "127.0.0.1", &port, key, "0", "5000"],
            )
            .await
            .unwrap();
        }
        for node in &self.nodes {
            let _: () = command(&node.url(), &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id])
                .await
                .unwrap();
        }
    }
}

/// A master, a replica and one Sentinel (quorum 1) watching `mymaster`.
pub struct SentinelSetup {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinel_port: u16,
    _dir: tempfile::TempDir,
    _sentinel: ChildGuard,
}

/// One `redis-sentinel` (quorum 1, down-after 2 s) watching the master on `master_port` as
/// `mymaster`: its temp dir, port and process.
fn spawn_sentinel(master_port: u16) -> (tempfile::TempDir, u16, ChildGuard) {
    let dir = tempfile::tempdir().unwrap();
    let sentinel_port = super::free_port();
    let config = dir.path().join("sentinel.conf");
    std::fs::write(
        &config,
        format!(
            "port {sentinel_port}\nbind 127.0.0.1\ndir {dir}\n\
             sentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
             sentinel down-after-milliseconds mymaster 2000\n\
             sentinel failover-timeout mymaster 10000\n",
            dir = dir.path().display(),
        ),
    )
    .unwrap();
    let sentinel = run_sentinel(dir.path(), sentinel_port);
    (dir, sentinel_port, sentinel)
}

/// Runs `redis-sentinel` with the `sentinel.conf` in `dir` (which names `port`); returns once
/// it listens.
fn run_sentinel(dir: &std::path::Path, port: u16) -> ChildGuard {
    let child = Command::new(require_binary("redis-sentinel"))
        .arg(dir.join("sentinel.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning redis-sentinel");
    let sentinel = ChildGuard(child);
    wait_for_port(port, "redis-sentinel", Duration::from_secs(10));
    sentinel
}

impl SentinelSetup {
    pub async fn start() -> SentinelSetup {
        let master = RedisServer::start();
        let replica =
            RedisServer::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
        let (dir, sentinel_port, sentinel) = spawn_sentinel(master.port);
        let setup = SentinelSetup {
            master,
            replica,
            sentinel_port,
            _dir: dir,
            _sentinel: sentinel,
        };
        // The Sentinel must know the replica (and it must be in sync) before a failover.
        let sentinel_url = setup.sentinel_url();
        poll_until(
            "the Sentinel sees a healthy replica",
            TOPOLOGY_SETTLES_WITHIN,
            async || {
                command::<Vec<std::collections::HashMap<String, String>>>(
                    &sentinel_url,
                    &["SENTINEL", "REPLICAS", "mymaster"],
                )
                .await
            },
            |replicas| {
                replicas.iter().flatten().any(|r| {
                    r.get("master-link-status").map(String::as_str) == Some("ok")
                        && !r
                            .get("flags")
                            .is_some_and(|f| f.contains("down") || f.contains("disconnected"))
                })
            },
        )
        .await
        .expect("polled until it answered");
        setup
    }

    pub fn sentinel_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.sentinel_port)
    }

    /// A scaler config source named `name` of type `redis-sentinel` asking this Sentinel for
    /// the master called `master` (`mymaster` is the one it watches).
    pub fn source_config(&self, name: &str, master: &str) -> String {
        format!(
            "[sources.{name}]\ntype = \"redis-sentinel\"\nurls = [\"{}\"]\nmaster = \"{master}\"\n",
            self.sentinel_url()
        )
    }

    pub async fn master_port(&self) -> u16 {
        let (_, port): (String, u16) = command(
            &self.sentinel_url(),
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"],
        )
        .await
        .unwrap();
        port
    }

    /// Forces a failover and waits until the Sentinel names the replica as master.
    pub async fn failover(&self) {
        let _: () = command(&self.sentinel_url(), &["SENTINEL", "FAILOVER", "mymaster"])
            .await
            .unwrap();
        poll_until(
            format!(
                "the Sentinel names the replica (port {}) master",
                self.replica.port
            ),
            TOPOLOGY_SETTLES_WITHIN,
            async || self.master_port().await,
            |port| *port == self.replica.port,
        )
        .await;
        // The promoted replica accepts writes once it has left read-only replication.
        poll_until(
            "the replica is promoted",
            TOPOLOGY_SETTLES_WITHIN,
            async || command::<Vec<redis::Value>>(&self.replica.url(), &["ROLE"]).await,
            |role| {
                matches!(role.as_deref(), Ok([redis::Value::BulkString(b), ..]) if b == b"master")
            },
        )
        .await
        .expect("polled until it answered");
    }
}

/// A Sentinel watching a master that has no replica: nothing can be promoted, so when the
/// master is frozen or down the Sentinels keep naming it, and the data is only back when it
/// is. For outages of the master behind a `redis-sentinel` source.
pub struct LoneMasterSentinel {
    pub master: RedisServer,
    pub sentinel_port: u16,
    dir: tempfile::TempDir,
    sentinel: Option<ChildGuard>,
}

impl LoneMasterSentinel {
    /// Starts the master with extra `redis-server` arguments, and a Sentinel that knows it.
    pub async fn start_with(master_args: &[&str]) -> LoneMasterSentinel {
        let master = RedisServer::start_with(master_args);
        let (dir, sentinel_port, sentinel) = spawn_sentinel(master.port);
        let setup = LoneMasterSentinel {
            master,
            sentinel_port,
            dir,
            sentinel: Some(sentinel),
        };
        setup.sentinel_names_the_master().await;
        setup
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the Sentinel process itself.
    pub fn freeze_sentinel(&self, frozen: bool) {
        let sentinel = self.sentinel.as_ref().expect("the Sentinel runs");
        sentinel.signal(if frozen { "STOP" } else { "CONT" });
    }

    /// Kills the Sentinel process: connections to its port are refused.
    pub fn kill_sentinel(&mut self) {
        self.sentinel = None;
    }

    /// Starts the Sentinel again on its port, with the state it wrote to its config file;
    /// returns once it names the master.
    pub async fn restart_sentinel(&mut self) {
        self.sentinel = Some(run_sentinel(self.dir.path(), self.sentinel_port));
        self.sentinel_names_the_master().await;
    }

    async fn sentinel_names_the_master(&self) {
        let sentinel_url = format!("redis://127.0.0.1:{}", self.sentinel_port);
        let master_port = self.master.port;
        poll_until(
            "the Sentinel names the master",
            TOPOLOGY_SETTLES_WITHIN,
            async || {
                command::<Option<(String, u16)>>(
                    &sentinel_url,
                    &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"],
                )
                .await
            },
            |answer| matches!(answer, Ok(Some((_, port))) if *port == master_port),
        )
        .await
        .expect("polled until it answered");
    }

    /// A scaler config source named `name` of type `redis-sentinel` for `mymaster`.
    pub fn source_config(&self, name: &str) -> String {
        format!(
            "[sources.{name}]\ntype = \"redis-sentinel\"\nurls = [\"redis://127.0.0.1:{}\"]\n\
             master = \"mymaster\"\n",
            self.sentinel_port
        )
    }
}
