//! The throwaway servers: a temporary directory, redis-server and a PostgreSQL cluster on
//! free loopback ports, and the sample config naming them.

use std::{
    ffi::CStr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use futures::future::join_all;
use tempfile::TempDir;
use tokio::time::Instant;

use super::{
    INSTALL_HINT, START_TIMEOUT,
    daemon::{Daemon, log_file},
    free_port, workload,
};

/// Everything start-up made: the server processes and their directory. `run` owns it from
/// before start-up begins, so a signal in the middle of start-up still stops what was started
/// (awaited, in order) before the directory goes.
#[derive(Default)]
pub(super) struct Started {
    daemons: Vec<Daemon>,
    workdir: Option<TempDir>,
}

impl Started {
    /// Stops every server and waits for it, then removes the directory; the directory's path
    /// when there was one.
    pub(super) async fn stop(mut self) -> Result<Option<PathBuf>, String> {
        join_all(self.daemons.iter_mut().map(Daemon::stop)).await;
        let Some(workdir) = self.workdir.take() else {
            return Ok(None);
        };
        let path = workdir.path().to_path_buf();
        workdir
            .close()
            .map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
        Ok(Some(path))
    }

    /// Starts a server and keeps it, so [`Started::stop`] stops it.
    fn spawn(
        &mut self,
        name: &'static str,
        command: Command,
        stop_signal: libc::c_int,
        log: PathBuf,
    ) -> Result<&mut Daemon, String> {
        self.daemons
            .push(Daemon::spawn(name, command, stop_signal, log)?);
        Ok(self.daemons.last_mut().expect("just pushed"))
    }
}

/// Where the running backends are. [`Started`] owns them.
pub(super) struct Environment {
    pub(super) dir: PathBuf,
    redis_port: u16,
    redis_pid: u32,
    postgres_port: u16,
    postgres_pid: u32,
}

impl Environment {
    /// Starts the servers into `started`: what is there when this fails (or is dropped
    /// part-way) is what the caller must stop.
    pub(super) async fn start(started: &mut Started) -> Result<Environment, String> {
        let redis_server = find_binary("redis-server")?;
        let initdb = find_binary("initdb")?;
        let postgres = find_binary("postgres")?;
        let user = ServerUser::current()?;
        let workdir = create_workdir()?;
        let dir = workdir.path().to_path_buf();
        started.workdir = Some(workdir);
        let (redis_port, redis_pid) = start_redis(&redis_server, &dir, started).await?;
        let pg_dir = subdir(&dir, "postgres", user.ids)?;
        let data = pg_dir.join("data");
        run_initdb(&initdb, &data, &pg_dir, &user, started).await?;
        let (postgres_port, postgres_pid) =
            start_postgres(&postgres, &data, &pg_dir, &user, started).await?;
        let environment = Environment {
            dir,
            redis_port,
            redis_pid,
            postgres_port,
            postgres_pid,
        };
        environment.prepare_postgres().await?;
        Ok(environment)
    }

    /// pg_stat_statements, and Dagster-shaped run tables for the dagster-runs sample.
    async fn prepare_postgres(&self) -> Result<(), String> {
        let url = self.postgres_url("backlog-scaler-dev");
        let deadline = Instant::now() + START_TIMEOUT;
        let (client, connection) = loop {
            match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                Ok(connected) => break connected,
                Err(error) if Instant::now() >= deadline => {
                    return Err(format!("postgres does not accept sessions: {error}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        // The session's I/O runs beside the statements and ends when the client is dropped.
        let prepared = async move {
            let prepared = client.batch_execute(workload::SCHEMA_SQL).await;
            drop(client);
            prepared
        };
        let (prepared, _) = tokio::join!(prepared, connection);
        prepared.map_err(|e| format!("preparing the database: {e}"))
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
            dir = self.dir.display(),
            redis = self.redis_port,
            redis_pid = self.redis_pid,
            pg = self.postgres_port,
            pg_pid = self.postgres_pid,
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
        let folders = entries.flatten().map(|e| e.path()).collect();
        candidates.extend(
            newest_first(folders)
                .into_iter()
                .map(|p| p.join("bin").join(name)),
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

/// PostgreSQL's version folders (`…/16`, `…/9.6`), the newest first, compared as dotted
/// numbers (as text "9.6" sorts after "16"); anything else is left out.
fn newest_first(folders: Vec<PathBuf>) -> Vec<PathBuf> {
    let version = |path: &PathBuf| -> Option<Vec<u32>> {
        let name = path.file_name()?.to_str()?;
        name.split('.').map(|part| part.parse().ok()).collect()
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = folders
        .into_iter()
        .filter_map(|path| Some((version(&path)?, path)))
        .collect();
    versions.sort();
    versions.into_iter().rev().map(|(_, path)| path).collect()
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
        postgres_ids()
            .map(|ids| ServerUser { ids: Some(ids) })
            .ok_or_else(|| {
                format!(
                    "running as root, PostgreSQL needs the `postgres` user (made by its package); \
                     {INSTALL_HINT}"
                )
            })
    }
}

/// The `postgres` user's `(uid, gid)` from the system's user database (files, LDAP, whatever
/// NSS is set up with), or `None` when there is no such user.
fn postgres_ids() -> Option<(u32, u32)> {
    const NAME: &CStr = c"postgres";
    // Large enough for any passwd entry glibc hands out (its own default is 1 KiB).
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: `passwd` is plain old data; getpwnam_r fills it in.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: NAME is NUL-terminated, `buffer` is
    // `buffer.len()` bytes, `entry` and `found` are live locals. The reentrant variant keeps
    // its strings in `buffer`, so no static state is shared with other threads.
    let code = unsafe {
        libc::getpwnam_r(
            NAME.as_ptr(),
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    (code == 0 && !found.is_null()).then_some((entry.pw_uid, entry.pw_gid))
}

/// A new temporary directory, traversable by the postgres user when running as root (it
/// holds no secret). Removed with everything in it by [`Started::stop`].
fn create_workdir() -> Result<TempDir, String> {
    // The pid in the name tells whose directory it is.
    let workdir = tempfile::Builder::new()
        .prefix(&format!("backlog-scaler-dev-{}-", std::process::id()))
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    std::fs::set_permissions(
        workdir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .map_err(|e| format!("cannot open up {}: {e}", workdir.path().display()))?;
    Ok(workdir)
}

/// A subdirectory of `dir`, owned by `owner` when given.
fn subdir(dir: &Path, name: &str, owner: Option<(u32, u32)>) -> Result<PathBuf, String> {
    let path = dir.join(name);
    std::fs::create_dir(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))
            .map_err(|e| format!("cannot hand {} to the postgres user: {e}", path.display()))?;
    }
    Ok(path)
}

/// redis-server on a free port, without persistence; its port and pid.
async fn start_redis(
    binary: &Path,
    dir: &Path,
    started: &mut Started,
) -> Result<(u16, u32), String> {
    let redis_dir = subdir(dir, "redis", None)?;
    let port = free_port();
    let mut command = Command::new(binary);
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(&redis_dir)
        .arg("--logfile")
        .arg(redis_dir.join("redis.log"))
        .stderr(Stdio::null());
    let redis = started.spawn(
        "redis-server",
        command,
        libc::SIGTERM,
        redis_dir.join("redis.log"),
    )?;
    redis.wait_for_port(port).await?;
    Ok((port, redis.pid()))
}

/// A new PostgreSQL cluster in `data`, trusting local sessions.
async fn run_initdb(
    binary: &Path,
    data: &Path,
    pg_dir: &Path,
    user: &ServerUser,
    started: &mut Started,
) -> Result<(), String> {
    // initdb runs the server in bootstrap mode as its child: as a group, both are stopped if
    // dev is.
    let log = pg_dir.join("initdb.log");
    let mut command = Command::new(binary);
    command
        .arg("-D")
        .arg(data)
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8"])
        .args(["--no-sync", "--no-instructions"]);
    if let Some((uid, gid)) = user.ids {
        command.uid(uid).gid(gid);
    }
    command.stderr(log_file(&log)?);
    started
        .spawn("initdb", command, libc::SIGKILL, log)?
        .wait_for_exit()
        .await
}

/// PostgreSQL on a free port, with pg_stat_statements and without durability; its port and
/// pid.
async fn start_postgres(
    binary: &Path,
    data: &Path,
    pg_dir: &Path,
    user: &ServerUser,
    started: &mut Started,
) -> Result<(u16, u32), String> {
    let port = free_port();
    let log = pg_dir.join("postgres.log");
    let mut command = Command::new(binary);
    command.arg("-D").arg(data).args(["-p", &port.to_string()]);
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
    let postgres = started.spawn("postgres", command, libc::SIGINT, log)?;
    postgres.wait_for_port(port).await?;
    Ok((port, postgres.pid()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_versions_are_compared_as_dotted_numbers() {
        let folders = ["9.6", "16", "13", "README", "15.2"]
            .map(|v| PathBuf::from("/usr/lib/postgresql").join(v))
            .to_vec();
        let names: Vec<String> = newest_first(folders)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["16", "15.2", "13", "9.6"]);
    }
}
