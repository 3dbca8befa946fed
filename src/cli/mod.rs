//! The commands besides `serve`, for people and scripts rather than for KEDA (issue 11).
//!
//! - [`check`]: `backlog-scaler check`: probe every configured source once, concurrently,
//!   and say what works ([`crate::sources::Source::check`]). Exit 0 when every source passes:
//!   fit for an init container.
//! - [`eval`]: `backlog-scaler eval`: a dry run of ScaledObject files against the live
//!   backends: each trigger parsed as the server parses it ([`crate::trigger`]), measured
//!   through an [`crate::engine::Engine`], and the replica count KEDA and the HPA would set
//!   ([`crate::eval`]), with the reasoning.
//! - [`dev`]: `backlog-scaler dev`: throwaway redis-server and PostgreSQL, the scaler served
//!   in-process ([`crate::server::run`]), a synthetic workload and a live table of what KEDA
//!   would see, read through a real gRPC client.
//!
//! `main.rs` parses arguments and loads the config; each command here takes typed options
//! and returns an [`Exit`]. Exit statuses are the same everywhere: 0 all good, 1 something
//! checked or measured failed, 2 the input (config, YAML) is invalid. What the commands print
//! never holds a secret: sources are named by their config name, never by URL, and their
//! errors are the ones the server answers KEDA with.
//!
//! This module sits at the top beside [`crate::server`] and may use everything below it.

use std::{future::Future, path::Path, process::ExitCode};

use crate::config::Config;

pub mod check;
pub mod dev;
pub mod eval;

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON document on stdout, for scripts.
    Json,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything checked or evaluated is fine.
    Ok,
    /// Something checked or measured failed (a source is down, no replica count).
    Failed,
    /// The input is invalid: a config or a YAML file.
    BadInput,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failed => 1,
            Exit::BadInput => 2,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

/// Loads and validates the config; on error prints the one line every command prints for a
/// bad config (stderr) and answers [`Exit::BadInput`].
pub fn load_config(path: &Path) -> Result<Config, Exit> {
    Config::load(path).map_err(|error| {
        eprintln!("backlog-scaler: invalid config {}: {error}", path.display());
        Exit::BadInput
    })
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C). The handlers are installed when this
/// is called, not when the future is first polled, so a signal that arrives while a command
/// is still starting is not lost (and does not kill the process with children left behind).
/// Must be called inside a Tokio runtime.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// A number as people read it: whole numbers without decimals, others with up to three.
pub fn number(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_drop_needless_decimals() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(2.5), "2.5");
        assert_eq!(number(1.0 / 3.0), "0.333");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(1e20), "100000000000000000000");
    }

    #[test]
    fn columns_line_up() {
        let table = columns(
            &["a", "long header", "c"],
            &[vec!["xyz".into(), "1".into(), "last".into()]],
        );
        assert_eq!(table, "a    long header  c\nxyz  1            last\n");
    }
}
