//! `backlog-scaler dev [--duration 10s]`: the scaler against throwaway backends, with work
//! arriving, and what KEDA would see refreshed every second.
//!
//! 1. A temporary directory holds everything: a `redis-server` and a PostgreSQL cluster
//!    (`initdb`, then `postgres` with pg_stat_statements preloaded), started from the local
//!    binaries on free loopback ports, and a sample config naming them `redis-main` and
//!    `pg-main` like `k8s/base` does, so `check` and `eval` of `k8s/examples` work against
//!    them too.
//! 2. The scaler is served in-process with [`server::run`] on 127.0.0.1:9090 (a free port
//!    when 9090 is busy), and the `workload` submodule puts synthetic work in the backends.
//! 3. Every second each sample trigger is read through a real gRPC client (GetMetricSpec once,
//!    then GetMetrics and IsActive) and turned into replicas with KEDA's math
//!    ([`desired_replicas`], min 0, max 10). On a terminal the table is redrawn in place;
//!    otherwise (or with `--duration`) it is printed again each second.
//!
//! Stopping (Ctrl-C, SIGTERM or the end of `--duration`) takes one path: the workload stops,
//! the server drains, PostgreSQL gets a fast shutdown and redis-server a SIGTERM (then their
//! process groups SIGKILL if they linger), each is waited for, and the directory is removed.
//! The servers run in process groups of their own, so a Ctrl-C on the terminal reaches only
//! this process, which stops them in order; and they get a parent-death signal, so even a
//! SIGKILLed `dev` leaves none behind.

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use futures::future::join_all;
use tokio::{sync::oneshot, time::Instant};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::{Exit, columns, number};
use crate::{
    eval::{MetricType, ReplicaLimits, TriggerReading, desired_replicas},
    proto::{GetMetricsRequest, ScaledObjectRef, external_scaler_client::ExternalScalerClient},
    server,
};

mod workload;

/// What `dev` was asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevOptions {
    /// Run this long, print the table each second and stop (for CI); without it, run until
    /// Ctrl-C or SIGTERM.
    pub duration: Option<Duration>,
}

/// The command that installs what `dev` runs (Debian); `scripts/dev.sh` runs it as root.
pub const INSTALL_HINT: &str = "apt-get install -y redis-server postgresql postgresql-contrib \
     (scripts/dev.sh installs them when run as root)";

/// The ports `dev` prefers, as in `config/local.toml` and `k8s/base`.
const GRPC_PORT: u16 = 9090;
const HTTP_PORT: u16 = 8080;

/// KEDA's replica bounds for the table: scale to zero, at most 10.
const LIMITS: ReplicaLimits = ReplicaLimits {
    min_replica_count: 0,
    max_replica_count: 10,
    idle_replica_count: None,
};

// Servers get this long to start: initdb plus a first start of PostgreSQL take 2-4 s on a
// loaded 2-core machine, so 30 s only trips on a real failure.
const START_TIMEOUT: Duration = Duration::from_secs(30);

// A fast shutdown of PostgreSQL with a handful of sessions takes well under a second; past
// this the process group is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// One sample trigger: a label for the table and the metadata a ScaledObject would carry.
struct Sample {
    label: &'static str,
    metadata: &'static [(&'static str, &'static str)],
}

/// The sample triggers, one per kind of work [`workload`] makes.
const SAMPLES: &[Sample] = &[
    Sample {
        label: "jobs (list, bursts)",
        metadata: &[
            ("source", "redis-main"),
            ("metric", "redis-list"),
            ("keys", workload::JOBS_KEY),
            ("target", "10"),
        ],
    },
    Sample {
        label: "celery (priorities)",
        metadata: &[
            ("source", "redis-main"),
            ("metric", "celery"),
            ("queue", workload::CELERY_QUEUE),
            ("target", "5"),
        ],
    },
    Sample {
        label: "events (stream group)",
        metadata: &[
            ("source", "redis-main"),
            ("metric", "redis-stream"),
            ("stream", workload::STREAM_KEY),
            ("group", workload::STREAM_GROUP),
            ("target", "10"),
        ],
    },
    Sample {
        label: "pg sessions (active)",
        metadata: &[
            ("source", "pg-main"),
            ("metric", "pg-activity"),
            ("measure", "active"),
            ("applicationName", workload::APPLICATION_NAME),
            ("target", "1"),
        ],
    },
    Sample {
        label: "pg statements (calls/s)",
        metadata: &[
            ("source", "pg-main"),
            ("metric", "pg-statements"),
            ("measure", "calls-per-second"),
            ("database", "postgres"),
            ("target", "10"),
            ("activationTarget", "1"),
        ],
    },
    Sample {
        label: "dagster runs (queued)",
        metadata: &[
            ("source", "pg-main"),
            ("metric", "dagster-runs"),
            ("statuses", "QUEUED"),
            ("target", "2"),
        ],
    },
];

