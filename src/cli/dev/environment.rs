//! The throwaway servers: a temporary directory, redis-server and a PostgreSQL cluster on
//! free loopback ports, and the sample config naming them.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use tokio::time::Instant;

use super::{
    INSTALL_HINT, START_TIMEOUT,
    daemon::{Daemon, log_file},
    free_port, workload,
};

/// The running backends and their directory. Fields drop in order: the servers stop before
/// their directory is removed.
pub(super) struct Environment {
    redis: Daemon,
    postgres: Daemon,
    pub(super) workdir: Workdir,
    redis_port: u16,
    postgres_port: u16,
}

impl Environment {
    pub(super) async fn start() -> Result<Environment, String> {
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

    pub(super) fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.redis_port)
    }

    pub(super) fn postgres_url(&self, application_name: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable&application_name={application_name}",
            self.postgres_port
        )
    }

    /// The sample config: the two sources under the names k8s/base uses.
    pub(super) fn config(&self, grpc_port: u16, http_port: u16) -> String {
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
    pub(super) fn intro(
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
pub(super) struct Workdir {
    pub(super) path: PathBuf,
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
