//! Process supervision: a server in a process group of its own, with a parent-death signal,
//! waited for at start, and stopped by an async [`Daemon::stop`] that never blocks a runtime
//! thread.

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

/// A server process, leader of its own process group. Its owner stops it with
/// [`Daemon::stop`]; a drop without that (a panic) kills the group without waiting.
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

    /// Asks the process group to stop, waits for the process, and kills the group when it
    /// lingers past [`STOP_TIMEOUT`]. Waits by polling on the runtime's timer, so a slow
    /// PostgreSQL shutdown holds no worker thread.
    pub(super) async fn stop(&mut self) {
        if !self.running() {
            return;
        }
        self.signal_group(self.stop_signal);
        if self.exited_within(STOP_TIMEOUT).await {
            return;
        }
        eprintln!(
            "backlog-scaler dev: {} did not stop within {STOP_TIMEOUT:?}; killing its process group",
            self.name
        );
        self.signal_group(libc::SIGKILL);
        if !self.exited_within(STOP_TIMEOUT).await {
            eprintln!(
                "backlog-scaler dev: {} (pid {}) survived SIGKILL for {STOP_TIMEOUT:?}",
                self.name,
                self.pid()
            );
        }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// True once the process has exited (and is reaped), false if it still runs at `limit`.
    async fn exited_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if !self.running() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        !self.running()
    }

    /// Sends `signal` to the whole group: initdb's bootstrap server goes with initdb.
    /// (PostgreSQL's backends lead sessions of their own; the postmaster stops them.)
    fn signal_group(&self, signal: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory effects; `pid` is our child, not yet reaped (the callers
        // checked), and leads its process group, which the negative pid names.
        unsafe { libc::kill(-pid, signal) };
    }
}

impl Drop for Daemon {
    /// The last resort when [`Daemon::stop`] was not awaited: SIGKILL to the group and no
    /// wait, since a drop may run on a runtime thread. The parent-death signal covers the
    /// rest when `dev` itself exits.
    fn drop(&mut self) {
        if self.running() {
            self.signal_group(libc::SIGKILL);
        }
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

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    /// A process group that ignores SIGTERM for a moment, as a PostgreSQL finishing its
    /// shutdown does. Returned once the shell has installed its trap: a SIGTERM that came
    /// before would end it at once and the test would measure nothing.
    async fn slow_to_stop() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let mut command = Command::new("sh");
        command.args(["-c", "trap '' TERM; : > \"$1\"; sleep 0.5", "sh"]);
        command.arg(&ready);
        let daemon =
            Daemon::spawn("slow", command, libc::SIGTERM, PathBuf::from("/dev/null")).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            assert!(std::time::Instant::now() < deadline, "sh never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        daemon
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stop_waits_for_the_process_while_the_runtime_keeps_running() {
        let mut daemon = slow_to_stop().await;
        let ticks = Arc::new(AtomicUsize::new(0));
        let ticker = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    ticks.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let started = std::time::Instant::now();
        daemon.stop().await;
        let waited = started.elapsed();
        ticker.abort();
        assert!(!daemon.running(), "stop returned while the process runs");
        assert!(
            waited >= Duration::from_millis(400),
            "did not wait: {waited:?}"
        );
        // The only runtime thread ran other tasks all along: about one tick per 10 ms.
        let ticks = ticks.load(Ordering::SeqCst);
        assert!(
            ticks >= 10,
            "{ticks} ticks in {waited:?}: stop held the runtime thread"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_daemon_is_killed_at_once() {
        let daemon = slow_to_stop().await;
        let pid = daemon.pid() as libc::pid_t;
        let started = std::time::Instant::now();
        drop(daemon);
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "drop waited"
        );
        // SIGKILL cannot be ignored: the group is gone (a zombie until reaped) long before
        // the half second it would otherwise take.
        let mut status = 0;
        // SAFETY: waitpid writes only `status`; `pid` is this test's own child.
        let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(reaped, pid);
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "not killed at once"
        );
    }
}