/// Runs `dev` until `options.duration` ends or `shutdown` resolves (install it with
/// [`super::shutdown_signal`] before calling, so a signal during start-up is not lost).
pub async fn run(options: DevOptions, shutdown: impl std::future::Future<Output = ()>) -> Exit {
    let mut shutdown = std::pin::pin!(shutdown);
    // Dropping a half-built environment (a signal during start-up) stops what it started.
    let environment = tokio::select! {
        started = Environment::start() => match started {
            Ok(environment) => environment,
            Err(message) => {
                eprintln!("backlog-scaler dev: {message}");
                return Exit::Failed;
            }
        },
        _ = &mut shutdown => {
            eprintln!("backlog-scaler dev: stopped while starting; nothing left behind");
            return Exit::Ok;
        }
    };
    let exit = serve(&environment, options, shutdown).await;
    let directory = environment.workdir.path.clone();
    drop(environment);
    println!(
        "stopped: servers stopped and waited for, {} removed",
        directory.display()
    );
    exit
}

/// Serves the scaler, runs the workload and shows the table until it is time to stop.
async fn serve(
    environment: &Environment,
    options: DevOptions,
    mut shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Exit {
    let (listener, grpc_note) = match bind_grpc().await {
        Ok(bound) => bound,
        Err(message) => {
            eprintln!("backlog-scaler dev: {message}");
            return Exit::Failed;
        }
    };
    let grpc = listener
        .local_addr()
        .expect("a bound listener has an address");
    let (http_port, http_note) = preferred_port(HTTP_PORT);
    let config_path = environment.workdir.path.join("config.toml");
    let config_text = environment.config(grpc.port(), http_port);
    let config = std::fs::write(&config_path, &config_text)
        .map_err(|e| format!("cannot write {}: {e}", config_path.display()))
        .and_then(|()| crate::config::Config::from_toml(&config_text).map_err(|e| e.to_string()));
    let config = match config {
        Ok(config) => config,
        Err(message) => {
            eprintln!("backlog-scaler dev: the sample config: {message}");
            return Exit::Failed;
        }
    };

    let (stop_server, server_stopped) = oneshot::channel::<()>();
    let mut server = tokio::spawn(server::run(config, listener, async move {
        let _ = server_stopped.await;
    }));
    let stop_workload = CancellationToken::new();
    let workload = workload::start(
        &environment.redis_url(),
        &environment.postgres_url(workload::APPLICATION_NAME),
        stop_workload.clone(),
    );

    let interactive = options.duration.is_none() && std::io::stdout().is_terminal();
    let intro = environment.intro(grpc, grpc_note, http_port, http_note, &config_path);
    let grpcurl = grpcurl_lines(grpc);
    if !interactive {
        println!("{intro}\n{grpcurl}");
    }
    let mut exit = Exit::Ok;
    let started = Instant::now();
    let deadline = options.duration.map(|d| started + d);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut panel: Option<Panel> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut shutdown => break,
            served = &mut server => {
                eprintln!("backlog-scaler dev: the server stopped: {}", match served {
                    Ok(Ok(())) => "without an error".to_string(),
                    Ok(Err(error)) => format!("{error:#}"),
                    Err(error) => error.to_string(),
                });
                exit = Exit::Failed;
                break;
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if panel.is_none() {
            panel = Panel::connect(grpc).await;
        }
        let table = match panel.as_mut() {
            Some(panel) => panel.table().await,
            None => "connecting to the scaler...\n".to_string(),
        };
        let elapsed = started.elapsed().as_secs();
        let mut stdout = std::io::stdout().lock();
        let _ = if interactive {
            // Home, clear, redraw: a table that updates in place, no TUI library needed.
            write!(
                stdout,
                "\x1b[H\x1b[2J{intro}\n\nt+{elapsed}s, every second (Ctrl-C stops and cleans up)\n{table}\n{grpcurl}"
            )
        } else {
            write!(stdout, "--- t+{elapsed}s\n{table}")
        };
        let _ = stdout.flush();
    }

    stop_workload.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(3), join_all(workload)).await;
    let _ = stop_server.send(());
    if tokio::time::timeout(Duration::from_secs(5), &mut server)
        .await
        .is_err()
    {
        server.abort();
    }
    exit
}

