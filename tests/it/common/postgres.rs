//! Throwaway PostgreSQL (with pg_stat_statements) and PgBouncer servers for the tests.
//!
//! PostgreSQL and PgBouncer refuse to run as root, so under root (as in CI) they run as the
//! `postgres` user through `setpriv`, which execs them directly: the child we hold is the
//! server itself, and stopping it stops the server. `initdb` runs once per test process; each
//! server copies that template cluster.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use super::{
    ChildGuard, free_port, poll_until, poll_until_blocking, require_binary, wait_for_port,
};

/// The `postgres` OS user when running as root, else `None` (run as ourselves).
fn server_user() -> Option<(u32, u32)> {
    let uid = Command::new("id").arg("-u").output().expect("running id");
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("running id");
        assert!(
            out.status.success(),
            "running as root needs the `postgres` user to run PostgreSQL; {}",
            super::INSTALL_HINT
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    Some((id("-u"), id("-g")))
}

/// A command for `binary` that runs as the server user.
pub fn server_command(binary: &Path) -> Command {
    match server_user() {
        Some(_) => {
            let mut command = Command::new("setpriv");
            command
                .args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                ])
                .arg(binary);
            command
        }
        None => Command::new(binary),
    }
}

/// Makes `path` (recursively) owned by the server user.
pub fn give_to_server_user(path: &Path) {
    if let Some((uid, gid)) = server_user() {
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "chown {}", path.display());
    }
}

/// A temp dir the server user can use.
pub fn server_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    give_to_server_user(dir.path());
    dir
}

/// One `initdb` per test process.
fn template_cluster() -> &'static Path {
    static TEMPLATE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &TEMPLATE
        .get_or_init(|| {
            let dir = server_dir();
            let data = dir.path().join("data");
            let output = server_command(&require_binary("initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "--no-instructions",
                ])
                .output()
                .expect("running initdb");
            assert!(
                output.status.success(),
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            (dir, data)
        })
        .1
}

/// The role application sessions log in as: the scaler logs in as `postgres`, and leaves that
/// role's statements out of pg-statements, so load that must be measured runs as this one.
pub const APP_ROLE: &str = "app";

/// A throwaway PostgreSQL server with pg_stat_statements loaded and created in `postgres`,
/// and a login role [`APP_ROLE`] for the application's sessions.
pub struct PostgresServer {
    pub port: u16,
    dir: tempfile::TempDir,
    process: Option<ChildGuard>,
    settings: Vec<String>,
}

/// Settings every test server gets: fast and disposable.
const SETTINGS: &[&str] = &[
    "listen_addresses=127.0.0.1",
    "shared_preload_libraries=pg_stat_statements",
    "compute_query_id=on",
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=50",
    "superuser_reserved_connections=3",
];

impl PostgresServer {
    pub async fn start() -> PostgresServer {
        Self::start_with(&[]).await
    }

    /// Starts with extra `-c name=value` settings.
    pub async fn start_with(settings: &[&str]) -> PostgresServer {
        let dir = server_dir();
        let status = Command::new("cp")
            .arg("-a")
            .arg(template_cluster())
            .arg(dir.path().join("data"))
            .status()
            .unwrap();
        assert!(status.success(), "copying the template cluster");
        let mut server = PostgresServer {
            port: free_port(),
            dir,
            process: None,
            settings: SETTINGS
                .iter()
                .chain(settings)
                .map(|s| s.to_string())
                .collect(),
        };
        server.resume().await;
        server
            .execute(
                "postgres",
                &format!("CREATE EXTENSION IF NOT EXISTS pg_stat_statements; CREATE ROLE {APP_ROLE} LOGIN"),
            )
            .await;
        server
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A URL for `database`, as the scaler's config would have it.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// Starts (again) on the same port and data.
    pub async fn resume(&mut self) {
        let mut command = server_command(&require_binary("postgres"));
        command
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.dir.path());
        for setting in &self.settings {
            command.args(["-c", setting]);
        }
        let log = std::fs::File::create(self.dir.path().join("postgres.log")).unwrap();
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning postgres");
        self.process = Some(ChildGuard(child));
        wait_for_port(self.port, "postgres", Duration::from_secs(15));
        poll_until(
            format!("postgres on port {} accepts sessions", self.port),
            Duration::from_secs(15),
            async || {
                tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
                    .await
                    .map(drop)
                    .map_err(|e| format!("{e}; postgres.log: {}", self.log()))
            },
            Result::is_ok,
        )
        .await
        .expect("polled until it connected");
    }

