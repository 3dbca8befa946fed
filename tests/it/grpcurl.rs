//! The scaler as grpcurl (v1.8, reflection v1alpha — the same client stack ghz uses) sees it:
//! services listed by reflection, and RPCs called with nothing but reflection.

use crate::common;

use std::process::Command;

use common::{RedisServer, Scaler, grpcurl, push, redis_config};

/// Runs grpcurl off the async runtime and returns its stdout, asserting success.
async fn run(args: Vec<String>) -> String {
    let output = tokio::task::spawn_blocking(move || Command::new(grpcurl()).args(&args).output())
        .await
        .unwrap()
        .expect("running grpcurl");
    assert!(
        output.status.success(),
        "grpcurl {:?} failed: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_services_and_calls_rpcs_through_reflection() {
    let redis = RedisServer::start();
    let scaler = Scaler::start(&redis_config(&redis.url())).await;
    let address = scaler.address.to_string();

    let listed = run(vec!["-plaintext".into(), address.clone(), "list".into()]).await;
    for service in [
        "externalscaler.ExternalScaler",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            listed.lines().any(|l| l == service),
            "{service} not in {listed}"
        );
    }

    push(&mut redis.connection().await, "grpcurl:jobs", 3).await;
    let request = r#"{"scaledObjectRef": {"name": "worker", "namespace": "default",
        "scalerMetadata": {"source": "redis-main", "metric": "redis-list",
        "keys": "grpcurl:jobs", "target": "2"}}}"#;
    let answer = run(vec![
        "-plaintext".into(),
        "-d".into(),
        request.into(),
        address.clone(),
        "externalscaler.ExternalScaler/GetMetrics".into(),
    ])
    .await;
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let value = &answer["metricValues"][0];
    assert_eq!(value["metricValue"], "3", "{answer}");
    assert_eq!(value["metricValueFloat"], 3.0, "{answer}");

    let health = run(vec![
        "-plaintext".into(),
        "-d".into(),
        r#"{"service": "liveness"}"#.into(),
        address,
        "grpc.health.v1.Health/Check".into(),
    ])
    .await;
    assert!(health.contains("SERVING"), "{health}");
}
