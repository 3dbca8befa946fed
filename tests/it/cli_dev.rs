//! `backlog-scaler dev`, the built binary: it starts its own redis-server and PostgreSQL,
//! prints the table of every sample trigger, and whether it ends by `--duration` or by
//! SIGTERM, it leaves no process and no directory behind. The grpcurl lines it prints work
//! as printed.

use crate::common::cli_run;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::common::{grpcurl, project};
use cli_run::{BINARY, alive, processes_in};

/// The sample triggers' labels, as the table shows them.
const SAMPLES: &[&str] = &[
    "jobs (list, bursts)",
    "celery (priorities)",
    "events (stream group)",
    "pg sessions (active)",
    "pg statements (calls/s)",
    "dagster runs (queued)",
];

/// The temp dir and server pids `dev` announces.
struct Announced {
    dir: PathBuf,
    pids: Vec<u32>,
}

fn announced(stdout: &str) -> Announced {
    let field = |name: &str| -> String {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no `{name}` line in {stdout}"))
            .trim()
            .to_string()
    };
    let pid = |line: String| -> u32 {
        line.rsplit_once("(pid ")
            .and_then(|(_, rest)| rest.trim_end_matches(')').parse().ok())
            .unwrap_or_else(|| panic!("no pid in {line:?}"))
    };
    Announced {
        dir: PathBuf::from(field("temp dir:")),
        pids: vec![pid(field("redis-server:")), pid(field("postgres:"))],
    }
}

/// Nothing of `dev` is left: the servers are gone (and so is every process working in the
/// temp dir, PostgreSQL's backends included), and so is the directory.
fn assert_nothing_left(announced: &Announced) {
    for pid in &announced.pids {
        assert!(!alive(*pid), "pid {pid} survived dev");
    }
    let left = processes_in(&announced.dir);
    assert!(left.is_empty(), "processes left: {left:#?}");
    assert!(
        !announced.dir.exists(),
        "{} was not removed",
        announced.dir.display()
    );
}

/// The rows of the last table printed.
fn last_table(stdout: &str) -> Vec<&str> {
    let (_, last) = stdout.rsplit_once("--- t+").expect("a table");
    last.lines()
        .skip(2)
        .take_while(|l| !l.starts_with("stopped"))
        .collect()
}