    /// Stops the server (fast shutdown: sessions are cut), as an outage.
    pub fn stop(&mut self) {
        if let Some(mut guard) = self.process.take() {
            let pid = guard.0.id().to_string();
            let _ = Command::new("kill").args(["-INT", &pid]).status();
            let _ = guard.0.wait();
        }
    }

    /// Kills the postmaster and every backend with `SIGKILL`, as a crash or a lost node
    /// would: sessions are cut without a word, and the next [`resume`](Self::resume) runs
    /// crash recovery. (A `SIGKILL` to the postmaster alone would leave its backends running.)
    pub fn kill(&mut self) {
        if let Some(mut guard) = self.process.take() {
            // Stopped first, so that the postmaster forks nothing while its tree is killed.
            guard.signal("STOP");
            guard.signal_tree("KILL");
            let _ = guard.0.wait();
        }
        poll_until_blocking(
            format!("postgres on port {} stops listening", self.port),
            Duration::from_secs(5),
            || std::net::TcpStream::connect(("127.0.0.1", self.port)),
            Result::is_err,
        )
        .expect_err("polled until it was refused");
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the postmaster and every backend: the kernel
    /// still accepts TCP connections, but no session answers, old or new.
    pub fn freeze(&self, frozen: bool) {
        let process = self.process.as_ref().expect("postgres is running");
        process.signal_tree(if frozen { "STOP" } else { "CONT" });
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// A session with `application_name`, its connection driven in the background.
    pub async fn session(&self, database: &str, application_name: &str) -> tokio_postgres::Client {
        let url = format!("{}&application_name={application_name}", self.url(database));
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connecting to the test postgres");
        tokio::spawn(connection);
        client
    }

    /// A session of the application's role ([`APP_ROLE`]) with `application_name`.
    pub async fn app_session(
        &self,
        database: &str,
        application_name: &str,
    ) -> tokio_postgres::Client {
        let url = format!(
            "postgres://{APP_ROLE}@127.0.0.1:{}/{database}?sslmode=disable&application_name={application_name}",
            self.port
        );
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connecting to the test postgres as the application");
        tokio::spawn(connection);
        client
    }

    /// Runs SQL (simple protocol, several statements allowed) as the superuser.
    pub async fn execute(&self, database: &str, sql: &str) {
        self.session(database, "test-harness")
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{sql}: {}",
                    e.as_db_error()
                        .map_or(e.to_string(), |d| d.message().to_string())
                )
            });
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(guard) = self.process.take() {
            // A test that failed while the server was frozen must not leave stopped backends.
            guard.signal_tree("CONT");
            // Immediate shutdown: the postmaster takes its backends with it.
            let _ = Command::new("kill")
                .args(["-QUIT", &guard.0.id().to_string()])
                .status();
            drop(guard);
        }
    }
}

/// A throwaway PgBouncer in transaction pooling mode in front of a [`PostgresServer`].
pub struct PgBouncer {
    pub port: u16,
    _dir: tempfile::TempDir,
    _process: ChildGuard,
}

impl PgBouncer {
    pub fn start(postgres: &PostgresServer) -> PgBouncer {
        let dir = server_dir();
        let port = free_port();
        let config = dir.path().join("pgbouncer.ini");
        std::fs::write(
            dir.path().join("userlist.txt"),
            format!("\"postgres\" \"\"\n\"{APP_ROLE}\" \"\"\n"),
        )
        .unwrap();
        std::fs::write(
            &config,
            format!(
                "[databases]\n* = host=127.0.0.1 port={pg}\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {dir}/userlist.txt\npool_mode = transaction\n\
                 max_client_conn = 200\ndefault_pool_size = 10\nserver_connect_timeout = 1\n\
                 server_login_retry = 1\nquery_wait_timeout = 5\n\
                 logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
                pg = postgres.port,
                dir = dir.path().display()
            ),
        )
        .unwrap();
        give_to_server_user(dir.path());
        let child = server_command(&require_binary("pgbouncer"))
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning pgbouncer");
        let process = ChildGuard(child);
        wait_for_port(port, "pgbouncer", Duration::from_secs(10));
        PgBouncer {
            port,
            _dir: dir,
            _process: process,
        }
    }

    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }
}