/// 127.0.0.1:9090, or a free port when it is busy (and a note saying so).
async fn bind_grpc() -> Result<(tokio::net::TcpListener, Option<String>), String> {
    match tokio::net::TcpListener::bind(("127.0.0.1", GRPC_PORT)).await {
        Ok(listener) => Ok((listener, None)),
        Err(_) => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| format!("cannot bind a loopback port for gRPC: {e}"))?;
            Ok((
                listener,
                Some(format!("port {GRPC_PORT} is busy, so a free one")),
            ))
        }
    }
}

/// `preferred` if it is free now, else a free port, with a note.
fn preferred_port(preferred: u16) -> (u16, Option<String>) {
    if std::net::TcpListener::bind(("127.0.0.1", preferred)).is_ok() {
        (preferred, None)
    } else {
        (
            free_port(),
            Some(format!("port {preferred} is busy, so a free one")),
        )
    }
}

/// A free loopback port (the OS picks it; another process could take it before the server
/// binds it, and then the server fails loudly).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// The sample triggers as a grpcurl user would send them (the server has reflection).
fn grpcurl_lines(grpc: std::net::SocketAddr) -> String {
    let mut out = String::from("Try it with grpcurl:\n");
    for sample in SAMPLES {
        let metadata: BTreeMap<&str, &str> = sample.metadata.iter().copied().collect();
        let request = serde_json::json!({
            "scaledObjectRef": {"name": "dev", "namespace": "default", "scalerMetadata": metadata}
        });
        out.push_str(&format!(
            "  grpcurl -plaintext -d '{request}' {grpc} externalscaler.ExternalScaler/GetMetrics\n"
        ));
    }
    out
}

// === the table ===

/// The gRPC client and what GetMetricSpec said about each sample.
struct Panel {
    client: ExternalScalerClient<Channel>,
    /// Per sample: the metric name and target, or GetMetricSpec's error.
    specs: Vec<Result<(String, f64), String>>,
}

impl Panel {
    async fn connect(grpc: std::net::SocketAddr) -> Option<Panel> {
        let channel = Channel::from_shared(format!("http://{grpc}"))
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .connect()
            .await
            .ok()?;
        let client = ExternalScalerClient::new(channel);
        let specs = join_all(SAMPLES.iter().map(|sample| {
            let mut client = client.clone();
            async move {
                let spec = client
                    .get_metric_spec(scaled_object(sample))
                    .await
                    .map_err(|s| s.message().to_string())?
                    .into_inner();
                let spec = spec
                    .metric_specs
                    .into_iter()
                    .next()
                    .ok_or_else(|| "GetMetricSpec answered no metric".to_string())?;
                Ok((spec.metric_name, spec.target_size_float))
            }
        }))
        .await;
        Some(Panel { client, specs })
    }

    /// One row per sample, read now.
    async fn table(&mut self) -> String {
        let rows = join_all(
            SAMPLES
                .iter()
                .zip(&self.specs)
                .map(|(sample, spec)| row(self.client.clone(), sample, spec)),
        )
        .await;
        columns(
            &["trigger", "metric", "value", "target", "active", "replicas"],
            &rows,
        )
    }
}