#[test]
fn dev_with_duration_prints_every_sample_then_stops_and_cleans_up() {
    // Hold 9090 (or find it held): dev must then say so and serve on a free port.
    let _held = std::net::TcpListener::bind("127.0.0.1:9090");
    let started = Instant::now();
    let output = Command::new(BINARY)
        .args(["dev", "--duration", "6s"])
        .env_remove("BACKLOG_SCALER_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let announced = announced(&stdout);
    assert_nothing_left(&announced);
    assert!(
        stdout.contains(&format!(
            "stopped: servers stopped and waited for, {} removed",
            announced.dir.display()
        )),
        "{stdout}"
    );

    let grpc = stdout
        .lines()
        .find_map(|l| l.strip_prefix("gRPC:"))
        .unwrap_or_else(|| panic!("{stdout}"))
        .trim();
    assert!(
        grpc.ends_with("(port 9090 is busy, so a free one)") && !grpc.contains(":9090 "),
        "{grpc}"
    );
    assert!(stdout.contains("config:"), "{stdout}");
    assert_eq!(
        stdout.matches("grpcurl -plaintext -d '").count(),
        SAMPLES.len(),
        "{stdout}"
    );
    let tables = stdout.matches("--- t+").count();
    assert!((3..=8).contains(&tables), "{tables} tables: {stdout}");

    let rows = last_table(&stdout);
    assert_eq!(rows.len(), SAMPLES.len(), "{rows:#?}\n{stdout}");
    for (row, label) in rows.iter().zip(SAMPLES) {
        assert!(row.starts_with(label), "{row:?} is not {label:?}");
        // label, metric, value, target, active, replicas
        let cells: Vec<&str> = row[label.len()..].split_whitespace().collect();
        assert_eq!(cells.len(), 5, "{row:?}");
        assert!(cells[1].parse::<f64>().is_ok(), "value of {row:?}");
        assert!(cells[2].parse::<f64>().is_ok(), "target of {row:?}");
        assert!(["yes", "no"].contains(&cells[3]), "active of {row:?}");
        let replicas: u32 = cells[4].parse().unwrap_or_else(|_| panic!("{row:?}"));
        assert!(replicas <= 10, "{row:?}");
    }
    // Work arrives: some trigger is active in some table.
    assert!(
        stdout
            .lines()
            .any(|l| SAMPLES.iter().any(|s| l.starts_with(s)) && l.contains(" yes ")),
        "{stdout}"
    );
}

/// Runs one of dev's printed grpcurl lines through a shell, with our grpcurl.
fn run_grpcurl_line(line: &str, grpcurl: &Path) -> serde_json::Value {
    let command = line
        .trim()
        .strip_prefix("grpcurl ")
        .unwrap_or_else(|| panic!("{line:?}"));
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!("'{}' {command}", grpcurl.display()))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{line}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn sigterm_in_the_middle_stops_everything_and_cleans_up() {
    let mut child = Command::new(BINARY)
        .args(["dev", "--duration", "120s"])
        .env_remove("BACKLOG_SCALER_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, received) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.contains("--- t+1s") {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
            }
            Err(_) => {
                let _ = child.kill();
                panic!("no table within 60 s: {seen}");
            }
        }
    }
    let announced = announced(&seen);

    // The printed grpcurl line works as printed.
    let line = seen
        .lines()
        .find(|l| l.contains("grpcurl -plaintext") && l.contains("redis-list"))
        .unwrap_or_else(|| panic!("{seen}"));
    let answer = run_grpcurl_line(line, &grpcurl());
    assert!(
        answer["metricValues"][0]["metricName"]
            .as_str()
            .is_some_and(|n| n.starts_with("redis-list-dev-jobs-")),
        "{answer}"
    );

    let stopping = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if stopping.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("dev did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
    reader.join().unwrap();
    let rest: String = received.try_iter().collect::<Vec<_>>().join("\n");
    assert!(rest.contains("stopped: servers stopped"), "{rest}");
    assert_nothing_left(&announced);
}

#[test]
fn sigterm_while_starting_leaves_nothing_behind() {
    let child = Command::new(BINARY)
        .args(["dev", "--duration", "120s"])
        .env_remove("BACKLOG_SCALER_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Start-up (initdb, PostgreSQL) takes seconds; stop it once its temp dir exists.
    let prefix = format!("backlog-scaler-dev-{pid}-");
    let deadline = Instant::now() + Duration::from_secs(30);
    let dir = loop {
        let found = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(&prefix));
        if let Some(entry) = found {
            break entry.path();
        }
        assert!(Instant::now() < deadline, "no temp dir {prefix}*");
        std::thread::sleep(Duration::from_millis(10));
    };
    // Once redis-server runs in it, initdb or PostgreSQL still starting.
    crate::common::poll_until_blocking(
        "dev starts redis-server in its temp dir",
        Duration::from_secs(30),
        || processes_in(&dir),
        |found| found.iter().any(|p| p.contains("redis-server")),
    );
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("stopped while starting"), "{stderr}");
    let left = processes_in(&dir);
    assert!(left.is_empty(), "processes left: {left:#?}");
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[test]
fn dev_sh_runs_the_release_build_of_dev_with_its_arguments() {
    // A stand-in `cargo` first on PATH records how scripts/dev.sh runs it (the servers are
    // installed here, so the script installs nothing).
    let bin = tempfile::tempdir().unwrap();
    let fake = bin.path().join("cargo");
    std::fs::write(&fake, "#!/bin/sh\necho \"cargo $*\"\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new(project().join("scripts/dev.sh"))
        .args(["--duration", "10s"])
        .env("PATH", path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        stdout.trim_end(),
        "cargo run --release --locked -- dev --duration 10s"
    );
}
