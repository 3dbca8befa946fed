//! Foundation, end to end: a real `redis-server`, the scaler in-process, a tonic client over
//! TCP shaped like KEDA's.

use crate::common;

use std::time::{Duration, Instant};

use backlog_scaler::proto::{GetMetricsRequest, ScaledObjectRef};
use common::{
    ANSWER_WITHIN, RedisServer, SETTLES_WITHIN, Scaler, assert_outage_reported, assert_recovers_to,
    poll_until, push, redis_config, scaled_object, trigger_value, trigger_value_until,
};
use redis::AsyncCommands;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

/// Lists services through one reflection version (v1 and v1alpha have the same shape).
macro_rules! list_services {
    ($version:ident, $scaler:expr) => {{
        use tonic_reflection::pb::$version::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut client = ServerReflectionClient::new($scaler.channel().await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        match responses.message().await.unwrap().unwrap().message_response {
            Some(MessageResponse::ListServicesResponse(list)) => list
                .service
                .into_iter()
                .map(|s| s.name)
                .collect::<Vec<String>>(),
            other => panic!("unexpected reflection answer {other:?}"),
        }
    }};
}

fn trigger(keys: &str) -> ScaledObjectRef {
    scaled_object(&[
        ("scalerAddress", "backlog-scaler.keda.svc:9090"),
        ("source", "redis-main"),
        ("metric", "redis-list"),
        ("keys", keys),
        ("target", "10"),
        ("activationTarget", "2"),
    ])
}

fn metrics_request(scaled_object: ScaledObjectRef, metric_name: &str) -> GetMetricsRequest {
    GetMetricsRequest {
        scaled_object_ref: Some(scaled_object),
        metric_name: metric_name.to_string(),
    }
}

async fn wait_for_health(scaler: &Scaler, service: &str, want: ServingStatus) {
    poll_until(
        format!("health of {service:?} is {want:?}"),
        SETTLES_WITHIN,
        async || scaler.health(service).await,
        |status| *status == want,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_backlog_is_the_sum_of_the_lengths_and_active_above_the_activation_target() {
    let redis = RedisServer::start();
    let scaler = Scaler::start(&redis_config(&redis.url())).await;
    let mut client = scaler.client().await;
    let mut connection = redis.connection().await;
    push(&mut connection, "agent:tasks:pending", 25).await;
    push(&mut connection, "agent:tasks:retry", 4).await;

    let so = trigger("agent:tasks:pending,agent:tasks:retry,agent:tasks:absent");
    let spec = client
        .get_metric_spec(so.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spec.metric_specs.len(), 1);
    let metric = &spec.metric_specs[0];
    assert!(
        metric
            .metric_name
            .starts_with("redis-list-agent-tasks-pending-"),
        "{metric:?}"
    );
    assert_eq!(metric.target_size, 10);
    assert_eq!(metric.target_size_float, 10.0);

    // KEDA strips its `sN-` prefix; both forms answer.
    for name in [
        metric.metric_name.clone(),
        format!("s0-{}", metric.metric_name),
    ] {
        let values = client
            .get_metrics(metrics_request(so.clone(), &name))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(values.metric_values.len(), 1);
        assert_eq!(
            values.metric_values[0].metric_value, 29,
            "a missing key counts 0"
        );
        assert_eq!(values.metric_values[0].metric_value_float, 29.0);
        assert_eq!(values.metric_values[0].metric_name, metric.metric_name);
    }
    assert!(
        client
            .is_active(so.clone())
            .await
            .unwrap()
            .into_inner()
            .result
    );

    // Activation is value > activationTarget (2): 2 items is not active, 3 is.
    let small = trigger("small");
    push(&mut connection, "small", 2).await;
    let mut is_active = async || {
        client
            .is_active(small.clone())
            .await
            .unwrap()
            .into_inner()
            .result
    };
    assert!(!is_active().await, "2 items, activationTarget 2");
    push(&mut connection, "small", 1).await;
    // A backlog change is visible within 2 s (what the default refresh_interval is chosen for).
    poll_until(
        "3 items, activationTarget 2: active",
        Duration::from_secs(2),
        is_active,
        |active| *active,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_metric_spec_answers_without_the_backend_while_the_value_is_unavailable() {
    // The source points at a port where nothing listens.
    let port = common::free_port();
    let scaler = Scaler::start(&redis_config(&format!("redis://127.0.0.1:{port}/0"))).await;
    let mut client = scaler.client().await;
    let started = Instant::now();
    let spec = client
        .get_metric_spec(trigger("jobs"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spec.metric_specs[0].target_size, 10);
    assert!(started.elapsed() < Duration::from_millis(500));
    // While the value itself is UNAVAILABLE, within the bound and naming the source.
    let started = Instant::now();
    let status = trigger_value(
        &scaler,
        "redis-main",
        &[("metric", "redis-list"), ("keys", "jobs")],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("redis-main"), "{status:?}");
    assert!(
        started.elapsed() <= ANSWER_WITHIN,
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_another_type_is_failed_precondition_naming_the_key() {
    let redis = RedisServer::start();
    let scaler = Scaler::start(&redis_config(&redis.url())).await;
    let mut client = scaler.client().await;
    let mut connection = redis.connection().await;
    let _: () = connection.set("not-a-list", "x").await.unwrap();
    push(&mut connection, "a-list", 3).await;
    let status = client
        .get_metrics(metrics_request(trigger("a-list,not-a-list"), ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("`not-a-list`"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_metadata_is_invalid_argument_naming_the_key() {
    let redis = RedisServer::start();
    let scaler = Scaler::start(&redis_config(&redis.url())).await;
    let mut client = scaler.client().await;
    let cases: [(&[(&str, &str)], &str); 6] = [
        (
            &[("metric", "redis-list"), ("keys", "a"), ("target", "1")],
            "`source`",
        ),
        (
            &[
                ("source", "nope"),
                ("metric", "redis-list"),
                ("keys", "a"),
                ("target", "1"),
            ],
            "`source`",
        ),
        (
            &[
                ("source", "redis-main"),
                ("metric", "kafka"),
                ("keys", "a"),
                ("target", "1"),
            ],
            "`metric`",
        ),
        (
            &[
                ("source", "redis-main"),
                ("metric", "redis-list"),
                ("target", "1"),
            ],
            "`keys`",
        ),
        (
            &[
                ("source", "redis-main"),
                ("metric", "redis-list"),
                ("keys", "a"),
                ("target", "-1"),
            ],
            "`target`",
        ),
        (
            &[
                ("source", "redis-main"),
                ("metric", "redis-list"),
                ("keys", "a"),
                ("target", "1"),
                ("bogus", "1"),
            ],
            "`bogus`",
        ),
    ];
    for (pairs, key) in cases {
        for status in [
            client
                .get_metric_spec(scaled_object(pairs))
                .await
                .unwrap_err(),
            client.is_active(scaled_object(pairs)).await.unwrap_err(),
            client
                .get_metrics(metrics_request(scaled_object(pairs), ""))
                .await
                .unwrap_err(),
        ] {
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{pairs:?}: {status:?}"
            );
            assert!(status.message().contains(key), "{pairs:?}: {status:?}");
        }
    }
    let status = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: None,
            metric_name: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client
        .get_metrics(metrics_request(trigger("a"), "redis-list-something-else"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("metricName"), "{status:?}");
    let status = client.stream_metric_spec(trigger("a")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_is_active_sends_the_activity_at_once_then_only_its_changes() {
    let redis = RedisServer::start();
    let scaler = Scaler::start(&redis_config(&redis.url())).await;
    let mut client = scaler.client().await;
    let mut stream = client
        .stream_is_active(trigger("streamed"))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(2), stream.message())
        .await
        .expect("the current activity is sent at once")
        .unwrap()
        .unwrap();
    assert!(!first.result);
    push(&mut redis.connection().await, "streamed", 5).await;
    let second = tokio::time::timeout(Duration::from_secs(3), stream.message())
        .await
        .expect("a change is sent within a refresh")
        .unwrap()
        .unwrap();
    assert!(second.result);
    // No change, no message.
    assert!(
        tokio::time::timeout(Duration::from_millis(2500), stream.message())
            .await
            .is_err(),
        "nothing is sent while the activity does not change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_unavailable_and_not_ready_but_live_then_recovers() {
    let mut redis = RedisServer::start();
    let scaler = Scaler::start(&redis_config(&redis.url())).await;
    let mut client = scaler.client().await;
    push(&mut redis.connection().await, "jobs", 7).await;
    let jobs = [("metric", "redis-list"), ("keys", "jobs")];
    assert_eq!(
        trigger_value(&scaler, "redis-main", &jobs).await.unwrap(),
        7.0
    );
    wait_for_health(&scaler, "readiness", ServingStatus::Serving).await;

    redis.stop();
    assert_outage_reported(&scaler, "redis-main", &jobs, 7.0).await;
    let status = client.is_active(trigger("jobs")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    wait_for_health(&scaler, "readiness", ServingStatus::NotServing).await;
    assert_eq!(
        scaler.health("liveness").await,
        ServingStatus::Serving,
        "an outage must not get the scaler restarted"
    );

    // The server restarts empty (no persistence), and the scaler follows it from there.
    redis.resume();
    assert_recovers_to(&scaler, "redis-main", &jobs, 0.0).await;
    push(&mut redis.connection().await, "jobs", 3).await;
    trigger_value_until(&scaler, "redis-main", &jobs, |v| v == 3.0).await;
    wait_for_health(&scaler, "readiness", ServingStatus::Serving).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_v1_and_v1alpha_list_every_service() {
    let redis = RedisServer::start();
    let scaler = Scaler::start(&redis_config(&redis.url())).await;
    assert_eq!(scaler.health("").await, ServingStatus::Serving);
    assert_eq!(scaler.health("liveness").await, ServingStatus::Serving);
    wait_for_health(&scaler, "readiness", ServingStatus::Serving).await;

    let expected = [
        "externalscaler.ExternalScaler",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    let v1 = list_services!(v1, &scaler);
    let v1alpha = list_services!(v1alpha, &scaler);
    for service in expected {
        assert!(
            v1.iter().any(|s| s == service),
            "v1 lacks {service}: {v1:?}"
        );
        assert!(
            v1alpha.iter().any(|s| s == service),
            "v1alpha lacks {service}: {v1alpha:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams_instead_of_waiting_for_them() {
    let redis = RedisServer::start();
    let mut scaler = Scaler::start(&redis_config(&redis.url())).await;
    // An open stream must not hold the drain up: it ends when the server shuts down.
    let mut client = scaler.client().await;
    let mut stream = client
        .stream_is_active(trigger("s"))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    let started = Instant::now();
    scaler.shut_down().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drain took {:?}",
        started.elapsed()
    );
    let end = tokio::time::timeout(Duration::from_secs(2), stream.message())
        .await
        .unwrap();
    assert!(
        matches!(end, Ok(None) | Err(_)),
        "the stream ended: {end:?}"
    );
}

/// KEDA forwards `<key>FromEnv: <value it resolved from the workload's env>`: the scaler reads
/// it as `<key>`, and refuses both spellings of one key naming both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_env_keys_carry_values_as_keda_forwards_them() {
    let redis = RedisServer::start();
    let scaler = Scaler::start(&redis_config(&redis.url())).await;
    let mut client = scaler.client().await;
    let mut connection = redis.connection().await;
    push(&mut connection, "env:jobs", 9).await;

    let so = scaled_object(&[
        ("scalerAddress", "backlog-scaler.keda.svc:9090"),
        ("source", "redis-main"),
        ("metric", "redis-list"),
        ("keysFromEnv", "env:jobs"),
        ("targetFromEnv", "2"),
        ("activationTargetFromEnv", "8"),
    ]);
    let spec = client
        .get_metric_spec(so.clone())
        .await
        .unwrap()
        .into_inner();
    let metric = &spec.metric_specs[0];
    assert!(
        metric.metric_name.starts_with("redis-list-env-jobs-"),
        "{metric:?}"
    );
    assert_eq!(metric.target_size_float, 2.0);
    let values = client
        .get_metrics(metrics_request(so.clone(), &metric.metric_name))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(values.metric_values[0].metric_value_float, 9.0);
    // 9 > activationTargetFromEnv 8.
    assert!(client.is_active(so).await.unwrap().into_inner().result);

    let both = scaled_object(&[
        ("source", "redis-main"),
        ("metric", "redis-list"),
        ("keys", "env:jobs"),
        ("target", "1"),
        ("targetFromEnv", "2"),
    ]);
    let status = client.get_metric_spec(both).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with(
            "metadata key `targetFromEnv`: is set together with `target`, and both mean `target`"
        ),
        "{status:?}"
    );
}
