//! The scaler's own metrics, scraped from a running scaler after real traffic: the counts the
//! traffic must have produced, the outage it lived through, and a scrape promtool accepts.
//! Also `/healthz` and `/readyz`, and the namespace fence seen from the outside.

use crate::common;

use std::{process::Command, time::Duration};

use common::{
    RedisServer, SETTLES_WITHIN, Scaler, free_port,
    http::{http_get, http_get_accepting, sample},
    poll::poll_until,
    push,
    trigger::{assert_outage_reported, assert_recovers_to, trigger_value, trigger_value_until},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

fn scaler_config(redis_url: &str, http_port: u16) -> String {
    format!(
        r#"
        [server]
        http_listen = "127.0.0.1:{http_port}"
        [measurements]
        refresh_interval = "200ms"
        max_staleness = "2s"
        timeout = "500ms"
        max_live = 500
        [sources.redis-main]
        type = "redis"
        url = "{redis_url}"
        [sources.team-b-only]
        type = "redis"
        url = "{redis_url}"
        allowed_namespaces = ["team-b"]
        "#
    )
}

#[tokio::test]
async fn a_scrape_after_traffic_and_an_outage_shows_what_happened() {
    let mut redis = RedisServer::start();
    let http_port = free_port();
    let scaler = Scaler::start(&scaler_config(&redis.url(), http_port)).await;
    push(&mut redis.connection().await, "obs:jobs", 4).await;
    let pairs = [("metric", "redis-list"), ("keys", "obs:jobs")];
    trigger_value_until(&scaler, "redis-main", &pairs, |v| v == 4.0).await;
    for _ in 0..9 {
        assert_eq!(
            trigger_value(&scaler, "redis-main", &pairs).await.unwrap(),
            4.0
        );
    }
    let typo = trigger_value(&scaler, "redis-main", &[("metric", "redis-lists")]).await;
    assert_eq!(typo.unwrap_err().code(), Code::InvalidArgument);
    let (status, ready) = http_get(http_port, "/readyz").await;
    assert_eq!((status, ready.trim()), (200, "ready"));

    // KEDA keeps one connection open for good; so does this client.
    let _keda = scaler.client().await;
    redis.stop();
    assert_outage_reported(&scaler, "redis-main", &pairs, 4.0).await;
    let scrape = poll_until(
        "source_up 0 in a scrape",
        Duration::from_secs(5),
        async || http_get(http_port, "/metrics").await.1,
        |scrape| sample(scrape, r#"backlog_scaler_source_up{source="redis-main"}"#) == Some(0.0),
    )
    .await;
    let count = |series: &str| sample(&scrape, series).unwrap_or(0.0);
    assert!(
        count(r#"backlog_scaler_grpc_requests_total{method="GetMetrics",code="Ok"}"#) >= 10.0,
        "{scrape}"
    );
    assert!(
        count(r#"backlog_scaler_grpc_requests_total{method="GetMetrics",code="Unavailable"}"#)
            >= 1.0,
        "{scrape}"
    );
    assert_eq!(
        count(r#"backlog_scaler_grpc_requests_total{method="GetMetrics",code="InvalidArgument"}"#),
        1.0,
        "{scrape}"
    );
    assert!(
        count(r#"backlog_scaler_grpc_request_duration_seconds_count{method="GetMetrics"}"#) >= 12.0,
        "{scrape}"
    );
    assert!(
        count(r#"backlog_scaler_backend_reads_total{source="redis-main",outcome="ok"}"#) >= 1.0,
        "{scrape}"
    );
    let failed =
        count(r#"backlog_scaler_backend_reads_total{source="redis-main",outcome="error"}"#)
            + count(r#"backlog_scaler_backend_reads_total{source="redis-main",outcome="timeout"}"#);
    assert!(failed >= 1.0, "the outage's failed reads: {scrape}");
    assert_eq!(
        count(r#"backlog_scaler_measurements{source="redis-main"}"#),
        1.0,
        "{scrape}"
    );
    assert_eq!(
        count("backlog_scaler_measurements_limit"),
        500.0,
        "{scrape}"
    );
    assert_eq!(
        count(r#"backlog_scaler_max_staleness_seconds{source="redis-main"}"#),
        2.0,
        "{scrape}"
    );
    assert!(count("backlog_scaler_connections_open") >= 1.0, "{scrape}");
    assert!(
        scrape.contains("backlog_scaler_build_info{version=\""),
        "{scrape}"
    );
    assert!(
        !scrape.contains("obs:jobs"),
        "queue keys never become labels: {scrape}"
    );
    // Every source down: not ready; still alive.
    assert_eq!(http_get(http_port, "/readyz").await.0, 503);
    assert_eq!(http_get(http_port, "/healthz").await.0, 200);

    redis.resume();
    push(&mut redis.connection().await, "obs:jobs", 2).await;
    assert_recovers_to(&scaler, "redis-main", &pairs, 2.0).await;
    poll_until(
        "ready again",
        Duration::from_secs(5),
        async || http_get(http_port, "/readyz").await.0,
        |status| *status == 200,
    )
    .await;
}

#[tokio::test]
async fn promtool_accepts_a_live_scrape() {
    let redis = RedisServer::start();
    let http_port = free_port();
    let scaler = Scaler::start(&scaler_config(&redis.url(), http_port)).await;
    let pairs = [("metric", "redis-list"), ("keys", "obs:promtool")];
    trigger_value_until(&scaler, "redis-main", &pairs, |v| v == 0.0).await;
    let (status, scrape) = http_get(http_port, "/metrics").await;
    assert_eq!(status, 200);
    // Prometheus asks for OpenMetrics and gets it; the samples are the same.
    let (_, openmetrics) = http_get_accepting(
        http_port,
        "/metrics",
        "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
    )
    .await;
    assert!(openmetrics.trim_end().ends_with("# EOF"), "{openmetrics}");
    assert!(
        openmetrics.contains("# TYPE backlog_scaler_grpc_requests counter"),
        "{openmetrics}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scrape.txt");
    std::fs::write(&file, &scrape).unwrap();
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", file.display()))
        .output()
        .expect("running promtool (apt-get install -y --no-install-recommends prometheus)");
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}\n{scrape}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every command Redis receives while `during` runs, as MONITOR prints them.
async fn commands_seen(
    redis: &RedisServer,
    during: impl std::future::Future<Output = ()>,
) -> String {
    let mut monitor = tokio::net::TcpStream::connect(("127.0.0.1", redis.port))
        .await
        .unwrap();
    monitor.write_all(b"MONITOR\r\n").await.unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    let read = monitor.read(&mut buffer).await.unwrap();
    seen.extend_from_slice(&buffer[..read]);
    assert!(
        seen.starts_with(b"+OK"),
        "MONITOR refused: {:?}",
        String::from_utf8_lossy(&seen)
    );
    during.await;
    // Probes keep MONITOR busy: collect for a fixed while after `during`, then stop.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    while let Ok(Ok(read)) = tokio::time::timeout_at(deadline, monitor.read(&mut buffer)).await {
        if read == 0 {
            break;
        }
        seen.extend_from_slice(&buffer[..read]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn a_namespace_outside_allowed_namespaces_is_denied_without_a_backend_command() {
    let redis = RedisServer::start();
    let scaler = Scaler::start(&scaler_config(&redis.url(), free_port())).await;
    let mut client = scaler.client().await;
    let mut request = common::scaled_object(&[
        ("source", "team-b-only"),
        ("metric", "redis-list"),
        ("keys", "team-b:jobs"),
        ("target", "1"),
    ]);
    request.namespace = "team-a".into();
    let denied = request.clone();
    let commands = commands_seen(&redis, async {
        let status = client
            .get_metrics(backlog_scaler::proto::GetMetricsRequest {
                scaled_object_ref: Some(denied.clone()),
                metric_name: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(
            status.message().contains("team-a") && status.message().contains("team-b-only"),
            "{status:?}"
        );
        let spec = client.get_metric_spec(denied.clone()).await.unwrap_err();
        assert_eq!(spec.code(), Code::PermissionDenied);
        // Two refreshes pass (each source probes Redis with one LLEN at each): a
        // measurement, had one been made, would have been read.
        let probes = async || {
            redis
                .command_calls()
                .await
                .get("llen")
                .copied()
                .unwrap_or(0)
        };
        let before = probes().await;
        poll_until("two refreshes pass", SETTLES_WITHIN, probes, |n| {
            *n >= before + 4
        })
        .await;
    })
    .await;
    assert!(
        commands.contains("backlog-scaler:probe"),
        "MONITOR saw the probes: {commands}"
    );
    assert!(
        !commands.contains("team-b:jobs"),
        "the denied trigger's key was read: {commands}"
    );
    // The namespace the source admits is served, and only then is the key read.
    request.namespace = "team-b".into();
    let commands = commands_seen(&redis, async {
        let answer = client
            .get_metrics(backlog_scaler::proto::GetMetricsRequest {
                scaled_object_ref: Some(request),
                metric_name: String::new(),
            })
            .await;
        assert!(answer.is_ok(), "{answer:?}");
    })
    .await;
    assert!(commands.contains("team-b:jobs"), "{commands}");
}
