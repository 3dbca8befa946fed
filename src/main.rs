//! The `backlog-scaler` binary: CLI, logging, config, then [`backlog_scaler::server::run`].

use std::{path::PathBuf, process::ExitCode};

use backlog_scaler::{config::Config, server};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    version,
    about = "KEDA external scaler for queue backlogs and database load"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the ExternalScaler gRPC API.
    Serve {
        /// The TOML config file.
        #[arg(long, env = "BACKLOG_SCALER_CONFIG")]
        config: PathBuf,
        /// Log as JSON lines instead of text.
        #[arg(long, env = "BACKLOG_SCALER_LOG_JSON")]
        log_json: bool,
    },
}

fn main() -> ExitCode {
    let Command::Serve { config, log_json } = Cli::parse().command;
    init_logging(log_json);
    let config = match Config::load(&config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!(
                "backlog-scaler: invalid config {}: {error}",
                config.display()
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("backlog-scaler: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("backlog-scaler: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let address = config.server.grpc_listen;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind server.grpc_listen {address}: {e}"))?;
    server::run(config, listener, shutdown_signal()).await
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn init_logging(json: bool) {
    let filter =
        EnvFilter::try_from_env("BACKLOG_SCALER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