async fn row(
    mut client: ExternalScalerClient<Channel>,
    sample: &Sample,
    spec: &Result<(String, f64), String>,
) -> Vec<String> {
    let (metric_name, target) = match spec {
        Ok(spec) => spec.clone(),
        Err(error) => return vec![sample.label.into(), format!("error: {error}")],
    };
    let request = GetMetricsRequest {
        scaled_object_ref: Some(scaled_object(sample)),
        metric_name: metric_name.clone(),
    };
    let mut activity_client = client.clone();
    let (value, active) = tokio::join!(
        client.get_metrics(request),
        activity_client.is_active(scaled_object(sample))
    );
    let value = match value {
        Ok(response) => response
            .into_inner()
            .metric_values
            .first()
            .map(|v| v.metric_value_float),
        Err(status) => {
            return vec![
                sample.label.into(),
                metric_name,
                format!("{:?}: {}", status.code(), status.message()),
            ];
        }
    };
    let Some(value) = value else {
        return vec![sample.label.into(), metric_name, "no value".into()];
    };
    let active = match active {
        Ok(response) => if response.into_inner().result {
            "yes"
        } else {
            "no"
        }
        .to_string(),
        Err(status) => format!("{:?}", status.code()),
    };
    let activation_target = sample
        .metadata
        .iter()
        .find(|(key, _)| *key == "activationTarget")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0.0);
    let reading = TriggerReading {
        label: sample.label.into(),
        name: None,
        value,
        target,
        activation_target,
        metric_type: MetricType::AverageValue,
    };
    let replicas = match desired_replicas(&[reading], None, LIMITS, None) {
        Ok(decision) => decision.replicas.to_string(),
        Err(error) => error.to_string(),
    };
    vec![
        sample.label.into(),
        metric_name,
        number(value),
        number(target),
        active,
        replicas,
    ]
}

