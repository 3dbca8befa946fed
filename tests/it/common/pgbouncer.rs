//! A throwaway PgBouncer whose admin console the scaler logs in to, for the `pgbouncer`
//! source's tests: password authentication (SCRAM), a monitoring user in `stats_users`, an
//! operator in `admin_users`, and a database [`TINY`] whose pool holds one server
//! connection, so a second client waits. It can be killed, frozen and restarted on its port.

use std::{
    collections::HashMap,
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::{
    ChildGuard, free_port,
    postgres::{PostgresServer, give_to_server_user, server_command, server_dir},
    require_binary, wait_for_port,
};

/// A user in `stats_users`: what the scaler should use.
pub const STATS_USER: (&str, &str) = ("scaler_stats", "stats-S3cret-4711");
/// A user in `admin_users`.
pub const ADMIN_USER: (&str, &str) = ("scaler_admin", "admin-S3cret-4711");
/// An application user: may use the databases, not the console.
pub const APP_USER: (&str, &str) = ("postgres", "app-S3cret-4711");
/// A database (PostgreSQL's `postgres`) whose pool holds one server connection.
pub const TINY: &str = "tiny";

pub struct AdminPgBouncer {
    pub port: u16,
    dir: tempfile::TempDir,
    process: Option<ChildGuard>,
}

impl AdminPgBouncer {
    pub fn start(postgres: &PostgresServer) -> AdminPgBouncer {
        Self::start_with(postgres, &[])
    }

    /// Starts with extra `[pgbouncer]` settings (`"client_tls_sslmode = require"`, …).
    pub fn start_with(postgres: &PostgresServer, settings: &[&str]) -> AdminPgBouncer {
        let dir = server_dir();
        let port = free_port();
        let users: String = [STATS_USER, ADMIN_USER, APP_USER]
            .iter()
            .map(|(user, password)| format!("\"{user}\" \"{password}\"\n"))
            .collect();
        std::fs::write(dir.path().join("userlist.txt"), users).unwrap();
        std::fs::write(
            dir.path().join("pgbouncer.ini"),
            format!(
                "[databases]\n{TINY} = host=127.0.0.1 port={pg} dbname=postgres pool_size=1\n\
                 * = host=127.0.0.1 port={pg}\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = scram-sha-256\nauth_file = {dir}/userlist.txt\n\
                 stats_users = {stats}\nadmin_users = {admin}\n\
                 pool_mode = transaction\nmax_client_conn = 200\ndefault_pool_size = 5\n\
                 server_connect_timeout = 1\nserver_login_retry = 1\nquery_wait_timeout = 60\n\
                 logfile = {dir}/pgbouncer.log\n{extra}\n",
                pg = postgres.port,
                dir = dir.path().display(),
                stats = STATS_USER.0,
                admin = ADMIN_USER.0,
                extra = settings.join("\n"),
            ),
        )
        .unwrap();
        give_to_server_user(dir.path());
        let mut bouncer = AdminPgBouncer {
            port,
            dir,
            process: None,
        };
        bouncer.resume();
        bouncer
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A URL for `database` as `(user, password)`.
    pub fn url(&self, (user, password): (&str, &str), database: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// The admin console as the stats user: what the scaler's config should name.
    pub fn console_url(&self) -> String {
        self.url(STATS_USER, "pgbouncer")
    }

    /// Kills PgBouncer (an outage, or the first half of a restart); the port stays ours.
    pub fn stop(&mut self) {
        self.process = None;
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "pgbouncer did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts PgBouncer (again) on the same port and config.
    pub fn resume(&mut self) {
        let child = server_command(&require_binary("pgbouncer"))
            .arg(self.dir.path().join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning pgbouncer");
        self.process = Some(ChildGuard(child));
        wait_for_port(self.port, "pgbouncer", Duration::from_secs(10));
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the process: a PgBouncer that accepts TCP
    /// connections (the kernel does) but answers nothing.
    pub fn freeze(&self, frozen: bool) {
        let process = self.process.as_ref().expect("pgbouncer is running");
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &process.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal}");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }

    /// A client session of the application user on `database`, through PgBouncer.
    pub async fn session(&self, database: &str) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.url(APP_USER, database), tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connecting through pgbouncer: {e}: {}", self.log()));
        tokio::spawn(connection);
        client
    }

    /// The rows of an admin console command, run as the stats user: the tests' oracle.
    pub async fn show(&self, command: &str) -> Vec<HashMap<String, String>> {
        let (client, connection) =
            tokio_postgres::connect(&self.console_url(), tokio_postgres::NoTls)
                .await
                .expect("connecting to the admin console");
        tokio::spawn(connection);
        client
            .simple_query(command)
            .await
            .unwrap_or_else(|e| panic!("{command}: {e}"))
            .iter()
            .filter_map(|message| match message {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                    row.columns()
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (c.name().to_string(), row.get(i).unwrap_or("").into()))
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    }

    /// Runs `pgbench` through PgBouncer on `database`: `clients` clients, each running
    /// `SELECT pg_sleep(sleep_seconds)` back to back for `seconds`, in the background.
    pub fn pgbench(
        &self,
        database: &str,
        clients: u32,
        sleep_seconds: f64,
        seconds: u32,
    ) -> ChildGuard {
        let script = self.dir.path().join("sleep.sql");
        std::fs::write(&script, format!("SELECT pg_sleep({sleep_seconds});\n")).unwrap();
        let log = std::fs::File::create(self.dir.path().join("pgbench.log")).unwrap();
        let child = Command::new(require_binary("pgbench"))
            .args(["-n", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", APP_USER.0, "-c", &clients.to_string(), "-j", "1"])
            .args(["-T", &seconds.to_string(), "-f"])
            .arg(&script)
            .arg(database)
            .env("PGPASSWORD", APP_USER.1)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning pgbench");
        ChildGuard(child)
    }
}
