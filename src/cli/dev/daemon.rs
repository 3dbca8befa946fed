//! Process supervision: a server in a process group of its own, with a parent-death signal,
//! waited for at start and stopped in order.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use tokio::time::Instant;

use super::START_TIMEOUT;

// A fast shutdown of PostgreSQL with a handful of sessions takes well under a second; past
// this the process group is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A server process, leader of its own process group, stopped and waited for on drop.
pub(super) struct Daemon {
    name: &'static str,
    child: Child,
    /// The signal that asks it to stop cleanly.
    stop_signal: libc::c_int,
    log: PathBuf,
}

impl Daemon {
    pub(super) fn spawn(
        name: &'static str,
        mut command: Command,
        stop_signal: libc::c_int,
        log: PathBuf,
    ) -> Result<Daemon, String> {
        command.stdin(Stdio::null()).stdout(Stdio::null());
        // Its own process group: a Ctrl-C on the terminal reaches only `dev`, which stops the
        // servers in order; and the group can be killed whole.
        command.process_group(0);
        // SAFETY: prctl is async-signal-safe; the closure touches no memory of the parent.
        // It runs after the switch to the server user, which would otherwise clear it.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, stop_signal as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(Daemon {
            name,
            child,
            stop_signal,
            log,
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a one-shot command (initdb) exits, and fails with its log unless it
    /// succeeded.
    pub(super) async fn wait_for_exit(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!(
                        "{} failed ({status}): {}",
                        self.name,
                        tail(&std::fs::read_to_string(&self.log).unwrap_or_default())
                    ));
                }
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(None) => {
                    return Err(format!(
                        "{} did not finish within {START_TIMEOUT:?}",
                        self.name
                    ));
                }
                Err(error) => return Err(format!("waiting for {}: {error}", self.name)),
            }
        }
    }

    /// Waits until the server accepts TCP connections on `port`, or fails with its log.
    pub(super) async fn wait_for_port(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}) before listening on port {port}: {}",
                    self.name,
                    tail(&std::fs::read_to_string(&self.log).unwrap_or_default())
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not listen on port {port} within {START_TIMEOUT:?}",
                    self.name
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // The whole group: initdb's bootstrap server goes with initdb. (PostgreSQL's backends
        // lead sessions of their own; the postmaster stops them.)
        // SAFETY: kill has no memory effects; `pid` is our child, not yet reaped, and leads
        // its process group.
        unsafe { libc::kill(-pid, self.stop_signal) };
        let deadline = std::time::Instant::now() + STOP_TIMEOUT;
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "backlog-scaler dev: {} did not stop within {STOP_TIMEOUT:?}; killing its process group",
            self.name
        );
        // SAFETY: as above; the negative pid names the group the child leads.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// A log file for a server's stderr.
pub(super) fn log_file(path: &Path) -> Result<std::fs::File, String> {
    std::fs::File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// The last lines of a log, on one line.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}