fn scaled_object(sample: &Sample) -> ScaledObjectRef {
    ScaledObjectRef {
        name: "dev".into(),
        namespace: "default".into(),
        scaler_metadata: sample
            .metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

// === the throwaway servers ===

/// The running backends and their directory. Fields drop in order: the servers stop before
/// their directory is removed.
struct Environment {
    redis: Daemon,
    postgres: Daemon,
    workdir: Workdir,
    redis_port: u16,
    postgres_port: u16,
}

impl Environment {
    async fn start() -> Result<Environment, String> {
        let redis_server = find_binary("redis-server")?;
        let initdb = find_binary("initdb")?;
        let postgres = find_binary("postgres")?;
        let user = ServerUser::current()?;
        let workdir = Workdir::create()?;

        let redis_dir = workdir.subdir("redis", None)?;
        let redis_port = free_port();
        let mut command = Command::new(&redis_server);
        command
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&redis_dir)
            .arg("--logfile")
            .arg(redis_dir.join("redis.log"))
            .stderr(Stdio::null());
        let mut redis = Daemon::spawn(
            "redis-server",
            command,
            libc::SIGTERM,
            redis_dir.join("redis.log"),
        )?;
        redis.wait_for_port(redis_port).await?;

        let pg_dir = workdir.subdir("postgres", user.ids)?;
        let data = pg_dir.join("data");
        // initdb runs the server in bootstrap mode as its child: as a group, both are
        // stopped if dev is (its Drop kills the group).
        let initdb_log = pg_dir.join("initdb.log");
        let mut command = Command::new(&initdb);
        command
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8"])
            .args(["--no-sync", "--no-instructions"]);
        if let Some((uid, gid)) = user.ids {
            command.uid(uid).gid(gid);
        }
        command.stderr(log_file(&initdb_log)?);
        let mut initdb = Daemon::spawn("initdb", command, libc::SIGKILL, initdb_log)?;
        initdb.wait_for_exit().await?;
        let postgres_port = free_port();
        let log = pg_dir.join("postgres.log");
        let mut command = Command::new(&postgres);
        command
            .arg("-D")
            .arg(&data)
            .args(["-p", &postgres_port.to_string()]);
        for setting in [
            "listen_addresses=127.0.0.1",
            "unix_socket_directories=",
            "shared_preload_libraries=pg_stat_statements",
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            "max_connections=50",
        ] {
            command.args(["-c", setting]);
        }
        if let Some((uid, gid)) = user.ids {
            command.uid(uid).gid(gid);
        }
        command.stderr(log_file(&log)?);
        // Fast shutdown: sessions are cut, the postmaster waits for its backends, then exits.
        let mut postgres = Daemon::spawn("postgres", command, libc::SIGINT, log)?;
        postgres.wait_for_port(postgres_port).await?;
        let environment = Environment {
            redis,
            postgres,
            workdir,
            redis_port,
            postgres_port,
        };
        environment.prepare_postgres().await?;
        Ok(environment)
    }

    /// pg_stat_statements, and Dagster-shaped run tables for the dagster-runs sample.
    async fn prepare_postgres(&self) -> Result<(), String> {
        let url = self.postgres_url("backlog-scaler-dev");
        let deadline = Instant::now() + START_TIMEOUT;
        let client = loop {
            match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    break client;
                }
                Err(error) if Instant::now() >= deadline => {
                    return Err(format!("postgres does not accept sessions: {error}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        client
            .batch_execute(workload::SCHEMA_SQL)
            .await
            .map_err(|e| format!("preparing the database: {e}"))
    }

    fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.redis_port)
    }

    fn postgres_url(&self, application_name: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable&application_name={application_name}",
            self.postgres_port
        )
    }

    /// The sample config: the two sources under the names k8s/base uses.
    fn config(&self, grpc_port: u16, http_port: u16) -> String {
        format!(
            r#"# Written by `backlog-scaler dev` for its throwaway servers; removed when dev stops.
[server]
grpc_listen = "127.0.0.1:{grpc_port}"
http_listen = "127.0.0.1:{http_port}"
shutdown_grace = "2s"

[sources.redis-main]
type = "redis"
url = "{redis}"

[sources.pg-main]
type = "postgres"
url = "postgres://postgres@127.0.0.1:{pg}/postgres?sslmode=disable"

[sources.pg-main.queries]
dagster_backlog = "SELECT count(*) FROM runs WHERE status IN ('QUEUED','NOT_STARTED')"
"#,
            redis = self.redis_url(),
            pg = self.postgres_port,
        )
    }

    /// Where everything is, and what to try next.
    fn intro(
        &self,
        grpc: std::net::SocketAddr,
        grpc_note: Option<String>,
        http_port: u16,
        http_note: Option<String>,
        config: &Path,
    ) -> String {
        let note = |n: Option<String>| n.map(|n| format!(" ({n})")).unwrap_or_default();
        format!(
            "backlog-scaler dev: throwaway Redis and PostgreSQL, the scaler, and a synthetic workload\n\
             temp dir:     {dir}\n\
             redis-server: 127.0.0.1:{redis} (pid {redis_pid})\n\
             postgres:     127.0.0.1:{pg} (pid {pg_pid})\n\
             gRPC:         {grpc}{grpc_note}\n\
             http_listen:  127.0.0.1:{http_port}{http_note} (/metrics, /healthz, /readyz)\n\
             config:       {config}\n\
             next:         backlog-scaler check --config {config}\n\
             \x20             backlog-scaler eval --config {config} --scaledobject k8s/examples/redis-list.yaml",
            dir = self.workdir.path.display(),
            redis = self.redis_port,
            redis_pid = self.redis.pid(),
            pg = self.postgres_port,
            pg_pid = self.postgres.pid(),
            grpc_note = note(grpc_note),
            http_note = note(http_note),
            config = config.display(),
        )
    }
}

/// A server binary: on PATH, or (PostgreSQL's on Debian) under /usr/lib/postgresql/*/bin,
/// newest version first.
fn find_binary(name: &str) -> Result<PathBuf, String> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .flatten()
            .map(|e| e.path())
            .filter_map(|p| Some((p.file_name()?.to_str()?.parse().ok()?, p)))
            .collect();
        versions.sort();
        candidates.extend(
            versions
                .into_iter()
                .rev()
                .map(|(_, p)| p.join("bin").join(name)),
        );
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join(name)));
    }
    candidates
        .into_iter()
        .find(|path| path.is_file())
        .ok_or_else(|| format!("`{name}` is not installed; {INSTALL_HINT}"))
}

