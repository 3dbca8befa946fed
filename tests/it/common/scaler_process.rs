//! The built `backlog-scaler` binary, run as Kubernetes runs it: `serve --config <file>`.

use std::{
    fs::File,
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Command, ExitStatus},
    time::Duration,
};

use super::{ChildGuard, poll::poll_until_blocking};

/// The binary Cargo built for these tests.
pub const SCALER_BINARY: &str = env!("CARGO_BIN_EXE_backlog-scaler");

/// How long the binary may take to start listening, or to exit once it should. Generous: it
/// validates a small file and binds one port, on a machine shared with other builds.
pub const PROCESS_WITHIN: Duration = Duration::from_secs(10);

/// `backlog-scaler serve --config <temp file>`, its stdout and stderr captured to files beside
/// the config (readable at any time, and no pipe to fill up). Killed and reaped on drop.
pub struct ScalerProcess {
    process: ChildGuard,
    dir: tempfile::TempDir,
}

impl ScalerProcess {
    /// Writes `config` to a temp file and starts the binary on it, with `env` added to the
    /// environment (and `BACKLOG_SCALER_CONFIG` removed, so only `--config` counts).
    pub fn spawn(config: &str, env: &[(&str, &str)]) -> ScalerProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("scaler.toml");
        std::fs::write(&config_path, config).unwrap();
        let stdout = File::create(dir.path().join("stdout.log")).unwrap();
        let stderr = File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new(SCALER_BINARY)
            .args(["serve", "--config"])
            .arg(&config_path)
            .env_remove("BACKLOG_SCALER_CONFIG")
            .envs(env.iter().copied())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawning backlog-scaler");
        ScalerProcess {
            process: ChildGuard(child),
            dir,
        }
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        stderr_in(self.dir.path())
    }

    /// Everything the process wrote to stdout and stderr so far, for "never printed" checks.
    pub fn all_output(&self) -> String {
        let stdout = std::fs::read_to_string(self.dir.path().join("stdout.log"));
        format!("{}{}", stdout.unwrap_or_default(), self.stderr())
    }

    /// Waits until the process accepts connections on `port` (127.0.0.1) and returns that
    /// address; fails at once, with its stderr, if it exits instead.
    pub fn wait_until_listening(&mut self, port: u16) -> SocketAddr {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let (process, dir) = (&mut self.process.0, self.dir.path());
        poll_until_blocking(
            format!("backlog-scaler listens on {address}"),
            PROCESS_WITHIN,
            || {
                if let Some(status) = process.try_wait().unwrap() {
                    panic!("backlog-scaler exited ({status}): {}", stderr_in(dir));
                }
                TcpStream::connect(address)
            },
            Result::is_ok,
        )
        .expect("polled until it connected");
        address
    }

    /// Sends SIGTERM, as the kubelet does to stop a pod.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.process.0.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Waits (at most [`PROCESS_WITHIN`]) for the process to exit, and returns how it did.
    pub fn wait_for_exit(&mut self) -> ExitStatus {
        let (process, dir) = (&mut self.process.0, self.dir.path());
        poll_until_blocking(
            "backlog-scaler exits",
            PROCESS_WITHIN,
            || match process.try_wait().unwrap() {
                Some(status) => Ok(status),
                None => Err(format!("still running; stderr: {}", stderr_in(dir))),
            },
            Result::is_ok,
        )
        .expect("polled until it exited")
    }
}

fn stderr_in(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
}
