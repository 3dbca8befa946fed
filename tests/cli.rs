//! The `backlog-scaler` binary: config errors before any port is bound, and SIGTERM.

mod common;

use std::{
    net::TcpListener,
    process::Command,
    time::{Duration, Instant},
};

use common::{SCALER_BINARY, ScalerProcess};

#[test]
fn bad_config_exits_2_with_one_line_naming_the_key_before_binding_a_port() {
    // The port every config below names is taken, by us. A binary that bound before it had
    // validated its config would fail on the bind, not on the config: a different exit and
    // message (the last case shows that a bind attempt is seen).
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
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
        let mut process = ScalerProcess::spawn(&config, &[]);
        let status = process.wait_for_exit();
        let stderr = process.stderr();
        assert_eq!(status.code(), Some(2), "{config}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
        assert!(stderr.contains(key), "{stderr:?}");
        assert!(!stderr.contains("hunter2"), "{stderr:?}");
        assert!(!stderr.contains("in use"), "it tried to bind: {stderr:?}");
    }

    // The control: a valid config on the same taken port gets as far as the bind, and says so.
    let valid = format!(
        "[server]\ngrpc_listen = \"127.0.0.1:{port}\"\n[sources.r]\ntype = \"redis\"\n\
         url = \"redis://127.0.0.1:{}/0\"\n",
        common::free_port()
    );
    let mut process = ScalerProcess::spawn(&valid, &[]);
    let status = process.wait_for_exit();
    let stderr = process.stderr();
    assert!(
        !status.success() && status.code() != Some(2),
        "{status}: {stderr}"
    );
    assert!(stderr.contains("in use"), "{stderr:?}");
    drop(taken);
}

#[test]
fn config_path_falls_back_to_the_backlog_scaler_config_variable() {
    let output = Command::new(SCALER_BINARY)
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
    let mut process = ScalerProcess::spawn(
        &format!(
            "[server]\ngrpc_listen = \"127.0.0.1:{port}\"\n[sources.r]\ntype = \"redis\"\n\
             url = \"redis://user:hunter2-secret@127.0.0.1:{dead}/0\"\n"
        ),
        &[("BACKLOG_SCALER_LOG", "debug")],
    );
    process.wait_until_listening(port);
    // Let the probe of the unreachable source fail a few times.
    std::thread::sleep(Duration::from_millis(2500));
    process.terminate();
    let status = process.wait_for_exit();
    let stderr = process.stderr();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("source is not answering"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn sigterm_exits_0_within_the_shutdown_grace() {
    let port = common::free_port();
    let mut process = ScalerProcess::spawn(
        &format!(
            "[server]\ngrpc_listen = \"127.0.0.1:{port}\"\nshutdown_grace = \"3s\"\n\
             [sources.r]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{}/0\"\n",
            common::free_port()
        ),
        &[],
    );
    process.wait_until_listening(port);
    let started = Instant::now();
    process.terminate();
    let status = process.wait_for_exit();
    assert!(status.success(), "{status}: {}", process.stderr());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