/// PostgreSQL refuses to run as root: then its processes run as the `postgres` user.
struct ServerUser {
    /// `(uid, gid)` to switch to, when running as root.
    ids: Option<(u32, u32)>,
}

impl ServerUser {
    fn current() -> Result<ServerUser, String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(ServerUser { ids: None });
        }
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        passwd
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                match fields.as_slice() {
                    ["postgres", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
                    _ => None,
                }
            })
            .map(|ids| ServerUser { ids: Some(ids) })
            .ok_or_else(|| {
                format!(
                    "running as root, PostgreSQL needs the `postgres` user (made by its package); \
                     {INSTALL_HINT}"
                )
            })
    }
}

/// The temporary directory; removed with everything in it on drop.
struct Workdir {
    path: PathBuf,
}

impl Workdir {
    fn create() -> Result<Workdir, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "backlog-scaler-dev-{}-{nanos:08x}",
            std::process::id()
        ));
        std::fs::create_dir(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let workdir = Workdir { path };
        // Traversable by the postgres user when running as root; it holds no secret.
        std::fs::set_permissions(
            &workdir.path,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .map_err(|e| format!("cannot open up {}: {e}", workdir.path.display()))?;
        Ok(workdir)
    }

    /// A subdirectory, owned by `owner` when given.
    fn subdir(&self, name: &str, owner: Option<(u32, u32)>) -> Result<PathBuf, String> {
        let path = self.path.join(name);
        std::fs::create_dir(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .map_err(|e| format!("cannot hand {} to the postgres user: {e}", path.display()))?;
        }
        Ok(path)
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.path) {
            eprintln!(
                "backlog-scaler dev: cannot remove {}: {error}",
                self.path.display()
            );
        }
    }
}

/// A server process, leader of its own process group, stopped and waited for on drop.
struct Daemon {
    name: &'static str,
    child: Child,
    /// The signal that asks it to stop cleanly.
    stop_signal: libc::c_int,
    log: PathBuf,
}

impl Daemon {
    fn spawn(
        name: &'static str,
        mut command: Command,
        stop_signal: libc::c_int,
        log: PathBuf,
    ) -> Result<Daemon, String> {
        command.stdin(Stdio::null()).stdout(Stdio::null());
        // Its own process group: a Ctrl-C on the terminal reaches only `dev`, which stops the
        // servers in order; and the group can be killed whole.
        command.process_group(0);
        // SAFETY: prctl is async-signal-safe; the closure touches no memory of the parent.
        // It runs after the switch to the server user, which would otherwise clear it.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, stop_signal as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(Daemon {
            name,
            child,
            stop_signal,
            log,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a one-shot command (initdb) exits, and fails with its log unless it
    /// succeeded.
    async fn wait_for_exit(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!(
                        "{} failed ({status}): {}",
                        self.name,
                        tail(&std::fs::read_to_string(&self.log).unwrap_or_default())
                    ));
                }
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(None) => {
                    return Err(format!(
                        "{} did not finish within {START_TIMEOUT:?}",
                        self.name
                    ));
                }
                Err(error) => return Err(format!("waiting for {}: {error}", self.name)),
            }
        }
    }

    /// Waits until the server accepts TCP connections on `port`, or fails with its log.
    async fn wait_for_port(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}) before listening on port {port}: {}",
                    self.name,
                    tail(&std::fs::read_to_string(&self.log).unwrap_or_default())
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not listen on port {port} within {START_TIMEOUT:?}",
                    self.name
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // The whole group: initdb's bootstrap server goes with initdb. (PostgreSQL's backends
        // lead sessions of their own; the postmaster stops them.)
        // SAFETY: kill has no memory effects; `pid` is our child, not yet reaped, and leads
        // its process group.
        unsafe { libc::kill(-pid, self.stop_signal) };
        let deadline = std::time::Instant::now() + STOP_TIMEOUT;
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "backlog-scaler dev: {} did not stop within {STOP_TIMEOUT:?}; killing its process group",
            self.name
        );
        // SAFETY: as above; the negative pid names the group the child leads.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// A log file for a server's stderr.
fn log_file(path: &Path) -> Result<std::fs::File, String> {
    std::fs::File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// The last lines of a log, on one line.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}
