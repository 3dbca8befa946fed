//! The `backlog-scaler` binary: config errors before any port is bound, and SIGTERM.

mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const BINARY: &str = env!("CARGO_BIN_EXE_backlog-scaler");

fn serve_with(config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scaler.toml");
    std::fs::write(&path, config).unwrap();
    Command::new(BINARY)
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("BACKLOG_SCALER_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn bad_config_exits_2_with_one_line_naming_the_key() {
    let port = common::free_port();
    let cases = [
        (
            format!("[server]\ngrpc_listen = \"127.0.0.1:{port}\"\ngrpc_lisen = \"x\"\n"),
            "grpc_lisen",
        ),
        (
            format!(
                "[server]\ngrpc_listen = \"127.0.0.1:{port}\"\n[sources.r]\ntype = \"redis\"\n\
                 url_env = \"BACKLOG_SCALER_TEST_NEVER_SET\"\n"
            ),
            "sources.r.url_env",
        ),
        (
            format!(
                "[server]\ngrpc_listen = \"127.0.0.1:{port}\"\n[sources.r]\ntype = \"redis\"\n\
                 url = \"http://user:hunter2@host\"\n"
            ),
            "sources.r.url",
        ),
    ];
    for (config, key) in cases {
        let output = serve_with(&config);
        assert_eq!(output.status.code(), Some(2), "{config}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
        assert!(stderr.contains(key), "{stderr:?}");
        assert!(!stderr.contains("hunter2"), "{stderr:?}");
        // Nothing was bound.
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    }
}

#[test]
fn config_path_comes_from_the_environment_too() {
    let output = Command::new(BINARY)
        .arg("serve")
        .env("BACKLOG_SCALER_CONFIG", "/nonexistent/backlog-scaler.toml")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("/nonexistent/backlog-scaler.toml"),
        "{stderr}"
    );
}

#[test]
fn secrets_in_urls_never_reach_the_logs() {
    let port = common::free_port();
    let dead = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scaler.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\ngrpc_listen = \"127.0.0.1:{port}\"\n[sources.r]\ntype = \"redis\"\n\
             url = \"redis://user:hunter2-secret@127.0.0.1:{dead}/0\"\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(BINARY)
        .args(["serve", "--config"])
        .arg(&path)
        .env("BACKLOG_SCALER_LOG", "debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for_port(port, "backlog-scaler", Duration::from_secs(10));
    // Let the probe of the unreachable source fail a few times.
    std::thread::sleep(Duration::from_millis(2500));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("source is not answering"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn sigterm_drains_and_exits_0() {
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scaler.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\ngrpc_listen = \"127.0.0.1:{port}\"\nshutdown_grace = \"3s\"\n\
             [sources.r]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{}/0\"\n",
            common::free_port()
        ),
    )
    .unwrap();
    let mut child = Command::new(BINARY)
        .args(["serve", "--config"])
        .arg(&path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_for_port(port, "backlog-scaler", Duration::from_secs(10));
    let started = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
