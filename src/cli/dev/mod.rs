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
//!    ([`crate::eval::desired_replicas`], min 0, max 10). On a terminal the table is redrawn in place;
//!    otherwise (or with `--duration`) it is printed again each second.
//!
//! Stopping (Ctrl-C, SIGTERM or the end of `--duration`) takes one path: the workload stops,
//! the server drains, PostgreSQL gets a fast shutdown and redis-server a SIGTERM (then their
//! process groups SIGKILL if they linger), each is waited for, and the directory is removed.
//! The servers run in process groups of their own, so a Ctrl-C on the terminal reaches only
//! this process, which stops them in order; and they get a parent-death signal, so even a
//! SIGKILLed `dev` leaves none behind.

mod daemon;
mod environment;
mod samples;
mod table;
mod workload;

use std::{future::Future, path::PathBuf, pin::Pin, time::Duration};

use futures::future::join_all;
use tokio::{sync::oneshot, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use super::Exit;
use crate::server;
use environment::{Environment, Started};
use table::{Panel, Screen};

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

// Servers get this long to start: initdb plus a first start of PostgreSQL take 2-4 s on a
// loaded 2-core machine, so 30 s only trips on a real failure.
const START_TIMEOUT: Duration = Duration::from_secs(30);

// The server drains within the sample config's `shutdown_grace` (2 s); past this something
// is wrong and its task is aborted.
const SERVER_STOP: Duration = Duration::from_secs(5);

/// Runs `dev` until `options.duration` ends or `shutdown` resolves (install it with
/// [`super::shutdown_signal`] before calling, so a signal during start-up is not lost).
pub async fn run(options: DevOptions, shutdown: impl Future<Output = ()>) -> Exit {
    let mut shutdown = std::pin::pin!(shutdown);
    // Owned here, not by the start-up future: a signal during start-up drops that future, and
    // what it started is still stopped and waited for below.
    let mut started = Started::default();
    let environment = tokio::select! {
        environment = Environment::start(&mut started) => Some(environment),
        _ = &mut shutdown => None,
    };
    let (exit, ending) = match environment {
        Some(Ok(environment)) => (serve(&environment, options, shutdown).await, Ending::Served),
        Some(Err(message)) => {
            eprintln!("backlog-scaler dev: {message}");
            (Exit::Failed, Ending::DidNotStart)
        }
        None => (Exit::Ok, Ending::StoppedWhileStarting),
    };
    match (started.stop().await, ending) {
        (Err(message), _) => eprintln!("backlog-scaler dev: {message}"),
        (Ok(_), Ending::StoppedWhileStarting) => {
            eprintln!("backlog-scaler dev: stopped while starting; nothing left behind");
        }
        (Ok(Some(directory)), Ending::Served) => println!(
            "stopped: servers stopped and waited for, {} removed",
            directory.display()
        ),
        (Ok(_), _) => {}
    }
    exit
}

/// How far `run` got before stopping, for its last line.
enum Ending {
    Served,
    DidNotStart,
    StoppedWhileStarting,
}

/// Serves the scaler, runs the workload and shows the table until it is time to stop.
async fn serve(
    environment: &Environment,
    options: DevOptions,
    shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Exit {
    let prepared = bind_grpc().await.and_then(|(listener, grpc_note)| {
        let grpc = listener
            .local_addr()
            .map_err(|e| format!("reading the gRPC address: {e}"))?;
        let (http_port, http_note) = preferred_port(HTTP_PORT);
        let (config_path, config) = write_config(environment, grpc.port(), http_port)?;
        let intro = environment.intro(grpc, grpc_note, http_port, http_note, &config_path);
        Ok((listener, config, Screen::new(intro, grpc, &options)))
    });
    let (listener, config, screen) = match prepared {
        Ok(prepared) => prepared,
        Err(message) => {
            eprintln!("backlog-scaler dev: {message}");
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
    let exit = show_until_stopped(&screen, options.duration, shutdown, &mut server).await;
    stop_workload.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(3), join_all(workload)).await;
    let _ = stop_server.send(());
    if !server.is_finished()
        && tokio::time::timeout(SERVER_STOP, &mut server)
            .await
            .is_err()
    {
        server.abort();
    }
    exit
}

/// Redraws the table every second until `shutdown`, the end of `duration`, or the server
/// stopping by itself (a failure).
async fn show_until_stopped(
    screen: &Screen,
    duration: Option<Duration>,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
    server: &mut JoinHandle<anyhow::Result<()>>,
) -> Exit {
    let started = Instant::now();
    let deadline = duration.map(|d| started + d);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut panel: Option<Panel> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut shutdown => return Exit::Ok,
            served = &mut *server => {
                eprintln!("backlog-scaler dev: the server stopped: {}", match served {
                    Ok(Ok(())) => "without an error".to_string(),
                    Ok(Err(error)) => format!("{error:#}"),
                    Err(error) => error.to_string(),
                });
                return Exit::Failed;
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Exit::Ok;
        }
        if panel.is_none() {
            panel = Panel::connect(screen.grpc).await;
        }
        let table = match panel.as_mut() {
            Some(panel) => panel.table().await,
            None => "connecting to the scaler...\n".to_string(),
        };
        screen.draw(started.elapsed().as_secs(), &table);
    }
}

/// Writes the sample config into the environment's directory and parses it as `serve` would.
fn write_config(
    environment: &Environment,
    grpc_port: u16,
    http_port: u16,
) -> Result<(PathBuf, crate::config::Config), String> {
    let path = environment.dir.join("config.toml");
    let text = environment.config(grpc_port, http_port);
    std::fs::write(&path, &text)
        .map_err(|e| format!("the sample config: cannot write {}: {e}", path.display()))?;
    let config =
        crate::config::Config::from_toml(&text).map_err(|e| format!("the sample config: {e}"))?;
    Ok((path, config))
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
