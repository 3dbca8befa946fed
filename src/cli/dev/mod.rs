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

use std::{
    io::{IsTerminal, Write},
    time::Duration,
};

use futures::future::join_all;
use tokio::{sync::oneshot, time::Instant};
use tokio_util::sync::CancellationToken;

use super::Exit;
use crate::server;
use environment::Environment;
use samples::grpcurl_lines;
use table::Panel;

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
