//! The `backlog-scaler` binary: CLI, logging, config, then the library's `run` of the command
//! ([`backlog_scaler::server::run`] for `serve`, [`backlog_scaler::cli`] for the others).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use backlog_scaler::{
    cli::{
        self, Exit, Output,
        dev::DevOptions,
        eval::{EvalOptions, JobCounts},
    },
    config::Config,
    server,
};
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
    /// Probe every source once and report what works; exit 1 if a source fails.
    Check {
        #[arg(long, env = "BACKLOG_SCALER_CONFIG")]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Dry-run ScaledObjects and ScaledJobs against the live backends: values, replicas or Jobs, and why.
    Eval {
        #[arg(long, env = "BACKLOG_SCALER_CONFIG")]
        config: PathBuf,
        /// ScaledObject and ScaledJob YAML files (several documents each; `-` for stdin).
        #[arg(long = "scaledobject", required = true, num_args = 1..)]
        scaled_objects: Vec<PathBuf>,
        /// The workload's current replicas: applies the HPA's 10 % tolerance.
        #[arg(long)]
        current_replicas: Option<u32>,
        /// For ScaledJobs: the Jobs running now.
        #[arg(long, default_value_t = 0)]
        running_jobs: u32,
        /// For ScaledJobs: the Jobs pending now (the `accurate` and `eager` strategies count them).
        #[arg(long, default_value_t = 0)]
        pending_jobs: u32,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Throwaway Redis and PostgreSQL, the scaler, a synthetic workload and a live table.
    Dev {
        /// Stop after this long (e.g. `10s`), printing the table each second.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(text).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let command = Cli::parse().command;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("backlog-scaler: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Installed before anything starts, so an early signal is handled, not fatal.
    let shutdown = match runtime.block_on(async { cli::shutdown_signal() }) {
        Ok(shutdown) => shutdown,
        Err(error) => {
            eprintln!("backlog-scaler: cannot install the signal handlers: {error}");
            return ExitCode::FAILURE;
        }
    };
    let exit = match command {
        Command::Serve { config, log_json } => {
            init_logging(log_json, "info");
            let config = match cli::load_config(&config) {
                Ok(config) => config,
                Err(exit) => return exit.into(),
            };
            match runtime.block_on(serve(config, shutdown)) {
                Ok(()) => Exit::Ok,
                Err(error) => {
                    eprintln!("backlog-scaler: {error:#}");
                    Exit::Failed
                }
            }
        }
        // The commands' output is on stdout; logs (stderr) only say what went badly wrong.
        Command::Check { config, output } => {
            init_logging(false, "error");
            match cli::load_config(&config) {
                Ok(config) => runtime.block_on(cli::check::run(&config, output)),
                Err(exit) => exit,
            }
        }
        Command::Eval {
            config,
            scaled_objects,
            current_replicas,
            running_jobs,
            pending_jobs,
            output,
        } => {
            init_logging(false, "error");
            let options = EvalOptions {
                files: scaled_objects,
                current_replicas,
                jobs: JobCounts {
                    running: running_jobs,
                    pending: pending_jobs,
                },
                output,
            };
            match cli::load_config(&config) {
                Ok(config) => runtime.block_on(cli::eval::run(&config, &options)),
                Err(exit) => exit,
            }
        }
        Command::Dev { duration } => {
            init_logging(false, "error");
            runtime.block_on(cli::dev::run(DevOptions { duration }, shutdown))
        }
    };
    exit.into()
}

async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let address = config.server.grpc_listen;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind server.grpc_listen {address}: {e}"))?;
    server::run(config, listener, shutdown).await
}

/// Logs go to stderr; `BACKLOG_SCALER_LOG` overrides the command's default level.
fn init_logging(json: bool, default_level: &str) {
    let filter = EnvFilter::try_from_env("BACKLOG_SCALER_LOG")
        .unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
