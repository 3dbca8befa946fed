//! Running the built `backlog-scaler` binary from tests: its exit code and output, and the
//! files its commands read, for the `cli_*` tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub const BINARY: &str = env!("CARGO_BIN_EXE_backlog-scaler");

/// What a finished run left.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout and stderr together, for "never printed" assertions.
    pub fn all_output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// stdout as JSON, or a panic that shows the run.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// Runs the binary with `args` (no stdin, no config from the environment) and waits.
pub async fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    let output = tokio::process::Command::new(BINARY)
        .args(args)
        .env_remove("BACKLOG_SCALER_CONFIG")
        .env_remove("BACKLOG_SCALER_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("running backlog-scaler");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Processes whose working directory, command line or environment names `dir` (PostgreSQL's
/// backends work in their data directory; redis-server names its directory on its command
/// line; initdb's bootstrap server gets it in PGDATA).
pub fn processes_in(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cwd = std::fs::read_link(entry.path().join("cwd"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        // initdb's bootstrap server finds its data directory in PGDATA.
        let environ = std::fs::read(entry.path().join("environ"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if cwd.starts_with(&dir) || cmdline.contains(&dir) || environ.contains(&dir) {
            found.push(format!("pid {name}: cwd {cwd}, cmdline {cmdline}"));
        }
    }
    found
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
